"""M-Pesa payouts as rails (helpers/infra/rail.py): B2C (a withdrawal to a phone) and B2B (a till
or a paybill), through any MpesaProvider.

Daraja answers a payout request at once only with "accepted" (its ConversationID; for B2B also
the OriginatorConversationID it chose); the result comes later to the callback URL that carries
our reference, or to the Transaction Status query, whose answer is a callback too. So `query`
only asks (PENDING), and Daraja's callbacks are read by helpers/wallet/mpesa/callbacks.py, which
finds the payout by the reference in its URL. The simulated provider pays at once and keeps no
record: a payout of it that never got its answer (the process died) failed.
"""

from __future__ import annotations

from helpers.infra.i18n import receipt_text, t
from helpers.infra.rail import Answer, Books, CallbackRefused, Claim, PayoutView
from helpers.mpesa.provider import MpesaProvider, PayoutResult
from lightning import State
from models import FLOAT, MPESA_B2B_RAIL, MPESA_B2C_RAIL, MPESA_IN_FLIGHT, RESERVED, WITHDRAW, utcnow

BOOKS = Books(kind="withdraw", label="M-Pesa", movement=WITHDRAW, in_flight=MPESA_IN_FLIGHT, paid_from=FLOAT,
              receipt_is_mpesa_code=True)
# A payout the simulated provider never answered is over once no request can still be waiting
# for it: five times gunicorn's timeout.
UNANSWERED_AFTER_S = 60


def b2b_destination(command: str, party_b: str, account: str, payer_phone: str) -> str:
    """How a B2B payout names where it goes: Daraja's CommandID, the till or paybill, the account,
    and the customer who pays (Daraja's Requester)."""
    return f"{command}|{party_b}|{account}|{payer_phone}"


def _answer(result: PayoutResult, rail_key: str = "") -> Answer:
    if result.state is State.SUCCEEDED:
        return Answer.paid(receipt=result.receipt, reason="paid")
    if result.state is State.FAILED:
        return Answer.failed(result.error or "refused")
    return Answer.pending(result.error, rail_key=rail_key, rail_ref=result.conversation_id)


class MpesaPayoutRail:
    books = BOOKS

    def __init__(self, provider: MpesaProvider, name: str) -> None:
        if name not in (MPESA_B2C_RAIL, MPESA_B2B_RAIL):
            raise ValueError(f"no M-Pesa rail {name!r}")
        self.provider = provider
        self.name = name

    def send(self, payout: PayoutView) -> Answer:
        kes = payout.amount_kes or 0
        if self.name == MPESA_B2C_RAIL:
            return _answer(self.provider.payout(payout.destination, kes, payout.reference))
        command, party_b, account, payer = (payout.destination.split("|") + ["", "", "", ""])[:4]
        result = self.provider.pay_business(command, party_b, account, kes, payout.reference, payer)
        return _answer(result, rail_key=result.originator_id)

    def query(self, payout: PayoutView) -> Answer:
        if not self.provider.payouts_async:  # pays at once and keeps no record
            if payout.rail_key or payout.rail_ref or payout.state != RESERVED:
                # Daraja's (it named it, or accepted it) while M-Pesa is simulated here now: never guessed
                return Answer.pending("daraja's payout, and daraja is off", needs_operator=True)
            if (utcnow() - payout.created_at).total_seconds() < UNANSWERED_AFTER_S:
                return Answer.pending("waiting")
            return Answer.failed("never answered: the simulated provider paid nothing")
        if self.name == MPESA_B2B_RAIL and not payout.rail_key:
            return Answer.pending("payment-no-id")  # Daraja never named it: only its callback can settle it
        original = payout.rail_key if self.name == MPESA_B2B_RAIL else None
        asked = self.provider.query_payout(payout.reference, original)
        return Answer.pending("payout-queried" if asked else "payout-query-refused")

    def parse_callback(self, fields: dict) -> Claim:
        raise CallbackRefused(404, "unknown callback")  # Daraja's come by reference: mpesa_callbacks

    def confirm(self, payout: PayoutView, claim: Claim) -> Answer:
        raise CallbackRefused(404, "unknown callback")

    def posted_text(self, payout: PayoutView, language: str, balance: int, answer: Answer, left: int | None) -> str:
        payee = f"{payout.counterparty} ({answer.paid_to})" if answer.paid_to else payout.counterparty
        return receipt_text(language, "sms.withdraw", left, kes=payout.amount_kes, phone=payee,
                            code=answer.receipt or payout.reference, sats=payout.amount_sats, fee=payout.fee_sats,
                            balance=balance)

    def voided_text(self, payout: PayoutView, language: str, balance: int) -> str:
        return t(language, "withdraw.failed", ref=payout.movement_reference)
