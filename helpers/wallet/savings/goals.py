"""Savings goals (issue 35): a customer locks sats away from their balance until a date.

Each goal is a ledger sub-account (the house account `savings`, postings with its goal_id;
journal.goal), so every move is one journal entry between the customer's and the goal's accounts:
in (`goal-in`, with the PIN: money leaves the spendable balance), back at maturity (`goal-mature`,
the worker, once) or early where the policy allows (`goal-break`, with the PIN, a fee to fee
income). A goal's sats are not in `users.balance_sats`, so nothing can send or spend them; they
come out only by `mature` (its date passed: a conditional status change open -> matured that
checks the date, in the transaction of the entry, whose idempotency key names the goal) or
`break_early` (open -> broken).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.refs import new_reference
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import GoalClosed, PolicyDenied
from helpers.wallet.ledger import journal, movements
from helpers.wallet.ledger.movements import Receipt, Within
from helpers.wallet.ledger.savings_tables import GOAL_BROKEN, GOAL_MATURED, GOAL_OPEN, SavingsGoal
from helpers.wallet.rules import Policy
from models import CREDIT, FEES, INTERNAL, SAVE, SETTLED, utcnow

log = logging.getLogger(__name__)

NAME_LENGTH = (1, 12)  # letters, digits and spaces a goal's name may have (a screen line holds it)
# What mature did: returned the sats; not due yet (or not open); another run did it.
MATURED, NOT_DUE, ALREADY = "matured", "not-due", "already"
_GOALS = cast(Table, SavingsGoal.__table__)


@dataclass(frozen=True)
class GoalView:
    id: int
    user_id: int
    name: str
    target_sats: int | None
    target_kes: int | None
    lock_until: dt.datetime
    balance_sats: int
    status: str
    autosave_bps: int = 0

    @classmethod
    def of(cls, row: SavingsGoal) -> GoalView:
        return cls(row.id, row.user_id, row.name, row.target_sats, row.target_kes, row.lock_until, row.balance_sats,
                   row.status, row.autosave_bps or 0)

    @property
    def matures_on(self) -> dt.date:
        return self.lock_until.date()


def clean_name(typed: str) -> str | None:
    """A goal's name as typed on a keypad, tidied (capitalised), or None if it is not one."""
    name = " ".join(typed.split()).title()
    if not NAME_LENGTH[0] <= len(name) <= NAME_LENGTH[1] or not all(c.isalnum() or c == " " for c in name):
        return None
    return name if name.isascii() else None


def parse_date(typed: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """A lock date typed as DDMMYYYY (a keypad has no '/'): 00:00 UTC of that day, or None if it is
    not a date."""
    if len(typed) != 8 or not typed.isdigit():
        return None
    try:
        return dt.datetime(int(typed[4:]), int(typed[2:4]), int(typed[:2]))
    except ValueError:
        return None


def lock_problem(policy: Policy, lock_until: dt.datetime, now: dt.datetime | None = None) -> str | None:
    """Why `lock_until` cannot be a goal's date (a deny reason), or None: after today, and at most
    savings-max-lock-days ahead."""
    today = (now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)
    if lock_until <= today or lock_until > today + dt.timedelta(days=policy.value("savings-max-lock-days")):
        return "goal-date"
    return None


def open_goals(db: Database, user_id: int) -> list[GoalView]:
    """A customer's open goals, oldest first."""
    with db.read() as s:
        return [GoalView.of(row) for row in s.scalars(
            select(SavingsGoal).where(SavingsGoal.user_id == user_id, SavingsGoal.status == GOAL_OPEN)
            .order_by(SavingsGoal.id))]


def get(db: Database, user_id: int, goal_id: int) -> GoalView | None:
    """A goal of this customer's (any status), or None."""
    with db.read() as s:
        row = s.get(SavingsGoal, goal_id)
        return GoalView.of(row) if row is not None and row.user_id == user_id else None


def open_goal(db: Database, policy: Policy, user: UserView, name: str, lock_until: dt.datetime, key: str, *,
              target_sats: int | None = None, target_kes: int | None = None) -> GoalView:
    """Open a goal (no money moves). Once per `key` (a replay gets the same goal). Raises
    PolicyDenied: goal-date, goals-max."""
    reason = lock_problem(policy, lock_until)
    if reason:
        raise PolicyDenied(reason)
    try:
        with db.write() as s:
            count = s.scalar(select(func.count()).select_from(_GOALS).where(
                _GOALS.c.user_id == user.id, _GOALS.c.status == GOAL_OPEN)) or 0
            if count >= policy.value("savings-max-goals"):
                raise PolicyDenied("goals-max")
            row = SavingsGoal(user_id=user.id, name=name, target_sats=target_sats, target_kes=target_kes,
                              lock_until=lock_until, balance_sats=0, status=GOAL_OPEN, open_key=key,
                              created_at=utcnow().replace(microsecond=0))
            s.add(row)
            s.flush()
            return GoalView.of(row)
    except IntegrityError:
        with db.read() as s:
            found = s.scalar(select(SavingsGoal).where(SavingsGoal.open_key == key))
            if found is None:
                raise
            return GoalView.of(found)


def move_in(db: Database, policy: Policy, user: UserView, goal_id: int, amount: int, key: str, *,
            within: Within | None = None, kind: str = "goal-in") -> Receipt:
    """Move `amount` sats from the customer's balance into their open goal: one entry, customer ->
    goal (the debit is conditional, the goal's credit needs it open), with an SMS; `within`'s rows
    in the same transaction. Once per `key`. Raises InsufficientBalance, GoalClosed, PolicyDenied
    (below savings-min-sats), AccountLocked, Interrupted."""
    if amount < policy.value("savings-min-sats"):
        raise PolicyDenied("goal-min")

    def work() -> Receipt:
        with db.write() as s:
            goal = s.get(SavingsGoal, goal_id)
            if goal is None or goal.user_id != user.id or goal.status != GOAL_OPEN:
                raise GoalClosed(str(goal_id))
            ref = new_reference()
            recorded = journal.record(
                s, journal.Entry(kind, ref, user.id, SAVE, INTERNAL, amount, counterparty=goal.name,
                                 description=f"into goal {goal.id}", idempotency_key=key),
                [journal.customer(user.id, amount), journal.goal(goal_id, -amount)])
            after = recorded.balances[user.id]
            saved = _balance_of(s, goal_id)
            sms.queue(s, user.phone, t(user.language, "sms.goal-in", amount=amount, name=goal.name, saved=saved,
                                       ref=ref, balance=after))
            receipt = Receipt(ref, amount, 0, after, SETTLED, recorded.id)
            if within is not None and not within.last(s, receipt):
                raise movements.Interrupted(key)
            return receipt

    return movements.run_once(db, key, work)


def _balance_of(s: Session, goal_id: int) -> int:
    return int(s.scalar(select(_GOALS.c.balance_sats).where(_GOALS.c.id == goal_id)) or 0)


def break_terms(policy: Policy, goal: GoalView, now: dt.datetime | None = None) -> tuple[int, int]:
    """(sats back, fee) if the goal were broken now: before its date the policy's fee."""
    if goal.lock_until <= (now or utcnow()):
        return goal.balance_sats, 0
    fee = min(goal.balance_sats, policy.early_break_fee(goal.balance_sats))
    return goal.balance_sats - fee, fee


def break_early(db: Database, policy: Policy, user: UserView, goal_id: int, key: str) -> Receipt:
    """Close an open goal before its date and return its sats less the policy's fee (to fee
    income): open -> broken, one entry goal -> customer (+ fees), once. Raises PolicyDenied
    (goal-break-off: the policy allows no early break), GoalClosed."""
    if not policy.flag("savings-early-break-allowed"):
        raise PolicyDenied("goal-break-off")

    def work() -> Receipt:
        with db.write() as s:
            now = utcnow()
            if not _close(s, goal_id, GOAL_BROKEN, now, user_id=user.id):
                raise GoalClosed(str(goal_id))
            goal = GoalView.of(s.get_one(SavingsGoal, goal_id))
            back, fee = break_terms(policy, goal, now)
            ref = new_reference()
            if goal.balance_sats == 0:
                return Receipt(ref, 0, 0, int(users.owner(s, user.id).balance_sats))
            recorded = journal.record(
                s, journal.Entry("goal-break", ref, user.id, SAVE, CREDIT, goal.balance_sats, fee,
                                 counterparty=goal.name, description=f"goal {goal.id} broken", idempotency_key=key),
                [journal.goal(goal_id, goal.balance_sats), journal.customer(user.id, -back), journal.house(FEES, -fee)])
            after = recorded.balances[user.id]
            sms.queue(s, user.phone, t(user.language, "sms.goal-broken", amount=back, name=goal.name, fee=fee, ref=ref,
                                       balance=after))
            return Receipt(ref, back, fee, after, SETTLED, recorded.id)

    return movements.run_once(db, key, work)


def _close(s: Session, goal_id: int, status: str, now: dt.datetime, *, user_id: int | None = None,
           due_only: bool = False) -> bool:
    """open -> `status`, once (a conditional UPDATE: one of two racing closes wins); `due_only`:
    only once its date has come (the lock)."""
    where = [_GOALS.c.id == goal_id, _GOALS.c.status == GOAL_OPEN]
    if user_id is not None:
        where.append(_GOALS.c.user_id == user_id)
    if due_only:
        where.append(_GOALS.c.lock_until <= now)
    moved = cast(CursorResult, s.execute(update(_GOALS).where(*where).values(status=status, closed_at=now)))
    return moved.rowcount == 1


def due(db: Database, now: dt.datetime | None = None, limit: int = 500) -> list[int]:
    """Open goals whose date has come, oldest date first."""
    with db.read() as s:
        return list(s.scalars(select(_GOALS.c.id).where(_GOALS.c.status == GOAL_OPEN,
                                                        _GOALS.c.lock_until <= (now or utcnow()))
                              .order_by(_GOALS.c.lock_until, _GOALS.c.id).limit(limit)))


def mature_key(goal_id: int) -> str:
    return f"goal:{goal_id}:mature"


def mature(db: Database, goal_id: int) -> str:
    """Return a goal's sats to its owner once its date has come, with an SMS: open -> matured
    (only on or after lock_until) and one entry goal -> customer keyed by the goal, in one
    transaction. Returns MATURED, NOT_DUE or ALREADY; safe on any number of workers."""
    try:
        with db.write() as s:
            now = utcnow()
            if not _close(s, goal_id, GOAL_MATURED, now, due_only=True):
                return NOT_DUE
            goal = GoalView.of(s.get_one(SavingsGoal, goal_id))
            owner = users.owner(s, goal.user_id)
            if goal.balance_sats == 0:
                sms.queue(s, owner.phone, t(owner.language, "sms.goal-empty", name=goal.name))
                return MATURED
            ref = new_reference()
            recorded = journal.record(
                s, journal.Entry("goal-mature", ref, owner.id, SAVE, CREDIT, goal.balance_sats, counterparty=goal.name,
                                 description=f"goal {goal.id} matured", idempotency_key=mature_key(goal_id)),
                [journal.goal(goal_id, goal.balance_sats), journal.customer(owner.id, -goal.balance_sats)])
            sms.queue(s, owner.phone, t(owner.language, "sms.goal-matured", amount=goal.balance_sats, name=goal.name,
                                        ref=ref, balance=recorded.balances[owner.id]))
            log.info("goal %s matured: %s sats back as %s", goal_id, goal.balance_sats, ref)
            return MATURED
    except IntegrityError:  # another worker returned it first (the key is unique)
        return ALREADY
