"""Airtime from sats (Pay > Airtime) against a fake of Africa's Talking's Airtime API
(tests/fakes/fake_at_airtime.py) that checks every request against AT's documentation: accepted
and delivered later (status callback), delivered at once, refused, no answer, a duplicate or
forged delivery report, the status query. For every path: the quote's sats are reserved once,
settled or refunded once, nothing is released while the outcome is unknown, and the ledger check
passes (conftest)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from helpers.infra.config import ConfigError, finalise, load_config
from helpers.infra.i18n import receipt_text, t
from helpers.wallet.rules import policy
from helpers.airtime import rail as airtime_rail
from helpers.infra.rail import Said
from helpers.wallet.reports import books
from helpers.wallet.payouts import machine as payouts
from helpers.web import worker
from models import AIRTIME_RAIL, POSTED, RESERVED, SENT, VOIDED, Payout, Transaction
from tests.conftest import DEMO, PIN, VALID_MIN, Dialer, balance, outbox, snapshot
from tests.fakes.fake_at_airtime import FakeAirtime

ALICE_LOCAL, BOB_LOCAL = "0" + DEMO[0][4:], "0" + DEMO[1][4:]
TOKEN = "airtime-callback-token-0123"


@pytest.fixture
def at():
    fake = FakeAirtime(slow_s=2.5)
    yield fake
    fake.stop()
    assert fake.violations == [], fake.violations  # every request we made matched AT's docs


@pytest.fixture
def app_overrides(at):
    return at.app_settings(TOKEN)


def terms(wallet, kes: int) -> tuple[int, int]:
    """The sats and fee a quote for `kes` of airtime holds at the price now."""
    sats = wallet.policy.kes_to_sats_debit(kes, wallet.prices.current().kes_per_btc)
    return sats, wallet.policy.fee_sats("airtime", sats)


def request_of(wallet, reference: str) -> Payout:
    with wallet.db.read() as s:
        return s.scalar(select(Payout).where(Payout.reference == reference))


def only_request(wallet) -> Payout:
    with wallet.db.read() as s:
        rows = list(s.scalars(select(Payout)))
    assert len(rows) == 1
    return rows[0]


def entries(wallet, reference: str) -> list[str]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Transaction.kind).where(Transaction.reference == reference)
                              .order_by(Transaction.id)))


def report(client, fields: dict, token: str = TOKEN):
    return client.post(f"/airtime/{token}/status", data=fields)


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_airtime_accepted_is_reserved_then_settled_once_by_the_delivery_report(alice, wallet, client, at, lang):
    from tests.unit.test_flows import set_language

    set_language(alice, lang)
    kes = 100
    sats, fee = terms(wallet, kes)
    a0 = balance(wallet, DEMO[0])
    assert alice.run("8", "3", "1", str(kes)) == "CON " + t(lang, "airtime.pin", kes=kes, phone=ALICE_LOCAL,
                                                          sats=sats, fee=fee, valid=VALID_MIN)
    reply = alice.press(PIN)
    request = only_request(wallet)
    assert reply == "END " + t(lang, "airtime.pending", kes=kes, phone=ALICE_LOCAL, ref=request.reference)
    assert [(s["phone"], s["kes"], s["key"]) for s in at.sends] == [(DEMO[0], f"KES {kes}", request.reference)]
    assert request.state == SENT and request.rail_key == at.sends[0]["request_id"]
    assert balance(wallet, DEMO[0]) == a0 - sats - fee  # reserved, not yet spent

    at.final[request.rail_key] = "Success"  # what AT's status query says from now on
    answer = report(client, at.report(request.rail_key))
    assert (answer.status_code, answer.json["status"]) == (200, "settled")
    assert report(client, at.report(request.rail_key)).json["status"] == "already-done"  # AT sends it again
    assert request_of(wallet, request.reference).state == POSTED
    assert balance(wallet, DEMO[0]) == a0 - sats - fee
    assert entries(wallet, request.reference) == ["airtime-pending", "airtime-post"]
    left = policy().value("daily-send-limit-sats") - sats  # the day's only payment
    receipt = receipt_text(lang, "sms.airtime", left, kes=kes, phone=ALICE_LOCAL, ref=request.reference, sats=sats,
                           fee=fee, balance=a0 - sats - fee)
    assert outbox(wallet, DEMO[0])[-1] == receipt


def test_airtime_delivered_at_once_is_settled_on_the_answer(alice, wallet, at):
    at.mode = "success"
    sats, fee = terms(wallet, 50)
    a0 = balance(wallet, DEMO[0])
    reply = alice.run("8", "3", "2", BOB_LOCAL, "50", PIN)
    request = only_request(wallet)
    assert reply == "END " + receipt_text("en", "airtime.done", policy().value("daily-send-limit-sats") - sats,
                                          kes=50, phone=BOB_LOCAL, sats=sats, fee=fee, ref=request.reference,
                                          balance=a0 - sats - fee)
    assert at.sends[0]["phone"] == DEMO[1] and request.state == POSTED


def test_a_refused_send_gives_the_sats_back_at_once(alice, wallet, at):
    at.mode = "failed"
    a0 = balance(wallet, DEMO[0])
    reply = alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    assert reply == "END " + t("en", "airtime.failed", ref=request.reference)
    assert balance(wallet, DEMO[0]) == a0 and request.state == VOIDED
    assert entries(wallet, request.reference) == ["airtime-pending", "airtime-void"]
    assert len(at.sends) == 1


def test_a_failure_report_refunds_once_and_a_later_success_changes_nothing(alice, wallet, client, at):
    a0 = balance(wallet, DEMO[0])
    alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    at.final[request.rail_key] = "Failed"
    assert report(client, at.report(request.rail_key, "Failed")).json["status"] == "refunded"
    assert balance(wallet, DEMO[0]) == a0
    assert report(client, at.report(request.rail_key, "Failed")).json["status"] == "already-done"
    assert report(client, at.report(request.rail_key, "Success")).json["status"] == "already-done"
    assert balance(wallet, DEMO[0]) == a0
    assert entries(wallet, request.reference) == ["airtime-pending", "airtime-void"]
    assert any(request.reference in sms and "100" in sms for sms in outbox(wallet, DEMO[0]))


def test_forged_or_mismatched_reports_move_nothing(alice, wallet, client, at):
    alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    before = snapshot(wallet)
    assert report(client, at.report(request.rail_key), token="wrong-token-0123456789").status_code == 403
    assert report(client, at.report(request.rail_key, phoneNumber=DEMO[1])).status_code == 400
    assert report(client, at.report(request.rail_key, value="KES 5000.0000")).status_code == 400
    assert report(client, at.report(request.rail_key, requestId="ATQid_forged")).status_code == 404
    assert report(client, {"requestId": request.rail_key, "status": "Maybe"}).status_code == 400
    # the URL and the id are right, but AT's own status query does not say so: nothing moves
    assert report(client, at.report(request.rail_key, "Failed")).status_code == 202  # AT: still "Sent"
    at.final[request.rail_key] = "Success"
    assert report(client, at.report(request.rail_key, "Failed")).status_code == 409  # AT: delivered
    assert snapshot(wallet) == before and request_of(wallet, request.reference).state == SENT


def test_refused_sends_one_after_another_each_give_the_sats_back(alice, wallet, at):
    """AT writes "requestId": "None" for a refused send: no id is kept, so the next refusal is
    refunded as well (a kept "None" would collide with the unique requestId column)."""
    at.mode = "failed"
    a0 = balance(wallet, DEMO[0])
    for _ in range(3):
        assert alice.run("8", "3", "1", "100", PIN).startswith("END " + t("en", "airtime.failed", ref="X")[:20])
    assert balance(wallet, DEMO[0]) == a0
    with wallet.db.read() as s:
        assert [(r.state, r.rail_key) for r in s.scalars(select(Payout))] == [(VOIDED, None)] * 3


def test_without_a_report_the_status_query_settles_it(alice, wallet, at):
    alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    assert worker.sweep(wallet) >= 1  # the sweep gives the pending purchase its job
    handle = worker.HANDLERS[worker.PAYOUT]
    assert handle(wallet, request.reference) is False  # AT: still "Sent"
    assert request_of(wallet, request.reference).state == SENT
    at.final[request.rail_key] = "Success"
    assert handle(wallet, request.reference) is True
    assert request_of(wallet, request.reference).state == POSTED
    assert at.queries == [request.rail_key] * 2


def test_a_query_that_says_failed_refunds(alice, wallet, at):
    a0 = balance(wallet, DEMO[0])
    alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    at.final[request.rail_key] = "Failed"
    assert payouts.query(wallet.db, wallet.rail(AIRTIME_RAIL), request.reference).said is Said.FAILED
    assert balance(wallet, DEMO[0]) == a0


@pytest.mark.parametrize("mode", ["error", "slow"])
def test_no_answer_keeps_the_sats_reserved_until_an_operator_resolves_it(alice, wallet, runner, at, mode):
    at.mode = mode
    sats, fee = terms(wallet, 100)
    a0 = balance(wallet, DEMO[0])
    reply = alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    assert reply == "END " + t("en", "airtime.pending", kes=100, phone=ALICE_LOCAL, ref=request.reference)
    assert request.rail_key is None and balance(wallet, DEMO[0]) == a0 - sats - fee
    handle = worker.HANDLERS[worker.PAYOUT]
    assert handle(wallet, request.reference) is False  # its send may still be waiting: asked again later
    with wallet.db.write() as s:  # past the time a send can take
        s.execute(Payout.__table__.update().values(
            created_at=request.created_at - dt.timedelta(seconds=airtime_rail.SEND_GRACE_S + 1)))
    assert handle(wallet, request.reference) is True  # nothing to ask: left to people
    assert request_of(wallet, request.reference).state == RESERVED
    done = runner.invoke(args=["resolve-airtime", request.reference, "--outcome", "failed", "--reason", "T-1 AT says"])
    assert done.exit_code == 0, done.output
    assert balance(wallet, DEMO[0]) == a0
    again = runner.invoke(args=["resolve-airtime", request.reference, "--outcome", "delivered", "--reason", "T-1"])
    assert again.exit_code != 0 and balance(wallet, DEMO[0]) == a0


def test_a_replayed_confirmation_buys_once(alice, wallet, at):
    alice.run("8", "3", "1", "100")
    first = alice.press(PIN)
    replay = alice.post(alice.text)  # Africa's Talking sends the last step again
    assert replay == first and len(at.sends) == 1


def test_several_sessions_buying_at_once_never_overdraw(app, wallet, dial, at):
    at.mode = "success"
    carol = dial(DEMO[2])
    carol.run(PIN, PIN)
    have = balance(wallet, DEMO[2])
    kes = wallet.policy.airtime_bounds()[1]
    sats, fee = terms(wallet, kes)
    affordable = have // (sats + fee)
    phones = []
    for _ in range(affordable + 2):
        phone = Dialer(app.test_client(), DEMO[2])
        phone.run("8", "3", "1", str(kes))
        phones.append(phone)
    gate = threading.Barrier(len(phones))
    replies: list[str] = []

    def buy(phone):
        gate.wait()
        replies.append(phone.press(PIN))

    threads = [threading.Thread(target=buy, args=(p,)) for p in phones]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bought = sum(r.startswith("END Airtime") for r in replies)
    assert bought == affordable == len(at.sends)
    assert balance(wallet, DEMO[2]) == have - bought * (sats + fee) >= 0


def test_a_session_dropped_at_the_amount_resumes_there_and_asks_the_pin(alice, wallet, at):
    alice.run("8", "3", "2", BOB_LOCAL)
    amount_screen = alice.reply
    alice.session_id = ""  # the network drops the session
    alice.start()
    assert alice.press("1") == amount_screen
    assert alice.press("100").startswith("CON " + t("en", "airtime.pin", kes=100, phone=BOB_LOCAL, sats=1, fee=0,
                                                    valid=VALID_MIN)[:25])
    alice.press(PIN)
    assert len(at.sends) == 1 and at.sends[0]["phone"] == DEMO[1]


def test_the_statement_names_airtime(alice, wallet, client, at):
    at.mode = "success"
    alice.run("8", "3", "1", "100", PIN)
    history = alice.run("6", "1")
    assert t("en", "who.airtime") in history


def test_airtime_off_refuses_on_the_menu_and_moves_nothing(alice, wallet):
    wallet.airtime = None
    before = snapshot(wallet)
    assert alice.run("8", "3").startswith("CON " + t("en", "airtime.off"))
    assert snapshot(wallet) == before


def test_production_refuses_simulated_airtime_and_a_missing_callback_token(tmp_path, monkeypatch):
    production = {"APP_ENV": "production", "PIN_PEPPER": "x" * 40, "USSD_CALLBACK_TOKEN": "t" * 20,
                  "PUBLIC_URL": "https://wallet.example", "MPESA_PROVIDER": "daraja", "LIGHTNING_BACKEND": "lnd",
                  "PRICE_SOURCES": "coingecko", "SIMULATOR_ENABLED": "0", "DEMO_MODE": "0",
                  "DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1/w", "MPESA_BASE_URL": "https://api.safaricom.co.ke",
                  "METRICS_TOKEN": "m" * 20}
    for name, value in production.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRTIME_PROVIDER", "simulated")
    with pytest.raises(ConfigError, match="AIRTIME_PROVIDER=simulated"):
        finalise(load_config(str(tmp_path)))
    monkeypatch.setenv("AIRTIME_PROVIDER", "africastalking")
    with pytest.raises(ConfigError, match="AIRTIME_CALLBACK_TOKEN"):
        finalise(load_config(str(tmp_path)))
    monkeypatch.delenv("AIRTIME_PROVIDER")  # no AT credentials in production: airtime is off
    monkeypatch.delenv("AFRICASTALKING_USERNAME", raising=False)
    config = load_config(str(tmp_path))
    finalise(config)
    assert config["AIRTIME_PROVIDER"] == "off"


def test_solvency_counts_airtime_in_flight_and_the_airtime_float(alice, wallet, client, at):
    alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    at.final[request.rail_key] = "Success"
    with wallet.db.read() as s:
        reserved = s.scalar(select(Transaction.amount_sats + Transaction.fee_sats)
                            .where(Transaction.reference == request.reference))
        assert books.solvency(s, 0).airtime_in_flight_sats == reserved
    report(client, at.report(request.rail_key))
    with wallet.db.read() as s:
        found = books.solvency(s, 0)
    assert found.airtime_in_flight_sats == 0 and found.airtime_float_sats == -reserved


def test_operators_see_pending_airtime_with_its_request_id(alice, wallet, client, at):
    from helpers.wallet import operators
    from tests.unit.test_console import PASSWORD, sign_in

    alice.run("8", "3", "1", "100", PIN)
    request = only_request(wallet)
    operators.add(wallet.db, "wanjiru", PASSWORD)
    sign_in(client)
    page = client.get("/admin/pending").get_data(as_text=True)
    assert request.reference in page and request.rail_key in page
    at.final[request.rail_key] = "Success"
    report(client, at.report(request.rail_key))
    assert request.reference not in client.get("/admin/pending").get_data(as_text=True)


def test_deeply_nested_json_is_a_bad_request(client):
    deep = "[" * 3000 + "]" * 3000  # within the size limit, past the parser's recursion limit
    response = client.post(f"/airtime/{TOKEN}/status", data=deep, content_type="application/json")
    assert response.status_code == 400
