"""The embedded default under several gunicorn workers (issue 31, item 10): the mock node is one
node, so an invoice a customer asked for in one worker is paid through `/test/pay-invoice` in
whichever worker takes that request, and credited once. Ten invoices on four workers: with a
node per worker most of them would reach a worker that never heard of them."""

from __future__ import annotations

import requests
from sqlalchemy import select

from helpers.wallet import demo
from helpers.wallet.rules import policy
from models import Invoice, User
from tests.conftest import PIN, TEST_PEPPER
from tests.servers import Caller, Gunicorn

INVOICES = 10


def test_invoices_made_in_one_worker_are_paid_through_any_other(app, wallet, tmp_path):
    phone = demo.DEMO_USERS[0][0]
    amount = policy().value("payment-min-sats")
    with wallet.db.read() as s:
        before = s.scalars(select(User.balance_sats).where(User.phone == phone)).one()
    server = Gunicorn(wallet.db.url, TEST_PEPPER, workers=4, log_path=tmp_path / "gunicorn.log",
                      extra_env=lambda _url: {"DEMO_MODE": "1"})
    try:
        caller = Caller(server.url)
        caller.walk("ATUid_workers_pin", phone, PIN, PIN)
        for n in range(INVOICES):
            caller.walk(f"ATUid_workers_{n}", phone, "2", str(amount))
        with wallet.db.read() as s:
            references = s.scalars(select(Invoice.reference).order_by(Invoice.id)).all()
        assert len(references) == INVOICES
        answers = [requests.post(server.url + "/test/pay-invoice", data={"reference": ref}, timeout=30)
                   for ref in references for _twice in range(2)]
    finally:
        server.stop()
    assert [(a.status_code, a.json().get("status")) for a in answers] == [(200, "paid")] * 2 * INVOICES, \
        (tmp_path / "gunicorn.log").read_text()[-3000:]
    with wallet.db.read() as s:
        after = s.scalars(select(User.balance_sats).where(User.phone == phone)).one()
    assert after == before + INVOICES * amount  # each credited once
