"""The worker's heartbeat (helpers/infra/heartbeat.py): the worker loop touches the file, the health
check compose runs (`python -m helpers.infra.heartbeat`) says healthy only while it is fresh."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers.infra import heartbeat
from tests.conftest import configure

ROOT = Path(__file__).resolve().parents[2]


def test_a_fresh_beat_is_healthy_an_old_or_missing_one_is_not(tmp_path):
    path = str(tmp_path / "worker.heartbeat")
    assert not heartbeat.is_fresh(path) and heartbeat.age_s(path) is None
    heartbeat.beat(path)
    assert heartbeat.is_fresh(path, max_age_s=5)
    past = time.time() - 600
    os.utime(path, (past, past))
    assert not heartbeat.is_fresh(path, max_age_s=120) and heartbeat.age_s(path) >= 599
    heartbeat.beat("")  # no file configured: nothing, no error
    heartbeat.beat(str(tmp_path / "missing-folder" / "x"))  # cannot write: the work goes on


def test_the_worker_loop_beats(wallet, tmp_path):
    from helpers.web import worker

    path = tmp_path / "worker.heartbeat"
    configure(wallet, worker_heartbeat_file=str(path))
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(wallet, stop), kwargs={"idle_s": 0.05})
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        first = path.stat().st_mtime_ns
        old = time.time() - 600
        os.utime(path, (old, old))
        while path.stat().st_mtime_ns <= first and time.monotonic() < deadline:
            time.sleep(0.05)  # beats again while it runs
    finally:
        stop.set()
        loop.join(10)
    assert heartbeat.is_fresh(str(path), max_age_s=30)


def test_the_health_check_command_exit_status(tmp_path):
    path = tmp_path / "worker.heartbeat"

    def check(**env: str) -> int:
        return subprocess.run([sys.executable, "-m", "helpers.infra.heartbeat", "60"], cwd=ROOT,  # noqa: S603
                              env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, timeout=30).returncode

    assert check() == 2  # not configured
    assert check(WORKER_HEARTBEAT_FILE=str(path)) == 1  # never beat
    heartbeat.beat(str(path))
    assert check(WORKER_HEARTBEAT_FILE=str(path)) == 0
    old = time.time() - 120
    os.utime(path, (old, old))
    assert check(WORKER_HEARTBEAT_FILE=str(path)) == 1
