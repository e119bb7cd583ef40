"""Lightning payments out of the wallet: pay a Lightning address, and settle the ones the node had
not finished when the customer's screen needed an answer.

The order never changes: the invoice is fetched and checked, amount + the most the route may
cost is reserved (a pending debit), then the node pays with that fee limit. The node's answer
settles it (the unused fee reserve goes back), refunds it (a failure the node confirmed) or
leaves it pending. Pending payments are asked about again by `reconcile` (the worker, helpers/web/worker.py, and
`flask reconcile`), which refunds only when two status checks in a row say "failed": an unknown,
unreachable or in-flight payment is never refunded, because the node might still pay it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from helpers.lightning import lnurl_pay

from helpers.infra.rail import Rail, Said
from helpers.wallet.ledger import movements
from helpers.wallet.payouts import lightning_out
from helpers.wallet.reports import books
from helpers.wallet.payouts import machine
from helpers.lightning.lnurl_pay import PayParams
from helpers.wallet.services import Services
from helpers.wallet.ledger.movements import Receipt
from lightning import State, decode_invoice
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from database import Database
from models import AIRTIME, DEBIT, FAILED, LIGHTNING_RAIL, OPEN_PAYOUT, PENDING, SEND, SETTLED, Payout, Transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Payment:
    state: State
    receipt: Receipt
    replay: bool = False


def pay_address(svc: Services, user: UserView, params: PayParams, amount: int, key: str,
                within: Callable[[Session], None] | None = None) -> Payment:
    """Pay `amount` sats to the Lightning address behind `params`. Raises LnurlPayError (nothing
    reserved; `name-required`: the payee's server must have a verified name the customer has not),
    InsufficientBalance, PolicyDenied or InvoiceAlreadyPaid (the payee answered with an invoice
    that is pending or paid here already: nothing reserved). The payout keeps the sender's phone
    and name (the travel rule)."""
    earlier = movements.find_by_key(svc.db, key)
    if earlier is not None:  # a replay: never fetch or pay a second invoice
        state = {SETTLED: State.SUCCEEDED, FAILED: State.FAILED}.get(earlier.status, State.PENDING)
        return Payment(state, movements.replay_of(svc.db, earlier), replay=True)
    max_fee = svc.policy.fee_sats("lightning", amount)
    name, verified = users.name_of(svc.db, user.id)
    # LUD-18: only a name we verified (tier 1) is given to another custodian, and only when asked
    bolt11 = lnurl_pay.fetch_invoice(params, amount, svc.settings, name if verified else None)
    payment_hash = decode_invoice(bolt11).payment_hash
    rail = _rail(svc)
    reserved = lightning_out.reserve_lightning(
        svc.db, rail, svc.policy, user, amount, max_fee, (params.min_sats, params.max_sats), payment_hash,
        params.address, key, bolt11, svc.prices.for_limits(), originator_name=name, within=within,
    )
    if reserved.replay:  # a twin request reserved first; it pays
        return Payment(State.PENDING, reserved, replay=True)
    machine.send(svc.db, rail, reserved.reference)
    # what the movement says now (the node's answer, or the worker's if it finished it meanwhile)
    receipt = lightning_out.receipt_of(svc.db, reserved.transaction_id) or reserved
    receipt = replace(receipt, left_today=reserved.left_today)
    state = {SETTLED: State.SUCCEEDED, FAILED: State.FAILED}.get(receipt.status, State.PENDING)
    return Payment(state, receipt)


def _rail(svc: Services) -> Rail:
    rail = svc.rail(LIGHTNING_RAIL)
    if rail is None:
        raise RuntimeError("the Lightning rail is not registered")
    return rail


def reconcile(svc: Services, limit: int = 200) -> dict[str, int]:
    """Ask the node about every pending outgoing payment; settle or refund what it is sure of."""
    counts = {"settled": 0, "refunded": 0, "pending": 0}
    rail = _rail(svc)
    with svc.db.read() as s:
        pending = list(s.scalars(select(Payout).where(Payout.rail == LIGHTNING_RAIL, Payout.state.in_(OPEN_PAYOUT))
                                 .order_by(Payout.id).limit(limit)))
    for payout in pending:
        answer = machine.ask(svc.db, rail, payout)
        counts[{Said.PAID: "settled", Said.FAILED: "refunded"}.get(answer.said, "pending")] += 1
    return counts


@dataclass(frozen=True)
class NodeMismatch:
    """A payment the ledger counts as gone out through Lightning that the node does not confirm."""

    payment_hash: str
    references: tuple[str, ...]
    problem: str


def compare_with_node(svc: Services) -> list[NodeMismatch]:
    """Every payment hash the ledger settled as paid out, against what the node says of it: a
    hash settled more than once, or one the node does not report as SUCCEEDED (FAILED, or
    unknown to it), is named. The fee the node charged must not exceed what the ledger took."""
    with svc.db.read() as s:
        paid_out = books.settled_lightning_out(s)
    problems = []
    for paid in paid_out:
        if len(paid.references) > 1:
            problems.append(NodeMismatch(paid.payment_hash, paid.references,
                                         f"settled {len(paid.references)} times"))
        status = svc.lightning.payment_status(paid.payment_hash)
        if status.state is not State.SUCCEEDED:
            problems.append(NodeMismatch(paid.payment_hash, paid.references,
                                         f"node says {status.state.value} {status.error}".strip()))
        elif status.fee_sat > paid.fee_sats:
            problems.append(NodeMismatch(paid.payment_hash, paid.references,
                                         f"node charged {status.fee_sat} sats in fees, ledger {paid.fee_sats}"))
    return problems


class CannotResolve(Exception):
    """An operator's decision that the node contradicts, or no such pending payment."""


def resolve_by_operator(svc: Services, reference: str, paid: bool, reason: str,
                        audit: Callable[[Session, str, str], None] | None = None) -> tuple[Receipt, str]:
    """End a pending payment out that the node cannot settle: it never heard of it (we stopped
    between reserving and paying) or lost it. The node is asked once more first, and wins: a
    payment it reports as paid is settled and one it reports as failed (twice) is refunded,
    whatever the operator chose; the operator's choice only decides what the node cannot.
    `audit(session, outcome, node said)`: the operator's audit line, written in the transaction
    that settles or refunds (both, or neither). Returns the receipt and what the node said.
    Raises CannotResolve."""
    with svc.db.read() as s:
        row = next(iter(lightning_out.pending_lightning(s, limit=1, reference=reference)), None)
    if row is None:
        raise CannotResolve(f"no pending Lightning payment with reference {reference!r}")
    payment_hash = lightning_out.payment_hash_of(row)
    status = svc.lightning.payment_status(payment_hash)
    if status.state is State.FAILED:
        status = svc.lightning.payment_status(payment_hash)
    said = f"{status.state.value}{' (' + status.error + ')' if status.error else ''}"
    if status.state is State.SUCCEEDED and not paid:
        raise CannotResolve(f"the node says {reference} was paid: not refunded (run `flask reconcile`)")
    if status.state is State.FAILED and paid:
        raise CannotResolve(f"the node says {reference} failed: not settled (run `flask reconcile`)")
    note = f"Lightning payment; operator: {reason}"
    rail = _rail(svc)
    if status.state is State.SUCCEEDED or (status.state is State.PENDING and paid):
        fee = status.fee_sat if status.state is State.SUCCEEDED else row.fee_sats
        receipt = lightning_out.settle_lightning(svc.db, rail, row.id, fee, note, _audit_as(audit, SETTLED, said))
    else:
        # Unless the node said FAILED, it may still pay this hash: keep it taken, so that nobody
        # reserves it again and gets settled by this payment's success.
        receipt = lightning_out.refund_lightning(svc.db, rail, row.id, note,
                                                 invoice_paid=status.state is not State.FAILED,
                                                 also=_audit_as(audit, FAILED, said))
    if receipt is None:
        raise CannotResolve(f"{reference} is no longer pending")
    return receipt, said


def _audit_as(audit: Callable[[Session, str, str], None] | None, outcome: str, said: str
              ) -> Callable[[Session], None] | None:
    return None if audit is None else (lambda s: audit(s, outcome, said))




def recent_payees(db: Database, user_id: int, count: int = 3) -> list[str]:
    """The last `count` distinct people or addresses this customer paid (phones E.164, Lightning
    addresses), newest first: offered on the send screen so a regular payee is not typed again."""
    return _recent(db, user_id, count, Transaction.type == SEND)


def recent_businesses(db: Database, user_id: int, prefix: str, count: int = 3) -> list[str]:
    """The last `count` distinct tills ("Till ...") or paybills ("Paybill ... acct ...") this
    customer paid, newest first, as their payments name them."""
    return _recent(db, user_id, count, Transaction.type == "withdraw", Transaction.counterparty.like(prefix + " %"))


def recent_airtime(db: Database, user_id: int, own_phone: str, count: int = 3) -> list[str]:
    """The last `count` distinct other numbers (E.164) this customer bought airtime for, newest
    first (their own number has its own option)."""
    return _recent(db, user_id, count, Transaction.type == AIRTIME, Transaction.counterparty != own_phone)


def _recent(db: Database, user_id: int, count: int, *kind: ColumnElement[bool]) -> list[str]:
    with db.read() as s:
        rows = s.scalars(select(Transaction.counterparty).where(
            Transaction.user_id == user_id, Transaction.direction == DEBIT, *kind,
            Transaction.status.in_((SETTLED, PENDING)), Transaction.counterparty.is_not(None))
            .order_by(Transaction.id.desc()).limit(30))
        return list(dict.fromkeys(payee for payee in rows if payee))[:count]
