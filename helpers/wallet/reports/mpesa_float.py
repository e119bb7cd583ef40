"""What M-Pesa says our float holds (Daraja's Account Balance), to set beside what the books
recorded. A query is a row (pending) whose reference names the callback; the callback fills it
in once. Nothing here moves money: a reading is evidence for the operator, not an entry."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from database import Database
from helpers.infra.refs import new_reference
from helpers.mpesa.provider import MpesaProvider
from models import FAILED, PENDING, SETTLED, FloatReading, utcnow

log = logging.getLogger(__name__)

_CENT = Decimal("0.01")
_BALANCE = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,2})?")


@dataclass(frozen=True)
class Reading:
    reference: str
    available_kes: Decimal
    accounts: dict[str, Decimal]
    at: dt.datetime


def ask(db: Database, provider: MpesaProvider) -> str | None:
    """Send an Account Balance query. Returns its reference, or None when the provider has no such
    query or M-Pesa did not accept it (the row is then marked failed)."""
    if not provider.queries_balance:
        return None
    reference = new_reference()
    with db.write() as s:
        s.add(FloatReading(reference=reference, status=PENDING))
    if provider.query_balance(reference):
        return reference
    with db.write() as s:
        s.execute(update(FloatReading).where(FloatReading.reference == reference)
                  .values(status=FAILED, result_desc="not accepted", answered_at=utcnow()))
    return None


def parse_accounts(value: str) -> dict[str, Decimal] | None:
    """Daraja's "Working Account|KES|700000.00|700000.00|0.00|0.00&Utility Account|KES|..." ->
    {account: available KES}. None when any part is not what the docs describe."""
    accounts: dict[str, Decimal] = {}
    for part in value.split("&"):
        fields = part.split("|")
        if len(fields) < 3 or not fields[0].strip() or fields[1] != "KES" or not _BALANCE.fullmatch(fields[2]):
            return None
        try:
            accounts[fields[0].strip()[:64]] = Decimal(fields[2])
        except InvalidOperation:
            return None
    return accounts or None


def record(db: Database, reference: str, result: dict[str, Any], parameters: dict[str, Any]) -> str:
    """Daraja's answer to a query, applied once. Returns what happened, for the callback's log."""
    code = str(result.get("ResultCode", "")).strip()
    description = str(result.get("ResultDesc", ""))[:255]
    accounts = parse_accounts(str(parameters.get("AccountBalance") or "")) if code == "0" else None
    if code == "0" and accounts is None:
        return "unreadable"
    values: dict[str, Any] = {"status": FAILED, "result_desc": description, "answered_at": utcnow()}
    if accounts is not None:
        total = sum(accounts.values(), Decimal(0))
        values.update(status=SETTLED, available_cents=int(total * 100),
                      accounts="\n".join(f"{name}: {kes}" for name, kes in accounts.items())[:1000])
    with db.write() as s:
        moved = s.execute(update(FloatReading)
                          .where(FloatReading.reference == reference, FloatReading.status == PENDING)
                          .values(**values))
    if cast(CursorResult, moved).rowcount != 1:
        return "duplicate or unknown"
    log.info("mpesa float %s: %s", reference, "answered" if accounts is not None else f"failed ({code})")
    return "recorded"


def latest(session: Session) -> Reading | None:
    """The newest answered reading."""
    row = session.scalar(select(FloatReading).where(FloatReading.status == SETTLED)
                         .order_by(FloatReading.id.desc()).limit(1))
    if row is None or row.available_cents is None or row.answered_at is None:
        return None
    accounts = {}
    for line in (row.accounts or "").splitlines():
        name, _, kes = line.rpartition(": ")
        accounts[name] = Decimal(kes)
    return Reading(row.reference, (Decimal(row.available_cents) / 100).quantize(_CENT), accounts, row.answered_at)


def status_of(db: Database, reference: str) -> str | None:
    with db.read() as s:
        return s.scalar(select(FloatReading.status).where(FloatReading.reference == reference))
