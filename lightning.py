"""The Lightning node behind the wallet: one interface, a backend per node type.

Every call returns a small typed result with a three-state status; only configuration errors
raise. A status that cannot be learnt (timeout, error, unknown hash) is PENDING, never FAILED:
a payment is refunded only when the node says for certain that it failed.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import importlib
import logging
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from bolt11 import decode as bolt11_decode
from bolt11 import encode as bolt11_encode
from bolt11.exceptions import Bolt11Exception
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from helpers.infra.settings import Settings
from models import MOCK_INVOICE, MOCK_PAYMENT, MockNodeEntry

if TYPE_CHECKING:
    from database import Database

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
    expires_at: float  # unix time
    paid: bool = False


@dataclass
class _MockPayment:
    state: State
    fee_sat: int
    preimage: str
    error: str = ""


# What a payment attempt decides, given the payment's earlier attempt, our own invoice of that
# hash and the node's balance: the attempt's record and its change to the balance, or None when
# the invoice is paid already.
_Decision = Callable[[_MockPayment | None, _MockInvoice | None, int], tuple[_MockPayment, int] | None]


class _MemoryBook:
    """The mock node's invoices, payments and balance in this process's memory: a node that
    stands alone (a payee in tests, a fake node's engine)."""

    def __init__(self, opening_sat: int) -> None:
        self._lock = threading.Lock()
        self._invoices: dict[str, _MockInvoice] = {}
        self._payments: dict[str, _MockPayment] = {}
        self._balance_sat = opening_sat

    def add_invoice(self, payment_hash: str, invoice: _MockInvoice) -> None:
        with self._lock:
            self._invoices[payment_hash] = invoice

    def invoice(self, payment_hash: str) -> _MockInvoice | None:
        with self._lock:
            return self._invoices.get(payment_hash)

    def payment(self, payment_hash: str) -> _MockPayment | None:
        with self._lock:
            return self._payments.get(payment_hash)

    def settle_invoice(self, payment_hash: str, now: float) -> bool:
        with self._lock:
            invoice = self._invoices.get(payment_hash)
            if invoice is None or invoice.paid or now > invoice.expires_at:
                return False
            invoice.paid = True
            self._balance_sat += invoice.amount_sat
            return True

    def pay(self, payment_hash: str, decide: _Decision) -> _MockPayment | None:
        with self._lock:
            own = self._invoices.get(payment_hash)
            decided = decide(self._payments.get(payment_hash), own, self._balance_sat)
            if decided is None:
                return None
            payment, change = decided
            if own is not None and payment.state is State.SUCCEEDED:
                own.paid = True
            self._balance_sat += change
            self._payments[payment_hash] = payment
            return payment

    def balance(self) -> int:
        with self._lock:
            return self._balance_sat


def _utc(unix: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC).replace(tzinfo=None)


class _DatabaseBook:
    """The mock node's book in our database (models.MockNodeEntry): every worker process, and a
    restart, sees one node. Each change is one write transaction; a payment decides on the rows
    it locks (SQLite: the one writer; MySQL: FOR UPDATE and the unique (kind, hash) key)."""

    def __init__(self, db: Database, opening_sat: int) -> None:
        self.db = db
        self.opening_sat = opening_sat

    def add_invoice(self, payment_hash: str, invoice: _MockInvoice) -> None:
        with self.db.write() as s:
            s.add(MockNodeEntry(kind=MOCK_INVOICE, payment_hash=payment_hash, amount_sats=invoice.amount_sat,
                                fee_sats=0, state=State.PENDING.value, bolt11=invoice.bolt11,
                                expires_at=_utc(invoice.expires_at), balance_change_sats=0))

    @staticmethod
    def _entry(s: Session, kind: str, payment_hash: str, lock: bool = False) -> MockNodeEntry | None:
        query = select(MockNodeEntry).where(MockNodeEntry.kind == kind, MockNodeEntry.payment_hash == payment_hash)
        return s.scalars(query.with_for_update() if lock else query).one_or_none()

    @staticmethod
    def _as_invoice(row: MockNodeEntry | None) -> _MockInvoice | None:
        if row is None:
            return None
        expires = row.expires_at.replace(tzinfo=dt.UTC).timestamp() if row.expires_at else 0.0
        return _MockInvoice(row.amount_sats, row.bolt11 or "", expires, row.state == State.SUCCEEDED.value)

    @staticmethod
    def _as_payment(row: MockNodeEntry | None) -> _MockPayment | None:
        if row is None:
            return None
        return _MockPayment(State(row.state), row.fee_sats, row.preimage or "", row.error or "")

    def invoice(self, payment_hash: str) -> _MockInvoice | None:
        with self.db.read() as s:
            return self._as_invoice(self._entry(s, MOCK_INVOICE, payment_hash))

    def payment(self, payment_hash: str) -> _MockPayment | None:
        with self.db.read() as s:
            return self._as_payment(self._entry(s, MOCK_PAYMENT, payment_hash))

    def settle_invoice(self, payment_hash: str, now: float) -> bool:
        with self.db.write() as s:
            settled = s.execute(
                update(MockNodeEntry)
                .where(MockNodeEntry.kind == MOCK_INVOICE, MockNodeEntry.payment_hash == payment_hash,
                       MockNodeEntry.state == State.PENDING.value, MockNodeEntry.expires_at >= _utc(now))
                .values(state=State.SUCCEEDED.value, balance_change_sats=MockNodeEntry.amount_sats))
            return bool(getattr(settled, "rowcount", 0))

    def _balance(self, s: Session) -> int:
        changes = s.scalar(select(func.coalesce(func.sum(MockNodeEntry.balance_change_sats), 0)))
        return self.opening_sat + int(changes or 0)

    def pay(self, payment_hash: str, decide: _Decision) -> _MockPayment | None:
        with self.db.write() as s:
            own_row = self._entry(s, MOCK_INVOICE, payment_hash, lock=True)
            row = self._entry(s, MOCK_PAYMENT, payment_hash, lock=True)
            decided = decide(self._as_payment(row), self._as_invoice(own_row), self._balance(s))
            if decided is None:
                return None
            payment, change = decided
            if own_row is not None and payment.state is State.SUCCEEDED:
                own_row.state = State.SUCCEEDED.value  # an internal payment: nothing comes in
            if row is None:
                row = MockNodeEntry(kind=MOCK_PAYMENT, payment_hash=payment_hash, amount_sats=0)
                s.add(row)
            row.amount_sats = -change - payment.fee_sat if own_row is None else 0
            row.state, row.fee_sats, row.balance_change_sats = payment.state.value, payment.fee_sat, change
            row.preimage, row.error = payment.preimage or None, payment.error[:255] or None
            return payment

    def balance(self) -> int:
        with self.db.read() as s:
            return self._balance(s)


class MockBackend(LightningBackend):
    """A node of our own making: deterministic, but its invoices are real signed BOLT11 strings.

    Built by the app (`create_backend` with the database) it keeps its book in the database, so
    all worker processes are one node; built alone it keeps it in memory. `simulate_payment`
    stands in for a payer out in the world.
    """

    name = "mock"
    keeps_book_in_database = True  # create_backend hands it the app's database
    opening_balance_sat = 10_000_000
    route_fee_sat = 0  # what a route to a payee costs; above the fee limit the payment fails
    ignore_fee_limit = False  # True: a misbehaving node that pays and charges above the limit
    last_fee_limit_sat: int | None = None  # the max_fee_sat of the last pay_invoice call

    def __init__(self, network: str = "bcrt", seed: str = "ussd-wallet-mock-node",
                 db: Database | None = None) -> None:
        self.network = network
        self._key = hashlib.sha256(seed.encode()).hexdigest()
        self._book: _MemoryBook | _DatabaseBook = (
            _MemoryBook(self.opening_balance_sat) if db is None else _DatabaseBook(db, self.opening_balance_sat))

    @classmethod
    def from_config(cls, settings: Settings, db: Database | None = None) -> MockBackend:
        return cls(network=settings.lightning_network, db=db)

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
        try:
            self._book.add_invoice(payment_hash, _MockInvoice(amount_sat, bolt11, now + expiry_s))
        except SQLAlchemyError as exc:
            return InvoiceResult(False, error=f"mock node book: {type(exc).__name__}")
        return InvoiceResult(True, payment_hash, bolt11)

    def simulate_payment(self, payment_hash: str) -> bool:
        """Mark one of our invoices paid, as if a payer had paid it. False if unknown, paid or expired."""
        return self._book.settle_invoice(payment_hash, time.time())

    def invoice_status(self, payment_hash: str) -> StatusResult:
        try:
            invoice = self._book.invoice(payment_hash)
        except SQLAlchemyError as exc:
            return StatusResult(State.PENDING, error=f"mock node book: {type(exc).__name__}")
        if invoice is None:
            return StatusResult(State.PENDING, error="unknown invoice")
        if invoice.paid:
            return StatusResult(State.SUCCEEDED)
        if time.time() > invoice.expires_at:
            return StatusResult(State.FAILED, error="expired")
        return StatusResult(State.PENDING)

    def _decide(self, amount: int, max_fee_sat: int) -> _Decision:
        def decide(previous: _MockPayment | None, own: _MockInvoice | None,
                   balance_sat: int) -> tuple[_MockPayment, int] | None:
            if (previous is not None and previous.state is State.SUCCEEDED) or (own is not None and own.paid):
                return None
            fee = self.route_fee_sat
            if amount + fee > balance_sat:
                return _MockPayment(State.FAILED, 0, "", "insufficient balance"), 0
            if fee > max_fee_sat and not self.ignore_fee_limit:
                return _MockPayment(State.FAILED, 0, "", "no route within the fee limit"), 0
            # our own invoice: the amount stays in the node, only the fee leaves
            return _MockPayment(State.SUCCEEDED, fee, secrets.token_hex(32)), -fee if own else -(amount + fee)
        return decide

    def pay_invoice(self, bolt11: str, max_fee_sat: int) -> PaymentResult:
        self.last_fee_limit_sat = max_fee_sat
        try:
            decoded = decode_invoice(bolt11)
        except InvalidInvoice as exc:
            return PaymentResult(State.FAILED, error=f"invalid invoice: {exc}")
        payment_hash = decoded.payment_hash
        try:
            payment = self._book.pay(payment_hash, self._decide(decoded.amount_sat or 0, max_fee_sat))
        except IntegrityError:  # another process recorded an attempt at this hash at the same moment
            other = self._book.payment(payment_hash)
            payment = None if other is not None and other.state is State.SUCCEEDED else \
                _MockPayment(State.PENDING, 0, "", "another attempt is in flight")
        except SQLAlchemyError as exc:  # the commit may or may not have happened: we do not know
            payment = _MockPayment(State.PENDING, 0, "", f"mock node book: {type(exc).__name__}")
        if payment is None:
            # As a real node: a paid invoice is not paid again. This attempt failed; the
            # payment that did go through keeps its own record.
            return PaymentResult(State.FAILED, payment_hash, error="invoice is already paid", already_paid=True)
        return PaymentResult(payment.state, payment_hash, payment.fee_sat, payment.preimage, payment.error)

    def payment_status(self, payment_hash: str) -> StatusResult:
        try:
            payment = self._book.payment(payment_hash)
        except SQLAlchemyError as exc:
            return StatusResult(State.PENDING, error=f"mock node book: {type(exc).__name__}")
        if payment is None:
            return StatusResult(State.PENDING, error="unknown payment")
        return StatusResult(payment.state, payment.fee_sat, payment.preimage, payment.error)

    def balance(self) -> BalanceResult:
        try:
            return BalanceResult(True, self._book.balance())
        except SQLAlchemyError as exc:
            return BalanceResult(False, error=f"mock node book: {type(exc).__name__}")


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


def create_backend(settings: Settings, db: Database | None = None) -> LightningBackend:
    """The backend named by LIGHTNING_BACKEND. Raises LightningConfigError naming the setting.
    A backend that keeps its book in our database (the mock node) gets `db`."""
    name = settings.lightning_backend
    where = BACKENDS.get(name)
    if where is None:
        if name in _PLANNED:
            raise LightningConfigError(f"LIGHTNING_BACKEND={name} is not built yet; use mock")
        raise LightningConfigError(f"LIGHTNING_BACKEND={name!r} is unknown; choose one of {sorted(BACKENDS)}")
    module, _, name_of_class = where.partition(":")
    backend_class = getattr(importlib.import_module(module), name_of_class)
    if db is not None and getattr(backend_class, "keeps_book_in_database", False):
        return backend_class.from_config(settings, db=db)
    return backend_class.from_config(settings)
