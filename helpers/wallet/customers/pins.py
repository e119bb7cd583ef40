"""PIN hashing: HMAC-SHA256 keyed with the server's pepper over a per-user salt.

A 4-digit PIN has only 10,000 values, so no slow hash protects it against someone who holds
both the database and the pepper; the pepper (never in the database) is what makes a database
copy alone useless, and the lockout policy is what stops guessing online. That keeps the check
cheap for us (microseconds) on the USSD hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_SCHEME = "hs256"


def hash_pin(pin: str, pepper: str) -> str:
    salt = secrets.token_hex(16)
    return f"{_SCHEME}${salt}${_digest(pin, salt, pepper)}"


def verify_pin(pin: str, stored: str | None, pepper: str) -> bool:
    """Constant-time check of `pin` against a stored hash; False for a missing or unknown hash."""
    if not stored:
        return False
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != _SCHEME:
        return False
    return hmac.compare_digest(_digest(pin, salt, pepper), digest)


def _digest(pin: str, salt: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), f"{salt}:{pin}".encode(), hashlib.sha256).hexdigest()
