"""Verify my ID (issue 34): a customer's national ID number, names and date of birth, matched with
the population registry, raise them to tier 1; an operator who checked documents sets tier 2.

The ID number is kept as a keyed hash (HMAC with the PIN pepper: one account per ID, and a leak of
the table does not list ID numbers) and its last digits (for customer care). The registry's names
become the customer's verified name, which the send screen shows and nobody changes over USSD.
Every check is an audit line; a customer may ask `id-checks` times a day (atoms.metta).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import cast

from sqlalchemy import update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from database import retry_deadlocks
from helpers.idcheck.registry import MATCHED
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.wallet import operators
from helpers.wallet.customers import limits, tiers, users
from helpers.wallet.customers.users import UserView
from helpers.wallet.services import Services
from models import User, utcnow

SELF = "customer"
# Refusals (each has a message kyc.<reason> in helpers/infra/i18n.py)
OFF, TOO_MANY, TOO_YOUNG, ID_TAKEN, ALREADY = "off", "too-many", "too-young", "id-taken", "already"
ID_DIGITS = (7, 8)  # a Kenyan national ID number


class IdRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    name: str
    tier: int


def clean_id_number(typed: str) -> str | None:
    low, high = ID_DIGITS
    return typed if typed.isdigit() and low <= len(typed) <= high else None


def parse_birth_date(typed: str, today: dt.date) -> dt.date | None:
    """DDMMYYYY, a real day in the past."""
    if len(typed) != 8 or not typed.isdigit():
        return None
    try:
        born = dt.date(int(typed[4:]), int(typed[2:4]), int(typed[:2]))
    except ValueError:
        return None
    return born if dt.date(1900, 1, 1) <= born < today else None


def years_between(born: dt.date, today: dt.date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def id_hash(id_number: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), f"national-id:{id_number}".encode(), hashlib.sha256).hexdigest()


def verify(svc: Services, user: UserView, id_number: str, names: str, birth_date: dt.date) -> Verified:
    """Ask the registry; on a match the customer is tier 1 with the registry's names, verified.
    Callers check the PIN first. Raises IdRefused (off, too-many, too-young, id-taken, already,
    or the registry's outcome: no-match, not-found, unavailable)."""
    if user.tier >= tiers.ID_CHECKED:
        raise IdRefused(ALREADY)
    if svc.id_registry is None:
        raise IdRefused(OFF)
    if years_between(birth_date, utcnow().date()) < svc.policy.value("id-min-age-years"):
        raise IdRefused(TOO_YOUNG)
    if limits.allow(svc.db, svc.policy, ("id-checks", user.phone)) is not None:  # always counted: each may cost
        raise IdRefused(TOO_MANY)
    answer = svc.id_registry.check(id_number, names, birth_date)
    with svc.db.write() as s:
        operators.audit(s, SELF, "id-check", user.phone, f"registry {svc.id_registry.name}",
                        f"{answer.outcome}, ID ending {id_number[-3:]}")
    if answer.outcome != MATCHED:
        raise IdRefused(answer.outcome)
    name = users.clean_name(answer.names) or users.clean_name(names) or names.upper()[:40]
    now = utcnow()

    def raise_tier() -> None:  # run again whole if a movement on another Galera node aborts it
        with svc.db.write() as s:
            moved = cast(CursorResult, s.execute(
                update(User).where(User.id == user.id, User.tier < tiers.ID_CHECKED)
                .values(tier=tiers.ID_CHECKED, tier_at=now, name=name, name_verified_at=now,
                        id_number_hash=id_hash(id_number, svc.pepper), id_last_digits=id_number[-3:],
                        birth_date=birth_date))).rowcount
            if moved != 1:
                raise IdRefused(ALREADY)  # verified meanwhile by another session
            limits_now = tiers.caps(svc.policy, tiers.ID_CHECKED, svc.policy.value("fixed-kes-per-btc"))
            sms.queue(s, user.phone, t(user.language, "sms.id-verified", name=name, cap_day=limits_now.day_kes,
                                       cap_balance=limits_now.balance_kes))
            operators.audit(s, SELF, "tier", user.phone, "ID matched with the registry", "tier 1")
    try:
        retry_deadlocks(raise_tier)
    except IntegrityError as exc:  # the ID number is another account's
        raise IdRefused(ID_TAKEN) from exc
    return Verified(name, tiers.ID_CHECKED)
