"""Which BTC/KES price the wallet uses now, and the quotes a customer confirms.

The price, in order: an operator's pinned price until it ends (PRICE_MANUAL_*); with no
PRICE_SOURCES, the fixed price of atoms.metta (the embedded default, demo, tests: no network);
else the newest price the feed stored, if it is younger than atoms.metta's price-max-age-s.
Otherwise there is no price, and every KES operation stops with a clear screen.

The feed is refreshed in the background (`refresh`: the worker, `flask price refresh`), never on a
customer's request; a request reads the newest row, kept in memory for a few seconds.

A quote is what a confirm screen showed: KES, sats, fee, the price and spread, and its expiry
(quote-valid-s). Confirming in time uses exactly it; an expired one is quoted again and shown
again, never silently changed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

import requests
from sqlalchemy import delete, select

from database import Database
from helpers.infra.refs import new_reference
from helpers.infra.settings import Settings
from helpers.prices import feed
from helpers.prices.sources import SourcesError, parse_setting
from helpers.wallet.rules import Policy
from models import Price, Quote, utcnow

log = logging.getLogger(__name__)

FEED, MANUAL, FIXED = "feed", "manual", "fixed"
TOPUP, WITHDRAW, SEND, AIRTIME = "topup", "withdraw", "send", "airtime"
_READ_EVERY_S = 5.0  # how long a worker keeps the newest price row in memory


class PriceConfigError(ValueError):
    """A price setting that cannot work, named."""


@dataclass(frozen=True)
class CurrentPrice:
    kes_per_btc: int
    at: dt.datetime  # when it was agreed (the fixed price: now)
    source: str  # feed, manual, fixed

    def age_s(self, now: dt.datetime | None = None) -> int:
        return max(0, int(((now or utcnow()) - self.at).total_seconds()))


@dataclass(frozen=True)
class QuoteView:
    id: int
    reference: str
    user_id: int
    kind: str
    kes: int
    sats: int
    fee_sats: int
    kes_per_btc: int
    expires_at: dt.datetime

    def valid(self, now: dt.datetime | None = None) -> bool:
        return (now or utcnow()) < self.expires_at

    def seconds_left(self) -> int:
        return max(0, int((self.expires_at - utcnow()).total_seconds()))

    def to_choice(self) -> dict:
        """What the USSD session keeps of it (its row stays the record)."""
        return {"id": self.id, "r": self.reference, "u": self.user_id, "k": self.kind, "kes": self.kes,
                "s": self.sats, "f": self.fee_sats, "p": self.kes_per_btc, "x": self.expires_at.isoformat()}

    @classmethod
    def from_choice(cls, data: dict) -> QuoteView:
        return cls(data["id"], data["r"], data["u"], data["k"], data["kes"], data["s"], data["f"], data["p"],
                   dt.datetime.fromisoformat(data["x"]))


class PriceBook:
    def __init__(self, db: Database, settings: Settings, policy: Policy) -> None:
        self.db, self.settings, self.policy = db, settings, policy
        try:
            self.sources = parse_setting(settings.price_sources)
        except SourcesError as exc:
            raise PriceConfigError(f"PRICE_SOURCES: {exc}") from None
        feeds = [name for name in self.sources if name != "fx"]
        if feeds and not 1 <= settings.price_min_sources <= len(feeds):
            raise PriceConfigError(f"PRICE_MIN_SOURCES must be 1-{len(feeds)}, the price sources in PRICE_SOURCES")
        self.manual_until = (dt.datetime.fromisoformat(settings.price_manual_until).replace(tzinfo=None)
                             if settings.price_manual_kes_per_btc else None)
        self.http = requests.Session()
        self._lock = threading.Lock()
        self._cached: tuple[float, CurrentPrice | None] | None = None  # (monotonic read time, newest row)
        self.last_reference: feed.Reference | None = None  # this process's last refresh, for metrics

    # -------------------------------------------------------------- the price now
    def current(self) -> CurrentPrice | None:
        """The price to convert at now, or None: KES operations must stop."""
        now = utcnow()
        if self.manual_until is not None and now < self.manual_until:
            return CurrentPrice(int(self.settings.price_manual_kes_per_btc), now, MANUAL)
        if not self.sources:
            return CurrentPrice(self.policy.value("fixed-kes-per-btc"), now, FIXED)
        newest = self._newest()
        if newest is None or newest.age_s(now) > self.policy.value("price-max-age-s"):
            return None
        return newest

    def for_limits(self) -> int:
        """KES per BTC to convert the tier caps at (issue 34): the price now, else the newest stored
        however old, else the fixed price (a limit, not a trade: no request stops for want of it)."""
        found = self.current() or self._newest()
        return found.kes_per_btc if found is not None else self.policy.value("fixed-kes-per-btc")

    def newest(self) -> CurrentPrice | None:
        """The newest price the feed stored, however old (for operators and metrics)."""
        return self._newest()

    def _newest(self) -> CurrentPrice | None:
        with self._lock:
            cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < _READ_EVERY_S:
            return cached[1]
        with self.db.read() as s:
            row = s.execute(select(Price.kes_per_btc, Price.created_at).order_by(Price.id.desc()).limit(1)).first()
        found = CurrentPrice(int(row[0]), row[1], FEED) if row else None
        with self._lock:
            self._cached = (time.monotonic(), found)
        return found

    def forget(self) -> None:
        """Read the newest row again at the next request (after a refresh in this process)."""
        with self._lock:
            self._cached = None

    # -------------------------------------------------------------- the feed
    def refresh(self) -> feed.Reference:
        """Ask every source now; store the reference price when enough agree."""
        answers = feed.ask_all(self.sources, self.settings.price_timeout_s, self.http)
        reference = feed.agree(answers, self.settings.price_min_sources, self.settings.price_outlier_pct)
        self.last_reference = reference
        if reference.kes_per_btc is not None:
            with self.db.write() as s:
                s.add(Price(kes_per_btc=reference.kes_per_btc, sources=",".join(reference.used)[:255],
                            answers=reference.describe()[:1000]))
            self.forget()
        return reference

    def newest_row(self) -> Price | None:
        with self.db.read() as s:
            row = s.scalar(select(Price).order_by(Price.id.desc()).limit(1))
            if row is not None:
                s.expunge(row)
            return row

    def due(self) -> bool:
        """Is the stored price older than PRICE_REFRESH_S (so a worker should refresh it)?"""
        if not self.sources:
            return False
        with self.db.read() as s:
            newest = s.scalar(select(Price.created_at).order_by(Price.id.desc()).limit(1))
        return newest is None or (utcnow() - newest).total_seconds() >= self.settings.price_refresh_s * 0.9

    # -------------------------------------------------------------- quotes
    def quote(self, user_id: int, kind: str, kes: int, price: CurrentPrice) -> QuoteView:
        """Convert `kes` for `kind` at `price`, save it, and hold it for quote-valid-s."""
        policy = self.policy
        if kind == TOPUP:
            sats, fee = policy.kes_to_sats_credit(kes, price.kes_per_btc), 0
            spread = policy.value_of("spread-bps", "buy")
        elif kind == WITHDRAW:
            sats = policy.kes_to_sats_debit(kes, price.kes_per_btc)
            fee, spread = policy.fee_sats("mpesa-withdraw", sats), policy.value_of("spread-bps", "sell")
        elif kind == AIRTIME:  # sold like a withdrawal, with airtime's own fee
            sats = policy.kes_to_sats_debit(kes, price.kes_per_btc)
            fee, spread = policy.fee_sats("airtime", sats), policy.value_of("spread-bps", "sell")
        elif kind == SEND:
            sats = policy.kes_to_sats_send(kes, price.kes_per_btc)
            fee, spread = policy.fee_sats("internal", sats), 0
        else:
            raise ValueError(f"no quote for {kind!r}")
        now = utcnow()
        expires = now + dt.timedelta(seconds=policy.value("quote-valid-s"))
        row = Quote(reference=new_reference(), user_id=user_id, kind=kind, kes=kes, sats=sats, fee_sats=fee,
                    kes_per_btc=price.kes_per_btc, spread_bps=spread, price_source=price.source,
                    created_at=now, expires_at=expires)
        with self.db.write() as s:
            s.add(row)
            s.flush()
            quote_id = row.id
        return QuoteView(quote_id, row.reference, user_id, kind, kes, sats, fee, price.kes_per_btc, expires)

    def forget_expired(self, older_than_s: int = 86400) -> int:
        """Delete quotes that ended more than `older_than_s` ago (kept a day for support)."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
        with self.db.write() as s:
            return s.execute(delete(Quote).where(Quote.expires_at < cutoff)).rowcount  # type: ignore[attr-defined]
