"""Issue 35, standing orders paid out through a rail: to a Lightning address (an invoice fetched
from the payee's LNURL server at each run), a till or a paybill (M-Pesa, as a customer's own
payment), in sats or in KES converted at the price of the run. Each runs once per period, is
skipped with an SMS when the balance is short (nothing moved), stops when cancelled, and is never
paid twice by two workers."""

from __future__ import annotations

import datetime as dt
import re
import threading

import pytest
from sqlalchemy import select

from helpers.infra.i18n import gsm7_length, t
from helpers.ussd.walker import MAX_SCREEN
from helpers.mpesa.provider import PayoutResult
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.ledger import journal
from helpers.wallet.ledger.savings_tables import StandingOrder
from helpers.wallet.prices import CurrentPrice
from helpers.wallet.savings import goals, orders
from helpers.web import worker
from lightning import State
from models import Payout, Transaction, utcnow
from tests.conftest import DEMO, FIXED_PRICE, KES_MIN, PIN, balance, outbox

ALICE, BOB = DEMO[0], DEMO[1]
TILL, PAYBILL, ACCOUNT = "52187", "888880", "ACC123"


def view(wallet, phone: str) -> UserView:
    with wallet.db.read() as s:
        return UserView.of(users.get(s, phone))


def create(wallet, kind: str, to: str, amount: int, unit: str = "kes", account: str | None = None,
           period: str = "weekly", key: str = "so-1") -> orders.OrderView:
    return orders.create(wallet.db, wallet.policy, view(wallet, ALICE), kind, to, amount, period, key, unit,
                         account, FIXED_PRICE)


def row(wallet, order_id: int) -> StandingOrder:
    with wallet.db.read() as s:
        found = s.get_one(StandingOrder, order_id)
        s.expunge(found)
        return found


def moved(wallet, order_id: int) -> list[Transaction]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Transaction).where(Transaction.idempotency_key.like(f"so:{order_id}:%"))))


def payouts(wallet) -> list[Payout]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Payout).order_by(Payout.id)))


def at_price(monkeypatch, wallet, kes_per_btc: int) -> None:
    monkeypatch.setattr(wallet.prices, "current", lambda: CurrentPrice(kes_per_btc, utcnow(), "manual"))


def next_period(monkeypatch, wallet, order_id: int) -> None:
    moment = row(wallet, order_id).next_run_at
    monkeypatch.setattr(orders, "utcnow", lambda: moment)


def empty(wallet) -> None:
    """Alice's sats all but one go into a goal: her balance is short for any order."""
    lock = (utcnow() + dt.timedelta(days=9)).replace(hour=0, minute=0, second=0, microsecond=0)
    goal = goals.open_goal(wallet.db, wallet.policy, view(wallet, ALICE), "Rent", lock, "g")
    goals.move_in(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, balance(wallet, ALICE) - 1, "all-in")


def books_clean(wallet) -> None:
    with wallet.db.read() as s:
        assert journal.check(s) == []


def test_a_till_order_in_kes_pays_once_a_period_at_each_runs_price(wallet, alice, monkeypatch):
    kes = KES_MIN * 2
    so = create(wallet, "till", TILL, kes)
    for price in (FIXED_PRICE, FIXED_PRICE * 2):
        at_price(monkeypatch, wallet, price)
        sats = wallet.policy.kes_to_sats_debit(kes, price)
        fee = wallet.policy.fee_sats("mpesa-withdraw", sats)
        before = balance(wallet, ALICE)
        assert orders.run(wallet, so.id) == orders.PAID
        assert orders.run(wallet, so.id) == orders.NOT_DUE  # the same period again: nothing
        assert balance(wallet, ALICE) == before - sats - fee
        next_period(monkeypatch, wallet, so.id)
    made = moved(wallet, so.id)
    assert len(made) == 2 and {m.counterparty for m in made} == {f"Till {TILL}"}
    assert row(wallet, so.id).runs == 2
    books_clean(wallet)


def test_a_paybill_order_names_its_account_and_the_worker_runs_it(wallet, alice):
    so = create(wallet, "paybill", PAYBILL, KES_MIN, account=ACCOUNT)
    assert worker.run_savings(wallet) == (0, 1)
    assert [m.counterparty for m in moved(wallet, so.id)] == [f"Paybill {PAYBILL} acct {ACCOUNT}"]
    assert worker.run_savings(wallet) == (0, 0)
    books_clean(wallet)


def test_a_short_balance_skips_a_till_order_with_an_sms_and_moves_nothing(wallet, alice):
    so = create(wallet, "till", TILL, KES_MIN)
    empty(wallet)
    before, paid_out = balance(wallet, ALICE), len(payouts(wallet))
    assert orders.run(wallet, so.id) == orders.SKIPPED
    assert balance(wallet, ALICE) == before and len(payouts(wallet)) == paid_out and moved(wallet, so.id) == []
    after = row(wallet, so.id)
    assert (after.runs, after.skips) == (0, 1)
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.order-skipped", amount=t("en", "order.kes", kes=KES_MIN),
                                          date=after.next_run_at.strftime("%d/%m"))
    assert orders.run(wallet, so.id) == orders.NOT_DUE
    books_clean(wallet)


def test_a_till_payment_mpesa_refuses_is_refunded_and_counted_as_skipped(wallet, alice):
    so = create(wallet, "till", TILL, KES_MIN)
    before = balance(wallet, ALICE)
    wallet.mpesa.pay_business = lambda *args: PayoutResult(State.FAILED, error="rejected")
    assert orders.run(wallet, so.id) == orders.SKIPPED
    assert balance(wallet, ALICE) == before
    assert (row(wallet, so.id).runs, row(wallet, so.id).skips) == (0, 1)
    books_clean(wallet)


def test_a_cancelled_till_order_never_runs_again(wallet, alice, monkeypatch):
    so = create(wallet, "till", TILL, KES_MIN)
    assert orders.run(wallet, so.id) == orders.PAID
    assert orders.cancel(wallet.db, view(wallet, ALICE).id, so.id)
    next_period(monkeypatch, wallet, so.id)
    assert orders.run(wallet, so.id) == orders.NOT_DUE
    assert len(moved(wallet, so.id)) == 1


@pytest.mark.parametrize("kind", ["till", "address"])
def test_two_workers_never_pay_one_period_of_a_payout_order_twice(insecure, payee, alice, kind):
    wallet = insecure
    so = (create(wallet, "till", TILL, KES_MIN) if kind == "till"
          else create(wallet, "address", payee.address(), wallet.policy.value("payment-min-sats"), unit="sats"))
    before = balance(wallet, ALICE)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def one_worker() -> None:
        start.wait()
        outcomes.append(orders.run(wallet, so.id))

    threads = [threading.Thread(target=one_worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(orders.PAID) == 1 and set(outcomes) <= {orders.PAID, orders.ALREADY, orders.NOT_DUE}
    assert len(moved(wallet, so.id)) == 1 and len(payouts(wallet)) == 1
    assert balance(wallet, ALICE) < before
    if kind == "address":
        assert len(payee.invoices) == 1  # the losing worker fetched nothing
    books_clean(wallet)


def test_a_worker_that_read_the_order_before_another_paid_it_pays_nothing(wallet, alice, monkeypatch):
    """Both workers read the period as due; the second's claim finds it moved on: nothing reserved."""
    so = create(wallet, "till", TILL, KES_MIN)
    stale = row(wallet, so.id)
    assert orders.run(wallet, so.id) == orders.PAID
    real_get = orders.Session.get

    def stale_get(self, entity, ident, *args, **kwargs):
        found = real_get(self, entity, ident, *args, **kwargs)
        if entity is StandingOrder and found is not None:
            found.next_run_at = stale.next_run_at  # as it was read before the first run
        return found

    monkeypatch.setattr(orders.Session, "get", stale_get)
    assert orders.run(wallet, so.id) == orders.ALREADY
    monkeypatch.undo()
    assert len(moved(wallet, so.id)) == 1 and len(payouts(wallet)) == 1


def test_a_lightning_address_order_fetches_an_invoice_each_period(insecure, payee, alice, monkeypatch):
    wallet = insecure
    amount = wallet.policy.value("payment-min-sats")
    so = create(wallet, "address", payee.address(), amount, unit="sats")
    before = balance(wallet, ALICE)
    assert orders.run(wallet, so.id) == orders.PAID
    spent = before - balance(wallet, ALICE)
    assert amount <= spent <= amount + wallet.policy.fee_sats("lightning", amount)
    next_period(monkeypatch, wallet, so.id)
    assert orders.run(wallet, so.id) == orders.PAID
    assert len(payee.invoices) == 2 and len(moved(wallet, so.id)) == 2
    assert {m.status for m in moved(wallet, so.id)} == {"settled"}
    books_clean(wallet)


def test_a_lightning_address_that_cannot_be_paid_is_skipped_with_an_sms(insecure, payee, alice):
    wallet = insecure
    amount = wallet.policy.value("payment-min-sats")
    so = create(wallet, "address", payee.address(), amount, unit="sats")
    payee.mode = "error"
    before = balance(wallet, ALICE)
    assert orders.run(wallet, so.id) == orders.SKIPPED
    assert balance(wallet, ALICE) == before and moved(wallet, so.id) == []
    after = row(wallet, so.id)  # the SMS says whose doing it was: the payee's service, not the balance
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.order-skipped-payee", amount=t("en", "order.sats", amount=amount),
                                          date=after.next_run_at.strftime("%d/%m"))
    books_clean(wallet)


def test_a_kes_order_to_a_phone_converts_at_the_runs_price(wallet, alice, bob, monkeypatch):
    kes = KES_MIN
    so = create(wallet, "phone", BOB, kes)
    price = FIXED_PRICE // 2  # KES buys more sats: the send keeps its sats bounds
    at_price(monkeypatch, wallet, price)
    bob_before = balance(wallet, BOB)
    assert orders.run(wallet, so.id) == orders.PAID
    assert balance(wallet, BOB) == bob_before + wallet.policy.kes_to_sats_send(kes, price)


def test_a_kes_order_worth_more_than_the_cap_at_the_runs_price_is_skipped(wallet, alice, bob, monkeypatch):
    cap = wallet.policy.value("standing-order-max-sats")
    kes = KES_MIN
    so = create(wallet, "till", TILL, kes)
    # a price at which the order's KES cost more sats than the customer consented to
    price = max(1, kes * wallet.policy.value("sats-per-btc") // (cap * 2))
    assert wallet.policy.kes_to_sats_debit(kes, price) > cap
    at_price(monkeypatch, wallet, price)
    before = balance(wallet, ALICE)
    assert orders.run(wallet, so.id) == orders.SKIPPED
    assert balance(wallet, ALICE) == before and moved(wallet, so.id) == []


def test_setup_checks_kes_bounds_and_the_cap_on_kes_orders(wallet, alice):
    from helpers.wallet.errors import PolicyDenied

    low, high = wallet.policy.kes_bounds()
    with pytest.raises(PolicyDenied, match="below-minimum"):
        create(wallet, "till", TILL, low - 1)
    with pytest.raises(PolicyDenied):
        create(wallet, "till", TILL, high)  # worth more sats than the cap at today's price
    with pytest.raises(ValueError):
        create(wallet, "till", TILL, 500, unit="sats")  # M-Pesa pays KES


# ------------------------------------------------------------------ the screens
def test_by_ussd_a_till_order_is_set_listed_in_my_account_and_cancelled(wallet, alice):
    kes = KES_MIN
    reply = alice.run("9", "3", "9", "4", TILL, str(kes), "2", PIN)
    money = t("en", "order.kes", kes=kes)
    assert reply == "END " + t("en", "order.done", amount=money, period=t("en", "period.weekly"), to=f"Till {TILL}")
    listed = alice.run("6", "6")
    assert listed == "CON " + t("en", "orders", lines=t("en", "orders.line", n=1, amount=money,
                                                         period=t("en", "period.weekly"), to=f"Till {TILL}"))
    assert alice.run("6", "6", "1", "1") == "END " + t("en", "order.cancelled")
    assert orders.active(wallet.db, view(wallet, ALICE).id) == []


@pytest.mark.parametrize("kind", ["4", "1"])  # a till; a phone (in KES)
def test_by_ussd_the_kes_offered_is_what_the_cap_allows_at_todays_price(wallet, alice, kind):
    path = ("9", "3", "9", "4", TILL) if kind == "4" else ("9", "3", "9", "1", "0" + BOB[4:], "2")
    prompt = alice.run(*path)
    low, high = (int(n.replace(",", "")) for n in re.findall(r"\(([\d,]+)-([\d,]+)\)", prompt)[0])
    assert (low, high) == (KES_MIN, high) and high <= wallet.policy.kes_bounds()[1]
    assert alice.run(*path, str(high + 1)).startswith("CON " + t("en", "deny.order-kes", min=low, max=high))
    assert alice.run(*path, str(high), "1", PIN).startswith("END " + t("en", "order.done", amount="X", period="",
                                                                        to="")[:18])
    assert orders.active(wallet.db, view(wallet, ALICE).id)[0].amount_kes == high


def test_by_ussd_a_paybill_and_an_address_order_are_set(insecure, payee, alice):
    wallet = insecure
    reply = alice.run("9", "3", "9", "5", PAYBILL, ACCOUNT, str(KES_MIN), "3", PIN)
    assert reply.startswith("END " + t("en", "order.done", amount=t("en", "order.kes", kes=KES_MIN),
                                       period=t("en", "period.monthly"), to=f"Paybill {PAYBILL} acct {ACCOUNT}"))
    amount = wallet.policy.value("payment-min-sats")
    assert alice.run("9", "3", "9", "3", "not an address").startswith("CON " + t("en", "error.address"))
    reply = alice.run("9", "3", "9", "3", payee.address(), "1", str(amount), "1", PIN)
    assert reply.startswith("END " + t("en", "order.done", amount=t("en", "order.sats", amount=amount),
                                       period=t("en", "period.daily"), to=payee.address()))
    kinds = [(o.kind, o.unit, o.account) for o in orders.active(wallet.db, view(wallet, ALICE).id)]
    assert kinds == [("paybill", "kes", ACCOUNT), ("address", "sats", None)]
    assert worker.run_savings(wallet) == (0, 2)
    books_clean(wallet)


def test_by_ussd_an_address_at_our_own_domain_is_an_order_to_that_phone(wallet, alice):
    from helpers.wallet.incoming import lnurl

    amount = wallet.policy.value("payment-min-sats")
    alice.run("9", "3", "9", "3", lnurl.address(wallet.settings, BOB), "1", str(amount), "2", PIN)
    listed = orders.active(wallet.db, view(wallet, ALICE).id)
    assert [(o.kind, o.destination, o.amount_sats) for o in listed] == [("phone", BOB, amount)]


def test_a_kes_order_with_no_price_now_is_skipped_with_an_sms_that_says_so(wallet, alice, monkeypatch):
    so = create(wallet, "till", TILL, KES_MIN)
    monkeypatch.setattr(wallet.prices, "current", lambda: None)
    before, paid_out = balance(wallet, ALICE), len(payouts(wallet))
    assert orders.run(wallet, so.id) == orders.SKIPPED
    assert balance(wallet, ALICE) == before and len(payouts(wallet)) == paid_out
    after = row(wallet, so.id)
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.order-skipped-price", amount=t("en", "order.kes", kes=KES_MIN),
                                          date=after.next_run_at.strftime("%d/%m"))
    books_clean(wallet)


def test_every_order_up_to_the_policys_most_is_reachable_from_the_list_a_page_at_a_time(wallet, alice):
    most = wallet.policy.value("standing-orders-max")
    for n in range(most):
        create(wallet, "paybill", PAYBILL, KES_MIN + n, account=ACCOUNT, key=f"so-{n}")
    more, new = t("en", "orders.more").strip(), t("en", "orders", lines="").split("\n")[-1]
    numbered = re.compile(r"^(\d) " + re.escape(t("en", "order.kes", kes=0).split(" ")[0]))
    seen, path = [], ["6", "6"]
    while True:
        screen = alice.run(*path)
        assert screen.startswith("CON ") and screen.endswith(new) and gsm7_length(screen[4:]) <= MAX_SCREEN
        seen += [int(found.group(1)) for line in screen.split("\n") if (found := numbered.match(line))]
        if more not in screen:
            break
        path.append("8")
    assert len(path) > 2  # more than one page: they did not fit one screen
    assert seen == list(range(1, most + 1))
    # the last, picked by its number on the last page, opens that order
    assert t("en", "order.kes", kes=KES_MIN + most - 1) in alice.run(*path, str(most))


@pytest.mark.parametrize("held_by", ["aml", "sim-swap"])
def test_a_hold_on_the_account_stops_the_worker_paying_an_order_out(wallet, alice, held_by):
    """An operator's monitoring hold, or a SIM swap that holds the number: the worker's run pays no
    one, moves nothing and tells the customer; once the hold goes, the next period pays."""
    from helpers.wallet.aml import cases
    from helpers.wallet.aml.tables import AmlCase
    from models import PhoneGuard
    so = create(wallet, "till", TILL, KES_MIN)
    if held_by == "aml":
        with wallet.db.write() as s:
            s.add(AmlCase(rule="fan-in", phone=ALICE, window_key="t", status="open", suspicious=False, facts="{}"))
        with wallet.db.read() as s:
            case_id = s.scalar(select(AmlCase.id).where(AmlCase.phone == ALICE))
        cases.hold(wallet.db, "ops", case_id, "ticket 9: source of funds")
    else:
        with wallet.db.write() as s:
            s.add(PhoneGuard(phone=ALICE, last_swap_at=utcnow(), held_swap_at=utcnow()))
    before, paid_out = balance(wallet, ALICE), len(payouts(wallet))
    assert worker.run_savings(wallet) == (0, 0)
    assert balance(wallet, ALICE) == before and len(payouts(wallet)) == paid_out and moved(wallet, so.id) == []
    after = row(wallet, so.id)
    assert (after.runs, after.skips) == (0, 1)
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.order-skipped-held", amount=t("en", "order.kes", kes=KES_MIN),
                                          date=after.next_run_at.strftime("%d/%m"))
    books_clean(wallet)


@pytest.mark.parametrize("kind", ["till", "address"])
def test_a_cancel_after_the_worker_claimed_the_period_stops_the_payment(insecure, payee, alice, monkeypatch, kind):
    """The worker claims a period, then pays; the customer cancels in between (told "cancelled"):
    the reservation, which checks the order under its lock, moves nothing."""
    from helpers.wallet.payouts import lightning_out
    wallet = insecure
    so = (create(wallet, "till", TILL, KES_MIN) if kind == "till" else
          create(wallet, "address", payee.address(), wallet.policy.value("payment-min-sats"), unit="sats"))
    module, name = (orders.kes_out, "reserve") if kind == "till" else (lightning_out, "reserve_lightning")
    real = getattr(module, name)

    def cancel_then_reserve(*args, **kwargs):
        assert orders.cancel(wallet.db, view(wallet, ALICE).id, so.id) is True
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, cancel_then_reserve)
    before, paid_out = balance(wallet, ALICE), len(payouts(wallet))
    assert orders.run(wallet, so.id) == orders.ALREADY
    assert balance(wallet, ALICE) == before and len(payouts(wallet)) == paid_out and moved(wallet, so.id) == []
    assert row(wallet, so.id).status == "cancelled"
    books_clean(wallet)
