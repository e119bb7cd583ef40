"""Fake public price APIs on one loopback port: CoinGecko, Coinbase, Kraken, Bitstamp and the
USD/KES rate service, each answering in the shape its public docs show. A test sets each
source's price or its trouble (down, slow, garbage) and counts the calls."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.fakes.fake_http import FakeServer

# path -> source name, with the query each adapter must send
ROUTES = {
    "/api/v3/simple/price": ("coingecko", {"ids": ["bitcoin"], "vs_currencies": ["kes"]}),
    "/v2/prices/BTC-KES/spot": ("coinbase", {}),
    "/0/public/Ticker": ("kraken", {"pair": ["XBTUSD"]}),
    "/api/v2/ticker/btcusd/": ("bitstamp", {}),
    "/v6/latest/USD": ("fx", {}),
}
USD_KES = Decimal("129.25")


class FakePrices(FakeServer):
    def __init__(self, kes_per_btc: int = 13_000_000) -> None:
        self.lock = threading.Lock()
        self.kes_per_btc: dict[str, Decimal] = {}  # per source, KES per bitcoin
        self.trouble: dict[str, str] = {}  # source -> "down", "slow", "garbage"
        self.calls: dict[str, int] = {}
        self.slow_s = 3.0
        self.set_all(kes_per_btc)
        super().__init__()

    def set_all(self, kes_per_btc: int) -> None:
        with self.lock:
            for name in ("coingecko", "coinbase", "kraken", "bitstamp"):
                self.kes_per_btc[name] = Decimal(kes_per_btc)

    def set(self, name: str, kes_per_btc: int | Decimal) -> None:
        with self.lock:
            self.kes_per_btc[name] = Decimal(kes_per_btc)

    def base(self, *names: str) -> str:
        """PRICE_SOURCES for these sources, all at this server (with fx when a USD one is named)."""
        if any(name in ("kraken", "bitstamp") for name in names) and "fx" not in names:
            names = (*names, "fx")
        return ",".join(f"{name}={self.url}" for name in names)

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        route = ROUTES.get(url.path)
        if route is None or method != "GET":
            self.violations.append(f"{method} {url.path}: no such API")
            return self.reply(request, 404, {"error": "not found"})
        name, query = route
        if {k: v for k, v in parse_qs(url.query).items()} != query:
            self.violations.append(f"{name}: query {url.query!r}, the docs say {query}")
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            trouble = self.trouble.get(name, "")
            price = self.kes_per_btc.get(name)
        if trouble == "down":
            return self.reply(request, 503, {"error": "unavailable"})
        if trouble == "slow":
            time.sleep(self.slow_s)
        if trouble == "garbage":
            return self.reply(request, 200, {"unexpected": True})
        usd = (price / USD_KES) if price is not None else None
        answers = {
            "coingecko": lambda: {"bitcoin": {"kes": float(price)}},
            "coinbase": lambda: {"data": {"amount": f"{price:.2f}", "base": "BTC", "currency": "KES"}},
            "kraken": lambda: {"error": [], "result": {"XXBTZUSD": {"a": [f"{usd:.1f}", "1", "1.0"],
                                                                    "c": [f"{usd:.5f}", "0.001"]}}},
            "bitstamp": lambda: {"last": f"{usd:.2f}", "timestamp": str(int(time.time()))},
            "fx": lambda: {"result": "success", "base_code": "USD", "rates": {"USD": 1, "KES": float(USD_KES)}},
        }
        self.reply(request, 200, answers[name]())
