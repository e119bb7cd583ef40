"""The benchmark: the wallet under gunicorn with its production settings, beside a bare Flask app
under the same settings, loaded by wrk on 127.0.0.1. Prints a table and writes a JSON file.

    python bench/run.py [--seconds 10] [--soak 60] [--databases sqlite,mysql] [--out FILE]

MySQL runs when TEST_DATABASE_URL is set (`make bench` starts a throwaway MariaDB for it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from database import Database  # noqa: E402
from helpers.wallet.customers.pins import hash_pin  # noqa: E402
from helpers.wallet.ledger import journal  # noqa: E402
from helpers.infra.refs import new_reference  # noqa: E402
from helpers.wallet.rules import Policy  # noqa: E402
from models import ADJUST, ADJUSTMENTS, CREDIT, User, utcnow  # noqa: E402

PEPPER = "bench-pepper-not-secret-0123456789"
PIN = "4821"
PHONES = 4000  # users in the pool: each session takes the next one
PHONE_FIRST = 711000000  # +254711000000 ...
CONNECTIONS = 32
THREADS = 2
SCENARIOS = {"menu": "main menu of a registered user", "send": "complete send sessions (6 steps)",
             "receive": "receive: create invoice (mock node)"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOP_TIER = 2  # atoms.metta (top-tier); the benchmark's customers have no balance cap


def seed(url: str) -> None:
    """A fresh schema with PHONES users, each with a PIN and a large opening balance."""
    db = Database(url)
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.migrate()
    now = utcnow()
    with db.write() as s:
        s.execute(insert(User), [
            {"phone": f"+254{PHONE_FIRST + n}", "balance_sats": 0, "language": "en",
             "pin_hash": hash_pin(PIN, PEPPER), "pin_failures": 0, "pin_locks": 0, "created_at": now,
             "tier": TOP_TIER}  # documents checked (issue 34): the benchmark measures money moving, not caps
            for n in range(PHONES)
        ])
        ids = s.scalars(select(User.id)).all()
        for uid in ids:  # funded through the journal, as an operator's credit is
            journal.record(s, journal.Entry("adjustment", new_reference(), uid, ADJUST, CREDIT, 1_000_000_000,
                                            counterparty="operator", description="bench funding"),
                           [journal.house(ADJUSTMENTS, 1_000_000_000), journal.customer(uid, -1_000_000_000)])
    db.dispose()


class Server:
    def __init__(self, target: str, env_extra: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PORT=str(self.port), LOG_LEVEL="WARNING", **env_extra)
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind",
             f"127.0.0.1:{self.port}", "--access-logfile", "/dev/null", target],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/status", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{target} did not start")
            time.sleep(0.2)

    def workers(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],  # noqa: S603, S607
                             capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def worker_rss_mb(self, field: str = "VmRSS") -> list[float]:
        """Each worker's resident memory (VmRSS), or a part of it: RssAnon is the heap and other
        private memory, SQLite's page cache included; RssFile is mostly shared libraries."""
        sizes = []
        for pid in self.workers():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field + ":"):
                        sizes.append(int(line.split()[1]) / 1024)
            except FileNotFoundError:
                continue
        return sizes

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the master, its live workers and the workers it
        has reaped (gunicorn recycles workers: their time is in the master's children's time)."""
        return _process_cpu(self.process.pid, children=True) + sum(_process_cpu(pid) for pid in self.workers())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int, children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: children waited for
    return ticks / _TICKS


def _database_pid() -> int | None:
    pidfile = os.environ.get("TEST_MARIADB_PIDFILE")
    try:
        return int(Path(pidfile).read_text().strip()) if pidfile else None
    except (OSError, ValueError):
        return None


def measured(server: Server, scenario: str, seconds: int, database: bool = False) -> dict:
    """wrk's figures plus the CPU the server's processes (and, for MySQL, the database server)
    spent per request: unlike requests/s, this hardly depends on what else runs on the machine."""
    db_pid = _database_pid() if database else None
    cpu0, db0 = server.cpu_seconds(), _process_cpu(db_pid) if db_pid else 0.0
    figures = wrk(server.url, scenario, seconds)
    requests_done = max(figures["requests"], 1)
    figures["server_cpu_ms_per_request"] = round((server.cpu_seconds() - cpu0) * 1000 / requests_done, 3)
    if db_pid:
        figures["database_cpu_ms_per_request"] = round((_process_cpu(db_pid) - db0) * 1000 / requests_done, 3)
    figures["worker_rss_mb"] = round(max(server.worker_rss_mb()), 1)
    figures["worker_anon_mb"] = round(max(server.worker_rss_mb("RssAnon")), 1)
    return figures


def wrk(url: str, scenario: str, seconds: int) -> dict:
    env = dict(os.environ, SCENARIO=scenario, PHONES=str(PHONES), PHONE_FIRST=str(PHONE_FIRST), PIN=PIN,
               SLOTS=str(CONNECTIONS // THREADS), RUN=str(time.monotonic_ns()))  # the soak repeats "send"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(  # noqa: S603 - our own arguments
        [shutil.which("wrk") or "wrk", "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s",
         "--timeout", "15s", "-s", str(ROOT / "bench" / "ussd.lua"), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped in between
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    figures = json.loads(line[len("WRK_JSON "):])
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures["load_generator_cpu_ms_per_request"] = round(wrk_cpu * 1000 / max(figures["requests"], 1), 3)
    return figures


def metta_cost(samples: int = 300) -> dict[str, float]:
    """Milliseconds per policy decision: first asked (evaluated by MeTTa) and asked again (cached)."""
    policy = Policy()
    policy.warm_up()
    started = time.perf_counter()
    for n in range(samples):
        policy.spend(1000 + n, 0, 10_000_000, n)
    fresh = (time.perf_counter() - started) * 1000 / samples
    started = time.perf_counter()
    for n in range(samples):
        policy.spend(1000 + n, 0, 10_000_000, n)
    cached = (time.perf_counter() - started) * 1000 / samples
    return {"spend_decision_ms": round(fresh, 3), "spend_decision_cached_ms": round(cached, 4)}


def run(args: argparse.Namespace) -> dict:
    results: dict = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                     "machine": {"cores": os.cpu_count()}, "settings": {
                         "connections": CONNECTIONS, "wrk_threads": THREADS, "seconds": args.seconds,
                         "gunicorn": "gunicorn.conf.py", "workers": os.environ.get("WEB_CONCURRENCY", "from CPUs")},
                     "metta": metta_cost(), "reference": {}, "wallet": {}}
    bare = Server("bench.bare_app:app", {})
    try:
        results["reference"] = measured(bare, "menu", args.seconds)
    finally:
        bare.stop()
    tmp = Path(tempfile.mkdtemp(prefix="wallet-bench-"))
    urls = {"sqlite": f"sqlite:///{tmp}/bench.db"}
    if os.environ.get("TEST_DATABASE_URL"):
        urls["mysql"] = os.environ["TEST_DATABASE_URL"]
    for name in [d for d in args.databases.split(",") if d in urls]:
        seed(urls[name])
        server = Server("app:create_app()", {
            "DATABASE_URL": urls[name], "APP_ENV": "benchmark", "PIN_PEPPER": PEPPER, "DEMO_MODE": "0",
            "AUTO_CREATE_SCHEMA": "0", "SMS_AUTO_FLUSH": "0",
        })
        try:
            figures: dict = {}
            for scenario in SCENARIOS:
                figures[scenario] = measured(server, scenario, args.seconds, database=name == "mysql")
            if args.soak:
                figures["soak"] = measured(server, "send", args.soak, database=name == "mysql")
            results["wallet"][name] = figures
        finally:
            server.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def report(results: dict) -> None:
    ref = results["reference"]["rps"]
    ref_cpu = results["reference"]["server_cpu_ms_per_request"]
    print(f"\nBare Flask reference: {ref:,.0f} req/s, p50 {results['reference']['p50_ms']:.2f} ms, "
          f"p99 {results['reference']['p99_ms']:.2f} ms, worker RSS {results['reference']['worker_rss_mb']} MB, "
          f"{ref_cpu:.3f} ms CPU per request")
    wrk_cpu = results["reference"]["load_generator_cpu_ms_per_request"]
    print(f"Load generator (wrk): {wrk_cpu:.3f} ms CPU per request, {wrk_cpu * ref / 10:.0f}% of one core at the "
          f"reference's rate; alone on the {results['machine']['cores']} cores it could send "
          f"{results['machine']['cores'] * 1000 / wrk_cpu:,.0f} req/s: the servers, not wrk, set the pace")
    print(f"MeTTa decision: {results['metta']['spend_decision_ms']} ms evaluated, "
          f"{results['metta']['spend_decision_cached_ms']} ms cached")
    print("(cpu: ms of CPU per request used by gunicorn's processes, + the database server's for MySQL;\n"
          " cpu ratio: the reference's CPU per request / this one's, what req/s would show on a quiet machine)")
    print(f"\n{'database':8} {'scenario':9} {'req/s':>8} {'vs ref':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'RSS MB':>7} {'anon':>5} {'bad':>5} {'cpu ms':>7} {'cpu ratio':>9}  notes")
    for db, figures in results["wallet"].items():
        for scenario, f in figures.items():
            notes = f"sent {f['sent']}, refused {f['refused']}" if scenario in ("send", "soak") else ""
            cpu = f["server_cpu_ms_per_request"] + f.get("database_cpu_ms_per_request", 0)
            print(f"{db:8} {scenario:9} {f['rps']:>8,.0f} {f['rps'] / ref:>6.0%} {f['p50_ms']:>7.2f} "
                  f"{f['p99_ms']:>7.2f} {f['worker_rss_mb']:>7} {f['worker_anon_mb']:>5} "
                  f"{f['bad'] + f['socket_errors']:>5} {cpu:>7.3f} "
                  f"{ref_cpu / cpu if cpu else 0:>8.0%}  {notes}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--soak", type=int, default=60, help="a longer send run, for memory growth (0: skip)")
    parser.add_argument("--databases", default="sqlite,mysql")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    results = run(args)
    report(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nfigures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
