"""Customers' Lightning addresses (LUD-16 and LUD-06): anyone's wallet asks here for an invoice."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from helpers.wallet.incoming import lnurl
from helpers.web.common import send_queued_sms, services

bp = Blueprint("lnurl", __name__)


@bp.get("/.well-known/lnurlp/<name>")
def pay_request(name: str) -> tuple[Response, int]:
    """LUD-16: a user's Lightning address resolves here."""
    try:
        return jsonify(lnurl.pay_request(services(), name[:32])), 200
    except lnurl.LnurlError as exc:
        return jsonify({"status": "ERROR", "reason": str(exc)}), 404


@bp.get("/lnurlp/<name>/callback")
def callback(name: str) -> tuple[Response, int]:
    """LUD-06: the payer's wallet asks for an invoice of `amount` msat."""
    try:
        return jsonify(lnurl.invoice(services(), name[:32], request.args.get("amount"),
                                     request.remote_addr or "unknown")), 200
    except lnurl.LnurlError as exc:
        return jsonify({"status": "ERROR", "reason": str(exc)}), 200
    finally:
        send_queued_sms(services())
