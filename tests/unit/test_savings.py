"""Issue 35, savings goals: sats moved into a goal leave the spendable balance, cannot be sent
before the goal's date, come back once at maturity (the worker, with an SMS), or early where the
policy allows for its fee; every move is one journal entry between the customer's and the goal's
accounts, and the ledger check proves each goal's balance."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from helpers.infra.i18n import t
from helpers.wallet import use_cases
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import GoalClosed, InsufficientBalance, PolicyDenied
from helpers.wallet.ledger import journal, movements
from helpers.wallet.ledger.savings_tables import GOAL_BROKEN, GOAL_MATURED, SavingsGoal
from helpers.wallet.reports import books
from helpers.wallet.savings import autosave, goals
from helpers.web import worker
from models import FEES, SAVINGS, Transaction, utcnow
from tests.conftest import DEMO, PIN, balance, outbox

ALICE, BOB = DEMO[0], DEMO[1]


def view(wallet, phone: str) -> UserView:
    with wallet.db.read() as s:
        return UserView.of(users.get(s, phone))


def lock_date(days: int = 30) -> dt.datetime:
    return (utcnow() + dt.timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


def a_goal(wallet, phone: str = ALICE, days: int = 30, key: str = "open-1") -> goals.GoalView:
    return goals.open_goal(wallet.db, wallet.policy, view(wallet, phone), "Bike", lock_date(days), key,
                           target_kes=5000)


def save(wallet, goal_id: int, amount: int, key: str = "in-1", phone: str = ALICE):
    return goals.move_in(wallet.db, wallet.policy, view(wallet, phone), goal_id, amount, key)


def goal_row(wallet, goal_id: int) -> SavingsGoal:
    with wallet.db.read() as s:
        row = s.get_one(SavingsGoal, goal_id)
        s.expunge(row)
        return row


def entries(wallet, kind: str) -> list[Transaction]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Transaction).where(Transaction.kind == kind)))


def at(monkeypatch, moment: dt.datetime) -> None:
    """Move the clock of the module that decides on a goal's lock."""
    monkeypatch.setattr(goals, "utcnow", lambda: moment)


def test_sats_moved_in_leave_the_balance_for_the_goal(wallet, alice):
    before = balance(wallet, ALICE)
    goal = a_goal(wallet)
    receipt = save(wallet, goal.id, 2000)
    assert balance(wallet, ALICE) == before - 2000 == receipt.balance_sats
    assert goal_row(wallet, goal.id).balance_sats == 2000
    with wallet.db.read() as s:
        assert journal.balances(s)[SAVINGS] == -2000  # the house account holds every goal's sats
        assert journal.check(s) == []
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.goal-in", amount=2000, name="Bike", saved=2000,
                                          ref=receipt.reference, balance=before - 2000)


def test_a_goals_sats_cannot_be_sent_before_its_date(wallet, alice, monkeypatch):
    goal = a_goal(wallet)
    everything = balance(wallet, ALICE)
    save(wallet, goal.id, everything - wallet.policy.value("payment-min-sats") + 1)
    low = wallet.policy.value("payment-min-sats")
    reply = alice.run("1", "0" + BOB[4:], str(low))
    assert reply.startswith("CON " + t("en", "deny.insufficient-balance", balance=low - 1, min=low, max=low,
                                       unit="sats", limit=low))
    with pytest.raises(InsufficientBalance):  # nor by the wallet itself, whatever a screen says
        movements.transfer(wallet.db, wallet.policy, view(wallet, ALICE), BOB, low, "send-1", "*384*123#")
    assert entries(wallet, "transfer") == []  # nothing could be sent: the goal's sats are not the balance
    at(monkeypatch, goal.lock_until - dt.timedelta(seconds=1))
    assert goals.mature(wallet.db, goal.id) == goals.NOT_DUE  # a second before the date: still locked
    assert goal_row(wallet, goal.id).status == "open" and entries(wallet, "goal-mature") == []


def test_at_its_date_a_goal_comes_back_once_with_an_sms(wallet, alice, monkeypatch):
    goal = a_goal(wallet)
    save(wallet, goal.id, 3000)
    before = balance(wallet, ALICE)
    at(monkeypatch, goal.lock_until)
    assert goals.due(wallet.db, goal.lock_until) == [goal.id]
    assert worker.run_savings(wallet) == (1, 0)
    assert worker.run_savings(wallet) == (0, 0)  # the next run finds nothing due
    assert goals.mature(wallet.db, goal.id) == goals.NOT_DUE  # and a late twin moves nothing
    assert balance(wallet, ALICE) == before + 3000
    row = goal_row(wallet, goal.id)
    assert (row.status, row.balance_sats) == (GOAL_MATURED, 0)
    [back] = entries(wallet, "goal-mature")
    assert back.idempotency_key == goals.mature_key(goal.id)
    assert outbox(wallet, ALICE)[-1] == t("en", "sms.goal-matured", amount=3000, name="Bike", ref=back.reference,
                                          balance=before + 3000)
    with pytest.raises(GoalClosed):  # a matured goal takes no more sats
        save(wallet, goal.id, 1000, key="in-2")


def test_breaking_early_costs_the_policys_fee_and_needs_the_pin(wallet, alice):
    goal = a_goal(wallet)
    save(wallet, goal.id, 10_000)
    before = balance(wallet, ALICE)
    with wallet.db.read() as s:
        fees_before = journal.balances(s)[FEES]
    with pytest.raises(use_cases.PinNotChecked):
        use_cases.break_goal(wallet, view(wallet, ALICE), None, goal.id, "break-1")
    fee = wallet.policy.early_break_fee(10_000)
    assert 0 < fee < 10_000
    receipt = goals.break_early(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, "break-1")
    assert (receipt.amount_sats, receipt.fee_sats) == (10_000 - fee, fee)
    assert balance(wallet, ALICE) == before + 10_000 - fee
    assert goal_row(wallet, goal.id).status == GOAL_BROKEN
    with wallet.db.read() as s:
        assert journal.balances(s)[FEES] == fees_before - fee
    with pytest.raises(GoalClosed):  # broken once: a second break finds it closed
        goals.break_early(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, "break-2")


def test_no_early_break_where_the_policy_allows_none(wallet, alice, monkeypatch):
    goal = a_goal(wallet)
    save(wallet, goal.id, 2000)
    real = wallet.policy.flag
    monkeypatch.setattr(wallet.policy, "flag", lambda name: False if name == "savings-early-break-allowed"
                        else real(name))
    with pytest.raises(PolicyDenied):
        goals.break_early(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, "break-1")
    assert goal_row(wallet, goal.id).balance_sats == 2000


def test_only_the_owner_moves_sats_into_a_goal_and_never_more_than_the_balance(wallet, alice, bob):
    goal = a_goal(wallet)
    with pytest.raises(GoalClosed):
        save(wallet, goal.id, 1000, phone=BOB)
    with pytest.raises(InsufficientBalance):
        save(wallet, goal.id, balance(wallet, ALICE) + 1)
    with pytest.raises(PolicyDenied):
        save(wallet, goal.id, wallet.policy.value("savings-min-sats") - 1)
    assert goal_row(wallet, goal.id).balance_sats == 0


def test_a_replayed_move_moves_once(wallet, alice):
    goal = a_goal(wallet)
    first = save(wallet, goal.id, 1500, key="same")
    again = save(wallet, goal.id, 1500, key="same")
    assert again.replay and again.reference == first.reference
    assert goal_row(wallet, goal.id).balance_sats == 1500


def test_goals_count_as_owed_to_customers_in_the_solvency_report(wallet, alice):
    goal = a_goal(wallet)
    with wallet.db.read() as s:
        owed_before = books.solvency(s, None).liabilities_sats
    save(wallet, goal.id, 4000)
    with wallet.db.read() as s:
        report = books.solvency(s, None)
        assert report.savings_sats == 4000
        assert report.liabilities_sats == owed_before  # moved from the balance to the goal: still owed
        assert books.totals(s)["liabilities_sats"] == report.customers_sats + 4000


def test_the_ledger_check_names_a_goal_whose_balance_is_not_its_postings(wallet, alice):
    goal = a_goal(wallet)
    save(wallet, goal.id, 1000)
    with wallet.db.write() as s:
        s.execute(update(SavingsGoal).where(SavingsGoal.id == goal.id).values(balance_sats=1001))
    with wallet.db.read() as s:
        assert [(p.what, p.subject) for p in journal.check(s)] == [("goal balance", str(goal.id))]
    with wallet.db.write() as s:  # put it back: the check after every test must pass
        s.execute(update(SavingsGoal).where(SavingsGoal.id == goal.id).values(balance_sats=1000))


def test_a_goal_date_must_be_after_today_and_within_the_policy(wallet, alice):
    with pytest.raises(PolicyDenied):
        a_goal(wallet, days=0)
    with pytest.raises(PolicyDenied):
        a_goal(wallet, days=wallet.policy.value("savings-max-lock-days") + 2)
    for n in range(wallet.policy.value("savings-max-goals")):
        a_goal(wallet, key=f"open-{n}")
    with pytest.raises(PolicyDenied):
        a_goal(wallet, key="one-too-many")


def test_by_ussd_a_goal_is_opened_filled_and_matures(wallet, alice, monkeypatch):
    assert alice.run("9", "2", "Bike", "1", "5000", "31122030").startswith("END " + t("en", "goal.opened", name="Bike",
                                                                                   date="31/12/2030")[:20])
    before = balance(wallet, ALICE)
    assert alice.run("9", "1", "1", "1", "2500", PIN).startswith("END 2,500 sats moved into Bike")
    assert balance(wallet, ALICE) == before - 2500
    [goal] = goals.open_goals(wallet.db, view(wallet, ALICE).id)
    assert (goal.balance_sats, goal.target_kes, goal.matures_on) == (2500, 5000, dt.date(2030, 12, 31))
    at(monkeypatch, goal.lock_until)
    assert worker.run_savings(wallet) == (1, 0)
    assert balance(wallet, ALICE) == before


def test_auto_save_takes_a_share_of_each_later_receipt_once(wallet, alice, bob):
    goal = a_goal(wallet)
    early = wallet.policy.value("payment-min-sats") * 4
    movements.transfer(wallet.db, wallet.policy, view(wallet, BOB), ALICE, early, "before", "*384*123#")
    percent = wallet.policy.value("savings-autosave-max-pct") // 5
    with pytest.raises(use_cases.PinNotChecked):
        use_cases.set_autosave(wallet, view(wallet, ALICE), None, goal.id, percent)
    assert autosave.switch(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, percent)
    with pytest.raises(PolicyDenied):
        autosave.switch(wallet.db, wallet.policy, view(wallet, ALICE), goal.id,
                        wallet.policy.value("savings-autosave-max-pct") + 1)
    received = wallet.policy.value("payment-min-sats") * 10
    movements.transfer(wallet.db, wallet.policy, view(wallet, BOB), ALICE, received, "after", "*384*123#")
    before = balance(wallet, ALICE)
    worker.run_savings(wallet)
    worker.run_savings(wallet)  # the next run: nothing more
    share = received * percent // 100
    assert goal_row(wallet, goal.id).balance_sats == share  # the receipt before the switch is not counted
    assert balance(wallet, ALICE) == before - share
    assert [e.amount_sats for e in entries(wallet, "goal-autosave")] == [share]


def test_by_ussd_auto_save_is_switched_on_behind_the_pin(wallet, alice):
    goal = a_goal(wallet)
    percent = wallet.policy.value("savings-autosave-max-pct")
    assert alice.run("9", "1", "1", "3", str(percent + 1)).startswith("CON " + t("en", "deny.autosave-max", max=percent,
                                                                                  min=0, unit="sats", balance=0,
                                                                                  limit=0))
    assert alice.run("9", "1", "1", "3", str(percent), PIN) == "END " + t("en", "goal.autosave-done", name="Bike",
                                                                            pct=percent)
    assert goal_row(wallet, goal.id).autosave_bps == percent * 100


def test_auto_save_takes_a_receipt_that_commits_after_a_later_one_was_swept(wallet, alice, bob, monkeypatch):
    """Ids are handed out at insert, not at commit: a receipt (a paid request, say) may commit after
    a receipt with a higher id was already swept. A high-water mark of swept ids skipped it for good;
    each receipt is considered once, in whatever order it appears."""
    goal = a_goal(wallet)
    percent = wallet.policy.value("savings-autosave-max-pct") // 5
    assert autosave.switch(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, percent)
    late, early = (wallet.policy.value("payment-min-sats") * n for n in (10, 20))
    alice.run("3", "0" + BOB[4:], str(late))  # Alice asks Bob for sats; he pays: the lower id
    bob.run("7", "1", "1", PIN)
    movements.transfer(wallet.db, wallet.policy, view(wallet, BOB), ALICE, early, "early", "*384*123#")
    with monkeypatch.context() as hidden:  # the paid request is not committed yet: the sweep cannot see it
        hidden.setattr(autosave, "RECEIPT_KINDS", ("transfer",))
        worker.run_savings(wallet)
    worker.run_savings(wallet)  # ... and now it is
    worker.run_savings(wallet)  # and again: nothing more
    shares = sorted(amount * percent // 100 for amount in (late, early))
    assert sorted(e.amount_sats for e in entries(wallet, "goal-autosave")) == shares
    assert goal_row(wallet, goal.id).balance_sats == sum(shares)


def test_auto_save_considers_a_share_it_could_not_take_once(wallet, alice, bob):
    """A share the balance did not cover when the sweep saw it is not taken later either."""
    goal = a_goal(wallet)
    percent = wallet.policy.value("savings-autosave-max-pct")
    assert autosave.switch(wallet.db, wallet.policy, view(wallet, ALICE), goal.id, percent)
    received = wallet.policy.value("payment-min-sats") * 10
    movements.transfer(wallet.db, wallet.policy, view(wallet, BOB), ALICE, received, "in", "*384*123#")
    spent = balance(wallet, ALICE) - 1  # spent before the sweep: the share is not covered
    movements.transfer(wallet.db, wallet.policy, view(wallet, ALICE), BOB, spent - wallet.policy.fee_sats(
        "internal", spent), "out", "*384*123#")
    worker.run_savings(wallet)
    movements.transfer(wallet.db, wallet.policy, view(wallet, BOB), ALICE, received, "in-2", "*384*123#")
    worker.run_savings(wallet)
    assert [e.amount_sats for e in entries(wallet, "goal-autosave")] == [received * percent // 100]
