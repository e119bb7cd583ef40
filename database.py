"""Engine and sessions from DATABASE_URL; schema creation; health check.

Kinds of unit of work:
- `db.session`: request-scoped ORM session, for reads (removed when the request ends);
- `with db.write() as s:` a short ORM transaction for anything that moves money or changes state.
  On SQLite it starts with BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout
  instead of failing half-way; on MySQL it runs at READ COMMITTED and relies on conditional
  UPDATEs and unique keys, which are safe under any isolation level;
- the USSD hot path uses SQLAlchemy Core on one request-scoped connection: `db.fetch_one()`
  reads (each read sees the latest commit, as at READ COMMITTED), `with db.begin() as conn:` is
  a short write transaction with the same guarantees as `db.write()`. One connection for the
  whole request instead of one pool checkout per unit of work (and, under load, the same one for
  the worker's next request), and no ORM bookkeeping where none is needed.
"""

from __future__ import annotations


import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from models import Base

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent

_SQLITE_BUSY_TIMEOUT_MS = 10_000
# Read the database file through a memory map: when another worker process has written, this
# connection re-reads pages from the map instead of copying them in with a system call each.
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024
# A worker keeps its request connection between requests (no pool checkout, pre-ping and reset per
# request) unless it sat unused this long, or has been kept this long (the pool then checks it).
_HOLD_IDLE_S = 2.0
_HOLD_MAX_S = 60.0


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or failed mid-request."""


def _make_engine(url: str, pool_size: int, recycle_s: int) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):  # pragma: no cover - trivial
            # Let SQLAlchemy, not pysqlite, emit BEGIN, so BEGIN IMMEDIATE is possible.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
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
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a connection the server dropped is replaced, not handed out
        pool_recycle=recycle_s,  # below MySQL's wait_timeout
        pool_timeout=5,
        isolation_level="READ COMMITTED",
    )


class Database:
    """The app's database: engine, request session, write transactions."""

    def __init__(self, url: str, pool_size: int = 5, recycle_s: int = 280) -> None:
        self.url = url
        self.engine = _make_engine(url, pool_size, recycle_s)
        self.is_sqlite = url.startswith("sqlite")
        self._factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.session = scoped_session(self._factory)
        self._local = threading.local()  # the request's Core connection, per thread

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
            if self.is_sqlite:
                conn.execution_options(sqlite_autocommit_reads=True)
            local.conn, local.taken_at, local.idle_since = conn, time.monotonic(), None
        return conn

    def fetch_one(self, statement, params: dict | None = None) -> Row | None:
        """First row of a read on the request connection. Outside `begin()`, every read sees
        what is committed when it runs (SQLite: no snapshot held; MySQL: READ COMMITTED)."""
        return self.connection().execute(statement, params).first()

    def fetch_all(self, statement, params: dict | None = None) -> list[Row]:
        return list(self.connection().execute(statement, params).all())

    @contextmanager
    def begin(self, single_statement: bool = False) -> Iterator[Connection]:
        """A short write transaction on the request connection: commits on success, rolls back on
        any exception. Same guarantees as write() (BEGIN IMMEDIATE on SQLite).

        `single_statement`: the block runs exactly one write statement (and reads all the rows it
        returns). SQLite runs such a statement atomically on its own, taking the write lock for
        it alone, so no BEGIN IMMEDIATE / COMMIT is sent; other databases commit as usual."""
        conn = self.connection()
        if self.is_sqlite and single_statement:
            yield conn  # autocommit: the statement commits when it completes
            return
        if self.is_sqlite:
            if conn.in_transaction():
                conn.rollback()  # reads only: nothing to undo, but BEGIN IMMEDIATE must start afresh
            conn.execution_options(sqlite_immediate=True)
            try:
                conn.begin()
            finally:
                conn.execution_options(sqlite_immediate=False)
        elif not conn.in_transaction():
            conn.begin()
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

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
                conn.rollback()  # reads only by now (writes commit in begin()): MySQL's read view ends
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
        with self._factory() as session:
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
