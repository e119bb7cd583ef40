"""Users: registration, PINs with lockout, language, demo seeding."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers import sms
from helpers.i18n import t
from helpers.pins import hash_pin, verify_pin
from helpers.rules import Policy
from models import User, utcnow

# The original system's demo accounts (phone, sats).
DEMO_USERS = (("+254712345678", 100_000), ("+254787654321", 50_000), ("+254798765432", 75_000))


def get(session: Session, phone: str) -> User | None:
    return session.scalar(select(User).where(User.phone == phone))


def get_or_create(session: Session, phone: str, language: str, service_code: str) -> tuple[User, bool]:
    """The user with `phone`, created (with a welcome SMS) inside the caller's transaction."""
    user = get(session, phone)
    if user is not None:
        return user, False
    user = User(phone=phone, balance_sats=0, language=language, pin_failures=0, pin_locks=0)
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError:  # registered at the same moment by another request
        user = get(session, phone)
        if user is None:
            raise
        return user, False
    return user, True


def register(db: Database, phone: str, language: str, service_code: str) -> User:
    """Find or create the user for a dialling phone; a new user gets a welcome SMS."""
    try:
        with db.write() as s:
            user, created = get_or_create(s, phone, language, service_code)
            if created:
                sms.queue(s, phone, t(language, "sms.welcome", code=service_code))
            return user
    except IntegrityError:
        with db.read() as s:
            user = get(s, phone)
        if user is None:
            raise
        return user


def set_pin(db: Database, user_id: int, pin: str, pepper: str) -> None:
    with db.write() as s:
        s.execute(
            update(User)
            .where(User.id == user_id)
            .values(pin_hash=hash_pin(pin, pepper), pin_failures=0, pin_locks=0, pin_locked_until=None)
        )


def change_pin(db: Database, user: User, pin: str, pepper: str) -> None:
    """Replace the PIN (the caller checked the old one) and tell the owner by SMS."""
    with db.write() as s:
        s.execute(update(User).where(User.id == user.id).values(pin_hash=hash_pin(pin, pepper)))
        sms.queue(s, user.phone, t(user.language, "sms.pin-changed"))


def locked_minutes(user: User, now: dt.datetime | None = None) -> int:
    """Minutes left on the user's PIN lock, 0 when not locked."""
    if user.pin_locked_until is None:
        return 0
    left = (user.pin_locked_until - (now or utcnow())).total_seconds()
    return 0 if left <= 0 else int(left // 60) + 1


@dataclass(frozen=True)
class PinCheck:
    ok: bool
    attempts_left: int = 0
    locked_minutes: int = 0


def check_pin(db: Database, policy: Policy, user: User, pin: str, pepper: str, record: bool = True) -> PinCheck:
    """Verify `pin`. With `record`, a failure counts towards the lock (atomically, across workers)
    and a success clears the count. A locked user fails without the PIN being looked at."""
    minutes = locked_minutes(user)
    if minutes:
        return PinCheck(False, 0, minutes)
    if verify_pin(pin, user.pin_hash, pepper):
        if record and (user.pin_failures or user.pin_locks):
            with db.write() as s:
                s.execute(update(User).where(User.id == user.id).values(pin_failures=0, pin_locks=0))
        return PinCheck(True)
    if not record:
        return PinCheck(False, max(0, policy.value("pin-max-attempts") - user.pin_failures))
    with db.write() as s:
        s.execute(update(User).where(User.id == user.id).values(pin_failures=User.pin_failures + 1))
        failures, locks = s.execute(
            select(User.pin_failures, User.pin_locks).where(User.id == user.id)
        ).one()
        verdict = policy.pin_failure(failures, locks)
        if verdict.lock_minutes:
            s.execute(
                update(User)
                .where(User.id == user.id)
                .values(
                    pin_failures=0,
                    pin_locks=User.pin_locks + 1,
                    pin_locked_until=utcnow() + dt.timedelta(minutes=verdict.lock_minutes),
                )
            )
            sms.queue(s, user.phone, t(user.language, "sms.pin-locked", minutes=verdict.lock_minutes))
    return PinCheck(False, verdict.attempts_left, verdict.lock_minutes)


def set_language(db: Database, user_id: int, language: str) -> None:
    with db.write() as s:
        s.execute(update(User).where(User.id == user_id).values(language=language))


def seed_demo(db: Database) -> int:
    """Create the demo users that do not exist yet, with their opening balances recorded as
    ledger credits; return how many were created. Safe to run again."""
    from helpers import transactions  # transactions imports this module

    created = 0
    for phone, sats in DEMO_USERS:
        with db.write() as s:
            user, new = get_or_create(s, phone, "en", "")
            if new:
                s.flush()
                transactions.credit_adjustment(s, user.id, sats, "demo opening balance", key=f"demo:{phone}")
                created += 1
    return created
