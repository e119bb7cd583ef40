"""GET /simulator: a feature phone in the browser that talks to /ussd like Africa's Talking."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, url_for

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
