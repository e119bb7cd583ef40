"""The demo users of the embedded default (DEMO_MODE): three Kenyan numbers with opening balances."""

from __future__ import annotations

from database import Database
from helpers.wallet.customers import tiers, users
from helpers.wallet.ledger import movements
from models import utcnow

DEMO_USERS = (("+254712345678", 100_000), ("+254787654321", 50_000), ("+254798765432", 75_000))


def seed_demo(db: Database) -> int:
    """Create the demo users that do not exist yet, with their opening balances recorded as
    ledger credits; return how many were created. Safe to run again."""
    created = 0
    for phone, sats in DEMO_USERS:
        with db.write() as s:
            user, new = users.get_or_create(s, phone, "en", "")
            if new:
                # verified as if from documents (tier 2): the demo shows every menu with its
                # amounts; a newcomer who dials the demo starts at tier 0 like any customer
                user.tier, user.tier_at = tiers.DOCUMENTS, utcnow()
                s.flush()
                movements.credit_adjustment(s, user.id, sats, "demo opening balance", key=f"demo:{phone}")
                created += 1
    return created
