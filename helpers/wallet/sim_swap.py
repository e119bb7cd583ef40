"""SIM swaps (issue 33): before money out and any PIN change, the phone's last SIM swap is known.

A phone's row of `phone_guards` caches what its provider last said (answer, last swap, when),
the question still open, and an operator's release of the hold. atoms.metta decides
(`sim-swap-decision`): a swap told within `sim-swap-hold-days` (or after an answer of ours) holds
money out and PIN changes until an operator clears it; with no fresh answer (one after the session
started, or within `sim-swap-fresh-minutes`), money out goes on up to a total since the last
answer, and PIN changes wait. Receiving is never checked.

When the provider answers later (Africa's Talking: by callback), a session's first request asks
ahead once the answer is older than `sim-swap-ask-again-minutes` (`want_answer`: a job for the
worker, at most that often), and a PIN step that finds it stale asks too; steps only read the
row. The simulated provider's answer is the row itself (a demo marks swaps). A newly reported
swap that starts a hold sends the number one SMS, in the transaction that records it.
"""

from __future__ import annotations

import datetime as dt
import json
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
from helpers.wallet.customers import users
from helpers.wallet.ledger import movements
from helpers.wallet.rules import Decision, Policy
from helpers.wallet.services import Services
from models import NO_ANSWER, NOT_SWAPPED, SWAPPED, Job, PhoneGuard, User, utcnow

log = logging.getLogger(__name__)

JOB_KIND = "simswap"  # the worker's job that asks the provider about one phone (key: the phone)
MONEY_OUT, PIN_CHANGE, PIN_RESET = "money-out", "pin-change", "pin-reset"
AML_HOLD = "aml-hold"  # the refusal of money out an operator's hold of a monitoring case gives
_GUARDS = cast(Table, PhoneGuard.__table__)


@dataclass(frozen=True)
class Guard:
    """A phone's row as the guard reads it (no row: nothing known, nothing under way)."""

    phone: str
    swap_answer: str = NO_ANSWER
    last_swap_at: dt.datetime | None = None
    held_swap_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    cleared_swap_at: dt.datetime | None = None
    reset_due_at: dt.datetime | None = None
    next_ask_at: dt.datetime | None = None
    aml_hold_case_id: int | None = None  # an operator holds money out for a monitoring case (issue 34)

    @property
    def held(self) -> bool:
        """A swap put the number on hold and no operator cleared it (it never lapses by itself)."""
        return self.held_swap_at is not None and (self.cleared_swap_at is None
                                                  or self.cleared_swap_at < self.held_swap_at)

    @property
    def uncleared_swap(self) -> bool:
        """The last swap we know of was not cleared by an operator."""
        return self.last_swap_at is not None and (self.cleared_swap_at is None
                                                  or self.cleared_swap_at < self.last_swap_at)

    def swap_since_pin(self, pin_set_at: dt.datetime | None) -> bool:
        """A swap no operator cleared happened on or after the day the PIN was set (None: not known
        when, so any). Swap dates are days: the same day counts."""
        return self.uncleared_swap and self.last_swap_at is not None and (
            pin_set_at is None or self.last_swap_at.date() >= pin_set_at.date())


_READ = Prepared(select(_GUARDS.c.swap_answer, _GUARDS.c.last_swap_at, _GUARDS.c.held_swap_at,
                        _GUARDS.c.answered_at, _GUARDS.c.cleared_swap_at, _GUARDS.c.reset_due_at,
                        _GUARDS.c.next_ask_at, _GUARDS.c.aml_hold_case_id)
                 .where(_GUARDS.c.phone == bindparam("phone")))


def read(db: Database, phone: str) -> Guard:
    """The phone's guard row: one index lookup, no network."""
    row = db.execute(_READ, {"phone": phone}).first()
    return Guard(phone) if row is None else Guard(phone, *row)


def fresh(svc: Services, guard: Guard, started: dt.datetime | None = None,
          after: dt.datetime | None = None) -> bool:
    """Is the provider's answer fresh: received after the session `started`, or at most
    `sim-swap-fresh-minutes` ago, and (`after`) no older than that time? The simulated provider's
    answer is the row itself: always fresh."""
    if svc.sim_swap is None or not svc.sim_swap.asks_ahead:
        return True
    when = guard.answered_at
    if guard.swap_answer not in (SWAPPED, NOT_SWAPPED) or when is None:
        return False
    if after is not None and when < after:
        return False
    window = dt.timedelta(minutes=svc.policy.value("sim-swap-fresh-minutes"))
    return (started is not None and when >= started) or utcnow() - when < window


def decide(svc: Services, guard: Guard, what: str, amount_sats: int = 0, *, started: dt.datetime | None = None,
           user_id: int | None = None, pin_set_at: dt.datetime | None = None,
           answered_after: dt.datetime | None = None) -> Decision:
    """May `what` (MONEY_OUT of `amount_sats`, fees included; PIN_CHANGE; PIN_RESET) go on, as far
    as SIM swaps go? `started`: when the session began (an answer after it is fresh); `user_id`:
    whose money out since the last answer counts towards the no-answer cap; `pin_set_at`: when the
    PIN was set (a self-service reset); `answered_after`: the answer must be at least this recent.
    The provider off: always, except a self-service reset (never then). Deny reasons:
    sim-swap-hold, sim-swap-unknown, sim-swap-off; and aml-hold (an operator holds the account's
    money out while a monitoring case is looked at: whatever the SIM swap provider says)."""
    if what == MONEY_OUT and guard.aml_hold_case_id is not None:
        return Decision(False, AML_HOLD)
    if svc.sim_swap is None:
        return Decision(False, "sim-swap-off") if what == PIN_RESET else Decision(True)
    is_fresh = fresh(svc, guard, started, answered_after)
    spent = 0
    if not is_fresh and what == MONEY_OUT and user_id is not None:
        with svc.db.read() as s:  # everything out since the last answer (never answered: ever)
            spent = movements.out_since(s, user_id, guard.answered_at)
    return svc.policy.sim_swap(what, guard.held, guard.swap_since_pin(pin_set_at), is_fresh, amount_sats, spent)


def check(svc: Services, phone: str, what: str, amount_sats: int = 0, **facts: object) -> tuple[Decision, Guard]:
    """read() then decide(): the decision and the row it was made from."""
    guard = read(svc.db, phone)
    return decide(svc, guard, what, amount_sats, **facts), guard  # type: ignore[arg-type]


def standing_hold(svc: Services, phone: str) -> str | None:
    """Why money out that runs without the customer (a standing order) must wait: an operator's
    monitoring hold (aml-hold) or a SIM swap that holds the number (sim-swap-hold); None: neither.
    Not the freshness of the provider's answer: no session asks for one."""
    guard = read(svc.db, phone)
    if guard.aml_hold_case_id is not None:
        return AML_HOLD
    return "sim-swap-hold" if guard.held else None


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
EARLY_S = 300  # a callback may beat the question's id to the row by this much (it is kept, then matched)


def _apply(s: Session, policy: Policy, row: PhoneGuard, reported: Reported, now: dt.datetime) -> None:
    """Write an answer into the phone's row (locked by the caller). A swap with no usable date is
    a swap now; a date in the future is now. A newly told swap that starts a hold (atoms.metta
    sim-swap-starts-hold) holds the number until an operator clears it, with one SMS."""
    when = reported.last_swap_at
    if reported.swapped and (when is None or when > now):
        when = now
    before, answered_before = row.last_swap_at, row.answered_at
    new_swap = reported.swapped and when is not None and (before is None or when > before)
    row.swap_answer = SWAPPED if reported.swapped else NOT_SWAPPED
    if when is not None and (before is None or when > before):
        row.last_swap_at = when
    row.answered_at, row.request_id, row.asked_at, row.early_answer = now, None, None, None
    row.next_ask_at = now + dt.timedelta(minutes=policy.value("sim-swap-ask-again-minutes"))
    if new_swap and when is not None:
        after_answer = answered_before is not None and when.date() >= answered_before.date()
        if policy.sim_swap_starts_hold((now - when).days, after_answer):
            row.held_swap_at = when
            user = users.get(s, reported.phone)
            if user is not None:
                sms.queue(s, reported.phone, t(user.language, "sms.sim-swap-hold"))
            log.warning("sim swap of %s reported: money out held", mask(reported.phone))


def _early(reported: Reported) -> str:
    return json.dumps({"id": reported.request_id, "swapped": reported.swapped,
                       "at": reported.last_swap_at.isoformat() if reported.last_swap_at else None})[:255]


def _of_early(phone: str, text: str) -> Reported | None:
    try:
        kept = json.loads(text)
        return Reported(phone, bool(kept["swapped"]),
                        dt.datetime.fromisoformat(kept["at"]) if kept["at"] else None, str(kept["id"]))
    except (ValueError, KeyError, TypeError):
        return None


def record(db: Database, policy: Policy, reported: Reported, *, request_id: str | None) -> bool:
    """Record a provider's answer about a phone. `request_id`: the answer must be to this open
    question of the phone's row (a callback; anything unmatched changes nothing). A callback that
    comes while our question is on its way (its id not yet kept) is kept and matched when the id
    is. None: an answer given at once to our own question, or a demo's mark. A newly reported
    swap that starts a hold sends the number one SMS. Returns whether the row changed."""
    now = utcnow()
    with db.write() as s:
        if request_id is None:
            ensure_row(s, reported.phone)
        row = s.execute(select(PhoneGuard).where(PhoneGuard.phone == reported.phone).with_for_update()).scalar()
        if row is not None and request_id and row.request_id is None and row.asked_at is not None \
                and now - row.asked_at < dt.timedelta(seconds=EARLY_S) and row.early_answer is None:
            row.early_answer = _early(reported)  # our question's id is on its way: matched then
            log.info("sim swap answer for %s came before its question's id: kept", mask(reported.phone))
            return False
        if row is None or (request_id is not None and (not request_id or row.request_id != request_id)):
            log.warning("sim swap answer for %s matches no open question; ignored", mask(reported.phone))
            return False
        _apply(s, policy, row, reported, now)
        return True


def mark_swapped(db: Database, policy: Policy, phone: str) -> None:
    """Demo mode (the simulated provider): the phone's SIM was swapped now."""
    record(db, policy, Reported(phone, True, utcnow()), request_id=None)


# ------------------------------------------------------------------ asking ahead
def want_answer(db: Database, policy: Policy, phone: str) -> bool:
    """A session's first request (or a PIN step) found no fresh answer: ask the provider, by a job
    the worker runs at once, at most once per `sim-swap-ask-again-minutes`. Returns whether it
    asked (False: asked lately, by this or a parallel step)."""
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


def ask_if_stale(svc: Services, guard: Guard, started: dt.datetime | None) -> None:
    """Ask the provider (rate-limited by want_answer) when the answer is not fresh."""
    if svc.sim_swap is None or not svc.sim_swap.asks_ahead or fresh(svc, guard, started):
        return
    if guard.next_ask_at is not None and guard.next_ask_at > utcnow():
        return  # asked lately (want_answer's own condition, known from the row read: no write transaction)
    want_answer(svc.db, svc.policy, guard.phone)


def ask(svc: Services, phone: str) -> bool:
    """The worker's job: ask the provider about `phone` and keep the question's id (its answer
    comes by callback; the row says a question is on its way before it is sent, so an answer
    faster than the id is kept and matched) or the answers given at once. True: the job is done
    (a failure is logged; the next session's first step asks again after
    `sim-swap-ask-again-minutes`)."""
    if svc.sim_swap is None or not svc.sim_swap.asks_ahead:
        return True
    with svc.db.write() as s:
        ensure_row(s, phone)
        s.execute(update(PhoneGuard).where(PhoneGuard.phone == phone).values(
            asked_at=utcnow(), request_id=None, early_answer=None))
    asked = svc.sim_swap.ask(phone)
    if asked.request_id and not asked.reported:
        with svc.db.write() as s:
            row = s.execute(select(PhoneGuard).where(PhoneGuard.phone == phone).with_for_update()).scalar_one()
            row.request_id, row.asked_at = asked.request_id, None
            early = _of_early(phone, row.early_answer) if row.early_answer else None
            row.early_answer = None
            if early is not None and early.request_id == asked.request_id:
                _apply(s, svc.policy, row, early, utcnow())
    for reported in asked.reported:
        record(svc.db, svc.policy, reported, request_id=None)
    if asked.error:
        with svc.db.write() as s:
            s.execute(update(PhoneGuard).where(PhoneGuard.phone == phone).values(asked_at=None))
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
    """Customers a SIM swap holds (until an operator clears it), newest swap first: the console's
    queue."""
    with db.read() as s:
        rows = s.execute(
            select(PhoneGuard.phone, PhoneGuard.held_swap_at, PhoneGuard.answered_at, User.balance_sats)
            .join(User, User.phone == PhoneGuard.phone)
            .where(PhoneGuard.held_swap_at.is_not(None),
                   (PhoneGuard.cleared_swap_at.is_(None)) | (PhoneGuard.cleared_swap_at < PhoneGuard.held_swap_at))
            .order_by(PhoneGuard.held_swap_at.desc()).limit(limit)).all()
    return [Held(phone, swapped, answered, balance) for phone, swapped, answered, balance in rows if swapped]


def clear_in(s: Session, phone: str) -> dt.datetime | None:
    """Release the hold of the phone's swaps (an operator verified the owner): the last one we know
    of counts as cleared too (a self-service reset looks at it). In the caller's transaction, with
    an SMS to the customer. Returns the swap released, or None if none is held or uncleared."""
    row = s.execute(select(PhoneGuard).where(PhoneGuard.phone == phone).with_for_update()).scalar()
    if row is None:
        return None
    guard = Guard(phone, row.swap_answer, row.last_swap_at, row.held_swap_at, row.answered_at, row.cleared_swap_at)
    if not (guard.held or guard.uncleared_swap):
        return None
    swap = max(when for when in (row.last_swap_at, row.held_swap_at) if when is not None)
    row.cleared_swap_at = swap
    user = users.get(s, phone)
    if user is not None:
        sms.queue(s, phone, t(user.language, "sms.sim-swap-cleared"))
    return swap
