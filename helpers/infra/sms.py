"""SMS: an outbox table written in the same transaction as what the SMS reports, sent after the
USSD reply by a background thread (or `flask flush-sms`), retried with backoff. A failure to send
never reaches the USSD reply.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session

from helpers.infra.fastpath import Prepared
from helpers.infra.phone import mask
from models import SmsOutbox, utcnow
from helpers.infra.settings import Settings

if TYPE_CHECKING:  # the dispatcher is handed the database; infra sits below database.py
    from database import Database

_OUTBOX = cast(Table, SmsOutbox.__table__)
log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
_STUCK_AFTER = dt.timedelta(minutes=5)  # a 'sending' row older than this lost its worker


class SmsError(RuntimeError):
    """The gateway did not accept the message."""


class SmsSender(ABC):
    name = "abstract"

    @abstractmethod
    def send(self, phone: str, message: str) -> None:
        """Hand one message to the gateway. Raises SmsError."""


class LogSender(SmsSender):
    """Stands in without Africa's Talking credentials: logs the message, keeps the last ones."""

    name = "log"

    def __init__(self, keep: int = 200) -> None:
        self.keep = keep
        self.sent: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def send(self, phone: str, message: str) -> None:
        log.info("SMS to %s: %s", mask(phone), message)
        with self._lock:
            self.sent.append((phone, message))
            del self.sent[: -self.keep]


class AfricasTalkingSender(SmsSender):
    """Africa's Talking SMS API through its SDK (username `sandbox` uses the sandbox)."""

    name = "africastalking"

    def __init__(self, username: str, api_key: str, sender_id: str = "", base_url: str = "") -> None:
        import africastalking  # imported here: only deployments with AT credentials need it

        self._service = africastalking.SMSService(username, api_key)
        if base_url:  # tests point the SDK at a local server
            self._service._baseUrl = base_url.rstrip("/")
        self._sender_id = sender_id or None

    def send(self, phone: str, message: str) -> None:
        try:
            response = self._service.send(message, [phone], self._sender_id)
        except Exception as exc:  # the SDK raises bare Exceptions for HTTP errors
            raise SmsError(f"{type(exc).__name__}: {str(exc)[:120]}") from exc
        recipients = (response or {}).get("SMSMessageData", {}).get("Recipients", [])
        if not recipients or recipients[0].get("status") != "Success":
            detail = recipients[0].get("status") if recipients else "no recipients"
            raise SmsError(f"not accepted: {detail}")


def make_sender(settings: Settings) -> SmsSender:
    username, api_key = settings.africastalking_username, settings.africastalking_api_key
    if username and api_key:
        return AfricasTalkingSender(
            username, api_key, settings.africastalking_sender_id, settings.africastalking_sms_url
        )
    return LogSender()


_queued = threading.local()


@lru_cache(maxsize=4)
def _insert(rows: int) -> Prepared:
    """INSERT of `rows` messages in one statement; message n's values are `phone_<n>`, `message_<n>`."""
    return Prepared(insert(_OUTBOX).values([
        {"phone": bindparam(f"phone_{n}"), "message": bindparam(f"message_{n}"), "status": "pending", "attempts": 0,
         "next_attempt_at": bindparam("now"), "created_at": bindparam("now")}
        for n in range(rows)]))


def queue(session: Session | Connection, phone: str, message: str) -> None:
    """Add an SMS to the outbox within the caller's transaction (an ORM session or a Core
    connection)."""
    queue_all(session, [(phone, message)])


def queue_all(session: Session | Connection, messages: Sequence[tuple[str, str]]) -> None:
    """Add (phone, message) SMS to the outbox within the caller's transaction, in one statement
    (a movement's receipts to both sides: one round trip to MySQL instead of two)."""
    params: dict[str, Any] = {"now": utcnow()}
    for n, (phone, message) in enumerate(messages):
        params[f"phone_{n}"], params[f"message_{n}"] = phone, message
    _insert(len(messages)).run(session, params)
    _queued.flag = True


def take_queued() -> bool:
    """True if this thread queued an SMS since the last call (the app then wakes the sender)."""
    flag = getattr(_queued, "flag", False)
    _queued.flag = False
    return flag


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(3600, 30 * 2 ** (attempts - 1)))


class SmsDispatcher:
    """Sends what the outbox holds. `kick()` wakes a per-process background thread."""

    def __init__(self, db: Database, sender: SmsSender) -> None:
        self.db = db
        self.sender = sender
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    def flush(self, limit: int = 100) -> tuple[int, int]:
        """Send due messages; return (sent, failed attempts)."""
        now = utcnow()
        with self.db.read() as s:
            ids = s.scalars(
                select(SmsOutbox.id)
                .where(
                    or_(
                        (SmsOutbox.status == "pending") & (SmsOutbox.next_attempt_at <= now),
                        (SmsOutbox.status == "sending") & (SmsOutbox.next_attempt_at <= now - _STUCK_AFTER),
                    )
                )
                .order_by(SmsOutbox.id)
                .limit(limit)
            ).all()
        sent = failed = 0
        for sms_id in ids:
            outcome = self._send_one(sms_id)
            sent += outcome is True
            failed += outcome is False
        return sent, failed

    def _send_one(self, sms_id: int) -> bool | None:
        now = utcnow()
        with self.db.write() as s:
            claimed = cast(CursorResult, s.execute(
                update(SmsOutbox)
                .where(SmsOutbox.id == sms_id)
                .where(or_(
                    (SmsOutbox.status == "pending") & (SmsOutbox.next_attempt_at <= now),
                    (SmsOutbox.status == "sending") & (SmsOutbox.next_attempt_at <= now - _STUCK_AFTER),
                ))
                .values(status="sending", next_attempt_at=now, attempts=SmsOutbox.attempts + 1)
            )).rowcount
            row = s.get(SmsOutbox, sms_id) if claimed else None
            if row is None:
                return None  # another worker has it
            phone, message, attempts = row.phone, row.message, row.attempts
        try:
            self.sender.send(phone, message)
        except Exception as exc:  # noqa: BLE001 - any sender failure is retried, never raised
            error = str(exc)[:255]
            final = attempts >= MAX_ATTEMPTS
            log.warning("SMS %s to %s failed (attempt %s): %s", sms_id, mask(phone), attempts, error)
            with self.db.write() as s:
                s.execute(
                    update(SmsOutbox)
                    .where(SmsOutbox.id == sms_id)
                    .values(
                        status="failed" if final else "pending",
                        last_error=error,
                        next_attempt_at=utcnow() + _backoff(attempts),
                    )
                )
            return False
        with self.db.write() as s:
            s.execute(update(SmsOutbox).where(SmsOutbox.id == sms_id).values(status="sent", sent_at=utcnow()))
        return True

    def pending_count(self, session: Session) -> int:
        from sqlalchemy import func

        return session.execute(select(func.count(SmsOutbox.id))
                               .where(SmsOutbox.status.in_(("pending", "sending")))).scalar_one()

    def kick(self) -> None:
        """Ask this process's background thread to flush soon."""
        with self._start_lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="sms-outbox", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=30)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the thread must survive a database outage
                log.exception("SMS flush failed")
