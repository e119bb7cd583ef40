"""Airtime bought with sats: reserved like a withdrawal, then asked of the airtime provider.

The sats and fee are debited as a pending AIRTIME transaction (journal: customer -> airtime in
flight) and an AirtimeRequest row written *before* the provider is called, so a crash in between
leaves a row the worker asks about. The request's status moves once, pending -> settled | failed,
by a conditional UPDATE in the same database transaction as the money: delivered, the reserve
goes to the airtime float (what the house prepaid at Africa's Talking) and the fee to income;
failed (only on a definite failure), the sats go back. "No answer" leaves the sats reserved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from database import Database
from helpers.airtime.provider import AirtimeProvider, AirtimeResult, kes_of
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.phone import local, mask
from helpers.infra.refs import new_reference
from helpers.wallet import journal, transactions
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.rules import Policy
from helpers.wallet.transactions import Receipt
from helpers.wallet.users import UserView
from lightning import State
from models import (AIRTIME, AIRTIME_IN_FLIGHT, DEBIT, FAILED, PENDING, SETTLED, AirtimeRequest,
                    Transaction, utcnow)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bought:
    receipt: Receipt
    result: AirtimeResult | None  # None: a replay; the first request asked the provider


def reserve(db: Database, policy: Policy, user: UserView, phone: str, kes: int, sats: int, fee: int, price: int,
            key: str, region: str = "KE") -> Receipt:
    """Debit `sats` + `fee` (the quote for `kes` of airtime at `price`) as a pending airtime
    purchase for `phone`, with its request row. Raises InsufficientBalance or PolicyDenied."""

    def work() -> Receipt:
        with db.write() as s:
            after = transactions.debit(s, user.id, sats + fee)
            decision = policy.airtime(kes, after + sats + fee, transactions.sent_today(s, user.id), price)
            if not decision.allowed:
                raise PolicyDenied(decision.reason or "denied")
            ref = new_reference()
            row = Transaction(user_id=user.id, type=AIRTIME, direction=DEBIT, amount_sats=sats, fee_sats=fee,
                              status=PENDING, reference=ref, counterparty=phone, idempotency_key=key,
                              description=f"Airtime KES {kes} for {local(phone, region)}")
            s.add(row)
            s.flush()
            s.add(AirtimeRequest(reference=ref, user_id=user.id, transaction_id=row.id, phone=phone, amount_kes=kes,
                                 status=PENDING, queries=0))
            journal.record(s, "airtime-pending", ref, [journal.customer(user.id, sats + fee),
                                                       journal.house(AIRTIME_IN_FLIGHT, -(sats + fee))],
                           transaction_id=row.id)
            return Receipt(ref, sats, fee, after, PENDING, row.id)

    return transactions.run_once(db, key, work)


def send(db: Database, provider: AirtimeProvider, receipt: Receipt, phone: str, kes: int) -> AirtimeResult:
    """Ask the provider for the airtime a reservation paid for. SUCCEEDED: settled now; FAILED:
    refunded now; PENDING: the status callback or the worker finishes it."""
    result = provider.send(phone, kes, receipt.reference)
    if result.request_id:
        with db.write() as s:
            s.execute(update(AirtimeRequest)
                      .where(AirtimeRequest.reference == receipt.reference, AirtimeRequest.request_id.is_(None))
                      .values(request_id=result.request_id[:64]))
    if result.state is State.PENDING:
        log.info("airtime %s KES %s for %s: %s", receipt.reference, kes, mask(phone),
                 "accepted" if result.request_id else f"unknown ({result.error})")
        return result
    outcome = SETTLED if result.state is State.SUCCEEDED else FAILED
    if finish(db, receipt.reference, outcome, result.error or ("delivered" if outcome == SETTLED else "failed")):
        return result
    return AirtimeResult(State.PENDING, result.request_id, result.error)  # finished meanwhile by a callback


class _Undo(Exception):
    """The request moved but its transaction was not pending: roll both back."""


def finish(db: Database, reference: str, outcome: str, description: str,
           also: Callable[[Session], None] | None = None) -> bool:
    """The final word on an airtime request: SETTLED makes the purchase final, FAILED gives the
    reserved sats back. Once (False when it was not pending); retried whole on a deadlock. `also`
    (an operator's audit line) runs in the same transaction when it acts: both, or neither."""
    def work() -> bool:
        try:
            with db.write() as s:
                done = finish_in(s, reference, outcome, description)
                if done and also is not None:
                    also(s)
                return done
        except _Undo:
            log.error("airtime %s: its transaction is not pending; %s not applied", reference, outcome)
            return False
    return transactions.retry_deadlocks(work)


def _rows(result: Any) -> int:
    """Rows an UPDATE matched."""
    return cast(CursorResult, result).rowcount


def finish_in(s: Session, reference: str, outcome: str, description: str) -> bool:
    moved = _rows(s.execute(update(AirtimeRequest)
                            .where(AirtimeRequest.reference == reference, AirtimeRequest.status == PENDING)
                            .values(status=outcome, result_desc=description[:255], finished_at=utcnow())))
    request = s.scalar(select(AirtimeRequest).where(AirtimeRequest.reference == reference)) if moved == 1 else None
    if request is None:
        return False
    if outcome == SETTLED:
        done = _settle_in(s, request)
    else:
        released = transactions.release(s, request.transaction_id)
        done = released is not None
        if released is not None:
            row, after, user = released
            sms.queue(s, user.phone, t(user.language, "sms.airtime-failed", kes=request.amount_kes,
                                       phone=local(request.phone), ref=row.reference,
                                       sats=row.amount_sats + row.fee_sats, balance=after))
    if not done:
        raise _Undo  # rolls the request's move back with it
    log.info("airtime %s %s (%s)", reference, outcome, description)
    return True


def _settle_in(s: Session, request: AirtimeRequest) -> bool:
    posted = transactions.post_reserved(s, request.transaction_id,
                                        f"Airtime {request.request_id or '-'} KES {request.amount_kes}")
    if posted is None:
        return False
    row, user = posted
    sms.queue(s, user.phone, t(user.language, "sms.airtime", kes=request.amount_kes, phone=local(request.phone),
                               ref=row.reference, sats=row.amount_sats, fee=row.fee_sats, balance=user.balance_sats))
    return True


# ------------------------------------------------------------------ what Africa's Talking tells us later
def status_report(db: Database, provider: AirtimeProvider, fields: dict) -> tuple[int, str]:
    """Africa's Talking's delivery report (status callback): requestId, status (Success|Failed),
    phoneNumber, value ("KES 100.0000"), description. A hint, as the node's webhooks are: acted on
    only when requestId names a pending request, the phone and value are the ones asked for, and
    AT's own status query says the same (a report forged by someone who learnt the URL and an id
    moves nothing). Returns (HTTP status, outcome)."""
    request_id = str(fields.get("requestId") or "")
    status = str(fields.get("status") or "")
    if not request_id or status not in ("Success", "Failed"):
        return 400, "malformed"
    with db.read() as s:
        request = s.scalar(select(AirtimeRequest).where(AirtimeRequest.request_id == request_id[:64]))
    if request is None:
        log.warning("airtime callback for an unknown requestId %s...", request_id[:12])
        return 404, "unknown"
    if request.status != PENDING:
        return 200, "already-done"
    if str(fields.get("phoneNumber") or "") != request.phone:
        log.warning("airtime callback %s refused: phoneNumber is not the one asked for", request.reference)
        return 400, "refused"
    value = kes_of(str(fields.get("value") or ""))
    if value is not None and value != Decimal(request.amount_kes):
        log.warning("airtime callback %s refused: value %s is not KES %s", request.reference, value,
                    request.amount_kes)
        return 400, "refused"
    said = provider.query(request_id[:64])
    if said is State.PENDING:
        return 202, "checking"  # AT's query does not say so yet: the worker asks again later
    if (said is State.SUCCEEDED) != (status == "Success"):
        log.warning("airtime callback %s refused: it says %s, AT's status query says %s", request.reference, status,
                    said.value)
        return 409, "refused"
    outcome = SETTLED if status == "Success" else FAILED
    done = finish(db, request.reference, outcome, str(fields.get("description") or status))
    return 200, ("settled" if outcome == SETTLED else "refunded") if done else "already-done"


# How long a request may have no requestId because its send is still waiting for AT's answer.
SEND_GRACE_S = 60


def query(db: Database, provider: AirtimeProvider, reference: str) -> str:
    """Ask the provider about one pending request (a worker's job): what happened. "waiting":
    its send may still be under way; "no-request-id": AT never answered it with an id."""
    with db.write() as s:
        request = s.scalar(select(AirtimeRequest).where(AirtimeRequest.reference == reference))
        if request is None or request.status != PENDING:
            return "done"
        request_id, age_s = request.request_id, (utcnow() - request.created_at).total_seconds()
        s.execute(update(AirtimeRequest).where(AirtimeRequest.id == request.id)
                  .values(queries=AirtimeRequest.queries + 1))
    if not request_id:
        # the send may still be waiting for its answer; after that, only an operator can tell
        return "waiting" if age_s < SEND_GRACE_S else "no-request-id"
    state = provider.query(request_id)
    if state is State.PENDING:
        return "pending"
    outcome = SETTLED if state is State.SUCCEEDED else FAILED
    done = finish(db, reference, outcome, "status query: " + ("Success" if outcome == SETTLED else "Failed"))
    return ("settled" if outcome == SETTLED else "refunded") if done else "done"


def pending(db: Database) -> list[AirtimeRequest]:
    """Every airtime request still pending, oldest first (for operators)."""
    with db.read() as s:
        return list(s.scalars(select(AirtimeRequest).where(AirtimeRequest.status == PENDING)
                              .order_by(AirtimeRequest.id)))
