"""The BTCPay backend against a fake BTCPay Server that rejects any request not in BTCPay's
official Greenfield OpenAPI templates (as condensed in tests/fakes/specs/btcpay.json)."""

from __future__ import annotations

import hashlib

import pytest
import requests

from helpers.lightning.btcpay import BTCPayBackend
from lightning import LightningConfigError, MockBackend, State, create_backend, decode_invoice
from tests.fakes import fake_btcpay
from tests.conftest import configure
from helpers.infra.settings import Settings



@pytest.fixture
def btcpay():
    fake = fake_btcpay.FakeBTCPay()
    yield fake
    fake.stop()
    assert fake.violations == [], fake.violations


@pytest.fixture
def node(btcpay):
    return BTCPayBackend(btcpay.url, fake_btcpay.API_KEY, fake_btcpay.STORE, timeout_s=2)


def test_configuration_names_the_missing_setting():
    with pytest.raises(LightningConfigError, match="BTCPAY_STORE_ID"):
        create_backend(Settings.from_mapping({
            "LIGHTNING_BACKEND": "btcpay", "BTCPAY_URL": "http://127.0.0.1:1", "BTCPAY_API_KEY": "k",
        }))


def test_invoices_created_read_settled_and_committed_to_metadata(btcpay, node):
    made = node.create_invoice(2100, "receive", 600)
    assert made.ok and decode_invoice(made.bolt11).amount_sat == 2100
    assert node.invoice_status(made.payment_hash).state is State.PENDING
    btcpay.settle(made.payment_hash)
    assert node.invoice_status(made.payment_hash).state is State.SUCCEEDED
    assert node.invoice_status("cd" * 32).state is State.PENDING
    meta = node.create_invoice(1000, "x", 60, '[["text/plain","hi"]]')
    assert decode_invoice(meta.bolt11).description_hash == hashlib.sha256(b'[["text/plain","hi"]]').hexdigest()
    assert node.balance().balance_sat == 7_000_000


@pytest.mark.parametrize("mode,first,later", [
    ("complete", State.SUCCEEDED, State.SUCCEEDED),
    ("pending", State.PENDING, State.PENDING),
    ("failed", State.FAILED, State.FAILED),
    ("failed_unconfirmed", State.PENDING, State.PENDING),  # the lookup does not agree: no refund
    ("refused", State.FAILED, State.PENDING),  # 400 and never recorded: it was not sent
    ("http500", State.PENDING, State.PENDING),
])
def test_payments_fail_only_when_btcpay_confirms_it(btcpay, node, mode, first, later):
    btcpay.mode = mode
    bolt11 = MockBackend(seed="someone out there").create_invoice(2000, "coffee", 600).bolt11
    paid = node.pay_invoice(bolt11, max_fee_sat=10)
    assert paid.state is first, paid
    assert node.payment_status(paid.payment_hash).state is later
    if first is State.SUCCEEDED:
        assert paid.fee_sat == 2 and paid.preimage


def test_a_second_payment_of_a_paid_invoice_is_refused_and_moved_nothing(btcpay, node):
    bolt11 = MockBackend(seed="someone out there").create_invoice(2000, "coffee", 600).bolt11
    assert node.pay_invoice(bolt11, max_fee_sat=10).state is State.SUCCEEDED
    again = node.pay_invoice(bolt11, max_fee_sat=10)
    assert (again.state, again.already_paid) == (State.FAILED, True), again
    assert again.fee_sat == 0 and not again.preimage
    assert node.payment_status(again.payment_hash).state is State.SUCCEEDED  # the first one stands


def test_an_unreachable_btcpay_is_unavailable_and_unknown(btcpay):
    from tests.servers import free_port

    down = BTCPayBackend(f"http://127.0.0.1:{free_port()}", "k", "s", timeout_s=1)
    assert not down.create_invoice(1000, "x", 60).ok
    assert down.payment_status("ab" * 32).state is State.PENDING
    assert down.health()["ok"] is False


@pytest.mark.parametrize("method,path,body,complaint", [
    ("POST", "/invoices", {"amount": 2000000, "expiry": 60}, "must be a string"),  # msat as a string
    ("POST", "/invoices", {"amount": "2000000", "memo": "x"}, "not in CreateLightningInvoiceRequest"),
    ("POST", "/invoices/pay", {"bolt11": "lnbc1"}, "not in PayLightningInvoiceRequest"),
    ("GET", "/channels/transactions", None, "not in the BTCPay specs"),
])
def test_the_fake_rejects_requests_the_spec_does_not_allow(btcpay, method, path, body, complaint):
    url = f"{btcpay.url}/api/v1/stores/{fake_btcpay.STORE}/lightning/BTC{path}"
    response = requests.request(method, url, json=body, timeout=5,
                                headers={"Authorization": f"token {fake_btcpay.API_KEY}"})
    assert response.status_code in (404, 422)
    assert any(complaint in v for v in btcpay.violations), btcpay.violations
    btcpay.violations.clear()


def test_btcpay_webhooks_need_a_valid_signature_and_credit_once(btcpay, node, app, alice, wallet, client):
    """Deliveries signed with BTCPay-Sig: 3 good ones credit once (after the node confirms), a bad or
    missing signature and an unknown invoice change nothing."""
    import hashlib
    import hmac
    import json

    from sqlalchemy import select

    from models import Invoice, Transaction
    from tests.conftest import DEMO, balance, snapshot

    secret, token = "btcpay-webhook-secret", "hook-token-0123456789"
    wallet.lightning = node
    configure(app, btcpay_webhook_secret=secret, lightning_webhook_token=token)
    a0 = balance(wallet, DEMO[0])
    assert alice.run("2", "2200").startswith("END ")
    with wallet.db.read() as s:
        invoice = s.scalar(select(Invoice))
    body = json.dumps({"deliveryId": "d1", "type": "InvoiceSettled", "invoiceId": invoice.payment_hash}).encode()

    def deliver(data: bytes, key: str | None = secret) -> int:
        signature = "" if key is None else hmac.new(key.encode(), data, hashlib.sha256).hexdigest()
        headers = {"BTCPay-Sig": "sha256=" + signature} if signature else {}
        return client.post(f"/lightning/webhook/{token}", data=data, headers=headers).status_code

    btcpay.settle(invoice.payment_hash)
    before = snapshot(wallet)
    assert deliver(body, key="not-the-secret") == 403
    assert deliver(body, key=None) == 403
    assert deliver(body.replace(b"d1", b"d2"), key=None) == 403
    unknown = json.dumps({"type": "InvoiceSettled", "invoiceId": "cd" * 32}).encode()
    assert deliver(unknown) == 200
    assert snapshot(wallet) == before  # nothing credited by a forged, unsigned or unknown delivery
    for _ in range(3):
        assert deliver(body) == 200
    assert balance(wallet, DEMO[0]) == a0 + 2200
    with wallet.db.read() as s:
        assert s.query(Transaction).filter_by(payment_hash=invoice.payment_hash).count() == 1
