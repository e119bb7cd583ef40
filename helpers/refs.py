"""Short references people can read out and type, and idempotency keys."""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


def new_reference(length: int = 8) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def idempotency_key(session_id: str, text: str) -> str:
    """The natural key of a USSD step: AT's sessionId plus the whole path (hashed: it holds PINs)."""
    return hashlib.sha256(f"{session_id}\x00{text}".encode()).hexdigest()
