"""GET /simulator: a feature phone in the browser that talks to /ussd like Africa's Talking."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from sqlalchemy import select

from helpers.infra.phone import normalise
from models import SmsOutbox

from helpers.wallet import demo
from helpers.web.common import services

bp = Blueprint("simulator", __name__)


@bp.get("/simulator")
def simulator() -> Response | tuple[Response, int]:
    svc = services()
    if not svc.settings.simulator_enabled:
        return jsonify({"error": "the simulator is off (SIMULATOR_ENABLED)"}), 404
    token = svc.settings.ussd_callback_token
    ussd_url = url_for("ussd.ussd", token=token) if token else url_for("ussd.ussd")
    return Response(render_template(
        "simulator.html", ussd_url=ussd_url, ussd_path_shown="/ussd" + ("/<token>" if token else ""),
        service_code=svc.service_code,
        demo_phones=[phone for phone, _ in demo.DEMO_USERS] if svc.settings.demo_mode else [],
    ), mimetype="text/html")


@bp.get("/simulator/sms")
def sms_inbox() -> Response | tuple[Response, int]:
    """The SMS the simulated phone would have received, newest first (whether or not a real
    sender delivered them): the simulator's second screen. Off with the simulator, so never in
    production."""
    svc = services()
    if not svc.settings.simulator_enabled:
        return jsonify({"error": "the simulator is off (SIMULATOR_ENABLED)"}), 404
    phone = normalise(request.args.get("phone", ""), svc.settings.default_region)
    if phone is None:
        return jsonify({"messages": []})
    rows = svc.db.session().execute(select(SmsOutbox.created_at, SmsOutbox.message, SmsOutbox.status)
                                    .where(SmsOutbox.phone == phone).order_by(SmsOutbox.id.desc()).limit(10))
    return jsonify({"phone": phone, "messages": [{"at": f"{at:%H:%M:%S}", "text": text, "status": status}
                                                 for at, text, status in rows]})
