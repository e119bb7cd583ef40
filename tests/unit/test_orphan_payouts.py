"""Issue 31, 2: a payout in KES must never be left reserved with no way to finish.

- A reservation without its payout row (left by code from before the payout was written in the
  reservation's transaction) is listed for operators, refunded by the worker once it is older than
  any request can run, and can be refunded by an operator by its reference (never called paid:
  M-Pesa was never asked by a row of ours).
- A payout the simulated provider never answered (the process died between the reservation and
  its answer; that provider pays at once and keeps no record) is voided by the worker's payout job
  once no request can still be waiting for it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select

from helpers.infra.i18n import t
from helpers.mpesa import rail as mpesa_rail
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.payouts import machine
from helpers.web import worker
from models import RESERVED, VOIDED, Job, Payout, Transaction, utcnow
from tests.conftest import KES_MIN, PIN, balance, outbox, snapshot
from tests.unit.test_console import operator, sign_in  # noqa: F401 - a fixture and a helper
from tests.unit.test_frozen_payouts import audited, killed_after_the_reservation, the_payout


def _older(wallet, row_id: int, seconds: int) -> None:
    then = utcnow() - dt.timedelta(seconds=seconds + 1)
    with wallet.db.write() as s:
        s.execute(Transaction.__table__.update().where(Transaction.id == row_id).values(created_at=then))
        s.execute(Payout.__table__.update().where(Payout.transaction_id == row_id).values(created_at=then))


def _without_its_payout_row(wallet, row_id: int) -> None:
    """What code from before the payouts table left: the reservation alone."""
    with wallet.db.write() as s:
        s.execute(delete(Payout).where(Payout.transaction_id == row_id))


def test_a_reservation_without_its_payout_row_is_listed_then_refunded_once_by_the_worker(
        dial, wallet, client, operator, runner, monkeypatch):  # noqa: F811
    phone = dial("+254712345678")
    phone.run(PIN, PIN)
    monkeypatch.setattr(machine, "send", killed_after_the_reservation)
    before = balance(wallet, phone.phone)
    assert phone.run("5", str(KES_MIN), "1", PIN).startswith("END " + t("en", "error.unavailable"))
    row = the_payout(wallet)
    _without_its_payout_row(wallet, row.id)
    assert [o.reference for o in mpesa_flows.orphans(wallet.db)] == [row.reference]
    sign_in(client)
    assert row.reference in client.get("/admin/pending").get_data(as_text=True)
    paid = runner.invoke(args=["resolve-mpesa", row.reference, "--outcome", "paid", "--receipt", "QWE1234567",
                               "--reason", "t1"])
    assert paid.exit_code == 1 and "never asked" in paid.output
    worker.sweep(wallet)
    with wallet.db.read() as s:  # too young: a request may still be answering it
        assert s.scalar(select(Job.id).where(Job.kind == worker.ORPHAN)) is None
    _older(wallet, row.id, mpesa_flows.ORPHAN_AFTER_S)
    worker.sweep(wallet)
    with wallet.db.read() as s:
        job = s.scalars(select(Job).where(Job.kind == worker.ORPHAN)).one()
    assert job.key == str(row.id)
    assert worker.HANDLERS[worker.ORPHAN](wallet, job.key) is True
    assert balance(wallet, phone.phone) == before and the_payout(wallet).status == "failed"
    assert t("en", "withdraw.failed", ref=row.reference) in outbox(wallet, phone.phone)
    after = snapshot(wallet)
    assert worker.HANDLERS[worker.ORPHAN](wallet, job.key) is True  # again: nothing
    assert snapshot(wallet) == after and mpesa_flows.orphans(wallet.db) == []


def test_an_operator_refunds_a_reservation_without_its_payout_row_by_its_reference(dial, wallet, runner,
                                                                                   monkeypatch):
    phone = dial("+254712345678")
    phone.run(PIN, PIN)
    monkeypatch.setattr(machine, "send", killed_after_the_reservation)
    before = balance(wallet, phone.phone)
    phone.run("5", str(KES_MIN), "1", PIN)
    row = the_payout(wallet)
    _without_its_payout_row(wallet, row.id)
    done = runner.invoke(args=["resolve-mpesa", row.reference, "--outcome", "failed", "--reason", "ticket 3"])
    assert done.exit_code == 0, done.output
    assert balance(wallet, phone.phone) == before
    assert [(a.subject, a.reason) for a in audited(wallet, "resolve-mpesa")] == [(row.reference, "ticket 3")]
    again = runner.invoke(args=["resolve-mpesa", row.reference, "--outcome", "failed", "--reason", "twice"])
    assert again.exit_code == 1 and balance(wallet, phone.phone) == before


def test_a_payout_the_simulated_provider_never_answered_is_voided_by_the_worker_once(dial, wallet, monkeypatch):
    phone = dial("+254712345678")
    phone.run(PIN, PIN)
    monkeypatch.setattr(machine, "send", killed_after_the_reservation)
    before = balance(wallet, phone.phone)
    phone.run("5", str(KES_MIN), "1", PIN)
    monkeypatch.undo()
    row = the_payout(wallet)
    assert mpesa_flows.orphans(wallet.db) == []  # it has its payout row
    payout = machine.find(wallet.db, row.reference)
    assert payout is not None and payout.state == RESERVED
    assert worker.sweep(wallet) >= 1
    handle = worker.HANDLERS[worker.PAYOUT]
    assert handle(wallet, payout.reference) is False  # young: its answer may still be coming
    assert balance(wallet, phone.phone) < before
    _older(wallet, row.id, mpesa_rail.UNANSWERED_AFTER_S)
    assert handle(wallet, payout.reference) is True
    assert machine.find(wallet.db, row.reference).state == VOIDED and balance(wallet, phone.phone) == before
    assert t("en", "withdraw.failed", ref=row.reference) in outbox(wallet, phone.phone)
    after = snapshot(wallet)
    assert handle(wallet, payout.reference) is True and snapshot(wallet) == after  # once
