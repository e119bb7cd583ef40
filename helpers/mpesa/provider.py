"""M-Pesa providers behind one interface.

- `simulated` (the default) takes the confirmation code a customer types as proof of a top-up and
  pays withdrawals out at once with a made-up receipt.
- `daraja` (helpers/mpesa/daraja.py) is Safaricom's API: a top-up is an STK push (the M-Pesa PIN prompt
  pops up on the customer's phone), a withdrawal a B2C payment; both finish later, by a callback
  or a status query (helpers/wallet/mpesa/flows.py and helpers/wallet/mpesa/callbacks.py).

`topup_by_push` tells the menu which top-up a provider does; `payouts_async` whether a payout
can only be "accepted" (pending) at first.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from helpers.infra.phone import safaricom
from helpers.infra.refs import new_reference
from lightning import State
from helpers.infra.settings import Settings

CODE_PATTERN = re.compile(r"^[A-Z0-9]{10}$")


BUY_GOODS, PAY_BILL = "BusinessBuyGoods", "BusinessPayBill"  # Daraja B2B CommandIDs: a till, a paybill


class MpesaConfigError(RuntimeError):
    """The provider is misconfigured; the message names the setting."""


@dataclass(frozen=True)
class PayoutResult:
    state: State  # SUCCEEDED, FAILED (nothing was paid) or PENDING (not known yet)
    receipt: str = ""
    error: str = ""
    conversation_id: str = ""  # daraja: M-Pesa's ConversationID of an accepted B2C request
    originator_id: str = ""  # daraja B2B: the OriginatorConversationID Daraja gave the request


@dataclass(frozen=True)
class PushResult:
    """The answer to an STK push request. PENDING: the prompt is on its way (or we could not
    tell); FAILED: M-Pesa refused the request, no prompt was sent."""

    state: State
    checkout_request_id: str = ""
    merchant_request_id: str = ""
    error: str = ""


@dataclass(frozen=True)
class TopupQueryResult:
    """M-Pesa Express Query: SUCCEEDED (paid), FAILED (cancelled, failed, expired: a final
    result code) or PENDING (still waiting for the customer, or no usable answer)."""

    state: State
    result_code: str = ""
    description: str = ""


def normalise_code(raw: str) -> str | None:
    """An M-Pesa confirmation code: 10 letters or digits (case-insensitive), or None."""
    code = (raw or "").strip()
    if not code.isascii():  # upper() would turn some letters of other scripts into A-Z
        return None
    code = code.upper()
    return code if CODE_PATTERN.match(code) else None


class MpesaProvider(ABC):
    name = "abstract"
    topup_by_push = False  # True: we push the M-Pesa prompt; False: the customer types a code
    payouts_async = False  # True: payout() submits; a callback or status query settles it

    @abstractmethod
    def confirm_topup(self, code: str, phone: str, kes: int) -> bool:
        """Does the customer's confirmation code prove a payment of `kes` from `phone`?"""

    @abstractmethod
    def payout(self, phone: str, kes: int, reference: str) -> PayoutResult:
        """Send `kes` to `phone`."""

    def accepts_phone(self, phone: str) -> bool:
        """Can this provider pay or charge this E.164 number?"""
        return True

    def push_topup(self, phone: str, kes: int, reference: str) -> PushResult:
        """Ask M-Pesa to prompt `phone` to pay `kes` (push providers only)."""
        raise NotImplementedError(f"{self.name} has no payment prompt")

    def query_topup(self, checkout_request_id: str) -> TopupQueryResult:
        """What became of a pushed payment prompt (push providers only)."""
        raise NotImplementedError(f"{self.name} has no payment prompt")

    def query_payout(self, reference: str, original: str | None = None) -> bool:
        """Ask for the status of an asynchronous payout (`original`: its OriginatorConversationID
        when Daraja gave it, else ours); the answer comes by callback. True when accepted."""
        raise NotImplementedError(f"{self.name} pays out synchronously")

    def pay_business(self, command: str, party_b: str, account: str, kes: int, reference: str,
                     requester: str) -> PayoutResult:
        """Pay `kes` from our shortcode to a till (BUY_GOODS) or a paybill (PAY_BILL, with the
        `account` reference), on behalf of the customer `requester`."""
        raise NotImplementedError(f"{self.name} cannot pay businesses")

    queries_balance = False  # True: query_balance asks M-Pesa what our shortcode holds

    def query_balance(self, reference: str) -> bool:
        """Ask M-Pesa for our shortcode's account balances; the answer comes by callback naming
        `reference`. True when the query was accepted."""
        raise NotImplementedError(f"{self.name} has no account to ask about")


class SimulatedMpesa(MpesaProvider):
    name = "simulated"

    @classmethod
    def from_config(cls, settings: Settings) -> SimulatedMpesa:
        return cls()

    def confirm_topup(self, code: str, phone: str, kes: int) -> bool:
        return normalise_code(code) is not None

    def payout(self, phone: str, kes: int, reference: str) -> PayoutResult:
        return PayoutResult(State.SUCCEEDED, receipt="S" + new_reference(9))

    def accepts_phone(self, phone: str) -> bool:
        return safaricom(phone)  # as M-Pesa: Safaricom numbers only

    def pay_business(self, command: str, party_b: str, account: str, kes: int, reference: str,
                     requester: str) -> PayoutResult:
        return PayoutResult(State.SUCCEEDED, receipt="S" + new_reference(9))


# Providers by name; the interface never imports one (Daraja imports this module).
PROVIDERS: dict[str, str] = {
    "simulated": "helpers.mpesa.provider:SimulatedMpesa",
    "daraja": "helpers.mpesa.daraja:DarajaMpesa",
}


def create_provider(settings: Settings) -> MpesaProvider:
    """The provider MPESA_PROVIDER names. Raises MpesaConfigError naming a missing setting."""
    name = settings.mpesa_provider
    where = PROVIDERS.get(name)
    if where is None:
        raise MpesaConfigError(f"MPESA_PROVIDER={name!r} is unknown; choose one of {sorted(PROVIDERS)}")
    module, _, cls = where.partition(":")
    return getattr(importlib.import_module(module), cls).from_config(settings)
