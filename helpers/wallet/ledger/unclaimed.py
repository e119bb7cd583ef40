"""Sends nobody claims (issue 33): sats sent to a phone that never created a PIN go back to the
sender once `unclaimed-return-days` (atoms.metta) have passed.

A send to such a phone credits its account at once (movements.transfer) and tells it by SMS the
last day to dial and create a PIN (`claim_by`). After that day ends (UTC) the worker lists the
send (`due`) and gives it back (`give_back`): one journal entry from the recipient to the sender,
in one transaction that holds both customers' rows, so a PIN created at the same moment either
comes first (claimed: nothing moves) or after (the sats are already back). The database keeps a
send from being returned twice: the return's idempotency key names the send (unique). The send's
fee is not returned.

An account counts as unclaimed while it has no PIN and never had one (`pin_set_at`): an
operator's PIN reset clears the PIN of a customer who had one, and their sats stay theirs.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import cast

from sqlalchemy import Table, and_, bindparam, select
from sqlalchemy.exc import IntegrityError

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.phone import mask
from helpers.infra.refs import new_reference
from helpers.wallet.errors import AccountLocked, InsufficientBalance
from helpers.wallet.ledger import journal
from helpers.wallet.rules import Policy
from models import CREDIT, RECEIVE, SETTLED, Posting, Transaction, User, utcnow

log = logging.getLogger(__name__)

KIND = "unclaimed-return"
TRANSFER = "transfer"  # the kind of the entries movements.transfer writes
KEY_PREFIX = "unclaimed:"
# What give_back did: the sats went back; the recipient created a PIN (claimed); an earlier return
# did it; the period is not over; the recipient no longer holds the sats; no such settled send.
RETURNED, CLAIMED, ALREADY, NOT_DUE, SHORT, NOTHING = "returned", "claimed", "already", "not-due", "short", "nothing"

_ENTRIES = cast(Table, Transaction.__table__)
_POSTINGS = cast(Table, Posting.__table__)
_USERS = cast(Table, User.__table__)
_RETURNS = _ENTRIES.alias("returns")
_UNCLAIMED = and_(_USERS.c.pin_hash.is_(None), _USERS.c.pin_set_at.is_(None))
# A send and its recipient's leg: the customer it credited who is not the sender.
_SEND = (select(_ENTRIES.c.id, _ENTRIES.c.user_id, _ENTRIES.c.reference, _ENTRIES.c.created_at,
                _POSTINGS.c.user_id.label("recipient_id"), (-_POSTINGS.c.amount_sats).label("amount"))
         .join(_POSTINGS, _POSTINGS.c.entry_id == _ENTRIES.c.id)
         .where(_ENTRIES.c.kind == TRANSFER, _ENTRIES.c.status == SETTLED, _POSTINGS.c.user_id.is_not(None),
                _POSTINGS.c.user_id != _ENTRIES.c.user_id, _POSTINGS.c.amount_sats < 0))
_ONE_SEND = _SEND.where(_ENTRIES.c.id == bindparam("id"))
_DUE = (
    _SEND.with_only_columns(_ENTRIES.c.id)
    .join(_USERS, _USERS.c.id == _POSTINGS.c.user_id)
    .where(_ENTRIES.c.created_at < bindparam("before", type_=Transaction.created_at.type), _UNCLAIMED,
           _USERS.c.balance_sats >= -_POSTINGS.c.amount_sats)
    .order_by(_ENTRIES.c.id).limit(bindparam("limit"))
)
# Which of these sends were returned already, by their returns' keys (compared in Python: on MySQL a
# key built in SQL has the connection's collation, not the column's, and the comparison fails).
_RETURNED_KEYS = select(_RETURNS.c.idempotency_key).where(_RETURNS.c.idempotency_key.in_(bindparam("keys",
                                                                                                  expanding=True)))
# Both customers' rows, locked in id order as a transfer locks them (the two never deadlock).
_LOCK_BOTH = (
    select(_USERS.c.id, _USERS.c.phone, _USERS.c.language, _USERS.c.balance_sats, _USERS.c.pin_hash,
           _USERS.c.pin_set_at)
    .where(_USERS.c.id.in_([bindparam("a"), bindparam("b")])).order_by(_USERS.c.id).with_for_update()
)
_RETURNED = select(_ENTRIES.c.id).where(_ENTRIES.c.idempotency_key == bindparam("key"))


def never_claimed(pin_hash: str | None, pin_set_at: dt.datetime | None) -> bool:
    """No PIN now and none ever set: sats sent to this account go back if it stays so."""
    return pin_hash is None and pin_set_at is None


def claim_by(policy: Policy, sent_at: dt.datetime) -> dt.date:
    """The last day (UTC) on which the recipient of a send made at `sent_at` can claim it: the
    sats go back once this day is over."""
    return (sent_at + dt.timedelta(days=policy.value("unclaimed-return-days"))).date()


def _sent_before(policy: Policy, now: dt.datetime) -> dt.datetime:
    """Sends made before this moment are due at `now`: their claim day (claim_by) is over."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - dt.timedelta(days=policy.value("unclaimed-return-days"))


def key(transfer_id: int) -> str:
    """The return's idempotency key: one return per send, by the database's unique key."""
    return f"{KEY_PREFIX}{transfer_id}"


def due(db: Database, policy: Policy, now: dt.datetime | None = None, limit: int = 500) -> list[int]:
    """Sends (journal entries of kind transfer, settled) whose claim day is over, whose recipient
    has still never created a PIN and still holds the sats, and that were not returned: oldest
    first, at most `limit`."""
    with db.read() as s:
        found = list(s.execute(_DUE, {"before": _sent_before(policy, now or utcnow()), "limit": limit * 4}).scalars())
        returned = set(s.execute(_RETURNED_KEYS, {"keys": [key(n) for n in found]}).scalars()) if found else set()
    return [n for n in found if key(n) not in returned][:limit]


def give_back(db: Database, policy: Policy, transfer_id: int, now: dt.datetime | None = None) -> str:
    """Return the send `transfer_id` to its sender if it is due and its recipient never created a
    PIN, in one transaction: both rows locked, the recipient's PIN and the send's return checked
    again under the lock, one journal entry (the recipient's debit is conditional) and an SMS to
    each. Returns RETURNED, CLAIMED, ALREADY, NOT_DUE, SHORT or NOTHING; safe to run any number of
    times, on any number of workers at once."""
    try:
        with db.write() as s:
            send = s.execute(_ONE_SEND, {"id": transfer_id}).first()
            if send is None:
                return NOTHING
            if send.created_at >= _sent_before(policy, now or utcnow()):
                return NOT_DUE
            rows = {row.id: row for row in s.execute(_LOCK_BOTH, {"a": send.user_id, "b": send.recipient_id})}
            sender, recipient = rows[send.user_id], rows[send.recipient_id]
            if not never_claimed(recipient.pin_hash, recipient.pin_set_at):
                return CLAIMED
            if s.execute(_RETURNED, {"key": key(transfer_id)}).first() is not None:
                return ALREADY
            ref = new_reference()
            recorded = journal.record(
                s, journal.Entry(KIND, ref, sender.id, RECEIVE, CREDIT, send.amount, counterparty=recipient.phone,
                                 description=f"not claimed: send {send.reference}",
                                 idempotency_key=key(transfer_id)),
                [journal.customer(recipient.id, send.amount), journal.customer(sender.id, -send.amount)],
                known={row.id: row.balance_sats for row in rows.values()})
            days = policy.value("unclaimed-return-days")
            sms.queue_all(s, [
                (sender.phone, t(sender.language, "sms.unclaimed-returned", amount=send.amount, phone=recipient.phone,
                                 days=days, ref=ref, balance=recorded.balances[sender.id])),
                (recipient.phone, t(recipient.language, "sms.unclaimed-gone", amount=send.amount, phone=sender.phone,
                                    days=days, ref=ref)),
            ])
            log.info("send %s to %s was not claimed: returned as %s", send.reference, mask(recipient.phone), ref)
            return RETURNED
    except (InsufficientBalance, AccountLocked):
        log.warning("send %s: its recipient no longer holds the sats; not returned", transfer_id)
        return SHORT
    except IntegrityError:  # another worker returned it first (the key is unique)
        return ALREADY
