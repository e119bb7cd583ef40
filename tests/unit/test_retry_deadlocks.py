"""database.retry_deadlocks and retried: a transaction MySQL chose as a deadlock victim, or that
Galera aborted for another node's commit, runs again whole; any other error is raised at once."""

import pymysql
import pytest
from sqlalchemy.exc import OperationalError

import database


def _error(code: int) -> OperationalError:
    return OperationalError("COMMIT", {}, pymysql.err.OperationalError(code, "server says no"))


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(database.time, "sleep", lambda _seconds: None)


@pytest.mark.parametrize("code", sorted(database._DEADLOCK_CODES))
def test_a_deadlock_victim_runs_again_until_it_commits(code):
    calls = []

    def work():
        calls.append(1)
        if len(calls) < 3:
            raise _error(code)
        return "committed"

    assert database.retry_deadlocks(work) == "committed"
    assert len(calls) == 3


def test_other_errors_are_raised_at_once():
    calls = []

    def work():
        calls.append(1)
        raise _error(2013)  # lost connection: not known to have rolled back

    with pytest.raises(OperationalError):
        database.retry_deadlocks(work)
    assert len(calls) == 1


def test_it_gives_up_after_its_attempts():
    calls = []

    @database.retried
    def always_aborted(tag: str) -> str:
        calls.append(tag)
        raise _error(1213)

    with pytest.raises(OperationalError):
        always_aborted("x")
    assert calls == ["x"] * database._ATTEMPTS
