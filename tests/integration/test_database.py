"""database.py's own machinery: Prepared statements (the hot path's statements run on the driver's
cursor) must read and write exactly what SQLAlchemy would, and fail the same way; SQLite writers
take turns on a lock file instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import datetime as dt
import fcntl
import gc
import threading
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

import database
from helpers.infra.fastpath import Prepared
from helpers.ussd import sessions
from models import User, UssdSession, utcnow
from tests.conftest import DEMO, balance, load_gunicorn_conf

_SESSIONS = UssdSession.__table__


def _save(db, session_id: str, phone: str, **changes) -> None:
    exists = changes.pop("exists", False)
    values = dict(state="main", trail="", text_hash="h" * 64, reply="CON menu", onboarding_tokens=0, choices={})
    values.update(changes)
    sessions.save(db, session_id, phone, "*384*123#", exists=exists, **values)


def test_the_step_read_returns_what_sqlalchemy_returns(wallet):
    """The same statement through SQLAlchemy and through the driver's cursor, for a known caller
    with and without a session row and for a stranger: the same rows."""
    db = wallet.db
    _save(db, "prep-1", DEMO[0], choices={"2": 7}, onboarding_tokens=1)
    for statement in sessions._LOAD_STEP.values():
        for session_id, phone in (("prep-1", DEMO[0]), ("prep-none", DEMO[0]), ("prep-1", "+254799999999")):
            params = {"phone": phone, "session_id": session_id, "payer_phone": phone, "now": utcnow(),
                      "resume_since": utcnow() - dt.timedelta(minutes=5)}
            through_sqlalchemy = tuple(db.fetch_all(statement.statement, params)[0])
            assert db.execute(statement, params).first() == through_sqlalchemy
    view, user, requests = sessions.load_step(db, "prep-1", DEMO[0], with_requests=True)
    assert view.exists and view.phone == DEMO[0] and view.choices == {"2": 7} and view.onboarding_tokens == 1
    assert user is not None and user.phone == DEMO[0] and user.pin_clean and requests == 0
    assert sessions.load_step(db, "prep-1", DEMO[0], with_requests=False)[2] is None


def test_prepared_writes_store_what_the_models_read_back(wallet):
    """Datetimes and booleans written through the driver's cursor read back through the ORM as
    the same values (SQLite keeps them as text and integers: the converters must match)."""
    db = wallet.db
    before = utcnow()
    _save(db, "prep-2", DEMO[1])
    _save(db, "prep-2", DEMO[1], exists=True, reply="END bye", state="end")
    with db.read() as s:
        row = s.scalars(select(UssdSession).where(UssdSession.session_id == "prep-2")).one()
        assert row.active is False and row.last_reply == "END bye" and row.state == "end"
        assert isinstance(row.created_at, dt.datetime) and before - dt.timedelta(seconds=1) <= row.created_at
        assert row.last_activity >= row.created_at
        since = before - dt.timedelta(seconds=1)  # compared by the database: stored in SQLAlchemy's format
        assert s.scalar(select(func.count(UssdSession.id)).where(UssdSession.last_activity >= since)) == 1


def test_driver_errors_come_out_as_sqlalchemy_errors_and_change_nothing(wallet):
    db = wallet.db
    _save(db, "prep-3", DEMO[2])
    values = dict(state="main", input_buffer="", last_text_hash=None, last_reply="x", active=True,
                  last_activity=utcnow(), onboarding_tokens=0, choices=None, session_id="prep-3", phone=DEMO[0],
                  service_code="*1#", created_at=utcnow())
    with pytest.raises(IntegrityError), db.begin():
        db.execute(sessions._INSERT, values)
    with db.read() as s:
        assert s.scalars(select(UssdSession.phone).where(UssdSession.session_id == "prep-3")).all() == [DEMO[2]]


_USERS = User.__table__
_BALANCE_OF = Prepared(select(User.balance_sats).where(User.phone == bindparam("phone")))
_ADD = Prepared(_USERS.update().where(User.phone == bindparam("phone"))
                .values(balance_sats=User.balance_sats + bindparam("add")))


def test_a_write_block_after_reads_is_one_transaction_that_others_see_only_when_committed(wallet):
    """The request connection reads in autocommit; a `begin()` block after reads must still be a
    real transaction: another connection does not see its writes until it commits, and an error
    inside it undoes all of them (two balance changes here, as a transfer makes)."""
    db = wallet.db
    start = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    assert db.execute(_BALANCE_OF, {"phone": DEMO[0]}).scalar() == start[0]  # a read first, as a step does

    class Stop(Exception):
        pass

    with pytest.raises(Stop), db.begin():
        db.execute(_ADD, {"phone": DEMO[0], "add": -500})
        db.execute(_ADD, {"phone": DEMO[1], "add": 500})
        assert (balance(wallet, DEMO[0]), balance(wallet, DEMO[1])) == start  # not yet visible elsewhere
        raise Stop
    assert (balance(wallet, DEMO[0]), balance(wallet, DEMO[1])) == start  # both undone
    db.execute(_BALANCE_OF, {"phone": DEMO[1]})
    with db.begin():
        db.execute(_ADD, {"phone": DEMO[0], "add": -500})
        db.execute(_ADD, {"phone": DEMO[1], "add": 500})
    assert (balance(wallet, DEMO[0]), balance(wallet, DEMO[1])) == (start[0] - 500, start[1] + 500)
    with db.begin():  # and back: the balances agree with the ledger again
        db.execute(_ADD, {"phone": DEMO[0], "add": 500})
        db.execute(_ADD, {"phone": DEMO[1], "add": -500})
    assert (balance(wallet, DEMO[0]), balance(wallet, DEMO[1])) == start
    with pytest.raises(RuntimeError, match="already open"), db.begin(), db.begin():
        pass
    db.remove_session()


def test_a_read_only_request_sends_no_rollback_on_mysql(wallet):
    """MySQL: reads outside `begin()` run in autocommit, so a request that only read ends without
    a ROLLBACK round trip; a write block that fails still rolls back on the server. Counted by
    the server itself (Com_rollback of the connection's own session)."""
    db = wallet.db
    if db.is_sqlite:
        pytest.skip("MySQL's statement counters")

    def rollbacks() -> int:
        return int(db.connection().exec_driver_sql("SHOW SESSION STATUS LIKE 'Com_rollback'").one()[1])

    before = rollbacks()
    for _ in range(3):
        db.execute(_BALANCE_OF, {"phone": DEMO[0]})
        db.fetch_all(select(User.id).where(User.phone == DEMO[1]))
        db.remove_session()  # the request's end
    assert rollbacks() == before
    with pytest.raises(IntegrityError), db.begin():
        db.execute(_ADD, {"phone": DEMO[0], "add": 1})
        db.execute(Prepared(_USERS.insert().values(phone=bindparam("p"), balance_sats=0, language="en",
                                                   pin_failures=0, pin_locks=0, tier=0, created_at=bindparam("now"))),
                   {"p": DEMO[1], "now": utcnow()})
    assert rollbacks() == before + 1
    db.remove_session()


def test_expanding_parameters_are_refused_and_converted_columns_come_back_converted(wallet):
    """An expanding IN list would make the fast path differ from SQLAlchemy: refused when compiled.
    Columns the driver returns in another form (SQLite: datetimes as text, booleans as 0/1) are
    converted as SQLAlchemy converts them."""
    db = wallet.db
    with pytest.raises(ValueError, match="expanding"):
        Prepared(select(User.id).where(User.id.in_(bindparam("ids", expanding=True)))).compiled(db.engine.dialect)
    _save(db, "prep-4", DEMO[0])
    read = Prepared(select(UssdSession.active, UssdSession.created_at, UssdSession.session_id)
                    .where(UssdSession.session_id == bindparam("sid")))
    prepared_row = db.execute(read, {"sid": "prep-4"}).first()
    assert prepared_row == tuple(db.fetch_all(read.statement, {"sid": "prep-4"})[0])
    assert prepared_row[0] is True and isinstance(prepared_row[1], dt.datetime)
    assert db.execute(read, {"sid": "missing"}).first() is None


def test_sqlite_writers_wait_for_their_turn_and_go_when_it_is_released(wallet):
    """Another process holding the writer turn (here: this test holding the lock file) makes a
    write wait, not fail; released, the write goes through at once."""
    db = wallet.db
    if not db.is_sqlite:
        pytest.skip("MySQL writers queue on row locks; SQLite is the one with a single writer")
    lock_path = Path(db.engine.url.database + ".write-lock")
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            _save(db, "turns-1", DEMO[0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            db.remove_session()
            done.set()

    with open(lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a separate open file: excludes this process's own turns
        thread = threading.Thread(target=writer)
        thread.start()
        assert not done.wait(0.5), "a write went ahead while another writer had the turn"
        fcntl.flock(held, fcntl.LOCK_UN)
    assert done.wait(5) and not errors
    thread.join()
    with db.read() as s:
        assert s.scalar(select(UssdSession.phone).where(UssdSession.session_id == "turns-1")) == DEMO[0]


def test_the_write_ahead_log_is_checkpointed_after_a_reply_without_taking_the_writer_turn(wallet, client):
    """After CHECKPOINT_EVERY_WRITES write blocks, the next reply's close copies SQLite's log into
    the database file, while another writer holds the turn (it does not wait for it); the log then
    restarts from its beginning instead of growing."""
    db = wallet.db
    if not db.is_sqlite:
        pytest.skip("MySQL has no write-ahead log of ours to checkpoint")
    wal = Path(db.engine.url.database + "-wal")

    def writes(count: int, tag: str) -> None:
        for n in range(count):
            _save(db, f"ckpt-{tag}-{n}", DEMO[0])
        db.remove_session()

    writes(database.CHECKPOINT_EVERY_WRITES, "a")
    response = client.post("/ussd", data={"sessionId": "ckpt-reply", "phoneNumber": DEMO[0], "text": ""})
    grown = wal.stat().st_size
    done = threading.Event()

    def reply_sent() -> None:
        response.close()  # as gunicorn does once the reply has gone out
        done.set()

    with open(db.engine.url.database + ".write-lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another writer has the turn all along
        thread = threading.Thread(target=reply_sent)
        thread.start()
        finished = done.wait(5)
        fcntl.flock(held, fcntl.LOCK_UN)
    thread.join()
    assert finished, "the checkpoint waited for the writer turn"
    writes(database.CHECKPOINT_EVERY_WRITES // 2, "b")
    assert wal.stat().st_size == grown  # written over from the start: the log restarted


def test_a_gunicorn_worker_moves_its_startup_objects_out_of_the_collectors_reach(monkeypatch, tmp_path):
    conf = load_gunicorn_conf(monkeypatch, tmp_path)
    try:
        conf.post_worker_init(worker=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_mysql_server_that_accepts_and_never_answers_fails_fast(tmp_path):
    """A MariaDB that is stopping or starting can accept a connection and never greet it. With
    DB_TIMEOUT_S the worker gives up (and the caller gets "service unavailable") instead of
    waiting until gunicorn kills it. Here a loopback socket that accepts and stays silent."""
    import socket
    import time

    from database import Database

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    db = Database(f"mysql+pymysql://u:p@127.0.0.1:{listener.getsockname()[1]}/x", timeout_s=1)
    answers: list[bool] = []
    try:
        started = time.monotonic()
        probe = threading.Thread(target=lambda: answers.append(db.healthy()), daemon=True)
        probe.start()
        probe.join(10)  # without the limit it would wait forever: the test must not
        waited = time.monotonic() - started
        assert held, "the client never connected"
        assert answers == [False], f"no answer after {waited:.1f} s from a silent server"
        assert waited < 5
    finally:
        stop.set()
        thread.join()
        db.dispose()
        for conn in held:
            conn.close()
        listener.close()


def test_write_behind_chunks_are_powers_of_two_in_order_and_cover_everything():
    """Multi-row statements are compiled once per row count: flushes of any size use only the
    powers of two up to the largest chunk, and every row goes exactly once, in order."""
    from helpers.infra.writebehind import chunks

    sizes_seen: set[int] = set()
    for count in range(0, 300):
        items = list(range(count))
        parts = list(chunks(items, 64))
        assert [x for part in parts for x in part] == items
        sizes_seen.update(len(part) for part in parts)
    assert sizes_seen == {1, 2, 4, 8, 16, 32, 64}
