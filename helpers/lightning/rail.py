"""Lightning payments out as a payout rail (helpers/infra/rail.py), through any LightningBackend.

The payout's destination is the invoice (bolt11); its rail key is the invoice's payment hash,
taken once (UNIQUE(rail, rail_key)): an invoice is never paid twice. The fee limit reserved with
it is the most the route may cost; the node's answer says what it cost (posted to the node's
account), the rest goes back to the customer. A payment the node definitely failed frees its
hash (the invoice may be tried again), unless the node refused because the invoice is paid
already. A failure is believed only when the node says so twice in a row: an unknown,
unreachable or in-flight payment is never refunded, because the node might still pay it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from helpers.infra.i18n import receipt_text, t
from helpers.infra.rail import Answer, Books, CallbackRefused, Claim, PayoutView, Said
from lightning import LightningBackend, PaymentResult, State
from models import LIGHTNING_RAIL, LN_IN_FLIGHT, NODE, SEND

log = logging.getLogger(__name__)

BOOKS = Books(kind="lightning", label="Lightning", movement=SEND, in_flight=LN_IN_FLIGHT, paid_from=NODE,
              frees_key_on_void=True, notes_on_movement=True)


def answer_of(result: PaymentResult) -> Answer:
    """The node's answer to a payment, in the rails' words."""
    if result.state is State.SUCCEEDED:
        return Answer.paid(receipt=result.preimage[:64], cost_sats=result.fee_sat, reason="paid")
    if result.state is State.FAILED:
        return Answer.failed(result.error or "failed", frees_key=not result.already_paid)
    return Answer.pending(result.error)


class LightningRail:
    name = LIGHTNING_RAIL
    books = BOOKS

    def __init__(self, node: LightningBackend) -> None:
        self.node = node

    def send(self, payout: PayoutView) -> Answer:
        try:
            result = self.node.pay_invoice(payout.destination, payout.fee_limit_sats)
        except Exception:  # noqa: BLE001 - a backend bug must leave the reservation pending, not refund it
            log.exception("paying %s raised; left pending", payout.reference)
            return Answer.pending("backend raised", rail_key=payout.rail_key or "")
        log.info("lightning payment %s: %s %s", payout.reference, result.state.value, result.error)
        answer = answer_of(result)
        if answer.said is Said.PENDING:  # the node was asked: the payout is sent, under its hash
            answer = replace(answer, rail_key=payout.rail_key or "")
        return answer

    def query(self, payout: PayoutView) -> Answer:
        payment_hash = payout.rail_key or payout.rail_ref
        if not payment_hash:
            return Answer.pending("no payment hash", needs_operator=True)
        status = self.node.payment_status(payment_hash)
        if status.state is State.FAILED:  # a refund needs two "failed" in a row
            status = self.node.payment_status(payment_hash)
        if payout.rail_key is None and status.state is not State.PENDING:
            # a payment left by older code whose hash another payout holds: whatever the node says
            # of the hash is the holder's; this attempt moved nothing and is given back
            log.error("payment %s: its hash is another payout's; refunded", payout.reference)
            return Answer.failed("its payment hash was another payout's")
        if status.state is State.SUCCEEDED:
            return Answer.paid(receipt=status.preimage[:64], cost_sats=status.fee_sat, reason="paid")
        if status.state is State.FAILED:  # said twice: the hash may be paid again
            return Answer.failed(status.error or "failed", frees_key=True)
        return Answer.pending(status.error or "pending")

    def parse_callback(self, fields: dict) -> Claim:
        raise CallbackRefused(404, "unknown callback")  # the node's webhooks are about invoices (money in)

    def confirm(self, payout: PayoutView, claim: Claim) -> Answer:
        raise CallbackRefused(404, "unknown callback")

    def posted_text(self, payout: PayoutView, language: str, balance: int, answer: Answer, left: int | None) -> str:
        return receipt_text(language, "sms.sent", left, amount=payout.amount_sats, phone=payout.counterparty,
                            fee=payout.fee_sats + answer.cost_sats, ref=payout.movement_reference, balance=balance)

    def voided_text(self, payout: PayoutView, language: str, balance: int) -> str:
        return t(language, "sms.lightning-failed", amount=payout.amount_sats, phone=payout.counterparty,
                 ref=payout.movement_reference, balance=balance)
