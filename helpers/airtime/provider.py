"""Airtime providers behind one interface.

- `simulated` (the embedded default, without Africa's Talking credentials): airtime is delivered
  at once with a made-up request id.
- `africastalking`: Africa's Talking's Airtime API. `POST /version1/airtime/send` (through the
  `africastalking` SDK) answers at once whether AT accepted the request ("Sent", with a requestId)
  or refused it ("Failed", or an errorMessage and nothing sent); the telco's final word comes
  later to the status callback URL set in AT's dashboard (phoneNumber, description, status
  Success|Failed, requestId, discount, value), or to `GET /query/transaction/find` when asked.
  Each send carries our reference as its `Idempotency-Key`, so AT ignores a duplicate of it.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from helpers.infra.phone import mask
from helpers.infra.refs import new_reference
from helpers.infra.settings import Settings
from lightning import State

log = logging.getLogger(__name__)

SEND_PATH = "/version1/airtime/send"
FIND_PATH = "/query/transaction/find"
_AMOUNT = re.compile(r"^([A-Z]{3}) ([0-9]+(?:\.[0-9]+)?)$")  # "KES 100.0000", as AT writes amounts
_E164 = re.compile(r"\+[0-9]{7,15}")


class AirtimeConfigError(RuntimeError):
    """The provider is misconfigured; the message names the setting."""


@dataclass(frozen=True)
class AirtimeResult:
    state: State  # SUCCEEDED (delivered), FAILED (nothing was sent) or PENDING (not known yet)
    request_id: str = ""  # AT's requestId, when AT gave one
    error: str = ""


def kes_of(amount: str) -> Decimal | None:
    """The KES in an amount as AT writes it ("KES 100.0000"), or None."""
    found = _AMOUNT.match((amount or "").strip())
    if found is None or found.group(1) != "KES":
        return None
    try:
        return Decimal(found.group(2))
    except InvalidOperation:
        return None


class AirtimeProvider(ABC):
    name = "abstract"
    results_async = False  # True: a send may stay pending until a callback or a status query

    @abstractmethod
    def send(self, phone: str, kes: int, reference: str) -> AirtimeResult:
        """Ask for `kes` of airtime for `phone` (E.164); `reference` makes a repeat harmless."""

    def query(self, request_id: str) -> State:
        """What became of an accepted request: SUCCEEDED, FAILED or PENDING (unknown)."""
        return State.PENDING


class SimulatedAirtime(AirtimeProvider):
    """Airtime delivered at once (the embedded default and the tests without a fake AT)."""

    name = "simulated"

    def send(self, phone: str, kes: int, reference: str) -> AirtimeResult:
        log.info("simulated airtime: KES %s to %s (%s)", kes, mask(phone), reference)
        return AirtimeResult(State.SUCCEEDED, request_id="SIM" + new_reference())


class AfricasTalkingAirtime(AirtimeProvider):
    name = "africastalking"
    results_async = True

    def __init__(self, username: str, api_key: str, base_url: str = "", timeout_s: float = 10.0) -> None:
        self.username, self.api_key, self.timeout_s = username, api_key, timeout_s
        self.base_url = base_url.rstrip("/")  # a test server instead of Africa's Talking

    def _service(self) -> Any:
        import africastalking  # imported here: only deployments with AT credentials need it

        # One service per send: the SDK keeps the Idempotency-Key in the service's own headers.
        service = africastalking.AirtimeService(self.username, self.api_key)
        if self.base_url:
            service._baseUrl = self.base_url + "/version1/airtime"
        return service

    def _api(self) -> str:
        if self.base_url:
            return self.base_url
        return "https://api.sandbox.africastalking.com" if self.username == "sandbox" else "https://api.africastalking.com"

    def send(self, phone: str, kes: int, reference: str) -> AirtimeResult:
        if not _E164.fullmatch(phone) or kes <= 0:  # what the SDK would refuse, refused before any request
            return AirtimeResult(State.FAILED, error="not a phone number or amount the API takes")
        try:
            response = self._service().send(phone_number=phone, amount=kes, currency_code="KES",
                                            idempotency_key=reference, timeout=(3.05, self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - the SDK raises bare Exceptions, also after sending:
            # an HTTP error, a timeout or an answer it could not read may all follow a send AT took
            log.warning("airtime %s: no usable answer (%s); left pending", reference, type(exc).__name__)
            return AirtimeResult(State.PENDING, error=f"{type(exc).__name__}: {str(exc)[:80]}")
        return self._read_send(reference, response)

    @staticmethod
    def _read_send(reference: str, response: Any) -> AirtimeResult:
        if isinstance(response, str):  # the SDK parses JSON only under exactly "application/json"
            try:
                response = json.loads(response)
            except ValueError:
                response = None
        if not isinstance(response, dict):
            return AirtimeResult(State.PENDING, error="no JSON answer")
        answers = response.get("responses") or []
        answer = answers[0] if answers and isinstance(answers[0], dict) else {}
        status, request_id = str(answer.get("status") or ""), str(answer.get("requestId") or "")
        if request_id == "None":  # how AT writes "no id" (a refused send)
            request_id = ""
        error = str(answer.get("errorMessage") or response.get("errorMessage") or "")
        if status == "Success":
            return AirtimeResult(State.SUCCEEDED, request_id=request_id)
        if status == "Failed" or (not answers and response.get("numSent") == 0):
            log.warning("africa's talking refused airtime %s: %s", reference, error)
            return AirtimeResult(State.FAILED, error=error[:120])  # nothing was sent: no id to keep
        if status in ("Sent", "Queued") and request_id:
            return AirtimeResult(State.PENDING, request_id=request_id)
        log.warning("airtime %s: unexpected answer %r; left pending", reference, status or error)
        return AirtimeResult(State.PENDING, request_id=request_id, error=(status or error)[:120])

    def query(self, request_id: str) -> State:
        try:
            reply = requests.get(self._api() + FIND_PATH, params={"username": self.username,
                                                                  "transactionId": request_id},
                                 headers={"apiKey": self.api_key, "Accept": "application/json"},
                                 timeout=(3.05, self.timeout_s))
            data = reply.json() if reply.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            log.warning("airtime status query %s failed: %s", request_id, type(exc).__name__)
            return State.PENDING
        if not isinstance(data, dict) or data.get("status") != "Success" or not isinstance(data.get("data"), dict):
            return State.PENDING
        status = data["data"].get("status")
        return {"Success": State.SUCCEEDED, "Failed": State.FAILED}.get(status, State.PENDING)


def create_airtime(settings: Settings) -> AirtimeProvider | None:
    """The provider AIRTIME_PROVIDER names; None when airtime is off."""
    kind = settings.airtime_provider
    if kind == "off":
        return None
    if kind == "simulated":
        return SimulatedAirtime()
    if kind == "africastalking":
        if not (settings.africastalking_username and settings.africastalking_api_key):
            raise AirtimeConfigError("AIRTIME_PROVIDER=africastalking needs AFRICASTALKING_USERNAME and "
                                     "AFRICASTALKING_API_KEY")
        return AfricasTalkingAirtime(settings.africastalking_username, settings.africastalking_api_key,
                                     settings.africastalking_airtime_url, settings.mpesa_timeout_s)
    raise AirtimeConfigError(f"AIRTIME_PROVIDER={kind!r}: use simulated, africastalking or off")
