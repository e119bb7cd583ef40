"""The register of data-protection requests (issue 34), on the models' metadata (models.py holds
at most 500 lines): imported by helpers/wallet/privacy.py and by migrations/env.py."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow


class PrivacyRequest(Base):  # a data-protection request and its outcome (issue 34); the register
    __tablename__ = "privacy_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(20), index=True)  # the phone, or its pseudonym once erased
    kind: Mapped[str] = mapped_column(String(16))  # export, correct, erase, retain
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    done_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)  # None: refused
    outcome: Mapped[str] = mapped_column(String(255), default="")
    operator: Mapped[str] = mapped_column(String(64), default="")
