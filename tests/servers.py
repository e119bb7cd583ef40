"""Real servers for the tests: the app under gunicorn on a free port of 127.0.0.1, and an HTTP
client that speaks to it like Africa's Talking. Whatever a test starts, it stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
# The first line of the offer to continue a session the network cut off, in each language.
RESUME_OFFERS = ("CON Continue where you stopped?", "CON Endelea ulipoishia?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(process: subprocess.Popen, wait_s: float = 10) -> None:
    """SIGTERM a server started with start_new_session=True (and its children); SIGKILL if slow."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=wait_s)


class Gunicorn:
    """`gunicorn "app:create_app()"` with `workers` processes on a free loopback port."""

    def __init__(self, database_url: str, pepper: str, workers: int = 2, threads: int = 4,
                 log_path: Path | None = None, extra_env: Callable[[str], dict[str, str]] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTNING_", "MPESA_", "AFRICASTALKING_"))}
        env.update({
            "DATABASE_URL": database_url, "AUTO_CREATE_SCHEMA": "0", "DEMO_MODE": "0", "PIN_PEPPER": pepper,
            "SMS_AUTO_FLUSH": "0", "LOG_LEVEL": "WARNING", "APP_ENV": "test",
            # 50 sessions of one phone at once is the point of these tests, not abuse
            "RATE_LIMITS": "0",
            "INVOICE_POLL_S": "0",
            "PUBLIC_URL": self.url,
        })
        if extra_env:
            env.update(extra_env(self.url))
        self.log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),  # production settings,
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),  # with these overrides
             "--threads", str(threads), "--timeout", "30", "--graceful-timeout", "5", "app:create_app()"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if requests.get(self.url + "/status", timeout=2).status_code in (200, 503):
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not answer in time")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],  # noqa: S603, S607
                             capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        stop_process_group(self.process)
        self.log.close()


class Caller:
    """Africa's Talking towards one server: posts form fields, returns the reply text."""

    declined: dict[str, str] = {}  # session id -> the answers that declined an offer to continue

    def __init__(self, url: str) -> None:
        self.url = url + "/ussd"
        self.http = requests.Session()
        self.prefixes = Caller.declined  # shared: one session may be posted to through several callers

    def post(self, session_id: str, phone: str, text: str, timeout: float = 30) -> tuple[int, str]:
        response = self.http.post(self.url, data={"sessionId": session_id, "phoneNumber": phone,
                                                  "serviceCode": "*384*123#", "networkCode": "63902",
                                                  "text": text}, timeout=timeout)
        return response.status_code, response.text

    def walk(self, session_id: str, phone: str, *inputs: str) -> str:
        """Open a session and answer each prompt; return the last reply. An offer to continue
        another session of this phone (the tests open many at once, as no real phone can) is
        declined: the session starts over, and its path then begins with that "2"."""
        status, reply = self.post(session_id, phone, "")
        assert status == 200, reply
        prefix: tuple[str, ...] = ()
        if reply.startswith(RESUME_OFFERS):
            prefix = ("2",)
            status, reply = self.post(session_id, phone, "2")
            assert status == 200, reply
        self.prefixes[session_id] = "*".join(prefix)
        for n in range(1, len(inputs) + 1):
            status, reply = self.post(session_id, phone, "*".join(prefix + inputs[:n]))
            assert status == 200, reply
        return reply

    def path(self, session_id: str, text: str) -> str:
        """The `text` a session opened by walk() sends for these inputs (after its declined offer)."""
        prefix = self.prefixes.get(session_id, "")
        return f"{prefix}*{text}" if prefix and text else (prefix or text)
