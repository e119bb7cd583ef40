"""Airtime bought with sats: a payout on the airtime rail (helpers/airtime/rail.py).

The sats and fee are reserved (journal: customer -> airtime in flight) with the payout row
*before* Africa's Talking is asked, so a crash in between leaves a payout the worker asks about.
Delivered, the reservation goes to the airtime float (what the house prepaid at Africa's
Talking) and the fee to income; failed (only on a definite failure), the sats go back. "No
answer" leaves the sats reserved (helpers/wallet/payouts).
"""

from __future__ import annotations

from dataclasses import dataclass

from database import Database
from helpers.infra.phone import local
from helpers.infra.rail import Answer, Rail
from helpers.wallet.ledger import movements
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.payouts import books, machine
from helpers.wallet.rules import Policy
from helpers.wallet.ledger.movements import Receipt
from helpers.wallet.customers import tiers
from helpers.wallet.customers.users import UserView


@dataclass(frozen=True)
class Bought:
    receipt: Receipt
    answer: Answer | None  # None: a replay; the first request asked the provider


def reserve(db: Database, policy: Policy, rail: Rail, user: UserView, phone: str, kes: int, sats: int, fee: int,
            price: int, key: str, region: str = "KE") -> Receipt:
    """Reserve `sats` + `fee` (the quote for `kes` of airtime at `price`) as a payout of airtime
    for `phone`. Raises InsufficientBalance or PolicyDenied."""

    def work() -> Receipt:
        with db.write() as s:
            def check(after: int) -> int:
                def decide(today: int) -> None:
                    decision = policy.airtime(kes, after + sats + fee, today, price)
                    if not decision.allowed:
                        raise PolicyDenied(decision.reason or "denied")
                return movements.check_out(s, policy, user.id, tiers.caps(policy, user.tier, price), sats, decide,
                                           tiers.payout_counted(policy, price, kes, sats))
            receipt = books.reserve(s, rail, user.id, sats, fee, phone, key, check=check, amount_kes=kes,
                                    description=f"Airtime KES {kes} for {local(phone, region)}")
            return receipt

    return movements.run_once(db, key, work)


def buy(db: Database, rail: Rail, receipt: Receipt) -> Answer:
    """Ask the rail for the airtime a reservation paid for: PAID posted now, FAILED voided now,
    PENDING finished later by the delivery report or the worker."""
    return machine.send(db, rail, receipt.reference)
