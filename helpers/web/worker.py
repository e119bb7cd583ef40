"""Background work as rows (`jobs`), for any number of worker processes (`flask worker`; in the
embedded default one runs inside the server).

A worker claims due jobs with a lease: `SELECT ... FOR UPDATE SKIP LOCKED` where the database has
it (MariaDB, MySQL 8), then a conditional UPDATE of the lease (the only guard on SQLite, whose
writers are serialised anyway; on Galera a second node's claim of the same row fails at commit
and is retried). While the lease holds no other worker takes the job; a worker that dies leaves
the lease to expire and the job is taken again. Every handler is safe to run twice: money moves
by conditional updates that act once.

Kinds:
- invoice <payment hash>, mpesa <reference> (an STK push), payout <reference> (Lightning,
  airtime, M-Pesa B2C and B2B: any rail): one
  pending item, asked about soon after it appears, then less and less often (backoff), until it
  is final. (airtime <reference> and payment <transaction id>: what payouts' jobs were before
  they had their table; run as payout jobs.)
- orphan <transaction id>: a payout in KES reserved with no payout row to finish it: refunded.
- simswap <phone>: ask the SIM swap provider about a phone (a session's first step made the job;
  the answer comes by callback).
- every <task>: sweep (a job for each pending item that has none; a Forgot-PIN reset now due gets
  one reminder SMS: only the owner's dial sets the new PIN), sms (send the outbox), price
  (refresh the BTC/KES price), cleanup (expired
  sessions, old quotes, finished jobs), unclaimed (hourly: each send whose recipient never created
  a PIN in `unclaimed-return-days` goes back to its sender, each in its own short transaction),
  aml (hourly: the monitoring rules of atoms.metta over the journal; a new hit opens a case).
  retention (daily: the money records of customers erased more than `retention-years` ago get
  pseudonyms for phones, helpers/wallet/privacy.py).
Web requests do no background work: items are found by the sweep.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from helpers.infra import heartbeat
from helpers.ussd import sessions
from helpers.wallet import pin_reset, privacy, sim_swap
from helpers.wallet.aml import cases as aml_cases
from helpers.wallet.customers import limits
from helpers.wallet.incoming import invoices
from helpers.wallet.chama import proposals as chama_proposals
from helpers.wallet.ledger import movements, unclaimed
from helpers.wallet.savings import autosave, goals, orders
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.payouts import machine as payouts
from helpers.wallet.services import Services
from helpers.infra.rail import Said
from models import (MPESA_B2B_RAIL, MPESA_B2C_RAIL, OPEN_PAYOUT, PENDING, Invoice, Job, MpesaRequest, Payout,
                    utcnow)

log = logging.getLogger(__name__)

INVOICE, PAYMENT, MPESA, PAYOUT, EVERY = "invoice", "payment", "mpesa", "payout", "every"
AIRTIME = "airtime"  # the old name of an airtime payout's job: rows left from before run as PAYOUT
ORPHAN = "orphan"  # a payout in KES reserved without its M-Pesa request (mpesa_flows.orphans): voided
LEASE_S = 60
FIRST_DELAY_S = 2  # an item is first asked about this soon after the sweep finds it
MAX_DELAY_S = 300  # ... then after INVOICE_POLL_S, twice that, four times ..., at most this
BATCH = 20


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def _periodic(svc: Services) -> dict[str, int]:
    """Periodic tasks and their intervals in seconds."""
    tasks = {"sweep": max(1, svc.settings.invoice_poll_s or 15), "sms": 5, "cleanup": 3600, "unclaimed": 3600,
             "aml": 3600, "retention": 86400, "savings": 300, "chama": 60}
    if svc.prices.sources:
        tasks["price"] = svc.settings.price_refresh_s
    return tasks


# ------------------------------------------------------------------ claiming
@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    key: str
    attempts: int


def claim(svc: Services, me: str, limit: int = BATCH, lease_s: int | None = None) -> list[Claimed]:
    """Take up to `limit` due jobs for `lease_s` seconds (WORKER_LEASE_S)."""
    lease_s = lease_s or svc.settings.worker_lease_s or LEASE_S
    now = utcnow()
    free = or_(Job.lease_until.is_(None), Job.lease_until < now)
    query = (select(Job.id).where(Job.done_at.is_(None), Job.due_at <= now, free)
             .order_by(Job.due_at).limit(limit))
    for attempt in (1, 2, 3):
        try:
            with svc.db.write() as s:
                if not svc.db.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                ids = list(s.scalars(query))
                if not ids:
                    return []
                s.execute(update(Job).where(Job.id.in_(ids), free).values(
                    lease_until=now + dt.timedelta(seconds=lease_s), leased_by=me, attempts=Job.attempts + 1))
                mine = s.execute(select(Job.id, Job.kind, Job.key, Job.attempts)
                                 .where(Job.id.in_(ids), Job.leased_by == me, Job.lease_until > now)).all()
                return [Claimed(*row) for row in mine]
        except OperationalError as exc:  # Galera: another node claimed the same rows first
            if attempt == 3:
                raise
            log.info("job claim conflict, retried: %s", exc.orig)
    return []


def _finish(svc: Services, job: Claimed, me: str, done: bool, delay_s: float = 0, error: str = "") -> None:
    values: dict = {"lease_until": None, "leased_by": None, "last_error": error[:255] or None}
    if done:
        values["done_at"] = utcnow()
    else:
        values["due_at"] = utcnow() + dt.timedelta(seconds=delay_s)
    with svc.db.write() as s:
        s.execute(update(Job).where(Job.id == job.id, Job.leased_by == me).values(**values))


# The longest wait between two questions about one pending item, by kind: an invoice may be paid
# any moment (a webhook usually tells us first), a payment out or an M-Pesa request settles slower.
MAX_DELAY = {INVOICE: 60, PAYMENT: MAX_DELAY_S, MPESA: MAX_DELAY_S, PAYOUT: MAX_DELAY_S, AIRTIME: MAX_DELAY_S}


def backoff(attempts: int, base: float = 5, cap: float = MAX_DELAY_S) -> float:
    """base, 2 base, 4 base ... seconds after each question, at most `cap`."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def _asks_daraja(svc: Services, reference: str) -> bool:
    with svc.db.read() as s:
        return s.scalar(select(Payout.rail).where(Payout.reference == reference)) in (MPESA_B2C_RAIL, MPESA_B2B_RAIL)


def _delay(svc: Services, job: Claimed) -> float:
    base = max(1, svc.settings.invoice_poll_s or 5)
    cap = MAX_DELAY.get(job.kind, MAX_DELAY_S)
    # never faster than Daraja is to be asked
    if job.kind == MPESA or (job.kind == PAYOUT and _asks_daraja(svc, job.key)):
        base = max(base, svc.settings.mpesa_query_every_s)
        cap = max(cap, svc.settings.mpesa_query_every_s)
    return backoff(job.attempts, base, cap)


# ------------------------------------------------------------------ the work
def _invoice(svc: Services, key: str) -> bool:
    return invoices.sync(svc.db, svc.lightning, key) != PENDING


def _payment(svc: Services, key: str) -> bool:
    """A Lightning payment's job from before payouts had their table (keyed by the movement's id):
    run as its payout's job."""
    with svc.db.read() as s:
        reference = s.scalar(select(Payout.reference).where(Payout.transaction_id == int(key)))
    return True if reference is None else _payout(svc, reference)


def _mpesa(svc: Services, key: str) -> bool:
    request = mpesa_flows.find_any(svc.db, key)
    if request is None:  # a payout's job made before payouts had their table: it is a payout job
        return _payout(svc, key)
    if request.status != PENDING:
        return True
    mpesa_flows.query_one(svc.db, svc.mpesa, request)
    request = mpesa_flows.find_any(svc.db, key)
    return request is None or request.status != PENDING


def _payout(svc: Services, key: str) -> bool:
    payout = payouts.find(svc.db, key)
    if payout is None or payout.state not in OPEN_PAYOUT:
        return True
    rail = svc.rail(payout.rail)
    if rail is None:
        return False  # its rail is turned off with payouts open: asked again when it is back (or resolved)
    answer = payouts.query(svc.db, rail, payout.reference, payout)
    if answer.needs_operator:
        log.error("payout %s (%s): %s; no query can settle it: resolve it with `flask --app app resolve %s "
                  "--outcome paid|failed --reason ...` once the rail's dashboard says which",
                  key, payout.rail, answer.reason, key)
        return True
    return answer.said is not Said.PENDING or answer.reason == payouts.DONE


def _orphan(svc: Services, key: str) -> bool:
    mpesa_flows.void_orphan(svc.db, int(key))  # once: not pending, or it has a request, then nothing
    return True


def sweep(svc: Services) -> int:
    """A job for every pending item that has none: invoices, payments out, M-Pesa requests,
    open payouts, and payouts reserved without their M-Pesa request."""
    with svc.db.read() as s:
        payout_rails: dict[str, str] = {reference: rail for reference, rail in s.execute(
            select(Payout.reference, Payout.rail).where(Payout.state.in_(OPEN_PAYOUT)).limit(5000))}
        found = {
            INVOICE: set(s.scalars(select(Invoice.payment_hash).where(Invoice.status == PENDING).limit(5000))),
            MPESA: set(s.scalars(select(MpesaRequest.reference).where(MpesaRequest.status == PENDING).limit(5000))
                       if svc.mpesa.payouts_async or svc.mpesa.topup_by_push else []),
            PAYOUT: set(payout_rails),
            ORPHAN: {str(row.id) for row in mpesa_flows.orphans(svc.db, mpesa_flows.ORPHAN_AFTER_S, limit=5000)},
        }
        known = {(kind, key) for kind, key in s.execute(select(Job.kind, Job.key).where(Job.kind.in_(list(found))))}
    first = utcnow() + dt.timedelta(seconds=FIRST_DELAY_S)
    mpesa_first = utcnow() + dt.timedelta(seconds=svc.settings.mpesa_query_after_s)
    added = 0
    for kind, keys in found.items():
        for key in sorted(keys):
            if (kind, key) in known:
                continue
            try:
                with svc.db.write() as s:
                    asks_daraja = kind == MPESA or payout_rails.get(key) in (MPESA_B2C_RAIL, MPESA_B2B_RAIL)
                    s.add(Job(kind=kind, key=key, due_at=mpesa_first if asks_daraja else first))
                added += 1
            except IntegrityError:  # another worker's sweep added it first
                continue
    return added


def _every(svc: Services, task: str) -> None:
    if task == "sweep":
        sweep(svc)
        for phone in pin_reset.due(svc.db):  # Forgot PIN resets now due: one reminder SMS each
            pin_reset.remind(svc, phone)
    elif task == "sms":
        svc.sms.flush()
    elif task == "price":
        reference = svc.prices.refresh()
        if reference.kes_per_btc is None:
            log.warning("price refresh: too few sources agree (%s)", reference.describe().replace("\n", "; "))
    elif task == "cleanup":
        cleanup(svc)
    elif task == "unclaimed":
        return_unclaimed(svc)
    elif task == "aml":
        done = aml_cases.scan(svc.db, svc.policy)
        if done.opened:
            log.warning("monitoring: %d hits, cases opened %s", done.hits, done.opened)
    elif task == "retention":
        privacy.retain_due(svc.db, svc.policy, svc.settings.pin_pepper)
    elif task == "savings":
        run_savings(svc)
    elif task == "chama":
        expire_chama_proposals(svc)


def run_savings(svc: Services) -> tuple[int, int]:
    """Receipts' auto-save shares move in, goals whose date has come return their sats (once each),
    then due standing orders are paid
    or skipped (once per period each); each in its own transaction, one failure logged and the rest
    go on. Returns (goals matured, orders paid)."""
    matured = paid = 0
    try:
        autosave.run(svc.db, svc.policy)  # receipts' shares first: a goal maturing now takes its last
    except Exception:  # noqa: BLE001 - auto-save's failure must not keep goals and orders back
        log.exception("auto-save did not run")
    for goal_id in goals.due(svc.db):
        try:
            matured += movements.retry_deadlocks(functools.partial(goals.mature, svc.db, goal_id)) == goals.MATURED
        except Exception:  # noqa: BLE001 - one goal's failure must not keep the others back
            log.exception("goal %s could not mature", goal_id)
    for order_id in orders.due(svc.db):
        try:
            paid += orders.run(svc, order_id, functools.partial(sim_swap.standing_hold, svc)) == orders.PAID
        except Exception:  # noqa: BLE001 - one order's failure must not keep the others back
            log.exception("standing order %s could not run", order_id)
    return matured, paid


def expire_chama_proposals(svc: Services) -> int:
    """Chama payouts not approved in time expire (each pays nothing; its proposer gets an SMS), and
    paid ones whose payout M-Pesa refused (the group has its sats back) are marked failed."""
    refunded = chama_proposals.mark_refunded(svc.db)
    if refunded:
        log.info("chama: %d paid proposals refused by M-Pesa marked failed", refunded)
    return chama_proposals.expire_due(svc.db)


def return_unclaimed(svc: Services) -> int:
    """Give back every send now due (ledger/unclaimed.py), each in its own transaction: one that
    fails is logged and the others go on; the next run tries it again. Returns how many went back."""
    returned = 0
    for transfer_id in unclaimed.due(svc.db, svc.policy):
        try:
            outcome = movements.retry_deadlocks(functools.partial(unclaimed.give_back, svc.db, svc.policy, transfer_id))
        except Exception:  # noqa: BLE001 - one send's failure must not keep the others back
            log.exception("unclaimed send %s could not be returned", transfer_id)
            continue
        returned += outcome == unclaimed.RETURNED
    return returned


def cleanup(svc: Services) -> None:
    sessions.clean(svc.db, svc.settings.ussd_session_timeout_s, keep_days=30)
    limits.clean(svc.db)
    svc.prices.forget_expired()
    with svc.db.write() as s:
        s.execute(delete(Job).where(Job.done_at.is_not(None), Job.done_at < utcnow() - dt.timedelta(days=1)))


HANDLERS: dict[str, Callable[[Services, str], bool]] = {INVOICE: _invoice, PAYMENT: _payment, MPESA: _mpesa,
                                                        PAYOUT: _payout, AIRTIME: _payout, ORPHAN: _orphan,
                                                        sim_swap.JOB_KIND: sim_swap.ask}


def run_one(svc: Services, job: Claimed, me: str) -> None:
    """Do one claimed job and release it: done, or due again later."""
    try:
        if job.kind == EVERY:
            _every(svc, job.key)
            _finish(svc, job, me, done=False, delay_s=_periodic(svc).get(job.key, 60))
            return
        final = HANDLERS[job.kind](svc, job.key)
        _finish(svc, job, me, done=final, delay_s=_delay(svc, job))
    except Exception as exc:  # noqa: BLE001 - a job that fails is tried again later, the worker goes on
        log.exception("job %s %s failed", job.kind, job.key)
        try:
            _finish(svc, job, me, done=False, delay_s=_delay(svc, job), error=f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - the lease will expire instead
            log.exception("job %s %s could not be released", job.kind, job.key)


def ensure_periodic(svc: Services) -> None:
    """The periodic tasks' rows, due now when new."""
    for task in _periodic(svc):
        try:
            with svc.db.write() as s:
                if s.scalar(select(Job.id).where(Job.kind == EVERY, Job.key == task)) is None:
                    s.add(Job(kind=EVERY, key=task))
        except IntegrityError:
            continue


def run(svc: Services, stop: threading.Event, me: str | None = None, idle_s: float = 1.0) -> None:
    """The worker loop, until `stop` is set: claim, work, release; rest a moment when idle."""
    me = me or worker_id()
    ensure_periodic(svc)
    log.info("worker %s started", me)
    while not stop.is_set():
        try:
            claimed = claim(svc, me)
            heartbeat.beat(svc.settings.worker_heartbeat_file)  # the database answered
        except Exception:  # noqa: BLE001 - a database outage: wait and try again
            log.exception("job claim failed")
            stop.wait(5)
            continue
        for job in claimed:
            if stop.is_set():
                break
            run_one(svc, job, me)
            heartbeat.beat(svc.settings.worker_heartbeat_file)
        if not claimed:
            stop.wait(idle_s)
    log.info("worker %s stopped", me)


# ------------------------------------------------------------------ in the server (embedded default)
_started_in: int | None = None
_start_lock = threading.Lock()
_stop = threading.Event()
_thread: threading.Thread | None = None


def ensure_started(svc: Services) -> None:
    """Start this process's in-process worker thread once (called on requests, so it starts after
    gunicorn's fork). Only with WORKER_IN_PROCESS: production runs `flask worker` instead."""
    global _started_in, _thread
    if _started_in == os.getpid():
        return
    with _start_lock:
        if _started_in == os.getpid():
            return
        _started_in = os.getpid()
        _stop.clear()
        _thread = threading.Thread(target=run, args=(svc, _stop), name="jobs", daemon=True)
        _thread.start()


def stop_in_process() -> None:
    """Stop this process's in-process worker and wait for it (tests; the process's exit stops it
    otherwise)."""
    global _started_in, _thread
    with _start_lock:
        _stop.set()
        _started_in = None
        thread, _thread = _thread, None
    if thread is not None:
        thread.join(30)
