"""BTCPay Server's Greenfield API as the node: the store's Lightning node, under
/api/v1/stores/{storeId}/lightning/BTC/, with `Authorization: token <key>`. Amounts travel as
millisatoshi strings. A state that cannot be learnt is PENDING; FAILED needs a second look.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from helpers.infra.http import request_json
from helpers.infra.text import parse_digits
from helpers.infra.settings import Settings
from lightning import (
    BalanceResult,
    InvalidInvoice,
    InvoiceResult,
    LightningBackend,
    LightningConfigError,
    PaymentResult,
    State,
    StatusResult,
    decode_invoice,
)

log = logging.getLogger(__name__)

_INVOICE_STATES = {"Paid": State.SUCCEEDED, "Expired": State.FAILED}
_PAYMENT_STATES = {"Complete": State.SUCCEEDED, "Failed": State.FAILED}


class BTCPayBackend(LightningBackend):
    name = "btcpay"

    def __init__(self, url: str, api_key: str, store_id: str, timeout_s: float = 10, pay_timeout_s: int = 30) -> None:
        for setting, value in (("BTCPAY_URL", url), ("BTCPAY_API_KEY", api_key), ("BTCPAY_STORE_ID", store_id)):
            if not value:
                raise LightningConfigError(f"{setting} is required for LIGHTNING_BACKEND=btcpay")
        self.base = f"{url.rstrip('/')}/api/v1/stores/{store_id}/lightning/BTC"
        self.timeout_s, self.pay_timeout_s = timeout_s, pay_timeout_s
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {api_key}"

    @classmethod
    def from_config(cls, settings: Settings) -> BTCPayBackend:
        return cls(settings.btcpay_url, settings.btcpay_api_key, settings.btcpay_store_id,
                   timeout_s=settings.lightning_timeout_s,
                   pay_timeout_s=settings.lightning_pay_timeout_s)

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> tuple[int, Any]:
        return request_json(self.http, "BTCPay", method, self.base + path, body, timeout or self.timeout_s)

    def create_invoice(self, amount_sat: int, memo: str, expiry_s: int,
                       hashed_description: str | None = None) -> InvoiceResult:
        body: dict[str, Any] = {"amount": str(int(amount_sat) * 1000), "expiry": int(expiry_s)}
        if hashed_description is not None:  # BTCPay commits to sha256(description) itself
            body.update(description=hashed_description, descriptionHashOnly=True)
        else:
            body["description"] = memo
        status, data = self._call("POST", "/invoices", body)
        if status != 200 or not isinstance(data, dict) or not data.get("BOLT11"):
            return InvoiceResult(False, error=f"BTCPay answered {status}")
        try:
            payment_hash = decode_invoice(data["BOLT11"]).payment_hash
        except InvalidInvoice:
            return InvoiceResult(False, error="BTCPay answered an unreadable invoice")
        if data.get("id") != payment_hash:  # with LND behind BTCPay the invoice id is the payment hash
            log.warning("BTCPay invoice id %s is not its payment hash: status lookups will miss it", data.get("id"))
        return InvoiceResult(True, payment_hash, data["BOLT11"])

    def invoice_status(self, payment_hash: str) -> StatusResult:
        status, data = self._call("GET", f"/invoices/{payment_hash}")
        if status != 200 or not isinstance(data, dict):
            return StatusResult(State.PENDING, error=f"BTCPay answered {status}")
        return StatusResult(_INVOICE_STATES.get(str(data.get("status")), State.PENDING))

    def _payment(self, data: Any) -> StatusResult:
        if not isinstance(data, dict):
            return StatusResult(State.PENDING, error="no payment data")
        state = _PAYMENT_STATES.get(str(data.get("status")), State.PENDING)
        fee_msat = parse_digits(str(data.get("feeAmount") or "0"), 15)
        fee_msat = 0 if fee_msat is None else fee_msat
        return StatusResult(state, -(-fee_msat // 1000), str(data.get("preimage") or ""))

    def pay_invoice(self, bolt11: str, max_fee_sat: int) -> PaymentResult:
        try:
            payment_hash = decode_invoice(bolt11).payment_hash
        except InvalidInvoice as exc:
            return PaymentResult(State.FAILED, error=f"invalid invoice: {exc}")
        earlier = self.payment_status(payment_hash)
        if earlier.state is State.SUCCEEDED:
            # BTCPay on LND turns the node's "already paid" into the earlier payment's success
            # (200, Complete): ask first, so that this attempt is never booked as that payment.
            return PaymentResult(State.FAILED, payment_hash, error="BTCPay: invoice is already paid",
                                 already_paid=True)
        status, data = self._call("POST", "/invoices/pay", {
            "BOLT11": bolt11, "maxFeeFlat": str(int(max_fee_sat)), "sendTimeout": self.pay_timeout_s,
        }, timeout=self.pay_timeout_s + self.timeout_s)
        if status == 400 and isinstance(data, dict) and "already paid" in str(data.get("message") or "").lower():
            # BTCPay passes the node's refusal on as a `generic-error` whose message names it
            # (LND: "invoice is already paid"; Core Lightning: "already paid"): nothing moved.
            return PaymentResult(State.FAILED, payment_hash, error=f"BTCPay: {data.get('message')}",
                                 already_paid=True)
        first = self._payment(data) if status == 200 else StatusResult(State.PENDING, error=f"BTCPay {status}")
        if status == 400 or first.state is State.FAILED:
            # Refunds hang on this: a failure counts only when the payment lookup agrees.
            second = self.payment_status(payment_hash)
            if second.state is not State.FAILED and not (status == 400 and second.error == "not found"):
                return PaymentResult(State.PENDING, payment_hash, error="failure not confirmed")
            return PaymentResult(State.FAILED, payment_hash, error="BTCPay: payment failed")
        return PaymentResult(first.state, payment_hash, first.fee_sat, first.preimage, first.error)

    def payment_status(self, payment_hash: str) -> StatusResult:
        status, data = self._call("GET", f"/payments/{payment_hash}")
        if status == 404:
            return StatusResult(State.PENDING, error="not found")
        if status != 200:
            return StatusResult(State.PENDING, error=f"BTCPay answered {status}")
        return self._payment(data)

    def balance(self) -> BalanceResult:
        status, data = self._call("GET", "/balance")
        try:
            local = int(((data or {}).get("offchain") or {}).get("local") or 0) // 1000
        except (TypeError, ValueError, AttributeError):
            return BalanceResult(False, error="BTCPay answered an unreadable balance")
        if status != 200:
            return BalanceResult(False, error=f"BTCPay answered {status}")
        return BalanceResult(True, local)
