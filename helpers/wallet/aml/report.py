"""A suspicious case's report for the Financial Reporting Centre (issue 34): an XML file shaped
after goAML's suspicious transaction report (STR): the reporting entity, the report's reason and
the action taken, the parties (the customer: phone, name, account; the other customers in the
movements), and each movement the case names (date, sats, KES where a rail paid or took KES,
reference, counterparty, direction, type). An operator files it in goAML's web form or uploads it
after mapping; the file itself is what the console and `flask aml report` hand over.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - writing XML, never parsing untrusted input
from dataclasses import dataclass

from sqlalchemy import select

from database import Database
from helpers.wallet.aml import cases
from helpers.wallet.operators import OperatorError
from models import MpesaRequest, Payout, Transaction, User, utcnow

CURRENCY = "KES"


@dataclass(frozen=True)
class Movement:
    id: int
    created_at: str
    reference: str
    type: str
    kind: str
    direction: str
    amount_sats: int
    fee_sats: int
    amount_kes: int | None
    counterparty: str
    status: str


def movements_of(db: Database, ids: list[int]) -> list[Movement]:
    """The case's movements as the report lists them, oldest first, with the KES a rail moved."""
    if not ids:
        return []
    with db.read() as s:
        rows = s.execute(select(Transaction).where(Transaction.id.in_(ids)).order_by(Transaction.id)).scalars().all()
        kes: dict[int, int | None] = {tid: amount for tid, amount in s.execute(
            select(Payout.transaction_id, Payout.amount_kes).where(Payout.transaction_id.in_(ids)))}
        for tid, amount in s.execute(select(MpesaRequest.transaction_id, MpesaRequest.amount_kes)
                                     .where(MpesaRequest.transaction_id.in_(ids))):
            if tid is not None:
                kes[tid] = amount
        return [Movement(t.id, t.created_at.isoformat(timespec="seconds"), t.reference, t.type, t.kind, t.direction,
                         t.amount_sats, t.fee_sats, kes.get(t.id), t.counterparty or "", t.status) for t in rows]


def _add(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def _person(parent: ET.Element, tag: str, phone: str, name: str | None, account: str) -> None:
    party = _add(parent, tag)
    _add(party, "phone", phone)
    _add(party, "name", name or "")
    _add(party, "account", account)


def export(db: Database, case_id: int, entity_id: str, entity_name: str, prepared_by: str) -> str:
    """The report of a case marked suspicious, as XML text. Raises OperatorError otherwise."""
    case, history = cases.get(db, case_id)
    if not case.suspicious:
        raise OperatorError(f"case {case_id} is not marked suspicious: no report to export")
    found = cases.facts_of(case)
    lines = movements_of(db, [int(i) for i in found.get("movement_ids", [])])
    with db.read() as s:
        customer = s.scalar(select(User).where(User.phone == case.phone))
        others = {p.phone: p for p in s.scalars(select(User).where(User.phone.in_({m.counterparty for m in lines})))}
    reason = next((line.reason for line in reversed(history) if line.action == cases.SUSPICIOUS), "")
    root = ET.Element("report")
    _add(root, "rentity_id", entity_id)
    _add(root, "rentity_name", entity_name)
    _add(root, "submission_code", "E")
    _add(root, "report_code", "STR")
    _add(root, "entity_reference", f"AML-{case.id}")
    _add(root, "submission_date", utcnow().isoformat(timespec="seconds"))
    _add(root, "currency_code_local", CURRENCY)
    _add(_add(root, "reporting_person"), "username", prepared_by)
    _add(root, "reason", f"Monitoring rule {case.rule}: {reason}")
    _add(root, "action", f"case {case.status}; money out held" if case.status == "held" else f"case {case.status}")
    facts_el = _add(root, "indicators")
    for key in sorted(found):
        if key != "movement_ids":
            _add(facts_el, "indicator", f"{key}={found[key]}")
    parties = _add(root, "parties")
    _person(parties, "subject", case.phone, customer.name if customer else None,
            f"wallet:{customer.id if customer else '-'}")
    for phone, other in sorted(others.items()):
        if phone != case.phone:
            _person(parties, "counterparty", phone, other.name, f"wallet:{other.id}")
    transactions = _add(root, "transactions")
    for m in lines:
        t = _add(transactions, "transaction")
        _add(t, "transactionnumber", m.reference)
        _add(t, "internal_ref_number", m.id)
        _add(t, "date_transaction", m.created_at)
        _add(t, "transmode_code", m.type)
        _add(t, "direction", m.direction)
        _add(t, "amount_sats", m.amount_sats)
        _add(t, "fee_sats", m.fee_sats)
        _add(t, "amount_local", "" if m.amount_kes is None else m.amount_kes)
        _add(t, "counterparty", m.counterparty)
        _add(t, "status", m.status)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
