"""The language catalogs and the MeTTa policy."""

from __future__ import annotations

import re

import pytest

from helpers.infra.config import MAX_ADDRESS_DOMAIN
from helpers.infra.i18n import CATALOGS, EN, SW, gsm7_length, t
from helpers.lightning.lnurl_pay import MAX_TYPED_ADDRESS
from helpers.wallet.rules import Policy, PolicyError, policy

P = policy()
# The longest values a placeholder can take on a screen.
LONGEST = {
    "balance": 10**12, "amount": P.value("payment-max-sats"), "fee": 10**5, "total": 10**6 + 10**5,
    "min": P.value("payment-max-sats"), "max": P.value("payment-max-sats"), "kes": P.value("kes-max"),
    "sats": P.value("payment-max-sats"), "phone": "+254712345678", "ref": "ABCDEFGH", "code": "ABCDEFGHIJ",
    "minutes": 1440, "left": 3, "digits": 4, "limit": P.value("daily-send-limit-sats"), "count": 3,
    "unit": "sats", "n": 3, "sign": "+", "kind": "withdraw", "date": "30/12*",
    "address": "254712345678@" + "w" * MAX_ADDRESS_DOMAIN, "payee": "w" * MAX_TYPED_ADDRESS,
}
SCREEN_KEYS = [k for k in EN if not k.startswith(("sms.", "who.", "main.", "payreq.line", "history.line"))]
# Messages shown above a prompt (re-prompts); the others only ever end a session on their own.
END_ONLY = {"error.expired", "error.unavailable", "error.lightning", "error.too-many"}
PREFIXES = [k for k in EN if k.startswith(("error.", "deny.", "lnurl.", "pin.wrong", "pin.mismatch", "pin.set"))
            and k not in END_ONLY]


def fill(lang: str, key: str) -> str:
    values = dict(LONGEST)
    values["requests"] = t(lang, "main.requests", count=3)
    values["lines"] = "".join(t(lang, "payreq.line", n=n, amount=10**6, phone="+254712345678") for n in (1, 2, 3))
    if key == "history":  # the screen drops its oldest lines to fit; the one line left must fit
        longest = max((t(lang, k) for k in EN if k.startswith("who.")), key=len)
        values["lines"] = t(lang, "history.line", sign="-", amount=10**12, who=longest, date="30/12*",
                            ref="X" * 24)
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
    longest_prompt = max(("send.amount", "topup.amount", "withdraw.phone", "pin.create", "pin.enter",
                          "withdraw.pin", "send.phone", "send.ln.amount", "request.amount", "pinchange.new"),
                         key=lambda k: len(fill(lang, k)))
    screen = fill(lang, prefix) + "\n" + fill(lang, longest_prompt)
    assert gsm7_length(screen) <= 160, screen


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_sms_texts_are_gsm7(lang):
    for key, text in CATALOGS[lang].items():
        assert gsm7_length(text) is not None, key


def test_gsm7_counts_extension_characters_twice_and_rejects_others():
    assert gsm7_length("abc") == 3
    assert gsm7_length("€[") == 4
    assert gsm7_length("₿") is None
    assert gsm7_length("😀") is None


def test_policy_numbers_and_conversions():
    rate_kes, rate_sats = P.value("rate-kes"), P.value("rate-sats")
    assert P.kes_to_sats_credit(rate_kes) == rate_sats
    assert P.kes_to_sats_credit(rate_kes + 1) == (rate_kes + 1) * rate_sats // rate_kes
    assert P.kes_to_sats_debit(rate_kes + 1) == -(-(rate_kes + 1) * rate_sats // rate_kes)
    for kes in range(1, 400):  # credits round down, debits round up: conversions never create sats
        assert P.kes_to_sats_credit(kes) <= kes * rate_sats / rate_kes <= P.kes_to_sats_debit(kes)
    assert P.value("kes-min") * rate_sats // rate_kes >= P.value("payment-min-sats")


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
