"""The monitoring cases' table (issue 34), on the models' metadata (models.py holds at most 500
lines): imported by the wallet's aml package and by migrations/env.py."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow


class AmlCase(Base):
    """A monitoring rule's hit on a customer (issue 34, helpers/wallet/aml/): one per rule, customer, window."""
    __tablename__ = "aml_cases"
    __table_args__ = (UniqueConstraint("rule", "phone", "window_key", name="uq_aml_cases_rule_phone_window"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String(32))  # atoms.metta's aml-<rule>
    phone: Mapped[str] = mapped_column(ForeignKey("users.phone"), index=True)  # the customer (E.164)
    window_key: Mapped[str] = mapped_column(String(32))  # the day (UTC) the pattern began
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open, assigned, held, closed
    assigned_to: Mapped[Optional[str]] = mapped_column(String(64))
    suspicious: Mapped[bool] = mapped_column(Boolean, default=False)
    facts: Mapped[str] = mapped_column(Text)  # JSON: what the rule decided on, the movements' ids
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    close_reason: Mapped[Optional[str]] = mapped_column(String(255))  # when, who, what else: audit lines
