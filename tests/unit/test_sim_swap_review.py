"""Issue 33, the review's findings: stale answers asked again, dialled shortcuts checked, holds
that never lapse, Forgot PIN refused without a SIM check, a cumulative no-answer cap with fees,
resets completed only at the owner's dial, cautious Insights parsing, no PIN oracle on the reset
and PIN-change screens, cancel()'s result told, deep JSON answered 400."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from helpers.infra.i18n import t
from helpers.simswap.africastalking import read_results
from helpers.wallet import operators, pin_reset, sim_swap
from helpers.web import worker
from models import Job, PhoneGuard, User, utcnow
from tests.conftest import PIN, outbox, snapshot
from tests.fakes.fake_at_insights import FakeInsights
from tests.unit.test_forgot_pin import ask_reset, later, reset_due

BOB_LOCAL = "0787654321"
HELD = "END " + t("en", "simswap.hold")
CALLBACK_TOKEN = "insights-callback-token-0123"


@pytest.fixture
def insights():
    fake = FakeInsights(slow_s=2.0)
    yield fake
    fake.stop()


@pytest.fixture
def app_overrides(request):
    if "insights" in request.fixturenames:
        return request.getfixturevalue("insights").app_settings(CALLBACK_TOKEN)
    return {}


def callback(client, body):
    return client.post(f"/insights/{CALLBACK_TOKEN}/sim-swap", json=body)


def open_jobs(wallet) -> list[str]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Job.key).where(Job.kind == sim_swap.JOB_KIND, Job.done_at.is_(None))))


def run_jobs(wallet) -> None:
    for job in worker.claim(wallet, "test-worker"):
        worker.run_one(wallet, job, "test-worker")


def answer(client, wallet, insights, phone: str) -> None:
    """Ask now (the worker's job) and have AT answer "not swapped"."""
    with wallet.db.write() as s:
        s.execute(update(PhoneGuard).where(PhoneGuard.phone == phone).values(next_ask_at=None))
    assert sim_swap.want_answer(wallet.db, wallet.policy, phone) is True
    run_jobs(wallet)
    assert callback(client, insights.result(phone)).get_json() == {"answers": 1, "recorded": 1}


def age_answer(wallet, phone: str, minutes: int) -> None:
    """The answer (and the last question) came `minutes` earlier than they did."""
    with wallet.db.write() as s:
        row = s.get(PhoneGuard, phone)
        row.answered_at -= dt.timedelta(minutes=minutes)
        row.next_ask_at -= dt.timedelta(minutes=minutes)


# ------------------------------------------------------------------ 1. a stale answer is asked again
def test_an_answer_older_than_ask_again_is_asked_again_and_large_amounts_wait(insights, client, wallet, alice):
    answer(client, wallet, insights, alice.phone)
    most = wallet.policy.value("sim-swap-unknown-max-sats")
    large = most + wallet.policy.value("payment-min-sats")
    age_answer(wallet, alice.phone, wallet.policy.value("sim-swap-ask-again-minutes"))
    asked = len(insights.checks)
    reply = alice.run("1", BOB_LOCAL, str(large), "1", PIN)
    assert open_jobs(wallet) == [alice.phone]  # the session's first request asked again
    assert reply == "END " + t("en", "simswap.unknown", max=most)  # the old answer is not fresh
    run_jobs(wallet)
    assert len(insights.checks) == asked + 1
    assert callback(client, insights.result(alice.phone)).get_json()["recorded"] == 1
    assert alice.run("1", BOB_LOCAL, str(large), "1", PIN).startswith("END Sent")


# ------------------------------------------------------------------ 2. a dialled shortcut is checked
def test_a_session_started_with_a_dialled_shortcut_asks_about_the_sim(insights, client, wallet, alice):
    run_jobs(wallet)
    assert open_jobs(wallet) == []
    with wallet.db.write() as s:
        s.execute(update(PhoneGuard).where(PhoneGuard.phone == alice.phone).values(next_ask_at=None))
    alice.session_id = "ATUid_dialled_shortcut_1"
    alice.inputs = ["1"]
    assert alice.post("1").startswith("CON ")  # *384*123*1#: the first request carries text
    assert open_jobs(wallet) == [alice.phone]


def test_the_pin_step_asks_when_the_answer_is_stale(insights, client, wallet, alice):
    alice.run("1", BOB_LOCAL, str(wallet.policy.value("payment-min-sats")), "1")
    run_jobs(wallet)
    with wallet.db.write() as s:
        s.execute(update(PhoneGuard).where(PhoneGuard.phone == alice.phone).values(next_ask_at=None))
    alice.press(PIN)
    assert open_jobs(wallet) == [alice.phone]


# ------------------------------------------------------------------ 3. holds and self-service resets
def test_a_hold_stays_until_an_operator_clears_it(client, wallet, alice):
    client.post("/test/sim-swap", data={"phoneNumber": alice.phone})
    days = wallet.policy.value("sim-swap-hold-days")
    with wallet.db.write() as s:
        row = s.get(PhoneGuard, alice.phone)
        row.last_swap_at -= dt.timedelta(days=days + 1)
        row.held_swap_at -= dt.timedelta(days=days + 1)
    assert alice.run("1") == HELD
    with pytest.raises(pin_reset.ResetRefused):  # and Forgot PIN cannot hand the account over
        pin_reset.request(wallet, _view(wallet, alice.phone))
    assert [h.phone for h in sim_swap.held(wallet.db, wallet.policy)] == [alice.phone]
    with wallet.db.write() as s:
        sim_swap.clear_in(s, alice.phone)
    assert alice.run("1").startswith("CON ")


def test_forgot_pin_is_refused_after_an_uncleared_swap_since_the_pin_was_set(client, wallet, alice):
    """A swap too old to hold money out, but after the PIN was set: no self-service reset."""
    days = wallet.policy.value("sim-swap-hold-days")
    with wallet.db.write() as s:
        s.execute(update(User).where(User.phone == alice.phone).values(
            pin_set_at=utcnow() - dt.timedelta(days=days * 4)))
    sim_swap.record(wallet.db, wallet.policy, sim_swap.Reported(
        alice.phone, True, utcnow() - dt.timedelta(days=days * 2)), request_id=None)
    assert alice.run("1").startswith("CON ")  # money out goes on: the swap did not start a hold
    assert alice.run("6", "3", "9", "1") == HELD
    assert reset_due(wallet, alice.phone) is None


def test_with_the_provider_off_forgot_pin_says_to_call_customer_care(wallet, alice):
    wallet.sim_swap = None
    assert alice.run("6", "3", "9") == "END " + t("en", "forgot.off")
    alice.run("1", BOB_LOCAL, str(wallet.policy.value("payment-min-sats")), "1")
    assert alice.press("9") == "END " + t("en", "forgot.off")
    with pytest.raises(pin_reset.ResetRefused):
        pin_reset.request(wallet, _view(wallet, alice.phone))
    assert reset_due(wallet, alice.phone) is None


# ------------------------------------------------------------------ 4. the no-answer cap
def test_the_no_answer_cap_counts_all_money_out_since_the_last_answer_fees_included(insights, client, wallet,
                                                                                      alice):
    most = wallet.policy.value("sim-swap-unknown-max-sats")
    low = wallet.policy.value("payment-min-sats")
    first = most - low
    assert alice.run("1", BOB_LOCAL, str(first), "1", PIN).startswith("END Sent")
    # this one alone is under the cap; with the first, over it
    assert alice.run("1", BOB_LOCAL, str(low * 2), "1", PIN) == "END " + t("en", "simswap.unknown", max=most)
    assert alice.run("6", "3") == "END " + t("en", "simswap.retry")  # no PIN change without an answer


def test_the_amount_out_counts_the_fee(insights, client, wallet, alice):
    most = wallet.policy.value("sim-swap-unknown-max-sats")
    ctx = type("C", (), {"svc": wallet})()
    from helpers.ussd import guard
    amount = most - 1
    assert guard.amount_out(ctx, {"action": "lnsend", "amount": amount}) == \
        amount + wallet.policy.fee_sats("lightning", amount)


# ------------------------------------------------------------------ 5. resets complete at the owner's dial
def test_the_worker_only_reminds_and_a_due_reset_needs_a_fresh_answer_at_the_dial(monkeypatch, insights,
                                                                                 client, wallet, alice):
    answer(client, wallet, insights, alice.phone)
    assert ask_reset(alice).startswith("END PIN reset requested")
    hours = wallet.policy.value("pin-reset-delay-h")
    later(monkeypatch, hours)
    worker._every(wallet, "sweep")
    worker._every(wallet, "sweep")
    code = wallet.service_code
    assert outbox(wallet, alice.phone).count(t("en", "sms.pin-reset-ready", code=code)) == 1
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_hash).where(User.phone == alice.phone)) is not None  # the PIN stays
    digits = wallet.policy.value("pin-length")
    assert alice.run() == "CON " + t("en", "reset.new", digits=digits)
    # the only answer about the SIM is older than the due time: the new PIN waits
    assert alice.press("5739", "5739") == "END " + t("en", "simswap.retry")
    assert reset_due(wallet, alice.phone) is not None
    with wallet.db.read() as s:
        before = s.scalar(select(User.pin_hash).where(User.phone == alice.phone))
    assert before is not None


def test_a_due_reset_sets_the_new_pin_only_at_the_dial(monkeypatch, wallet, alice):
    ask_reset(alice)
    later(monkeypatch, wallet.policy.value("pin-reset-delay-h"))
    digits = wallet.policy.value("pin-length")
    assert alice.run() == "CON " + t("en", "reset.new", digits=digits)
    assert alice.press("5739", "5739").startswith("CON " + t("en", "pin.set"))
    assert reset_due(wallet, alice.phone) is None
    assert alice.run("1", BOB_LOCAL, str(wallet.policy.value("payment-min-sats")), "1", "5739").startswith(
        "END Sent")


# ------------------------------------------------------------------ 6. Insights parsing
def test_insights_parsing_is_cautious():
    base = {"phoneNumber": "+254712345678", "requestId": "ATSwpid_1", "transactionId": "x"}
    swapped_1900 = read_results({**base, "status": "Swapped", "lastSimSwapDate": "01-01-1900"})[0]
    assert swapped_1900.swapped and swapped_1900.last_swap_at is not None  # a swap now, not "none known"
    other_form = read_results({**base, "status": "Swapped", "lastSimSwapDate": "2020-12-05"})[0]
    assert other_form.last_swap_at is not None and other_form.last_swap_at.year > 2020  # not guessed: now
    assert read_results({**base, "status": "NotSwapped", "lastSimSwapDate": "2020-12-05"}) == []  # no answer
    bare = read_results({**base, "phoneNumber": "254712345678", "status": "NotSwapped",
                         "lastSimSwapDate": "01-01-1900"})
    assert [r.phone for r in bare] == ["+254712345678"]
    ambiguous = read_results({**base, "status": "Swapped", "lastSimSwapDate": "03-04-2026"})[0]
    assert ambiguous.last_swap_at == dt.datetime(2026, 4, 3)  # the later reading


def test_a_callback_faster_than_its_question_id_is_not_lost(insights, client, wallet, alice):
    real_ask = wallet.sim_swap.ask
    bodies = []

    def ask_and_answer_at_once(phone):
        asked = real_ask(phone)
        body = insights.result(phone, swapped_at=utcnow())
        bodies.append(callback(client, body).get_json())  # before ask() keeps the request id
        return asked

    wallet.sim_swap.ask = ask_and_answer_at_once
    sim_swap.ask(wallet, alice.phone)
    assert bodies and bodies[0]["answers"] == 1
    assert alice.run("1") == HELD


# ------------------------------------------------------------------ 7. no PIN oracle after a swap
def test_the_reset_screen_and_the_pin_change_read_the_swap_before_the_pin(client, wallet, alice):
    ask_reset(alice)
    alice.run("1")
    assert alice.reply.startswith("CON " + t("en", "reset.pending", hours=1).split("(")[0])
    client.post("/test/sim-swap", data={"phoneNumber": alice.phone})
    assert alice.press(PIN) == HELD
    assert reset_due(wallet, alice.phone) is not None  # the PIN was not looked at: nothing cancelled
    with wallet.db.write() as s:
        sim_swap.clear_in(s, alice.phone)
    pin_reset.cancel(wallet.db, alice.phone, "en")
    alice.run("6", "3")
    client.post("/test/sim-swap", data={"phoneNumber": alice.phone})
    with wallet.db.write() as s:
        row = s.get(PhoneGuard, alice.phone)
        row.last_swap_at = row.held_swap_at = row.last_swap_at + dt.timedelta(seconds=1)
    assert alice.press(PIN) == HELD


# ------------------------------------------------------------------ 8. cancel's result, the operator's reset
def test_a_reset_finished_elsewhere_is_said_so_at_the_reset_screen(wallet, alice):
    ask_reset(alice)
    alice.run("1")  # the reset screen
    pin_reset.cancel(wallet.db, alice.phone, "en")  # another session cancelled it meanwhile
    before = snapshot(wallet)
    assert alice.press(PIN) == "END " + t("en", "reset.gone")
    assert snapshot(wallet) == before


def test_the_operators_pin_reset_ends_a_self_service_reset(wallet, alice):
    ask_reset(alice)
    operators.reset_pin(wallet.db, "wanjiru", alice.phone, "ticket 9: ID seen, PIN forgotten")
    assert reset_due(wallet, alice.phone) is None


# ------------------------------------------------------------------ 10. deep JSON
def test_deeply_nested_json_is_a_bad_request(insights, client):
    deep = "[" * 3000 + "]" * 3000  # within the size limit, past the parser's recursion limit
    response = client.post(f"/insights/{CALLBACK_TOKEN}/sim-swap", data=deep, content_type="application/json")
    assert response.status_code == 400


def _view(wallet, phone):
    from helpers.wallet.customers import users

    with wallet.db.read() as s:
        return users.UserView.of(users.get(s, phone))
