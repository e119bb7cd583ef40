"""Random sequences of sends, payment requests, top-ups, withdrawals, airtime, Lightning receipts
and payments out, savings goals (opened, filled, broken early, matured by the worker), backend
failures and unknown answers (settled later by the node or M-Pesa), chama contributions, payout
proposals, votes by USSD and by SMS reply (AT's retries included), expiries, members leaving and
rejoining, replayed confirmations and restarts of the app on the same database; after every step no
balance (a customer's, a goal's or a group's) is negative, every balance equals its ledger and the
journal, no posting was ever changed, every paid proposal was paid by exactly one entry, and the
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
from helpers.wallet.chama import groups, proposals
from helpers.wallet.chama.tables import PAID, TO_WALLET, ChamaBallot, ChamaProposal
from models import (AIRTIME_RAIL, MPESA_B2C_RAIL, OPEN_PAYOUT, SAVINGS, SEND, Invoice, LedgerAccount, Payout, Posting,
                    Transaction, User, utcnow)
from tests.conftest import configure, DEMO, Dialer, KES_MIN, PIN, TEST_PEPPER
from tests.integration.savings_machine import SavingsRules

P = policy()
PEOPLE = st.sampled_from(range(len(DEMO)))
SATS = st.integers(min_value=P.value("payment-min-sats") - 100, max_value=60_000)
KES = st.integers(min_value=KES_MIN - 10, max_value=9_000)
CHAMA_TOKEN = "state-machine-sms-token-0123"
OUTSIDER = "+254733444555"  # a payout's payee who is no member
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


def _payee_invoice(params, amount_sats, settings, payer_name=None):
    """What a Lightning address's server answers: a fresh invoice of another node."""
    return PAYEE.create_invoice(amount_sats, "coffee", 600).bolt11


# A member's vote in a round: mostly yes, so that rounds reach the group's rule of two (and pay)
# often enough for the invariants to see payouts, and sometimes no (a rejection).
MOSTLY_YES = st.sampled_from([True, True, True, False])

class WalletMachine(SavingsRules, RuleBasedStateMachine):
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
        self.messages = 0
        # one chama of the three demo users, the first its chair, a rule of two approvals
        chair, *others = (self._user(n) for n in range(len(DEMO)))
        self.chama = groups.create(self.svc.db, P, chair, "Wanawake", 2)
        for member in others:
            groups.invite(self.svc.db, P, chair, self.chama, member.phone, "*384*123#")
            groups.answer_invite(self.svc.db, member, self.chama, True)

    def _user(self, n: int) -> users.UserView:
        with self.svc.db.read() as s:
            return users.UserView.of(users.get(s, DEMO[n]))

    def _start(self) -> None:
        """The app as a new process starts it: nothing kept in memory but the node and M-Pesa,
        which are other machines."""
        self.app = create_app({"TESTING": True, "DATABASE_URL": self.url, "AUTO_CREATE_SCHEMA": False,
                               "DEMO_MODE": False, "SMS_AUTO_FLUSH": False, "PIN_PEPPER": TEST_PEPPER,
                               "RATE_LIMITS": False, "INVOICE_POLL_S": 0,
                               "WRITE_BEHIND_S": 0, "SMS_INCOMING_TOKEN": CHAMA_TOKEN})
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

    # ------------------------------------------------------------------ the chama
    @rule(a=PEOPLE, amount=SATS)
    def contribute(self, a, amount):
        self.phones[a].run("9", "4", "1", "1", str(amount), PIN)

    @rule(a=PEOPLE, b=st.sampled_from(range(len(DEMO) + 1)), amount=SATS)
    def propose(self, a, b, amount):
        to = OUTSIDER if b == len(DEMO) else DEMO[b]
        self.phones[a].run("9", "4", "1", "2", "1", "0" + to[4:], str(amount), PIN)

    @rule(a=PEOPLE, yes=st.booleans())
    def vote_by_ussd(self, a, yes):
        self.phones[a].run("9", "4", "1", "3", "1", "1" if yes else "2", PIN)

    @rule(a=PEOPLE, yes=st.booleans(), again=st.booleans())
    def vote_by_sms(self, a, yes, again):
        """A reply to the SMS with the member's code for their newest ballot; AT may post it twice."""
        with self.svc.db.read() as s:
            code = s.scalar(select(ChamaBallot.code).where(ChamaBallot.user_id == self._user(a).id)
                            .order_by(ChamaBallot.id.desc()))
        if code is None:
            return
        self.messages += 1
        for _ in range(2 if again else 1):
            answer = self.client.post(f"/sms/{CHAMA_TOKEN}/incoming", data={
                "from": DEMO[a], "to": "22384", "text": f"{'YES' if yes else 'NO'} {code}", "date": "2026-12-07",
                "id": f"ATXid_{self.messages}"})
            assert answer.status_code == 200
            event(f"sms vote: {answer.get_json()['status']}")

    @rule(a=PEOPLE, amount=SATS, votes=st.lists(st.tuples(MOSTLY_YES, st.booleans()), min_size=1, max_size=2))
    def chama_round(self, a, amount, votes):
        """A whole round in one step (so that payouts happen often): a contribution, a payout proposed
        to the outsider, and the other members' votes (yes or no) by USSD or SMS."""
        self.contribute(a, amount)
        self.propose(a, len(DEMO), amount)
        others = [n for n in range(len(DEMO)) if n != a]
        for voter, (yes, by_sms) in zip(others, votes, strict=False):
            if by_sms:
                self.vote_by_sms(voter, yes, False)
            else:
                self.vote_by_ussd(voter, yes)

    @rule(a=PEOPLE, amount=SATS, till=st.booleans(), kes=st.integers(min_value=KES_MIN - 10, max_value=2 * KES_MIN),
          outcome=st.sampled_from([State.SUCCEEDED, State.FAILED, State.PENDING]),
          votes=st.lists(MOSTLY_YES, min_size=1, max_size=2))
    def chama_round_in_kes(self, a, amount, till, kes, outcome, votes):
        """A contribution, a payout proposed in KES to M-Pesa (which answers `outcome`) or a till,
        and the other members' votes by USSD: paid once through the payout state machine, from
        the group (a failed one back into it)."""
        self.contribute(a, amount)
        self.svc.mpesa.next_outcome = outcome
        to = ("3", "123456") if till else ("2", "0722000111")
        self.phones[a].run("9", "4", "1", "2", *to, str(kes), PIN)
        for voter, yes in zip([n for n in range(len(DEMO)) if n != a], votes, strict=False):
            self.vote_by_ussd(voter, yes)

    @rule()
    def proposals_expire(self):
        """The worker's sweep, at a time past every proposal's expiry."""
        with self.svc.db.read() as s:
            latest = s.scalar(select(func.max(ChamaProposal.expires_at)))
        if latest is not None:
            proposals.expire_due(self.svc.db, latest)

    @rule(a=st.sampled_from(range(1, len(DEMO))))
    def leave_and_rejoin(self, a):
        member = self._user(a)
        self.leaves = getattr(self, "leaves", 0) + 1
        try:
            groups.leave(self.svc.db, member, self.chama, f"sm-leave-{self.leaves}")
        except groups.ChamaRefused as refused:  # a payout of the group on its way: leave later
            assert refused.reason == "payout-in-flight"
            event("leave refused: payout in flight")
            return
        groups.invite(self.svc.db, P, self._user(0), self.chama, member.phone, "*384*123#")
        groups.answer_invite(self.svc.db, member, self.chama, True)

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
        with self.svc.db.read() as s:
            in_groups = journal.groups_hold(journal.balances(s))
            paid = s.scalars(select(ChamaProposal.id).where(ChamaProposal.status == PAID,
                                                            ChamaProposal.to_kind == TO_WALLET)).all()
            payouts_made = s.scalars(select(Transaction.idempotency_key).where(Transaction.kind == groups.PAYOUT)).all()
            # a paid proposal in KES: one payout of the state machine, reserved from the group
            paid_in_kes = s.execute(select(ChamaProposal.payout_ref, func.count(Payout.id))
                                    .outerjoin(Payout, Payout.reference == ChamaProposal.payout_ref)
                                    .where(ChamaProposal.status == PAID, ChamaProposal.to_kind != TO_WALLET)
                                    .group_by(ChamaProposal.id, ChamaProposal.payout_ref)).all()
            event(f"chama payouts in KES: {min(len(paid_in_kes), 2)}+")
        assert sorted(payouts_made) == sorted(f"chama:{n}" for n in paid)  # each paid proposal once, no other
        assert all(ref is not None and count == 1 for ref, count in paid_in_kes), paid_in_kes
        event(f"chama payouts so far: {min(len(paid), 2)}+")
        assert in_groups >= 0
        assert self._sum(User.balance_sats) + saved + in_groups == \
            opening + topups + received - out - fees - break_fees
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
