"""Data protection (issue 34): what we hold about a person exported, a name corrected, a customer
erased (refused while money is held), erased customers' money records pseudonymised after the
retention period; and the travel rule: a payment to another custodian keeps its sender, and the
payee's LNURL service gets the payer's verified name when it asks (LUD-18)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, update

from helpers.infra.i18n import t
from helpers.lightning.lnurl_pay import NAME_MANDATORY, NAME_OPTIONAL
from models import Payout, User, utcnow
from tests.conftest import DEMO, PIN, balance, configure
from tests.fakes.fake_lnurl import FakeLnurl

AMOUNT = 2500
NAME = "AMINA OTIENO"


@pytest.fixture
def payee():
    server = FakeLnurl()
    yield server
    server.stop()


@pytest.fixture
def insecure(wallet):
    configure(wallet, lnurl_allow_insecure=True)
    return wallet


def name(wallet, phone: str, given: str | None, verified: bool) -> None:
    with wallet.db.write() as s:
        s.execute(update(User).where(User.phone == phone)
                  .values(name=given, name_verified_at=utcnow() if verified else None))


def last_payout(wallet) -> Payout:
    with wallet.db.read() as s:
        return s.scalars(select(Payout).order_by(Payout.id.desc())).first()


# ------------------------------------------------------------------ the travel rule, LUD-18
def test_a_lightning_address_payment_keeps_its_sender(insecure, payee, alice):
    name(insecure, DEMO[0], NAME, verified=False)
    assert alice.run("1", payee.address(), str(AMOUNT), "1", PIN).startswith("END ")
    payout = last_payout(insecure)
    assert (payout.originator_phone, payout.originator_name) == (DEMO[0], NAME)
    assert payee.payerdata == [None]  # it asked for no name: none is sent


@pytest.mark.parametrize("asked", [NAME_OPTIONAL, NAME_MANDATORY])
def test_a_verified_name_goes_as_payerdata_when_the_service_asks(insecure, payee, alice, asked):
    name(insecure, DEMO[0], NAME, verified=True)
    payee.payer_data = {"name": {"mandatory": asked == NAME_MANDATORY}}
    assert alice.run("1", payee.address(), str(AMOUNT), "1", PIN).startswith("END ")
    assert [json.loads(sent) for sent in payee.payerdata] == [{"name": NAME}]
    assert last_payout(insecure).state == "posted"  # the invoice committed to metadata + payerdata


def test_an_unverified_name_is_never_sent(insecure, payee, alice):
    name(insecure, DEMO[0], NAME, verified=False)
    payee.payer_data = {"name": {"mandatory": False}}
    assert alice.run("1", payee.address(), str(AMOUNT), "1", PIN).startswith("END ")
    assert payee.payerdata == [None]
    assert last_payout(insecure).originator_name == NAME  # kept with us, not given away


@pytest.mark.parametrize("language", ["en", "sw"])
def test_a_mandatory_name_without_a_verified_one_is_refused_before_anything_is_reserved(
        insecure, payee, alice, language):
    name(insecure, DEMO[0], NAME, verified=False)
    with insecure.db.write() as s:
        s.execute(update(User).where(User.phone == DEMO[0]).values(language=language))
    payee.payer_data = {"name": {"mandatory": True}}
    a0 = balance(insecure, DEMO[0])
    reply = alice.run("1", payee.address())
    assert reply.startswith("CON " + t(language, "lnurl.name-required")) and len(reply) <= 160 + len("CON ")
    assert balance(insecure, DEMO[0]) == a0 and last_payout(insecure) is None
    assert payee.payerdata == []  # no invoice asked for


def test_pay_address_refuses_a_mandatory_name_it_cannot_give(insecure, payee):
    """The last guard, in the money step itself (the screen told the customer earlier)."""
    from helpers.lightning.lnurl_pay import LnurlPayError, parse_address, resolve
    from helpers.wallet.customers import users
    from helpers.wallet.payouts import payments

    payee.payer_data = {"name": {"mandatory": True}}
    with insecure.db.read() as s:
        user = users.UserView.of(users.get(s, DEMO[0]))
    params = resolve(*parse_address(payee.address()), insecure.settings)
    a0 = balance(insecure, DEMO[0])
    with pytest.raises(LnurlPayError) as refused:
        payments.pay_address(insecure, user, params, AMOUNT, "no-name-key")
    assert refused.value.reason == "name-required"
    assert balance(insecure, DEMO[0]) == a0 and payee.payerdata == []
