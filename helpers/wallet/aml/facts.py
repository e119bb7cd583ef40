"""The monitoring rules' facts (issue 34): per customer, from the journal, within each rule's
window. Python only counts and sums (one grouped query per rule over every customer, then a few
for the customers it found); atoms.metta holds every number and decides each rule (`aml-<rule>`),
asked once per customer that has any activity of the kind (answers are cached by their facts).

A movement is a `transactions` row that is not an entry posting or voiding another
(`follows_id` is NULL); money out is a debit movement that did not fail (pending or settled) and
is not an operator's adjustment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from helpers.wallet.customers import tiers
from helpers.wallet.rules import Policy
from models import (ADJUST, CREDIT, DEBIT, PENDING, SEND, SETTLED, TOPUP, WITHDRAW, PhoneGuard, Posting,
                    Transaction, User, utcnow)

STRUCTURING, FAN_IN, FAN_OUT, RAPID = "structuring", "fan-in", "fan-out", "rapid-in-out"
DORMANT, AFTER_RESET, SHARED_DESTINATION = "dormant-active", "after-reset", "shared-destination"
RULES = (STRUCTURING, FAN_IN, FAN_OUT, RAPID, DORMANT, AFTER_RESET, SHARED_DESTINATION)
LIGHTNING_OUT_KIND = "lightning-pending"  # a Lightning payment's reservation (payouts/books.reserve)
MOVEMENT_IDS = 50  # the most movements a case names (the report lists them)


@dataclass(frozen=True)
class Hit:
    """A rule's hit on one customer: what opens a case (unique by rule, customer and window_key)."""

    rule: str
    user_id: int
    phone: str
    window_key: str
    facts: dict = field(default_factory=dict)
    movement_ids: tuple[int, ...] = ()


# ------------------------------------------------------------------ the caps a rule compares with
def payment_cap_sats(policy: Policy, tier: int | None = None, price: int | None = None) -> int:
    """The per-payment cap structuring is measured against: the policy's for everyone, and a tier's
    own (issue 34) at `price` where it is lower."""
    cap = policy.value("payment-max-sats")
    if tier is None:
        return cap
    return min(cap, tiers.caps(policy, tier, price or policy.value("fixed-kes-per-btc")).payment)


def _window(policy: Policy, name: str, now: dt.datetime) -> tuple[int, dt.datetime]:
    hours = policy.value(name)
    return hours, now - dt.timedelta(hours=hours)


_MOVEMENT = Transaction.follows_id.is_(None)
_OUT = (_MOVEMENT & (Transaction.direction == DEBIT) & Transaction.status.in_((PENDING, SETTLED))
        & (Transaction.type != ADJUST))


def _phones(s: Session, user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    return {uid: phone for uid, phone in s.execute(select(User.id, User.phone).where(User.id.in_(user_ids)))}


def _ids(s: Session, *where: ColumnElement[bool]) -> tuple[int, ...]:
    rows = s.scalars(select(Transaction.id).where(*where).order_by(Transaction.id).limit(MOVEMENT_IDS))
    return tuple(rows)


def _day(when: dt.datetime) -> str:
    return when.date().isoformat()


# ------------------------------------------------------------------ the rules
def structuring(s: Session, policy: Policy, now: dt.datetime) -> list[Hit]:
    """Several movements out just under the per-payment cap within the window."""
    hours, since = _window(policy, "aml-structuring-window-h", now)
    price = tiers.stored_price(s, policy)
    found: list[Hit] = []
    for tier in range(policy.value("top-tier") + 1):  # each tier's customers against their own cap
        cap = payment_cap_sats(policy, tier, price)
        floor = policy.aml_near_cap_floor(cap)
        near = (_OUT & (Transaction.created_at >= since) & Transaction.amount_sats.between(floor, cap)
                & Transaction.user_id.in_(select(User.id).where(User.tier == tier)))
        rows = s.execute(select(Transaction.user_id, func.count(), func.sum(Transaction.amount_sats),
                                func.min(Transaction.created_at)).where(near).group_by(Transaction.user_id)).all()
        hits = [(uid, int(n), int(total), first) for uid, n, total, first in rows
                if policy.aml_hit(STRUCTURING, int(n))]
        phones = _phones(s, {h[0] for h in hits})
        found += [Hit(STRUCTURING, uid, phones[uid], _day(first),
                      {"near_cap_count": n, "near_cap_sats": total, "cap_sats": cap, "floor_sats": floor,
                       "window_h": hours, "tier": tier},
                      _ids(s, near, Transaction.user_id == uid)) for uid, n, total, first in hits]
    return found


def fan_in(s: Session, policy: Policy, now: dt.datetime) -> list[Hit]:
    """Many different customers paying one (transfers and paid requests) within the window."""
    hours, since = _window(policy, "aml-fan-window-h", now)
    paid = (_MOVEMENT & (Transaction.created_at >= since) & (Posting.user_id.is_not(None))
            & (Posting.amount_sats < 0) & (Transaction.user_id != Posting.user_id)
            & Transaction.status.in_((PENDING, SETTLED)))
    rows = s.execute(select(Posting.user_id, func.count(Transaction.user_id.distinct()),
                            func.min(Transaction.created_at))
                     .join(Transaction, Transaction.id == Posting.entry_id).where(paid)
                     .group_by(Posting.user_id)).all()
    hits = [(int(uid), int(n), first) for uid, n, first in rows if uid is not None and policy.aml_hit(FAN_IN, int(n))]
    phones = _phones(s, {h[0] for h in hits})
    out = []
    for uid, n, first in hits:
        ids = tuple(s.scalars(select(Transaction.id).join(Posting, Posting.entry_id == Transaction.id)
                              .where(paid, Posting.user_id == uid).order_by(Transaction.id).limit(MOVEMENT_IDS)))
        out.append(Hit(FAN_IN, uid, phones[uid], _day(first), {"payers": n, "window_h": hours}, ids))
    return out


def fan_out(s: Session, policy: Policy, now: dt.datetime) -> list[Hit]:
    """One customer paying many different counterparties within the window."""
    hours, since = _window(policy, "aml-fan-window-h", now)
    out = _OUT & (Transaction.created_at >= since) & Transaction.counterparty.is_not(None)
    rows = s.execute(select(Transaction.user_id, func.count(Transaction.counterparty.distinct()),
                            func.min(Transaction.created_at)).where(out).group_by(Transaction.user_id)).all()
    hits = [(uid, int(n), first) for uid, n, first in rows if policy.aml_hit(FAN_OUT, int(n))]
    phones = _phones(s, {h[0] for h in hits})
    return [Hit(FAN_OUT, uid, phones[uid], _day(first), {"payees": n, "window_h": hours},
                _ids(s, out, Transaction.user_id == uid)) for uid, n, first in hits]


def rapid_in_out(s: Session, policy: Policy, now: dt.datetime) -> list[Hit]:
    """M-Pesa top-ups, then most of them withdrawn to M-Pesa soon after, within the window."""
    hours, since = _window(policy, "aml-rapid-window-h", now)
    topups = (_MOVEMENT & (Transaction.type == TOPUP) & (Transaction.direction == CREDIT)
              & (Transaction.status == SETTLED) & (Transaction.created_at >= since))
    came = {uid: (int(total), first) for uid, total, first in s.execute(
        select(Transaction.user_id, func.sum(Transaction.amount_sats), func.min(Transaction.created_at))
        .where(topups).group_by(Transaction.user_id)).all()}
    if not came:
        return []
    withdrawals = _OUT & (Transaction.type == WITHDRAW) & (Transaction.created_at >= since)
    went: dict[int, int] = defaultdict(int)
    for uid, amount, when in s.execute(select(Transaction.user_id, Transaction.amount_sats, Transaction.created_at)
                                       .where(withdrawals, Transaction.user_id.in_(list(came)))).all():
        if when >= came[uid][1]:
            went[uid] += int(amount)
    hits = [(uid, total, went[uid], first) for uid, (total, first) in came.items()
            if went[uid] and policy.aml_hit(RAPID, total, went[uid])]
    phones = _phones(s, {h[0] for h in hits})
    return [Hit(RAPID, uid, phones[uid], _day(first), {"topped_up_sats": total, "withdrawn_sats": out,
                                                       "window_h": hours},
                _ids(s, Transaction.user_id == uid, Transaction.created_at >= first, (topups | withdrawals)))
            for uid, total, out, first in hits]


def dormant_active(s: Session, policy: Policy, now: dt.datetime) -> list[Hit]:
    """No money in or out for a long time, then money out within the window."""
    hours, since = _window(policy, "aml-dormant-window-h", now)
    out = _OUT & (Transaction.created_at >= since)
    woke = {uid: (int(total), first) for uid, total, first in s.execute(
        select(Transaction.user_id, func.sum(Transaction.amount_sats), func.min(Transaction.created_at))
        .where(out).group_by(Transaction.user_id)).all()}
    if not woke:
        return []
    # the last entry that moved the customer's balance before the window, either side of it (a
    # transfer received is the payer's movement, and the payee's posting)
    before = {uid: last for uid, last in s.execute(
        select(Posting.user_id, func.max(Transaction.created_at)).join(Transaction, Transaction.id == Posting.entry_id)
        .where(Transaction.created_at < since, Posting.user_id.in_(list(woke)))
        .group_by(Posting.user_id))}
    created = {uid: at for uid, at in s.execute(select(User.id, User.created_at).where(User.id.in_(list(woke))))}
    hits = []
    for uid, (total, first) in woke.items():
        last = before.get(uid) or created.get(uid) or first
        idle = max(0, (first - last).days)
        if policy.aml_hit(DORMANT, idle, total):
            hits.append((uid, idle, total, first, last))
    phones = _phones(s, {h[0] for h in hits})
    return [Hit(DORMANT, uid, phones[uid], _day(first), {"idle_days": idle, "sats_out": total,
                                                         "last_before": last.isoformat(" ", "seconds"),
                                                         "window_h": hours},
                _ids(s, out, Transaction.user_id == uid)) for uid, idle, total, first, last in hits]


def after_reset(s: Session, policy: Policy, now: dt.datetime) -> list[Hit]:
    """Money out within the window after a SIM swap, or after a PIN set again (the account had
    paid out before it: not the first PIN)."""
    hours = policy.value("aml-after-reset-window-h")
    window = dt.timedelta(hours=hours)
    lookback = now - window - dt.timedelta(days=1)  # an hourly scan sees every event's whole window
    events: dict[int, tuple[dt.datetime, str]] = {}
    for uid, swapped in s.execute(select(User.id, PhoneGuard.last_swap_at)
                                  .join(PhoneGuard, PhoneGuard.phone == User.phone)
                                  .where(PhoneGuard.last_swap_at >= lookback)).all():
        if swapped is not None:
            events[uid] = (swapped, "sim-swap")
    for uid, pin_set in s.execute(select(User.id, User.pin_set_at).where(User.pin_set_at >= lookback)).all():
        if pin_set is None:
            continue
        paid_before = s.scalar(select(Transaction.id).where(_OUT, Transaction.user_id == uid,
                                                            Transaction.created_at < pin_set).limit(1))
        if paid_before is not None and (uid not in events or pin_set > events[uid][0]):
            events[uid] = (pin_set, "pin-reset")
    hits = []
    for uid, (when, what) in events.items():
        out = _OUT & (Transaction.user_id == uid) & Transaction.created_at.between(when, when + window)
        total = int(s.scalar(select(func.coalesce(func.sum(Transaction.amount_sats), 0)).where(out)) or 0)
        if total and policy.aml_hit(AFTER_RESET, total):
            hits.append((uid, when, what, total, _ids(s, out)))
    phones = _phones(s, {h[0] for h in hits})
    return [Hit(AFTER_RESET, uid, phones[uid], _day(when), {"event": what, "event_at": when.isoformat(" ", "seconds"),
                                                            "sats_out": total, "window_h": hours}, ids)
            for uid, when, what, total, ids in hits]


def shared_destination(s: Session, policy: Policy, now: dt.datetime) -> list[Hit]:
    """One Lightning destination paid from many accounts within the window: a case for each."""
    hours, since = _window(policy, "aml-shared-destination-window-h", now)
    paid = (_OUT & (Transaction.type == SEND) & (Transaction.kind == LIGHTNING_OUT_KIND)
            & (Transaction.created_at >= since) & Transaction.counterparty.is_not(None))
    rows = s.execute(select(Transaction.counterparty, func.count(Transaction.user_id.distinct()),
                            func.min(Transaction.created_at)).where(paid).group_by(Transaction.counterparty)).all()
    hits = []
    for destination, n, first in rows:
        if not policy.aml_hit(SHARED_DESTINATION, int(n)):
            continue
        payers = sorted(set(s.scalars(select(Transaction.user_id)
                                      .where(paid, Transaction.counterparty == destination))))
        phones = _phones(s, set(payers))
        tag = hashlib.sha256(str(destination).encode()).hexdigest()[:16]
        for uid in payers:
            hits.append(Hit(SHARED_DESTINATION, uid, phones[uid], f"{_day(first)}:{tag}",
                            {"destination": destination, "accounts": int(n), "window_h": hours,
                             "other_accounts": [phones[p] for p in payers if p != uid][:20]},
                            _ids(s, paid, Transaction.counterparty == destination, Transaction.user_id == uid)))
    return hits


CHECKS = {STRUCTURING: structuring, FAN_IN: fan_in, FAN_OUT: fan_out, RAPID: rapid_in_out, DORMANT: dormant_active,
          AFTER_RESET: after_reset, SHARED_DESTINATION: shared_destination}


def hits(s: Session, policy: Policy, now: dt.datetime | None = None) -> list[Hit]:
    """Every rule's hits now."""
    when = now or utcnow()
    return [hit for rule in RULES for hit in CHECKS[rule](s, policy, when)]
