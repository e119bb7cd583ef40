"""A fake LND REST server on loopback that checks every request against what this project uses of
LND's official OpenAPI (swagger) specs, condensed in tests/fakes/specs/lnd.json (written from the
official files by scripts/condense_specs.py): the path and method are ones we use and the spec has,
the macaroon header is there, every body field is one the spec defines, with the JSON type
grpc-gateway uses. Behaviour is scripted per test (payments that succeed, fail, stay in flight,
time out, break)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

from lightning import MockBackend, decode_invoice
from tests.fakes.fake_http import FakeServer

CONDENSED = Path(__file__).resolve().parent / "specs" / "lnd.json"
# LND master (what the backend is written against) and the latest release; see
# scripts/condense_specs.py for where each comes from.
SPEC_VERSIONS = {name: name for name in json.loads(CONDENSED.read_text())["versions"]}
MACAROON = "0201036c6e64" + "ab" * 20


class Spec:
    """The operations of one LND version in tests/fakes/specs/lnd.json."""

    def __init__(self, version: str = "master") -> None:
        self.operations: list[tuple[re.Pattern, str, dict]] = []
        for operation in json.loads(CONDENSED.read_text())["versions"][version]["operations"]:
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", operation["path"]) + "$")
            self.operations.append((pattern, operation["method"], operation))

    def find(self, method: str, path: str) -> tuple[dict, list[str]] | None:
        for pattern, verb, operation in self.operations:
            match = pattern.match(path)
            if match and verb == method:
                return operation, list(match.groups())
        return None

    def problems(self, operation: dict, params: list[str], query: str, body: dict | None) -> list[str]:
        found = []
        for (name, spec), value in zip(operation["path_params"].items(), params, strict=False):
            if spec.get("format") == "byte" and not _is_base64(value, url=True, size=32):
                found.append(f"path {name}={value!r} is not base64 of 32 bytes")
            if name == "r_hash_str" and not re.fullmatch(r"[0-9a-f]{64}", value):
                found.append(f"path r_hash_str={value!r} is not 64 hex digits")
        for pair in filter(None, query.split("&")):
            if pair.split("=")[0] not in operation["query"]:
                found.append(f"query parameter {pair!r} is not in the spec")
        if operation["body"] is None:
            if body:
                found.append("a body where the spec takes none")
            return found
        if not isinstance(body, dict):
            return found + ["the spec wants a JSON object body"]
        ref, properties = operation["body"]["schema"], operation["body"]["fields"]
        for key, value in body.items():
            spec = properties.get(key)
            if spec is None:
                found.append(f"body field {key!r} is not in {ref}")
                continue
            kind, fmt = spec.get("type"), spec.get("format")
            if kind == "string" and fmt in ("int64", "uint64") and not (isinstance(value, str) and value.isdigit()):
                found.append(f"{key} ({fmt}) must be a decimal string, got {value!r}")
            elif kind == "string" and fmt == "byte" and not _is_base64(value):
                found.append(f"{key} (bytes) must be base64, got {value!r}")
            elif kind == "string" and fmt is None and not isinstance(value, str):
                found.append(f"{key} must be a string")
            elif kind == "boolean" and not isinstance(value, bool):
                found.append(f"{key} must be a boolean")
            elif kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
                found.append(f"{key} must be an integer")
        return found


def _is_base64(value: object, url: bool = False, size: int | None = None) -> bool:
    if not isinstance(value, str):
        return False
    try:
        raw = (base64.urlsafe_b64decode if url else base64.b64decode)(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return False
    return size is None or len(raw) == size


def _invoice_with_hash(sats: int, expiry: int, description_hash: str):
    """A signed BOLT11 committing to `description_hash` (as LND makes one)."""
    import hashlib
    import os

    from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
    from bolt11 import encode as bolt11_encode

    from lightning import InvoiceResult

    payment_hash = hashlib.sha256(os.urandom(32)).hexdigest()
    tags = Tags()
    tags.add(TagChar.payment_hash, payment_hash)
    tags.add(TagChar.payment_secret, os.urandom(32).hex())
    tags.add(TagChar.description_hash, description_hash)
    tags.add(TagChar.expire_time, expiry)
    invoice = Bolt11("bcrt", int(time.time()), tags, MilliSatoshi(sats * 1000))
    return InvoiceResult(True, payment_hash, bolt11_encode(invoice, hashlib.sha256(b"fake-lnd").hexdigest()))


class FakeLnd(FakeServer):
    """Modes for payments: succeed, fail, inflight_then_succeed, inflight_then_fail, fail_unconfirmed,
    not_found, http500, malformed, timeout.

    A route costs `route_fee_sat`. As LND does, a payment whose route costs more than the
    `fee_limit_sat` it was sent with fails with FAILURE_REASON_NO_ROUTE (and tracks as failed);
    `ignore_fee_limit = True` makes a misbehaving node that pays and charges above the limit.
    `fee_limits` keeps the limit each payment hash was sent with."""

    def __init__(self, spec_version: str = "master") -> None:
        self.spec = Spec(spec_version)
        self.node = MockBackend(network="bcrt", seed="fake-lnd")
        self.invoices: dict[str, dict] = {}
        self.payments: dict[str, str] = {}  # payment hash -> mode
        self.mode = "succeed"
        self.requests: list[tuple[str, str]] = []
        self.balance_sat = 5_000_000
        self.route_fee_sat = 3
        self.ignore_fee_limit = False
        self.already_paid_as_http = False
        self.fee_limits: dict[str, int] = {}  # payment hash -> fee_limit_sat it was sent with
        self.fees: dict[str, int] = {}  # payment hash -> the fee its route cost
        # For the fleet test: how often each payment was tracked, and any two tracks of one payment
        # that were answered at the same time (two workers asking at once).
        self.tracked: dict[str, int] = {}
        self.in_flight_answers: dict[str, int] = {}  # payment hash -> IN_FLIGHT answers before SUCCEEDED
        self.overlaps: list[str] = []
        self.track_delay_s = 0.0
        self._tracking: dict[str, int] = {}
        self._track_lock = threading.Lock()
        super().__init__()

    # ---------------------------------------------------------------- plumbing
    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        body = self.body(request)
        self.requests.append((method, parts.path))
        if request.headers.get("Grpc-Metadata-macaroon") != MACAROON:
            self.violations.append(f"{method} {parts.path}: macaroon header missing or wrong")
            return self.reply(request, 401, {"code": 16, "message": "permission denied"})
        found = self.spec.find(method, parts.path)
        if found is None:
            self.violations.append(f"{method} {parts.path}: not in the LND specs (tests/fakes/specs/lnd.json)")
            return self.reply(request, 404, {"code": 5, "message": "Not Found"})
        operation, params = found
        problems = self.spec.problems(operation, params, parts.query, body)
        if problems:
            self.violations.extend(f"{method} {parts.path}: {p}" for p in problems)
            return self.reply(request, 400, {"code": 3, "message": "; ".join(problems)})
        route = {
            ("POST", "/v1/invoices"): self.add_invoice, ("GET", "/v1/balance/channels"): self.channel_balance,
            ("POST", "/v2/router/send"): self.send_payment,
        }.get((method, parts.path))
        if route:
            return route(request, body)
        if parts.path.startswith("/v1/invoice/"):
            return self.lookup_invoice(request, params[0])
        if parts.path.startswith("/v2/router/track/"):
            return self.track(request, base64.urlsafe_b64decode(params[0] + "==").hex())
        self.reply(request, 501, {"code": 12, "message": "not faked"})


    def stream(self, request, updates: list[dict]) -> None:
        data = b"".join(json.dumps(u).encode() + b"\n" for u in updates)
        self.reply(request, 200, data)

    # ---------------------------------------------------------------- the node
    def add_invoice(self, request, body: dict) -> None:
        sats, expiry = int(body.get("value", "0")), int(body.get("expiry", "3600"))
        if body.get("description_hash"):  # LND commits to the hash it is given
            made = _invoice_with_hash(sats, expiry, base64.b64decode(body["description_hash"]).hex())
        else:
            made = self.node.create_invoice(sats, body.get("memo", ""), expiry)
        self.invoices[made.payment_hash] = {"state": "OPEN", "value": body.get("value", "0")}
        self.reply(request, 200, {"r_hash": base64.b64encode(bytes.fromhex(made.payment_hash)).decode(),
                                  "payment_request": made.bolt11, "add_index": str(len(self.invoices)),
                                  "payment_addr": base64.b64encode(b"\0" * 32).decode()})

    def settle(self, payment_hash: str) -> None:
        self.invoices[payment_hash]["state"] = "SETTLED"

    def lookup_invoice(self, request, payment_hash: str) -> None:
        invoice = self.invoices.get(payment_hash)
        if invoice is None:
            return self.reply(request, 404, {"code": 5, "message": "unable to locate invoice"})
        self.reply(request, 200, {"state": invoice["state"], "value": invoice["value"],
                                  "r_hash": base64.b64encode(bytes.fromhex(payment_hash)).decode()})

    def channel_balance(self, request, _body) -> None:
        sats = str(self.balance_sat)
        self.reply(request, 200, {"balance": sats, "local_balance": {"sat": sats, "msat": sats + "000"}})

    @staticmethod
    def _payment(payment_hash: str, status: str, fee: int = 0) -> dict:
        result = {"payment_hash": payment_hash, "status": status, "fee_sat": str(fee)}
        if status == "SUCCEEDED":
            result["payment_preimage"] = "11" * 32
        if status == "FAILED":
            result["failure_reason"] = "FAILURE_REASON_NO_ROUTE"
        return {"result": result}

    def send_payment(self, request, body: dict) -> None:
        payment_hash = decode_invoice(body["payment_request"]).payment_hash
        limit = int(body.get("fee_limit_sat") or 0)  # 0 (the default): only fee-free routes
        self.fee_limits[payment_hash] = limit
        fee = self.fees.setdefault(payment_hash, self.route_fee_sat)
        if payment_hash not in self.payments and self.mode in ("succeed", "inflight_then_succeed") \
                and fee > limit and not self.ignore_fee_limit:
            self.payments[payment_hash] = "fail"  # no route within the fee limit: a definite failure
        if self.payments.get(payment_hash) in ("succeed", "inflight_then_succeed"):
            # LND refuses to pay an invoice a second time (channeldb.ErrAlreadyPaid, gRPC AlreadyExists).
            # The gateway sends it as an error line; with `already_paid_as_http`, as a 409 answer.
            error = {"code": 6, "message": "invoice is already paid"}
            if self.already_paid_as_http:
                return self.reply(request, 409, error)
            return self.stream(request, [{"error": error}])
        mode = self.payments.setdefault(payment_hash, self.mode)
        if mode == "http500":
            return self.reply(request, 500, {"code": 2, "message": "internal"})
        if mode == "malformed":
            return self.reply(request, 200, b"{not json")
        if mode == "timeout":
            time.sleep(3)
            return self.stream(request, [self._payment(payment_hash, "IN_FLIGHT")])
        if mode == "not_found":
            return self.stream(request, [{"error": {"code": 5, "message": "payment isn't initiated"}}])
        first = {"succeed": "SUCCEEDED", "fail": "FAILED", "fail_unconfirmed": "FAILED"}.get(mode, "IN_FLIGHT")
        self.stream(request, [self._payment(payment_hash, first, fee if first == "SUCCEEDED" else 0)])

    def track(self, request, payment_hash: str) -> None:
        with self._track_lock:
            self.tracked[payment_hash] = self.tracked.get(payment_hash, 0) + 1
            self._tracking[payment_hash] = self._tracking.get(payment_hash, 0) + 1
            if self._tracking[payment_hash] > 1:
                self.overlaps.append(payment_hash)
            waiting = self.in_flight_answers.get(payment_hash, 0)
            if waiting:
                self.in_flight_answers[payment_hash] = waiting - 1
        try:
            if self.track_delay_s:
                time.sleep(self.track_delay_s)
            if waiting:
                return self.stream(request, [self._payment(payment_hash, "IN_FLIGHT")])
            return self._track(request, payment_hash)
        finally:
            with self._track_lock:
                self._tracking[payment_hash] -= 1

    def _track(self, request, payment_hash: str) -> None:
        mode = self.payments.get(payment_hash)
        final = {"succeed": "SUCCEEDED", "inflight_then_succeed": "SUCCEEDED", "fail": "FAILED",
                 "inflight_then_fail": "FAILED", "fail_unconfirmed": "IN_FLIGHT"}.get(mode or "")
        if final is None:
            return self.stream(request, [{"error": {"code": 5, "message": "payment isn't initiated"}}])
        fee = self.fees.get(payment_hash, self.route_fee_sat)
        self.stream(request, [self._payment(payment_hash, final, fee if final == "SUCCEEDED" else 0)])
