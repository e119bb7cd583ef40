"""Issue 33, names before the PIN: a customer gives their name in My Account (fixed once verified);
a payer's confirm screen names the recipient as M-Pesa does (first name, last initial), says a
customer gave no name, or that the number is not registered and will get an SMS to claim; the
look-ups a payer may make a day are limited (atoms.metta `name-lookups`), past them no one is
named."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from helpers.infra.i18n import t
from helpers.wallet.customers import users
from helpers.wallet.rules import policy
from models import User, utcnow
from tests.conftest import DEMO, PIN, snapshot

P = policy()
BOB_LOCAL, CAROL_LOCAL, STRANGER = "0787654321", "0798765432", "0722000999"


def name_of(wallet, phone: str) -> str | None:
    with wallet.db.read() as s:
        return s.scalar(select(User.name).where(User.phone == phone))


def confirm_screen(payer, number: str) -> str:
    """The confirm screen of a send of the smallest amount to `number`."""
    return payer.run("1", number, str(P.value("payment-min-sats")))


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_a_name_given_in_my_account_is_shown_to_a_payer_as_first_name_and_initial(wallet, alice, bob, lang):
    bob.run("6", "2", {"en": "1", "sw": "2"}[lang])
    assert bob.run("6", "4", "  amina   wanjiru otieno ") == "END " + t(
        lang, "name.done", name="AMINA WANJIRU OTIENO", shown="AMINA O.")
    assert name_of(wallet, DEMO[1]) == "AMINA WANJIRU OTIENO"
    screen = confirm_screen(alice, BOB_LOCAL)
    assert t("en", "recipient.name", name="AMINA O.") in screen
    assert "WANJIRU" not in screen and "OTIENO" not in screen  # a payer learns no more than M-Pesa shows
    assert alice.press("1", PIN).startswith("END ")  # and the send goes on as before


def test_the_confirm_screen_tells_a_customer_without_a_name_from_a_number_nobody_registered(wallet, alice, bob):
    assert t("en", "recipient.unnamed") in confirm_screen(alice, BOB_LOCAL)
    assert t("en", "recipient.new") in confirm_screen(alice, STRANGER)
    assert t("en", "recipient.new") in confirm_screen(alice, CAROL_LOCAL)  # a demo row with no PIN yet


def test_look_ups_past_the_daily_cap_name_no_one(wallet, alice, bob):
    bob.run("6", "4", "Juma Otieno")
    cap, _window = P.rate_limit("name-lookups")
    named = t("en", "recipient.name", name="JUMA O.")
    for _ in range(cap):
        assert named in confirm_screen(alice, BOB_LOCAL)
    past = confirm_screen(alice, BOB_LOCAL)
    assert past.startswith("CON " + t("en", "send.confirm", amount=P.value("payment-min-sats"), phone=DEMO[1],
                                      fee=P.fee_sats("internal", P.value("payment-min-sats")),
                                      total=P.value("payment-min-sats"), recipient="").split("\n")[0])
    assert named not in past and t("en", "recipient.new") not in confirm_screen(alice, STRANGER)
    assert t("en", "recipient.unnamed") not in past  # not even whether the number is a customer
    assert alice.press("1", PIN).startswith("END ")  # the send itself is not limited


def test_showing_the_confirm_screen_again_in_a_session_counts_once(wallet, alice, bob):
    cap, _window = P.rate_limit("name-lookups")
    confirm_screen(alice, BOB_LOCAL)
    for _ in range(cap + 2):  # a wrong key re-shows the screen
        assert t("en", "recipient.unnamed") in alice.press("7")
    assert t("en", "recipient.unnamed") in confirm_screen(alice, BOB_LOCAL)  # the second look-up of the day


def test_a_verified_name_is_fixed(wallet, bob):
    bob.run("6", "4", "Juma Otieno")
    with wallet.db.write() as s:
        s.execute(update(User).where(User.phone == DEMO[1]).values(name_verified_at=utcnow()))
    assert bob.run("6", "4", "Somebody Else") == "END " + t("en", "name.fixed", name="JUMA OTIENO")
    assert name_of(wallet, DEMO[1]) == "JUMA OTIENO"


@pytest.mark.parametrize("typed", ["x", "12345", "J0hn", "W" * (users.NAME_LENGTH[1] + 1), "Amina!", "-- ..",
                                   "Zoë Amina"])
def test_what_is_not_a_name_re_prompts_and_changes_nothing(wallet, bob, typed):
    before = snapshot(wallet), name_of(wallet, DEMO[1])
    assert bob.run("6", "4", typed) == "CON " + t("en", "error.name") + "\n" + t("en", "name.set", now="")
    assert (snapshot(wallet), name_of(wallet, DEMO[1])) == before


def test_names_are_tidied_to_one_form():
    assert users.clean_name(" o'brien   mary-jane ") == "O'BRIEN MARY-JANE"
    assert users.shown_name("AMINA") == "AMINA"
    assert users.shown_name("AMINA WANJIRU OTIENO") == "AMINA O."
