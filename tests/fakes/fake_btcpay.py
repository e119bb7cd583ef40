"""A fake BTCPay Server (Greenfield, the store's Lightning node) on loopback that checks every
request against what this project uses of BTCPay's official OpenAPI templates, condensed in
tests/fakes/specs/btcpay.json (written from the official files by scripts/condense_specs.py):
path and method, the `Authorization: token <key>` header, and each body field against its schema."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from lightning import MockBackend, decode_invoice
from tests.fakes.fake_http import FakeServer

CONDENSED = Path(__file__).resolve().parent / "specs" / "btcpay.json"
API_KEY = "fake-btcpay-api-key-0123456789"
STORE = "StoreId123"
TYPES = {"string": str, "boolean": bool, "number": (int, float), "integer": int}


class Spec:
    """The operations in tests/fakes/specs/btcpay.json."""

    def __init__(self) -> None:
        self.operations: list[tuple[re.Pattern, str, dict]] = []
        for operation in json.loads(CONDENSED.read_text())["operations"]:
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", operation["path"]) + "$")
            self.operations.append((pattern, operation["method"], operation))

    def find(self, method: str, path: str) -> dict | None:
        for pattern, verb, operation in self.operations:
            if verb == method and pattern.match(path):
                return operation
        return None

    def problems(self, operation: dict, body: object) -> list[str]:
        if operation["body"] is None:
            return ["a body where the spec takes none"] if body else []
        if not isinstance(body, dict):
            return ["the spec wants a JSON object body"]
        ref, properties = operation["body"]["schema"], operation["body"]["fields"]
        found = []
        for key, value in body.items():
            if key not in properties:
                found.append(f"body field {key!r} is not in {ref}")
                continue
            kind = properties[key].get("type")
            if value is not None and kind in TYPES and (not isinstance(value, TYPES[kind]) or (
                    kind != "boolean" and isinstance(value, bool))):
                found.append(f"{key} must be a {kind}, got {value!r}")
        return found


class FakeBTCPay(FakeServer):
    """Payment modes: complete, failed (confirmed by the lookup), failed_unconfirmed, pending, http500, refused."""

    def __init__(self) -> None:
        self.spec = Spec()
        self.node = MockBackend(network="bcrt", seed="fake-btcpay")
        self.invoices: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self.mode = "complete"
        super().__init__()

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(request.path).path
        body = self.body(request)
        if request.headers.get("Authorization") != f"token {API_KEY}":
            self.violations.append(f"{method} {path}: Authorization is not 'token <key>'")
            return self.reply(request, 401, {"code": "unauthenticated", "message": "no"})
        operation = self.spec.find(method, path)
        if operation is None:
            self.violations.append(f"{method} {path}: not in the BTCPay specs (tests/fakes/specs/btcpay.json)")
            return self.reply(request, 404, {"code": "not-found", "message": "no such route"})
        problems = self.spec.problems(operation, body)
        if problems:
            self.violations.extend(f"{method} {path}: {p}" for p in problems)
            return self.reply(request, 422, [{"path": "", "message": p} for p in problems])
        prefix = f"/api/v1/stores/{STORE}/lightning/BTC"
        if not path.startswith(prefix):
            self.violations.append(f"{method} {path}: wrong store or crypto code")
            return self.reply(request, 404, {"code": "store-not-found", "message": "no"})
        rest = path[len(prefix):]
        if (method, rest) == ("POST", "/invoices"):
            return self.create(request, body)
        if (method, rest) == ("POST", "/invoices/pay"):
            return self.pay(request, body)
        if (method, rest) == ("GET", "/balance"):
            return self.reply(request, 200, {"offchain": {"local": "7000000000", "remote": "0"}})
        if method == "GET" and rest.startswith("/invoices/"):
            invoice = self.invoices.get(rest.rsplit("/", 1)[-1])
            return self.reply(request, 200, invoice) if invoice else self.reply(
                request, 404, {"code": "invoice-not-found", "message": "no"})
        if method == "GET" and rest.startswith("/payments/"):
            payment = self.payments.get(rest.rsplit("/", 1)[-1])
            return self.reply(request, 200, payment) if payment else self.reply(
                request, 404, {"code": "payment-not-found", "message": "no"})
        self.reply(request, 501, {"code": "not-faked", "message": rest})

    def create(self, request, body: dict) -> None:
        sats = int(body["amount"]) // 1000
        description = body.get("description") or ""
        if body.get("descriptionHashOnly"):  # BTCPay commits to sha256(description)
            made = self.node.create_invoice(sats, "", int(body.get("expiry") or 3600), description)
        else:
            made = self.node.create_invoice(sats, description, int(body.get("expiry") or 3600))
        self.invoices[made.payment_hash] = {"id": made.payment_hash, "status": "Unpaid", "BOLT11": made.bolt11,
                                            "amount": body["amount"]}
        self.reply(request, 200, self.invoices[made.payment_hash])

    def settle(self, payment_hash: str) -> None:
        self.invoices[payment_hash]["status"] = "Paid"

    def finish(self, payment_hash: str, status: str, fee_msat: int = 2000) -> None:
        """A pending payment ends: 'Complete' or 'Failed'."""
        record = self.payments[payment_hash]
        record.update(status=status, feeAmount=str(fee_msat) if status == "Complete" else "0",
                      preimage="22" * 32 if status == "Complete" else None)

    def pay(self, request, body: dict) -> None:
        payment_hash = decode_invoice(body["BOLT11"]).payment_hash
        if self.payments.get(payment_hash, {}).get("status") == "Complete":
            # LND refuses a second payment; BTCPay's LND client takes that as success and answers
            # with the earlier payment.
            return self.reply(request, 200, self.payments[payment_hash])
        if self.mode == "http500":
            return self.reply(request, 500, {"code": "generic-error", "message": "boom"})
        if self.mode == "refused":
            return self.reply(request, 400, {"code": "could-not-find-route", "message": "no route"})
        status = {"complete": "Complete", "failed": "Failed", "failed_unconfirmed": "Failed",
                  "pending": "Pending"}[self.mode]
        record = {"id": payment_hash, "status": status, "BOLT11": body["BOLT11"], "paymentHash": payment_hash,
                  "preimage": "22" * 32 if status == "Complete" else None, "totalAmount": "2000000",
                  "feeAmount": "2000" if status == "Complete" else "0"}
        self.payments[payment_hash] = dict(record, status="Pending") if self.mode == "failed_unconfirmed" else record
        self.reply(request, 200, record)
