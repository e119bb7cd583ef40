"""Monitoring cases (issue 34): a rule's hit opens one (a scan run again opens none more), and
operators work it: assign, note, hold the customer's money out (the guard of money out reads the
hold from the phone's row, phone_guards.aml_hold_case_id), release, mark suspicious (its goAML
report can then be exported: report.py), close with a reason. Every action, a note too, is an
audit line (detail `case <id>`: the case's history, append-only as the journal) written in the
same transaction; a closed case takes no more actions. The customer is never told why
money out is held (tipping off is an offence): the screen only says to call customer care.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra.phone import mask
from helpers.wallet import operators, sim_swap
from helpers.wallet.aml import facts
from helpers.wallet.operators import OperatorError
from helpers.wallet.rules import Policy
from helpers.wallet.aml.tables import AmlCase
from models import AuditEntry, Operator, PhoneGuard, utcnow

log = logging.getLogger(__name__)

SCANNER = "aml-scan"  # who opens a case, in the audit log
AML_OPEN, AML_ASSIGNED, AML_HELD, AML_CLOSED = "open", "assigned", "held", "closed"  # AmlCase.status
STATUSES = (AML_OPEN, AML_ASSIGNED, AML_HELD, AML_CLOSED)
SUSPICIOUS = "aml-suspicious"  # the audit action of marking a case suspicious: its reason is the report's


@dataclass(frozen=True)
class Scan:
    hits: int
    opened: list[int]


def scan(db: Database, policy: Policy, by: str = SCANNER) -> Scan:
    """Run every rule over the journal now and open a case for each new hit: none while a case of
    the same rule and customer is still open or was opened within the rule's window (a closed
    case's pattern seen again as the window slides), none twice for one rule, customer and window
    (the unique key: scans at the same moment open one). Returns the hits and the cases opened."""
    with db.read() as s:
        found = facts.hits(s, policy)
        phones = list({hit.phone for hit in found})
        known = s.execute(select(AmlCase.rule, AmlCase.phone, AmlCase.window_key, AmlCase.status, AmlCase.opened_at)
                          .where(AmlCase.phone.in_(phones))).all() if phones else []
    now = utcnow()

    def seen(hit: facts.Hit) -> bool:  # what _open would refuse, known without a write transaction
        since = now - dt.timedelta(hours=int(hit.facts.get("window_h", 0)))
        return any(rule == hit.rule and phone == hit.phone
                   and (status != AML_CLOSED or key == hit.window_key or opened >= since)
                   for rule, phone, key, status, opened in known)

    opened: list[int] = []
    for hit in found:
        if seen(hit):
            continue
        case_id = _open(db, hit, by)
        if case_id is not None:
            opened.append(case_id)
            log.warning("monitoring: %s on %s opened case %s", hit.rule, mask(hit.phone), case_id)
    return Scan(len(found), opened)


def _open(db: Database, hit: facts.Hit, by: str) -> int | None:
    try:
        with db.write() as s:
            still_open = s.scalar(select(AmlCase.id).where(AmlCase.rule == hit.rule, AmlCase.phone == hit.phone,
                                                           AmlCase.status != AML_CLOSED).limit(1))
            if still_open is not None:
                return None
            now = utcnow()
            # The same pattern seen again: its window's day (unique), or any case of this rule and
            # customer opened within the rule's window (a closed case's movements, the window slid on).
            since = now - dt.timedelta(hours=int(hit.facts.get("window_h", 0)))
            known = s.scalar(select(AmlCase.id).where(AmlCase.rule == hit.rule, AmlCase.phone == hit.phone,
                                                      (AmlCase.window_key == hit.window_key)
                                                      | (AmlCase.opened_at >= since)).limit(1))
            if known is not None:
                return None
            case = AmlCase(rule=hit.rule, phone=hit.phone, window_key=hit.window_key,
                           status=AML_OPEN, suspicious=False, opened_at=now,
                           facts=json.dumps({**hit.facts, "movement_ids": list(hit.movement_ids)}, sort_keys=True))
            s.add(case)
            s.flush()
            operators.audit(s, by, "aml-open", hit.phone, f"rule {hit.rule}", _detail(case.id))
            return case.id
    except IntegrityError:  # a parallel scan opened it first
        return None


# ------------------------------------------------------------------ reading
def listed(db: Database, status: str | None = None, limit: int = 200) -> list[AmlCase]:
    """Cases, newest first; `status` narrows (open, assigned, held, closed; 'active': not closed)."""
    query = select(AmlCase).order_by(AmlCase.id.desc()).limit(limit)
    if status == "active":
        query = query.where(AmlCase.status != AML_CLOSED)
    elif status:
        query = query.where(AmlCase.status == status)
    with db.read() as s:
        rows = list(s.scalars(query))
        s.expunge_all()
    return rows


def _detail(case_id: int) -> str:
    return f"case {case_id}"


def get(db: Database, case_id: int) -> tuple[AmlCase, list[AuditEntry]]:
    """The case and its history (its audit lines, oldest first: opened, notes, actions)."""
    with db.read() as s:
        case = s.get(AmlCase, case_id)
        if case is None:
            raise OperatorError(f"no case {case_id}")
        history = list(s.scalars(select(AuditEntry).where(AuditEntry.subject == case.phone,
                                                          AuditEntry.detail == _detail(case_id))
                                 .order_by(AuditEntry.id)))
        s.expunge_all()
    return case, history


def facts_of(case: AmlCase) -> dict:
    try:
        value = json.loads(case.facts or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def counts(db: Database) -> dict[str, int]:
    with db.read() as s:
        rows = s.execute(select(AmlCase.status, func.count()).group_by(AmlCase.status)).all()
    return {status: int(n) for status, n in rows}


# ------------------------------------------------------------------ operators' actions
def _case(s: Session, case_id: int) -> AmlCase:
    case = s.execute(select(AmlCase).where(AmlCase.id == case_id).with_for_update()).scalar()
    if case is None:
        raise OperatorError(f"no case {case_id}")
    if case.status == AML_CLOSED:
        raise OperatorError(f"case {case_id} is closed")
    return case


def _text(text: str, least: int = 5, most: int = 255) -> str:
    text = " ".join(text.split())
    if len(text) < least:
        raise OperatorError(f"say why (at least {least} characters)")
    return text[:most]


def assign(db: Database, by: str, case_id: int, to: str | None = None) -> str:
    """Assign the case to an operator (`to`; None: the one acting). Returns who has it."""
    who = (to or by).strip().lower()
    with db.write() as s:
        if s.scalar(select(Operator.id).where(Operator.username == who)) is None:
            raise OperatorError(f"no operator {who}")
        case = _case(s, case_id)
        case.assigned_to = who
        if case.status == AML_OPEN:
            case.status = AML_ASSIGNED
        operators.audit(s, by, "aml-assign", case.phone, f"to {who}", _detail(case_id))
    return who


def note(db: Database, by: str, case_id: int, text: str) -> None:
    """An operator's note on the case (what was checked, what the customer said)."""
    words = _text(text, 2)
    with db.write() as s:
        case = _case(s, case_id)
        operators.audit(s, by, "aml-note", case.phone, words, _detail(case_id))


def hold(db: Database, by: str, case_id: int, reason: str) -> None:
    """Hold the customer's money out while the case is looked at: every money-out step (the menu
    choice and the PIN step) refuses until it is released. Receiving goes on."""
    why = _text(reason)
    with db.write() as s:
        case = _case(s, case_id)
        sim_swap.ensure_row(s, case.phone)
        s.execute(update(PhoneGuard).where(PhoneGuard.phone == case.phone).values(aml_hold_case_id=case_id))
        case.status = AML_HELD
        case.assigned_to = case.assigned_to or by
        operators.audit(s, by, "aml-hold", case.phone, why, _detail(case_id))
    log.warning("operator %s held money out of %s (case %s)", by, mask(case.phone), case_id)


def _release_in(s: Session, case: AmlCase) -> bool:
    released = s.execute(update(PhoneGuard).where(PhoneGuard.phone == case.phone,
                                                  PhoneGuard.aml_hold_case_id == case.id)
                         .values(aml_hold_case_id=None)).rowcount  # type: ignore[attr-defined]
    return bool(released)


def release(db: Database, by: str, case_id: int, reason: str) -> None:
    """Release the case's hold of money out (the case stays open, assigned)."""
    why = _text(reason)
    with db.write() as s:
        case = _case(s, case_id)
        if not _release_in(s, case):
            raise OperatorError(f"case {case_id} holds no money out")
        case.status = AML_ASSIGNED
        operators.audit(s, by, "aml-release", case.phone, why, _detail(case_id))


def mark_suspicious(db: Database, by: str, case_id: int, reason: str) -> None:
    """The operator finds the activity suspicious: the case's report (report.py) is to be filed
    with the Financial Reporting Centre. The reason is the report's."""
    why = _text(reason)
    with db.write() as s:
        case = _case(s, case_id)
        case.suspicious = True
        operators.audit(s, by, SUSPICIOUS, case.phone, why, _detail(case_id))


def close(db: Database, by: str, case_id: int, reason: str) -> None:
    """Close the case with the reason (nothing suspicious found, or reported); a hold of money out
    it put is released with it."""
    why = _text(reason)
    with db.write() as s:
        case = _case(s, case_id)
        released = _release_in(s, case)
        case.status, case.close_reason = AML_CLOSED, why
        operators.audit(s, by, "aml-close", case.phone, why + (" (money out released)" if released else ""),
                        _detail(case_id))


def exported(db: Database, by: str, case_id: int) -> None:
    """The audit line of a report handed over (who took the file, when)."""
    with db.write() as s:
        phone = s.scalar(select(AmlCase.phone).where(AmlCase.id == case_id)) or ""
        operators.audit(s, by, "aml-report", phone, "report exported", _detail(case_id))
