"""POST /ussd: Africa's Talking's callback. Checks the caller, reads the form, counts the
request against the abuse limits, asks handlers.py for the screen, logs one line and one metric."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from handlers import UssdRequest, handle_ussd
from helpers.infra import logs, metrics
from helpers.infra.i18n import t
from helpers.infra.phone import mask, normalise
from helpers.wallet.customers import limits
from helpers.wallet.services import Services
from helpers.web import callers
from helpers.web.common import plain, send_queued_sms, services, unavailable_reply

log = logging.getLogger("wallet")  # the request log line (README, Operations)
bp = Blueprint("ussd", __name__)

MAX_TEXT = 1000  # longer than any real session can type in 180 s
MAX_FIELD = 128


@dataclass
class Step:
    reply: str
    outcome: str  # con, end, forbidden, invalid, limited, unavailable: a metric label
    status: int = 200
    screen: str = "-"
    session_id: str = ""
    phone: str = ""
    depth: int = 0


@bp.post("/ussd", endpoint="ussd")
@bp.post("/ussd/<token>", endpoint="ussd")
def ussd(token: str | None = None) -> Response:
    """Africa's Talking's callback. One structured log line and one metric per request."""
    started = time.perf_counter()
    request_id = uuid.uuid4().hex[:12]
    logs.request_id.set(request_id)
    logs.session_id.set("")
    step = answer(services(), token)
    elapsed = time.perf_counter() - started
    metrics.observe(step.outcome, elapsed)
    log.info("ussd request_id=%s session=%s phone=%s depth=%d screen=%s outcome=%s status=%d ms=%.1f",
             request_id, step.session_id[:16] or "-", mask(step.phone) if step.phone else "-", step.depth,
             step.screen, step.outcome, step.status, elapsed * 1000)
    response = plain(step.reply, step.status)
    response.headers["X-Request-Id"] = request_id
    # After the reply has gone out (the request's context is gone by then: pass what it needs).
    response.call_on_close(partial(flush_written_behind, current_app.extensions["request_counter"], services()))
    return response


def answer(svc: Services, token: str | None) -> Step:
    if not callers.token_ok(svc.settings.ussd_callback_token, token, request.headers.get("X-Callback-Token")):
        log.warning("ussd refused: bad callback token from %s", request.remote_addr)
        return Step("Forbidden", "forbidden", 403)
    if not callers.address_ok(svc.settings.ussd_allowed_networks, request.remote_addr):
        log.warning("ussd refused: %s is not an allowed network", request.remote_addr)
        return Step("Forbidden", "forbidden", 403)
    form = form_fields()
    session_id = form.get("sessionId", "").strip()[:MAX_FIELD]
    logs.session_id.set(session_id[:16])
    raw_phone = form.get("phoneNumber", "").strip()[:MAX_FIELD]
    service_code = form.get("serviceCode", "").strip()[:32]
    text = form.get("text", "")
    lang = svc.settings.default_language
    if not session_id or not raw_phone:
        return Step("END " + t(lang, "error.expired"), "invalid", session_id=session_id)
    phone = normalise(raw_phone, svc.settings.default_region)
    if phone is None:
        return Step("END " + t(lang, "error.phone"), "invalid", session_id=session_id)
    depth = text.count("*") + bool(text)
    if len(text) > MAX_TEXT:
        return Step("END " + t(lang, "error.expired"), "invalid", session_id=session_id, phone=phone, depth=depth)
    step = Step("", "end", session_id=session_id, phone=phone, depth=depth)
    try:
        checks = (("requests-per-phone", phone), ("requests-per-source", request.remote_addr or "unknown"))
        counter = current_app.extensions["request_counter"]
        exceeded = counter.allow(svc.policy, *checks) if svc.settings.rate_limits else None
        if exceeded:
            log.warning("ussd limit %s reached by %s / %s", exceeded, mask(phone), request.remote_addr)
            step.reply, step.outcome = "END " + t(lang, "error.too-many"), "limited"
        else:
            step.reply, step.screen = handle_ussd(svc, UssdRequest(session_id, phone, service_code, text))
            step.outcome = step.reply[:3].lower()
    except SQLAlchemyError as exc:
        code = (getattr(getattr(exc, "orig", None), "args", None) or ("",))[0]  # the server's error number
        statement = " ".join(str(getattr(exc, "statement", "") or "").split())[:160]  # which write, not its values
        log.error("database unavailable for /ussd: %s %s in %s", type(exc).__name__, code, statement)
        step.reply, step.outcome = unavailable_reply(), "unavailable"
    finally:
        send_queued_sms(svc)
    return step


def form_fields() -> Mapping[str, str]:
    """The POST's form fields. Africa's Talking posts them urlencoded: read here straight from the
    body (bounded by MAX_CONTENT_LENGTH), about half the cost of werkzeug's form parser, which
    builds a MultiDict through its stream wrappers and was ~6% of a worker's time under load.
    A repeated field keeps its first value, as MultiDict.get does; any other encoding (a
    multipart test post) goes through request.form."""
    if request.mimetype != "application/x-www-form-urlencoded":
        return request.form
    fields: dict[str, str] = {}
    for name, value in parse_qsl(request.get_data(cache=False).decode("utf-8", "replace"),
                                 keep_blank_values=True, errors="replace"):
        fields.setdefault(name, value)
    return fields


def flush_written_behind(counter: limits.RequestCounter, svc: Services) -> None:
    """Write this worker's kept counts and session openings if their interval has passed, and
    checkpoint SQLite's log when due: here, between requests, outside the reply's time, rather
    than from a second thread that would hold the database's write lock while it waits for the
    GIL (helpers/infra/writebehind.py)."""
    flushed = counter.flush_if_due()
    flushed = (svc.openings is not None and svc.openings.flush_if_due()) or flushed
    flushed = svc.db.checkpoint_if_due() or flushed
    if flushed:
        svc.db.remove_session()  # the connection rests again, as at the end of a request
