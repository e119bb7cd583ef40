"""The double-entry journal: every money event is one entry whose postings sum to zero, written in
the transaction that changes the balances it explains. Nothing here is ever updated or deleted
(database triggers refuse it): a pending movement is posted or voided by a second entry that
names the first (`follows`).

Signs: + debit, - credit. Customers' accounts are credit-normal (what we owe them): a debit of a
customer lowers their balance. The house accounts are in models.HOUSE_ACCOUNTS; their balances
are kept in `ledger_accounts` (+= each posting, in the same transaction). A customer's balance
is their `users` row, moved by the movement itself (transactions.debit / credit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from helpers.infra.fastpath import Prepared
from helpers.wallet import mpesa_float
from models import (AIRTIME_FLOAT, AIRTIME_IN_FLIGHT, FLOAT, LN_IN_FLIGHT,
                    MPESA_IN_FLIGHT, JournalEntry, LedgerAccount, Posting, User, utcnow)

Executor = Connection | Session

_ENTRIES = cast(Table, JournalEntry.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_ACCOUNTS = cast(Table, LedgerAccount.__table__)
_ADD_ENTRY = Prepared(insert(_ENTRIES).values(
    kind=bindparam("kind"), reference=bindparam("reference"), transaction_id=bindparam("transaction_id"),
    follows_id=bindparam("follows_id"), memo=bindparam("memo"), created_at=bindparam("created_at")))
_ADD_POSTING = Prepared(insert(_POSTINGS).values(
    entry_id=bindparam("entry_id"), user_id=bindparam("user_id"), account=bindparam("account"),
    amount_sats=bindparam("amount_sats")))
_MOVE_ACCOUNT = Prepared(update(_ACCOUNTS).where(_ACCOUNTS.c.code == bindparam("code"))
                         .values(balance_sats=_ACCOUNTS.c.balance_sats + bindparam("delta")))


@dataclass(frozen=True)
class Leg:
    """One posting: a customer's (user_id) or a house account's (account), + debit / - credit."""

    amount: int
    user_id: int | None = None
    account: str | None = None


def customer(user_id: int, amount: int) -> Leg:
    return Leg(amount, user_id=user_id)


def house(account: str, amount: int) -> Leg:
    return Leg(amount, account=account)


class UnbalancedEntry(ValueError):
    """An entry whose postings do not sum to zero: a programming error, never written."""


def record(executor: Executor, kind: str, reference: str, legs: Sequence[Leg], *,
           transaction_id: int | None = None, follows: int | None = None, memo: str = "") -> int:
    """Write one entry and its postings in the caller's transaction and move the house accounts'
    balances. Legs of 0 are left out. Returns the entry's id. Raises UnbalancedEntry."""
    legs = [leg for leg in legs if leg.amount]
    if sum(leg.amount for leg in legs) != 0 or len(legs) < 2:
        raise UnbalancedEntry(f"{kind} {reference}: postings {[leg.amount for leg in legs]} do not balance")
    # The house rows first, in one order: each posting's foreign key takes a shared lock on its
    # account row, and two transactions that both held it shared and then asked to update it
    # would deadlock on MySQL. Taking the row for update first leaves nothing to upgrade.
    moves: dict[str, int] = {}
    for leg in legs:
        if leg.account is not None:
            moves[leg.account] = moves.get(leg.account, 0) + leg.amount
    for code in sorted(moves):
        _MOVE_ACCOUNT.run(executor, {"code": code, "delta": moves[code]})
    entry_id = _ADD_ENTRY.run(executor, {"kind": kind, "reference": reference, "transaction_id": transaction_id,
                                         "follows_id": follows, "memo": memo[:255], "created_at": utcnow()}).lastrowid
    if entry_id is None:  # an INSERT with an autoincrement key always returns it
        raise RuntimeError("the database returned no id for a journal entry")
    _ADD_POSTING.run_many(executor, [{"entry_id": entry_id, "user_id": leg.user_id, "account": leg.account,
                                      "amount_sats": leg.amount} for leg in legs])
    return entry_id


def entry_of(executor: Executor, transaction_id: int, kind: str) -> int | None:
    """The id of the entry of `kind` recorded for a transaction (the pending one a post follows)."""
    return executor.execute(select(_ENTRIES.c.id).where(_ENTRIES.c.transaction_id == transaction_id,
                                                         _ENTRIES.c.kind == kind).limit(1)).scalar()


# ------------------------------------------------------------------ proof
@dataclass(frozen=True)
class JournalProblem:
    what: str  # "unbalanced entry", "customer balance", "house balance", "negative customer"
    subject: str  # the entry, user or account
    expected: int
    found: int


def check(session: Session) -> list[JournalProblem]:
    """Every entry sums to zero; every customer's balance is minus the sum of their postings and is
    not negative; every house account's kept balance is the sum of its postings."""
    problems: list[JournalProblem] = []
    for entry_id, total in session.execute(
            select(_POSTINGS.c.entry_id, func.sum(_POSTINGS.c.amount_sats))
            .group_by(_POSTINGS.c.entry_id).having(func.sum(_POSTINGS.c.amount_sats) != 0)):
        problems.append(JournalProblem("unbalanced entry", str(entry_id), 0, int(total)))
    posted = dict(session.execute(select(_POSTINGS.c.user_id, func.sum(_POSTINGS.c.amount_sats))
                                  .where(_POSTINGS.c.user_id.is_not(None)).group_by(_POSTINGS.c.user_id)).all())
    for user_id, phone, balance in session.execute(select(User.id, User.phone, User.balance_sats)):
        expected = -int(posted.get(user_id) or 0)
        if balance != expected:
            problems.append(JournalProblem("customer balance", phone, expected, balance))
        if balance < 0:
            problems.append(JournalProblem("negative customer", phone, 0, balance))
    by_account = dict(session.execute(select(_POSTINGS.c.account, func.sum(_POSTINGS.c.amount_sats))
                                      .where(_POSTINGS.c.account.is_not(None)).group_by(_POSTINGS.c.account)).all())
    for code, kept in session.execute(select(_ACCOUNTS.c.code, _ACCOUNTS.c.balance_sats)):
        expected = int(by_account.get(code) or 0)
        if kept != expected:
            problems.append(JournalProblem("house balance", code, expected, kept))
    return problems


def balances(session: Session) -> dict[str, int]:
    """Each house account's balance (+ debit), and `customers`: what all customers hold."""
    found = {code: int(kept) for code, kept in session.execute(select(_ACCOUNTS.c.code, _ACCOUNTS.c.balance_sats))}
    found["customers"] = int(session.scalar(select(func.coalesce(func.sum(User.balance_sats), 0))) or 0)
    return found


# ------------------------------------------------------------------ solvency and statements
@dataclass(frozen=True)
class Solvency:
    """What we owe against what we hold. Liabilities: customers' balances plus what is reserved
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

    @property
    def liabilities_sats(self) -> int:
        return (self.customers_sats + self.lightning_in_flight_sats + self.mpesa_in_flight_sats
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
                "airtime_in_flight_sats": self.airtime_in_flight_sats, "liabilities_sats": self.liabilities_sats,
                "node_sats": self.node_sats, "mpesa_float_sats": self.float_sats,
                "airtime_float_sats": self.airtime_float_sats, "assets_sats": self.assets_sats,
                "coverage": self.coverage,
                "mpesa_float_queried_kes": None if reading is None else str(reading.available_kes),
                "mpesa_float_queried_at": None if reading is None else reading.at.isoformat()}


def solvency(session: Session, node_balance_sats: int | None) -> Solvency:
    kept = balances(session)
    return Solvency(kept["customers"], -kept[LN_IN_FLIGHT], -kept[MPESA_IN_FLIGHT], node_balance_sats, kept[FLOAT],
                    mpesa_float.latest(session), -kept.get(AIRTIME_IN_FLIGHT, 0), kept.get(AIRTIME_FLOAT, 0))


@dataclass(frozen=True)
class StatementLine:
    """One posting on a customer's account, as their statement shows it."""

    at: dt.datetime
    kind: str  # the entry's kind: transfer, receive, lightning-pending, withdraw-post, ...
    reference: str
    amount: int  # + credit to the customer, - debit
    counterparty: str | None  # the other customer's phone, when the entry moved sats between two
    pending: bool  # a pending entry nothing has posted or voided yet
    memo: str


def statement(session: Session, user_id: int, limit: int | None = None) -> list[StatementLine]:
    """A customer's postings, newest first. Three queries whatever the length: the postings, the
    other customers' legs of those entries, and which pending entries were followed."""
    query = (select(_ENTRIES.c.id, _ENTRIES.c.created_at, _ENTRIES.c.kind, _ENTRIES.c.reference,
                    -_POSTINGS.c.amount_sats, _ENTRIES.c.memo)
             .join(_ENTRIES, _ENTRIES.c.id == _POSTINGS.c.entry_id)
             .where(_POSTINGS.c.user_id == user_id).order_by(_POSTINGS.c.id.desc()))
    if limit is not None:
        query = query.limit(limit)
    rows = session.execute(query).all()
    ids = {row[0] for row in rows}
    others: dict[int, str] = {}
    followed: set[int] = set()
    if ids:
        others = {entry_id: phone for entry_id, phone in session.execute(
            select(_POSTINGS.c.entry_id, User.phone).join(User, User.id == _POSTINGS.c.user_id)
            .where(_POSTINGS.c.entry_id.in_(ids), _POSTINGS.c.user_id != user_id))}
        followed = set(session.scalars(select(_ENTRIES.c.follows_id).where(_ENTRIES.c.follows_id.in_(ids))))
    return [StatementLine(at, kind, reference, int(amount), others.get(entry_id),
                          kind.endswith("-pending") and entry_id not in followed, memo or "")
            for entry_id, at, kind, reference, amount, memo in rows]
