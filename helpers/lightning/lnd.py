"""LND's REST API as the node (macaroon in `Grpc-Metadata-macaroon`, the node's TLS certificate).

Invoices: POST /v1/invoices, GET /v1/invoice/{hex hash}. Payments: POST /v2/router/send streams
JSON lines until a final state; GET /v2/router/track/{base64url hash} re-reads one. Balance:
GET /v1/balance/channels. grpc-gateway writes 64-bit integers as strings and bytes as base64.
A state that cannot be learnt is PENDING; FAILED needs the node to say so twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any

import requests

from helpers.infra.http import request_json
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

_INVOICE_STATES = {"SETTLED": State.SUCCEEDED, "CANCELED": State.FAILED}
_PAYMENT_STATES = {"SUCCEEDED": State.SUCCEEDED, "FAILED": State.FAILED}
# LND's error when an invoice was paid before (channeldb.ErrAlreadyPaid, gRPC code AlreadyExists),
# in an error line of the stream or as the body of a non-200 answer.
ALREADY_PAID = "invoice is already paid"


def _error_of(response: requests.Response) -> str:
    """The gRPC gateway's error message of a non-200 answer ({"error": {"message"}} or {"message"})."""
    try:
        data = json.loads(response.content or b"{}")
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    error = data["error"] if isinstance(data.get("error"), dict) else data
    return str(error.get("message") or "")


def _b64url(hex_hash: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_hash)).decode()


class LndBackend(LightningBackend):
    name = "lnd"

    def __init__(self, url: str, macaroon_hex: str, tls_cert: str = "", timeout_s: float = 10,
                 pay_timeout_s: int = 60) -> None:
        if not url:
            raise LightningConfigError("LND_URL is required for LIGHTNING_BACKEND=lnd")
        if not macaroon_hex:
            raise LightningConfigError("LND_MACAROON (hex) is required for LIGHTNING_BACKEND=lnd")
        try:
            bytes.fromhex(macaroon_hex)
        except ValueError as exc:
            raise LightningConfigError("LND_MACAROON must be the macaroon in hex") from exc
        if url.startswith("https") and not tls_cert:
            raise LightningConfigError("LND_TLS_CERT (path to tls.cert) is required for an https LND_URL")
        self.url = url.rstrip("/")
        self.verify: str | bool = tls_cert or True
        self.timeout_s, self.pay_timeout_s = timeout_s, pay_timeout_s
        self.http = requests.Session()
        self.http.headers["Grpc-Metadata-macaroon"] = macaroon_hex

    @classmethod
    def from_config(cls, settings: Settings) -> LndBackend:
        return cls(settings.lnd_url, settings.lnd_macaroon, settings.lnd_tls_cert,
                   timeout_s=settings.lightning_timeout_s,
                   pay_timeout_s=settings.lightning_pay_timeout_s)

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        return request_json(self.http, "LND", method, self.url + path, body, self.timeout_s, self.verify)

    def create_invoice(self, amount_sat: int, memo: str, expiry_s: int,
                       hashed_description: str | None = None) -> InvoiceResult:
        body: dict[str, Any] = {"value": str(int(amount_sat)), "expiry": str(int(expiry_s))}
        if hashed_description is not None:
            body["description_hash"] = base64.b64encode(hashlib.sha256(hashed_description.encode()).digest()).decode()
        else:
            body["memo"] = memo
        status, data = self._call("POST", "/v1/invoices", body)
        if status != 200 or not isinstance(data, dict):
            return InvoiceResult(False, error=f"LND answered {status}")
        try:
            payment_hash = base64.b64decode(data["r_hash"]).hex()
            bolt11 = data["payment_request"]
        except (KeyError, ValueError, TypeError):
            return InvoiceResult(False, error="LND answered without an invoice")
        return InvoiceResult(True, payment_hash, bolt11)

    def invoice_status(self, payment_hash: str) -> StatusResult:
        status, data = self._call("GET", f"/v1/invoice/{payment_hash}")
        if status != 200 or not isinstance(data, dict):
            return StatusResult(State.PENDING, error=f"LND answered {status}")
        return StatusResult(_INVOICE_STATES.get(str(data.get("state")), State.PENDING))

    def _stream(self, method: str, path: str, body: dict | None = None) -> StatusResult:
        """The last payment update of a streamed answer; PENDING unless it is final."""
        last: dict | None = None
        try:
            with self.http.request(method, self.url + path, json=body, stream=True, verify=self.verify,
                                   timeout=(self.timeout_s, self.pay_timeout_s + self.timeout_s)) as response:
                if response.status_code != 200:
                    error = _error_of(response) or f"LND answered {response.status_code}"
                    return StatusResult(State.PENDING, error=error)
                for line in response.iter_lines():
                    if not line:
                        continue
                    message = json.loads(line)
                    if message.get("error"):
                        return StatusResult(State.PENDING, error=str(message["error"].get("message")))
                    last = message.get("result") or {}
                    if last.get("status") in _PAYMENT_STATES:
                        break
        except (requests.RequestException, ValueError) as exc:
            log.warning("LND %s %s stream: %s", method, path, type(exc).__name__)
            return StatusResult(State.PENDING, error=type(exc).__name__)
        if not last:
            return StatusResult(State.PENDING, error="no update")
        state = _PAYMENT_STATES.get(str(last.get("status")), State.PENDING)
        fee_sat = int(last.get("fee_sat") or 0)
        return StatusResult(state, fee_sat, str(last.get("payment_preimage") or ""),
                            str(last.get("failure_reason") or ""))

    def pay_invoice(self, bolt11: str, max_fee_sat: int) -> PaymentResult:
        try:
            payment_hash = decode_invoice(bolt11).payment_hash
        except InvalidInvoice as exc:
            return PaymentResult(State.FAILED, error=f"invalid invoice: {exc}")
        first = self._stream("POST", "/v2/router/send", {
            "payment_request": bolt11, "fee_limit_sat": str(int(max_fee_sat)),
            "timeout_seconds": self.pay_timeout_s, "no_inflight_updates": True,
        })
        if ALREADY_PAID in first.error:
            # LND refused to send (gRPC AlreadyExists): an earlier payment paid this invoice. This
            # attempt moved nothing; tracking the hash would report that earlier payment's success.
            return PaymentResult(State.FAILED, payment_hash, error=first.error, already_paid=True)
        if first.state is State.FAILED:
            # Refunds hang on this: believe a failure only when a second look agrees.
            second = self.payment_status(payment_hash)
            if second.state is not State.FAILED:
                return PaymentResult(State.PENDING, payment_hash, error="failure not confirmed")
        return PaymentResult(first.state, payment_hash, first.fee_sat, first.preimage, first.error)

    def payment_status(self, payment_hash: str) -> StatusResult:
        return self._stream("GET", f"/v2/router/track/{_b64url(payment_hash)}?no_inflight_updates=true")

    def balance(self) -> BalanceResult:
        status, data = self._call("GET", "/v1/balance/channels")
        if status != 200 or not isinstance(data, dict):
            return BalanceResult(False, error=f"LND answered {status}")
        try:
            return BalanceResult(True, int((data.get("local_balance") or {}).get("sat") or data.get("balance") or 0))
        except (TypeError, ValueError):
            return BalanceResult(False, error="LND answered an unreadable balance")
