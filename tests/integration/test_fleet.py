"""The fleet shape: two web instances and two `flask worker` processes on one database, the node a
fake LND that counts how often each payment is asked about and notices two asks at once.
500 payments out are pending; the workers settle every one, each asked about by one worker at a
time; one worker is SIGKILLed mid-run and the other finishes its jobs once their lease ends;
nothing is settled twice and the books are clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from helpers.wallet.customers import users
from helpers.wallet.ledger import journal, movements
from helpers.wallet.payouts import lightning_out
from lightning import MockBackend, decode_invoice
from models import Transaction, User
from tests.conftest import TEST_PEPPER
from tests.fakes import fake_lnd
from tests.servers import ROOT, Gunicorn

PAYMENTS = 500
LEASE_S = 4


def start_worker(database_url: str, node_url: str, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTNING_", "MPESA_", "LND_"))}
    env.update({"DATABASE_URL": database_url, "PIN_PEPPER": TEST_PEPPER, "LIGHTNING_BACKEND": "lnd",
                "LND_URL": node_url, "LND_MACAROON": fake_lnd.MACAROON, "WORKER_IN_PROCESS": "0",
                "AUTO_CREATE_SCHEMA": "0", "DEMO_MODE": "0", "INVOICE_POLL_S": "1", "WORKER_LEASE_S": str(LEASE_S),
                "SMS_AUTO_FLUSH": "0", "LOG_LEVEL": "WARNING"})
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,  # noqa: S603
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_two_workers_settle_500_payments_each_once_one_killed_midway(wallet, tmp_path):
    node = fake_lnd.FakeLnd()
    payee = MockBackend(seed="fleet payee")
    with wallet.db.write() as s:
        payer_ids = []
        for n in range(10):
            user, _ = users.get_or_create(s, f"+2547009000{n:02d}", "en", "*384*123#")
            user.tier = wallet.policy.value("top-tier")  # the payments, not a tier's caps (issue 34)
            s.flush()
            movements.credit_adjustment(s, user.id, 200_000, "fleet test", key=f"fleet:{n}")
            payer_ids.append(user.id)
    ids = []
    for n in range(PAYMENTS):
        with wallet.db.read() as s:
            payer = users.UserView.of(s.get(User, payer_ids[n % 10]))
        bolt11 = payee.create_invoice(1000, f"fleet {n}", 3600).bolt11
        payment_hash = decode_invoice(bolt11).payment_hash
        node.payments[payment_hash] = "succeed"
        node.in_flight_answers[payment_hash] = 1  # asked once in flight, then done
        receipt = lightning_out.reserve_lightning(wallet.db, wallet.rail("lightning"), wallet.policy, payer, 1000, 10,
                                                  (1, 10**6),
                                                  payment_hash, "fleet@shop.example", f"fleet-pay-{n}")
        ids.append(receipt.transaction_id)
    node.track_delay_s = 0.005
    url = wallet.db.url
    webs = [Gunicorn(url, TEST_PEPPER, workers=1, log_path=tmp_path / f"web{n}.log") for n in range(2)]
    logs = [open(tmp_path / f"worker{n}.log", "wb") for n in range(2)]  # noqa: SIM115 - closed below
    workers = [start_worker(url, node.url, log) for log in logs]
    started = time.monotonic()
    try:
        time.sleep(4)  # both are at work
        os.killpg(workers[0].pid, signal.SIGKILL)  # one dies mid-job, its leases held
        workers[0].wait(10)

        def pending() -> int:
            with wallet.db.read() as s:
                return int(s.scalar(select(func.count()).select_from(Transaction).where(
                    Transaction.id.in_(ids), Transaction.status == "pending")))

        deadline = time.monotonic() + 180
        while pending() and time.monotonic() < deadline:
            time.sleep(1)
        left, took = pending(), time.monotonic() - started
    finally:
        for process in workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(15)
        for log in logs:
            log.close()
        for web in webs:
            web.stop()
        node.stop()
    calls = sorted(node.tracked.values())
    print(f"\nFIGURES fleet: {PAYMENTS} payments settled in {took:.1f} s by 2 workers (one SIGKILLed at 4 s); "
          f"track calls per payment min {calls[0]} max {calls[-1]}, total {sum(calls)}; overlaps {len(node.overlaps)}")
    assert left == 0, f"{left} payments still pending"
    assert node.overlaps == []  # never two workers asking about one payment at once
    assert node.violations == []
    with wallet.db.read() as s:
        settled = s.scalar(select(func.count()).select_from(Transaction).where(
            Transaction.id.in_(ids), Transaction.status == "settled"))
        posts = s.scalar(select(func.count()).select_from(Transaction).where(
            Transaction.follows_id.in_(ids), Transaction.kind == "lightning-post"))
        assert settled == posts == PAYMENTS  # each once
        assert journal.check(s) == []
    assert set(node.tracked) == {t for t in node.in_flight_answers} and all(c >= 2 for c in calls)
