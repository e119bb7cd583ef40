"""Prometheus metrics. Request counters live in each worker (prometheus_client, multiprocess mode
under gunicorn: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR); the money figures are read from
the database at scrape time, so every worker reports the same truth."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Invoice, SmsOutbox, Transaction, User

REQUESTS = Counter("ussd_requests_total", "USSD requests answered, by outcome", ["outcome"])
LATENCY = Histogram("ussd_request_duration_seconds", "Time to answer a USSD request",
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15))


def observe(outcome: str, seconds: float) -> None:
    REQUESTS.labels(outcome).inc()
    LATENCY.observe(seconds)


def _process_metrics() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def _line(name: str, value: int, help_text: str, labels: dict[str, str] | None = None,
          header: bool = True) -> str:
    label_text = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    head = f"# HELP {name} {help_text}\n# TYPE {name} gauge\n" if header else ""
    return f"{head}{name}{label_text} {value}\n"


def render(session: Session, backend: str) -> str:
    """The exposition text: process metrics, then money metrics from the database."""
    out = [_process_metrics().decode()]
    rows = session.execute(select(Transaction.type, Transaction.status, func.count(Transaction.id))
                           .where(Transaction.follows_id.is_(None))  # movements, not the entries ending them
                           .group_by(Transaction.type, Transaction.status)).all()
    for n, (kind, status, count) in enumerate(sorted(rows)):
        out.append(_line("wallet_payments", count, "Money movements by type and status (a transfer is one)",
                         {"backend": backend, "type": kind, "status": status}, header=n == 0))
    invoices = session.execute(select(Invoice.status, func.count(Invoice.id)).group_by(Invoice.status)).all()
    for n, (status, count) in enumerate(sorted(invoices)):
        out.append(_line("wallet_invoices", count, "Lightning invoices by status",
                         {"backend": backend, "status": status}, header=n == 0))
    pending = session.execute(select(func.count(Transaction.id)).where(Transaction.status == "pending")).scalar_one()
    out.append(_line("wallet_pending_payments", pending, "Money movements whose outcome is not known yet"))
    queue = session.execute(select(func.count(SmsOutbox.id))
                            .where(SmsOutbox.status.in_(("pending", "sending")))).scalar_one()
    out.append(_line("wallet_sms_queue_depth", queue, "SMS waiting to be sent"))
    failed = session.execute(select(func.count(SmsOutbox.id)).where(SmsOutbox.status == "failed")).scalar_one()
    out.append(_line("wallet_sms_failed", failed, "SMS given up after every retry"))
    liabilities = session.execute(select(func.coalesce(func.sum(User.balance_sats), 0))).scalar_one()
    out.append(_line("wallet_liabilities_sats", int(liabilities), "Sum of customer balances"))
    return "".join(out)
