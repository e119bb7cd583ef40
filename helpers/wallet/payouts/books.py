"""The wallet's three verbs for a payout, each in the caller's transaction with one journal entry.

reserve: the customer's amount + fee (+ the rail's fee limit) leave their balance for the rail's
         in-flight account by a pending entry; the payout row (reserved) is written with it: never
         one without the other.
post:    the payout moves to posted once (a conditional UPDATE); an entry that follows the pending
         one takes the reservation on to the asset that paid it (amount + what the rail cost) and
         our fee to income.
void:    the payout moves to voided once; an entry that follows the pending one gives the
         reservation back to the customer.
A post or void whose pending entry is no longer pending raises Undo: the caller's transaction rolls
back with it, so the payout and its money never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.rail import Answer, Books, PayoutView, Rail
from helpers.infra.refs import new_reference
from helpers.wallet import rules
from helpers.wallet.customers import tiers, users
from helpers.wallet.ledger import journal, movements
from helpers.wallet.errors import WalletError
from helpers.wallet.ledger.movements import Receipt
from models import (ADJUSTMENTS, CREDIT, DEBIT, FAILED, FEES, OPEN_PAYOUT, PENDING, POST, POSTED, RESERVED, SETTLED,
                    VOID, VOIDED, Payout, Posting, Transaction, utcnow)

log = logging.getLogger(__name__)


class Undo(Exception):
    """The payout moved but its reservation was not pending: roll both back."""


class RailKeyTaken(WalletError):
    """A reservation whose rail key another payout holds (an invoice pending or paid already)."""


def _rows(result: Any) -> int:
    return cast(CursorResult, result).rowcount


def view(payout: Payout, movement: Transaction | None = None) -> PayoutView:
    return PayoutView(payout.reference, payout.rail, payout.user_id, payout.destination, payout.amount_sats,
                      payout.fee_sats, payout.amount_kes, payout.rail_key, payout.state, payout.created_at,
                      movement.reference if movement is not None else payout.reference, payout.rail_ref,
                      (movement.counterparty or "") if movement is not None else "", payout.fee_limit_sats)


def reserve(s: Session, rail: Rail, user_id: int, amount: int, fee: int, destination: str, key: str, *,
            check: Callable[[int], int], amount_kes: int | None = None, counterparty: str = "",
            description: str = "", reference: str | None = None, rail_key: str | None = None,
            fee_limit: int = 0, payment_hash: str | None = None,
            originator: tuple[str, str | None] | None = None, payer: str | None = None) -> Receipt:
    """Take `amount` + `fee` from the customer for a payout on `rail`, with its movement row and
    payout row. `check(balance after)` asks the policy once the debit holds this customer's row
    (raise PolicyDenied to refuse) and returns what may still go out of their account today after
    this payout (movements.check_out: the receipt says it). `reference`: the payout's own, when the
    rail is given another than the customer's; `rail_key`: the rail's id when it is ours to choose (Daraja B2C's
    originator id, a Lightning invoice's payment hash: taken once, see RailKeyTaken); `fee_limit`:
    the most the rail itself may cost, reserved too, what it did not cost given back at the post;
    `payment_hash`: kept on the movement too (statements, the node comparison); `originator`: the
    sender's (phone, name) kept with a payment to another custodian (the travel rule); `payer`: a
    house account that pays instead of the customer (a group's "chama:<id>", which may not go below
    zero; `user_id` is then who asked for it and hears of it, and `check` is not asked). Raises
    InsufficientBalance, AccountLocked, PolicyDenied, RailKeyTaken; a replay of `key` fails on it
    (movements.run_once gives the first receipt)."""
    total = amount + fee + fee_limit
    ref = new_reference()
    left: list[int] = []
    # a payer's entry is named for the customer who asked but is no debit of theirs (not counted
    # in what they sent today)
    recorded = journal.record(
        s, journal.Entry(f"{rail.books.kind}-pending", ref, user_id, rail.books.movement,
                         DEBIT if payer is None else CREDIT, amount,
                         fee + fee_limit, status=PENDING, counterparty=counterparty or destination,
                         description=description or None,
                         idempotency_key=key, payment_hash=payment_hash),
        [journal.customer(user_id, total) if payer is None else journal.house(payer, total),
         journal.house(rail.books.in_flight, -total)],
        check=None if payer is not None else lambda balances: left.append(check(balances[user_id])))
    s.add(Payout(reference=reference or ref, rail=rail.name, user_id=user_id, transaction_id=recorded.id,
                 destination=destination, amount_sats=amount, fee_sats=fee, fee_limit_sats=fee_limit,
                 amount_kes=amount_kes, state=RESERVED, queries=0, rail_key=rail_key,
                 originator_phone=originator[0] if originator else None,
                 originator_name=originator[1] if originator else None))
    try:
        s.flush()
    except IntegrityError as exc:  # UNIQUE(rail, rail_key): another payout holds this key, open or paid
        if rail_key is None:
            raise
        raise RailKeyTaken(rail_key) from exc
    return Receipt(ref, amount, fee + fee_limit, recorded.balances.get(user_id, 0), PENDING, recorded.id,
                   left_today=left[0] if left else 0)


def _payer(s: Session, payout: Payout) -> str | None:
    """The group account ("chama:<id>") that paid a payout's reservation instead of its customer,
    read from the reservation's postings (matched in Python: a pattern in SQL meets MySQL's
    collation rules); None: the customer's own (or, for a reservation the journal migration
    opened, whatever house account it names: still the customer's money)."""
    codes = s.scalars(select(Posting.account).where(Posting.entry_id == payout.transaction_id, Posting.amount_sats > 0,
                                                    Posting.user_id.is_(None))).all()
    return next((code for code in codes if code and code.startswith(journal.GROUP_PREFIX)), None)


def payee_shown(destination: str) -> str:
    """How a text names an M-Pesa payout's destination: the phone, or "Till <number>" (a B2B
    destination is "command|till|account|requester")."""
    parts = destination.split("|")
    return f"Till {parts[1]}" if len(parts) > 1 else destination


def _move(s: Session, reference: str, state: str, answer: Answer, note: str) -> Payout | None:
    values: dict[str, object] = {"state": state, "result_desc": (note or answer.reason)[:255],
                                 "finished_at": utcnow()}
    if answer.receipt:
        values["receipt"] = answer.receipt[:64]
    if answer.rail_ref:  # an id the rail gave late (its answer to the send was lost) is kept
        values["rail_ref"] = func.coalesce(Payout.rail_ref, answer.rail_ref[:64])
    moved = _rows(s.execute(update(Payout).where(Payout.reference == reference, Payout.state.in_(OPEN_PAYOUT))
                            .values(**values)))
    return s.scalar(select(Payout).where(Payout.reference == reference)) if moved == 1 else None


def _memo(label: str, payout: Payout, answer: Answer, note: str) -> str:
    """The posting's memo, as the operator's statement shows it: the rail's receipt and the KES."""
    if payout.amount_kes is None:
        return note
    return f"{label} {answer.receipt or payout.rail_key or '-'} KES {payout.amount_kes}"


def _end_movement(s: Session, books: Books, payout: Payout, status: str, note: str,
                  values: dict[str, object]) -> Transaction:
    """The payout's movement from pending to `status` (with `values`), in the caller's transaction;
    Undo when it was not pending (the payout's move rolls back with it)."""
    values = {"status": status, "settled_at": utcnow(), **values}
    if books.notes_on_movement and note:
        values["description"] = note[:255]
    moved = _rows(s.execute(update(Transaction).where(Transaction.id == payout.transaction_id,
                                                      Transaction.status == PENDING).values(**values)))
    if moved != 1:
        raise Undo(payout.reference)
    return s.get_one(Transaction, payout.transaction_id)


def post(s: Session, rail: Rail, reference: str, answer: Answer, note: str = "") -> bool:
    """The rail paid: posted once. False when the payout was not open. `note` (an operator's
    reason) is kept as the payout's result instead of the rail's words. What the rail cost
    (`answer.cost_sats`) leaves the asset that paid; the customer pays it up to the fee limit
    reserved and gets the rest of the limit back; a cost beyond the limit is the wallet's
    (adjustments), booked and logged, never the customer's."""
    payout = _move(s, reference, POSTED, answer, note)
    if payout is None:
        return False
    books = rail.books
    cost = max(0, answer.cost_sats)  # what left the paying asset for the rail itself
    charged = min(cost, payout.fee_limit_sats)  # the customer pays at most the limit reserved
    if cost > charged:
        log.error("payout %s cost %s sats, beyond the %s reserved: the wallet absorbs %s", reference, cost,
                  payout.fee_limit_sats, cost - charged)
    settled: dict[str, object] = {"fee_sats": payout.fee_sats + charged}
    if books.receipt_is_mpesa_code and answer.receipt:
        settled["mpesa_code"] = answer.receipt[:32]  # unique: a receipt used before raises IntegrityError
    row = _end_movement(s, books, payout, SETTLED, note, settled)
    unused = payout.fee_limit_sats - charged
    total = payout.amount_sats + payout.fee_sats + payout.fee_limit_sats
    payer = _payer(s, payout)
    recorded = journal.record(
        s, journal.following(row, f"{books.kind}-post", POST, total, memo=_memo(books.label, payout, answer, note)),
        [journal.house(books.in_flight, total), journal.house(books.paid_from, -(payout.amount_sats + cost)),
         journal.house(FEES, -payout.fee_sats),
         journal.customer(payout.user_id, -unused) if payer is None else journal.house(payer, -unused),
         journal.house(ADJUSTMENTS, cost - charged)])
    balance = recorded.balances.get(payout.user_id)
    user = users.owner(s, payout.user_id)
    if payer is not None:  # a group's payout: who asked for it hears of it, with no balance of theirs
        sms.queue(s, user.phone, t(user.language, "sms.chama-out-paid", group=row.counterparty or "",
                                   kes=payout.amount_kes or 0, to=payee_shown(payout.destination),
                                   receipt=answer.receipt or "-", ref=row.reference))
        return True
    shown = replace(answer, cost_sats=charged)
    policy = rules.policy()  # what is left of today's limits now, at the newest stored price
    left = movements.left_now(s, policy, payout.user_id, user.tier, tiers.stored_price(s, policy))
    sms.queue(s, user.phone, rail.posted_text(view(payout, row), user.language,
                                              user.balance_sats if balance is None else balance, shown, left))
    return True


def void(s: Session, rail: Rail, reference: str, answer: Answer, note: str = "") -> bool:
    """The rail failed (or an operator says so): voided once, the sats back. False when the
    payout was not open."""
    payout = _move(s, reference, VOIDED, answer, note)
    if payout is None:
        return False
    if rail.books.frees_key_on_void and answer.frees_key and payout.rail_key:
        # the key may be paid again (a Lightning invoice whose payment definitely failed); kept as rail_ref
        s.execute(update(Payout).where(Payout.id == payout.id).values(rail_key=None, rail_ref=payout.rail_key))
    row = _end_movement(s, rail.books, payout, FAILED, note, {})
    books, total = rail.books, payout.amount_sats + payout.fee_sats + payout.fee_limit_sats
    payer = _payer(s, payout)  # the sats go back where they came from: a group's to the group
    recorded = journal.record(s, journal.following(row, f"{books.kind}-void", VOID, total, memo=note),
                              [journal.house(books.in_flight, total),
                               journal.customer(payout.user_id, -total) if payer is None
                               else journal.house(payer, -total)])
    user = users.owner(s, payout.user_id)
    if payer is not None:
        sms.queue(s, user.phone, t(user.language, "sms.chama-out-failed", group=row.counterparty or "",
                                   kes=payout.amount_kes or 0, to=payee_shown(payout.destination), amount=total,
                                   ref=row.reference))
        return True
    after = recorded.balances[payout.user_id]
    sms.queue(s, user.phone, rail.voided_text(view(payout, row), user.language, after))
    return True
