"""Lightning payments out in the ledger: reserved (amount + the most the route may cost) before the
node is asked, then settled at the fee it really cost, or refunded once when the node confirms a
failure. A payment hash is reserved once (outgoing_payments): an invoice is never paid twice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.wallet.errors import (
    InvoiceAlreadyPaid,
    PolicyDenied,
)
from helpers.infra.i18n import t
from helpers.infra.refs import new_reference
from helpers.wallet.rules import Policy
from helpers.wallet.users import UserView
from models import (
    LN_IN_FLIGHT,
    NODE,
    DEBIT,
    FAILED,
    PENDING,
    SEND,
    SETTLED,
    OutgoingPayment,
    Transaction,
    utcnow,
)

from helpers.wallet import journal, users
from helpers.wallet.transactions import Receipt, balance, credit, debit, release, retry_deadlocks, run_once, sent_today

log = logging.getLogger(__name__)


def reserve_lightning(
    db: Database, policy: Policy, user: UserView, amount: int, max_fee: int, payee_bounds: tuple[int, int],
    payment_hash: str, payee: str, key: str,
) -> Receipt:
    """Debit amount + the most the route may cost as a pending Lightning payment, before the node
    is asked to pay. A payment hash is reserved once (outgoing_payments): while a payment of it is
    pending or paid, another reservation raises InvoiceAlreadyPaid and nothing is debited.
    Raises InsufficientBalance, PolicyDenied or InvoiceAlreadyPaid (a replay gets the first
    receipt)."""

    def work() -> Receipt:
        with db.write() as s:
            after = debit(s, user.id, amount + max_fee)
            decision = policy.lightning_send(amount, max_fee, after + amount + max_fee, sent_today(s, user.id),
                                             *payee_bounds)
            if not decision.allowed:
                raise PolicyDenied(decision.reason or "denied")
            ref = new_reference()
            row = Transaction(
                user_id=user.id, type=SEND, direction=DEBIT, amount_sats=amount, fee_sats=max_fee,
                status=PENDING, reference=ref, counterparty=payee[:64], payment_hash=payment_hash,
                idempotency_key=key, description="Lightning payment",
            )
            s.add(row)
            s.flush()  # a replay of this request fails here, on the key
            s.add(OutgoingPayment(payment_hash=payment_hash, transaction_id=row.id))
            try:
                s.flush()
            except IntegrityError as exc:  # another reservation holds this hash: pending or paid
                raise InvoiceAlreadyPaid(payment_hash) from exc
            journal.record(s, "lightning-pending", ref, [journal.customer(user.id, amount + max_fee),
                                                         journal.house(LN_IN_FLIGHT, -(amount + max_fee))],
                           transaction_id=row.id)
            return Receipt(ref, amount, max_fee, after, PENDING, row.id)

    return run_once(db, key, work)


def _settle_lightning(db: Database, transaction_id: int, fee_paid: int, note: str = "",
                      also: Callable[[Session], None] | None = None) -> Receipt | None:
    """The node paid: the pending payment is settled once, at the fee the route really cost;
    what was reserved beyond it goes back. None if it was not pending. `note` (an operator's
    reason) is kept in the row's description; `also` (their audit line) runs in the same
    transaction when it acts: both are written, or neither."""
    with db.write() as s:
        receipt = _settle_in(s, transaction_id, fee_paid, note)
        if receipt is not None and also is not None:
            also(s)
        return receipt


def _settle_in(s: Session, transaction_id: int, fee_paid: int, note: str) -> Receipt | None:
    """_settle_lightning in the caller's transaction."""
    row = s.get(Transaction, transaction_id)
    if row is None or row.status != PENDING or row.direction != DEBIT:
        return None
    holder = s.scalar(select(OutgoingPayment.transaction_id)
                      .where(OutgoingPayment.payment_hash == row.payment_hash))
    if holder is not None and holder != row.id:
        # The node's "succeeded" is another payment's: this hash is held by an earlier row (a
        # duplicate left from before the guard existed). This attempt moved nothing.
        log.error("payment %s: its hash was paid by transaction %s; refunded", row.reference, holder)
        return _refund_in(s, transaction_id, note, keep_hash=True)
    reserved = row.fee_sats
    if not 0 <= fee_paid <= reserved:
        log.error("payment %s cost %s sats in fees, more than the %s reserved", row.reference, fee_paid, reserved)
        fee_paid = reserved  # the node broke our limit: the wallet absorbs it, never the user
    moved = cast(CursorResult, s.execute(
        update(Transaction)
        .where(Transaction.id == transaction_id, Transaction.status == PENDING)
        .values(status=SETTLED, settled_at=utcnow(), fee_sats=fee_paid,
                **({"description": note[:255]} if note else {}))
    )).rowcount
    if moved != 1:
        return None
    after = credit(s, row.user_id, reserved - fee_paid) if reserved > fee_paid else balance(s, row.user_id)
    journal.record(s, "lightning-post", row.reference,
                   [journal.house(LN_IN_FLIGHT, row.amount_sats + reserved),
                    journal.house(NODE, -(row.amount_sats + fee_paid)),
                    journal.customer(row.user_id, -(reserved - fee_paid))],
                   transaction_id=row.id, follows=journal.entry_of(s, row.id, "lightning-pending"), memo=note)
    user = users.owner(s, row.user_id)
    sms.queue(s, user.phone, t(user.language, "sms.sent", amount=row.amount_sats, phone=row.counterparty,
                               fee=fee_paid, ref=row.reference, balance=after))
    return Receipt(row.reference, row.amount_sats, fee_paid, after, SETTLED, row.id)

def settle_lightning(db: Database, transaction_id: int, fee_paid: int, note: str = "",
                     also: Callable[[Session], None] | None = None) -> Receipt | None:
    """_settle_lightning, run again whole when the database rolled it back for a deadlock or a Galera
    certification conflict (it acts once: its updates are conditional)."""
    return retry_deadlocks(lambda: _settle_lightning(db, transaction_id, fee_paid, note, also))



def _refund_lightning(db: Database, transaction_id: int, note: str = "", invoice_paid: bool = False,
                      also: Callable[[Session], None] | None = None) -> Receipt | None:
    """The node confirmed the payment failed (or an operator did): give amount + reserved fee
    back, once. The payment hash is released for another try, unless `invoice_paid`: the node
    refused because the invoice is paid already, and nobody may pay it again. `also` (an
    operator's audit line) runs in the same transaction when it acts."""
    with db.write() as s:
        receipt = _refund_in(s, transaction_id, note, keep_hash=invoice_paid)
        if receipt is not None and also is not None:
            also(s)
        return receipt

def refund_lightning(db: Database, transaction_id: int, note: str = "", invoice_paid: bool = False,
                     also: Callable[[Session], None] | None = None) -> Receipt | None:
    """_refund_lightning, run again whole when the database rolled it back for a deadlock or a Galera
    certification conflict (it acts once: its updates are conditional)."""
    return retry_deadlocks(lambda: _refund_lightning(db, transaction_id, note, invoice_paid, also))



def _refund_in(s: Session, transaction_id: int, note: str, keep_hash: bool) -> Receipt | None:
    released = release(s, transaction_id, note)
    if released is None:
        return None
    row, after, user = released
    if not keep_hash:
        s.execute(delete(OutgoingPayment).where(OutgoingPayment.transaction_id == transaction_id))
    sms.queue(s, user.phone, t(user.language, "sms.lightning-failed", amount=row.amount_sats,
                               phone=row.counterparty, ref=row.reference, balance=after))
    return Receipt(row.reference, row.amount_sats, row.fee_sats, after, FAILED, row.id)


def pending_lightning(session: Session, limit: int = 200, reference: str | None = None) -> list[Transaction]:
    """Outgoing Lightning payments whose outcome the node has not told us yet, oldest first."""
    query = select(Transaction).where(Transaction.status == PENDING, Transaction.type == SEND,
                                      Transaction.direction == DEBIT, Transaction.payment_hash.is_not(None))
    if reference is not None:
        query = query.where(Transaction.reference == reference)
    return list(session.scalars(query.order_by(Transaction.id).limit(limit)))


def payment_hash_of(row: Transaction) -> str:
    """The payment hash of a row pending_lightning returned (it returns only rows with one)."""
    if row.payment_hash is None:
        raise ValueError(f"payment {row.reference} has no payment hash")
    return row.payment_hash
