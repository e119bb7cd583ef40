"""Who may call a webhook: a shared secret (in the URL path or a header, compared in constant
time) and an optional allowlist of source networks. The client address is the socket's peer,
or, behind TRUSTED_PROXY_COUNT proxies, what those proxies appended to X-Forwarded-For
(werkzeug's ProxyFix in app.py); a forwarded address is never taken on trust otherwise."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


def token_ok(expected: str, *offered: str | None) -> bool:
    """True when no token is configured, or one of the offered values equals it."""
    if not expected:
        return True
    return any(value is not None and hmac.compare_digest(value.encode(), expected.encode()) for value in offered)


def address_ok(networks: Sequence, remote_addr: str | None) -> bool:
    """True when no allowlist is configured, or the address is inside one of its networks."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    return any(address in network for network in networks)
