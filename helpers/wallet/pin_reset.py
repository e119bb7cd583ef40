"""Forgot PIN, self-service (issue 33): a delayed reset that the current PIN cancels.

The customer confirms "Forgot PIN"; the reset is due `pin-reset-delay-h` later (atoms.metta), and
an SMS says so at once. Until then money out waits, and typing the current PIN correctly in any
session cancels it (SMS). When it is due, the worker (or the customer's next dial, whichever comes
first) clears the PIN, so the next dial asks for a new one as registration does (SMS). It is
refused after a recent SIM swap, and a swap reported while it waits stops it.

The reset lives in the phone's `phone_guards` row (`reset_due_at`); every step of it is also an
audit_log line whose operator is "customer", so customer care can see the history.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.phone import mask
from helpers.wallet import operators, sim_swap, users
from helpers.wallet.services import Services
from helpers.wallet.users import UserView
from models import PhoneGuard, User, utcnow

log = logging.getLogger(__name__)

JOB_KIND = "pinreset"  # the worker's job that completes one due reset (key: the phone)
SELF = "customer"  # the audit_log's operator for a customer's own action
# What complete() did: nothing due (none, or not yet), the PIN cleared, the reset stopped by a SIM
# swap, or waiting for an answer about the SIM.
NOTHING, DONE, STOPPED, WAITING = "nothing", "done", "stopped", "waiting"


class ResetRefused(Exception):
    """A SIM swap stops the reset: `reason` is sim-swap-hold or sim-swap-unknown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResetUnderWay(Exception):
    """A reset is already due at `due_at`."""

    def __init__(self, due_at: dt.datetime) -> None:
        super().__init__(due_at.isoformat())
        self.due_at = due_at


def hours_left(due_at: dt.datetime) -> int:
    """Whole hours until `due_at`, the current one counted (0 once due)."""
    seconds = (due_at - utcnow()).total_seconds()
    return 0 if seconds <= 0 else int(-(-seconds // 3600))


def request(svc: Services, user: UserView) -> dt.datetime:
    """Schedule the reset of `user`'s PIN; returns when it is due. Raises ResetRefused (a SIM
    swap), ResetUnderWay (one is already scheduled)."""
    decision, guard = sim_swap.check(svc, user.phone, sim_swap.PIN_RESET)
    if not decision.allowed:
        raise ResetRefused(decision.reason or "sim-swap-hold")
    if guard.reset_due_at is not None:
        raise ResetUnderWay(guard.reset_due_at)
    delay = svc.policy.value("pin-reset-delay-h")
    due = utcnow() + dt.timedelta(hours=delay)
    with svc.db.write() as s:
        sim_swap.ensure_row(s, user.phone)
        taken = cast(CursorResult, s.execute(
            update(PhoneGuard).where(PhoneGuard.phone == user.phone, PhoneGuard.reset_due_at.is_(None))
            .values(reset_due_at=due))).rowcount
        if taken != 1:  # a parallel request of this phone scheduled one first
            raise ResetUnderWay(s.scalar(select(PhoneGuard.reset_due_at).where(PhoneGuard.phone == user.phone))
                                or due)
        sms.queue(s, user.phone, t(user.language, "sms.pin-reset-requested", hours=delay, code=svc.service_code))
        operators.audit(s, SELF, "pin-reset-requested", user.phone, "Forgot PIN", f"due {due:%Y-%m-%d %H:%M} UTC")
    return due


def cancel(db: Database, phone: str, language: str) -> bool:
    """The current PIN was typed correctly: a reset under way is cancelled (SMS). Returns whether
    there was one."""
    with db.write() as s:
        done = cast(CursorResult, s.execute(
            update(PhoneGuard).where(PhoneGuard.phone == phone, PhoneGuard.reset_due_at.is_not(None))
            .values(reset_due_at=None))).rowcount == 1
        if done:
            sms.queue(s, phone, t(language, "sms.pin-reset-cancelled"))
            operators.audit(s, SELF, "pin-reset-cancelled", phone, "the current PIN was typed")
    return done


def complete(svc: Services, phone: str) -> str:
    """Finish the phone's reset if it is due: the PIN is cleared (the next dial sets one) and the
    customer told (DONE). A SIM swap within the hold stops it instead (STOPPED, SMS); with no
    answer about the SIM it waits (WAITING: the provider is asked). NOTHING: none is due."""
    guard = sim_swap.read(svc.db, phone)
    due = guard.reset_due_at
    if due is None or due > utcnow():
        return NOTHING
    decision = sim_swap.decide(svc, guard, sim_swap.PIN_RESET)
    if not decision.allowed and decision.reason != "sim-swap-hold":
        if svc.sim_swap is not None and svc.sim_swap.asks_ahead:
            sim_swap.want_answer(svc.db, svc.policy, phone)
        return WAITING
    stopped = not decision.allowed
    with svc.db.write() as s:
        taken = cast(CursorResult, s.execute(
            update(PhoneGuard).where(PhoneGuard.phone == phone, PhoneGuard.reset_due_at == due)
            .values(reset_due_at=None))).rowcount == 1
        if not taken:  # cancelled or completed meanwhile
            return NOTHING
        user = users.get(s, phone)
        language = user.language if user is not None else svc.settings.default_language
        if stopped:
            sms.queue(s, phone, t(language, "sms.pin-reset-stopped"))
            operators.audit(s, SELF, "pin-reset-stopped", phone, "the SIM card was changed")
            log.warning("pin reset of %s stopped: a recent SIM swap", mask(phone))
            return STOPPED
        s.execute(update(User).where(User.phone == phone).values(
            pin_hash=None, pin_failures=0, pin_locks=0, pin_locked_until=None))
        sms.queue(s, phone, t(language, "sms.pin-reset-ready", code=svc.service_code))
        operators.audit(s, SELF, "pin-reset-done", phone, "Forgot PIN, after the delay")
    return DONE


def due(db: Database, limit: int = 500) -> list[str]:
    """Phones whose reset is due: the worker's sweep gives each a job."""
    with db.read() as s:
        return list(s.scalars(select(PhoneGuard.phone).where(PhoneGuard.reset_due_at <= utcnow())
                              .order_by(PhoneGuard.reset_due_at).limit(limit)))
