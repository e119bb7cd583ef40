"""Background work as leased jobs (helpers/web/worker.py): the sweep finds pending items, one
worker at a time holds each, a dead worker's lease expires and the job is taken again, a pending
item is asked about less and less often, and web workers in production start no thread."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select, text

from helpers.wallet.customers import users
from helpers.wallet.payouts import lightning_out
from helpers.web import worker
from lightning import MockBackend, PaymentResult, State, StatusResult
from models import Invoice, Job, Transaction
from tests.conftest import DEMO, PIN, balance, configure


def jobs(wallet) -> dict[tuple[str, str], Job]:
    with wallet.db.read() as s:
        return {(job.kind, job.key): job for job in s.scalars(select(Job))}


def pending_invoice(alice, wallet, amount: int = 2000) -> Invoice:
    alice.run("2", str(amount))
    with wallet.db.read() as s:
        return s.scalar(select(Invoice).order_by(Invoice.id.desc()))


def test_the_sweep_gives_each_pending_item_one_job(alice, wallet):
    invoice = pending_invoice(alice, wallet)
    assert worker.sweep(wallet) == 1
    assert worker.sweep(wallet) == 0  # already has one
    job = jobs(wallet)[(worker.INVOICE, invoice.payment_hash)]
    assert job.done_at is None and job.due_at > job.created_at  # asked about soon, not at once


def test_a_claimed_job_is_held_by_one_worker_until_its_lease_ends(alice, wallet):
    invoice = pending_invoice(alice, wallet)
    worker.sweep(wallet)
    with wallet.db.write() as s:
        s.execute(text("UPDATE jobs SET due_at = :past"), {"past": dt.datetime(2026, 1, 1)})
    first = worker.claim(wallet, "worker-a")
    assert [(job.kind, job.key) for job in first] == [(worker.INVOICE, invoice.payment_hash)]
    assert worker.claim(wallet, "worker-b") == []  # held
    with wallet.db.write() as s:  # worker-a dies: its lease runs out
        s.execute(text("UPDATE jobs SET lease_until = :past"), {"past": dt.datetime(2026, 1, 1)})
    again = worker.claim(wallet, "worker-b")
    assert [job.key for job in again] == [invoice.payment_hash] and again[0].attempts == 2
    worker.run_one(wallet, first[0], "worker-a")  # the dead worker's late release changes nothing
    assert jobs(wallet)[(worker.INVOICE, invoice.payment_hash)].leased_by == "worker-b"


def test_a_paid_invoice_is_credited_by_the_worker_once(alice, wallet):
    invoice = pending_invoice(alice, wallet, 3000)
    before = balance(wallet, DEMO[0])
    wallet.lightning.simulate_payment(invoice.payment_hash)
    worker.sweep(wallet)
    with wallet.db.write() as s:
        s.execute(text("UPDATE jobs SET due_at = :past"), {"past": dt.datetime(2026, 1, 1)})
    (job,) = worker.claim(wallet, "w")
    worker.run_one(wallet, job, "w")
    worker.run_one(wallet, job, "w")  # twice (a retried job): credited once
    assert balance(wallet, DEMO[0]) == before + 3000
    assert jobs(wallet)[(worker.INVOICE, invoice.payment_hash)].done_at is not None


class SlowNode(MockBackend):
    """A node that keeps a payment in flight."""

    def pay_invoice(self, bolt11, max_fee_sat):
        from lightning import decode_invoice

        return PaymentResult(State.PENDING, decode_invoice(bolt11).payment_hash, error="in flight")

    def payment_status(self, payment_hash):
        return StatusResult(State.PENDING)


def test_a_pending_payment_is_asked_about_less_and_less_often(wallet):
    payee = MockBackend(seed="payee")
    alice = users.UserView.of(users.get(wallet.db.session, DEMO[0]))
    bolt11 = payee.create_invoice(1500, "x", 600).bolt11
    from lightning import decode_invoice

    receipt = lightning_out.reserve_lightning(wallet.db, wallet.rail("lightning"), wallet.policy, alice, 1500, 10,
                                              (1, 10**6),
                                              decode_invoice(bolt11).payment_hash, "x@y.z", "k" * 64)
    wallet.lightning = SlowNode()
    worker.sweep(wallet)
    delays = []
    for _ in range(4):
        with wallet.db.write() as s:
            s.execute(text("UPDATE jobs SET due_at = :past"), {"past": dt.datetime(2026, 1, 1)})
        (job,) = worker.claim(wallet, "w")
        worker.run_one(wallet, job, "w")
        row = jobs(wallet)[(worker.PAYOUT, receipt.reference)]
        delays.append(round((row.due_at - dt.datetime.now(dt.UTC).replace(tzinfo=None)).total_seconds()))
    base = wallet.settings.invoice_poll_s or 5
    assert all(abs(after - worker.backoff(n, base)) <= 1 for n, after in enumerate(delays, start=1)), delays
    assert delays[0] < delays[1] < delays[2] < delays[3]
    with wallet.db.read() as s:
        assert s.get(Transaction, receipt.transaction_id).status == "pending"  # never guessed
    wallet.lightning = MockBackend()
    lightning_out.refund_lightning(wallet.db, wallet.rail("lightning"), receipt.transaction_id)  # leave clean books


def test_worker_once_from_the_command_line(alice, wallet, runner):
    invoice = pending_invoice(alice, wallet, 2500)
    wallet.lightning.simulate_payment(invoice.payment_hash)
    before = balance(wallet, DEMO[0])
    worker.sweep(wallet)
    with wallet.db.write() as s:
        s.execute(text("UPDATE jobs SET due_at = :past"), {"past": dt.datetime(2026, 1, 1)})
    result = runner.invoke(args=["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert balance(wallet, DEMO[0]) == before + 2500
    assert {key for kind, key in jobs(wallet) if kind == worker.EVERY} >= {"sweep", "sms", "cleanup"}


def test_web_workers_start_no_background_thread_in_production_settings(app, client, wallet):
    configure(app, worker_in_process=False, sms_auto_flush=True, invoice_poll_s=15)
    before = {thread.name for thread in threading.enumerate()}
    from tests.conftest import Dialer

    phone = Dialer(client, DEMO[0])
    phone.run(PIN, PIN)
    phone.run("1", "0" + DEMO[1][4:], "1000", "1", PIN)  # queues two SMS
    started = {thread.name for thread in threading.enumerate()} - before
    assert not started & {"jobs", "sms-outbox"}, started


def test_the_embedded_default_runs_the_worker_in_the_server(tmp_path, seeded_sqlite):
    import shutil

    from app import create_app
    from tests.conftest import TEST_PEPPER

    shutil.copyfile(seeded_sqlite, tmp_path / "w.db")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/w.db", "AUTO_CREATE_SCHEMA": False,
                      "PIN_PEPPER": TEST_PEPPER, "INVOICE_POLL_S": 1, "WRITE_BEHIND_S": 0})
    try:
        assert app.extensions["wallet"].settings.worker_in_process
        app.test_client().get("/health")
        assert "jobs" in {thread.name for thread in threading.enumerate()}
    finally:
        worker.stop_in_process()
        app.extensions["request_counter"].close()
        app.extensions["wallet"].openings.close()
        app.extensions["wallet"].db.dispose()
