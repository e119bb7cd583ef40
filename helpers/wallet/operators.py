"""The people who run the wallet: their accounts, their sign-in, and what they may do to a
customer's account. Every action is written to the audit log (who, what, to whom, why) in the
same database transaction as the action, so neither exists without the other."""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.phone import mask
from helpers.infra.refs import new_reference
from helpers.wallet import journal, transactions, users
from helpers.wallet.errors import AccountLocked, InsufficientBalance
from models import ADJUST, ADJUSTMENTS, DEBIT, SETTLED, AuditEntry, Operator, Transaction, User, utcnow

log = logging.getLogger(__name__)

MAX_FAILED_LOGINS = 10  # wrong passwords in a row before the login locks
LOCK_MINUTES = 15
MIN_PASSWORD = 12
_USERNAME = re.compile(r"[a-z0-9._-]{2,64}")
# A hash to check unknown usernames against, so they take as long as known ones.
_DUMMY_HASH = generate_password_hash("not a password of anyone", method="scrypt")


class OperatorError(ValueError):
    """A request an operator made that cannot be done; the message says why."""


@dataclass(frozen=True)
class Login:
    ok: bool
    locked_minutes: int = 0  # > 0: locked, this long yet


def add(db: Database, username: str, password: str) -> None:
    if not _USERNAME.fullmatch(username):
        raise OperatorError("a username is 2-64 of a-z, 0-9, '.', '_', '-'")
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"a password needs at least {MIN_PASSWORD} characters")
    with db.write() as s:
        if s.scalar(select(Operator.id).where(Operator.username == username)) is not None:
            raise OperatorError(f"operator {username!r} exists already")
        s.add(Operator(username=username, password_hash=generate_password_hash(password, method="scrypt")))
        audit(s, "cli", "operator-add", username, "")


def login(db: Database, username: str, password: str, source: str) -> Login:
    """Check a password. MAX_FAILED_LOGINS wrong ones in a row lock the account for
    LOCK_MINUTES (also against the right password meanwhile); each try is audited."""
    now = utcnow()
    with db.write() as s:
        operator = s.scalar(select(Operator).where(Operator.username == username).with_for_update())
        if operator is None:
            check_password_hash(_DUMMY_HASH, password)
            audit(s, username[:64], "login-failed", source, "unknown operator")
            return Login(False)
        if operator.locked_until is not None and operator.locked_until > now:
            audit(s, username, "login-refused", source, "locked")
            return Login(False, users.minutes_left(operator.locked_until, now))
        if not check_password_hash(operator.password_hash, password):
            failures = operator.failed_logins + 1
            locked = now + dt.timedelta(minutes=LOCK_MINUTES) if failures >= MAX_FAILED_LOGINS else None
            operator.failed_logins = 0 if locked else failures
            operator.locked_until = locked
            audit(s, username, "login-failed", source, "locked" if locked else f"wrong password {failures}")
            return Login(False, LOCK_MINUTES if locked else 0)
        operator.failed_logins, operator.locked_until, operator.last_login_at = 0, None, now
        audit(s, username, "login", source, "")
        return Login(True)


def audit(session: Session, operator: str, action: str, subject: str, reason: str, detail: str = "") -> None:
    session.add(AuditEntry(operator=operator[:64], action=action[:32], subject=subject[:64], reason=reason[:255],
                           detail=detail[:255]))


def recent_audit(session: Session, limit: int = 50, subject: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if subject is not None:
        query = query.where(AuditEntry.subject == subject)
    return list(session.scalars(query))


# ------------------------------------------------------------------ what they may do to an account
def _reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if len(reason) < 5:
        raise OperatorError("say why (a ticket and what was checked), at least 5 characters")
    return reason[:200]


def _customer(s: Session, phone: str) -> User:
    user = users.get(s, phone)
    if user is None:
        raise OperatorError(f"no customer with phone {phone}")
    return user


def adjust(db: Database, operator: str, phone: str, sats: int, reason: str, nonce: str = "") -> int:
    """Credit (sats > 0) or debit (sats < 0) a customer: an entry against the adjustments account
    with the reason, and its audit line. Returns the new balance. A debit never overdraws. `nonce`
    (the form's): the same form sent twice moves money once."""
    why = _reason(reason)
    if sats == 0:
        raise OperatorError("an amount of 0 moves nothing")
    try:
        return _adjust(db, operator, phone, sats, why, f"operator:{nonce or uuid.uuid4().hex}")
    except IntegrityError:
        raise OperatorError("this form was sent already: nothing more was moved") from None


def _adjust(db: Database, operator: str, phone: str, sats: int, why: str, key: str) -> int:
    with db.write() as s:
        user = _customer(s, phone)
        if sats > 0:
            balance = transactions.credit_adjustment(s, user.id, sats, f"operator {operator}: {why}", key)
        else:
            balance = _debit_adjustment(s, user.id, -sats, f"operator {operator}: {why}", key)
        audit(s, operator, "credit" if sats > 0 else "debit", phone, why, f"{sats:+} sats, balance {balance}")
        sms.queue(s, phone, t(user.language, "sms.adjusted", amount=abs(sats), balance=balance)
                  if sats > 0 else t(user.language, "sms.debited", amount=-sats, balance=balance))
    log.warning("operator %s moved %+d sats on %s: %s", operator, sats, mask(phone), why)
    return balance


def _debit_adjustment(s: Session, user_id: int, amount: int, reason: str, key: str) -> int:
    try:
        after = transactions.debit(s, user_id, amount)
    except AccountLocked:  # a PIN lock does not stop an operator's correction
        after = _debit_locked(s, user_id, amount)
    row = Transaction(user_id=user_id, type=ADJUST, direction=DEBIT, amount_sats=amount, fee_sats=0,
                      status=SETTLED, reference=new_reference(), counterparty="operator",
                      description=reason[:255], idempotency_key=key, settled_at=utcnow())
    s.add(row)
    s.flush()
    journal.record(s, "adjustment", row.reference, [journal.customer(user_id, amount),
                                                    journal.house(ADJUSTMENTS, -amount)],
                   transaction_id=row.id, memo=reason)
    return after


def _debit_locked(s: Session, user_id: int, amount: int) -> int:
    moved = s.execute(update(User).where(User.id == user_id, User.balance_sats >= amount)
                      .values(balance_sats=User.balance_sats - amount)).rowcount  # type: ignore[attr-defined]
    if moved != 1:
        raise InsufficientBalance(s.scalar(select(User.balance_sats).where(User.id == user_id)) or 0)
    return int(s.scalar(select(User.balance_sats).where(User.id == user_id)) or 0)


def unlock_pin(db: Database, operator: str, phone: str, reason: str) -> None:
    """Lift a PIN lock (the customer proved who they are): failures back to 0, no lock."""
    why = _reason(reason)
    with db.write() as s:
        user = _customer(s, phone)
        s.execute(update(User).where(User.id == user.id).values(pin_failures=0, pin_locked_until=None))
        audit(s, operator, "unlock-pin", phone, why)


def reset_pin(db: Database, operator: str, phone: str, reason: str) -> None:
    """Clear the PIN (users.reset_pin: the owner creates a new one at the next dial, and is told)."""
    why = _reason(reason)
    if not users.reset_pin(db, phone):
        raise OperatorError(f"no customer with phone {phone}")
    with db.write() as s:
        audit(s, operator, "reset-pin", phone, why)


def pin_locked(user: User) -> bool:
    return user.pin_locked_until is not None and user.pin_locked_until > utcnow()


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Operator)) or 0)
