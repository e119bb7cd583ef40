"""Paying someone else's Lightning address (LUD-16 over LNURL-pay, LUD-06) from the keypad.

`parse_address` reads what the caller typed, `resolve` asks the payee's server for its pay
request (bounds and metadata), `fetch_invoice` asks its callback for an invoice and checks it
before a single sat is reserved: a real BOLT11 for our network, for exactly the amount, not about
to expire, committing to the metadata we were shown (its description hash).

Requests go to addresses that strangers type, so they are fenced: https only, no redirects, a
small answer, a short timeout, and no private, loopback or link-local hosts (an attacker must not
use us to reach the operator's internal network). `LNURL_ALLOW_INSECURE` lifts the fence for
local tests and development only (refused in production).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlparse

import certifi
import urllib3

from helpers.infra.text import is_digits
from lightning import InvalidInvoice, decode_invoice
from helpers.infra.settings import Settings

# Letters, digits and -_. before the @ (LUD-16), a host name (a port only where insecure is allowed).
_ADDRESS = re.compile(r"^([a-z0-9\-_.+]{1,64})@([a-z0-9\-.]{1,253}(?::[0-9]{1,5})?)$")
MAX_TYPED_ADDRESS = 60  # what a keypad user types, and what a 160-character screen can show
_MAX_BODY = 64 * 1024
_MIN_EXPIRY_LEFT_S = 60  # an invoice that expires sooner than this is refused
MAX_KEPT_METADATA = 8 * 1024  # metadata kept in the session to check an invoice made with payerdata


class LnurlPayError(Exception):
    """The address cannot be paid; `reason` names an i18n message (lnurl.<reason>)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# What a payee's server asks of the payer's name (LUD-18 payerData): nothing, or a name it may
# take (optional) or must have (mandatory)
NAME_NOT_ASKED, NAME_OPTIONAL, NAME_MANDATORY = "", "optional", "mandatory"


@dataclass(frozen=True)
class PayParams:
    """What the payee's server offers: kept in the USSD session between screens."""

    address: str
    callback: str
    min_sats: int  # minSendable rounded up to whole sats
    max_sats: int  # maxSendable rounded down
    metadata_hash: str  # sha256 of the metadata string, hex: the invoice must commit to it
    payer_name: str = NAME_NOT_ASKED  # LUD-18: does it ask for the payer's name
    metadata: str = ""  # kept only when a name is asked: the invoice then commits to metadata + payerdata

    def to_dict(self) -> dict[str, Any]:
        data = {"a": self.address, "c": self.callback, "min": self.min_sats, "max": self.max_sats,
                "h": self.metadata_hash}
        if self.payer_name:
            data.update(n=self.payer_name, m=self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PayParams:
        return cls(data["a"], data["c"], int(data["min"]), int(data["max"]), data["h"], data.get("n", ""),
                   data.get("m", ""))


def _msat(value: object) -> int:
    """A JSON number of msat (an integer, or a string of ASCII digits). Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("not a number")
    if isinstance(value, str) and not is_digits(value):
        raise ValueError("not ASCII digits")
    return int(value)


def parse_address(text: str) -> tuple[str, str] | None:
    """(name, domain) of a typed Lightning address, lower-cased, or None."""
    text = (text or "").strip().lower()
    if len(text) > MAX_TYPED_ADDRESS:
        return None
    match = _ADDRESS.match(text)
    if not match or ".." in match.group(2) or match.group(2).startswith((".", "-")):
        return None
    return match.group(1), match.group(2)


def _resolve(host: str, port: int, insecure: bool) -> str | None:
    """The address to connect to: the host is resolved once, here, and every address it has must
    be a global unicast one (unless LNURL_ALLOW_INSECURE, for tests), so a name that points at
    us, the node or the database is refused; the connection then goes to this very address, so a
    second lookup cannot be steered elsewhere (DNS rebinding)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        return None
    if not insecure and not all(a.is_global and not a.is_multicast for a in addresses):
        return None
    return str(addresses[0])


def _pinned_get(url: str, address: str, timeout_s: float) -> tuple[int, bytes]:
    """GET `url` from `address` (already checked): the TCP connection goes to that address, the
    TLS handshake and certificate check use the URL's host name, no redirect is followed."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    https = parsed.scheme == "https"
    port = parsed.port or (443 if https else 80)
    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    pool: urllib3.HTTPConnectionPool
    if https:
        pool = urllib3.HTTPSConnectionPool(address, port, timeout=timeout, retries=False, cert_reqs="CERT_REQUIRED",
                                           ca_certs=certifi.where(), server_hostname=host, assert_hostname=host)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    try:
        response = pool.urlopen("GET", path, headers={"Host": parsed.netloc, "Accept": "application/json"},
                                redirect=False, preload_content=False)
        try:
            return response.status, response.read(_MAX_BODY + 1, decode_content=True)
        finally:
            response.release_conn()
    finally:
        pool.close()


def _get_json(url: str, settings: Settings, params: dict[str, str] | None = None) -> dict:
    insecure = bool(settings.lnurl_allow_insecure)
    parsed = urlparse(url)
    if parsed.scheme != "https" and not (insecure and parsed.scheme == "http"):
        raise LnurlPayError("unreachable", "not https")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError as exc:
        raise LnurlPayError("unreachable", "bad port") from exc
    address = _resolve(parsed.hostname, port, insecure) if parsed.hostname else None
    if address is None:
        raise LnurlPayError("unreachable", "host not allowed")
    if params:
        url = url + ("&" if parsed.query else "?") + urlencode(params)
    try:
        status, body = _pinned_get(url, address, float(settings.lnurl_timeout_s))
    except urllib3.exceptions.HTTPError as exc:
        raise LnurlPayError("unreachable", type(exc).__name__) from exc
    if len(body) > _MAX_BODY:
        raise LnurlPayError("bad-answer", "answer too large")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise LnurlPayError("bad-answer", f"HTTP {status}, not JSON") from exc
    if not isinstance(data, dict):
        raise LnurlPayError("bad-answer", "not a JSON object")
    if str(data.get("status", "")).upper() == "ERROR":
        raise LnurlPayError("refused", str(data.get("reason", ""))[:100])
    if status != 200:
        raise LnurlPayError("bad-answer", f"HTTP {status}")
    return data


def well_known_url(name: str, domain: str, settings: Settings) -> str:
    scheme = "http" if settings.lnurl_allow_insecure and ":" in domain else "https"
    return f"{scheme}://{domain}/.well-known/lnurlp/{name}"


def resolve(name: str, domain: str, settings: Settings) -> PayParams:
    """The payee's pay request. Raises LnurlPayError."""
    data = _get_json(well_known_url(name, domain, settings), settings)
    if data.get("tag") != "payRequest":
        raise LnurlPayError("bad-answer", "not a payRequest")
    callback, metadata = data.get("callback"), data.get("metadata")
    try:
        min_msat, max_msat = _msat(data.get("minSendable")), _msat(data.get("maxSendable"))
    except (TypeError, ValueError) as exc:
        raise LnurlPayError("bad-answer", "bounds are not numbers") from exc
    if not isinstance(callback, str) or not isinstance(metadata, str):
        raise LnurlPayError("bad-answer", "callback or metadata missing")
    try:
        entries = json.loads(metadata)
    except ValueError as exc:
        raise LnurlPayError("bad-answer", "metadata is not JSON") from exc
    if not isinstance(entries, list) or not any(isinstance(e, list) and e[:1] == ["text/plain"] for e in entries):
        raise LnurlPayError("bad-answer", "metadata has no text/plain entry")
    min_sats, max_sats = -(-min_msat // 1000), max_msat // 1000
    if min_msat < 1 or min_sats > max_sats:
        raise LnurlPayError("bad-answer", "bounds admit no whole-sat amount")
    asked = _name_asked(data.get("payerData"))
    if asked and len(metadata) > MAX_KEPT_METADATA:  # it would not fit the session's choices
        if asked == NAME_MANDATORY:
            raise LnurlPayError("bad-answer", "metadata too long to send a name with")
        asked = NAME_NOT_ASKED  # an optional name is simply not sent
    return PayParams(f"{name}@{domain}", callback, min_sats, max_sats,
                     hashlib.sha256(metadata.encode()).hexdigest(), asked, metadata if asked else "")


def _name_asked(payer_data: object) -> str:
    """LUD-18: {"name": {"mandatory": bool}, ...} in the pay request; anything else asks nothing."""
    if not isinstance(payer_data, dict) or not isinstance(payer_data.get("name"), dict):
        return NAME_NOT_ASKED
    return NAME_MANDATORY if payer_data["name"].get("mandatory") is True else NAME_OPTIONAL


def fetch_invoice(params: PayParams, amount_sats: int, settings: Settings, payer_name: str | None = None) -> str:
    """An invoice from the payee's callback, checked. `payer_name` (a verified name) goes with it
    as LUD-18 payerdata when the server asked for a name, and the invoice must then commit to the
    metadata followed by that payerdata. A server whose name is mandatory and no name: refused
    here, before anything is asked or reserved. Raises LnurlPayError."""
    query = {"amount": str(amount_sats * 1000)}
    description_hash = params.metadata_hash
    if params.payer_name == NAME_MANDATORY and not payer_name:
        raise LnurlPayError("name-required")
    if params.payer_name and payer_name:
        payerdata = json.dumps({"name": payer_name}, separators=(",", ":"))
        query["payerdata"] = payerdata
        description_hash = hashlib.sha256((params.metadata + payerdata).encode()).hexdigest()
    data = _get_json(params.callback, settings, query)
    bolt11 = data.get("pr")
    if not isinstance(bolt11, str) or not bolt11:
        raise LnurlPayError("bad-answer", "no invoice")
    check_invoice(bolt11, amount_sats, settings.lightning_network, description_hash)
    return bolt11.strip()


def check_invoice(bolt11: str, amount_sats: int, network: str, description_hash: str | None) -> None:
    """Refuse an invoice that is not exactly what we are about to pay. Raises LnurlPayError."""
    try:
        invoice = decode_invoice(bolt11)
    except InvalidInvoice as exc:
        raise LnurlPayError("bad-invoice", str(exc)) from exc
    if invoice.network != network:
        raise LnurlPayError("bad-invoice", f"network {invoice.network}, we are on {network}")
    if invoice.amount_sat != amount_sats:
        raise LnurlPayError("bad-invoice", f"amount {invoice.amount_sat}, asked for {amount_sats}")
    if invoice.expires_at < time.time() + _MIN_EXPIRY_LEFT_S:
        raise LnurlPayError("bad-invoice", "expired or about to")
    if description_hash is not None and invoice.description_hash != description_hash:
        raise LnurlPayError("bad-invoice", "description hash does not match the metadata")
