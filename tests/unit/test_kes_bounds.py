"""Amounts a customer types in KES have round bounds set in KES in atoms.metta; the sats they are
worth follow the price, never the other way round (issue 31, item 11). And the withdrawal's
number screen offers the customer's own number only when M-Pesa can pay it."""

from __future__ import annotations

import pytest

from helpers.infra.i18n import t
from helpers.wallet.rules import policy
from helpers.wallet.customers import users
from helpers.wallet.ledger import movements
from tests.conftest import FIXED_PRICE, PIN, snapshot

P = policy()
PRICES = [FIXED_PRICE // 2, FIXED_PRICE, FIXED_PRICE * 10]  # the daily limit (sats) allows the KES maximum


@pytest.mark.parametrize("price", PRICES)
def test_the_kes_bounds_are_the_policy_s_own_round_numbers_at_any_price(price):
    low, high = P.kes_bounds()
    assert (low, high) == (P.value("kes-min"), P.value("kes-max"))
    assert low % 10 == 0 and high % 1000 == 0  # what a person would write, not what a price gave
    for way in ("topup", "withdraw"):  # inside M-Pesa's own bounds both ways
        assert P.value_of("mpesa-min-kes", way) <= low and high <= P.value_of("mpesa-max-kes", way)
    assert P.topup(low, price).allowed and P.topup(low - 1, price).reason == "below-minimum"
    assert P.topup(high, price).allowed and P.topup(high + 1, price).reason == "above-maximum"
    assert P.withdraw(low, 10**12, 0, price).allowed
    assert P.withdraw(low - 1, 10**12, 0, price).reason == "below-minimum"
    assert P.withdraw(high, 10**12, 0, price).allowed
    assert P.withdraw(high + 1, 10**12, 0, price).reason == "above-maximum"


def test_a_kes_amount_in_bounds_worth_less_than_the_sats_minimum_still_goes_through_m_pesa():
    """The price has risen so far that the KES minimum buys fewer sats than payment-min-sats: the
    sats floor of M-Pesa money follows the price (as airtime's does); it is not refused."""
    low, _high = P.kes_bounds()
    price = FIXED_PRICE
    while P.kes_to_sats_credit(low, price) >= P.value("payment-min-sats"):
        price *= 2
    assert P.topup(low, price).allowed
    assert P.withdraw(low, 10**12, 0, price).allowed
    sats = P.kes_to_sats_debit(low, price)
    fee = P.fee_sats("mpesa-withdraw", sats)
    assert P.withdraw(low, sats + fee - 1, 0, price).reason == "insufficient-balance"  # balance still counts


def test_a_top_up_worth_no_sat_at_all_is_refused():
    low, _high = P.kes_bounds()
    absurd = low * P.value("sats-per-btc") * 2  # one KES buys less than a hundred-millionth of a sat
    assert P.kes_to_sats_credit(low, absurd) == 0
    assert P.topup(low, absurd).reason == "below-minimum"


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_the_amount_screens_show_the_round_bounds(alice, wallet, lang):
    low, high = P.kes_bounds()
    if lang == "sw":
        alice.run("6", "2", "2")  # My account > language > Kiswahili
    assert alice.run("4") == "CON " + t(lang, "topup.amount", min=low, max=high)
    assert alice.run("5") == "CON " + t(lang, "withdraw.amount", min=low, max=high)
    assert alice.run("1", "0787654321", "1") == "CON " + t(lang, "send.kes", phone="+254787654321", min=low, max=high)
    refused = alice.run("5", str(low - 1))
    assert refused == "CON " + t(lang, "deny.below-minimum", min=low, max=high, unit="KES") + "\n" + \
        t(lang, "withdraw.amount", min=low, max=high)


def _fund(wallet, phone: str) -> None:
    with wallet.db.write() as s:
        movements.credit_adjustment(s, users.get(s, phone).id, P.value("payment-max-sats"), "test", f"test:{phone}")


def test_my_number_is_offered_only_when_m_pesa_can_pay_it(dial, wallet):
    low, _high = P.kes_bounds()
    airtel = dial("+254733444555")  # Airtel Kenya: M-Pesa pays Safaricom numbers only
    airtel.run(PIN, PIN)
    _fund(wallet, airtel.phone)
    assert not wallet.mpesa.accepts_phone(airtel.phone)
    before = snapshot(wallet)
    assert airtel.run("5", str(low)) == "CON " + t("en", "withdraw.phone-other", kes=low)
    assert airtel.press("1") == "CON " + t("en", "error.phone") + "\n" + t("en", "withdraw.phone-other", kes=low)
    assert snapshot(wallet) == before
    safaricom = dial("+254712345678")
    safaricom.run(PIN, PIN)
    _fund(wallet, safaricom.phone)
    assert safaricom.run("5", str(low)) == "CON " + t("en", "withdraw.phone", kes=low, phone=safaricom.phone)
