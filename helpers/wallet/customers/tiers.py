"""Identity tiers (issue 34): what a customer may move grows with what we know of them.

Tier 0 is the phone alone, tier 1 a national ID matched with the population registry, tier 2 an
operator's check of documents. Each tier has caps in KES (atoms.metta `tier-*-kes`): one payment
out, money out a day and a calendar month, and the most a balance may hold. The wallet moves sats,
so the caps are converted at a price the caller passes (the newest known; the fixed price when
there is none: a limit, not a trade, so an old price is good enough) into `Caps` in sats.

Money out is checked where the policy's daily limit is (under the payer's row lock, with what
they sent today and this month read there: `check_out`); money in that would pass the balance
cap is refused before it moves (`check_in`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from helpers.wallet.errors import PolicyDenied
from helpers.wallet.rules import Policy
from models import Price

PHONE_ONLY, ID_CHECKED, DOCUMENTS = 0, 1, 2
# Deny reasons (each has a message deny.<reason> in helpers/infra/i18n.py)
OVER_PAYMENT, OVER_DAY, OVER_MONTH = "tier-payment", "tier-day", "tier-month"
OVER_BALANCE, RECIPIENT_FULL = "tier-balance", "recipient-full"


@dataclass(frozen=True)
class Caps:
    """A tier's caps in sats at one price; `balance` None: no cap. `*_kes`: the policy's own
    numbers, for the screens."""

    tier: int
    payment: int
    day: int
    month: int
    balance: int | None
    payment_kes: int
    day_kes: int
    month_kes: int
    balance_kes: int


def caps(policy: Policy, tier: int, kes_per_btc: int) -> Caps:
    """The caps of `tier` in sats at `kes_per_btc` (rounded down: a cap is never passed by rounding)."""
    tier = max(PHONE_ONLY, min(tier, policy.value("top-tier")))
    kes = {what: policy.value_of(f"tier-{what}-kes", str(tier)) for what in ("payment", "day", "month", "balance")}
    per_btc = policy.value("sats-per-btc")

    def sats(amount_kes: int) -> int:
        return amount_kes * per_btc // kes_per_btc

    return Caps(tier, sats(kes["payment"]), sats(kes["day"]), sats(kes["month"]),
                sats(kes["balance"]) if kes["balance"] > 0 else None,
                kes["payment"], kes["day"], kes["month"], kes["balance"])


def payout_counted(policy: Policy, kes_per_btc: int, kes: int, sats: int) -> int:
    """What a payout of `kes` that debits `sats` (the sell spread included) counts against the caps:
    its sats at the price the caps were converted at (`kes_per_btc`), so a withdrawal of exactly a
    cap in KES passes it; the spread is this payout's only allowance (what was sent before counts
    whole). Never more than `sats`."""
    if kes <= 0:
        return sats
    return min(sats, kes * policy.value("sats-per-btc") // max(1, kes_per_btc))


def check_out(limits: Caps, amount: int, today: int, month: int) -> None:
    """Money out of `amount` sats by a customer who sent `today` and `month` already (fees
    excluded): within their tier's caps, or PolicyDenied."""
    if amount > limits.payment:
        raise PolicyDenied(OVER_PAYMENT)
    if today + amount > limits.day:
        raise PolicyDenied(OVER_DAY)
    if month + amount > limits.month:
        raise PolicyDenied(OVER_MONTH)


def room(limits: Caps, balance: int) -> int | None:
    """What a balance may still take in (None: no cap)."""
    return None if limits.balance is None else max(0, limits.balance - balance)


def check_in(limits: Caps, balance: int, amount: int, reason: str = OVER_BALANCE) -> None:
    """Money in of `amount` sats to a balance of `balance`: within the balance cap, or PolicyDenied."""
    if limits.balance is not None and balance + amount > limits.balance:
        raise PolicyDenied(reason)


def left(limits: Caps, today: int, month: int) -> int:
    """What may still go out today, in sats: the day's and the month's caps both hold."""
    return max(0, min(limits.day - today, limits.month - month))


def month_start(now: dt.datetime) -> dt.datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def stored_price(session: Session | Connection, policy: Policy) -> int:
    """The newest price the feed stored, however old, else the policy's fixed one: for converting
    caps where no request brought a price (the worker's receipts)."""
    found = session.execute(select(Price.kes_per_btc).order_by(Price.id.desc()).limit(1)).scalar()
    return int(found) if found else policy.value("fixed-kes-per-btc")
