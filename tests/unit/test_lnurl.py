"""Lightning addresses (LNURL-pay) and the node's webhook, with the mock node."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from helpers.wallet.incoming import lnurl
from lightning import decode_invoice
from helpers.wallet.rules import policy
from models import Invoice, Transaction
from tests.conftest import DEMO, balance, configure, outbox, snapshot

P = policy()
NAME = DEMO[0][1:]


def test_a_lightning_address_resolves_to_a_pay_request(client, wallet):
    body = client.get(f"/.well-known/lnurlp/{NAME}").get_json()
    assert body["tag"] == "payRequest"
    assert body["callback"] == f"{wallet.settings.public_url}/lnurlp/{NAME}/callback"
    assert (body["minSendable"], body["maxSendable"]) == (P.value("payment-min-sats") * 1000,
                                                           P.value("payment-max-sats") * 1000)
    assert ["text/identifier", lnurl.address(wallet.settings, DEMO[0])] in json.loads(body["metadata"])


def test_the_callback_returns_an_invoice_committed_to_the_metadata(client, wallet):
    metadata = client.get(f"/.well-known/lnurlp/{NAME}").get_json()["metadata"]
    before_sms = outbox(wallet, DEMO[0])
    pr = client.get(f"/lnurlp/{NAME}/callback?amount=2500000").get_json()["pr"]
    decoded = decode_invoice(pr)
    assert decoded.amount_sat == 2500
    assert decoded.description_hash == hashlib.sha256(metadata.encode()).hexdigest()
    with wallet.db.read() as s:
        invoice = s.scalar(select(Invoice).where(Invoice.payment_hash == decoded.payment_hash))
    assert invoice.amount_sats == 2500 and invoice.status == "pending"
    assert outbox(wallet, DEMO[0]) == before_sms  # the payer holds the invoice; no SMS for it


@pytest.mark.parametrize("path", [
    "/lnurlp/{name}/callback", "/lnurlp/{name}/callback?amount=abc", "/lnurlp/{name}/callback?amount=1000500",
    "/lnurlp/{name}/callback?amount=1", "/lnurlp/{name}/callback?amount=999999999999999",
    "/lnurlp/254700000001/callback?amount=2000000", "/lnurlp/not-a-phone/callback?amount=2000000",
])
def test_bad_callbacks_answer_an_lnurl_error_and_create_nothing(client, wallet, path):
    before = snapshot(wallet)
    response = client.get(path.format(name=NAME))
    assert response.get_json()["status"] == "ERROR"
    assert snapshot(wallet) == before


def test_unknown_addresses_are_not_found(client):
    assert client.get("/.well-known/lnurlp/254700000001").status_code == 404
    assert client.get("/.well-known/lnurlp/x").get_json()["status"] == "ERROR"


def test_a_webhook_credits_once_after_the_node_confirms(client, wallet, app):
    configure(app, lightning_webhook_token="hook-secret-123456")
    pr = client.get(f"/lnurlp/{NAME}/callback?amount=3000000").get_json()["pr"]
    payment_hash = decode_invoice(pr).payment_hash
    a0 = balance(wallet, DEMO[0])
    body = json.dumps(json.dumps({"payment_hash": payment_hash, "amount": 3000000}))  # a JSON string of JSON
    # a webhook before payment changes nothing: the node says pending
    assert client.post("/lightning/webhook/hook-secret-123456", data=body).get_json()["status"] == "pending"
    wallet.lightning.simulate_payment(payment_hash)
    for _ in range(3):  # delivered three times
        response = client.post("/lightning/webhook/hook-secret-123456", data=body)
        assert response.get_json()["status"] == "paid"
    assert balance(wallet, DEMO[0]) == a0 + 3000
    with wallet.db.read() as s:
        assert s.query(Transaction).filter_by(payment_hash=payment_hash).count() == 1


def test_forged_and_unknown_webhooks_change_nothing(client, wallet, app):
    configure(app, lightning_webhook_token="hook-secret-123456")
    pr = client.get(f"/lnurlp/{NAME}/callback?amount=3000000").get_json()["pr"]
    payment_hash = decode_invoice(pr).payment_hash
    before = snapshot(wallet)
    body = json.dumps({"payment_hash": payment_hash})
    assert client.post("/lightning/webhook/wrong-secret-000000", data=body).status_code == 403
    assert client.post("/lightning/webhook/hook-secret-123456", data=body).get_json()["status"] == "pending"
    unknown = json.dumps({"payment_hash": "ab" * 32})
    assert client.post("/lightning/webhook/hook-secret-123456", data=unknown).get_json()["status"] == "unknown"
    assert client.post("/lightning/webhook/hook-secret-123456", data="not json").status_code == 400
    configure(app, lightning_webhook_token="")
    assert client.post("/lightning/webhook/", data=body).status_code in (403, 404, 405)
    assert snapshot(wallet) == before
