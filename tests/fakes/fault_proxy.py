"""A proxy in front of a real node (LNbits) that loses or spoils answers the way networks and
overloaded nodes do, after the node has done the work:

  pass           forward everything
  pay_timeout    forward a payment, then answer nothing for longer than the client waits
  pay_500        forward a payment, then answer HTTP 500
  pay_malformed  forward a payment, then answer half a JSON document
  status_500     answer HTTP 500 to every status lookup (GET), forward the rest
  down           refuse everything with HTTP 502, forwarding nothing
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

import requests

from tests.fakes.fake_http import FakeServer


class FaultProxy(FakeServer):
    def __init__(self, target: str, hold_s: float = 3) -> None:
        super().__init__()
        self.target, self.hold_s = target.rstrip("/"), hold_s
        self.mode = "pass"
        self.forwarded: list[str] = []

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        if self.mode == "down":
            return self.reply(request, 502, {"detail": "bad gateway"})
        if self.mode == "status_500" and method == "GET":
            return self.reply(request, 500, {"detail": "internal"})
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("x-api-key", "content-type",
                                                                             "authorization")}
        answer = requests.request(method, self.target + request.path, data=body, headers=headers, timeout=30)
        self.forwarded.append(f"{method} {request.path.split('?')[0]}")
        paying = method == "POST" and body is not None and b'"out": true' in body.replace(b'"out":true', b'"out": true')
        if paying and self.mode == "pay_timeout":
            time.sleep(self.hold_s)
            try:
                return self.reply(request, answer.status_code, answer.content)
            except OSError:
                return None  # the client gave up long ago
        elif paying and self.mode == "pay_500":
            return self.reply(request, 500, {"detail": "internal"})
        elif paying and self.mode == "pay_malformed":
            return self.reply(request, 200, answer.content[: len(answer.content) // 2])
        return self.reply(request, answer.status_code, answer.content)
