"""Lightning mock, SMS outbox and Africa's Talking sender, operator commands, concurrency."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType
from sqlalchemy import func, select

from helpers.infra import phone
from helpers.infra.phone import normalise

from helpers.infra.sms import MAX_ATTEMPTS, AfricasTalkingSender, LogSender, SmsDispatcher, SmsError
from lightning import (
    InvalidInvoice,
    LightningConfigError,
    MockBackend,
    State,
    UnavailableBackend,
    create_backend,
    decode_invoice,
)
from models import SmsOutbox, User, UssdSession, utcnow
from tests.conftest import refund_withdrawal, reserve_withdrawal
from tests.conftest import balance, configure, credit_sats, DEMO, Dialer, FIXED_PRICE, KES_MIN, PIN, withdraw_terms
from helpers.infra.settings import Settings


# ------------------------------------------------------------------ Lightning
def test_mock_invoices_are_signed_bolt11_that_decode():
    node = MockBackend(network="bc")
    made = node.create_invoice(1234, "memo", 600)
    decoded = decode_invoice(made.bolt11)
    assert made.ok and made.bolt11.startswith("lnbc")
    assert (decoded.amount_sat, decoded.payment_hash, decoded.network) == (1234, made.payment_hash, "bc")
    assert node.invoice_status(made.payment_hash).state is State.PENDING
    assert node.simulate_payment(made.payment_hash)
    assert not node.simulate_payment(made.payment_hash)  # paid once
    assert node.invoice_status(made.payment_hash).state is State.SUCCEEDED
    assert node.invoice_status("00" * 32).state is State.PENDING  # unknown is never "failed"


def test_mock_payments_and_expiry():
    node, other = MockBackend(), MockBackend(seed="someone else")
    invoice = other.create_invoice(5000, "x", 600)
    paid = node.pay_invoice(invoice.bolt11, 10)
    assert paid.state is State.SUCCEEDED and paid.payment_hash == invoice.payment_hash
    assert node.payment_status(invoice.payment_hash).state is State.SUCCEEDED
    assert node.payment_status("11" * 32).state is State.PENDING
    assert node.pay_invoice("lnbc1notaninvoice", 10).state is State.FAILED
    expired = node.create_invoice(1000, "x", 0)
    import time

    time.sleep(1.1)
    assert node.invoice_status(expired.payment_hash).state is State.FAILED


def test_decode_rejects_garbage():
    for bad in ("", "hello", "lnbc1" + "q" * 50):
        with pytest.raises(InvalidInvoice):
            decode_invoice(bad)


def test_backend_registry_names_the_problem():
    assert isinstance(create_backend(Settings.from_mapping({"LIGHTNING_BACKEND": "mock"})), MockBackend)
    with pytest.raises(LightningConfigError, match="LIGHTNING_BACKEND"):
        create_backend(Settings.from_mapping({"LIGHTNING_BACKEND": "nonsense"}))
    down = UnavailableBackend("no node")
    assert down.health() == {"backend": "unavailable", "ok": False, "error": "no node", "balance_sat": None}
    assert down.payment_status("00").state is State.PENDING


# ------------------------------------------------------------------ SMS
class Flaky(LogSender):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send(self, phone: str, message: str) -> None:
        if self.failures:
            self.failures -= 1
            raise SmsError("gateway down")
        super().send(phone, message)


def _due_now(wallet) -> None:
    with wallet.db.write() as s:
        s.execute(SmsOutbox.__table__.update().values(next_attempt_at=SmsOutbox.created_at))


def test_an_sms_failure_never_fails_the_ussd_step_and_is_retried(alice, wallet):
    dispatcher = SmsDispatcher(wallet.db, Flaky(failures=1))
    reply = alice.run("1", "0787654321", "2000", "1", PIN)
    assert reply.startswith("END ")
    sent, failed = dispatcher.flush()
    assert failed >= 1
    _due_now(wallet)
    dispatcher.flush()
    with wallet.db.read() as s:
        statuses = set(s.scalars(select(SmsOutbox.status)))
    assert statuses == {"sent"}


def test_an_sms_that_keeps_failing_is_given_up_after_max_attempts(wallet):
    from helpers.infra import sms

    with wallet.db.write() as s:
        sms.queue(s, DEMO[0], "hello")
    dispatcher = SmsDispatcher(wallet.db, Flaky(failures=10**6))
    for _ in range(MAX_ATTEMPTS):
        _due_now(wallet)
        dispatcher.flush()
    with wallet.db.read() as s:
        row = s.scalar(select(SmsOutbox))
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)


class FakeAfricasTalking(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        FakeAfricasTalking.received.append((self.path, dict(self.headers), body))
        status = "Success" if self.headers.get("apiKey") == "test-key" else "InvalidRequest"
        payload = {"SMSMessageData": {"Message": "Sent to 1/1", "Recipients": [
            {"number": body["to"][0], "status": status, "statusCode": 101, "cost": "KES 0.8000"}]}}
        data = json.dumps(payload).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_at():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAfricasTalking)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeAfricasTalking.received = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_africastalking_sender_posts_what_the_api_expects(fake_at):
    sender = AfricasTalkingSender("sandbox", "test-key", "SATSPESA", base_url=fake_at)
    sender.send(DEMO[0], "Hello from the wallet")
    path, headers, body = FakeAfricasTalking.received[0]
    assert path == "/messaging"
    assert headers["apiKey"] == "test-key"
    assert body["username"] == ["sandbox"] and body["to"] == [DEMO[0]]
    assert body["message"] == ["Hello from the wallet"] and body["from"] == ["SATSPESA"]
    with pytest.raises(SmsError):
        AfricasTalkingSender("sandbox", "wrong-key", base_url=fake_at).send(DEMO[0], "x")


# ------------------------------------------------------------------ operator commands
def test_ledger_check_command_passes_and_catches_tampering(runner, wallet, alice):
    alice.run("1", "0787654321", "2000", "1", PIN)
    result = runner.invoke(args=["ledger-check"])
    assert result.exit_code == 0 and "0 in the journal" in result.output
    with wallet.db.write() as s:
        s.execute(User.__table__.update().where(User.phone == DEMO[0]).values(balance_sats=User.balance_sats + 1))
    result = runner.invoke(args=["ledger-check"])
    assert result.exit_code == 1 and "JOURNAL customer balance" in result.output
    with wallet.db.write() as s:  # put it back so the suite's own ledger check passes
        s.execute(User.__table__.update().where(User.phone == DEMO[0]).values(balance_sats=User.balance_sats - 1))


def test_flush_poll_and_clean_commands(runner, wallet, alice):
    wallet.sms.sender = LogSender()
    alice.run("2", "1000")
    assert "sms sent=" in runner.invoke(args=["flush-sms"]).output
    assert wallet.sms.sender.sent
    assert "pending" in runner.invoke(args=["poll-invoices"]).output
    alice.start()  # a session left open (CON): idle past a timeout of 0, so clean closes it
    configure(wallet, ussd_session_timeout_s=0)
    with wallet.db.read() as s:
        active = s.scalar(select(func.count()).select_from(UssdSession).where(UssdSession.active.is_(True)))
        every = s.scalar(select(func.count()).select_from(UssdSession))
    assert active >= 1 and every > active
    output = runner.invoke(args=["clean-sessions", "--keep-days", "0"]).output
    assert f"sessions closed={active} deleted={every};" in output, output
    with wallet.db.read() as s:
        assert s.scalar(select(func.count()).select_from(UssdSession)) == 0


# ------------------------------------------------------------------ concurrency within one process
def test_concurrent_sends_from_one_account_never_overdraw(app, client, wallet):
    """Threads against one SQLite file; the cross-process and MySQL versions belong to issue 3."""
    sender = DEMO[2]
    Dialer(client, sender).run(PIN, PIN)
    have = balance(wallet, sender)
    amount = have // 4 + 1  # only 3 can succeed
    fee = wallet.policy.fee_sats("internal", amount)
    assert 3 * (amount + fee) <= have < 4 * amount
    total0 = sum(balance(wallet, p) for p in DEMO)

    def one(n: int) -> str:
        phone = Dialer(app.test_client(), sender)
        return phone.run("1", "0787654321", str(amount), "1", PIN)

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(one, range(12)))
    done = [r for r in replies if r.startswith("END Sent")]
    assert len(done) == 3
    assert balance(wallet, sender) == have - 3 * (amount + fee) >= 0
    assert sum(balance(wallet, p) for p in DEMO) == total0 - 3 * fee  # the fees leave the users


def test_operator_pin_reset_clears_the_pin_and_tells_the_owner(runner, wallet, alice):
    from helpers.infra.i18n import t

    assert runner.invoke(args=["reset-pin", "0712345678"]).exit_code != 0  # a reason is required
    result = runner.invoke(args=["reset-pin", "0712345678", "--reason", "ticket 42, national ID seen"])
    assert result.exit_code == 0, result.output
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_hash).where(User.phone == DEMO[0])) is None
    assert t("en", "sms.pin-reset") in [m for p, m in _outbox_all(wallet) if p == DEMO[0]]
    assert alice.start() == "CON " + t("en", "pin.create", digits=4)
    assert runner.invoke(args=["reset-pin", "0700000001", "--reason", "x"]).exit_code != 0


def _outbox_all(wallet):
    with wallet.db.read() as s:
        return s.execute(select(SmsOutbox.phone, SmsOutbox.message)).all()


def test_operator_commands_create_credit_export_reconcile(runner, wallet):
    import csv
    import io

    assert runner.invoke(args=["create-user", "0744555666", "--language", "sw"]).exit_code == 0
    assert runner.invoke(args=["create-user", "12345"]).exit_code != 0
    result = runner.invoke(args=["credit", "0744555666", "2500", "--reason", "ticket 7: lost top-up"])
    assert result.exit_code == 0, result.output
    assert balance(wallet, "+254744555666") == 2500
    assert runner.invoke(args=["credit", "0744555666", "5"]).exit_code != 0  # a reason is required
    exported = runner.invoke(args=["export-transactions"]).output
    rows = list(csv.DictReader(io.StringIO(exported)))
    support = [r for r in rows if r["phone"] == "+254744555666"]
    assert len(support) == 1 and support[0]["amount_sats"] == "2500"
    assert support[0]["type"] == "adjust" and "ticket 7" in support[0]["description"]
    result = runner.invoke(args=["reconcile", "--older-than-minutes", "0"])
    assert result.exit_code == 0 and "pending money movements older than 0 min: 0" in result.output


def test_the_export_shows_a_transfer_on_both_customers_lines(runner, wallet, alice):
    """One movement between two customers is one row of the books and a line for each of them."""
    import csv
    import io

    amount = wallet.policy.value("payment-min-sats")
    fee = wallet.policy.fee_sats("internal", amount)
    alice.run("1", "0" + DEMO[1][4:], str(amount), "1", PIN)
    rows = list(csv.DictReader(io.StringIO(runner.invoke(args=["export-transactions"]).output)))
    reference = next(r["reference"] for r in rows if r["type"] == "send")
    lines = {r["phone"]: r for r in rows if r["reference"] == reference}
    assert set(lines) == {DEMO[0], DEMO[1]}
    payer, payee = lines[DEMO[0]], lines[DEMO[1]]
    assert (payer["direction"], payer["amount_sats"], payer["fee_sats"], payer["counterparty"]) == (
        "debit", str(amount), str(fee), DEMO[1])
    assert (payee["type"], payee["direction"], payee["amount_sats"], payee["fee_sats"], payee["counterparty"]) == (
        "receive", "credit", str(amount), "0", DEMO[0])
    assert payer["id"] == payee["id"]  # one entry


def test_metrics_report_requests_and_money(client, wallet, alice, app):
    alice.run("1", "0787654321", "1000", "1", PIN)
    assert client.get("/metrics").status_code == 403  # no METRICS_TOKEN configured: nobody is let in
    configure(app, metrics_token="metrics-secret")
    text = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"}).get_data(as_text=True)
    assert 'ussd_requests_total{outcome="end"}' in text and "ussd_request_duration_seconds_bucket" in text
    assert 'wallet_payments{backend="mock",type="send",status="settled"} 1' in text
    liabilities = sum(balance(wallet, p) for p in DEMO)
    assert f"wallet_liabilities_sats {liabilities}" in text
    assert client.get("/metrics").status_code == 403
    assert client.get("/ledger/solvency").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "metrics-secret"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"}).status_code == 200


def test_every_request_is_logged_once_with_an_id(client, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="wallet")
    response = client.post("/ussd", data={"sessionId": "log-1", "phoneNumber": DEMO[0], "text": ""})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ussd request_id=")]
    assert len(lines) == 1 and response.headers["X-Request-Id"] in lines[0]
    assert "phone=+2547****5678" in lines[0] and "outcome=con" in lines[0] and DEMO[0] not in lines[0]


def test_rate_counters_count_every_event_in_each_dialects_statement(wallet):
    """The counters' upserts: all of a request's counters in one statement where the database
    returns rows from an upsert, one LAST_INSERT_ID statement each on MySQL (checked here on any
    MySQL-family server)."""
    from helpers.wallet.customers import limits

    db = wallet.db
    assert [limits._count(db, [("t:a", 1), ("t:b", 1)]) for _ in range(3)] == [[1, 1], [2, 2], [3, 3]]
    assert limits._count(db, [("t:a", 2), ("t:a", 1)]) == [1, 4]  # same key, another window
    if db.is_sqlite:
        return
    with db.begin() as conn:
        counts = [limits._mysql_hit(conn, "t:mysql", 7, utcnow()) for _ in range(3)]
    assert counts == [1, 2, 3]


def test_the_request_connection_is_kept_between_requests_with_no_transaction_open(client, wallet):
    """A worker under load keeps its connection from one request to the next, with nothing
    open on it; one left unused for a while goes back to the pool (which checks it) first."""
    db = wallet.db
    Dialer(client, DEMO[0]).start()
    kept = db._local.conn
    assert kept is not None and db._local.idle_since is not None
    assert db.is_sqlite or not kept.in_transaction()  # SQLite's reads run in autocommit anyway
    Dialer(client, DEMO[1]).start()
    assert db._local.conn is kept
    db._local.idle_since -= 3600  # as if it had not been used for an hour
    Dialer(client, DEMO[2]).start()
    assert db._local.conn is not kept and kept.closed


# ------------------------------------------------------------------ phone numbers
def _parsed(raw: str, region: str) -> str | None:
    """What phonenumbers.parse makes of `raw`, with the checks normalise() applies."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number) or phonenumbers.region_code_for_number(number) != region:
        return None
    if phonenumbers.number_type(number) not in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _example(region: str) -> str:
    """The region's example mobile number, E.164."""
    return phonenumbers.format_number(phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE),
                                      phonenumbers.PhoneNumberFormat.E164)


def _near_a_mobile(region: str) -> st.SearchStrategy[str]:
    """The national digits of the region's example mobile number, the last ones changed: mostly valid."""
    example = _example(region)[1 + len(str(phonenumbers.country_code_for_region(region))):]
    return st.text(alphabet="0123456789", max_size=5).map(lambda tail: example[:len(example) - len(tail)] + tail)


REGIONS = ["KE", "UG", "TZ", "NG", "US", "MX", "AR", "GB", "IT"]


@settings(max_examples=600, deadline=None)
@given(data=st.data(), region=st.sampled_from(REGIONS), prefixed=st.booleans())
def test_an_international_number_built_directly_is_what_parsing_makes_of_it(data, region, prefixed):
    """normalise() builds "+<code><digits>" numbers without phonenumbers.parse: same answers,
    including for regions whose national prefix parsing could strip (those always parse)."""
    digits = data.draw(st.one_of(st.text(alphabet="0123456789", min_size=1, max_size=16), _near_a_mobile(region)))
    code = str(phonenumbers.country_code_for_region(region))
    raw = "+" + (code if prefixed else "") + digits
    if len(raw) > 20:
        raw = raw[:20]
    assert phone._normalise(raw, region) == _parsed(raw, region)


def test_phone_numbers_as_callers_and_keypads_give_them():
    kenyan = "+254711000001"
    assert [normalise(raw) for raw in (kenyan, "0711000001", "254711000001", " +254711000001 ", "0711 000 001")] \
        == [kenyan] * 5
    rejected = ["+254011000001", "+25471100000", "+2547110000011", "+254900000001", "+1 202 555 0143", "garbage", "",
                "+254" + "7" * 30]
    assert [normalise(raw) for raw in rejected] == [None] * len(rejected)
    assert phone._international(kenyan, "KE").national_number == 711000001  # the direct way was taken
    assert phone._international("+541112345678", "AR") is None  # a region whose prefix is a pattern


@pytest.mark.parametrize("raw,region", [
    ("+1" + "1" + _example("US")[2:], "US"),  # parsing strips the national prefix "1": a valid US number
    (_example("CA"), "US"),  # +1 is shared: a Canadian mobile is not a US one
    (_example("CA"), "CA"),
    ("+254" + "0" + _example("KE")[4:], "KE"),
])
def test_numbers_where_parsing_is_subtle_get_the_same_answer_built_directly(raw, region):
    assert phone._normalise(raw, region) == _parsed(raw, region)


@pytest.mark.parametrize("movement", ["send", "withdraw", "topup"])
def test_a_movement_run_twice_under_one_key_moves_money_once(wallet, movement):
    """A replay that gets past the session row reaches the money function itself: with nothing
    read first, it fails on the ledger's unique key (or is refused, the first having spent the
    money) and gets the first movement's receipt; its own transaction leaves nothing behind."""
    from helpers.wallet.customers import users
    from helpers.wallet.ledger import journal, movements
    from helpers.wallet.rules import policy
    from models import ADJUSTMENTS, Transaction

    policy_ = policy()
    with wallet.db.read() as s:
        payer = users.UserView.of(users.get(s, DEMO[0]))
    have = balance(wallet, DEMO[0])
    amount = policy_.value("payment-min-sats")
    kes = KES_MIN
    calls = {
        "send": lambda: movements.transfer(wallet.db, policy_, payer, DEMO[1], amount, "r" * 64, "*384#"),
        "withdraw": lambda: reserve_withdrawal(wallet, policy_, payer, *withdraw_terms(kes), DEMO[0],
                                                            "r" * 64),
        "topup": lambda: movements.topup(wallet.db, policy_, payer, kes, credit_sats(kes), FIXED_PRICE,
                                            "QAB12CD34E", "r" * 64),
    }
    first = calls[movement]()
    after_first = (balance(wallet, DEMO[0]), balance(wallet, DEMO[1]), len(_outbox_all(wallet)))
    if movement != "topup":  # the replay is also refused for the money: the first one spent it
        with wallet.db.write() as s:
            journal.record(s, journal.Entry("adjustment", "TESTDRAIN", payer.id, "adjust", "debit", after_first[0],
                                            counterparty="test"),
                           [journal.customer(payer.id, after_first[0]), journal.house(ADJUSTMENTS, -after_first[0])])
    again = calls[movement]()
    assert not first.replay and again.replay
    assert (again.reference, again.amount_sats, again.fee_sats, again.transaction_id) == (
        first.reference, first.amount_sats, first.fee_sats, first.transaction_id)
    with wallet.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Transaction).where(
            Transaction.idempotency_key == "r" * 64)) == 1
    assert len(_outbox_all(wallet)) == after_first[2]
    assert balance(wallet, DEMO[1]) == after_first[1]
    assert first.balance_sats == after_first[0] != have


@pytest.mark.parametrize("kind", ["withdrawal", "lightning"])
def test_a_pending_debit_refunded_twice_is_credited_once(wallet, kind):
    """A refund only moves a row that is still pending: a second refund of the same withdrawal or
    Lightning payment (a late callback, the reconciler and an operator racing) credits nothing."""
    from helpers.wallet.customers import users
    from helpers.wallet.payouts import lightning_out

    policy_ = wallet.policy
    with wallet.db.read() as s:
        payer = users.UserView.of(users.get(s, DEMO[0]))
    have = balance(wallet, DEMO[0])
    if kind == "withdrawal":
        reserved = reserve_withdrawal(wallet, policy_, payer, *withdraw_terms(KES_MIN), DEMO[0],
                                                   "refund-twice")

        def refund():
            return refund_withdrawal(wallet, reserved)
    else:
        amount = policy_.value("payment-min-sats")
        reserved = lightning_out.reserve_lightning(
            wallet.db, wallet.rail("lightning"), policy_, payer, amount, policy_.fee_sats("lightning", amount),
            (amount, amount),
            "ab" * 32, "carol@example.com", "refund-twice")

        def refund():
            return lightning_out.refund_lightning(wallet.db, wallet.rail("lightning"), reserved.transaction_id)
    assert balance(wallet, DEMO[0]) == have - reserved.amount_sats - reserved.fee_sats < have
    assert refund()
    assert balance(wallet, DEMO[0]) == have
    messages = len(_outbox_all(wallet))
    assert not refund()
    assert balance(wallet, DEMO[0]) == have
    assert len(_outbox_all(wallet)) == messages  # no second "failed" SMS either
