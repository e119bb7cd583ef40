"""The worker's heartbeat: a file it touches each time it has claimed work from the database (or
found none) and after each job, so its age says whether the loop is alive. A process that exists
but is stuck (a hung database, a deadlock) stops touching it; a container health check reads it:

    python -m helpers.infra.heartbeat [MAX_AGE_S]    # exit 0 if WORKER_HEARTBEAT_FILE is fresh

The file is WORKER_HEARTBEAT_FILE (helpers/infra/settings.py); empty: no heartbeat (the embedded
default, where the worker is a thread of the server and the server's own checks apply).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DEFAULT_MAX_AGE_S = 120  # a batch of jobs, each bounded by its rail's timeouts, ends well within this


def beat(path: str) -> None:
    """Touch `path` (nothing when it is empty). Never raises: a heartbeat that cannot be written
    must not stop the work; the health check then reports it."""
    if not path:
        return
    try:
        Path(path).touch()
    except OSError:
        pass


def age_s(path: str, now: float | None = None) -> float | None:
    """Seconds since the last beat, or None when there was none."""
    try:
        touched = os.stat(path).st_mtime
    except OSError:
        return None
    return (time.time() if now is None else now) - touched


def is_fresh(path: str, max_age_s: float = DEFAULT_MAX_AGE_S) -> bool:
    age = age_s(path) if path else None
    return age is not None and age <= max_age_s


def main(argv: list[str]) -> int:
    path = os.environ.get("WORKER_HEARTBEAT_FILE", "")
    max_age = float(argv[0]) if argv else DEFAULT_MAX_AGE_S
    if not path:
        print("WORKER_HEARTBEAT_FILE is not set: the worker writes no heartbeat", file=sys.stderr)
        return 2
    if is_fresh(path, max_age):
        return 0
    age = age_s(path)
    print(f"no worker heartbeat in {path}" if age is None else f"worker heartbeat {age:.0f} s old (> {max_age:g})",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
