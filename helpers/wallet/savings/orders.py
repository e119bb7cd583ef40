"""Standing orders (issue 35): a payment the worker makes for a customer each period (daily,
weekly, monthly) to a phone or into one of their savings goals.

The customer sets one up behind the PIN once: that is their consent to payments without it, for
at most the policy's standing-order-max-sats a run. Each run is a movement made by the same
wallet functions a customer's own step uses (movements.transfer for a phone, under the daily
limit and the payment bounds; goals.move_in for a goal), keyed `so:<order>:<period start>`
(transactions.idempotency_key is unique: two workers cannot both pay a period), and the order's
next_run_at moves on in the same transaction, conditionally (only from the period just paid,
only while the order is active): a cancelled order never runs again, and a run whose order moved
on meanwhile moves nothing. A run that cannot be paid (balance short, limit reached, goal closed)
is skipped with an SMS and the order moves to its next period.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.wallet.customers import tiers, users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import AccountLocked, GoalClosed, InsufficientBalance, PolicyDenied
from helpers.wallet.ledger import movements
from helpers.wallet.ledger.movements import Interrupted, Receipt, Within
from helpers.wallet.ledger.savings_tables import (DAILY, MONTHLY, ORDER_ACTIVE, ORDER_CANCELLED, ORDER_GOAL,
                                                  ORDER_PHONE, WEEKLY, StandingOrder)
from helpers.wallet.rules import Policy
from helpers.wallet.savings import goals
from models import utcnow

log = logging.getLogger(__name__)

PERIODS = (DAILY, WEEKLY, MONTHLY)
# What run did: paid; skipped (short, refused); not due (or not active); another run did it.
PAID, SKIPPED, NOT_DUE, ALREADY = "paid", "skipped", "not-due", "already"
_ORDERS = cast(Table, StandingOrder.__table__)


@dataclass(frozen=True)
class OrderView:
    id: int
    user_id: int
    kind: str
    destination: str
    amount_sats: int
    period: str
    next_run_at: dt.datetime
    status: str

    @classmethod
    def of(cls, row: StandingOrder) -> OrderView:
        return cls(row.id, row.user_id, row.kind, row.destination, row.amount_sats, row.period, row.next_run_at,
                   row.status)


def following(at: dt.datetime, period: str) -> dt.datetime:
    """The period start after `at`: a day, a week, or a month on (the day of the month kept, at
    most the 28th so every month has it)."""
    if period == DAILY:
        return at + dt.timedelta(days=1)
    if period == WEEKLY:
        return at + dt.timedelta(days=7)
    month = at.month % 12 + 1
    return at.replace(year=at.year + (at.month == 12), month=month, day=min(at.day, 28))


def _now() -> dt.datetime:
    return utcnow().replace(microsecond=0)  # whole seconds: MariaDB's DATETIME keeps no more


def active(db: Database, user_id: int) -> list[OrderView]:
    with db.read() as s:
        return [OrderView.of(row) for row in s.scalars(
            select(StandingOrder).where(StandingOrder.user_id == user_id, StandingOrder.status == ORDER_ACTIVE)
            .order_by(StandingOrder.id))]


def create(db: Database, policy: Policy, user: UserView, kind: str, destination: str, amount: int, period: str,
           key: str) -> OrderView:
    """Set up an order (the caller checked the PIN: the customer's consent); its first run is due at
    once. Once per `key`. Raises PolicyDenied: order-cap (above standing-order-max-sats), below-minimum,
    orders-max, own-phone."""
    if kind not in (ORDER_PHONE, ORDER_GOAL) or period not in PERIODS:
        raise ValueError(f"a standing order is {kind!r} {period!r}?")
    cap = policy.value("standing-order-max-sats")
    if amount > cap:
        raise PolicyDenied("order-cap")
    if amount < policy.value("payment-min-sats" if kind == ORDER_PHONE else "savings-min-sats"):
        raise PolicyDenied("below-minimum")
    if kind == ORDER_PHONE and destination == user.phone:
        raise PolicyDenied("own-phone")
    try:
        with db.write() as s:
            count = s.scalar(select(func.count()).select_from(_ORDERS).where(
                _ORDERS.c.user_id == user.id, _ORDERS.c.status == ORDER_ACTIVE)) or 0
            if count >= policy.value("standing-orders-max"):
                raise PolicyDenied("orders-max")
            now = _now()
            row = StandingOrder(user_id=user.id, kind=kind, destination=destination, amount_sats=amount, period=period,
                                next_run_at=now, cap_sats=cap, status=ORDER_ACTIVE, runs=0, skips=0, setup_key=key,
                                created_at=now)
            s.add(row)
            s.flush()
            return OrderView.of(row)
    except IntegrityError:
        with db.read() as s:
            found = s.scalar(select(StandingOrder).where(StandingOrder.setup_key == key))
            if found is None:
                raise
            return OrderView.of(found)


def cancel(db: Database, user_id: int, order_id: int) -> bool:
    """Stop an order of this customer's, for good (active -> cancelled, once)."""
    with db.write() as s:
        moved = cast(CursorResult, s.execute(
            update(_ORDERS).where(_ORDERS.c.id == order_id, _ORDERS.c.user_id == user_id,
                                  _ORDERS.c.status == ORDER_ACTIVE)
            .values(status=ORDER_CANCELLED, cancelled_at=_now())))
        return moved.rowcount == 1


def due(db: Database, now: dt.datetime | None = None, limit: int = 500) -> list[int]:
    with db.read() as s:
        return list(s.scalars(select(_ORDERS.c.id).where(_ORDERS.c.status == ORDER_ACTIVE,
                                                         _ORDERS.c.next_run_at <= (now or _now()))
                              .order_by(_ORDERS.c.next_run_at, _ORDERS.c.id).limit(limit)))


def run_key(order_id: int, period_start: dt.datetime) -> str:
    return f"so:{order_id}:{period_start:%Y%m%d%H%M%S}"


def _move_on(executor: Connection | Session, order: OrderView, after: dt.datetime, paid: bool) -> bool:
    """The order's next period, from the one it was read at, while it is active: True once."""
    counted = {"runs": _ORDERS.c.runs + 1} if paid else {"skips": _ORDERS.c.skips + 1}
    moved = cast(CursorResult, executor.execute(
        update(_ORDERS).where(_ORDERS.c.id == order.id, _ORDERS.c.status == ORDER_ACTIVE,
                              _ORDERS.c.next_run_at == order.next_run_at)
        .values(next_run_at=after, **counted)))
    return moved.rowcount == 1


def _price_for_limits(db: Database, policy: Policy) -> int:
    """The tier caps (issue 34) at the newest stored price, as a customer's own send has them."""
    with db.read() as s:
        return tiers.stored_price(s, policy)


def run(db: Database, policy: Policy, service_code: str, order_id: int) -> str:
    """Pay one order's due period, or skip it with an SMS. Returns PAID, SKIPPED, NOT_DUE or
    ALREADY; safe on any number of workers at once."""
    now = _now()
    with db.read() as s:
        row = s.get(StandingOrder, order_id)
        if row is None or row.status != ORDER_ACTIVE or row.next_run_at > now:
            return NOT_DUE
        order = OrderView.of(row)
        owner = UserView.of(users.owner(s, order.user_id))
    after = following(order.next_run_at, order.period)
    while after <= now:  # the worker was away for periods: they are not paid late, one after another
        after = following(after, order.period)
    key = run_key(order.id, order.next_run_at)
    within = Within(lambda executor, _receipt: _move_on(executor, order, after, paid=True))
    if order.amount_sats > policy.value("standing-order-max-sats"):
        return _skip(db, order, owner, after, "order-cap")
    pay: Callable[[], Receipt] = (
        functools.partial(movements.transfer, db, policy, owner, order.destination, order.amount_sats, key,
                          service_code, within, _price_for_limits(db, policy))
        if order.kind == ORDER_PHONE else
        functools.partial(goals.move_in, db, policy, owner, int(order.destination), order.amount_sats, key,
                          within=within, kind="goal-order"))
    try:
        receipt = pay()
    except Interrupted:  # cancelled, or moved on by another worker, meanwhile: nothing moved
        return ALREADY
    except InsufficientBalance:
        return _skip(db, order, owner, after, "insufficient-balance")
    except (PolicyDenied, AccountLocked, GoalClosed) as exc:
        reason = exc.reason if isinstance(exc, PolicyDenied) else type(exc).__name__
        return _skip(db, order, owner, after, reason, cancel=isinstance(exc, GoalClosed))
    return ALREADY if receipt.replay else PAID


def _skip(db: Database, order: OrderView, owner: UserView, after: dt.datetime, reason: str,
          cancel: bool = False) -> str:
    """This period is not paid: the order moves on (or, its goal closed, stops) with an SMS."""
    with db.write() as s:
        if not _move_on(s, order, after, paid=False):
            return ALREADY
        if cancel:
            s.execute(update(_ORDERS).where(_ORDERS.c.id == order.id).values(status=ORDER_CANCELLED,
                                                                             cancelled_at=_now()))
            sms.queue(s, owner.phone, t(owner.language, "sms.order-stopped", amount=order.amount_sats))
        else:
            sms.queue(s, owner.phone, t(owner.language, "sms.order-skipped", amount=order.amount_sats,
                                        date=after.strftime("%d/%m")))
    log.info("standing order %s skipped: %s", order.id, reason)
    return SKIPPED
