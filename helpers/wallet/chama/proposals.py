"""Payouts from a group: a member proposes (to any phone's wallet), every other active member gets a
ballot with a one-time code (SMS), and the payout is paid once, in the transaction of the vote
that reaches the group's rule.

Race-free by construction: a vote first locks its proposal's row (votes on one proposal queue; the
tally is read after the lock, so the second of two simultaneous approvals sees the first); a ballot
is voted once (conditional UPDATE from NULL); the proposal moves open -> paid by a conditional
UPDATE in the same transaction as its entry, whose idempotency key is "chama:<proposal id>"
(unique); the group's account is debited conditionally (journal.record), so two payouts cannot
both spend the same sats. Only ballots of members still active are counted."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.refs import new_reference
from helpers.wallet.chama.groups import ENTRY_TYPE, PAYOUT, ChamaRefused, _holds, _write, require_active
from helpers.wallet.chama.tables import (ACTIVE, EXPIRED, FAILED, NO, OPEN, PAID, REJECTED, YES, Chama, ChamaBallot,
                                         ChamaMember, ChamaProposal, SmsInbox, account)
from helpers.wallet import rules
from helpers.wallet.customers import tiers, users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.ledger import journal, movements
from helpers.wallet.rules import Policy
from models import CREDIT, User, utcnow

log = logging.getLogger(__name__)

# What a vote did: counted (the rule not reached yet), paid, rejected (the rule can no longer be
# met), failed (reached, but the group no longer holds the amount), and refusals that change nothing.
COUNTED, ALREADY, CLOSED, NOT_MEMBER, NO_BALLOT = "counted", "already", "closed", "not-member", "no-ballot"
YES_WORDS, NO_WORDS = ("YES", "NDIYO", "Y"), ("NO", "HAPANA", "N")


@dataclass(frozen=True)
class Pending:
    id: int
    chama_id: int
    group: str
    amount: int
    to_phone: str
    proposer_phone: str
    expires_at: dt.datetime


def propose(db: Database, policy: Policy, user: UserView, chama_id: int, amount: int, to_phone: str) -> int:
    """An active member proposes paying `amount` from the group to `to_phone`'s wallet; each other
    active member gets a ballot and an SMS with its code. Raises PolicyDenied (amount bounds,
    insufficient-balance: the group holds less), ChamaRefused (not-member, no-voters)."""
    decision = policy.amount(amount)
    if not decision.allowed:
        raise PolicyDenied(decision.reason or "denied")
    now = utcnow()
    with db.write() as s:
        require_active(s, chama_id, user.id)
        name, needed = s.execute(select(Chama.name, Chama.approvals_needed).where(Chama.id == chama_id)).one()
        if _holds(s, chama_id) < amount:
            raise PolicyDenied("chama-balance")
        voters = s.execute(select(ChamaMember.user_id, User.phone, User.language)
                           .join(User, User.id == ChamaMember.user_id)
                           .where(ChamaMember.chama_id == chama_id, ChamaMember.status == ACTIVE,
                                  ChamaMember.user_id != user.id)).all()
        if len(voters) < needed:
            raise ChamaRefused("no-voters")
        proposal_id = int(_write(s, insert(ChamaProposal).values(
            chama_id=chama_id, proposer_id=user.id, amount_sats=amount, to_kind="phone", to_phone=to_phone,
            status=OPEN, created_at=now,
            expires_at=now + dt.timedelta(hours=policy.value("chama-proposal-hours")))
        ).inserted_primary_key[0])  # type: ignore[index]
        digits = policy.value("chama-code-digits")
        ballots = [{"proposal_id": proposal_id, "user_id": uid, "code": f"{secrets.randbelow(10 ** digits):0{digits}d}"}
                   for uid, _phone, _language in voters]
        _write(s, insert(ChamaBallot), ballots)
        sms.queue_all(s, [(phone, t(language, "sms.chama-vote", group=name, amount=amount, phone=to_phone,
                                    otp=ballot["code"]))
                          for (_uid, phone, language), ballot in zip(voters, ballots, strict=True)])
    return proposal_id


def pending_for(db: Database, user_id: int, chama_id: int | None = None) -> list[Pending]:
    """Open, unexpired proposals on which this member has not voted yet, oldest first."""
    proposer = User.__table__.alias("proposer")
    query = (select(ChamaProposal.id, ChamaProposal.chama_id, Chama.name, ChamaProposal.amount_sats,
                    ChamaProposal.to_phone, proposer.c.phone, ChamaProposal.expires_at)
             .join(ChamaBallot, ChamaBallot.proposal_id == ChamaProposal.id)
             .join(Chama, Chama.id == ChamaProposal.chama_id)
             .join(proposer, proposer.c.id == ChamaProposal.proposer_id)
             .join(ChamaMember, (ChamaMember.chama_id == ChamaProposal.chama_id) & (ChamaMember.user_id == user_id))
             .where(ChamaBallot.user_id == user_id, ChamaBallot.vote.is_(None), ChamaProposal.status == OPEN,
                    ChamaProposal.expires_at > utcnow(), ChamaMember.status == ACTIVE)
             .order_by(ChamaProposal.id))
    if chama_id is not None:
        query = query.where(ChamaProposal.chama_id == chama_id)
    with db.read() as s:
        return [Pending(*row) for row in s.execute(query)]


def vote(db: Database, policy: Policy, user_id: int, proposal_id: int, yes: bool, code: str | None = None) -> str:
    """Record one member's vote on one proposal (`code`: the one-time code of an SMS reply, which
    must be this member's for it), and pay, reject or leave it open, all in one transaction.
    Returns COUNTED, PAID, REJECTED, FAILED, EXPIRED, or a refusal (ALREADY, CLOSED, NOT_MEMBER,
    NO_BALLOT) that changed nothing."""
    def work() -> str:
        with db.write() as s:
            return _vote(s, policy, user_id, proposal_id, yes, code)

    # the last approval locks the proposal, the group's account, then the payee's row; a payee's
    # contribution locks their row, then the account: a deadlock victim is run again, whole
    return movements.retry_deadlocks(work)


def _vote(s: Session, policy: Policy, user_id: int, proposal_id: int, yes: bool, code: str | None) -> str:
    now = utcnow()
    found = s.execute(select(ChamaProposal.chama_id, ChamaProposal.status, ChamaProposal.expires_at)
                      .where(ChamaProposal.id == proposal_id).with_for_update()).first()
    if found is None:
        return NO_BALLOT
    chama_id, status, expires_at = found
    if status != OPEN:
        return CLOSED
    if expires_at <= now:
        return EXPIRED if _expire(s, proposal_id) else CLOSED
    try:
        require_active(s, chama_id, user_id)
    except ChamaRefused:
        return NOT_MEMBER
    mine = [ChamaBallot.proposal_id == proposal_id, ChamaBallot.user_id == user_id]
    if code is not None:
        mine.append(ChamaBallot.code == code)
    if _write(s, update(ChamaBallot).where(*mine, ChamaBallot.vote.is_(None))
                 .values(vote=YES if yes else NO, voted_at=now)).rowcount != 1:
        had = s.execute(select(ChamaBallot.vote).where(*mine)).first()
        return ALREADY if had is not None else NO_BALLOT
    return _decide(s, proposal_id)


def _tally(s: Session, proposal_id: int, chama_id: int) -> tuple[int, int]:
    """(yes, undecided) among the ballots of members still active."""
    yes, undecided = s.execute(
        select(func.coalesce(func.sum(case((ChamaBallot.vote == YES, 1), else_=0)), 0),
               func.coalesce(func.sum(case((ChamaBallot.vote.is_(None), 1), else_=0)), 0))
        .join(ChamaMember, (ChamaMember.user_id == ChamaBallot.user_id) & (ChamaMember.chama_id == chama_id))
        .where(ChamaBallot.proposal_id == proposal_id, ChamaMember.status == ACTIVE)).one()
    return int(yes), int(undecided)


def _over_cap(s: Session, phone: str, amount: int) -> bool:
    """Would `amount` lift the customer of `phone` over their tier's balance cap? Their row is
    locked for the payout that follows (a number with no account yet starts at tier 0, empty)."""
    row = s.execute(select(User.balance_sats, User.tier).where(User.phone == phone).with_for_update()).first()
    balance, tier = (row[0], row[1]) if row is not None else (0, tiers.PHONE_ONLY)
    policy = rules.policy()
    try:
        tiers.check_in(tiers.caps(policy, tier, tiers.stored_price(s, policy)), balance, amount)
    except PolicyDenied:
        return True
    return False


def _decide(s: Session, proposal_id: int) -> str:
    """After a vote, under the proposal's lock: pay when the rule is met, reject when it no longer
    can be, else leave it open."""
    row = s.execute(select(ChamaProposal.chama_id, ChamaProposal.amount_sats, ChamaProposal.to_phone,
                           ChamaProposal.proposer_id, Chama.name, Chama.approvals_needed)
                    .join(Chama, Chama.id == ChamaProposal.chama_id).where(ChamaProposal.id == proposal_id)).one()
    chama_id, amount, to_phone, proposer_id, name, needed = row
    yes, undecided = _tally(s, proposal_id, chama_id)
    proposer_phone, proposer_language = s.execute(select(User.phone, User.language)
                                                  .where(User.id == proposer_id)).one()
    if yes >= needed:
        if _holds(s, chama_id, lock=True) < amount:  # spent by another payout meanwhile
            if _close(s, proposal_id, FAILED):
                sms.queue(s, proposer_phone, t(proposer_language, "sms.chama-failed", group=name, amount=amount,
                                               phone=to_phone))
                return FAILED
            return CLOSED
        if _over_cap(s, to_phone, amount):  # the payee's tier (issue 34): the group's money stays
            if _close(s, proposal_id, FAILED):
                sms.queue(s, proposer_phone, t(proposer_language, "sms.chama-failed", group=name, amount=amount,
                                               phone=to_phone))
                return FAILED
            return CLOSED
        if not _close(s, proposal_id, PAID):
            return CLOSED
        payee_id, payee_language, _created = users.find_or_add(s.connection(), to_phone, "en")
        ref = new_reference()
        recorded = journal.record(s, journal.Entry(PAYOUT, ref, payee_id, ENTRY_TYPE, CREDIT, amount, counterparty=name,
                                                   idempotency_key=f"chama:{proposal_id}"),
                                  [journal.house(account(chama_id), amount), journal.customer(payee_id, -amount)])
        _write(s, update(ChamaProposal).where(ChamaProposal.id == proposal_id).values(entry_id=recorded.id))
        sms.queue_all(s, [(to_phone, t(payee_language, "sms.chama-paid", group=name, amount=amount, ref=ref,
                                       balance=recorded.balances[payee_id])),
                          (proposer_phone, t(proposer_language, "sms.chama-approved", group=name, amount=amount,
                                             phone=to_phone, ref=ref))])
        return PAID
    if yes + undecided < needed:
        if _close(s, proposal_id, REJECTED):
            sms.queue(s, proposer_phone, t(proposer_language, "sms.chama-rejected", group=name, amount=amount,
                                           phone=to_phone))
            return REJECTED
        return CLOSED
    return COUNTED


def _close(s: Session, proposal_id: int, status: str) -> bool:
    """open -> `status`, once (False: closed meanwhile)."""
    return _write(s, update(ChamaProposal).where(ChamaProposal.id == proposal_id, ChamaProposal.status == OPEN)
                     .values(status=status)).rowcount == 1


def _expire(s: Session, proposal_id: int) -> bool:
    if not _close(s, proposal_id, EXPIRED):
        return False
    name, amount, to_phone, phone, language = s.execute(
        select(Chama.name, ChamaProposal.amount_sats, ChamaProposal.to_phone, User.phone, User.language)
        .join(Chama, Chama.id == ChamaProposal.chama_id).join(User, User.id == ChamaProposal.proposer_id)
        .where(ChamaProposal.id == proposal_id)).one()
    sms.queue(s, phone, t(language, "sms.chama-expired", group=name, amount=amount, phone=to_phone))
    return True


def expire_due(db: Database, now: dt.datetime | None = None) -> int:
    """Expire every open proposal past its time (the worker, periodically); each pays nothing and
    its proposer gets an SMS. Returns how many expired."""
    now = now or utcnow()
    with db.read() as s:
        due = s.execute(select(ChamaProposal.id).where(ChamaProposal.status == OPEN, ChamaProposal.expires_at <= now)
                        .order_by(ChamaProposal.id).limit(500)).scalars().all()
    expired = 0
    for proposal_id in due:
        with db.write() as s:
            expired += _expire(s, proposal_id)
    return expired


def parse_reply(text: str) -> tuple[bool, str] | None:
    """(yes, code) from an SMS reply such as "YES 482913" or "hapana 482913"; None if it is not one."""
    words = text.upper().replace(",", " ").replace(".", " ").split()
    if len(words) != 2 or not words[1].isdigit() or words[0] not in YES_WORDS + NO_WORDS:
        return None
    return words[0] in YES_WORDS, words[1]


def sms_reply(db: Database, policy: Policy, phone: str, text: str, message_id: str) -> str:
    """An incoming SMS (Africa's Talking's message id, acted on once: a repeat returns ALREADY): a
    vote by the sender on the open ballot its code names, in the transaction that records the id."""
    parsed = parse_reply(text)
    try:
        return movements.retry_deadlocks(lambda: _sms_reply(db, policy, phone, parsed, message_id))
    except IntegrityError:  # this message id was acted on already (AT retried)
        return ALREADY


def _sms_reply(db: Database, policy: Policy, phone: str, parsed: tuple[bool, str] | None, message_id: str) -> str:
    user_id: int | None = None
    with db.write() as s:
        outcome = "not-a-vote"
        if parsed is not None:
            yes, code = parsed
            user_id = s.execute(select(User.id).where(User.phone == phone)).scalar()
            ballot = None if user_id is None else s.execute(
                select(ChamaBallot.proposal_id).where(ChamaBallot.user_id == user_id, ChamaBallot.code == code)
                .order_by(ChamaBallot.id.desc())).first()
            outcome = NO_BALLOT if ballot is None or user_id is None else _vote(s, policy, user_id, ballot[0], yes,
                                                                                 code)
        _write(s, insert(SmsInbox).values(message_id=message_id[:64], phone=phone[:20], outcome=outcome[:16],
                                          received_at=utcnow()))
        if parsed is not None and user_id is not None:
            language = s.execute(select(User.language).where(User.id == user_id)).scalar() or "en"
            sms.queue(s, phone, t(language, f"sms.chama-reply-{_reply_text(outcome)}"))
        return outcome


def _reply_text(outcome: str) -> str:
    return {COUNTED: "counted", PAID: "counted", REJECTED: "counted", FAILED: "counted"}.get(outcome, "refused")
