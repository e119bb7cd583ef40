"""What a payout rail is, in the words the wallet and every rail share.

A rail moves value out of the wallet on someone else's network: Lightning, M-Pesa B2C, a till or
paybill (B2B), airtime. The wallet keeps one `payouts` row per payment out and moves it through
one state machine (helpers/wallet/payouts); a rail is an adapter that does the talking:

    send(payout)             -> Answer: PAID, FAILED (nothing was sent) or PENDING (accepted, or
                                no answer: only a later query or callback can tell)
    query(payout)            -> Answer: PAID, FAILED, or PENDING (not known yet)
    parse_callback(fields)   -> Claim: which payout (the rail's key) and what the caller says,
                                or CallbackRefused
    confirm(payout, claim)   -> Answer: what to act on once the claim (and its fields) was checked against
                                the payout (and, where the rail allows it, against its own
                                status query); raises CallbackRefused

and says what its money is (`Books`: where reserved sats wait, what pays the payout out) and
what the customer is told (`posted_text`, `voided_text`). It lives below the wallet: it never
imports it, and the wallet never imports an adapter; adapters are registered by name when the
app is built (Services.rails).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Protocol


class Said(enum.Enum):
    PAID = "paid"
    FAILED = "failed"  # definitely: the reserved sats may go back
    PENDING = "pending"  # accepted, or not known: the sats stay reserved


@dataclass(frozen=True)
class Answer:
    said: Said
    rail_key: str = ""  # the rail's own id for the payment (AT requestId, conversation id, hash)
    receipt: str = ""  # the rail's receipt when paid
    cost_sats: int = 0  # what the rail itself charged, out of the reserved fee limit (Lightning)
    reason: str = ""  # the rail's words, for logs and the row
    rail_ref: str = ""  # a second id the rail gave (Daraja's ConversationID)
    paid_to: str = ""  # the name the rail gave the payee (a business's public name), for the receipt
    needs_operator: bool = False  # PENDING, and no query will ever tell: only an operator can end it
    frees_key: bool = False  # FAILED, and the rail confirms its key may be paid again (a Lightning failure)

    @classmethod
    def paid(cls, receipt: str = "", rail_key: str = "", cost_sats: int = 0, reason: str = "paid",
             rail_ref: str = "", paid_to: str = "") -> Answer:
        return cls(Said.PAID, rail_key, receipt, cost_sats, reason, rail_ref, paid_to)

    @classmethod
    def failed(cls, reason: str, rail_key: str = "", rail_ref: str = "", frees_key: bool = False) -> Answer:
        return cls(Said.FAILED, rail_key, reason=reason, rail_ref=rail_ref, frees_key=frees_key)

    @classmethod
    def pending(cls, reason: str = "", rail_key: str = "", needs_operator: bool = False, rail_ref: str = "") -> Answer:
        return cls(Said.PENDING, rail_key, reason=reason, rail_ref=rail_ref, needs_operator=needs_operator)


@dataclass(frozen=True)
class Books:
    """Where a rail's money sits. A reservation moves the customer's amount + fee + fee limit to
    `in_flight`; a posting moves it on to `paid_from` (the asset that paid: the node, the M-Pesa
    float, the airtime float; amount + what the rail cost), our fee to income and what the fee
    limit did not use back to the customer; a void moves it all back. Entries are of kind
    "<kind>-pending", "<kind>-post" and "<kind>-void"; the reservation's movement row has type
    `movement` (the statement and the history screens read it)."""

    kind: str
    label: str  # how the operator's statement names it: "Airtime", "M-Pesa", "Lightning"
    movement: str
    in_flight: str
    paid_from: str  # the asset that pays (its cost too: a Lightning route's fee is the node's)
    # The rail's receipt is also the movement's M-Pesa code: unique across top-ups and payouts, so
    # one receipt never settles two movements.
    receipt_is_mpesa_code: bool = False
    # A voided payout frees its rail key (moved to rail_ref), so the same key may be paid again: a
    # Lightning invoice whose payment the node confirmed failed: only an answer that frees_key does;
    # an operator's, or one that cannot tell, keeps it taken.
    frees_key_on_void: bool = False
    # An operator's reason replaces the movement's description (Lightning's statement line says it).
    notes_on_movement: bool = False


@dataclass(frozen=True)
class PayoutView:
    """What a rail sees of a payout."""

    reference: str  # ours, unique: what the rail is given (Idempotency-Key, originator id, ...)
    rail: str
    user_id: int
    destination: str  # the rail's own words for where it goes (a phone, a till, a payee)
    amount_sats: int
    fee_sats: int
    amount_kes: int | None
    rail_key: str | None
    state: str
    created_at: dt.datetime
    movement_reference: str = ""  # the reference the customer was given
    rail_ref: str | None = None
    counterparty: str = ""  # how the customer's movement names the payee
    fee_limit_sats: int = 0  # the most the rail itself may cost, reserved with the payout (Lightning's route)


@dataclass(frozen=True)
class Claim:
    """A callback's word on a payout, before it was checked."""

    rail_key: str
    answer: Answer
    fields: dict = field(default_factory=dict)


class CallbackRefused(Exception):
    """A callback that moves nothing: malformed, unknown, forged or contradicted."""

    def __init__(self, status: int, outcome: str) -> None:
        super().__init__(outcome)
        self.status = status
        self.outcome = outcome


class Rail(Protocol):
    name: str
    books: Books

    def send(self, payout: PayoutView) -> Answer: ...

    def query(self, payout: PayoutView) -> Answer: ...

    def parse_callback(self, fields: dict) -> Claim: ...

    def confirm(self, payout: PayoutView, claim: Claim) -> Answer: ...

    def posted_text(self, payout: PayoutView, language: str, balance: int, answer: Answer,
                    left: int | None) -> str: ...

    def voided_text(self, payout: PayoutView, language: str, balance: int) -> str: ...
