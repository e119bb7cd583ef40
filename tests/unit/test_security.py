"""Each door of SECURITY.md: callback secret, source networks, proxies, abuse limits, PIN guessing
across workers, PINs in logs, and a fuzz of /ussd."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import string
import threading
import time
from types import SimpleNamespace

import pytest
import requests
from gunicorn import glogging as gunicorn_logger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from app import create_app
from helpers.infra.i18n import t
from helpers.wallet.rules import policy
from models import RateCounter, Transaction, User, UssdSession
from tests.conftest import DEMO, Dialer, PIN, TEST_PEPPER, check_reply, configure, load_gunicorn_conf, outbox, snapshot
from tests.servers import Caller, Gunicorn

P = policy()
TOKEN = "cb-secret-0123456789abcdef"
FORM = {"sessionId": "sec-1", "phoneNumber": DEMO[0], "serviceCode": "*384*123#", "text": ""}


def session_rows(wallet) -> int:
    with wallet.db.read() as s:
        return s.query(UssdSession).count()


# ------------------------------------------------------------------ who may call
@pytest.mark.parametrize("path,headers", [
    ("/ussd", {}), ("/ussd/wrong-secret-0123456789", {}), ("/ussd", {"X-Callback-Token": "nope"}),
    (f"/ussd/{TOKEN[:-1]}", {}), (f"/ussd/{TOKEN}x", {}),
])
def test_a_wrong_or_missing_callback_secret_gets_403_and_touches_nothing(app, client, wallet, path, headers):
    configure(app, ussd_callback_token=TOKEN)
    before, rows = snapshot(wallet), session_rows(wallet)
    response = client.post(path, data={**FORM, "phoneNumber": "+254700999111"}, headers=headers)
    assert response.status_code == 403
    assert (snapshot(wallet), session_rows(wallet)) == (before, rows)


@pytest.mark.parametrize("path,headers", [(f"/ussd/{TOKEN}", {}), ("/ussd", {"X-Callback-Token": TOKEN})])
def test_the_right_secret_in_the_url_or_a_header_is_served(app, client, path, headers):
    configure(app, ussd_callback_token=TOKEN)
    response = client.post(path, data=FORM, headers=headers)
    assert response.status_code == 200 and response.get_data(as_text=True).startswith("CON ")


def test_only_allowed_networks_are_served_and_forwarded_addresses_are_not_trusted(app, client, wallet):
    from helpers.infra.config import _networks

    configure(app, ussd_allowed_networks=_networks("196.201.214.0/24"))
    before = snapshot(wallet)
    outsider = client.post("/ussd", data=FORM, environ_base={"REMOTE_ADDR": "10.9.8.7"},
                           headers={"X-Forwarded-For": "196.201.214.10"})
    assert outsider.status_code == 403 and snapshot(wallet) == before
    inside = client.post("/ussd", data=FORM, environ_base={"REMOTE_ADDR": "196.201.214.10"})
    assert inside.status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_counts(app, wallet):
    from helpers.infra.config import _networks

    proxied = create_app({"TESTING": True, "DATABASE_URL": wallet.db.url, "AUTO_CREATE_SCHEMA": False,
                          "DEMO_MODE": False, "SMS_AUTO_FLUSH": False, "PIN_PEPPER": TEST_PEPPER,
                          "TRUSTED_PROXY_COUNT": 1, "USSD_ALLOWED_NETWORKS": _networks("196.201.214.0/24"),
                          "INVOICE_POLL_S": 0, "WRITE_BEHIND_S": 0})  # no threads left behind
    client = proxied.test_client()
    via_proxy = client.post("/ussd", data=FORM, environ_base={"REMOTE_ADDR": "127.0.0.1"},
                            headers={"X-Forwarded-For": "196.201.214.10"})
    assert via_proxy.status_code == 200
    spoofed = client.post("/ussd", data=FORM, environ_base={"REMOTE_ADDR": "127.0.0.1"},
                          headers={"X-Forwarded-For": "196.201.214.10, 10.0.0.1"})
    assert spoofed.status_code == 403  # only the address our proxy added counts
    proxied.extensions["wallet"].db.dispose()


# ------------------------------------------------------------------ abuse limits
def at_start_of_window(window_s: int, needed_s: float = 20) -> None:
    """The limits count in fixed windows: start a burst where it cannot straddle two of them."""
    into = time.time() % window_s
    if into > window_s - needed_s:
        time.sleep(window_s - into + 0.05)


@pytest.mark.parametrize("flush_s", [1.0, 0.0], ids=["write-behind", "exact"])
def test_requests_per_phone_are_limited(app, client, wallet, flush_s):
    configure(app, rate_limits=True)
    app.extensions["request_counter"].flush_s = flush_s
    limit, window = P.rate_limit("requests-per-phone")
    at_start_of_window(window)
    phone = Dialer(client, DEMO[0])
    replies = [phone.post("", session_id=f"flood-{n}") for n in range(limit + 1)]
    assert all(r.startswith("CON ") for r in replies[:limit])
    assert replies[limit] == "END " + t("en", "error.too-many")
    other = Dialer(client, DEMO[1])  # another phone is not affected
    assert other.post("", session_id="other-1").startswith("CON ")


def test_payment_requests_cannot_bomb_a_stranger_with_sms(app, alice, wallet):
    configure(app, rate_limits=True)
    limit, window = P.rate_limit("requests-to-payer")
    at_start_of_window(window)
    stranger = "+254733222111"
    for _ in range(limit):
        assert alice.run("3", "0" + stranger[4:], "1000").startswith("END ")
    before = snapshot(wallet)
    assert alice.run("3", "0" + stranger[4:], "1000") == "END " + t("en", "error.too-many")
    assert snapshot(wallet) == before
    assert len(outbox(wallet, stranger)) == limit


def test_invoices_per_phone_are_limited(app, alice, wallet):
    configure(app, rate_limits=True)
    limit, window = P.rate_limit("invoices-per-phone")
    at_start_of_window(window)
    for _ in range(limit):
        assert alice.run("2", "1000").startswith("END " + t("en", "receive.done", amount=1000, ref="", minutes=1)[:12])
    assert alice.run("2", "1000") == "END " + t("en", "error.too-many")


# ------------------------------------------------------------------ PIN guessing across workers
def test_pin_guessing_across_sessions_and_worker_processes_locks_once(wallet, servers, tmp_path):
    callers = [Caller(s.url) for s in servers]
    victim = DEMO[1]
    callers[0].walk("victim-register", victim, PIN, PIN)
    guesses = 8
    inputs = ["1", "0" + DEMO[2][4:], "1000", "1"]
    for n in range(guesses):
        callers[n % len(callers)].walk(f"guess-{n}", victim, *inputs)
    gate = threading.Barrier(guesses)
    replies = []

    def guess(n):
        gate.wait()
        caller = callers[n % len(callers)]
        text = caller.path(f"guess-{n}", "*".join(inputs + [f"{1000 + n}"]))
        replies.append(caller.post(f"guess-{n}", victim, text)[1])

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(guesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    attempts = P.value("pin-max-attempts")
    wrong = sum(r.startswith("CON " + t("en", "pin.wrong", left=1)[:9]) for r in replies)
    assert wrong == attempts - 1 and len(replies) - wrong == guesses - attempts + 1
    # the right PIN, in a new session, is refused while locked
    reply = callers[-1].walk("after-lock", victim, *inputs, PIN)
    assert reply.startswith("END " + t("en", "pin.locked", minutes=1)[:20])
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_locks).where(User.phone == victim)) == 1
        assert s.query(Transaction).filter_by(type="send").count() == 0
    for n in range(len(servers)):  # and nothing the callers typed as a PIN was logged
        log = (tmp_path / f"gunicorn{n}.log").read_text()
        assert not logged(log, PIN) and not any(logged(log, f"{1000 + g}") for g in range(guesses))
        assert logged(log + '\n{"msg": "text=1*4*' + PIN + '"}', PIN)  # the check finds a leak where one is


def logged(log: str, digits: str) -> bool:
    """`digits` in a log as a value someone typed, not as part of a number the log writes itself
    (a timestamp, a worker's pid, an access line's status, size and time): a 4-digit PIN matched
    a worker's pid once."""
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = {"msg": line}
        for key, value in (record.items() if isinstance(record, dict) else [("msg", line)]):
            if key in ("ts", "pid", "ms", "duration_ms") or not isinstance(value, str):
                continue
            value = re.sub(r'" \d{3} \d+ \d+ms "', '" "', value)  # an access line's status, size and time
            value = re.sub(r"pid:? \d+", "", value)  # a worker's pid
            if re.search(rf"(?<![\d.]){digits}(?![\d])", value):
                return True
    return False


@pytest.mark.parametrize("uri,agent", [
    (f"/ussd/{TOKEN}", "python-requests/2.32"),
    (f"/mpesa/{TOKEN}/stk/WD-1?x=1", 'curl "quoted"'),
    (f"/lightning/webhook/{TOKEN}", None),
    (f"/airtime/{TOKEN}/status", "AfricasTalking"),
    ("/status", "AfricasTalking"),
    ("/status?q=%41%s%(h)s", "agent 100%"),
])
def test_the_access_line_is_gunicorns_own_format_with_the_secret_taken_out(monkeypatch, tmp_path, uri, agent):
    """The access line is written directly for the production format: it must read exactly as
    gunicorn's own formatting of that format (through the redacting atoms) would write it."""
    from gunicorn.config import Config

    conf = load_gunicorn_conf(monkeypatch, tmp_path)
    config = Config()
    config.set("accesslog", str(tmp_path / "access.log"))
    config.set("access_log_format", conf.access_log_format)
    logger = conf.RedactingLogger(config)
    environ = {"REQUEST_METHOD": "POST", "RAW_URI": uri, "PATH_INFO": uri.split("?")[0], "SERVER_PROTOCOL": "HTTP/1.1",
               "QUERY_STRING": "", "REMOTE_ADDR": "10.1.2.3", **({"HTTP_USER_AGENT": agent} if agent else {})}
    response = SimpleNamespace(status="200 OK", sent=27, headers=[("Content-Type", "text/plain")])
    request = SimpleNamespace(headers=[("HOST", "wallet.example")])
    took = dt.timedelta(seconds=1, microseconds=4_321)
    try:
        logger.access(response, request, environ, took)
        gunicorn_logger.Logger.access(logger, response, request, environ, took)  # gunicorn's way
    finally:
        for handler in logger.access_log.handlers:
            handler.close()
    ours, theirs = (json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines())
    assert ours["logger"] == theirs["logger"] == "gunicorn.access"  # JSON, as every other line
    ours, theirs = ours["msg"], theirs["msg"]
    assert ours == theirs
    assert TOKEN not in ours and ours.startswith('10.1.2.3 "POST ') and ' 200 27 1004ms "' in ours


def test_the_access_log_of_a_running_server_names_no_callback_secret(wallet, tmp_path):
    server = Gunicorn(wallet.db.url, TEST_PEPPER, workers=1, log_path=tmp_path / "gunicorn.log",
                      extra_env=lambda url: {"USSD_CALLBACK_TOKEN": TOKEN})
    try:
        served = requests.post(f"{server.url}/ussd/{TOKEN}", data=FORM, timeout=10)
        refused = requests.post(f"{server.url}/ussd/not-the-secret", data=FORM, timeout=10)
    finally:
        server.stop()
    assert served.status_code == 200 and refused.status_code == 403
    log = (tmp_path / "gunicorn.log").read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    lines = [entry["msg"] for entry in entries if '"POST /ussd/<token> HTTP/1.1"' in entry["msg"]]
    assert [line.split('"')[2].split()[0] for line in lines] == ["200", "403"]
    assert TOKEN not in log and "not-the-secret" not in log


# ------------------------------------------------------------------ fuzz
SQL_AND_FORMAT = ["' OR 1=1 --", "%s%s%n", "{0}{1}", "${jndi:x}", "\x00", "\u202e", "ü", "€", "1;DROP TABLE users"]
token = st.one_of(
    st.sampled_from(["", "0", "00", "1", "2", "3", "4", "5", "6", "7", "9", "1000", "0787654321", "+254798765432",
                     "150", "ABCDEFGH12", "-5", "1.5", "1e9", "99999999999999999999", "0000", "1234"]),
    st.sampled_from(SQL_AND_FORMAT),
    st.integers(min_value=-10**12, max_value=10**25).map(str),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="*"), max_size=12),
    st.text(alphabet=string.digits, min_size=4, max_size=4),
).filter(lambda tok: tok != PIN)
paths = st.one_of(
    st.lists(token, max_size=8).map("*".join),
    st.integers(min_value=100, max_value=10_000).map(lambda n: "1*" * (n // 2)),
    st.text(max_size=300),
)
phones = st.sampled_from([*DEMO, "+254700111222", "0712345678", "254787654321", "garbage", "", "+1 202 555 0143"])


def test_fuzzing_ussd_gives_no_5xx_valid_screens_and_moves_no_money_without_the_pin(app, wallet):
    for phone in DEMO:  # every demo user has a PIN the fuzzer never types
        Dialer(app.test_client(), phone).run(PIN, PIN)
    client = app.test_client()
    sent = [0]

    @settings(max_examples=3500, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(steps=st.lists(st.tuples(st.integers(0, 5), phones, paths), min_size=2, max_size=5),
           odd=st.sampled_from(["normal", "missing", "duplicated"]))
    def fuzz(steps, odd):
        for session, phone, text in steps:
            form = MultiDict({"sessionId": f"fz-{session}", "phoneNumber": phone, "serviceCode": "*384*123#",
                              "networkCode": "63902", "text": text})
            if odd == "missing":
                form.pop(["sessionId", "phoneNumber", "text"][session % 3])
            elif odd == "duplicated":
                form.add("text", "1*2*3")
                form.add("phoneNumber", DEMO[1])
            response = client.post("/ussd", data=form)
            sent[0] += 1
            assert response.status_code == 200, response.status_code
            check_reply(response.get_data(as_text=True))

    fuzz()
    with wallet.db.read() as s:
        debits = s.scalar(select(Transaction.id).where(Transaction.direction == "debit"))
    print(f"\nFIGURES fuzz: {sent[0]} requests, 0 server errors, no debit without the PIN")
    assert sent[0] >= 10_000
    assert debits is None  # no money left any account: the PIN was never typed


def test_write_behind_counts_are_shared_by_workers_and_overshoot_only_by_the_unwritten(wallet):
    """Two workers' counters on one database: each refuses past the limit on what it knows; what
    another worker accepted but has not written yet is the only overshoot, and once written,
    every worker refuses."""
    from helpers.wallet.customers.limits import RequestCounter

    limit, _window = P.rate_limit("requests-per-phone")
    at_start_of_window(60)
    a, b = RequestCounter(wallet.db, 60), RequestCounter(wallet.db, 60)  # flushed by hand here
    try:
        check = ("requests-per-phone", "+254700000001")
        assert [a.allow(P, check) for _ in range(limit)] == [None] * limit
        assert a.allow(P, check) == "requests-per-phone"  # its own count is exact
        assert b.allow(P, check) is None  # B has not heard of A's requests yet: the overshoot
        a.flush()
        b.flush()  # B writes its one request and learns the total
        assert b.allow(P, check) == "requests-per-phone"
        with wallet.db.read() as s:
            total = s.execute(select(RateCounter.count).where(RateCounter.key.like("requests-per-phone:%"))).scalar()
        assert total == limit + 2  # A: limit + its refused one; B: the one accepted (its refusal is not written yet)
    finally:
        a.close()
        b.close()


def test_counts_that_could_not_be_written_are_kept_for_the_next_flush(wallet, monkeypatch):
    from helpers.wallet.customers import limits

    counter = limits.RequestCounter(wallet.db, 60)
    try:
        for _ in range(3):
            counter.allow(P, ("requests-per-phone", "+254700000002"))
        real = limits._count_on

        def down(*args, **kwargs):
            raise RuntimeError("database down")

        monkeypatch.setattr(limits, "_count_on", down)
        with pytest.raises(RuntimeError):
            counter.flush()
        with wallet.db.read() as s:
            assert s.execute(select(RateCounter.count)).scalar() is None
        monkeypatch.setattr(limits, "_count_on", real)
        counter.flush()
        with wallet.db.read() as s:
            assert s.execute(select(RateCounter.count)).scalar() == 3
    finally:
        counter.close()


def test_every_log_line_is_one_json_object_with_its_request_and_session(client, alice, wallet, app):
    """The app's format for every line: JSON, the request and USSD session ids on each line of a
    USSD request, no PIN, no phone number in full, no callback token."""
    from helpers.infra.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # setLevel, not the attribute: loggers cache what is enabled
    try:
        alice.run("1", "0" + DEMO[1][4:], "1000", "1", PIN)
        logging.getLogger("helpers.web.callbacks").warning("refused /mpesa/secret-token-123/stk/REF")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if line["logger"] == "wallet" and line["msg"].startswith("ussd ")]
    assert len(requests) == 6  # the dial and five answers, one line each
    for line in requests:
        assert {"ts", "level", "msg", "request_id", "session_id"} <= line.keys()
        assert line["session_id"] == alice.session_id[:16] and line["request_id"] in line["msg"]
    text = stream.getvalue()
    assert PIN not in text.replace(alice.session_id, "") and DEMO[0] not in text
    assert "secret-token-123" not in text and "/mpesa/<token>/stk/REF" in text


def test_a_request_after_a_ussd_one_logs_without_its_ids(client, alice):
    from helpers.infra import logs

    alice.run("0")  # sets this thread's ids while it is answered
    client.get("/health")
    assert (logs.request_id.get(), logs.session_id.get()) == ("", "")
