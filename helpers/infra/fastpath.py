"""The database fast path: what the benchmark kept (docs/performance.md).

- `Prepared`: a Core statement compiled once per dialect and run straight on the driver's cursor,
  for the few statements every USSD request runs (about 0.1 ms of CPU saved per statement);
- `WriterTurns`: SQLite writers of one file take turns on a lock file (flock) instead of sleeping
  in SQLite's busy handler.

database.py and the modules with hot statements use these; everything else is plain SQLAlchemy.
"""

from __future__ import annotations

import os
import re
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import IO, TYPE_CHECKING, Any, cast

from sqlalchemy import String, literal_column
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, NoResultFound
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ClauseElement
from sqlalchemy.sql.visitors import replacement_traverse

if TYPE_CHECKING:
    class ResultRow(tuple[Any, ...]):
        """A row a Prepared statement returned: a named tuple of its columns (made when the statement
        is compiled, so its fields are not known to the type checker)."""

        def __getattr__(self, name: str) -> Any: ...
else:
    ResultRow = tuple


class WriterTurns:
    """SQLite admits one writer at a time. A writer that finds the lock taken sleeps in SQLite's
    busy handler in growing steps (1, 2, 5, 10, 15, 20, 25 ... ms) and retries, so under load two
    workers writing at once cost the loser 20-80 ms for a lock held about 1 ms. Writers of one
    database file take turns on a lock file beside it instead: flock() wakes the next writer the
    moment the lock is released. Nested write blocks in one thread take the turn once; threads of
    one process queue on an in-process lock first (flock does not exclude them from each other).
    Writers that skip this (the sqlite3 shell, a checkpoint) still meet the busy timeout.
    No path (MySQL, an in-memory SQLite): no turns to take."""

    def __init__(self, database_path: str | None) -> None:
        self.path = database_path + ".write-lock" if database_path else None
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._file: IO[str] | None = None
        self._pid = 0
        self.writes = 0  # write blocks that ended since the last checkpoint (see checkpoint_if_due)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        import fcntl

        with self._thread_lock:
            if self._depth == 0:
                # a forked child must not share its parent's lock (None: close() reset _pid too)
                if self._file is None or self._pid != os.getpid():
                    self._file = open(self.path, "a")  # noqa: SIM115 - held for the process's life
                    self._pid = os.getpid()
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    if self._file is not None:  # None: close() in this block, which released the lock
                        fcntl.flock(self._file, fcntl.LOCK_UN)
                    self.writes += 1

    def close(self) -> None:
        with self._thread_lock:
            if self._file is not None and self._pid == os.getpid():
                self._file.close()
            self._file, self._pid = None, 0


class Prepared:
    """A Core statement for the hottest paths, run straight on the driver's cursor.

    Each `conn.execute()` costs SQLAlchemy about 0.1 ms of CPU (cache key, parameter processing,
    result set-up) on top of what the database does, and a USSD request runs a few statements
    that need none of it. A Prepared statement is compiled once per dialect into its SQL, the
    order of its parameters, their converters (SQLite keeps datetimes as text) and the values of
    its constants, and its result columns' converters; a call converts the caller's parameters,
    executes, and converts the rows. Plain parameters only (no expanding IN lists: refused when
    compiled). `Database.execute` runs one on the request connection; `run` on a connection or
    ORM session inside a write transaction."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = _Compiled(self.statement, dialect)
        return found

    def run(self, executor: Connection | Session, params: dict) -> Executed:
        """Execute on `executor`'s connection, in its current transaction. Driver errors come out
        as SQLAlchemy's (IntegrityError, OperationalError ...), and a connection the database
        dropped is invalidated, as with `conn.execute()`."""
        return self._execute(executor, [params])

    def run_many(self, executor: Connection | Session, rows: list[dict]) -> Executed:
        """The statement once per parameter set, in one call to the driver (pymysql sends an
        INSERT's rows as one multi-row statement: one round trip). No result rows."""
        return self._execute(executor, rows)

    def _execute(self, executor: Connection | Session, batch: list[dict]) -> Executed:
        if isinstance(executor, Session):
            executor.flush()  # as Session.execute would: pending ORM objects first
            conn = executor.connection()
        else:
            conn = executor
        dialect = conn.dialect
        compiled = self.compiled(dialect)
        dbapi_connection = conn.connection
        cursor = dbapi_connection.cursor()
        values: Any = None
        try:
            if len(batch) == 1:
                values = compiled.parameters(batch[0])
                cursor.execute(compiled.sql, values)
            else:
                values = [compiled.parameters(params) for params in batch]
                cursor.executemany(compiled.sql, values)
            rows = cursor.fetchall() if cursor.description else []
            done = Executed(compiled.converted(rows) if rows else rows, cursor.rowcount, cursor.lastrowid)
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, dbapi_connection.dbapi_connection, cursor)
            with suppress(Exception):
                cursor.close()
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(compiled.sql, values, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost, dialect=dialect) from exc
        cursor.close()
        return done


_SAFE_TEXT = re.compile(r"[A-Za-z0-9._ -]{0,64}")


def _inline_constants(statement: Executable) -> ClauseElement:
    """The statement with its constant integers and plain words written into the SQL instead of
    sent as parameters (`status = 'pending'`, `pin_failures = 0`): each parameter costs the
    driver an escape per call and the database a substitution; the statement's SQL does not
    change between calls either way. Parameters a call gives, and any other constant, stay
    parameters."""

    def inline(element: Any, **_kw: Any) -> Any:
        if not isinstance(element, BindParameter) or not element.unique or element.required \
                or element.callable is not None or element.expanding or element.literal_execute:
            return None  # only the anonymous ones a literal in the statement made (`status == "pending"`)
        value = element.value
        if isinstance(value, int) and not isinstance(value, bool):
            return literal_column(str(int(value)), type_=element.type)
        if isinstance(value, str) and _SAFE_TEXT.fullmatch(value) and isinstance(element.type, String):
            return literal_column(f"'{value}'", type_=element.type)
        return None

    # every Executable given to Prepared is a ClauseElement (select, insert, update, text)
    return cast(ClauseElement, replacement_traverse(cast(ClauseElement, statement), {}, inline))


# namedtuple with fields known only at run time (a statement's columns): not a type mypy can name
_namedtuple: Callable[..., Any] = namedtuple


class _Compiled:
    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        inlined = _inline_constants(statement)
        compiled = cast(SQLCompiler, inlined.compile(dialect=dialect))  # a Core statement's compiler
        if any(bind.expanding for bind in compiled.binds.values()):
            raise ValueError("a Prepared statement cannot take expanding parameters")
        if compiled.literal_execute_params:  # e.g. MySQL's LIMIT: a constant, written into the SQL
            compiled = cast(SQLCompiler, inlined.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}))
        defaulted = [column.name for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if defaulted:  # SQLAlchemy would compute these at each execution; this path does not
            raise ValueError(f"give {', '.join(defaulted)} a value in the statement: their defaults are Python's")
        self.sql = compiled.string
        names = dict(compiled.bind_names)
        self.constants = {name: bind.effective_value for bind, name in names.items() if not bind.required}
        self.converters = {name: conv for bind, name in names.items()
                           if (conv := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
        self.order = None
        if compiled.positional:
            if compiled.positiontup is None:  # a positional compile lists its parameters in order
                raise RuntimeError("a positional statement compiled without its parameters' order")
            self.order = tuple(compiled.positiontup)
        # A SELECT's columns, or what INSERT/UPDATE .. RETURNING returns: rows are named tuples
        columns = list(getattr(inlined, "exported_columns", ()))
        self.row: Callable[..., Any] = _namedtuple(
            "Row", [str(getattr(c, "key", None) or "_") for c in columns], rename=True,
        )._make if columns else tuple  # plain SQL: columns unknown
        self.results = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self.converts_rows = any(self.results)

    def parameters(self, params: dict) -> tuple | dict:
        values = dict(self.constants, **params) if self.constants else params
        if self.converters:
            values = {name: (conv(values[name]) if (conv := self.converters.get(name)) else value)
                      for name, value in values.items()}
        return tuple(values[name] for name in self.order) if self.order is not None else values

    def converted(self, rows: Sequence[tuple]) -> list[ResultRow]:
        if not self.converts_rows:
            return [self.row(row) for row in rows]
        return [self.row(conv(value) if conv else value for conv, value in zip(self.results, row, strict=True))
                for row in rows]


class Executed:
    """What a Prepared statement returned: its rows (a SELECT's, or RETURNING's), the row count,
    and the id of the row an INSERT added."""

    __slots__ = ("rows", "rowcount", "lastrowid")

    def __init__(self, rows: Sequence[ResultRow], rowcount: int, lastrowid: int | None) -> None:
        self.rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    def first(self) -> ResultRow | None:
        return self.rows[0] if self.rows else None

    def one(self) -> ResultRow:
        if len(self.rows) != 1:
            raise NoResultFound(f"{len(self.rows)} rows where exactly one was expected")
        return self.rows[0]

    def scalar(self):
        return self.rows[0][0] if self.rows else None
