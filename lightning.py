"""The Lightning node behind the wallet: one interface, a backend per node type.

Every call returns a small typed result with a three-state status; only configuration errors
raise. A status that cannot be learnt (timeout, error, unknown hash) is PENDING, never FAILED:
a payment is refunded only when the node says for certain that it failed.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import logging
import secrets
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from bolt11 import decode as bolt11_decode
from bolt11 import encode as bolt11_encode
from bolt11.exceptions import Bolt11Exception
from helpers.infra.settings import Settings

log = logging.getLogger(__name__)


class LightningConfigError(RuntimeError):
    """The backend is misconfigured; the message names the setting."""


class State(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True)
class InvoiceResult:
    ok: bool
    payment_hash: str = ""
    bolt11: str = ""
    error: str = ""


@dataclass(frozen=True)
class StatusResult:
    state: State
    fee_sat: int = 0
    preimage: str = ""
    error: str = ""


@dataclass(frozen=True)
class PaymentResult:
    state: State
    payment_hash: str = ""
    fee_sat: int = 0
    preimage: str = ""
    error: str = ""
    # FAILED because the invoice is paid already (by an earlier payment): this attempt moved
    # nothing, and the invoice must not be paid again.
    already_paid: bool = False


@dataclass(frozen=True)
class BalanceResult:
    ok: bool
    balance_sat: int = 0
    error: str = ""


@dataclass(frozen=True)
class DecodedInvoice:
    payment_hash: str
    amount_sat: int | None
    network: str  # bolt11 currency prefix: bc, tb, tbs, bcrt
    expires_at: int  # unix time
    description: str
    description_hash: str = ""


class InvalidInvoice(ValueError):
    """A string that is not a usable BOLT11 invoice."""


def decode_invoice(bolt11: str) -> DecodedInvoice:
    """Decode and check the signature of a BOLT11 string. Raises InvalidInvoice."""
    try:
        invoice = bolt11_decode(bolt11.strip().lower())
    except (Bolt11Exception, ValueError, TypeError, KeyError, IndexError) as exc:
        raise InvalidInvoice(str(exc) or type(exc).__name__) from exc
    msat = invoice.amount_msat
    if msat is not None and msat % 1000:
        raise InvalidInvoice("amount is not a whole number of sats")
    return DecodedInvoice(
        payment_hash=invoice.payment_hash,
        amount_sat=None if msat is None else int(msat) // 1000,
        network=invoice.currency,
        expires_at=invoice.date + invoice.expiry,
        description=invoice.description or "",
        description_hash=invoice.description_hash or "",
    )


class LightningBackend(ABC):
    """What the wallet needs from a Lightning node."""

    name = "abstract"

    @abstractmethod
    def create_invoice(self, amount_sat: int, memo: str, expiry_s: int,
                       hashed_description: str | None = None) -> InvoiceResult:
        """Ask the node for an invoice; ok=False (with error) when the node cannot make one.
        With `hashed_description` the invoice commits to its sha256 instead of carrying a memo
        (as LNURL-pay requires of the metadata)."""

    @abstractmethod
    def invoice_status(self, payment_hash: str) -> StatusResult:
        """SUCCEEDED when paid, FAILED when expired or cancelled, PENDING otherwise or unknown."""

    @abstractmethod
    def pay_invoice(self, bolt11: str, max_fee_sat: int) -> PaymentResult:
        """Pay with a fee limit. FAILED only when the node says the payment definitely failed."""

    @abstractmethod
    def payment_status(self, payment_hash: str) -> StatusResult:
        """The state of an outgoing payment; PENDING when in flight, unknown or on error."""

    @abstractmethod
    def balance(self) -> BalanceResult:
        """The node's spendable balance."""

    def health(self) -> dict[str, Any]:
        """A small report for /status."""
        result = self.balance()
        return {"backend": self.name, "ok": result.ok, "error": result.error or None,
                "balance_sat": result.balance_sat if result.ok else None}


@dataclass
class _MockInvoice:
    amount_sat: int
    bolt11: str
    expires_at: float
    paid: bool = False


@dataclass
class _MockPayment:
    state: State
    fee_sat: int
    preimage: str
    error: str = ""


class MockBackend(LightningBackend):
    """An in-process node: deterministic, but its invoices are real signed BOLT11 strings.

    State lives in this process's memory (one node per worker); `simulate_payment` stands in
    for a payer out in the world.
    """

    name = "mock"
    route_fee_sat = 0  # what a route to a payee costs; above the fee limit the payment fails
    ignore_fee_limit = False  # True: a misbehaving node that pays and charges above the limit
    last_fee_limit_sat: int | None = None  # the max_fee_sat of the last pay_invoice call

    def __init__(self, network: str = "bcrt", seed: str = "ussd-wallet-mock-node") -> None:
        self.network = network
        self._key = hashlib.sha256(seed.encode()).hexdigest()
        self._lock = threading.Lock()
        self._invoices: dict[str, _MockInvoice] = {}
        self._payments: dict[str, _MockPayment] = {}
        self._balance_sat = 10_000_000

    @classmethod
    def from_config(cls, settings: Settings) -> MockBackend:
        return cls(network=settings.lightning_network)

    def create_invoice(self, amount_sat: int, memo: str, expiry_s: int,
                       hashed_description: str | None = None) -> InvoiceResult:
        preimage = secrets.token_bytes(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        tags = Tags()
        tags.add(TagChar.payment_hash, payment_hash)
        tags.add(TagChar.payment_secret, secrets.token_hex(32))
        if hashed_description is not None:
            tags.add(TagChar.description_hash, hashlib.sha256(hashed_description.encode()).hexdigest())
        else:
            tags.add(TagChar.description, memo[:100])
        tags.add(TagChar.expire_time, int(expiry_s))
        tags.add(TagChar.min_final_cltv_expiry, 18)
        now = int(time.time())
        invoice = Bolt11(self.network, now, tags, MilliSatoshi(amount_sat * 1000))
        bolt11 = bolt11_encode(invoice, self._key)
        with self._lock:
            self._invoices[payment_hash] = _MockInvoice(amount_sat, bolt11, now + expiry_s)
        return InvoiceResult(True, payment_hash, bolt11)

    def simulate_payment(self, payment_hash: str) -> bool:
        """Mark one of our invoices paid, as if a payer had paid it. False if unknown or expired."""
        with self._lock:
            invoice = self._invoices.get(payment_hash)
            if invoice is None or invoice.paid or time.time() > invoice.expires_at:
                return False
            invoice.paid = True
            self._balance_sat += invoice.amount_sat
            return True

    def invoice_status(self, payment_hash: str) -> StatusResult:
        with self._lock:
            invoice = self._invoices.get(payment_hash)
            if invoice is None:
                return StatusResult(State.PENDING, error="unknown invoice")
            if invoice.paid:
                return StatusResult(State.SUCCEEDED)
            if time.time() > invoice.expires_at:
                return StatusResult(State.FAILED, error="expired")
            return StatusResult(State.PENDING)

    def pay_invoice(self, bolt11: str, max_fee_sat: int) -> PaymentResult:
        self.last_fee_limit_sat = max_fee_sat
        try:
            decoded = decode_invoice(bolt11)
        except InvalidInvoice as exc:
            return PaymentResult(State.FAILED, error=f"invalid invoice: {exc}")
        amount = decoded.amount_sat or 0
        with self._lock:
            previous = self._payments.get(decoded.payment_hash)
            own_invoice = self._invoices.get(decoded.payment_hash)
            if (previous is not None and previous.state is State.SUCCEEDED) or (own_invoice and own_invoice.paid):
                # As a real node: a paid invoice is not paid again. This attempt failed; the
                # payment that did go through keeps its own record.
                return PaymentResult(State.FAILED, decoded.payment_hash, error="invoice is already paid",
                                     already_paid=True)
            fee = self.route_fee_sat
            if amount + fee > self._balance_sat:
                payment = _MockPayment(State.FAILED, 0, "", "insufficient balance")
            elif fee > max_fee_sat and not self.ignore_fee_limit:
                payment = _MockPayment(State.FAILED, 0, "", "no route within the fee limit")
            else:
                own = self._invoices.get(decoded.payment_hash)
                if own is not None:
                    own.paid = True
                    self._balance_sat -= fee
                else:
                    self._balance_sat -= amount + fee
                payment = _MockPayment(State.SUCCEEDED, fee, secrets.token_hex(32))
            self._payments[decoded.payment_hash] = payment
        return PaymentResult(payment.state, decoded.payment_hash, payment.fee_sat, payment.preimage, payment.error)

    def payment_status(self, payment_hash: str) -> StatusResult:
        with self._lock:
            payment = self._payments.get(payment_hash)
        if payment is None:
            return StatusResult(State.PENDING, error="unknown payment")
        return StatusResult(payment.state, payment.fee_sat, payment.preimage)

    def balance(self) -> BalanceResult:
        with self._lock:
            return BalanceResult(True, self._balance_sat)


class UnavailableBackend(LightningBackend):
    """Stands in when the configured backend cannot start: refuses everything, says why."""

    name = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def create_invoice(self, amount_sat: int, memo: str, expiry_s: int,
                       hashed_description: str | None = None) -> InvoiceResult:
        return InvoiceResult(False, error=self.reason)

    def invoice_status(self, payment_hash: str) -> StatusResult:
        return StatusResult(State.PENDING, error=self.reason)

    def pay_invoice(self, bolt11: str, max_fee_sat: int) -> PaymentResult:
        return PaymentResult(State.FAILED, error=self.reason)  # nothing was sent

    def payment_status(self, payment_hash: str) -> StatusResult:
        return StatusResult(State.PENDING, error=self.reason)

    def balance(self) -> BalanceResult:
        return BalanceResult(False, error=self.reason)


# The backends import this interface; it finds them by name, so it never imports one.
BACKENDS: dict[str, str] = {
    "mock": "lightning:MockBackend",
    "lnbits": "helpers.lightning.lnbits:LNbitsBackend",
    "lnd": "helpers.lightning.lnd:LndBackend",
    "btcpay": "helpers.lightning.btcpay:BTCPayBackend",
}

_PLANNED: set[str] = set()


def create_backend(settings: Settings) -> LightningBackend:
    """The backend named by LIGHTNING_BACKEND. Raises LightningConfigError naming the setting."""
    name = settings.lightning_backend
    where = BACKENDS.get(name)
    if where is None:
        if name in _PLANNED:
            raise LightningConfigError(f"LIGHTNING_BACKEND={name} is not built yet; use mock")
        raise LightningConfigError(f"LIGHTNING_BACKEND={name!r} is unknown; choose one of {sorted(BACKENDS)}")
    module, _, cls = where.partition(":")
    return getattr(importlib.import_module(module), cls).from_config(settings)
