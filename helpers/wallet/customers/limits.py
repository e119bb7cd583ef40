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
import logging
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import cast

from sqlalchemy import DateTime, bindparam, delete, text
from sqlalchemy.engine import Connection, CursorResult

from database import Database
from helpers.infra.fastpath import Prepared
from helpers.wallet.rules import Policy
from helpers.infra.writebehind import WriteBehind, chunks
from models import RateCounter, utcnow

_KEY_LENGTH = 96
# The most rows per upsert when a worker writes its counts: every distinct row count is another
# statement to compile and keep, so they go in chunks of powers of two up to this.
_FLUSH_ROWS = 64
log = logging.getLogger(__name__)


@lru_cache(maxsize=16)  # a few shapes: powers of two up to _FLUSH_ROWS (writebehind.chunks), per dialect
def _upsert_returning(dialect: str, rows: int) -> Prepared:
    """Count `rows` events in one statement; it returns (key, bucket, count) of each. Plain SQL
    (SQLAlchemy does not cache the compiled form of multi-row INSERT constructs), Prepared: the
    flush runs beside the requests, so its CPU is theirs."""
    values = ", ".join(f"(:k{n}, :b{n}, :n{n}, :now)" for n in range(rows))
    if dialect == "sqlite":
        on_conflict = ('ON CONFLICT ("key", bucket) DO UPDATE SET count = count + excluded.count '
                       'RETURNING "key", bucket, count')
        columns = '("key", bucket, count, created_at)'
    else:  # MariaDB
        on_conflict = ("ON DUPLICATE KEY UPDATE `count` = `count` + VALUES(`count`) "
                       "RETURNING `key`, bucket, `count`")
        columns = "(`key`, bucket, `count`, created_at)"
    return Prepared(text(f"INSERT INTO rate_counters {columns} VALUES {values} {on_conflict}").bindparams(  # noqa: S608
        bindparam("now", type_=DateTime())))


_MYSQL_UPSERT = text(
    "INSERT INTO rate_counters (`key`, bucket, `count`, created_at) VALUES (:k0, :b0, :n0, :now) "
    "ON DUPLICATE KEY UPDATE `count` = LAST_INSERT_ID(`count` + VALUES(`count`))"
).bindparams(bindparam("now", type_=DateTime()))


def _count(db: Database, events: Sequence[tuple[str, int]], amounts: list[int] | None = None) -> list[int]:
    """Count `amounts` (default one) events for each distinct (key, bucket); return the new
    counts, in order."""
    amounts = amounts or [1] * len(events)
    single = db.connection().dialect.insert_returning  # one statement: no BEGIN / COMMIT needed
    with db.begin(single_statement=single) as conn:
        return _count_on(conn, events, amounts)


def count_in(conn: Connection, events: list[tuple[str, int]]) -> list[int]:
    """Count one event for each (key, bucket) in the caller's transaction; the new counts, in order."""
    return _count_on(conn, events, [1] * len(events))


def uncount_in(conn: Connection, events: list[tuple[str, int]]) -> list[int]:
    """Take back one event counted by count_in (its rows exist), in the caller's transaction."""
    return _count_on(conn, events, [-1] * len(events))


def _count_on(conn: Connection, events: Sequence[tuple[str, int]], amounts: list[int]) -> list[int]:
    """`_count` inside the caller's transaction."""
    now = utcnow()
    dialect = conn.dialect
    if dialect.insert_returning:
        params: dict = {"now": now}
        for n, ((key, bucket), amount) in enumerate(zip(events, amounts, strict=True)):
            params[f"k{n}"], params[f"b{n}"], params[f"n{n}"] = key, bucket, amount
        rows = _upsert_returning(dialect.name, len(events)).run(conn, params).rows
        counts = {(key, bucket): count for key, bucket, count in rows}
        return [counts[event] for event in events]
    return [_mysql_hit(conn, key, bucket, now, amount)
            for (key, bucket), amount in zip(events, amounts, strict=True)]


def _mysql_hit(conn: Connection, key: str, bucket: int, now: dt.datetime, amount: int = 1) -> int:
    result = conn.execute(_MYSQL_UPSERT, {"k0": key, "b0": bucket, "n0": amount, "now": now})
    # 1 row affected: inserted, the count is the amount; 2: updated, LAST_INSERT_ID(expr) holds it.
    return amount if result.rowcount == 1 else int(result.lastrowid)


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


class RequestCounter(WriteBehind):
    """The per-request limits (requests per phone, per source), counted write-behind: a worker
    counts in memory and adds its counts to the shared rows every `flush_s` seconds, in one
    statement, which returns the totals of every worker. A request is checked against the last
    total this worker saw plus what it counted since, so no database write sits on the request
    path. The price: a limit may be passed by what other workers accepted for the same key in
    the last `flush_s` seconds before their counts arrive (a burst from one phone spread over
    N workers). Counts not yet written when a worker dies are lost (at most `flush_s` seconds).
    The other limits (invoices, payment-request SMS) stay exact: `allow`."""

    def __init__(self, db: Database, flush_s: float) -> None:
        super().__init__(flush_s)
        self.db = db
        self._pending: dict[tuple[str, int], int] = {}
        self._seen: dict[tuple[str, int], int] = {}  # totals of all workers, as of our last flush

    def allow(self, policy: Policy, *checks: tuple[str, str]) -> str | None:
        """Count one event for each (limit name, key); the first limit exceeded, or None.
        Not enabled (flush_s <= 0): counted in the database at once, exactly (`allow`)."""
        if not self.enabled:
            return allow(self.db, policy, *checks)
        self._ensure_flusher()
        now = time.time()
        with self._lock:
            for name, key in checks:
                limit, window = policy.rate_limit(name)
                event = (f"{name}:{key}"[:_KEY_LENGTH], int(now // window))
                self._pending[event] = self._pending.get(event, 0) + 1
                if self._seen.get(event, 0) + self._pending[event] > limit:
                    return name
        return None

    def flush(self) -> None:
        """Add this worker's counts to the shared rows; learn everyone's totals."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        events = sorted(pending)  # every worker locks shared rows in the same order: no deadlock between flushes
        parts = list(chunks(events, _FLUSH_ROWS))
        try:
            totals: list[int] = []
            if self.db.is_sqlite:  # one writer turn and one commit for all of them
                with self.db.begin() as conn:
                    for chunk in parts:
                        totals += _count_on(conn, chunk, [pending[e] for e in chunk])
            else:  # MySQL: a short transaction per chunk, its rows locked only while it runs
                for chunk in parts:
                    totals += _count(self.db, chunk, [pending[e] for e in chunk])
        except Exception:
            with self._lock:  # keep them for the next flush
                for event, amount in pending.items():
                    self._pending[event] = self._pending.get(event, 0) + amount
            raise
        with self._lock:
            self._seen.update(zip(events, totals, strict=True))
            newest: dict[str, int] = {}  # per limit, its current window: older windows are done
            for key, bucket in self._seen:
                name = key.split(":", 1)[0]
                newest[name] = max(newest.get(name, bucket), bucket)
            self._seen = {e: c for e, c in self._seen.items() if e[1] >= newest[e[0].split(":", 1)[0]]}

    def _forget(self) -> None:
        self._pending, self._seen = {}, {}


def clean(db: Database, older_than: dt.timedelta = dt.timedelta(days=2)) -> int:
    with db.write() as s:
        return cast(CursorResult, s.execute(
            delete(RateCounter).where(RateCounter.created_at < utcnow() - older_than))).rowcount
