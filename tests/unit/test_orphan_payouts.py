"""Issue 31, 2: a payout in KES reserved without its M-Pesa request (left by older code, which wrote
the request in a second transaction, or by a provider that answers at once when the process died
between the reservation and its answer) is listed for operators, refunded by the worker once it is
older than any request can run, and can be refunded by an operator by its reference."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from helpers.infra.i18n import t
from helpers.wallet import mpesa_flows
from helpers.web import worker
from models import Job, Transaction, utcnow
from tests.conftest import KES_MIN, PIN, balance, outbox, snapshot
from tests.unit.test_console import operator, sign_in  # noqa: F401 - a fixture and a helper
from tests.unit.test_frozen_payouts import audited, killed_after_the_reservation, the_payout


def test_a_reservation_without_its_request_is_listed_then_refunded_once_by_the_worker(
        dial, wallet, client, operator, runner, monkeypatch):  # noqa: F811
    """Left by a provider that answers at once (simulated) when the process died between the
    reservation and its answer, or by older code: the console lists it, the operator cannot call
    it paid (M-Pesa was never asked), and the worker refunds it once it is older than any request."""
    phone = dial("+254712345678")
    phone.run(PIN, PIN)
    monkeypatch.setattr(mpesa_flows, "pay_out", killed_after_the_reservation)
    before = balance(wallet, phone.phone)
    assert phone.run("5", str(KES_MIN), "1", PIN).startswith("END " + t("en", "error.unavailable"))
    row = the_payout(wallet)
    assert [o.reference for o in mpesa_flows.orphans(wallet.db)] == [row.reference]
    sign_in(client)
    assert row.reference in client.get("/admin/pending").get_data(as_text=True)
    paid = runner.invoke(args=["resolve-mpesa", row.reference, "--outcome", "paid", "--receipt", "QWE1234567",
                               "--reason", "t1"])
    assert paid.exit_code == 1 and "never asked" in paid.output
    worker.sweep(wallet)
    with wallet.db.read() as s:  # too young: a request may still be answering it
        assert s.scalar(select(Job.id).where(Job.kind == worker.ORPHAN)) is None
    with wallet.db.write() as s:
        s.execute(Transaction.__table__.update().where(Transaction.id == row.id).values(
            created_at=utcnow() - dt.timedelta(seconds=mpesa_flows.ORPHAN_AFTER_S + 1)))
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


def test_an_operator_refunds_a_reservation_without_request_by_its_reference(dial, wallet, runner, monkeypatch):
    phone = dial("+254712345678")
    phone.run(PIN, PIN)
    monkeypatch.setattr(mpesa_flows, "pay_out", killed_after_the_reservation)
    before = balance(wallet, phone.phone)
    phone.run("5", str(KES_MIN), "1", PIN)
    row = the_payout(wallet)
    done = runner.invoke(args=["resolve-mpesa", row.reference, "--outcome", "failed", "--reason", "ticket 3"])
    assert done.exit_code == 0, done.output
    assert balance(wallet, phone.phone) == before
    assert [(a.subject, a.reason) for a in audited(wallet, "resolve-mpesa")] == [(row.reference, "ticket 3")]
    again = runner.invoke(args=["resolve-mpesa", row.reference, "--outcome", "failed", "--reason", "twice"])
    assert again.exit_code == 1 and balance(wallet, phone.phone) == before
