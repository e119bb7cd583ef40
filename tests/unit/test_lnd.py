"""The LND backend against a fake LND that rejects any request not in LND's official OpenAPI specs
(as condensed in tests/fakes/specs/lnd.json: LND master and the latest release), covering create,
status, pay, balance and the faults."""

from __future__ import annotations

import hashlib

import pytest

from helpers.lightning import lnd as lnd_module
from helpers.lightning.lnd import LndBackend
from lightning import LightningConfigError, MockBackend, State, create_backend, decode_invoice
from tests.fakes import fake_lnd
from helpers.infra.settings import Settings



@pytest.fixture(params=sorted(fake_lnd.SPEC_VERSIONS))
def lnd(request):
    fake = fake_lnd.FakeLnd(fake_lnd.SPEC_VERSIONS[request.param])
    yield fake
    fake.stop()
    assert fake.violations == [], fake.violations  # every request the backend made matched the spec


@pytest.fixture
def node(lnd):
    return LndBackend(lnd.url, fake_lnd.MACAROON, timeout_s=1, pay_timeout_s=1)


def outside_invoice(sats: int = 2000) -> str:
    return MockBackend(seed="someone out there").create_invoice(sats, "coffee", 600).bolt11


def test_configuration_names_the_missing_setting():
    with pytest.raises(LightningConfigError, match="LND_MACAROON"):
        create_backend(Settings.from_mapping({"LIGHTNING_BACKEND": "lnd", "LND_URL": "https://127.0.0.1:8080"}))
    with pytest.raises(LightningConfigError, match="LND_TLS_CERT"):
        create_backend(Settings.from_mapping({
            "LIGHTNING_BACKEND": "lnd", "LND_URL": "https://127.0.0.1:8080", "LND_MACAROON": "00",
        }))
    with pytest.raises(LightningConfigError, match="LND_URL"):
        create_backend(Settings.from_mapping({"LIGHTNING_BACKEND": "lnd"}))


def test_invoices_are_created_read_and_settled(lnd, node):
    made = node.create_invoice(2100, "receive", 600)
    assert made.ok and decode_invoice(made.bolt11).amount_sat == 2100
    assert node.invoice_status(made.payment_hash).state is State.PENDING
    lnd.settle(made.payment_hash)
    assert node.invoice_status(made.payment_hash).state is State.SUCCEEDED
    assert node.invoice_status("cd" * 32).state is State.PENDING  # unknown: never "failed"
    meta_hash = hashlib.sha256(b"[]").hexdigest()
    assert decode_invoice(node.create_invoice(1000, "x", 60, "[]").bolt11).description_hash == meta_hash
    assert node.balance().balance_sat == lnd.balance_sat


@pytest.mark.parametrize("mode,first,later", [
    ("succeed", State.SUCCEEDED, State.SUCCEEDED),
    ("inflight_then_succeed", State.PENDING, State.SUCCEEDED),
    ("inflight_then_fail", State.PENDING, State.FAILED),
    ("fail", State.FAILED, State.FAILED),
    ("fail_unconfirmed", State.PENDING, State.PENDING),  # one "failed" is not enough to refund
    ("not_found", State.PENDING, State.PENDING),
    ("http500", State.PENDING, State.PENDING),
    ("malformed", State.PENDING, State.PENDING),
    ("timeout", State.PENDING, State.PENDING),
])
def test_payments_report_failure_only_when_the_node_confirms_it(lnd, node, mode, first, later):
    lnd.mode = mode
    bolt11 = outside_invoice()
    paid = node.pay_invoice(bolt11, max_fee_sat=10)
    assert paid.state is first
    assert paid.payment_hash == decode_invoice(bolt11).payment_hash
    assert node.payment_status(paid.payment_hash).state is later
    if first is State.SUCCEEDED:
        assert paid.fee_sat == 3 and paid.preimage


def test_a_route_dearer_than_the_fee_limit_fails_as_lnd_fails_it(lnd, node):
    lnd.route_fee_sat = 10
    at_limit = outside_invoice()
    paid = node.pay_invoice(at_limit, max_fee_sat=10)
    assert (paid.state, paid.fee_sat) == (State.SUCCEEDED, 10)
    assert lnd.fee_limits[paid.payment_hash] == 10
    above = node.pay_invoice(outside_invoice(), max_fee_sat=9)  # a failure a second look confirms
    assert (above.state, above.error) == (State.FAILED, "FAILURE_REASON_NO_ROUTE")
    assert node.payment_status(above.payment_hash).state is State.FAILED
    lnd.ignore_fee_limit = True  # a misbehaving node: pays, and charges above the limit
    over = node.pay_invoice(outside_invoice(), max_fee_sat=9)
    assert (over.state, over.fee_sat) == (State.SUCCEEDED, 10)
    assert node.payment_status(over.payment_hash).fee_sat == 10


@pytest.mark.parametrize("as_http", [False, True], ids=["error-line", "http-409"])
def test_a_second_payment_of_a_paid_invoice_is_refused_and_moved_nothing(lnd, node, as_http):
    lnd.already_paid_as_http = as_http
    bolt11 = outside_invoice()
    assert node.pay_invoice(bolt11, max_fee_sat=10).state is State.SUCCEEDED
    again = node.pay_invoice(bolt11, max_fee_sat=10)
    # a definite failure of this attempt, never the earlier payment's success read back by tracking
    assert (again.state, again.already_paid, again.error) == (State.FAILED, True, lnd_module.ALREADY_PAID)
    assert again.fee_sat == 0 and not again.preimage
    assert node.payment_status(again.payment_hash).state is State.SUCCEEDED  # the first one stands


def test_a_wrong_macaroon_is_refused_and_reported_as_unavailable(lnd):
    wrong = LndBackend(lnd.url, "00" * 8)
    assert not wrong.create_invoice(1000, "x", 60).ok
    assert wrong.health()["ok"] is False
    lnd.violations.clear()  # the fake saw what it had to refuse


def test_the_menu_receives_through_lnd(lnd, node, app, alice, wallet):
    from helpers.wallet.incoming import invoices
    from models import Invoice
    from sqlalchemy import select
    from tests.conftest import DEMO, balance

    wallet.lightning = node
    a0 = balance(wallet, DEMO[0])
    assert alice.run("2", "2500").startswith("END ")
    with wallet.db.read() as s:
        invoice = s.scalar(select(Invoice))
    lnd.settle(invoice.payment_hash)
    invoices.poll_pending(wallet.db, node)
    invoices.poll_pending(wallet.db, node)
    assert balance(wallet, DEMO[0]) == a0 + 2500


@pytest.mark.parametrize("method,path,body,complaint", [
    ("POST", "/v1/invoices", {"value": 2000}, "decimal string"),  # int64 travels as a string
    ("POST", "/v1/invoices", {"value": "2000", "amount": "1"}, "not in lnrpcInvoice"),
    ("POST", "/v2/router/send", {"payment_request": "lnbc1", "fee_limit": "5"}, "not in routerrpcSendPaymentRequest"),
    ("GET", "/v2/router/track/" + "ab" * 32, None, "not base64 of 32 bytes"),  # hex where bytes are base64
    ("GET", "/v1/channels/transactions", None, "not in the LND specs"),  # removed in newer LND
])
def test_the_fake_rejects_requests_the_spec_does_not_allow(lnd, method, path, body, complaint):
    import requests

    response = requests.request(method, lnd.url + path, json=body, timeout=5,
                                headers={"Grpc-Metadata-macaroon": fake_lnd.MACAROON})
    assert response.status_code in (400, 404)
    assert any(complaint in v for v in lnd.violations), lnd.violations
    lnd.violations.clear()
