"""What the rails call back: the Lightning node's invoice webhook and Daraja's M-Pesa results.
Both are hints checked against their source of truth before any money moves."""

from __future__ import annotations

import json
import logging
import re

from flask import Blueprint, Response, jsonify, request

from helpers.infra.phone import normalise
from helpers.lightning import webhooks
from helpers.wallet import sim_swap, use_cases
from helpers.wallet.incoming import invoices
from helpers.wallet.mpesa import callbacks as mpesa_callbacks
from helpers.wallet.payouts import machine as payouts
from helpers.web import callers
from helpers.web.common import send_queued_sms, services
from models import AIRTIME_RAIL

log = logging.getLogger("wallet")  # as the request log (README, Operations)
bp = Blueprint("callbacks", __name__)

_CALLBACK_SEGMENT = re.compile(r"[A-Za-z0-9]{1,16}")  # kinds, events and our references


@bp.post("/lightning/webhook/<token>")
def lightning_webhook(token: str) -> tuple[Response, int]:
    """The node says an invoice changed. A hint only: the node is asked before any credit."""
    svc = services()
    expected = svc.settings.lightning_webhook_token
    if not expected or not callers.token_ok(expected, token):
        log.warning("lightning webhook refused: bad token from %s", request.remote_addr)
        return jsonify({"error": "forbidden"}), 403
    secret = svc.settings.btcpay_webhook_secret
    if (svc.lightning.name == "btcpay" or secret) and not webhooks.btcpay_signature_ok(
            secret, request.get_data(), request.headers.get("BTCPay-Sig", "")):
        log.warning("lightning webhook refused: bad BTCPay-Sig from %s%s", request.remote_addr,
                    "" if secret else " (BTCPAY_WEBHOOK_SECRET is not set)")
        return jsonify({"error": "bad signature"}), 403
    payment_hash = webhooks.payment_hash(request.get_data(as_text=True))
    if payment_hash is None:
        return jsonify({"error": "no payment hash"}), 400
    status = invoices.status_of(svc.db, payment_hash)
    if status is None:
        log.warning("lightning webhook for an unknown payment hash %s...", payment_hash[:12])
        return jsonify({"status": "unknown"}), 200
    if status == "pending":
        status = invoices.sync(svc.db, svc.lightning, payment_hash)
    send_queued_sms(svc)
    return jsonify({"status": status}), 200


@bp.post("/mpesa/<token>/<kind>/<reference>")
@bp.post("/mpesa/<token>/<kind>/<event>/<reference>")
def mpesa_callback(token: str, kind: str, reference: str, event: str = "") -> tuple[Response, int]:
    """Daraja's callbacks: STK push results, B2C results and queue timeouts, Transaction Status
    results. No signature: the secret token in the URL (compared in constant time), then the
    request the reference names, whose ids, amount and phone the body must match."""
    svc = services()
    expected = svc.settings.mpesa_callback_token
    if not svc.mpesa.payouts_async or not expected or not callers.token_ok(expected, token):
        log.warning("mpesa callback refused: bad token from %s", request.remote_addr)
        return jsonify({"ResultCode": 1, "ResultDesc": "forbidden"}), 403
    if not all(_CALLBACK_SEGMENT.fullmatch(part) for part in (kind, event or "x", reference)):
        log.warning("mpesa callback refused: malformed path from %s", request.remote_addr)
        return jsonify({"ResultCode": 1, "ResultDesc": "unknown callback"}), 404
    try:
        body = json.loads(request.get_data(as_text=True) or "null")
    except ValueError:
        body = None
    status, outcome = mpesa_callbacks.handle(svc.db, svc.rail, kind, event, reference, body)
    send_queued_sms(svc)
    return jsonify({"ResultCode": 0 if status == 200 else 1, "ResultDesc": outcome}), status


@bp.post("/airtime/<token>/status")
def airtime_status(token: str) -> tuple[Response, int]:
    """Africa's Talking's airtime delivery report (form fields; JSON accepted too). No signature:
    the secret token in the URL (constant time), then the requestId of a pending purchase, whose
    phone and value the report must match, and AT's status query must agree before money moves."""
    svc = services()
    expected = svc.settings.airtime_callback_token
    rail = svc.rail(AIRTIME_RAIL)
    if rail is None or not expected or not callers.token_ok(expected, token):
        log.warning("airtime callback refused: bad token from %s", request.remote_addr)
        return jsonify({"error": "forbidden"}), 403
    try:
        fields = request.form.to_dict() or (request.get_json(silent=True) or {})
    except RecursionError:  # JSON nested too deep to read: a bad request, never a 500
        return jsonify({"error": "unreadable body"}), 400
    if not isinstance(fields, dict):
        fields = {}
    status, outcome = payouts.callback(svc.db, rail, fields)
    send_queued_sms(svc)
    return jsonify({"status": outcome}), status


@bp.post("/insights/<token>/sim-swap")
def sim_swap_state(token: str) -> tuple[Response, int]:
    """Africa's Talking Insights' SIM swap results (JSON; form fields accepted too). No signature:
    the secret token in the URL (constant time), as the airtime callback; then only an answer to
    an open question of ours (its requestId and phone) changes anything."""
    svc = services()
    expected = svc.settings.sim_swap_callback_token
    if svc.sim_swap is None or not svc.sim_swap.asks_ahead or not expected or not callers.token_ok(expected, token):
        log.warning("sim swap callback refused: bad token from %s", request.remote_addr)
        return jsonify({"error": "forbidden"}), 403
    try:
        body = json.loads(request.get_data(as_text=True) or "null")
    except ValueError:
        body = None
    except RecursionError:  # nested too deep to read: a bad request, never a 500
        return jsonify({"error": "unreadable body"}), 400
    if not isinstance(body, dict):
        body = request.form.to_dict() or None
    found, recorded = sim_swap.callback(svc, body)
    send_queued_sms(svc)
    return jsonify({"answers": found, "recorded": recorded}), 200


@bp.post("/sms/<token>/incoming")
def sms_incoming(token: str) -> tuple[Response, int]:
    """Africa's Talking's incoming SMS (form fields from, to, text, date, id): a reply "YES 482913"
    or "NO 482913" (NDIYO / HAPANA) votes on the chama payout whose one-time code it carries, by
    the member it was sent to. No signature: the secret token in the URL (constant time); each
    message id is acted on once (AT retries a failing endpoint)."""
    svc = services()
    expected = svc.settings.sms_incoming_token
    if not expected or not callers.token_ok(expected, token):
        log.warning("incoming sms refused: bad token from %s", request.remote_addr)
        return jsonify({"error": "forbidden"}), 403
    fields = request.form.to_dict()
    phone = normalise(fields.get("from", ""), svc.settings.default_region)
    message_id, text = fields.get("id", ""), fields.get("text", "")
    if phone is None or not message_id or len(message_id) > 64 or len(text) > 480:
        return jsonify({"error": "bad message"}), 400
    if sim_swap.read(svc.db, phone).held:  # a SIM swapped and not cleared: its replies vote for no one
        log.warning("incoming sms from a number on SIM-swap hold: not acted on")
        return jsonify({"status": "sim-swap-hold"}), 200
    outcome = use_cases.chama_sms_reply(svc, phone, text, message_id)
    send_queued_sms(svc)
    return jsonify({"status": outcome}), 200
