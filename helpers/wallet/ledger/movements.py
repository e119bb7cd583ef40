"""Money movements. Each happens in one database transaction together with the ledger rows that
explain it and the SMS receipts that report it.

Debits are conditional UPDATEs (`balance >= total`), so no check-then-act race can overdraw an
account on any database; the policy decision is taken inside the same transaction once this
user's concurrent spends are serialised by the row lock (after the debit, or, between two
customers, after both rows were locked in id order and before the one UPDATE that moves both).
Every movement carries a natural key (unique): a replay fails on it, is rolled back and gets the
first result (run_once), so it moves nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union, cast

from sqlalchemy import Table, bindparam, case, func, or_, select, update
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database, retry_deadlocks  # noqa: F401 - callers name it movements.retry_deadlocks
from helpers.infra.fastpath import Prepared, ResultRow
from helpers.infra import sms
from helpers.wallet.customers import tiers, users
from helpers.wallet.ledger import journal, unclaimed
from helpers.wallet.errors import (
    AccountLocked,
    CodeAlreadyUsed,
    InsufficientBalance,
    PolicyDenied,
    RequestClosed,
    WalletError,
)
from helpers.infra.i18n import receipt_text, t
from helpers.infra.refs import new_reference
from helpers.wallet.rules import Policy
from helpers.wallet.customers.users import UserView
from models import (ADJUST, ADJUSTMENTS, AIRTIME, AIRTIME_IN_FLIGHT, CREDIT, DEBIT, FAILED, FEES, FLOAT,
                    INVOICE, LN_IN_FLIGHT, MPESA_IN_FLIGHT, PAID, PENDING, SEND, SETTLED, TOPUP, VOID, WITHDRAW,
                    Invoice, PaymentRequest, Transaction, User, utcnow)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Receipt:
    """What a money step did, for the screen. `replay` means an earlier request did it."""
    reference: str
    amount_sats: int = 0
    fee_sats: int = 0
    balance_sats: int = 0
    status: str = SETTLED
    transaction_id: int = 0
    replay: bool = False
    left_today: int | None = None  # what may still go out today after it, as its policy check counted (None: a replay)


# ------------------------------------------------------------------ primitives
# Core statements, built once: they run on an ORM session (db.write()) or on the request's
# connection (db.begin()) alike, and skip the ORM's unit of work where it adds nothing.
Executor = Union[Connection, Session]
_USERS = cast(Table, User.__table__)
_LEDGER = cast(Table, Transaction.__table__)
_BALANCE = Prepared(select(_USERS.c.balance_sats).where(_USERS.c.id == bindparam("uid")))
_SENT_SINCE_SQL = select(func.coalesce(func.sum(_LEDGER.c.amount_sats), 0)).where(
    _LEDGER.c.user_id == bindparam("uid"),
    _LEDGER.c.direction == DEBIT,
    or_(_LEDGER.c.status == PENDING, _LEDGER.c.status == SETTLED),
    _LEDGER.c.created_at >= bindparam("since", type_=Transaction.created_at.type),
)
_SPEND_FACTS = Prepared(select(_USERS.c.balance_sats, _SENT_SINCE_SQL.scalar_subquery())
                        .where(_USERS.c.id == bindparam("uid")))
# What a customer sent since midnight and since the month began, by one statement (the month
# began no later than today).
_OUT_SINCE = Prepared(
    select(func.coalesce(func.sum(case((_LEDGER.c.created_at >= bindparam("day", type_=Transaction.created_at.type),
                                        _LEDGER.c.amount_sats), else_=0)), 0),
           func.coalesce(func.sum(_LEDGER.c.amount_sats), 0))
    .where(_LEDGER.c.user_id == bindparam("uid"), _LEDGER.c.direction == DEBIT,
           or_(_LEDGER.c.status == PENDING, _LEDGER.c.status == SETTLED),
           _LEDGER.c.created_at >= bindparam("month", type_=Transaction.created_at.type)))
# A transfer's two rows, locked in id order (MySQL; SQLite's BEGIN IMMEDIATE already holds the
# writer's lock) and read; journal.record then moves both balances by one UPDATE.
_LOCK_PAIR = Prepared(
    select(_USERS.c.id, _USERS.c.balance_sats, _USERS.c.pin_locked_until, _USERS.c.tier)
    .where(_USERS.c.id.in_([bindparam("a"), bindparam("b")])).order_by(_USERS.c.id).with_for_update()
)
# A send's payer and its recipient named by phone, locked by one statement, in id order (the
# recipient's id by a subquery: a phone's user never changes), with what the movement needs.
_BY_PHONE = _USERS.alias("by_phone")
_LOCK_SENDER_AND_RECIPIENT = Prepared(
    select(_USERS.c.id, _USERS.c.balance_sats, _USERS.c.pin_locked_until, _USERS.c.phone, _USERS.c.language,
           _USERS.c.pin_hash, _USERS.c.pin_set_at, _USERS.c.tier)
    .where(_USERS.c.id.in_([bindparam("a"),
                            select(_BY_PHONE.c.id).where(_BY_PHONE.c.phone == bindparam("phone")).scalar_subquery()]))
    .order_by(_USERS.c.id).with_for_update()
)
_BY_KEY = Prepared(select(_LEDGER.c.id, _LEDGER.c.user_id, _LEDGER.c.reference, _LEDGER.c.amount_sats,
                          _LEDGER.c.fee_sats, _LEDGER.c.status).where(_LEDGER.c.idempotency_key == bindparam("key")))


def _dialect(conn: Executor) -> Dialect:
    return conn.dialect if isinstance(conn, Connection) else conn.get_bind().dialect


def _midnight(now: dt.datetime | None = None) -> dt.datetime:
    return (now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)


def balance(session: Executor, user_id: int) -> int:
    return _BALANCE.run(session, {"uid": user_id}).scalar()


def sent_today(session: Executor, user_id: int, now: dt.datetime | None = None) -> int:
    """Sats this user sent or withdrew since midnight UTC (pending included, fees excluded)."""
    return sent_out(session, user_id, now)[0]


def sent_out(session: Executor, user_id: int, now: dt.datetime | None = None) -> tuple[int, int]:
    """(today, this month): sats this user sent or withdrew since midnight UTC and since the month
    began (pending included, fees excluded), read by one statement."""
    now = now or utcnow()
    row = _OUT_SINCE.run(session, {"uid": user_id, "day": _midnight(now), "month": tiers.month_start(now)}).one()
    return int(row[0]), int(row[1])


def check_out(session: Executor, policy: Policy, user_id: int, limits: tiers.Caps, amount: int,
              decide: Callable[[int], None], checked: int | None = None) -> int:
    """Money out of `amount` sats by a customer whose row this transaction holds: what they sent
    today and this month read now, `decide(sent today)` (the policy's own rules: raise
    PolicyDenied to refuse), then their tier's caps for `checked` sats (a KES payout's
    tiers.payout_counted; else `amount`). Returns what may still go out today after it."""
    today, month = sent_out(session, user_id)
    decide(today)
    tiers.check_out(limits, amount if checked is None else checked, today, month)
    return min(policy.left_today(today + amount), tiers.left(limits, today + amount, month + amount))


_OUT_SQL = select(func.coalesce(func.sum(_LEDGER.c.amount_sats + _LEDGER.c.fee_sats), 0)).where(
    _LEDGER.c.user_id == bindparam("uid"),
    _LEDGER.c.direction == DEBIT,
    or_(_LEDGER.c.status == PENDING, _LEDGER.c.status == SETTLED),
)


def out_since(session: Executor, user_id: int, since: dt.datetime | None) -> int:
    """Sats (fees included) that left this user's wallet since `since` (None: ever), pending
    included: what the SIM swap guard's no-answer cap counts."""
    query = _OUT_SQL if since is None else _OUT_SQL.where(_LEDGER.c.created_at >= since)
    return int(session.execute(query, {"uid": user_id}).scalar() or 0)


def spend_facts(db: Database, user_id: int) -> tuple[int, int]:
    """(balance, sent today) of a user, read together on the request connection."""
    row = db.execute(_SPEND_FACTS, {"uid": user_id, "since": _midnight()}).first()
    return (int(row[0]), int(row[1] or 0)) if row is not None else (0, 0)


def out_facts(db: Database, user_id: int) -> tuple[int, int]:
    """(sent today, sent this month) of a user, on the request connection (a screen's pre-check)."""
    now = utcnow()
    row = db.execute(_OUT_SINCE, {"uid": user_id, "day": _midnight(now), "month": tiers.month_start(now)}).one()
    return int(row[0]), int(row[1])


def left_now(session: Executor, policy: Policy, user_id: int, tier: int, price: int) -> int:
    """What may still go out of a customer's account today: the policy's daily limit and their
    tier's day and month caps at `price`."""
    today, month = sent_out(session, user_id)
    return min(policy.left_today(today), tiers.left(tiers.caps(policy, tier, price), today, month))


def _check_spend(session: Executor, policy: Policy, user_id: int, amount: int, fee: int, after: int,
                 limits: tiers.Caps) -> int:
    """Ask the policy about a spend whose payer's row is locked, with what the payer sent today and
    this month read now, after the lock was granted (this spend's own row is added after the
    decision); then the payer's tier caps. Not in the locking SELECT: MariaDB reads a subquery there
    from a snapshot that can predate the lock, and 50 concurrent sends then passed the daily limit
    (tests/integration/test_concurrency.py). Returns what may still go out today after it."""

    def decide(today: int) -> None:
        decision = policy.spend(amount, fee, after + amount + fee, today)
        if not decision.allowed:
            raise PolicyDenied(decision.reason or "denied")

    return check_out(session, policy, user_id, limits, amount, decide)


def spend_check(session: Executor, policy: Policy, user_id: int, amount: int,
                tier: int) -> Callable[[dict[int, int]], None]:
    """journal.record's `check` for `amount` leaving this user's balance (no fee): the policy's spend
    decision and the tier's caps (at the newest stored price) under the payer's lock. Raises PolicyDenied."""
    def check(balances: dict[int, int]) -> None:
        limits = tiers.caps(policy, tier, tiers.stored_price(session, policy))
        _check_spend(session, policy, user_id, amount, 0, balances[user_id], limits)
    return check


def find_by_key(db: Database, key: str) -> ResultRow | None:
    """The movement recorded under an idempotency key: id, user_id, reference, amounts, status."""
    return db.execute(_BY_KEY, {"key": key}).first()


def replay_of(db: Database, found: ResultRow) -> Receipt:
    """The receipt of a movement done earlier (a replay), with the owner's balance now."""
    now_balance = db.execute(_BALANCE, {"uid": found.user_id}).scalar()
    return Receipt(
        found.reference, found.amount_sats, found.fee_sats, now_balance, found.status, found.id, replay=True
    )


def _lock_pair(conn: Executor, policy: Policy, payer_id: int, payee_id: int, amount: int, fee: int, price: int,
               found: dict[int, tuple[int, dt.datetime | None, int]] | None = None) -> tuple[dict[int, int], int]:
    """Before `amount` + `fee` move from one customer to another, in the caller's transaction: both
    rows locked in id order (two movements between the same people, either way, queue instead of
    deadlocking), the payer's lock and balance checked, the policy asked with the day's spends
    read under the lock, the payer's tier caps and the payee's balance cap at `price` (KES per BTC).
    Returns both balances as read (journal.record moves them by one UPDATE) and what may still go
    out of the payer's account today after it.
    `found`: both rows' (balance, PIN lock, tier) when the caller locked them. Raises
    AccountLocked, InsufficientBalance or PolicyDenied (tiers.RECIPIENT_FULL: the payee's balance
    cap)."""
    if payer_id == payee_id:
        raise PolicyDenied("own-phone")  # the screens refuse it first
    if found is None:
        found = {row[0]: (row[1], row[2], row[3])
                 for row in _LOCK_PAIR.run(conn, {"a": payer_id, "b": payee_id}).rows}
    if len(found) != 2:
        raise InsufficientBalance(found.get(payer_id, (0, None, 0))[0])  # a user row that is not there
    have, locked_until, tier = found[payer_id]
    now = utcnow()
    if locked_until is not None and locked_until > now:
        raise AccountLocked(users.minutes_left(locked_until, now))
    if have < amount + fee:
        raise InsufficientBalance(have)
    left = _check_spend(conn, policy, payer_id, amount, fee, have - amount - fee, tiers.caps(policy, tier, price))
    payee_balance, _lock, payee_tier = found[payee_id]
    tiers.check_in(tiers.caps(policy, payee_tier, price), payee_balance, amount, tiers.RECIPIENT_FULL)
    return {user_id: balance for user_id, (balance, _lock, _tier) in found.items()}, left


def run_once(db: Database, key: str, work: Callable[[], Receipt]) -> Receipt:
    """Run `work`, whose ledger row carries `key` (unique), once per key. A replay, or a
    concurrent twin that lost the race, fails on the key or is refused because the first already
    spent the money; its transaction is rolled back and it gets the first movement's receipt.
    Nothing is read first: replays that get this far are rare (the session row answers most), and
    a read would cost every movement a round trip."""
    try:
        return retry_deadlocks(work)
    except (IntegrityError, WalletError):
        found = find_by_key(db, key)
        if found is not None:
            return replay_of(db, found)
        raise


# ------------------------------------------------------------------ movements
@dataclass(frozen=True)
class Within:
    """The caller's own row that belongs in a movement's transaction (the USSD session ended with
    its reply: one transaction per confirmation). `last` runs after the money with the receipt;
    False rolls everything back (Interrupted)."""

    last: Callable[[Executor, Receipt], bool]


class Interrupted(WalletError):
    """The caller's part of a movement's transaction refused (Within): nothing moved."""


def transfer(
    db: Database, policy: Policy, sender: UserView, recipient_phone: str, amount: int, key: str, service_code: str,
    within: Within | None = None, price: int | None = None,
) -> Receipt:
    """Move `amount` sats (plus the internal fee) from `sender` to the owner of `recipient_phone`,
    creating that account if needed, with `within`'s rows in the same transaction. A recipient
    who never created a PIN is told the last day to claim the sats (they go back after it:
    ledger/unclaimed.py). Both customers' tier caps hold at `price` (KES per BTC; None: the policy's
    fixed price). Raises InsufficientBalance, PolicyDenied or Interrupted."""
    fee = policy.fee_sats("internal", amount)
    price = price or policy.value("fixed-kes-per-btc")
    if db.is_sqlite:
        # SQLite's one writer at a time: ask the policy before taking the writer's turn, so a
        # decision MeTTa must evaluate (~2 ms) is not made while every other writer waits; the
        # check under the lock finds it cached unless the facts moved. (MySQL: the lock is this
        # customer's row only, and the read would cost a round trip.)
        balance_now, sent_now = spend_facts(db, sender.id)
        policy.spend(amount, fee, balance_now, sent_now)

    def work() -> Receipt:
        with db.begin() as conn:
            locked = _LOCK_SENDER_AND_RECIPIENT.run(conn, {"a": sender.id, "phone": recipient_phone}).rows
            found: dict[int, tuple[int, dt.datetime | None, int]] | None = {row[0]: (row[1], row[2], row[7])
                                                                              for row in locked}
            recipient = next((row for row in locked if row[3] == recipient_phone), None)
            if recipient is not None:
                recipient_id, recipient_language, created = recipient[0], recipient[4], False
                unclaimed_recipient = unclaimed.never_claimed(recipient[5], recipient[6])
            else:  # never dialled: registered now, in this transaction (its new row is ours alone)
                recipient_id, recipient_language, created = users.find_or_add(conn, recipient_phone, "en")
                # registered meanwhile by another request instead: lock both again, as a pair
                found = {**(found or {}), recipient_id: (0, None, tiers.PHONE_ONLY)} if created else None
                unclaimed_recipient = True  # new, or registered a moment ago: no PIN yet
            known, left = _lock_pair(conn, policy, sender.id, recipient_id, amount, fee, price, found)
            ref = new_reference()
            recorded = journal.record(
                conn, journal.Entry("transfer", ref, sender.id, SEND, DEBIT, amount, fee, counterparty=recipient_phone,
                                    idempotency_key=key),
                [journal.customer(sender.id, amount + fee), journal.customer(recipient_id, -amount),
                 journal.house(FEES, -fee)], known=known)
            after, recipient_balance = recorded.balances[sender.id], recorded.balances[recipient_id]
            if unclaimed_recipient:
                to_recipient = t(recipient_language, "sms.new-recipient", phone=sender.phone, amount=amount,
                                 code=service_code, date=unclaimed.claim_by(policy, utcnow()).strftime("%d/%m/%Y"))
            else:
                to_recipient = t(recipient_language, "sms.received", amount=amount, phone=sender.phone, ref=ref,
                                 balance=recipient_balance)
            sms.queue_all(conn, [
                (sender.phone, receipt_text(sender.language, "sms.sent", left, amount=amount, phone=recipient_phone,
                                            fee=fee, ref=ref, balance=after)),
                (recipient_phone, to_recipient),
            ])
            receipt = Receipt(ref, amount, fee, after, SETTLED, recorded.id, left_today=left)
            if within is not None and not within.last(conn, receipt):
                raise Interrupted(key)
            return receipt

    return run_once(db, key, work)


def topup(db: Database, policy: Policy, user: UserView, kes: int, sats: int, price: int, code: str,
          key: str) -> Receipt:
    """Credit an M-Pesa top-up of `kes` with the `sats` its quote promised at `price`. Each
    confirmation code credits once, ever. Raises PolicyDenied or CodeAlreadyUsed."""
    decision = policy.topup(kes, price)
    if not decision.allowed:
        raise PolicyDenied(decision.reason or "denied")

    def work() -> Receipt:
        with db.write() as s:
            row_id, after, ref = credit_in(s, user.id, sats, topped_up(kes, code), key=key, mpesa_code=code)
            sms.queue(s, user.phone, t(user.language, "sms.topup", kes=kes, code=code, sats=sats, balance=after))
            return Receipt(ref, sats, 0, after, SETTLED, row_id)

    try:
        return run_once(db, key, work)
    except IntegrityError as exc:
        raise CodeAlreadyUsed(code) from exc


def code_used(session: Session, code: str) -> bool:
    return session.scalar(select(Transaction.id).where(Transaction.mpesa_code == code)) is not None


# Where a pending debit's sats wait, by its type: the in-flight account and its entries' kinds (for
# release: a Lightning payment's refund, a reservation left without its payout row).
_RESERVED_BY = {WITHDRAW: (MPESA_IN_FLIGHT, "withdraw-void"), AIRTIME: (AIRTIME_IN_FLIGHT, "airtime-void"),
                SEND: (LN_IN_FLIGHT, "lightning-void")}


def release(s: Session, transaction_id: int, note: str = "") -> tuple[Transaction, int, User] | None:
    """A pending debit that definitely failed: mark it failed and give amount + fee back by the
    entry that voids it, once, inside the caller's transaction. Returns the row, the new balance
    and its owner (for the SMS), or None if it was not pending. `note` replaces the row's
    description (an operator's reason)."""
    values = {"status": FAILED, "settled_at": utcnow(), **({"description": note[:255]} if note else {})}
    moved = cast(CursorResult, s.execute(
        update(Transaction)
        .where(Transaction.id == transaction_id, Transaction.status == PENDING, Transaction.direction == DEBIT)
        .values(**values)
    )).rowcount
    if moved != 1:
        return None
    row = s.get_one(Transaction, transaction_id)  # moved above: NoResultFound if missing all the same
    reserved = row.amount_sats + row.fee_sats
    in_flight, void_kind = _RESERVED_BY.get(row.type, _RESERVED_BY[SEND])
    recorded = journal.record(s, journal.following(row, void_kind, VOID, reserved, memo=note),
                              [journal.house(in_flight, reserved), journal.customer(row.user_id, -reserved)])
    return row, recorded.balances[row.user_id], users.owner(s, row.user_id)


def pay_request(db: Database, policy: Policy, payer: UserView, request_id: int, key: str,
                price: int | None = None) -> Receipt:
    """Pay another user's payment request from `payer`'s balance (no Lightning round trip), both
    customers' tier caps at `price` (None: the fixed price). Raises RequestClosed,
    InsufficientBalance or PolicyDenied."""
    price = price or policy.value("fixed-kes-per-btc")

    def work() -> Receipt:
        with db.write() as s:
            request = s.get(PaymentRequest, request_id)
            if request is None or request.status != PENDING or request.payer_phone != payer.phone:
                raise RequestClosed(str(request_id))
            claimed = cast(CursorResult, s.execute(
                update(Invoice)
                .where(Invoice.id == request.invoice_id, Invoice.status == PENDING, Invoice.expires_at > utcnow())
                .values(status=PAID, paid_at=utcnow())
            )).rowcount
            if claimed != 1:
                raise RequestClosed(str(request_id))
            s.execute(update(PaymentRequest).where(PaymentRequest.id == request_id).values(status=PAID))
            amount = request.amount_sats
            fee = policy.fee_sats("internal", amount)
            known, left = _lock_pair(s, policy, payer.id, request.requester_id, amount, fee, price)
            requester = users.owner(s, request.requester_id)
            invoice = s.get_one(Invoice, request.invoice_id)  # claimed above
            recorded = journal.record(
                s, journal.Entry("request-paid", invoice.reference, payer.id, INVOICE, DEBIT, amount, fee,
                                 counterparty=requester.phone, invoice_id=invoice.id,
                                 payment_hash=invoice.payment_hash, idempotency_key=key),
                [journal.customer(payer.id, amount + fee), journal.customer(requester.id, -amount),
                 journal.house(FEES, -fee)], known=known)
            after, requester_balance = recorded.balances[payer.id], recorded.balances[requester.id]
            sms.queue_all(s, [
                (payer.phone, receipt_text(payer.language, "sms.sent", left, amount=amount, phone=requester.phone,
                                           fee=fee, ref=invoice.reference, balance=after)),
                (requester.phone, t(requester.language, "sms.invoice-paid", ref=invoice.reference, amount=amount,
                                    balance=requester_balance)),
            ])
            return Receipt(invoice.reference, amount, fee, after, SETTLED, recorded.id, left_today=left)

    return run_once(db, key, work)


def credit_adjustment(session: Session, user_id: int, amount: int, reason: str, key: str) -> int:
    """An operator's credit inside the caller's transaction (demo balances, support cases)."""
    came = Incoming("adjustment", ADJUSTMENTS, ADJUST, counterparty="operator", memo=reason, description=reason)
    return credit_in(session, user_id, amount, came, key=key)[1]


# ------------------------------------------------------------------ money in
@dataclass(frozen=True)
class Incoming:
    """Where money coming in to a customer came from: the journal entry's kind, the house account
    it comes out of (the M-Pesa float, the node, the operators' adjustments), the movement's type
    and how the statement names it."""

    kind: str
    house: str
    movement: str
    counterparty: str | None = None
    memo: str = ""
    description: str | None = None


def topped_up(kes: int, code: str | None) -> Incoming:
    """A top-up M-Pesa confirmed (by its code, or its receipt after a push)."""
    return Incoming("topup", FLOAT, TOPUP, memo=f"M-Pesa {code or '-'} KES {kes}",
                    description=f"M-Pesa top-up KES {kes}")


def credit_in(s: Session, user_id: int, amount: int, came: Incoming, *, reference: str | None = None,
              key: str | None = None, mpesa_code: str | None = None, invoice_id: int | None = None,
              payment_hash: str | None = None) -> tuple[int, int, str]:
    """The one way money comes in (a top-up, a paid invoice, an operator's credit), inside the
    caller's transaction, with whatever state it moves: its settled movement row (unique `key`
    and `mpesa_code`: a second credit of one fails on them), the customer's balance, and one
    journal entry from `came.house` to the customer. Returns (movement id, new balance,
    reference)."""
    ref = reference or new_reference()
    recorded = journal.record(
        s, journal.Entry(came.kind, ref, user_id, came.movement, CREDIT, amount, counterparty=came.counterparty,
                         description=came.description, memo=came.memo, idempotency_key=key, mpesa_code=mpesa_code,
                         invoice_id=invoice_id, payment_hash=payment_hash),
        [journal.house(came.house, amount), journal.customer(user_id, -amount)])
    return recorded.id, recorded.balances[user_id], ref
