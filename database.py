"""Engine and sessions from DATABASE_URL; schema creation; health check.

Two kinds of unit of work:
- `db.session`: request-scoped, for reads (removed when the request ends);
- `with db.write() as s:` a short transaction for anything that moves money or changes state.
  On SQLite it starts with BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout
  instead of failing half-way; on MySQL it runs at READ COMMITTED and relies on conditional
  UPDATEs and unique keys, which are safe under any isolation level.
"""

from __future__ import annotations


import logging
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from models import Base

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent

_SQLITE_BUSY_TIMEOUT_MS = 10_000


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
            cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

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
        """End the request's session; a connection lost with the database must not turn a
        finished reply into an error."""
        try:
            self.session.remove()
        except SQLAlchemyError as exc:
            log.warning("closing the request session failed: %s", type(exc).__name__)
            self.session.registry.clear()

    def dispose(self) -> None:
        self.session.remove()
        self.engine.dispose()
