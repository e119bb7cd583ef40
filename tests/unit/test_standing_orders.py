"""Issue 35, standing orders: set up once behind the PIN (the customer's consent, within the
policy's cap), run by the worker once per period through the same wallet functions a customer's
own send and goal top-up use, skipped with an SMS when the balance is short, never run again once
cancelled, and never twice for one period however many workers run."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from helpers.infra.i18n import t
from helpers.wallet import use_cases
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.ledger.savings_tables import ORDER_CANCELLED, StandingOrder
from helpers.wallet.savings import goals, orders
from helpers.web import worker
from models import Transaction, utcnow
from tests.conftest import DEMO, PIN, balance, outbox

ALICE, BOB = DEMO[0], DEMO[1]


def view(wallet, phone: str) -> UserView:
    with wallet.db.read() as s:
        return UserView.of(users.get(s, phone))


def order(wallet, amount: int | None = None, kind: str = "phone", to: str = BOB, period: str = "weekly",
          key: str = "so-1") -> orders.OrderView:
    amount = amount or wallet.policy.value("payment-min-sats")
    return orders.create(wallet.db, wallet.policy, view(wallet, ALICE), kind, to, amount, period, key)


def run(wallet, order_id: int) -> str:
    return orders.run(wallet, order_id)


def row(wallet, order_id: int) -> StandingOrder:
    with wallet.db.read() as s:
        found = s.get_one(StandingOrder, order_id)
        s.expunge(found)
        return found


def paid(wallet, order_id: int) -> list[Transaction]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Transaction).where(Transaction.idempotency_key.like(f"so:{order_id}:%"))))


def at(monkeypatch, moment: dt.datetime) -> None:
    monkeypatch.setattr(orders, "utcnow", lambda: moment)


def test_an_order_runs_once_per_period(wallet, alice, bob, monkeypatch):
    amount = wallet.policy.value("payment-min-sats")
    so = order(wallet)
    bob_before = balance(wallet, BOB)
    assert run(wallet, so.id) == orders.PAID
    assert run(wallet, so.id) == orders.NOT_DUE  # the same period again: nothing
    assert balance(wallet, BOB) == bob_before + amount
    following = row(wallet, so.id).next_run_at
    assert following == so.next_run_at + dt.timedelta(days=7)
    at(monkeypatch, following - dt.timedelta(seconds=1))
    assert orders.due(wallet.db, following - dt.timedelta(seconds=1)) == []
    assert run(wallet, so.id) == orders.NOT_DUE
    at(monkeypatch, following)
    assert worker.run_savings(wallet) == (0, 1)
    assert balance(wallet, BOB) == bob_before + 2 * amount
    keys = {entry.idempotency_key for entry in paid(wallet, so.id)}
    assert keys == {orders.run_key(so.id, so.next_run_at), orders.run_key(so.id, following)}
    assert row(wallet, so.id).runs == 2


def test_a_short_balance_skips_the_period_with_an_sms(wallet, alice, monkeypatch):
    so = order(wallet)
    goal = goals.open_goal(wallet.db, wallet.policy, view(wallet, ALICE), "Rent",
                           (utcnow() + dt.timedelta(days=9)).replace(hour=0, minute=0, second=0, microsecond=0), "g")
    goals.move_in(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, balance(wallet, ALICE) - 1, "all-in")
    assert run(wallet, so.id) == orders.SKIPPED
    assert paid(wallet, so.id) == [] and balance(wallet, ALICE) == 1
    after = row(wallet, so.id)
    assert (after.skips, after.runs, after.next_run_at) == (1, 0, so.next_run_at + dt.timedelta(days=7))
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.order-skipped", amount=t("en", "order.sats",
                                                                              amount=so.amount_sats),
                                          date=after.next_run_at.strftime("%d/%m"))
    assert run(wallet, so.id) == orders.NOT_DUE  # skipped is done for this period too


def test_a_cancelled_order_never_runs_again(wallet, alice, bob, monkeypatch):
    so = order(wallet)
    assert run(wallet, so.id) == orders.PAID
    assert orders.cancel(wallet.db, view(wallet, ALICE).id, so.id)
    assert not orders.cancel(wallet.db, view(wallet, ALICE).id, so.id)  # once
    later = row(wallet, so.id).next_run_at + dt.timedelta(days=30)
    at(monkeypatch, later)
    assert orders.due(wallet.db, later) == []
    assert run(wallet, so.id) == orders.NOT_DUE
    assert len(paid(wallet, so.id)) == 1 and row(wallet, so.id).status == ORDER_CANCELLED


def test_only_its_owner_cancels_an_order(wallet, alice, bob):
    so = order(wallet)
    assert not orders.cancel(wallet.db, view(wallet, BOB).id, so.id)
    assert row(wallet, so.id).status == "active"


def test_two_workers_never_pay_one_period_twice(wallet, alice, bob):
    so = order(wallet)
    bob_before = balance(wallet, BOB)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def one_worker() -> None:
        start.wait()
        outcomes.append(run(wallet, so.id))

    threads = [threading.Thread(target=one_worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count(orders.PAID) == 1, outcomes
    assert len(paid(wallet, so.id)) == 1
    assert balance(wallet, BOB) == bob_before + so.amount_sats


def test_a_run_whose_period_was_paid_by_another_worker_moves_nothing(wallet, alice, bob, monkeypatch):
    """The second worker read the order before the first moved it on: its movement is refused by
    the order's conditional move (or the unique key), and nothing is paid twice."""
    so = order(wallet)
    stale = row(wallet, so.id)
    assert run(wallet, so.id) == orders.PAID
    real_get = orders.Session.get if hasattr(orders, "Session") else None
    assert real_get is not None

    def stale_get(self, entity, ident, *args, **kwargs):
        found = real_get(self, entity, ident, *args, **kwargs)
        if entity is StandingOrder and found is not None:
            found.next_run_at, found.runs = stale.next_run_at, stale.runs  # as it was read before the first run
        return found

    monkeypatch.setattr(orders.Session, "get", stale_get)
    assert run(wallet, so.id) == orders.ALREADY
    monkeypatch.undo()
    assert len(paid(wallet, so.id)) == 1


def test_a_goal_order_tops_up_the_goal_and_stops_when_it_closes(wallet, alice, monkeypatch):
    lock = (utcnow() + dt.timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    goal = goals.open_goal(wallet.db, wallet.policy, view(wallet, ALICE), "School", lock, "g")
    so = order(wallet, amount=wallet.policy.value("savings-min-sats"), kind="goal", to=str(goal.id), period="daily")
    assert run(wallet, so.id) == orders.PAID
    assert goals.get(wallet.db, view(wallet, ALICE).id, goal.id).balance_sats == so.amount_sats
    monkeypatch.setattr(goals, "utcnow", lambda: lock)
    assert goals.mature(wallet.db, goal.id) == goals.MATURED
    at(monkeypatch, lock)
    assert run(wallet, so.id) == orders.SKIPPED  # the goal is closed: the order stops
    assert row(wallet, so.id).status == ORDER_CANCELLED
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.order-stopped",
                                          amount=t("en", "order.sats", amount=so.amount_sats))


def test_an_order_is_set_up_behind_the_pin_within_the_policys_cap(wallet, alice):
    cap = wallet.policy.value("standing-order-max-sats")
    with pytest.raises(use_cases.PinNotChecked):
        use_cases.set_standing_order(wallet, view(wallet, ALICE), None, "phone", BOB, cap, "daily", "k")
    with pytest.raises(PolicyDenied):
        order(wallet, amount=cap + 1)
    with pytest.raises(PolicyDenied):
        order(wallet, to=ALICE)
    for n in range(wallet.policy.value("standing-orders-max")):
        order(wallet, key=f"so-{n}")
    with pytest.raises(PolicyDenied):
        order(wallet, key="one-too-many")


def test_monthly_keeps_the_day_of_the_month():
    assert orders.following(dt.datetime(2026, 1, 31, 9), "monthly") == dt.datetime(2026, 2, 28, 9)
    assert orders.following(dt.datetime(2026, 12, 15, 9), "monthly") == dt.datetime(2027, 1, 15, 9)


def test_by_ussd_an_order_is_set_paid_by_the_worker_listed_and_cancelled(wallet, alice, bob):
    amount = wallet.policy.value("payment-min-sats")
    reply = alice.run("9", "3", "9", "1", "0" + BOB[4:], "1", str(amount), "1", PIN)
    sats = t("en", "order.sats", amount=amount)
    assert reply.startswith("END " + t("en", "order.done", amount=sats, period=t("en", "period.daily"),
                                       to="0" + BOB[4:]))
    bob_before = balance(wallet, BOB)
    assert worker.run_savings(wallet) == (0, 1)
    assert balance(wallet, BOB) == bob_before + amount
    assert "1 " + t("en", "orders.line", n=1, amount=sats, period="daily", to="0" + BOB[4:]).strip()[2:] in \
        alice.run("9", "3")
    assert alice.run("9", "3", "1", "1") == "END " + t("en", "order.cancelled")
    assert orders.active(wallet.db, view(wallet, ALICE).id) == []
