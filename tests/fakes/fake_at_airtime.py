"""A fake of Africa's Talking's Airtime API on a free loopback port, for AIRTIME_PROVIDER=
africastalking. It checks each request against AT's documentation and records what does not match
in `violations` (a test asserts the list is empty):

- `POST /version1/airtime/send`: headers `apiKey` (the key), `Accept: application/json`, an
  `Idempotency-Key`; a form body with `username` and `recipients`, a JSON list of one
  {"phoneNumber": "+254...", "amount": "KES <n>"} (the SDK joins currency and amount; KES 10 to
  10,000 for Kenya), optional `maxNumRetry`. The answer, by `mode`: "sent" (accepted, status
  Sent, a requestId: the delivery report comes later), "success" (delivered at once), "failed"
  (status Failed: nothing sent), "error" (HTTP 500), "slow" (no answer before the client's timeout).
- `GET /query/transaction/find?username=&transactionId=`: {"status": "Success", "data": {"status":
  ...}} with what `final[requestId]` says (default "Sent"), or {"status": "Failed"} for an id AT
  never gave.

The delivery report AT posts to the status callback URL is `report()`: form fields phoneNumber,
description, status (Success|Failed), requestId, discount, value.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from tests.fakes.fake_http import FakeServer

USERNAME, API_KEY = "wallet-co", "at-test-key-0123456789"
_PHONE = re.compile(r"^\+254[17][0-9]{8}$")
_AMOUNT = re.compile(r"^KES ([0-9]+(?:\.[0-9]+)?)$")


class FakeAirtime(FakeServer):
    def __init__(self, slow_s: float = 3.0) -> None:
        self.mode = "sent"
        self.slow_s = slow_s
        self.sends: list[dict] = []  # {"phone", "kes", "key", "request_id"}
        self.queries: list[str] = []
        self.final: dict[str, str] = {}  # requestId -> what the status query says
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__()

    def app_settings(self, callback_token: str) -> dict:
        return {"AIRTIME_PROVIDER": "africastalking", "AFRICASTALKING_USERNAME": USERNAME,
                "AFRICASTALKING_API_KEY": API_KEY, "AFRICASTALKING_AIRTIME_URL": self.url,
                "AIRTIME_CALLBACK_TOKEN": callback_token, "MPESA_TIMEOUT_S": 1.0}

    def _check_headers(self, request: BaseHTTPRequestHandler, where: str) -> None:
        if request.headers.get("apiKey") != API_KEY:
            self.violations.append(f"{where}: apiKey header missing or wrong")
        if request.headers.get("Accept") != "application/json":
            self.violations.append(f"{where}: Accept is not application/json")

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        if method == "POST" and url.path == "/version1/airtime/send":
            self._send(request)
        elif method == "GET" and url.path == "/query/transaction/find":
            self._find(request, parse_qs(url.query))
        else:
            self.violations.append(f"{method} {url.path}: not an Airtime API endpoint")
            self.reply(request, 404, {"errorMessage": "not found"})

    def _send(self, request: BaseHTTPRequestHandler) -> None:
        self._check_headers(request, "send")
        if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            self.violations.append("send: the body is not a form")
        key = request.headers.get("Idempotency-Key", "")
        if not 1 <= len(key) <= 100:
            self.violations.append("send: no Idempotency-Key")
        length = int(request.headers.get("Content-Length") or 0)
        form = {name: values[0] for name, values in parse_qs(request.rfile.read(length).decode()).items()}
        if form.get("username") != USERNAME:
            self.violations.append("send: username missing or wrong")
        extra = set(form) - {"username", "recipients", "maxNumRetry"}
        if extra:
            self.violations.append(f"send: unknown fields {sorted(extra)}")
        try:
            recipients = json.loads(form.get("recipients", ""))
        except ValueError:
            recipients = None
        if not isinstance(recipients, list) or len(recipients) != 1 or not isinstance(recipients[0], dict) \
                or set(recipients[0]) != {"phoneNumber", "amount"}:
            self.violations.append(f"send: recipients is not one phoneNumber + amount: {form.get('recipients')!r}")
            self.reply(request, 400, {"errorMessage": "Invalid recipients"})
            return
        phone, amount = str(recipients[0]["phoneNumber"]), str(recipients[0]["amount"])
        found = _AMOUNT.match(amount)
        if not _PHONE.match(phone):
            self.violations.append(f"send: phoneNumber {phone!r} is not a Kenyan mobile in +254 form")
        if found is None or not 10 <= float(found.group(1)) <= 10000:
            self.violations.append(f"send: amount {amount!r} is not 'KES <10-10000>'")
        with self._lock:
            request_id = f"ATQid_{next(self._ids):08d}"
            self.sends.append({"phone": phone, "kes": amount, "key": key, "request_id": request_id})
            mode = self.mode
        if mode == "slow":
            time.sleep(self.slow_s)
        if mode == "error":
            self.reply(request, 500, {"errorMessage": "Internal error"})
            return
        status = {"sent": "Sent", "success": "Success", "failed": "Failed"}.get(mode, "Sent")
        error = "Value Outside The Allowed Limits" if status == "Failed" else "None"
        self.reply(request, 201, {
            "errorMessage": "None" if status != "Failed" else error, "numSent": 0 if status == "Failed" else 1,
            "totalAmount": amount + ".0000", "totalDiscount": "KES 0.0000",
            "responses": [{"phoneNumber": phone, "errorMessage": error, "amount": amount + ".0000",
                           "status": status, "requestId": request_id if status != "Failed" else "None",
                           "discount": "KES 0.0000"}]})

    def _find(self, request: BaseHTTPRequestHandler, query: dict) -> None:
        self._check_headers(request, "find")
        if query.get("username") != [USERNAME]:
            self.violations.append("find: username missing or wrong")
        request_id = (query.get("transactionId") or [""])[0]
        self.queries.append(request_id)
        if not any(sent["request_id"] == request_id for sent in self.sends):
            self.reply(request, 200, {"status": "Failed", "errorMessage": "Transaction not found"})
            return
        self.reply(request, 200, {"status": "Success", "data": {
            "status": self.final.get(request_id, "Sent"), "transactionId": request_id, "sourceType": "Wallet",
            "destinationType": "PhoneNumber", "requestMetadata": {}}})

    def report(self, request_id: str, status: str = "Success", **changes: str) -> dict:
        """The delivery report AT would post for a send, with `changes` to its fields."""
        sent = next(s for s in self.sends if s["request_id"] == request_id)
        fields = {"phoneNumber": sent["phone"], "description": "Airtime Delivered Successfully"
                  if status == "Success" else "Airtime delivery failed", "status": status,
                  "requestId": request_id, "discount": "KES 0.6000", "value": sent["kes"] + ".0000"}
        return {**fields, **changes}
