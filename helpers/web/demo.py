"""Demo mode only (registered when DEMO_MODE is on): the demo user's facts, and an outside payer
of our invoices for the mock node."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from helpers.infra.phone import normalise
from helpers.wallet import demo, sim_swap
from helpers.wallet.customers import users
from helpers.wallet.incoming import invoices
from helpers.web.common import send_queued_sms, services
from lightning import MockBackend
from models import Invoice

bp = Blueprint("demo", __name__)


@bp.before_request
def demo_mode_only() -> tuple[Response, int] | None:
    """Off again after start (a test or an operator turned it off): these answer nothing."""
    if not services().settings.demo_mode:
        return jsonify({"error": "demo mode is off"}), 404
    return None


@bp.get("/test")
def info() -> tuple[Response, int]:
    svc = services()
    phone = demo.DEMO_USERS[0][0]
    user = users.get(svc.db.session(), phone)
    return jsonify({
        "phone": phone,
        "balance_sats": user.balance_sats if user else None,
        "service_code": svc.service_code,
        "try": f"curl -d sessionId=demo1 -d phoneNumber={phone} -d text= http://localhost:5000/ussd",
    }), 200


@bp.post("/test/pay-invoice")
def pay_invoice() -> tuple[Response, int]:
    """With the mock node: act as an outside payer of one of our invoices."""
    svc = services()
    if not isinstance(svc.lightning, MockBackend):
        return jsonify({"error": "only in demo mode with the mock Lightning backend"}), 404
    reference = (request.values.get("reference") or "").strip().upper()[:16]
    invoice = svc.db.session.query(Invoice).filter_by(reference=reference).one_or_none()
    if invoice is None:
        return jsonify({"error": "unknown invoice reference"}), 404
    svc.lightning.simulate_payment(invoice.payment_hash)
    state = invoices.sync(svc.db, svc.lightning, invoice.payment_hash)
    send_queued_sms(svc)
    return jsonify({"reference": reference, "status": state}), 200


@bp.get("/test/invoice")
def invoice_of() -> tuple[Response, int]:
    """The BOLT11 of one of our invoices (what its owner got by SMS), so a script can pay it from
    an outside wallet on a real node."""
    svc = services()
    reference = (request.values.get("reference") or "").strip().upper()[:16]
    invoice = svc.db.session.query(Invoice).filter_by(reference=reference).one_or_none()
    if invoice is None:
        return jsonify({"error": "unknown invoice reference"}), 404
    return jsonify({"reference": reference, "bolt11": invoice.bolt11, "status": invoice.status}), 200


@bp.post("/test/sim-swap")
def mark_sim_swap() -> tuple[Response, int]:
    """With the simulated SIM swap provider: `phoneNumber`'s SIM was swapped now (issue 33)."""
    svc = services()
    if svc.sim_swap is None or svc.sim_swap.name != "simulated":
        return jsonify({"error": "only with SIM_SWAP_PROVIDER=simulated"}), 404
    phone = normalise((request.values.get("phoneNumber") or "")[:32], svc.settings.default_region)
    if phone is None:
        return jsonify({"error": "phoneNumber is not a phone number"}), 400
    sim_swap.mark_swapped(svc.db, svc.policy, phone)
    send_queued_sms(svc)
    return jsonify({"phoneNumber": phone, "swapped": True}), 200
