"""Abuse limits counted in the database, so every worker on every machine sees the same counts.
The numbers come from atoms.metta: (rate-limit <what>) -> (<count> <window seconds>)."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import Database
from helpers.rules import Policy
from models import RateCounter, utcnow


def _hit(session: Session, key: str, bucket: int) -> int:
    """Count one event for (key, bucket) and return the count, inside the caller's transaction."""
    where = (RateCounter.key == key[:96], RateCounter.bucket == bucket)
    if session.execute(update(RateCounter).where(*where).values(count=RateCounter.count + 1)).rowcount == 0:
        try:
            with session.begin_nested():
                session.add(RateCounter(key=key[:96], bucket=bucket, count=1))
        except IntegrityError:  # another worker created it a moment ago
            session.execute(update(RateCounter).where(*where).values(count=RateCounter.count + 1))
    return session.scalar(select(RateCounter.count).where(*where))


def allow(db: Database, policy: Policy, *checks: tuple[str, str], enabled: bool = True) -> str | None:
    """Count one event for each (limit name, key) in one transaction; return the name of the
    first limit exceeded, or None when all are within bounds (always None when not `enabled`)."""
    if not enabled:
        return None
    now = time.time()
    exceeded = None
    with db.write() as s:
        for name, key in checks:
            limit, window = policy.rate_limit(name)
            if _hit(s, f"{name}:{key}", int(now // window)) > limit and exceeded is None:
                exceeded = name
    return exceeded


def clean(db: Database, older_than: dt.timedelta = dt.timedelta(days=2)) -> int:
    with db.write() as s:
        return s.execute(delete(RateCounter).where(RateCounter.created_at < utcnow() - older_than)).rowcount
