"""A payee's Lightning address server out in the world (LUD-16 + LUD-06), on a free loopback port.

`issue(amount_sat, metadata)` makes the invoice its callback returns (a mock node of its own, or
a second LNbits wallet). `mode` makes it misbehave the ways a stranger's server can:
  ok             a correct pay request and invoices committing to the metadata
  error          {"status": "ERROR", "reason": ...} on the pay request
  not_json       an HTML page
  huge           a body far larger than any pay request
  redirect       a 302 to somewhere else
  bad_bounds     minSendable above maxSendable
  wrong_amount   an invoice for one sat more than asked
  wrong_network  an invoice for mainnet while we run on regtest
  wrong_hash     an invoice committing to other metadata
  expired        an invoice that expires at once
  no_invoice     a callback answer without "pr"
`payer_data` (LUD-18), e.g. {"name": {"mandatory": True}}, is offered in the pay request; the
callback records the `payerdata` it is given and commits its invoice to metadata + payerdata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from lightning import MockBackend
from tests.fakes.fake_http import FakeServer


def mock_issuer(network: str = "bcrt") -> Callable[[int, str], str]:
    """Invoices from a node of the payee's own (not ours)."""
    node = MockBackend(network=network, seed="a payee out in the world")
    return lambda sats, metadata: node.create_invoice(sats, "", 600, hashed_description=metadata).bolt11


class FakeLnurl(FakeServer):
    def __init__(self, issue: Callable[[int, str], str] | None = None, min_msat: int = 1000,
                 max_msat: int = 5_000_000_000) -> None:
        super().__init__()
        self.issue = issue or mock_issuer()
        self.min_msat, self.max_msat = min_msat, max_msat
        self.mode = "ok"
        self.requests: list[str] = []  # paths asked for, in order
        self.hosts: list[str] = []  # the Host header of each
        self.invoices: list[str] = []  # what the callback handed out
        self.payer_data: dict | None = None  # LUD-18 payerData offered in the pay request
        self.payerdata: list[str | None] = []  # the payerdata each callback was given (None: none)

    @property
    def domain(self) -> str:
        return self.url.removeprefix("http://")

    def address(self, name: str = "carol") -> str:
        return f"{name}@{self.domain}"

    def metadata(self, name: str) -> str:
        return json.dumps([["text/plain", f"Pay {name}"], ["text/identifier", f"{name}@{self.domain}"]])

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        self.requests.append(url.path)
        self.hosts.append(request.headers.get("Host") or "")
        parts = url.path.strip("/").split("/")
        if method == "GET" and len(parts) == 3 and parts[:2] == [".well-known", "lnurlp"]:
            return self.pay_request(request, parts[2])
        if method == "GET" and len(parts) == 3 and parts[0] == "cb" and parts[2] == "callback":
            query = parse_qs(url.query)
            self.payerdata.append(query.get("payerdata", [None])[0])
            return self.callback(request, parts[1], query.get("amount", [""])[0])
        return self.reply(request, 404, {"status": "ERROR", "reason": "not found"})

    def pay_request(self, request, name: str) -> None:
        if self.mode == "error":
            return self.reply(request, 200, {"status": "ERROR", "reason": "no such user"})
        if self.mode == "not_json":
            return self.reply(request, 200, b"<html>hello</html>")
        if self.mode == "huge":
            return self.reply(request, 200, b"[" + b"1," * 100_000 + b"1]")
        if self.mode == "redirect":
            request.send_response(302)
            request.send_header("Location", "http://10.0.0.1/")
            request.send_header("Content-Length", "0")
            request.end_headers()
            return None
        low, high = self.min_msat, self.max_msat
        if self.mode == "bad_bounds":
            low = high + 1000
        answer = {"tag": "payRequest", "callback": f"{self.url}/cb/{name}/callback",
                  "minSendable": low, "maxSendable": high, "metadata": self.metadata(name)}
        if self.payer_data is not None:
            answer["payerData"] = self.payer_data
        return self.reply(request, 200, answer)

    def callback(self, request, name: str, amount: str) -> None:
        if not amount.isdigit():
            return self.reply(request, 200, {"status": "ERROR", "reason": "amount required"})
        sats = int(amount) // 1000
        if self.mode == "no_invoice":
            return self.reply(request, 200, {"routes": []})
        if self.mode == "wrong_network":
            bolt11 = mock_issuer("bc")(sats, self.metadata(name))
        elif self.mode == "expired":
            node = MockBackend(seed="a payee out in the world")
            bolt11 = node.create_invoice(sats, "", 1, hashed_description=self.metadata(name)).bolt11
        else:
            metadata = self.metadata(name) + (self.payerdata[-1] or "") + (" " if self.mode == "wrong_hash" else "")
            bolt11 = self.issue(sats + (1 if self.mode == "wrong_amount" else 0), metadata)
        self.invoices.append(bolt11)
        return self.reply(request, 200, {"pr": bolt11, "routes": []})
