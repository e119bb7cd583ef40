"""The chama tables. Declared on models.Base beside the others (models.py is at its size bound);
`helpers.wallet.chama` is imported by the app (the screens) and by migrations/env.py, so the
metadata always holds them. A group's balance is not here: it is its ledger account."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow

CHAIR, TREASURER, SECRETARY, MEMBER = "chair", "treasurer", "secretary", "member"
OFFICIALS = (CHAIR, TREASURER, SECRETARY)
INVITED, ACTIVE, LEFT = "invited", "active", "left"  # ChamaMember.status
OPEN, PAID, REJECTED, EXPIRED, FAILED = "open", "paid", "rejected", "expired", "failed"  # ChamaProposal.status
PROPOSER_LEFT = "left"  # ChamaProposal.status: its proposer left the group before it was decided
TO_WALLET, TO_MPESA, TO_TILL = "phone", "mpesa", "till"  # ChamaProposal.to_kind
KES_KINDS = (TO_MPESA, TO_TILL)  # paid in KES by an M-Pesa rail (the payout state machine)
YES, NO = "yes", "no"  # ChamaBallot.vote
ACCOUNT_PREFIX = "chama:"  # a group's ledger account: "chama:<id>" (credit-normal: what the group holds is -balance)
ACCOUNT_KIND = "chama"


def account(chama_id: int) -> str:
    return f"{ACCOUNT_PREFIX}{chama_id}"


class Chama(Base):
    __tablename__ = "chamas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    approvals_needed: Mapped[int] = mapped_column(Integer)  # approvals of a payout, besides its proposer
    leave_refund_pct: Mapped[int] = mapped_column(Integer)  # what a leaver gets back of their contributions
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ChamaMember(Base):
    __tablename__ = "chama_members"
    __table_args__ = (UniqueConstraint("chama_id", "user_id", name="uq_chama_members_chama_user"),
                      Index("ix_chama_members_user", "user_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chama_id: Mapped[int] = mapped_column(ForeignKey("chamas.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    role: Mapped[str] = mapped_column(String(10), default=MEMBER)
    status: Mapped[str] = mapped_column(String(8), default=INVITED)
    joined_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    # what they put in before and did not get back on leaving (the group's rule kept it): not
    # theirs to count again if they are invited back
    forfeited_sats: Mapped[int] = mapped_column(BigInteger, default=0)


class ChamaProposal(Base):
    """A payout from the group's account, paid once (status open -> paid) when the rule's
    approvals are in; rejected once the rule can no longer be met; expired after
    chama-proposal-hours; closed if its proposer leaves. To a phone's wallet (`to_kind` phone: one
    entry, idempotency key "chama:<id>", in the transaction that marks it paid) or in KES to
    M-Pesa (a phone) or a till (`to_phone` holds the till number): then a payout row of the payout
    state machine (`payout_ref`), reserved from the group's account in that transaction, for the
    sats and fee fixed when it was proposed at `kes_per_btc`; a failed payout gives them back to
    the group."""

    __tablename__ = "chama_proposals"
    __table_args__ = (Index("ix_chama_proposals_status_expires", "status", "expires_at"),
                      Index("ix_chama_proposals_chama", "chama_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chama_id: Mapped[int] = mapped_column(ForeignKey("chamas.id"))
    proposer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    amount_sats: Mapped[int] = mapped_column(BigInteger)
    to_kind: Mapped[str] = mapped_column(String(8), default=TO_WALLET)  # phone (a wallet), mpesa, till
    to_phone: Mapped[str] = mapped_column(String(20))  # a phone, or a till number
    amount_kes: Mapped[Optional[int]] = mapped_column(BigInteger)  # M-Pesa and tills: what is paid
    kes_per_btc: Mapped[Optional[int]] = mapped_column(BigInteger)  # the price the sats were fixed at
    fee_sats: Mapped[int] = mapped_column(BigInteger, default=0)  # the group pays it (atoms.metta's withdrawal fee)
    payout_ref: Mapped[Optional[str]] = mapped_column(String(16))  # the payout's reference, once reserved
    status: Mapped[str] = mapped_column(String(8), default=OPEN)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    entry_id: Mapped[Optional[int]] = mapped_column(ForeignKey("transactions.id"))  # the payout, once paid


class ChamaBallot(Base):
    """One member's say on one proposal, made with it for every other active member: its one-time
    code (sent by SMS, for a reply) and the vote, set once (a conditional UPDATE from NULL; the
    unique key makes one ballot per member). A ballot of a member who left is not counted."""

    __tablename__ = "chama_ballots"
    __table_args__ = (UniqueConstraint("proposal_id", "user_id", name="uq_chama_ballots_proposal_user"),
                      Index("ix_chama_ballots_user_code", "user_id", "code"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("chama_proposals.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    code: Mapped[str] = mapped_column(String(12))
    vote: Mapped[Optional[str]] = mapped_column(String(4))
    voted_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)


class SmsInbox(Base):
    """Incoming SMS acted on (Africa's Talking's message id, unique: acted on once)."""

    __tablename__ = "sms_inbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    phone: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
