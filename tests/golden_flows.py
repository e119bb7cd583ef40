"""Scripted USSD flows whose every screen is recorded as a golden transcript (tests/golden/).

Each flow is a name, a language and a list of steps. A step is either a `Session` (a phone dials
the shortcode: a fresh session, then the inputs typed one by one) or an action between sessions
(`PayInvoice`: an outside wallet pays one of our invoices on the mock Lightning node; `SetConfig`:
a deployment setting). A session never goes on after an END: the replayer refuses such a script
(a new session is what a real user would get).

Every flow exists in English and Swahili. Demo users start with language `en` and no PIN, so a
flow first onboards each demo user it uses; the Swahili variant then switches them with My Account >
Language > 2 (the only way a user sets a language). Newcomers are registered in DEFAULT_LANGUAGE: the
Swahili onboarding flows run on a deployment whose default language is Swahili.

Amounts that are limits come from the policy (`V("payment-min-sats", -1)`), resolved at replay
time; the transcript shows the number actually typed.

Run / re-record: see tests/unit/test_golden_transcripts.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from tests.conftest import DEMO, PIN

ALICE, BOB, CAROL = DEMO  # +254712345678 (100,000 sats), +254787654321 (50,000), +254798765432 (75,000)
ALICE_LOCAL, BOB_LOCAL, CAROL_LOCAL = "0712345678", "0787654321", "0798765432"
NEW_PIN = "5739"
WRONG_PIN = "9999"
# Typed M-Pesa confirmation codes: 10 characters with a 0 or 1 in them, so that they can never be
# taken for a random reference or a simulated receipt by the normaliser.
MPESA_CODE = "QK10TX4N7P"
MPESA_CODE_2 = "RB2T0W9ZL1"


# ------------------------------------------------------------------ what a step can type
@dataclass(frozen=True)
class V:
    """A policy value typed as a number: policy.value(name) * times + plus."""

    name: str
    plus: int = 0
    times: int = 1

    def resolve(self, policy: Any) -> str:
        value = policy.value(self.name)
        return str(value * self.times + self.plus)


@dataclass(frozen=True)
class Repeat:
    """The same input typed `count` times in a row (count: an int or a policy value)."""

    token: str
    count: Union[int, V]

    def expand(self, policy: Any) -> list[str]:
        n = self.count if isinstance(self.count, int) else int(self.count.resolve(policy))
        return [self.token] * n


Input = Union[str, V, Repeat]


def resolve_inputs(inputs: tuple[Input, ...], policy: Any) -> list[str]:
    typed: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            typed.append(item)
        elif isinstance(item, V):
            typed.append(item.resolve(policy))
        elif isinstance(item, Repeat):
            typed.extend(item.expand(policy))
        else:
            raise TypeError(f"not an input: {item!r}")
    return typed


# ------------------------------------------------------------------ steps
@dataclass(frozen=True)
class Session:
    """`phone` dials (a new session), then types `inputs` one at a time."""

    phone: str
    inputs: tuple[Input, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class PayInvoice:
    """An outside Lightning wallet pays the invoice whose reference was shown as `placeholder`
    (e.g. "<REF-1>") in this transcript: the mock node settles it (POST /test/pay-invoice)."""

    placeholder: str


@dataclass(frozen=True)
class SetConfig:
    """A deployment setting, for the rest of the flow."""

    key: str
    value: Any


@dataclass(frozen=True)
class SimSwap:
    """`phone`'s SIM card is swapped now (the simulated provider: POST /test/sim-swap)."""

    phone: str


Step = Union[Session, PayInvoice, SetConfig, SimSwap]


def dial(phone: str, *inputs: Input, note: str = "") -> Session:
    return Session(phone, tuple(inputs), note)


@dataclass(frozen=True)
class Flow:
    name: str
    lang: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def id(self) -> str:
        return f"{self.name}.{self.lang}"


LANGS = ("en", "sw")
_LANGUAGE_OPTION = {"en": "1", "sw": "2"}


def _prelude(lang: str, phones: tuple[str, ...]) -> list[Step]:
    """Each demo user of the flow creates a PIN; in Swahili then picks Kiswahili in My Account."""
    steps: list[Step] = []
    for phone in phones:
        if lang == "en":
            steps.append(dial(phone, PIN, PIN, "0", note="onboarding, then exit"))
        else:
            steps.append(dial(phone, PIN, PIN, "6", "2", _LANGUAGE_OPTION[lang],
                              note="onboarding, then My Account > Language"))
    return steps


# ------------------------------------------------------------------ the flows, per language
# Each builder takes the language and returns (demo users to prepare, steps).
def onboarding_success(lang: str):
    newcomer = "+254722000111"  # Africa's Talking gives every caller in E.164
    return (), [
        *([SetConfig("DEFAULT_LANGUAGE", lang)] if lang != "en" else []),
        dial(newcomer, PIN, PIN, "0", note="a newcomer dials, creates a PIN, sees the menu, exits"),
        dial(newcomer, "0", note="the next dial goes straight to the menu"),
    ]


def onboarding_pin_mismatch(lang: str):
    newcomer = "+254722000112"
    return (), [
        *([SetConfig("DEFAULT_LANGUAGE", lang)] if lang != "en" else []),
        dial(newcomer, PIN, NEW_PIN, NEW_PIN, NEW_PIN, "1", note="the second PIN differs: back to create"),
        dial(newcomer, "0", note="the PIN chosen on the second try is set"),
    ]


def onboarding_weak_pin(lang: str):
    newcomer = "+254722000113"
    return (), [
        *([SetConfig("DEFAULT_LANGUAGE", lang)] if lang != "en" else []),
        dial(newcomer, "1234", "0000", "12", "abcd", "12345", note="weak and malformed PINs re-prompt"),
        dial(newcomer, PIN, note="hung up before repeating: onboarding starts again"),
        dial(newcomer, PIN, PIN, "0"),
    ]


def main_menu(lang: str):
    return (ALICE,), [
        dial(ALICE, "1", "00", "2", "00", "3", "00", "4", "00", "5", "00", "6", "00", "7", "00", "0",
             note="every option of the main menu, and home (00) from each"),
    ]


def exit_flow(lang: str):
    return (ALICE,), [dial(ALICE, "0")]


def navigation_back_home(lang: str):
    return (ALICE,), [
        dial(ALICE, "1", "0", "1", BOB_LOCAL, "0", "0", "6", "1", "0", "0", "6", "3", "00",
             "3", BOB_LOCAL, "00", "5", V("kes-min"), "0", "0", "0",
             note="0 goes back one screen, 00 home, 0 on the main menu exits"),
        dial(ALICE, "1", BOB_LOCAL, "5000", "0", "0", "00", "4", "500", "0", "0", "00", "0",
             note="back from a confirmation screen moves nothing"),
    ]


def invalid_options(lang: str):
    return (ALICE,), [
        dial(ALICE, "99", "x", "11", "8", note="unknown main-menu options re-prompt"),
        dial(ALICE, "7", "1", "5", "0", "6", "7", "x", "1", "2", "0", "2", "9", "00", "0",
             note="no requests to pay; account, history and language refuse other keys"),
        dial(ALICE, "1", BOB_LOCAL, "5000", "2", "x", "00", "4", "500", MPESA_CODE, "3", "00", "0",
             note="confirmation screens accept only 1 (or 0)"),
    ]


def chama(lang: str):
    payee = "0733444555"
    return (ALICE, BOB, CAROL), [
        dial(ALICE, "9", "4", "8", "W", "Wanawake", "0", note="a name too short; back from the rule"),
        dial(ALICE, "9", "4", "8", "Wanawake", "12", "2", "9", "1",
             note="a chama: a name, then approvals needed (1-9), then what a leaver gets back"),
        dial(ALICE, "9", "4", "1", "5", BOB_LOCAL, note="the chair invites by phone"),
        dial(ALICE, "9", "4", "1", "5", CAROL_LOCAL),
        dial(BOB, "9", "4", "1", "1", note="the invited accept in their Chama menu"),
        dial(CAROL, "9", "4", "1", "1"),
        dial(ALICE, "9", "4", "1", "1", "5000", PIN, note="a contribution from the balance, behind the PIN"),
        dial(ALICE, "9", "4", "1", "2", "1", payee, "9000", "3000", PIN, note="a payout proposed to any phone"),
        dial(BOB, "9", "4", "1", "3", "1", "1", PIN, note="the first approval of two: nothing paid yet"),
        dial(CAROL, "9", "4", "1", "3", "1", "1", PIN, note="the second approval pays"),
        dial(ALICE, "9", "4", "1", "3", "0", "4", "1", note="nothing waits; the statement, then by SMS"),
        dial(ALICE, "9", "4", "1", "7", CAROL_LOCAL, "1", note="the chair names a treasurer"),
        dial(BOB, "9", "4", "1", "6", "1", PIN, note="a member leaves with what the rule gives back"),
    ]


def chama_kes(lang: str):
    return (ALICE, BOB, CAROL), [
        dial(ALICE, "9", "4", "8", "Pamoja", "2", "2", note="a chama whose leavers get half back"),
        dial(ALICE, "9", "4", "1", "5", BOB_LOCAL),
        dial(ALICE, "9", "4", "1", "5", CAROL_LOCAL),
        dial(BOB, "9", "4", "1", "1"),
        dial(CAROL, "9", "4", "1", "1"),
        dial(ALICE, "9", "4", "1", "1", "20000", PIN),
        dial(ALICE, "9", "4", "1", "2", "2", "0722000111", "50", "300", PIN,
             note="a payout in KES to M-Pesa: the sats fixed now, with the withdrawal fee"),
        dial(BOB, "9", "4", "1", "3", "1", "1", PIN),
        dial(CAROL, "9", "4", "1", "3", "1", "1", PIN, note="the second approval pays through M-Pesa"),
        dial(ALICE, "9", "4", "1", "2", "3", "12", "123456", "300", PIN, note="a payout to a till (5-7 digits)"),
        dial(BOB, "9", "4", "1", "3", "1", "2", PIN, note="a rejection: the rule can no longer be met"),
        dial(BOB, "9", "4", "1", "1", "4000", PIN),
        dial(BOB, "9", "4", "1", "6", "1", PIN, note="a leaver gets half of what they put in back"),
        dial(CAROL, "9", "4", "1", "4", note="the statement shows the leave rule; the other half stayed"),
    ]


def send_success(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", PIN),
        dial(BOB, "0", note="the recipient sees the new balance"),
        dial(ALICE, "0"),
    ]


def send_in_kes(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, "1", "x", "5", "300", "1", PIN,
             note="1 on the amount screen: the amount in KES (a letter and too little re-prompt); the "
                  "confirm screen shows the sats and how long the rate holds"),
        dial(BOB, "0", note="the recipient got the sats"),
    ]


def resume_send(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, "5000", note="the network cuts the session at the confirm screen"),
        dial(ALICE, "1", "1", PIN, note="the next dial offers to continue; the PIN is asked in this session"),
        dial(ALICE, "1", BOB_LOCAL, "1000", note="cut again"),
        dial(ALICE, "x", "2", "0", note="neither answer asks again; start over: the main menu"),
    ]


def recent_payees(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, "1000", "1", PIN),
        dial(ALICE, "1", "1", "1000", "1", PIN, note="the last payees, numbered: 1 picks the first"),
    ]


def pay_till_and_bill(lang: str):
    return (ALICE,), [
        dial(ALICE, "8", "1", "52187", "450", PIN, note="a till: the quote, then the PIN"),
        dial(ALICE, "8", "2", "12", "888880", "ACC123", "300", PIN,
             note="a paybill: a short number is refused, then its account"),
    ]


def buy_airtime(lang: str):
    return (ALICE,), [
        dial(ALICE, "8", "3", "1", V("airtime-min-kes", -1), "100", PIN,
             note="airtime for one's own number: below the minimum is refused, then the quote and the PIN"),
        dial(ALICE, "8", "3", "2", "07123", BOB_LOCAL, "50", PIN,
             note="for another number: a bad number is refused"),
        dial(ALICE, "8", "3", "2", "1", V("airtime-max-kes", 1), "00", "0",
             note="the last number is offered; above the maximum is refused"),
    ]


def send_new_recipient(lang: str):
    return (ALICE,), [
        dial(ALICE, "1", "0733444555", V("payment-min-sats"), "1", PIN,
             note="the minimum, to a number not yet registered"),
        dial("+254733444555", PIN, PIN, "0", note="the recipient dials: onboarding, then the sats are there"),
    ]


def send_insufficient_balance(lang: str):
    return (CAROL,), [
        dial(CAROL, "1", ALICE_LOCAL, V("payment-max-sats"), "00", "0",
             note="the maximum is allowed by the policy, but more than the balance"),
    ]


def send_below_minimum(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, V("payment-min-sats", -1), V("payment-min-sats"), "1", PIN,
             note="below the minimum re-prompts; the minimum itself goes through"),
    ]


def send_above_maximum(lang: str):
    return (ALICE,), [
        dial(ALICE, "1", BOB_LOCAL, V("payment-max-sats", +1), "abc", "-5", "10.5", "0", "00", "0",
             note="above the maximum, and amounts that are not whole numbers"),
    ]


def send_own_phone(lang: str):
    return (ALICE,), [
        dial(ALICE, "1", ALICE_LOCAL, ALICE, ALICE.lstrip("+"), "00", "0"),
    ]


def send_bad_phone(lang: str):
    return (ALICE,), [
        dial(ALICE, "1", "12345", "abc", "07123", "+12025550143", "0", "0"),
    ]


def send_wrong_pin(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", WRONG_PIN, "12", PIN,
             note="a wrong PIN and a malformed one re-prompt; the right one sends"),
    ]


def send_pin_lock(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", Repeat(WRONG_PIN, V("pin-max-attempts")),
             note="pin-max-attempts wrong PINs lock the account"),
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", PIN, note="a new session: still locked, even with the right PIN"),
        dial(ALICE, "6", "3", PIN, note="changing the PIN is locked too"),
        dial(ALICE, "0", note="the balance is unchanged"),
    ]


def receive_invoice(lang: str):
    return (ALICE,), [
        dial(ALICE, "2", V("payment-min-sats", -1), V("payment-max-sats", +1), "abc", "2500",
             note="an invoice for 2,500 sats, sent by SMS"),
        PayInvoice("<REF-1>"),
        dial(ALICE, "6", "1", "0", "0", "0", note="credited: balance and history"),
    ]


def request_payment(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "3", ALICE_LOCAL, "12345", BOB_LOCAL, V("payment-min-sats", -1), "3000",
             note="own and bad numbers refused; a request to another user"),
        dial(BOB, "7", "1", "1", PIN, note="the payer pays it from menu 7"),
        dial(BOB, "0", note="paid: no more requests"),
        dial(ALICE, "6", "1", "00", "0", note="the requester is credited"),
    ]


def request_payment_non_user(lang: str):
    outsider = "0799000111"
    return (ALICE,), [
        dial(ALICE, "3", outsider, "2000", note="the payer has no account: the SMS carries a Lightning invoice"),
        PayInvoice("<REF-1>"),
        dial(ALICE, "0", note="credited once the invoice is paid"),
    ]


def pay_request_menu(lang: str):
    return (ALICE, BOB, CAROL), [
        dial(ALICE, "3", BOB_LOCAL, "3000"),
        dial(CAROL, "3", BOB_LOCAL, "4000"),
        dial(BOB, "7", "3", "2", "0", "1", "1", WRONG_PIN, PIN,
             note="two requests: invalid choice, open one, back, pay the other (after a wrong PIN)"),
        dial(BOB, "7", "1", "0", "00", "0", note="one request left"),
        dial(ALICE, "0"),
    ]


def topup_good_code(lang: str):
    return (ALICE,), [
        dial(ALICE, "4", V("kes-min", -1), V("kes-max", +1), "500", MPESA_CODE.lower(), "1",
             note="limits, then a code typed in lower case"),
        dial(ALICE, "0"),
    ]


def topup_bad_code(lang: str):
    return (ALICE,), [
        dial(ALICE, "4", "500", "ABC123", "QK10TX4N7P9", "QK10-TX4N7", "0", "00", "0",
             note="codes of the wrong format re-prompt"),
    ]


def topup_code_used(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "4", V("kes-min"), MPESA_CODE_2, "1"),
        dial(ALICE, "4", "500", MPESA_CODE_2, "00", "0", note="the same code again"),
        dial(BOB, "4", "500", MPESA_CODE_2, "00", "0", note="by another user too"),
    ]


def withdraw_own_phone(lang: str):
    return (ALICE,), [
        dial(ALICE, "5", V("kes-min", -1), V("kes-max", +1), "500", "1", PIN),
        dial(ALICE, "0"),
    ]


def withdraw_other_phone(lang: str):
    return (ALICE,), [
        dial(ALICE, "5", V("kes-min"), "123", "0722000999", WRONG_PIN, PIN,
             note="a bad number, then another M-Pesa number; a wrong PIN first"),
        dial(ALICE, "0"),
    ]


def account_history(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "6", "1", "0", "0", "0", note="only the opening balance"),
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", PIN),
        dial(ALICE, "4", "500", MPESA_CODE, "1"),
        dial(ALICE, "5", "500", "1", PIN),
        dial(ALICE, "6", "1", "00", "0", note="sent, top-up and withdrawal, newest first"),
        dial(BOB, "6", "1", "0", "0", "0", note="the recipient's side"),
    ]


def language_change(lang: str):
    mine = _LANGUAGE_OPTION[lang]
    other = _LANGUAGE_OPTION["sw" if lang == "en" else "en"]
    return (ALICE,), [
        dial(ALICE, "6", "2", other, note="switch to the other language"),
        dial(ALICE, "6", "2", "0", "0", "0", note="every screen in it"),
        dial(ALICE, "6", "2", mine, note="and back"),
        dial(ALICE, "0"),
    ]


def change_pin(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "6", "3", PIN, NEW_PIN, NEW_PIN),
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", PIN, NEW_PIN, note="the old PIN is wrong now"),
    ]


def change_pin_wrong_old(lang: str):
    return (ALICE,), [
        dial(ALICE, "6", "3", WRONG_PIN, "12", PIN, "1234", NEW_PIN, "5740", NEW_PIN, NEW_PIN,
             note="wrong old PIN, malformed, then weak and mismatched new PINs"),
        dial(ALICE, "6", "3", NEW_PIN, "0", "0", "0", "0", note="back out of a PIN change"),
    ]


def forgot_pin(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "6", "3", "9", "1", note="Forgot PIN from My Account > Change PIN"),
        dial(ALICE, "1", PIN, note="money out waits; the current PIN cancels the reset"),
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", "9", "1", note="Forgot PIN from the PIN step"),
        dial(ALICE, "5", WRONG_PIN, "0", "0", note="a wrong PIN does not cancel it"),
    ]


def sim_swap_hold(lang: str):
    return (ALICE, BOB), [
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", note="at the PIN step when the SIM is swapped"),
        SimSwap(ALICE),
        dial(ALICE, "1", "1", PIN, note="continued where it stopped: the PIN step reads the swap"),
        dial(ALICE, "5", note="withdraw"),
        dial(ALICE, "8", note="pay a till, a paybill or airtime"),
        dial(ALICE, "3", note="request a payment"),
        dial(ALICE, "6", "3", note="change the PIN"),
        dial(BOB, "1", ALICE_LOCAL, "5000", "1", PIN, note="receiving goes on"),
        dial(ALICE, "2", "2000", note="so does an invoice"),
    ]


def names_before_the_pin(lang: str):
    return (ALICE, BOB), [
        dial(BOB, "6", "4", "x", "12345", "Juma  otieno", note="My Account > Name: too short, digits, then a name"),
        dial(BOB, "6", "4", "0", "0", "0", note="the name is shown; back out"),
        dial(ALICE, "1", BOB_LOCAL, "5000", "1", PIN, note="the confirm screen names the recipient"),
        dial(ALICE, "1", "0722000999", "2000", "00", "0", note="a number nobody registered"),
    ]


def identity_tiers(lang: str):
    newcomer = "+254722000114"  # tier 0: the phone only
    return (ALICE,), [
        *([SetConfig("DEFAULT_LANGUAGE", lang)] if lang != "en" else []),
        dial(newcomer, PIN, PIN, "6", "5", "0", "0", "0", note="a newcomer: the limits of the phone alone"),
        dial(ALICE, "1", "0722000114", "40000", "1", PIN, note="a verified customer sends them 40,000 sats"),
        dial(newcomer, "1", ALICE_LOCAL, "35000", note="more than the phone alone may send a day"),
        dial(newcomer, "6", "5", "1", "123", "12345678", "Amina", "Amina Wanjiru", "3101", "31011990", PIN,
             note="Verify my ID: a short ID number, one name, a short date re-prompt; the registry matches"),
        dial(newcomer, "1", ALICE_LOCAL, "35000", "1", PIN, note="the same send now goes through"),
    ]


def savings_goal(lang: str):
    """Issue 35: open a goal (a bad date first), move sats in behind the PIN, switch auto-save on,
    break it."""
    return (ALICE,), [
        dial(ALICE, "9", "2", "Bike", "2", "2500000", "01012000", "31122030", note="a goal in sats, a past date"),
        dial(ALICE, "9", "1", "1", "1", "2000", PIN, note="sats move in behind the PIN"),
        dial(ALICE, "9", "1", "1", "3", V("savings-autosave-max-pct", 1), "10", PIN,
             note="auto-save: a share of each receipt, at most the policy's"),
        dial(ALICE, "9", "1", "1", "2", PIN, note="taken out early, for the policy's fee"),
        dial(ALICE, "9", "1", note="no open goal left"),
    ]


def standing_order(lang: str):
    """Issue 35: a weekly order to a phone, set up with the PIN once, listed, cancelled."""
    return (ALICE,), [
        dial(ALICE, "9", "3", "9", "1", BOB_LOCAL, "1", "10", V("standing-order-max-sats"), "2", PIN),
        dial(ALICE, "9", "3", "1", "1", note="listed, then cancelled"),
        dial(ALICE, "9", "3", "0"),
    ]


def standing_order_kinds(lang: str):
    """Issue 35: orders to a till and a paybill (in KES, converted at each run's price) and to a
    Lightning address (in sats), listed and cancelled from My Account."""
    return (ALICE,), [
        dial(ALICE, "9", "3", "9", "4", "12", "52187", V("kes-min", -1), V("kes-min"), "2", PIN,
             note="a till: a short number, then below the KES minimum"),
        dial(ALICE, "9", "3", "9", "5", "888880", "ACC123", V("kes-min", times=2), "3", PIN, note="a paybill"),
        dial(ALICE, "9", "3", "9", "3", "carol", "carol@pay.example.com", "3", "2", V("kes-min"), "1", PIN,
             note="a Lightning address: not an address, a unit not offered, then KES"),
        dial(ALICE, "6", "6", "2", "1", note="My Account lists them; the paybill is cancelled"),
        dial(ALICE, "6", "6", "0"),
    ]


BUILDERS = {
    "onboarding-success": onboarding_success,
    "onboarding-pin-mismatch": onboarding_pin_mismatch,
    "onboarding-weak-pin": onboarding_weak_pin,
    "main-menu": main_menu,
    "exit": exit_flow,
    "navigation-back-home": navigation_back_home,
    "invalid-options": invalid_options,
    "send-success": send_success,
    "send-in-kes": send_in_kes,
    "resume-send": resume_send,
    "recent-payees": recent_payees,
    "pay-till-and-bill": pay_till_and_bill,
    "buy-airtime": buy_airtime,
    "send-new-recipient": send_new_recipient,
    "send-insufficient-balance": send_insufficient_balance,
    "send-below-minimum": send_below_minimum,
    "send-above-maximum": send_above_maximum,
    "send-own-phone": send_own_phone,
    "send-bad-phone": send_bad_phone,
    "send-wrong-pin": send_wrong_pin,
    "send-pin-lock": send_pin_lock,
    "receive-invoice": receive_invoice,
    "request-payment": request_payment,
    "request-payment-non-user": request_payment_non_user,
    "pay-request-menu": pay_request_menu,
    "topup-good-code": topup_good_code,
    "topup-bad-code": topup_bad_code,
    "topup-code-used": topup_code_used,
    "withdraw-own-phone": withdraw_own_phone,
    "withdraw-other-phone": withdraw_other_phone,
    "account-history": account_history,
    "account-language": language_change,
    "account-change-pin": change_pin,
    "account-change-pin-wrong-old": change_pin_wrong_old,
    "forgot-pin": forgot_pin,
    "sim-swap-hold": sim_swap_hold,
    "names-before-the-pin": names_before_the_pin,
    "identity-tiers": identity_tiers,
    "savings-goal": savings_goal,
    "standing-order": standing_order,
    "standing-order-kinds": standing_order_kinds,
    "chama": chama,
    "chama_kes": chama_kes,
}


def _build(name: str, lang: str) -> Flow:
    phones, steps = BUILDERS[name](lang)
    return Flow(name, lang, tuple(_prelude(lang, phones) + list(steps)))


FLOWS: list[Flow] = [_build(name, lang) for name in BUILDERS for lang in LANGS]
