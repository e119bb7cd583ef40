"""Airtime as a payout rail (helpers/infra/rail.py): what the wallet's payout machine asks of
Africa's Talking, and how AT's answers, delivery reports and status queries read.

A delivery report is a hint, as the node's webhooks are: acted on only when its requestId names
an open payout, its phone and value are the ones asked for, and AT's own status query says the
same (a report forged by someone who learnt the URL and an id moves nothing).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from helpers.airtime.provider import AirtimeProvider, kes_of
from helpers.infra.i18n import receipt_text, t
from helpers.infra.phone import local
from helpers.infra.rail import Answer, Books, CallbackRefused, Claim, PayoutView, Said
from lightning import State
from models import AIRTIME, AIRTIME_FLOAT, AIRTIME_IN_FLIGHT, AIRTIME_RAIL, utcnow

log = logging.getLogger(__name__)

NAME = AIRTIME_RAIL
BOOKS = Books(kind="airtime", label="Airtime", movement=AIRTIME, in_flight=AIRTIME_IN_FLIGHT,
              paid_from=AIRTIME_FLOAT)
# How long a payout may have no requestId because its send is still waiting for AT's answer.
SEND_GRACE_S = 60


def _kes(payout: PayoutView) -> int:
    if payout.amount_kes is None:  # reserve() always sets it for airtime
        raise ValueError(f"airtime payout {payout.reference} has no KES amount")
    return payout.amount_kes


class AirtimeRail:
    name = NAME
    books = BOOKS

    def __init__(self, provider: AirtimeProvider) -> None:
        self.provider = provider

    def send(self, payout: PayoutView) -> Answer:
        result = self.provider.send(payout.destination, _kes(payout), payout.reference)
        if result.state is State.SUCCEEDED:
            return Answer.paid(receipt=result.request_id, rail_key=result.request_id,
                               reason=result.error or "delivered")
        if result.state is State.FAILED:
            return Answer.failed(result.error or "failed", rail_key=result.request_id)
        return Answer.pending(result.error, rail_key=result.request_id)

    def query(self, payout: PayoutView) -> Answer:
        if not payout.rail_key:
            # the send may still be waiting for its answer; after that, only an operator can tell
            if (utcnow() - payout.created_at).total_seconds() < SEND_GRACE_S:
                return Answer.pending("waiting")
            return Answer.pending("no-request-id", needs_operator=True)
        state = self.provider.query(payout.rail_key)
        if state is State.SUCCEEDED:
            return Answer.paid(receipt=payout.rail_key, reason="Success")
        if state is State.FAILED:
            return Answer.failed("Failed")
        return Answer.pending("pending")

    def parse_callback(self, fields: dict) -> Claim:
        """Africa's Talking's delivery report: requestId, status (Success|Failed), phoneNumber,
        value ("KES 100.0000"), description."""
        request_id = str(fields.get("requestId") or "")
        status = str(fields.get("status") or "")
        if not request_id or status not in ("Success", "Failed"):
            raise CallbackRefused(400, "malformed")
        said = str(fields.get("description") or status)
        answer = Answer.paid(receipt=request_id[:64], reason=said) if status == "Success" else Answer.failed(said)
        return Claim(request_id[:64], answer, dict(fields))

    def confirm(self, payout: PayoutView, claim: Claim) -> Answer:
        if str(claim.fields.get("phoneNumber") or "") != payout.destination:
            log.warning("airtime callback %s refused: phoneNumber is not the one asked for", payout.reference)
            raise CallbackRefused(400, "refused")
        value = kes_of(str(claim.fields.get("value") or ""))
        if value is not None and value != Decimal(_kes(payout)):
            log.warning("airtime callback %s refused: value %s is not KES %s", payout.reference, value,
                        payout.amount_kes)
            raise CallbackRefused(400, "refused")
        said = self.provider.query(claim.rail_key)
        if said is State.PENDING:
            return Answer.pending("checking")  # AT's query does not say so yet: the worker asks again later
        if (said is State.SUCCEEDED) != (claim.answer.said is Said.PAID):
            log.warning("airtime callback %s refused: it says %s, AT's status query says %s", payout.reference,
                        claim.answer.said.value, said.value)
            raise CallbackRefused(409, "refused")
        return claim.answer

    def posted_text(self, payout: PayoutView, language: str, balance: int, answer: Answer, left: int | None) -> str:
        return receipt_text(language, "sms.airtime", left, kes=payout.amount_kes, phone=local(payout.destination),
                            ref=payout.movement_reference, sats=payout.amount_sats, fee=payout.fee_sats,
                            balance=balance)

    def voided_text(self, payout: PayoutView, language: str, balance: int) -> str:
        return t(language, "sms.airtime-failed", kes=payout.amount_kes, phone=local(payout.destination),
                 ref=payout.movement_reference, sats=payout.amount_sats + payout.fee_sats, balance=balance)
