"""Engine and sessions from DATABASE_URL; schema creation; health check.

Kinds of unit of work:
- `db.session`: request-scoped ORM session, for reads (removed when the request ends);
- `with db.write() as s:` a short ORM transaction for anything that moves money or changes state.
  On SQLite it takes this database's writer turn (`_WriterTurns`) and starts with BEGIN
  IMMEDIATE, so concurrent writers queue instead of failing half-way; on MySQL it runs at READ
  COMMITTED and relies on conditional UPDATEs and unique keys, safe under any isolation level;
- the USSD hot path uses SQLAlchemy Core on one request-scoped connection: `db.fetch_one()`
  reads (each read sees the latest commit, as at READ COMMITTED), `with db.begin() as conn:` is
  a short write transaction with the same guarantees as `db.write()`. One connection for the
  whole request instead of one pool checkout per unit of work (and, under load, the same one for
  the worker's next request), and no ORM bookkeeping where none is needed. Its most frequent
  statements are `Prepared`: compiled once, run on the driver's cursor (`db.execute()`, or
  `Prepared.run()` on a transaction's connection or ORM session).
"""

from __future__ import annotations


import logging
import os
import threading
import time
from collections import namedtuple
from contextlib import contextmanager, suppress
from pathlib import Path
from collections.abc import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Dialect, Engine, Row
from sqlalchemy.exc import DBAPIError, NoResultFound, SQLAlchemyError
from sqlalchemy.sql import Executable
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from models import Base

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent

_SQLITE_BUSY_TIMEOUT_MS = 10_000
# No memory map of the database file (SQLite reads pages into its own cache, 2 MB per
# connection). A 256 MB map was faster when each request opened its connection; with kept
# connections, five interleaved benchmark pairs gave more requests/s and a lower p99 without it,
# and a worker's RSS no longer counts the file (docs/performance.md, night of 2026-11-23).
_SQLITE_MMAP_BYTES = 0
# Checkpoints of the write-ahead log (copying its pages into the database file, then an fsync):
# SQLite runs one inside the COMMIT that makes the log reach wal_autocheckpoint pages, so inside
# that writer's turn, and every writer of every worker waited for it (PIN steps: p99 15 ms on the
# server, 3.5 ms without). Instead each process checkpoints after every CHECKPOINT_EVERY_WRITES
# of its write transactions, outside the turn, after a reply has gone out (others keep writing
# meanwhile); the log restarts once one has copied everything. SQLite's own, at the pages below,
# stays as the bound for when that falls behind, and for other programs writing the file.
_SQLITE_AUTOCHECKPOINT_PAGES = 4000
CHECKPOINT_EVERY_WRITES = 64
# A worker keeps its request connection between requests (no pool checkout, pre-ping and reset per
# request) unless it sat unused this long, or has been kept this long (the pool then checks it).
_HOLD_IDLE_S = 2.0
_HOLD_MAX_S = 60.0
# MySQL's server status flags (SERVER_STATUS_IN_TRANS, SERVER_STATUS_AUTOCOMMIT), sent with each reply.
_MYSQL_IN_TRANS = 0x0001
_MYSQL_AUTOCOMMIT = 0x0002


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or failed mid-request."""


class _WriterTurns:
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
        self._file = None
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
                if self._pid != os.getpid():  # a forked child must not share its parent's lock
                    self._file = open(self.path, "a")  # noqa: SIM115 - held for the process's life
                    self._pid = os.getpid()
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
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
        if isinstance(executor, Session):
            executor.flush()  # as Session.execute would: pending ORM objects first
            conn = executor.connection()
        else:
            conn = executor
        dialect = conn.dialect
        compiled = self.compiled(dialect)
        values = compiled.parameters(params)
        dbapi_connection = conn.connection
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(compiled.sql, values)
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


class _Compiled:
    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if any(bind.expanding for bind in compiled.binds.values()):
            raise ValueError("a Prepared statement cannot take expanding parameters")
        if compiled.literal_execute_params:  # e.g. MySQL's LIMIT: a constant, written into the SQL
            compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        defaulted = [column.name for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if defaulted:  # SQLAlchemy would compute these at each execution; this path does not
            raise ValueError(f"give {', '.join(defaulted)} a value in the statement: their defaults are Python's")
        self.sql = compiled.string
        names = dict(compiled.bind_names)
        self.constants = {name: bind.effective_value for bind, name in names.items() if not bind.required}
        self.converters = {name: conv for bind, name in names.items()
                           if (conv := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
        self.order = tuple(compiled.positiontup) if compiled.positional else None
        # A SELECT's columns, or what INSERT/UPDATE .. RETURNING returns: rows are named tuples
        columns = list(getattr(statement, "exported_columns", ()))
        self.row = namedtuple("Row", [str(getattr(c, "key", None) or "_") for c in columns],  # noqa: PYI024
                              rename=True)._make if columns else tuple  # plain SQL: columns unknown
        self.results = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self.converts_rows = any(self.results)

    def parameters(self, params: dict) -> tuple | dict:
        values = dict(self.constants, **params) if self.constants else params
        if self.converters:
            values = {name: (conv(values[name]) if (conv := self.converters.get(name)) else value)
                      for name, value in values.items()}
        return tuple(values[name] for name in self.order) if self.order is not None else values

    def converted(self, rows: list[tuple]) -> list[tuple]:
        if not self.converts_rows:
            return [self.row(row) for row in rows]
        return [self.row(conv(value) if conv else value for conv, value in zip(self.results, row, strict=True))
                for row in rows]


class Executed:
    """What a Prepared statement returned: its rows (a SELECT's, or RETURNING's), the row count,
    and the id of the row an INSERT added."""

    __slots__ = ("rows", "rowcount", "lastrowid")

    def __init__(self, rows: list[tuple], rowcount: int, lastrowid: int | None) -> None:
        self.rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    def first(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def one(self) -> tuple:
        if len(self.rows) != 1:
            raise NoResultFound(f"{len(self.rows)} rows where exactly one was expected")
        return self.rows[0]

    def scalar(self):
        return self.rows[0][0] if self.rows else None


def _make_engine(url: str, pool_size: int, recycle_s: int, timeout_s: float) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):  # pragma: no cover - trivial
            # Let SQLAlchemy, not pysqlite, emit BEGIN, so BEGIN IMMEDIATE is possible.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={_SQLITE_AUTOCHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA mmap_size={_SQLITE_MMAP_BYTES}")
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            options = conn.get_execution_options()
            if options.get("sqlite_immediate", False):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif not options.get("sqlite_autocommit_reads", False):
                conn.exec_driver_sql("BEGIN")
            # else: the request connection's reads, one statement each (see Database.fetch_one)

        return engine
    engine = create_engine(
        url,
        # Every connect, read and write has a time limit: a database that is stopping (or hung)
        # may accept a connection and never greet it, and without a limit the worker would wait
        # until gunicorn kills it. With one, the caller gets the "service unavailable" END.
        connect_args={"connect_timeout": timeout_s, "read_timeout": timeout_s, "write_timeout": timeout_s},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a connection the server dropped is replaced, not handed out
        pool_recycle=recycle_s,  # below MySQL's wait_timeout
        pool_timeout=5,
        isolation_level="READ COMMITTED",
    )

    @event.listens_for(engine, "begin")
    def _mysql_begin(conn):  # pragma: no cover - trivial
        # The request connection runs in autocommit (see Database.connection): a write
        # transaction on it must be opened explicitly, a read's autobegin opens nothing.
        if conn.get_execution_options().get("mysql_start_transaction", False):
            conn.exec_driver_sql("START TRANSACTION")

    plain_rollback = engine.dialect.do_rollback

    def _rollback_if_open(dbapi_connection) -> None:
        """ROLLBACK only when there is something to roll back: a connection in autocommit whose
        server said (in the status flags of its last reply) that no transaction is open has
        none, and sending ROLLBACK anyway costs a round trip at the end of every read-only
        request. pymysql keeps those flags; other drivers always roll back."""
        status = getattr(dbapi_connection, "server_status", None)
        if isinstance(status, int) and status & _MYSQL_AUTOCOMMIT and not status & _MYSQL_IN_TRANS:
            return
        plain_rollback(dbapi_connection)

    engine.dialect.do_rollback = _rollback_if_open
    return engine


class Database:
    """The app's database: engine, request session, write transactions."""

    def __init__(self, url: str, pool_size: int = 5, recycle_s: int = 280, timeout_s: float = 10) -> None:
        self.url = url
        self.engine = _make_engine(url, pool_size, recycle_s, timeout_s)
        self.is_sqlite = url.startswith("sqlite")
        self._factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.session = scoped_session(self._factory)
        self._local = threading.local()  # the request's Core connection, per thread
        path = self.engine.url.database if self.is_sqlite else None
        self._begin_option = "sqlite_immediate" if self.is_sqlite else "mysql_start_transaction"
        self._writer_turn = _WriterTurns(path if path and path != ":memory:" else None)

    # ------------------------------------------------------------ the request's Core connection
    def connection(self) -> Connection:
        """The Core connection of the current request. A worker under load keeps it from one
        request to the next (each request ends with its transaction closed); one idle for a
        while, or held for long, goes back to the pool first, which checks it (pre-ping) and
        recycles it, as for any checkout."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.idle_since is not None:
            now = time.monotonic()
            if conn.closed or conn.invalidated or now - local.idle_since > _HOLD_IDLE_S \
                    or now - local.taken_at > _HOLD_MAX_S:
                self._release_connection()
                conn = None
            else:
                local.idle_since = None
        if conn is None:
            conn = self.engine.connect()
            # Autocommit: a read outside begin() is a transaction of its own and leaves none
            # open, so a read-only request sends no BEGIN and no ROLLBACK.
            conn.execution_options(**({"sqlite_autocommit_reads": True} if self.is_sqlite
                                      else {"isolation_level": "AUTOCOMMIT"}))
            local.conn, local.taken_at, local.idle_since = conn, time.monotonic(), None
        return conn

    def fetch_one(self, statement, params: dict | None = None) -> Row | None:
        """First row of a read on the request connection. Outside `begin()`, every read sees
        what is committed when it runs (SQLite: no snapshot held; MySQL: READ COMMITTED)."""
        return self.connection().execute(statement, params).first()

    def fetch_all(self, statement, params: dict | None = None) -> list[Row]:
        return list(self.connection().execute(statement, params).all())

    def execute(self, prepared: Prepared, params: dict) -> Executed:
        """Run a Prepared statement on the request connection: inside `begin()` it is part of that
        transaction; outside, a read that sees the latest commit, as `fetch_one`."""
        return prepared.run(self.connection(), params)

    @contextmanager
    def begin(self, single_statement: bool = False) -> Iterator[Connection]:
        """A short write transaction on the request connection: commits on success, rolls back on
        any exception. Same guarantees as write(): BEGIN IMMEDIATE on SQLite (in this database's
        writer turn), START TRANSACTION on MySQL (at READ COMMITTED).

        `single_statement`: the block runs exactly one write statement (and reads all the rows it
        returns). The database runs such a statement atomically on its own (the request
        connection is in autocommit), so no BEGIN / COMMIT is sent."""
        conn = self.connection()
        if getattr(self._local, "writing", False):
            raise RuntimeError("a write transaction is already open on this connection")
        with self._writer_turn():
            if single_statement:
                yield conn  # autocommit: the statement commits when it completes
                return
            if conn.in_transaction():
                conn.rollback()  # reads only, in autocommit: nothing to undo, nothing is sent
            conn.execution_options(**{self._begin_option: True})
            try:
                conn.begin()
            finally:
                conn.execution_options(**{self._begin_option: False})
            self._local.writing = True
            try:
                yield from self._commit_or_roll_back(conn)
            finally:
                self._local.writing = False

    @staticmethod
    def _commit_or_roll_back(conn: Connection) -> Iterator[Connection]:
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def checkpoint_if_due(self) -> bool:
        """SQLite: copy the write-ahead log into the database file once this process has ended
        CHECKPOINT_EVERY_WRITES write blocks since the last time. PASSIVE and outside the writer
        turn: other writers go on meanwhile (what they add is left for the next one). For the
        moment after a reply (app.py); True when it used this thread's connection (even if
        the checkpoint failed)."""
        turns = self._writer_turn
        if turns.writes < CHECKPOINT_EVERY_WRITES or turns.path is None:
            return False
        turns.writes = 0
        try:
            self.connection().exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").close()
        except SQLAlchemyError as exc:  # the next write block brings the next try
            log.warning("checkpoint failed: %s", type(exc).__name__)
        return True

    def _end_request_connection(self) -> None:
        """The request is over: close its transaction and keep the connection for the next one
        (or return it to the pool if it failed)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        try:
            if conn.invalidated or conn.closed:
                raise DatabaseUnavailable("the request connection was lost")
            if conn.in_transaction():
                conn.rollback()  # reads only by now (writes commit in begin()): sends nothing in autocommit
            self._local.idle_since = time.monotonic()
        except (SQLAlchemyError, DatabaseUnavailable):
            self._release_connection()

    def _release_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A unit of work that commits on success and rolls back on any exception."""
        with self._writer_turn(), self._factory() as session:
            if self.is_sqlite:
                session.connection(execution_options={"sqlite_immediate": True})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A short read-only session outside the request (CLI, background work)."""
        with self._factory() as session:
            yield session

    def create_schema(self) -> None:
        """Create the tables straight from the models (tests); deployments use migrate()."""
        Base.metadata.create_all(self.engine)

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to `revision` with the Alembic migrations in migrations/. Workers that
        start together (gunicorn) take turns: the first migrates, the others find nothing to do."""
        from alembic import command
        from alembic.config import Config

        config = Config(str(_ROOT / "alembic.ini"))
        config.set_main_option("script_location", str(_ROOT / "migrations"))
        config.attributes["configure_logging"] = False
        with self._migration_lock(), self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """One migrating process at a time: a lock file beside a SQLite database (SQLite would
        refuse a second writer's schema change at once, not make it wait), a named lock on MySQL."""
        if self.is_sqlite:
            path = self.engine.url.database
            if not path or path == ":memory:":
                yield
                return
            import fcntl

            with open(path + ".migrate-lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT GET_LOCK('ussd_wallet_migrate', 120)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT RELEASE_LOCK('ussd_wallet_migrate')"))

    def drop_schema(self) -> None:
        Base.metadata.drop_all(self.engine)

    def healthy(self) -> bool:
        """True when a trivial query succeeds."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError as exc:
            log.warning("database health check failed: %s", type(exc).__name__)
            return False

    def remove_session(self, _exc: BaseException | None = None) -> None:
        """End the request's session and connection; a connection lost with the database must not
        turn a finished reply into an error."""
        try:
            self.session.remove()
        except SQLAlchemyError as exc:
            log.warning("closing the request session failed: %s", type(exc).__name__)
            self.session.registry.clear()
        try:
            self._end_request_connection()
        except SQLAlchemyError as exc:
            log.warning("closing the request connection failed: %s", type(exc).__name__)

    def dispose(self) -> None:
        self.session.remove()
        self._release_connection()
        self.engine.dispose()
        self._writer_turn.close()
