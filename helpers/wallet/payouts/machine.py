"""A payout's life around its rail. Reserved with its movement (books.reserve), it is sent; the
rail's answer, a callback, the worker's status query or an operator then give the final word,
which acts once (books.post or books.void: conditional on the payout being open).

    reserved --send: accepted, the rail's key--> sent
    reserved | sent --paid--> posted          reserved | sent --failed--> voided

"No answer" leaves the sats reserved: only the rail's own word (or an operator's) ends a payout.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import cast

from sqlalchemy import CursorResult, and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.infra.phone import mask
from helpers.infra.rail import Answer, CallbackRefused, Rail, Said
from helpers.wallet.ledger import movements
from helpers.wallet.payouts import books
from helpers.wallet.payouts.books import view
from models import (ASSET, LIABILITY, OPEN_PAYOUT, POSTED, RESERVED, SENT, VOIDED, LedgerAccount, Payout,
                    Transaction, utcnow)

log = logging.getLogger(__name__)

# A finished payout's word for callers (the callback's answer, the worker's log)
POSTED_WORD, VOIDED_WORD = "settled", "refunded"
DONE = "done"  # the reason of a pending answer about a payout that was not open: nothing to ask
CLAIMED_ELSEWHERE = "claimed-elsewhere"  # another asker has it now: asked again later


def find(db: Database, reference: str) -> Payout | None:
    """The payout of `reference`: its own, or the movement's the customer was given (each looked
    up by its unique index)."""
    with db.read() as s:
        found = s.scalar(select(Payout).where(Payout.reference == reference))
        if found is None:
            found = s.scalar(select(Payout).join(Transaction, Transaction.id == Payout.transaction_id)
                             .where(Transaction.reference == reference).order_by(Payout.id.desc()).limit(1))
        return found


def pending(db: Database, rail: str | None = None, limit: int = 500) -> list[Payout]:
    """Open payouts (reserved or sent), oldest first."""
    query = select(Payout).where(Payout.state.in_(OPEN_PAYOUT))
    if rail is not None:
        query = query.where(Payout.rail == rail)
    with db.read() as s:
        return list(s.scalars(query.order_by(Payout.id).limit(limit)))


def open_accounts(db: Database, rail: Rail) -> list[str]:
    """The house accounts a rail's money moves through (its in-flight liability, the asset that
    pays it), added when missing: a new rail's migration does this; so may a deployment that
    registers one. Returns the codes added."""
    wanted = {rail.books.in_flight: LIABILITY, rail.books.paid_from: ASSET}
    with db.write() as s:
        have = set(s.scalars(select(LedgerAccount.code).where(LedgerAccount.code.in_(list(wanted)))))
        added = sorted(set(wanted) - have)
        s.add_all(LedgerAccount(code=code, kind=wanted[code], balance_sats=0) for code in added)
    return added


def finish(db: Database, rail: Rail, reference: str, answer: Answer, note: str = "",
           also: Callable[[Session], None] | None = None) -> bool:
    """The final word (PAID posts, FAILED voids), once; False when the payout was not open.
    `also` (an operator's audit line) runs in the same transaction when it acts: both, or
    neither. Retried whole on a deadlock or a Galera certification conflict."""
    if answer.said is Said.PENDING:
        raise ValueError("a pending answer is not a final word")

    def work() -> bool:
        try:
            with db.write() as s:
                verb = books.post if answer.said is Said.PAID else books.void
                done = verb(s, rail, reference, answer, note)
                if done and also is not None:
                    also(s)
                return done
        except books.Undo:
            log.error("payout %s: its movement is not pending; %s not applied", reference, answer.said.value)
            return False
        except IntegrityError:  # the movement's M-Pesa code is unique (Books.receipt_is_mpesa_code)
            log.error("payout %s: receipt %s settled another movement before; not applied", reference,
                      answer.receipt)
            return False

    done = movements.retry_deadlocks(work)
    if done:
        log.info("payout %s %s (%s)", reference, answer.said.value, note or answer.reason)
    else:
        _contradicted(db, reference, answer)
    return done


def _contradicted(db: Database, reference: str, answer: Answer) -> None:
    """A final word about a payout that ended the other way (an operator voided what the rail
    then paid, say): nothing moves, but people must hear of it."""
    with db.read() as s:
        state = s.scalar(select(Payout.state).where(Payout.reference == reference))
    if state == (VOIDED if answer.said is Said.PAID else POSTED):
        log.error("payout %s was %s, but its rail now says %s (%s): reconcile it with the rail by hand",
                  reference, state, answer.said.value, answer.reason)


def record_ids(db: Database, reference: str, rail_key: str = "", rail_ref: str = "") -> None:
    """The rail named the payout (its answer, or a callback that brought the ids the answer
    lost): each id kept if the payout had none, whatever happened meanwhile (a late report must
    still find it), and reserved -> sent."""
    # a key its void freed (kept as rail_ref, for the invoice to be paid again) is not taken back
    freed = and_(Payout.state == VOIDED, Payout.rail_ref == rail_key[:64])
    kept = case((freed, Payout.rail_key), else_=func.coalesce(Payout.rail_key, rail_key[:64]))
    values: dict[str, object] = {**({"rail_key": kept} if rail_key else {}),
              **({"rail_ref": func.coalesce(Payout.rail_ref, rail_ref[:64])} if rail_ref else {})}
    if not values:
        return

    values["state"] = case((Payout.state == RESERVED, SENT), else_=Payout.state)

    def work() -> None:
        with db.write() as s:
            s.execute(update(Payout).where(Payout.reference == reference).values(**values))
    movements.retry_deadlocks(work)


def send(db: Database, rail: Rail, reference: str) -> Answer:
    """Ask the rail to pay a reserved payout. PAID: posted now; FAILED: voided now; PENDING: a
    callback, the worker or an operator finishes it. Returns what took effect (PENDING when a
    callback finished it meanwhile)."""
    payout = find(db, reference)
    if payout is None or payout.state != RESERVED:
        return Answer.pending("not reserved")
    answer = rail.send(view(payout))
    record_ids(db, payout.reference, answer.rail_key, answer.rail_ref)
    if answer.said is Said.PENDING:
        log.info("%s %s to %s: %s", rail.name, payout.reference, mask(payout.destination),
                 "accepted" if answer.rail_key or answer.rail_ref else f"unknown ({answer.reason})")
        return answer
    if finish(db, rail, payout.reference, answer):
        return answer
    return Answer.pending(answer.reason, answer.rail_key)


def due(db: Database, rail: str, created_before: dt.datetime, asked_before: dt.datetime,
        limit: int = 100) -> list[Payout]:
    """Open payouts of `rail` older than `created_before` not asked since `asked_before`, oldest
    first (for a reconciler)."""
    with db.read() as s:
        return list(s.scalars(select(Payout).where(
            Payout.rail == rail, Payout.state.in_(OPEN_PAYOUT), Payout.created_at < created_before,
            or_(Payout.last_query_at.is_(None), Payout.last_query_at < asked_before)).order_by(Payout.id).limit(limit)))


def claim(db: Database, payout: Payout, now: dt.datetime | None = None) -> bool:
    """Take an open payout for one question to its rail (counted), unless another asker took it
    since `payout` was read: two reconcilers do not both ask."""
    same = (Payout.last_query_at.is_(None) if payout.last_query_at is None
            else Payout.last_query_at == payout.last_query_at)
    with db.write() as s:
        moved = s.execute(update(Payout).where(Payout.id == payout.id, Payout.state.in_(OPEN_PAYOUT), same)
                          .values(last_query_at=now or utcnow(), queries=Payout.queries + 1))
        return cast(CursorResult, moved).rowcount == 1


def ask(db: Database, rail: Rail, payout: Payout) -> Answer:
    """Ask the rail about a payout (claimed) and act on a final answer. Returns the rail's answer
    (PENDING with DONE when the payout was finished meanwhile)."""
    answer = rail.query(view(payout))
    if answer.said is not Said.PENDING:
        answer = replace(answer, reason=f"status query: {answer.reason}")
        if not finish(db, rail, payout.reference, answer):
            return Answer.pending(DONE)
    return answer


def query(db: Database, rail: Rail, reference: str, payout: Payout | None = None) -> Answer:
    """Ask the rail about one open payout now (a worker's job, which holds it); `payout`: its row,
    when the caller has just read it."""
    if payout is None:
        with db.read() as s:
            payout = s.scalar(select(Payout).where(Payout.reference == reference))
    if payout is None or payout.state not in OPEN_PAYOUT:
        return Answer.pending(DONE)
    if not claim(db, payout):
        return Answer.pending(CLAIMED_ELSEWHERE)
    return ask(db, rail, payout)


def callback(db: Database, rail: Rail, fields: dict) -> tuple[int, str]:
    """A rail's callback: checked by the rail (which payout, is it who it says, does its status
    query agree), then acted on once. Returns (HTTP status, outcome)."""
    try:
        claimed = rail.parse_callback(fields)
        with db.read() as s:
            payout = s.scalar(select(Payout).where(Payout.rail == rail.name,
                                                   Payout.rail_key == claimed.rail_key[:64]))
        if payout is None:
            log.warning("%s callback for an unknown key %s...", rail.name, claimed.rail_key[:12])
            return 404, "unknown"
        if payout.state not in OPEN_PAYOUT:
            return 200, "already-done"
        answer = rail.confirm(view(payout), claimed)
    except CallbackRefused as refused:
        return refused.status, refused.outcome
    if answer.said is Said.PENDING:
        return 202, "checking"  # the rail's own query does not say so yet: the worker asks again
    done = finish(db, rail, payout.reference, answer)
    return 200, (POSTED_WORD if answer.said is Said.PAID else VOIDED_WORD) if done else "already-done"
