"""Incoming Lightning: invoices for "Receive BTC", payment requests, and settling them."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from sqlalchemy import ScalarSelect, Select, bindparam, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError

from database import Database
from helpers.infra.fastpath import Prepared
from helpers.wallet.customers import limits, users
from helpers.wallet.ledger import movements
from helpers.infra import sms
from helpers.wallet.errors import LightningUnavailable, RateLimited
from helpers.infra.phone import mask
from helpers.wallet.rules import Policy
from helpers.wallet.customers.users import UserView
from helpers.infra.i18n import t
from helpers.infra.refs import new_reference
from lightning import LightningBackend, State
from models import (EXPIRED, INVOICE, NODE, PAID, PENDING, RECEIVE, SETTLED, Invoice, PaymentRequest,
                    Transaction, User, utcnow)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedInvoice:
    reference: str
    amount_sats: int
    payment_hash: str
    bolt11: str
    expires_at: dt.datetime
    replay: bool = False


def _find(db: Database, key: str) -> Invoice | None:
    with db.read() as s:
        return s.scalar(select(Invoice).where(Invoice.idempotency_key == key))


def _issued(invoice: Invoice, replay: bool) -> IssuedInvoice:
    return IssuedInvoice(invoice.reference, invoice.amount_sats, invoice.payment_hash, invoice.bolt11,
                         invoice.expires_at, replay)


def issue(
    db: Database,
    policy: Policy,
    backend: LightningBackend,
    user: UserView,
    amount: int,
    memo: str,
    expiry_s: int,
    key: str | None,
    payer_phone: str | None = None,
    payer_language: str = "en",
    service_code: str = "",
    rate_limits: bool = True,
    hashed_description: str | None = None,
    limited_by: tuple[tuple[str, str], ...] | None = None,
) -> IssuedInvoice:
    """Create an invoice on the node for `user` and record it; SMS the BOLT11 to the user, or, for a
    payment request (`payer_phone`), to the payer. A replay of `key` returns the first invoice.
    Without a key (an invoice asked for through the user's Lightning address, committing to the
    LNURL metadata by `hashed_description`) nobody is sent an SMS: the payer already has it.
    `limited_by`: the (limit, key) pairs this invoice counts against, instead of the user's own
    (`invoices-per-phone`): a stranger asking through the Lightning address is counted by where
    the ask came from, so nobody can use up a customer's own limit. Raises RateLimited or
    LightningUnavailable."""
    found = _find(db, key) if key else None
    if found is not None:
        return _issued(found, True)
    checks = list(limited_by) if limited_by is not None else [("invoices-per-phone", user.phone)]
    if payer_phone is not None:  # each request SMSes a stranger: we must not be a bombing tool
        checks.append(("requests-to-payer", payer_phone))
    exceeded = limits.allow(db, policy, *checks, enabled=rate_limits)
    if exceeded:
        log.warning("invoice refused: %s reached by %s", exceeded, mask(user.phone))
        raise RateLimited(exceeded)
    result = backend.create_invoice(amount, memo, expiry_s, hashed_description)
    if not result.ok:
        log.warning("invoice creation failed on %s: %s", backend.name, result.error)
        raise LightningUnavailable(result.error)
    reference = new_reference()
    try:
        with db.write() as s:
            invoice = Invoice(
                user_id=user.id, reference=reference, bolt11=result.bolt11, payment_hash=result.payment_hash,
                amount_sats=amount, memo=memo, status=PENDING, idempotency_key=key,
                expires_at=utcnow() + dt.timedelta(seconds=expiry_s),
            )
            s.add(invoice)
            s.flush()
            if key is None:
                pass  # asked for by a payer through the Lightning address: they hold the invoice
            elif payer_phone is None:
                sms.queue(s, user.phone, t(user.language, "sms.invoice", amount=amount, ref=reference,
                                           bolt11=result.bolt11))
            else:
                s.add(PaymentRequest(requester_id=user.id, payer_phone=payer_phone, invoice_id=invoice.id,
                                     amount_sats=amount, status=PENDING))
                payer_is_user = s.scalar(select(User.id).where(User.phone == payer_phone)) is not None
                if payer_is_user:  # pays from the menu; a payable BOLT11 would invite paying twice
                    message = t(payer_language, "sms.request-user", phone=user.phone, amount=amount,
                                ref=reference, code=service_code)
                else:
                    message = t(payer_language, "sms.request", phone=user.phone, amount=amount, ref=reference,
                                code=service_code, bolt11=result.bolt11)
                sms.queue(s, payer_phone, message)
            return _issued(invoice, False)
    except IntegrityError:
        found = _find(db, key) if key else None  # a concurrent twin recorded its invoice first
        if found is None:
            raise
        return _issued(found, True)


@dataclass(frozen=True)
class OpenRequest:
    id: int
    reference: str
    amount_sats: int
    requester_phone: str
    payment_hash: str


_INVOICES = Invoice.__table__
_REQUESTS = PaymentRequest.__table__
_USERS = User.__table__
LISTED = 3  # open payment requests shown (and counted on the main menu)


@lru_cache(maxsize=4)
def _open_requests(limit: int) -> Select:
    """Built once per limit: the compiled form is then reused from SQLAlchemy's cache."""
    return (
        select(_REQUESTS.c.id, _INVOICES.c.reference, _REQUESTS.c.amount_sats, _USERS.c.phone,
               _INVOICES.c.payment_hash)
        .join(_INVOICES, _INVOICES.c.id == _REQUESTS.c.invoice_id)
        .join(_USERS, _USERS.c.id == _REQUESTS.c.requester_id)
        .where(
            _REQUESTS.c.payer_phone == bindparam("payer_phone"),
            _REQUESTS.c.status == PENDING,
            _INVOICES.c.status == PENDING,
            _INVOICES.c.expires_at > bindparam("now", type_=Invoice.expires_at.type),
        )
        .order_by(_REQUESTS.c.id)
        .limit(limit)
    )


def open_requests_count() -> ScalarSelect:
    """How many open requests the main menu announces (at most LISTED), as a column that another
    read can carry (the step's first read does). Its parameters: `payer_phone` and `now`."""
    listed = _open_requests(LISTED).with_only_columns(_REQUESTS.c.id)
    return select(func.count()).select_from(listed.subquery("listed")).scalar_subquery()


_COUNT_OPEN = Prepared(select(open_requests_count()))


def count_open_requests(db: Database, payer_phone: str) -> int:
    """How many open requests the main menu announces to `payer_phone` (at most LISTED)."""
    return db.execute(_COUNT_OPEN, {"payer_phone": payer_phone, "now": utcnow()}).scalar()


def open_requests(db: Database, payer_phone: str, limit: int = LISTED) -> list[OpenRequest]:
    """Payment requests addressed to `payer_phone` that can still be paid, oldest first."""
    rows = db.fetch_all(_open_requests(limit), {"payer_phone": payer_phone, "now": utcnow()})
    return [OpenRequest(*row) for row in rows]


def sync(db: Database, backend: LightningBackend, payment_hash: str) -> str:
    """Ask the node about one of our pending invoices and act: credit once when paid, mark
    expired when the node says it can no longer be paid. Returns the invoice's status."""
    status = backend.invoice_status(payment_hash)
    if status.state is State.SUCCEEDED:
        if credit_invoice(db, payment_hash) is None:
            _report_double_payment(db, payment_hash)
    elif status.state is State.FAILED:
        expire(db, payment_hash)
    with db.read() as s:
        return s.scalar(select(Invoice.status).where(Invoice.payment_hash == payment_hash)) or "unknown"


def status_of(db: Database, payment_hash: str) -> str | None:
    """Our status of the invoice with this hash, None if it is not ours."""
    with db.read() as s:
        return s.scalar(select(Invoice.status).where(Invoice.payment_hash == payment_hash))


def _report_double_payment(db: Database, payment_hash: str) -> None:
    """The node was paid for an invoice that a user had already paid from their balance: the
    Lightning payer's sats are on the node with no owner. Operators must refund them."""
    with db.read() as s:
        invoice = s.scalar(select(Invoice).where(Invoice.payment_hash == payment_hash))
        if invoice is None or invoice.status != "paid":
            return
        by_lightning = s.scalar(
            select(Transaction.id).where(Transaction.payment_hash == payment_hash,
                                         Transaction.counterparty == "lightning"))
    if by_lightning is None:
        log.error("invoice %s was paid on the node after it was paid internally: %s sats to refund",
                  invoice.reference, invoice.amount_sats)


def expire(db: Database, payment_hash: str) -> bool:
    with db.write() as s:
        invoice_id = s.scalar(select(Invoice.id).where(Invoice.payment_hash == payment_hash))
        moved = cast(CursorResult, s.execute(
            update(Invoice).where(Invoice.id == invoice_id, Invoice.status == PENDING).values(status=EXPIRED)
        )).rowcount
        if moved:
            s.execute(
                update(PaymentRequest)
                .where(PaymentRequest.invoice_id == invoice_id, PaymentRequest.status == PENDING)
                .values(status=EXPIRED)
            )
        return moved == 1


def poll_pending(db: Database, backend: LightningBackend, limit: int = 500) -> dict[str, int]:
    """Sync every pending invoice; return counts by resulting status."""
    with db.read() as s:
        hashes = s.scalars(select(Invoice.payment_hash).where(Invoice.status == PENDING).limit(limit)).all()
    counts: dict[str, int] = {}
    for payment_hash in hashes:
        status = sync(db, backend, payment_hash)
        counts[status] = counts.get(status, 0) + 1
    return counts


# ------------------------------------------------------------------ a paid invoice
def credit_invoice(db: Database, payment_hash: str) -> movements.Receipt | None:
    """Credit the owner of a paid invoice, exactly once (None if it was not pending).
    Call only after the Lightning node has confirmed the payment."""
    return movements.retry_deadlocks(lambda: _credit_invoice(db, payment_hash))


def _credit_invoice(db: Database, payment_hash: str) -> movements.Receipt | None:
    with db.write() as s:
        claimed = cast(CursorResult, s.execute(
            update(Invoice)
            .where(Invoice.payment_hash == payment_hash, Invoice.status == PENDING)
            .values(status=PAID, paid_at=utcnow())
        )).rowcount
        if claimed != 1:
            return None
        # claimed above, in this transaction: NoResultFound if it is missing all the same
        invoice = s.execute(select(Invoice).where(Invoice.payment_hash == payment_hash)).scalar_one()
        is_request = cast(CursorResult, s.execute(
            update(PaymentRequest)
            .where(PaymentRequest.invoice_id == invoice.id, PaymentRequest.status == PENDING)
            .values(status=PAID)
        )).rowcount
        came = movements.Incoming("receive", NODE, INVOICE if is_request else RECEIVE, counterparty="lightning")
        row_id, after, _ref = movements.credit_in(s, invoice.user_id, invoice.amount_sats, came,
                                                     reference=invoice.reference, invoice_id=invoice.id,
                                                     payment_hash=payment_hash)
        owner = users.owner(s, invoice.user_id)
        sms.queue(s, owner.phone, t(owner.language, "sms.invoice-paid", ref=invoice.reference,
                                    amount=invoice.amount_sats, balance=after))
        return movements.Receipt(invoice.reference, invoice.amount_sats, 0, after, SETTLED, row_id)
