"""Public BTC price sources, one small adapter each (request and answer shapes from each API's
public docs). A direct source answers KES per bitcoin; a USD source answers USD per bitcoin and
is multiplied by the USD/KES rate of the `fx` source, fetched once per refresh.

`PRICE_SOURCES` names them, each optionally with its base URL (`coingecko=https://...`), so tests
point every adapter at a fake server on loopback; with no URL the public API is used. Nothing
here touches the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from helpers.infra.http import request_json


class SourceError(Exception):
    """A source did not give a usable price: unreachable, slow, or an answer of another shape."""


def _number(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise SourceError(f"not a number: {str(value)[:32]!r}") from exc
    if not number.is_finite() or number <= 0:
        raise SourceError(f"not a price: {number}")
    return number


def _dig(data: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise SourceError(f"no {key!r} in the answer") from exc
    return data


def _coingecko(data: Any) -> Decimal:  # GET /api/v3/simple/price?ids=bitcoin&vs_currencies=kes
    return _number(_dig(data, "bitcoin", "kes"))


def _coinbase(data: Any) -> Decimal:  # GET /v2/prices/BTC-KES/spot
    if _dig(data, "data", "currency") != "KES":
        raise SourceError("not a KES price")
    return _number(_dig(data, "data", "amount"))


def _kraken(data: Any) -> Decimal:  # GET /0/public/Ticker?pair=XBTUSD; c = last trade [price, volume]
    if _dig(data, "error"):
        raise SourceError(f"kraken error {str(data['error'])[:64]}")
    result = _dig(data, "result")
    if not isinstance(result, dict) or len(result) != 1:
        raise SourceError("not one pair in the answer")
    return _number(_dig(next(iter(result.values())), "c", 0))


def _bitstamp(data: Any) -> Decimal:  # GET /api/v2/ticker/btcusd/
    return _number(_dig(data, "last"))


def _fx(data: Any) -> Decimal:  # GET /v6/latest/USD (open.er-api.com): KES per USD
    if _dig(data, "result") != "success":
        raise SourceError("the rate service did not answer success")
    return _number(_dig(data, "rates", "KES"))


@dataclass(frozen=True)
class Source:
    name: str
    default_base: str
    path: str
    parse: Callable[[Any], Decimal]
    currency: str  # KES: a direct price; USD: times the fx rate


SOURCES: dict[str, Source] = {source.name: source for source in (
    Source("coingecko", "https://api.coingecko.com", "/api/v3/simple/price?ids=bitcoin&vs_currencies=kes",
           _coingecko, "KES"),
    Source("coinbase", "https://api.coinbase.com", "/v2/prices/BTC-KES/spot", _coinbase, "KES"),
    Source("kraken", "https://api.kraken.com", "/0/public/Ticker?pair=XBTUSD", _kraken, "USD"),
    Source("bitstamp", "https://www.bitstamp.net", "/api/v2/ticker/btcusd/", _bitstamp, "USD"),
)}
FX = Source("fx", "https://open.er-api.com", "/v6/latest/USD", _fx, "KES")


class SourcesError(ValueError):
    """PRICE_SOURCES names a source that does not exist, or a URL that is not one."""


def parse_setting(value: str) -> dict[str, str]:
    """"coingecko,kraken=http://127.0.0.1:9000,fx" -> {name: base URL}. Raises SourcesError."""
    chosen: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, url = item.partition("=")
        name = name.strip().lower()
        known = SOURCES.get(name) or (FX if name == "fx" else None)
        if known is None:
            raise SourcesError(f"unknown price source {name!r} (known: {', '.join([*SOURCES, 'fx'])})")
        url = url.strip() or known.default_base
        if not url.startswith(("https://", "http://")):
            raise SourcesError(f"price source {name}: {url!r} is not an http(s) URL")
        chosen[name] = url.rstrip("/")
    if any(SOURCES[name].currency == "USD" for name in chosen if name != "fx") and "fx" not in chosen:
        raise SourcesError("a USD price source needs the fx source (USD/KES) in PRICE_SOURCES too")
    return chosen


def fetch(http: requests.Session, source: Source, base: str, timeout_s: float) -> Decimal:
    """The source's answer, in its currency. Raises SourceError."""
    status, data = request_json(http, "price-" + source.name, "GET", base + source.path, timeout=timeout_s)
    if status != 200:
        raise SourceError(f"HTTP {status}" if status > 0 else "unreachable")
    return source.parse(data)
