"""Lightning payments out in the ledger: payouts on the Lightning rail (helpers/lightning/rail.py).
Reserved (amount + the most the route may cost) with the payout row before the node is asked, then
posted at the fee the route really cost, or voided once when the node confirms a failure. A
payment hash is the payout's rail key, taken once: an invoice is never paid twice."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from database import Database
from helpers.infra.rail import Answer, Rail
from helpers.wallet.ledger import movements
from helpers.wallet.errors import InvoiceAlreadyPaid, PolicyDenied
from helpers.wallet.payouts import books, machine
from helpers.wallet.rules import Policy
from helpers.wallet.ledger.movements import Receipt
from helpers.wallet.customers import tiers
from helpers.wallet.customers.users import UserView
from models import DEBIT, OPEN_PAYOUT, PENDING, SEND, Payout, Transaction, User


def reserve_lightning(
    db: Database, rail: Rail, policy: Policy, user: UserView, amount: int, max_fee: int,
    payee_bounds: tuple[int, int], payment_hash: str, payee: str, key: str, bolt11: str = "",
    price: int | None = None, originator_name: str | None = None, within: Callable[[Session], None] | None = None,
) -> Receipt:
    """Debit amount + the most the route may cost as a Lightning payout of `bolt11`, before the node
    is asked to pay. A payment hash is taken once: while a payout of it is open or paid, another
    reservation raises InvoiceAlreadyPaid and nothing is debited. The payout keeps the sender's
    phone and `originator_name` (the travel rule: a payment to another custodian). Raises
    InsufficientBalance, PolicyDenied or InvoiceAlreadyPaid (a replay gets the first receipt). The
    customer's tier caps hold at `price` (KES per BTC; None: the policy's fixed price). `within`:
    the caller's check in the reservation's transaction, before anything is reserved."""
    price = price or policy.value("fixed-kes-per-btc")

    def work() -> Receipt:
        with db.write() as s:
            if within is not None:
                within(s)

            def check(after: int) -> int:
                def decide(today: int) -> None:
                    decision = policy.lightning_send(amount, max_fee, after + amount + max_fee, today, *payee_bounds)
                    if not decision.allowed:
                        raise PolicyDenied(decision.reason or "denied")
                return movements.check_out(s, policy, user.id, tiers.caps(policy, user.tier, price), amount, decide)
            try:
                return books.reserve(s, rail, user.id, amount, 0, bolt11 or payee, key, check=check,
                                     counterparty=payee[:64], description="Lightning payment", rail_key=payment_hash,
                                     fee_limit=max_fee, payment_hash=payment_hash,
                                     originator=(user.phone, originator_name))
            except books.RailKeyTaken as exc:  # another payout holds this hash: pending or paid
                raise InvoiceAlreadyPaid(payment_hash) from exc

    return movements.run_once(db, key, work)


def _payout_of(db: Database, transaction_id: int) -> Payout | None:
    with db.read() as s:
        return s.scalar(select(Payout).where(Payout.transaction_id == transaction_id))


def receipt_of(db: Database, transaction_id: int) -> Receipt | None:
    """What a payment's movement says now, with its owner's balance."""
    with db.read() as s:
        row = s.get(Transaction, transaction_id)
        if row is None:
            return None
        balance = s.scalar(select(User.balance_sats).where(User.id == row.user_id)) or 0
        return Receipt(row.reference, row.amount_sats, row.fee_sats, balance, row.status, row.id)


def settle_lightning(db: Database, rail: Rail, transaction_id: int, fee_paid: int, note: str = "",
                     also: Callable[[Session], None] | None = None) -> Receipt | None:
    """The node paid: the payout is posted once, at the fee the route really cost; what was
    reserved beyond it goes back. None if it was not open. A payment left by older code whose
    hash another payout holds is refunded instead (the node's "paid" is the holder's). `note`
    (an operator's reason) is kept in the movement's description; `also` (their audit line) runs
    in the same transaction when it acts: both are written, or neither."""
    payout = _payout_of(db, transaction_id)
    if payout is None or payout.state not in OPEN_PAYOUT:
        return None
    if payout.rail_key is None:
        answer = Answer.failed("its payment hash was another payout's")
    else:
        answer = Answer.paid(cost_sats=fee_paid, reason="paid")
    if not machine.finish(db, rail, payout.reference, answer, note, also):
        return None
    return receipt_of(db, transaction_id)


def refund_lightning(db: Database, rail: Rail, transaction_id: int, note: str = "", invoice_paid: bool = False,
                     also: Callable[[Session], None] | None = None) -> Receipt | None:
    """The node confirmed the payment failed (or an operator did): amount + reserved fee back,
    once. The payment hash is freed for another try, unless `invoice_paid`: the node refused
    because the invoice is paid already, and nobody may pay it again. `also` (an operator's audit
    line) runs in the same transaction when it acts."""
    payout = _payout_of(db, transaction_id)
    if payout is None or payout.state not in OPEN_PAYOUT:
        return None
    if not machine.finish(db, rail, payout.reference, Answer.failed("failed", frees_key=not invoice_paid), note,
                          also):
        return None
    return receipt_of(db, transaction_id)


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
