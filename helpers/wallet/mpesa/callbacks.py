"""Daraja's callbacks (shapes from the Daraja docs), after the route checked the URL's secret token.

Each callback names our request by the reference in its URL; its ids, amount and phone must match
what we asked for, or it changes nothing and is logged. A push's money moves through
helpers/wallet/mpesa/flows.py, a payout's through the payout machine (helpers/wallet/payouts), whose
conditional updates make a repeated callback a no-op.

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

from collections.abc import Callable

from sqlalchemy import select, update

from database import Database
from helpers.infra.phone import mask
from helpers.infra.rail import Answer, Rail
from helpers.mpesa.daraja import msisdn
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.reports import mpesa_float
from helpers.wallet.payouts import machine
from models import (FAILED, MPESA_B2B_RAIL, MPESA_B2C_RAIL, OPEN_PAYOUT, PENDING, POSTED, SETTLED, STK, VOIDED,
                    MpesaRequest, Payout)

RailOf = Callable[[str], Rail | None]  # the payout rails by name (Services.rail)

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


def handle(db: Database, rail_of: RailOf, kind: str, event: str, reference: str, body: Any) -> tuple[int, str]:
    """Apply one callback (`rail_of`: the payout rails by name). Returns (HTTP status, what
    happened)."""
    if not isinstance(body, dict):
        return _refuse(kind, reference, "not a JSON object")
    if kind == "stk" and event == "":
        return stk(db, reference, body)
    if kind == "b2c" and event == "result":
        return b2c_result(db, rail_of, reference, body)
    if kind in ("b2c", "b2b", "status") and event == "timeout":
        return queue_timeout(db, kind, reference, body)
    if kind == "b2b" and event == "result":
        return b2b_result(db, rail_of, reference, body)
    if kind == "status" and event == "result":
        return status_result(db, rail_of, reference, body)
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


# ------------------------------------------------------------------ B2C and B2B payouts
def _result(body: dict) -> dict | None:
    result = body.get("Result")
    return result if isinstance(result, dict) else None


def _result_params(result: dict) -> dict[str, Any]:
    """Result.ResultParameters.ResultParameter as {Key: Value}."""
    holder = result.get("ResultParameters")
    return _pairs(holder.get("ResultParameter") if isinstance(holder, dict) else None, "Key")


def _payout(db: Database, kind: str, reference: str) -> Payout | None:
    """The payout a callback's URL names, on the rail of its kind (status: either)."""
    rails = {"b2c": (MPESA_B2C_RAIL,), "b2b": (MPESA_B2B_RAIL,)}.get(kind, (MPESA_B2C_RAIL, MPESA_B2B_RAIL))
    with db.read() as s:
        found = s.scalar(select(Payout).where(Payout.reference == reference, Payout.rail.in_(rails)))
    if found is None:
        log.warning("mpesa %s callback for unknown reference %r; nothing changed", kind, reference[:16])
    return found


def _refuse_payout(kind: str, reference: str, why: str, payout: Payout) -> tuple[int, str]:
    log.warning("mpesa %s callback for %s refused: %s (%s KES); nothing changed", kind, reference, why,
                payout.amount_kes)
    return REFUSED, why


def _payout_duplicate(kind: str, reference: str, payout: Payout, paid: bool | None = None) -> tuple[int, str]:
    """A callback about a payout that is finished. `paid`: what it says, when it is a final word;
    one that says the opposite of how the payout ended is logged for people to reconcile."""
    if paid is not None and payout.state == (VOIDED if paid else POSTED):
        log.error("mpesa %s callback for %s says %s, but the payout was %s: reconcile it with M-Pesa by hand",
                  kind, reference, "paid" if paid else "failed", payout.state)
    else:
        log.info("mpesa %s callback for %s: already %s; nothing changed", kind, reference, payout.state)
    return OK, "duplicate"


def _finish(db: Database, rail_of: RailOf, payout: Payout, answer: Answer) -> bool:
    rail = rail_of(payout.rail)
    if rail is None:  # M-Pesa is turned off with payouts open: the worker or an operator ends them
        log.error("mpesa callback for %s: its rail %s is off; nothing changed", payout.reference, payout.rail)
        return False
    return machine.finish(db, rail, payout.reference, answer)


@dataclass(frozen=True)
class _Paid:
    """A payout's result that says it was paid, from a payout still open: for the checks of its
    own kind."""

    payout: Payout
    result: dict
    params: dict
    code: str
    description: str
    conversation: str


def _payout_result(db: Database, rail_of: RailOf, kind: str, reference: str, body: dict,
                   strict_originator: bool) -> tuple[int, str] | _Paid:
    """What B2C and B2B results share: the payout the reference names, Daraja's ids matching it
    (`strict_originator`: the OriginatorConversationID always, else only when Daraja gave one), a
    result code; a repeat answered as a duplicate, a failure refunded. The answer, or _Paid."""
    result = _result(body)
    if result is None:
        return _refuse(kind, reference, "no Result")
    payout = _payout(db, kind, reference)
    if payout is None:
        return UNKNOWN, "unknown reference"
    conversation, original = _text(result.get("ConversationID")), _text(result.get("OriginatorConversationID"))
    if (strict_originator or payout.rail_key) and original != payout.rail_key:
        return _refuse_payout(kind, reference, "OriginatorConversationID differs from ours", payout)
    if payout.rail_ref and conversation != payout.rail_ref:
        return _refuse_payout(kind, reference, "ConversationID differs from the one M-Pesa gave", payout)
    code, description = _text(result.get("ResultCode")), _text(result.get("ResultDesc"))
    if not code:
        return _refuse_payout(kind, reference, "ResultCode missing", payout)
    if payout.state not in OPEN_PAYOUT:
        return _payout_duplicate(kind, reference, payout, paid=code == "0")
    if code != "0":
        _finish(db, rail_of, payout, Answer.failed(f"{code} {description}".strip()))
        return OK, "refunded"
    return _Paid(payout, result, _result_params(result), code, description, conversation)


def b2c_result(db: Database, rail_of: RailOf, reference: str, body: dict) -> tuple[int, str]:
    paid = _payout_result(db, rail_of, "b2c", reference, body, strict_originator=True)
    if not isinstance(paid, _Paid):
        return paid
    payout, params = paid.payout, paid.params
    receipt = _text(params.get("TransactionReceipt")) or _text(paid.result.get("TransactionID"))
    if not _same_amount(params.get("TransactionAmount"), payout.amount_kes or 0):
        return _refuse_payout("b2c", reference, f"TransactionAmount {params.get('TransactionAmount')!r} is not "
                                                "what was sent", payout)
    receiver = _text(params.get("ReceiverPartyPublicName")).split("-", 1)[0].strip()
    if receiver != msisdn(payout.destination):
        return _refuse_payout("b2c", reference, "ReceiverPartyPublicName is not the phone that was paid", payout)
    if not RECEIPT.match(receipt):
        return _refuse_payout("b2c", reference, "TransactionReceipt missing or malformed", payout)
    if payout.rail_ref is None and paid.conversation:  # the answer to our request was lost: its id is kept
        machine.record_ids(db, payout.reference, rail_ref=paid.conversation)
    answer = Answer.paid(receipt=receipt, reason=f"{paid.code} {paid.description}".strip())
    return (OK, "settled") if _finish(db, rail_of, payout, answer) else (OK, "duplicate")


def b2b_result(db: Database, rail_of: RailOf, reference: str, body: dict) -> tuple[int, str]:
    """A business payment's result: like B2C's, its ids must be the ones Daraja gave the payout
    (when it gave them), its Amount what we paid; TransactionID is the receipt."""
    paid = _payout_result(db, rail_of, "b2b", reference, body, strict_originator=False)
    if not isinstance(paid, _Paid):
        return paid
    payout, params = paid.payout, paid.params
    if not _same_amount(params.get("Amount"), payout.amount_kes or 0):
        return _refuse_payout("b2b", reference, f"Amount {params.get('Amount')!r} is not what was paid", payout)
    receipt = _text(paid.result.get("TransactionID"))
    if not RECEIPT.match(receipt):
        return _refuse_payout("b2b", reference, "TransactionID missing or malformed", payout)
    answer = Answer.paid(receipt=receipt, reason=f"{paid.code} {paid.description}".strip(),
                         paid_to=public_name(params.get("ReceiverPartyPublicName")))
    return (OK, "settled") if _finish(db, rail_of, payout, answer) else (OK, "duplicate")


def public_name(value: object) -> str:
    """The business's name in M-Pesa's "600000 - saf test org": letters, digits and simple
    punctuation, at most 30 characters (it goes into an SMS), or ""."""
    name = _text(value).split(" - ", 1)[-1] if " - " in _text(value) else ""
    name = "".join(char for char in name if char.isascii() and (char.isalnum() or char in " .&'-"))
    return " ".join(name.split())[:30]


def queue_timeout(db: Database, kind: str, reference: str, body: dict) -> tuple[int, str]:
    """M-Pesa timed the request out in its queue: the outcome is not known, the payout stays
    open (its reserve is kept) until a result or the status query says what happened."""
    if _payout(db, kind, reference) is None:
        return UNKNOWN, "unknown reference"
    result = _result(body) or {}
    log.warning("mpesa %s queue timeout for %s (%s): left pending for the status query", kind, reference,
                _text(result.get("ResultDesc"))[:80])
    return OK, "timeout noted"


def status_result(db: Database, rail_of: RailOf, reference: str, body: dict) -> tuple[int, str]:
    """The answer to our Transaction Status query about a payout (B2C) or a business payment (B2B)."""
    result = _result(body)
    if result is None:
        return _refuse("status", reference, "no Result")
    payout = _payout(db, "status", reference)
    if payout is None:
        return UNKNOWN, "unknown reference"
    code, description = _text(result.get("ResultCode")), _text(result.get("ResultDesc"))
    params = _result_params(result)
    if code != "0":
        log.warning("mpesa status query for %s answered %s %s: left pending", reference, code, description[:80])
        return OK, "not known"
    original = _text(params.get("OriginatorConversationID"))
    conversation = _text(params.get("ConversationID"))
    if original != payout.rail_key and not (payout.rail_ref and conversation == payout.rail_ref):
        return _refuse_payout("status", reference, "the ids are not those of our payment", payout)
    state = _text(params.get("TransactionStatus"))
    if payout.state not in OPEN_PAYOUT:
        final = True if state == STATUS_COMPLETED else False if state in STATUS_FAILED else None
        return _payout_duplicate("status", reference, payout, paid=final)
    if state not in STATUS_FAILED and state != STATUS_COMPLETED:
        log.info("mpesa status of %s: %r; left pending", reference, state)
        return OK, "still pending"
    if not _same_amount(params.get("Amount"), payout.amount_kes or 0):
        return _refuse_payout("status", reference, f"Amount {params.get('Amount')!r} is not what was sent", payout)
    if state in STATUS_FAILED:
        _finish(db, rail_of, payout, Answer.failed(f"status: {state}"))
        return OK, "refunded"
    receipt = _text(params.get("ReceiptNo"))
    if not RECEIPT.match(receipt):
        return _refuse_payout("status", reference, "ReceiptNo missing or malformed", payout)
    if _finish(db, rail_of, payout, Answer.paid(receipt=receipt, reason=f"status: {state}")):
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
