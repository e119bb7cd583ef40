"""Daraja's callbacks (shapes from the Daraja docs), after the route checked the URL's secret token.

Each callback names our request by the reference in its URL; its ids, amount and phone must match
what we asked for, or it changes nothing and is logged. Money moves through helpers/wallet/mpesa_flows.py,
whose conditional updates make a repeated callback a no-op.

- STK push: {"Body": {"stkCallback": {MerchantRequestID, CheckoutRequestID, ResultCode, ResultDesc,
  CallbackMetadata: {Item: [{Name, Value}: Amount, MpesaReceiptNumber, TransactionDate, PhoneNumber]}}}}
- B2C result: {"Result": {ResultType, ResultCode, ResultDesc, OriginatorConversationID,
  ConversationID, TransactionID, ResultParameters: {ResultParameter: [{Key, Value}: TransactionAmount,
  TransactionReceipt, ReceiverPartyPublicName, ...]}}}; the queue timeout leaves it pending.
- Account Balance result: {"Result": {ResultCode, ResultDesc, ResultParameters: {ResultParameter:
  [{Key: "AccountBalance", Value: "Name|KES|available|...&..."}, ...]}}}; recorded, no money moves.
- Transaction Status result: {"Result": {..., ResultParameters: [OriginatorConversationID,
  ConversationID, TransactionStatus, Amount, ReceiptNo, ...]}} about the original payment.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import update

from database import Database
from helpers.wallet import mpesa_float, mpesa_flows
from helpers.mpesa.daraja import msisdn
from helpers.infra.phone import mask
from models import B2B, B2C, FAILED, PENDING, SETTLED, STK, MpesaRequest

log = logging.getLogger(__name__)

RECEIPT = re.compile(r"^[A-Z0-9]{10}$")
# Transaction Status "TransactionStatus" values: final failures release a payout's reserve
# (the docs: a final status is Cancelled, Declined, Completed or Expired).
STATUS_COMPLETED = "Completed"
STATUS_FAILED = frozenset({"Cancelled", "Declined", "Expired"})

OK, REFUSED, UNKNOWN = 200, 400, 404


_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _same_amount(value: Any, kes: int) -> bool:
    text = _text(value)
    if not _AMOUNT.fullmatch(text):  # Decimal() also reads other scripts' digits and "1_00"
        return False
    try:
        return Decimal(text) == Decimal(kes)
    except InvalidOperation:
        return False


def _pairs(items: Any, key: str) -> dict[str, Any]:
    """[{key: name, "Value": v}, ...] (or one such object) -> {name: v}."""
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        return {}
    return {_text(item.get(key)): item.get("Value") for item in items if isinstance(item, dict)}


def _refuse(kind: str, reference: str, why: str, request: MpesaRequest | None = None) -> tuple[int, str]:
    who = f" ({mask(request.phone)}, {request.amount_kes} KES)" if request else ""
    log.warning("mpesa %s callback for %s refused: %s%s; nothing changed", kind, reference, why, who)
    return REFUSED, why


def _duplicate(kind: str, reference: str, request: MpesaRequest) -> tuple[int, str]:
    log.info("mpesa %s callback for %s: already %s; nothing changed", kind, reference, request.status)
    return OK, "duplicate"


def handle(db: Database, kind: str, event: str, reference: str, body: Any) -> tuple[int, str]:
    """Apply one callback. Returns (HTTP status, what happened)."""
    if not isinstance(body, dict):
        return _refuse(kind, reference, "not a JSON object")
    if kind == "stk" and event == "":
        return stk(db, reference, body)
    if kind == "b2c" and event == "result":
        return b2c_result(db, reference, body)
    if kind in ("b2c", "b2b", "status") and event == "timeout":
        return queue_timeout(db, kind, reference, body)
    if kind == "b2b" and event == "result":
        return b2b_result(db, reference, body)
    if kind == "status" and event == "result":
        return status_result(db, reference, body)
    if kind == "balance" and event in ("result", "timeout"):
        return balance_result(db, reference, body)
    log.warning("mpesa callback of unknown kind %s/%s", kind[:16], event[:16])
    return UNKNOWN, "unknown callback"


def _request(db: Database, reference: str, kind: str) -> MpesaRequest | None:
    request = mpesa_flows.find(db, reference, kind)
    if request is None:
        log.warning("mpesa %s callback for unknown reference %r; nothing changed", kind, reference[:16])
    return request


# ------------------------------------------------------------------ STK push
def stk(db: Database, reference: str, body: dict) -> tuple[int, str]:
    callback = body.get("Body", {}).get("stkCallback") if isinstance(body.get("Body"), dict) else None
    if not isinstance(callback, dict):
        return _refuse("stk", reference, "no Body.stkCallback")
    request = _request(db, reference, STK)
    if request is None:
        return UNKNOWN, "unknown reference"
    checkout, merchant = _text(callback.get("CheckoutRequestID")), _text(callback.get("MerchantRequestID"))
    code, description = _text(callback.get("ResultCode")), _text(callback.get("ResultDesc"))
    if not checkout or not code:
        return _refuse("stk", reference, "CheckoutRequestID or ResultCode missing", request)
    if request.checkout_request_id and checkout != request.checkout_request_id:
        return _refuse("stk", reference, "CheckoutRequestID differs from the push's", request)
    if request.merchant_request_id and merchant != request.merchant_request_id:
        return _refuse("stk", reference, "MerchantRequestID differs from the push's", request)
    if code != "0":
        if request.status != PENDING:
            return _duplicate("stk", reference, request)
        mpesa_flows.fail_topup(db, reference, code, description)
        return OK, "failed"
    items = _pairs((callback.get("CallbackMetadata") or {}).get("Item")
                   if isinstance(callback.get("CallbackMetadata"), dict) else None, "Name")
    receipt = _text(items.get("MpesaReceiptNumber"))
    if not _same_amount(items.get("Amount"), request.amount_kes):
        return _refuse("stk", reference, f"Amount {items.get('Amount')!r} is not what was asked", request)
    if _text(items.get("PhoneNumber")) != msisdn(request.phone):
        return _refuse("stk", reference, "PhoneNumber is not the phone that was asked", request)
    if not RECEIPT.match(receipt):
        return _refuse("stk", reference, "MpesaReceiptNumber missing or malformed", request)
    if request.status == SETTLED:
        return _duplicate("stk", reference, request)
    if request.status == FAILED and not request.checkout_request_id:
        return _refuse("stk", reference, "paid callback for a push M-Pesa never accepted", request)
    if request.checkout_request_id is None:
        _adopt(db, request, checkout_request_id=checkout, merchant_request_id=merchant or None)
    if request.status == FAILED:
        log.warning("stk %s: paid callback after a failure answer; crediting it", reference)
    if mpesa_flows.credit_topup(db, reference, receipt, code, description, from_failed=True):
        return OK, "credited"
    return OK, "duplicate"


def _adopt(db: Database, request: MpesaRequest, **ids: str | None) -> None:
    """Record ids we never received (the answer to our request was lost), if still unknown."""
    column = next(iter(ids))
    with db.write() as s:
        s.execute(update(MpesaRequest)
                  .where(MpesaRequest.id == request.id, getattr(MpesaRequest, column).is_(None))
                  .values(**ids))


# ------------------------------------------------------------------ B2C payment
def _result(body: dict) -> dict | None:
    result = body.get("Result")
    return result if isinstance(result, dict) else None


def _result_params(result: dict) -> dict[str, Any]:
    """Result.ResultParameters.ResultParameter as {Key: Value}."""
    holder = result.get("ResultParameters")
    return _pairs(holder.get("ResultParameter") if isinstance(holder, dict) else None, "Key")


@dataclass(frozen=True)
class _Paid:
    """A payout's result that says it was paid, from a request still pending: for the checks of
    its own kind."""

    request: MpesaRequest
    result: dict
    params: dict
    code: str
    description: str
    conversation: str


def _payout_result(db: Database, kind: str, reference: str, body: dict,
                   strict_originator: bool) -> tuple[int, str] | _Paid:
    """What B2C and B2B results share: the request the reference names, Daraja's ids matching it
    (`strict_originator`: the OriginatorConversationID always, else only when Daraja gave one), a
    result code; a repeat answered as a duplicate, a failure refunded. The answer, or _Paid."""
    result = _result(body)
    if result is None:
        return _refuse(kind, reference, "no Result")
    request = _request(db, reference, B2B if kind == "b2b" else B2C)
    if request is None:
        return UNKNOWN, "unknown reference"
    conversation, original = _text(result.get("ConversationID")), _text(result.get("OriginatorConversationID"))
    if (strict_originator or request.originator_conversation_id) and original != request.originator_conversation_id:
        return _refuse(kind, reference, "OriginatorConversationID differs from ours", request)
    if request.conversation_id and conversation != request.conversation_id:
        return _refuse(kind, reference, "ConversationID differs from the one M-Pesa gave", request)
    code, description = _text(result.get("ResultCode")), _text(result.get("ResultDesc"))
    if not code:
        return _refuse(kind, reference, "ResultCode missing", request)
    if request.status != PENDING:
        return _duplicate(kind, reference, request)
    if code != "0":
        mpesa_flows.finish_payout(db, reference, FAILED, None, code, description)
        return OK, "refunded"
    return _Paid(request, result, _result_params(result), code, description, conversation)


def b2c_result(db: Database, reference: str, body: dict) -> tuple[int, str]:
    paid = _payout_result(db, "b2c", reference, body, strict_originator=True)
    if not isinstance(paid, _Paid):
        return paid
    request, params = paid.request, paid.params
    receipt = _text(params.get("TransactionReceipt")) or _text(paid.result.get("TransactionID"))
    if not _same_amount(params.get("TransactionAmount"), request.amount_kes):
        return _refuse("b2c", reference, f"TransactionAmount {params.get('TransactionAmount')!r} is not what was "
                                         "sent", request)
    receiver = _text(params.get("ReceiverPartyPublicName")).split("-", 1)[0].strip()
    if receiver != msisdn(request.phone):
        return _refuse("b2c", reference, "ReceiverPartyPublicName is not the phone that was paid", request)
    if not RECEIPT.match(receipt):
        return _refuse("b2c", reference, "TransactionReceipt missing or malformed", request)
    if request.conversation_id is None and paid.conversation:
        _adopt(db, request, conversation_id=paid.conversation[:64])
    if mpesa_flows.finish_payout(db, reference, SETTLED, receipt, paid.code, paid.description):
        return OK, "settled"
    return OK, "duplicate"


def b2b_result(db: Database, reference: str, body: dict) -> tuple[int, str]:
    """A business payment's result: like B2C's, its ids must be the ones Daraja gave the request
    (when it gave them), its Amount what we paid; TransactionID is the receipt."""
    paid = _payout_result(db, "b2b", reference, body, strict_originator=False)
    if not isinstance(paid, _Paid):
        return paid
    request, params = paid.request, paid.params
    if not _same_amount(params.get("Amount"), request.amount_kes):
        return _refuse("b2b", reference, f"Amount {params.get('Amount')!r} is not what was paid", request)
    receipt = _text(paid.result.get("TransactionID"))
    if not RECEIPT.match(receipt):
        return _refuse("b2b", reference, "TransactionID missing or malformed", request)
    if mpesa_flows.finish_payout(db, reference, SETTLED, receipt, paid.code, paid.description,
                                 payee_name=public_name(params.get("ReceiverPartyPublicName"))):
        return OK, "settled"
    return OK, "duplicate"


def public_name(value: object) -> str:
    """The business's name in M-Pesa's "600000 - saf test org": letters, digits and simple
    punctuation, at most 30 characters (it goes into an SMS), or ""."""
    name = _text(value).split(" - ", 1)[-1] if " - " in _text(value) else ""
    name = "".join(char for char in name if char.isascii() and (char.isalnum() or char in " .&'-"))
    return " ".join(name.split())[:30]


def queue_timeout(db: Database, kind: str, reference: str, body: dict) -> tuple[int, str]:
    """M-Pesa timed the request out in its queue: the outcome is not known, the payout stays
    pending (its reserve is kept) until a result or the status query says what happened."""
    request = _request(db, reference, B2B if kind == "b2b" else B2C) or (
        _request(db, reference, B2B) if kind == "status" else None)
    if request is None:
        return UNKNOWN, "unknown reference"
    result = _result(body) or {}
    log.warning("mpesa %s queue timeout for %s (%s): left pending for the status query", kind, reference,
                _text(result.get("ResultDesc"))[:80])
    return OK, "timeout noted"


def status_result(db: Database, reference: str, body: dict) -> tuple[int, str]:
    """The answer to our Transaction Status query about a payout (B2C) or a business payment (B2B)."""
    result = _result(body)
    if result is None:
        return _refuse("status", reference, "no Result")
    request = mpesa_flows.find(db, reference, B2C) or _request(db, reference, B2B)
    if request is None:
        return UNKNOWN, "unknown reference"
    code, description = _text(result.get("ResultCode")), _text(result.get("ResultDesc"))
    params = _result_params(result)
    if code != "0":
        log.warning("mpesa status query for %s answered %s %s: left pending", reference, code, description[:80])
        return OK, "not known"
    original = _text(params.get("OriginatorConversationID"))
    conversation = _text(params.get("ConversationID"))
    if original != request.originator_conversation_id and not (
            request.conversation_id and conversation == request.conversation_id):
        return _refuse("status", reference, "the ids are not those of our payment", request)
    if request.status != PENDING:
        return _duplicate("status", reference, request)
    state = _text(params.get("TransactionStatus"))
    if state not in STATUS_FAILED and state != STATUS_COMPLETED:
        log.info("mpesa status of %s: %r; left pending", reference, state)
        return OK, "still pending"
    if not _same_amount(params.get("Amount"), request.amount_kes):
        return _refuse("status", reference, f"Amount {params.get('Amount')!r} is not what was sent", request)
    if state in STATUS_FAILED:
        mpesa_flows.finish_payout(db, reference, FAILED, None, code, f"status: {state}")
        return OK, "refunded"
    receipt = _text(params.get("ReceiptNo"))
    if not RECEIPT.match(receipt):
        return _refuse("status", reference, "ReceiptNo missing or malformed", request)
    if mpesa_flows.finish_payout(db, reference, SETTLED, receipt, code, f"status: {state}"):
        return OK, "settled"
    return OK, "duplicate"


# ------------------------------------------------------------------ Account Balance
def balance_result(db: Database, reference: str, body: dict) -> tuple[int, str]:
    result = _result(body)
    if result is None:
        return _refuse("balance", reference, "no Result")
    outcome = mpesa_float.record(db, reference, result, _result_params(result))
    if outcome == "unreadable":
        return _refuse("balance", reference, "unreadable AccountBalance")
    return OK, outcome
