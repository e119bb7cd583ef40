"""MPESA_PROVIDER=daraja against a fake Daraja (tests/fakes/fake_daraja.py) that checks every request
against the Daraja docs and calls our callback URLs like Safaricom: success, cancelled (1032),
duplicated 3 times, delayed, never, undecided, queue timeout, refused, slow. The app serves the
callbacks on a real loopback port; customers dial through the test client. For every path: sats
credited or debited once, nothing released while the outcome is unknown, the ledger check passes
(conftest), and whatever is refused changes nothing."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time

import pytest
from decimal import Decimal

from sqlalchemy import func, select
from werkzeug.serving import make_server

from app import create_app
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.reports import mpesa_float
from helpers.infra.config import ConfigError, finalise, load_config
from helpers.mpesa.daraja import REQUIRED, DarajaMpesa, msisdn, stk_password
from helpers.infra.i18n import receipt_text, t
from helpers.mpesa.provider import MpesaConfigError, create_provider
from helpers.wallet.rules import policy
from lightning import State
from models import FloatReading, MpesaRequest, Transaction
from tests.fakes import fake_daraja
from tests.conftest import movements
from tests.conftest import (
    mpesa_request_of, FIXED_PRICE, VALID_MIN, balance, configure, credit_sats, debit_sats, DEMO, KES_MIN, outbox, PIN,
    snapshot)
from tests.fakes.fake_daraja import FakeDaraja, kes_for
from tests.servers import free_port
from helpers.infra.settings import Settings

P = policy()
KES_MIN = KES_MIN


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def daraja():
    fake = FakeDaraja(delay_s=1.0, slow_s=3.0)
    yield fake
    fake.wait_callbacks()
    fake.stop()
    assert fake.violations == [], fake.violations  # every request we made matched the docs


@pytest.fixture
def callback_port():
    return free_port()


@pytest.fixture
def app_overrides(daraja, callback_port):
    return fake_daraja.app_settings(daraja.url, f"http://127.0.0.1:{callback_port}")


@pytest.fixture
def served(app, callback_port):
    """The app on a real loopback port, where the fake Daraja delivers its callbacks."""
    server = make_server("127.0.0.1", callback_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{callback_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def alice(dial, served):
    phone = dial(DEMO[0])
    phone.run(PIN, PIN)
    return phone


def wait_until(check, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def request_of(wallet, kind: str):
    return mpesa_request_of(wallet, kind)


def rows(wallet, kind: str) -> list[Transaction]:
    with wallet.db.read() as s:
        return list(s.scalars(movements().where(Transaction.type == kind).order_by(Transaction.id)))


def reconcile(runner) -> str:
    result = runner.invoke(args=["reconcile", "--mpesa-after-seconds", "0"])
    assert result.exit_code == 0, result.output
    return result.output


def top_up(alice, kes: int) -> str:
    """Dial 4, the amount, confirm: the reply (END)."""
    assert alice.run("4", str(kes)) == "CON " + t("en", "topup.push", kes=kes, sats=credit_sats(kes),
                                                     phone=alice.phone, valid=VALID_MIN)
    return alice.press("1")


def withdraw(alice, kes: int) -> str:
    return alice.run("5", str(kes), "1", PIN)


def reserved(kes: int) -> int:
    sats = debit_sats(kes)
    return sats + P.fee_sats("mpesa-withdraw", sats)


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("missing", REQUIRED)
def test_a_missing_setting_fails_at_start_naming_it(missing, daraja, tmp_path):
    settings = fake_daraja.app_settings(daraja.url, "http://127.0.0.1:9")
    settings[missing] = ""
    if missing == "MPESA_CALLBACK_BASE_URL":
        settings.update(PUBLIC_URL="", LIGHTNING_ADDRESS_DOMAIN="w.example")  # it falls back to PUBLIC_URL
    with pytest.raises(MpesaConfigError, match=missing):
        create_provider(Settings.from_mapping(settings))
    with pytest.raises(MpesaConfigError, match=missing):
        create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "AUTO_CREATE_SCHEMA": False,
                    "DEMO_MODE": False, **settings})


def test_wrong_settings_are_named(daraja):
    settings = fake_daraja.app_settings(daraja.url, "http://127.0.0.1:9")
    for name, value in (("MPESA_SHORTCODE", "17A379"), ("MPESA_CALLBACK_TOKEN", "short"),
                        ("MPESA_BASE_URL", "sandbox.safaricom.co.ke"), ("MPESA_B2C_COMMAND_ID", "Pay")):
        with pytest.raises(MpesaConfigError, match=name):
            create_provider(Settings.from_mapping({**settings, name: value}))


def test_production_refuses_the_sandbox_and_plain_http_callbacks(tmp_path):
    base = {"APP_ENV": "production", "PIN_PEPPER": "p" * 32, "DEMO_MODE": "0", "MPESA_PROVIDER": "daraja",
            "USSD_CALLBACK_TOKEN": "t" * 20, "LIGHTNING_BACKEND": "lnbits", "PUBLIC_URL": "https://w.example.com",
            "DATABASE_URL": "mysql+pymysql://u:p@db/w", "METRICS_TOKEN": "m" * 20}
    with pytest.raises(ConfigError, match="MPESA_BASE_URL"):
        finalise(load_config(str(tmp_path), base))  # the sandbox is the default
    live = {**base, "MPESA_BASE_URL": "https://api.safaricom.co.ke", "PRICE_SOURCES": "coingecko,coinbase"}
    finalise(load_config(str(tmp_path), live))
    with pytest.raises(ConfigError, match="MPESA_CALLBACK_BASE_URL"):
        finalise(load_config(str(tmp_path), {**live, "MPESA_CALLBACK_BASE_URL": "http://w.example.com"}))
    with pytest.raises(ConfigError, match="MPESA_PROVIDER=simulated"):
        finalise(load_config(str(tmp_path), {**live, "MPESA_PROVIDER": "simulated"}))


def test_mpesa_bounds_are_a_metta_rule_per_direction(tmp_path):
    """Raise the KES bound far above M-Pesa's: M-Pesa's own per-transaction bounds still hold."""
    import re

    from helpers.wallet.rules import ATOMS_PATH, Policy

    text = re.sub(r"\(= \(kes-max\) \d+\)", "(= (kes-max) 10000000000)", ATOMS_PATH.read_text())
    wide = Policy(_write(tmp_path / "atoms.metta", text))
    (stk_max,) = wide.query("(mpesa-max-kes topup)")
    (b2c_max,) = wide.query("(mpesa-max-kes withdraw)")
    stk_max, b2c_max = int(str(stk_max)), int(str(b2c_max))
    assert wide.topup(stk_max, FIXED_PRICE).allowed and wide.topup(stk_max + 1, FIXED_PRICE).reason == "above-maximum"
    assert wide.withdraw(b2c_max, 10**12, 0, FIXED_PRICE).allowed
    assert wide.withdraw(b2c_max + 1, 10**12, 0, FIXED_PRICE).reason == "above-maximum"
    assert fake_daraja.STK_BOUNDS[1] >= stk_max and fake_daraja.B2C_BOUNDS[1] >= b2c_max  # what the fake checks


def _write(path, text):
    path.write_text(text)
    return path


# ------------------------------------------------------------------ the client on its own
def test_the_token_is_cached_renewed_when_invalidated_and_when_expired(daraja):
    short = FakeDaraja(token_lifetime_s=1)
    try:
        for fake in (daraja, short):
            provider = create_provider(Settings.from_mapping(fake_daraja.app_settings(fake.url, "http://127.0.0.1:9")))
            kes = kes_for("never", KES_MIN)
            assert provider.push_topup(DEMO[0], kes, "REF1").state is State.PENDING
            assert provider.push_topup(DEMO[0], kes, "REF2").state is State.PENDING
            assert fake.tokens_issued == 1  # cached
            if fake is daraja:
                fake.invalidate_token()  # someone fetched a new one: the old one is refused once
                assert provider.push_topup(DEMO[0], kes, "REF3").checkout_request_id
                assert fake.tokens_issued == 2 and fake.token_rejections == 1
            else:
                time.sleep(1.1)
                assert provider.push_topup(DEMO[0], kes, "REF3").checkout_request_id
                assert fake.tokens_issued == 2 and fake.token_rejections == 0
        assert short.violations == []
    finally:
        short.stop()


def test_the_stk_request_carries_the_documented_fields(daraja):
    provider = create_provider(Settings.from_mapping(fake_daraja.app_settings(daraja.url, "http://cb.example:8080")))
    kes = kes_for("never", KES_MIN)
    pushed = provider.push_topup(DEMO[1], kes, "ABCDEFGH")
    body = daraja.last("processrequest")
    assert body["Password"] == stk_password(fake_daraja.SHORTCODE, fake_daraja.PASSKEY, body["Timestamp"])
    assert (body["Amount"], body["PartyA"], body["PhoneNumber"]) == (kes, msisdn(DEMO[1]), msisdn(DEMO[1]))
    assert body["CallBackURL"] == f"http://cb.example:8080/mpesa/{fake_daraja.CALLBACK_TOKEN}/stk/ABCDEFGH"
    assert body["AccountReference"] == "ABCDEFGH"
    assert pushed.checkout_request_id in daraja.stk
    assert provider.query_topup(pushed.checkout_request_id).state is State.SUCCEEDED  # "never": but paid


def test_no_token_means_nothing_was_sent(daraja):
    settings = fake_daraja.app_settings(daraja.url, "http://127.0.0.1:9")
    provider = create_provider(Settings.from_mapping({**settings, "MPESA_CONSUMER_SECRET": "wrong"}))
    assert provider.payout(DEMO[0], kes_for("success", KES_MIN), "REF").state is State.FAILED
    assert provider.push_topup(DEMO[0], kes_for("success", KES_MIN), "REF").state is State.FAILED
    assert provider.query_topup("ws_CO_1").state is State.PENDING  # no answer is never "failed"
    assert daraja.received == []
    daraja.violations.clear()  # the wrong secret was the point


def test_only_safaricom_numbers(daraja):
    provider = create_provider(Settings.from_mapping(fake_daraja.app_settings(daraja.url, "http://127.0.0.1:9")))
    assert isinstance(provider, DarajaMpesa)
    assert provider.accepts_phone("+254712345678") and provider.accepts_phone("+254110345678")
    assert not provider.accepts_phone("+256712345678") and not provider.accepts_phone("+25471234567")


# ------------------------------------------------------------------ top-up by STK push
def test_a_paid_push_credits_the_metta_rate_once(alice, wallet, daraja):
    kes = kes_for("success", KES_MIN * 3 + 1)
    sats = credit_sats(kes)
    before = balance(wallet, alice.phone)
    reply = top_up(alice, kes)
    ref = request_of(wallet, "stk").reference
    assert reply == "END " + t("en", "topup.push-sent", kes=kes, sats=sats, ref=ref)
    wait_until(lambda: balance(wallet, alice.phone) == before + sats)
    daraja.wait_callbacks()
    assert balance(wallet, alice.phone) == before + sats
    (credit,) = rows(wallet, "topup")
    paid = next(iter(daraja.stk.values()))
    assert credit.mpesa_code == paid["receipt"] and credit.amount_sats == sats
    assert request_of(wallet, "stk").status == "settled"
    after = balance(wallet, alice.phone)
    assert t("en", "sms.topup", kes=kes, code=paid["receipt"], sats=sats, balance=after) in outbox(wallet, alice.phone)
    assert alice.run() == "CON " + t("en", "main", balance=after, requests="")


def test_a_cancelled_push_credits_nothing_and_says_so_by_sms(alice, wallet, daraja, runner):
    kes = kes_for("cancelled", KES_MIN)
    before = snapshot(wallet)
    top_up(alice, kes)
    daraja.wait_callbacks()
    assert snapshot(wallet) == before
    request = request_of(wallet, "stk")
    assert (request.status, request.result_code) == ("failed", "1032")
    assert t("en", "sms.topup-failed", kes=kes, ref=request.reference) in outbox(wallet, alice.phone)
    assert "topup" not in reconcile(runner).split("mpesa:")[1].split("\n")[0]  # nothing left to ask
    assert snapshot(wallet) == before


def test_a_callback_sent_three_times_credits_once(alice, wallet, daraja):
    kes = kes_for("duplicated", KES_MIN)
    before = balance(wallet, alice.phone)
    top_up(alice, kes)
    daraja.wait_callbacks()
    assert [status for _, _, status in daraja.callbacks] == [200, 200, 200]
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    assert len(rows(wallet, "topup")) == 1


def test_a_late_callback_credits_the_quoted_sats_though_the_price_moved(alice, wallet, daraja, monkeypatch):
    """The quote shown on the confirm screen is what M-Pesa's callback credits, however late it
    comes and wherever the price has gone meanwhile."""
    kes = kes_for("delayed", KES_MIN * 2)
    before = balance(wallet, alice.phone)
    top_up(alice, kes)
    moved = dataclasses.replace(wallet.prices.current(), kes_per_btc=FIXED_PRICE * 2)
    monkeypatch.setattr(wallet.prices, "current", lambda: moved)  # the market doubles meanwhile
    daraja.wait_callbacks()
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    assert credit_sats(kes) != wallet.policy.kes_to_sats_credit(kes, moved.kes_per_btc)


def test_a_delayed_callback_credits_when_it_comes(alice, wallet, daraja):
    kes = kes_for("delayed", KES_MIN)
    before = balance(wallet, alice.phone)
    top_up(alice, kes)
    time.sleep(0.3)
    assert balance(wallet, alice.phone) == before and request_of(wallet, "stk").status == "pending"
    daraja.wait_callbacks()
    assert balance(wallet, alice.phone) == before + credit_sats(kes)


def test_a_push_without_callback_is_settled_by_the_status_query(alice, wallet, daraja, runner):
    kes = kes_for("never", KES_MIN)
    before = balance(wallet, alice.phone)
    top_up(alice, kes)
    time.sleep(0.3)
    assert balance(wallet, alice.phone) == before
    assert "'topup-credited': 1" in reconcile(runner)
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    (credit,) = rows(wallet, "topup")
    assert credit.mpesa_code is None and credit.reference == request_of(wallet, "stk").reference
    assert "topup" not in reconcile(runner).split("mpesa:")[1].split("\n")[0]  # settled: not asked again
    # the late callback, with the receipt, changes nothing
    record = next(iter(daraja.stk.values()))
    assert daraja.send(record["url"], FakeDaraja.stk_callback(record)) == 200
    assert balance(wallet, alice.phone) == before + credit_sats(kes) and len(rows(wallet, "topup")) == 1


def test_an_undecided_push_stays_pending_and_is_asked_again_later(alice, wallet, daraja, runner):
    before = snapshot(wallet)
    top_up(alice, kes_for("undecided", KES_MIN))
    assert "'topup-pending': 1" in reconcile(runner)
    assert snapshot(wallet) == before and request_of(wallet, "stk").status == "pending"
    # the poller's pace: not asked again within MPESA_QUERY_EVERY_S
    asked = len([p for p, _ in daraja.received if p.endswith("/query")])
    assert mpesa_flows.reconcile(wallet.db, wallet.mpesa, wallet.rail, 0, 60) == {}
    assert len([p for p, _ in daraja.received if p.endswith("/query")]) == asked
    assert request_of(wallet, "stk").queries == 1


def test_a_refused_push_says_so_and_leaves_nothing_pending(alice, wallet, daraja):
    before = snapshot(wallet)
    assert top_up(alice, kes_for("refused", KES_MIN)) == "END " + t("en", "topup.push-failed")
    assert snapshot(wallet) == before and request_of(wallet, "stk").status == "failed"
    assert outbox(wallet, alice.phone) == []  # the screen said it


def test_a_paid_callback_for_a_refused_push_credits_nothing(alice, wallet, daraja):
    top_up(alice, kes_for("refused", KES_MIN))
    request = request_of(wallet, "stk")
    before = snapshot(wallet)
    forged = FakeDaraja.stk_callback({"merchant": "1-1", "checkout": "ws_CO_1", "kes": request.amount_kes,
                                      "phone": msisdn(alice.phone), "result": "0", "receipt": "ABCDE12345"})
    url = wallet.mpesa.callback_url("stk", request.reference)
    assert daraja.send(url, forged) == 400
    assert snapshot(wallet) == before and request_of(wallet, "stk").status == "failed"


def test_a_push_whose_answer_was_lost_is_still_credited_by_its_callback(alice, wallet, daraja):
    kes = kes_for("slow", KES_MIN)  # the answer comes after the client stopped waiting
    before = balance(wallet, alice.phone)
    reply = top_up(alice, kes)
    request = request_of(wallet, "stk")
    assert reply == "END " + t("en", "topup.push-sent", kes=kes, sats=credit_sats(kes),
                               ref=request.reference)
    assert request.checkout_request_id is None
    daraja.wait_callbacks()
    request = request_of(wallet, "stk")
    assert request.checkout_request_id in daraja.stk and request.status == "settled"
    assert balance(wallet, alice.phone) == before + credit_sats(kes)


def test_the_same_confirmation_pushes_once(alice, wallet, daraja):
    kes = kes_for("never", KES_MIN)
    with wallet.db.read() as s:
        from helpers.wallet.customers import users

        user = users.get(s, alice.phone)
    first = mpesa_flows.start_topup(wallet.db, wallet.mpesa, user, kes, credit_sats(kes), "k" * 64)
    again = mpesa_flows.start_topup(wallet.db, wallet.mpesa, user, kes, credit_sats(kes), "k" * 64)
    assert again.replay and again.reference == first.reference
    assert len(daraja.stk) == 1


def test_a_number_m_pesa_cannot_reach_is_refused(dial, wallet, served, monkeypatch):
    configure(wallet, default_region="UG")  # a deployment that also serves Uganda
    caller = dial("+256712345678")
    caller.run(PIN, PIN)
    with wallet.db.write() as s:
        from helpers.wallet.customers import users
        from helpers.wallet.ledger import movements

        movements.credit_adjustment(s, users.get(s, caller.phone).id, reserved(KES_MIN), "test", "test:ug")
    before = snapshot(wallet)
    assert caller.run("4", str(KES_MIN)) == "END " + t("en", "error.mpesa-phone")
    prompt = t("en", "withdraw.phone-other", kes=KES_MIN)  # no "1 My number": M-Pesa cannot pay it
    assert caller.run("5", str(KES_MIN)) == "CON " + prompt
    assert caller.press("1") == "CON " + t("en", "error.phone") + "\n" + prompt
    assert caller.press(caller.phone) == "CON " + t("en", "error.mpesa-phone") + "\n" + prompt
    assert snapshot(wallet) == before


# ------------------------------------------------------------------ forged and altered callbacks
def _pending_push(alice, wallet, daraja) -> tuple[MpesaRequest, dict]:
    top_up(alice, kes_for("never", KES_MIN))
    return request_of(wallet, "stk"), next(iter(daraja.stk.values()))


def _altered(record: dict, **changes) -> dict:
    payload = FakeDaraja.stk_callback({**record, **changes.pop("record", {})})
    callback = payload["Body"]["stkCallback"]
    for name, value in changes.items():
        if name in callback:
            callback[name] = value
        else:
            for item in callback["CallbackMetadata"]["Item"]:
                if item["Name"] == name:
                    item["Value"] = value
    return payload


@pytest.mark.parametrize("change,status", [
    ({"Amount": 1.0}, 400),
    ({"PhoneNumber": 254700000001}, 400),
    ({"CheckoutRequestID": "ws_CO_000000000000000000"}, 400),
    ({"MerchantRequestID": "1-forged"}, 400),
    ({"MpesaReceiptNumber": "not a receipt"}, 400),
    ({"ResultCode": None}, 400),
])
def test_an_altered_stk_callback_changes_nothing_and_is_logged(alice, wallet, daraja, change, status, caplog):
    request, record = _pending_push(alice, wallet, daraja)
    before, before_sats = snapshot(wallet), balance(wallet, alice.phone)
    with caplog.at_level(logging.WARNING, logger="helpers.wallet.mpesa.callbacks"):
        assert daraja.send(record["url"], _altered(record, **change)) == status
    assert snapshot(wallet) == before and request_of(wallet, "stk").status == "pending"
    assert any("refused" in message for message in caplog.messages)
    assert daraja.send(record["url"], FakeDaraja.stk_callback(record)) == 200  # the real one still works
    assert balance(wallet, alice.phone) == before_sats + request.amount_sats


def test_forged_callbacks_change_nothing(alice, wallet, daraja, served, caplog):
    request, record = _pending_push(alice, wallet, daraja)
    genuine = FakeDaraja.stk_callback(record)
    before = snapshot(wallet)
    base = f"{served}/mpesa"
    with caplog.at_level(logging.WARNING):
        assert daraja.send(f"{base}/wrong-token-0123456789/stk/{request.reference}", genuine) == 403
        assert daraja.send(f"{base}/{fake_daraja.CALLBACK_TOKEN}/stk/NOSUCHREF", genuine) == 404
        wrong_kind = {"Result": {"ResultCode": 0, "OriginatorConversationID": request.reference}}
        assert daraja.send(f"{base}/{fake_daraja.CALLBACK_TOKEN}/b2c/result/{request.reference}", wrong_kind) == 404
        assert daraja.send(f"{base}/{fake_daraja.CALLBACK_TOKEN}/stk/{request.reference}%0Aforged", genuine) == 404
        assert daraja.send(f"{base}/{fake_daraja.CALLBACK_TOKEN}/stk/{'A' * 17}", genuine) == 404
        assert daraja.send(record["url"], ["not", "an", "object"]) == 400
        assert daraja.send(record["url"], {"Body": "nothing"}) == 400
    assert alice.client.post(record["url"].removeprefix(served), data="{not json").status_code == 400
    assert snapshot(wallet) == before
    assert any("bad token" in m for m in caplog.messages) and any("unknown reference" in m for m in caplog.messages)


def test_a_receipt_credits_once_ever(alice, wallet, daraja):
    first, first_record = _pending_push(alice, wallet, daraja)
    assert daraja.send(first_record["url"], FakeDaraja.stk_callback(first_record)) == 200
    top_up(alice, kes_for("never", KES_MIN + 100))
    second = request_of(wallet, "stk")
    second_record = next(r for r in daraja.stk.values() if r["checkout"] == second.checkout_request_id)
    before = snapshot(wallet)
    reused = FakeDaraja.stk_callback({**second_record, "receipt": first_record["receipt"]})
    assert daraja.send(second_record["url"], reused) == 200
    assert snapshot(wallet) == before and request_of(wallet, "stk").status == "pending"


# ------------------------------------------------------------------ withdrawal by B2C
def _b2c(daraja) -> dict:
    return next(iter(daraja.b2c.values()))


def test_a_paid_withdrawal_is_debited_once(alice, wallet, daraja):
    kes = kes_for("success", KES_MIN + 50)
    before = balance(wallet, alice.phone)
    reply = withdraw(alice, kes)
    (row,) = rows(wallet, "withdraw")
    assert reply == "END " + t("en", "withdraw.pending", kes=kes, phone=alice.phone, ref=row.reference)
    body = daraja.last("paymentrequest")
    assert (body["Amount"], body["PartyB"]) == (kes, msisdn(alice.phone))
    assert body["OriginatorConversationID"] == request_of(wallet, "b2c").originator_conversation_id
    daraja.wait_callbacks()
    (row,) = rows(wallet, "withdraw")
    paid = _b2c(daraja)
    assert (row.status, row.mpesa_code) == ("settled", paid["receipt"])
    assert balance(wallet, alice.phone) == before - reserved(kes)
    sms_text = receipt_text("en", "sms.withdraw", wallet.policy.value("daily-send-limit-sats") - row.amount_sats,
                            kes=kes, phone=alice.phone, code=paid["receipt"], sats=row.amount_sats, fee=row.fee_sats,
                            balance=before - reserved(kes))
    assert sms_text in outbox(wallet, alice.phone)


def test_a_failed_withdrawal_releases_the_reserve_once(alice, wallet, daraja):
    kes = kes_for("cancelled", KES_MIN)
    before = balance(wallet, alice.phone)
    withdraw(alice, kes)
    daraja.wait_callbacks()
    (row,) = rows(wallet, "withdraw")
    assert row.status == "failed" and balance(wallet, alice.phone) == before
    assert request_of(wallet, "b2c").result_code == "2001"
    assert t("en", "withdraw.failed", ref=row.reference) in outbox(wallet, alice.phone)
    record = _b2c(daraja)
    assert daraja.send(record_url(wallet, "result"), FakeDaraja.b2c_result(record)) == 200  # again: nothing
    assert balance(wallet, alice.phone) == before


def record_url(wallet, event: str) -> str:
    request = request_of(wallet, "b2c")
    return wallet.mpesa.callback_url("b2c", event, request.reference)


def test_a_b2c_result_sent_three_times_settles_once(alice, wallet, daraja):
    kes = kes_for("duplicated", KES_MIN)
    before = balance(wallet, alice.phone)
    withdraw(alice, kes)
    daraja.wait_callbacks()
    assert [status for _, _, status in daraja.callbacks] == [200, 200, 200]
    (row,) = rows(wallet, "withdraw")
    assert row.status == "settled" and balance(wallet, alice.phone) == before - reserved(kes)
    assert sum(m.startswith("SatsPesa: ") and "KES sent" in m for m in outbox(wallet, alice.phone)) == 1


@pytest.mark.parametrize("outcome", ["timeout", "never"])
def test_a_withdrawal_without_result_stays_pending_until_the_status_query(alice, wallet, daraja, runner, outcome):
    kes = kes_for(outcome, KES_MIN)
    before = balance(wallet, alice.phone)
    withdraw(alice, kes)
    daraja.wait_callbacks()
    (row,) = rows(wallet, "withdraw")
    assert row.status == "pending" and balance(wallet, alice.phone) == before - reserved(kes)
    assert "'payout-queried': 1" in reconcile(runner)
    daraja.wait_callbacks()  # Transaction Status answers by callback
    body = daraja.last("transactionstatus/v1/query")
    assert body["OriginalConversationID"] == request_of(wallet, "b2c").originator_conversation_id
    (row,) = rows(wallet, "withdraw")
    assert (row.status, row.mpesa_code) == ("settled", _b2c(daraja)["receipt"])
    assert balance(wallet, alice.phone) == before - reserved(kes)


def test_an_undecided_withdrawal_is_never_released(alice, wallet, daraja, runner):
    kes = kes_for("undecided", KES_MIN)
    before = balance(wallet, alice.phone)
    withdraw(alice, kes)
    for _ in range(2):
        reconcile(runner)
        daraja.wait_callbacks()
    (row,) = rows(wallet, "withdraw")
    assert row.status == "pending" and balance(wallet, alice.phone) == before - reserved(kes)
    assert request_of(wallet, "b2c").queries == 2


def test_a_status_result_that_does_not_know_the_payment_releases_nothing(alice, wallet, daraja):
    kes = kes_for("never", KES_MIN)
    withdraw(alice, kes)
    before = snapshot(wallet)
    request = request_of(wallet, "b2c")
    unknown = FakeDaraja.status_result(None, {"OriginatorConversationID": "1-1-1", "ConversationID": "AG_1"})
    url = wallet.mpesa.callback_url("status", "result", request.reference)
    assert daraja.send(url, unknown) == 200
    declined_elsewhere = FakeDaraja.status_result({**_b2c(daraja), "originator": "SatsPesa-OTHER", "conversation": "x",
                                                   "status": "Declined"}, {"ConversationID": "AG_2"})
    assert daraja.send(url, declined_elsewhere) == 400  # about another payment
    assert snapshot(wallet) == before and request_of(wallet, "b2c").status == "pending"


def test_a_refused_payment_request_refunds_at_once(alice, wallet, daraja):
    kes = kes_for("refused", KES_MIN)
    before = balance(wallet, alice.phone)
    reply = withdraw(alice, kes)
    (row,) = rows(wallet, "withdraw")
    assert reply == "END " + t("en", "withdraw.failed", ref=row.reference)
    assert row.status == "failed" and balance(wallet, alice.phone) == before


def test_a_payment_request_without_answer_stays_pending_and_settles_by_callback(alice, wallet, daraja):
    kes = kes_for("slow", KES_MIN)
    before = balance(wallet, alice.phone)
    reply = withdraw(alice, kes)
    (row,) = rows(wallet, "withdraw")
    assert reply == "END " + t("en", "withdraw.pending", kes=kes, phone=alice.phone, ref=row.reference)
    assert row.status == "pending" and balance(wallet, alice.phone) == before - reserved(kes)
    daraja.wait_callbacks()
    (row,) = rows(wallet, "withdraw")
    assert row.status == "settled" and request_of(wallet, "b2c").conversation_id == _b2c(daraja)["conversation"]


@pytest.mark.parametrize("change", [
    {"TransactionAmount": 1},
    {"ReceiverPartyPublicName": "254700000001 - SOMEONE ELSE"},
    {"OriginatorConversationID": "SatsPesa-FORGED"},
    {"ConversationID": "AG_forged"},
    {"TransactionReceipt": "bad"},
])
def test_an_altered_b2c_result_changes_nothing(alice, wallet, daraja, change, caplog):
    kes = kes_for("never", KES_MIN)
    withdraw(alice, kes)
    record = _b2c(daraja)
    payload = FakeDaraja.b2c_result(record)
    result = payload["Result"]
    for name, value in change.items():
        if name in result:
            result[name] = value
        for item in result["ResultParameters"]["ResultParameter"]:
            if item["Key"] == name:
                item["Value"] = value
    if "TransactionReceipt" in change:
        result["TransactionID"] = "bad"
    before = snapshot(wallet)
    with caplog.at_level(logging.WARNING, logger="helpers.wallet.mpesa.callbacks"):
        assert daraja.send(record_url(wallet, "result"), payload) == 400
    assert snapshot(wallet) == before and rows(wallet, "withdraw")[0].status == "pending"
    assert any("refused" in message for message in caplog.messages)
    assert daraja.send(record_url(wallet, "result"), FakeDaraja.b2c_result(record)) == 200
    assert rows(wallet, "withdraw")[0].status == "settled"


def test_a_failure_after_success_changes_nothing(alice, wallet, daraja):
    kes = kes_for("success", KES_MIN)
    before = balance(wallet, alice.phone)
    withdraw(alice, kes)
    daraja.wait_callbacks()
    failed = FakeDaraja.b2c_result({**_b2c(daraja), "status": "Declined"})
    assert daraja.send(record_url(wallet, "result"), failed) == 200
    assert rows(wallet, "withdraw")[0].status == "settled" and balance(wallet, alice.phone) == before - reserved(kes)


def test_status_shows_the_provider(client, served):
    assert client.get("/status").get_json()["mpesa"] == "daraja"


# ------------------------------------------------------------------ races
def _all_at_once(*jobs) -> None:
    threads = [threading.Thread(target=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_racing_callbacks_and_status_queries_credit_once(alice, wallet, daraja):
    request, record = _pending_push(alice, wallet, daraja)
    before = balance(wallet, alice.phone)
    payload = FakeDaraja.stk_callback(record)
    _all_at_once(*[lambda: daraja.send(record["url"], payload)] * 6,
                 lambda: mpesa_flows.reconcile(wallet.db, wallet.mpesa, wallet.rail, 0, 0))
    assert balance(wallet, alice.phone) == before + request.amount_sats
    assert len(rows(wallet, "topup")) == 1


@pytest.mark.parametrize("failed", [False, True])
def test_racing_b2c_results_move_the_reserve_once(alice, wallet, daraja, failed):
    kes = kes_for("never", KES_MIN)
    before = balance(wallet, alice.phone)
    withdraw(alice, kes)
    record = {**_b2c(daraja), "status": "Declined" if failed else "Completed"}
    url = record_url(wallet, "result")
    _all_at_once(*[lambda: daraja.send(url, FakeDaraja.b2c_result(record))] * 6)
    (row,) = rows(wallet, "withdraw")
    assert row.status == ("failed" if failed else "settled")
    assert balance(wallet, alice.phone) == (before if failed else before - reserved(kes))


# ------------------------------------------------------------------ the float, as M-Pesa reports it
def _documented_float() -> Decimal:
    """The sum of every account's available funds in the fake's answer (the docs' example)."""
    return sum((Decimal(part.split("|")[2]) for part in fake_daraja.FLOAT_ACCOUNTS.split("&")), Decimal(0))


def test_solvency_asks_m_pesa_for_the_float_and_shows_it_beside_the_books(wallet, daraja, served, runner):
    result = runner.invoke(args=["ledger", "solvency", "--query-float", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert Decimal(report["mpesa_float_queried_kes"]) == _documented_float()
    assert report["mpesa_float_queried_at"]
    body = daraja.last("/accountbalance/v1/query")
    assert body["CommandID"] == "AccountBalance" and body["PartyA"] == fake_daraja.B2C_SHORTCODE
    table = runner.invoke(args=["ledger", "solvency"]).output  # the last reading, without asking again
    assert f"{_documented_float():,}" in table and "as M-Pesa reports" in table
    assert len([path for path, _ in daraja.received if path.endswith("/accountbalance/v1/query")]) == 1


def test_a_float_answer_is_recorded_once_and_a_failure_changes_no_reading(wallet, daraja, served, runner):
    assert runner.invoke(args=["ledger", "solvency", "--query-float"]).exit_code == 0
    with wallet.db.read() as s:
        first = mpesa_float.latest(s)
    daraja.wait_callbacks()
    url, payload, _status = next(c for c in daraja.callbacks if "/balance/result/" in c[0])
    altered = json.loads(json.dumps(payload))
    altered["Result"]["ResultParameters"]["ResultParameter"][0]["Value"] = "Working Account|KES|1.00|1.00|0.00|0.00"
    assert daraja.send(url, altered) == 200  # the same reference again: a duplicate, ignored
    daraja.balance_outcome = "failure"
    result = runner.invoke(args=["ledger", "solvency", "--query-float"])
    assert result.exit_code == 0, result.output  # the answer came: a failure, recorded as such
    with wallet.db.read() as s:
        assert mpesa_float.latest(s) == first
        assert s.scalar(select(func.count()).select_from(FloatReading).where(FloatReading.status == "failed")) == 1
    daraja.balance_outcome = "silent"
    result = runner.invoke(args=["ledger", "solvency", "--query-float", "--wait", "0.5"])
    assert result.exit_code == 1 and "did not answer" in result.output


def test_an_unreadable_float_answer_is_refused(wallet, daraja, served, runner):
    daraja.float_accounts = "Working Account|USD|12.00|0|0|0"
    result = runner.invoke(args=["ledger", "solvency", "--query-float", "--wait", "3"])
    assert result.exit_code == 1  # refused, so the query is still waiting for an answer it can read
    with wallet.db.read() as s:
        assert mpesa_float.latest(s) is None



# ------------------------------------------------------------------ paying tills and paybills (B2B)
def pay_till(alice, kes: int, till: str = "52187") -> str:
    return alice.run("8", "1", till, str(kes), PIN)


def test_a_till_payment_is_a_documented_b2b_request_settled_by_its_callback(alice, wallet, daraja):
    kes = kes_for("success", KES_MIN * 2)
    before = balance(wallet, alice.phone)
    reply = pay_till(alice, kes)
    request = request_of(wallet, "b2b")
    assert reply == "END " + t("en", "mpesapay.pending", kes=kes, payee="Till 52187",
                               ref=rows(wallet, "withdraw")[0].reference)
    body = daraja.last("/b2b/v1/paymentrequest")
    assert (body["CommandID"], body["PartyB"], body["AccountReference"]) == ("BusinessBuyGoods", "52187", "52187")
    assert request.originator_conversation_id  # Daraja's id, kept to match the result and query with
    wait_until(lambda: request_of(wallet, "b2b").status == "settled")
    (row,) = rows(wallet, "withdraw")
    assert row.status == "settled" and balance(wallet, alice.phone) == before - row.amount_sats - row.fee_sats
    # the receipt names the business as M-Pesa's result did
    assert any(f"Till 52187 ({fake_daraja.BUSINESS_NAME})" in sms for sms in outbox(wallet, alice.phone))


def test_a_paybill_payment_carries_its_account_and_a_declined_one_refunds_once(alice, wallet, daraja):
    kes = kes_for("cancelled", KES_MIN * 2)
    before = balance(wallet, alice.phone)
    alice.run("8", "2", "888880", "ACC77", str(kes), PIN)
    assert daraja.last("/b2b/v1/paymentrequest")["AccountReference"] == "ACC77"
    wait_until(lambda: request_of(wallet, "b2b").status == "failed")
    daraja.wait_callbacks()
    assert balance(wallet, alice.phone) == before and rows(wallet, "withdraw")[0].status == "failed"


def test_a_b2b_result_sent_three_times_settles_once_and_an_altered_one_is_refused(alice, wallet, daraja):
    kes = kes_for("duplicated", KES_MIN * 2)
    before = balance(wallet, alice.phone)
    pay_till(alice, kes)
    daraja.wait_callbacks()
    (row,) = rows(wallet, "withdraw")
    assert row.status == "settled" and balance(wallet, alice.phone) == before - row.amount_sats - row.fee_sats
    request = request_of(wallet, "b2b")
    record = daraja.b2c[request.originator_conversation_id]
    altered = FakeDaraja.b2b_result({**record, "kes": record["kes"] + 1})
    url = wallet.mpesa.callback_url("b2b", "result", request.reference)
    assert daraja.send(url, altered) in (200, 400)  # already settled: a duplicate, nothing moves
    assert balance(wallet, alice.phone) == before - row.amount_sats - row.fee_sats


def test_a_b2b_payment_without_callback_is_settled_by_the_status_query(alice, wallet, daraja, runner):
    kes = kes_for("never", KES_MIN * 2)
    pay_till(alice, kes)
    assert request_of(wallet, "b2b").status == "pending"
    reconcile(runner)  # Transaction Status with Daraja's OriginatorConversationID; its answer by callback
    daraja.wait_callbacks()
    wait_until(lambda: request_of(wallet, "b2b").status == "settled")
    body = daraja.last("/transactionstatus/v1/query")
    assert body["OriginalConversationID"] == request_of(wallet, "b2b").originator_conversation_id


def test_an_operator_ends_a_business_payment_daraja_never_identified(alice, wallet, daraja, runner, monkeypatch):
    """Daraja's answer to the B2B request is lost: no id, so no status query can ask about it.
    The operator checks M-Pesa's statement and settles or refunds it, audited."""
    from helpers.mpesa.provider import PayoutResult

    monkeypatch.setattr(wallet.mpesa, "pay_business",
                        lambda *args: PayoutResult(State.PENDING, error="HTTP 0"))  # no answer
    before = balance(wallet, alice.phone)
    pay_till(alice, KES_MIN * 2)
    request = request_of(wallet, "b2b")
    assert request.originator_conversation_id is None and "payment-no-id" in reconcile(runner)
    refused = runner.invoke(args=["resolve-mpesa", request.reference, "--outcome", "paid", "--reason", "t9"])
    assert refused.exit_code == 1 and "--receipt" in refused.output
    done = runner.invoke(args=["resolve-mpesa", request.reference, "--outcome", "failed",
                               "--reason", "ticket 9: not on the M-Pesa statement"])
    assert done.exit_code == 0, done.output
    assert balance(wallet, alice.phone) == before and request_of(wallet, "b2b").status == "failed"
    again = runner.invoke(args=["resolve-mpesa", request.reference, "--outcome", "failed", "--reason", "twice"])
    assert again.exit_code == 1
