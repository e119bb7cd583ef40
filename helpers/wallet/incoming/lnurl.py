"""Lightning addresses (LUD-16) for every user, served with LNURL-pay (LUD-06): any Lightning
wallet can pay `254712345678@<domain>` without an invoice being typed anywhere.

GET /.well-known/lnurlp/<name>       -> the pay request (bounds, metadata, callback)
GET /lnurlp/<name>/callback?amount=  -> {"pr": <bolt11 whose description hash is sha256(metadata)>}
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

from database import Database
from helpers.wallet.customers import tiers, users
from helpers.wallet.incoming import invoices
from helpers.wallet.errors import LightningUnavailable, PolicyDenied, RateLimited
from helpers.infra.phone import normalise
from helpers.infra.text import is_digits
from helpers.wallet.services import Services
from models import User
from helpers.infra.settings import Settings


class LnurlError(Exception):
    """Answered as {"status": "ERROR", "reason": ...} (LUD-06)."""


def domain(settings: Settings) -> str:
    return settings.lightning_address_domain or urlparse(settings.public_url).netloc


def address(settings: Settings, phone: str) -> str:
    """A user's Lightning address: the phone's digits at our domain."""
    return f"{phone.lstrip('+')}@{domain(settings)}"


def _user(db: Database, name: str, region: str) -> User:
    phone = normalise(name if name.startswith("+") else "+" + name, region) if is_digits(name) else None
    if phone is None:
        raise LnurlError("unknown Lightning address")
    with db.read() as s:
        user = users.get(s, phone)
    if user is None:
        raise LnurlError("unknown Lightning address")
    return user


def metadata(settings: Settings, name: str) -> str:
    return json.dumps([["text/plain", f"Payment to {name} on SatsPesa"],
                       ["text/identifier", f"{name}@{domain(settings)}"]])


def pay_request(svc: Services, name: str) -> dict:
    _user(svc.db, name, svc.settings.default_region)
    return {
        "tag": "payRequest",
        "callback": f"{svc.settings.public_url.rstrip('/')}/lnurlp/{name}/callback",
        "minSendable": svc.policy.value("payment-min-sats") * 1000,
        "maxSendable": svc.policy.value("payment-max-sats") * 1000,
        "metadata": metadata(svc.settings, name),
    }


def invoice(svc: Services, name: str, amount_msat: str | None, source: str) -> dict:
    """An invoice for a payer of `name`'s Lightning address, asked from `source` (the caller's
    address). Counted per source and over all sources, never against the customer's own invoice
    limit; it expires after LNURL_INVOICE_EXPIRY_S, sends no SMS and costs nothing unpaid."""
    user = _user(svc.db, name, svc.settings.default_region)
    if not amount_msat or not is_digits(amount_msat) or len(amount_msat) > 16:
        raise LnurlError("amount (msat) is required")
    msat = int(amount_msat)
    if msat % 1000:
        raise LnurlError("amount must be whole sats")
    decision = svc.policy.amount(msat // 1000)
    if not decision.allowed:
        raise LnurlError(f"amount refused: {decision.reason}")
    # The tier's balance cap (issue 34), as far as a stranger may test it: an amount past the cap by
    # itself is refused; one that only fits no more beside the balance is invoiced all the same
    # (comparing it with the balance would let anyone read a customer's balance by bisecting
    # amounts), and paid, it is credited like any money that came in.
    try:
        tiers.check_in(tiers.caps(svc.policy, user.tier, svc.prices.for_limits()), 0, msat // 1000)
    except PolicyDenied as exc:
        raise LnurlError("amount refused") from exc
    try:
        issued = invoices.issue(svc.db, svc.policy, svc.lightning, users.UserView.of(user), msat // 1000,
                                f"Lightning address {name}",
                                svc.settings.lnurl_invoice_expiry_s, None, rate_limits=svc.settings.rate_limits,
                                hashed_description=metadata(svc.settings, name),
                                limited_by=(("lnurl-invoices-per-source", source), ("lnurl-invoices-all", "all")))
    except RateLimited as exc:
        raise LnurlError("too many invoices asked for; try later") from exc
    except LightningUnavailable as exc:
        raise LnurlError("the node is unavailable; try later") from exc
    return {"pr": issued.bolt11, "routes": []}
