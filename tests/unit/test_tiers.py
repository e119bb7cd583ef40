"""Issue 34, identity tiers: caps per tier in atoms.metta (one payment, a day, a month, a balance,
in KES at the price for limits), checked for money out under the payer's lock and for money in
before it moves; Verify my ID (the simulated registry) raises a phone-only customer to tier 1; an
operator sets tier 2 from documents."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from helpers.infra.i18n import t
from helpers.ussd.screen import Ctx  # noqa: F401 - the screens' context, for readers
from helpers.wallet import identity, operators
from helpers.wallet.customers import tiers, users
from helpers.wallet.ledger import movements
from helpers.wallet.errors import PolicyDenied
from helpers.wallet.incoming import lnurl
from models import AuditEntry, User
from tests.conftest import DEMO, PIN, outbox, snapshot

NEWCOMER, OTHER = "+254722000201", "+254722000202"
ID_NUMBER, NAMES, BORN = "12345678", "Amina Wanjiru", "31011990"


def caps(wallet, tier: int) -> tiers.Caps:
    return tiers.caps(wallet.policy, tier, wallet.prices.for_limits())


def how(lang: str = "en") -> str:
    return t(lang, "tier.how")


@pytest.fixture
def newcomer(dial):
    phone = dial("0" + NEWCOMER[4:])
    phone.run(PIN, PIN)
    return phone


def fund(wallet, phone: str, amount: int) -> None:
    """An operator's credit (not a send: no tier counts it)."""
    operators.adjust(wallet.db, "ops", phone, amount, "funding for the test")


def tier_of(wallet, phone: str) -> int:
    with wallet.db.read() as s:
        return s.scalar(select(User.tier).where(User.phone == phone))


def verify(phone, id_number: str = ID_NUMBER, names: str = NAMES, born: str = BORN) -> str:
    return phone.run("6", "5", "1", id_number, names, born, PIN)


def test_a_phone_only_customer_past_the_cap_is_told_how_to_verify_then_the_same_send_goes(wallet, alice, newcomer):
    zero = caps(wallet, tiers.PHONE_ONLY)
    amount = zero.payment + 1
    fund(wallet, NEWCOMER, amount + 1000)
    before = snapshot(wallet)
    refused = newcomer.run("1", "0" + DEMO[0][4:], str(amount))
    assert refused == "END " + t("en", "deny.tier-payment", cap_payment=zero.payment_kes, how=how())
    assert snapshot(wallet) == before
    done = verify(newcomer)
    assert done == "END " + t("en", "kyc.done", name="AMINA WANJIRU", tier=tiers.ID_CHECKED)
    assert tier_of(wallet, NEWCOMER) == tiers.ID_CHECKED
    assert newcomer.run("1", "0" + DEMO[0][4:], str(amount), "1", PIN).startswith("END Sent")


def test_the_day_cap_holds_under_the_lock_and_the_receipt_says_what_is_left(wallet, alice, newcomer):
    zero = caps(wallet, tiers.PHONE_ONLY)
    first = zero.day * 2 // 3
    fund(wallet, NEWCOMER, zero.day + 5000)
    assert newcomer.run("1", "0" + DEMO[0][4:], str(first), "1", PIN).endswith(
        t("en", "left.today", left=zero.day - first))  # the tier's day, not the policy's daily limit
    refused = newcomer.run("1", "0" + DEMO[0][4:], str(zero.day - first + 1))
    assert refused == "END " + t("en", "deny.tier-day", cap_day=zero.day_kes, how=how())
    before = snapshot(wallet)
    with wallet.db.read() as s:
        user = users.UserView.of(users.get(s, NEWCOMER))
    with pytest.raises(PolicyDenied) as under_lock:  # the movement itself, past the screens
        movements.transfer(wallet.db, wallet.policy, user, DEMO[0], zero.day - first + 1, "tier-day-test",
                           wallet.service_code, price=wallet.prices.for_limits())
    assert under_lock.value.reason == tiers.OVER_DAY
    assert snapshot(wallet) == before


def test_a_send_that_would_lift_the_recipient_over_their_cap_moves_nothing(wallet, alice, newcomer):
    zero = caps(wallet, tiers.PHONE_ONLY)
    assert zero.balance is not None
    fund(wallet, NEWCOMER, zero.balance - 1000)
    before, told = snapshot(wallet), outbox(wallet, NEWCOMER)
    refused = alice.run("1", "0" + NEWCOMER[4:], "2000", "1", PIN)
    assert refused == "END " + t("en", "deny.recipient-full")
    assert snapshot(wallet) == before
    notice = t("en", "sms.recipient-full", phone=DEMO[0], amount=2000, cap_balance=zero.balance_kes,
               code=wallet.service_code)
    assert outbox(wallet, NEWCOMER) == told + [notice]
    alice.run("1", "0" + NEWCOMER[4:], "3000", "1", PIN)
    assert outbox(wallet, NEWCOMER).count(notice) == 1 and len(outbox(wallet, NEWCOMER)) == len(told) + 1  # one a day
    assert alice.run("1", "0" + NEWCOMER[4:], "1000", "1", PIN).startswith("END Sent")  # up to the cap exactly


def test_money_in_past_the_balance_cap_is_refused_before_it_moves(wallet, newcomer, client):
    zero = caps(wallet, tiers.PHONE_ONLY)
    assert zero.balance is not None
    too_much = zero.balance + 1
    before = snapshot(wallet)
    refused = newcomer.run("2", str(min(too_much, wallet.policy.value("payment-max-sats"))))
    assert refused == "END " + t("en", "deny.tier-balance", cap_balance=zero.balance_kes, how=how())
    kes = zero.balance_kes + 1000
    assert newcomer.run("4", str(kes)) == "END " + t("en", "deny.tier-balance", cap_balance=zero.balance_kes,
                                                      how=how())
    with pytest.raises(lnurl.LnurlError):
        lnurl.invoice(wallet, NEWCOMER[1:], str(too_much * 1000), "127.0.0.1")
    assert snapshot(wallet) == before


def test_a_lightning_address_tells_a_stranger_nothing_of_the_balance(wallet, newcomer):
    """An amount within the cap is invoiced whatever the balance beside it: refusing it would let
    anyone read a customer's balance by trying amounts at their public address."""
    zero = caps(wallet, tiers.PHONE_ONLY)
    assert zero.balance is not None
    fund(wallet, NEWCOMER, zero.balance - 1000)
    assert lnurl.invoice(wallet, NEWCOMER[1:], str(5000 * 1000), "127.0.0.1")["pr"]


def test_the_top_tier_has_no_balance_cap_and_an_operator_sets_it_audited(wallet, newcomer):
    operators.set_tier(wallet.db, "ops", NEWCOMER, tiers.DOCUMENTS, "passport and ID seen at the agent")
    assert tier_of(wallet, NEWCOMER) == tiers.DOCUMENTS and caps(wallet, tiers.DOCUMENTS).balance is None
    assert t("en", "sms.tier", tier=tiers.DOCUMENTS, cap_day=caps(wallet, tiers.DOCUMENTS).day_kes) in outbox(
        wallet, NEWCOMER)
    with wallet.db.read() as s:
        assert s.scalar(select(AuditEntry.detail).where(AuditEntry.action == "tier", AuditEntry.subject == NEWCOMER)) \
            == f"tier {tiers.PHONE_ONLY} -> {tiers.DOCUMENTS}"
    with pytest.raises(operators.OperatorError):
        operators.set_tier(wallet.db, "ops", NEWCOMER, wallet.policy.value("top-tier") + 1, "no such tier exists")


@pytest.mark.parametrize("case, typed, outcome", [
    ("not on record", {"id_number": "12345000"}, "not-found"),
    ("too young", {"born": "01012020"}, "too-young"),
])
def test_verify_my_id_refusals_change_nothing(wallet, newcomer, case, typed, outcome):
    before = snapshot(wallet)
    assert verify(newcomer, **typed) == "END " + t("en", f"kyc.{outcome}", age=wallet.policy.value("id-min-age-years"))
    assert tier_of(wallet, NEWCOMER) == tiers.PHONE_ONLY and snapshot(wallet) == before


def test_one_account_per_id_number_and_a_verified_name_is_fixed(wallet, newcomer, dial):
    assert verify(newcomer).startswith("END " + t("en", "kyc.done", name="", tier=1)[:10])
    other = dial("0" + OTHER[4:])
    other.run(PIN, PIN)
    assert verify(other) == "END " + t("en", "kyc.id-taken")
    assert tier_of(wallet, OTHER) == tiers.PHONE_ONLY
    assert newcomer.run("6", "4", "Someone Else") == "END " + t("en", "name.fixed", name="AMINA WANJIRU")
    assert newcomer.run("6", "5", "1") == "CON " + t("en", "error.option") + "\n" + newcomer.run("6", "5")[4:]


def test_id_checks_are_limited_a_day_and_off_without_a_registry(wallet, newcomer, monkeypatch):
    allowed, _window = wallet.policy.rate_limit("id-checks")
    for _ in range(allowed):
        assert verify(newcomer, id_number="12345000") == "END " + t("en", "kyc.not-found")
    assert verify(newcomer, id_number="12345000") == "END " + t("en", "kyc.too-many")
    monkeypatch.setattr(wallet, "id_registry", None)
    assert newcomer.run("6", "5", "1") == "END " + t("en", "kyc.off")


def test_the_caps_follow_the_policy_at_the_price():
    from helpers.wallet.rules import policy
    p = policy()
    price = p.value("fixed-kes-per-btc")
    one = tiers.caps(p, tiers.ID_CHECKED, price)
    assert one.day_kes == p.value_of("tier-day-kes", "1")
    assert one.day == one.day_kes * p.value("sats-per-btc") // price
    assert tiers.caps(p, tiers.ID_CHECKED, price * 2).day == one.day // 2 or \
        tiers.caps(p, tiers.ID_CHECKED, price * 2).day == (one.day_kes * p.value("sats-per-btc")) // (price * 2)
    with pytest.raises(PolicyDenied) as month:
        tiers.check_out(one, 1, 0, one.month)
    assert month.value.reason == tiers.OVER_MONTH
    assert identity.years_between(identity.parse_birth_date("29022000", identity.dt.date(2026, 1, 1)),
                                  identity.dt.date(2026, 1, 1)) == 25


def test_a_withdrawal_of_exactly_the_cap_in_kes_passes_and_one_shilling_more_does_not(wallet, newcomer):
    """The cap is in KES; a withdrawal's sats carry the sell spread: measured at the payout's own
    rate, KES cap passes (at the mid price its sats would be over the cap in sats)."""
    cap_kes = caps(wallet, tiers.PHONE_ONLY).payment_kes
    fund(wallet, NEWCOMER, 3 * caps(wallet, tiers.PHONE_ONLY).payment)
    before = snapshot(wallet)
    refused = newcomer.run("5", str(cap_kes + 1))  # told at the amount: nothing typed after would pass
    assert refused == "END " + t("en", "deny.tier-payment", cap_payment=cap_kes, how=how())
    assert snapshot(wallet) == before
    done_prefix = t("en", "withdraw.done", kes=cap_kes, phone=NEWCOMER, code="", sats=0, fee=0, balance=0)
    assert newcomer.run("5", str(cap_kes), "1", PIN).startswith("END " + done_prefix.split(" M-Pesa")[0])


def test_a_withdrawal_after_a_full_day_of_sends_is_refused_the_spread_stretches_no_cap(wallet, alice, newcomer):
    """A KES payout counts its own sats at the caps' price (so exactly a cap passes), but what was
    sent before counts whole: a day used up by sends leaves no room for a withdrawal."""
    assert verify(newcomer).startswith("END ")
    one = caps(wallet, tiers.ID_CHECKED)
    fund(wallet, NEWCOMER, one.day + 10 * one.day // 100)
    assert newcomer.run("1", "0" + DEMO[0][4:], str(one.day), "1", PIN).startswith("END Sent")
    before = snapshot(wallet)
    kes = one.day_kes // 100  # 1% of the day cap: more than the minimum, inside the sell spread's stretch
    assert kes >= wallet.policy.value("kes-min")
    refused = newcomer.run("5", str(kes))
    assert refused == "END " + t("en", "deny.tier-day", cap_day=one.day_kes, how=t("en", "tier.how-documents"))
    assert snapshot(wallet) == before
