"""What review of the M-Pesa payouts' move onto the payouts table found, each pinned: a reservation
that old code gave an M-Pesa request is not an orphan; the simulated provider never voids a payout
Daraja made; the generic `flask resolve` sends M-Pesa payouts to `resolve-mpesa` (which needs the
receipt); a Daraja result that contradicts how a payout ended is logged for people; an M-Pesa
payout's job is never asked faster than Daraja may be; `flask reconcile` names the phone."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import delete, select, text

from helpers.mpesa.provider import SimulatedMpesa
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.payouts import machine
from helpers.web import worker
from models import MPESA_B2C_RAIL, SENT, MpesaRequest, Payout, utcnow
from tests.conftest import KES_MIN, balance, configure
from tests.fakes.fake_daraja import FakeDaraja, kes_for
from tests.unit.test_mpesa_callback_guards import (  # noqa: F401 - fixtures
    app_overrides, daraja, fake, reference_in, withdraw, withdrawals)


@pytest.fixture
def alice(dial):
    from tests.conftest import DEMO, PIN

    phone = dial(DEMO[0])
    phone.run(PIN, PIN)
    return phone


def test_a_reservation_old_code_gave_an_mpesa_request_is_not_an_orphan(alice, wallet, daraja):  # noqa: F811
    """Code from before the payouts table, still running beside this one after the upgrade,
    reserves a withdrawal with an M-Pesa request row and no payout row: M-Pesa was asked, so the
    orphan sweep must leave it (a refund now could pay the customer twice)."""
    withdraw(alice, daraja, kes_for("never", KES_MIN))
    (row,) = withdrawals(wallet)
    with wallet.db.write() as s:  # what the old code wrote instead of a payout row
        payout = s.scalars(select(Payout).where(Payout.transaction_id == row.id)).one()
        s.add(MpesaRequest(kind="b2c", reference=payout.reference, user_id=row.user_id, transaction_id=row.id,
                           phone=payout.destination, amount_kes=payout.amount_kes or 0,
                           amount_sats=payout.amount_sats, status="pending"))
        s.execute(delete(Payout).where(Payout.id == payout.id))
    assert mpesa_flows.orphans(wallet.db) == []
    assert not mpesa_flows.void_orphan(wallet.db, row.id)
    assert withdrawals(wallet)[0].status == "pending"
    with wallet.db.write() as s:  # put it back as the new code has it, for the books' check
        s.execute(delete(MpesaRequest).where(MpesaRequest.transaction_id == row.id))
        s.add(Payout(**{c: getattr(payout, c) for c in (
            "reference", "rail", "user_id", "transaction_id", "destination", "amount_sats", "fee_sats",
            "fee_limit_sats", "amount_kes", "state", "rail_key", "rail_ref", "queries", "created_at")}))


def test_a_payout_daraja_accepted_is_never_voided_by_the_simulated_provider(alice, wallet, daraja,  # noqa: F811
                                                                            caplog):
    """M-Pesa switched to the simulated provider (Daraja off, or a staging copy of the database)
    with a Daraja payout open: the worker leaves it for people, however old it is."""
    withdraw(alice, daraja, kes_for("never", KES_MIN))
    (row,) = withdrawals(wallet)
    payout = machine.find(wallet.db, row.reference)
    assert payout is not None and payout.state == SENT
    before = balance(wallet, alice.phone)
    wallet.mpesa = SimulatedMpesa()
    with wallet.db.write() as s:
        s.execute(text("UPDATE payouts SET created_at = :then"), {"then": utcnow().replace(year=2025)})
    caplog.set_level(logging.ERROR)
    assert worker.HANDLERS[worker.PAYOUT](wallet, payout.reference) is True  # nothing to ask: left to people
    assert machine.find(wallet.db, row.reference).state == SENT and balance(wallet, alice.phone) == before
    assert "daraja is off" in caplog.text


def test_the_generic_resolve_sends_mpesa_payouts_to_resolve_mpesa(alice, wallet, daraja, runner):  # noqa: F811
    withdraw(alice, daraja, kes_for("never", KES_MIN))
    (row,) = withdrawals(wallet)
    said = runner.invoke(args=["resolve", row.reference, "--outcome", "paid", "--reason", "T-4"])
    assert said.exit_code != 0 and "resolve-mpesa" in said.output
    assert withdrawals(wallet)[0].status == "pending"


@pytest.mark.parametrize("ended", ["failed", "paid"])
def test_a_result_contradicting_how_a_payout_ended_is_logged_for_people(alice, wallet, daraja, runner,  # noqa: F811
                                                                        caplog, ended):
    url, record = withdraw(alice, daraja, kes_for("never", KES_MIN))
    (row,) = withdrawals(wallet)
    args = ["resolve-mpesa", row.reference, "--outcome", ended, "--reason", "T-5"]
    done = runner.invoke(args=args + (["--receipt", "QKX1234567"] if ended == "paid" else []))
    assert done.exit_code == 0, done.output
    caplog.set_level(logging.INFO)
    opposite = {**record, "status": "Completed" if ended == "failed" else "Declined"}
    assert daraja.send(url, FakeDaraja.b2c_result(opposite)) == 200
    assert "reconcile it with M-Pesa by hand" in caplog.text
    assert withdrawals(wallet)[0].status == ("failed" if ended == "failed" else "settled")


def test_an_mpesa_payout_job_is_never_asked_faster_than_daraja_may_be(alice, wallet, daraja):  # noqa: F811
    configure(wallet, mpesa_query_every_s=120, invoice_poll_s=5)
    withdraw(alice, daraja, kes_for("never", KES_MIN))
    (row,) = withdrawals(wallet)
    payout = machine.find(wallet.db, row.reference)
    job = worker.Claimed(1, worker.PAYOUT, payout.reference, 1)
    assert worker._delay(wallet, job) >= wallet.settings.mpesa_query_every_s
    other = worker.Claimed(2, worker.PAYOUT, "NOSUCHREF", 1)
    assert worker._delay(wallet, other) < wallet.settings.mpesa_query_every_s


def test_reconcile_names_a_pending_payout_s_phone_masked(alice, wallet, daraja, runner):  # noqa: F811
    from helpers.infra.phone import mask

    url, _record = withdraw(alice, daraja, kes_for("never", KES_MIN))
    output = runner.invoke(args=["reconcile", "--mpesa-after-seconds", "0"]).output
    line = next(line for line in output.splitlines() if f"ref={reference_in(url)}" in line)
    assert mask(alice.phone) in line and line.startswith("PENDING mpesa b2c")


def test_a_payout_the_simulated_provider_made_has_no_daraja_id(wallet, dial):
    """Its payouts are told apart from Daraja's by having none (they are the only ones the
    simulated rail may void once unanswered)."""
    from tests.conftest import DEMO, PIN

    wallet.mpesa = SimulatedMpesa()
    phone = dial(DEMO[0])
    phone.run(PIN, PIN)
    phone.run("5", str(KES_MIN), "1", PIN)
    with wallet.db.read() as s:
        payout = s.scalars(select(Payout).where(Payout.rail == MPESA_B2C_RAIL)).one()
    assert payout.rail_key is None and payout.state == "posted"

