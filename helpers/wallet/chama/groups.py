"""Chama groups: made, joined by invitation (accepted by USSD), paid into from a member's balance,
left. Every move of money is one journal entry between a customer and the group's ledger account
(`chama:<id>`, credit-normal: what the group holds is minus its balance), written by journal.record,
which never lets a group's account go below zero."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.refs import new_reference
from helpers.wallet.chama.tables import (ACCOUNT_KIND, ACTIVE, CHAIR, INVITED, LEFT, MEMBER, OFFICIALS, OPEN, PAID,
                                         PROPOSER_LEFT, SECRETARY, TREASURER, Chama, ChamaBallot, ChamaMember,
                                         ChamaProposal, account)
from helpers.wallet.customers import users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import PolicyDenied, WalletError
from helpers.wallet.ledger import journal
from helpers.wallet.ledger.movements import Receipt, run_once, spend_check
from helpers.wallet.rules import Policy
from models import CREDIT, DEBIT, RESERVED, SENT, LedgerAccount, Payout, Posting, Transaction, User, utcnow

CONTRIBUTION, LEAVING, PAYOUT = "chama-in", "chama-leave", "chama-out"  # the entries' kinds
ENTRY_TYPE = "chama"
_NAME = re.compile(r"[A-Za-z][A-Za-z ]*")


class ChamaRefused(WalletError):
    """Not allowed in this group now (`reason`: not-member, not-official, full, already-member,
    bad-name, bad-rule, own-phone, chair-stays, not-chair, payout-in-flight); nothing changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class GroupView:
    id: int
    name: str
    approvals_needed: int
    leave_refund_pct: int
    holds: int  # sats in the group's account
    role: str  # the caller's
    status: str  # the caller's: invited or active


def _write(s: Session, statement: Any, params: Any = None) -> CursorResult:
    """An INSERT or UPDATE in the session's transaction, with its rowcount and new key."""
    return cast(CursorResult, s.execute(statement, params))


def tidy_name(policy: Policy, typed: str) -> str | None:
    """A group's name as typed on a keypad, tidied: letters and spaces, within the policy's bounds."""
    name = " ".join(typed.split())
    if not _NAME.fullmatch(name) or not policy.value("chama-name-min") <= len(name) <= policy.value("chama-name-max"):
        return None
    return name


def _holds(s: Session, chama_id: int, lock: bool = False) -> int:
    query = select(LedgerAccount.balance_sats).where(LedgerAccount.code == account(chama_id))
    return -int(s.execute(query.with_for_update() if lock else query).scalar() or 0)


def _groups(s: Session, user_id: int, chama_id: int | None = None) -> list[GroupView]:
    query = (select(Chama.id, Chama.name, Chama.approvals_needed, Chama.leave_refund_pct, ChamaMember.role,
                    ChamaMember.status)
             .join(ChamaMember, ChamaMember.chama_id == Chama.id)
             .where(ChamaMember.user_id == user_id, ChamaMember.status.in_((INVITED, ACTIVE))).order_by(Chama.id))
    if chama_id is not None:
        query = query.where(Chama.id == chama_id)
    rows = s.execute(query).all()
    # each group's account by its code, matched here: on MySQL a code built in SQL has the
    # connection's collation, not the column's, and the join is refused
    codes = [account(row[0]) for row in rows]
    held = dict(s.execute(select(LedgerAccount.code, LedgerAccount.balance_sats)
                          .where(LedgerAccount.code.in_(codes))).all()) if codes else {}
    return [GroupView(row[0], row[1], row[2], row[3], -int(held.get(account(row[0]), 0)), row[4], row[5])
            for row in rows]


def mine(db: Database, user_id: int) -> list[GroupView]:
    """The groups a customer belongs to or is invited to, oldest first."""
    with db.read() as s:
        return _groups(s, user_id)


def get(db: Database, user_id: int, chama_id: int) -> GroupView | None:
    with db.read() as s:
        found = _groups(s, user_id, chama_id)
    return found[0] if found else None


def leave_choices(policy: Policy) -> list[int]:
    """The leave rules a group may choose when it is made (percent of a leaver's contributions
    given back), in the order the screen offers them (atoms.metta's chama-leave-choice)."""
    return [policy.value_of("chama-leave-choice", str(n)) for n in range(1, policy.value("chama-leave-choices") + 1)]


def create(db: Database, policy: Policy, user: UserView, name: str, approvals: int,
           leave_pct: int | None = None) -> int:
    """A new group, its creator its chair, with its rules (`approvals` of a payout besides its
    proposer's; `leave_pct` of their contributions back to a member who leaves, one of
    leave_choices, None: the policy's default) and its ledger account. Raises ChamaRefused
    (bad-name, bad-rule)."""
    tidy = tidy_name(policy, name)
    if tidy is None:
        raise ChamaRefused("bad-name")
    if not 1 <= approvals <= policy.value("chama-max-approvals"):
        raise ChamaRefused("bad-rule")
    pct = policy.value("chama-leave-refund-percent") if leave_pct is None else leave_pct
    if pct not in leave_choices(policy) and leave_pct is not None:
        raise ChamaRefused("bad-rule")
    with db.write() as s:
        chama_id = _write(s, insert(Chama).values(
            name=tidy, approvals_needed=approvals, leave_refund_pct=pct,
            created_by=user.id, created_at=utcnow())).inserted_primary_key[0]  # type: ignore[index]
        _write(s, insert(LedgerAccount).values(code=account(chama_id), kind=ACCOUNT_KIND, balance_sats=0))
        _write(s, insert(ChamaMember).values(chama_id=chama_id, user_id=user.id, role=CHAIR, status=ACTIVE,
                                             joined_at=utcnow(), forfeited_sats=0))
    return int(chama_id)


def _member(s: Session, chama_id: int, user_id: int) -> tuple[str, str] | None:
    """(role, status) of a customer in a group, or None."""
    row = s.execute(select(ChamaMember.role, ChamaMember.status)
                    .where(ChamaMember.chama_id == chama_id, ChamaMember.user_id == user_id)).first()
    return (row[0], row[1]) if row is not None else None


def require_active(s: Session, chama_id: int, user_id: int) -> str:
    """The member's role; raises ChamaRefused('not-member') unless they are an active member."""
    found = _member(s, chama_id, user_id)
    if found is None or found[1] != ACTIVE:
        raise ChamaRefused("not-member")
    return found[0]


def invite(db: Database, policy: Policy, inviter: UserView, chama_id: int, phone: str, service_code: str) -> None:
    """An official invites a phone (registered now if new); the invitee accepts by USSD. A member
    who left may be invited again. Raises ChamaRefused (not-official, full, already-member, own-phone)."""
    if phone == inviter.phone:
        raise ChamaRefused("own-phone")
    with db.write() as s:
        if require_active(s, chama_id, inviter.id) not in OFFICIALS:
            raise ChamaRefused("not-official")
        counted = s.execute(select(func.count()).select_from(ChamaMember).where(
            ChamaMember.chama_id == chama_id, ChamaMember.status.in_((INVITED, ACTIVE)))).scalar()
        if int(counted or 0) >= policy.value("chama-max-members"):
            raise ChamaRefused("full")
        invitee_id, language, _created = users.find_or_add(s.connection(), phone, inviter.language)
        found = _member(s, chama_id, invitee_id)
        if found is not None and found[1] != LEFT:
            raise ChamaRefused("already-member")
        if found is None:
            try:
                with s.begin_nested():
                    _write(s, insert(ChamaMember).values(chama_id=chama_id, user_id=invitee_id, role=MEMBER,
                                                         status=INVITED, forfeited_sats=0))
            except IntegrityError:  # invited at the same moment by another official
                raise ChamaRefused("already-member") from None
        elif _write(s, update(ChamaMember).where(ChamaMember.chama_id == chama_id, ChamaMember.user_id == invitee_id,
                                                 ChamaMember.status == LEFT)
                       .values(status=INVITED, role=MEMBER)).rowcount != 1:
            raise ChamaRefused("already-member")
        name = s.execute(select(Chama.name).where(Chama.id == chama_id)).scalar_one()
        sms.queue(s, phone, t(language, "sms.chama-invite", phone=inviter.phone, group=name, code=service_code))


def appoint(db: Database, chair: UserView, chama_id: int, phone: str, role: str) -> None:
    """The chair makes an active member treasurer, secretary or a plain member again (officials
    invite). Raises ChamaRefused (not-chair, not-member)."""
    if role not in (TREASURER, SECRETARY, MEMBER):
        raise ValueError(f"not a role the chair gives: {role}")
    with db.write() as s:
        if require_active(s, chama_id, chair.id) != CHAIR:
            raise ChamaRefused("not-chair")
        member_id = s.execute(select(User.id).where(User.phone == phone)).scalar()
        if member_id is None or member_id == chair.id or _write(s, update(ChamaMember).where(
                ChamaMember.chama_id == chama_id, ChamaMember.user_id == member_id, ChamaMember.status == ACTIVE)
                .values(role=role)).rowcount != 1:
            raise ChamaRefused("not-member")


def answer_invite(db: Database, user: UserView, chama_id: int, accept: bool) -> bool:
    """The invitee accepts (active) or declines (left) once; False: no invitation open."""
    with db.write() as s:
        return _write(s, update(ChamaMember).where(
            ChamaMember.chama_id == chama_id, ChamaMember.user_id == user.id, ChamaMember.status == INVITED)
            .values(status=ACTIVE if accept else LEFT, joined_at=utcnow() if accept else None)).rowcount == 1


def contribute(db: Database, policy: Policy, user: UserView, chama_id: int, amount: int, key: str) -> Receipt:
    """`amount` sats from an active member's balance into the group: one entry (customer ->
    group), once per `key`, counted in the day's sends and held to their limit like a send.
    Raises InsufficientBalance, PolicyDenied, ChamaRefused, AccountLocked."""
    decision = policy.amount(amount)
    if not decision.allowed:
        raise PolicyDenied(decision.reason or "denied")

    def work() -> Receipt:
        with db.write() as s:
            require_active(s, chama_id, user.id)
            name = s.execute(select(Chama.name).where(Chama.id == chama_id)).scalar_one()
            ref = new_reference()
            recorded = journal.record(s, journal.Entry(CONTRIBUTION, ref, user.id, ENTRY_TYPE, DEBIT, amount,
                                                       counterparty=name, idempotency_key=key),
                                      [journal.customer(user.id, amount), journal.house(account(chama_id), -amount)],
                                      check=spend_check(s, policy, user.id, amount, user.tier))
            after = recorded.balances[user.id]
            sms.queue(s, user.phone, t(user.language, "sms.chama-in", amount=amount, group=name, ref=ref,
                                       balance=after))
            return Receipt(ref, amount, 0, after, transaction_id=recorded.id)

    return run_once(db, key, work)


def contributions(s: Session, chama_id: int, user_id: int | None = None) -> dict[int, int]:
    """What each member put in and has not taken back on leaving nor left behind by the group's
    rule when they left (the group's postings, less their forfeited_sats): what a member who comes
    back counts starts again from what they put in since."""
    query = (select(Transaction.user_id, -func.sum(Posting.amount_sats))
             .join(Transaction, Transaction.id == Posting.entry_id)
             .where(Posting.account == account(chama_id), Transaction.kind.in_((CONTRIBUTION, LEAVING)))
             .group_by(Transaction.user_id))
    kept = select(ChamaMember.user_id, ChamaMember.forfeited_sats).where(ChamaMember.chama_id == chama_id)
    if user_id is not None:
        query = query.where(Transaction.user_id == user_id)
        kept = kept.where(ChamaMember.user_id == user_id)
    forfeited = {int(uid): int(sats) for uid, sats in s.execute(kept)}
    return {int(uid): int(total) - forfeited.get(int(uid), 0) for uid, total in s.execute(query)}


def leave_refund(db: Database, user_id: int, chama_id: int) -> int:
    """What a member would get back on leaving now, by the group's rule (at most what it holds)."""
    with db.read() as s:
        return _refund(s, user_id, chama_id)


def _refund(s: Session, user_id: int, chama_id: int, lock: bool = False) -> int:
    return _settle(s, user_id, chama_id, lock)[0]


def _settle(s: Session, user_id: int, chama_id: int, lock: bool = False) -> tuple[int, int]:
    """(what a leaver gets back by the group's rule, at most what it holds; what they leave behind
    of their contributions)."""
    pct = s.execute(select(Chama.leave_refund_pct).where(Chama.id == chama_id)).scalar_one()
    counted = max(0, contributions(s, chama_id, user_id).get(user_id, 0))
    refund = min(counted * int(pct) // 100, _holds(s, chama_id, lock))
    return refund, counted - refund


def _withdraw_say(s: Session, chama_id: int, user_id: int) -> None:
    """A leaver's say on the group's open proposals ends with their membership: their ballots
    (cast or not) are withdrawn, so no approval of theirs counts, then or if they come back; a
    proposal of theirs is closed (no one is left to answer for it, and a payout the group did
    not yet approve should not outlive its proposer's membership). The open proposals are locked
    first (in id order), so a last approval deciding one now finishes before or counts without them."""
    open_ids = list(s.execute(select(ChamaProposal.id).where(ChamaProposal.chama_id == chama_id,
                                                            ChamaProposal.status == OPEN)
                              .order_by(ChamaProposal.id).with_for_update()).scalars())
    if not open_ids:
        return
    _write(s, delete(ChamaBallot).where(ChamaBallot.proposal_id.in_(open_ids), ChamaBallot.user_id == user_id))
    _write(s, update(ChamaProposal).where(ChamaProposal.id.in_(open_ids), ChamaProposal.proposer_id == user_id,
                                          ChamaProposal.status == OPEN).values(status=PROPOSER_LEFT))


def _in_flight(s: Session, chama_id: int) -> bool:
    """Has the group a payout reserved or sent, not yet posted or voided (read under the lock of
    the group's account, which a payout's reservation takes too)?"""
    return s.execute(select(ChamaProposal.id).join(Payout, Payout.reference == ChamaProposal.payout_ref)
                     .where(ChamaProposal.chama_id == chama_id, ChamaProposal.status == PAID,
                            Payout.state.in_((RESERVED, SENT))).limit(1)).first() is not None


def leave(db: Database, user: UserView, chama_id: int, key: str) -> Receipt:
    """The member leaves (their ballots on open proposals withdrawn, their own proposals closed)
    and gets back what the group's rule says, in one transaction; what the rule keeps stays in the
    group, theirs no more (forfeited_sats). The chair leaves last. Raises ChamaRefused."""

    def work() -> Receipt:
        with db.write() as s:
            role = require_active(s, chama_id, user.id)
            others = s.execute(select(func.count()).select_from(ChamaMember).where(
                ChamaMember.chama_id == chama_id, ChamaMember.status == ACTIVE,
                ChamaMember.user_id != user.id)).scalar()
            if role == CHAIR and others:
                raise ChamaRefused("chair-stays")
            _withdraw_say(s, chama_id, user.id)
            refund, kept = _settle(s, user.id, chama_id, lock=True)
            if _in_flight(s, chama_id):  # its sats may come back: the rule would be applied to too little
                raise ChamaRefused("payout-in-flight")
            left = _write(s, update(ChamaMember).where(ChamaMember.chama_id == chama_id, ChamaMember.user_id == user.id,
                                                       ChamaMember.status == ACTIVE)
                          .values(status=LEFT, forfeited_sats=ChamaMember.forfeited_sats + kept)).rowcount
            if left != 1:  # left meanwhile in another session: refunded there, once
                raise ChamaRefused("not-member")
            name = s.execute(select(Chama.name).where(Chama.id == chama_id)).scalar_one()
            ref, balance, entry_id = new_reference(), user.balance_sats, 0
            if refund > 0:
                recorded = journal.record(s, journal.Entry(LEAVING, ref, user.id, ENTRY_TYPE, CREDIT, refund,
                                                           counterparty=name, idempotency_key=key),
                                          [journal.house(account(chama_id), refund),
                                           journal.customer(user.id, -refund)])
                balance, entry_id = recorded.balances[user.id], recorded.id
            sms.queue(s, user.phone, t(user.language, "sms.chama-left", group=name, amount=refund, balance=balance))
            return Receipt(ref, refund, 0, balance, transaction_id=entry_id)

    return run_once(db, key, work)


@dataclass(frozen=True)
class MemberLine:
    phone: str
    name: str | None
    role: str
    status: str
    contributed: int


def statement(db: Database, chama_id: int) -> tuple[int, list[MemberLine]]:
    """(what the group holds, its members with what each contributed, biggest first)."""
    with db.read() as s:
        given = contributions(s, chama_id)
        rows = s.execute(select(ChamaMember.user_id, User.phone, User.name, ChamaMember.role, ChamaMember.status)
                         .join(User, and_(User.id == ChamaMember.user_id)).where(ChamaMember.chama_id == chama_id))
        lines = [MemberLine(phone, name, role, status, given.get(uid, 0)) for uid, phone, name, role, status in rows]
        return _holds(s, chama_id), sorted(lines, key=lambda line: -line.contributed)
