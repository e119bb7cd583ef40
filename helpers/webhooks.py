"""Reading what a node's webhook says. Bodies are untrusted hints: only the payment hash is taken,
and the node is asked before anything is credited."""

from __future__ import annotations

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
    value = str(data.get("payment_hash") or data.get("checking_id") or "").lower().removeprefix("internal_")
    return value if _HASH.match(value) else None
