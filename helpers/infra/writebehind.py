"""Writes a worker makes every few seconds instead of on the request path.

A `WriteBehind` keeps what it must write in memory and writes it every `flush_s` seconds. Under
load the worker's request thread does it, right after a response has gone out (`flush_if_due`,
called by the app): written from a second thread, the flush had to win the GIL back from the
request thread after each statement while it held SQLite's writer turn (or MySQL row locks), and
every other writer waited through those GIL switches (flushes holding the turn 14 ms at the
median, 51 ms at worst, in a send benchmark). A thread of its own, started in each worker process
on first use (after gunicorn's fork), writes only when no request has done it for two intervals:
an idle worker's last counts and openings still reach the database within 3 x `flush_s`. What is
not yet written when a worker dies is lost, so only what may be lost is kept this way: counts of
the abuse limits (helpers/wallet/customers/limits.py) and the rows of sessions that only opened
(helpers/ussd/sessions.py). `flush_s` <= 0: nothing is kept, callers write on the request path."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class WriteBehind:
    def __init__(self, flush_s: float) -> None:
        self.flush_s = flush_s
        self._lock = threading.Lock()  # guards the subclass's buffers
        self._pid: int | None = None
        self._stop = threading.Event()
        self._flushing = threading.Lock()  # one flush at a time (request thread or our own)
        self._last_flush = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.flush_s > 0

    def flush(self) -> None:
        """Write what was kept; on failure keep it for the next flush and raise."""
        raise NotImplementedError

    def _forget(self) -> None:
        """A new process (forked): drop the parent's buffers, they are the parent's to write."""

    def _ensure_flusher(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._forget()
        threading.Thread(target=self._run, name=type(self).__name__, daemon=True).start()

    def flush_if_due(self) -> bool:
        """Flush now if `flush_s` has passed since the last flush; True if it tried. Called on the
        request thread after a response has been sent; never raises (a failed flush keeps its
        rows)."""
        if self._pid == os.getpid() and time.monotonic() - self._last_flush >= self.flush_s > 0:
            return self._flush_logged()
        return False

    def _flush_logged(self) -> bool:
        if not self._flushing.acquire(blocking=False):
            return False  # the other thread is at it
        try:
            self._last_flush = time.monotonic()
            self.flush()
        except Exception:  # noqa: BLE001 - must outlive a database outage
            log.warning("%s: not written this time; kept for the next flush", type(self).__name__, exc_info=True)
        finally:
            self._flushing.release()
        return True

    def close(self) -> None:
        """Stop the thread (what it has not written is dropped)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            if time.monotonic() - self._last_flush >= 2 * self.flush_s:  # no request flushed: idle
                self._flush_logged()


def chunks(items: Sequence[T], largest: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive chunks whose sizes are powers of two, at most `largest` (a power of
    two): 75 rows go as 64 + 8 + 2 + 1. A multi-row statement is compiled and kept once per row
    count; this way there are at most log2(largest) + 1 of them (a kept 64-row INSERT of session
    rows is about 0.3 MB), however many rows a flush brings."""
    start = 0
    while start < len(items):
        left = len(items) - start
        size = largest if left >= largest else 1 << (left.bit_length() - 1)
        yield items[start:start + size]
        start += size
