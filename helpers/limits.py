"""Abuse limits counted in the database, so every worker on every machine sees the same counts.
The numbers come from atoms.metta: (rate-limit <what>) -> (<count> <window seconds>).

Counting is on the hot path of every USSD request, so one event is one upsert statement
(SQLite: INSERT .. ON CONFLICT DO UPDATE .. RETURNING, every counter of the request in one
statement; MySQL: INSERT .. ON DUPLICATE KEY UPDATE count = LAST_INSERT_ID(count + 1), whose
new value comes back with the statement), all in one short write transaction.
"""

from __future__ import annotations

import datetime as dt
import time
from functools import lru_cache

from sqlalchemy import DateTime, bindparam, delete, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import TextClause

from database import Database
from helpers.rules import Policy
from models import RateCounter, utcnow

_KEY_LENGTH = 96


@lru_cache(maxsize=8)
def _sqlite_upsert(rows: int) -> TextClause:
    """Count `rows` events in one statement; returns (key, count) of each. Plain SQL: SQLAlchemy
    does not cache the compiled form of a multi-row INSERT construct."""
    values = ", ".join(f"(:k{n}, :b{n}, 1, :now)" for n in range(rows))
    return text(
        f'INSERT INTO rate_counters ("key", bucket, count, created_at) VALUES {values} '  # noqa: S608 - no input
        'ON CONFLICT ("key", bucket) DO UPDATE SET count = count + 1 RETURNING "key", count'
    ).bindparams(bindparam("now", type_=DateTime()))


_MYSQL_UPSERT = text(
    "INSERT INTO rate_counters (`key`, bucket, `count`, created_at) VALUES (:k0, :b0, 1, :now) "
    "ON DUPLICATE KEY UPDATE `count` = LAST_INSERT_ID(`count` + 1)"
).bindparams(bindparam("now", type_=DateTime()))


def _count(db: Database, events: list[tuple[str, int]]) -> list[int]:
    """Count one event for each (key, bucket); return the new counts, in order."""
    now = utcnow()
    with db.begin(single_statement=db.is_sqlite) as conn:
        if db.is_sqlite:
            params: dict = {"now": now}
            for n, (key, bucket) in enumerate(events):
                params[f"k{n}"], params[f"b{n}"] = key, bucket
            counts = dict(conn.execute(_sqlite_upsert(len(events)), params).all())
            return [counts[key] for key, _ in events]
        return [_mysql_hit(conn, key, bucket, now) for key, bucket in events]


def _mysql_hit(conn: Connection, key: str, bucket: int, now: dt.datetime) -> int:
    result = conn.execute(_MYSQL_UPSERT, {"k0": key, "b0": bucket, "now": now})
    # 1 row affected: inserted, the count is 1; 2: updated, LAST_INSERT_ID(expr) holds the count.
    return 1 if result.rowcount == 1 else int(result.lastrowid)


def allow(db: Database, policy: Policy, *checks: tuple[str, str], enabled: bool = True) -> str | None:
    """Count one event for each (limit name, key) in one transaction; return the name of the
    first limit exceeded, or None when all are within bounds (always None when not `enabled`)."""
    if not enabled or not checks:
        return None
    now = time.time()
    limits, events = [], []
    for name, key in checks:
        limit, window = policy.rate_limit(name)
        limits.append((name, limit))
        events.append((f"{name}:{key}"[:_KEY_LENGTH], int(now // window)))
    for (name, limit), count in zip(limits, _count(db, events), strict=True):
        if count > limit:
            return name
    return None


def clean(db: Database, older_than: dt.timedelta = dt.timedelta(days=2)) -> int:
    with db.write() as s:
        return s.execute(delete(RateCounter).where(RateCounter.created_at < utcnow() - older_than)).rowcount
