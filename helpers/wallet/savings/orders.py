"""Standing orders (issue 35): a payment the worker makes for a customer each period (daily,
weekly, monthly) to a phone, into one of their savings goals, to a Lightning address, or to an
M-Pesa till or paybill; in sats, or in KES converted at each run's price (a quote taken then).

The customer sets one up behind the PIN once: that is their consent to payments without it, for
at most the policy's standing-order-max-sats a run. Each run is a movement made by the same
wallet functions a customer's own step uses (movements.transfer for a phone, under the daily
limit and the payment bounds; goals.move_in for a goal), keyed `so:<order>:<period start>`
(transactions.idempotency_key is unique: two workers cannot both pay a period), and the order's
next_run_at moves on in the same transaction, conditionally (only from the period just paid,
only while the order is active): a cancelled order never runs again, and a run whose order moved
on meanwhile moves nothing. A run that cannot be paid (balance short, limit reached, goal closed)
is skipped with an SMS and the order moves to its next period.

A Lightning address, a till and a paybill are paid out through a rail (the payout state machine):
their run first claims the period (next_run_at moves on, conditionally: one worker wins), then
fetches the invoice or reserves the payout keyed `so:<order>:<period start>`, then sends it. A
failed fetch or a refused reservation is a skip with an SMS (nothing moved); a payout the rail
refuses later is voided (refunded, with its SMS) by the machine. A run that stops between its claim
and its payment leaves that period unpaid: never paid twice.
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
from helpers.infra.refs import new_reference
from helpers.infra.rail import Said
from helpers.lightning import lnurl_pay
from helpers.lightning.lnurl_pay import LnurlPayError
from helpers.mpesa.provider import BUY_GOODS, PAY_BILL
from helpers.mpesa.rail import b2b_destination
from helpers.wallet import prices
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import AccountLocked, GoalClosed, InsufficientBalance, InvoiceAlreadyPaid, PolicyDenied
from helpers.wallet.ledger import movements
from helpers.wallet.ledger.movements import Interrupted, Receipt, Within
from helpers.wallet.ledger.savings_tables import (DAILY, MONTHLY, ORDER_ACTIVE, ORDER_ADDRESS, ORDER_CANCELLED,
                                                  ORDER_GOAL, ORDER_PAYBILL, ORDER_PHONE, ORDER_TILL, UNIT_KES,
                                                  UNIT_SATS, WEEKLY, StandingOrder)
from helpers.wallet.payouts import kes_out, payments
from helpers.wallet.rules import Policy
from helpers.wallet.savings import goals
from helpers.wallet.services import Services
from lightning import State
from models import MPESA_B2B_RAIL, utcnow

log = logging.getLogger(__name__)

PERIODS = (DAILY, WEEKLY, MONTHLY)
KINDS = (ORDER_PHONE, ORDER_GOAL, ORDER_ADDRESS, ORDER_TILL, ORDER_PAYBILL)
MPESA_KINDS = (ORDER_TILL, ORDER_PAYBILL)  # paid in KES by M-Pesa: KES orders only
OUT_KINDS = (ORDER_ADDRESS, *MPESA_KINDS)  # paid out through a rail: claimed, then paid
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
    unit: str = UNIT_SATS
    amount_kes: int | None = None
    account: str | None = None

    @classmethod
    def of(cls, row: StandingOrder) -> OrderView:
        return cls(row.id, row.user_id, row.kind, row.destination, row.amount_sats, row.period, row.next_run_at,
                   row.status, row.unit, row.amount_kes, row.account)

    @property
    def amount(self) -> int:
        """The amount as the customer typed it, in `unit`."""
        return self.amount_kes or 0 if self.unit == UNIT_KES else self.amount_sats


def payee_name(kind: str, party: str, account: str | None) -> str:
    """How statements and SMS name a till or a paybill (as a customer's own payment names it)."""
    return kes_out.payee_name(BUY_GOODS if kind == ORDER_TILL else PAY_BILL, party, account or "")


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
           key: str, unit: str = UNIT_SATS, account: str | None = None, price: int | None = None) -> OrderView:
    """Set up an order (the caller checked the PIN: the customer's consent); its first run is due at
    once. `amount` is in `unit` (a till or a paybill: KES only); a KES amount is within the KES a
    customer may type and, at `price` (KES per BTC; None: the policy's fixed price), worth at most
    the cap. Once per `key`. Raises PolicyDenied: order-cap (above standing-order-max-sats),
    below-minimum, above-maximum, orders-max, own-phone."""
    if kind not in KINDS or period not in PERIODS or unit not in (UNIT_SATS, UNIT_KES) \
            or (kind in MPESA_KINDS and unit != UNIT_KES) or (kind == ORDER_PAYBILL) != bool(account):
        raise ValueError(f"a standing order is {kind!r} {unit!r} {period!r}?")
    cap = policy.value("standing-order-max-sats")
    amount_kes = None
    if unit == UNIT_KES:
        low, high = policy.kes_bounds()
        if not low <= amount <= high:
            raise PolicyDenied("below-minimum" if amount < low else "above-maximum")
        amount_kes = amount
        amount = _kes_worth(policy, kind, amount, price or policy.value("fixed-kes-per-btc"))
    elif amount < policy.value("savings-min-sats" if kind == ORDER_GOAL else "payment-min-sats"):
        raise PolicyDenied("below-minimum")
    if amount + run_fee(policy, kind, amount) > cap:
        raise PolicyDenied("order-cap")
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
                                created_at=now, unit=unit, amount_kes=amount_kes, account=account)
            s.add(row)
            s.flush()
            return OrderView.of(row)
    except IntegrityError:
        with db.read() as s:
            found = s.scalar(select(StandingOrder).where(StandingOrder.setup_key == key))
            if found is None:
                raise
            return OrderView.of(found)


def _kes_worth(policy: Policy, kind: str, kes: int, price: int) -> int:
    """The sats `kes` costs at `price`: sold like a withdrawal to M-Pesa, like a send in KES else."""
    if kind in MPESA_KINDS:
        return policy.kes_to_sats_debit(kes, price)
    return policy.kes_to_sats_send(kes, price)


def kes_max(policy: Policy, kind: str, price: int) -> int:
    """The most KES an order of `kind` may be at `price`: within the KES bounds, and worth (with its
    fee) at most the cap, exactly as create converts it (at least the KES minimum)."""
    cap = policy.value("standing-order-max-sats")
    low, high = policy.kes_bounds()

    def fits(kes: int) -> bool:
        sats = _kes_worth(policy, kind, kes, price)
        return sats + run_fee(policy, kind, sats) <= cap

    while low < high:  # the largest that fits: the worth grows with the KES
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def run_fee(policy: Policy, kind: str, sats: int) -> int:
    """The most a run of `sats` costs on top (a Lightning payment: its route's fee limit)."""
    if kind == ORDER_GOAL:
        return 0
    what = {ORDER_PHONE: "internal", ORDER_ADDRESS: "lightning"}.get(kind, "mpesa-withdraw")
    return policy.fee_sats(what, sats)


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


def _move_on(executor: Connection | Session, order: OrderView, after: dt.datetime, paid: bool | None) -> bool:
    """The order's next period, from the one it was read at, while it is active: True once. `paid`
    counts a run (True) or a skip (False); None: a claim, counted when its payment is known."""
    counted = {} if paid is None else {"runs": _ORDERS.c.runs + 1} if paid else {"skips": _ORDERS.c.skips + 1}
    moved = cast(CursorResult, executor.execute(
        update(_ORDERS).where(_ORDERS.c.id == order.id, _ORDERS.c.status == ORDER_ACTIVE,
                              _ORDERS.c.next_run_at == order.next_run_at)
        .values(next_run_at=after, **counted)))
    return moved.rowcount == 1


@dataclass(frozen=True)
class _Amount:
    sats: int
    fee: int  # the most the run costs on top
    kes: int  # a KES order's KES (0: a sats order)
    price: int  # KES per BTC it converted at (a sats order: the tier caps' price)


def _amount(svc: Services, order: OrderView) -> _Amount | None:
    """What this run moves: a sats order's sats, or a KES order's at the price now, as a quote of
    the customer's own step takes it (a till or paybill: a withdrawal's, with its M-Pesa fee).
    None: there is no price now."""
    if order.unit == UNIT_SATS:
        return _Amount(order.amount_sats, run_fee(svc.policy, order.kind, order.amount_sats), 0,
                       svc.prices.for_limits())
    price = svc.prices.current()
    if price is None:
        return None
    kes = order.amount_kes or 0
    quote = svc.prices.quote(order.user_id, prices.WITHDRAW if order.kind in MPESA_KINDS else prices.SEND, kes,
                             price)
    fee = quote.fee_sats if order.kind in MPESA_KINDS else run_fee(svc.policy, order.kind, quote.sats)
    return _Amount(quote.sats, fee, kes, quote.kes_per_btc)


def run(svc: Services, order_id: int, hold: Callable[[str], str | None] | None = None) -> str:
    """Pay one order's due period, or skip it with an SMS. Returns PAID, SKIPPED, NOT_DUE or
    ALREADY; safe on any number of workers at once. `hold(phone)`: why the customer's money out
    waits (an AML or SIM-swap hold: sim_swap.standing_hold, which the worker passes), or None; a
    held run pays no one (a goal's still fills: the money stays the customer's)."""
    db, policy = svc.db, svc.policy
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
    amount = _amount(svc, order)
    if amount is None:
        return _skip(db, order, owner, after, "no-price", why="sms.order-skipped-price")
    if amount.sats + amount.fee > policy.value("standing-order-max-sats"):
        return _skip(db, order, owner, after, "order-cap")
    if order.kind != ORDER_GOAL and hold is not None and (held := hold(owner.phone)) is not None:
        return _skip(db, order, owner, after, held, why="sms.order-skipped-held")
    if order.kind in OUT_KINDS:
        return _pay_out(svc, order, owner, after, key, amount)
    within = Within(lambda executor, _receipt: _move_on(executor, order, after, paid=True))
    pay: Callable[[], Receipt] = (
        functools.partial(movements.transfer, db, policy, owner, order.destination, amount.sats, key,
                          svc.service_code, within, amount.price)
        if order.kind == ORDER_PHONE else
        functools.partial(goals.move_in, db, policy, owner, int(order.destination), amount.sats, key,
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


def _pay_out(svc: Services, order: OrderView, owner: UserView, after: dt.datetime, key: str,
             amount: _Amount) -> str:
    """A Lightning address, till or paybill: the period claimed (one worker wins), then paid
    through its rail under the period's key."""
    with svc.db.write() as s:
        if not _move_on(s, order, after, paid=None):
            return ALREADY
    def still_active(s: Session) -> None:
        """In the reservation's transaction, the order's row locked: a cancel that came after the
        claim, before the reservation, stops the payment (one after it is this period's)."""
        status = s.execute(select(_ORDERS.c.status).where(_ORDERS.c.id == order.id).with_for_update()).scalar()
        if status != ORDER_ACTIVE:
            raise Interrupted(key)

    try:
        if order.kind == ORDER_ADDRESS:
            paid = _pay_address(svc, order, owner, key, amount.sats, still_active)
        else:
            paid = _pay_business(svc, order, owner, key, amount, still_active)
    except Interrupted:  # cancelled since the claim: nothing moved
        log.info("standing order %s cancelled before its period was paid", order.id)
        return ALREADY
    except InsufficientBalance:
        return _skip(svc.db, order, owner, after, "insufficient-balance", claimed=True)
    except (PolicyDenied, AccountLocked) as exc:
        reason = exc.reason if isinstance(exc, PolicyDenied) else type(exc).__name__
        return _skip(svc.db, order, owner, after, reason, claimed=True)
    except (LnurlPayError, InvoiceAlreadyPaid) as exc:  # the payee's service: not the customer's doing
        reason = exc.reason if isinstance(exc, LnurlPayError) else type(exc).__name__
        return _skip(svc.db, order, owner, after, reason, claimed=True, why="sms.order-skipped-payee")
    _count(svc.db, order.id, paid)
    if not paid:  # the rail refused it: voided (refunded, with the rail's SMS) by the machine
        log.info("standing order %s: its payout was refused", order.id)
        return SKIPPED
    return PAID


def _pay_address(svc: Services, order: OrderView, owner: UserView, key: str, sats: int,
                 within: Callable[[Session], None]) -> bool:
    """Fetch the payee's invoice (LNURL-pay) and pay it; False: the node refused it (refunded)."""
    parsed = lnurl_pay.parse_address(order.destination)
    if parsed is None:
        raise LnurlPayError("bad-address", order.destination)
    params = lnurl_pay.resolve(*parsed, svc.settings)
    if not params.min_sats <= sats <= params.max_sats:
        raise LnurlPayError("out-of-bounds", f"{sats} sats outside {params.min_sats}-{params.max_sats}")
    return payments.pay_address(svc, owner, params, sats, key, within).state is not State.FAILED


def _pay_business(svc: Services, order: OrderView, owner: UserView, key: str, amount: _Amount,
                  within: Callable[[Session], None]) -> bool:
    """Reserve the quote's sats and fee as a customer's own till or paybill payment does, then let
    M-Pesa pay it; False: M-Pesa refused it (refunded)."""
    command = BUY_GOODS if order.kind == ORDER_TILL else PAY_BILL
    payee = payee_name(order.kind, order.destination, order.account)
    reference = new_reference()
    receipt = kes_out.reserve(svc, owner, MPESA_B2B_RAIL, amount.kes, amount.sats, amount.fee, amount.price,
                              b2b_destination(command, order.destination, order.account or "", owner.phone),
                              payee, f"M-Pesa payment KES {amount.kes} to {payee}", key, reference, within)
    if receipt.replay:
        return True
    return kes_out.send(svc, MPESA_B2B_RAIL, reference).said is not Said.FAILED


def _count(db: Database, order_id: int, paid: bool) -> None:
    column = "runs" if paid else "skips"
    with db.write() as s:
        s.execute(update(_ORDERS).where(_ORDERS.c.id == order_id).values({column: _ORDERS.c[column] + 1}))


def _skip(db: Database, order: OrderView, owner: UserView, after: dt.datetime, reason: str,
          cancel: bool = False, claimed: bool = False, why: str = "sms.order-skipped") -> str:
    """This period is not paid: the order moves on (or, its goal closed, stops) with an SMS that
    says why (`why`: the balance or a limit, the payee's service, no price). `claimed`: this run
    moved it on already (counted here)."""
    amount = (t(owner.language, "order.kes", kes=order.amount_kes) if order.unit == UNIT_KES
              else t(owner.language, "order.sats", amount=order.amount_sats))
    with db.write() as s:
        if claimed:
            s.execute(update(_ORDERS).where(_ORDERS.c.id == order.id).values(skips=_ORDERS.c.skips + 1))
        elif not _move_on(s, order, after, paid=False):
            return ALREADY
        if cancel:
            s.execute(update(_ORDERS).where(_ORDERS.c.id == order.id).values(status=ORDER_CANCELLED,
                                                                             cancelled_at=_now()))
            sms.queue(s, owner.phone, t(owner.language, "sms.order-stopped", amount=amount))
        else:
            sms.queue(s, owner.phone, t(owner.language, why, amount=amount, date=after.strftime("%d/%m")))
    log.info("standing order %s skipped: %s", order.id, reason)
    return SKIPPED
