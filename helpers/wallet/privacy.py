"""A person's rights over their data (Kenya's Data Protection Act 2019, issue 34): access and
portability (everything we hold about them, as JSON and as CSVs), correction of their name, and
erasure. Every request goes in the register (`privacy_requests`) with its date and outcome, and
an operator's in the audit log, in the same transaction as what it did.

Erasure is refused while we hold money of theirs or something of theirs is still open (a payout,
an invoice that can still be paid, a payment request, an M-Pesa request, a pending movement, an
open case of any `*_cases` table). Otherwise the person is removed from what is not a money
record: their phone becomes a pseudonym (an HMAC of it under the server's secret: stable, not
reversible, `+000` and 11 digits, a number no phone has), their name and every other optional
column of `users` are emptied, their sessions, SIM-swap guard and rate counters deleted, their
SMS blanked. Money records (movements, payouts, M-Pesa requests, invoices, payment requests) are
kept as they are for `retention-years` (atoms.metta; POCAMLA asks for seven) after the erasure;
then the worker (`retain_due`) replaces every phone in them, and the erased phone wherever other
customers' records name it, by its pseudonym, and drops the sender's name kept for the travel
rule. Money columns never change (database triggers): only counterparty, description, memo and
phone columns do, so the journal stays as it was. The audit log is append-only (the triggers
refuse any edit): its lines about the person keep the phone they were written with.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from database import Database
from helpers.wallet import operators
from helpers.wallet.customers import users
from helpers.wallet.ledger import journal
from helpers.wallet.operators import OperatorError
from helpers.wallet.rules import Policy
from helpers.wallet.privacy_tables import PrivacyRequest
from models import (CORRECT, ERASE, EXPORT, FAILED, OPEN_PAYOUT, PENDING, RETAIN, Base, Invoice, MpesaRequest,
                    PaymentRequest, Payout, PhoneGuard, RateCounter, SmsOutbox, Transaction,
                    UssdSession, User, utcnow)

log = logging.getLogger(__name__)

PSEUDONYM_PREFIX = "+000"  # no country code is 000: a pseudonym is never a phone anyone dials from
ERASED_SMS = "[erased]"
_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")  # an E.164 number inside a text (a pseudonym starts +0)
# Columns of users that erasure keeps: the account's key, its money (the cache of the journal) and
# when it began; every other column that may be empty is emptied (a tier's ID data included).
_KEPT_USER_COLUMNS = frozenset({"id", "phone", "balance_sats", "created_at"})
# Columns that name a person by phone, whatever the table (export finds the person's rows by them).
_PHONE_COLUMNS = ("phone", "payer_phone", "originator_phone")
_SECRET_COLUMNS = frozenset({"pin_hash"})  # shown as whether it is set, never the hash


class PrivacyRefused(OperatorError):
    """A data-protection request that cannot be done now; the message says why (and it is in the
    register)."""


def pseudonym(phone: str, secret: str) -> str:
    """The pseudonym of a phone: stable (the same phone, the same pseudonym), not reversible
    without the secret, and the shape of an E.164 number no one has (+000 and 11 digits)."""
    digest = hmac.new(secret.encode(), b"privacy-pseudonym:" + phone.encode(), hashlib.sha256).hexdigest()
    return f"{PSEUDONYM_PREFIX}{int(digest, 16) % 10**11:011d}"


def is_pseudonym(phone: str) -> bool:
    return phone.startswith(PSEUDONYM_PREFIX)


def _register(s: Session, subject: str, kind: str, operator: str, outcome: str, done: bool) -> None:
    now = utcnow()
    s.add(PrivacyRequest(subject=subject[:20], kind=kind, requested_at=now, done_at=now if done else None,
                         outcome=outcome[:255], operator=operator[:64]))


def _refuse(db: Database, subject: str, kind: str, operator: str, why: str) -> PrivacyRefused:
    """Register a refused request (its own transaction: the refused one wrote nothing)."""
    with db.write() as s:
        _register(s, subject, kind, operator, f"refused: {why}", done=False)
        operators.audit(s, operator, f"privacy-{kind}-refused", subject, why)
    return PrivacyRefused(why)


# ------------------------------------------------------------------ access and portability
def _plain(value: Any) -> Any:
    return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value


def _rows(s: Session, table: Table, where: Any) -> list[dict[str, Any]]:
    rows = []
    for row in s.execute(select(table).where(where).order_by(*table.primary_key.columns)).mappings():
        rows.append({name: ("set" if row[name] else None) if name in _SECRET_COLUMNS else _plain(row[name])
                     for name in row.keys()})
    return rows


def _person_filter(table: Table, user_id: int, phone: str) -> Any:
    """Where a table names the person: a column that points at users.id, or one holding their phone."""
    conditions = [column == user_id for column in table.columns
                  if any(fk.column.table.name == "users" and fk.column.name == "id" for fk in column.foreign_keys)]
    conditions += [table.columns[name] == phone for name in _PHONE_COLUMNS if name in table.columns]
    return or_(*conditions) if conditions else None


def collect(s: Session, user: User) -> dict[str, Any]:
    """Everything we hold about a customer: their `users` row (every column, so columns added later
    come too; the PIN's hash only as set or not), their statement, and their rows of every table
    that points at them or holds their phone (sessions kept, SMS sent, invoices, requests,
    payouts, M-Pesa requests, movements, postings, quotes, SIM-swap guard, ...), the rate
    counters keyed by their phone, the operators' audit lines and the data-protection requests
    about them."""
    phone = user.phone
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in Base.metadata.sorted_tables:
        if table.name == "users":
            tables["users"] = _rows(s, table, table.c.id == user.id)
            continue
        where = _person_filter(table, user.id, phone)
        if where is not None:
            tables[table.name] = _rows(s, table, where)
    tables["rate_counters"] = _rows(s, Base.metadata.tables["rate_counters"],
                                    RateCounter.key.contains(phone, autoescape=True))
    tables["audit_log"] = _rows(s, Base.metadata.tables["audit_log"],
                                Base.metadata.tables["audit_log"].c.subject == phone)
    tables["privacy_requests"] = _rows(s, Base.metadata.tables["privacy_requests"], PrivacyRequest.subject == phone)
    tables["statement"] = [{"at": _plain(line.at), "kind": line.kind, "reference": line.reference,
                            "amount_sats": line.amount, "counterparty": line.counterparty,
                            "pending": line.pending, "memo": line.memo}
                           for line in journal.statement(s, user.id)]
    return {"subject": phone, "exported_at": _plain(utcnow()), "tables": tables}


def export(db: Database, operator: str, phone: str) -> dict[str, Any]:
    """What `collect` finds about the customer with `phone`, registered as an export request.
    Raises PrivacyRefused (no such customer)."""
    with db.write() as s:
        user = users.get(s, phone)
        if user is not None:
            data = collect(s, user)
            count = sum(len(rows) for rows in data["tables"].values())
            _register(s, phone, EXPORT, operator, f"exported {count} rows of {len(data['tables'])} tables", done=True)
            operators.audit(s, operator, "privacy-export", phone, "data-protection request", f"{count} rows")
            return data
    raise _refuse(db, phone, EXPORT, operator, "no customer with this phone")


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def as_zip(data: dict[str, Any]) -> bytes:
    """The export as one zip: the JSON document and one CSV per table (a header row, then the
    rows), what a Data Protection officer hands over."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.json", as_json(data))
        for name, rows in data["tables"].items():
            text = io.StringIO()
            columns = list(rows[0]) if rows else []
            writer = csv.DictWriter(text, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
            archive.writestr(f"{name}.csv", text.getvalue())
    return buffer.getvalue()


# ------------------------------------------------------------------ correction
def correct_name(db: Database, operator: str, phone: str, typed: str, reason: str) -> str:
    """Correct a customer's name (tidied as users.clean_name). Before verification any operator
    may; a verified name only with a reason (the ID seen), and it stays verified. Returns the name
    now held. Raises PrivacyRefused."""
    name = users.clean_name(typed)
    why = " ".join(reason.split())[:200]
    with db.write() as s:
        user = users.get(s, phone)
        refusal = ("no customer with this phone" if user is None else
                   "not a name (2-30 letters)" if name is None else
                   "the name is verified: say why (the ID seen), at least 5 characters"
                   if user.name_verified_at is not None and len(why) < 5 else "")
        if user is not None and name is not None and not refusal:
            before, verified = user.name, user.name_verified_at is not None
            s.execute(update(User).where(User.id == user.id).values(name=name))
            outcome = f"name corrected{' (verified)' if verified else ''}"
            _register(s, phone, CORRECT, operator, outcome, done=True)
            operators.audit(s, operator, "privacy-correct", phone, why or "data-protection request",
                            f"{before or '-'} -> {name}")
            return name
    raise _refuse(db, phone, CORRECT, operator, refusal)


# ------------------------------------------------------------------ erasure
# Anything that keeps a customer's data in use: (what, count of open items). Other modules may add
# their own (OPEN_ITEMS.append); tables named *_cases with user_id and closed_at are found alone.
OPEN_ITEMS: list[Callable[[Session, User], tuple[str, int]]] = [
    lambda s, u: ("sats held", u.balance_sats),
    lambda s, u: ("open payouts", _count(s, Payout, Payout.user_id == u.id, Payout.state.in_(OPEN_PAYOUT))),
    lambda s, u: ("invoices that can still be paid", _count(s, Invoice, Invoice.user_id == u.id,
                                                            Invoice.status == PENDING, Invoice.expires_at > utcnow())),
    lambda s, u: ("open payment requests", _count(s, PaymentRequest, PaymentRequest.requester_id == u.id,
                                                  PaymentRequest.status == PENDING)),
    lambda s, u: ("open M-Pesa requests", _count(s, MpesaRequest, MpesaRequest.user_id == u.id,
                                                 MpesaRequest.status == PENDING)),
    lambda s, u: ("pending movements", _count(s, Transaction, Transaction.user_id == u.id,
                                              Transaction.status == PENDING)),
]


def _count(s: Session, model: Any, *where: Any) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _open_cases(s: Session, user: User) -> int:
    count = 0
    for table in Base.metadata.sorted_tables:
        if table.name.endswith("_cases") and "user_id" in table.c and "closed_at" in table.c:
            count += int(s.scalar(select(func.count()).select_from(table).where(
                table.c.user_id == user.id, table.c.closed_at.is_(None))) or 0)
    return count


def open_items(s: Session, user: User) -> list[str]:
    """What stands in the way of erasing this customer, e.g. ['sats held: 1500']."""
    found = [check(s, user) for check in OPEN_ITEMS] + [("open cases", _open_cases(s, user))]
    return [f"{what}: {count}" for what, count in found if count]


@dataclass(frozen=True)
class Erased:
    pseudonym: str
    sessions: int
    sms: int


def erase(db: Database, secret: str, operator: str, phone: str, reason: str) -> Erased:
    """Erase a customer (see the module's docstring), in one transaction with its register row
    and audit line. Raises PrivacyRefused (no such customer, or something open: nothing changed)."""
    why = " ".join(reason.split())[:200]
    alias = pseudonym(phone, secret)
    with db.write() as s:
        user = users.get(s, phone)
        blocking = ["no customer with this phone"] if user is None else open_items(s, user)
        if len(why) < 5:
            blocking.append("say why (the request, how identity was checked), at least 5 characters")
        if user is not None and not blocking:
            if s.scalar(select(User.id).where(User.phone == alias)) is not None:
                alias = pseudonym(f"{phone}#{user.id}", secret)  # the number erased before, another account
            emptied = {c.name: None for c in User.__table__.columns
                       if c.nullable and c.name not in _KEPT_USER_COLUMNS}
            s.execute(update(User).where(User.id == user.id).values(phone=alias, **emptied))
            sessions = cast(CursorResult, s.execute(delete(UssdSession).where(UssdSession.phone == phone))).rowcount
            sms = cast(CursorResult, s.execute(update(SmsOutbox).where(SmsOutbox.phone == phone).values(
                phone=alias, message=ERASED_SMS, last_error=None))).rowcount
            s.execute(update(SmsOutbox).where(SmsOutbox.phone == alias, SmsOutbox.status == PENDING)
                      .values(status=FAILED, last_error="erased before it was sent"))
            s.execute(delete(PhoneGuard).where(PhoneGuard.phone == phone))
            s.execute(delete(RateCounter).where(RateCounter.key.contains(phone, autoescape=True)))
            s.execute(update(PrivacyRequest).where(PrivacyRequest.subject == phone).values(subject=alias))
            _register(s, alias, ERASE, operator, f"erased: {sessions} sessions deleted, {sms} SMS blanked; "
                      "money records kept for retention", done=True)
            operators.audit(s, operator, "privacy-erase", alias, why)
            return Erased(alias, sessions, sms)
    raise _refuse(db, phone, ERASE, operator, "; ".join(blocking))


# ------------------------------------------------------------------ retention, then pseudonyms
def due_for_retention(db: Database, policy: Policy) -> list[str]:
    """The pseudonyms of customers erased more than `retention-years` ago whose money records
    have not been pseudonymised yet."""
    before = utcnow() - dt.timedelta(days=365 * policy.value("retention-years") + 2)  # whole years, leap days too
    retained = select(PrivacyRequest.subject).where(PrivacyRequest.kind == RETAIN, PrivacyRequest.done_at.is_not(None))
    with db.read() as s:
        return list(dict.fromkeys(s.scalars(select(PrivacyRequest.subject).where(
            PrivacyRequest.kind == ERASE, PrivacyRequest.done_at.is_not(None), PrivacyRequest.done_at < before,
            PrivacyRequest.subject.not_in(retained)).order_by(PrivacyRequest.id))))


def retain(db: Database, secret: str, alias: str) -> int:
    """Pseudonymise the money records of the customer erased as `alias`: every phone in their own
    movements, payouts, M-Pesa requests and payment requests, and their phone wherever other
    customers' records name it. Money columns are untouched. Registered as a `retain` request.
    Returns how many rows changed."""
    def hide(text: str | None) -> str | None:
        return None if text is None else _PHONE.sub(lambda m: pseudonym(m.group(), secret), text)

    changed = 0
    with db.write() as s:
        user_id = s.scalar(select(User.id).where(User.phone == alias))
        raw = _phones_of(s, secret, alias)
        theirs = [Transaction.user_id == user_id] + [Transaction.counterparty == p for p in raw]
        theirs += [column.contains(p, autoescape=True) for p in raw
                   for column in (Transaction.memo, Transaction.description)]
        for movement in s.execute(select(Transaction.id, Transaction.counterparty, Transaction.description,
                                         Transaction.memo).where(or_(*theirs))):
            new = (hide(movement[1]), hide(movement[2]), hide(movement[3]) or "")
            if new != (movement[1], movement[2], movement[3] or ""):
                s.execute(update(Transaction).where(Transaction.id == movement[0])
                          .values(counterparty=new[0], description=new[1], memo=new[2]))
                changed += 1
        for payout in s.execute(select(Payout.id, Payout.destination, Payout.user_id).where(
                or_(Payout.user_id == user_id, *[Payout.destination.contains(p, autoescape=True) for p in raw]))):
            travel = {"originator_phone": alias, "originator_name": None} if payout[2] == user_id else {}
            s.execute(update(Payout).where(Payout.id == payout[0]).values(destination=hide(payout[1]) or "",
                                                                          **travel))
            changed += 1
        for model, column, own in ((MpesaRequest, MpesaRequest.phone, MpesaRequest.user_id == user_id),
                                   (PaymentRequest, PaymentRequest.payer_phone,
                                    PaymentRequest.requester_id == user_id)):
            for item_id, held in s.execute(select(model.id, column).where(or_(own, column.in_(raw or [""])))):
                if held is None or is_pseudonym(str(held)):
                    continue
                s.execute(update(model).where(model.id == item_id).values({column.key: pseudonym(str(held), secret)}))
                changed += 1
        _register(s, alias, RETAIN, "worker", f"pseudonymised {changed} money records after retention", done=True)
    return changed


def _phones_of(s: Session, secret: str, alias: str) -> list[str]:
    """The phone(s) whose pseudonym is `alias`, as other customers' records still hold them: the
    HMAC cannot be reversed, so every phone those records name is hashed and compared."""
    found: set[str] = set()
    for column in (Transaction.counterparty, PaymentRequest.payer_phone, MpesaRequest.phone):
        found.update(value for value in s.scalars(select(column).distinct().where(column.like("+%")))
                     if value and _PHONE.fullmatch(value) and pseudonym(value, secret) == alias)
    return sorted(found)


def retain_due(db: Database, policy: Policy, secret: str) -> int:
    """The worker's task: pseudonymise every erased customer now past retention, each in its own
    transaction. Returns how many customers were done."""
    done = 0
    for alias in due_for_retention(db, policy):
        try:
            retain(db, secret, alias)
        except Exception:  # noqa: BLE001 - one customer's failure must not keep the others back
            log.exception("retention: the records of %s could not be pseudonymised", alias)
            continue
        done += 1
    return done


def register_rows(db: Database, limit: int = 100) -> list[PrivacyRequest]:
    """The newest requests in the register."""
    with db.read() as s:
        rows = list(s.scalars(select(PrivacyRequest).order_by(PrivacyRequest.id.desc()).limit(limit)))
        s.expunge_all()
        return rows


