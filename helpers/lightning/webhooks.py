"""Reading what a node's webhook says. Bodies are untrusted hints: only the payment hash is taken,
and the node is asked before anything is credited. LNbits signs nothing (the secret URL token is
the only guard); BTCPay signs every delivery (BTCPay-Sig), which is checked too."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

_HASH = re.compile(r"^[0-9a-f]{64}$")


def payment_hash(body: str) -> str | None:
    """The payment hash in an LNbits webhook body (a JSON object, or a JSON string holding one)."""
    try:
        data = json.loads(body)
        if isinstance(data, str):  # LNbits may send the JSON as a JSON string
            data = json.loads(data)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    value = str(data.get("payment_hash") or data.get("checking_id") or data.get("paymentHash")
                or data.get("invoiceId") or "").lower().removeprefix("internal_")
    return value if _HASH.match(value) else None


def btcpay_signature_ok(secret: str, body: bytes, header: str) -> bool:
    """BTCPay signs each delivery: `BTCPay-Sig: sha256=<hex HMAC-SHA256(secret, raw body)>`."""
    if not secret or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())
