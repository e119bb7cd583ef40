"""Random sequences of sends, payment requests, top-ups, withdrawals, airtime, Lightning receipts
and payments out, savings goals (opened, filled, broken early, matured by the worker), backend
failures and unknown answers (settled later by the node or M-Pesa),
replayed confirmations and restarts of the app on the same database; after every step no balance
is negative, every balance equals its ledger and the journal, no posting was ever changed, and the
sats in the system are exactly what came in minus what went out."""

from __future__ import annotations

import datetime as dt
import os
import tempfile

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import func, select

from app import create_app
from helpers.lightning import lnurl_pay
from helpers.lightning.lnurl_pay import PayParams
from helpers.airtime.provider import AirtimeResult, SimulatedAirtime
from helpers.infra.rail import Answer
from helpers.wallet.customers import users
from helpers.wallet import demo
from helpers.wallet.ledger import journal
from helpers.wallet.payouts import payments
from helpers.wallet.errors import InsufficientBalance, PolicyDenied
from helpers.web import demo as demo_routes
from helpers.mpesa.provider import PayoutResult, SimulatedMpesa
from helpers.wallet.rules import policy
from helpers.wallet.ledger.savings_tables import GOAL_OPEN, SavingsGoal
from helpers.wallet.savings import goals
from helpers.web import worker
from lightning import MockBackend, PaymentResult, State, StatusResult, UnavailableBackend, decode_invoice
from helpers.wallet.payouts import machine as payouts
from models import (AIRTIME_RAIL, MPESA_B2C_RAIL, OPEN_PAYOUT, SAVINGS, SEND, Invoice, LedgerAccount, Payout, Posting,
                    Transaction, User, utcnow)
from tests.conftest import configure, DEMO, Dialer, KES_MIN, PIN, TEST_PEPPER

P = policy()
PEOPLE = st.sampled_from(range(len(DEMO)))
SATS = st.integers(min_value=P.value("payment-min-sats") - 100, max_value=60_000)
KES = st.integers(min_value=KES_MIN - 10, max_value=9_000)
AIRTIME_KES = st.integers(min_value=P.value("airtime-min-kes") - 2, max_value=P.value("airtime-max-kes") + 2)


class ScriptedMpesa(SimulatedMpesa):
    next_outcome = State.SUCCEEDED

    def payout(self, phone, kes, reference):
        if self.next_outcome is State.SUCCEEDED:
            return super().payout(phone, kes, reference)
        return PayoutResult(self.next_outcome, error="scripted")


class ScriptedAirtime(SimulatedAirtime):
    next_outcome = State.SUCCEEDED

    def send(self, phone, kes, reference):
        if self.next_outcome is State.SUCCEEDED:
            return super().send(phone, kes, reference)
        return AirtimeResult(self.next_outcome, request_id=f"ATQid_{reference}", error="scripted")


class ScriptedNode(MockBackend):
    """Our node: pays what it is told to, fails, or answers nothing definite (PENDING) and keeps
    the payment in flight until the test settles it one way or the other."""

    next_outcome = State.SUCCEEDED

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: dict[str, State] = {}  # payment hash -> what the node will say when asked

    def pay_invoice(self, bolt11, max_fee_sat):
        if self.next_outcome is State.SUCCEEDED:
            return super().pay_invoice(bolt11, max_fee_sat)
        payment_hash = decode_invoice(bolt11).payment_hash
        if self.next_outcome is State.FAILED:
            return PaymentResult(State.FAILED, payment_hash, error="scripted: no route")
        self.in_flight[payment_hash] = State.PENDING
        return PaymentResult(State.PENDING, payment_hash, error="scripted: no answer")

    def payment_status(self, payment_hash):
        if payment_hash in self.in_flight:
            return StatusResult(self.in_flight[payment_hash], fee_sat=1 if self.in_flight[payment_hash]
                                is State.SUCCEEDED else 0)
        return super().payment_status(payment_hash)


PAYEE = MockBackend(seed="a payee out in the world")


def _payee_invoice(params, amount_sats, settings):
    """What a Lightning address's server answers: a fresh invoice of another node."""
    return PAYEE.create_invoice(amount_sats, "coffee", 600).bolt11


class WalletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp()
        self.url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{self.tmp}/sm.db"
        self.node = ScriptedNode()
        self.mpesa = ScriptedMpesa()
        self.airtime = ScriptedAirtime()
        self.real_fetch, lnurl_pay.fetch_invoice = lnurl_pay.fetch_invoice, _payee_invoice
        self._start()
        self.svc.db.drop_schema()
        self.svc.db.create_schema()
        demo.seed_demo(self.svc.db)
        for phone in self.phones:
            phone.run(PIN, PIN)
        self.outside = self._sum(User.balance_sats)  # sats that came in from outside so far
        self.codes = 0
        self.payments = 0

    def _start(self) -> None:
        """The app as a new process starts it: nothing kept in memory but the node and M-Pesa,
        which are other machines."""
        self.app = create_app({"TESTING": True, "DATABASE_URL": self.url, "AUTO_CREATE_SCHEMA": False,
                               "DEMO_MODE": False, "SMS_AUTO_FLUSH": False, "PIN_PEPPER": TEST_PEPPER,
                               "RATE_LIMITS": False, "INVOICE_POLL_S": 0,
                               "WRITE_BEHIND_S": 0})
        self.svc = self.app.extensions["wallet"]
        configure(self.app, demo_mode=True)  # for /test/pay-invoice
        self.app.register_blueprint(demo_routes.bp)  # as create_app does in demo mode
        self.svc.mpesa = self.mpesa
        self.svc.airtime = self.airtime
        self.svc.lightning = self.node
        self.client = self.app.test_client()
        self.phones = [Dialer(self.client, phone) for phone in DEMO]

    def teardown(self) -> None:
        lnurl_pay.fetch_invoice = self.real_fetch
        with self.svc.db.read() as s:
            for kind, status in s.execute(select(Transaction.type, Transaction.status)).all():
                event(f"ledger row: {kind} {status}")
        self.svc.db.session.remove()
        self.svc.db.drop_schema()
        self.svc.db.dispose()

    def _sum(self, column, *where) -> int:
        with self.svc.db.read() as s:
            return int(s.scalar(select(func.coalesce(func.sum(column), 0)).where(*where)))

    @rule(a=PEOPLE, b=PEOPLE, amount=SATS, right_pin=st.booleans())
    def send(self, a, b, amount, right_pin):
        if a == b:
            return
        self.phones[a].run("1", "0" + DEMO[b][4:], str(amount), "1", PIN if right_pin else "9753")
        with self.svc.db.write() as s:  # keep PIN locks out of the way of the money rules
            s.execute(User.__table__.update().values(pin_locked_until=None, pin_failures=0))

    @rule(a=PEOPLE, b=PEOPLE, amount=SATS)
    def request_and_pay(self, a, b, amount):
        if a == b:
            return
        self.phones[a].run("3", "0" + DEMO[b][4:], str(amount))
        self.phones[b].run("7", "1", "1", PIN)

    @rule(a=PEOPLE, kes=KES, reuse=st.booleans())
    def top_up(self, a, kes, reuse):
        if not reuse or self.codes == 0:
            self.codes += 1
        code = f"CODE{self.codes:06d}"
        before = self._sum(User.balance_sats)
        self.phones[a].run("4", str(kes), code, "1")
        self.outside += self._sum(User.balance_sats) - before  # checked against the ledger below

    @rule(a=PEOPLE, kes=KES, outcome=st.sampled_from([State.SUCCEEDED, State.FAILED, State.PENDING]))
    def withdraw(self, a, kes, outcome):
        self.svc.mpesa.next_outcome = outcome
        self.phones[a].run("5", str(kes), "1", PIN)

    @rule(a=PEOPLE, kes=AIRTIME_KES, outcome=st.sampled_from([State.SUCCEEDED, State.FAILED, State.PENDING]))
    def buy_airtime(self, a, kes, outcome):
        self.airtime.next_outcome = outcome
        self.phones[a].run("8", "3", "1", str(kes), PIN)

    @rule(delivered=st.booleans())
    def airtime_answers(self, delivered):
        """Africa's Talking's late delivery report on every purchase that had no final answer."""
        with self.svc.db.read() as s:
            waiting = list(s.scalars(select(Payout.reference).where(Payout.rail == AIRTIME_RAIL,
                                                                    Payout.state.in_(OPEN_PAYOUT))))
        rail = self.svc.rail(AIRTIME_RAIL)
        assert rail is not None
        for reference in waiting:
            said = Answer.paid(reason="scripted report") if delivered else Answer.failed("scripted report")
            assert payouts.finish(self.svc.db, rail, reference, said)
            assert not payouts.finish(self.svc.db, rail, reference, Answer.paid(reason="the same report again"))

    @rule(a=PEOPLE, amount=SATS, node_up=st.booleans(), pay=st.booleans())
    def receive(self, a, amount, node_up, pay):
        self.svc.lightning = self.node if node_up else UnavailableBackend("down")
        self.phones[a].run("2", str(amount))
        self.svc.lightning = self.node
        if pay:
            with self.svc.db.read() as s:
                reference = s.scalar(select(Invoice.reference).order_by(Invoice.id.desc()))
            if reference:
                self.client.post("/test/pay-invoice", data={"reference": reference})

    @rule(a=PEOPLE, amount=SATS, outcome=st.sampled_from([State.SUCCEEDED, State.FAILED, State.PENDING]))
    def pay_out(self, a, amount, outcome):
        """A payment to a Lightning address; PENDING is the node giving no definite answer."""
        self.node.next_outcome = outcome
        self.payments += 1
        with self.svc.db.read() as s:
            user = users.UserView.of(users.get(s, DEMO[a]))
        params = PayParams("coffee@shop.example", "https://shop.example/lnurlp/cb", 1, 10_000_000, "0" * 64)
        try:
            paid = payments.pay_address(self.svc, user, params, amount, f"sm-pay-{self.payments}")
            event(f"payment out: {paid.state.value}")
        except (InsufficientBalance, PolicyDenied) as exc:
            event(f"payment refused: {type(exc).__name__}")

    @rule(paid=st.booleans())
    def node_answers(self, paid):
        """The node finally knows: every payment it kept in flight succeeded, or failed."""
        for payment_hash in self.node.in_flight:
            self.node.in_flight[payment_hash] = State.SUCCEEDED if paid else State.FAILED
        for outcome, count in payments.reconcile(self.svc).items():
            if count:
                event(f"node answered late: {outcome}")

    @rule(paid=st.booleans())
    def mpesa_answers(self, paid):
        """M-Pesa's late word on every withdrawal that had no answer."""
        with self.svc.db.read() as s:
            waiting = list(s.scalars(select(Payout).where(Payout.rail == MPESA_B2C_RAIL,
                                                          Payout.state.in_(OPEN_PAYOUT))))
        rail = self.svc.rail(MPESA_B2C_RAIL)
        assert rail is not None
        for payout in waiting:
            said = Answer.paid(receipt=f"LT{payout.id:08d}") if paid else Answer.failed("scripted")
            assert payouts.finish(self.svc.db, rail, payout.reference, said)
            assert not payouts.finish(self.svc.db, rail, payout.reference, said)  # once

    @rule(a=PEOPLE, days=st.integers(min_value=1, max_value=60))
    def open_goal(self, a, days):
        """A customer opens a goal (a name and a date; no money moves)."""
        self.goals = getattr(self, "goals", 0) + 1
        lock = (utcnow() + dt.timedelta(days=days)).strftime("%d%m%Y")
        self.phones[a].run("9", "2", f"Goal{self.goals}", "2", "50000", lock)

    @rule(a=PEOPLE, amount=SATS, right_pin=st.booleans())
    def save_to_goal(self, a, amount, right_pin):
        """Sats from the balance into the customer's first open goal (opened first if none), behind
        the PIN."""
        if not self._sum(SavingsGoal.id, SavingsGoal.status == GOAL_OPEN, SavingsGoal.user_id == a + 1):
            self.open_goal(a, 30)
        reply = self.phones[a].run("9", "1", "1", "1", str(amount), PIN if right_pin else "9753")
        event(f"goal: {reply.split(' ')[1]} {reply.split(' ')[2][:5]}")
        with self.svc.db.write() as s:
            s.execute(User.__table__.update().values(pin_locked_until=None, pin_failures=0))

    @rule(a=PEOPLE)
    def break_goal(self, a):
        """The first open goal taken out early, for the policy's fee."""
        self.phones[a].run("9", "1", "1", "2", PIN)

    @rule(days=st.integers(min_value=0, max_value=61))
    def time_passes(self, days):
        """The worker's savings task runs `days` from now: goals whose date has come return once."""
        later = utcnow() + dt.timedelta(days=days)
        real, goals.utcnow = goals.utcnow, (lambda: later)
        try:
            matured, _paid = worker.run_savings(self.svc)
            event(f"goals matured: {matured > 0}")
            assert worker.run_savings(self.svc) == (0, 0)  # a second worker, or the next run: nothing more
        finally:
            goals.utcnow = real

    @rule(a=PEOPLE)
    def replay(self, a):
        """Africa's Talking sends the last request of a session again (a retry on a timeout)."""
        phone = self.phones[a]
        if phone.session_id:
            phone.post(phone.text)

    @rule()
    def restart(self):
        """The process dies and starts again on the same database."""
        self.svc.db.session.remove()
        self.svc.db.dispose()
        self._start()

    @invariant()
    def books_balance(self):
        with self.svc.db.read() as s:
            assert journal.check(s) == []
            assert s.scalar(select(func.min(User.balance_sats))) >= 0
            assert journal.check(s) == []  # every entry sums to zero, every balance is its postings
            # nothing posted is ever edited: what was there at the last step is there unchanged
            last_id, last_sum = getattr(self, "posted", (0, 0))
            weighed = select(func.coalesce(func.sum(Posting.id * Posting.amount_sats), 0))
            assert s.scalar(weighed.where(Posting.id <= last_id)) == last_sum
            top = s.scalar(select(func.coalesce(func.max(Posting.id), 0)))
            self.posted = (top, s.scalar(weighed.where(Posting.id <= top)))
        topups = self._sum(Transaction.amount_sats, Transaction.type == "topup")
        received = self._sum(Transaction.amount_sats, Transaction.counterparty == "lightning")
        out = self._sum(Transaction.amount_sats + Transaction.fee_sats, Transaction.type.in_(("withdraw", "airtime")),
                        Transaction.status.in_(("pending", "settled")))
        out += self._sum(Transaction.amount_sats, Transaction.type == SEND, Transaction.payment_hash.is_not(None),
                         Transaction.status.in_(("pending", "settled")))  # paid out through Lightning
        # what sends and paid requests cost in fees (the wallet's, no longer any user's)
        fees = self._sum(Transaction.fee_sats, Transaction.direction == "debit",
                         Transaction.type.in_(("send", "invoice")), Transaction.status.in_(("pending", "settled")))
        opening = self._sum(Transaction.amount_sats, Transaction.type == "adjust")
        saved = self._sum(SavingsGoal.balance_sats)
        break_fees = self._sum(Transaction.fee_sats, Transaction.kind == "goal-break")
        assert self._sum(User.balance_sats) + saved == opening + topups + received - out - fees - break_fees
        # every goal's sats are in the house account `savings`; a closed goal holds none
        assert saved == -self._sum(LedgerAccount.balance_sats, LedgerAccount.code == SAVINGS)
        assert self._sum(SavingsGoal.balance_sats, SavingsGoal.status != GOAL_OPEN) == 0
        # a goal came back at most once
        with self.svc.db.read() as s:
            twice = s.execute(select(Transaction.idempotency_key).where(Transaction.kind == "goal-mature")
                              .group_by(Transaction.idempotency_key).having(func.count() > 1)).all()
            assert twice == []
        assert opening + topups == self.outside


TestWalletMachine = WalletMachine.TestCase
TestWalletMachine.settings = settings(max_examples=40, stateful_step_count=15, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
