"""The double-entry journal: each movement is one balanced entry written with it, pending
movements are posted or voided by a second entry, nothing posted can be edited, and the books
prove every balance and report solvency. (Every test's teardown also runs journal.check.)"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from helpers.wallet.customers import users
from helpers.wallet.ledger import journal
from helpers.wallet.payouts import lightning_out
from lightning import MockBackend
from models import (FEES, FLOAT, LN_IN_FLIGHT, MPESA_IN_FLIGHT, NODE, LedgerAccount, Posting,
                    Transaction)
from tests.conftest import refund_withdrawal, reserve_withdrawal, settle_withdrawal
from tests.conftest import balance, DEMO, KES_MIN, PIN, withdraw_terms


def entries(wallet, reference: str) -> list[tuple[str, list[tuple]]]:
    """(kind, [(user_id or account, amount)...]) of the entries under a reference, in order."""
    with wallet.db.read() as s:
        found = []
        for entry in s.scalars(select(Transaction).where(Transaction.reference == reference)
                               .order_by(Transaction.id)):
            legs = [(p.user_id or p.account, p.amount_sats)
                    for p in s.scalars(select(Posting).where(Posting.entry_id == entry.id).order_by(Posting.id))]
            found.append((entry.kind, legs))
        return found


def user_id(wallet, phone: str) -> int:
    with wallet.db.read() as s:
        return users.get(s, phone).id


def house(wallet, code: str) -> int:
    with wallet.db.read() as s:
        return s.get(LedgerAccount, code).balance_sats


def view(wallet, phone: str) -> users.UserView:
    with wallet.db.read() as s:
        return users.UserView.of(users.get(s, phone))


def test_a_send_is_one_entry_from_the_sender_to_the_recipient_and_the_fee(wallet, alice):
    amount = wallet.policy.value("payment-min-sats")
    fee = wallet.policy.fee_sats("internal", amount)
    alice.run("1", "0" + DEMO[1][4:], str(amount), "1", PIN)
    ref = wallet.db.session.scalar(select(Transaction.reference).where(Transaction.type == "send"))
    expected = [(user_id(wallet, DEMO[0]), amount + fee), (user_id(wallet, DEMO[1]), -amount)]
    if fee:
        expected.append((FEES, -fee))
    assert entries(wallet, ref) == [("transfer", expected)]


def test_a_withdrawal_is_pending_in_flight_then_posted_to_the_float_and_the_fee(wallet):
    alice = view(wallet, DEMO[0])
    kes = KES_MIN
    receipt = reserve_withdrawal(wallet, wallet.policy, alice, *withdraw_terms(kes), DEMO[0],
                                              "w-1")
    reserved = receipt.amount_sats + receipt.fee_sats
    assert house(wallet, MPESA_IN_FLIGHT) == -reserved
    assert settle_withdrawal(wallet, receipt, "SAB12CD34E")
    (pending_kind, pending), (posted_kind, posted) = entries(wallet, receipt.reference)
    assert (pending_kind, pending) == ("withdraw-pending", [(alice.id, reserved), (MPESA_IN_FLIGHT, -reserved)])
    legs = [(MPESA_IN_FLIGHT, reserved), (FLOAT, -receipt.amount_sats)] + (
        [(FEES, -receipt.fee_sats)] if receipt.fee_sats else [])
    assert (posted_kind, posted) == ("withdraw-post", legs)
    assert house(wallet, MPESA_IN_FLIGHT) == 0
    with wallet.db.read() as s:  # the posting names the entry it posts
        first, second = s.scalars(select(Transaction).where(Transaction.reference == receipt.reference)
                                  .order_by(Transaction.id)).all()
        assert second.follows_id == first.id


def test_a_failed_withdrawal_is_voided_back_to_the_customer(wallet):
    alice = view(wallet, DEMO[0])
    before = balance(wallet, DEMO[0])
    receipt = reserve_withdrawal(wallet, wallet.policy, alice, *withdraw_terms(KES_MIN),
                                              DEMO[0], "w-2")
    assert refund_withdrawal(wallet, receipt)
    assert not refund_withdrawal(wallet, receipt)  # once
    reserved = receipt.amount_sats + receipt.fee_sats
    assert [kind for kind, _legs in entries(wallet, receipt.reference)] == ["withdraw-pending", "withdraw-void"]
    assert entries(wallet, receipt.reference)[1][1] == [(MPESA_IN_FLIGHT, reserved), (alice.id, -reserved)]
    assert balance(wallet, DEMO[0]) == before and house(wallet, MPESA_IN_FLIGHT) == 0


@pytest.mark.parametrize("fee_paid", [0, 2])
def test_a_lightning_payment_posts_the_real_fee_and_returns_the_unused_limit(wallet, fee_paid):
    alice = view(wallet, DEMO[0])
    amount, max_fee = 2000, 10
    bolt11 = MockBackend(seed="payee").create_invoice(amount, "x", 600)
    receipt = lightning_out.reserve_lightning(wallet.db, wallet.rail("lightning"), wallet.policy, alice, amount,
                                              max_fee, (1, 10**9),
                                              bolt11.payment_hash, "x@y", "ln-1")
    assert house(wallet, LN_IN_FLIGHT) == -(amount + max_fee)
    node_before = house(wallet, NODE)
    lightning_out.settle_lightning(wallet.db, wallet.rail("lightning"), receipt.transaction_id, fee_paid)
    kinds = entries(wallet, receipt.reference)
    assert kinds[1] == ("lightning-post", [(LN_IN_FLIGHT, amount + max_fee), (NODE, -(amount + fee_paid)),
                                           (alice.id, -(max_fee - fee_paid))])
    assert house(wallet, LN_IN_FLIGHT) == 0 and house(wallet, NODE) == node_before - amount - fee_paid


def test_an_unbalanced_entry_is_never_written(wallet):
    with pytest.raises(journal.UnbalancedEntry), wallet.db.write() as s:
        journal.record(s, journal.Entry("adjustment", "BAD", 1, "adjust", "credit", 5),
                       [journal.customer(1, -5), journal.house(FEES, 4)])
    with wallet.db.read() as s:
        assert s.scalar(select(Transaction.id).where(Transaction.reference == "BAD")) is None


@pytest.mark.parametrize("statement", [
    "UPDATE postings SET amount_sats = amount_sats + 1",
    "DELETE FROM postings",
    "UPDATE transactions SET amount_sats = amount_sats + 1",
    "UPDATE transactions SET kind = 'edited'",
    "DELETE FROM transactions",
])
def test_the_database_refuses_to_edit_the_journal(wallet, alice, statement):
    alice.run("1", "0" + DEMO[1][4:], str(wallet.policy.value("payment-min-sats")), "1", PIN)
    with wallet.db.read() as s:
        count = s.scalar(text("SELECT COUNT(*) FROM postings"))
    assert count > 0
    with pytest.raises(DBAPIError, match="append-only|never edited or deleted"), wallet.db.write() as s:
        s.execute(text(statement))
    with wallet.db.read() as s:
        assert s.scalar(text("SELECT COUNT(*) FROM postings")) == count


def test_ledger_check_finds_a_balance_the_journal_does_not_explain(wallet, runner):
    assert runner.invoke(args=["ledger", "check"]).exit_code == 0
    with wallet.db.write() as s:
        s.execute(text("UPDATE users SET balance_sats = balance_sats + 7 WHERE phone = :p"), {"p": DEMO[2]})
    result = runner.invoke(args=["ledger", "check"])
    assert result.exit_code == 1 and f"JOURNAL customer balance {DEMO[2]}" in result.output
    with wallet.db.write() as s:  # leave the books the fixture checks
        s.execute(text("UPDATE users SET balance_sats = balance_sats - 7 WHERE phone = :p"), {"p": DEMO[2]})


def test_solvency_puts_liabilities_against_what_the_node_and_the_float_hold(wallet, runner, app, client):
    alice = view(wallet, DEMO[0])
    kes = KES_MIN
    pending = reserve_withdrawal(wallet, wallet.policy, alice, *withdraw_terms(kes), DEMO[0],
                                              "w-3")
    result = runner.invoke(args=["ledger", "solvency", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    customers = sum(balance(wallet, phone) for phone in DEMO)
    node = wallet.lightning.balance().balance_sat
    assert report["customers_sats"] == customers
    assert report["mpesa_in_flight_sats"] == pending.amount_sats + pending.fee_sats
    assert report["liabilities_sats"] == customers + pending.amount_sats + pending.fee_sats
    assert report["assets_sats"] == node + house(wallet, FLOAT)
    assert report["coverage"] == pytest.approx(report["assets_sats"] / report["liabilities_sats"])
    table = runner.invoke(args=["ledger", "solvency"]).output
    assert f"{report['liabilities_sats']:,}" in table and "coverage" in table
    from tests.conftest import configure

    configure(app, metrics_token="ops-secret")
    assert client.get("/ledger/solvency").status_code == 403
    assert client.get("/ledger/solvency", headers={"Authorization": "Bearer ops-secret"}).json == report
    metrics = client.get("/metrics", headers={"Authorization": "Bearer ops-secret"}).get_data(as_text=True)
    assert f"wallet_coverage_ratio {report['coverage']:.6f}" in metrics
    refund_withdrawal(wallet, pending)


def test_a_statement_lists_the_customers_postings(wallet, alice, runner):
    amount = wallet.policy.value("payment-min-sats")
    fee = wallet.policy.fee_sats("internal", amount)
    alice.run("1", "0" + DEMO[1][4:], str(amount), "1", PIN)
    result = runner.invoke(args=["ledger", "statement", DEMO[0]])
    lines = result.output.strip().splitlines()
    assert lines[0] == "date,kind,reference,amount_sats,counterparty,pending,memo"
    newest = lines[1].split(",")
    assert newest[1] == "transfer" and newest[3] == str(-(amount + fee)) and newest[4] == DEMO[1]
    assert lines[-1].split(",")[1] == "adjustment"  # the demo opening balance, first of all


def test_a_pending_entry_is_marked_until_it_is_posted(wallet):
    alice = view(wallet, DEMO[0])
    pending = reserve_withdrawal(wallet, wallet.policy, alice, *withdraw_terms(KES_MIN),
                                              DEMO[0], "w-4")

    def newest():
        with wallet.db.read() as s:
            line = journal.statement(s, alice.id, limit=1)[0]
        return line.kind, line.pending, line.amount

    assert newest() == ("withdraw-pending", True, -(pending.amount_sats + pending.fee_sats))
    assert settle_withdrawal(wallet, pending, "QK00000001")
    # the post moves the in-flight sats to the float: no customer posting, the pending line is done
    assert newest() == ("withdraw-pending", False, -(pending.amount_sats + pending.fee_sats))


def test_the_simulated_provider_cannot_be_asked_for_the_float(runner):
    result = runner.invoke(args=["ledger", "solvency", "--query-float"])
    assert result.exit_code == 1 and "cannot be asked for the float" in result.output
    assert "never asked" in runner.invoke(args=["ledger", "solvency"]).output
