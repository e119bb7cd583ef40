"""Issue 33, SIM swaps: a number marked swapped (demo mode, simulated provider) cannot send,
withdraw, pay, buy airtime, ask for payment or change its PIN, is told why, and can still receive;
an operator clears it from the console (audited); the PIN step reads the swap again (the race);
with no answer from the provider the policy lets small amounts through and holds large ones; Africa's
Talking Insights' answers come by callback (its fake checks every request against the spec)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select

from helpers.infra.i18n import t
from helpers.infra.settings import SIM_SWAP_PROVIDERS
from helpers.simswap import provider as simswap_provider
from helpers.simswap.africastalking import read_results, swap_date
from helpers.wallet import operators, pin_reset, sim_swap
from helpers.web import worker
from models import AuditEntry, Job, PhoneGuard
from tests.conftest import DEMO, PIN, balance, configure, outbox, snapshot
from tests.fakes.fake_at_insights import FakeInsights
from tests.unit.test_console import PASSWORD, csrf_of, sign_in

BOB_LOCAL = "0787654321"
HOLD_SMS = t("en", "sms.sim-swap-hold")
HELD = "END " + t("en", "simswap.hold")


def swap(client, phone: str):
    response = client.post("/test/sim-swap", data={"phoneNumber": phone})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def min_sats(wallet) -> int:
    return wallet.policy.value("payment-min-sats")


# ------------------------------------------------------------------ the hold, simulated provider
def test_a_swapped_number_cannot_move_money_out_or_change_its_pin_and_is_told_why(client, wallet, alice, bob):
    swap(client, alice.phone)
    before = snapshot(wallet)
    assert alice.run("1") == HELD  # send (a phone or a Lightning address)
    assert alice.run("5") == HELD  # withdraw to M-Pesa
    assert alice.run("8") == HELD  # till, paybill, airtime
    assert alice.run("3") == HELD  # ask someone for payment in this number's name
    assert alice.run("7") == HELD  # pay a request
    assert alice.run("6", "3") == HELD  # change the PIN
    assert snapshot(wallet) == before
    assert outbox(wallet, alice.phone).count(HOLD_SMS) == 1  # one SMS, however often refused
    # a second report of the same swap sends nothing more
    sim_swap.record(wallet.db, wallet.policy, sim_swap.Reported(alice.phone, True, sim_swap.read(
        wallet.db, alice.phone).last_swap_at), request_id=None)
    assert outbox(wallet, alice.phone).count(HOLD_SMS) == 1


def test_a_swapped_number_can_still_receive(client, wallet, alice, bob):
    swap(client, alice.phone)
    amount = min_sats(wallet) * 3
    before = balance(wallet, alice.phone)
    assert bob.run("1", alice.phone, str(amount), "1", PIN).startswith("END Sent")
    assert balance(wallet, alice.phone) == before + amount
    assert alice.run("2", str(amount)).startswith("END Invoice for")
    assert alice.run("4").startswith("CON ")  # top up goes on


def test_the_pin_step_reads_a_swap_reported_after_the_menu(client, wallet, alice, bob):
    """The race: the swap comes while the payment is at its PIN step. The PIN is not looked at."""
    amount = min_sats(wallet) * 2
    alice.run("1", BOB_LOCAL, str(amount), "1")
    assert "Forgot PIN" in alice.reply
    swap(client, alice.phone)
    before = snapshot(wallet)
    assert alice.press(PIN) == HELD
    assert snapshot(wallet) == before
    assert alice.run("5") == HELD  # (held at the menu from now on)


def test_the_pin_step_of_a_withdrawal_and_of_a_pin_change_read_the_swap(client, wallet, alice):
    alice.run("5", "500", "1")
    assert alice.reply.startswith("CON ") and "PIN" in alice.reply
    swap(client, alice.phone)
    before = snapshot(wallet)
    assert alice.press(PIN) == HELD
    assert snapshot(wallet) == before
    with wallet.db.write() as s:  # cleared by an operator; that swap a few seconds back (MariaDB keeps whole seconds)
        sim_swap.clear_in(s, alice.phone)
        row = s.get(PhoneGuard, alice.phone)
        for name in ("last_swap_at", "held_swap_at", "cleared_swap_at", "answered_at"):
            if getattr(row, name) is not None:
                setattr(row, name, getattr(row, name) - dt.timedelta(seconds=2))
    alice.run("6", "3", PIN, "5739")
    swap(client, alice.phone)  # a new swap while the PIN is changed
    assert alice.press("5739") == HELD
    assert alice.run("1") == HELD
    assert t("en", "sms.pin-changed") not in outbox(wallet, alice.phone)  # the PIN was not changed


def test_an_operator_clears_the_hold_from_the_console_audited(client, wallet, alice, bob):
    operators.add(wallet.db, "wanjiru", PASSWORD)
    swap(client, alice.phone)
    assert sign_in(client).status_code == 302
    page = client.get("/admin/sim-swaps").get_data(as_text=True)
    assert alice.phone in page
    assert client.post(f"/admin/sim-swaps/{alice.phone}/clear", data={"reason": "ID seen"}).status_code == 400  # CSRF
    token = csrf_of(page)
    refused = client.post(f"/admin/sim-swaps/{alice.phone}/clear", data={"csrf": token, "reason": "x"})
    assert refused.status_code == 302 and sim_swap.held(wallet.db, wallet.policy)  # a reason is required
    done = client.post(f"/admin/sim-swaps/{alice.phone}/clear",
                       data={"csrf": token, "reason": "ticket 7: national ID seen at the agent"})
    assert done.status_code == 302
    assert sim_swap.held(wallet.db, wallet.policy) == []
    with wallet.db.read() as s:
        line = s.scalars(select(AuditEntry).where(AuditEntry.action == "clear-sim-swap")).one()
    assert (line.operator, line.subject) == ("wanjiru", alice.phone) and "ID seen" in line.reason
    assert t("en", "sms.sim-swap-cleared") in outbox(wallet, alice.phone)
    amount = min_sats(wallet)
    assert alice.run("1", BOB_LOCAL, str(amount), "1", PIN).startswith("END Sent")
    again = client.post(f"/admin/sim-swaps/{alice.phone}/clear", data={"csrf": token, "reason": "ticket 7 again"})
    assert again.status_code == 302  # nothing held: a message, not an error page


def test_a_swap_already_older_than_the_hold_when_told_holds_nothing(client, wallet, alice):
    days = wallet.policy.value("sim-swap-hold-days")
    sim_swap.record(wallet.db, wallet.policy, sim_swap.Reported(
        alice.phone, True, sim_swap.utcnow() - dt.timedelta(days=days)), request_id=None)
    assert alice.run("1").startswith("CON ")
    assert sim_swap.held(wallet.db, wallet.policy) == []


def test_the_demo_route_refuses_bad_input_and_other_providers(client, wallet):
    assert client.post("/test/sim-swap", data={"phoneNumber": "not a phone"}).status_code == 400
    assert client.post("/test/sim-swap", data={}).status_code == 400
    configure(wallet, demo_mode=True)
    wallet.sim_swap = None
    assert client.post("/test/sim-swap", data={"phoneNumber": DEMO[0]}).status_code == 404


def test_off_checks_nothing(client, wallet, alice):
    swap(client, alice.phone)
    wallet.sim_swap = None
    assert alice.run("1").startswith("CON ")


# ------------------------------------------------------------------ Africa's Talking Insights
@pytest.fixture
def insights():
    fake = FakeInsights(slow_s=2.0)
    yield fake
    fake.stop()


CALLBACK_TOKEN = "insights-callback-token-0123"


@pytest.fixture
def app_overrides(request):
    if "insights" in request.fixturenames:
        fake = request.getfixturevalue("insights")
        return fake.app_settings(CALLBACK_TOKEN)
    return {}


def callback(client, body, token=CALLBACK_TOKEN):
    return client.post(f"/insights/{token}/sim-swap", json=body)


def jobs(wallet) -> list[str]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Job.key).where(Job.kind == sim_swap.JOB_KIND, Job.done_at.is_(None))))


def test_no_answer_small_amounts_go_on_large_ones_wait(insights, client, wallet, alice, bob):
    """No answer yet (asked, nothing came back): the policy's number decides."""
    assert wallet.sim_swap is not None and wallet.sim_swap.asks_ahead
    most = wallet.policy.value("sim-swap-unknown-max-sats")
    small, large = most, most + min_sats(wallet)
    assert small >= min_sats(wallet) and large <= wallet.policy.value("payment-max-sats")
    assert alice.run("1", BOB_LOCAL, str(small), "1", PIN).startswith("END Sent")
    assert alice.run("1", BOB_LOCAL, str(large), "1", PIN) == "END " + t("en", "simswap.unknown", max=most)
    assert alice.run("6", "3") == "END " + t("en", "simswap.retry")  # a PIN change waits
    with pytest.raises(pin_reset.ResetRefused):  # and so does a Forgot PIN
        pin_reset.request(wallet, _view(wallet, alice.phone))
    assert insights.violations == []


def test_the_first_step_asks_ahead_once_and_the_callback_answers(insights, client, wallet, alice):
    alice.start()  # alice's fixture already dialled once: the job is there
    assert jobs(wallet) == [alice.phone]
    for job in worker.claim(wallet, "test-worker"):
        worker.run_one(wallet, job, "test-worker")
    assert jobs(wallet) == [] and [c["phones"] for c in insights.checks] == [[alice.phone]]
    alice.start()  # asked a moment ago: not again
    assert len(insights.checks) == 1 and jobs(wallet) == []
    most = wallet.policy.value("sim-swap-unknown-max-sats")
    large = most + min_sats(wallet)
    assert callback(client, insights.result(alice.phone), token="wrong-token-0123456789").status_code == 403
    assert alice.run("1", BOB_LOCAL, str(large), "1", PIN)== "END " + t("en", "simswap.unknown", max=most)
    answered = callback(client, insights.result(alice.phone))
    assert answered.status_code == 200 and answered.get_json() == {"answers": 1, "recorded": 1}
    assert alice.run("1", BOB_LOCAL, str(large), "1", PIN).startswith("END Sent")
    # a swap reported later, by a new question's answer: held, one SMS, a repeat changes nothing
    with wallet.db.write() as s:
        s.get(PhoneGuard, alice.phone).next_ask_at = None
    alice.start()
    sim_swap.ask(wallet, alice.phone)
    body = insights.result(alice.phone, swapped_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
    assert callback(client, body).get_json() == {"answers": 1, "recorded": 1}
    assert callback(client, body).get_json() == {"answers": 1, "recorded": 0}  # no open question any more
    assert alice.run("1") == HELD
    assert outbox(wallet, alice.phone).count(HOLD_SMS) == 1
    assert insights.violations == []


def test_callbacks_that_match_no_question_change_nothing(insights, client, wallet, alice):
    assert sim_swap.want_answer(wallet.db, wallet.policy, alice.phone) is True  # never asked
    assert sim_swap.want_answer(wallet.db, wallet.policy, alice.phone) is False  # asked a moment ago
    sim_swap.ask(wallet, alice.phone)
    assert sim_swap.read(wallet.db, alice.phone).swap_answer == "none"
    today = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for body in (insights.result(alice.phone, swapped_at=today, requestId="ATSwpid_other"),
                 insights.result(alice.phone, swapped_at=today, phoneNumber=DEMO[1]),
                 {"status": "Swapped"}, [], "text", None):
        response = callback(client, body)
        assert response.status_code == 200 and response.get_json()["recorded"] == 0
    assert client.post(f"/insights/{CALLBACK_TOKEN}/sim-swap", data=b"\xff{not json",
                       content_type="application/json").status_code == 200
    assert sim_swap.read(wallet.db, alice.phone).swap_answer == "none"
    assert insights.violations == []


@pytest.mark.parametrize("mode", ["error", "odd", "slow"])
def test_a_provider_that_does_not_answer_leaves_the_policy_to_decide(mode, insights, client, wallet, alice):
    insights.mode = mode
    configure(wallet, mpesa_timeout_s=0.5)
    wallet.sim_swap = simswap_provider.create_sim_swap(wallet.settings)
    sim_swap.ask(wallet, alice.phone)  # logged, done: the next session asks again later
    guard = sim_swap.read(wallet.db, alice.phone)
    assert (guard.swap_answer, guard.answered_at) == ("none", None)  # no answer recorded
    with wallet.db.read() as s:
        row = s.get(PhoneGuard, alice.phone)
        assert row.request_id is None and row.asked_at is None  # no question left open
    assert sim_swap.decide(wallet, guard, sim_swap.MONEY_OUT, 1).allowed
    assert not sim_swap.decide(wallet, guard, sim_swap.MONEY_OUT,
                               wallet.policy.value("sim-swap-unknown-max-sats") + 1).allowed
    assert insights.violations == []


def test_an_answer_given_at_once_is_recorded(insights, client, wallet, alice):
    insights.mode = "sync"
    insights.swapped[alice.phone] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    sim_swap.ask(wallet, alice.phone)
    assert alice.run("1") == HELD
    assert insights.violations == []


def test_insights_answers_are_read_in_both_shapes():
    one = {"status": "NotSwapped", "lastSimSwapDate": "01-01-1900", "phoneNumber": "+254712345678",
           "requestId": "ATSwpid_1", "transactionId": "x"}
    assert read_results(one) == [simswap_provider.Reported("+254712345678", False, None, "ATSwpid_1")]
    nested = {"data": {"phoneNumbers": [{**one, "status": "Swapped", "lastSimSwapDate": "05-12-2026"}]}}
    assert read_results(nested)[0].last_swap_at == dt.datetime(2026, 12, 5)
    assert read_results({**one, "status": "Queued"}) == [] and read_results({**one, "phoneNumber": "0712"}) == []
    assert swap_date("garbage") == (False, None)
    unreadable = read_results({**one, "status": "Swapped", "lastSimSwapDate": "soon"})[0]
    assert read_results({**one, "lastSimSwapDate": "soon"}) == []  # NotSwapped, unreadable: no answer
    assert unreadable.swapped and unreadable.last_swap_at is not None  # taken as now: the cautious reading


def test_settings_name_the_providers_and_production_refuses_the_simulated_one(wallet):
    from helpers.infra.config import ConfigError, finalise, load_config

    assert SIM_SWAP_PROVIDERS == simswap_provider.PROVIDERS
    config = load_config("/tmp", {"APP_ENV": "production"})  # noqa: S108 - an instance path, not written
    assert config["SIM_SWAP_PROVIDER"] == "off"
    config = load_config("/tmp", {"APP_ENV": "production", "AFRICASTALKING_USERNAME": "u",  # noqa: S108
                                  "AFRICASTALKING_API_KEY": "k"})
    assert config["SIM_SWAP_PROVIDER"] == "africastalking"
    for provider, message in (("simulated", "SIM_SWAP_PROVIDER=simulated"), ("africastalking", "SIM_SWAP_CALLBACK")):
        config = load_config("/tmp", {"APP_ENV": "production", "SIM_SWAP_PROVIDER": provider})  # noqa: S108
        with pytest.raises(ConfigError, match=message):
            _check_sim_swap_only(config, finalise)
    with pytest.raises(simswap_provider.SimSwapConfigError, match="AFRICASTALKING_USERNAME"):
        simswap_provider.create_sim_swap(dataclasses.replace(wallet.settings, sim_swap_provider="africastalking",
                                                             africastalking_username=""))


def _check_sim_swap_only(config: dict, finalise) -> None:
    """finalise() with every other production requirement met, so the SIM swap check is what fails."""
    config.update(PIN_PEPPER="p" * 32, DEMO_MODE=False, MPESA_PROVIDER="daraja", AIRTIME_PROVIDER="off",
                  RATE_LIMITS=True, USSD_CALLBACK_TOKEN="u" * 20, LIGHTNING_BACKEND="lnd",
                  PUBLIC_URL="https://wallet.example.com", SIMULATOR_ENABLED=False)
    finalise(config)


def _view(wallet, phone: str):
    from helpers.wallet.customers import users

    with wallet.db.read() as s:
        return users.UserView.of(users.get(s, phone))
