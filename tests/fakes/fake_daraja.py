"""A fake Daraja (Safaricom's M-Pesa API) on a free loopback port, following the request, response
and callback shapes of the Daraja docs (../shared/specs/daraja: Authorization,
MpesaExpressSimulate, MpesaExpressQuery, BusinessToCustomer, TransactionStatus).

What it checks, recording every problem in `violations` (tests assert it stays empty):
- OAuth: `GET /oauth/v1/generate?grant_type=client_credentials` with `Authorization: Basic
  base64(key:secret)`; it answers `{"access_token", "expires_in"}`. As the docs say, a new token
  invalidates the previous one: a call with an old token gets 401 `400.003.01` (not a violation:
  another worker may have fetched a new one; counted in `token_rejections`).
- Every API call: `Authorization: Bearer <token>`, JSON body, exactly the documented field names,
  types and formats (shortcodes, 2547XXXXXXXX numbers, whole-KES amounts within M-Pesa's bounds,
  URLs, lengths); the STK `Password` must be base64(shortcode + passkey + Timestamp) with a
  Timestamp (YYYYMMDDHHmmss, East Africa Time) within 10 minutes of now.

How it answers: like Safaricom, asynchronously. It calls the CallBackURL / ResultURL /
QueueTimeOutURL it was given, from a thread, with the documented payloads. The outcome of a
request is chosen by the last two digits of its KES amount (so a script that only types
amounts, such as test_ussd.py, can pick one), see OUTCOMES:

  ..32 cancelled   STK: callback ResultCode 1032 "Request cancelled by user"; B2C: ResultCode 2001
  ..33 duplicated  the success callback is sent 3 times
  ..34 delayed     the success callback comes after `delay_s` seconds
  ..35 never       no callback at all; the status queries know it succeeded
  ..36 undecided   no callback; STK query: "The transaction is being processed"; Transaction
                   Status: TransactionStatus "Authorized" (not final)
  ..37 timeout     B2C: the QueueTimeOutURL is called instead of the ResultURL; the payment
                   went through (the Transaction Status result says Completed)
  ..38 refused     the request itself is refused: HTTP 400 with an errorCode; nothing happens
  ..39 slow        the answer comes after `slow_s` seconds (longer than the client waits); the
                   request is processed anyway and its success callback follows
  anything else    success: one callback, right away

Run it alone for a manual try (prints the settings for the app):
    python -m tests.fakes.fake_daraja --callback-base http://127.0.0.1:5000
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from tests.fakes.fake_http import FakeServer

CONSUMER_KEY = "fake-consumer-key"
CONSUMER_SECRET = "fake-consumer-secret"  # noqa: S105 - a test value
SHORTCODE = "174379"
B2C_SHORTCODE = "600997"
PASSKEY = "fake-passkey-bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
INITIATOR = "testapi"
SECURITY_CREDENTIAL = "RkFLRS1FTkNSWVBURUQtQ1JFREVOVElBTA=="  # noqa: S105 - a test value
CALLBACK_TOKEN = "cb-token-0123456789abcdef"  # noqa: S105 - a test value

OUTCOMES = {32: "cancelled", 33: "duplicated", 34: "delayed", 35: "never", 36: "undecided",
            37: "timeout", 38: "refused", 39: "slow"}
EAT = dt.timezone(dt.timedelta(hours=3))

# Documented request fields: name -> required
STK_FIELDS = {"BusinessShortCode": True, "Password": True, "Timestamp": True, "TransactionType": True,
              "Amount": True, "PartyA": True, "PartyB": True, "PhoneNumber": True, "CallBackURL": True,
              "AccountReference": True, "TransactionDesc": False}
STK_QUERY_FIELDS = {"BusinessShortCode": True, "Password": True, "Timestamp": True, "CheckoutRequestID": True}
B2C_FIELDS = {"OriginatorConversationID": True, "InitiatorName": True, "SecurityCredential": True,
              "CommandID": True, "Amount": True, "PartyA": True, "PartyB": True, "Remarks": True,
              "QueueTimeOutURL": True, "ResultURL": True, "Occassion": False}
B2B_FIELDS = {"Initiator": True, "SecurityCredential": True, "CommandID": True, "SenderIdentifierType": True,
              "RecieverIdentifierType": True, "Amount": True, "PartyA": True, "PartyB": True,
              "AccountReference": True, "Requester": False, "Remarks": True, "QueueTimeOutURL": True,
              "ResultURL": True, "Occassion": False}
STATUS_FIELDS = {"Initiator": True, "SecurityCredential": True, "CommandID": True, "TransactionID": False,
                 "OriginalConversationID": False, "PartyA": True, "IdentifierType": True, "ResultURL": True,
                 "QueueTimeOutURL": True, "Remarks": True, "Occasion": False}
BALANCE_FIELDS = {"Initiator": True, "SecurityCredential": True, "CommandID": True, "PartyA": True,
                  "IdentifierType": True, "Remarks": True, "QueueTimeOutURL": True, "ResultURL": True}
# The Account Balance answer's format, from the docs' example: per account Name|KES|available|...
FLOAT_ACCOUNTS = ("Working Account|KES|700000.00|700000.00|0.00|0.00&Float Account|KES|0.00|0.00|0.00|0.00"
                  "&Utility Account|KES|228037.00|228037.00|0.00|0.00&Charges Paid Account|KES|-1540.00|-1540.00|0.00"
                  "|0.00&Organization Settlement Account|KES|0.00|0.00|0.00|0.00")
# M-Pesa's per-transaction bounds (Daraja FAQs): Express from Ksh 1, B2C from Ksh 10, both up to 250,000
STK_BOUNDS, B2C_BOUNDS = (1, 250_000), (10, 250_000)

_MSISDN = re.compile(r"^254(7|1)\d{8}$")
_counter = itertools.count(1)


def outcome_of(kes: int) -> str:
    return OUTCOMES.get(kes % 100, "success")


def kes_for(outcome: str, at_least: int) -> int:
    """The smallest KES amount >= at_least that the fake treats with `outcome`."""
    for kes in range(at_least, at_least + 200):
        if outcome_of(kes) == outcome:
            return kes
    raise ValueError(outcome)


def receipt() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(10))


def app_settings(fake_url: str, callback_base: str) -> dict[str, str]:
    """The app's settings (config keys = environment variables) for this fake."""
    return {
        "MPESA_PROVIDER": "daraja", "MPESA_BASE_URL": fake_url, "MPESA_CONSUMER_KEY": CONSUMER_KEY,
        "MPESA_CONSUMER_SECRET": CONSUMER_SECRET, "MPESA_SHORTCODE": SHORTCODE, "MPESA_PASSKEY": PASSKEY,
        "MPESA_B2C_SHORTCODE": B2C_SHORTCODE, "MPESA_INITIATOR_NAME": INITIATOR,
        "MPESA_SECURITY_CREDENTIAL": SECURITY_CREDENTIAL, "MPESA_CALLBACK_BASE_URL": callback_base,
        "MPESA_CALLBACK_TOKEN": CALLBACK_TOKEN, "MPESA_TIMEOUT_S": "2",
    }



BUSINESS_NAME = "Biller Company"  # the public name B2B results give the business paid

class FakeDaraja(FakeServer):
    def __init__(self, token_lifetime_s: int = 3599, delay_s: float = 1.5, slow_s: float = 3.5) -> None:
        self.lock = threading.Lock()
        self.token_lifetime_s = token_lifetime_s
        self.delay_s, self.slow_s = delay_s, slow_s
        self.tokens_issued = 0
        self.token_rejections = 0
        self._token: str | None = None
        self._token_expires = 0.0
        self.stk: dict[str, dict] = {}  # CheckoutRequestID -> what happened
        self.b2c: dict[str, dict] = {}  # OriginatorConversationID -> what happened
        self.received: list[tuple[str, dict]] = []  # (path, body) of every API call
        self.callbacks: list[tuple[str, dict, int]] = []  # (url, payload, our HTTP status)
        self._threads: list[threading.Thread] = []
        self._busy = 0  # requests being answered
        self.float_accounts = FLOAT_ACCOUNTS
        self.balance_outcome = "success"  # "failure": M-Pesa answers with an error result; "silent": no answer
        super().__init__()

    # -------------------------------------------------------------- plumbing
    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        if url.path == "/oauth/v1/generate" and method == "GET":
            return self._oauth(request, parse_qs(url.query))
        routes = {"/mpesa/stkpush/v1/processrequest": self._stk_push,
                  "/mpesa/stkpushquery/v1/query": self._stk_query,
                  "/mpesa/b2c/v3/paymentrequest": self._b2c,
                  "/mpesa/transactionstatus/v1/query": self._status,
                  "/mpesa/accountbalance/v1/query": self._balance,
                  "/mpesa/b2b/v1/paymentrequest": self._b2b}
        route = routes.get(url.path)
        if route is None or method != "POST":
            self.violation(f"{method} {url.path}: no such Daraja API")
            return self.reply(request, 404, _error("404.003.01", "Resource not found"))
        if not self._bearer_ok(request):
            return self.reply(request, 401, _error("400.003.01", "Invalid Access Token"))
        if "application/json" not in (request.headers.get("Content-Type") or ""):
            self.violation(f"{url.path}: Content-Type is not application/json")
        try:
            body = self.body(request)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.violation(f"{url.path}: the body is not a JSON object")
            return self.reply(request, 400, _error("400.002.05", "Invalid Request Payload"))
        with self.lock:
            self.received.append((url.path, body))
            self._busy += 1  # until its callbacks are scheduled (wait_callbacks waits for them)
        try:
            route(request, body)
        finally:
            with self.lock:
                self._busy -= 1

    def _oauth(self, request: BaseHTTPRequestHandler, query: dict) -> None:
        if query.get("grant_type") != ["client_credentials"]:
            self.violation("oauth: grant_type is not client_credentials")
            return self.reply(request, 400, _error("400.008.02", "Invalid grant type passed"))
        expected = "Basic " + base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.violation("oauth: Authorization is not Basic base64(consumer key:consumer secret)")
            return self.reply(request, 400, _error("400.008.01", "Invalid authentication type passed"))
        with self.lock:
            self._token = secrets.token_urlsafe(21)  # a new token invalidates the previous one
            self._token_expires = time.monotonic() + self.token_lifetime_s
            self.tokens_issued += 1
            token = self._token
        self.reply(request, 200, {"access_token": token, "expires_in": self.token_lifetime_s})

    def _bearer_ok(self, request: BaseHTTPRequestHandler) -> bool:
        header = request.headers.get("Authorization") or ""
        if not header.startswith("Bearer "):
            self.violation("an API call without 'Authorization: Bearer <token>'")
            return False
        with self.lock:
            ok = header[7:] == self._token and time.monotonic() < self._token_expires
            if not ok:
                self.token_rejections += 1
        return ok

    def invalidate_token(self) -> None:
        """As if someone else had fetched a new token."""
        with self.lock:
            self._token = None

    # -------------------------------------------------------------- field checks
    def _fields(self, api: str, body: dict, spec: dict[str, bool]) -> None:
        for name in body:
            if name not in spec:
                self.violation(f"{api}: field {name!r} is not in the docs")
        for name, required in spec.items():
            if required and name not in body:
                self.violation(f"{api}: required field {name!r} missing")

    def _amount(self, api: str, value: Any, bounds: tuple[int, int]) -> int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            self.violation(f"{api}: Amount {value!r} is not a whole number")
            return 0
        kes = int(value)
        if not bounds[0] <= kes <= bounds[1]:
            self.violation(f"{api}: Amount {kes} outside M-Pesa's bounds {bounds}")
        return kes

    def _numeric(self, api: str, name: str, value: Any, pattern: str) -> str:
        text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if not re.fullmatch(pattern, text):
            self.violation(f"{api}: {name}={value!r} does not match {pattern}")
        return text

    def _url(self, api: str, name: str, value: Any) -> str:
        if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+/\S*$", value):
            self.violation(f"{api}: {name}={value!r} is not a URL")
            return ""
        return value

    def _text(self, api: str, name: str, value: Any, low: int, high: int) -> None:
        if not isinstance(value, str) or not low <= len(value) <= high:
            self.violation(f"{api}: {name}={value!r} must be text of {low}-{high} characters")

    def _password(self, api: str, body: dict) -> None:
        stamp = str(body.get("Timestamp", ""))
        try:
            when = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=EAT)
        except ValueError:
            self.violation(f"{api}: Timestamp {stamp!r} is not YYYYMMDDHHmmss")
            return
        if abs((dt.datetime.now(EAT) - when).total_seconds()) > 600:
            self.violation(f"{api}: Timestamp {stamp} is not now in East Africa Time")
        if str(body.get("BusinessShortCode")) != SHORTCODE:
            self.violation(f"{api}: BusinessShortCode {body.get('BusinessShortCode')!r} is not ours")
        expected = base64.b64encode(f"{SHORTCODE}{PASSKEY}{stamp}".encode()).decode()
        if body.get("Password") != expected:
            self.violation(f"{api}: Password is not base64(shortcode + passkey + timestamp)")

    # -------------------------------------------------------------- M-Pesa Express
    def _stk_push(self, request: BaseHTTPRequestHandler, body: dict) -> None:
        api = "stkpush"
        self._fields(api, body, STK_FIELDS)
        self._password(api, body)
        kind = body.get("TransactionType")
        if kind not in ("CustomerPayBillOnline", "CustomerBuyGoodsOnline"):
            self.violation(f"{api}: TransactionType {kind!r}")
        if kind == "CustomerPayBillOnline" and str(body.get("PartyB")) != SHORTCODE:
            self.violation(f"{api}: PartyB of a pay bill push must be the shortcode")
        kes = self._amount(api, body.get("Amount"), STK_BOUNDS)
        phone = self._numeric(api, "PartyA", body.get("PartyA"), _MSISDN.pattern)
        if str(body.get("PhoneNumber")) != phone:
            self.violation(f"{api}: PhoneNumber differs from PartyA")
        url = self._url(api, "CallBackURL", body.get("CallBackURL"))
        self._text(api, "AccountReference", body.get("AccountReference"), 1, 12)
        if "TransactionDesc" in body:
            self._text(api, "TransactionDesc", body.get("TransactionDesc"), 1, 13)
        outcome = outcome_of(kes)
        if outcome == "refused":
            return self.reply(request, 400, _error("400.002.02", "Bad Request - Invalid Amount"))
        n = next(_counter)
        merchant, checkout = f"{n}-4b64-97ff-b827b542881d{n:04d}", f"ws_CO_{dt.datetime.now(EAT):%d%m%Y%H%M%S}{n:06d}"
        paid = outcome not in ("cancelled", "undecided")
        record = {"merchant": merchant, "checkout": checkout, "kes": kes, "phone": phone, "url": url,
                  "outcome": outcome, "result": None if outcome == "undecided" else ("0" if paid else "1032"),
                  "receipt": receipt() if paid else None}
        with self.lock:
            self.stk[checkout] = record
        self._hold(outcome)
        self.reply(request, 200, {"MerchantRequestID": merchant, "CheckoutRequestID": checkout, "ResponseCode": "0",
                                  "ResponseDescription": "Success. Request accepted for processing",
                                  "CustomerMessage": "Success. Request accepted for processing"})
        if outcome not in ("never", "undecided") and url:
            self._call_back(url, self.stk_callback(record), outcome)

    @staticmethod
    def stk_callback(record: dict) -> dict:
        callback: dict[str, Any] = {"MerchantRequestID": record["merchant"], "CheckoutRequestID": record["checkout"]}
        if record["result"] == "0":
            callback.update({"ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
                             "CallbackMetadata": {"Item": [
                                 {"Name": "Amount", "Value": float(record["kes"])},
                                 {"Name": "MpesaReceiptNumber", "Value": record["receipt"]},
                                 {"Name": "TransactionDate", "Value": int(f"{dt.datetime.now(EAT):%Y%m%d%H%M%S}")},
                                 {"Name": "PhoneNumber", "Value": int(record["phone"])},
                             ]}})
        else:
            callback.update({"ResultCode": 1032, "ResultDesc": "Request cancelled by user"})
        return {"Body": {"stkCallback": callback}}

    def _stk_query(self, request: BaseHTTPRequestHandler, body: dict) -> None:
        api = "stkpushquery"
        self._fields(api, body, STK_QUERY_FIELDS)
        self._password(api, body)
        with self.lock:
            record = self.stk.get(str(body.get("CheckoutRequestID")))
        if record is None:
            return self.reply(request, 400, _error("400.002.02", "Bad Request - Invalid CheckoutRequestID"))
        if record["result"] is None:
            return self.reply(request, 500, _error("500.001.1001", "The transaction is being processed"))
        paid = record["result"] == "0"
        self.reply(request, 200, {
            "ResponseCode": "0", "ResponseDescription": "The service request has been accepted successsfully",
            "MerchantRequestID": record["merchant"], "CheckoutRequestID": record["checkout"],
            "ResultCode": record["result"],
            "ResultDesc": "The service request is processed successfully." if paid else "Request cancelled by user",
        })

    # -------------------------------------------------------------- B2C and Transaction Status
    def _b2c(self, request: BaseHTTPRequestHandler, body: dict) -> None:
        api = "b2c"
        self._fields(api, body, B2C_FIELDS)
        if body.get("InitiatorName") != INITIATOR or body.get("SecurityCredential") != SECURITY_CREDENTIAL:
            self.violation(f"{api}: InitiatorName or SecurityCredential is not ours")
        if body.get("CommandID") not in ("BusinessPayment", "SalaryPayment", "PromotionPayment"):
            self.violation(f"{api}: CommandID {body.get('CommandID')!r}")
        if str(body.get("PartyA")) != B2C_SHORTCODE:
            self.violation(f"{api}: PartyA {body.get('PartyA')!r} is not our B2C shortcode")
        kes = self._amount(api, body.get("Amount"), B2C_BOUNDS)
        phone = self._numeric(api, "PartyB", body.get("PartyB"), _MSISDN.pattern)
        self._text(api, "Remarks", body.get("Remarks"), 2, 100)
        if "Occassion" in body:
            self._text(api, "Occassion", body.get("Occassion"), 1, 100)
        result_url = self._url(api, "ResultURL", body.get("ResultURL"))
        timeout_url = self._url(api, "QueueTimeOutURL", body.get("QueueTimeOutURL"))
        originator = body.get("OriginatorConversationID")
        if not isinstance(originator, str) or not originator:
            self.violation(f"{api}: OriginatorConversationID {originator!r}")
            originator = ""
        outcome = outcome_of(kes)
        if outcome == "refused":
            return self.reply(request, 400, _error("400.002.02", "Bad Request - Invalid Amount"))
        with self.lock:
            if originator in self.b2c:  # the docs: unique per request, to avoid double disbursement
                return self.reply(request, 500, _error("500.002.1001", "Duplicate OriginatorConversationID."))
            record = {"originator": originator, "conversation": f"AG_{dt.date.today():%Y%m%d}_{secrets.token_hex(10)}",
                      "kes": kes, "phone": phone, "outcome": outcome, "receipt": receipt(),
                      "status": {"cancelled": "Declined", "undecided": "Authorized"}.get(outcome, "Completed")}
            self.b2c[originator] = record
        self._hold(outcome)
        self.reply(request, 200, {"ConversationID": record["conversation"], "OriginatorConversationID": originator,
                                  "ResponseCode": "0",
                                  "ResponseDescription": "Accept the service request successfully."})
        if outcome == "timeout" and timeout_url:
            self._call_back(timeout_url, self.b2c_timeout(record), outcome)
        elif outcome not in ("never", "undecided", "timeout") and result_url:
            self._call_back(result_url, self.b2c_result(record), outcome)

    # -------------------------------------------------------------- B2B (tills and paybills)
    def _b2b(self, request: BaseHTTPRequestHandler, body: dict) -> None:
        api = "b2b"
        self._fields(api, body, B2B_FIELDS)
        if body.get("Initiator") != INITIATOR or body.get("SecurityCredential") != SECURITY_CREDENTIAL:
            self.violation(f"{api}: Initiator or SecurityCredential is not ours")
        if body.get("CommandID") not in ("BusinessBuyGoods", "BusinessPayBill"):
            self.violation(f"{api}: CommandID {body.get('CommandID')!r}")
        if str(body.get("SenderIdentifierType")) != "4" or str(body.get("RecieverIdentifierType")) != "4":
            self.violation(f"{api}: SenderIdentifierType / RecieverIdentifierType must be 4")
        if str(body.get("PartyA")) != B2C_SHORTCODE:
            self.violation(f"{api}: PartyA {body.get('PartyA')!r} is not our shortcode")
        kes = self._amount(api, body.get("Amount"), B2C_BOUNDS)
        party_b = self._numeric(api, "PartyB", body.get("PartyB"), r"^\d{5,7}$")
        self._text(api, "AccountReference", body.get("AccountReference"), 1, 13)
        if "Requester" in body:
            self._numeric(api, "Requester", body.get("Requester"), _MSISDN.pattern)
        self._text(api, "Remarks", body.get("Remarks"), 1, 100)
        result_url = self._url(api, "ResultURL", body.get("ResultURL"))
        timeout_url = self._url(api, "QueueTimeOutURL", body.get("QueueTimeOutURL"))
        outcome = outcome_of(kes)
        if outcome == "refused":
            return self.reply(request, 400, _error("400.002.02", "Bad Request - Invalid Amount"))
        originator = f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{next(_counter)}"  # Daraja assigns it
        with self.lock:
            record = {"originator": originator, "conversation": f"AG_{dt.date.today():%Y%m%d}_{secrets.token_hex(10)}",
                      "kes": kes, "phone": party_b, "outcome": outcome, "receipt": receipt(),
                      "account": body.get("AccountReference"), "command": body.get("CommandID"),
                      "status": {"cancelled": "Declined", "undecided": "Authorized"}.get(outcome, "Completed")}
            self.b2c[originator] = record  # the Transaction Status query finds it by this id
        self._hold(outcome)
        self.reply(request, 200, {"OriginatorConversationID": originator, "ConversationID": record["conversation"],
                                  "ResponseCode": "0",
                                  "ResponseDescription": "Accept the service request successfully."})
        if outcome == "timeout" and timeout_url:
            self._call_back(timeout_url, self.b2c_timeout(record), outcome)
        elif outcome not in ("never", "undecided", "timeout") and result_url:
            self._call_back(result_url, self.b2b_result(record), outcome)

    @staticmethod
    def b2b_result(record: dict) -> dict:
        result: dict[str, Any] = {"ResultType": "0", "OriginatorConversationID": record["originator"],
                                  "ConversationID": record["conversation"], "TransactionID": record["receipt"]}
        if record["status"] == "Declined":
            result.update({"ResultCode": "2001", "ResultDesc": "The initiator information is invalid."})
            return {"Result": result}
        result.update({"ResultCode": "0", "ResultDesc": "The service request is processed successfully",
                       "ResultParameters": {"ResultParameter": [
                           {"Key": "DebitAccountBalance",
                            "Value": "{Amount={CurrencyCode=KES, MinimumAmount=618683, BasicAmount=6186.83}}"},
                           {"Key": "Amount", "Value": f"{record['kes']}.00"},
                           {"Key": "TransCompletedTime", "Value": f"{dt.datetime.now(EAT):%Y%m%d%H%M%S}"},
                           {"Key": "DebitPartyCharges", "Value": ""},
                           {"Key": "ReceiverPartyPublicName", "Value": f"{record['phone']} - {BUSINESS_NAME}"},
                           {"Key": "Currency", "Value": "KES"},
                       ]}})
        return {"Result": result}

    @staticmethod
    def b2c_result(record: dict) -> dict:
        result: dict[str, Any] = {"ResultType": 0, "OriginatorConversationID": record["originator"],
                                  "ConversationID": record["conversation"], "TransactionID": record["receipt"],
                                  "ReferenceData": {"ReferenceItem": {
                                      "Key": "QueueTimeoutURL",
                                      "Value": "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit"}}}
        if record["status"] == "Declined":
            result.update({"ResultCode": 2001, "ResultDesc": "The initiator information is invalid."})
            return {"Result": result}
        result.update({"ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
                       "ResultParameters": {"ResultParameter": [
                           {"Key": "TransactionAmount", "Value": record["kes"]},
                           {"Key": "TransactionReceipt", "Value": record["receipt"]},
                           {"Key": "ReceiverPartyPublicName", "Value": f"{record['phone']} - JOHN DOE"},
                           {"Key": "TransactionCompletedDateTime",
                            "Value": f"{dt.datetime.now(EAT):%d.%m.%Y %H:%M:%S}"},
                           {"Key": "B2CUtilityAccountAvailableFunds", "Value": 8959269.60},
                           {"Key": "B2CWorkingAccountAvailableFunds", "Value": 1199371.00},
                           {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                           {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": -1980.00},
                       ]}})
        return {"Result": result}

    @staticmethod
    def b2c_timeout(record: dict) -> dict:
        # The docs do not show this body; modelled on the result, without ResultParameters.
        return {"Result": {"ResultType": 1, "ResultCode": 1, "ResultDesc": "The request timed out in the queue",
                           "OriginatorConversationID": record["originator"], "ConversationID": record["conversation"]}}

    def _status(self, request: BaseHTTPRequestHandler, body: dict) -> None:
        api = "transactionstatus"
        self._fields(api, body, STATUS_FIELDS)
        if body.get("Initiator") != INITIATOR or body.get("SecurityCredential") != SECURITY_CREDENTIAL:
            self.violation(f"{api}: Initiator or SecurityCredential is not ours")
        if body.get("CommandID") != "TransactionStatusQuery":
            self.violation(f"{api}: CommandID {body.get('CommandID')!r}")
        if str(body.get("PartyA")) != B2C_SHORTCODE or str(body.get("IdentifierType")) != "4":
            self.violation(f"{api}: PartyA/IdentifierType are not our shortcode / 4")
        if not body.get("TransactionID") and not body.get("OriginalConversationID"):
            self.violation(f"{api}: neither TransactionID nor OriginalConversationID")
        self._text(api, "Remarks", body.get("Remarks"), 1, 100)
        result_url = self._url(api, "ResultURL", body.get("ResultURL"))
        self._url(api, "QueueTimeOutURL", body.get("QueueTimeOutURL"))
        with self.lock:
            record = self.b2c.get(str(body.get("OriginalConversationID")))
        query_ids = {"OriginatorConversationID": f"{next(_counter)}-416199-2",
                     "ConversationID": f"AG_{dt.date.today():%Y%m%d}_{secrets.token_hex(10)}"}
        self.reply(request, 200, {**query_ids, "ResponseCode": "0",
                                  "ResponseDescription": "Accept the service request successfully."})
        if result_url:
            self._call_back(result_url, self.status_result(record, query_ids), "success")

    @staticmethod
    def status_result(record: dict | None, query_ids: dict) -> dict:
        if record is None:
            return {"Result": {**query_ids, "ResultType": 0, "ResultCode": "SFC_IC0003",
                               "ResultDesc": "The operator does not exist.", "TransactionID": "MBN0000000"}}
        params = [
            {"Key": "DebitPartyName", "Value": f"{B2C_SHORTCODE} - SatsPesa"},
            {"Key": "CreditPartyName", "Value": f"{record['phone']} - John Doe"},
            {"Key": "OriginatorConversationID", "Value": record["originator"]},
            {"Key": "InitiatedTime", "Value": f"{dt.datetime.now(EAT):%Y%m%d%H%M%S}"},
            {"Key": "DebitAccountType", "Value": "Utility Account"},
            {"Key": "DebitPartyCharges", "Value": "Fee For B2C Payment|KES|22.40"},
            {"Key": "TransactionReason"},
            {"Key": "ReasonType", "Value": "Business Payment to Customer via API"},
            {"Key": "TransactionStatus", "Value": record["status"]},
            {"Key": "FinalisedTime", "Value": f"{dt.datetime.now(EAT):%Y%m%d%H%M%S}"},
            {"Key": "Amount", "Value": str(record["kes"])},
            {"Key": "ConversationID", "Value": record["conversation"]},
            {"Key": "ReceiptNo", "Value": record["receipt"]},
        ]
        return {"Result": {**query_ids, "ReferenceData": {"ReferenceItem": {"Key": "Occasion"}}, "ResultCode": 0,
                           "ResultDesc": "The service request is processed successfully.",
                           "ResultParameters": {"ResultParameter": params}, "ResultType": 0,
                           "TransactionID": record["receipt"]}}

    # -------------------------------------------------------------- Account Balance
    def _balance(self, request: BaseHTTPRequestHandler, body: dict) -> None:
        api = "accountbalance"
        self._fields(api, body, BALANCE_FIELDS)
        if body.get("Initiator") != INITIATOR or body.get("SecurityCredential") != SECURITY_CREDENTIAL:
            self.violation(f"{api}: Initiator or SecurityCredential is not ours")
        if body.get("CommandID") != "AccountBalance":
            self.violation(f"{api}: CommandID {body.get('CommandID')!r}")
        if str(body.get("PartyA")) != B2C_SHORTCODE or str(body.get("IdentifierType")) != "4":
            self.violation(f"{api}: PartyA/IdentifierType are not our shortcode / 4")
        self._text(api, "Remarks", body.get("Remarks"), 1, 100)
        result_url = self._url(api, "ResultURL", body.get("ResultURL"))
        self._url(api, "QueueTimeOutURL", body.get("QueueTimeOutURL"))
        ids = {"OriginatorConversationID": f"{next(_counter)}-5258779-3",
               "ConversationID": f"AG_{dt.date.today():%Y%m%d}_{secrets.token_hex(10)}"}
        self.reply(request, 200, {**ids, "ResponseCode": "0",
                                  "ResponseDescription": "Accept the service request successfully"})
        if not result_url or self.balance_outcome == "silent":
            return
        if self.balance_outcome == "failure":
            result = {**ids, "ResultType": "0", "ResultCode": "21",
                      "ResultDesc": "Initiator to Primary Party Permission Failure"}
        else:
            params = [{"Key": "AccountBalance", "Value": self.float_accounts},
                      {"Key": "BOCompletedTime", "Value": f"{dt.datetime.now(EAT):%Y%m%d%H%M%S}"}]
            result = {**ids, "ResultType": "0", "ResultCode": "0",
                      "ResultDesc": "The service request is processed successfully",
                      "TransactionID": receipt(), "ResultParameters": {"ResultParameter": params}}
        self._call_back(result_url, {"Result": result}, "success")

    # -------------------------------------------------------------- calling back
    def _hold(self, outcome: str) -> None:
        """A slow answer: sleep before answering."""
        if outcome == "slow":
            time.sleep(self.slow_s)

    def _call_back(self, url: str, payload: dict, outcome: str) -> None:
        delay = self.delay_s if outcome == "delayed" else 0.05
        times = 3 if outcome == "duplicated" else 1
        thread = threading.Thread(target=self._post, args=(url, payload, delay, times), daemon=True)
        thread.start()
        with self.lock:
            self._threads.append(thread)

    def _post(self, url: str, payload: dict, delay: float, times: int) -> None:
        time.sleep(delay)
        for _ in range(times):
            self.send(url, payload)

    def send(self, url: str, payload: Any) -> int:
        """POST a callback now (tests use it to send forged or altered ones too)."""
        try:
            status = requests.post(url, json=payload, timeout=15).status_code
        except requests.RequestException:
            status = 0
        with self.lock:
            self.callbacks.append((url, payload, status))
        return status

    def wait_callbacks(self, timeout_s: float = 20) -> None:
        """Until every callback started so far has been delivered."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                threads, busy = list(self._threads), self._busy
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            with self.lock:
                if len(self._threads) == len(threads) and busy == 0 and self._busy == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("callbacks still in flight")
            time.sleep(0.05)

    def last(self, path_end: str) -> dict:
        """The last body received on the API whose path ends with `path_end`."""
        with self.lock:
            return next(body for path, body in reversed(self.received) if path.endswith(path_end))


def _error(code: str, message: str) -> dict:
    return {"requestId": f"{next(_counter)}-19833054-1", "errorCode": code, "errorMessage": message}


if __name__ == "__main__":  # pragma: no cover - a manual tool
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callback-base", default="http://127.0.0.1:5000", help="where the app listens")
    args = parser.parse_args()
    fake = FakeDaraja()
    print(f"fake Daraja at {fake.url}; run the app with:")
    for key, value in app_settings(fake.url, args.callback_base).items():
        print(f"export {key}={json.dumps(value)}")
    try:
        while True:
            time.sleep(5)
            if fake.violations:
                print("VIOLATIONS:", *fake.violations, sep="\n  ")
                fake.violations.clear()
    except KeyboardInterrupt:
        fake.stop()
