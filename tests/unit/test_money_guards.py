"""Guards of money and access that a one-line slip would remove without any other test noticing
(issue 31, item 12; docs/mutation.md lists the mutants and `make mutation` runs them): the
price feed's outlier band and quorum, the policy's withdrawal fee and airtime daily limit, an
operator's debit of a PIN-locked customer, the console's redirect after sign-in, and the resume
path of a session whose PIN was typed wrong."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from urllib.parse import urlencode, urlsplit

import pytest
from sqlalchemy import select, text, update

from helpers.infra.i18n import t
from helpers.prices.feed import Answer, agree
from helpers.wallet import operators
from helpers.wallet.errors import InsufficientBalance
from helpers.wallet.rules import policy
from models import AuditEntry, User
from tests.conftest import DEMO, FIXED_PRICE, KES_MIN, PIN, balance
from tests.unit.test_console import operator, sign_in  # noqa: F401 - the console's own fixture and sign-in

P = policy()
BOB_LOCAL = "0" + DEMO[1][4:]


# ------------------------------------------------------------------ the price feed (helpers/prices/feed.py)
def answers(*prices: int) -> list[Answer]:
    return [Answer(f"source{n}", Decimal(price)) for n, price in enumerate(prices)]


def test_a_low_outlier_is_dropped_as_a_high_one_is():
    low = agree(answers(15_000_000, 15_300_000, 9_000_000), min_sources=2, outlier_pct=10)
    assert [a.dropped for a in low.answers] == [False, False, True]
    assert low.kes_per_btc == 15_150_000  # the median of the two that agree
    high = agree(answers(15_000_000, 15_300_000, 21_000_000), min_sources=2, outlier_pct=10)
    assert [a.dropped for a in high.answers] == [False, False, True] and high.kes_per_btc == 15_150_000


def test_the_quorum_counts_only_the_sources_that_agree():
    found = agree(answers(15_000_000, 15_200_000, 30_000_000), min_sources=3, outlier_pct=10)
    assert found.kes_per_btc is None and found.used == ("source0", "source1")


def test_answers_that_are_all_outliers_give_no_price_and_no_crash():
    found = agree(answers(10_000_000, 20_000_000), min_sources=1, outlier_pct=10)
    assert found.kes_per_btc is None and all(a.dropped for a in found.answers) and found.used == ()


# ------------------------------------------------------------------ the policy (atoms.metta)
def test_a_withdrawal_needs_its_m_pesa_fee_on_the_balance():
    sats = P.kes_to_sats_debit(KES_MIN, FIXED_PRICE)
    fee = P.fee_sats("mpesa-withdraw", sats)
    assert fee > 0
    assert P.withdraw(KES_MIN, sats + fee, 0, FIXED_PRICE).allowed
    refused = P.withdraw(KES_MIN, sats + fee - 1, 0, FIXED_PRICE)
    assert (refused.allowed, refused.reason) == (False, "insufficient-balance")


def test_airtime_counts_against_the_daily_limit():
    kes = P.airtime_bounds()[0]
    sats = P.kes_to_sats_debit(kes, FIXED_PRICE)
    cost = sats + P.fee_sats("airtime", sats)
    limit = P.value("daily-send-limit-sats")
    rich = limit * 10
    assert P.airtime(kes, rich, limit - sats, FIXED_PRICE).allowed
    refused = P.airtime(kes, rich, limit - sats + 1, FIXED_PRICE)
    assert (refused.allowed, refused.reason) == (False, "daily-limit")
    assert not P.airtime(kes, cost - 1, 0, FIXED_PRICE).allowed


# ------------------------------------------------------------------ an operator's debit (helpers/wallet/operators.py)
def test_a_debit_past_the_balance_of_a_pin_locked_customer_is_refused_as_such(wallet):
    """A PIN lock sends an operator's debit down its own path: it too never overdraws, and the
    operator reads why (the balance), not "this form was sent already"."""
    phone = DEMO[0]
    with wallet.db.write() as s:
        s.execute(update(User).where(User.phone == phone)
                  .values(pin_locked_until=dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)))
    before = balance(wallet, phone)
    with pytest.raises(InsufficientBalance) as refused:
        operators.adjust(wallet.db, "wanjiru", phone, -(before + 1), "ticket 12: chargeback", nonce="a" * 32)
    assert refused.value.balance_sats == before
    assert balance(wallet, phone) == before
    with wallet.db.read() as s:
        assert s.scalar(select(AuditEntry.id).where(AuditEntry.action == "debit")) is None
    assert operators.adjust(wallet.db, "wanjiru", phone, -before, "ticket 12: chargeback", nonce="b" * 32) == 0


# ------------------------------------------------------------------ the console's sign-in (helpers/web/admin.py)
def sign_in_to(client, target: str):
    """The console's own sign-in (tests/unit/test_console.py), sent to /admin/login?next=<target>."""
    post = client.post

    def to_target(path, *args, **kwargs):
        return post(f"{path}?{urlencode({'next': target})}" if path == "/admin/login" else path, *args, **kwargs)

    client.post = to_target
    try:
        return sign_in(client)
    finally:
        del client.post


@pytest.mark.parametrize("target", ["https://evil.example/admin", "//evil.example/admin", "http:/admin"])
def test_sign_in_never_redirects_off_the_console(client, operator, target):  # noqa: F811 - the fixture
    response = sign_in_to(client, target)
    assert response.status_code == 302
    where = urlsplit(response.headers["Location"])
    assert where.netloc in ("", "localhost") and where.path.startswith("/admin")
    assert "evil" not in response.headers["Location"]


def test_sign_in_returns_to_the_console_page_asked_for(client, operator):  # noqa: F811 - the fixture
    response = sign_in_to(client, "/admin/pending")
    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/admin/pending"


# ------------------------------------------------------------------ resuming a session (helpers/ussd/resume.py)
def test_a_pin_typed_wrong_is_never_kept_for_a_resume_nor_replayed(alice, wallet):
    """Wrong PINs leave the session on the PIN screen (a resumable one). The path it would resume
    from must hold none of them (the last one typed, nor one typed before it), and the next dial
    must not type any of them again."""
    length, attempts = P.value("pin-length"), P.value("pin-max-attempts")
    assert attempts > 2  # two wrong PINs, and the session still asks again
    wrong = [str(n) * length for n in range(10) if str(n) * length != PIN][:2]
    alice.run("1", BOB_LOCAL, str(P.value("payment-min-sats")), "1", *wrong)
    assert alice.reply.startswith("CON ")
    with wallet.db.read() as s:
        failures = s.scalar(select(User.pin_failures).where(User.phone == alice.phone))
        stored = [json.loads(row[0]) for row in s.execute(
            text("SELECT choices FROM ussd_sessions WHERE session_id = :sid AND choices IS NOT NULL"),
            {"sid": alice.session_id})]
    assert failures == len(wrong)
    kept = [token for choices in stored for token in str(choices.get("resume", "")).split("*")]
    assert not set(wrong) & set(kept)
    alice.session_id = ""  # the network drops the session
    alice.start()
    if alice.reply.startswith("CON " + t("en", "resume", what="").split("\n")[0]):
        alice.press("1")  # continue: whatever is replayed must not be a PIN typed before
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_failures).where(User.phone == alice.phone)) == failures


# ------------------------------------------------------------------ survivors of make mutation (docs/mutation.md)
def test_a_withdrawal_of_the_whole_balance_goes_through_and_is_described(alice, wallet):
    """The policy sees the balance before the reservation (what is left + sats + fee): a customer
    can withdraw everything they have, fee included. The statement line says what it was."""
    from tests.conftest import withdraw_terms

    kes, sats, fee, _price = withdraw_terms(KES_MIN)
    rest = balance(wallet, DEMO[0]) - (sats + fee)
    assert alice.run("1", BOB_LOCAL, str(rest), "1", PIN).startswith("END Sent")  # what is left: the cost
    assert balance(wallet, DEMO[0]) == sats + fee
    reply = alice.run("5", str(kes), "1", PIN)
    assert reply.startswith("END ") and balance(wallet, DEMO[0]) == 0, reply
    with wallet.db.read() as s:
        described = s.scalar(text("SELECT description FROM transactions WHERE type = 'withdraw'"))
    assert described == f"M-Pesa withdrawal KES {kes}"
