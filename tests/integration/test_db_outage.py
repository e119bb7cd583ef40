"""A database that stops and restarts under traffic: no 500, a clear END while it is away,
normal service after, nothing lost. Needs the MariaDB that scripts/mariadb_local.sh starts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import requests

from helpers.infra.i18n import t
from tests.conftest import DEMO, PIN
from tests.servers import Caller
from tests.integration.test_concurrency import assert_books_balance, fees_settled, fund, local, total_balance

PIDFILE = os.environ.get("TEST_MARIADB_PIDFILE")
COMMAND = os.environ.get("TEST_MARIADB_COMMAND")

pytestmark = pytest.mark.skipif(
    not (PIDFILE and COMMAND),
    reason="needs a MariaDB this run may stop and start: apt-get install mariadb-server, then make test "
           "(its MariaDB run starts one with scripts/mariadb_local.sh); SQLite is embedded",
)


def _stop_database() -> None:
    with open(PIDFILE) as handle:
        pid = int(handle.read().strip())
    os.kill(pid, signal.SIGTERM)
    for _ in range(120):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("MariaDB did not stop")


def _start_database() -> None:
    # bash backgrounds the server and exits, so no Popen is left to track it; the pid file
    # tells scripts/mariadb_local.sh what to stop at the end.
    subprocess.run(["bash", "-c", f"{COMMAND} >/dev/null 2>&1 &"], check=True)  # noqa: S603, S607


def test_database_stops_and_restarts_during_traffic(wallet, servers):
    url = servers[0].url
    callers = [Caller(url)]
    phone = "+254700300001"
    fund(wallet, callers, phone, 200_000)
    total0, fees0 = total_balance(wallet), fees_settled(wallet)
    unavailable = "END " + t("en", "error.unavailable") + "\n" + t("sw", "error.unavailable")
    phase = {"name": "before"}
    seen: dict[str, dict[str, int]] = {p: {"requests": 0, "sent": 0, "unavailable": 0, "other": 0, "5xx": 0}
                                       for p in ("before", "outage", "after")}
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(n: int) -> None:
        caller = Caller(url)
        i = 0
        while not stop.is_set():
            i += 1
            inputs = ["1", local(DEMO[1]), "1000", "1", PIN]
            for depth in range(len(inputs) + 1):
                current = phase["name"]
                status, reply = caller.post(f"outage-{n}-{i}", phone, "*".join(inputs[:depth]), timeout=20)
                with lock:
                    counts = seen[current]
                    counts["requests"] += 1
                    counts["5xx"] += status >= 500
                    assert reply[:4] in ("CON ", "END "), reply
                    if reply == unavailable:
                        counts["unavailable"] += 1
                    elif reply.startswith("END Sent"):
                        counts["sent"] += 1
                if reply.startswith("END"):
                    break

    threads = [threading.Thread(target=traffic, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    phase["name"] = "outage"
    _stop_database()
    time.sleep(2)
    status_during = requests.get(url + "/status", timeout=20)
    ready_during = requests.get(url + "/ready", timeout=20)  # the load balancer's probe
    health_during = requests.get(url + "/health", timeout=20)  # liveness: the process still answers
    _start_database()
    deadline = time.monotonic() + 60
    while requests.get(url + "/status", timeout=20).status_code != 200:
        assert time.monotonic() < deadline, "service did not come back"
        time.sleep(0.2)
    phase["name"] = "after"
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join()
    print(f"\nFIGURES database outage: {seen}; /status during outage {status_during.status_code}")
    assert all(counts["5xx"] == 0 for counts in seen.values())
    assert status_during.status_code == 503 and status_during.json()["status"] == "degraded"
    assert ready_during.status_code == 503 and ready_during.json()["database"] is False
    assert health_during.status_code == 200
    assert seen["outage"]["unavailable"] > 0
    assert seen["after"]["sent"] > 0
    assert total_balance(wallet) + fees_settled(wallet) - fees0 == total0
    assert_books_balance(wallet)
