"""The LNbits backend against a real LNbits server (FakeWallet) on loopback: our pool wallet and
an 'outside world' wallet that pays and is paid."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from helpers.wallet.incoming import invoices
from helpers.lightning.lnbits import LNbitsBackend
from helpers.infra.i18n import receipt_text, t
from lightning import LightningConfigError, State, create_backend
from models import Invoice, Transaction
from tests import lnbits_server
from tests.conftest import DEMO, PIN, balance, configure, outbox, snapshot
from tests.servers import free_port
from helpers.infra.settings import Settings

pytestmark = pytest.mark.skipif(not lnbits_server.available(),
                                reason="needs LNbits in .lnbits-venv: make test installs it "
                                       "(make .lnbits-venv/.installed)")


@pytest.fixture(scope="module")
def lnbits():
    server = lnbits_server.LNbits()
    pool, outside = server.wallet("pool"), server.wallet("outside")
    server.fund(outside["id"], 1_000_000)
    yield server, pool, outside
    server.stop()


@pytest.fixture
def node(lnbits):
    server, pool, _outside = lnbits
    return LNbitsBackend(server.url, pool["adminkey"], pool["inkey"])


def test_configuration_names_the_missing_setting():
    with pytest.raises(LightningConfigError, match="LNBITS_ADMIN_KEY"):
        create_backend(Settings.from_mapping({
            "LIGHTNING_BACKEND": "lnbits", "LNBITS_URL": "http://127.0.0.1:1", "LNBITS_INVOICE_KEY": "x",
        }))


def test_invoice_paid_from_outside_then_a_payment_out(lnbits, node):
    server, pool, outside = lnbits
    before = node.balance()
    made = node.create_invoice(2000, "test", 600)
    assert made.ok and node.invoice_status(made.payment_hash).state is State.PENDING
    server.pay(outside["adminkey"], made.bolt11)
    assert node.invoice_status(made.payment_hash).state is State.SUCCEEDED
    assert node.balance().balance_sat == before.balance_sat + 2000
    theirs = server.invoice(outside["inkey"], 500)
    outside_before = server.balance_sat(outside["inkey"])
    paid = node.pay_invoice(theirs["bolt11"], max_fee_sat=10)
    assert paid.state is State.SUCCEEDED and paid.payment_hash == theirs["payment_hash"]
    assert node.payment_status(theirs["payment_hash"]).state is State.SUCCEEDED
    assert server.balance_sat(outside["inkey"]) == outside_before + 500
    assert node.balance().balance_sat == before.balance_sat + 1500


def test_refusals_and_unknowns(lnbits, node):
    server, _pool, outside = lnbits
    assert node.pay_invoice("lnbc1garbage", 10).state is State.FAILED  # never sent
    too_big = server.invoice(outside["inkey"], node.balance().balance_sat + 1000)
    refused = node.pay_invoice(too_big["bolt11"], 10)
    assert refused.state is State.FAILED, refused  # LNbits refused: not enough balance
    assert node.payment_status("ab" * 32).state is State.PENDING  # unknown is never "failed"
    down = LNbitsBackend(f"http://127.0.0.1:{free_port()}", "a", "b")
    assert not down.create_invoice(1000, "x", 60).ok
    assert down.invoice_status("ab" * 32).state is State.PENDING
    assert down.health()["ok"] is False


def test_receive_btc_through_the_menu_is_credited_once(lnbits, app, alice, wallet):
    server, pool, outside = lnbits
    wallet.lightning = LNbitsBackend(server.url, pool["adminkey"], pool["inkey"])
    a0 = balance(wallet, DEMO[0])
    reply = alice.run("2", "3000")
    invoice = wallet.db.session.scalar(select(Invoice))
    assert reply.startswith("END " + t("en", "receive.done", amount=3000, ref=invoice.reference, minutes=1)[:30])
    sms = outbox(wallet, DEMO[0])[-1]
    bolt11 = sms.split(": ")[-1]  # the outside world pays what the user received by SMS
    assert bolt11 == invoice.bolt11
    server.pay(outside["adminkey"], bolt11)
    for _ in range(3):  # polled again and again: one credit
        invoices.poll_pending(wallet.db, wallet.lightning)
    assert balance(wallet, DEMO[0]) == a0 + 3000
    with wallet.db.read() as s:
        assert s.query(Transaction).filter_by(payment_hash=invoice.payment_hash).count() == 1


def test_receive_while_lnbits_is_down_records_nothing(app, alice, wallet):
    wallet.lightning = LNbitsBackend(f"http://127.0.0.1:{free_port()}", "a", "b")
    before = snapshot(wallet)
    assert alice.run("2", "3000") == "END " + t("en", "error.lightning")
    assert snapshot(wallet) == before


def test_a_lightning_address_paid_from_outside_is_credited_by_the_node_webhook(lnbits, app, wallet, tmp_path):
    """The app under gunicorn with LIGHTNING_BACKEND=lnbits: an outside wallet resolves a user's
    Lightning address, pays the invoice, LNbits calls our webhook, the user is credited once."""
    import time

    import requests

    from tests.conftest import TEST_PEPPER
    from tests.servers import Caller, Gunicorn

    server, pool, outside = lnbits
    app_server = Gunicorn(wallet.db.url, TEST_PEPPER, workers=2, log_path=tmp_path / "gunicorn.log",
                          extra_env=lambda url: {
                              "LIGHTNING_BACKEND": "lnbits", "LNBITS_URL": server.url,
                              "LNBITS_ADMIN_KEY": pool["adminkey"], "LNBITS_INVOICE_KEY": pool["inkey"],
                              "LIGHTNING_WEBHOOK_TOKEN": "webhook-secret-0123456789"})
    try:
        phone = DEMO[1]
        Caller(app_server.url).walk("ln-address-1", phone, PIN, PIN)
        b0, pool0 = balance(wallet, phone), server.balance_sat(pool["inkey"])
        name = phone[1:]
        pay_request = requests.get(f"{app_server.url}/.well-known/lnurlp/{name}", timeout=10).json()
        assert pay_request["callback"].startswith(app_server.url)
        invoice = requests.get(pay_request["callback"], params={"amount": 4_000_000}, timeout=10).json()
        server.pay(outside["adminkey"], invoice["pr"])
        deadline = time.monotonic() + 20
        while balance(wallet, phone) == b0 and time.monotonic() < deadline:
            time.sleep(0.2)  # no poller runs: only the webhook can credit
        assert balance(wallet, phone) == b0 + 4000
        assert server.balance_sat(pool["inkey"]) == pool0 + 4000
        time.sleep(1)  # a late duplicate webhook would show now
        assert balance(wallet, phone) == b0 + 4000
        log = (tmp_path / "gunicorn.log").read_text()
        assert "webhook-secret-0123456789" not in log
    finally:
        app_server.stop()


# ------------------------------------------------------------------ paying out to a Lightning address
def _lnbits_payee(server, receiver: dict):
    """A Lightning address server whose invoices come from another wallet on the same LNbits."""
    import requests

    from tests.fakes.fake_lnurl import FakeLnurl

    def issue(sats: int, metadata: str) -> str:
        response = requests.post(server.url + "/api/v1/payments", headers={"X-Api-Key": receiver["inkey"]},
                                 timeout=10, json={"out": False, "amount": sats, "memo": "",
                                                   "unhashed_description": metadata.encode().hex()})
        response.raise_for_status()
        return response.json()["bolt11"]

    return FakeLnurl(issue=issue)


@pytest.fixture
def paying(lnbits, wallet):
    """Our wallet on the LNbits pool wallet (funded), a payee wallet behind a Lightning address."""
    server, pool, _outside = lnbits
    server.fund(pool["id"], 50_000)
    receiver = server.wallet("carol")
    payee = _lnbits_payee(server, receiver)
    configure(wallet, lightning_network="bc", lnurl_allow_insecure=True)  # FakeWallet invoices are "bc"
    wallet.lightning = LNbitsBackend(server.url, pool["adminkey"], pool["inkey"], timeout_s=1, pay_timeout_s=1)
    yield server, pool, receiver, payee
    payee.stop()


def _sent(wallet) -> Transaction:
    with wallet.db.read() as s:
        return s.scalar(select(Transaction).where(Transaction.type == "send", Transaction.payment_hash.is_not(None),
                                           Transaction.follows_id.is_(None)))


def test_a_user_pays_a_lightning_address_served_by_another_lnbits_wallet(paying, app, alice, wallet):
    server, pool, receiver, payee = paying
    # the happy path: time enough for LNbits to pay on a loaded machine (the fixture's 1 s is for
    # the tests of lost answers)
    wallet.lightning = LNbitsBackend(server.url, pool["adminkey"], pool["inkey"], timeout_s=5, pay_timeout_s=10)
    a0, pool0 = balance(wallet, DEMO[0]), server.balance_sat(pool["inkey"])
    carol0 = server.balance_sat(receiver["inkey"])
    reply = alice.run("1", payee.address("carol"), "2500", "1", PIN)
    row = _sent(wallet)
    assert reply == "END " + receipt_text("en", "lnsend.done", wallet.policy.value("daily-send-limit-sats") - 2500,
                                          amount=2500, payee=payee.address("carol"), fee=row.fee_sats,
                                          ref=row.reference, balance=a0 - 2500 - row.fee_sats)
    assert row.status == "settled"
    assert server.balance_sat(receiver["inkey"]) == carol0 + 2500
    assert server.balance_sat(pool["inkey"]) == pool0 - 2500 - row.fee_sats  # the fee the user paid is the node's
    assert balance(wallet, DEMO[0]) == a0 - 2500 - row.fee_sats


@pytest.mark.parametrize("mode", ["pay_timeout", "pay_500", "pay_malformed", "status_500"])
def test_lnbits_answers_lost_after_paying_leave_it_pending_until_the_node_is_asked_again(
        paying, app, alice, wallet, mode):
    from helpers.wallet.payouts import payments
    from tests.fakes.fault_proxy import FaultProxy

    server, pool, receiver, payee = paying
    proxy = FaultProxy(server.url)
    try:
        wallet.lightning = LNbitsBackend(proxy.url, pool["adminkey"], pool["inkey"], timeout_s=1, pay_timeout_s=1)
        a0, carol0 = balance(wallet, DEMO[0]), server.balance_sat(receiver["inkey"])
        max_fee = wallet.policy.fee_sats("lightning", 2500)
        proxy.mode = mode
        reply = alice.run("1", payee.address("carol"), "2500", "1", PIN)
        row = _sent(wallet)
        assert reply == "END " + t("en", "lnsend.pending", amount=2500, payee=payee.address("carol"),
                                   ref=row.reference)
        # LNbits did pay (it finishes the payment on its own while our request has given up: on a
        # loaded machine that can take a moment after our answer)
        deadline = time.monotonic() + 15
        while server.balance_sat(receiver["inkey"]) != carol0 + 2500 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.balance_sat(receiver["inkey"]) == carol0 + 2500
        assert balance(wallet, DEMO[0]) == a0 - 2500 - max_fee  # reserved, not refunded
        if mode == "status_500":  # while the node cannot be asked, nothing is decided
            payments.reconcile(wallet)
            assert _sent(wallet).status == "pending"
        proxy.mode = "pass"
        for _ in range(3):
            payments.reconcile(wallet)
        row = _sent(wallet)
        assert row.status == "settled" and balance(wallet, DEMO[0]) == a0 - 2500 - row.fee_sats
        assert server.balance_sat(receiver["inkey"]) == carol0 + 2500
    finally:
        proxy.stop()


def test_a_payment_lnbits_refuses_is_refunded(lnbits, app, alice, wallet):
    server, _pool, _outside = lnbits
    empty = server.wallet("empty pool")  # no sats to pay with: LNbits refuses before sending
    receiver = server.wallet("dave")
    payee = _lnbits_payee(server, receiver)
    try:
        configure(wallet, lightning_network="bc", lnurl_allow_insecure=True)
        wallet.lightning = LNbitsBackend(server.url, empty["adminkey"], empty["inkey"], timeout_s=2, pay_timeout_s=2)
        a0 = balance(wallet, DEMO[0])
        reply = alice.run("1", payee.address("dave"), "2500", "1", PIN)
        row = _sent(wallet)
        assert reply == "END " + t("en", "lnsend.failed", ref=row.reference)
        assert row.status == "failed" and balance(wallet, DEMO[0]) == a0
        assert server.balance_sat(receiver["inkey"]) == 0
    finally:
        payee.stop()


def test_a_second_payment_of_a_paid_invoice_is_a_definite_failure_of_that_attempt(lnbits, node):
    """LNbits answers 520 {"detail": "Payment already paid."}: the second attempt moved nothing,
    and must not be left pending (a status lookup would find the first payment's success)."""
    server, pool, outside = lnbits
    server.fund(pool["id"], 5_000)
    theirs = server.invoice(outside["inkey"], 700)
    assert node.pay_invoice(theirs["bolt11"], max_fee_sat=10).state is State.SUCCEEDED
    outside_before, pool_before = server.balance_sat(outside["inkey"]), node.balance().balance_sat
    again = node.pay_invoice(theirs["bolt11"], max_fee_sat=10)
    assert (again.state, again.already_paid) == (State.FAILED, True), again
    assert server.balance_sat(outside["inkey"]) == outside_before
    assert node.balance().balance_sat == pool_before
