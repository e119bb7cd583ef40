"""Production gunicorn settings for the USSD wallet.

Start: gunicorn -c gunicorn.conf.py "app:create_app()"

Environment read here (gunicorn reads this file before the app exists, so `.env` is NOT
consulted for these; export them or pass them to the container):
  PORT              listen port on 0.0.0.0 (default 8000)
  WEB_CONCURRENCY   number of worker processes (default 2 * CPUs + 1, capped at MAX_WORKERS)
  LOG_LEVEL         gunicorn's own log level (default info; the app reads the same variable)

Every app setting (DATABASE_URL, PIN_PEPPER, ...) is read by create_app() in each worker.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger

MAX_WORKERS = 8  # each worker holds its own MeTTa engine and DB pool (DB_POOL_SIZE connections)


def _checked_settings() -> dict:
    """Every app setting checked as this file is read, before gunicorn starts anything (PORT,
    WEB_CONCURRENCY and LOG_LEVEL among them, declared with the others in helpers/infra/settings.py):
    a bad or refused one ends gunicorn with one line naming it, not a traceback per worker."""
    from dotenv import load_dotenv

    from helpers.infra.config import ConfigError, finalise, load_config

    load_dotenv()  # as the app does: a .env beside the real environment (which wins)
    try:
        config = load_config(str(Path(__file__).resolve().parent / "instance"))
        finalise(config)
    except ConfigError as exc:
        raise SystemExit(f"configuration: {exc}") from None
    return config


_SETTINGS = _checked_settings()

# --- where we listen --------------------------------------------------------------------------
# Always all interfaces: inside a container 127.0.0.1 would be unreachable. HOST is only for the
# development server (`python app.py`), so it is deliberately ignored here.
bind = [f"0.0.0.0:{_SETTINGS['PORT'] or 8000}"]

# --- workers ----------------------------------------------------------------------------------
# cpu_count() sees the host's CPUs even inside a CPU-limited container, hence the cap; set
# WEB_CONCURRENCY to match the container's real share. Mind the database: MySQL must accept
# workers x (DB_POOL_SIZE + overflow) connections per machine.
workers = _SETTINGS["WEB_CONCURRENCY"] or min(2 * multiprocessing.cpu_count() + 1, MAX_WORKERS)

# Sync workers, one request at a time per process: hyperon (MeTTa) objects are not thread-safe
# and a USSD request is short. Scale with processes, not threads.
worker_class = "sync"
threads = 1

# No preload: create_app() must run in each worker AFTER the fork, so every worker builds its own
# MeTTa engine and DB engine (neither survives a fork safely).
preload_app = False

# --- time limits ------------------------------------------------------------------------------
# Africa's Talking waits at most 15 s for a reply. A worker stuck longer than 12 s is killed and
# restarted, so the platform sees a failure before its own limit rather than a hang. Slow work
# (SMS, in-flight Lightning payments) must finish after the reply, never inside it.
timeout = 12
# On SIGTERM (deploy, container stop) let in-flight requests finish before workers are killed.
graceful_timeout = 20
# Seconds to hold an idle keep-alive connection. The sync worker closes each connection after its
# response anyway; this matters only if worker_class changes (e.g. gthread behind a proxy).
keepalive = 5

# Recycle workers now and then so slow leaks (e.g. the MeTTa space) cannot grow without bound;
# the jitter keeps all workers from restarting at the same moment. Rarely: a new worker imports
# the app and loads atoms.metta again (about 1 s of CPU), and its caches start cold. Every 2,000
# requests that cost about 0.5 ms per request at full load; the MeTTa space is never written
# after loading, and the benchmark's 60 s soak shows no growth of worker memory.
max_requests = 50_000
max_requests_jitter = 5_000

# The heartbeat file lives in memory: on a container's overlay filesystem a slow disk write can
# make the master think a healthy worker is stuck.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# --- logging ----------------------------------------------------------------------------------
# Both logs go to the container's output. The access line holds the request line (method, path,
# query) but not the body: AT's USSD form data (phone numbers, PIN entries) never appears in it.
accesslog = "-"
errorlog = "-"
loglevel = {"warn": "warning", "fatal": "critical"}.get(_SETTINGS["LOG_LEVEL"].lower(), _SETTINGS["LOG_LEVEL"].lower())
access_log_format = ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


class RedactingLogger(Logger):
    """Callback URLs carry secrets (/ussd/<token>, /lightning/webhook/<token>, /mpesa/<token>/...,
    /airtime/<token>/status): keep them out of the access log.

    The line of ACCESS_LOG_FORMAT is written directly: gunicorn's own way builds every atom of
    the request (all headers, all of environ, a timestamp) into a dictionary for each line, which
    cost a worker ~10% of its time under load (py-spy), as much as our USSD step itself. Any
    other format goes gunicorn's way, through atoms() below, redacted the same."""

    def access(self, resp, req, environ, request_time):
        if self.cfg.access_log_format != ACCESS_LOG_FORMAT or not getattr(self, "access_log_enabled", False):
            super().access(resp, req, environ, request_time)  # or nothing, when access logging is off
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        method, uri, protocol = environ["REQUEST_METHOD"], environ["RAW_URI"], environ["SERVER_PROTOCOL"]
        request = _quoted(_SECRET_PATH.sub(r"\1/<token>", f"{method} {uri} {protocol}"))
        address, agent = _quoted(environ.get("REMOTE_ADDR", "-")), _quoted(environ.get("HTTP_USER_AGENT", "-"))
        ms = request_time.seconds * 1000 + request_time.microseconds // 1000
        try:
            self.access_log.info(f'{address} "{request}" {status} {"-" if sent is None else sent} {ms}ms "{agent}"')
        except Exception:  # noqa: BLE001 - as gunicorn's own: a log line never fails the request
            self.exception("access log")

    def setup(self, cfg):
        """gunicorn's own lines (errors, the access line) in the app's format: JSON, one a line."""
        super().setup(cfg)
        from helpers.infra.logs import JsonFormatter

        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "{raw_uri}e"):
            if isinstance(atoms.get(key), str):
                atoms[key] = _SECRET_PATH.sub(r"\1/<token>", atoms[key])
        return atoms


def _quoted(value: str) -> str:
    """As gunicorn's SafeAtoms quotes a value inside the line's double quotes."""
    return value.replace('"', '\\"')


_SECRET_PATH = re.compile(r"(/ussd|/lightning/webhook|/mpesa)/[^\s?/]+")
logger_class = RedactingLogger

# Name the processes in `ps` so operators can tell them apart on a shared host.
proc_name = "ussd-wallet"

# --- metrics -----------------------------------------------------------------------------------
# prometheus_client's multiprocess mode: each worker writes its counters to files in this folder
# and /metrics adds them up. The folder must exist before workers import prometheus_client.
_METRICS_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="ussd-wallet-metrics-"))


def on_starting(server):
    """Settings are checked once, before any worker starts: a bad one stops the start with one line
    naming it. A fresh start begins with empty counters."""
    from dotenv import load_dotenv

    from helpers.infra.config import ConfigError, finalise, load_config

    load_dotenv()
    try:
        finalise(load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance")))
    except ConfigError as exc:
        raise SystemExit(f"configuration: {exc}") from None
    os.makedirs(_METRICS_DIR, exist_ok=True)
    for name in os.listdir(_METRICS_DIR):
        if name.endswith(".db"):
            os.remove(os.path.join(_METRICS_DIR, name))


def post_worker_init(worker):
    """The worker has built the app (MeTTa engine, SQLAlchemy, phone metadata: ~80,000 objects that
    live as long as the worker). Move them out of the garbage collector's reach: a full
    collection walking them all takes ~45 ms, and under load one now and then stalled a worker and
    every request queued behind it. Garbage made after this is still collected as usual."""
    import gc

    gc.collect()
    gc.freeze()


def child_exit(server, worker):
    """A dead worker's live gauges must not be reported any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

