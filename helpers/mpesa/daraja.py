"""Safaricom's Daraja API as an M-Pesa provider (request shapes from the Daraja docs).

- OAuth: `GET /oauth/v1/generate?grant_type=client_credentials` with HTTP Basic (consumer key and
  secret) gives a bearer token for `expires_in` seconds. It is cached until shortly before it
  expires; a new token invalidates the previous one, so a token the gateway calls invalid (another
  worker fetched a new one) is fetched again and the call retried once.
- Top-up: M-Pesa Express (STK push) `POST /mpesa/stkpush/v1/processrequest`, Password =
  base64(shortcode + passkey + timestamp); status by `POST /mpesa/stkpushquery/v1/query`.
- Paying a business: B2B `POST /mpesa/b2b/v1/paymentrequest`, CommandID BusinessBuyGoods (a
  till) or BusinessPayBill (a paybill, with its account reference); Daraja gives the request its
  OriginatorConversationID; the result comes by callback like B2C's.
- Float: Account Balance `POST /mpesa/accountbalance/v1/query` for the B2C shortcode; the answer
  comes by callback ("Name|KES|available|uncleared|reserved|..." per account, joined by "&").
- Withdrawal: B2C `POST /mpesa/b2c/v3/paymentrequest` with our OriginatorConversationID (unique
  per request, so M-Pesa refuses a duplicate instead of paying twice); status by Transaction
  Status `POST /mpesa/transactionstatus/v1/query`, whose answer comes by callback.

Callback URLs are `<MPESA_CALLBACK_BASE_URL>/mpesa/<MPESA_CALLBACK_TOKEN>/<kind>/.../<reference>`:
the secret token proves the caller got the URL from us, the reference names our request.
Nothing here touches the database.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import threading
import time
from typing import Any

import requests

from helpers.infra.http import request_json
from helpers.infra.phone import safaricom
from helpers.infra.text import is_digits
from helpers.mpesa.provider import MpesaConfigError, MpesaProvider, PayoutResult, PushResult, TopupQueryResult
from lightning import State
from helpers.infra.settings import Settings

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/v1/generate?grant_type=client_credentials"  # noqa: S105 - a URL path
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"
B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
BALANCE_PATH = "/mpesa/accountbalance/v1/query"
B2B_PATH = "/mpesa/b2b/v1/paymentrequest"

REQUIRED = ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY",
            "MPESA_INITIATOR_NAME", "MPESA_SECURITY_CREDENTIAL", "MPESA_BASE_URL", "MPESA_CALLBACK_BASE_URL",
            "MPESA_CALLBACK_TOKEN")
B2C_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
# East Africa Time, no daylight saving: the clock of Daraja's Timestamp fields.
EAT = dt.timezone(dt.timedelta(hours=3))
_PHONE = re.compile(r"^\+254(7|1)[0-9]{8}$")  # a Kenyan mobile number, as M-Pesa's 2547XXXXXXXX
_INVALID_TOKEN = "400.003.01"  # noqa: S105 - Daraja's error code for an invalid access token
_NOT_SENT = -1  # the request never left (no token): a definite "nothing happened"
# STK result codes the docs list as final failures (the push was refused, cancelled, expired or
# failed). A status query answering anything else non-zero is taken as "not known yet".
FINAL_STK_FAILURES = frozenset({"1", "2", "3", "4", "8", "17", "1019", "1025", "1032", "1037", "2001", "2028",
                                "8006", "SFC_IC0003"})


def originator_id(reference: str) -> str:
    """Our OriginatorConversationID for the B2C request with this reference."""
    return f"SatsPesa-{reference}"


def msisdn(e164: str) -> str:
    """+254712345678 -> 254712345678, the form Daraja takes."""
    return e164.lstrip("+")


def timestamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(EAT)).astimezone(EAT).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, stamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{stamp}".encode()).decode()


def _code(data: Any, key: str) -> str:
    return str(data.get(key, "")).strip() if isinstance(data, dict) else ""


def _rejected(status: int, data: Any) -> bool:
    """A definite refusal by the gateway or M-Pesa: nothing was accepted, so nothing can happen."""
    if status == _NOT_SENT:
        return True
    if status == 200:
        return isinstance(data, dict) and "ResponseCode" in data and _code(data, "ResponseCode") != "0"
    if 400 <= status < 500 and isinstance(data, dict) and data.get("errorCode"):
        # "Duplicate OriginatorConversationID": an earlier request with this id exists: not a refusal
        return "duplicate" not in str(data.get("errorMessage", "")).lower()
    return False


class DarajaMpesa(MpesaProvider):
    name = "daraja"
    topup_by_push = True
    payouts_async = True
    queries_balance = True

    def __init__(self, *, consumer_key: str, consumer_secret: str, shortcode: str, passkey: str,
                 initiator_name: str, security_credential: str, base_url: str, callback_base_url: str,
                 callback_token: str, b2c_shortcode: str = "", till_number: str = "",
                 b2c_command: str = "BusinessPayment", timeout_s: float = 10) -> None:
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.shortcode, self.passkey = shortcode, passkey
        self.b2c_shortcode = b2c_shortcode or shortcode
        self.till_number = till_number
        self.initiator_name, self.security_credential = initiator_name, security_credential
        self.base_url = base_url.rstrip("/")
        self.callback_base = callback_base_url.rstrip("/") + "/mpesa/" + callback_token
        self.b2c_command = b2c_command
        self.timeout_s = timeout_s
        self.http = requests.Session()
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    @classmethod
    def from_config(cls, settings: Settings) -> DarajaMpesa:
        """Raises MpesaConfigError naming the first missing or wrong setting."""
        named = settings.by_variable()  # checked by the names the operator sets
        if not named.get("MPESA_CALLBACK_BASE_URL"):
            named["MPESA_CALLBACK_BASE_URL"] = named.get("PUBLIC_URL", "")
        for name in REQUIRED:
            if not str(named.get(name) or "").strip():
                raise MpesaConfigError(f"MPESA_PROVIDER=daraja needs {name}")
        for name in ("MPESA_SHORTCODE", "MPESA_B2C_SHORTCODE", "MPESA_TILL_NUMBER"):
            value = str(named.get(name) or "")
            if value and not is_digits(value):
                raise MpesaConfigError(f"{name} must be digits, got {value!r}")
        for name in ("MPESA_BASE_URL", "MPESA_CALLBACK_BASE_URL"):
            if not str(named[name]).startswith(("https://", "http://")):
                raise MpesaConfigError(f"{name} must be an http(s) URL")
        token = str(named["MPESA_CALLBACK_TOKEN"])
        if len(token) < 16 or not token.replace("-", "").replace("_", "").isalnum():
            raise MpesaConfigError("MPESA_CALLBACK_TOKEN must be 16+ letters, digits, '-' or '_'")
        command = named.get("MPESA_B2C_COMMAND_ID") or "BusinessPayment"
        if command not in B2C_COMMANDS:
            raise MpesaConfigError(f"MPESA_B2C_COMMAND_ID must be one of {', '.join(B2C_COMMANDS)}")
        return cls(
            consumer_key=named["MPESA_CONSUMER_KEY"], consumer_secret=named["MPESA_CONSUMER_SECRET"],
            shortcode=str(named["MPESA_SHORTCODE"]), passkey=named["MPESA_PASSKEY"],
            initiator_name=named["MPESA_INITIATOR_NAME"],
            security_credential=named["MPESA_SECURITY_CREDENTIAL"], base_url=named["MPESA_BASE_URL"],
            callback_base_url=named["MPESA_CALLBACK_BASE_URL"], callback_token=token,
            b2c_shortcode=str(named.get("MPESA_B2C_SHORTCODE") or ""),
            till_number=str(named.get("MPESA_TILL_NUMBER") or ""), b2c_command=command,
            timeout_s=float(named.get("MPESA_TIMEOUT_S") or 10),
        )

    # -------------------------------------------------------------- plumbing
    def callback_url(self, *parts: str) -> str:
        return "/".join((self.callback_base, *parts))

    def _access_token(self) -> str | None:
        """The cached bearer token, or a new one; None when Daraja gives none."""
        with self._token_lock:  # one fetch at a time: each new token invalidates the last
            if self._token and time.monotonic() < self._token_expires:
                return self._token
            basic = base64.b64encode(f"{self.consumer_key}:{self.consumer_secret}".encode()).decode()
            status, data = request_json(self.http, "daraja", "GET", self.base_url + TOKEN_PATH,
                                        timeout=self.timeout_s, headers={"Authorization": f"Basic {basic}"})
            token = data.get("access_token") if isinstance(data, dict) else None
            if status != 200 or not isinstance(token, str) or not token:
                log.error("daraja refused an access token: HTTP %s %s", status, _code(data, "errorCode"))
                return None
            try:
                lifetime = int(str(data.get("expires_in", "3599")))
            except ValueError:
                lifetime = 3599
            self._token = token
            self._token_expires = time.monotonic() + lifetime - min(60, lifetime // 10)
            return token

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST with the bearer token; a token the gateway calls invalid is renewed once."""
        for attempt in (1, 2):
            token = self._access_token()
            if token is None:
                return _NOT_SENT, None
            status, data = request_json(self.http, "daraja", "POST", self.base_url + path, body,
                                        timeout=self.timeout_s, headers={"Authorization": f"Bearer {token}"})
            if attempt == 1 and (status == 401 or _code(data, "errorCode") == _INVALID_TOKEN):
                self._forget_token(token)
                continue
            return status, data
        raise AssertionError("unreachable")

    def _stk_auth(self) -> dict[str, str]:
        stamp = timestamp()
        return {"BusinessShortCode": self.shortcode, "Password": stk_password(self.shortcode, self.passkey, stamp),
                "Timestamp": stamp}

    # -------------------------------------------------------------- the interface
    def accepts_phone(self, phone: str) -> bool:
        return bool(_PHONE.match(phone)) and safaricom(phone)

    def confirm_topup(self, code: str, phone: str, kes: int) -> bool:
        return False  # a typed code proves nothing here: top-ups are pushed and confirmed by M-Pesa

    def push_topup(self, phone: str, kes: int, reference: str) -> PushResult:
        body = {
            **self._stk_auth(),
            "TransactionType": "CustomerBuyGoodsOnline" if self.till_number else "CustomerPayBillOnline",
            "Amount": int(kes),
            "PartyA": msisdn(phone),
            "PartyB": self.till_number or self.shortcode,
            "PhoneNumber": msisdn(phone),
            "CallBackURL": self.callback_url("stk", reference),
            "AccountReference": reference[:12],
            "TransactionDesc": "SatsPesa",
        }
        status, data = self._post(STK_PUSH_PATH, body)
        if status == 200 and _code(data, "ResponseCode") == "0" and _code(data, "CheckoutRequestID"):
            return PushResult(State.PENDING, _code(data, "CheckoutRequestID"), _code(data, "MerchantRequestID"))
        error = f"HTTP {status} {_code(data, 'errorCode') or _code(data, 'ResponseCode')}".strip()
        if _rejected(status, data):
            log.warning("daraja refused the STK push %s: %s", reference, error)
            return PushResult(State.FAILED, error=error)
        log.warning("daraja STK push %s: no usable answer (%s)", reference, error)
        return PushResult(State.PENDING, error=error)

    def query_topup(self, checkout_request_id: str) -> TopupQueryResult:
        status, data = self._post(STK_QUERY_PATH, {**self._stk_auth(), "CheckoutRequestID": checkout_request_id})
        answered = status == 200 and isinstance(data, dict) and "ResultCode" in data
        if not answered or _code(data, "ResponseCode") != "0":
            # e.g. "The transaction is being processed": the customer has not answered yet
            return TopupQueryResult(State.PENDING, description=str(_code(data, "errorMessage"))[:255])
        code, description = _code(data, "ResultCode"), _code(data, "ResultDesc")[:255]
        if code == "0":
            return TopupQueryResult(State.SUCCEEDED, code, description)
        if code in FINAL_STK_FAILURES:
            return TopupQueryResult(State.FAILED, code, description)
        return TopupQueryResult(State.PENDING, code, description)

    def payout(self, phone: str, kes: int, reference: str) -> PayoutResult:
        body = {
            "OriginatorConversationID": originator_id(reference),
            "InitiatorName": self.initiator_name,
            "SecurityCredential": self.security_credential,
            "CommandID": self.b2c_command,
            "Amount": int(kes),
            "PartyA": self.b2c_shortcode,
            "PartyB": msisdn(phone),
            "Remarks": f"SatsPesa withdrawal {reference}",
            "QueueTimeOutURL": self.callback_url("b2c", "timeout", reference),
            "ResultURL": self.callback_url("b2c", "result", reference),
            "Occassion": "SatsPesa",  # sic: Daraja's spelling
        }
        status, data = self._post(B2C_PATH, body)
        if status == 200 and _code(data, "ResponseCode") == "0":
            return PayoutResult(State.PENDING, conversation_id=_code(data, "ConversationID")[:64])
        error = f"HTTP {status} {_code(data, 'errorCode') or _code(data, 'ResponseCode')}".strip()
        if _rejected(status, data):
            log.warning("daraja refused the B2C payment %s: %s %s", reference, error,
                        _code(data, "errorMessage") or _code(data, "ResponseDescription"))
            return PayoutResult(State.FAILED, error=error)
        log.warning("daraja B2C payment %s: no usable answer (%s); left pending", reference, error)
        return PayoutResult(State.PENDING, error=error)

    def pay_business(self, command: str, party_b: str, account: str, kes: int, reference: str,
                     requester: str) -> PayoutResult:
        body = {
            "Initiator": self.initiator_name,
            "SecurityCredential": self.security_credential,
            "CommandID": command,
            "SenderIdentifierType": "4",
            "RecieverIdentifierType": "4",  # sic: Daraja's spelling
            "Amount": int(kes),
            "PartyA": self.b2c_shortcode,
            "PartyB": party_b,
            "AccountReference": (account or party_b)[:13],
            "Requester": msisdn(requester),
            "Remarks": f"SatsPesa payment {reference}",
            "QueueTimeOutURL": self.callback_url("b2b", "timeout", reference),
            "ResultURL": self.callback_url("b2b", "result", reference),
        }
        status, data = self._post(B2B_PATH, body)
        if status == 200 and _code(data, "ResponseCode") == "0":
            return PayoutResult(State.PENDING, conversation_id=_code(data, "ConversationID")[:64],
                                originator_id=_code(data, "OriginatorConversationID")[:64])
        error = f"HTTP {status} {_code(data, 'errorCode') or _code(data, 'ResponseCode')}".strip()
        if _rejected(status, data):
            log.warning("daraja refused the B2B payment %s: %s", reference, error)
            return PayoutResult(State.FAILED, error=error)
        log.warning("daraja B2B payment %s: no usable answer (%s); left pending", reference, error)
        return PayoutResult(State.PENDING, error=error)

    def query_payout(self, reference: str, original: str | None = None) -> bool:
        body = {
            "Initiator": self.initiator_name,
            "SecurityCredential": self.security_credential,
            "CommandID": "TransactionStatusQuery",
            "OriginalConversationID": original or originator_id(reference),
            "PartyA": self.b2c_shortcode,
            "IdentifierType": "4",
            "ResultURL": self.callback_url("status", "result", reference),
            "QueueTimeOutURL": self.callback_url("status", "timeout", reference),
            "Remarks": "SatsPesa status",
            "Occasion": "SatsPesa",
        }
        status, data = self._post(STATUS_PATH, body)
        accepted = status == 200 and _code(data, "ResponseCode") == "0"
        if not accepted:
            log.warning("daraja status query for %s not accepted: HTTP %s %s", reference, status,
                        _code(data, "errorCode") or _code(data, "ResponseCode"))
        return accepted

    def query_balance(self, reference: str) -> bool:
        body = {
            "Initiator": self.initiator_name,
            "SecurityCredential": self.security_credential,
            "CommandID": "AccountBalance",
            "PartyA": self.b2c_shortcode,
            "IdentifierType": "4",  # an organisation's shortcode
            "Remarks": "SatsPesa float",
            "QueueTimeOutURL": self.callback_url("balance", "timeout", reference),
            "ResultURL": self.callback_url("balance", "result", reference),
        }
        status, data = self._post(BALANCE_PATH, body)
        accepted = status == 200 and _code(data, "ResponseCode") == "0"
        if not accepted:
            log.warning("daraja account balance query %s not accepted: HTTP %s %s", reference, status,
                        _code(data, "errorCode") or _code(data, "ResponseCode"))
        return accepted
