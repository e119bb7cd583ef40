"""Issue 33, Forgot PIN: scheduled (SMS), money out frozen meanwhile, cancelled by the current PIN
typed in any session (SMS), completed after `pin-reset-delay-h` by the next dial or the worker (the
dial then asks for a new PIN, as registration does), refused after a SIM swap, stopped by one."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from helpers.infra.i18n import t
from helpers.ussd import guard
from helpers.wallet import pin_reset, sim_swap
from helpers.web import worker
from models import AuditEntry, PhoneGuard, User, utcnow
from tests.conftest import PIN, balance, outbox, snapshot

BOB_LOCAL = "0787654321"
NEW_PIN = "5739"
CODE = "*384*123#"


def reset_due(wallet, phone: str):
    with wallet.db.read() as s:
        return s.scalar(select(PhoneGuard.reset_due_at).where(PhoneGuard.phone == phone))


def later(monkeypatch, hours: float) -> None:
    """Move the clock of the modules that decide on resets and swaps `hours` ahead."""
    moved = utcnow() + dt.timedelta(hours=hours)
    for module in (pin_reset, sim_swap, guard):
        monkeypatch.setattr(module, "utcnow", lambda: moved)


def ask_reset(phone) -> str:
    return phone.run("6", "3", "9", "1")


def test_forgot_pin_is_scheduled_after_the_delay_with_an_sms(wallet, alice):
    hours = wallet.policy.value("pin-reset-delay-h")
    assert alice.run("6", "3", "9") == "CON " + t("en", "forgot", hours=hours)
    assert alice.press("1") == "END " + t("en", "forgot.done", hours=hours, code=CODE)
    due = reset_due(wallet, alice.phone)
    assert abs((due - utcnow()) - dt.timedelta(hours=hours)) < dt.timedelta(minutes=1)
    assert t("en", "sms.pin-reset-requested", hours=hours, code=CODE) in outbox(wallet, alice.phone)
    assert ask_reset(alice) == "END " + t("en", "forgot.pending", hours=hours, code=CODE)  # once at a time
    with wallet.db.read() as s:
        assert s.scalars(select(AuditEntry.action).where(AuditEntry.subject == alice.phone)).all() == [
            "pin-reset-requested"]


def test_forgot_pin_from_the_pin_step(wallet, alice):
    amount = wallet.policy.value("payment-min-sats")
    alice.run("1", BOB_LOCAL, str(amount), "1")
    assert alice.reply.endswith("\n9 Forgot PIN")
    assert alice.press("9").startswith("CON Forgot PIN?")
    assert alice.press("1").startswith("END PIN reset requested")
    assert reset_due(wallet, alice.phone) is not None


def test_money_out_is_frozen_while_a_reset_waits_and_receiving_goes_on(wallet, alice, bob):
    ask_reset(alice)
    before = snapshot(wallet)
    hours = wallet.policy.value("pin-reset-delay-h")
    pending = "CON " + t("en", "reset.pending", hours=hours)
    for option in ("1", "3", "5", "7", "8"):
        assert alice.run(option) == pending, option
        assert alice.press("0").startswith("CON Balance")  # back to the menu, nothing cancelled
    assert snapshot(wallet) == before and reset_due(wallet, alice.phone) is not None
    amount = wallet.policy.value("payment-min-sats")
    assert bob.run("1", BOB_LOCAL.replace("787654321", "712345678"), str(amount), "1", PIN).startswith("END Sent")
    assert alice.run("2", str(amount)).startswith("END Invoice for")


def test_a_reset_asked_for_while_a_payment_waits_at_its_pin_step_stops_it(wallet, alice, bob, dial):
    """The race: another session asks for the reset; the PIN step reads it, and the right PIN
    cancels the reset instead of paying."""
    amount = wallet.policy.value("payment-min-sats")
    alice.run("1", BOB_LOCAL, str(amount), "1")
    other = dial(alice.phone)
    assert ask_reset(other).startswith("END PIN reset requested")
    before = balance(wallet, alice.phone)
    assert alice.press(PIN) == "END " + t("en", "reset.cancelled-pay")
    assert balance(wallet, alice.phone) == before and reset_due(wallet, alice.phone) is None


def test_the_current_pin_cancels_the_reset_in_any_session(wallet, alice):
    ask_reset(alice)
    assert alice.run("5", "9999").startswith("CON Wrong PIN")  # a wrong PIN counts and cancels nothing
    assert reset_due(wallet, alice.phone) is not None
    assert alice.run("1", PIN) == "END " + t("en", "reset.cancelled")
    assert reset_due(wallet, alice.phone) is None
    assert t("en", "sms.pin-reset-cancelled") in outbox(wallet, alice.phone)
    amount = wallet.policy.value("payment-min-sats")
    assert alice.run("1", BOB_LOCAL, str(amount), "1", PIN).startswith("END Sent")
    # and by the current PIN typed to change it
    ask_reset(alice)
    assert alice.run("6", "3", PIN).startswith("CON Enter your new")
    assert reset_due(wallet, alice.phone) is None


def test_after_the_delay_the_next_dial_asks_for_a_new_pin(monkeypatch, wallet, alice):
    ask_reset(alice)
    hours = wallet.policy.value("pin-reset-delay-h")
    later(monkeypatch, hours - 1)
    assert alice.run().startswith("CON Balance")  # not yet
    later(monkeypatch, hours)
    assert alice.run() == "CON " + t("en", "reset.new", digits=wallet.policy.value("pin-length"))
    assert alice.press(NEW_PIN, NEW_PIN).startswith("CON " + t("en", "pin.set"))
    assert t("en", "sms.pin-changed") in outbox(wallet, alice.phone)
    amount = wallet.policy.value("payment-min-sats")
    assert alice.run("1", BOB_LOCAL, str(amount), "1", PIN).startswith("CON Wrong PIN")  # the old one is gone
    assert alice.run("1", BOB_LOCAL, str(amount), "1", NEW_PIN).startswith("END Sent")
    with wallet.db.read() as s:
        assert "pin-reset-done" in s.scalars(select(AuditEntry.action).where(AuditEntry.subject == alice.phone)).all()


def test_the_worker_sends_one_reminder_and_changes_no_pin(monkeypatch, wallet, alice):
    ask_reset(alice)
    worker._every(wallet, "sweep")
    ready = t("en", "sms.pin-reset-ready", code=CODE)
    assert ready not in outbox(wallet, alice.phone)  # not due yet
    later(monkeypatch, wallet.policy.value("pin-reset-delay-h"))
    worker._every(wallet, "sweep")
    worker._every(wallet, "sweep")
    assert outbox(wallet, alice.phone).count(ready) == 1
    assert reset_due(wallet, alice.phone) is not None
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_hash).where(User.phone == alice.phone)) is not None


def test_forgot_pin_is_refused_after_a_sim_swap(client, wallet, alice):
    assert alice.run("6", "3", "9").startswith("CON Forgot PIN?")
    client.post("/test/sim-swap", data={"phoneNumber": alice.phone})
    assert alice.press("1") == "END " + t("en", "simswap.hold")
    assert reset_due(wallet, alice.phone) is None
    with pytest.raises(pin_reset.ResetRefused):
        pin_reset.request(wallet, sim_swap_user(wallet, alice.phone))


def test_a_swap_reported_while_a_reset_waits_stops_it(monkeypatch, client, wallet, alice):
    ask_reset(alice)
    client.post("/test/sim-swap", data={"phoneNumber": alice.phone})
    later(monkeypatch, wallet.policy.value("pin-reset-delay-h"))
    assert alice.run() == "CON " + t("en", "reset.new", digits=wallet.policy.value("pin-length"))
    assert alice.press(NEW_PIN, NEW_PIN) == "END " + t("en", "simswap.hold")
    assert reset_due(wallet, alice.phone) is None
    assert t("en", "sms.pin-reset-stopped") in outbox(wallet, alice.phone)
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_hash).where(User.phone == alice.phone)) is not None  # the PIN stays


def test_bad_input_on_the_new_screens_gets_a_clear_screen(wallet, alice):
    assert alice.run("6", "3", "9", "7").startswith("CON " + t("en", "error.option"))
    ask_reset(alice)
    assert alice.run("1", "12").startswith("CON " + t("en", "pin.format", digits=4))
    assert alice.run("1", "x" * 40).startswith("CON " + t("en", "pin.format", digits=4))


def sim_swap_user(wallet, phone: str):
    from helpers.wallet.customers import users

    with wallet.db.read() as s:
        return users.UserView.of(users.get(s, phone))


# ------------------------------------------------------------------ races: a reset completing while a session is open
def test_a_session_open_when_the_reset_completes_cannot_pay_with_the_old_pin(monkeypatch, wallet, alice, dial):
    ask_reset(alice)
    hours = wallet.policy.value("pin-reset-delay-h")
    later(monkeypatch, hours - 1)
    other = dial(alice.phone)  # another session of the owner (or of whoever holds the phone), open before the due time
    assert other.start().startswith("CON Balance")
    later(monkeypatch, hours)
    assert alice.run() == "CON " + t("en", "reset.new", digits=wallet.policy.value("pin-length"))
    assert alice.press(NEW_PIN, NEW_PIN).startswith("CON " + t("en", "pin.set"))  # the reset completes
    before = snapshot(wallet)
    amount = wallet.policy.value("payment-min-sats")
    assert other.press("1", BOB_LOCAL, str(amount), "1").startswith("CON ")
    assert other.press(PIN).startswith("CON " + t("en", "pin.wrong", left=wallet.policy.value("pin-max-attempts") - 1))
    assert snapshot(wallet) == before  # the old PIN moves nothing in a session that began before the reset
    assert t("en", "sms.pin-reset-cancelled") not in outbox(wallet, alice.phone)  # nothing left to cancel
    assert other.press(NEW_PIN).startswith("END Sent")  # the owner's new PIN works in it


def test_the_current_pin_typed_while_the_reset_completes_leaves_one_outcome(monkeypatch, wallet, alice, dial):
    """The old PIN typed in another session (a cancel) lands between the reset's read and its write:
    the reset's conditional write finds it gone, the new PIN is not set, and the screen says so."""
    ask_reset(alice)
    later(monkeypatch, wallet.policy.value("pin-reset-delay-h"))
    assert alice.run() == "CON " + t("en", "reset.new", digits=wallet.policy.value("pin-length"))
    decide = sim_swap.decide

    def cancelled_meanwhile(*args, **kwargs):
        verdict = decide(*args, **kwargs)
        assert pin_reset.cancel(wallet.db, alice.phone, "en")  # the current PIN, typed elsewhere just now
        return verdict

    monkeypatch.setattr(sim_swap, "decide", cancelled_meanwhile)
    assert alice.press(NEW_PIN, NEW_PIN) == "END " + t("en", "reset.gone")
    monkeypatch.setattr(sim_swap, "decide", decide)
    with wallet.db.read() as s:
        assert s.scalar(select(AuditEntry.action).where(AuditEntry.subject == alice.phone,
                                                        AuditEntry.action == "pin-reset-done")) is None
    amount = wallet.policy.value("payment-min-sats")
    assert alice.run("1", BOB_LOCAL, str(amount), "1", PIN).startswith("END Sent")  # the old PIN stands
    assert reset_due(wallet, alice.phone) is None
