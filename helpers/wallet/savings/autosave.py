"""Auto-save (issue 35): a goal may take a share of each receipt (a send or paid request from
another customer, a Lightning receipt, an M-Pesa top-up). The customer switches it on behind the
PIN; the worker then moves each receipt's share into the goal after the fact (the receive paths,
the hot ones, are untouched): one goals.move_in per receipt, keyed `autosave:<goal>:<entry>`
(unique: once, on any number of workers). A share the balance no longer covers (spent meanwhile)
is not taken. (A fixed amount on a schedule is a standing order into the goal.)

Each receipt is considered once: a row (goal, entry) of savings_autosave_seen, written in the
transaction of the share's entry, or alone when no share is taken. The worker asks for the
receipts after the goal's floor (the newest entry at the switch) that have no such row, not for
those above the last id it swept: ids are handed out at insert and committed in any order.
"""

from __future__ import annotations

import functools
import logging
from typing import cast

from sqlalchemy import Table, exists, func, insert, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import AccountLocked, GoalClosed, InsufficientBalance, PolicyDenied
from helpers.wallet.ledger.movements import Interrupted, Within
from helpers.wallet.ledger.savings_tables import GOAL_OPEN, AutosaveSeen, SavingsGoal
from helpers.wallet.rules import Policy
from helpers.wallet.savings import goals
from models import Posting, Transaction, utcnow

log = logging.getLogger(__name__)

RECEIPT_KINDS = ("transfer", "request-paid", "receive", "topup")  # money from outside the customer
_GOALS = cast(Table, SavingsGoal.__table__)
_ENTRIES = cast(Table, Transaction.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_SEEN = cast(Table, AutosaveSeen.__table__)


def switch(db: Database, policy: Policy, user: UserView, goal_id: int, percent: int) -> bool:
    """Set the share of each receipt an open goal of this customer's takes (0: off), counting
    receipts from now on (after the newest entry: the goal's floor). The caller checked the PIN.
    Raises PolicyDenied (autosave-max)."""
    if not 0 <= percent <= policy.value("savings-autosave-max-pct"):
        raise PolicyDenied("autosave-max")
    with db.write() as s:
        newest = int(s.scalar(select(func.coalesce(func.max(_ENTRIES.c.id), 0))) or 0)
        moved = cast(CursorResult, s.execute(
            update(_GOALS).where(_GOALS.c.id == goal_id, _GOALS.c.user_id == user.id, _GOALS.c.status == GOAL_OPEN)
            .values(autosave_bps=percent * 100, autosave_seen_id=newest)))
        return moved.rowcount == 1


def key(goal_id: int, entry_id: int) -> str:
    return f"autosave:{goal_id}:{entry_id}"


def _mark(executor: Connection | Session, goal_id: int, entry_id: int, share: int) -> bool:
    """The goal has considered this receipt (taken `share`, or 0): True once."""
    executor.execute(insert(_SEEN).values(goal_id=goal_id, entry_id=entry_id, share_sats=share,
                                          created_at=utcnow().replace(microsecond=0)))
    return True


def _mark_taken(goal_id: int, entry_id: int, share: int, executor: Connection | Session, _receipt: object) -> bool:
    return _mark(executor, goal_id, entry_id, share)


def _not_taken(db: Database, goal_id: int, entry_id: int) -> None:
    try:
        with db.write() as s:
            _mark(s, goal_id, entry_id, 0)
    except IntegrityError:  # another worker considered it first
        pass


def run(db: Database, policy: Policy, batch: int = 200) -> int:
    """Move the share of every receipt not yet considered into each goal that auto-saves. Returns
    how many shares moved."""
    moved = 0
    least = policy.value("savings-min-sats")
    with db.read() as s:
        saving = s.execute(select(_GOALS.c.id, _GOALS.c.user_id, _GOALS.c.autosave_bps, _GOALS.c.autosave_seen_id)
                           .where(_GOALS.c.status == GOAL_OPEN, _GOALS.c.autosave_bps > 0)).all()
    for goal_id, user_id, bps, floor in saving:
        considered = exists().where(_SEEN.c.goal_id == goal_id, _SEEN.c.entry_id == _ENTRIES.c.id)
        with db.read() as s:
            receipts = s.execute(
                select(_ENTRIES.c.id, -_POSTINGS.c.amount_sats).join(_ENTRIES, _ENTRIES.c.id == _POSTINGS.c.entry_id)
                .where(_POSTINGS.c.user_id == user_id, _POSTINGS.c.amount_sats < 0, _ENTRIES.c.id > floor,
                       _ENTRIES.c.kind.in_(RECEIPT_KINDS), ~considered).order_by(_ENTRIES.c.id).limit(batch)).all()
            owner = UserView.of(users.owner(s, user_id))
        for entry_id, amount in receipts:
            share = int(amount) * int(bps) // 10000
            if share < least:
                _not_taken(db, goal_id, entry_id)
                continue
            seen = Within(functools.partial(_mark_taken, goal_id, entry_id, share))
            try:
                receipt = goals.move_in(db, policy, owner, goal_id, share, key(goal_id, entry_id), within=seen,
                                        kind="goal-autosave")
                moved += not receipt.replay
            except (InsufficientBalance, AccountLocked, PolicyDenied):
                log.info("auto-save of goal %s: receipt %s's share is not covered; not taken", goal_id, entry_id)
                _not_taken(db, goal_id, entry_id)
            except (IntegrityError, Interrupted):  # another worker considered it (and took nothing) first
                continue
            except GoalClosed:
                break
    return moved
