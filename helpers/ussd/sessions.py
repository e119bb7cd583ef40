"""USSD session rows: which phone owns a sessionId, how far onboarding went, the last reply (so a
repeated request gets the same answer without being processed again), and an audit trail."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import String, Table, and_, bindparam, delete, func, insert, literal, null, or_, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Join

from database import Database, retry_deadlocks
from helpers.infra.fastpath import Prepared
from helpers.wallet.incoming.invoices import open_requests_count
from helpers.wallet.customers.users import UserView
from helpers.infra.writebehind import WriteBehind, chunks
from models import PhoneGuard, User, UssdSession, utcnow

_SESSIONS = cast(Table, UssdSession.__table__)
_USERS = cast(Table, User.__table__)
_GUARDS = cast(Table, PhoneGuard.__table__)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionView:
    exists: bool
    phone: str = ""
    onboarding_tokens: int = 0
    last_text_hash: str | None = None
    last_reply: str | None = None
    choices: dict[str, int] = field(default_factory=dict)
    active: bool = True  # False once an END was answered
    created_at: dt.datetime | None = None
    dropped: str | None = None  # a new session's: the caller's session that dropped mid-flow, if any
    # Read with a session's first step, from the phone's guard row (issue 33): when its SIM swap
    # provider may be asked again (None: never asked), and when a Forgot-PIN reset is due (None: none).
    ask_after: dt.datetime | None = None
    reset_due_at: dt.datetime | None = None

    def over(self, now: dt.datetime, life_s: int) -> bool:
        """The session has ended (an END was sent) or is older than a session may live."""
        if not self.exists:
            return False
        return not self.active or (self.created_at is not None
                                   and now - self.created_at > dt.timedelta(seconds=life_s))


# The request's two keys as a one-row table, joined to the session row and to the caller's user
# row (either may be missing): both reads in one statement, each an index lookup.
_KEYS = select(bindparam("phone", type_=String).label("phone"),
               bindparam("session_id", type_=String).label("session_id")).subquery("request_keys")
def _load_step(with_requests: bool) -> Prepared:
    return Prepared(select(
        _USERS.c.id, _USERS.c.phone, _USERS.c.balance_sats, _USERS.c.language, _USERS.c.pin_hash,
        and_(_USERS.c.pin_failures == 0, _USERS.c.pin_locks == 0),  # UserView.pin_clean
        _SESSIONS.c.id, _SESSIONS.c.phone, _SESSIONS.c.onboarding_tokens, _SESSIONS.c.last_text_hash,
        _SESSIONS.c.last_reply, _SESSIONS.c.choices, open_requests_count() if with_requests else null(),
        _SESSIONS.c.active, _SESSIONS.c.created_at,
        _resumable() if with_requests else null(),
        _GUARDS.c.next_ask_at if with_requests else null(), _GUARDS.c.reset_due_at if with_requests else null(),
        _USERS.c.tier,
    ).select_from(_joined(with_requests)))


def _joined(with_requests: bool) -> Join:
    """The request's keys, its caller's user row and its session row; on a first step (the main
    menu) also the phone's guard row (one more index lookup, in the same statement)."""
    joined = (_KEYS.outerjoin(_USERS, _USERS.c.phone == _KEYS.c.phone)
              .outerjoin(_SESSIONS, _SESSIONS.c.session_id == _KEYS.c.session_id))
    return joined.outerjoin(_GUARDS, _GUARDS.c.phone == _KEYS.c.phone) if with_requests else joined


# Screens a dropped session may be resumed at: a money flow under way, before its PIN was typed.
RESUMABLE = ("send.amount", "send.kes", "send.confirm", "send.ln.amount", "send.ln.confirm", "pin",
             "topup.code", "topup.confirm", "topup.push", "withdraw.phone", "request.amount", "payreq.confirm",
             "mpesapay.account", "mpesapay.amount", "airtime.amount")


def _resumable():
    """The newest other session of this phone left open on a RESUMABLE screen since `resume_since`
    (none: NULL): read with the first step of a new session, in the same statement."""
    other = _SESSIONS.alias("dropped")
    return (select(other.c.session_id)
            .where(other.c.phone == bindparam("phone", type_=String), other.c.active.is_(True),
                   or_(*(other.c.state == literal(name) for name in RESUMABLE)),  # no expanding IN: Prepared
                   other.c.last_activity >= bindparam("resume_since"),
                   other.c.session_id != bindparam("session_id", type_=String))
            .order_by(other.c.last_activity.desc()).limit(1).scalar_subquery())


_LOAD_STEP = {True: _load_step(True), False: _load_step(False)}


def load_step(db: Database, session_id: str, phone: str, *, with_requests: bool, resume_window_s: int = 0
              ) -> tuple[SessionView, UserView | None, int | None]:
    """The session row, the calling user (None if not registered) and, `with_requests`, how many
    open payment requests the main menu announces to the caller (else None), read together. The
    count is a subquery that costs MySQL about 0.2 ms on every read: only the step that opens a
    session asks for it (it shows the main menu); another step showing the menu reads it then."""
    now = utcnow()
    params = {"phone": phone, "session_id": session_id, "payer_phone": phone, "now": now}
    if with_requests:
        params["resume_since"] = now - dt.timedelta(seconds=resume_window_s)
    row = db.execute(_LOAD_STEP[with_requests], params).one()  # always one row (outer joins)
    user = UserView(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[18]) if row[0] is not None else None
    if row[6] is None:
        return SessionView(False, dropped=row[15] if resume_window_s else None, ask_after=row[16],
                           reset_due_at=row[17]), user, row[12]
    view = SessionView(True, row[7], row[8], row[9], row[10], json.loads(row[11]) if row[11] else {},
                       bool(row[13]), row[14], ask_after=row[16], reset_due_at=row[17])
    return view, user, row[12]


_COLUMNS = ("state", "input_buffer", "last_text_hash", "last_reply", "active", "last_activity", "onboarding_tokens",
            "choices")
_NEW_ROW: dict[str, Any] = {name: bindparam(name)
                           for name in (*_COLUMNS, "session_id", "phone", "service_code", "created_at")}
_INSERT = Prepared(insert(_SESSIONS).values(_NEW_ROW))
ACTING = "acting"  # the state of a session whose PIN step is moving money (begin_acting)


def _conditional_update(*, actor: bool) -> Prepared:
    """A step's UPDATE of its session row, only while the row is open and in the state this step
    may leave: a request that began acting saves over its own mark, any other only over a screen.
    So a late save of a request read before the session was continued elsewhere (closed), ended
    or began paying can never reopen it nor undo the mark."""
    state = _SESSIONS.c.state == ACTING if actor else _SESSIONS.c.state != ACTING
    return Prepared(update(_SESSIONS).where(_SESSIONS.c.session_id == bindparam("sid"),
                                            _SESSIONS.c.active.is_(True), state)
                    .values({name: bindparam(name) for name in _COLUMNS}))


_UPDATE = {False: _conditional_update(actor=False), True: _conditional_update(actor=True)}


def save(
    db: Database,
    session_id: str,
    phone: str,
    service_code: str,
    *,
    exists: bool,
    state: str,
    trail: str,
    text_hash: str,
    reply: str,
    onboarding_tokens: int,
    choices: dict[str, int],
    openings: Openings | None = None,
    actor: bool = False,
) -> bool:
    """Record this step: one INSERT for a new session, one UPDATE otherwise. A new session's row
    goes to `openings` (written a moment later) when given one that is enabled. `actor`: this
    request marked the session acting (begin_acting). False: nothing was written, because the
    session was closed (continued elsewhere, ended) or marked acting by another request since
    this request read it: its answer must not be taken as the session's."""
    values = dict(
        state=state[:32], input_buffer=trail[-2000:], last_text_hash=text_hash, last_reply=reply,
        active=reply.startswith("CON"), last_activity=utcnow(), onboarding_tokens=onboarding_tokens,
        choices=json.dumps(choices) if choices else None,
    )
    if not exists:
        row = dict(values, session_id=session_id, phone=phone, service_code=service_code[:32],
                   created_at=values["last_activity"])
        if openings is not None and openings.enabled:
            openings.keep(row)
            return True
        try:
            with db.begin(single_statement=True):
                db.execute(_INSERT, row)
            return True
        except IntegrityError:
            pass  # a concurrent first request of the same session inserted it
    with db.begin(single_statement=True):
        return db.execute(_UPDATE[actor], dict(values, sid=session_id)).rowcount == 1


# The rows of sessions that only opened: written later, and not at all if the session wrote its
# own row first (a later step with something to remember). At most _OPEN_ROWS rows per INSERT (a
# power of two: writebehind.chunks).
_MAX_KEPT_OPENINGS = 20_000
_OPEN_ROWS = 64


@lru_cache(maxsize=16)  # powers of two up to _OPEN_ROWS (writebehind.chunks)
def _open_many(rows: int) -> Prepared:
    """INSERT (OR) IGNORE of `rows` opening rows in one statement; row n's values are named
    `<column>_<n>` (the column's own type converts each)."""
    return Prepared(insert(_SESSIONS).values(
        [{name: bindparam(f"{name}_{n}") for name in _NEW_ROW} for n in range(rows)])
        .prefix_with("OR IGNORE", dialect="sqlite")
        .prefix_with("IGNORE", dialect="mysql").prefix_with("IGNORE", dialect="mariadb"))


def _insert_openings(conn: Connection, rows: Sequence[dict]) -> None:
    _open_many(len(rows)).run(conn, {f"{name}_{n}": value for n, row in enumerate(rows) for name, value in row.items()})


class Openings(WriteBehind):
    """Sessions whose first step has nothing to remember but who dialled (the main menu, say): their
    rows are kept in memory and inserted every `flush_s` seconds, off the request path. A row
    binds a sessionId to its phone; until it is written, a request with that sessionId from
    another phone is not refused, but there is nothing yet to take over: every step that holds
    state (a choice, a PIN, the end) writes the row at once, and a later opening row for the
    same session is then ignored. Audit and `active_count` see an opened session up to
    `flush_s` seconds late; rows not written when the worker dies are lost."""

    def __init__(self, db: Database, flush_s: float) -> None:
        super().__init__(flush_s)
        self.db = db
        self._kept: list[dict] = []
        self._dropped = 0

    def keep(self, row: dict) -> None:
        self._ensure_flusher()
        with self._lock:
            if len(self._kept) < _MAX_KEPT_OPENINGS:
                self._kept.append(row)
            else:
                self._dropped += 1  # the database has been away a while: audit rows only

    def flush(self) -> None:
        """SQLite (one writer at a time): every chunk in one transaction, so one writer turn and one
        commit per flush, and the pages they touch go to the write-ahead log once. MySQL: each
        chunk is a transaction of its own, its rows locked only while its one statement runs.
        Rows go in sessionId order, so two workers' flushes lock keys in the same order and
        cannot deadlock each other; a request's own session row is a one-statement transaction
        holding nothing else (sessions.save), so a flush waiting for it (or it for a flush)
        cannot close a cycle either."""
        with self._lock:
            rows, self._kept = self._kept, []
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("%d opened sessions not recorded: the database was unavailable", dropped)
        if not rows:
            return
        rows.sort(key=lambda row: row["session_id"])
        written = 0
        try:
            if self.db.is_sqlite:
                with self.db.begin() as conn:
                    for chunk in chunks(rows, _OPEN_ROWS):
                        _insert_openings(conn, chunk)
            else:
                for chunk in chunks(rows, _OPEN_ROWS):
                    with self.db.begin(single_statement=True) as conn:
                        _insert_openings(conn, chunk)
                    written += len(chunk)
        except Exception:
            with self._lock:  # keep what was not written for the next flush
                self._kept[:0] = rows[written:][:max(0, _MAX_KEPT_OPENINGS - len(self._kept))]
            raise

    def _forget(self) -> None:
        self._kept, self._dropped = [], 0


def active_count(session: Session, timeout_s: int) -> int:
    since = utcnow() - dt.timedelta(seconds=timeout_s)
    return session.scalar(
        select(func.count(UssdSession.id)).where(UssdSession.active.is_(True), UssdSession.last_activity >= since)
    ) or 0


def clean(db: Database, timeout_s: int, keep_days: int) -> tuple[int, int]:
    """Close sessions idle past the timeout; delete sessions older than `keep_days`.
    Returns (closed, deleted)."""
    now = utcnow()
    with db.write() as s:
        closed = cast(CursorResult, s.execute(
            update(UssdSession)
            .where(UssdSession.active.is_(True), UssdSession.last_activity < now - dt.timedelta(seconds=timeout_s))
            .values(active=False)
        )).rowcount
        deleted = cast(CursorResult, s.execute(
            delete(UssdSession).where(UssdSession.last_activity < now - dt.timedelta(days=keep_days))
        )).rowcount
    return closed, deleted


def dropped_session(db: Database, session_id: str) -> tuple[str, dict[str, Any]] | None:
    """(last reply, choices) of a session that dropped mid-flow."""
    with db.read() as s:
        row = s.execute(select(_SESSIONS.c.last_reply, _SESSIONS.c.choices)
                        .where(_SESSIONS.c.session_id == session_id)).first()
    if row is None:
        return None
    return row[0] or "", json.loads(row[1]) if row[1] else {}


def close_to_continue(db: Database, session_id: str) -> bool:
    """Take over a dropped session to continue it elsewhere: it is closed (it can never act
    again), if it is still open on a resumable screen. False: it ended, or its PIN step began
    meanwhile (its payment may be under way): it must not be continued."""
    with db.write() as s:
        return cast(CursorResult, s.execute(update(_SESSIONS).where(
            _SESSIONS.c.session_id == session_id, _SESSIONS.c.active.is_(True),
            _SESSIONS.c.state.in_(RESUMABLE)).values(active=False))).rowcount == 1


_ACTED = Prepared(update(_SESSIONS).where(_SESSIONS.c.session_id == bindparam("sid"), _SESSIONS.c.active.is_(True),
                                          _SESSIONS.c.state != ACTING)
                  .values(state=bindparam("state"), input_buffer=bindparam("trail"),
                          last_text_hash=bindparam("text_hash"), last_reply=bindparam("reply"), active=False,
                          last_activity=bindparam("now")))


def acted_in(conn: Connection | Session, session_id: str, state: str, trail: str, text_hash: str,
             reply: str) -> bool:
    """The END of a step that moved money, written in the transaction that moved it: the session
    ends with its reply (a repeat of the request is answered with it) only if it is still open and
    no other request of it is acting, and the money moves only if it does (False: the caller rolls
    back). So a session continued elsewhere, ended or acting meanwhile never pays here, and one
    that pays here is never continued or acted on again. It takes the place of begin_acting's
    mark for the actions that end their session in their own transaction (actions.MARK_WITHIN)."""
    return _ACTED.run(conn, {"sid": session_id, "state": state[:32], "trail": trail[-2000:], "text_hash": text_hash,
                             "reply": reply, "now": utcnow()}).rowcount == 1


def begin_acting(db: Database, session_id: str) -> bool:
    """A step of this session is about to move or start money: mark it so no other session offers
    or continues it, and no other request of it acts or saves over the mark. False: the session
    was taken over (continued in another session), has ended, or another of its requests is
    acting: it must not act. A session with no row never acts: nothing was asked in it yet (its
    path came in the dialled code; a reply that asks for a PIN writes the row at once)."""
    with db.write() as s:
        return cast(CursorResult, s.execute(update(_SESSIONS).where(
            _SESSIONS.c.session_id == session_id, _SESSIONS.c.active.is_(True), _SESSIONS.c.state != ACTING)
            .values(state=ACTING))).rowcount == 1


def not_offered_again(db: Database, session_id: str) -> None:
    """A dropped session the caller chose not to continue: it is not offered again (its state is
    no longer a resumable screen), and left as it was otherwise. Parallel sessions of one phone
    decline the same row: on Galera they conflict and run again."""
    def work() -> None:
        with db.write() as s:
            s.execute(update(_SESSIONS).where(_SESSIONS.c.session_id == session_id, _SESSIONS.c.active.is_(True),
                                              _SESSIONS.c.state.in_(RESUMABLE)).values(state="declined"))
    retry_deadlocks(work)
