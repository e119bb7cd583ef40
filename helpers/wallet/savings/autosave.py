"""Auto-save (issue 35): a goal may take a share of each receipt (a send or paid request from
another customer, a Lightning receipt, an M-Pesa top-up). The customer switches it on behind the
PIN; the worker then moves each receipt's share into the goal after the fact (the receive paths,
the hot ones, are untouched): one goals.move_in per receipt, keyed `autosave:<goal>:<entry>`
(unique: once, on any number of workers). A share the balance no longer covers (spent meanwhile)
is not taken. (A fixed amount on a schedule is a standing order into the goal.)
"""

from __future__ import annotations

import logging
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.engine import CursorResult

from database import Database
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import AccountLocked, GoalClosed, InsufficientBalance, PolicyDenied
from helpers.wallet.ledger.savings_tables import GOAL_OPEN, SavingsGoal
from helpers.wallet.rules import Policy
from helpers.wallet.savings import goals
from models import Posting, Transaction

log = logging.getLogger(__name__)

RECEIPT_KINDS = ("transfer", "request-paid", "receive", "topup")  # money from outside the customer
_GOALS = cast(Table, SavingsGoal.__table__)
_ENTRIES = cast(Table, Transaction.__table__)
_POSTINGS = cast(Table, Posting.__table__)


def switch(db: Database, policy: Policy, user: UserView, goal_id: int, percent: int) -> bool:
    """Set the share of each receipt an open goal of this customer's takes (0: off), counting
    receipts from now on. The caller checked the PIN. Raises PolicyDenied (autosave-max)."""
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


def run(db: Database, policy: Policy, batch: int = 200) -> int:
    """Move the share of every receipt not yet counted into each goal that auto-saves. Returns
    how many shares moved."""
    moved = 0
    least = policy.value("savings-min-sats")
    with db.read() as s:
        saving = s.execute(select(_GOALS.c.id, _GOALS.c.user_id, _GOALS.c.autosave_bps, _GOALS.c.autosave_seen_id)
                           .where(_GOALS.c.status == GOAL_OPEN, _GOALS.c.autosave_bps > 0)).all()
    for goal_id, user_id, bps, seen in saving:
        with db.read() as s:
            receipts = s.execute(
                select(_ENTRIES.c.id, -_POSTINGS.c.amount_sats).join(_ENTRIES, _ENTRIES.c.id == _POSTINGS.c.entry_id)
                .where(_POSTINGS.c.user_id == user_id, _POSTINGS.c.amount_sats < 0, _ENTRIES.c.id > seen,
                       _ENTRIES.c.kind.in_(RECEIPT_KINDS)).order_by(_ENTRIES.c.id).limit(batch)).all()
            owner = UserView.of(users.owner(s, user_id))
        last = seen
        for entry_id, amount in receipts:
            share = int(amount) * int(bps) // 10000
            last = entry_id
            if share < least:
                continue
            try:
                receipt = goals.move_in(db, policy, owner, goal_id, share, key(goal_id, entry_id), kind="goal-autosave")
                moved += not receipt.replay
            except (InsufficientBalance, AccountLocked, PolicyDenied):
                log.info("auto-save of goal %s: receipt %s's share is not covered; not taken", goal_id, entry_id)
            except GoalClosed:
                break
        if last != seen:
            with db.write() as s:
                s.execute(update(_GOALS).where(_GOALS.c.id == goal_id, _GOALS.c.autosave_seen_id < last)
                          .values(autosave_seen_id=last))
    return moved
