"""Database models (SQLAlchemy 2.0, typed). Amounts are whole sats in BigInteger columns.

Times are naive UTC (MySQL DATETIME has no zone). Rows that record money are never deleted;
a transaction's amount never changes, only its status moves forward (pending -> settled | failed).
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Date, DateTime, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, event)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    """Now, as a naive UTC datetime (what the columns store)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("balance_sats >= 0", name="ck_users_balance_nonnegative"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)  # E.164
    balance_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    language: Mapped[str] = mapped_column(String(2), default="en")
    pin_hash: Mapped[Optional[str]] = mapped_column(String(128))
    pin_failures: Mapped[int] = mapped_column(Integer, default=0)
    pin_locks: Mapped[int] = mapped_column(Integer, default=0)  # locks in a row, for growing lock time
    pin_locked_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    pin_set_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # None: unknown (issue 33)
    # The name people who send to this number see before their PIN (issue 33): the customer's own
    # words until verified (issue 34), then fixed.
    name: Mapped[Optional[str]] = mapped_column(String(40))
    name_verified_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    # Identity tier (issue 34, customers/tiers.py); the ID number as a keyed hash and its last digits
    tier: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tier_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    id_number_hash: Mapped[Optional[str]] = mapped_column(String(64), unique=True, index=True)
    id_last_digits: Mapped[Optional[str]] = mapped_column(String(4))
    birth_date: Mapped[Optional[dt.date]] = mapped_column(Date)


# Transaction.type
SEND, RECEIVE, INVOICE, TOPUP, WITHDRAW = "send", "receive", "invoice", "topup", "withdraw"
AIRTIME = "airtime"  # airtime bought for a phone through Africa's Talking
ADJUST = "adjust"  # an operator's credit (demo opening balances, support cases), with a reason
SAVE = "save"  # sats moved between a customer's balance and one of their savings goals (issue 35)
# Transaction.direction
CREDIT, DEBIT = "credit", "debit"
INTERNAL = "internal"  # balance <-> own savings goal: neither sent nor received, in no daily limit
# Transaction.status: a movement's (pending -> settled | failed); an entry that posts or voids a
# pending one is `post` or `void`
PENDING, SETTLED, FAILED = "pending", "settled", "failed"
POST, VOID = "post", "void"
# Transaction.kind of a movement from before the journal (migration 0005 opened the books with one
# entry per balance): history, with no postings of its own
BEFORE_JOURNAL = "before-journal"


class Transaction(Base):
    """A journal entry: one movement of money, whose postings (two or more, summing to zero) are
    the record of it; the balances (`users.balance_sats`, `ledger_accounts.balance_sats`) are
    caches that only journal.record writes. A pending entry (a payout reserved) is posted or
    voided once by a second entry that names it (`follows_id`, status `post` or `void`); its own
    status (pending -> settled | failed) says which, for the customer's line. The money columns
    never change once written (database triggers refuse it); `amount_sats` and `fee_sats` are
    the movement's terms as the customer saw them (the fee grows by what the rail cost, at the
    post)."""

    __tablename__ = "transactions"
    __table_args__ = (
        CheckConstraint("amount_sats > 0", name="ck_transactions_amount_positive"),
        CheckConstraint("fee_sats >= 0", name="ck_transactions_fee_nonnegative"),
        Index("ix_transactions_user_created", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))  # whose movement: the payer, or the one paid
    type: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(24), default="")  # the entry's: transfer, withdraw-pending, topup ...
    direction: Mapped[str] = mapped_column(String(8))
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    fee_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    reference: Mapped[str] = mapped_column(String(16), index=True)  # shown to users; a post/void shares it
    # the pending movement this entry posts or voids: once (unique)
    follows_id: Mapped[Optional[int]] = mapped_column(ForeignKey("transactions.id"), index=True, unique=True)
    counterparty: Mapped[Optional[str]] = mapped_column(String(64))
    description: Mapped[Optional[str]] = mapped_column(String(255))
    memo: Mapped[str] = mapped_column(String(255), default="")  # the entry's, as the statement shows it
    invoice_id: Mapped[Optional[int]] = mapped_column(ForeignKey("invoices.id"))
    payment_hash: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    mpesa_code: Mapped[Optional[str]] = mapped_column(String(32), unique=True)
    # The natural key of the request that moved the money (hash of AT sessionId + path).
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)  # monitoring windows
    settled_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


# Invoice.status
PAID, EXPIRED = "paid", "expired"


class Invoice(Base):
    """A Lightning invoice we issued for one of our users."""

    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    bolt11: Mapped[str] = mapped_column(Text)
    payment_hash: Mapped[str] = mapped_column(String(64), unique=True)
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    memo: Mapped[Optional[str]] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    paid_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class PaymentRequest(Base):
    """'Please pay me': one user asks a phone number for an amount, backed by an invoice."""

    __tablename__ = "payment_requests"
    __table_args__ = (Index("ix_payment_requests_payer_status", "payer_phone", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    payer_phone: Mapped[str] = mapped_column(String(20))
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), unique=True)
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)  # pending, paid, expired
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class UssdSession(Base):
    """Progress, idempotency and audit of one USSD session; the `text` path is the menu state."""

    __tablename__ = "ussd_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), unique=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    service_code: Mapped[Optional[str]] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32), default="main")
    # The screens the caller's inputs were typed on ("main>send.phone>..."): an audit trail that
    # cannot hold a PIN, wherever one was typed.
    input_buffer: Mapped[str] = mapped_column(Text, default="")
    onboarding_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # Choices resolved against data that can change (e.g. which request "1" meant), by token index.
    choices: Mapped[Optional[str]] = mapped_column(Text)
    last_text_hash: Mapped[Optional[str]] = mapped_column(String(64))
    last_reply: Mapped[Optional[str]] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_activity: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class RateCounter(Base):
    """Requests counted per key (a phone, a source address...) in fixed time windows, shared by
    every worker through the database."""

    __tablename__ = "rate_counters"
    __table_args__ = (UniqueConstraint("key", "bucket", name="uq_rate_counters_key_bucket"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(96))
    bucket: Mapped[int] = mapped_column(BigInteger)  # unix time // window length
    count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


# Payout.state: reserved (sats taken, the rail not yet asked or not answered) -> sent (the rail
# accepted it and gave its own key) -> posted (paid: final) | voided (failed: the sats went back).
RESERVED, SENT, POSTED, VOIDED = "reserved", "sent", "posted", "voided"
OPEN_PAYOUT = (RESERVED, SENT)
# Payout.rail: the rails' names (their adapters are registered by these in Services.rails)
AIRTIME_RAIL = "airtime"
MPESA_B2C_RAIL, MPESA_B2B_RAIL = "mpesa-b2c", "mpesa-b2b"  # a withdrawal; a till or paybill payment
LIGHTNING_RAIL = "lightning"  # a payment out of the node (a Lightning address's invoice)


class Payout(Base):
    """One payment out of the wallet on a rail (helpers/infra/rail.py), whatever the rail: its
    reservation (a pending movement) is written with this row, and its state moves once to posted
    or voided by a conditional UPDATE in the same database transaction as the money."""

    __tablename__ = "payouts"
    __table_args__ = (
        UniqueConstraint("rail", "rail_key", name="uq_payouts_rail_key"),
        Index("ix_payouts_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)  # ours: what the rail is given
    rail: Mapped[str] = mapped_column(String(16))  # airtime, ...
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), unique=True)  # the reservation
    destination: Mapped[str] = mapped_column(Text)  # the rail's words: a phone, a till, a Lightning invoice
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    fee_sats: Mapped[int] = mapped_column(BigInteger, default=0)  # ours
    fee_limit_sats: Mapped[int] = mapped_column(BigInteger, default=0)  # the most the rail may cost (reserved)
    amount_kes: Mapped[Optional[int]] = mapped_column(BigInteger)  # rails that pay in KES
    state: Mapped[str] = mapped_column(String(16), default=RESERVED)
    rail_key: Mapped[Optional[str]] = mapped_column(String(64))  # the rail's id (AT requestId, Daraja's
    # OriginatorConversationID, ...)
    rail_ref: Mapped[Optional[str]] = mapped_column(String(64))  # a second id of the rail's (Daraja's ConversationID)
    receipt: Mapped[Optional[str]] = mapped_column(String(64))  # the rail's receipt, once paid
    result_desc: Mapped[Optional[str]] = mapped_column(String(255))
    queries: Mapped[int] = mapped_column(Integer, default=0)
    last_query_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    originator_phone: Mapped[Optional[str]] = mapped_column(String(20))  # the travel rule (issue 34): the
    originator_name: Mapped[Optional[str]] = mapped_column(String(40))  # sender, and their name as it stood


# MpesaRequest.kind
STK = "stk"  # the only kind left: payouts (B2C, B2B) are payouts rows since migration 0014
B2C, B2B = "b2c", "b2b"  # what the payouts' kinds were called in mpesa_requests (and Daraja's callback URLs)


class MpesaRequest(Base):
    """One STK push (a top-up) whose outcome arrives later. Its callback finds it by `reference` (a
    segment of its URL) and must match its ids, amount and phone. Its status moves once, pending ->
    settled | failed, in the same database transaction as the money. (Payouts to M-Pesa are rows
    of `payouts`, like every payout.)"""

    __tablename__ = "mpesa_requests"
    __table_args__ = (Index("ix_mpesa_requests_status_kind", "status", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # stk, b2c
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # b2c: the pending withdrawal; stk: the credit, once there is one
    transaction_id: Mapped[Optional[int]] = mapped_column(ForeignKey("transactions.id"), unique=True)
    phone: Mapped[str] = mapped_column(String(20))  # E.164: who pays (stk) or is paid (b2c)
    amount_kes: Mapped[int] = mapped_column(BigInteger)
    amount_sats: Mapped[int] = mapped_column(BigInteger)  # stk: what the screen promised to credit
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    merchant_request_id: Mapped[Optional[str]] = mapped_column(String(64))
    checkout_request_id: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    originator_conversation_id: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    conversation_id: Mapped[Optional[str]] = mapped_column(String(64))
    receipt: Mapped[Optional[str]] = mapped_column(String(32))  # M-Pesa's receipt (transaction id)
    result_code: Mapped[Optional[str]] = mapped_column(String(16))
    result_desc: Mapped[Optional[str]] = mapped_column(String(255))
    # The USSD step that started it (stk), so a replayed confirmation pushes once.
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    queries: Mapped[int] = mapped_column(Integer, default=0)  # status queries sent
    last_query_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


class SmsOutbox(Base):
    """An SMS waiting to be sent after the USSD reply; retried with backoff."""

    __tablename__ = "sms_outbox"
    __table_args__ = (Index("ix_sms_outbox_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)  # pending, sending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[Optional[str]] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


# ------------------------------------------------------------------ the journal (double entry)
# Account kinds; a posting's amount is signed: + debit, - credit. Every entry's postings sum to
# zero, so the books balance by construction. Assets are debit-normal (positive), the others
# credit-normal (negative sums): a customer's balance is minus the sum of their postings.
ASSET, LIABILITY, INCOME, EQUITY = "asset", "liability", "income", "equity"
# The house accounts: where the money really sits or passes through.
NODE = "lightning-node"  # sats on our Lightning node (asset)
FLOAT = "mpesa-float"  # KES in our M-Pesa float, counted in the sats they bought (asset)
LN_IN_FLIGHT = "lightning-in-flight"  # reserved for payments out the node has not finished (liability)
MPESA_IN_FLIGHT = "mpesa-in-flight"  # reserved for M-Pesa payouts not finished (liability)
AIRTIME_FLOAT = "airtime-float"  # KES prepaid at Africa's Talking for airtime, counted in sats (asset)
AIRTIME_IN_FLIGHT = "airtime-in-flight"  # reserved for airtime Africa's Talking has not delivered (liability)
FEES = "fee-income"  # our fees (income)
ADJUSTMENTS = "adjustments"  # operator credits and demo balances: money no asset backs (equity)
OPENING = "opening-balances"  # what the books started from when the journal began (equity)
SAVINGS = "savings"  # every goal's sats (liability); a goal's postings carry its goal_id (sub-account)
HOUSE_ACCOUNTS = {NODE: ASSET, FLOAT: ASSET, LN_IN_FLIGHT: LIABILITY, MPESA_IN_FLIGHT: LIABILITY,
                  FEES: INCOME, ADJUSTMENTS: EQUITY, OPENING: EQUITY,
                  AIRTIME_FLOAT: ASSET, AIRTIME_IN_FLIGHT: LIABILITY, SAVINGS: LIABILITY}


class LedgerAccount(Base):
    """A house account and its balance (the sum of its postings, kept in the same transaction as
    they are written). Customers' accounts are their `users` rows (balance_sats, credit-normal)."""

    __tablename__ = "ledger_accounts"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    balance_sats: Mapped[int] = mapped_column(BigInteger, default=0)  # sum of postings (+ debit)


class Posting(Base):
    """One leg of an entry (a `transactions` row): a customer's (user_id) or a house account's
    (account), + debit / - credit. Never updated or deleted (database triggers refuse it)."""

    __tablename__ = "postings"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (account IS NULL)", name="ck_postings_one_account"),
        Index("ix_postings_user", "user_id"),
        Index("ix_postings_account", "account"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    account: Mapped[Optional[str]] = mapped_column(ForeignKey("ledger_accounts.code"))
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    # a savings goal's posting: which goal (no foreign key: SQLite would rebuild this append-only table)
    goal_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)


class FloatReading(Base):
    """One Account Balance query of our M-Pesa shortcode (Daraja answers by callback): what M-Pesa
    says the float holds, to set beside what the books recorded. `accounts` keeps each of M-Pesa's
    accounts as "name: available KES" lines; `available_cents` is their sum."""

    __tablename__ = "float_readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)  # pending, settled (answered), failed
    available_cents: Mapped[Optional[int]] = mapped_column(BigInteger)
    accounts: Mapped[Optional[str]] = mapped_column(String(1000))
    result_desc: Mapped[Optional[str]] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    answered_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


class Price(Base):
    """A reference BTC/KES price the feed agreed on: the median of the sources that answered
    within the outlier band. `answers` keeps every source's answer (or why it had none)."""

    __tablename__ = "prices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kes_per_btc: Mapped[int] = mapped_column(BigInteger)
    sources: Mapped[str] = mapped_column(String(255))  # the sources the median was taken from
    answers: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Quote(Base):
    """A conversion shown to a customer on a confirm screen, held until `expires_at`: confirming
    in time uses exactly these numbers (also when M-Pesa's callback comes later)."""

    __tablename__ = "quotes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))  # topup, withdraw, send
    kes: Mapped[int] = mapped_column(BigInteger)
    sats: Mapped[int] = mapped_column(BigInteger)
    fee_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    kes_per_btc: Mapped[int] = mapped_column(BigInteger)  # the reference price it was made at
    spread_bps: Mapped[int] = mapped_column(Integer, default=0)
    price_source: Mapped[str] = mapped_column(String(16))  # feed, manual, fixed
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


class Operator(Base):
    """A person who runs the wallet, signing in to the console (/admin) with a password (werkzeug's
    scrypt hash) and a TOTP code. Wrong sign-ins are throttled per address (rate_counters)."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # wrong sign-ins in a row (shown, never locks)
    locked_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # `flask operator lock`: no sign-in
    last_login_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # Every console session of this operator carries this random key; a new one (or none) ends them
    # all at once: sign-out, lock, a password or second-factor change (0011_operator_sessions).
    session_key: Mapped[Optional[str]] = mapped_column(String(64))
    totp_secret: Mapped[Optional[str]] = mapped_column(String(64))  # base32, the second factor (RFC 6238)
    totp_last_step: Mapped[Optional[int]] = mapped_column(BigInteger)  # the last code's time step: used once


class AuditEntry(Base):
    """Who did what to which account, and why: every operator action, written in the same
    transaction as the action itself (append-only, as the journal)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # login, credit, debit, unlock-pin, reset-pin, reconcile, ...
    subject: Mapped[str] = mapped_column(String(64), default="")  # a phone, a reference
    reason: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Job(Base):
    """A piece of background work, claimed by one worker at a time with a lease: a pending item to
    ask about (an invoice, a payment out, an M-Pesa request) or a periodic task. A worker that dies
    leaves its lease to expire and another takes the job again."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_jobs_kind_key"),
                      Index("ix_jobs_due", "done_at", "due_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # invoice, payment, mpesa, every
    key: Mapped[str] = mapped_column(String(80))  # payment hash, transaction id, reference, task name
    due_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    lease_until: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    leased_by: Mapped[Optional[str]] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[Optional[str]] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    done_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


SWAPPED, NOT_SWAPPED, NO_ANSWER = "swapped", "not-swapped", "none"  # PhoneGuard.swap_answer ("none": no answer)


class PhoneGuard(Base):
    """What stands between a phone and money out (issue 33): its SIM swaps as the provider said, the
    hold one started and an operator's release of it, and a Forgot-PIN reset under way."""

    __tablename__ = "phone_guards"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)  # E.164
    swap_answer: Mapped[str] = mapped_column(String(16), default=NO_ANSWER)
    last_swap_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # the last swap it reported
    held_swap_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # the swap that put the number on hold
    answered_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # the cached answer's age
    request_id: Mapped[Optional[str]] = mapped_column(String(64), index=True)  # the open question (AT requestId)
    asked_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # a question on its way (no id yet)
    early_answer: Mapped[Optional[str]] = mapped_column(String(255))  # a callback that beat its question's id (JSON)
    next_ask_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # a session's first step asks from then
    cleared_swap_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # the swap an operator verified
    reset_due_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime, index=True)  # Forgot PIN under way
    reset_told_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # the reminder SMS went out
    aml_hold_case_id: Mapped[Optional[int]] = mapped_column(Integer)  # a monitoring case holds money out

EXPORT, CORRECT, ERASE, RETAIN = "export", "correct", "erase", "retain"  # PrivacyRequest.kind (retain: the worker's)


MOCK_INVOICE, MOCK_PAYMENT = "invoice", "payment"  # MockNodeEntry.kind


class MockNodeEntry(Base):
    """The mock Lightning node's own book (LIGHTNING_BACKEND=mock only): one row per invoice it
    made and per payment it sent, so every worker process sees one node. Its balance is the
    opening balance plus the sum of `balance_change_sats`. Not our customers' money: the
    journal records that."""

    __tablename__ = "mock_node_entries"
    __table_args__ = (UniqueConstraint("kind", "payment_hash", name="uq_mock_node_entries_kind_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # invoice, payment
    payment_hash: Mapped[str] = mapped_column(String(64))
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    fee_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16))  # pending, succeeded, failed (lightning.State)
    bolt11: Mapped[Optional[str]] = mapped_column(Text)  # invoices
    expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # invoices
    preimage: Mapped[Optional[str]] = mapped_column(String(64))  # payments
    error: Mapped[Optional[str]] = mapped_column(String(255))
    balance_change_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


def _seed_house_accounts(target, connection, **_kw) -> None:
    connection.execute(target.insert(), [{"code": code, "kind": kind, "balance_sats": 0}
                                          for code, kind in HOUSE_ACCOUNTS.items()])


event.listen(LedgerAccount.__table__, "after_create", _seed_house_accounts)
