"""Lightning node backends (see lightning.py for the interface and the registry)."""

from __future__ import annotations

import logging
from typing import Any

import requests

log = logging.getLogger(__name__)


def request_json(http: requests.Session, node: str, method: str, url: str, body: dict | None = None,
                 timeout: float = 10, verify: str | bool = True,
                 headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(HTTP status, JSON body) of one call to a node. Status 0 means no usable answer came back
    (timeout, refused connection, a success without JSON): callers treat it as "unknown"."""
    try:
        response = http.request(method, url, json=body, timeout=timeout, verify=verify, headers=headers,
                                allow_redirects=False)
    except requests.RequestException as exc:
        log.warning("%s %s %s: %s", node, method, url.split("?")[0].rsplit("/", 2)[-2:], type(exc).__name__)
        return 0, None
    try:
        return response.status_code, response.json()
    except ValueError:
        log.warning("%s %s answered %s without JSON", node, method, response.status_code)
        return (0 if response.status_code < 400 else response.status_code), None
