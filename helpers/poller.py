"""The poller: a background thread per worker process that asks the node every INVOICE_POLL_S
seconds about pending invoices (so a payment is credited even when its webhook is lost) and about
pending payments out (so they settle, or are refunded once the node confirms they failed).
Both are idempotent (conditional UPDATEs), so pollers in several workers are safe."""

from __future__ import annotations

import logging
import os
import random
import threading
import time

from helpers import invoices, payments
from helpers.services import Services

log = logging.getLogger(__name__)
_lock = threading.Lock()
_started_in: int | None = None


def ensure_started(svc: Services) -> None:
    """Start this process's poller once (called on requests, so it starts after gunicorn's fork)."""
    global _started_in
    if _started_in == os.getpid():
        return
    with _lock:
        if _started_in == os.getpid():
            return
        _started_in = os.getpid()
        threading.Thread(target=_run, args=(svc,), name="invoice-poller", daemon=True).start()


def _run(svc: Services) -> None:
    interval = svc.config["INVOICE_POLL_S"]
    while True:
        time.sleep(interval * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not security
        try:
            counts = invoices.poll_pending(svc.db, svc.lightning, limit=200)
            if counts.get("paid") or counts.get("expired"):
                log.info("invoice poll: %s", counts)
            out = payments.reconcile(svc)
            if out["settled"] or out["refunded"]:
                log.info("payments out: %s", out)
            if svc.config["SMS_AUTO_FLUSH"]:
                svc.sms.kick()  # receipts of what was just credited
        except Exception:  # noqa: BLE001 - the poller must outlive a database or node outage
            log.exception("invoice poll failed")
