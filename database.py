"""Engine and sessions from DATABASE_URL; schema creation; health check.

Kinds of unit of work:
- `db.session`: request-scoped ORM session, for reads (removed when the request ends);
- `with db.write() as s:` a short ORM transaction for anything that moves money or changes state.
  On SQLite it takes this database's writer turn (`WriterTurns`) and starts with BEGIN
  IMMEDIATE, so concurrent writers queue instead of failing half-way; on MySQL it runs at READ
  COMMITTED and relies on conditional UPDATEs and unique keys, safe under any isolation level;
- the USSD hot path uses SQLAlchemy Core on one request-scoped connection: `db.fetch_all()`
  reads (each read sees the latest commit, as at READ COMMITTED), `with db.begin() as conn:` is
  a short write transaction with the same guarantees as `db.write()`. One connection for the
  whole request instead of one pool checkout per unit of work (and, under load, the same one for
  the worker's next request), and no ORM bookkeeping where none is needed. Its most frequent
  statements are `Prepared`: compiled once, run on the driver's cursor (`db.execute()`, or
  `Prepared.run()` on a transaction's connection or ORM session).
"""

from __future__ import annotations


import logging
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable, Iterator
from functools import wraps
from typing import ParamSpec, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from helpers.infra.fastpath import Executed, Prepared, WriterTurns
from models import Base

log = logging.getLogger(__name__)


_DEADLOCK_CODES = {1205, 1213}  # MySQL lock wait timeout, deadlock: the transaction is retried
# A deadlock victim (MySQL), or on Galera a transaction another node's commit certified against first
# (or aborted while it held a row lock: a brute-force abort): rolled back, safe to run again. Several
# tries, each after a short random wait, so twins on two nodes do not collide again at once (50
# withdrawals from one account on two nodes ran out of 6 tries 1 run in 3).
_ATTEMPTS = 10
_jitter = random.Random()  # noqa: S311 - spreading retries, not security
T = TypeVar("T")
P = ParamSpec("P")


def _deadlocked(exc: OperationalError) -> bool:
    args: tuple = getattr(exc.orig, "args", ())
    return bool(args) and args[0] in _DEADLOCK_CODES


def retry_deadlocks(work: Callable[[], T]) -> T:
    """Run a unit of work (a whole transaction) again when MySQL chose it as a deadlock victim, or
    Galera refused or aborted it because another node's commit came first (it was rolled back
    either way). Every write transaction a request can contend on a hot row in runs through here."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return work()
        except OperationalError as exc:
            if not _deadlocked(exc) or attempt == _ATTEMPTS:
                raise
            log.info("retrying after %s", exc.orig)
            time.sleep(_jitter.uniform(0.005, 0.02) * attempt)
    raise AssertionError("unreachable")


def retried(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn`, a whole write transaction, run through retry_deadlocks: for the small writes to a
    customer's row (PIN, language, name) that a movement on another Galera node can abort."""
    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return retry_deadlocks(lambda: fn(*args, **kwargs))
    return run

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
            # else: the request connection's reads, one statement each (see Database.fetch_all)

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

    engine.dialect.do_rollback = _rollback_if_open  # type: ignore[method-assign]  # wraps the dialect's own
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
        self._writer_turn = WriterTurns(path if path and path != ":memory:" else None)

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

    def fetch_all(self, statement, params: dict | None = None) -> list[Row]:
        """Rows of a read on the request connection. Outside `begin()`, every read sees what is
        committed when it runs (SQLite: no snapshot held; MySQL: READ COMMITTED)."""
        return list(self.connection().execute(statement, params).all())

    def execute(self, prepared: Prepared, params: dict) -> Executed:
        """Run a Prepared statement on the request connection: inside `begin()` it is part of that
        transaction; outside, a read that sees the latest commit, as `fetch_all`."""
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
        """Create the tables straight from the models (tests), and record them as the newest
        migration (tests/integration/test_migrations.py proves the two agree); deployments use
        migrate()."""
        Base.metadata.create_all(self.engine)
        from alembic import command

        with self.engine.begin() as conn:
            config = self._alembic_config()
            config.attributes["connection"] = conn
            command.stamp(config, "head")

    def _alembic_config(self):  # -> alembic.config.Config, imported only when needed
        from alembic.config import Config

        config = Config(str(_ROOT / "alembic.ini"))
        config.set_main_option("script_location", str(_ROOT / "migrations"))
        config.attributes["configure_logging"] = False
        return config

    def head_revision(self) -> str:
        """The newest migration in migrations/."""
        from alembic.script import ScriptDirectory

        return str(ScriptDirectory.from_config(self._alembic_config()).get_current_head())

    def schema_revision(self) -> str | None:
        """The migration the database is at (None: no migration ever ran)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to `revision` with the Alembic migrations in migrations/. Workers that
        start together (gunicorn) take turns: the first migrates, the others find nothing to do."""
        from alembic import command

        config = self._alembic_config()
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
        with self.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))

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


# ------------------------------------------------------------------ what the database refuses
# Posted rows are never edited: the database refuses it (the same statements in the migration).
APPEND_ONLY = ("postings", "audit_log")


def _append_only_ddl(table: str, dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {table}_no_{op} BEFORE {op.upper()} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END" for op in ("update", "delete")]
    return [f"CREATE TRIGGER {table}_no_{op} BEFORE {op.upper()} ON {table} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{table} are append-only'" for op in ("update", "delete")]


# A movement's money and place in the journal never change; its state may (status, settled_at, the
# fee the rail cost, M-Pesa's receipt, an operator's note), once, when it is posted or voided.
FIXED_MOVEMENT_COLUMNS = ("user_id", "type", "kind", "direction", "amount_sats", "reference", "follows_id")


def fixed_movement_ddl(dialect: str) -> list[str]:
    message = "a movement is never edited or deleted: post or void it"
    if dialect == "sqlite":
        return [f"CREATE TRIGGER transactions_money_fixed BEFORE UPDATE OF {', '.join(FIXED_MOVEMENT_COLUMNS)} "
                f"ON transactions BEGIN SELECT RAISE(ABORT, '{message}'); END",
                f"CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"]
    changed = " OR ".join(f"NOT (NEW.{c} <=> OLD.{c})" for c in FIXED_MOVEMENT_COLUMNS)
    return [f"CREATE TRIGGER transactions_money_fixed BEFORE UPDATE ON transactions FOR EACH ROW "  # noqa: S608 - constant column names
            f"BEGIN IF {changed} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'; END IF; END",
            f"CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'"]


def _install_append_only(target, connection, **_kw) -> None:
    for statement in _append_only_ddl(target.name, connection.dialect.name):
        connection.execute(text(statement))


def _install_fixed_movements(target, connection, **_kw) -> None:
    for statement in fixed_movement_ddl(connection.dialect.name):
        connection.execute(text(statement))


for _table in APPEND_ONLY:
    event.listen(Base.metadata.tables[_table], "after_create", _install_append_only)
event.listen(Base.metadata.tables["transactions"], "after_create", _install_fixed_movements)
