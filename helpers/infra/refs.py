"""Short references people can read out and type, and idempotency keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def new_reference(length: int = 8) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def idempotency_key(session_id: str, text: str, secret: str) -> str:
    """The natural key of a USSD step: AT's sessionId plus the whole path. Keyed with a server
    secret: the path holds PINs, and a plain hash of 10,000 candidates would give them away."""
    return hmac.new(secret.encode(), f"{session_id}\x00{text}".encode(), hashlib.sha256).hexdigest()
