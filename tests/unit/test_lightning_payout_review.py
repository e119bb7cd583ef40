"""What review of the Lightning payments' move onto the payouts table found, each pinned: the
generic `flask resolve` sends them to `resolve-payment` (the node asked twice, a hash the node may
still pay kept taken); a payment the node left in flight is `sent`, not `reserved`; only the node's
own confirmed failure frees a hash; a route that cost more than the limit is booked, the excess the
wallet's; a worker's `payment` job from before runs as the payout's job."""

from __future__ import annotations

import logging

from sqlalchemy import select

from helpers.wallet.payouts import lightning_out, payments
from helpers.wallet.payouts import machine
from helpers.web import worker
from lightning import State, StatusResult
from models import ADJUSTMENTS, LIGHTNING_RAIL, SENT, LedgerAccount, Payout
from tests.conftest import DEMO, balance
from tests.unit.test_break_attempts import (  # noqa: F401 - fixtures
    AMOUNT, in_flight, pay, reusing_payee, sends)


def payout_of(wallet, transaction_id: int) -> Payout:
    with wallet.db.read() as s:
        return s.scalars(select(Payout).where(Payout.transaction_id == transaction_id)).one()


def test_the_generic_resolve_sends_lightning_payments_to_resolve_payment(insecure, reusing_payee, alice,  # noqa: F811
                                                                          runner, monkeypatch):
    wallet = insecure
    in_flight(wallet, monkeypatch)
    pay(alice, reusing_payee)
    row = sends(wallet)[0]
    said = runner.invoke(args=["resolve", row.reference, "--outcome", "failed", "--reason", "T-6"])
    assert said.exit_code != 0 and "resolve-payment" in said.output
    payout = payout_of(wallet, row.id)
    assert payout.state == SENT and payout.rail_key == row.payment_hash  # a payment the node was asked about
    lightning_out.refund_lightning(wallet.db, wallet.rail(LIGHTNING_RAIL), row.id, invoice_paid=True)  # clean books


def _reserved(wallet, key: str):
    from helpers.wallet.customers import users
    from lightning import MockBackend

    alice = users.UserView.of(users.get(wallet.db.session, DEMO[0]))
    invoice = MockBackend(seed=key).create_invoice(2_000, "x", 600)
    return lightning_out.reserve_lightning(wallet.db, wallet.rail(LIGHTNING_RAIL), wallet.policy, alice, 2_000, 10,
                                           (1, 10**9), invoice.payment_hash, "x@y", key, invoice.bolt11), invoice


def test_an_operator_refund_keeps_the_hash_and_the_node_s_confirmed_failure_frees_it(wallet, monkeypatch):
    rail = wallet.rail(LIGHTNING_RAIL)
    (first, one), (second, two) = _reserved(wallet, "ln-a"), _reserved(wallet, "ln-b")
    assert lightning_out.refund_lightning(wallet.db, rail, first.transaction_id, note="operator: T-7",
                                          invoice_paid=True)
    assert payout_of(wallet, first.transaction_id).rail_key == one.payment_hash  # the node may still pay it
    monkeypatch.setattr(wallet.lightning, "payment_status", lambda payment_hash: StatusResult(State.FAILED))
    assert payments.reconcile(wallet)["refunded"] == 1
    freed = payout_of(wallet, second.transaction_id)
    assert (freed.rail_key, freed.rail_ref) == (None, two.payment_hash)  # said failed twice: may be paid again


def test_a_route_costing_more_than_the_limit_is_booked_and_the_excess_is_the_wallet_s(wallet, caplog):
    rail = wallet.rail(LIGHTNING_RAIL)
    with wallet.db.read() as s:
        adjustments = s.get_one(LedgerAccount, ADJUSTMENTS).balance_sats
    a0 = balance(wallet, DEMO[0])
    receipt, _invoice = _reserved(wallet, "ln-over")
    caplog.set_level(logging.ERROR)
    settled = lightning_out.settle_lightning(wallet.db, rail, receipt.transaction_id, 25)
    assert settled is not None and settled.fee_sats == 10 and balance(wallet, DEMO[0]) == a0 - 2_010
    assert "the wallet absorbs 15" in caplog.text
    with wallet.db.read() as s:
        assert s.get_one(LedgerAccount, ADJUSTMENTS).balance_sats == adjustments + 15


def test_an_old_payment_job_runs_as_its_payout_s_job(insecure, reusing_payee, alice, monkeypatch):  # noqa: F811
    wallet = insecure
    in_flight(wallet, monkeypatch)
    pay(alice, reusing_payee)
    row = sends(wallet)[0]
    handle = worker.HANDLERS[worker.PAYMENT]
    assert handle(wallet, str(row.id)) is False  # the node: still in flight
    monkeypatch.setattr(wallet.lightning, "payment_status",
                        lambda payment_hash: StatusResult(State.SUCCEEDED, fee_sat=1))
    assert handle(wallet, str(row.id)) is True
    assert payout_of(wallet, row.id).state == "posted" and machine.find(wallet.db, row.reference) is not None
    assert handle(wallet, "999999") is True  # no such payment: nothing to do



