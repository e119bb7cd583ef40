"""The double-entry journal, the one record of money. A movement is one entry (a `transactions`
row) whose postings sum to zero, written by `record` in the transaction that needs it, with the
balances it moves: a customer's `users.balance_sats` and a house account's
`ledger_accounts.balance_sats` are caches of their postings that nothing else writes (the check
after every test proves it). Postings are never updated or deleted, nor an entry's money (database
triggers refuse it): a pending entry is posted or voided by a second entry that names it
(`follows`), once.

Signs: + debit, - credit. Customers' accounts are credit-normal (what we owe them): a debit of a
customer lowers their balance. The house accounts are in models.HOUSE_ACCOUNTS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

from helpers.infra.fastpath import Prepared
from helpers.wallet.customers import users
from helpers.wallet.errors import AccountLocked, GoalClosed, InsufficientBalance
from helpers.wallet.ledger.savings_tables import GOAL_OPEN, SavingsGoal
from models import (BEFORE_JOURNAL, FAILED, PENDING, POST, SAVINGS, SETTLED, VOID, LedgerAccount, Posting,
                    Transaction, User, utcnow)

Executor = Connection | Session

_ENTRIES = cast(Table, Transaction.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_ACCOUNTS = cast(Table, LedgerAccount.__table__)
_USERS = cast(Table, User.__table__)
_GOALS = cast(Table, SavingsGoal.__table__)
_ENTRY_COLUMNS = ("user_id", "type", "kind", "direction", "amount_sats", "fee_sats", "status", "reference",
                  "follows_id", "counterparty", "description", "memo", "invoice_id", "payment_hash", "mpesa_code",
                  "idempotency_key", "created_at", "settled_at")
_ADD_ENTRY = Prepared(insert(_ENTRIES).values({name: bindparam(name) for name in _ENTRY_COLUMNS}))
_ADD_POSTING = Prepared(insert(_POSTINGS).values(
    entry_id=bindparam("entry_id"), user_id=bindparam("user_id"), account=bindparam("account"),
    amount_sats=bindparam("amount_sats"), goal_id=bindparam("goal_id")))
# A savings goal's cache: sats come in only while it is open; a debit never overdraws it.
_GOAL_CREDIT = Prepared(update(_GOALS).where(_GOALS.c.id == bindparam("gid"), _GOALS.c.status == GOAL_OPEN)
                        .values(balance_sats=_GOALS.c.balance_sats + bindparam("total")))
_GOAL_DEBIT = Prepared(update(_GOALS).where(_GOALS.c.id == bindparam("gid"),
                                            _GOALS.c.balance_sats >= bindparam("total"))
                       .values(balance_sats=_GOALS.c.balance_sats - bindparam("total")))
_GOAL_BALANCE = Prepared(select(_GOALS.c.balance_sats).where(_GOALS.c.id == bindparam("gid")))
_MOVE_ACCOUNT = Prepared(update(_ACCOUNTS).where(_ACCOUNTS.c.code == bindparam("code"))
                         .values(balance_sats=_ACCOUNTS.c.balance_sats + bindparam("delta")))
# A group's (chama's) account is credit-normal like a customer's: its debit is conditional too, so
# two payouts can never both spend the same sats (the second finds them gone: InsufficientBalance).
GROUP_PREFIX = "chama:"
_DEBIT_GROUP = Prepared(update(_ACCOUNTS).where(_ACCOUNTS.c.code == bindparam("code"),
                                                _ACCOUNTS.c.balance_sats + bindparam("delta") <= 0)
                        .values(balance_sats=_ACCOUNTS.c.balance_sats + bindparam("delta")))
_ACCOUNT_BALANCE = Prepared(select(_ACCOUNTS.c.balance_sats).where(_ACCOUNTS.c.code == bindparam("code")))
_UNLOCKED = or_(_USERS.c.pin_locked_until.is_(None), _USERS.c.pin_locked_until <= bindparam("now"))
# A customer's debit is conditional: it never overdraws, and never touches a PIN-locked account
# (users.check_pin counts on this) unless an operator corrects it (`any_lock`).
_DEBIT_SQL = (update(_USERS).where(_USERS.c.id == bindparam("uid"), _USERS.c.balance_sats >= bindparam("total"),
                                   _UNLOCKED)
              .values(balance_sats=_USERS.c.balance_sats - bindparam("total")))
_DEBIT_ANY_SQL = (update(_USERS).where(_USERS.c.id == bindparam("uid"), _USERS.c.balance_sats >= bindparam("total"))
                  .values(balance_sats=_USERS.c.balance_sats - bindparam("total")))
_CREDIT_SQL = update(_USERS).where(_USERS.c.id == bindparam("uid")).values(
    balance_sats=_USERS.c.balance_sats + bindparam("total"))
# Where UPDATE .. RETURNING exists (SQLite, not MySQL/MariaDB) the new balance comes back with it.
_MOVES = {name: (Prepared(sql), Prepared(sql.returning(_USERS.c.balance_sats)))
          for name, sql in (("debit", _DEBIT_SQL), ("debit-any", _DEBIT_ANY_SQL), ("credit", _CREDIT_SQL))}
_BALANCE = Prepared(select(_USERS.c.balance_sats).where(_USERS.c.id == bindparam("uid")))
_NOT_DEBITED = Prepared(select(_USERS.c.balance_sats, _USERS.c.pin_locked_until).where(_USERS.c.id == bindparam("uid")))
# Two customers' balances (a payer's debit, a payee's credit) moved by one UPDATE that still refuses
# an overdraft or a PIN-locked payer on its own; the caller locked both rows and read them.
_MOVE_PAIR = Prepared(
    update(_USERS)
    .where(_USERS.c.id.in_([bindparam("a"), bindparam("b")]),
           or_(_USERS.c.id != bindparam("a"), and_(_USERS.c.balance_sats >= bindparam("total"), _UNLOCKED)))
    .values(balance_sats=case((_USERS.c.id == bindparam("a"), _USERS.c.balance_sats - bindparam("total")),
                              else_=_USERS.c.balance_sats + bindparam("amount")))
)


@dataclass(frozen=True)
class Leg:
    """One posting: a customer's (user_id) or a house account's (account; a savings goal's: the
    account `savings` and its goal_id), + debit / - credit."""

    amount: int
    user_id: int | None = None
    account: str | None = None
    goal_id: int | None = None


def customer(user_id: int, amount: int) -> Leg:
    return Leg(amount, user_id=user_id)


def house(account: str, amount: int) -> Leg:
    return Leg(amount, account=account)


def goal(goal_id: int, amount: int) -> Leg:
    """A savings goal's posting (credit-normal, like a customer's: - puts sats in)."""
    return Leg(amount, account=SAVINGS, goal_id=goal_id)


@dataclass(frozen=True)
class Entry:
    """What an entry records besides its postings: its kind and reference, and the movement as the
    customer's line shows it (whose, its type and direction, its amount and fee, its status, who or
    what it was with). `follows`: the pending entry this one posts or voids."""

    kind: str
    reference: str
    user_id: int
    type: str
    direction: str
    amount: int
    fee: int = 0
    status: str = SETTLED
    counterparty: str | None = None
    description: str | None = None
    memo: str = ""
    idempotency_key: str | None = None
    mpesa_code: str | None = None
    invoice_id: int | None = None
    payment_hash: str | None = None
    follows: int | None = None

    def __post_init__(self) -> None:
        if len(self.kind) > 24 or len(self.type) > 16 or len(self.reference) > 16:  # the columns' sizes
            raise ValueError(f"an entry's kind, type or reference is too long: {self.kind} {self.type} "
                             f"{self.reference}")

    def row(self, now: dt.datetime) -> dict:
        return {"user_id": self.user_id, "type": self.type, "kind": self.kind, "direction": self.direction,
                "amount_sats": self.amount, "fee_sats": self.fee, "status": self.status, "reference": self.reference,
                "follows_id": self.follows, "counterparty": self.counterparty[:64] if self.counterparty else None,
                "description": self.description[:255] if self.description else None, "memo": self.memo[:255],
                "invoice_id": self.invoice_id, "payment_hash": self.payment_hash, "mpesa_code": self.mpesa_code,
                "idempotency_key": self.idempotency_key, "created_at": now,
                "settled_at": None if self.status == PENDING else now}


def following(first: Transaction, kind: str, status: str, amount: int, memo: str = "") -> Entry:
    """The entry that posts (`POST`) or voids (`VOID`) the pending movement `first`."""
    if status not in (POST, VOID):
        raise ValueError(f"an entry follows a pending one to post or void it, not to {status}")
    return Entry(kind, first.reference, first.user_id, first.type, first.direction, amount, status=status,
                 memo=memo, follows=first.id)


@dataclass(frozen=True)
class Recorded:
    """An entry written: its id, and each customer's balance after it."""

    id: int
    balances: dict[int, int]


class UnbalancedEntry(ValueError):
    """An entry whose postings do not sum to zero: a programming error, never written."""


def _dialect(executor: Executor) -> Dialect:
    return executor.dialect if isinstance(executor, Connection) else executor.get_bind().dialect


def _move_customer(executor: Executor, user_id: int, amount: int, any_lock: bool, returning: bool) -> int | None:
    """One customer's posting on their balance: a debit (+) only when it is covered and the account
    is not PIN-locked (`any_lock`: an operator's correction, locked or not). Returns the new balance
    (None: the database cannot return it with the UPDATE). Raises InsufficientBalance, AccountLocked."""
    now = utcnow()
    name = "credit" if amount < 0 else ("debit-any" if any_lock else "debit")
    plain, with_returning = _MOVES[name]
    params = {"uid": user_id, "total": abs(amount), "now": now}
    if returning:
        after = with_returning.run(executor, params).scalar()
        if after is not None:
            return int(after)
    elif plain.run(executor, params).rowcount == 1:
        return None
    have, locked_until = _NOT_DEBITED.run(executor, {"uid": user_id}).one()
    if locked_until is not None and locked_until > now and not any_lock:
        raise AccountLocked(users.minutes_left(locked_until, now))
    raise InsufficientBalance(have)


def _move_customers(executor: Executor, moves: dict[int, int], known: dict[int, int] | None,
                    any_lock: bool) -> dict[int, int]:
    """The customers' postings on their balances, debits first (each conditional), in id order;
    returns every balance after. `known`: the balances the caller read under its lock."""
    if known is not None and len(moves) == 2 and set(moves) <= set(known):
        (payer, total), (payee, credit) = sorted(moves.items(), key=lambda item: -item[1])
        if total > 0 > credit:  # one pays, one is paid: one UPDATE moves both
            moved = _MOVE_PAIR.run(executor, {"a": payer, "b": payee, "total": total, "amount": -credit,
                                              "now": utcnow()}).rowcount
            if moved != 2:  # the caller locked and checked both rows: cannot happen
                raise InsufficientBalance(known[payer])
            return {payer: known[payer] - total, payee: known[payee] - credit}
    returning = _dialect(executor).update_returning
    after: dict[int, int] = {}
    for user_id, amount in sorted(moves.items(), key=lambda item: (item[1] <= 0, item[0])):
        found = _move_customer(executor, user_id, amount, any_lock, returning)
        if found is None:
            found = (known[user_id] - amount if known is not None and user_id in known
                     else int(_BALANCE.run(executor, {"uid": user_id}).scalar()))
        after[user_id] = found
    return after


def record(executor: Executor, entry: Entry, legs: Sequence[Leg], *,
           check: Callable[[dict[int, int]], None] | None = None, known: dict[int, int] | None = None,
           any_lock: bool = False) -> Recorded:
    """Write one entry, in the caller's transaction: the customers' balances first (a debit is
    conditional: InsufficientBalance, AccountLocked), then `check(balances after)` (the policy,
    asked while this movement holds the payer's row; raising rolls everything back), the house
    accounts' balances, the entry and its postings. Legs of 0 are left out. Raises UnbalancedEntry."""
    legs = [leg for leg in legs if leg.amount]
    if sum(leg.amount for leg in legs) != 0 or len(legs) < 2:
        raise UnbalancedEntry(f"{entry.kind} {entry.reference}: postings {[leg.amount for leg in legs]} "
                              f"do not balance")
    customers: dict[int, int] = {}
    accounts: dict[str, int] = {}
    goals: dict[int, int] = {}
    for leg in legs:
        if leg.goal_id is not None:
            goals[leg.goal_id] = goals.get(leg.goal_id, 0) + leg.amount
        if leg.user_id is not None:
            customers[leg.user_id] = customers.get(leg.user_id, 0) + leg.amount
        elif leg.account is not None:
            accounts[leg.account] = accounts.get(leg.account, 0) + leg.amount
    balances = _move_customers(executor, {u: n for u, n in customers.items() if n}, known, any_lock)
    if check is not None:
        check(balances)
    for goal_id in sorted(goals):
        _move_goal(executor, goal_id, goals[goal_id])
    # The house rows in one order: each posting's foreign key takes a shared lock on its account
    # row, and two transactions that both held it shared and then asked to update it would
    # deadlock on MySQL. Taking the row for update first leaves nothing to upgrade.
    for code in sorted(accounts):
        if accounts[code] > 0 and code.startswith(GROUP_PREFIX):  # money leaves a group: only what it holds
            if _DEBIT_GROUP.run(executor, {"code": code, "delta": accounts[code]}).rowcount != 1:
                raise InsufficientBalance(-int(_ACCOUNT_BALANCE.run(executor, {"code": code}).scalar() or 0))
        elif accounts[code]:
            _MOVE_ACCOUNT.run(executor, {"code": code, "delta": accounts[code]})
    entry_id = _ADD_ENTRY.run(executor, entry.row(utcnow())).lastrowid
    if entry_id is None:  # an INSERT with an autoincrement key always returns it
        raise RuntimeError("the database returned no id for a journal entry")
    _ADD_POSTING.run_many(executor, [{"entry_id": entry_id, "user_id": leg.user_id, "account": leg.account,
                                      "amount_sats": leg.amount, "goal_id": leg.goal_id} for leg in legs])
    return Recorded(entry_id, balances)


def _move_goal(executor: Executor, goal_id: int, amount: int) -> None:
    """A savings goal's posting on its cache: a credit (-) only while the goal is open (GoalClosed),
    a debit (+) only when covered (InsufficientBalance)."""
    if not amount:
        return
    params = {"gid": goal_id, "total": abs(amount)}
    if amount < 0:
        if _GOAL_CREDIT.run(executor, params).rowcount != 1:
            raise GoalClosed(str(goal_id))
    elif _GOAL_DEBIT.run(executor, params).rowcount != 1:
        raise InsufficientBalance(int(_GOAL_BALANCE.run(executor, {"gid": goal_id}).scalar() or 0))


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
        if code.startswith(GROUP_PREFIX) and kept > 0:
            problems.append(JournalProblem("negative group", code, 0, -kept))
    problems.extend(_goal_problems(session))
    problems.extend(_two_phase_problems(session))
    return problems


def _goal_problems(session: Session) -> list[JournalProblem]:
    """Every savings goal's balance is minus the sum of its postings and not negative; a posting
    names a goal exactly when it is to the account `savings` (so the goals sum to that account)."""
    problems: list[JournalProblem] = []
    posted = dict(session.execute(select(_POSTINGS.c.goal_id, func.sum(_POSTINGS.c.amount_sats))
                                  .where(_POSTINGS.c.goal_id.is_not(None)).group_by(_POSTINGS.c.goal_id)).all())
    for goal_id, kept in session.execute(select(_GOALS.c.id, _GOALS.c.balance_sats)):
        expected = -int(posted.pop(goal_id, None) or 0)
        if kept != expected or kept < 0:
            problems.append(JournalProblem("goal balance", str(goal_id), expected, kept))
    problems.extend(JournalProblem("posting to no goal", str(goal_id), 0, int(total))
                    for goal_id, total in posted.items())
    to_savings = func.coalesce(_POSTINGS.c.account, "") == SAVINGS
    stray = session.scalar(select(func.count()).select_from(_POSTINGS).where(or_(
        and_(to_savings, _POSTINGS.c.goal_id.is_(None)), and_(~to_savings, _POSTINGS.c.goal_id.is_not(None)))))
    if stray:
        problems.append(JournalProblem("savings posting without its goal", SAVINGS, 0, int(stray)))
    return problems


def _two_phase_problems(session: Session) -> list[JournalProblem]:
    """Every pending entry is followed by nothing while it says pending and by exactly one post
    (settled) or void (failed) once it says so; every post or void follows one such entry; an
    entry without postings records nothing."""
    problems: list[JournalProblem] = []
    follows = _ENTRIES.alias("follows")
    for first_id, status, count, post_count in session.execute(
            select(_ENTRIES.c.id, _ENTRIES.c.status, func.count(follows.c.id),
                   func.sum(case((follows.c.status == POST, 1), else_=0)))
            .join(follows, follows.c.follows_id == _ENTRIES.c.id).group_by(_ENTRIES.c.id, _ENTRIES.c.status)):
        expected = {PENDING: (0, 0), SETTLED: (1, 1), FAILED: (1, 0)}.get(status, (-1, -1))
        if (int(count), int(post_count or 0)) != expected:
            problems.append(JournalProblem(f"{status} entry followed by", str(first_id), expected[0], int(count)))
    ended_alone = session.execute(select(_ENTRIES.c.id).where(
        _ENTRIES.c.kind.like("%-pending"), _ENTRIES.c.status.in_((SETTLED, FAILED)),
        ~select(follows.c.id).where(follows.c.follows_id == _ENTRIES.c.id).exists()).limit(20)).scalars().all()
    problems.extend(JournalProblem("ended entry followed by", str(entry_id), 1, 0) for entry_id in ended_alone)
    bare = session.execute(select(_ENTRIES.c.id).where(_ENTRIES.c.kind != BEFORE_JOURNAL, ~select(_POSTINGS.c.id).where(
        _POSTINGS.c.entry_id == _ENTRIES.c.id).exists()).limit(20)).scalars().all()
    problems.extend(JournalProblem("entry without postings", str(entry_id), 2, 0) for entry_id in bare)
    unfollowed = session.execute(select(_ENTRIES.c.id).where(
        _ENTRIES.c.status.in_((POST, VOID)), _ENTRIES.c.follows_id.is_(None)).limit(20)).scalars().all()
    problems.extend(JournalProblem("post or void following nothing", str(entry_id), 1, 0) for entry_id in unfollowed)
    return problems


def balances(session: Session) -> dict[str, int]:
    """Each house account's balance (+ debit), and `customers`: what all customers hold."""
    found = {code: int(kept) for code, kept in session.execute(select(_ACCOUNTS.c.code, _ACCOUNTS.c.balance_sats))}
    found["customers"] = int(session.scalar(select(func.coalesce(func.sum(User.balance_sats), 0))) or 0)
    return found


def groups_hold(kept: dict[str, int]) -> int:
    """What all groups (chamas) hold, from `balances`: their members' money, owed like a wallet's."""
    return -sum(balance for code, balance in kept.items() if code.startswith(GROUP_PREFIX))


# ------------------------------------------------------------------ statements
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
    """A customer's postings, newest first. Two queries whatever the length: the postings with
    their entries, and the other customers' legs of those entries."""
    query = (select(_ENTRIES.c.id, _ENTRIES.c.created_at, _ENTRIES.c.kind, _ENTRIES.c.reference,
                    -_POSTINGS.c.amount_sats, _ENTRIES.c.memo, _ENTRIES.c.status)
             .join(_ENTRIES, _ENTRIES.c.id == _POSTINGS.c.entry_id)
             .where(_POSTINGS.c.user_id == user_id).order_by(_POSTINGS.c.id.desc()))
    if limit is not None:
        query = query.limit(limit)
    rows = session.execute(query).all()
    ids = {row[0] for row in rows}
    others: dict[int, str] = {}
    if ids:
        others = {entry_id: phone for entry_id, phone in session.execute(
            select(_POSTINGS.c.entry_id, User.phone).join(User, User.id == _POSTINGS.c.user_id)
            .where(_POSTINGS.c.entry_id.in_(ids), _POSTINGS.c.user_id != user_id))}
    return [StatementLine(at, kind, reference, int(amount), others.get(entry_id), status == PENDING, memo or "")
            for entry_id, at, kind, reference, amount, memo, status in rows]
