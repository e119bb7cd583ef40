"""test_ussd.py against a server whose abuse limits are on (RATE_LIMITS=1) says so and stops with
exit status 2, instead of reporting the flows as failed on "Too many requests"."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import test_ussd
from helpers.infra.i18n import t
from tests.fakes.fake_http import FakeServer


class LimitedServer(FakeServer):
    """Answers /status, and every dial with what /ussd answers a caller over the limits."""

    def __init__(self) -> None:
        self.dials = 0
        super().__init__()

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        if request.path == "/status":
            return self.reply(request, 200, {"status": "ok", "mpesa": "simulated", "lightning": "mock",
                                             "price": {"kes_per_btc": 15_000_000, "source": "fixed"}})
        if request.path == "/ussd":
            request.rfile.read(int(request.headers.get("Content-Length") or 0))  # the form, unread
            self.dials += 1
            return self.reply(request, 200, ("END " + t("en", "error.too-many")).encode())
        self.reply(request, 404, {"error": "not here"})


def test_the_script_says_the_rate_limits_are_on_and_stops(capsys):
    server = LimitedServer()
    try:
        status = test_ussd.main([server.url, "--seed", "7"])
    finally:
        server.stop()
    out, err = capsys.readouterr()
    assert status == 2
    assert "has its abuse limits on (RATE_LIMITS=1" in err and "RATE_LIMITS=0" in err
    assert "FAIL" not in out
    assert server.dials == 1  # it stopped at the first refusal instead of dialling on
