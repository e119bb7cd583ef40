"""The BTC/KES price: fake public price APIs on loopback (every adapter checked against the shape
its docs show), the median they agree on, the price the wallet converts at, quotes the customer
confirms, and what stops when there is no price."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time

import pytest
from sqlalchemy import func, select

from app import create_app
from helpers.infra.config import ConfigError, finalise, load_config
from helpers.infra.i18n import t
from helpers.wallet import prices
from helpers.wallet.prices import PriceBook, PriceConfigError
from models import Price, Quote
from tests.conftest import DEMO, PIN, TEST_PEPPER, VALID_MIN, balance, snapshot
from tests.fakes.fake_prices import FakePrices

MARKET = 13_000_000  # KES per bitcoin at the fake sources
SOURCES = ("coingecko", "coinbase", "kraken")


@pytest.fixture
def fake():
    server = FakePrices(MARKET)
    yield server
    server.stop()
    assert server.violations == [], server.violations  # every request matched the APIs' docs


@pytest.fixture
def app_overrides(fake):
    return {"PRICE_SOURCES": fake.base(*SOURCES), "PRICE_MIN_SOURCES": 2, "PRICE_OUTLIER_PCT": 5.0,
            "PRICE_TIMEOUT_S": 1.0}


def book(wallet, **changes) -> PriceBook:
    """The wallet's price book with some settings changed (lower-case names)."""
    wallet.prices = PriceBook(wallet.db, dataclasses.replace(wallet.settings, **changes), wallet.policy)
    return wallet.prices


def stored(wallet) -> int:
    with wallet.db.read() as s:
        return s.scalar(select(func.count()).select_from(Price))


# ------------------------------------------------------------------ the feed
def test_all_sources_agree_and_the_median_is_stored(wallet, fake):
    reference = wallet.prices.refresh()
    assert reference.used == SOURCES
    assert abs(reference.kes_per_btc - MARKET) <= 1  # the USD source goes through USD/KES: rounding
    current = wallet.prices.current()
    assert (current.kes_per_btc, current.source) == (reference.kes_per_btc, prices.FEED)
    assert fake.calls == {"coingecko": 1, "coinbase": 1, "kraken": 1, "fx": 1}


def test_one_source_down_leaves_enough(wallet, fake):
    fake.trouble["coinbase"] = "down"
    reference = wallet.prices.refresh()
    assert reference.used == ("coingecko", "kraken") and reference.kes_per_btc is not None
    assert "coinbase: HTTP 503" in reference.describe()


def test_a_slow_source_is_not_waited_for(wallet, fake):
    fake.trouble["coingecko"] = "slow"
    started = time.monotonic()
    reference = wallet.prices.refresh()
    assert time.monotonic() - started < fake.slow_s  # the timeout, not the slow answer, ended it
    assert reference.used == ("coinbase", "kraken")


def test_a_source_far_from_the_median_is_dropped_and_logged(wallet, fake, caplog):
    fake.set("coinbase", MARKET * 3 // 2)  # 50% off
    with caplog.at_level(logging.WARNING):
        reference = wallet.prices.refresh()
    assert reference.used == ("coingecko", "kraken")
    assert abs(reference.kes_per_btc - MARKET) <= 1
    assert "price source coinbase" in caplog.text and "dropped" in caplog.text


def test_too_few_agreeing_sources_store_no_price(wallet, fake):
    fake.trouble.update(coinbase="down", kraken="garbage")
    reference = wallet.prices.refresh()
    assert reference.kes_per_btc is None and stored(wallet) == 0
    assert wallet.prices.current() is None


def test_a_usd_source_without_the_rate_has_no_answer(wallet, fake):
    fake.trouble["fx"] = "down"
    reference = wallet.prices.refresh()
    assert reference.used == ("coingecko", "coinbase")
    assert "kraken: no USD/KES rate" in reference.describe()


def test_a_price_older_than_the_policy_allows_is_no_price(wallet, fake, monkeypatch):
    wallet.prices.refresh()
    assert wallet.prices.current() is not None
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
        seconds=wallet.policy.value("price-max-age-s") + 1)
    monkeypatch.setattr(prices, "utcnow", lambda: later)
    wallet.prices.forget()
    assert wallet.prices.current() is None


def test_a_pinned_price_is_used_until_it_ends(wallet, fake, monkeypatch):
    until = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)
    pinned = book(wallet, price_manual_kes_per_btc=12_000_000, price_manual_until=until.isoformat())
    assert (pinned.current().kes_per_btc, pinned.current().source) == (12_000_000, prices.MANUAL)
    monkeypatch.setattr(prices, "utcnow", lambda: until + dt.timedelta(seconds=1))
    assert pinned.current() is None  # ended, and the feed has stored nothing


# ------------------------------------------------------------------ quotes on the phone
@pytest.fixture
def priced(wallet, fake):
    wallet.prices.refresh()
    return wallet.prices.current().kes_per_btc


def test_a_top_up_credits_exactly_the_quoted_sats_when_the_price_moves(alice, wallet, fake, priced):
    kes = 500
    sats = wallet.policy.kes_to_sats_credit(kes, priced)
    assert alice.run("4", str(kes), "QK10TX4N7P") == "CON " + t("en", "topup.confirm", kes=kes, sats=sats,
                                                                  code="QK10TX4N7P", valid=VALID_MIN)
    fake.set_all(MARKET * 2)  # the market doubles before the customer confirms
    wallet.prices.refresh()
    assert wallet.prices.current().kes_per_btc > priced
    before = balance(wallet, DEMO[0])
    alice.press("1")
    assert balance(wallet, DEMO[0]) == before + sats  # the quote held
    with wallet.db.read() as s:
        quote = s.scalar(select(Quote).where(Quote.kind == "topup"))
    assert (quote.kes, quote.sats, quote.kes_per_btc, quote.spread_bps) == (
        kes, sats, priced, wallet.policy.value_of("spread-bps", "buy"))


def test_a_withdrawal_debits_exactly_the_quoted_sats_and_fee(alice, wallet, priced):
    kes = 400
    sats = wallet.policy.kes_to_sats_debit(kes, priced)
    fee = wallet.policy.fee_sats("mpesa-withdraw", sats)
    before = balance(wallet, DEMO[0])
    assert alice.run("5", str(kes), "1") == "CON " + t("en", "withdraw.pin", kes=kes, phone=DEMO[0], sats=sats,
                                                        fee=fee, valid=VALID_MIN)
    alice.press(PIN)
    assert balance(wallet, DEMO[0]) == before - sats - fee


def test_an_expired_quote_is_quoted_again_and_shown_not_used(alice, wallet, fake, priced, monkeypatch):
    kes = 500
    alice.run("4", str(kes), "QK10TX4N7Q")
    fake.set_all(MARKET * 2)
    wallet.prices.refresh()
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
        seconds=wallet.policy.value("quote-valid-s") + 1)
    monkeypatch.setattr(prices, "utcnow", lambda: later)
    wallet.prices.forget()
    before = snapshot(wallet)
    new_price = wallet.prices.current().kes_per_btc
    new_sats = wallet.policy.kes_to_sats_credit(kes, new_price)
    assert new_sats < wallet.policy.kes_to_sats_credit(kes, priced)
    reply = alice.press("1")
    assert reply == "CON " + t("en", "quote.renewed", kes=kes, sats=new_sats) + "\n" + t(
        "en", "topup.confirm", kes=kes, sats=new_sats, code="QK10TX4N7Q", valid=VALID_MIN)
    assert snapshot(wallet) == before  # nothing credited at the old numbers
    b0 = balance(wallet, DEMO[0])
    alice.press("1")  # confirmed again, after seeing the new numbers
    assert balance(wallet, DEMO[0]) == b0 + new_sats


def test_an_expired_withdrawal_quote_asks_for_the_pin_again(alice, wallet, priced, monkeypatch):
    alice.run("5", "400", "1")
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(
        seconds=wallet.policy.value("quote-valid-s") + 1)
    monkeypatch.setattr(prices, "utcnow", lambda: later)
    before = snapshot(wallet)
    assert alice.press(PIN).startswith("CON " + t("en", "quote.renewed", kes=400, sats=1)[:18])
    assert snapshot(wallet) == before
    with wallet.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Quote).where(Quote.kind == "withdraw")) == 2


@pytest.mark.parametrize("lang", ["en", "sw"])
def test_a_send_typed_in_kes_moves_the_quoted_sats(alice, wallet, priced, lang):
    from tests.unit.test_flows import set_language

    set_language(alice, lang)
    kes = 300
    sats = wallet.policy.kes_to_sats_send(kes, priced)
    fee = wallet.policy.fee_sats("internal", sats)
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    alice.run("1", "0" + DEMO[1][4:], "1")
    assert alice.reply.startswith("CON " + t(lang, "send.kes", phone=DEMO[1], min=1, max=1)[:20])
    assert alice.press(str(kes)) == "CON " + t(lang, "send.confirm-kes", amount=sats, kes=kes, phone=DEMO[1],
                                               fee=fee, valid=VALID_MIN, recipient=t(lang, "recipient.new"))
    alice.press("1", PIN)
    assert balance(wallet, DEMO[0]) == a0 - sats - fee and balance(wallet, DEMO[1]) == b0 + sats


# ------------------------------------------------------------------ no price
@pytest.mark.parametrize("lang", ["en", "sw"])
def test_without_a_price_kes_operations_stop_and_sats_ones_carry_on(alice, bob, wallet, fake, lang):
    from tests.unit.test_flows import set_language

    set_language(alice, lang)
    assert wallet.prices.current() is None  # nothing stored yet
    before = snapshot(wallet)
    stopped = "END " + t(lang, "price.unavailable")
    assert alice.run("4") == stopped
    assert alice.run("5") == stopped
    assert alice.run("1", "0" + DEMO[1][4:], "1", "300") == stopped
    assert snapshot(wallet) == before
    # sats: a send, a receive, the balance (sats only: no KES worth without a price)
    low = wallet.policy.value("payment-min-sats")
    assert alice.run("1", "0" + DEMO[1][4:], str(low), "1", PIN).startswith("END " + t(lang, "send.done",
                                                                                      amount=low, phone="x",
                                                                                      fee=0, ref="", balance=0)[:8])
    assert alice.run("2", str(low)).startswith("END")
    have = balance(wallet, DEMO[0])
    first_line = t(lang, "account", balance=have, kes="", address="").split("\n")[0]
    assert alice.run("6").startswith("CON " + first_line + "\n")
    assert "KES" not in alice.reply


def test_the_balance_shows_its_kes_worth_and_the_price_age(alice, wallet, priced):
    have = balance(wallet, DEMO[0])
    worth = t("en", "account.kes-age", kes=wallet.policy.sats_to_kes(have, priced), age=0)
    assert worth in alice.run("6")


# ------------------------------------------------------------------ operators
def test_price_show_and_refresh(runner, wallet, fake):
    fake.set("coinbase", MARKET * 3 // 2)
    shown = runner.invoke(args=["price", "show"]).output
    assert "coingecko    13,000,000 KES/BTC" in shown and "(dropped: outlier)" in shown
    assert "median" in shown and "in use       none" in shown
    result = runner.invoke(args=["price", "refresh"])
    assert result.exit_code == 0 and "stored" in result.output and stored(wallet) == 1
    assert "in use       13,000,0" in runner.invoke(args=["price", "show", "--no-ask"]).output


def test_metrics_export_the_price(client, app, wallet, priced):
    from tests.conftest import configure

    configure(app, metrics_token="ops-secret")
    text = client.get("/metrics", headers={"Authorization": "Bearer ops-secret"}).get_data(as_text=True)
    assert "wallet_price_fresh 1" in text
    assert f'wallet_price_kes_per_btc{{source="feed"}} {priced}' in text
    assert "wallet_price_sources_up 3" in text and "wallet_price_age_seconds" in text


def test_price_settings_that_cannot_work_are_refused_naming_the_setting(tmp_path, fake):
    base = {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/p.db", "PIN_PEPPER": TEST_PEPPER}
    with pytest.raises(PriceConfigError, match="PRICE_SOURCES: unknown price source 'nosuch'"):
        create_app({**base, "PRICE_SOURCES": "coingecko,nosuch"})
    with pytest.raises(PriceConfigError, match="needs the fx source"):
        create_app({**base, "PRICE_SOURCES": f"kraken={fake.url}"})
    with pytest.raises(PriceConfigError, match="PRICE_MIN_SOURCES"):
        create_app({**base, "PRICE_SOURCES": f"coingecko={fake.url}", "PRICE_MIN_SOURCES": 2})
    with pytest.raises(ConfigError, match="PRICE_MANUAL_UNTIL"):
        finalise(load_config(str(tmp_path), {"PRICE_MANUAL_KES_PER_BTC": "12000000"}))


def test_the_default_start_asks_no_price_source(tmp_path, wallet):
    """Without PRICE_SOURCES (the default) the fixed price is used and the network never asked."""
    assert load_config(str(tmp_path), {})["PRICE_SOURCES"] == ""
    fixed = PriceBook(wallet.db, dataclasses.replace(wallet.settings, price_sources=""), wallet.policy)
    assert fixed.sources == {} and not fixed.due()
    assert (fixed.current().source, fixed.current().kes_per_btc) == (prices.FIXED,
                                                                      wallet.policy.value("fixed-kes-per-btc"))
