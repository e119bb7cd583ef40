"""The state machine's auto-save and standing-order rules, mixed into WalletMachine
(tests/integration/test_state_machine.py), whose invariants hold after each of them: the books
balance, no sats made or lost, a goal's sats unspendable before its date. They use its customers
(phones, sends, top-ups, goals)."""

from __future__ import annotations

import datetime as dt

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from sqlalchemy import func, select

from helpers.wallet.ledger.savings_tables import GOAL_OPEN, AutosaveSeen, SavingsGoal, StandingOrder
from helpers.wallet.rules import policy
from helpers.wallet.savings import autosave, goals, orders
from helpers.web import worker
from models import Posting, Transaction, utcnow
from tests.conftest import DEMO, KES_MIN, PIN

P = policy()
PEOPLE = st.sampled_from(range(len(DEMO)))
SATS = st.integers(min_value=P.value("payment-min-sats") - 100, max_value=60_000)
KES = st.integers(min_value=KES_MIN - 10, max_value=9_000)
ORDER_SATS = st.integers(min_value=P.value("payment-min-sats") - 100,
                         max_value=P.value("standing-order-max-sats") + 100)
OUTSIDER = "+254733444555"  # one with no account yet


class SavingsRules:
    # A goal takes a share of each receipt (the sends, paid requests, top-ups and Lightning receipts
    # above are the receipts); the worker's sweep runs with some receipts not yet visible (committed
    # later, out of id order), in small batches and twice; standing orders to a phone or into a
    # goal are set up and cancelled by USSD and paid by the worker's savings task as time passes.
    # Orders are reached only through USSD (Save > 3) and worker.run_savings, and read from their table.
    @rule(a=PEOPLE, percent=st.integers(min_value=0, max_value=P.value("savings-autosave-max-pct") + 1), kes=KES,
          amount=SATS, hidden=st.sets(st.sampled_from(autosave.RECEIPT_KINDS)), batch=st.sampled_from([1, 200]),
          again=st.booleans())
    def autosave_round(self, a, percent, kes, amount, hidden, batch, again):
        """The customer's first open goal (opened first if none) is set by USSD to take `percent`
        of each receipt (0: off; above the policy's most: refused); receipts; the worker's sweep
        while receipts of the `hidden` kinds are not committed yet (a top-up's id is lower than the
        send's after it); then, maybe, a second worker's sweep of everything: each receipt after an
        auto-saving goal's floor is considered once."""
        if not self._sum(SavingsGoal.id, SavingsGoal.status == GOAL_OPEN, SavingsGoal.user_id == a + 1):
            self.open_goal(a, 30)
        event(f"auto-save switched: {self.phones[a].run('9', '1', '1', '3', str(percent), PIN)[:3]}")
        self.top_up(a, kes, False)
        self.send((a + 1) % len(DEMO), a, amount, True)
        seen = [kind for kind in autosave.RECEIPT_KINDS if kind not in hidden]
        real, autosave.RECEIPT_KINDS = autosave.RECEIPT_KINDS, tuple(seen)
        try:
            event(f"auto-save shares moved: {min(autosave.run(self.svc.db, P, batch), 2)}+")
        finally:
            autosave.RECEIPT_KINDS = real
        if not again:
            return
        while autosave.run(self.svc.db, P):
            pass
        assert autosave.run(self.svc.db, P) == 0  # everything visible was considered: nothing more
        with self.svc.db.read() as s:
            for goal_id, user_id, floor in s.execute(select(SavingsGoal.id, SavingsGoal.user_id,
                                                            SavingsGoal.autosave_seen_id).where(
                    SavingsGoal.status == GOAL_OPEN, SavingsGoal.autosave_bps > 0)).all():
                receipts = set(s.scalars(select(Posting.entry_id).join(Transaction).where(
                    Posting.user_id == user_id, Posting.amount_sats < 0, Transaction.id > floor,
                    Transaction.kind.in_(autosave.RECEIPT_KINDS))))
                considered = set(s.scalars(select(AutosaveSeen.entry_id).where(AutosaveSeen.goal_id == goal_id,
                                                                               AutosaveSeen.entry_id > floor)))
                assert receipts == considered

    @rule(a=PEOPLE, b=st.sampled_from(range(len(DEMO) + 1)), into_goal=st.booleans(), amount=ORDER_SATS,
          period=st.sampled_from(["1", "2", "3"]), days=st.integers(min_value=0, max_value=40), cancel=st.booleans())
    def order_round(self, a, b, into_goal, amount, period, days, cancel):
        """A standing order, set up by USSD behind the PIN: to a phone (another customer's or one
        with no account yet) or into the customer's first open goal; the worker runs `days` on;
        maybe the customer cancels their first order, and the worker runs again."""
        if into_goal:
            if not self._sum(SavingsGoal.id, SavingsGoal.status == GOAL_OPEN, SavingsGoal.user_id == a + 1):
                self.open_goal(a, 30)
            to = ("2", "1")
        else:
            to = ("1", "0" + (OUTSIDER if b == len(DEMO) else DEMO[b])[4:])
        reply = self.phones[a].run("9", "3", "9", *to, str(amount), period, PIN)
        event(f"order set up: {reply[:3]} {'goal' if into_goal else 'phone'}")
        self.orders_come_due(days)
        if cancel:
            self._cancel_order(a)
            self.orders_come_due(days)

    def _cancel_order(self, a):
        """The customer's first active order, cancelled by USSD: it never pays again."""
        with self.svc.db.read() as s:
            first = s.scalar(select(StandingOrder.id).where(StandingOrder.user_id == self._user(a).id,
                                                            StandingOrder.status == "active")
                             .order_by(StandingOrder.id))
        if first is None:
            return
        self.phones[a].run("9", "3", "1", "1")
        with self.svc.db.read() as s:
            assert s.get_one(StandingOrder, first).status == "cancelled"
            self.cancelled = {**getattr(self, "cancelled", {}), first: self._order_entries(s, first)}

    @rule(days=st.integers(min_value=0, max_value=40))
    def orders_come_due(self, days):
        """The clock moves on `days` (never back): the worker's savings task pays each order's due
        period or skips it (balance short), once, however often it runs; goals return at their date."""
        self.clock = getattr(self, "clock", 0) + days
        later = utcnow() + dt.timedelta(days=self.clock)
        real = orders.utcnow, goals.utcnow
        orders.utcnow = goals.utcnow = lambda: later
        try:
            with self.svc.db.read() as s:
                was_open = set(s.scalars(select(SavingsGoal.id).where(SavingsGoal.status == GOAL_OPEN)))
            matured, paid = worker.run_savings(self.svc)
            event(f"orders paid: {min(paid, 2)}+")
            assert worker.run_savings(self.svc) == (0, 0)  # the next run, or a second worker: nothing more
        finally:
            orders.utcnow, goals.utcnow = real
        with self.svc.db.read() as s:
            for order in s.scalars(select(StandingOrder)):
                assert self._order_entries(s, order.id) == order.runs  # each period paid once at most
                assert order.status != "active" or order.next_run_at > later  # nothing due is left
                event(f"order skipped: {order.skips > 0}, paid: {order.runs > 0}, {order.status}")
            for goal in s.scalars(select(SavingsGoal).where(SavingsGoal.id.in_(was_open),
                                                            SavingsGoal.status != GOAL_OPEN)):
                assert goal.status != "matured" or goal.lock_until <= later  # never before its date
            for order_id, count in getattr(self, "cancelled", {}).items():
                assert self._order_entries(s, order_id) == count  # a cancelled order pays no more

    @staticmethod
    def _order_entries(s, order_id: int) -> int:
        return int(s.scalar(select(func.count()).select_from(Transaction).where(
            Transaction.idempotency_key.like(f"so:{order_id}:%"))) or 0)

    @invariant()
    def shares_taken_once(self):
        """Every auto-save share moved is one considered receipt's (its key names the goal and the
        receipt), of that receipt's size at most the policy's share."""
        most = P.value("savings-autosave-max-pct")
        with self.svc.db.read() as s:
            moved = {(key, amount) for key, amount in s.execute(select(
                Transaction.idempotency_key, Transaction.amount_sats).where(Transaction.kind == "goal-autosave"))}
            taken = s.execute(select(AutosaveSeen.goal_id, AutosaveSeen.entry_id, AutosaveSeen.share_sats,
                                     Posting.amount_sats).join(Posting, Posting.entry_id == AutosaveSeen.entry_id)
                              .join(SavingsGoal, SavingsGoal.id == AutosaveSeen.goal_id)
                              .where(AutosaveSeen.share_sats > 0, Posting.user_id == SavingsGoal.user_id)).all()
        assert moved == {(autosave.key(goal, entry), share) for goal, entry, share, _ in taken}
        assert len(taken) == len(moved)
        assert all(share <= -received * most // 100 for _, _, share, received in taken)
