"""The language catalogs and the MeTTa policy."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from helpers.infra.config import MAX_ADDRESS_DOMAIN, MAX_SERVICE_NAME, MAX_SUPPORT_PHONE
from helpers.wallet import identity
from helpers.wallet.customers import users
from helpers.infra.i18n import BRAND, CATALOGS, EN, HELP_KEYS, SW, gsm7_length, set_customer_care, t
from helpers.lightning.lnurl_pay import MAX_TYPED_ADDRESS
from helpers.ussd.order_screens import SHORT_TO
from helpers.wallet.rules import Policy, PolicyError, policy
from helpers.wallet.savings import goals
from tests.conftest import FIXED_PRICE, KES_MAX

P = policy()
# The largest tier cap of each kind, in KES (issue 34)
TIER_KES = {what: max(P.value_of(f"tier-{what}-kes", str(n)) for n in range(P.value("top-tier") + 1))
            for what in ("payment", "day", "month", "balance")}
# The longest values a placeholder can take on a screen.
LONGEST = {
    "balance": 10**12, "amount": P.value("payment-max-sats"), "fee": 10**5, "total": 10**6 + 10**5,
    "min": P.value("payment-max-sats"), "max": P.value("payment-max-sats"), "kes": KES_MAX,
    "sats": P.value("payment-max-sats"), "phone": "+254712345678", "ref": "ABCDEFGH", "code": "ABCDEFGHIJ",
    "minutes": 1440, "left": 3, "digits": 4, "limit": P.value("daily-send-limit-sats"), "count": 3,
    "unit": "sats", "n": 3, "sign": "+", "kind": "withdraw", "date": "30/12*",
    "address": "254712345678@" + "w" * MAX_ADDRESS_DOMAIN, "payee": "w" * MAX_TYPED_ADDRESS,
    "what": "W" * 90, "party": "1234567", "valid": -(-P.value("quote-valid-s") // 60),
    "age": P.value("price-max-age-s") // 60, "hours": P.value("pin-reset-delay-h"),
    "days": P.value("unclaimed-return-days"),
    # issue 34: tiers and Verify my ID
    "tier": P.value("top-tier"), "day": TIER_KES["month"], "month": TIER_KES["month"],
    "cap": f"KES {TIER_KES['balance']:,}", "id": "9" * identity.ID_DIGITS[1], "names": "W" * users.NAME_LENGTH[1],
    "born": "31/12/1999", "low": identity.ID_DIGITS[1], "high": identity.ID_DIGITS[1],
    "cap_payment": TIER_KES["payment"], "cap_day": TIER_KES["day"], "cap_month": TIER_KES["month"],
    "cap_balance": TIER_KES["balance"], "name": "W" * users.NAME_LENGTH[1],
    "group": "W" * P.value("chama-name-max"), "otp": "9" * P.value("chama-code-digits"), "by": "+254712345678",
    "pct": 100, "to": "M-Pesa +254712345678", "receipt": "ABCDEFGHIJ",
}
# A claim SMS names the last day to claim a send in full (dd/mm/yyyy), where a statement line's
# date is dd/mm.
FULL_DATE_KEYS = {"sms.new-recipient": "30/12/2026"}
SCREEN_KEYS = [k for k in EN if not k.startswith(("sms.", "who.", "main.", "payreq.line", "history.line",
                                                   "account.", "name.now", "recipient.", "left.today"))]
# Messages shown above a prompt (re-prompts); the others only ever end a session on their own.
END_ONLY = {"error.expired", "error.dialled-past", "error.unavailable", "error.lightning", "error.too-many",
            "quote.expired", "price.unavailable",
            # only the movement under the lock knows the recipient's room (the PIN step's END); a tier
            # cap ends the session: nothing typed now would pass it
            "deny.recipient-full", "deny.tier-payment", "deny.tier-day", "deny.tier-month", "deny.tier-balance"}
PREFIXES = [k for k in EN if k.startswith(("error.", "deny.", "lnurl.", "pin.wrong", "pin.mismatch", "pin.set",
                                           "quote."))
            and k not in END_ONLY]


def fill(lang: str, key: str) -> str:
    values = dict(LONGEST)
    values["requests"] = t(lang, "main.requests", count=3)
    values["lines"] = "".join(t(lang, "payreq.line", n=n, amount=10**6, phone="+254712345678") for n in (1, 2, 3))
    values["how"] = max(t(lang, "tier.how"), t(lang, "tier.how-documents"), key=len)
    values["verify"] = t(lang, "limits.verify")
    values["level"] = max((t(lang, f"tier.{n}") for n in range(P.value("top-tier") + 1)), key=len)
    values["name"] = values["shown"] = "W" * users.NAME_LENGTH[1]
    values["now"] = t(lang, "name.now", name=values["name"])
    values["recipient"] = max((t(lang, k, name=values["name"]) for k in EN if k.startswith("recipient.")), key=len)
    if key in FULL_DATE_KEYS:
        values["date"] = FULL_DATE_KEYS[key]
    if key.startswith(("goal", "order", "sms.goal", "sms.order", "orders")):  # savings (issue 35)
        values["name"] = values["to"] = "W" * goals.NAME_LENGTH[1]
        values["date"] = "31/12/2027"
        values["saved"] = values["balance"]
        values["pct"] = policy().value("savings-autosave-max-pct")
        values["period"] = max((t(lang, k) for k in EN if k.startswith("period.")), key=len)
        values["kes"] = KES_MAX
        values["target"] = max(t(lang, "goal.target-sats", amount=10**12), t(lang, "goal.target-kes", kes=KES_MAX),
                               key=len)
        values["lines"] = "".join(t(lang, "goals.line", n=n, name=values["name"], amount=10**9) for n in (1, 2, 3))
    if key.startswith(("order", "sms.order", "orders")):  # an order's amount as typed: sats or KES
        values["amount"] = max(t(lang, "order.sats", amount=policy().value("standing-order-max-sats")),
                               t(lang, "order.kes", kes=policy().kes_bounds()[1]), key=len)
    if key in ("order", "order.pin", "order.done"):  # the whole destination: an address at its longest
        values["to"] = max(values["to"], "w" * MAX_TYPED_ADDRESS, "Paybill 1234567 acct ABCDEFGHIJKLM", key=len)
    if key == "goal":  # the screen drops the KES worth where it would not fit; without, it must
        values["kes"] = ""
    if key == "orders":  # the list cuts a destination to SHORT_TO characters
        values["to"] = "W" * SHORT_TO
        values["lines"] = "".join(t(lang, "orders.line", n=n, amount=values["amount"], period=values["period"],
                                    to=values["to"]) for n in (1, 2, 3))
    if key == "account":  # the screen drops the KES worth where it would not fit; without, it must
        values["kes"] = ""
    if key.startswith("mpesapay"):  # the longest business a payment names
        values["payee"] = "Paybill 1234567 acct ABCDEFGHIJKLM"
    if key == "mpesapay.recent":
        values["lines"] = "".join(t(lang, "send.recent-line", n=n, payee=values["payee"]) for n in (1, 2, 3))
        values["prompt"] = max((t(lang, "mpesapay.till"), t(lang, "mpesapay.paybill")), key=len)
    if key == "send.phone-recent":  # the screen drops payees to fit; the one left must fit
        values["lines"] = t(lang, "send.recent-line", n=3, payee="w" * 30)
    if key == "history":  # the screen drops its oldest lines to fit; the one line left must fit
        longest = max((t(lang, k) for k in EN if k.startswith("who.")), key=len)
        values["lines"] = t(lang, "history.line", sign="-", amount=10**12, who=longest, date="30/12*",
                            ref="X" * 24)
    if key.startswith(("chama", "sms.chama")):  # a list the screen trims to fit: at least its first line fits
        values["lines"] = max((t(lang, k, n=3, group=values["group"], amount=10**6, phone=values["phone"])
                               for k in ("chama.line-invited", "chama.pending-line", "chama.member-line")), key=len)
    return t(lang, key, **values)


def test_both_catalogs_have_the_same_keys_and_placeholders():
    assert EN.keys() == SW.keys()
    for key in EN:
        assert set(re.findall(r"{(\w+)}", EN[key])) == set(re.findall(r"{(\w+)}", SW[key])), key


@pytest.mark.parametrize("lang", ["en", "sw"])
@pytest.mark.parametrize("key", SCREEN_KEYS)
def test_every_screen_fits_160_gsm7_characters_with_its_longest_values(lang, key):
    text = fill(lang, key)
    assert gsm7_length(text) is not None and gsm7_length(text) <= 160, (key, len(text), text)


@pytest.mark.parametrize("lang", ["en", "sw"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_refusal_above_any_prompt_still_fits(lang, prefix):
    longest_prompt = max(("send.amount", "topup.amount", "withdraw.phone", "pin.create", "send.phone",
                          "send.ln.amount", "request.amount", "pinchange.new"),
                         key=lambda k: len(fill(lang, k)))
    screen = fill(lang, prefix) + "\n" + fill(lang, longest_prompt)
    assert gsm7_length(screen) <= 160, screen


# The screens that ask for the PIN (with their "9 Forgot PIN" line, issue 33) are shown again only
# under the PIN step's own refusals: a wrong PIN, or not a PIN. Every one fits under either.
PIN_PROMPTS = ("pin.enter", "withdraw.pin", "mpesapay.pin", "airtime.pin", "pinchange.old", "reset.pending",
               "reset.new", "goal.pin", "goal.break-pin", "order.pin", "goal.autosave-pin")


@pytest.mark.parametrize("lang", ["en", "sw"])
@pytest.mark.parametrize("prompt", PIN_PROMPTS)
def test_a_pin_refusal_above_any_pin_prompt_still_fits(lang, prompt):
    for refusal in ("pin.wrong", "pin.format"):
        screen = fill(lang, refusal) + "\n" + fill(lang, prompt)
        assert gsm7_length(screen) <= 160, screen


# SMS texts that carry a Lightning invoice are long by design (the phone joins the parts).
LONG_SMS = {"sms.invoice", "sms.request"}
# Issue 33's SMS texts: they fit one SMS with the longest service name and support number too.
SIM_SWAP_SMS = ("sms.sim-swap-hold", "sms.sim-swap-cleared", "sms.pin-reset-requested", "sms.pin-reset-cancelled",
                "sms.pin-reset-ready", "sms.pin-reset-stopped")
UNCLAIMED_SMS = ("sms.new-recipient", "sms.unclaimed-returned", "sms.unclaimed-gone")


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_every_sms_fits_one_message_with_its_longest_values(lang):
    for key in CATALOGS[lang]:
        if key.startswith("sms.") and key not in LONG_SMS:
            text = fill(lang, key)
            assert gsm7_length(text) is not None and gsm7_length(text) <= 160, (key, len(text), text)


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_issue_33_sms_fit_with_the_longest_name_and_support_number(lang, longest_care):
    for key in SIM_SWAP_SMS + UNCLAIMED_SMS:
        text = fill(lang, key)
        assert gsm7_length(text) is not None and gsm7_length(text) <= 160, (key, len(text), text)


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_sms_texts_are_gsm7(lang):
    for key, text in CATALOGS[lang].items():
        assert gsm7_length(text) is not None, key


def test_gsm7_counts_extension_characters_twice_and_rejects_others():
    assert gsm7_length("abc") == 3
    assert gsm7_length("€[") == 4
    assert gsm7_length("₿") is None
    assert gsm7_length("😀") is None


PRICES = [FIXED_PRICE, 9_876_543, 13_000_001, 20_000_000]  # KES per bitcoin


@pytest.mark.parametrize("price", PRICES)
def test_conversions_round_in_the_house_favour_by_less_than_one_sat(price):
    """Exact values as fractions: a top-up credits at most the exact sats (short by under one), a
    withdrawal debits at least the exact sats (over by under one); the spreads come from the
    policy, never from this test."""
    buy, sell = P.value_of("spread-bps", "buy"), P.value_of("spread-bps", "sell")
    per_btc = P.value("sats-per-btc")
    for kes in [1, 7, 149, 150, 151, 999, 12_345, 150_000]:
        exact_credit = Fraction(kes * per_btc * 10_000, price * (10_000 + buy))
        exact_debit = Fraction(kes * per_btc * 10_000, price * (10_000 - sell))
        credit, debit = P.kes_to_sats_credit(kes, price), P.kes_to_sats_debit(kes, price)
        assert exact_credit - 1 < credit <= exact_credit
        assert exact_debit <= debit < exact_debit + 1
        assert credit < debit  # the spread: buying and selling back never makes sats
        shown = P.sats_to_kes(credit, price)
        assert Fraction(credit * price, per_btc) - 1 < shown <= Fraction(credit * price, per_btc)


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_a_balance_of_ten_bitcoin_shows_its_worth_and_the_price_age(lang):
    """The account screen keeps the KES worth for any balance up to 10 BTC at ten times today's
    price, with the oldest age a price may have."""
    sats = 10 * P.value("sats-per-btc")
    fragment = t(lang, "account.kes-age", kes=P.sats_to_kes(sats, FIXED_PRICE * 10), age=LONGEST["age"])
    screen = t(lang, "account", **{**LONGEST, "balance": sats, "kes": fragment})
    assert gsm7_length(screen) <= 160, screen


def test_sats_to_kes_stays_exact_past_64_bit_products():
    sats, price = 10**12 + 12_345, FIXED_PRICE * 10  # sats x price is about 1.5e20
    assert P.sats_to_kes(sats, price) == sats * price // P.value("sats-per-btc")


def test_the_fixed_price_is_150_kes_per_1000_sats_before_the_spread():
    """The embedded default's price, as the demo has always shown it."""
    assert P.sats_to_kes(1000, FIXED_PRICE) == 150
    assert P.kes_to_sats_send(150, FIXED_PRICE) == 1000


def test_spend_decisions():
    low, high, daily = P.value("payment-min-sats"), P.value("payment-max-sats"), P.value("daily-send-limit-sats")
    assert P.spend(low, 0, low, 0).allowed
    assert P.spend(low - 1, 0, 10**9, 0).reason == "below-minimum"
    assert P.spend(high + 1, 0, 10**9, 0).reason == "above-maximum"
    assert P.spend(low, 1, low, 0).reason == "insufficient-balance"
    assert P.spend(low, 0, 10**9, daily - low + 1).reason == "daily-limit"
    assert P.spend(low, 0, 10**9, daily - low).allowed


def test_pin_failures_lock_and_lock_time_grows():
    attempts = P.value("pin-max-attempts")
    assert P.pin_failure(1, 0).attempts_left == attempts - 1
    first = P.pin_failure(attempts, 0).lock_minutes
    assert first > 0 and P.pin_failure(attempts, 1).lock_minutes > first


def test_policy_errors_become_exceptions(tmp_path):
    broken = tmp_path / "atoms.metta"
    broken.write_text('(= (payment-min-sats) "ten")\n(= (amount-decision $a) (if (< $a (payment-min-sats)) A B))\n')
    engine = Policy(broken)
    with pytest.raises(PolicyError):
        engine.amount(5)
    with pytest.raises(PolicyError):
        engine.value("payment-min-sats")
    with pytest.raises(PolicyError):
        engine.value("no-such-rule")
    with pytest.raises(PolicyError):
        P.fee_sats("bogus", 5)


@pytest.fixture
def longest_care():
    """The longest service name and customer care number the settings allow."""
    set_customer_care("W" * MAX_SERVICE_NAME, "+" + "9" * (MAX_SUPPORT_PHONE - 1))
    yield
    set_customer_care(BRAND, "")


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_every_screen_still_fits_with_the_longest_name_and_support_number(lang, longest_care):
    for key in SCREEN_KEYS:
        text = fill(lang, key)
        assert gsm7_length(text) is not None and gsm7_length(text) <= 160, (key, len(text), text)
    for key in HELP_KEYS:  # each ends with the number to call
        assert fill(lang, key).endswith("+" + "9" * (MAX_SUPPORT_PHONE - 1)), key
        assert BRAND not in fill(lang, key)


def test_without_a_support_number_no_help_line_is_added():
    assert t("en", "withdraw.failed", ref="X") == EN["withdraw.failed"].format(ref="X")
