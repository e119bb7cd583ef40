"""SIM swaps (issue 33): before money out and any PIN change, the phone's last SIM swap is known.

A phone's row of `phone_guards` caches what its provider last said (answer, last swap, when),
the question still open, and an operator's release of the hold. atoms.metta decides
(`sim-swap-decision`): a swap within `sim-swap-hold-days` holds money out and PIN changes until an
operator clears it; with no fresh answer, small amounts go on and large ones wait. Receiving is
never checked.

When the provider answers later (Africa's Talking: by callback), a session's first step asks ahead
(`want_answer`: a job for the worker, at most once per `sim-swap-ask-again-minutes`), so the PIN
step only reads the row. The simulated provider's answer is the row itself (a demo marks swaps).
A newly reported swap within the hold sends the number one SMS, in the transaction that records it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.infra.fastpath import Prepared
from helpers.infra.i18n import t
from helpers.infra.phone import mask
from helpers.simswap.provider import Reported
from helpers.wallet import users
from helpers.wallet.rules import Decision, Policy
from helpers.wallet.services import Services
from models import NO_ANSWER, NOT_SWAPPED, SWAPPED, Job, PhoneGuard, User, utcnow

log = logging.getLogger(__name__)

JOB_KIND = "simswap"  # the worker's job that asks the provider about one phone (key: the phone)
MONEY_OUT, PIN_CHANGE, PIN_RESET = "money-out", "pin-change", "pin-reset"
_GUARDS = cast(Table, PhoneGuard.__table__)


@dataclass(frozen=True)
class Guard:
    """A phone's row as the guard reads it (no row: nothing known, nothing under way)."""

    phone: str
    swap_answer: str = NO_ANSWER
    last_swap_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    cleared_swap_at: dt.datetime | None = None
    reset_due_at: dt.datetime | None = None

    @property
    def cleared(self) -> bool:
        """An operator verified the owner since the last swap we know of."""
        return (self.last_swap_at is not None and self.cleared_swap_at is not None
                and self.cleared_swap_at >= self.last_swap_at)


_READ = Prepared(select(_GUARDS.c.swap_answer, _GUARDS.c.last_swap_at, _GUARDS.c.answered_at,
                        _GUARDS.c.cleared_swap_at, _GUARDS.c.reset_due_at)
                 .where(_GUARDS.c.phone == bindparam("phone")))


def read(db: Database, phone: str) -> Guard:
    """The phone's guard row: one index lookup, no network."""
    row = db.execute(_READ, {"phone": phone}).first()
    return Guard(phone) if row is None else Guard(phone, *row)


def decide(svc: Services, guard: Guard, what: str, amount_sats: int = 0) -> Decision:
    """May `what` (MONEY_OUT of `amount_sats`, PIN_CHANGE, PIN_RESET) go on, as far as SIM swaps
    go? The provider off: always. Deny reasons: sim-swap-hold, sim-swap-unknown."""
    if svc.sim_swap is None:
        return Decision(True)
    now = utcnow()
    days = -1 if guard.last_swap_at is None else max(0, (now - guard.last_swap_at).days)
    if svc.sim_swap.asks_ahead:
        fresh_for = dt.timedelta(hours=svc.policy.value("sim-swap-cache-hours"))
        answered = (guard.swap_answer in (SWAPPED, NOT_SWAPPED) and guard.answered_at is not None
                    and now - guard.answered_at < fresh_for)
    else:
        answered = True  # the simulated provider's answer is this row (no row: never swapped)
    return svc.policy.sim_swap(what, days, guard.cleared, answered, amount_sats)


def check(svc: Services, phone: str, what: str, amount_sats: int = 0) -> tuple[Decision, Guard]:
    """read() then decide(): the decision and the row it was made from."""
    guard = read(svc.db, phone)
    return decide(svc, guard, what, amount_sats), guard


def ensure_row(s: Session, phone: str) -> None:
    """The phone's row, created (empty) inside the caller's transaction if it is missing."""
    if s.get(PhoneGuard, phone) is not None:
        return
    try:
        with s.begin_nested():
            s.add(PhoneGuard(phone=phone, swap_answer=NO_ANSWER))
    except IntegrityError:  # created at the same moment by another request
        pass


# ------------------------------------------------------------------ answers
def record(db: Database, policy: Policy, reported: Reported, *, request_id: str | None) -> bool:
    """Record a provider's answer about a phone. `request_id`: the answer must be to this open
    question of the phone's row (a callback; anything unmatched changes nothing); None: an answer
    given at once to our own question, or a demo's mark. A newly reported swap within the hold
    sends the number one SMS (a repeated callback, with the same date, sends nothing).
    Returns whether the row changed."""
    now = utcnow()
    with db.write() as s:
        if request_id is None:
            ensure_row(s, reported.phone)
        row = s.execute(select(PhoneGuard).where(PhoneGuard.phone == reported.phone).with_for_update()).scalar()
        if row is None or (request_id is not None and (not request_id or row.request_id != request_id)):
            log.warning("sim swap answer for %s matches no open question; ignored", mask(reported.phone))
            return False
        before = row.last_swap_at
        new_swap = reported.swapped and reported.last_swap_at is not None and (
            before is None or reported.last_swap_at > before)
        row.swap_answer = SWAPPED if reported.swapped else NOT_SWAPPED
        if reported.last_swap_at is not None and (before is None or reported.last_swap_at > before):
            row.last_swap_at = reported.last_swap_at
        row.answered_at, row.request_id = now, None
        row.next_ask_at = now + dt.timedelta(hours=policy.value("sim-swap-cache-hours"))
        if new_swap and reported.last_swap_at is not None \
                and (now - reported.last_swap_at).days < policy.value("sim-swap-hold-days"):
            user = users.get(s, reported.phone)
            if user is not None:
                sms.queue(s, reported.phone, t(user.language, "sms.sim-swap-hold"))
            log.warning("sim swap of %s reported: money out held", mask(reported.phone))
        return True


def mark_swapped(db: Database, policy: Policy, phone: str) -> None:
    """Demo mode (the simulated provider): the phone's SIM was swapped now."""
    record(db, policy, Reported(phone, True, utcnow()), request_id=None)


# ------------------------------------------------------------------ asking ahead
def want_answer(db: Database, policy: Policy, phone: str) -> bool:
    """A session's first step found no fresh answer (or none asked lately): ask the provider, by a
    job the worker runs at once, at most once per `sim-swap-ask-again-minutes`. Returns whether
    it asked (False: asked lately, by this or a parallel step)."""
    now = utcnow()
    with db.write() as s:
        ensure_row(s, phone)
        taken = cast(CursorResult, s.execute(
            update(PhoneGuard).where(PhoneGuard.phone == phone,
                                     (PhoneGuard.next_ask_at.is_(None)) | (PhoneGuard.next_ask_at <= now))
            .values(next_ask_at=now + dt.timedelta(minutes=policy.value("sim-swap-ask-again-minutes"))))).rowcount
        if taken != 1:
            return False
        rearmed = cast(CursorResult, s.execute(update(Job).where(Job.kind == JOB_KIND, Job.key == phone).values(
            done_at=None, due_at=now, attempts=0, lease_until=None, leased_by=None))).rowcount
        if not rearmed:
            s.add(Job(kind=JOB_KIND, key=phone, due_at=now))
    return True


def ask(svc: Services, phone: str) -> bool:
    """The worker's job: ask the provider about `phone` and keep the question's id (its answer
    comes by callback) or the answers given at once. True: done (a failure is logged; the next
    session's first step asks again after `sim-swap-ask-again-minutes`)."""
    if svc.sim_swap is None or not svc.sim_swap.asks_ahead:
        return True
    asked = svc.sim_swap.ask(phone)
    if asked.request_id and not asked.reported:
        with svc.db.write() as s:
            s.execute(update(PhoneGuard).where(PhoneGuard.phone == phone).values(request_id=asked.request_id))
    for reported in asked.reported:
        record(svc.db, svc.policy, reported, request_id=None)
    if asked.error:
        log.warning("sim swap check of %s: %s", mask(phone), asked.error)
    return True


def callback(svc: Services, body: object) -> tuple[int, int]:
    """A provider's callback (its caller already checked): (answers in it, answers recorded)."""
    if svc.sim_swap is None:
        return 0, 0
    found = svc.sim_swap.parse_callback(body)
    return len(found), sum(record(svc.db, svc.policy, r, request_id=r.request_id) for r in found)


# ------------------------------------------------------------------ the operators' queue
@dataclass(frozen=True)
class Held:
    phone: str
    last_swap_at: dt.datetime
    answered_at: dt.datetime | None
    balance_sats: int


def held(db: Database, policy: Policy, limit: int = 200) -> list[Held]:
    """Customers whose money out a recent SIM swap holds, newest swap first: the console's queue."""
    since = utcnow() - dt.timedelta(days=policy.value("sim-swap-hold-days"))
    with db.read() as s:
        rows = s.execute(
            select(PhoneGuard.phone, PhoneGuard.last_swap_at, PhoneGuard.answered_at, User.balance_sats)
            .join(User, User.phone == PhoneGuard.phone)
            .where(PhoneGuard.last_swap_at.is_not(None), PhoneGuard.last_swap_at > since,
                   (PhoneGuard.cleared_swap_at.is_(None)) | (PhoneGuard.cleared_swap_at < PhoneGuard.last_swap_at))
            .order_by(PhoneGuard.last_swap_at.desc()).limit(limit)).all()
    return [Held(phone, swapped, answered, balance) for phone, swapped, answered, balance in rows if swapped]


def clear_in(s: Session, phone: str) -> dt.datetime | None:
    """Release the hold of the phone's last swap (an operator verified the owner), in the caller's
    transaction, with an SMS to the customer. Returns the swap released, or None if none is held."""
    row = s.execute(select(PhoneGuard).where(PhoneGuard.phone == phone).with_for_update()).scalar()
    if row is None or row.last_swap_at is None or (
            row.cleared_swap_at is not None and row.cleared_swap_at >= row.last_swap_at):
        return None
    row.cleared_swap_at = row.last_swap_at
    user = users.get(s, phone)
    if user is not None:
        sms.queue(s, phone, t(user.language, "sms.sim-swap-cleared"))
    return row.last_swap_at
