"""In-process cost of one USSD request, per benchmark scenario: CPU milliseconds, SQL statements
and MeTTa evaluations per request, with no HTTP server and no load generator in the way.

    python bench/cost.py [--requests 600] [--database-url URL] [--cprofile send] [--steps]

It seeds a fresh database like bench/run.py (SQLite in a temporary folder unless
--database-url is given; that database is dropped and recreated), builds the app with the
benchmark's settings (rate limits on), and drives the WSGI app with the same requests as
bench/ussd.lua. `--steps` also prints each send step; `--cprofile SCENARIO` prints the top
functions of that scenario by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import PEPPER, PHONE_FIRST, PHONES, PIN, seed  # noqa: E402

AMOUNT = "1000"
STEP_NAMES = {"send": ("dial", "option", "phone", "amount", "confirm", "pin"),
              "receive": ("dial", "option", "invoice"), "menu": ("dial",)}


def steps_for(scenario: str, phone_index: int) -> list[str]:
    """The `text` of each request of one session, as bench/ussd.lua sends them."""
    recipient = "0" + str(PHONE_FIRST + (phone_index + 1) % PHONES)
    if scenario == "send":
        a = "1*" + recipient
        b = a + "*" + AMOUNT
        return ["", "1", a, b, b + "*1", b + "*1*" + PIN]
    if scenario == "receive":
        return ["", "2", "2*" + AMOUNT]
    return [""]


class Counters:
    """SQL statements (engine event) and MeTTa evaluations (the engine's run method)."""

    def __init__(self, app) -> None:
        from sqlalchemy import event

        svc = app.extensions["wallet"]
        self.statements = 0
        self.evaluations = 0
        self.texts: list[str] = []  # each statement's first words, while `listing`
        self.listing = False
        event.listen(svc.db.engine, "before_cursor_execute", self._statement)
        from helpers.infra.fastpath import Prepared

        run_prepared = Prepared.run  # Prepared statements skip SQLAlchemy's events: count them here

        def counted_run(prepared, *args, **kwargs):
            self.statements += 1
            self._list(str(prepared.statement))
            return run_prepared(prepared, *args, **kwargs)

        Prepared.run = counted_run
        run_many = Prepared.run_many  # one statement too (pymysql sends an INSERT's rows as one)

        def counted_run_many(prepared, *args, **kwargs):
            self.statements += 1
            self._list(str(prepared.statement))
            return run_many(prepared, *args, **kwargs)

        Prepared.run_many = counted_run_many
        svc.policy.warm_up()
        engine = svc.policy._engine()  # noqa: SLF001 - a measuring tool may look inside
        run = engine.run

        def counted_run(program, *args, **kwargs):
            self.evaluations += 1
            return run(program, *args, **kwargs)

        engine.run = counted_run

    def _statement(self, _conn, _cursor, statement, *_args) -> None:
        self.statements += 1
        self._list(statement)

    def _list(self, statement: str) -> None:
        if self.listing:
            self.texts.append(" ".join(statement.split())[:110])

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.evaluations


def environ_for(session_id: str, phone: str, text: str) -> dict:
    body = urlencode({"sessionId": session_id, "serviceCode": "*384*123#", "networkCode": "63902",
                      "phoneNumber": phone, "text": text}).encode()
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/ussd", "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.version": (1, 0),
    }


def call(app, environ: dict) -> str:
    status: list[str] = []

    def start_response(code, headers, exc_info=None):
        status.append(code)

    answer = app(environ, start_response)
    try:
        body = b"".join(answer).decode()
    finally:
        answer.close()  # as a WSGI server does: the written-behind rows are flushed here when due
    if not status or not status[0].startswith("200") or body[:4] not in ("CON ", "END ") or "unavailable" in body:
        raise SystemExit(f"bad reply {status} {body!r}")
    return body


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.cpu = 0.0
        self.wall = 0.0
        self.statements = 0
        self.evaluations = 0
        self.replies: dict[str, int] = defaultdict(int)

    def add(self, cpu: float, wall: float, statements: int, evaluations: int, reply: str) -> None:
        self.requests += 1
        self.cpu += cpu
        self.wall += wall
        self.statements += statements
        self.evaluations += evaluations
        self.replies[reply.split(".")[0][:24]] += 1

    def row(self, name: str) -> str:
        n = max(self.requests, 1)
        return (f"{name:16} {self.requests:>6} {self.cpu * 1000 / n:>8.3f} {self.wall * 1000 / n:>8.3f} "
                f"{self.statements / n:>7.2f} {self.evaluations / n:>7.2f}")


def drive(app, counters: Counters, scenario: str, requests: int, per_step: dict[str, Stats] | None,
          first_session: int, fresh_decisions: bool = False) -> tuple[Stats, int]:
    """Run whole sessions of `scenario` until `requests` requests were answered. `fresh_decisions`:
    forget the policy's cached decisions before each request (each is evaluated by MeTTa, as
    when every balance differs and the worker answering a step did not answer the one before)."""
    total = Stats()
    answers = getattr(app.extensions["wallet"].policy, "_answers", {})  # the cache of parsed answers
    session_no = first_session
    while total.requests < requests:
        session_no += 1
        phone_index = (session_no * 7919) % PHONES
        phone = f"+254{PHONE_FIRST + phone_index}"
        session_id = f"profile-{scenario}-{session_no}"
        for step, text in enumerate(steps_for(scenario, phone_index)):
            environ = environ_for(session_id, phone, text)
            if fresh_decisions:
                for expression in [e for e in answers if "decision" in e]:
                    del answers[expression]
            before = counters.snapshot()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            reply = call(app, environ)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            after = counters.snapshot()
            args = (cpu, wall, after[0] - before[0], after[1] - before[1], reply)
            total.add(*args)
            if per_step is not None:
                per_step.setdefault(f"{step} {STEP_NAMES[scenario][step]}", Stats()).add(*args)
            if counters.listing and step == len(STEP_NAMES[scenario]) - 1:
                print(f"  the statements of one {scenario}'s last step:")
                print("\n".join(f"    {n + 1:2}. {text}" for n, text in enumerate(counters.texts)))
                counters.listing = False
            counters.texts.clear()
    return total, session_no


def build_app(url: str, metrics_dir: Path):
    metrics_dir.mkdir()
    os.environ.update({"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DATABASE_URL": url, "APP_ENV": "benchmark",
                       "PIN_PEPPER": PEPPER, "DEMO_MODE": "0",
                       "AUTO_CREATE_SCHEMA": "0", "SMS_AUTO_FLUSH": "0", "LOG_LEVEL": "WARNING",
                       "INVOICE_POLL_S": "0"})
    from app import create_app

    return create_app()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600, help="measured requests per scenario")
    parser.add_argument("--warm", type=int, default=150, help="unmeasured requests per scenario first")
    parser.add_argument("--rounds", type=int, default=3, help="measure this many times, keep the cheapest")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--scenarios", default="menu,send,receive")
    parser.add_argument("--steps", action="store_true", help="print the send and receive scenarios step by step")
    parser.add_argument("--fresh-decisions", action="store_true",
                        help="worst case: every policy decision evaluated by MeTTa, none from the cache")
    parser.add_argument("--cprofile", default="", help="profile this scenario and print the top functions")
    parser.add_argument("--list-statements", action="store_true",
                        help="print the SQL statements of one send's PIN step and one receive's invoice step")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--profile-out", default="", help="also write the cProfile data to this file")
    parser.add_argument("--sort", default="cumulative", help="cProfile order: cumulative or tottime")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wallet-profile-"))
    url = args.database_url or f"sqlite:///{tmp}/profile.db"
    try:
        seed(url)
        app = build_app(url, tmp / "metrics")
        counters = Counters(app)
        print(f"database {url.split(':')[0]}, {args.requests} requests per scenario after {args.warm} warm-up, "
              f"cheapest of {args.rounds} rounds\n")
        print(f"{'scenario':16} {'reqs':>6} {'cpu ms':>8} {'wall ms':>8} {'stmts':>7} {'metta':>7}")
        session_no = 0
        for scenario in args.scenarios.split(","):
            _, session_no = drive(app, counters, scenario, args.warm, None, session_no)
            counters.listing = args.list_statements and scenario in ("send", "receive")
            per_step: dict[str, Stats] | None = {} if args.steps and scenario in ("send", "receive") else None
            profiler = cProfile.Profile() if args.cprofile == scenario else None
            if profiler:
                profiler.enable()
            stats = None
            for _ in range(args.rounds):  # the machine may be shared: keep the cheapest round
                per_step = {} if per_step is not None else None
                measured, session_no = drive(app, counters, scenario, args.requests, per_step, session_no,
                                             args.fresh_decisions)
                if stats is None or measured.cpu < stats.cpu:
                    stats, best_steps = measured, per_step
            per_step = best_steps
            if profiler:
                profiler.disable()
            print(stats.row(scenario))
            for name, step in (per_step or {}).items():
                print(step.row("  " + name))
            if profiler:
                if args.profile_out:
                    profiler.dump_stats(args.profile_out)
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.top)
                print(out.getvalue())
            replies = ", ".join(f"{k!r}: {v}" for k, v in sorted(stats.replies.items(), key=lambda kv: -kv[1])[:8])
            print(f"{'':16} replies {replies}")
        app.extensions["wallet"].db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
