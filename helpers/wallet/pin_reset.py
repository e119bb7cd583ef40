"""Forgot PIN, self-service (issue 33): a delayed reset that the current PIN cancels.

The customer confirms "Forgot PIN"; the reset is due `pin-reset-delay-h` later (atoms.metta), and
an SMS says so at once. Until then money out waits, and typing the current PIN correctly in any
session cancels it (SMS). Once it is due, the owner's next dial asks for a new PIN, and the new PIN
replaces the old one only there, with a fresh "not swapped" answer about the SIM that came after
the due time (complete()); the worker only sends a reminder SMS. Refused with the SIM swap provider
off and after any swap since the PIN was set that no operator cleared; a swap reported while it
waits stops it.

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
from helpers.wallet import operators, sim_swap
from helpers.wallet.customers import users
from helpers.wallet.services import Services
from helpers.wallet.customers.users import UserView
from models import PhoneGuard, User, utcnow

log = logging.getLogger(__name__)

SELF = "customer"  # the audit_log's operator for a customer's own action
# What complete() did: nothing (no reset due, or not this one: cancelled or done meanwhile), the new
# PIN set, the reset stopped by a SIM swap, or waiting for a fresh answer about the SIM.
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


def _pin_set_at(svc: Services, phone: str) -> dt.datetime | None:
    with svc.db.read() as s:
        return s.scalar(select(User.pin_set_at).where(User.phone == phone))


def request(svc: Services, user: UserView) -> dt.datetime:
    """Schedule the reset of `user`'s PIN; returns when it is due. Raises ResetRefused (the
    provider is off, or a SIM swap), ResetUnderWay (one is already scheduled)."""
    decision, guard = sim_swap.check(svc, user.phone, sim_swap.PIN_RESET, pin_set_at=_pin_set_at(svc, user.phone))
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
            .values(reset_due_at=due, reset_told_at=None))).rowcount
        if taken != 1:  # a parallel request of this phone scheduled one first
            raise ResetUnderWay(s.scalar(select(PhoneGuard.reset_due_at).where(PhoneGuard.phone == user.phone))
                                or due)
        sms.queue(s, user.phone, t(user.language, "sms.pin-reset-requested", hours=delay, code=svc.service_code))
        operators.audit(s, SELF, "pin-reset-requested", user.phone, "Forgot PIN", f"due {due:%Y-%m-%d %H:%M} UTC")
    return due


def cancel(db: Database, phone: str, language: str) -> bool:
    """The current PIN was typed correctly: a reset under way is cancelled (SMS). Returns whether
    there was one to cancel (False: none, or finished or cancelled meanwhile by another session)."""
    with db.write() as s:
        done = cast(CursorResult, s.execute(
            update(PhoneGuard).where(PhoneGuard.phone == phone, PhoneGuard.reset_due_at.is_not(None))
            .values(reset_due_at=None, reset_told_at=None))).rowcount == 1
        if done:
            sms.queue(s, phone, t(language, "sms.pin-reset-cancelled"))
            operators.audit(s, SELF, "pin-reset-cancelled", phone, "the current PIN was typed")
    return done


def complete(svc: Services, user: UserView, due: dt.datetime, pin: str, started: dt.datetime | None) -> str:
    """At the owner's dial, after the delay: the new `pin` replaces the old one (DONE, SMS) if the
    reset due at `due` is still the one under way and the provider's latest answer about the SIM
    came after `due`, is fresh and says no swap holds the number. A SIM swap stops the reset
    instead (STOPPED, SMS; the old PIN stays); with no such answer it waits (WAITING: the provider
    is asked); NOTHING: cancelled or completed meanwhile."""
    guard = sim_swap.read(svc.db, user.phone)
    if guard.reset_due_at != due or due > utcnow():
        return NOTHING
    decision = sim_swap.decide(svc, guard, sim_swap.PIN_RESET, started=started, answered_after=due,
                               pin_set_at=_pin_set_at(svc, user.phone))
    if not decision.allowed and decision.reason == "sim-swap-unknown":
        sim_swap.ask_if_stale(svc, guard, None)
        return WAITING
    stopped = not decision.allowed
    with svc.db.write() as s:
        taken = cast(CursorResult, s.execute(
            # the answer decided on is still the latest: a swap told meanwhile stops this and asks again
            update(PhoneGuard).where(PhoneGuard.phone == user.phone, PhoneGuard.reset_due_at == due,
                                     PhoneGuard.answered_at.is_(None) if guard.answered_at is None
                                     else PhoneGuard.answered_at == guard.answered_at)
            .values(reset_due_at=None, reset_told_at=None))).rowcount == 1
        if not taken:  # cancelled or completed meanwhile
            return NOTHING
        if stopped:
            sms.queue(s, user.phone, t(user.language, "sms.pin-reset-stopped"))
            operators.audit(s, SELF, "pin-reset-stopped", user.phone, "the SIM card was changed")
            log.warning("pin reset of %s stopped: a SIM swap", mask(user.phone))
            return STOPPED
        s.execute(update(User).where(User.phone == user.phone).values(
            pin_hash=users.hash_pin(pin, svc.pepper), pin_set_at=utcnow(), pin_failures=0, pin_locks=0,
            pin_locked_until=None))
        sms.queue(s, user.phone, t(user.language, "sms.pin-changed"))
        operators.audit(s, SELF, "pin-reset-done", user.phone, "Forgot PIN, after the delay, new PIN set at a dial")
    return DONE


def remind(svc: Services, phone: str) -> bool:
    """The worker's part once a reset is due: one SMS saying to dial and set the new PIN. It
    changes no PIN. Returns whether it sent one."""
    now = utcnow()
    with svc.db.write() as s:
        told = cast(CursorResult, s.execute(
            update(PhoneGuard).where(PhoneGuard.phone == phone, PhoneGuard.reset_due_at <= now,
                                     PhoneGuard.reset_told_at.is_(None))
            .values(reset_told_at=now))).rowcount == 1
        if told:
            user = users.get(s, phone)
            language = user.language if user is not None else svc.settings.default_language
            sms.queue(s, phone, t(language, "sms.pin-reset-ready", code=svc.service_code))
    return told


def due(db: Database, limit: int = 500) -> list[str]:
    """Phones whose reset is due and not yet reminded: the worker's sweep reminds each."""
    with db.read() as s:
        return list(s.scalars(select(PhoneGuard.phone).where(PhoneGuard.reset_due_at <= utcnow(),
                                                             PhoneGuard.reset_told_at.is_(None))
                              .order_by(PhoneGuard.reset_due_at).limit(limit)))
