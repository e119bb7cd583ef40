"""USSD session rows: which phone owns a sessionId, how far onboarding went, the last reply (so a
repeated request gets the same answer without being processed again), and an audit trail."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from models import UssdSession, utcnow


@dataclass(frozen=True)
class SessionView:
    exists: bool
    phone: str = ""
    onboarding_tokens: int = 0
    last_text_hash: str | None = None
    last_reply: str | None = None
    choices: dict[str, int] = field(default_factory=dict)


def load(session: Session, session_id: str) -> SessionView:
    row = session.execute(
        select(UssdSession.phone, UssdSession.onboarding_tokens, UssdSession.last_text_hash,
               UssdSession.last_reply, UssdSession.choices)
        .where(UssdSession.session_id == session_id)
    ).first()
    if row is None:
        return SessionView(False)
    return SessionView(True, row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else {})


def save(
    db: Database,
    session_id: str,
    phone: str,
    service_code: str,
    *,
    exists: bool,
    state: str,
    trail: str,
    text_hash: str,
    reply: str,
    onboarding_tokens: int,
    choices: dict[str, int],
) -> None:
    """Record this step: one INSERT for a new session, one UPDATE otherwise."""
    values = dict(
        state=state[:32], input_buffer=trail[-2000:], last_text_hash=text_hash, last_reply=reply,
        active=reply.startswith("CON"), last_activity=utcnow(), onboarding_tokens=onboarding_tokens,
        choices=json.dumps(choices) if choices else None,
    )
    if not exists:
        try:
            with db.write() as s:
                s.add(UssdSession(session_id=session_id, phone=phone, service_code=service_code[:32], **values))
            return
        except IntegrityError:
            pass  # a concurrent first request of the same session inserted it
    with db.write() as s:
        s.execute(update(UssdSession).where(UssdSession.session_id == session_id).values(**values))


def active_count(session: Session, timeout_s: int) -> int:
    since = utcnow() - dt.timedelta(seconds=timeout_s)
    return session.scalar(
        select(func.count(UssdSession.id)).where(UssdSession.active.is_(True), UssdSession.last_activity >= since)
    )


def clean(db: Database, timeout_s: int, keep_days: int) -> tuple[int, int]:
    """Close sessions idle past the timeout; delete sessions older than `keep_days`.
    Returns (closed, deleted)."""
    now = utcnow()
    with db.write() as s:
        closed = s.execute(
            update(UssdSession)
            .where(UssdSession.active.is_(True), UssdSession.last_activity < now - dt.timedelta(seconds=timeout_s))
            .values(active=False)
        ).rowcount
        deleted = s.execute(
            delete(UssdSession).where(UssdSession.last_activity < now - dt.timedelta(days=keep_days))
        ).rowcount
    return closed, deleted
