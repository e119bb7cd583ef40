"""Users: registration, PINs with lockout, language, demo seeding."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from collections.abc import Callable
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database, retried, retry_deadlocks
from helpers.infra.fastpath import Prepared
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.wallet.customers.pins import hash_pin, verify_pin
from helpers.wallet.rules import Policy
from models import User, utcnow

# The original system's demo accounts (phone, sats).


@dataclass(frozen=True)
class UserView:
    """What a USSD request needs of its caller, read once per request (not an ORM object:
    money steps re-read the balance inside their own transaction). `pin_clean`: no failed PIN
    tries and no lock on record when it was read (see check_pin)."""

    id: int
    phone: str
    balance_sats: int
    language: str
    pin_hash: str | None
    pin_clean: bool = False
    tier: int = 0  # identity tier (issue 34; customers/tiers.py)

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(user.id, user.phone, user.balance_sats, user.language, user.pin_hash,
                   user.pin_failures == 0 and user.pin_locks == 0, user.tier or 0)


def get(session: Session, phone: str) -> User | None:
    return session.scalar(select(User).where(User.phone == phone))


def owner(session: Session, user_id: int) -> User:
    """The user a row's `user_id` names: a foreign key, and users are never deleted. Raises
    LookupError if the row is missing all the same."""
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} is missing")
    return user


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


@retried
def register(db: Database, phone: str, language: str, service_code: str,
             also: Callable[[Session], None] | None = None) -> UserView:
    """Find or create the user for a dialling phone; a new user gets a welcome SMS, and `also` (an
    operator's audit line) runs in the same transaction when the user is created."""
    try:
        with db.write() as s:
            user, created = get_or_create(s, phone, language, service_code)
            if created:
                sms.queue(s, phone, t(language, "sms.welcome", code=service_code))
                if also is not None:
                    also(s)
                s.flush()
            return UserView.of(user)
    except IntegrityError:
        with db.read() as s:
            found = get(s, phone)
        if found is None:
            raise
        return UserView.of(found)


@retried
def set_first_pin(db: Database, user_id: int, pin: str, pepper: str) -> bool:
    """Set the PIN of a user who has none; False if one was set meanwhile (it is not replaced)."""
    with db.write() as s:
        return cast(CursorResult, s.execute(
            update(User)
            .where(User.id == user_id, User.pin_hash.is_(None))
            .values(pin_hash=hash_pin(pin, pepper), pin_failures=0, pin_locks=0, pin_locked_until=None,
                    pin_set_at=utcnow())
        )).rowcount == 1


@retried
def change_pin(db: Database, user: UserView, pin: str, pepper: str) -> bool:
    """Replace the PIN the caller checked (`user.pin_hash`) and tell the owner by SMS. False: it was
    replaced meanwhile (a Forgot-PIN reset in another session), and stays."""
    with db.write() as s:
        changed = cast(CursorResult, s.execute(
            update(User).where(User.id == user.id, User.pin_hash == user.pin_hash)
            .values(pin_hash=hash_pin(pin, pepper), pin_set_at=utcnow()))).rowcount == 1
        if changed:
            sms.queue(s, user.phone, t(user.language, "sms.pin-changed"))
    return changed


@dataclass(frozen=True)
class PinCheck:
    ok: bool
    attempts_left: int = 0
    locked_minutes: int = 0
    unordered: bool = False  # right, but not yet ordered after parallel guesses (see check_pin)
    proof: PinProof | None = None  # when right: what the money use cases ask for


_SEAL = object()


@dataclass(frozen=True)
class PinProof:
    """That this user's PIN was checked and right in this request. Only check_pin makes one
    (with the module's seal); every use case that moves money out asks for it
    (use_cases.require_pin), so no screen can reach a debit without the PIN step."""

    user_id: int
    seal: object = field(repr=False, compare=False)

    def valid_for(self, user_id: int) -> bool:
        return self.seal is _SEAL and self.user_id == user_id


_USERS = cast(Table, User.__table__)
_ID_AND_LANGUAGE = Prepared(select(_USERS.c.id, _USERS.c.language).where(_USERS.c.phone == bindparam("phone")))
_PIN_ROW = Prepared(
    select(_USERS.c.phone, _USERS.c.language, _USERS.c.pin_hash, _USERS.c.pin_failures, _USERS.c.pin_locks,
           _USERS.c.pin_locked_until)
    .where(_USERS.c.id == bindparam("uid"))
    .with_for_update()
)
_CLEAR_PIN_COUNTS = Prepared(update(_USERS).where(_USERS.c.id == bindparam("uid")).values(pin_failures=0, pin_locks=0))


def find_or_add(conn: Connection, phone: str, language: str) -> tuple[int, str, bool]:
    """(id, language, created) of the user with `phone`, created inside the caller's transaction
    if missing (a money recipient who has never dialled)."""
    row = _ID_AND_LANGUAGE.run(conn, {"phone": phone}).first()
    if row is not None:
        return row[0], row[1], False
    try:
        with conn.begin_nested():
            key = conn.execute(insert(_USERS), {
                "phone": phone, "balance_sats": 0, "language": language, "pin_failures": 0, "pin_locks": 0,
                "created_at": utcnow(),
            }).inserted_primary_key
            if key is None:  # a one-row INSERT without RETURNING always reports its key
                raise RuntimeError("the database returned no id for a new user")
            new_id = key[0]
    except IntegrityError:  # registered at the same moment by another request
        row = _ID_AND_LANGUAGE.run(conn, {"phone": phone}).first()
        if row is None:
            raise
        return row[0], row[1], False
    return new_id, language, True


def check_pin(db: Database, policy: Policy, user: UserView, pin: str, pepper: str, *, debit_follows: bool
              ) -> PinCheck:
    """Verify `pin`. Every wrong PIN goes through the counted check (_check_counted).

    `debit_follows`: the caller's action does nothing outside its debit's transaction before the
    debit, and a debit refuses a PIN-locked account (journal.record), serialised with the
    counted check (row lock on MySQL, one writer at a time on SQLite). Then the right PIN of a
    user whose request read no failed try and no lock (`user.pin_clean`: nothing to clear)
    passes without a write transaction, `unordered`: a lock taken by a parallel guess after our
    read still stops the money, as it would have stopped the counted check. Wrong guesses counted
    in between stay counted (a stricter outcome than the counted check's clearing). If the action
    records no movement (refused or failed), the caller must take the counted check before it
    answers, which would otherwise tell a guesser that this PIN was right (handlers.PinStep).
    Saves a write transaction on each send and withdrawal by a customer with a clean record (a
    refusal or failure costs one read of the request's key)."""
    if debit_follows and user.pin_clean and verify_pin(pin, user.pin_hash, pepper):
        return PinCheck(True, unordered=True, proof=PinProof(user.id, _SEAL))
    check = retry_deadlocks(lambda: _check_counted(db, policy, user.id, pin, pepper))
    return replace(check, proof=PinProof(user.id, _SEAL)) if check.ok else check


def _check_counted(db: Database, policy: Policy, user_id: int, pin: str, pepper: str) -> PinCheck:
    """One write transaction with the user's row locked, so parallel guesses are counted one
    after another and a lock taken by one stops the rest. A locked user fails without the PIN
    being looked at; a success here clears the count. On Galera another node's commit to the
    same row (a movement's balance) aborts it: the caller runs it again whole (retry_deadlocks)."""
    with db.begin() as conn:
        row = _PIN_ROW.run(conn, {"uid": user_id}).one()
        now = utcnow()
        if row.pin_locked_until is not None and row.pin_locked_until > now:
            return PinCheck(False, 0, minutes_left(row.pin_locked_until, now))
        if verify_pin(pin, row.pin_hash, pepper):
            if row.pin_failures or row.pin_locks:
                _CLEAR_PIN_COUNTS.run(conn, {"uid": user_id})
            return PinCheck(True)
        verdict = policy.pin_failure(row.pin_failures + 1, row.pin_locks)
        if verdict.lock_minutes:
            conn.execute(update(_USERS).where(_USERS.c.id == user_id).values(
                pin_failures=0, pin_locks=_USERS.c.pin_locks + 1,
                pin_locked_until=now + dt.timedelta(minutes=verdict.lock_minutes)))
            sms.queue(conn, row.phone, t(row.language, "sms.pin-locked", minutes=verdict.lock_minutes))
        else:
            conn.execute(update(_USERS).where(_USERS.c.id == user_id).values(pin_failures=_USERS.c.pin_failures + 1))
        return PinCheck(False, verdict.attempts_left, verdict.lock_minutes)


def minutes_left(locked_until: dt.datetime, now: dt.datetime) -> int:
    """A lock's remaining time as the customer is told it: whole minutes, the current one counted."""
    return int((locked_until - now).total_seconds() // 60) + 1


def reset_pin(db: Database, phone: str) -> bool:
    """Operator's reset after verifying the customer's identity out of band (SECURITY.md): the
    PIN is cleared, so the next dial asks for a new one; the owner is told by SMS."""
    with db.write() as s:
        return reset_pin_in(s, phone)


def reset_pin_in(s: Session, phone: str) -> bool:
    """reset_pin in the caller's transaction (with the operator's audit line); False: no such customer."""
    user = get(s, phone)
    if user is None:
        return False
    s.execute(update(User).where(User.id == user.id).values(
        pin_hash=None, pin_failures=0, pin_locks=0, pin_locked_until=None))
    sms.queue(s, phone, t(user.language, "sms.pin-reset"))
    return True


@retried
def set_language(db: Database, user_id: int, language: str) -> None:
    with db.write() as s:
        s.execute(update(User).where(User.id == user_id).values(language=language))


# ------------------------------------------------------------------ names (issue 33)
NAME_LENGTH = (2, 30)  # letters a person types on a keypad; the column holds 40
_NAME_MARKS = frozenset(" '-.")


def clean_name(typed: str) -> str | None:
    """A name as typed on a keypad, tidied (single spaces, upper case), or None when it is not a
    name: NAME_LENGTH letters, spaces, apostrophes, hyphens and dots, with at least two letters."""
    name = " ".join(typed.split()).upper()
    low, high = NAME_LENGTH
    if not low <= len(name) <= high:
        return None
    if any(not (char.isalpha() and char.isascii()) and char not in _NAME_MARKS for char in name):
        return None
    return name if sum(char.isalpha() for char in name) >= 2 else None


def shown_name(name: str) -> str:
    """A name as a payer sees it before their PIN, as M-Pesa shows one: the first name and the
    last name's initial (AMINA OTIENO -> AMINA O.), enough to tell a wrong number, not a record."""
    words = name.split()
    return words[0] if len(words) == 1 else f"{words[0]} {words[-1][0]}."


@dataclass(frozen=True)
class Recipient:
    registered: bool  # a PIN set: a customer, not a number sats wait for
    name: str | None
    verified: bool


_RECIPIENT = Prepared(select(_USERS.c.pin_hash.is_not(None), _USERS.c.name, _USERS.c.name_verified_at.is_not(None))
                      .where(_USERS.c.phone == bindparam("phone")))


def recipient(db: Database, phone: str) -> Recipient:
    """Who a number is, for a payer's confirm screen (the caller counts the look-up first)."""
    row = db.execute(_RECIPIENT, {"phone": phone}).first()
    if row is None:
        return Recipient(False, None, False)
    return Recipient(bool(row[0]), row[1], bool(row[2]))


@retried
def set_name(db: Database, user_id: int, name: str) -> bool:
    """Give a customer's name; False when it is verified already (fixed: only an operator who
    verified the person changes it)."""
    with db.write() as s:
        moved = cast(CursorResult, s.execute(update(User).where(User.id == user_id, User.name_verified_at.is_(None))
                                             .values(name=name))).rowcount
    return moved == 1


def name_of(db: Database, user_id: int) -> tuple[str | None, bool]:
    """(name, verified) of a customer."""
    with db.read() as s:
        row = s.execute(select(User.name, User.name_verified_at).where(User.id == user_id)).one()
    return row[0], row[1] is not None
