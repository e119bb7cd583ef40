"""Chama (group) payouts in KES to M-Pesa or a till, and each group's leave rule (issue 35): a chama
of three with a rule of two approvals pays once after the second approval (also when both approve
at the same moment), through the payout state machine, from the group's own account; a payout
M-Pesa refuses puts the sats back in the group, not the proposer's wallet; the sats are fixed
when proposed; a leaver gets back what their group's rule says, and, invited back, counts only
what they put in since; a leaver's approvals stop counting, then and after. Numbers from the
policy, texts from t(); the journal check runs after every test (tests/conftest.py)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from helpers.infra.i18n import t
from helpers.mpesa.provider import BUY_GOODS, PayoutResult
from helpers.wallet import use_cases
from helpers.wallet.chama import groups, proposals
from helpers.wallet.chama.tables import PROPOSER_LEFT, TO_MPESA, TO_TILL, ChamaProposal
from helpers.wallet.customers import users
from helpers.wallet.errors import PolicyDenied, PriceUnavailable
from helpers.wallet.ledger import movements
from helpers.wallet.prices import CurrentPrice
from helpers.web import worker
from lightning import State
from models import MPESA_B2B_RAIL, MPESA_B2C_RAIL, POSTED, VOIDED, Payout, utcnow
from tests.conftest import DEMO, KES_MIN, PIN, balance, outbox, withdraw_terms
from tests.unit.test_chama import CODE, TOKEN, code_of, holds, sms_reply, status_of, view

MPESA_PHONE = "+254722000111"  # a Safaricom number, not a member's
TILL = "123456"


@pytest.fixture
def app_overrides():
    return {"SMS_INCOMING_TOKEN": TOKEN}


def proof(wallet, user: users.UserView):
    users.set_first_pin(wallet.db, user.id, PIN, wallet.pepper)
    return users.check_pin(wallet.db, wallet.policy, user, PIN, wallet.pepper, debit_follows=False).proof


def group_of(wallet, members: int = 3, put_in: int = 0, leave_pct: int | None = None):
    """A chama of the demo users (and a fourth when `members` is 4), its chair the first, a rule
    of two approvals, `put_in` sats from the chair."""
    phones = [*DEMO, "+254711000111"][:members]
    people = [view(wallet, phone) for phone in phones]
    chama_id = groups.create(wallet.db, wallet.policy, people[0], "Wanawake Pamoja", 2, leave_pct)
    for member in people[1:]:
        groups.invite(wallet.db, wallet.policy, people[0], chama_id, member.phone, CODE)
        assert groups.answer_invite(wallet.db, member, chama_id, True)
    if put_in:
        groups.contribute(wallet.db, wallet.policy, people[0], chama_id, put_in, f"in-{chama_id}")
    return chama_id, people


def payouts_of(wallet, proposal_id: int) -> list[Payout]:
    with wallet.db.read() as s:
        ref = s.scalar(select(ChamaProposal.payout_ref).where(ChamaProposal.id == proposal_id))
        return list(s.scalars(select(Payout).where(Payout.reference == ref)))


def sent_today(wallet, user_id: int) -> int:
    with wallet.db.read() as s:
        return movements.sent_today(s, user_id)


@pytest.mark.parametrize("kind, to, rail", [(TO_MPESA, MPESA_PHONE, MPESA_B2C_RAIL), (TO_TILL, TILL, MPESA_B2B_RAIL)])
def test_a_chama_of_three_pays_mpesa_or_a_till_once_after_the_second_approval(wallet, kind, to, rail):
    kes, sats, fee, _price = withdraw_terms(2 * KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=sats + fee + 1000)
    before, chair_before = holds(wallet, chama_id), balance(wallet, chair.phone)
    chair_sent = sent_today(wallet, chair.id)
    proposal_id, cost = use_cases.chama_propose_kes(wallet, chair, proof(wallet, chair), chama_id, kind, kes, to)
    assert cost == sats + fee
    assert use_cases.chama_vote(wallet, second, proof(wallet, second), proposal_id, True) == proposals.COUNTED
    assert payouts_of(wallet, proposal_id) == [] and holds(wallet, chama_id) == before
    assert use_cases.chama_vote(wallet, third, proof(wallet, third), proposal_id, True) == proposals.PAID
    [payout] = payouts_of(wallet, proposal_id)
    assert (payout.rail, payout.state, payout.amount_kes, payout.amount_sats, payout.fee_sats) == (
        rail, POSTED, kes, sats, fee)
    assert payout.destination == to if kind == TO_MPESA else payout.destination.startswith(f"{BUY_GOODS}|{TILL}|")
    assert holds(wallet, chama_id) == before - sats - fee and status_of(wallet, proposal_id) == "paid"
    # the group paid, not the proposer: their balance and today's sends are as they were
    assert balance(wallet, chair.phone) == chair_before and sent_today(wallet, chair.id) == chair_sent
    assert any(text.startswith(t("en", "sms.chama-out-paid", group="Wanawake Pamoja", kes=kes,
                                 to=MPESA_PHONE if kind == TO_MPESA else f"Till {TILL}", receipt="X",
                                 ref="X").split(" M-Pesa X")[0]) for text in outbox(wallet, chair.phone))
    # a late vote changes nothing
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.CLOSED
    assert len(payouts_of(wallet, proposal_id)) == 1


def test_two_approvals_at_the_same_moment_reserve_and_pay_a_till_once(wallet):
    kes, sats, fee, _price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=sats + fee)
    proofs = {member.id: proof(wallet, member) for member in (chair, second, third)}
    proposal_id, _cost = use_cases.chama_propose_kes(wallet, chair, proofs[chair.id], chama_id, TO_TILL, kes, TILL)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def approve(member: users.UserView) -> None:
        start.wait()
        outcomes.append(use_cases.chama_vote(wallet, member, proofs[member.id], proposal_id, True))

    threads = [threading.Thread(target=approve, args=(m,)) for m in (second, third)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted([proposals.PAID, proposals.COUNTED]) or \
        sorted(outcomes) == sorted([proposals.PAID, proposals.CLOSED]), outcomes
    [payout] = payouts_of(wallet, proposal_id)
    assert payout.state == POSTED and holds(wallet, chama_id) == 0


def test_two_proposals_cannot_both_spend_the_group_balance(wallet):
    kes, sats, fee, _price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=sats + fee)
    chair_proof = proof(wallet, chair)
    first, _ = use_cases.chama_propose_kes(wallet, chair, chair_proof, chama_id, TO_MPESA, kes, MPESA_PHONE)
    other, _ = use_cases.chama_propose_kes(wallet, chair, chair_proof, chama_id, TO_TILL, kes, TILL)
    for proposal_id in (first, other):
        proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True, rails=use_cases.chama_rails(wallet))
    assert proposals.vote(wallet.db, wallet.policy, third.id, first, True,
                          rails=use_cases.chama_rails(wallet)) == proposals.PAID
    assert proposals.vote(wallet.db, wallet.policy, third.id, other, True,
                          rails=use_cases.chama_rails(wallet)) == proposals.FAILED
    assert len(payouts_of(wallet, first)) == 1 and payouts_of(wallet, other) == []
    assert holds(wallet, chama_id) == 0


def test_a_payout_mpesa_refuses_puts_the_sats_back_in_the_group(wallet, monkeypatch):
    kes, sats, fee, _price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=sats + fee + 500)
    before, chair_before = holds(wallet, chama_id), balance(wallet, chair.phone)
    proposal_id, _ = use_cases.chama_propose_kes(wallet, chair, proof(wallet, chair), chama_id, TO_MPESA, kes,
                                                 MPESA_PHONE)
    monkeypatch.setattr(wallet.mpesa, "payout",
                        lambda phone, kes, reference: PayoutResult(State.FAILED, error="insufficient funds"))
    use_cases.chama_vote(wallet, second, proof(wallet, second), proposal_id, True)
    assert use_cases.chama_vote(wallet, third, proof(wallet, third), proposal_id, True) == proposals.PAID
    [payout] = payouts_of(wallet, proposal_id)
    assert payout.state == VOIDED
    assert holds(wallet, chama_id) == before and balance(wallet, chair.phone) == chair_before
    assert status_of(wallet, proposal_id) == proposals.PAID  # until the worker reads the payout's end
    worker.expire_chama_proposals(wallet)
    assert status_of(wallet, proposal_id) == proposals.FAILED
    assert holds(wallet, chama_id) == before  # marking moves nothing
    texts = outbox(wallet, chair.phone)
    assert any(text.startswith(t("en", "sms.chama-out-failed", group="Wanawake Pamoja", kes=kes, to=MPESA_PHONE,
                                 amount=sats + fee, ref="X").split(" Ref")[0]) for text in texts), texts


@pytest.mark.parametrize("moved", ["down", "up"])
def test_a_kes_payout_is_priced_again_when_decided_and_the_group_pays_the_more(wallet, monkeypatch, moved):
    """Proposed at one price, approved at another: the group pays the sats of the proposal or of
    the price now, whichever is more (a group cannot keep proposals open to pay at an old price)."""
    kes, sats, fee, price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=3 * (sats + fee))
    proposal_id, _ = use_cases.chama_propose_kes(wallet, chair, proof(wallet, chair), chama_id, TO_TILL, kes, TILL)
    now = price // 2 if moved == "down" else price * 2  # KES per BTC at the deciding vote
    monkeypatch.setattr(wallet.prices, "current", lambda: CurrentPrice(now, utcnow(), "manual"))
    use_cases.chama_vote(wallet, second, proof(wallet, second), proposal_id, True)
    before = holds(wallet, chama_id)
    assert use_cases.chama_vote(wallet, third, proof(wallet, third), proposal_id, True) == proposals.PAID
    [payout] = payouts_of(wallet, proposal_id)
    paid = max(sats, wallet.policy.kes_to_sats_debit(kes, now))
    assert paid == (wallet.policy.kes_to_sats_debit(kes, now) if moved == "down" else sats)
    assert (payout.amount_sats, payout.fee_sats, payout.amount_kes) == (
        paid, wallet.policy.fee_sats("mpesa-withdraw", paid), kes)
    assert holds(wallet, chama_id) == before - paid - payout.fee_sats


def test_with_no_price_at_its_deciding_vote_a_kes_payout_waits_and_the_vote_is_cast_again(wallet, monkeypatch,
                                                                                          client):
    """No price now: the deciding vote (by USSD or SMS reply) is not counted and nothing is paid;
    cast again once prices are back, it pays."""
    kes, sats, fee, price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=3 * (sats + fee))
    proposal_id, _ = use_cases.chama_propose_kes(wallet, chair, proof(wallet, chair), chama_id, TO_TILL, kes, TILL)
    use_cases.chama_vote(wallet, second, proof(wallet, second), proposal_id, True)
    before = holds(wallet, chama_id)
    monkeypatch.setattr(wallet.prices, "current", lambda: None)
    with pytest.raises(PriceUnavailable):
        use_cases.chama_vote(wallet, third, proof(wallet, third), proposal_id, True)
    code = code_of(wallet, proposal_id, third.id)
    assert sms_reply(client, third.phone, f"YES {code}", "ATXid_np1").status_code == 200
    assert outbox(wallet, third.phone)[-1] == t("en", "sms.chama-reply-no-price")
    assert status_of(wallet, proposal_id) == proposals.OPEN
    assert payouts_of(wallet, proposal_id) == [] and holds(wallet, chama_id) == before
    monkeypatch.setattr(wallet.prices, "current", lambda: CurrentPrice(price, utcnow(), "manual"))
    assert use_cases.chama_vote(wallet, third, proof(wallet, third), proposal_id, True) == proposals.PAID
    assert len(payouts_of(wallet, proposal_id)) == 1


def test_a_kes_payout_needs_a_price_and_the_kes_bounds(wallet, monkeypatch):
    chama_id, (chair, _second, _third) = group_of(wallet, put_in=5000)
    chair_proof = proof(wallet, chair)
    with pytest.raises(PolicyDenied):
        use_cases.chama_propose_kes(wallet, chair, chair_proof, chama_id, TO_TILL, KES_MIN - 1, TILL)
    monkeypatch.setattr(wallet.prices, "current", lambda: None)
    with pytest.raises(PriceUnavailable):
        use_cases.chama_propose_kes(wallet, chair, chair_proof, chama_id, TO_TILL, KES_MIN, TILL)


# ------------------------------------------------------------------ the leave rule
def test_a_rule_of_half_gives_back_half_and_the_rest_stays_in_the_group(wallet):
    half = [pct for pct in groups.leave_choices(wallet.policy) if 0 < pct < 100][0]
    chama_id, (_chair, second, _third) = group_of(wallet, leave_pct=half)
    assert groups.get(wallet.db, second.id, chama_id).leave_refund_pct == half
    put_in = 4000
    groups.contribute(wallet.db, wallet.policy, second, chama_id, put_in, "second-in")
    before = balance(wallet, second.phone)
    receipt = groups.leave(wallet.db, second, chama_id, "second-out")
    assert receipt.amount_sats == put_in * half // 100
    assert balance(wallet, second.phone) == before + put_in * half // 100
    assert holds(wallet, chama_id) == put_in - put_in * half // 100
    assert t("en", "sms.chama-left", group="Wanawake Pamoja", amount=put_in * half // 100,
             balance=receipt.balance_sats) in outbox(wallet, second.phone)


def test_a_member_invited_back_counts_only_what_they_put_in_since(wallet):
    half = [pct for pct in groups.leave_choices(wallet.policy) if 0 < pct < 100][0]
    chama_id, (chair, second, _third) = group_of(wallet, leave_pct=half)
    groups.contribute(wallet.db, wallet.policy, second, chama_id, 4000, "second-in-1")
    groups.leave(wallet.db, second, chama_id, "second-out-1")
    groups.invite(wallet.db, wallet.policy, chair, chama_id, second.phone, CODE)
    assert groups.answer_invite(wallet.db, second, chama_id, True)
    assert groups.leave_refund(wallet.db, second.id, chama_id) == 0  # the remainder is the group's now
    groups.contribute(wallet.db, wallet.policy, second, chama_id, 2000, "second-in-2")
    _holds, lines = groups.statement(wallet.db, chama_id)
    assert [line.contributed for line in lines if line.phone == second.phone] == [2000]
    second = view(wallet, second.phone)
    assert groups.leave(wallet.db, second, chama_id, "second-out-2").amount_sats == 2000 * half // 100


def test_a_group_chooses_its_leave_rule_from_the_policys_choices(wallet, dial):
    chair = view(wallet, DEMO[0])
    with pytest.raises(groups.ChamaRefused, match="bad-rule"):
        groups.create(wallet.db, wallet.policy, chair, "Wanawake", 2, 33)
    phone = dial(DEMO[0])
    phone.run(PIN, PIN)
    choices = groups.leave_choices(wallet.policy)
    shown = phone.run("9", "4", "8", "Wanawake", "2")
    assert all(t("en", "chama.new.leave-line", n=n, pct=pct) in shown for n, pct in enumerate(choices, 1))
    assert phone.run("9", "4", "8", "Wanawake", "2", str(len(choices))).startswith("END ")
    [group] = groups.mine(wallet.db, chair.id)
    assert group.leave_refund_pct == choices[-1]
    assert f"{choices[-1]}%" in phone.run("9", "4", "1", "4")


# ------------------------------------------------------------------ a leaver's say
def test_a_leavers_approval_is_withdrawn_and_does_not_come_back_with_them(wallet):
    chama_id, (chair, second, third, fourth) = group_of(wallet, members=4, put_in=5000)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, DEMO[2])
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.COUNTED
    groups.leave(wallet.db, second, chama_id, "second-out")
    # the third's approval is the only one standing: not yet the rule of two
    assert proposals.vote(wallet.db, wallet.policy, third.id, proposal_id, True) == proposals.COUNTED
    groups.invite(wallet.db, wallet.policy, chair, chama_id, second.phone, CODE)
    assert groups.answer_invite(wallet.db, second, chama_id, True)
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.NO_BALLOT
    assert status_of(wallet, proposal_id) == "open"
    assert proposals.vote(wallet.db, wallet.policy, fourth.id, proposal_id, True) == proposals.PAID


def test_a_proposal_of_a_member_who_leaves_is_closed(wallet):
    chama_id, (chair, second, third) = group_of(wallet, put_in=5000)
    groups.contribute(wallet.db, wallet.policy, second, chama_id, 1000, "second-in")
    proposal_id = proposals.propose(wallet.db, wallet.policy, second, chama_id, 2000, MPESA_PHONE)
    proposals.vote(wallet.db, wallet.policy, chair.id, proposal_id, True)
    groups.leave(wallet.db, second, chama_id, "second-out")
    assert status_of(wallet, proposal_id) == PROPOSER_LEFT
    assert proposals.vote(wallet.db, wallet.policy, third.id, proposal_id, True) == proposals.CLOSED
    assert proposals.pending_for(wallet.db, third.id, chama_id) == []


def test_an_approval_by_sms_reply_pays_a_till_through_its_rail(wallet, client):
    kes, sats, fee, _price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=sats + fee)
    proposal_id, _ = use_cases.chama_propose_kes(wallet, chair, proof(wallet, chair), chama_id, TO_TILL, kes, TILL)
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.COUNTED
    answer = sms_reply(client, third.phone, f"NDIYO {code_of(wallet, proposal_id, third.id)}", "ATXid_9")
    assert answer.get_json() == {"status": "paid"}
    [payout] = payouts_of(wallet, proposal_id)
    assert payout.state == POSTED and holds(wallet, chama_id) == 0


def test_no_one_leaves_while_a_group_payout_is_on_its_way(wallet, monkeypatch):
    """A payout in flight holds the group's sats; were it refused they would come back: a leaver
    then would get the rule's share of too little. Leaving waits for the payout's end."""
    from models import RESERVED, SENT
    kes, sats, fee, _price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=sats + fee)
    groups.contribute(wallet.db, wallet.policy, second, chama_id, sats, "second-in")
    proposal_id, _ = use_cases.chama_propose_kes(wallet, chair, proof(wallet, chair), chama_id, TO_MPESA, kes,
                                                 MPESA_PHONE)
    monkeypatch.setattr(wallet.mpesa, "payout", lambda phone, kes, reference: PayoutResult(State.PENDING))
    use_cases.chama_vote(wallet, second, proof(wallet, second), proposal_id, True)
    assert use_cases.chama_vote(wallet, third, proof(wallet, third), proposal_id, True) == proposals.PAID
    [payout] = payouts_of(wallet, proposal_id)
    assert payout.state in (RESERVED, SENT)  # M-Pesa has not said yet
    before, mine = holds(wallet, chama_id), balance(wallet, second.phone)
    with pytest.raises(groups.ChamaRefused) as refused:
        groups.leave(wallet.db, view(wallet, second.phone), chama_id, "second-leaves")
    assert refused.value.reason == "payout-in-flight"
    assert holds(wallet, chama_id) == before and balance(wallet, second.phone) == mine
    assert t("en", "chama.refused.payout-in-flight")


def test_a_proposal_whose_proposer_left_meanwhile_pays_nothing(wallet):
    """A leave sees only committed proposals: one its leaver was writing at that moment stays open.
    Its deciding vote finds the proposer gone and closes it."""
    from helpers.wallet.chama.tables import LEFT, ChamaMember
    kes, sats, fee, _price = withdraw_terms(KES_MIN)
    chama_id, (chair, second, third) = group_of(wallet, put_in=3 * (sats + fee))
    groups.invite(wallet.db, wallet.policy, chair, chama_id, "+254711000111", CODE)
    fourth = view(wallet, "+254711000111")
    assert groups.answer_invite(wallet.db, fourth, chama_id, True)
    proposal_id, _ = use_cases.chama_propose_kes(wallet, fourth, proof(wallet, fourth), chama_id, TO_TILL, kes, TILL)
    with wallet.db.write() as s:  # the leave that committed while the proposal was being written
        s.query(ChamaMember).filter_by(chama_id=chama_id, user_id=fourth.id).update({"status": LEFT})
    before = holds(wallet, chama_id)
    use_cases.chama_vote(wallet, second, proof(wallet, second), proposal_id, True)
    assert use_cases.chama_vote(wallet, third, proof(wallet, third), proposal_id, True) == proposals.CLOSED
    assert status_of(wallet, proposal_id) == PROPOSER_LEFT
    assert payouts_of(wallet, proposal_id) == [] and holds(wallet, chama_id) == before
