"""Issue 31, 2: nothing reserved without a way to finish. A payout in KES (a withdrawal, a till, a
paybill) reserves its sats in the same transaction as its payout row, so a process that dies right
after the reservation leaves a payout the worker asks Daraja about and an operator can end by the
customer's reference; a reservation left without one (older code) is listed for operators and
refunded by the worker (tests/unit/test_orphan_payouts.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from helpers.infra.i18n import t
from helpers.wallet.mpesa import flows as mpesa_flows
from helpers.wallet.payouts import machine
from helpers.web import worker
from models import MPESA_B2B_RAIL, MPESA_B2C_RAIL, RESERVED, AuditEntry, Job, Payout, Transaction
from tests.conftest import movements
from tests.conftest import KES_MIN, PIN, balance, outbox
from tests.fakes.fake_daraja import kes_for
from tests.unit.test_daraja import alice, app_overrides, callback_port, daraja, served  # noqa: F401 - fixtures


def killed_after_the_reservation(*_args, **_kwargs):
    """The worker is killed (or the database connection drops) once the reservation committed."""
    raise OperationalError("INSERT", {}, Exception("(2006, 'MySQL server has gone away')"))


def the_payout(wallet) -> Transaction:
    with wallet.db.read() as s:
        return s.scalars(movements().where(Transaction.type == "withdraw")).one()


def audited(wallet, action: str) -> list[AuditEntry]:
    with wallet.db.read() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


@pytest.mark.parametrize("flow", ["withdraw", "till"])
def test_a_payout_cut_off_after_its_reservation_has_a_request_and_a_way_to_finish(
        alice, wallet, daraja, runner, monkeypatch, flow):  # noqa: F811
    rail = {"withdraw": MPESA_B2C_RAIL, "till": MPESA_B2B_RAIL}[flow]
    monkeypatch.setattr(machine, "send", killed_after_the_reservation)
    before = balance(wallet, alice.phone)
    kes = kes_for("never", KES_MIN)
    path = ("5", str(kes), "1", PIN) if flow == "withdraw" else ("8", "1", "52187", str(kes), PIN)
    assert alice.run(*path).startswith("END " + t("en", "error.unavailable"))
    row = the_payout(wallet)
    assert row.status == "pending" and balance(wallet, alice.phone) < before
    with wallet.db.read() as s:
        request = s.scalars(select(Payout).where(Payout.transaction_id == row.id)).one()
    assert (request.rail, request.state) == (rail, RESERVED)  # written with the reservation
    again = alice.post("*".join(alice.inputs))  # Africa's Talking sends the step again
    assert again == "END " + t("en", "replay", ref=row.reference)  # moves nothing more
    assert the_payout(wallet).id == row.id
    assert worker.sweep(wallet) >= 1
    with wallet.db.read() as s:  # the worker will ask Daraja about it
        assert s.scalar(select(Job.id).where(Job.kind == worker.PAYOUT, Job.key == request.reference)) is not None
    assert mpesa_flows.orphans(wallet.db) == []
    done = runner.invoke(args=["resolve-mpesa", row.reference, "--outcome", "failed",  # the customer's reference
                               "--reason", "ticket 12: not on the M-Pesa statement"])
    assert done.exit_code == 0, done.output
    assert balance(wallet, alice.phone) == before and the_payout(wallet).status == "failed"
    assert [a.subject for a in audited(wallet, "resolve-mpesa")] == [request.reference]
    assert t("en", "withdraw.failed", ref=row.reference) in outbox(wallet, alice.phone)
