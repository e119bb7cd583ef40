"""A session's transitions under interleaving, made deterministic: a hook runs another session's
requests between one request's read of its session row and its save (or its acting mark), as a
slow request in a gunicorn worker would meet them. Runs on SQLite and, with TEST_DATABASE_URL, on
MariaDB (make test-mysql)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from helpers.infra.i18n import t
from helpers.ussd import sessions
from models import Transaction, UssdSession
from tests.conftest import DEMO, KES_MIN, PIN, Dialer, balance, withdraw_terms

BOB_LOCAL = "0" + DEMO[1][4:]
SENT = 2000


def meanwhile(work: Callable[[], None]) -> None:
    """Run `work` to its end in another thread (its own request contexts and connections) while
    the calling request waits, and raise what it raised."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting test
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the interleaved requests did not finish"
    if failed:
        raise failed[0]


def hook_once(monkeypatch, name: str, session_id: str, before: Callable[[], None] | None = None,
              after: Callable[[], None] | None = None) -> list[bool]:
    """Wrap sessions.<name> so that, the first time it is called for `session_id`, `before` runs
    ahead of it and `after` behind it. Returns the list of what the wrapped calls returned."""
    real = getattr(sessions, name)
    results: list[bool] = []

    def hooked(db, sid, *args, **kwargs):
        first = sid == session_id and not results
        if first and before:
            meanwhile(before)
        result = real(db, sid, *args, **kwargs)
        if sid == session_id:
            results.append(result)
        if first and after:
            meanwhile(after)
        return result

    monkeypatch.setattr(sessions, name, hooked)
    return results


def withdrawn() -> int:
    """What one withdrawal of KES_MIN takes from the balance: its sats and its fee."""
    _kes, sats, fee, _price = withdraw_terms(KES_MIN)
    return sats + fee


def row(wallet, session_id: str) -> tuple[bool, str]:
    with wallet.db.read() as s:
        found = s.execute(select(UssdSession.active, UssdSession.state)
                          .where(UssdSession.session_id == session_id)).one()
    return bool(found[0]), found[1]


def main_menu(reply: str) -> bool:
    return reply.startswith("CON " + t("en", "main", balance=1, requests="")[:6])


def test_a_late_save_of_the_dropped_session_does_not_reopen_it_after_it_was_continued(alice, wallet, client,
                                                                                      monkeypatch):
    """Issue 31, 1: S1 is cut off on a send's confirm screen; its last key is still being answered
    when the customer redials (S2), continues and pays. S1's late save must not reopen it: no
    later dial is offered the same payment, and S1 cannot pay it with its PIN."""
    alice.run("1", BOB_LOCAL, str(SENT))  # S1 at the confirm screen
    s1 = Dialer(client, DEMO[0])
    s1.session_id, s1.inputs = alice.session_id, list(alice.inputs)
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    paid: list[str] = []

    def redial_and_pay() -> None:
        s2 = Dialer(client, DEMO[0])
        assert s2.start().startswith("CON " + t("en", "resume", what="x").split("\n")[0])
        s2.press("1", "1")
        paid.append(s2.press(PIN))

    saves = hook_once(monkeypatch, "save", s1.session_id, before=redial_and_pay)
    late = s1.press("5")  # the key pressed as the network dropped: an invalid choice, remembered
    assert paid and paid[0].startswith("END Sent")
    assert row(wallet, s1.session_id)[0] is False  # still closed
    assert balance(wallet, DEMO[1]) == b0 + SENT
    s3 = Dialer(client, DEMO[0])
    assert main_menu(s3.start())  # nothing offered again
    s1.inputs = s1.inputs[:-1]
    assert s1.press("1", PIN).startswith("END ")  # S1 itself: no payment
    assert balance(wallet, DEMO[1]) == b0 + SENT and balance(wallet, DEMO[0]) == a0 - SENT
    assert late == "END " + t("en", "error.expired")
    assert saves == [False]  # S1's save was refused: it had been taken over


def test_a_late_save_cannot_undo_the_acting_mark(alice, wallet, client, monkeypatch):
    """(A withdrawal: marked before it pays; a send takes the mark with its money, below.) While
    S1's PIN step is paying, a late request of S1 read before the mark saves: the mark
    stays, so no new dial is offered (or continues) what S1 is paying."""
    alice.run("5", str(KES_MIN))  # S1 at the withdrawal's phone screen
    stale = Dialer(client, DEMO[0])
    stale.session_id, stale.inputs = alice.session_id, list(alice.inputs)
    a0 = balance(wallet, DEMO[0])
    seen: dict[str, object] = {}

    def late_request_and_a_redial() -> None:
        seen["late"] = stale.press("5")  # read after the mark, saves while S1 pays
        seen["row"] = row(wallet, alice.session_id)
        redial = Dialer(client, DEMO[0])
        seen["redial"] = redial.start()

    hook_once(monkeypatch, "begin_acting", alice.session_id, after=late_request_and_a_redial)
    assert alice.press("1", PIN).startswith("END Sent")
    assert seen["row"] == (True, sessions.ACTING)
    assert seen["late"] == "END " + t("en", "error.expired")
    assert main_menu(str(seen["redial"]))
    assert balance(wallet, DEMO[0]) == a0 - withdrawn()


def test_a_session_taken_over_between_its_pin_check_and_its_mark_does_not_pay(alice, wallet, client,
                                                                            monkeypatch):
    alice.run("5", str(KES_MIN), "1")  # S1 at the PIN screen
    a0 = balance(wallet, DEMO[0])
    taken: list[str] = []

    def continue_elsewhere() -> None:
        s2 = Dialer(client, DEMO[0])
        s2.start()
        taken.append(s2.press("1"))

    hook_once(monkeypatch, "begin_acting", alice.session_id, before=continue_elsewhere)
    assert not alice.press(PIN).startswith("END Sent")
    assert taken and taken[0].startswith("CON ")  # S2 holds it now
    assert balance(wallet, DEMO[0]) == a0


def test_two_requests_of_one_session_act_once(alice, wallet, client, monkeypatch):
    """Africa's Talking sends the PIN step again while the first is still paying: the second is
    not let act; it says what the first did."""
    alice.run("5", str(KES_MIN), "1")
    again = Dialer(client, DEMO[0])
    again.session_id, again.inputs = alice.session_id, list(alice.inputs)
    a0 = balance(wallet, DEMO[0])
    second: list[str] = []
    hook_once(monkeypatch, "begin_acting", alice.session_id, after=lambda: second.append(again.press(PIN)))
    assert alice.press(PIN).startswith("END Sent")
    assert second and second[0].startswith("END ") and not second[0].startswith("END Sent")
    assert balance(wallet, DEMO[0]) == a0 - withdrawn()


@pytest.mark.parametrize("state", ["send.confirm", "pin"])
def test_close_to_continue_takes_only_an_open_session_on_a_resumable_screen(alice, wallet, state):
    alice.run("1", BOB_LOCAL, str(SENT), *(["1"] if state == "pin" else []))
    assert row(wallet, alice.session_id)[0] is True
    with wallet.db.write() as s:
        s.execute(UssdSession.__table__.update().where(UssdSession.session_id == alice.session_id)
                  .values(state=sessions.ACTING))
    assert sessions.close_to_continue(wallet.db, alice.session_id) is False  # paying: never continued
    with wallet.db.write() as s:
        s.execute(UssdSession.__table__.update().where(UssdSession.session_id == alice.session_id)
                  .values(state=state))
    assert sessions.close_to_continue(wallet.db, alice.session_id) is True
    assert row(wallet, alice.session_id)[0] is False
    assert sessions.close_to_continue(wallet.db, alice.session_id) is False  # once
    assert sessions.begin_acting(wallet.db, alice.session_id) is False  # taken over: never acts


def test_declining_the_offer_does_not_undo_the_acting_mark(alice, wallet, client, monkeypatch):
    """S2 was offered S1 (dropped at its PIN screen); S1's PIN step begins paying, then S2 answers
    '2 Start over': the decline must not overwrite the mark, so S1 ends closed once paid and a
    repeat of its PIN step does not act again."""
    alice.run("5", str(KES_MIN), "1")  # S1 at the PIN screen
    s2 = Dialer(client, DEMO[0])
    assert s2.start().startswith("CON " + t("en", "resume", what="x").split("\n")[0])
    a0 = balance(wallet, DEMO[0])
    during: list[tuple[bool, str]] = []

    def decline() -> None:
        assert main_menu(s2.press("2"))
        during.append(row(wallet, alice.session_id))

    hook_once(monkeypatch, "begin_acting", alice.session_id, after=decline)
    assert alice.press(PIN).startswith("END Sent")
    assert during == [(True, sessions.ACTING)]
    assert row(wallet, alice.session_id)[0] is False  # ended once paid
    repeat = Dialer(client, DEMO[0])
    repeat.session_id, repeat.inputs = alice.session_id, list(alice.inputs[:-1])
    assert repeat.press(PIN).startswith("END ")
    assert balance(wallet, DEMO[0]) == a0 - withdrawn()


# ------------------------------------------------------------------ a send: one transaction per confirmation
def hook_call(monkeypatch, module, name: str, before: Callable[[], None] | None = None,
              after: Callable[[], None] | None = None) -> None:
    """Wrap module.<name> so that its first call has `before` run ahead of it and `after` behind it,
    each in another thread while the request waits (outside the call's own transaction)."""
    real = getattr(module, name)
    calls: list[int] = []

    def hooked(*args, **kwargs):
        first = not calls
        calls.append(1)
        if first and before:
            meanwhile(before)
        result = real(*args, **kwargs)
        if first and after:
            meanwhile(after)
        return result

    monkeypatch.setattr(module, name, hooked)


def test_a_send_marks_pays_and_ends_its_session_in_one_commit(alice, wallet):
    from sqlalchemy import event

    alice.run("1", BOB_LOCAL, str(SENT), "1")
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    commits: list[int] = []
    listener = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(wallet.db.engine, "commit", listener)
    try:
        reply = alice.press(PIN)
    finally:
        event.remove(wallet.db.engine, "commit", listener)
    assert reply.startswith("END Sent") and commits == [1]
    assert balance(wallet, DEMO[0]) < a0 and balance(wallet, DEMO[1]) == b0 + SENT
    with wallet.db.read() as s:
        saved = s.execute(select(UssdSession.active, UssdSession.last_reply, UssdSession.input_buffer)
                          .where(UssdSession.session_id == alice.session_id)).one()
    assert saved == (False, reply, "main>send.phone>send.amount>send.confirm>pin")
    again = Dialer(alice.client, DEMO[0])  # Africa's Talking sends the step again: the same answer, no money
    again.session_id, again.inputs = alice.session_id, list(alice.inputs[:-1])
    assert again.press(PIN) == reply
    assert balance(wallet, DEMO[1]) == b0 + SENT


def test_a_send_whose_session_cannot_end_moves_nothing(alice, wallet, monkeypatch):
    """The session's END is written in the money's transaction: if it cannot be (another request
    of the session holds it), the money rolls back with it."""
    alice.run("1", BOB_LOCAL, str(SENT), "1")
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    monkeypatch.setattr(sessions, "acted_in", lambda *args, **kwargs: False)
    assert alice.press(PIN) == "END " + t("en", "error.expired")
    assert (balance(wallet, DEMO[0]), balance(wallet, DEMO[1])) == (a0, b0)
    assert row(wallet, alice.session_id)[1] != sessions.ACTING  # nothing of it stays
    with wallet.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Transaction).where(Transaction.kind == "transfer")) == 0


def test_a_send_taken_over_after_its_pin_check_does_not_pay(alice, wallet, client, monkeypatch):
    from helpers.wallet import use_cases

    alice.run("1", BOB_LOCAL, str(SENT), "1")  # S1 at the PIN screen
    b0 = balance(wallet, DEMO[1])
    taken: list[str] = []

    def continue_elsewhere() -> None:
        s2 = Dialer(client, DEMO[0])
        s2.start()
        taken.append(s2.press("1"))

    hook_call(monkeypatch, use_cases, "send", before=continue_elsewhere)
    assert alice.press(PIN) == "END " + t("en", "error.expired")
    assert taken and taken[0].startswith("CON ")  # S2 holds it now, and may pay it once
    assert balance(wallet, DEMO[1]) == b0


def test_a_late_request_of_a_send_that_paid_reopens_nothing(alice, wallet, client, monkeypatch):
    from helpers.wallet import use_cases

    alice.run("1", BOB_LOCAL, str(SENT))  # S1 at the confirm screen
    stale = Dialer(client, DEMO[0])
    stale.session_id, stale.inputs = alice.session_id, list(alice.inputs)
    b0 = balance(wallet, DEMO[1])
    seen: dict[str, str] = {}

    def late_request_and_a_redial() -> None:
        seen["late"] = stale.press("5")
        seen["redial"] = Dialer(client, DEMO[0]).start()

    hook_call(monkeypatch, use_cases, "send", after=late_request_and_a_redial)
    assert alice.press("1", PIN).startswith("END Sent")
    assert seen["late"] == "END " + t("en", "error.expired")
    assert main_menu(seen["redial"])  # nothing offered: it paid
    assert row(wallet, alice.session_id)[0] is False
    assert balance(wallet, DEMO[1]) == b0 + SENT
