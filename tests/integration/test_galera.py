"""A MariaDB Galera cluster (scripts/galera_local.sh: three nodes on loopback; `make test-galera`
runs this file with the concurrency tests, whose two app instances then sit on two nodes).

Galera's row locks are not cluster-wide: two nodes can each pass the same conditional UPDATE and
one of them fails at COMMIT with a deadlock error (1213). The wallet retries the whole
transaction (movements.retry_deadlocks), which then sees the other node's commit. Here: a node
killed under traffic: its instance's customers get a clean END, the others carry on, the node
rejoins, and the books are clean on every node."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest
from sqlalchemy import func, select, text

from database import Database
from helpers.wallet.ledger import journal
from models import User
from tests.conftest import DEMO, PIN, TEST_PEPPER
from tests.integration.test_concurrency import fund, local, total_balance, fees_settled
from tests.servers import RESUME_OFFERS, Caller, Gunicorn

NODES = os.environ.get("GALERA_URLS", "").split()
pytestmark = pytest.mark.skipif(len(NODES) < 3, reason="needs a 3-node Galera cluster: apt-get install "
                                "mariadb-server galera-4 rsync, then make test-galera")
CLEAN_ENDS = ("END Sent", "END Insufficient balance", "END Service unavailable", "END This session has ended",
              "END Huduma")


def node_pid(n: int) -> int:
    with open(os.environ[f"GALERA_NODE_{n}_PIDFILE"]) as pidfile:
        return int(pidfile.read().strip())


_RESTARTED: list[subprocess.Popen] = []  # nodes restarted here: scripts/galera_local.sh stops them


def restart_node(n: int) -> subprocess.Popen:
    command = os.environ[f"GALERA_NODE_{n}_COMMAND"].split()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # noqa: S603
                               start_new_session=True)
    _RESTARTED.append(process)
    return process


def synced(url: str) -> bool:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            return conn.execute(text("SHOW STATUS LIKE 'wsrep_local_state_comment'")).one()[1] == "Synced"
    except Exception:  # noqa: BLE001 - not up yet
        return False
    finally:
        db.dispose()


def test_a_node_killed_under_traffic(wallet, tmp_path):
    """Instances on nodes 2 and 3 carry sends; node 2 is killed: its customers get a clean END
    (never a 500, never a success that did not commit), node 3's carry on; node 2 rejoins and the
    books are clean, and the same, on every node."""
    servers = [Gunicorn(NODES[n], TEST_PEPPER, log_path=tmp_path / f"gunicorn-node{n + 1}.log") for n in (1, 2)]
    callers = [Caller(server.url) for server in servers]
    phones = [f"+25470030000{n}" for n in range(6)]
    try:
        for phone in phones:
            fund(wallet, callers[1:], phone, 50_000)
        total0, fees0 = total_balance(wallet), fees_settled(wallet)
        stop = time.monotonic() + 8
        seen: dict[int, list[str]] = {0: [], 1: []}
        statuses: list[int] = []
        lock = threading.Lock()

        def traffic(n: int) -> None:
            caller, i = callers[n % 2], 0
            while time.monotonic() < stop:
                i += 1
                sender, recipient = random.sample(phones, 2)
                inputs = ["1", local(recipient), "1000", "1", PIN]
                reply, prefix = "", []
                try:
                    for depth in range(len(inputs) + 1):
                        status, reply = caller.post(f"galera-{n}-{i}", sender, "*".join(prefix + inputs[:depth]),
                                                    timeout=15)
                        with lock:
                            statuses.append(status)
                        if depth == 0 and reply.startswith(RESUME_OFFERS):  # a session the kill cut off:
                            prefix = ["2"]  # start over (tests/servers.py Caller.walk does the same)
                            status, reply = caller.post(f"galera-{n}-{i}", sender, "2", timeout=15)
                        if reply.startswith("END"):
                            break
                except Exception:  # noqa: BLE001, S112 - the instance's pool reconnects; count what answered
                    continue
                with lock:
                    seen[n % 2].append(reply)

        threads = [threading.Thread(target=traffic, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        os.kill(node_pid(2), signal.SIGKILL)  # node 2 dies under traffic
        for thread in threads:
            thread.join(30)
        assert 500 not in statuses
        ends = [reply for replies in seen.values() for reply in replies if reply.startswith("END")]
        assert ends and all(reply.startswith(CLEAN_ENDS) for reply in ends), {r[:40] for r in ends}
        assert sum(r.startswith("END Sent") for r in seen[1]) > 0  # node 3's customers carried on
        assert any(r.startswith("END Service unavailable") for r in seen[0])  # node 2's got a clean END
        restarted = restart_node(2)
        deadline = time.monotonic() + 120
        while not synced(NODES[1]) and time.monotonic() < deadline:
            time.sleep(1)
        assert synced(NODES[1]), "node 2 did not rejoin the cluster"
        moved = total_balance(wallet) + (fees_settled(wallet) - fees0) - total0
        assert moved == 0  # sends only move sats between customers
        sums = []
        for url in NODES:
            db = Database(url)
            try:
                with db.read() as s:
                    assert journal.check(s) == []
                    sums.append(int(s.scalar(select(func.sum(User.balance_sats)))))
            finally:
                db.dispose()
        assert len(set(sums)) == 1, sums  # every node holds the same books
        print(f"\nFIGURES galera node kill: {len(statuses)} requests, {len(ends)} sessions ended, "
              f"sent on node 3 {sum(r.startswith('END Sent') for r in seen[1])}, "
              f"unavailable on node 2 {sum(r.startswith('END Service unavailable') for r in seen[0])}")
        assert restarted.poll() is None
    finally:
        for server in servers:
            server.stop()
        _ensure_node_running(2)  # the tests after this one need the whole cluster


def _ensure_node_running(n: int) -> None:
    try:
        os.kill(node_pid(n), 0)
        alive = True
    except (OSError, ValueError):
        alive = False
    if not alive:
        restart_node(n)
    deadline = time.monotonic() + 120
    while not synced(NODES[n - 1]) and time.monotonic() < deadline:
        time.sleep(1)


def test_a_demo_customer_balance_is_the_same_on_every_node(wallet):
    """The schema and the demo users, written through node 1, are on the others."""
    for url in NODES:
        db = Database(url)
        try:
            with db.read() as s:
                assert s.scalar(select(User.balance_sats).where(User.phone == DEMO[0])) is not None
        finally:
            db.dispose()
