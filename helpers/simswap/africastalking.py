"""Africa's Talking Insights: a phone's SIM swap state (specs/africastalking/Insights-SimSwap.md).

`POST <insights>/v1/sim-swap` (the SDK's InsightService.check_sim_swap_state) with `username` and
`phoneNumbers` queues the check: `{"status": "Queued", "requestId", "transactionId"}`. The result
comes to the callback URL set in AT's dashboard (`<PUBLIC_URL>/insights/<SIM_SWAP_CALLBACK_TOKEN>/
sim-swap`), one per number: status Swapped | NotSwapped, lastSimSwapDate ("01-01-1900": none
known), phoneNumber, requestId, transactionId. Some descriptions show the same fields under
`data.phoneNumbers[]`, also as the immediate answer: both shapes are read. Any other status is no
answer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from helpers.infra.phone import mask
from helpers.simswap.provider import Asked, Reported, SimSwapProvider

log = logging.getLogger(__name__)

_E164 = re.compile(r"\+[0-9]{7,15}")
# lastSimSwapDate as the spec shows it ("01-01-1900"): two digits, two digits, four digits. Nothing
# else is guessed at: another form is unusable (a Swapped answer then counts as a swap now, a
# NotSwapped one as no answer).
_DATE = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{4})")
_NO_SWAP_BEFORE = 2000  # "01-01-1900" is how AT says it knows of no swap


def swap_date(text: Any) -> tuple[bool, dt.datetime | None]:
    """(readable, the date) of a lastSimSwapDate: (True, None) for AT's "none known" date. The spec
    names no day/month order: when both readings are dates and differ, the later one is taken
    (the cautious reading: a more recent swap)."""
    match = _DATE.fullmatch(str(text or "").strip())
    if match is None:
        return False, None
    first, second, year = (int(part) for part in match.groups())
    readings = []
    for day, month in ((first, second), (second, first)):
        try:
            readings.append(dt.datetime(year, month, day))
        except ValueError:
            continue
    if not readings:
        return False, None
    when = max(readings)
    return True, (None if when.year < _NO_SWAP_BEFORE else when)


def e164(text: Any) -> str | None:
    """A phoneNumber as E.164 ("+" added to bare international digits), or None."""
    raw = re.sub(r"[ \-]", "", str(text or ""))
    if raw.isdigit():
        raw = "+" + raw
    return raw if _E164.fullmatch(raw) else None


def read_results(body: Any) -> list[Reported]:
    """Every Swapped/NotSwapped answer in a body of either shape; anything else is left out. A
    Swapped answer whose date is unusable (unreadable, or AT's "none known") counts as a swap now
    (the cautious reading); a NotSwapped one with an unreadable date is no answer."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        items = body["data"].get("phoneNumbers")
        outer_id = str(body.get("requestId") or body["data"].get("requestId") or "")
    else:
        items, outer_id = [body], ""
    found: list[Reported] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("status") not in ("Swapped", "NotSwapped"):
            continue
        phone = e164(item.get("phoneNumber"))
        if phone is None:
            continue
        readable, when = swap_date(item.get("lastSimSwapDate"))
        swapped = item["status"] == "Swapped"
        if swapped and when is None:
            log.warning("sim swap of %s: no usable lastSimSwapDate, taken as now", mask(phone))
            when = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        elif not swapped and not readable:
            log.warning("sim swap answer for %s: unreadable lastSimSwapDate, taken as no answer", mask(phone))
            continue
        found.append(Reported(phone, swapped, when, str(item.get("requestId") or outer_id)[:64]))
    return found


class AfricasTalkingSimSwap(SimSwapProvider):
    name = "africastalking"
    asks_ahead = True

    def __init__(self, username: str, api_key: str, base_url: str = "", timeout_s: float = 10.0) -> None:
        self.username, self.api_key, self.timeout_s = username, api_key, timeout_s
        self.base_url = base_url.rstrip("/")  # a test server instead of Africa's Talking

    def _service(self) -> Any:
        import africastalking  # imported here: only deployments with AT credentials need it

        service = africastalking.InsightService(self.username, self.api_key)
        if self.base_url:
            service._baseUrl = self.base_url + "/v1"
        return service

    def ask(self, phone: str) -> Asked:
        if not _E164.fullmatch(phone):  # what the SDK would refuse, refused before any request
            return Asked(error="not an E.164 number")
        try:
            answer = self._service().check_sim_swap_state([phone], timeout=(3.05, self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - the SDK raises bare Exceptions (HTTP errors, timeouts)
            log.warning("sim swap check of %s: no answer (%s)", mask(phone), type(exc).__name__)
            return Asked(error=type(exc).__name__)  # its text may carry the provider's answer: not logged
        if isinstance(answer, str):  # the SDK parses JSON only under exactly "application/json"
            try:
                answer = json.loads(answer)
            except ValueError:
                answer = None
        if not isinstance(answer, dict):
            return Asked(error="no JSON answer")
        reported = tuple(r for r in read_results(answer) if r.phone == phone)
        request_id = str(answer.get("requestId") or "")[:64]
        if reported:
            return Asked(request_id=request_id or reported[0].request_id, reported=reported)
        if answer.get("status") == "Queued" and request_id:
            return Asked(request_id=request_id)
        log.warning("sim swap check of %s: unexpected answer %r", mask(phone), str(answer.get("status"))[:40])
        return Asked(error=f"status {str(answer.get('status'))[:40]}")

    def parse_callback(self, body: Any) -> list[Reported]:
        return read_results(body)
