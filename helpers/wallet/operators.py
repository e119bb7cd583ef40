"""The people who run the wallet: their accounts, their sign-in, and what they may do to a
customer's account. Every action is written to the audit log (who, what, to whom, why) in the
same database transaction as the action, so neither exists without the other."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import cast

import pyotp

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.phone import mask
from helpers.infra.refs import new_reference
from helpers.wallet import rules, sim_swap
from helpers.wallet.customers import limits, tiers, users
from helpers.wallet.ledger import journal, movements
from models import (ADJUST, ADJUSTMENTS, DEBIT, AuditEntry, Operator, PhoneGuard, User,
                    utcnow)

log = logging.getLogger(__name__)

# Wrong sign-ins are counted per client address in fixed windows of THROTTLE_MINUTES, never on
# the operator's row: anonymous tries can slow down only the address they come from, never lock a
# named operator out. Unknown names are counted and answered exactly as known ones.
MAX_FAILED_LOGINS = 10  # wrong sign-ins for one name from one address, per window
MAX_FAILED_PER_ADDRESS = 30  # wrong sign-ins from one address, whatever the names, per window
THROTTLE_MINUTES = 15
MIN_PASSWORD = 12
TOTP_ISSUER = "SatsPesa console"
SIGN_IN_FAILURES = ("login-failed", "login-refused")  # audit actions kept apart from the action list
_USERNAME = re.compile(r"[a-z0-9._-]{2,64}")
# A hash and a secret to check unknown usernames against, so they take as long as known ones.
_DUMMY_HASH = generate_password_hash("not a password of anyone", method="scrypt")
_DUMMY_TOTP = pyotp.random_base32()


class OperatorError(ValueError):
    """A request an operator made that cannot be done; the message says why."""


@dataclass(frozen=True)
class Login:
    """What a sign-in came to. ok: `operator_id` and `session_key` go in the console's cookie.
    Not ok: `retry_minutes` > 0 when throttled, `locked` when the operator is locked (told only
    to someone who gave the right password and code), `no_second_factor` likewise."""

    ok: bool
    retry_minutes: int = 0
    locked: bool = False
    no_second_factor: bool = False
    operator_id: int = 0
    session_key: str = ""


@dataclass(frozen=True)
class Enrolment:
    """A new second factor, shown once: the secret and the otpauth:// URI an authenticator reads."""

    secret: str
    uri: str


def add(db: Database, username: str, password: str) -> Enrolment:
    """Create an operator with a password and a second factor; returns the factor to show once."""
    if not _USERNAME.fullmatch(username):
        raise OperatorError("a username is 2-64 of a-z, 0-9, '.', '_', '-'")
    _check_password(password)
    secret = pyotp.random_base32()
    with db.write() as s:
        if s.scalar(select(Operator.id).where(Operator.username == username)) is not None:
            raise OperatorError(f"operator {username!r} exists already")
        s.add(Operator(username=username, password_hash=generate_password_hash(password, method="scrypt"),
                       totp_secret=secret))
        audit(s, "cli", "operator-add", username, "")
    return _enrolment(username, secret)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"a password needs at least {MIN_PASSWORD} characters")


def _enrolment(username: str, secret: str) -> Enrolment:
    return Enrolment(secret, pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER))


# ------------------------------------------------------------------ sign-in
def login(db: Database, username: str, password: str, code: str, source: str) -> Login:
    """Check a password and a TOTP code (each code once). From an address with MAX_FAILED_LOGINS
    wrong tries for this name, or MAX_FAILED_PER_ADDRESS for any names, in this window of
    THROTTLE_MINUTES, nothing is checked until the window ends. A wrong try is counted and audited
    (action login-failed); unknown names take the same time and get the same answers as known ones.

    The try is counted first, by the counters' atomic upsert, so parallel tries cannot all pass
    the limit (a right one is uncounted after); the password is hashed outside any transaction,
    so no try holds a lock (on SQLite, the one writer's) while it is checked. A sign-in issues a
    new session key: every earlier console session of the operator ends."""
    window = THROTTLE_MINUTES * 60
    now_s = time.time()
    bucket = int(now_s // window)
    events = [(_throttle_key("signin-name", username, source), bucket), (_throttle_key("signin-addr", source), bucket)]
    retry = int((bucket + 1) * window - now_s) // 60 + 1
    with db.write() as s:
        name_tries, address_tries = limits.count_in(s.connection(), events)
    if name_tries > MAX_FAILED_LOGINS or address_tries > MAX_FAILED_PER_ADDRESS:
        return Login(False, retry_minutes=retry)
    with db.read() as s:
        operator = s.scalar(select(Operator).where(Operator.username == username))
    right = _password_and_code_right(operator, password, code, now_s)
    with db.write() as s:
        if operator is None or right is None:
            if operator is not None:
                s.execute(update(Operator).where(Operator.id == operator.id)
                          .values(failed_logins=Operator.failed_logins + 1))
            audit(s, username[:64], "login-failed", source, "unknown operator" if operator is None else "wrong")
            return Login(False)
        limits.uncount_in(s.connection(), events)  # a right try is not a failure
        if operator.locked_until is not None and operator.locked_until > utcnow():
            audit(s, username, "login-refused", source, "locked")
            return Login(False, locked=True)
        if operator.totp_secret is None:
            audit(s, username, "login-refused", source, "no second factor")
            return Login(False, no_second_factor=True)
        key = _new_session_key()
        # the code's step is taken once, whatever the races: a second sign-in with it finds it used
        taken = update(Operator).where(Operator.id == operator.id, or_(Operator.totp_last_step.is_(None),
                                                                          Operator.totp_last_step < right))
        if cast(CursorResult, s.execute(taken.values(failed_logins=0, last_login_at=utcnow(), totp_last_step=right,
                                                     session_key=key))).rowcount != 1:
            limits.count_in(s.connection(), events)
            audit(s, username, "login-failed", source, "code used")
            return Login(False)
        audit(s, username, "login", source, "")
        return Login(True, operator_id=operator.id, session_key=key)


def _throttle_key(kind: str, *parts: str) -> str:
    """A counter's key: a digest, so a long name and an IPv6 address fit the column."""
    return f"{kind}:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def _password_and_code_right(operator: Operator | None, password: str, code: str, now_s: float) -> int | None:
    """The time step of the code when both the password and the code are right (a code whose step
    was used before is wrong); None otherwise. An operator without a second factor passes the code
    check (sign-in then refuses them by name, told only to one who knew the password)."""
    password_ok = check_password_hash(operator.password_hash if operator else _DUMMY_HASH, password)
    secret = (operator.totp_secret if operator else None) or _DUMMY_TOTP
    step = _code_step(secret, code, now_s)
    if operator is None or not password_ok:
        return None
    if operator.totp_secret is None:
        return 0
    if step is None or (operator.totp_last_step is not None and step <= operator.totp_last_step):
        return None
    return step


def _code_step(secret: str, code: str, now_s: float) -> int | None:
    """The 30-s time step whose code `code` is (this one, or one either side for clock drift)."""
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(dt.datetime.fromtimestamp(now_s, dt.UTC))
    typed = "".join(code.split()).encode()  # bytes: compare_digest refuses non-ASCII text (a 500)
    for step in (now_step - 1, now_step, now_step + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), typed):
            return step
    return None


def _new_session_key() -> str:
    return secrets.token_urlsafe(32)


def session_operator(db: Database, operator_id: int, session_key: str) -> str | None:
    """The username of the operator a console session belongs to, loaded now: None when the row
    is gone, the operator is locked, or their sessions were ended (the key changed)."""
    with db.read() as s:
        operator = s.get(Operator, operator_id)
    if operator is None or not operator.session_key or not session_key:
        return None
    if not hmac.compare_digest(operator.session_key, session_key):
        return None
    if operator.locked_until is not None and operator.locked_until > utcnow():
        return None
    return operator.username


# ------------------------------------------------------------------ access: each ends every session
def sign_out(db: Database, operator_id: int, source: str) -> None:
    """End every console session of this operator (all devices), audited."""
    with db.write() as s:
        operator = s.get(Operator, operator_id)
        if operator is not None:
            operator.session_key = None
            audit(s, operator.username, "logout", source, "")


def _operator(s: Session, username: str) -> Operator:
    operator = s.scalar(select(Operator).where(Operator.username == username).with_for_update())
    if operator is None:
        raise OperatorError(f"no operator {username!r}")
    return operator


def remove(db: Database, by: str, username: str, reason: str) -> None:
    """Delete an operator: their sessions end with the row."""
    why = _reason(reason)
    with db.write() as s:
        s.delete(_operator(s, username))
        audit(s, by, "operator-remove", username, why)


def lock(db: Database, by: str, username: str, reason: str, until: dt.datetime | None = None) -> None:
    """Lock an operator (until `until`, default for good): no sign-in, every session ended."""
    why = _reason(reason)
    with db.write() as s:
        operator = _operator(s, username)
        operator.locked_until, operator.session_key = until or dt.datetime(9999, 12, 31), None
        audit(s, by, "operator-lock", username, why, f"until {operator.locked_until:%Y-%m-%d %H:%M}")


def unlock(db: Database, by: str, username: str, reason: str) -> None:
    """Lift an operator's lock (they sign in again)."""
    why = _reason(reason)
    with db.write() as s:
        _operator(s, username).locked_until = None
        audit(s, by, "operator-unlock", username, why)


def set_password(db: Database, by: str, username: str, password: str) -> None:
    """A new password: every session of the operator ends."""
    _check_password(password)
    with db.write() as s:
        operator = _operator(s, username)
        operator.password_hash = generate_password_hash(password, method="scrypt")
        operator.session_key = None
        audit(s, by, "operator-password", username, "")


def enrol_totp(db: Database, by: str, username: str) -> Enrolment:
    """A new second factor (the old one stops working, every session ends); shown once."""
    secret = pyotp.random_base32()
    with db.write() as s:
        operator = _operator(s, username)
        operator.totp_secret, operator.totp_last_step, operator.session_key = secret, None, None
        audit(s, by, "operator-totp", username, "new second factor")
    return _enrolment(username, secret)


def audit(session: Session, operator: str, action: str, subject: str, reason: str, detail: str = "") -> None:
    session.add(AuditEntry(operator=operator[:64], action=action[:32], subject=subject[:64], reason=reason[:255],
                           detail=detail[:255]))


def recent_audit(session: Session, limit: int = 50, subject: str | None = None) -> list[AuditEntry]:
    """The newest operator actions, failed sign-ins left out (failed_sign_ins has them)."""
    query = (select(AuditEntry).where(AuditEntry.action.not_in(SIGN_IN_FAILURES))
             .order_by(AuditEntry.id.desc()).limit(limit))
    if subject is not None:
        query = query.where(AuditEntry.subject == subject)
    return list(session.scalars(query))


@dataclass(frozen=True)
class FailedSignIns:
    """Failed sign-ins since a time: how many, from how many addresses, and the newest few."""

    count: int
    addresses: int
    recent: list[AuditEntry]


def failed_sign_ins(session: Session, since: dt.datetime, limit: int = 10) -> FailedSignIns:
    failed = AuditEntry.action.in_(SIGN_IN_FAILURES) & (AuditEntry.created_at >= since)
    count, addresses = session.execute(select(func.count(), func.count(AuditEntry.subject.distinct()))
                                       .where(failed)).one()
    recent = list(session.scalars(select(AuditEntry).where(failed).order_by(AuditEntry.id.desc()).limit(limit)))
    return FailedSignIns(int(count), int(addresses), recent)


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


def preview_adjust(db: Database, phone: str, sats: int, reason: str) -> tuple[int, int]:
    """What adjust would do, checked as it checks (a reason, the customer, no overdraft), moving
    nothing: the balance now and after."""
    _reason(reason)
    with db.read() as s:
        balance = _customer(s, phone).balance_sats
    if sats == 0:
        raise OperatorError("an amount of 0 moves nothing")
    if balance + sats < 0:
        raise OperatorError(f"the balance is {balance:,} sats: a debit never overdraws")
    return balance, balance + sats


def _adjust(db: Database, operator: str, phone: str, sats: int, why: str, key: str) -> int:
    with db.write() as s:
        user = _customer(s, phone)
        if sats > 0:
            balance = movements.credit_adjustment(s, user.id, sats, f"operator {operator}: {why}", key)
        else:
            balance = _debit_adjustment(s, user.id, -sats, f"operator {operator}: {why}", key)
        audit(s, operator, "credit" if sats > 0 else "debit", phone, why, f"{sats:+} sats, balance {balance}")
        sms.queue(s, phone, t(user.language, "sms.adjusted", amount=abs(sats), balance=balance)
                  if sats > 0 else t(user.language, "sms.debited", amount=-sats, balance=balance))
    log.warning("operator %s moved %+d sats on %s: %s", operator, sats, mask(phone), why)
    return balance


def _debit_adjustment(s: Session, user_id: int, amount: int, reason: str, key: str) -> int:
    """An operator's debit inside the caller's transaction: never an overdraft, but a PIN lock
    does not stop a correction."""
    recorded = journal.record(
        s, journal.Entry("adjustment", new_reference(), user_id, ADJUST, DEBIT, amount, counterparty="operator",
                         description=reason, memo=reason, idempotency_key=key),
        [journal.customer(user_id, amount), journal.house(ADJUSTMENTS, -amount)], any_lock=True)
    return recorded.balances[user_id]


def unlock_pin(db: Database, operator: str, phone: str, reason: str) -> None:
    """Lift a PIN lock (the customer proved who they are): failures back to 0, no lock."""
    why = _reason(reason)
    with db.write() as s:
        user = _customer(s, phone)
        s.execute(update(User).where(User.id == user.id).values(pin_failures=0, pin_locked_until=None))
        audit(s, operator, "unlock-pin", phone, why)


def reset_pin(db: Database, operator: str, phone: str, reason: str) -> None:
    """Clear the PIN (users.reset_pin: the owner creates a new one at the next dial, and is told),
    and its audit line, in one transaction."""
    why = _reason(reason)
    with db.write() as s:
        if not users.reset_pin_in(s, phone):
            raise OperatorError(f"no customer with phone {phone}")
        # a self-service reset under way ends here: the owner sets the new PIN at the next dial
        s.execute(update(PhoneGuard).where(PhoneGuard.phone == phone, PhoneGuard.reset_due_at.is_not(None))
                  .values(reset_due_at=None, reset_told_at=None))
        audit(s, operator, "reset-pin", phone, why)


def clear_sim_swap(db: Database, operator: str, phone: str, reason: str) -> dt.datetime:
    """Release the hold a recent SIM swap put on a customer's money out (the operator verified the
    owner, ID seen): the customer is told by SMS, and the audit line is in the same transaction.
    Returns the swap released."""
    why = _reason(reason)
    with db.write() as s:
        _customer(s, phone)
        swap = sim_swap.clear_in(s, phone)
        if swap is None:
            raise OperatorError(f"{phone} has no SIM swap on hold")
        audit(s, operator, "clear-sim-swap", phone, why, f"swap of {swap:%Y-%m-%d %H:%M} UTC")
    return swap


def pin_locked(user: User) -> bool:
    return user.pin_locked_until is not None and user.pin_locked_until > utcnow()


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Operator)) or 0)


def set_tier(db: Database, operator: str, phone: str, tier: int, reason: str) -> None:
    """An operator sets a customer's identity tier (issue 34): 2 after checking their documents, or
    lower (a verification found wrong). Audited, with an SMS saying the new limits."""
    why = _reason(reason)
    top = rules.policy().value("top-tier")
    if not 0 <= tier <= top:
        raise OperatorError(f"a tier is 0 to {top}")
    with db.write() as s:
        user = _customer(s, phone)
        before = user.tier
        s.execute(update(User).where(User.id == user.id).values(tier=tier, tier_at=utcnow()))
        caps = tiers.caps(rules.policy(), tier, rules.policy().value("fixed-kes-per-btc"))
        sms.queue(s, phone, t(user.language, "sms.tier", tier=tier, cap_day=caps.day_kes))
        audit(s, operator, "tier", phone, why, f"tier {before} -> {tier}")
