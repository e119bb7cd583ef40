"""Payouts from a group: a member proposes (to any phone's wallet, or in KES to M-Pesa or a till),
every other active member gets a ballot with a one-time code (SMS), and the payout is paid once,
in the transaction of the vote that reaches the group's rule (a KES payout: reserved from the
group's account there, with its payout row, then sent on its rail after the commit; the payout
state machine posts it, or voids it back into the group).

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
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra import sms
from helpers.infra.i18n import t
from helpers.infra.rail import Rail
from helpers.infra.refs import new_reference
from helpers.mpesa.provider import BUY_GOODS
from helpers.mpesa.rail import b2b_destination
from helpers.wallet.chama.groups import ENTRY_TYPE, PAYOUT, ChamaRefused, _holds, _write, require_active
from helpers.wallet.chama.tables import (ACTIVE, EXPIRED, FAILED, KES_KINDS, NO, OPEN, PAID, PROPOSER_LEFT, REJECTED,
                                         TO_MPESA, TO_TILL, TO_WALLET, YES, Chama, ChamaBallot, ChamaMember,
                                         ChamaProposal, SmsInbox, account)
from helpers.wallet import rules
from helpers.wallet.customers import tiers, users
from helpers.wallet.customers.users import UserView
from helpers.wallet.errors import PolicyDenied, PriceUnavailable
from helpers.wallet.ledger import journal, movements
from helpers.wallet.payouts import books
from helpers.wallet.rules import Policy
from models import CREDIT, MPESA_B2B_RAIL, MPESA_B2C_RAIL, VOIDED, Payout, User, utcnow

log = logging.getLogger(__name__)

# What a vote did: counted (the rule not reached yet), paid, rejected (the rule can no longer be
# met), failed (reached, but the group no longer holds the amount), and refusals that change nothing.
COUNTED, ALREADY, CLOSED, NOT_MEMBER, NO_BALLOT = "counted", "already", "closed", "not-member", "no-ballot"
NO_PRICE = "no-price"  # an SMS reply that would have decided a KES payout with no price now: not counted
YES_WORDS, NO_WORDS = ("YES", "NDIYO", "Y"), ("NO", "HAPANA", "N")


@dataclass(frozen=True)
class Pending:
    id: int
    chama_id: int
    group: str
    amount: int  # what the group pays, fee included
    to_phone: str
    proposer_phone: str
    expires_at: dt.datetime
    to_kind: str = TO_WALLET
    amount_kes: int | None = None


@dataclass(frozen=True)
class InKes:
    """A KES payout's terms, fixed when proposed: the KES, the sats and fee they cost at `price`."""

    kes: int
    fee: int
    price: int


@dataclass(frozen=True)
class Rails:
    """What pays a KES payout: the rails by name, the rail key we choose for a payout (Daraja
    B2C's originator id; None: the rail names it), how a reserved payout is sent (after the
    vote's commit: machine.send), and the KES per BTC now (None: no current price)."""

    rail: Callable[[str], Rail | None]
    key_for: Callable[[str, str], str | None]
    send: Callable[[str, str], None]
    price_now: Callable[[], int | None] = lambda: None


def payee_label(kind: str, to: str, kes: int | None, shown: Callable[[str], str] = str) -> str:
    """How screens and SMS name a proposal's payee: the phone (`shown` formats it), or the
    M-Pesa phone or till with the KES."""
    if kind == TO_MPESA:
        return f"M-Pesa {shown(to)} (KES {kes})"
    if kind == TO_TILL:
        return f"Till {to} (KES {kes})"
    return shown(to)


def propose(db: Database, policy: Policy, user: UserView, chama_id: int, amount: int, to_phone: str,
            kind: str = TO_WALLET, in_kes: InKes | None = None) -> int:
    """An active member proposes paying `amount` sats from the group to `to_phone`'s wallet (or,
    `kind` mpesa / till with `in_kes`, `in_kes.kes` to that M-Pesa phone or till for `amount` +
    `in_kes.fee` sats); each other active member gets a ballot and an SMS with its code. Raises
    PolicyDenied (amount bounds, chama-balance: the group holds less), ChamaRefused (not-member,
    no-voters)."""
    if (kind in KES_KINDS) != (in_kes is not None) or kind not in (TO_WALLET, *KES_KINDS):
        raise ValueError(f"a {kind} proposal with terms {in_kes}")
    if in_kes is None:  # a KES payout was bounded in KES (kes-range-decision) by the caller
        decision = policy.amount(amount)
        if not decision.allowed:
            raise PolicyDenied(decision.reason or "denied")
    fee = in_kes.fee if in_kes is not None else 0
    now = utcnow()
    with db.write() as s:
        require_active(s, chama_id, user.id)
        name, needed = s.execute(select(Chama.name, Chama.approvals_needed).where(Chama.id == chama_id)).one()
        if _holds(s, chama_id) < amount + fee:
            raise PolicyDenied("chama-balance")
        voters = s.execute(select(ChamaMember.user_id, User.phone, User.language)
                           .join(User, User.id == ChamaMember.user_id)
                           .where(ChamaMember.chama_id == chama_id, ChamaMember.status == ACTIVE,
                                  ChamaMember.user_id != user.id)).all()
        if len(voters) < needed:
            raise ChamaRefused("no-voters")
        proposal_id = int(_write(s, insert(ChamaProposal).values(
            chama_id=chama_id, proposer_id=user.id, amount_sats=amount, to_kind=kind, to_phone=to_phone,
            amount_kes=in_kes.kes if in_kes else None, kes_per_btc=in_kes.price if in_kes else None, fee_sats=fee,
            payout_ref=None, entry_id=None, status=OPEN, created_at=now,
            expires_at=now + dt.timedelta(hours=policy.value("chama-proposal-hours")))
        ).inserted_primary_key[0])  # type: ignore[index]
        digits = policy.value("chama-code-digits")
        ballots = [{"proposal_id": proposal_id, "user_id": uid, "code": f"{secrets.randbelow(10 ** digits):0{digits}d}"}
                   for uid, _phone, _language in voters]
        _write(s, insert(ChamaBallot), ballots)
        label = payee_label(kind, to_phone, in_kes.kes if in_kes else None)
        sms.queue_all(s, [(phone, t(language, "sms.chama-vote", group=name, amount=amount + fee, phone=label,
                                    otp=ballot["code"]))
                          for (_uid, phone, language), ballot in zip(voters, ballots, strict=True)])
    return proposal_id


def pending_for(db: Database, user_id: int, chama_id: int | None = None) -> list[Pending]:
    """Open, unexpired proposals on which this member has not voted yet, oldest first."""
    proposer = User.__table__.alias("proposer")
    query = (select(ChamaProposal.id, ChamaProposal.chama_id, Chama.name,
                    ChamaProposal.amount_sats + ChamaProposal.fee_sats, ChamaProposal.to_phone, proposer.c.phone,
                    ChamaProposal.expires_at, ChamaProposal.to_kind, ChamaProposal.amount_kes)
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


def vote(db: Database, policy: Policy, user_id: int, proposal_id: int, yes: bool, code: str | None = None,
         rails: Rails | None = None) -> str:
    """Record one member's vote on one proposal (`code`: the one-time code of an SMS reply, which
    must be this member's for it), and pay, reject or leave it open, all in one transaction (a KES
    payout, reserved there, is then sent by `rails`; with no price now that vote is not counted:
    PriceUnavailable, nothing written). Returns COUNTED, PAID, REJECTED, FAILED,
    EXPIRED, or a refusal (ALREADY, CLOSED, NOT_MEMBER, NO_BALLOT) that changed nothing."""
    def work() -> str:
        with db.write() as s:
            return _vote(s, policy, user_id, proposal_id, yes, code, rails)

    # the last approval locks the proposal, the group's account, then the payee's row; a payee's
    # contribution locks their row, then the account: a deadlock victim is run again, whole
    outcome = movements.retry_deadlocks(work)
    _send_reserved(db, rails, proposal_id, outcome)
    return outcome


def _send_reserved(db: Database, rails: Rails | None, proposal_id: int, outcome: str) -> None:
    """After the commit of the vote that paid a KES proposal: its payout goes to its rail (once:
    only the vote that reserved it sends it; machine.send acts on a reserved payout only)."""
    if outcome != PAID or rails is None:
        return
    with db.read() as s:
        kind, reference = s.execute(select(ChamaProposal.to_kind, ChamaProposal.payout_ref)
                                    .where(ChamaProposal.id == proposal_id)).one()
    if kind in KES_KINDS and reference:
        rails.send(_rail_name(kind), reference)


def _rail_name(kind: str) -> str:
    return MPESA_B2C_RAIL if kind == TO_MPESA else MPESA_B2B_RAIL


def _vote(s: Session, policy: Policy, user_id: int, proposal_id: int, yes: bool, code: str | None,
          rails: Rails | None = None) -> str:
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
    return _decide(s, proposal_id, rails, policy)


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


def _decide(s: Session, proposal_id: int, rails: Rails | None = None, policy: Policy | None = None) -> str:
    """After a vote, under the proposal's lock: pay when the rule is met, reject when it no longer
    can be, else leave it open. A KES payout is priced again when it is decided: the group pays
    the sats of the proposal or of the price now, whichever is more (hours may pass between the
    two: a group must not keep proposals open to pay at the best old price), and none without a
    price now."""
    row = s.execute(select(ChamaProposal.chama_id, ChamaProposal.amount_sats, ChamaProposal.to_phone,
                           ChamaProposal.proposer_id, Chama.name, Chama.approvals_needed, ChamaProposal.to_kind,
                           ChamaProposal.fee_sats, ChamaProposal.amount_kes)
                    .join(Chama, Chama.id == ChamaProposal.chama_id).where(ChamaProposal.id == proposal_id)).one()
    chama_id, amount, to_phone, proposer_id, name, needed, kind, fee, kes = row
    proposer = s.execute(select(ChamaMember.status).where(ChamaMember.chama_id == chama_id,
                                                          ChamaMember.user_id == proposer_id)).scalar()
    if proposer != ACTIVE:  # left while proposing (a leave sees only committed proposals): theirs closes
        _close(s, proposal_id, PROPOSER_LEFT)
        return CLOSED
    label = payee_label(kind, to_phone, kes)
    yes, undecided = _tally(s, proposal_id, chama_id)
    proposer_phone, proposer_language = s.execute(select(User.phone, User.language)
                                                  .where(User.id == proposer_id)).one()
    if yes >= needed and kind in KES_KINDS:
        repriced = _repriced(s, proposal_id, rails, policy or rules.policy(), int(kes or 0), amount, fee)
        if repriced is None:  # the vote is rolled back: cast again when prices are back
            raise PriceUnavailable()
        amount, fee = repriced
    if yes >= needed:
        # spent by another payout meanwhile, or (a wallet payee) over their tier's cap (issue 34):
        # the group's money stays
        if _holds(s, chama_id, lock=True) < amount + fee or (kind == TO_WALLET and _over_cap(s, to_phone, amount)):
            if _close(s, proposal_id, FAILED):
                sms.queue(s, proposer_phone, t(proposer_language, "sms.chama-failed", group=name, amount=amount + fee,
                                               phone=label))
                return FAILED
            return CLOSED
        if not _close(s, proposal_id, PAID):
            return CLOSED
        if kind in KES_KINDS:
            _reserve(s, rails, proposal_id, chama_id, name, proposer_id, proposer_phone, kind, to_phone, amount,
                     fee, int(kes or 0))
            return PAID
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
            sms.queue(s, proposer_phone, t(proposer_language, "sms.chama-rejected", group=name, amount=amount + fee,
                                           phone=label))
            return REJECTED
        return CLOSED
    return COUNTED


def _repriced(s: Session, proposal_id: int, rails: Rails | None, policy: Policy, kes: int, proposed: int,
              fee: int) -> tuple[int, int] | None:
    """A KES payout's (sats, fee) at its deciding vote: the proposal's, or those of `kes` at the
    price now when they are more (the row then updated to them); None: no price now."""
    price = rails.price_now() if rails is not None else None
    if price is None:
        return None
    now = policy.kes_to_sats_debit(kes, price)
    if now <= proposed:
        return proposed, fee
    fee = policy.fee_sats("mpesa-withdraw", now)
    _write(s, update(ChamaProposal).where(ChamaProposal.id == proposal_id)
           .values(amount_sats=now, fee_sats=fee, kes_per_btc=price))
    return now, fee


def _reserve(s: Session, rails: Rails | None, proposal_id: int, chama_id: int, name: str, proposer_id: int,
             proposer_phone: str, kind: str, to: str, amount: int, fee: int, kes: int) -> None:
    """A KES payout's sats and fee out of the group's account into the rail's in-flight account,
    with its payout row (the payout state machine's), in the vote's transaction; sent after it."""
    rail_name = _rail_name(kind)
    rail = rails.rail(rail_name) if rails is not None else None
    if rails is None or rail is None:
        raise RuntimeError(f"no {rail_name} rail to pay chama proposal {proposal_id}")
    reference = new_reference()
    destination = to if kind == TO_MPESA else b2b_destination(BUY_GOODS, to, "", proposer_phone)
    receipt = books.reserve(s, rail, proposer_id, amount, fee, destination, f"chama:{proposal_id}",
                            check=lambda _after: 0, amount_kes=kes, counterparty=name,
                            description=f"Chama {name}: KES {kes} to {payee_label(kind, to, kes)}"[:255],
                            reference=reference, rail_key=rails.key_for(rail_name, reference),
                            payer=account(chama_id))
    _write(s, update(ChamaProposal).where(ChamaProposal.id == proposal_id)
           .values(payout_ref=reference, entry_id=receipt.transaction_id))


def _close(s: Session, proposal_id: int, status: str) -> bool:
    """open -> `status`, once (False: closed meanwhile)."""
    return _write(s, update(ChamaProposal).where(ChamaProposal.id == proposal_id, ChamaProposal.status == OPEN)
                     .values(status=status)).rowcount == 1


def _expire(s: Session, proposal_id: int) -> bool:
    if not _close(s, proposal_id, EXPIRED):
        return False
    name, amount, to_phone, phone, language, kind, kes = s.execute(
        select(Chama.name, ChamaProposal.amount_sats + ChamaProposal.fee_sats, ChamaProposal.to_phone, User.phone,
               User.language, ChamaProposal.to_kind, ChamaProposal.amount_kes)
        .join(Chama, Chama.id == ChamaProposal.chama_id).join(User, User.id == ChamaProposal.proposer_id)
        .where(ChamaProposal.id == proposal_id)).one()
    sms.queue(s, phone, t(language, "sms.chama-expired", group=name, amount=amount,
                          phone=payee_label(kind, to_phone, kes)))
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


def mark_refunded(db: Database) -> int:
    """Paid proposals whose payout M-Pesa then refused (the payout machine voided it and gave the
    group its sats back, with an SMS to the proposer) are failed, so the group's lists say so: the
    worker, periodically. Returns how many."""
    voided = select(Payout.reference).where(Payout.state == VOIDED)
    with db.write() as s:
        return _write(s, update(ChamaProposal).where(ChamaProposal.status == PAID,
                                                     ChamaProposal.payout_ref.in_(voided))
                      .values(status=FAILED)).rowcount


def parse_reply(text: str) -> tuple[bool, str] | None:
    """(yes, code) from an SMS reply such as "YES 482913" or "hapana 482913"; None if it is not one."""
    words = text.upper().replace(",", " ").replace(".", " ").split()
    if len(words) != 2 or not words[1].isdigit() or words[0] not in YES_WORDS + NO_WORDS:
        return None
    return words[0] in YES_WORDS, words[1]


def sms_reply(db: Database, policy: Policy, phone: str, text: str, message_id: str,
              rails: Rails | None = None) -> str:
    """An incoming SMS (Africa's Talking's message id, acted on once: a repeat returns ALREADY): a
    vote by the sender on the open ballot its code names, in the transaction that records the id
    (a KES payout it reserved is then sent by `rails`)."""
    parsed = parse_reply(text)
    voted: list[int] = []
    try:
        outcome = movements.retry_deadlocks(lambda: _sms_reply(db, policy, phone, parsed, message_id, rails, voted))
    except IntegrityError:  # this message id was acted on already (AT retried)
        return ALREADY
    except PriceUnavailable:  # the deciding vote, with no price to pay it at: nothing counted
        return _no_price(db, phone, message_id)
    if voted:
        _send_reserved(db, rails, voted[-1], outcome)
    return outcome


def _no_price(db: Database, phone: str, message_id: str) -> str:
    """The message is recorded (acted on once) and its sender told to reply again later."""
    try:
        with db.write() as s:
            _write(s, insert(SmsInbox).values(message_id=message_id[:64], phone=phone[:20], outcome=NO_PRICE,
                                              received_at=utcnow()))
            language = s.execute(select(User.language).where(User.phone == phone)).scalar() or "en"
            sms.queue(s, phone, t(language, "sms.chama-reply-no-price"))
    except IntegrityError:
        return ALREADY
    return NO_PRICE


def _sms_reply(db: Database, policy: Policy, phone: str, parsed: tuple[bool, str] | None, message_id: str,
               rails: Rails | None, voted: list[int]) -> str:
    user_id: int | None = None
    with db.write() as s:
        outcome = "not-a-vote"
        if parsed is not None:
            yes, code = parsed
            user_id = s.execute(select(User.id).where(User.phone == phone)).scalar()
            ballot = None if user_id is None else s.execute(
                select(ChamaBallot.proposal_id).where(ChamaBallot.user_id == user_id, ChamaBallot.code == code)
                .order_by(ChamaBallot.id.desc())).first()
            if ballot is not None and user_id is not None:
                voted.append(ballot[0])
            outcome = NO_BALLOT if ballot is None or user_id is None else _vote(s, policy, user_id, ballot[0], yes,
                                                                                 code, rails)
        _write(s, insert(SmsInbox).values(message_id=message_id[:64], phone=phone[:20], outcome=outcome[:16],
                                          received_at=utcnow()))
        if parsed is not None and user_id is not None:
            language = s.execute(select(User.language).where(User.id == user_id)).scalar() or "en"
            sms.queue(s, phone, t(language, f"sms.chama-reply-{_reply_text(outcome)}"))
        return outcome


def _reply_text(outcome: str) -> str:
    return {COUNTED: "counted", PAID: "counted", REJECTED: "counted", FAILED: "counted"}.get(outcome, "refused")
