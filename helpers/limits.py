"""Abuse limits counted in the database, so every worker on every machine sees the same counts.
The numbers come from atoms.metta: (rate-limit <what>) -> (<count> <window seconds>).

Counting is on the hot path of every USSD request, so all the counters of a request are one
upsert statement that returns the new counts: INSERT .. ON CONFLICT DO UPDATE .. RETURNING on
SQLite (run on its own, it needs no BEGIN/COMMIT), INSERT .. ON DUPLICATE KEY UPDATE ..
RETURNING on MariaDB. MySQL has no RETURNING: one statement per counter there, whose new count
comes back as LAST_INSERT_ID(count + 1).
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
def _upsert_returning(dialect: str, rows: int) -> TextClause:
    """Count `rows` events in one statement; it returns (key, bucket, count) of each. Plain SQL: SQLAlchemy
    does not cache the compiled form of multi-row INSERT constructs."""
    values = ", ".join(f"(:k{n}, :b{n}, 1, :now)" for n in range(rows))
    if dialect == "sqlite":
        on_conflict = 'ON CONFLICT ("key", bucket) DO UPDATE SET count = count + 1 RETURNING "key", bucket, count'
        columns = '("key", bucket, count, created_at)'
    else:  # MariaDB
        on_conflict = "ON DUPLICATE KEY UPDATE `count` = `count` + 1 RETURNING `key`, bucket, `count`"
        columns = "(`key`, bucket, `count`, created_at)"
    return text(f"INSERT INTO rate_counters {columns} VALUES {values} {on_conflict}").bindparams(  # noqa: S608
        bindparam("now", type_=DateTime()))


_MYSQL_UPSERT = text(
    "INSERT INTO rate_counters (`key`, bucket, `count`, created_at) VALUES (:k0, :b0, 1, :now) "
    "ON DUPLICATE KEY UPDATE `count` = LAST_INSERT_ID(`count` + 1)"
).bindparams(bindparam("now", type_=DateTime()))


def _count(db: Database, events: list[tuple[str, int]]) -> list[int]:
    """Count one event for each (key, bucket); return the new counts, in order."""
    now = utcnow()
    dialect = db.connection().dialect
    if dialect.insert_returning:
        params: dict = {"now": now}
        for n, (key, bucket) in enumerate(events):
            params[f"k{n}"], params[f"b{n}"] = key, bucket
        with db.begin(single_statement=True) as conn:
            rows = conn.execute(_upsert_returning(dialect.name, len(events)), params).all()
        counts = {(key, bucket): count for key, bucket, count in rows}
        return [counts[event] for event in events]
    with db.begin() as conn:
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
