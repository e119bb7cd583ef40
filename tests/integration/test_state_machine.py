"""Random sequences of sends, payment requests, top-ups, withdrawals, Lightning receipts and
failures, driven through the USSD menu; after every step no balance is negative, every balance
equals its ledger, and the sats in the system are exactly what came in minus what went out."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import func, select

from app import create_app
from helpers.wallet import books, demo, journal
from helpers.web import demo as demo_routes
from helpers.mpesa.provider import PayoutResult, SimulatedMpesa
from helpers.wallet.rules import policy
from lightning import State, UnavailableBackend
from models import Invoice, Posting, Transaction, User
from tests.conftest import DEMO, Dialer, PIN, TEST_PEPPER, configure

P = policy()
PEOPLE = st.sampled_from(range(len(DEMO)))
SATS = st.integers(min_value=P.value("payment-min-sats") - 100, max_value=60_000)
KES = st.integers(min_value=P.value("kes-min") - 10, max_value=9_000)


class ScriptedMpesa(SimulatedMpesa):
    next_outcome = State.SUCCEEDED

    def payout(self, phone, kes, reference):
        if self.next_outcome is State.SUCCEEDED:
            return super().payout(phone, kes, reference)
        return PayoutResult(self.next_outcome, error="scripted")


class WalletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp()
        url = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{self.tmp}/sm.db"
        self.app = create_app({"TESTING": True, "DATABASE_URL": url, "AUTO_CREATE_SCHEMA": False,
                               "DEMO_MODE": False, "SMS_AUTO_FLUSH": False, "PIN_PEPPER": TEST_PEPPER,
                               "RATE_LIMITS": False, "INVOICE_POLL_S": 0,
                               "WRITE_BEHIND_S": 0})
        self.svc = self.app.extensions["wallet"]
        self.svc.db.drop_schema()
        self.svc.db.create_schema()
        demo.seed_demo(self.svc.db)
        configure(self.app, demo_mode=True)  # for /test/pay-invoice
        self.app.register_blueprint(demo_routes.bp)  # as create_app does in demo mode
        self.svc.mpesa = ScriptedMpesa()
        self.real_lightning = self.svc.lightning
        self.client = self.app.test_client()
        self.phones = [Dialer(self.client, phone) for phone in DEMO]
        for phone in self.phones:
            phone.run(PIN, PIN)
        self.outside = self._sum(User.balance_sats)  # sats that came in from outside so far
        self.codes = 0

    def teardown(self) -> None:
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

    @rule(a=PEOPLE, amount=SATS, node_up=st.booleans(), pay=st.booleans())
    def receive(self, a, amount, node_up, pay):
        self.svc.lightning = self.real_lightning if node_up else UnavailableBackend("down")
        self.phones[a].run("2", str(amount))
        self.svc.lightning = self.real_lightning
        if pay:
            with self.svc.db.read() as s:
                reference = s.scalar(select(Invoice.reference).order_by(Invoice.id.desc()))
            if reference:
                self.client.post("/test/pay-invoice", data={"reference": reference})

    @invariant()
    def books_balance(self):
        with self.svc.db.read() as s:
            assert books.ledger_check(s) == []
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
        out = self._sum(Transaction.amount_sats + Transaction.fee_sats, Transaction.type == "withdraw",
                        Transaction.status.in_(("pending", "settled")))
        # what sends and paid requests cost in fees (the wallet's, no longer any user's)
        fees = self._sum(Transaction.fee_sats, Transaction.direction == "debit",
                         Transaction.type.in_(("send", "invoice")), Transaction.status.in_(("pending", "settled")))
        opening = self._sum(Transaction.amount_sats, Transaction.type == "adjust")
        assert self._sum(User.balance_sats) == opening + topups + received - out - fees
        assert opening + topups == self.outside


TestWalletMachine = WalletMachine.TestCase
TestWalletMachine.settings = settings(max_examples=25, stateful_step_count=12, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
