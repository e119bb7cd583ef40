"""Everyday use from a feature phone: a payment the network cut off continued from the next dial
(PIN asked again), the last payees offered as numbered choices, and shortcut dials that carry the
whole path in the first request."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from helpers.infra.i18n import t
from models import UssdSession
from tests.conftest import DEMO, PIN, Dialer, balance, snapshot

BOB_LOCAL = "0" + DEMO[1][4:]


def drop(phone: Dialer) -> None:
    """The network ends the session: the phone's next dial is a new session."""
    phone.session_id = ""


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_a_dropped_send_is_continued_and_the_pin_asked_again(alice, wallet, lang):
    from tests.unit.test_flows import set_language

    set_language(alice, lang)
    alice.run("1", BOB_LOCAL, "2000")  # at the confirm screen when the network drops
    confirm = alice.reply
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    drop(alice)
    offered = alice.start()
    assert offered == "CON " + t(lang, "resume", what=confirm[4:].split("\n")[0])
    assert alice.press("1") == confirm  # where it stopped
    assert alice.press("1") == "CON " + t(lang, "pin.enter")  # the PIN, in this session
    assert alice.press(PIN).startswith("END " + t(lang, "send.done", amount=2000, phone=DEMO[1], fee=0, ref="",
                                                   balance=0)[:12])
    assert balance(wallet, DEMO[0]) == a0 - 2000 and balance(wallet, DEMO[1]) == b0 + 2000
    drop(alice)
    assert alice.start().startswith("CON " + t(lang, "main", balance=1, requests="")[:6])  # offered once


def test_a_session_dropped_at_the_pin_screen_resumes_there_without_its_pin(alice, wallet):
    alice.run("5", "300", "1")  # at the PIN screen of a withdrawal
    pin_screen = alice.reply
    drop(alice)
    alice.start()
    assert alice.press("1") == pin_screen
    with wallet.db.read() as s:  # no PIN was ever stored to be replayed
        stored = [row[0] for row in s.execute(text("SELECT choices FROM ussd_sessions WHERE choices IS NOT NULL"))]
    assert stored and not any(PIN in (value or "") for value in stored)


def test_start_over_goes_to_the_main_menu_and_moves_nothing(alice, wallet):
    alice.run("1", BOB_LOCAL, "2000")
    drop(alice)
    alice.start()
    before = snapshot(wallet)
    assert alice.press("x").startswith("CON " + t("en", "error.option"))  # neither: asked again
    assert alice.press("2").startswith("CON " + t("en", "main", balance=1, requests="")[:6])
    assert snapshot(wallet) == before
    drop(alice)
    assert alice.start().startswith("CON " + t("en", "main", balance=1, requests="")[:6])  # not offered again


def test_after_the_window_a_dropped_session_is_not_offered(alice, wallet):
    alice.run("1", BOB_LOCAL, "2000")
    window = wallet.policy.value("resume-window-s")
    with wallet.db.write() as s:
        s.execute(UssdSession.__table__.update().values(
            last_activity=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=window + 1)))
    drop(alice)
    assert alice.start().startswith("CON " + t("en", "main", balance=1, requests="")[:6])


def test_a_finished_or_menu_only_session_is_not_offered(alice, wallet):
    alice.run("1", BOB_LOCAL, "2000", "1", PIN)  # done: END
    drop(alice)
    assert alice.start().startswith("CON " + t("en", "main", balance=1, requests="")[:6])
    alice.press("6")  # browsing My Account is nothing to continue
    drop(alice)
    assert alice.start().startswith("CON " + t("en", "main", balance=1, requests="")[:6])


def test_a_shortcut_dial_carries_the_whole_path(alice, wallet):
    """*384*123*1*0787654321*2000# : Africa's Talking sends 1*0787654321*2000 as the first text."""
    alice.session_id = "ATUid_shortcut"
    reply = alice.post(f"1*{BOB_LOCAL}*2000", session_id="ATUid_shortcut")
    assert reply.startswith("CON " + t("en", "send.confirm", amount=2000, phone=DEMO[1], fee=0,
                                       total=2000, recipient="").split("\n")[0])
    b0 = balance(wallet, DEMO[1])
    assert alice.post(f"1*{BOB_LOCAL}*2000*1", session_id="ATUid_shortcut") == "CON " + t("en", "pin.enter")
    alice.post(f"1*{BOB_LOCAL}*2000*1*{PIN}", session_id="ATUid_shortcut")
    assert balance(wallet, DEMO[1]) == b0 + 2000


def test_the_last_three_payees_are_offered_and_a_number_picks_one(alice, wallet, dial):
    for phone in ("0798765432", "0711000111", "0722000222", BOB_LOCAL, "0798765432"):
        alice.run("1", phone, "1000", "1", PIN)
    screen = alice.run("1")
    # newest first, each once, numbers with their middle hidden
    assert screen == "CON " + t("en", "send.phone-recent", lines="".join(
        t("en", "send.recent-line", n=n, payee=p) for n, p in ((1, "0798***432"), (2, "0787***321"),
                                                             (3, "0722***222"))))
    c0 = balance(wallet, DEMO[2])
    assert alice.press("1").startswith("CON " + t("en", "send.amount", phone=DEMO[2], min=1, max=1)[:20])
    alice.press("1500", "1", PIN)
    assert balance(wallet, DEMO[2]) == c0 + 1500


def test_a_choice_keeps_meaning_the_payee_it_meant_when_the_list_changes(alice, wallet, dial):
    alice.run("1", BOB_LOCAL, "1000", "1", PIN)
    alice.run("1", "0798765432", "1000", "1", PIN)  # recent: carol, bob
    first = alice.run("1", "2")  # bob, in this session
    assert DEMO[1] in first
    Dialer(alice.client, DEMO[0]).run("1", "0711000111", "1000", "1", PIN)  # another session pays someone new
    b0 = balance(wallet, DEMO[1])
    alice.press("1000", "1", PIN)
    assert balance(wallet, DEMO[1]) == b0 + 1000  # still bob


def test_no_payee_yet_no_list_and_a_number_beyond_it_is_refused(alice, wallet):
    assert alice.run("1") == "CON " + t("en", "send.phone")
    alice.run("1", BOB_LOCAL, "1000", "1", PIN)
    assert alice.run("1", "3").startswith("CON " + t("en", "error.option"))


# ------------------------------------------------------------------ tills and paybills
def quote_terms(wallet, kes: int) -> tuple[int, int]:
    price = wallet.prices.current().kes_per_btc
    sats = wallet.policy.kes_to_sats_debit(kes, price)
    return sats, wallet.policy.fee_sats("mpesa-withdraw", sats)


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_paying_a_till_debits_the_quoted_sats_and_names_the_till(alice, wallet, lang):
    from tests.conftest import VALID_MIN, outbox
    from tests.unit.test_flows import set_language

    set_language(alice, lang)
    kes = 450
    sats, fee = quote_terms(wallet, kes)
    a0 = balance(wallet, DEMO[0])
    assert alice.run("8") == "CON " + t(lang, "mpesapay")
    assert alice.press("1") == "CON " + t(lang, "mpesapay.till")
    assert alice.press("52187").startswith("CON " + t(lang, "mpesapay.amount", payee="Till 52187", min=1, max=1)[:18])
    assert alice.press(str(kes)) == "CON " + t(lang, "mpesapay.pin", kes=kes, payee="Till 52187", sats=sats, fee=fee,
                                               valid=VALID_MIN)
    reply = alice.press(PIN)
    assert reply.startswith("END " + t(lang, "mpesapay.done", kes=kes, payee="Till 52187", code="X", sats=sats,
                                       fee=fee, balance=0).split(". ")[0])
    assert balance(wallet, DEMO[0]) == a0 - sats - fee
    assert any("Till 52187" in sms and f"{kes}" in sms for sms in outbox(wallet, DEMO[0]))


def test_paying_a_bill_takes_its_account_and_refuses_bad_numbers(alice, wallet):
    before = snapshot(wallet)
    assert alice.run("8", "2", "12").startswith("CON " + t("en", "error.shortcode"))
    assert alice.run("8", "2", "888880", "TOO-LONG-ACCOUNT-REF").startswith("CON " + t("en", "error.account"))
    assert snapshot(wallet) == before
    sats, fee = quote_terms(wallet, 300)
    a0 = balance(wallet, DEMO[0])
    alice.run("8", "2", "888880", "ACC123", "300", PIN)
    assert alice.reply.startswith("END Paid 300 KES to Paybill 888880 acct ACC123")
    assert balance(wallet, DEMO[0]) == a0 - sats - fee


def test_a_failed_business_payment_gives_the_sats_back_once(alice, wallet):
    from helpers.mpesa.provider import PayoutResult
    from lightning import State

    a0 = balance(wallet, DEMO[0])
    wallet.mpesa.pay_business = lambda *args: PayoutResult(State.FAILED, error="rejected")
    reply = alice.run("8", "1", "52187", "300", PIN)
    assert reply.startswith("END " + t("en", "withdraw.failed", ref="X")[:20])
    assert balance(wallet, DEMO[0]) == a0


def test_paying_a_till_from_several_sessions_at_once_never_overdraws(app, wallet, dial):
    import threading

    carol = dial(DEMO[2])
    carol.run(PIN, PIN)
    have = balance(wallet, DEMO[2])
    kes = 2000
    sats, fee = quote_terms(wallet, kes)
    affordable = have // (sats + fee)
    phones = []
    for _ in range(affordable + 2):
        phone = Dialer(app.test_client(), DEMO[2])
        phone.run("8", "1", "52187", str(kes))
        phones.append(phone)
    gate = threading.Barrier(len(phones))
    replies = []

    def pay(phone):
        gate.wait()
        replies.append(phone.press(PIN))

    threads = [threading.Thread(target=pay, args=(p,)) for p in phones]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    paid = sum(r.startswith("END Paid") for r in replies)
    assert paid == affordable and balance(wallet, DEMO[2]) == have - paid * (sats + fee) >= 0
    replay = phones[0].post(phones[0].text)  # Africa's Talking sends a confirmation again
    assert balance(wallet, DEMO[2]) == have - paid * (sats + fee) and replay.startswith("END")


def test_a_session_paying_meanwhile_cannot_be_continued_elsewhere(alice, wallet, client):
    """The reviewer's case: session A's PIN step is under way (a slow payment) when the network
    drops it; a new dial must not pay the same thing again."""
    alice.run("1", BOB_LOCAL, "2000", "1")  # A at the PIN screen
    a = Dialer(client, DEMO[0])
    a.session_id, a.inputs = alice.session_id, list(alice.inputs)
    b = Dialer(client, DEMO[0])
    assert b.start().startswith("CON " + t("en", "resume", what="x").split("\n")[0])  # A looks dropped
    b0 = balance(wallet, DEMO[1])
    assert a.press(PIN).startswith("END Sent")  # A's payment goes through
    assert b.press("1") == "END " + t("en", "resume.gone")  # B may not continue it
    assert balance(wallet, DEMO[1]) == b0 + 2000  # once


def test_a_continued_session_can_no_longer_pay_in_its_old_session(alice, wallet, client):
    alice.run("1", BOB_LOCAL, "2000", "1")
    old = Dialer(client, DEMO[0])
    old.session_id, old.inputs = alice.session_id, list(alice.inputs)
    new = Dialer(client, DEMO[0])
    new.start()
    b0 = balance(wallet, DEMO[1])
    continued = new.press("1")  # taken over: at the confirm screen again (the bare PIN prompt says nothing)
    assert continued.startswith("CON " + t("en", "send.confirm", amount=2000, phone=DEMO[1], fee=0,
                                           total=2000, recipient="").split("\n")[0])
    assert old.press(PIN) == "END " + t("en", "error.expired")  # the old session is done with
    assert balance(wallet, DEMO[1]) == b0
    new.press("1", PIN)
    assert balance(wallet, DEMO[1]) == b0 + 2000


def test_the_last_tills_and_paybills_are_offered_with_their_accounts(alice, wallet):
    alice.run("8", "1", "52187", "300", PIN)
    alice.run("8", "2", "888880", "ACC123", "300", PIN)
    assert alice.run("8", "1") == "CON " + t("en", "mpesapay.recent", lines=t("en", "send.recent-line", n=1,
                                                                                  payee="Till 52187"),
                                             prompt=t("en", "mpesapay.till"))
    a0 = balance(wallet, DEMO[0])
    assert alice.run("8", "2", "1").startswith("CON " + t("en", "mpesapay.amount", payee="Paybill 888880 acct ACC123",
                                                          min=1, max=1)[:30])
    alice.press("300", PIN)
    assert alice.reply.startswith("END Paid 300 KES to Paybill 888880 acct ACC123")
    assert balance(wallet, DEMO[0]) < a0
    assert alice.run("8", "1", "2").startswith("CON " + t("en", "error.option"))  # only one till paid before


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_the_resume_offer_names_the_payment_never_a_refusal(alice, wallet, lang):
    """Issue 31, 9: cut off right after a refused key on the confirm screen, the offer says what
    would be paid (recipient and amount), not the refusal shown above the screen."""
    from tests.unit.test_flows import set_language

    set_language(alice, lang)
    alice.run("1", BOB_LOCAL, "2000")
    heading = alice.reply[4:].split("\n")[0]
    assert alice.press("7").startswith("CON " + t(lang, "error.option"))  # refused, then the network drops
    drop(alice)
    offered = alice.start()
    assert offered == "CON " + t(lang, "resume", what=heading)
    assert "2,000" in heading or "2000" in heading
    assert t(lang, "error.option") not in offered


def pin_failures(wallet, phone: str) -> tuple[int, int]:
    with wallet.db.read() as s:
        found = s.execute(text("SELECT pin_failures, pin_locks FROM users WHERE phone = :p"), {"p": phone}).one()
    return found[0], found[1]


@pytest.mark.parametrize("pin", [PIN, "1357"])  # right and wrong: neither is checked nor counted
def test_a_pin_in_the_dialled_code_is_never_taken(alice, wallet, pin):
    """Issue 31, 8: *384*123*1*0787654321*2000*1*<PIN># arrives as one request: the PIN would sit
    in the call log and the gateway's logs. Nothing is paid or counted; the customer is told to
    dial again and type the PIN only when asked."""
    b0, failures = balance(wallet, DEMO[1]), pin_failures(wallet, DEMO[0])
    code = wallet.service_code
    reply = alice.post(f"1*{BOB_LOCAL}*2000*1*{pin}", session_id=f"ATUid_dialled_{pin}")
    assert reply == "END " + t("en", "pin.not-in-dial", code=code)
    assert balance(wallet, DEMO[1]) == b0 and pin_failures(wallet, DEMO[0]) == failures
    again = alice.post(f"1*{BOB_LOCAL}*2000*1*{pin}*1", session_id=f"ATUid_dialled_more_{pin}")
    assert again == "END " + t("en", "pin.not-in-dial", code=code)  # deeper still: the same advice
    assert alice.run("1", BOB_LOCAL, "2000", "1", PIN).startswith("END Sent")  # asked for: taken
    assert balance(wallet, DEMO[1]) == b0 + 2000


def test_a_new_customer_cannot_set_a_pin_in_the_dialled_code(dial, wallet):
    phone = dial(DEMO[2])
    assert phone.post(f"{PIN}*{PIN}", session_id="ATUid_dialled_new") == "END " + t(
        "en", "pin.not-in-dial", code=wallet.service_code)
    with wallet.db.read() as s:
        assert s.execute(text("SELECT pin_hash FROM users WHERE phone = :p"), {"p": DEMO[2]}).scalar() is None
    assert phone.run(PIN, PIN).startswith("CON " + t("en", "pin.set"))  # typed when asked: set


def test_a_dialled_code_past_a_confirm_step_is_not_told_the_session_ended(alice, wallet):
    """A first request deep in a menu: the customer never had a session to end."""
    reply = alice.post(f"1*{BOB_LOCAL}*1*1000*1", session_id="ATUid_dialled_deep")  # past the KES quote
    assert reply == "END " + t("en", "error.dialled-past", code=wallet.service_code)
    assert reply != "END " + t("en", "error.expired")
