"""A fake of Africa's Talking's Insights SIM swap API on a free loopback port, for
SIM_SWAP_PROVIDER=africastalking. It checks each request against the documented fields
(../shared/specs/africastalking/Insights-SimSwap.md) and records what does not match in
`violations` (a test asserts the list is empty):

- `POST /v1/sim-swap`: headers `apiKey` (the key), `Accept: application/json`, `Content-Type:
  application/json`; a JSON body with exactly `username` and `phoneNumbers` (a list of E.164
  numbers with "+"). The answer, by `mode`: "queued" (`{"status": "Queued", "requestId",
  "transactionId"}`: the result comes by callback), "sync" (the result at once, under
  `data.phoneNumbers[]`), "error" (HTTP 500), "odd" (a status that is not Queued), "slow" (no
  answer before the client's timeout).

`result()` is the callback body AT would post for a queued check: status Swapped | NotSwapped,
lastSimSwapDate (DD-MM-YYYY; "01-01-1900" when none is known), phoneNumber, requestId,
transactionId.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlparse

from tests.fakes.fake_http import FakeServer

USERNAME, API_KEY = "wallet-co", "at-test-key-0123456789"
_E164 = re.compile(r"^\+\d{1,3}\d{3,}$")  # what AT (and its SDK) take
NO_SWAP_DATE = "01-01-1900"


class FakeInsights(FakeServer):
    def __init__(self, slow_s: float = 3.0) -> None:
        self.mode = "queued"
        self.slow_s = slow_s
        self.checks: list[dict] = []  # {"phones", "request_id", "transaction_id"}
        self.swapped: dict[str, dt.datetime] = {}  # phone -> its last swap (the "sync" mode's truth)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__()

    def app_settings(self, callback_token: str) -> dict:
        return {"SIM_SWAP_PROVIDER": "africastalking", "AFRICASTALKING_USERNAME": USERNAME,
                "AFRICASTALKING_API_KEY": API_KEY, "AFRICASTALKING_INSIGHTS_URL": self.url,
                "SIM_SWAP_CALLBACK_TOKEN": callback_token, "MPESA_TIMEOUT_S": 1.0}

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = urlparse(request.path).path
        if method != "POST" or path != "/v1/sim-swap":
            self.violations.append(f"{method} {path}: not the Insights SIM swap endpoint")
            self.reply(request, 404, {"errorMessage": "not found"})
            return
        if request.headers.get("apiKey") != API_KEY:
            self.violations.append("sim-swap: apiKey header missing or wrong")
        if request.headers.get("Accept") != "application/json":
            self.violations.append("sim-swap: Accept is not application/json")
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            self.violations.append("sim-swap: the body is not JSON")
        try:
            body = self.body(request)
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) != {"username", "phoneNumbers"}:
            self.violations.append(f"sim-swap: the body is not exactly username + phoneNumbers: {body!r}")
            self.reply(request, 400, {"errorMessage": "Invalid request"})
            return
        if body["username"] != USERNAME:
            self.violations.append("sim-swap: username missing or wrong")
        phones = body["phoneNumbers"]
        if not isinstance(phones, list) or not phones or not all(isinstance(p, str) and _E164.match(p) for p in phones):
            self.violations.append(f"sim-swap: phoneNumbers is not a list of E.164 numbers: {phones!r}")
            self.reply(request, 400, {"errorMessage": "Invalid phone numbers"})
            return
        with self._lock:
            request_id = f"ATSwpid_{next(self._ids):08d}"
            transaction_id = str(uuid.uuid4())
            self.checks.append({"phones": phones, "request_id": request_id, "transaction_id": transaction_id})
            mode = self.mode
        if mode == "slow":
            time.sleep(self.slow_s)
        if mode == "error":
            self.reply(request, 500, {"errorMessage": "Internal error"})
        elif mode == "odd":
            self.reply(request, 200, {"status": "InsufficientBalance", "requestId": request_id})
        elif mode == "sync":
            self.reply(request, 200, {"status": "Success", "requestId": request_id, "data": {
                "phoneNumbers": [self._item(phone, request_id, transaction_id) for phone in phones]}})
        else:
            self.reply(request, 200, {"status": "Queued", "requestId": request_id, "transactionId": transaction_id})

    def _item(self, phone: str, request_id: str, transaction_id: str) -> dict:
        when = self.swapped.get(phone)
        return {"phoneNumber": phone, "status": "Swapped" if when else "NotSwapped",
                "lastSimSwapDate": when.strftime("%d-%m-%Y") if when else NO_SWAP_DATE,
                "requestId": request_id, "transactionId": transaction_id}

    def result(self, phone: str, swapped_at: dt.datetime | None = None, **changes: str) -> dict:
        """The callback body AT would post for the last queued check of `phone`."""
        check = next(c for c in reversed(self.checks) if phone in c["phones"])
        if swapped_at is not None:
            self.swapped[phone] = swapped_at
        return {**self._item(phone, check["request_id"], check["transaction_id"]), **changes}

    def post_json(self, client, url: str, body: dict):
        return client.post(url, data=json.dumps(body), content_type="application/json")
