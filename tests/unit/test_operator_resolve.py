"""An operator's resolve commands (resolve-payment, resolve-mpesa, resolve-airtime) and their audit
lines: one transaction, or neither. When the audit line cannot be written, the payment stays
pending and no money moves; when it can, both are there."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from helpers.mpesa.provider import PayoutResult
from helpers.wallet import operators
from lightning import MockBackend, PaymentResult, State, StatusResult, decode_invoice
from models import OPEN_PAYOUT, PENDING, AuditEntry
from tests.conftest import DEMO, PIN, balance
from tests.fakes import fake_daraja
from tests.unit import test_airtime, test_daraja, test_lightning_send
from tests.unit.test_airtime import at  # noqa: F401  (fixture)
from tests.unit.test_daraja import callback_port, daraja, served  # noqa: F401  (fixtures)


def audit_down(*args, **kwargs):
    """The audit line cannot be written (the database refuses it, the connection drops)."""
    raise RuntimeError("audit log unavailable")


def audit_lines(wallet, action: str) -> list[AuditEntry]:
    with wallet.db.read() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def resolve_twice(runner, monkeypatch, args: list[str]) -> None:
    """The command with the audit log down (it must fail and change nothing), then with it up."""
    monkeypatch.setattr(operators, "audit", audit_down)
    assert runner.invoke(args=args).exit_code != 0
    monkeypatch.undo()


def test_resolve_payment_and_its_audit_line_are_one_transaction(insecure, payee, alice, runner,  # noqa: F811
                                                                monkeypatch):
    class Forgetful(MockBackend):  # the payment's answer is lost and the node has no record of it
        def pay_invoice(self, bolt11, max_fee_sat):
            return PaymentResult(State.PENDING, decode_invoice(bolt11).payment_hash, error="timeout")

        def payment_status(self, payment_hash):
            return StatusResult(State.PENDING, error="unknown payment")

    wallet = insecure
    wallet.lightning = Forgetful()
    a0 = balance(wallet, DEMO[0])
    row = test_lightning_send._pay(wallet, alice, payee)
    args = ["resolve-payment", row.reference, "--outcome", "failed", "--reason", "ticket 7: node has no record"]
    resolve_twice(runner, monkeypatch, args)
    assert test_lightning_send.sent_row(wallet).status == PENDING and balance(wallet, DEMO[0]) < a0
    assert runner.invoke(args=args).exit_code == 0
    (line,) = audit_lines(wallet, "resolve-payment")
    assert (line.operator, line.subject, line.reason) == ("cli", row.reference, "ticket 7: node has no record")
    assert line.detail.startswith("failed") and balance(wallet, DEMO[0]) == a0


class TestResolveAirtime:
    @pytest.fixture
    def app_overrides(self, at):  # noqa: F811
        return at.app_settings(test_airtime.TOKEN)

    def test_resolve_airtime_and_its_audit_line_are_one_transaction(self, alice, wallet, runner, at,  # noqa: F811
                                                                   monkeypatch):
        at.mode = "error"  # no answer: the purchase stays pending until an operator resolves it
        a0 = balance(wallet, DEMO[0])
        alice.run("8", "3", "1", "100", PIN)
        request = test_airtime.only_request(wallet)
        args = ["resolve-airtime", request.reference, "--outcome", "failed", "--reason", "T-1 AT says failed"]
        resolve_twice(runner, monkeypatch, args)
        assert test_airtime.request_of(wallet, request.reference).state in OPEN_PAYOUT and balance(wallet, DEMO[0]) < a0
        assert runner.invoke(args=args).exit_code == 0
        (line,) = audit_lines(wallet, "resolve-airtime")
        assert (line.subject, line.detail) == (request.reference, "failed") and balance(wallet, DEMO[0]) == a0


class TestResolveMpesa:
    @pytest.fixture
    def app_overrides(self, daraja, callback_port):  # noqa: F811
        return fake_daraja.app_settings(daraja.url, f"http://127.0.0.1:{callback_port}")

    @pytest.fixture
    def alice(self, dial, served):  # noqa: F811
        phone = dial(DEMO[0])
        phone.run(PIN, PIN)
        return phone

    def test_resolve_mpesa_and_its_audit_line_are_one_transaction(self, alice, wallet, daraja, runner,  # noqa: F811
                                                                 monkeypatch):
        monkeypatch.setattr(wallet.mpesa, "pay_business", lambda *args: PayoutResult(State.PENDING, error="HTTP 0"))
        before = balance(wallet, alice.phone)
        test_daraja.pay_till(alice, test_daraja.KES_MIN * 2)
        request = test_daraja.request_of(wallet, "b2b")
        args = ["resolve-mpesa", request.reference, "--outcome", "failed", "--reason", "ticket 9: not on statement"]
        resolve_twice(runner, monkeypatch, args)
        assert test_daraja.request_of(wallet, "b2b").status == PENDING and balance(wallet, alice.phone) < before
        assert runner.invoke(args=args).exit_code == 0
        (line,) = audit_lines(wallet, "resolve-mpesa")
        assert (line.subject, line.detail) == (request.reference, "failed")
        assert balance(wallet, alice.phone) == before


def test_create_user_and_its_audit_line_are_one_transaction(runner, wallet, monkeypatch):
    """An operator registering a customer from the command line is audited with it: if the audit
    line cannot be written, no customer is created (issue 31, item 6)."""
    from models import User

    def refuse(*_args, **_kwargs):
        raise RuntimeError("audit log unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(operators, "audit", refuse)
        assert runner.invoke(args=["create-user", "0744555777"]).exit_code != 0
    with wallet.db.read() as s:
        assert s.scalar(select(User.id).where(User.phone == "+254744555777")) is None
    assert runner.invoke(args=["create-user", "0744555777"]).exit_code == 0
    with wallet.db.read() as s:
        lines = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "create-user")))
    assert [(a.subject, a.operator) for a in lines] == [("+254744555777", "cli")]
