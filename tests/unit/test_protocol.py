"""The HTTP surface and the rules of a USSD step: replays, forged paths, odd requests, health."""

from __future__ import annotations

import re

import io
from contextlib import contextmanager
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from helpers.infra.i18n import t
from helpers.infra.version import VERSION
from helpers.wallet.incoming import lnurl
from helpers.web import probes
from lightning import UnavailableBackend
from helpers.wallet.rules import policy
from models import Transaction, UssdSession
from tests.conftest import VALID_MIN, balance, check_reply, configure, credit_sats, DEMO, PIN, snapshot


def post(client, **fields):
    response = client.post("/ussd", data=fields)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    check_reply(body)
    return body


def test_a_replayed_confirmation_moves_money_once(alice, wallet, client):
    alice.run("1", "0787654321", "5000", "1")
    a0 = balance(wallet, DEMO[0])
    first = alice.press(PIN)
    for _ in range(4):  # AT or the network delivers the same request again
        assert alice.post(alice.text) == first
    assert balance(wallet, DEMO[0]) == a0 - 5000 - wallet.policy.fee_sats("internal", 5000)
    assert wallet.db.session.query(Transaction).filter_by(type="send").count() == 1


def test_replay_after_the_session_row_lost_its_reply_still_moves_once(alice, wallet):
    """Even without the reply cache, the unique key on the money step finds the first result.

    The realistic case: the money moved but the session row was not saved at the final step, so it
    is still open and holds no reply."""
    alice.run("5", "300", "1")
    alice.press(PIN)
    with wallet.db.write() as s:
        s.execute(UssdSession.__table__.update().values(last_text_hash=None, last_reply=None, active=True))
    a_after = balance(wallet, DEMO[0])
    ref = wallet.db.session.scalar(select(Transaction.reference).where(Transaction.type == "withdraw"))
    assert alice.post(alice.text) == "END " + t("en", "replay", ref=ref)
    assert balance(wallet, DEMO[0]) == a_after


def test_a_path_that_goes_on_after_a_money_step_does_nothing_more(alice, wallet):
    alice.run("1", "0787654321", "5000", "1", PIN)
    before = snapshot(wallet)
    assert alice.post(alice.text + "*1") == "END " + t("en", "error.expired")
    assert alice.post(alice.text + "*1*" + PIN) == "END " + t("en", "error.expired")
    assert snapshot(wallet) == before


def test_a_path_typed_in_one_request_cannot_skip_the_pin(alice, wallet):
    before = snapshot(wallet)
    reply = alice.post("1*0787654321*5000*1", session_id="forged-1")
    assert reply == "CON " + t("en", "pin.enter")
    reply = alice.post("1*0787654321*5000*1*0000", session_id="forged-2")
    assert reply == "END " + t("en", "pin.not-in-dial", code=wallet.service_code)  # never checked nor counted
    assert snapshot(wallet) == before


def test_a_session_id_reused_by_another_phone_is_refused(alice, client, wallet):
    alice.start()
    before = snapshot(wallet)
    reply = post(client, sessionId=alice.session_id, phoneNumber=DEMO[1], serviceCode="*384*123#", text="")
    assert reply == "END " + t("en", "error.expired")
    assert snapshot(wallet) == before


@pytest.mark.parametrize("fields,screen", [
    ({}, "error.expired"),
    ({"phoneNumber": DEMO[0], "text": ""}, "error.expired"),
    ({"sessionId": "x1", "text": ""}, "error.expired"),
    ({"sessionId": "x2", "phoneNumber": "not a phone", "text": ""}, "error.phone"),
    ({"sessionId": "x3", "phoneNumber": "+12025550143", "text": ""}, "error.phone"),
    ({"sessionId": "x4", "phoneNumber": DEMO[0], "text": "1*" * 600}, "error.expired"),
])
def test_odd_requests_get_an_end_and_change_nothing(client, wallet, fields, screen):
    before = snapshot(wallet)
    assert post(client, **fields) == "END " + t("en", screen)
    assert snapshot(wallet) == before


def test_garbage_typed_as_a_first_pin_is_refused_and_changes_nothing(client, wallet):
    before = snapshot(wallet)
    reply = post(client, sessionId="x5", phoneNumber=DEMO[0], text="")
    reply = post(client, sessionId="x5", phoneNumber=DEMO[0], text="\x00\ud7ff%s%n{0}'; DROP TABLE users;--")
    digits = policy().value("pin-length")
    assert reply == "CON " + t("en", "pin.format", digits=digits) + "\n" + t("en", "pin.create", digits=digits)
    assert snapshot(wallet) == before
    dialled = post(client, sessionId="x6", phoneNumber=DEMO[0], text="\x00%s%n{0}'; DROP TABLE users;--")
    assert dialled == "END " + t("en", "pin.not-in-dial", code=wallet.service_code)  # in the dialled code
    assert snapshot(wallet) == before


def test_get_on_ussd_is_not_a_500(client):
    assert client.get("/ussd").status_code == 405


def test_the_form_reads_the_same_urlencoded_or_multipart_and_a_repeated_field_keeps_its_first_value(
        client, alice, bob):
    fields = {"sessionId": "enc-1", "phoneNumber": DEMO[0], "serviceCode": "*384*123#", "text": ""}
    encoded = post(client, **fields)
    assert encoded.startswith("CON ")
    multipart = client.post("/ussd", data={**fields, "sessionId": "enc-2", "file": (io.BytesIO(b"x"), "x.txt")},
                            content_type="multipart/form-data")
    assert multipart.get_data(as_text=True) == encoded
    body = urlencode([("sessionId", "enc-3"), ("phoneNumber", DEMO[0]), ("phoneNumber", DEMO[1]), ("text", "")])
    twice = client.post("/ussd", data=body, content_type="application/x-www-form-urlencoded; charset=utf-8")
    assert twice.get_data(as_text=True) == encoded  # the first number's menu (balance) ...
    assert post(client, **{**fields, "sessionId": "enc-4", "phoneNumber": DEMO[1]}) != encoded  # ... not the second's


def test_a_body_in_bad_utf8_gets_a_screen_and_one_too_big_is_refused_unread(client, wallet):
    before = snapshot(wallet)
    garbled = client.post("/ussd", data=f"sessionId=utf-1&phoneNumber={quote(DEMO[0])}&text=1%FF%FE",
                          content_type="application/x-www-form-urlencoded")
    assert garbled.status_code == 200 and garbled.get_data(as_text=True).startswith(("CON ", "END "))
    check_reply(garbled.get_data(as_text=True))
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    padding = "x" * limit
    huge = client.post("/ussd", data=f"sessionId=big-1&phoneNumber={quote(DEMO[0])}&text=&pad={padding}",
                       content_type="application/x-www-form-urlencoded")
    assert huge.status_code == 413
    assert snapshot(wallet) == before


def test_database_failure_gives_a_clear_end_in_both_languages(client, wallet, monkeypatch):
    import handlers

    def broken(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("server has gone away"))

    monkeypatch.setattr("helpers.web.ussd_endpoint.handle_ussd", broken)
    reply = post(client, sessionId="down-1", phoneNumber=DEMO[0], text="")
    assert reply == "END " + t("en", "error.unavailable") + "\n" + t("sw", "error.unavailable")
    assert handlers.handle_ussd is not broken


def test_an_unexpected_error_is_an_end_not_a_500(client, monkeypatch):
    def broken(*_args, **_kwargs):
        raise KeyError("boom")

    monkeypatch.setattr("helpers.web.ussd_endpoint.handle_ussd", broken)
    response = client.post("/ussd", data={"sessionId": "e1", "phoneNumber": DEMO[0], "text": ""})
    assert response.status_code == 200
    assert response.get_data(as_text=True).startswith("END ")


def test_status_is_public_and_tells_no_balance(client, alice, wallet):
    body = client.get("/status").get_json()
    assert body == {"status": "ok", "version": VERSION, "lightning": "mock", "mpesa": "simulated",
                    "airtime": "simulated",
                    "lightning_address_domain": lnurl.domain(wallet.settings),
                    "price": {"kes_per_btc": wallet.policy.value("fixed-kes-per-btc"), "source": "fixed"}}


def test_status_says_degraded_when_the_database_is_gone(client, wallet, monkeypatch):
    monkeypatch.setattr(wallet.db, "healthy", lambda: False)
    response = client.get("/status")
    assert response.status_code == 503
    assert response.get_json()["status"] == "degraded"


def test_health_answers_without_a_database(client, wallet, monkeypatch):
    touched = []
    monkeypatch.setattr(wallet.db, "healthy", lambda: touched.append("healthy"))
    monkeypatch.setattr(wallet.db.engine.pool, "connect", lambda: touched.append("pool") or 1 / 0)
    assert client.get("/health").get_json() == {"status": "ok"}
    monkeypatch.undo()
    assert touched == []


def test_ready_needs_the_database_the_newest_migration_and_the_node(client, wallet, monkeypatch):
    probes._ready_cache.clear()
    assert client.get("/ready").get_json() == {"status": "ready", "database": True, "migrations": True,
                                               "lightning": True}
    monkeypatch.setattr(wallet.db, "healthy", lambda: False)
    assert client.get("/ready").status_code == 200  # the answer is cached for READY_CACHE_S
    probes._ready_cache.clear()
    response = client.get("/ready")
    assert response.status_code == 503 and response.get_json()["database"] is False
    monkeypatch.undo()
    probes._ready_cache.clear()
    monkeypatch.setattr(wallet.db, "head_revision", lambda: "9999_not_applied")
    assert client.get("/ready").get_json()["migrations"] is False
    probes._ready_cache.clear()
    monkeypatch.undo()
    monkeypatch.setattr(wallet, "lightning", UnavailableBackend("node down"))
    assert client.get("/ready").get_json() == {"status": "not ready", "database": True, "migrations": True,
                                               "lightning": False}
    probes._ready_cache.clear()


def test_demo_endpoint_shows_the_demo_phone_only_in_demo_mode(client, app, wallet):
    body = client.get("/test").get_json()
    assert body["phone"] == DEMO[0]
    assert body["balance_sats"] == balance(wallet, DEMO[0])
    configure(app, demo_mode=False)
    assert client.get("/test").status_code == 404
    assert client.post("/test/pay-invoice", data={"reference": "X"}).status_code == 404


def test_session_rows_never_hold_a_pin(alice, wallet):
    alice.run("1", "0787654321", "5000", "9999")  # a PIN typed one screen early, on Confirm
    alice.press("1", "9999")
    alice.press(PIN)
    with wallet.db.read() as s:
        rows = s.execute(select(UssdSession.input_buffer, UssdSession.last_reply, UssdSession.choices)).all()
    for row in rows:
        for value in row:
            assert PIN not in (value or "") and "9999" not in (value or "")
    assert any(row[0].endswith("send.confirm>send.confirm>pin>pin") for row in rows), rows


def test_logs_never_hold_a_pin(alice, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    alice.run("1", "0787654321", "5000", "1", "9999")
    alice.press(PIN)
    assert caplog.records, "the request log is missing"
    for record in caplog.records:
        message = re.sub(r"request_id=[0-9a-f]+", "", record.getMessage())  # random hex may hold 4 digits
        assert PIN not in message and "9999" not in message


def test_an_input_refused_for_balance_stays_refused_when_the_path_is_replayed(dial, wallet):
    """After 'insufficient balance' the next amount typed is read by the amount screen again."""
    carol = dial(DEMO[2])
    carol.run(PIN, PIN)
    have = balance(wallet, DEMO[2])
    carol.run("1", "0787654321", str(have + 1))
    assert carol.reply.startswith("CON " + t("en", "deny.insufficient-balance", balance=have))
    amount = wallet.policy.value("payment-min-sats")
    fee = wallet.policy.fee_sats("internal", amount)
    assert carol.press(str(amount)) == "CON " + t("en", "send.confirm", amount=amount, phone=DEMO[1], fee=fee,
                                                  total=amount + fee, recipient=t("en", "recipient.new"))
    carol.press("1", PIN)
    assert balance(wallet, DEMO[2]) == have - amount - fee


def test_a_code_refused_as_used_stays_refused_when_the_path_is_replayed(alice, bob, wallet):
    alice.run("4", "300", "USEDCODE12", "1")
    bob.run("4", "300", "USEDCODE12")
    assert bob.reply.startswith("CON " + t("en", "error.code-used"))
    assert bob.press("FRESHCODE1") == "CON " + t("en", "topup.confirm", kes=300,
                                                  sats=credit_sats(300), code="FRESHCODE1", valid=VALID_MIN)
    b0 = balance(wallet, DEMO[1])
    bob.press("1")
    assert balance(wallet, DEMO[1]) == b0 + credit_sats(300)


def _session_owners(wallet, session_id: str) -> list[str]:
    with wallet.db.read() as s:
        return list(s.scalars(select(UssdSession.phone).where(UssdSession.session_id == session_id)))


@pytest.fixture
def written_behind(wallet):
    """Session openings written behind, as in production (WRITE_BEHIND_S=1); flushed by hand."""
    wallet.openings.flush_s = 3600  # on, and its thread will not flush during the test
    yield wallet.openings
    wallet.openings.flush_s = 0


def test_an_opened_session_is_recorded_behind_then_bound_to_its_phone(alice, client, wallet, written_behind):
    """The first screen writes nothing on the request path; the flush records who dialled, and
    from then on another phone's request with that sessionId is refused."""
    alice.start()
    assert _session_owners(wallet, alice.session_id) == []
    written_behind.flush()
    assert _session_owners(wallet, alice.session_id) == [DEMO[0]]
    before = snapshot(wallet)
    reply = post(client, sessionId=alice.session_id, phoneNumber=DEMO[1], serviceCode="*384*123#", text="1")
    assert reply == "END " + t("en", "error.expired")
    assert snapshot(wallet) == before


def test_a_step_with_state_writes_its_row_at_once_and_the_late_opening_changes_nothing(alice, wallet,
                                                                                     written_behind):
    """A session that reaches a PIN before the flush binds itself there and then; the opening row
    written after it is ignored, not written over it."""
    reply = alice.run("1", "0787654321", "5000", "1", PIN)
    assert reply.startswith("END ")
    assert _session_owners(wallet, alice.session_id) == [DEMO[0]]
    written_behind.flush()
    with wallet.db.read() as s:
        rows = s.execute(select(UssdSession.phone, UssdSession.last_reply)
                         .where(UssdSession.session_id == alice.session_id)).all()
    assert rows == [(DEMO[0], reply)]


def test_openings_that_could_not_be_written_are_kept_for_the_next_flush(alice, wallet, written_behind,
                                                                      monkeypatch):

    alice.start()
    real = wallet.db.begin

    @contextmanager
    def down(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database down"))
        yield

    monkeypatch.setattr(wallet.db, "begin", down)
    with pytest.raises(OperationalError):
        written_behind.flush()
    monkeypatch.setattr(wallet.db, "begin", real)
    assert _session_owners(wallet, alice.session_id) == []
    written_behind.flush()
    assert _session_owners(wallet, alice.session_id) == [DEMO[0]]


def test_under_traffic_the_request_thread_writes_what_was_kept_after_its_reply(alice, client, wallet,
                                                                             written_behind):
    """Once the interval has passed, the next request writes the kept rows itself, after its reply
    has gone out (the response's close, as gunicorn calls it); the worker's own thread is not
    needed (here it would wait an hour)."""
    alice.start()
    assert _session_owners(wallet, alice.session_id) == []
    response = client.post("/ussd", data={"sessionId": "later-1", "phoneNumber": DEMO[1],
                                          "serviceCode": "*384*123#", "text": ""})
    response.close()
    assert _session_owners(wallet, alice.session_id) == []  # the interval has not passed yet
    written_behind._last_flush -= 2 * written_behind.flush_s
    response = client.post("/ussd", data={"sessionId": "later-2", "phoneNumber": DEMO[1],
                                          "serviceCode": "*384*123#", "text": ""})
    assert response.get_data(as_text=True).startswith("CON ")
    response.close()
    assert _session_owners(wallet, alice.session_id) == [DEMO[0]]
    assert _session_owners(wallet, "later-2") == [DEMO[1]]


def test_an_idle_worker_still_writes_what_was_kept(wallet):
    """No request comes after the last ones: the worker's own thread writes their rows within
    three intervals."""
    import time

    from helpers.ussd import sessions

    openings = sessions.Openings(wallet.db, 0.05)
    try:
        sessions.save(wallet.db, "idle-1", DEMO[2], "*384*123#", exists=False, state="main", trail="",
                      text_hash="h" * 64, reply="CON menu", onboarding_tokens=0, choices={}, openings=openings)
        assert _session_owners(wallet, "idle-1") == []
        deadline = time.monotonic() + 5
        while not _session_owners(wallet, "idle-1") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _session_owners(wallet, "idle-1") == [DEMO[2]]
    finally:
        openings.close()


def test_many_openings_are_written_in_one_flush_and_never_over_a_row_already_there(alice, wallet, written_behind):
    """More openings than one statement takes (chunks of _OPEN_ROWS rows: in one transaction on
    SQLite, a transaction each on MySQL): every one is recorded once, and a session that wrote
    its own row meanwhile keeps it."""
    from helpers.ussd import sessions

    reply = alice.run("1", "0787654321", "5000", "1", PIN)  # a row of its own, with its END reply
    count = sessions._OPEN_ROWS * 2 + 3
    for n in range(count):
        sessions.save(wallet.db, f"open-{n}", f"+2547119{n:05d}", "*384*123#", exists=False, state="main",
                      trail="", text_hash="h" * 64, reply="CON menu", onboarding_tokens=0, choices={},
                      openings=written_behind)
    sessions.save(wallet.db, alice.session_id, DEMO[0], "*384*123#", exists=False, state="main", trail="",
                  text_hash="h" * 64, reply="CON menu", onboarding_tokens=0, choices={}, openings=written_behind)
    written_behind.flush()
    with wallet.db.read() as s:
        rows = dict(s.execute(select(UssdSession.session_id, UssdSession.phone)
                              .where(UssdSession.session_id.like("open-%"))).all())
        own = s.execute(select(UssdSession.phone, UssdSession.last_reply)
                        .where(UssdSession.session_id == alice.session_id)).all()
    assert rows == {f"open-{n}": f"+2547119{n:05d}" for n in range(count)}
    assert own == [(DEMO[0], reply)]


def test_a_flush_that_fails_part_way_keeps_exactly_what_it_did_not_write(wallet, written_behind, monkeypatch):
    """The second chunk fails. SQLite rolls the whole flush back and keeps every row; on MySQL the
    first chunk is committed and only the rest is kept. Either way the next flush records each
    opening exactly once."""
    from helpers.ussd import sessions

    count = sessions._OPEN_ROWS + 5
    for n in range(count):
        sessions.save(wallet.db, f"part-{n:03d}", f"+2547118{n:05d}", "*384*123#", exists=False, state="main",
                      trail="", text_hash="h" * 64, reply="CON menu", onboarding_tokens=0, choices={},
                      openings=written_behind)
    real, calls = sessions._insert_openings, []

    def second_fails(conn, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise OperationalError("INSERT", {}, Exception("database went away"))
        real(conn, rows)

    monkeypatch.setattr(sessions, "_insert_openings", second_fails)
    with pytest.raises(OperationalError):
        written_behind.flush()
    monkeypatch.setattr(sessions, "_insert_openings", real)

    def recorded() -> list[str]:
        with wallet.db.read() as s:
            return sorted(s.scalars(select(UssdSession.session_id).where(UssdSession.session_id.like("part-%"))))

    expected = [f"part-{n:03d}" for n in range(count)]
    assert recorded() == ([] if wallet.db.is_sqlite else expected[:sessions._OPEN_ROWS])
    assert len(written_behind._kept) == count - len(recorded())
    written_behind.flush()
    assert recorded() == expected
    assert written_behind._kept == []


def test_a_money_step_whose_session_row_cannot_be_saved_still_says_what_happened(alice, wallet, monkeypatch):
    """The send is committed before the session row is written: if that write fails, the caller
    reads the send's own screen (not "service unavailable"), and a repeat moves nothing again."""
    from helpers.ussd import sessions

    real_save = sessions.save

    def failing_save(*args, **kwargs):
        if kwargs["reply"].startswith("END"):
            raise OperationalError("UPDATE ussd_sessions", {}, Exception("lost the database"))
        return real_save(*args, **kwargs)

    alice.run("1", "0787654321", "5000", "1")
    a0 = balance(wallet, DEMO[0])
    monkeypatch.setattr(sessions, "save", failing_save)
    first = alice.press(PIN)
    fee = policy().fee_sats("internal", 5000)
    assert first.startswith("END ") and "5,000" in first and "unavailable" not in first.lower()
    assert balance(wallet, DEMO[0]) == a0 - 5000 - fee
    monkeypatch.setattr(sessions, "save", real_save)
    again = alice.post(alice.text)
    assert again.startswith("END ") and balance(wallet, DEMO[0]) == a0 - 5000 - fee
    assert wallet.db.session.query(Transaction).filter_by(type="send").count() == 1


def test_a_step_that_needs_its_session_row_says_unavailable_when_it_cannot_be_saved(alice, wallet, monkeypatch):
    from helpers.ussd import sessions

    def failing_save(*args, **kwargs):
        raise OperationalError("UPDATE ussd_sessions", {}, Exception("lost the database"))

    alice.run("1", "0787654321", "5000", "1")
    monkeypatch.setattr(sessions, "save", failing_save)
    before = snapshot(wallet)
    wrong_pin = "0000" if PIN != "0000" else "1111"  # a wrong PIN: the session row must count it
    assert alice.press(wrong_pin).startswith("END " + t("en", "error.unavailable"))
    assert snapshot(wallet) == before
