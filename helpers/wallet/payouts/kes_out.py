"""Payouts in KES on an M-Pesa rail (a withdrawal, a till, a paybill): the quote's sats and fee
reserved with the payout row, under the policy's withdrawal rules, then sent through the one
payout state machine. A customer's own step (use_cases) and a standing order's run both come here."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from helpers.infra.rail import Answer, Rail
from helpers.infra.refs import new_reference
from helpers.mpesa.daraja import originator_id
from helpers.mpesa.provider import BUY_GOODS
from helpers.wallet.customers import tiers
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.ledger import movements
from helpers.wallet.ledger.movements import Receipt
from helpers.wallet.payouts import books, machine
from helpers.wallet.services import Services
from models import MPESA_B2C_RAIL


def rail_of(svc: Services, name: str) -> Rail:
    rail = svc.rail(name)
    if rail is None:
        raise RuntimeError(f"the {name} rail is not registered")
    return rail


def rail_key_for(svc: Services, rail_name: str, reference: str) -> str | None:
    """A B2C payout's OriginatorConversationID is ours, from the start, where Daraja pays it; the
    simulated provider pays at once and names nothing (so a payout of it has no key)."""
    return originator_id(reference) if rail_name == MPESA_B2C_RAIL and svc.mpesa.payouts_async else None


def reserve(svc: Services, user: UserView, rail_name: str, kes: int, sats: int, fee: int, price: int,
            destination: str, payee: str, description: str, key: str, reference: str | None = None,
            within: Callable[[Session], None] | None = None) -> Receipt:
    """Reserve `sats` + `fee` (a quote for `kes` at `price`) for a payout in KES on an M-Pesa rail,
    with its payout row; the policy's withdrawal rules (the KES bounds, balance, daily limit) are
    decided under the customer's row lock. Callers check the PIN (or hold the customer's standing
    consent) first. Raises InsufficientBalance, PolicyDenied (nothing reserved); a replay of `key`
    gets the first receipt. `within(session)`: the caller's check in the reservation's transaction,
    before anything is reserved (a standing order's: still active; it raises to move nothing)."""
    rail = rail_of(svc, rail_name)
    reference = reference or new_reference()
    rail_key = rail_key_for(svc, rail_name, reference)

    def work() -> Receipt:
        with svc.db.write() as s:
            if within is not None:
                within(s)

            def check(after: int) -> int:
                def decide(today: int) -> None:
                    decision = svc.policy.withdraw(kes, after + sats + fee, today, price)
                    if not decision.allowed:
                        raise PolicyDenied(decision.reason or "denied")
                limits, counted = tiers.caps(svc.policy, user.tier, price), tiers.payout_counted(svc.policy, price, kes,
                                                                                                    sats)
                return movements.check_out(s, svc.policy, user.id, limits, sats, decide, counted)
            return books.reserve(s, rail, user.id, sats, fee, destination, key, check=check, amount_kes=kes,
                                 counterparty=payee, description=description, reference=reference,
                                 rail_key=rail_key)

    return movements.run_once(svc.db, key, work)


def send(svc: Services, rail_name: str, reference: str) -> Answer:
    """Ask the rail to pay a reserved payout (machine.send)."""
    return machine.send(svc.db, rail_of(svc, rail_name), reference)


def payee_name(command: str, party: str, account: str) -> str:
    """How statements, screens and SMS name a business paid by M-Pesa (BUY_GOODS: a till)."""
    if command == BUY_GOODS:
        return f"Till {party}"
    return f"Paybill {party} acct {account}"
