"""Issue 33, receipts that help: the END and the SMS of a send or a payout say what is left of
today's limit ("You can send 45,000 sats more today"), in both languages, where it fits one screen
or SMS; a replay's END, which knows no day's total, says nothing of it."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from helpers.infra.i18n import CATALOGS, gsm7_length, receipt_text, t
from helpers.wallet.ledger import movements as movements_module
from helpers.wallet.rules import policy
from models import Transaction, utcnow
from tests.conftest import DEMO, PIN, movements, outbox
from tests.unit.test_catalog_and_policy import LONGEST
from tests.unit.test_flows import set_language
from tests.unit.test_mpesa_money import FakeDaraja, b2c_record, daraja, deliver, payout_row, withdraw  # noqa: F401

P = policy()
LIMIT = P.value("daily-send-limit-sats")
BOB_LOCAL = "0787654321"
# Every receipt that says what is left, with the texts it is built from.
RECEIPTS = ("send.done", "payreq.done", "lnsend.done", "withdraw.done", "mpesapay.done", "airtime.done", "sms.sent",
            "sms.withdraw", "sms.airtime")


def last_send(wallet) -> Transaction:
    with wallet.db.read() as s:
        return s.scalars(movements().where(Transaction.type == "send").order_by(Transaction.id.desc())).first()


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_each_send_says_what_is_left_of_the_day_on_the_screen_and_by_sms(alice, wallet, lang):
    set_language(alice, lang)
    first, second = P.value("payment-min-sats") * 3, P.value("payment-min-sats") * 7
    alice.run("1", BOB_LOCAL, str(first), "1", PIN)
    done = alice.run("1", BOB_LOCAL, str(second), "1", PIN)
    row = last_send(wallet)
    left = LIMIT - first - second  # fees do not count against the limit
    assert done == "END " + receipt_text(lang, "send.done", left, amount=second, phone=DEMO[1], fee=row.fee_sats,
                                         ref=row.reference, balance=alice_balance(wallet))
    assert t(lang, "left.today", left=left) in done
    assert outbox(wallet, DEMO[0])[-1].endswith(t(lang, "left.today", left=left))


def alice_balance(wallet) -> int:
    from tests.conftest import balance
    return balance(wallet, DEMO[0])


def test_sends_of_an_earlier_day_do_not_count(monkeypatch, alice, wallet):
    amount = P.value("payment-min-sats") * 4
    alice.run("1", BOB_LOCAL, str(amount), "1", PIN)
    tomorrow = utcnow() + dt.timedelta(days=1)
    monkeypatch.setattr(movements_module, "utcnow", lambda: tomorrow)  # the day the limit counts
    done = alice.run("1", BOB_LOCAL, str(amount), "1", PIN)
    assert t("en", "left.today", left=LIMIT - amount) in done  # yesterday's send is not in it


def test_a_withdrawal_says_it_on_the_screen_and_its_sms_at_the_post(alice, wallet, daraja):  # noqa: F811
    kes = P.kes_bounds()[0] * 2
    request = withdraw(alice, kes)  # pending: its END promises an SMS
    row = payout_row(wallet)
    assert deliver(wallet, "b2c", "result", request, FakeDaraja.b2c_result(b2c_record(request))) == (200, "settled")
    assert outbox(wallet, DEMO[0])[-1].endswith(t("en", "left.today", left=LIMIT - row.amount_sats))


def test_a_withdrawal_paid_at_once_says_it_on_the_end(alice, wallet):
    kes = P.kes_bounds()[0] * 2
    done = alice.run("5", str(kes), "1", PIN)
    with wallet.db.read() as s:
        sats = s.scalar(select(Transaction.amount_sats).where(Transaction.type == "withdraw"))
    assert done.endswith(t("en", "left.today", left=LIMIT - sats)), done


def test_a_replay_of_a_send_says_nothing_of_the_day(alice, wallet):
    amount = P.value("payment-min-sats") * 2
    alice.run("1", BOB_LOCAL, str(amount), "1", PIN)
    receipt = movements_module.replay_of(wallet.db, movements_module.find_by_key(wallet.db, last_send(wallet)
                                                                                  .idempotency_key))
    assert receipt.replay and receipt.left_today is None


@pytest.mark.parametrize("lang", list(CATALOGS))
@pytest.mark.parametrize("key", RECEIPTS)
def test_every_receipt_fits_one_screen_or_sms_and_says_it_with_everyday_values(lang, key):
    everyday = {"amount": 25_000, "sats": 33_400, "kes": 5_000, "fee": 250, "balance": 123_456,
                "phone": "+254712345678", "ref": "ABCDEFGH", "code": "QK10TX4N7P", "payee": "Till 5218700"}
    if key == "lnsend.done":
        everyday["payee"] = "amina@blink.sv"
    text = receipt_text(lang, key, LIMIT - 25_000, **everyday)
    assert t(lang, "left.today", left=LIMIT - 25_000) in text
    assert gsm7_length(text) <= 160
    longest = {k: v for k, v in LONGEST.items() if k != "left"}
    if key.startswith("mpesapay"):  # the longest business a payment names (as the catalog tests have it)
        longest["payee"] = "Paybill 1234567 acct ABCDEFGHIJKLM"
    assert gsm7_length(receipt_text(lang, key, LIMIT, **longest)) <= 160  # dropped where it would not fit
