"""LNbits (https://lnbits.com) as the node: one LNbits wallet holds the pool.

Invoices are made with the wallet's invoice key and paid with its admin key (header X-Api-Key).
`POST /api/v1/payments` creates an invoice only with "out": false (it defaults to paying!).
A status that cannot be learnt is PENDING: a payment is FAILED only when LNbits says so.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from helpers.infra.http import request_json
from helpers.infra.settings import Settings
from lightning import (
    BalanceResult,
    InvoiceResult,
    LightningBackend,
    LightningConfigError,
    PaymentResult,
    State,
    StatusResult,
    decode_invoice,
    InvalidInvoice,
)

log = logging.getLogger(__name__)

_TIMEOUT_S = 10
_REFUSED = {400, 401, 403, 404, 422}  # LNbits refused before anything was sent
# LNbits' answers (lnbits/core/services/payments.py) when the invoice was paid before: from this
# wallet, by another wallet of the same LNbits, or found paid on the funding source.
_ALREADY_PAID = frozenset({"Payment already paid.", "Internal invoice already paid.",
                           "Failed payment was already paid on the fundingsource."})


class LNbitsBackend(LightningBackend):
    name = "lnbits"

    def __init__(self, url: str, admin_key: str, invoice_key: str, webhook_url: str = "",
                 session: requests.Session | None = None, timeout_s: float = _TIMEOUT_S,
                 pay_timeout_s: float = _TIMEOUT_S) -> None:
        for setting, value in (("LNBITS_URL", url), ("LNBITS_ADMIN_KEY", admin_key),
                               ("LNBITS_INVOICE_KEY", invoice_key)):
            if not value:
                raise LightningConfigError(f"{setting} is required for LIGHTNING_BACKEND=lnbits")
        self.url = url.rstrip("/")
        self.admin_key, self.invoice_key = admin_key, invoice_key
        self.webhook_url = webhook_url
        self.timeout_s, self.pay_timeout_s = timeout_s, pay_timeout_s
        self.http = session or requests.Session()

    @classmethod
    def from_config(cls, settings: Settings) -> LNbitsBackend:
        token = settings.lightning_webhook_token
        webhook = f"{settings.public_url.rstrip('/')}/lightning/webhook/{token}" if token else ""
        return cls(settings.lnbits_url, settings.lnbits_admin_key,
                   settings.lnbits_invoice_key, webhook,
                   timeout_s=settings.lightning_timeout_s,
                   pay_timeout_s=settings.lightning_pay_timeout_s)

    def _call(self, method: str, path: str, key: str, body: dict | None = None,
              timeout: float | None = None) -> tuple[int, Any]:
        return request_json(self.http, "LNbits", method, self.url + path, body, timeout or self.timeout_s,
                            headers={"X-Api-Key": key})

    def create_invoice(self, amount_sat: int, memo: str, expiry_s: int,
                       hashed_description: str | None = None) -> InvoiceResult:
        body = {"out": False, "amount": int(amount_sat), "memo": memo, "expiry": int(expiry_s)}
        if hashed_description is not None:  # LNbits hashes it and commits to the hash
            body["unhashed_description"] = hashed_description.encode().hex()
        if self.webhook_url:
            body["webhook"] = self.webhook_url
        status, data = self._call("POST", "/api/v1/payments", self.invoice_key, body)
        if status not in (200, 201) or not isinstance(data, dict):
            return InvoiceResult(False, error=f"LNbits answered {status}")
        bolt11 = data.get("bolt11") or data.get("payment_request") or ""
        payment_hash = data.get("payment_hash") or ""
        if not bolt11 or not payment_hash:
            return InvoiceResult(False, error="LNbits answered without an invoice")
        return InvoiceResult(True, payment_hash, bolt11)

    def _status(self, payment_hash: str) -> StatusResult:
        status, data = self._call("GET", f"/api/v1/payments/{payment_hash}", self.invoice_key)
        if status != 200 or not isinstance(data, dict):
            return StatusResult(State.PENDING, error=f"LNbits answered {status}")
        details: dict = data["details"] if isinstance(data.get("details"), dict) else {}
        fee_msat = abs(int(details.get("fee") or 0))
        if data.get("paid") is True:
            return StatusResult(State.SUCCEEDED, fee_sat=-(-fee_msat // 1000), preimage=data.get("preimage") or "")
        if (data.get("status") or details.get("status")) == "failed":
            return StatusResult(State.FAILED, error="LNbits says failed")
        return StatusResult(State.PENDING)

    def invoice_status(self, payment_hash: str) -> StatusResult:
        return self._status(payment_hash)

    def payment_status(self, payment_hash: str) -> StatusResult:
        return self._status(payment_hash)

    def pay_invoice(self, bolt11: str, max_fee_sat: int) -> PaymentResult:
        try:
            payment_hash = decode_invoice(bolt11).payment_hash
        except InvalidInvoice as exc:
            return PaymentResult(State.FAILED, error=f"invalid invoice: {exc}")
        status, data = self._call("POST", "/api/v1/payments", self.admin_key, {"out": True, "bolt11": bolt11},
                                  timeout=self.pay_timeout_s)
        if status in _REFUSED:
            detail = data.get("detail") if isinstance(data, dict) else ""
            return PaymentResult(State.FAILED, payment_hash, error=f"LNbits refused: {detail or status}")
        if isinstance(data, dict) and data.get("detail") in _ALREADY_PAID:
            # An earlier payment paid this invoice (LNbits' PaymentError, answered as 520): this
            # attempt moved nothing, and a status lookup would report that earlier payment.
            return PaymentResult(State.FAILED, payment_hash, error=f"LNbits: {data['detail']}", already_paid=True)
        if status not in (200, 201):
            # LNbits answers 520 {"status": "failed"} when it refused before sending (e.g. not
            # enough balance). That is believed only if a second look finds no such payment,
            # or a failed one; anything else stays pending for the reconciler.
            if isinstance(data, dict) and data.get("status") == "failed" and self._never_sent(payment_hash):
                return PaymentResult(State.FAILED, payment_hash, error=f"LNbits refused: {data.get('detail')}")
            return PaymentResult(State.PENDING, payment_hash, error=f"LNbits answered {status}")
        result = self._status(payment_hash)
        return PaymentResult(result.state, payment_hash, result.fee_sat, result.preimage, result.error)

    def _never_sent(self, payment_hash: str) -> bool:
        status, data = self._call("GET", f"/api/v1/payments/{payment_hash}", self.admin_key)
        if status == 404:
            return True
        return status == 200 and isinstance(data, dict) and data.get("paid") is False and (
            data.get("status") == "failed")

    def balance(self) -> BalanceResult:
        status, data = self._call("GET", "/api/v1/wallet", self.invoice_key)
        if status != 200 or not isinstance(data, dict) or "balance" not in data:
            return BalanceResult(False, error=f"LNbits answered {status}")
        return BalanceResult(True, int(data["balance"]) // 1000)
