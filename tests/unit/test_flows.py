"""Every menu flow through the Flask test client, in English and Swahili."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from helpers.wallet.incoming import lnurl
from helpers.wallet.ledger import unclaimed
from helpers.infra.i18n import receipt_text, t
from helpers.wallet.rules import policy
from lightning import decode_invoice
from models import Invoice, PaymentRequest, Transaction, User, utcnow
from helpers.ussd.account_screens import HISTORY_LINES
from tests.conftest import movements
from tests.conftest import (
    VALID_MIN, balance, credit_sats, debit_sats, DEMO, KES_MAX, KES_MIN, kes_worth, outbox, PIN, snapshot)

P = policy()


def set_language(phone, lang: str) -> None:
    phone.run("6", "2", {"en": "1", "sw": "2"}[lang])


# ------------------------------------------------------------------ onboarding
def test_first_dial_registers_and_asks_for_a_pin_twice(dial, wallet):
    newcomer = dial("0722000111")
    reply = newcomer.start()
    assert reply == "CON " + t("en", "pin.create", digits=P.value("pin-length"))
    with wallet.db.read() as s:
        user = s.scalar(select(User).where(User.phone == "+254722000111"))
    assert user is not None and user.balance_sats == 0 and user.pin_hash is None
    assert outbox(wallet, "+254722000111") == [t("en", "sms.welcome", code="*384*123#")]
    assert newcomer.press(PIN) == "CON " + t("en", "pin.repeat")
    assert newcomer.press(PIN).startswith("CON " + t("en", "pin.set") + "\n" + t("en", "main", balance=0,
                                                                                   requests="")[:20])
    # the same session goes on into the menu
    assert newcomer.press("1") == "CON " + t("en", "send.phone")
    with wallet.db.read() as s:
        stored = s.scalar(select(User.pin_hash).where(User.phone == "+254722000111"))
    # a salted hash, not the PIN (its hex digits may hold the PIN's by chance: compare the parts)
    assert stored and PIN not in stored.split("$") and len(stored) > 40


@pytest.mark.parametrize("weak", ["0000", "1111", "1234", "9876", "1212", "2580"])
def test_weak_pins_are_refused_by_the_policy(dial, weak):
    assert not P.pin(weak).allowed
    newcomer = dial("0722000112")
    newcomer.start()
    assert newcomer.press(weak).startswith("CON " + t("en", "deny.weak-pin"))


@pytest.mark.parametrize("bad", ["12", "12345", "abcd", "12a4", "-123", "１２３４"])
def test_malformed_pins_re_prompt(dial, bad):
    newcomer = dial("0722000113")
    newcomer.start()
    assert newcomer.press(bad).startswith("CON " + t("en", "pin.format", digits=P.value("pin-length")))


def test_pin_mismatch_goes_back_to_create(dial, wallet):
    newcomer = dial("0722000114")
    newcomer.run(PIN)
    reply = newcomer.press("5739")
    assert reply.startswith("CON " + t("en", "pin.mismatch") + "\n" + t("en", "pin.create", digits=4))
    assert newcomer.press("5739", "5739").startswith("CON " + t("en", "pin.set"))
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_hash).where(User.phone == "+254722000114"))


def test_demo_users_exist_with_their_balances(wallet):
    from helpers.wallet.demo import DEMO_USERS

    for phone, sats in DEMO_USERS:
        assert balance(wallet, phone) == sats


# ------------------------------------------------------------------ main menu and navigation
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_main_menu_shows_balance_and_options(alice, wallet, lang):
    set_language(alice, lang)
    assert alice.start() == "CON " + t(lang, "main", balance=balance(wallet, DEMO[0]), requests="")


@pytest.mark.parametrize("lang", ["en", "sw"])
@pytest.mark.parametrize("bad", ["99", "x", "88", "11", "*", "1 "])
def test_unknown_option_re_prompts_and_says_why(alice, wallet, lang, bad):
    set_language(alice, lang)
    before = snapshot(wallet)
    reply = alice.run(bad)
    assert reply.startswith("CON " + t(lang, "error.option") + "\n")
    assert snapshot(wallet) == before


def test_zero_goes_back_double_zero_goes_home_and_zero_exits(alice, wallet):
    main = alice.start()
    assert alice.press("1") == "CON " + t("en", "send.phone")
    assert alice.press("0") == main
    alice.press("6", "1")
    assert alice.press("00") == main
    assert alice.press("0") == "END " + t("en", "exit")


# ------------------------------------------------------------------ send
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_send_to_a_phone_number(alice, bob, wallet, lang):
    set_language(alice, lang)
    amount = P.value("payment-min-sats") * 5
    fee = P.fee_sats("internal", amount)
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    alice.start()
    assert alice.press("1") == "CON " + t(lang, "send.phone")
    assert alice.press("0787654321") == "CON " + t(lang, "send.amount", phone=DEMO[1],
                                                   min=P.value("payment-min-sats"), max=P.value("payment-max-sats"))
    confirm = alice.press(str(amount))
    assert confirm == "CON " + t(lang, "send.confirm", amount=amount, phone=DEMO[1], fee=fee, total=amount + fee,
                                 recipient=t(lang, "recipient.unnamed"))  # bob set his PIN, and no name
    assert alice.press("1") == "CON " + t(lang, "pin.enter")
    done = alice.press(PIN)
    ref = wallet.db.session.scalar(select(Transaction.reference).where(Transaction.type == "send"))
    left = P.value("daily-send-limit-sats") - amount  # alice sent nothing else today
    assert done == "END " + receipt_text(lang, "send.done", left, amount=amount, phone=DEMO[1], fee=fee, ref=ref,
                                         balance=a0 - amount - fee)
    assert t(lang, "left.today", left=left) in done
    assert balance(wallet, DEMO[0]) == a0 - amount - fee
    assert balance(wallet, DEMO[1]) == b0 + amount
    assert receipt_text(lang, "sms.sent", left, amount=amount, phone=DEMO[1], fee=fee, ref=ref,
                        balance=a0 - amount - fee) in outbox(wallet, DEMO[0])
    assert t("en", "sms.received", amount=amount, phone=DEMO[0], ref=ref, balance=b0 + amount) in outbox(
        wallet, DEMO[1])


def test_send_to_a_new_number_creates_the_account_and_tells_them(alice, wallet):
    amount = P.value("payment-min-sats")
    alice.run("1", "0733444555", str(amount), "1", PIN)
    assert balance(wallet, "+254733444555") == amount
    with wallet.db.read() as s:
        sent_at = s.scalar(movements().where(Transaction.counterparty == "+254733444555")).created_at
    assert outbox(wallet, "+254733444555") == [
        t("en", "sms.new-recipient", phone=DEMO[0], amount=amount, code="*384*123#",
          date=unclaimed.claim_by(P, sent_at).strftime("%d/%m/%Y"))]


def _amount_errors():
    low, high = P.value("payment-min-sats"), P.value("payment-max-sats")
    return [
        ("", "error.amount"), ("abc", "error.amount"), ("-5000", "error.amount"), ("10.5", "error.amount"),
        ("0", None), ("1e5", "error.amount"), ("99999999999999999999", "error.amount"),
        (str(low - 1), "deny.below-minimum"), (str(high + 1), "deny.above-maximum"),
    ]


@pytest.mark.parametrize("lang", ["en", "sw"])
@pytest.mark.parametrize("typed,key", _amount_errors())
def test_send_amount_bad_inputs(alice, wallet, lang, typed, key):
    set_language(alice, lang)
    before = snapshot(wallet)
    alice.run("1", "0787654321")
    prompt = alice.reply
    reply = alice.press(typed)
    if key is None:  # "0" goes back a screen
        assert reply == "CON " + t(lang, "send.phone")
    else:
        values = {"min": P.value("payment-min-sats"), "max": P.value("payment-max-sats"), "unit": "sats"}
        assert reply == "CON " + t(lang, key, **values) + "\n" + prompt[4:]
    assert snapshot(wallet) == before


def test_send_more_than_the_balance_is_refused(dial, wallet):
    carol = dial(DEMO[2])
    carol.run(PIN, PIN)
    have = balance(wallet, DEMO[2])
    before = snapshot(wallet)
    reply = carol.run("1", "0787654321", str(have + 1))
    assert reply.startswith("CON " + t("en", "deny.insufficient-balance", balance=have))
    assert snapshot(wallet) == before


@pytest.mark.parametrize("typed,key", [
    ("", "error.phone"), ("abc", "error.phone"), ("12345", "error.phone"), ("07123", "error.phone"),
    ("+12025550143", "error.phone"), ("0712345678", "error.own-phone"), ("+254712345678", "error.own-phone"),
])
def test_send_recipient_bad_inputs(alice, wallet, typed, key):
    before = snapshot(wallet)
    assert alice.run("1", typed) == "CON " + t("en", key) + "\n" + t("en", "send.phone")
    assert snapshot(wallet) == before


def test_cancel_at_confirmation_moves_nothing(alice, wallet):
    before = snapshot(wallet)
    alice.run("1", "0787654321", "5000")
    assert alice.press("0") .startswith("CON " + t("en", "send.amount", phone=DEMO[1], min=1000, max=1000000)[:10])
    assert alice.press("00").startswith("CON " + t("en", "main", balance=balance(wallet, DEMO[0]), requests="")[:12])
    assert snapshot(wallet) == before


# ------------------------------------------------------------------ PIN lockout
def test_wrong_pins_count_then_lock_across_sessions(alice, bob, wallet):
    before = snapshot(wallet)
    attempts = P.value("pin-max-attempts")
    alice.run("1", "0787654321", "5000", "1")
    for n in range(1, attempts):
        assert alice.press("9999").startswith("CON " + t("en", "pin.wrong", left=attempts - n))
    minutes = P.pin_failure(attempts, 0).lock_minutes
    assert alice.press("9999") == "END " + t("en", "pin.locked", minutes=minutes)
    assert t("en", "sms.pin-locked", minutes=minutes) in outbox(wallet, DEMO[0])
    # a new session, even with the right PIN, stays locked
    assert alice.run("1", "0787654321", "5000", "1", PIN) == "END " + t("en", "pin.locked", minutes=minutes)
    assert snapshot(wallet) == before
    # once the lock has passed (its time stays on the row), the right PIN works again (counted,
    # clearing the count), and so does the next one (the short way): the debits go through
    with wallet.db.write() as s:
        s.execute(User.__table__.update().where(User.phone == DEMO[0]).values(
            pin_locked_until=utcnow() - dt.timedelta(seconds=1)))
    done = "END " + t("en", "send.done", amount=5000, phone=DEMO[1], fee=0, ref="X", balance=0)[:20]
    assert alice.run("1", "0787654321", "5000", "1", PIN).startswith(done)
    assert alice.run("1", "0787654321", "5000", "1", PIN).startswith(done)


def test_wrong_pin_in_an_earlier_session_step_is_not_counted_twice(alice, wallet):
    alice.run("1", "0787654321", "5000", "1", "9999")
    alice.press("1357")  # a second wrong PIN: the first must not be counted again
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_failures).where(User.phone == DEMO[0])) == 2


# ------------------------------------------------------------------ receive
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_receive_creates_a_real_invoice_sent_by_sms_and_credits_once(alice, wallet, client, lang):
    set_language(alice, lang)
    amount = 2500
    a0 = balance(wallet, DEMO[0])
    reply = alice.run("2", str(amount))
    invoice = wallet.db.session.scalar(select(Invoice))
    expiry = wallet.settings.invoice_expiry_s
    assert reply == "END " + t(lang, "receive.done", amount=amount, ref=invoice.reference, minutes=expiry // 60)
    decoded = decode_invoice(invoice.bolt11)
    assert decoded.amount_sat == amount and decoded.payment_hash == invoice.payment_hash
    assert decoded.network == wallet.settings.lightning_network
    assert t(lang, "sms.invoice", amount=amount, ref=invoice.reference, bolt11=invoice.bolt11) in outbox(
        wallet, DEMO[0])
    assert balance(wallet, DEMO[0]) == a0  # nothing until paid
    for _ in range(3):  # the payer's confirmation arrives three times: one credit
        assert client.post("/test/pay-invoice", data={"reference": invoice.reference}).json["status"] == "paid"
    assert balance(wallet, DEMO[0]) == a0 + amount
    assert wallet.db.session.query(Transaction).filter_by(payment_hash=invoice.payment_hash).count() == 1


def test_receive_when_the_node_is_down_says_so_and_records_nothing(alice, wallet):
    from lightning import UnavailableBackend

    wallet.lightning = UnavailableBackend("node offline")
    before = snapshot(wallet)
    assert alice.run("2", "5000") == "END " + t("en", "error.lightning")
    assert snapshot(wallet) == before


@pytest.mark.parametrize("typed,key", [("abc", "error.amount"),
                                       (str(P.value("payment-min-sats") - 1), "deny.below-minimum"),
                                       (str(P.value("payment-max-sats") + 1), "deny.above-maximum")])
def test_receive_amount_bad_inputs(alice, wallet, typed, key):
    before = snapshot(wallet)
    reply = alice.run("2", typed)
    values = {"min": P.value("payment-min-sats"), "max": P.value("payment-max-sats"), "unit": "sats"}
    assert reply.startswith("CON " + t("en", key, **values) + "\n")
    assert snapshot(wallet) == before


# ------------------------------------------------------------------ request payment and pay it
def test_request_payment_then_payer_pays_from_the_menu(alice, bob, wallet):
    amount = 3000
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    reply = alice.run("3", "0787654321", str(amount))
    invoice = wallet.db.session.scalar(select(Invoice))
    assert reply == "END " + t("en", "request.done", amount=amount, phone=DEMO[1], ref=invoice.reference)
    # the payer is one of ours: they pay from the menu, and get no payable invoice to pay twice
    assert outbox(wallet, DEMO[1]) == [t("en", "sms.request-user", phone=DEMO[0], amount=amount,
                                         ref=invoice.reference, code="*384*123#")]
    menu = bob.start()
    assert menu == "CON " + t("en", "main", balance=b0, requests=t("en", "main.requests", count=1))
    # the count, read again (the menu with its requests line and 9 Save leaves no room for the note
    # above it: the walker drops a note that does not fit, never the menu's end)
    assert bob.press("99") == menu
    assert bob.press("1") == "CON " + t("en", "send.phone")
    assert bob.press("0") == menu  # back to the menu on a later step: the count, read again
    bob.start()
    assert bob.press("7") == "CON " + t("en", "payreq.list",
                                         lines=t("en", "payreq.line", n=1, amount=amount, phone=DEMO[0]))
    bob.press("1")
    assert bob.reply == "CON " + t("en", "payreq.confirm", amount=amount, phone=DEMO[0], ref=invoice.reference,
                                   fee=P.fee_sats("internal", amount))
    bob.press("1")
    done = bob.press(PIN)
    fee = P.fee_sats("internal", amount)
    left = P.value("daily-send-limit-sats") - amount
    assert done == "END " + receipt_text("en", "payreq.done", left, amount=amount, phone=DEMO[0],
                                         ref=invoice.reference, balance=b0 - amount - fee)
    assert balance(wallet, DEMO[0]) == a0 + amount
    assert balance(wallet, DEMO[1]) == b0 - amount - fee
    assert outbox(wallet, DEMO[0])[-1] == t("en", "sms.invoice-paid", ref=invoice.reference, amount=amount,
                                            balance=a0 + amount)
    assert outbox(wallet, DEMO[1])[-1] == receipt_text("en", "sms.sent", left, amount=amount, phone=DEMO[0], fee=fee,
                                                       ref=invoice.reference, balance=b0 - amount - fee)
    assert wallet.db.session.scalar(select(PaymentRequest.status)) == "paid"
    # paid: gone from the menu, and the Lightning invoice can no longer credit it
    assert bob.start() == "CON " + t("en", "main", balance=b0 - amount - fee, requests="")
    assert wallet.db.session.scalar(select(Invoice.status)) == "paid"


def test_a_request_paid_by_lightning_first_cannot_be_paid_again(alice, bob, wallet, client):
    alice.run("3", "0787654321", "2000")
    invoice = wallet.db.session.scalar(select(Invoice))
    bob.run("7", "1", "1")  # bob reaches the PIN screen...
    client.post("/test/pay-invoice", data={"reference": invoice.reference})  # ...someone pays by Lightning
    b0 = balance(wallet, DEMO[1])
    assert bob.press(PIN) == "END " + t("en", "payreq.gone")
    assert balance(wallet, DEMO[1]) == b0


def test_request_to_someone_without_an_account_sends_a_lightning_invoice(alice, wallet):
    alice.run("3", "0733000111", "2000")
    invoice = wallet.db.session.scalar(select(Invoice))
    assert outbox(wallet, "+254733000111") == [t("en", "sms.request", phone=DEMO[0], amount=2000,
                                                 ref=invoice.reference, code="*384*123#", bolt11=invoice.bolt11)]


def test_a_request_paid_on_the_node_unnoticed_is_credited_once_not_paid_again(alice, bob, wallet):
    alice.run("3", "0787654321", "2000")
    invoice = wallet.db.session.scalar(select(Invoice))
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    bob.run("7", "1", "1")
    wallet.lightning.simulate_payment(invoice.payment_hash)  # paid by Lightning; no poll has run
    assert bob.press(PIN) == "END " + t("en", "payreq.gone")
    assert (balance(wallet, DEMO[0]), balance(wallet, DEMO[1])) == (a0 + 2000, b0)


def test_request_to_own_number_is_refused(alice, wallet):
    before = snapshot(wallet)
    assert alice.run("3", "0712345678").startswith("CON " + t("en", "error.own-phone"))
    assert snapshot(wallet) == before


# ------------------------------------------------------------------ M-Pesa top up
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_top_up_credits_at_the_policy_rate_once_per_code(alice, bob, wallet, lang):
    set_language(alice, lang)
    kes = 300
    sats = credit_sats(kes)
    a0 = balance(wallet, DEMO[0])
    alice.run("4")
    assert alice.reply == "CON " + t(lang, "topup.amount", min=KES_MIN, max=KES_MAX)
    assert alice.press(str(kes)) == "CON " + t(lang, "topup.code", kes=kes)
    assert alice.press("qwerty1234") == "CON " + t(lang, "topup.confirm", kes=kes, sats=sats, code="QWERTY1234",
                                                   valid=VALID_MIN)
    assert alice.press("1") == "END " + t(lang, "topup.done", sats=sats, kes=kes, code="QWERTY1234",
                                           balance=a0 + sats)
    assert balance(wallet, DEMO[0]) == a0 + sats
    # the same code again, by anyone, credits nothing
    before = snapshot(wallet)
    assert bob.run("4", str(kes), "QWERTY1234").startswith("CON " + t("en", "error.code-used"))
    assert snapshot(wallet) == before


def test_top_up_code_used_between_screens_is_refused_at_confirmation(alice, bob, wallet):
    alice.run("4", "300", "ABCDE12345")
    bob.run("4", "300", "ABCDE12345", "1")
    before = snapshot(wallet)
    assert alice.press("1") == "END " + t("en", "error.code-used")
    assert snapshot(wallet) == before


@pytest.mark.parametrize("typed,key", [("abc", "error.amount"), ("5", "deny.below-minimum"),
                                       (str(KES_MIN - 1), "deny.below-minimum"),
                                       (str(KES_MAX + 1), "deny.above-maximum")])
def test_top_up_amount_bad_inputs(alice, wallet, typed, key):
    before = snapshot(wallet)
    values = {"min": KES_MIN, "max": KES_MAX, "unit": "KES"}
    assert alice.run("4", typed).startswith("CON " + t("en", key, **values) + "\n")
    assert snapshot(wallet) == before


@pytest.mark.parametrize("code", ["", "ABC", "ABCDEFGHIJK", "ABCDE-1234", "ÄBCDE12345"])
def test_top_up_bad_codes(alice, wallet, code):
    before = snapshot(wallet)
    assert alice.run("4", "300", code).startswith("CON " + t("en", "error.code") + "\n")
    assert snapshot(wallet) == before


# ------------------------------------------------------------------ M-Pesa withdraw
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_withdraw_debits_sats_and_fee_and_records_the_payout(alice, wallet, lang):
    set_language(alice, lang)
    kes = 450
    sats = debit_sats(kes)
    fee = P.fee_sats("mpesa-withdraw", sats)
    a0 = balance(wallet, DEMO[0])
    alice.run("5")
    assert alice.press(str(kes)) == "CON " + t(lang, "withdraw.phone", kes=kes, phone=DEMO[0])
    assert alice.press("0798765432") == "CON " + t(lang, "withdraw.pin", kes=kes, phone=DEMO[2], sats=sats, fee=fee,
                                                   valid=VALID_MIN)
    reply = alice.press(PIN)
    row = wallet.db.session.scalar(movements().where(Transaction.type == "withdraw"))
    assert row.status == "settled" and row.mpesa_code and row.counterparty == DEMO[2]
    assert reply == "END " + receipt_text(lang, "withdraw.done", P.value("daily-send-limit-sats") - sats, kes=kes,
                                          phone=DEMO[2], code=row.mpesa_code, sats=sats, fee=fee,
                                          balance=a0 - sats - fee)
    assert balance(wallet, DEMO[0]) == a0 - sats - fee


def test_withdraw_to_own_number_and_insufficient_balance(dial, wallet):
    carol = dial(DEMO[2])
    carol.run(PIN, PIN)
    have = balance(wallet, DEMO[2])
    too_much_kes = kes_worth(have) + 1
    before = snapshot(wallet)
    reply = carol.run("5", str(too_much_kes))
    assert reply.startswith("CON " + t("en", "deny.insufficient-balance", balance=have))
    assert snapshot(wallet) == before
    kes = KES_MIN
    assert carol.run("5", str(kes), "1") == "CON " + t("en", "withdraw.pin", kes=kes, phone=DEMO[2],
                                                        sats=debit_sats(kes), fee=P.fee_sats("mpesa-withdraw",
                                                                                             debit_sats(kes)),
                                                        valid=VALID_MIN)


def test_withdraw_bad_number(alice, wallet):
    before = snapshot(wallet)
    assert alice.run("5", "300", "12345").startswith("CON " + t("en", "error.phone"))
    assert snapshot(wallet) == before


def test_failed_payout_refunds_and_unknown_payout_stays_pending(alice, wallet):
    from helpers.mpesa.provider import PayoutResult
    from lightning import State

    a0 = balance(wallet, DEMO[0])
    wallet.mpesa.payout = lambda phone, kes, ref: PayoutResult(State.FAILED, error="rejected")
    reply = alice.run("5", "300", "1", PIN)
    failed = wallet.db.session.scalar(movements().where(Transaction.type == "withdraw"))
    assert reply == "END " + t("en", "withdraw.failed", ref=failed.reference)
    assert failed.status == "failed" and balance(wallet, DEMO[0]) == a0
    wallet.mpesa.payout = lambda phone, kes, ref: PayoutResult(State.PENDING, error="timeout")
    alice.run("5", "300", "1", PIN)
    pending = wallet.db.session.scalars(select(Transaction).where(Transaction.status == "pending")).one()
    sats = debit_sats(300)
    assert balance(wallet, DEMO[0]) == a0 - sats - P.fee_sats("mpesa-withdraw", sats)
    assert pending.amount_sats == sats


# ------------------------------------------------------------------ my account
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_account_shows_balance_in_kes_and_history(alice, bob, wallet, lang):
    set_language(alice, lang)
    low = P.value("payment-min-sats")
    amounts = [low * n for n in range(1, 7)]
    for amount in amounts:
        alice.run("1", "0787654321", str(amount), "1", PIN)
    refs = list(wallet.db.session.scalars(select(Transaction.reference).where(
        Transaction.user_id == wallet.db.session.scalar(select(User.id).where(User.phone == DEMO[0])),
        Transaction.type == "send").order_by(Transaction.id)))
    have = balance(wallet, DEMO[0])
    address = lnurl.address(wallet.settings, DEMO[0])
    assert address == DEMO[0][1:] + "@" + lnurl.domain(wallet.settings)
    worth = t(lang, "account.kes", kes=kes_worth(have))  # the fixed price: no age to show
    assert alice.run("6") == "CON " + t(lang, "account", balance=have, kes=worth, address=address)
    history = alice.press("1")
    # the last HISTORY_LINES, newest first: amount + fee, the payee as people write it, the reference
    today = dt.datetime.now(dt.UTC).strftime("%d/%m")
    shown = [t(lang, "history.line", sign="-", amount=amount + P.fee_sats("internal", amount), who="0787654321",
               date=today, ref=ref) for amount, ref in zip(amounts, refs, strict=True)]
    assert history == "CON " + t(lang, "history", lines="".join(reversed(shown[-HISTORY_LINES:])))
    assert t("en", "history.line", sign="+", amount=amounts[-1], who="0712345678", date=today,
             ref=refs[-1]) in bob.run("6", "1")  # the payer, on the payee's statement


def test_language_switch_changes_every_screen(alice):
    assert alice.run("6", "2", "2") == "END " + t("sw", "language.done")
    assert alice.start().startswith("CON " + t("sw", "main", balance=1, requests="")[:6])
    assert alice.run("6", "2", "1") == "END " + t("en", "language.done")


def test_change_pin_requires_the_old_one(alice, wallet):
    new = "5739"
    b0 = balance(wallet, DEMO[1])
    left = P.value("pin-max-attempts") - 1
    assert alice.run("6", "3") == "CON " + t("en", "pinchange.old")
    assert alice.press("1111").startswith("CON " + t("en", "pin.wrong", left=left))
    assert alice.press(PIN) == "CON " + t("en", "pinchange.new", digits=4)
    assert alice.press("1234").startswith("CON " + t("en", "deny.weak-pin"))
    assert alice.press(new) == "CON " + t("en", "pinchange.repeat")
    assert alice.press(new) == "END " + t("en", "pinchange.done")
    assert t("en", "sms.pin-changed") in outbox(wallet, DEMO[0])
    # the old PIN no longer moves money; the new one does
    assert alice.run("1", "0787654321", "1000", "1", PIN).startswith("CON " + t("en", "pin.wrong", left=left))
    assert alice.run("1", "0787654321", "1000", "1", new).startswith("END ")
    assert balance(wallet, DEMO[1]) == b0 + 1000


def test_a_withdrawal_to_an_airtel_number_is_refused_before_anything_is_reserved(alice, wallet):
    before = snapshot(wallet)
    reply = alice.run("5", str(KES_MIN), "0733444555")  # Airtel Kenya
    assert reply == "CON " + t("en", "error.mpesa-phone") + "\n" + t("en", "withdraw.phone", kes=KES_MIN,
                                                                      phone=DEMO[0])
    assert snapshot(wallet) == before


def test_m_pesa_pays_only_safaricom_numbers():
    from helpers.infra.phone import safaricom

    assert safaricom("+254712345678") and safaricom("+254110123456")  # 07xx and the newer 011x
    assert not safaricom("+254733444555") and not safaricom("+254100123456")  # Airtel
    assert not safaricom("+256712345678")  # Uganda


def test_customer_care_number_on_a_failed_payout_screen_and_the_money_sms(tmp_path, seeded_sqlite):
    """SERVICE_NAME and SUPPORT_PHONE, as an operator sets them: the failure screen sends the
    customer to customer care, and the SMS that confirm money name the service and the number."""
    import shutil

    from app import create_app
    from helpers.infra import i18n
    from helpers.mpesa.provider import PayoutResult
    from lightning import State
    from tests.conftest import TEST_PEPPER, Dialer

    shutil.copyfile(seeded_sqlite, tmp_path / "care.db")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/care.db", "AUTO_CREATE_SCHEMA": False,
                      "PIN_PEPPER": TEST_PEPPER, "RATE_LIMITS": False, "INVOICE_POLL_S": 0, "WRITE_BEHIND_S": 0,
                      "SMS_AUTO_FLUSH": False, "SERVICE_NAME": "PesaBit", "SUPPORT_PHONE": "0700 123 456"})
    try:
        svc = app.extensions["wallet"]
        phone = Dialer(app.test_client(), DEMO[0])
        phone.run(PIN, PIN)
        svc.mpesa.payout = lambda _phone, _kes, _ref: PayoutResult(State.FAILED, error="rejected")
        reply = phone.run("5", str(KES_MIN), "1", PIN)
        assert reply.endswith(" Help: 0700 123 456") and reply.startswith("END ")
        phone.run("1", "0" + DEMO[1][4:], "1000", "1", PIN)
        sent = [text for text in outbox(svc, DEMO[0]) if "sent 1,000 sats" in text]
        assert sent and sent[0].startswith("PesaBit: ") and sent[0].endswith(" Help: 0700 123 456")
    finally:
        i18n.set_customer_care(i18n.BRAND, "")
        app.extensions["request_counter"].close()
        app.extensions["wallet"].openings.close()
        app.extensions["wallet"].db.dispose()
