"""Ask every configured source at once and agree on a reference price: the median of those that
answered, without those further than the outlier band from it; too few left means no price."""

from __future__ import annotations

import logging
import statistics
import threading
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import requests

from helpers.prices.sources import FX, SOURCES, SourceError, fetch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    source: str
    kes_per_btc: Decimal | None  # None: no usable answer (`error` says why)
    error: str = ""
    dropped: bool = False  # answered, but outside the outlier band


@dataclass(frozen=True)
class Reference:
    kes_per_btc: int | None  # None: fewer sources agreed than the minimum
    answers: tuple[Answer, ...]

    @property
    def used(self) -> tuple[str, ...]:
        return tuple(a.source for a in self.answers if a.kes_per_btc is not None and not a.dropped)

    def describe(self) -> str:
        """One line per source, for the price row and `flask price show`."""
        return "\n".join(f"{a.source}: {'dropped ' if a.dropped else ''}{a.kes_per_btc:.0f}" if a.kes_per_btc
                         is not None else f"{a.source}: {a.error}" for a in self.answers)


def ask_all(bases: dict[str, str], timeout_s: float, http: requests.Session | None = None) -> list[Answer]:
    """Every source's answer in KES per bitcoin, asked at once; none waits past `timeout_s`
    (a source still answering then counts as too slow)."""
    http = http or requests.Session()
    raw: dict[str, Decimal | str] = {}
    lock = threading.Lock()

    def ask(name: str) -> None:
        source = FX if name == "fx" else SOURCES[name]
        try:
            value: Decimal | str = fetch(http, source, bases[name], timeout_s)
        except SourceError as exc:
            value = str(exc)[:80]
        with lock:
            raw[name] = value

    threads = [threading.Thread(target=ask, args=(name,), daemon=True, name=f"price-{name}") for name in bases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s + 0.5)
    with lock:
        found = dict(raw)
    fx = found.get("fx")
    answers = []
    for name in bases:
        if name == "fx":
            continue
        value = found.get(name, "too slow")
        if isinstance(value, Decimal) and SOURCES[name].currency == "USD":
            value = value * fx if isinstance(fx, Decimal) else f"no USD/KES rate ({fx or 'too slow'})"
        answers.append(Answer(name, value, "") if isinstance(value, Decimal) else Answer(name, None, value))
    return answers


def agree(answers: list[Answer], min_sources: int, outlier_pct: float) -> Reference:
    """The median of the answers within `outlier_pct` percent of the median of all answers."""
    values = [a.kes_per_btc for a in answers if a.kes_per_btc is not None]
    if not values:
        return Reference(None, tuple(answers))
    middle = statistics.median(values)
    band = middle * Decimal(str(outlier_pct)) / 100
    checked = []
    for answer in answers:
        if answer.kes_per_btc is not None and abs(answer.kes_per_btc - middle) > band:
            log.warning("price source %s: %.0f KES/BTC is more than %s%% from the median %.0f; dropped",
                        answer.source, answer.kes_per_btc, outlier_pct, middle)
            answer = Answer(answer.source, answer.kes_per_btc, "outlier", dropped=True)
        checked.append(answer)
    kept = [a.kes_per_btc for a in checked if a.kes_per_btc is not None and not a.dropped]
    if len(kept) < min_sources:
        log.warning("price: %s of %s sources agree, %s needed; no price", len(kept), len(answers), min_sources)
        return Reference(None, tuple(checked))
    price = statistics.median(kept).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return Reference(int(price), tuple(checked))
