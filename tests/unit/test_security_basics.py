"""Doors found closed by review: PIN guessing through crafted paths, parallel guesses, keyed
hashes, production settings, SMS claimed twice."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from helpers.infra.config import APP_ENVS, ConfigError, finalise, load_config
from helpers.infra.i18n import t
from helpers.wallet.rules import policy
from helpers.infra.sms import LogSender, SmsDispatcher
from models import SmsOutbox, Transaction, User, UssdSession, utcnow
from tests.conftest import DEMO, PIN, Dialer, balance, snapshot
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

P = policy()


def failures(wallet, phone):
    with wallet.db.read() as s:
        return s.execute(select(User.pin_failures, User.pin_locks).where(User.phone == phone)).one()


def test_pins_packed_into_one_path_are_never_checked(alice, wallet):
    """`...*1*g1*g2*...*0`: no guess is hashed, so right and wrong guesses answer the same."""
    before = snapshot(wallet)
    right = alice.post("1*0787654321*1000*1*1357*" + PIN + "*0", session_id="pack-1")
    wrong = alice.post("1*0787654321*1000*1*1357*2468*0", session_id="pack-2")
    assert right == wrong == "END " + t("en", "pin.not-in-dial", code=wallet.service_code)
    assert alice.post("1*0787654321*1000*1*" + PIN + "*0", session_id="pack-3") == right
    assert failures(wallet, DEMO[0]) == (0, 0)
    assert snapshot(wallet) == before


def test_pin_change_in_one_crafted_request_changes_nothing(alice, wallet):
    with wallet.db.read() as s:
        stored = s.scalar(select(User.pin_hash).where(User.phone == DEMO[0]))
    assert alice.post(f"6*3*{PIN}*5739*5739", session_id="crafted") == "END " + t(
        "en", "pin.not-in-dial", code=wallet.service_code)
    assert alice.run("6", "3", f"{PIN}*5739*5739") == "END " + t("en", "error.expired")  # packed after the prompt
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_hash).where(User.phone == DEMO[0])) == stored


def test_parallel_wrong_pins_are_counted_one_by_one(app, alice, wallet):
    attempts = P.value("pin-max-attempts")
    sessions = []
    # 5 at once: each in-process request holds two pooled connections (its read session and its
    # write), and the pool has 10; gunicorn's sync workers serve one request per process.
    for _ in range(5):
        phone = Dialer(app.test_client(), DEMO[0])
        phone.run("1", "0787654321", "1000", "1")
        sessions.append(phone)
    gate = threading.Barrier(len(sessions))
    replies = []

    def guess(phone):
        gate.wait()
        replies.append(phone.press("9999"))

    threads = [threading.Thread(target=guess, args=(p,)) for p in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wrong = [r for r in replies if r.startswith("CON " + t("en", "pin.wrong", left=1)[:9])]
    locked = [r for r in replies if r.startswith("END " + t("en", "pin.locked", minutes=1)[:20])]
    assert len(wrong) == attempts - 1 and len(locked) == len(replies) - len(wrong)
    assert failures(wallet, DEMO[0]) == (0, 1)  # one lock, not one per parallel guess


# ------------------------------------------------------------------ the right PIN's short way
def _lock_right_after_the_step_is_read(monkeypatch, wallet, phone):
    """As if a parallel session's wrong guess locked the account just after this request read it.
    Returns the screen the customer should see: locked, for as long as the lock says."""
    import datetime as dt

    from helpers.ussd import sessions

    from helpers.wallet.customers import users

    read = sessions.load_step
    until = utcnow() + dt.timedelta(minutes=5, seconds=30)

    def read_then_lock(*args, **kwargs):
        found = read(*args, **kwargs)
        with wallet.db.write() as s:
            s.execute(User.__table__.update().where(User.phone == phone).values(
                pin_failures=0, pin_locks=1, pin_locked_until=until))
        return found

    monkeypatch.setattr(sessions, "load_step", read_then_lock)
    return "END " + t("en", "pin.locked", minutes=users.minutes_left(until, utcnow()))


def _counted_checks(monkeypatch):
    from helpers.wallet.customers import users

    calls = []
    counted = users._check_counted
    monkeypatch.setattr(users, "_check_counted", lambda *a: calls.append(a[2]) or counted(*a))
    return calls


def test_a_right_pin_skips_the_counted_check_only_where_a_debit_follows_and_nothing_is_to_be_cleared(
        alice, wallet, monkeypatch):
    counted = _counted_checks(monkeypatch)
    before = balance(wallet, DEMO[0])
    assert alice.run("1", "0787654321", "1000", "1", PIN).startswith("END " + t("en", "send.done", amount=1000,
                                                                                phone=DEMO[1], fee=0, ref="X",
                                                                                balance=0)[:20])
    assert counted == [] and balance(wallet, DEMO[0]) < before
    # after a wrong PIN there is a count to clear: the right one takes the counted check
    alice.run("1", "0787654321", "1000", "1", "9999")
    assert failures(wallet, DEMO[0]) == (1, 0)
    assert alice.press(PIN).startswith("END " + t("en", "send.done", amount=1000, phone=DEMO[1], fee=0, ref="X",
                                                  balance=0)[:20])
    assert len(counted) == 2 and failures(wallet, DEMO[0]) == (0, 0)
    # a PIN change debits nothing: always counted
    alice.run("6", "3", PIN)
    assert len(counted) == 3


def test_a_short_way_payment_that_holds_a_receipt_is_not_looked_up_again(alice, wallet, monkeypatch):
    """The check for "nothing moved" after a short-way PIN reads the request's key only when the
    action ends without a receipt: a paid send reads no key at all (a replay would fail on the
    unique key instead), a refused one reads it before the counted check."""
    from helpers.wallet.ledger import movements

    looked = []
    find = movements.find_by_key
    monkeypatch.setattr(movements, "find_by_key", lambda db, key: looked.append(key) or find(db, key))
    counted = _counted_checks(monkeypatch)
    low = P.value("payment-min-sats")
    low_cost = low + P.fee_sats("internal", low)
    assert alice.run("1", "0787654321", str(low), "1", PIN).startswith("END " + t("en", "send.done", amount=low,
                                                                                  phone=DEMO[1], fee=0, ref="X",
                                                                                  balance=0).split(" Fee")[0])
    assert looked == [] and counted == []
    have = balance(wallet, DEMO[0])
    alice.run("1", "0787654321", str(have - P.fee_sats("internal", have)), "1")  # all of it, with the fee
    Dialer(alice.client, DEMO[0]).run("1", "0787654321", str(low), "1", PIN)  # spends meanwhile
    del looked[:], counted[:]
    assert alice.press(PIN) == "END " + t("en", "deny.insufficient-balance", balance=have - low_cost)
    assert looked and len(set(looked)) == 1 and len(counted) == 1


def test_a_lock_taken_after_the_right_pin_was_read_stops_the_money(alice, wallet, monkeypatch):
    alice.run("1", "0787654321", "1000", "1")
    before = snapshot(wallet)
    locked = _lock_right_after_the_step_is_read(monkeypatch, wallet, DEMO[0])
    assert alice.press(PIN) == locked
    assert snapshot(wallet) == before


def test_a_refusal_after_the_right_pin_does_not_tell_a_guesser_it_was_right_once_locked(
        alice, wallet, monkeypatch):
    """An action that ends without a debit takes the counted check before it answers."""
    from helpers.ussd import actions

    monkeypatch.setitem(actions.ACTIONS, "send", lambda ctx, data, proof: "refused for another reason")
    alice.run("1", "0787654321", "1000", "1")
    assert alice.press(PIN) == "END refused for another reason"  # not locked: the refusal itself
    alice.run("1", "0787654321", "1000", "1")
    locked = _lock_right_after_the_step_is_read(monkeypatch, wallet, DEMO[0])
    assert alice.press(PIN) == locked


def test_an_action_failing_after_the_right_pin_does_not_tell_a_guesser_it_was_right_once_locked(
        alice, wallet, monkeypatch):
    from helpers.ussd import actions

    def fails(ctx, data, proof):
        raise RuntimeError("the action failed before any debit")

    monkeypatch.setitem(actions.ACTIONS, "send", fails)
    alice.run("1", "0787654321", "1000", "1")
    locked = _lock_right_after_the_step_is_read(monkeypatch, wallet, DEMO[0])
    assert alice.press(PIN) == locked


def test_idempotency_keys_are_keyed_with_a_server_secret(alice, wallet):
    alice.run("1", "0787654321", "1000", "1", PIN)
    with wallet.db.read() as s:
        key = s.scalar(select(Transaction.idempotency_key).where(Transaction.type == "send"))
        stored = s.scalar(select(UssdSession.last_text_hash).where(UssdSession.session_id == alice.session_id))
    plain = hashlib.sha256(f"{alice.session_id}\x00{alice.text}".encode()).hexdigest()
    assert key == stored and key != plain


# Every production setting valid (the database is never reached: only the settings are checked).
PRODUCTION = {"PIN_PEPPER": "x" * 40, "MPESA_PROVIDER": "daraja", "USSD_CALLBACK_TOKEN": "t" * 20,
              "LIGHTNING_BACKEND": "lnbits", "LNBITS_URL": "https://lnbits.example.com", "LNBITS_ADMIN_KEY": "k" * 32,
              "MPESA_BASE_URL": "https://api.safaricom.co.ke", "PUBLIC_URL": "https://w.example.com",
              "PRICE_SOURCES": "coingecko,coinbase", "METRICS_TOKEN": "m" * 20}


@pytest.mark.parametrize("typo", ["prod", "Production", "PRODUCTION", "production ", "staging"])
def test_an_unknown_app_env_is_refused_by_name(tmp_path, typo):
    """A typo must not start the server in development mode (dev pepper, mock node, simulated
    M-Pesa that credits any code): it is refused, naming APP_ENV and the accepted values."""
    config = load_config(str(tmp_path), {"APP_ENV": typo, "DATABASE_URL": "mysql+pymysql://u:p@h/w", **PRODUCTION})
    with pytest.raises(ConfigError, match="APP_ENV") as refused:
        finalise(config)
    assert all(name in str(refused.value) for name in APP_ENVS)


@pytest.mark.parametrize("name", APP_ENVS)
def test_every_documented_app_env_is_accepted(tmp_path, name):
    env = {"APP_ENV": name, "DATABASE_URL": "mysql+pymysql://u:p@h/w", **PRODUCTION}
    config = load_config(str(tmp_path), env)
    finalise(config)
    assert config["APP_ENV"] == name


def test_the_production_settings_of_these_tests_are_valid(tmp_path):
    finalise(load_config(str(tmp_path), {"APP_ENV": "production", "DATABASE_URL": "mysql+pymysql://u:p@h/w",
                                         **PRODUCTION}))


@pytest.mark.parametrize("override,setting", [
    ({}, "PIN_PEPPER"),
    ({"PIN_PEPPER": "x" * 40, "DEMO_MODE": "1"}, "DEMO_MODE"),
    ({"PIN_PEPPER": "x" * 40}, "MPESA_PROVIDER"),
    ({"PIN_PEPPER": "x" * 40, "MPESA_PROVIDER": "daraja"}, "USSD_CALLBACK_TOKEN"),
    ({"PIN_PEPPER": "x" * 40, "MPESA_PROVIDER": "daraja", "USSD_CALLBACK_TOKEN": "short"}, "USSD_CALLBACK_TOKEN"),
    ({"PIN_PEPPER": "x" * 40, "MPESA_PROVIDER": "daraja", "USSD_CALLBACK_TOKEN": "t" * 20, "RATE_LIMITS": "0"},
     "RATE_LIMITS"),
    ({"PIN_PEPPER": "x" * 40, "MPESA_PROVIDER": "daraja", "USSD_CALLBACK_TOKEN": "t" * 20}, "LIGHTNING_BACKEND"),
    ({**PRODUCTION, "PUBLIC_URL": ""}, "PUBLIC_URL"),
    ({**PRODUCTION, "PUBLIC_URL": "http://w.example.com"}, "PUBLIC_URL"),
    ({**PRODUCTION, "SIMULATOR_ENABLED": "1"}, "SIMULATOR_ENABLED"),
    ({**PRODUCTION, "PRICE_SOURCES": ""}, "PRICE_SOURCES"),
    ({**PRODUCTION, "METRICS_TOKEN": ""}, "METRICS_TOKEN"),
    ({**PRODUCTION, "METRICS_TOKEN": "short"}, "METRICS_TOKEN"),
])
def test_production_refuses_unsafe_settings_and_names_them(tmp_path, override, setting):
    env = {"APP_ENV": "production", "DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1/w", **override}
    config = load_config(str(tmp_path), env)
    with pytest.raises(ConfigError, match=setting):
        finalise(config)


def test_an_sms_being_sent_by_one_worker_is_not_claimed_by_another(wallet):
    from helpers.infra import sms

    with wallet.db.write() as s:
        sms.queue(s, DEMO[0], "once")
    with wallet.db.write() as s:  # worker A has just claimed it
        s.execute(SmsOutbox.__table__.update().values(status="sending", next_attempt_at=utcnow()))
    other = SmsDispatcher(wallet.db, LogSender())
    assert other.flush() == (0, 0) and other.sender.sent == []


def test_refused_balance_check_uses_the_fresh_balance_not_a_stale_object(dial, wallet):
    carol = dial(DEMO[2])
    carol.run(PIN, PIN)
    have = balance(wallet, DEMO[2])
    low = P.value("payment-min-sats")
    low_cost = low + P.fee_sats("internal", low)
    carol.run("1", "0787654321", str(have - P.fee_sats("internal", have)), "1")  # all of it, with the fee
    Dialer(carol.client, DEMO[2]).run("1", "0712345678", str(low), "1", PIN)  # spends meanwhile
    assert carol.press(PIN) == "END " + t("en", "deny.insufficient-balance", balance=have - low_cost)
    assert balance(wallet, DEMO[2]) == have - low_cost


def test_rate_limits_are_on_by_default_except_for_the_embedded_demo(tmp_path):
    embedded = load_config(str(tmp_path), {})
    server = load_config(str(tmp_path), {"DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1/w"})
    assert embedded["RATE_LIMITS"] is False and server["RATE_LIMITS"] is True
    assert load_config(str(tmp_path), {"RATE_LIMITS": "1"})["RATE_LIMITS"] is True


@pytest.mark.parametrize("name,raw,kind", [
    ("DB_POOL_SIZE", "five", "a whole number"),
    ("USSD_SESSION_TIMEOUT_S", "-1", "a whole number"),
    ("INVOICE_EXPIRY_S", "٣٦٠٠", "a whole number"),  # other scripts' digits are no number here either
    ("MPESA_TIMEOUT_S", "nan", "a decimal number"),
    ("WRITE_BEHIND_S", "inf", "a decimal number"),
])
def test_a_bad_number_stops_the_start_naming_the_setting_and_an_example(tmp_path, name, raw, kind):
    default = load_config(str(tmp_path), {})[name]
    with pytest.raises(ConfigError) as refused:
        load_config(str(tmp_path), {name: raw})
    assert str(refused.value) == f"{name}={raw!r} is not {kind} of 0 or more; for example {name}={default}"


def test_a_bad_setting_stops_python_app_py_with_one_line(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(root / "app.py")], cwd=tmp_path, capture_output=True, text=True,  # noqa: S603
                            timeout=60, env={"PATH": "/usr/bin:/bin", "DB_POOL_SIZE": "many"})
    assert result.returncode == 1
    assert result.stderr.strip() == "configuration: DB_POOL_SIZE='many' is not a whole number of 0 or more; " \
                                    "for example DB_POOL_SIZE=5"


def test_a_refused_production_start_is_one_line_naming_the_setting(tmp_path):
    """`python app.py` with every production setting valid but PUBLIC_URL left at its default:
    exit non-zero, one line on stderr that names PUBLIC_URL, no traceback."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PRICE_", "MPESA_", "LNBITS_"))}
    env.update({"APP_ENV": "production", "DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1:9/w", **PRODUCTION})
    env.pop("PUBLIC_URL")
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PUBLIC_URL" in lines[0], done.stderr
    gunicorn = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
                              cwd=ROOT, env={**env, "PORT": str(free_port())}, capture_output=True, text=True,
                              timeout=60)
    assert gunicorn.returncode != 0
    lines = gunicorn.stderr.strip().splitlines()
    assert len(lines) == 1 and "PUBLIC_URL" in lines[0], gunicorn.stderr
