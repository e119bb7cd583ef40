"""M-Pesa money around a provider: top-ups by STK push (started, finished from callbacks or
status queries), reconciling pushes and payouts still pending, and reservations left without a
payout row (orphans).

A push is recorded as an MpesaRequest *before* the provider is called, so a crash in between
leaves a row the reconciler can ask about. Its status moves once, pending -> settled | failed, by
a conditional UPDATE in the same database transaction as the money it moves. Payouts to M-Pesa
(B2C, B2B) are payouts rows on the M-Pesa rails (helpers/mpesa/rail.py, helpers/wallet/payouts).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.wallet.customers import users
from helpers.wallet.ledger import movements
from helpers.wallet.customers.users import UserView
from helpers.infra.i18n import t
from helpers.infra.phone import mask
from helpers.infra.rail import Rail, Said
from helpers.infra.refs import new_reference
from helpers.mpesa.provider import MpesaProvider
from helpers.wallet.payouts import machine
from lightning import State
from models import (FAILED, MPESA_B2B_RAIL, MPESA_B2C_RAIL, PENDING, SETTLED, STK, WITHDRAW,
                    MpesaRequest, Payout, Transaction, User, utcnow)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopupStart:
    state: State  # PENDING: the prompt is on its way (or we could not tell); FAILED: refused
    reference: str
    replay: bool = False


def find(db: Database, reference: str, kind: str) -> MpesaRequest | None:
    with db.read() as s:
        return s.scalar(select(MpesaRequest).where(MpesaRequest.reference == reference, MpesaRequest.kind == kind))


def find_any(db: Database, reference: str) -> MpesaRequest | None:
    with db.read() as s:
        return s.scalar(select(MpesaRequest).where(MpesaRequest.reference == reference))


# ------------------------------------------------------------------ top-up by STK push
def start_topup(db: Database, provider: MpesaProvider, user: UserView, kes: int, sats: int, key: str) -> TopupStart:
    """Push the M-Pesa prompt for `kes` to the user's own phone; `sats` is what the screen promised
    and what a confirmed payment credits. `key` (the USSD step) makes a replay push nothing."""
    reference = new_reference()
    try:
        with db.write() as s:
            s.add(MpesaRequest(kind=STK, reference=reference, user_id=user.id, phone=user.phone, amount_kes=kes,
                               amount_sats=sats, status=PENDING, idempotency_key=key))
    except IntegrityError:
        with db.read() as s:
            first = s.scalar(select(MpesaRequest).where(MpesaRequest.idempotency_key == key))
        if first is None:
            raise
        return TopupStart(State.FAILED if first.status == FAILED else State.PENDING, first.reference, replay=True)
    pushed = provider.push_topup(user.phone, kes, reference)
    if pushed.state is State.FAILED:
        fail_topup(db, reference, "", pushed.error, notify=False)  # the screen says so
        return TopupStart(State.FAILED, reference)
    if pushed.checkout_request_id:
        with db.write() as s:
            recorded = cast(CursorResult, s.execute(
                update(MpesaRequest)
                .where(MpesaRequest.reference == reference, MpesaRequest.checkout_request_id.is_(None))
                .values(checkout_request_id=pushed.checkout_request_id,
                        merchant_request_id=pushed.merchant_request_id or None)
            )).rowcount
        if not recorded:  # the callback came first and brought the ids
            log.info("stk %s: callback arrived before the push answer", reference)
    log.info("stk push %s for %s KES to %s: %s", reference, kes, mask(user.phone),
             "sent" if pushed.checkout_request_id else f"unknown ({pushed.error})")
    return TopupStart(State.PENDING, reference)


def _credit_topup(db: Database, reference: str, receipt: str | None, code: str, description: str,
                 from_failed: bool = False) -> bool:
    """M-Pesa says the push was paid: credit the promised sats, once. `from_failed` lets a paid
    callback (M-Pesa's own word, with a receipt) settle a push an earlier answer called failed:
    no sats moved then. False when there was nothing to do (or the receipt was used before)."""
    allowed = (PENDING, FAILED) if from_failed else (PENDING,)
    try:
        with db.write() as s:
            moved = cast(CursorResult, s.execute(
                update(MpesaRequest)
                .where(MpesaRequest.reference == reference, MpesaRequest.kind == STK,
                       MpesaRequest.status.in_(allowed))
                .values(status=SETTLED, receipt=receipt, result_code=code[:16], result_desc=description[:255],
                        finished_at=utcnow())
            )).rowcount
            if moved != 1:
                return False
            # moved above, in this transaction (reference is unique): NoResultFound if missing all the same
            request = s.execute(select(MpesaRequest).where(MpesaRequest.reference == reference)).scalar_one()
            user = users.owner(s, request.user_id)
            row_id = credit_pushed_topup(s, user, request.amount_kes, request.amount_sats, receipt,
                                                      reference)
            request.transaction_id = row_id
    except IntegrityError:
        log.warning("stk %s: receipt %s has credited a top-up before; nothing credited", reference, receipt)
        return False
    log.info("stk %s credited (receipt %s)", reference, receipt or "from the status query")
    return True


def credit_topup(db: Database, reference: str, receipt: str | None, code: str, description: str,
                 from_failed: bool = False) -> bool:
    """_credit_topup, run again whole after a deadlock or a Galera certification conflict."""
    return movements.retry_deadlocks(
        lambda: _credit_topup(db, reference, receipt, code, description, from_failed))


def _fail_topup(db: Database, reference: str, code: str, description: str, notify: bool = True) -> bool:
    """The push was refused, cancelled or failed: nothing to credit; tell the customer by SMS."""
    with db.write() as s:
        moved = cast(CursorResult, s.execute(
            update(MpesaRequest)
            .where(MpesaRequest.reference == reference, MpesaRequest.kind == STK, MpesaRequest.status == PENDING)
            .values(status=FAILED, result_code=code[:16], result_desc=description[:255], finished_at=utcnow())
        )).rowcount
        if moved != 1:
            return False
        if notify:
            request = s.execute(select(MpesaRequest).where(MpesaRequest.reference == reference)).scalar_one()
            user = users.owner(s, request.user_id)
            sms.queue(s, user.phone, t(user.language, "sms.topup-failed", kes=request.amount_kes, ref=reference))
    log.info("stk %s failed: %s %s", reference, code, description)
    return True

def fail_topup(db: Database, reference: str, code: str, description: str, notify: bool = True) -> bool:
    """_fail_topup, run again whole when the database rolled it back for a deadlock or a Galera
    certification conflict (it acts once: its updates are conditional)."""
    return movements.retry_deadlocks(lambda: _fail_topup(db, reference, code, description, notify))



# ------------------------------------------------------------------ reconciliation
def _claim(db: Database, request_id: int, last_query_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Take a pending push for one status query, so two workers do not both ask."""
    same = (MpesaRequest.last_query_at.is_(None) if last_query_at is None
            else MpesaRequest.last_query_at == last_query_at)
    with db.write() as s:
        return cast(CursorResult, s.execute(
            update(MpesaRequest).where(MpesaRequest.id == request_id, MpesaRequest.status == PENDING, same)
            .values(last_query_at=now, queries=MpesaRequest.queries + 1)
        )).rowcount == 1


def reconcile(db: Database, provider: MpesaProvider, rail_of: Callable[[str], Rail | None], after_s: int,
              every_s: int, limit: int = 100) -> dict[str, int]:
    """Ask M-Pesa about pushes and payouts pending for more than `after_s` seconds (each at most
    every `every_s` seconds): a push's query answer credits or fails it here; a payout's
    Transaction Status query is answered by callback. Returns counts by what happened."""
    counts: dict[str, int] = {}
    if not (provider.topup_by_push or provider.payouts_async):
        return counts
    now = utcnow()
    grace = dt.timedelta(seconds=1)  # MySQL DATETIME keeps whole seconds (and rounds)
    old_enough, not_lately = now - dt.timedelta(seconds=after_s) + grace, now - dt.timedelta(seconds=every_s) + grace
    with db.read() as s:
        pushes = s.execute(
            select(MpesaRequest.id, MpesaRequest.reference, MpesaRequest.checkout_request_id,
                   MpesaRequest.last_query_at)
            .where(MpesaRequest.status == PENDING, MpesaRequest.created_at < old_enough,
                   or_(MpesaRequest.last_query_at.is_(None), MpesaRequest.last_query_at < not_lately))
            .order_by(MpesaRequest.id).limit(limit)
        ).all()

    def count(what: str) -> None:
        counts[what] = counts.get(what, 0) + 1

    for request_id, reference, checkout_id, last_query_at in pushes:
        if not checkout_id:
            count("topup-no-checkout-id")  # the push got no answer: only its callback can settle it
            continue
        if _claim(db, request_id, last_query_at, now):
            count(_query_topup(db, provider, reference, checkout_id))
    for name in (MPESA_B2C_RAIL, MPESA_B2B_RAIL) if provider.payouts_async else ():
        rail = rail_of(name)
        if rail is None:
            continue
        for payout in machine.due(db, name, old_enough, not_lately, limit):
            if machine.claim(db, payout, now):
                answer = machine.ask(db, rail, payout)
                count(answer.reason if answer.said is Said.PENDING else answer.said.value)
    return counts


def query_one(db: Database, provider: MpesaProvider, request: MpesaRequest) -> str:
    """Ask M-Pesa about one pending push now (a worker's job, which holds it): what happened."""
    if not request.checkout_request_id:
        return "topup-no-checkout-id"
    if not _claim(db, request.id, request.last_query_at, utcnow()):
        return "claimed-elsewhere"
    return _query_topup(db, provider, request.reference, request.checkout_request_id)


def _query_topup(db: Database, provider: MpesaProvider, reference: str, checkout_id: str) -> str:
    answer = provider.query_topup(checkout_id)
    if answer.state is State.SUCCEEDED:
        return ("topup-credited" if credit_topup(db, reference, None, answer.result_code, answer.description)
                else "topup-already-done")
    if answer.state is State.FAILED:
        return ("topup-failed" if fail_topup(db, reference, answer.result_code, answer.description)
                else "topup-already-done")
    return "topup-pending"


def find_for_movement(db: Database, reference: str) -> MpesaRequest | None:
    """The newest M-Pesa request of the movement the customer knows by `reference`."""
    with db.read() as s:
        return s.scalar(select(MpesaRequest).join(Transaction, Transaction.id == MpesaRequest.transaction_id)
                        .where(Transaction.reference == reference).order_by(MpesaRequest.id.desc()).limit(1))


def pending(db: Database) -> list[MpesaRequest]:
    """Every M-Pesa request still pending, oldest first (for operators)."""
    with db.read() as s:
        return list(s.scalars(select(MpesaRequest).where(MpesaRequest.status == PENDING).order_by(MpesaRequest.id)))


# ------------------------------------------------------------------ reservations without a request
# A payout in KES reserved with no payout row: left by code from before issue 31 wrote the request
# in the reservation's transaction, or by the simulated provider's old path that wrote none (its
# process died between the reservation and the answer). M-Pesa was never asked by a row of ours,
# so the worker voids it (refund, SMS) once it is older than any request can run. Since the
# payouts table, every payout is reserved with its row: no new ones arise.
ORPHAN_AFTER_S = 60  # five times gunicorn's timeout: a request still paying it is long dead


def _no_request():
    """Neither a payout row nor an M-Pesa request row (what code before the payouts table wrote
    with the reservation, should such code still run beside this one) names the reservation."""
    return and_(~select(Payout.id).where(Payout.transaction_id == Transaction.id).exists(),
                ~select(MpesaRequest.id).where(MpesaRequest.transaction_id == Transaction.id).exists())


def orphans(db: Database, older_than_s: int = 0, limit: int = 100, reference: str | None = None
            ) -> list[Transaction]:
    """Reserved payouts in KES (withdrawals, tills, paybills) with no M-Pesa request, oldest first
    (with `reference`: that movement's, if it is one)."""
    since = utcnow() - dt.timedelta(seconds=older_than_s)
    query = select(Transaction).where(Transaction.type == WITHDRAW, Transaction.status == PENDING,
                                      Transaction.created_at <= since, _no_request())
    if reference is not None:
        query = query.where(Transaction.reference == reference)
    with db.read() as s:
        return list(s.scalars(query.order_by(Transaction.id).limit(limit)))


def void_orphan(db: Database, transaction_id: int, also: Callable[[Session], None] | None = None) -> bool:
    """Refund a reserved payout that has no M-Pesa request (SMS to the customer), once; `also` (an
    operator's audit line) in the same transaction. False if it has a request or is not pending."""
    def work() -> bool:
        with db.write() as s:
            if s.scalar(select(Payout.id).where(Payout.transaction_id == transaction_id)) is not None:
                return False
            if s.scalar(select(MpesaRequest.id).where(MpesaRequest.transaction_id == transaction_id)) is not None:
                return False
            if not refund_withdrawal_in(s, transaction_id):
                return False
            if also is not None:
                also(s)
            return True
    done = movements.retry_deadlocks(work)
    if done:
        log.warning("withdrawal %d had no M-Pesa request: refunded", transaction_id)
    return done


# ------------------------------------------------------------------ the ledger side of M-Pesa
def refund_withdrawal(db: Database, transaction_id: int) -> bool:
    """A pending debit definitely failed: mark it failed and give amount + fee back, once."""
    def work() -> bool:
        with db.write() as s:
            return refund_withdrawal_in(s, transaction_id)
    return movements.retry_deadlocks(work)


def refund_withdrawal_in(s: Session, transaction_id: int) -> bool:
    """refund_withdrawal inside the caller's transaction."""
    released = movements.release(s, transaction_id)
    if released is None:
        return False
    row, _after, user = released
    sms.queue(s, user.phone, t(user.language, "withdraw.failed", ref=row.reference))
    return True


def credit_pushed_topup(s: Session, user: User, kes: int, sats: int, receipt: str | None, reference: str) -> int:
    """Credit a top-up M-Pesa confirmed (STK push), inside the caller's transaction, which also
    moves the M-Pesa request from pending so it credits once. A receipt credits once, ever (a
    reused one raises IntegrityError). Returns the new transaction's id."""
    row_id, after, _ref = movements.credit_in(s, user.id, sats, movements.topped_up(kes, receipt),
                                                 reference=reference, mpesa_code=receipt)
    sms.queue(s, user.phone, t(user.language, "sms.topup", kes=kes, code=receipt or reference, sats=sats,
                               balance=after))
    return row_id
