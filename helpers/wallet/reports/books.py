"""Reading the books: what left through Lightning, totals, the CSV export, what is still pending,
and solvency (what we owe against what we hold). (The proof of the books is journal.check.)"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from helpers.wallet.ledger import journal
from helpers.wallet.reports import mpesa_float
from models import (AIRTIME_FLOAT, AIRTIME_IN_FLIGHT, CREDIT, DEBIT, FLOAT, LN_IN_FLIGHT, MPESA_IN_FLIGHT, PENDING,
                    RECEIVE, SAVINGS, SEND, SETTLED, Posting, Transaction, User, utcnow)


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaidOut:
    """What the ledger says left through Lightning under one payment hash."""

    payment_hash: str
    references: tuple[str, ...]  # more than one: the hash was settled twice
    amount_sats: int
    fee_sats: int


def settled_lightning_out(session: Session) -> list[PaidOut]:
    """Settled outgoing Lightning payments, grouped by payment hash."""
    rows = session.execute(
        select(Transaction.payment_hash, Transaction.reference, Transaction.amount_sats, Transaction.fee_sats)
        .where(Transaction.status == SETTLED, Transaction.type == SEND, Transaction.direction == DEBIT,
               Transaction.payment_hash.is_not(None))
        .order_by(Transaction.payment_hash, Transaction.id)
    ).all()
    grouped: dict[str, list] = {}
    for payment_hash, reference, amount, fee in rows:
        if payment_hash is not None:  # the query keeps only rows with a hash
            grouped.setdefault(payment_hash, []).append((reference, amount, fee))
    return [PaidOut(h, tuple(r for r, _a, _f in items), sum(a for _r, a, _f in items), sum(f for _r, _a, f in items))
            for h, items in grouped.items()]


def totals(session: Session) -> dict[str, int]:
    """Liabilities and fee income, for operators."""
    liabilities = session.execute(select(func.coalesce(func.sum(User.balance_sats), 0))).scalar_one()
    liabilities += -journal.balances(session).get(SAVINGS, 0)  # sats in savings goals are owed too
    fees = session.execute(
        select(func.coalesce(func.sum(Transaction.fee_sats), 0)).where(Transaction.status == SETTLED)
    ).scalar_one()
    return {"liabilities_sats": int(liabilities), "fees_earned_sats": int(fees)}


def export_rows(session: Session, since: dt.datetime | None = None) -> Iterator[tuple]:
    """Each customer's postings as statement lines with their phone, oldest first, for the CSV
    export: a movement between two customers is a line for each, a post or void is a line of its
    own (status post or void) where it moves the customer's balance. The amount is what moved on
    the balance, less the movement's fee on its own customer's debit (shown beside it)."""
    owner, customer = aliased(User), aliased(User)
    query = (
        select(Transaction.id, Transaction.created_at, customer.phone, Transaction.type, Posting.amount_sats,
               Posting.user_id == Transaction.user_id, Transaction.follows_id, Transaction.fee_sats,
               Transaction.status, Transaction.reference, Transaction.counterparty, owner.phone,
               Transaction.mpesa_code, Transaction.payment_hash, Transaction.description)
        .join(Posting, Posting.entry_id == Transaction.id).join(customer, customer.id == Posting.user_id)
        .join(owner, owner.id == Transaction.user_id).order_by(Transaction.id, Posting.id)
    )
    if since is not None:
        query = query.where(Transaction.created_at >= since)
    for (entry_id, at, phone, kind, posted, own, follows, fee, status, reference, counterparty, owner_phone, code,
         payment_hash, description) in session.execute(query):
        debit = posted > 0
        fee = fee if own and debit and follows is None else 0
        yield (entry_id, at, phone, kind if own else RECEIVE, DEBIT if debit else CREDIT, abs(posted) - fee, fee,
               status, reference, counterparty if own else owner_phone, code, payment_hash, description)


def pending_older_than(session: Session, minutes: int) -> list[Transaction]:
    cutoff = utcnow() - dt.timedelta(minutes=minutes)
    return list(session.scalars(
        select(Transaction).where(Transaction.status == PENDING, Transaction.created_at <= cutoff)
        .order_by(Transaction.id)))


# ------------------------------------------------------------------ solvency
@dataclass(frozen=True)
class Solvency:
    """What we owe against what we hold. Liabilities: customers' balances and savings goals plus what is reserved
    for payments in flight (those sats are still ours until the rail says they left). Assets: the
    node's balance as the node reports it (None: unreachable) and the M-Pesa float as recorded,
    beside the float as M-Pesa last reported it (Daraja's Account Balance, in KES: evidence, not
    counted in the ratio, whose units are sats)."""

    customers_sats: int
    lightning_in_flight_sats: int
    mpesa_in_flight_sats: int
    node_sats: int | None
    float_sats: int
    float_reading: mpesa_float.Reading | None = None  # what M-Pesa last said the float holds, in KES
    airtime_in_flight_sats: int = 0  # reserved for airtime not delivered yet
    airtime_float_sats: int = 0  # the airtime prepaid at Africa's Talking, as recorded (sold: negative)
    savings_sats: int = 0  # customers' sats locked in savings goals: owed to them as their balances are

    @property
    def liabilities_sats(self) -> int:
        return (self.customers_sats + self.savings_sats + self.lightning_in_flight_sats + self.mpesa_in_flight_sats
                + self.airtime_in_flight_sats)

    @property
    def assets_sats(self) -> int | None:
        return None if self.node_sats is None else self.node_sats + self.float_sats + self.airtime_float_sats

    @property
    def coverage(self) -> float | None:
        """assets / liabilities (1.0 = every sat covered); None when the node cannot be asked."""
        if self.assets_sats is None:
            return None
        return float("inf") if self.liabilities_sats == 0 else self.assets_sats / self.liabilities_sats

    def as_dict(self) -> dict:
        reading = self.float_reading
        return {"customers_sats": self.customers_sats, "lightning_in_flight_sats": self.lightning_in_flight_sats,
                "mpesa_in_flight_sats": self.mpesa_in_flight_sats,
                "airtime_in_flight_sats": self.airtime_in_flight_sats, "savings_sats": self.savings_sats,
                "liabilities_sats": self.liabilities_sats,
                "node_sats": self.node_sats, "mpesa_float_sats": self.float_sats,
                "airtime_float_sats": self.airtime_float_sats, "assets_sats": self.assets_sats,
                "coverage": self.coverage,
                "mpesa_float_queried_kes": None if reading is None else str(reading.available_kes),
                "mpesa_float_queried_at": None if reading is None else reading.at.isoformat()}


def solvency(session: Session, node_balance_sats: int | None) -> Solvency:
    kept = journal.balances(session)
    # money in groups (chamas) and in savings goals is owed to customers as much as a balance is
    return Solvency(kept["customers"] + journal.groups_hold(kept),
                    -kept[LN_IN_FLIGHT], -kept[MPESA_IN_FLIGHT], node_balance_sats, kept[FLOAT],
                    mpesa_float.latest(session), -kept.get(AIRTIME_IN_FLIGHT, 0), kept.get(AIRTIME_FLOAT, 0),
                    -kept.get(SAVINGS, 0))
