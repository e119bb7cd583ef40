"""The poller: a background thread per worker process that every INVOICE_POLL_S seconds asks the
node about pending invoices (so a payment is credited even when its webhook is lost) and pending
payments out (settled, or refunded once the node confirms they failed), and (with an asynchronous
M-Pesa provider) asks M-Pesa about pushes and payouts whose callback has not come (see
helpers/mpesa_flows.reconcile), and refreshes the BTC/KES price when the stored one is older than
PRICE_REFRESH_S (helpers/wallet/prices.py). Every outcome is booked by a conditional UPDATE and each status
query is claimed by one worker, so pollers in several workers are safe."""

from __future__ import annotations

import logging
import os
import random
import threading
import time

from helpers.wallet import invoices, mpesa_flows, payments
from helpers.wallet.services import Services

log = logging.getLogger(__name__)
_lock = threading.Lock()
_started_in: int | None = None
_next_cleanup = [0.0]  # when this process next deletes quotes that ended a day ago
_jitter = random.Random()  # noqa: S311 - spreading workers' polls, not security; not the shared random


def ensure_started(svc: Services) -> None:
    """Start this process's poller once (called on requests, so it starts after gunicorn's fork)."""
    global _started_in
    if _started_in == os.getpid():
        return
    with _lock:
        if _started_in == os.getpid():
            return
        _started_in = os.getpid()
        threading.Thread(target=_run, args=(svc,), name="poller", daemon=True).start()


def _run(svc: Services) -> None:
    interval = svc.settings.invoice_poll_s
    while True:
        time.sleep(interval * _jitter.uniform(0.8, 1.2))
        try:
            counts = invoices.poll_pending(svc.db, svc.lightning, limit=200)
            if counts.get("paid") or counts.get("expired"):
                log.info("invoice poll: %s", counts)
            out = payments.reconcile(svc)
            if out["settled"] or out["refunded"]:
                log.info("payments out: %s", out)
        except Exception:  # noqa: BLE001 - the poller must outlive a database or node outage
            log.exception("invoice poll failed")
        if svc.mpesa.payouts_async or svc.mpesa.topup_by_push:
            try:
                counts = mpesa_flows.reconcile(svc.db, svc.mpesa, svc.settings.mpesa_query_after_s,
                                               svc.settings.mpesa_query_every_s)
                if counts:
                    log.info("mpesa reconcile: %s", counts)
            except Exception:  # noqa: BLE001 - the same, for a Daraja outage
                log.exception("mpesa reconcile failed")
        try:
            if svc.prices.due():
                reference = svc.prices.refresh()
                if reference.kes_per_btc is None:
                    log.warning("price refresh: too few sources agree (%s)", reference.describe().replace("\n", "; "))
            if time.monotonic() >= _next_cleanup[0]:
                _next_cleanup[0] = time.monotonic() + 3600
                svc.prices.forget_expired()
        except Exception:  # noqa: BLE001 - the same, for a price source or database outage
            log.exception("price refresh failed")
        if svc.settings.sms_auto_flush:
            svc.sms.kick()  # receipts of what was just credited
