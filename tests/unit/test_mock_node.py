"""The mock Lightning node of the embedded default is one node, whatever the number of worker
processes: gunicorn's workers each build their own app, and an invoice made in one must be
payable, paid and known in every other (issue 31, item 10). Two apps on one database stand in
for two workers."""

from __future__ import annotations

import pytest

from app import create_app
from lightning import MockBackend, State, decode_invoice
from tests.conftest import TEST_PEPPER


@pytest.fixture
def other_worker(app, wallet):
    """A second app on the test's database, as a second gunicorn worker would build it."""
    second = create_app({
        "TESTING": True, "DATABASE_URL": wallet.db.url, "AUTO_CREATE_SCHEMA": False, "DEMO_MODE": False,
        "SMS_AUTO_FLUSH": False, "PIN_PEPPER": TEST_PEPPER, "RATE_LIMITS": False, "INVOICE_POLL_S": 0,
        "WRITE_BEHIND_S": 0,
    })
    svc = second.extensions["wallet"]
    yield svc
    second.extensions["request_counter"].close()
    svc.openings.close()
    svc.db.dispose()


def test_an_invoice_made_in_one_worker_is_paid_and_known_in_another(wallet, other_worker):
    here, there = wallet.lightning, other_worker.lightning
    assert isinstance(here, MockBackend) and isinstance(there, MockBackend)
    before = here.balance().balance_sat
    made = here.create_invoice(2_500, "coffee", 600)
    assert decode_invoice(made.bolt11).amount_sat == 2_500  # still a real BOLT11 string
    assert there.invoice_status(made.payment_hash).state is State.PENDING
    assert there.simulate_payment(made.payment_hash)  # the outside payer reached the other worker
    assert here.invoice_status(made.payment_hash).state is State.SUCCEEDED
    assert not here.simulate_payment(made.payment_hash)  # paid once, wherever it is asked
    assert here.balance().balance_sat == there.balance().balance_sat == before + 2_500


def test_a_payment_made_in_one_worker_is_known_in_another(wallet, other_worker):
    here, there = wallet.lightning, other_worker.lightning
    outside = MockBackend(seed="a payee out in the world").create_invoice(4_000, "x", 600)
    before = there.balance().balance_sat
    paid = here.pay_invoice(outside.bolt11, 10)
    assert paid.state is State.SUCCEEDED
    status = there.payment_status(outside.payment_hash)
    assert (status.state, status.preimage) == (State.SUCCEEDED, paid.preimage)
    again = there.pay_invoice(outside.bolt11, 10)
    assert again.state is State.FAILED and again.already_paid  # one invoice is paid once
    assert there.balance().balance_sat == before - 4_000


def test_our_own_invoice_paid_from_another_worker_is_settled_not_paid_out(wallet, other_worker):
    """One customer pays another's invoice: the node settles its own invoice (an internal
    payment), whichever worker made it; nothing leaves the node."""
    here, there = wallet.lightning, other_worker.lightning
    made = here.create_invoice(3_000, "request", 600)
    before = here.balance().balance_sat
    assert there.pay_invoice(made.bolt11, 10).state is State.SUCCEEDED
    assert here.invoice_status(made.payment_hash).state is State.SUCCEEDED
    assert not here.simulate_payment(made.payment_hash)
    assert here.pay_invoice(made.bolt11, 10).already_paid
    assert here.balance().balance_sat == before


def test_a_failed_payment_may_be_tried_again(wallet, other_worker):
    here, there = wallet.lightning, other_worker.lightning
    outside = MockBackend(seed="a payee out in the world").create_invoice(1_000, "x", 600)
    here.route_fee_sat = 5
    assert here.pay_invoice(outside.bolt11, 4).state is State.FAILED  # no route within the limit
    assert there.payment_status(outside.payment_hash).state is State.FAILED
    assert there.pay_invoice(outside.bolt11, 4).state is State.SUCCEEDED  # the other's route is free
    assert here.payment_status(outside.payment_hash).state is State.SUCCEEDED
