"""A top-up confirmation is a step that acts (it starts an M-Pesa prompt, or credits a code): a
session continued elsewhere must not start it again (tests/unit/test_session_races.py shows the
same for the PIN step). Against the fake Daraja: a second STK push would ask the customer to pay
twice."""

from __future__ import annotations

from sqlalchemy import func, select

from helpers.infra.i18n import t
from models import MpesaRequest
from tests.conftest import KES_MIN, Dialer
from tests.fakes.fake_daraja import kes_for
from tests.unit.test_daraja import alice, app_overrides, callback_port, daraja, served  # noqa: F401 - fixtures
from helpers.ussd import quoting
from tests.unit.test_session_races import meanwhile


def pushes(wallet) -> int:
    with wallet.db.read() as s:
        return s.scalar(select(func.count(MpesaRequest.id)).where(MpesaRequest.kind == "stk")) or 0


def test_a_session_continued_elsewhere_does_not_push_the_top_up_again(alice, wallet, client, daraja,  # noqa: F811
                                                                      monkeypatch):
    kes = kes_for("success", KES_MIN * 3 + 1)
    assert alice.run("4", str(kes)).startswith("CON ")  # S1 at the push's confirm screen, then cut off
    continued: list[str] = []

    def redial_continue_and_confirm() -> None:
        s2 = Dialer(client, alice.phone)
        assert s2.start().startswith("CON " + t("en", "resume", what="x").split("\n")[0])
        s2.press("1")
        continued.append(s2.press("1"))

    real_renewed = quoting.renewed

    def renewed_after_a_redial(ctx, slot):  # in S1's confirmation: after its read, before it acts
        if ctx.req.session_id == alice.session_id and not continued:
            meanwhile(redial_continue_and_confirm)
        return real_renewed(ctx, slot)

    monkeypatch.setattr(quoting, "renewed", renewed_after_a_redial)
    late = alice.press("1")  # S1's own confirmation, still being answered
    assert continued and continued[0].startswith("END ") and pushes(wallet) == 1  # S2's push
    assert late == "END " + t("en", "error.expired")
    daraja.wait_callbacks()
    assert pushes(wallet) == 1 and sum("stkpush" in path for path, _ in daraja.received) == 1
