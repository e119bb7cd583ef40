"""The savings tables (issue 35): goals, each a ledger sub-account of the house account `savings`
(models.SAVINGS; a goal's postings carry its goal_id), and standing orders. Declared on models.Base
beside the journal that writes a goal's balance (models.py is at its 500-line bound); imported by
the journal, so they are in Base.metadata wherever money can move (and by migrations/env.py)."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow

# SavingsGoal.status
GOAL_OPEN, GOAL_MATURED, GOAL_BROKEN = "open", "matured", "broken"


class SavingsGoal(Base):
    """A customer's savings goal (issue 35): a ledger sub-account of `savings` whose sats cannot be
    spent until `lock_until` (00:00 UTC of the day it matures). `balance_sats` is the cache of its
    postings (only journal.record writes it). Open -> matured (the worker returns the sats, once)
    or broken (the customer took them early, where the policy allows, for its fee)."""

    __tablename__ = "savings_goals"
    __table_args__ = (
        CheckConstraint("balance_sats >= 0", name="ck_savings_goals_balance"),
        Index("ix_savings_goals_user", "user_id"),
        Index("ix_savings_goals_due", "status", "lock_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(20))
    target_sats: Mapped[Optional[int]] = mapped_column(BigInteger)
    target_kes: Mapped[Optional[int]] = mapped_column(BigInteger)
    lock_until: Mapped[dt.datetime] = mapped_column(DateTime)
    balance_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    # Auto-save: this share (basis points) of each receipt the worker moves in, of the journal's
    # entries after `autosave_seen_id` (the newest entry when it was switched on: a floor, not a
    # high-water mark); each receipt it has considered is a row of savings_autosave_seen.
    autosave_bps: Mapped[int] = mapped_column(Integer, default=0)
    autosave_seen_id: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(8), default=GOAL_OPEN)
    open_key: Mapped[str] = mapped_column(String(64), unique=True)  # the request that opened it
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    closed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


class AutosaveSeen(Base):
    """A receipt an auto-saving goal has considered: its share taken (share_sats, in the same
    transaction as the goal's entry) or not (0: below the minimum, or not covered). Ids are handed
    out at insert and committed in any order, so the worker asks which receipts have no row here,
    never which are above the last it swept; the key makes each receipt count once per goal."""

    __tablename__ = "savings_autosave_seen"

    goal_id: Mapped[int] = mapped_column(ForeignKey("savings_goals.id"), primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("transactions.id"), primary_key=True)
    share_sats: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# StandingOrder.kind, .period, .status
ORDER_PHONE, ORDER_GOAL = "phone", "goal"
ORDER_ADDRESS, ORDER_TILL, ORDER_PAYBILL = "address", "till", "paybill"  # a Lightning address; M-Pesa
UNIT_SATS, UNIT_KES = "sats", "kes"  # what an order's amount was typed in
DAILY, WEEKLY, MONTHLY = "daily", "weekly", "monthly"
ORDER_ACTIVE, ORDER_CANCELLED = "active", "cancelled"


class StandingOrder(Base):
    """A payment the worker makes for a customer each period without the PIN, which they gave once
    to set it up (their consent, within the policy's standing-order-max-sats): to a phone, or into
    one of their goals. Each run is a movement keyed `so:<id>:<period start>` (unique)."""

    __tablename__ = "standing_orders"
    __table_args__ = (
        CheckConstraint("amount_sats > 0", name="ck_standing_orders_amount"),
        Index("ix_standing_orders_user", "user_id"),
        Index("ix_standing_orders_due", "status", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(8))
    destination: Mapped[str] = mapped_column(String(64))  # E.164 phone, goal id, user@domain, till/paybill number
    # a KES order's sats at setup's price (its cap check then); each run converts amount_kes anew
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    unit: Mapped[str] = mapped_column(String(4), default=UNIT_SATS, server_default=UNIT_SATS)
    amount_kes: Mapped[Optional[int]] = mapped_column(BigInteger)
    account: Mapped[Optional[str]] = mapped_column(String(13))  # a paybill's account reference
    period: Mapped[str] = mapped_column(String(8))
    next_run_at: Mapped[dt.datetime] = mapped_column(DateTime)
    cap_sats: Mapped[int] = mapped_column(BigInteger)  # the policy's cap the customer consented under
    status: Mapped[str] = mapped_column(String(12), default=ORDER_ACTIVE)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    skips: Mapped[int] = mapped_column(Integer, default=0)
    setup_key: Mapped[str] = mapped_column(String(64), unique=True)  # the PIN step that set it up
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    cancelled_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
