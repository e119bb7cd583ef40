"""Chama (group) wallets, issue 35: a chama of three with a rule of two approvals pays a proposal
once, after the second approval (by USSD or by SMS reply), even when both approve at the same
moment; a rejected or expired proposal pays nothing; two proposals cannot both spend the same
group balance; a vote counts once and never after the member left; a leaver keeps what the rule
says; money in groups counts as owed to customers. Numbers from the policy, texts from t()."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from helpers.infra.i18n import t
from helpers.wallet import sim_swap
from helpers.wallet.chama import groups, proposals
from helpers.wallet.chama.tables import ChamaBallot, ChamaProposal, SmsInbox, account
from helpers.wallet.customers import users
from helpers.wallet.errors import InsufficientBalance, PolicyDenied
from helpers.wallet.ledger import movements
from helpers.wallet.ledger import journal
from helpers.wallet.reports import books
from helpers.web import worker
from models import LedgerAccount, Transaction, utcnow
from tests.conftest import DEMO, PIN, balance, outbox

PAYEE = "+254733444555"  # any phone, not a member
TOKEN = "incoming-sms-token-0123456789"
CODE = "*384*123#"


@pytest.fixture
def app_overrides():
    return {"SMS_INCOMING_TOKEN": TOKEN}


def view(wallet, phone: str) -> users.UserView:
    return users.register(wallet.db, phone, "en", CODE)


def holds(wallet, chama_id: int) -> int:
    with wallet.db.read() as s:
        return -int(s.scalar(select(LedgerAccount.balance_sats).where(LedgerAccount.code == account(chama_id))))


def chama_of_three(wallet, rule: int = 2, put_in: int | None = None) -> tuple[int, list[users.UserView]]:
    """A chama of the three demo users (the first its chair), `rule` approvals, and `put_in` sats
    contributed by its chair."""
    chair, second, third = (view(wallet, phone) for phone in DEMO)
    chama_id = groups.create(wallet.db, wallet.policy, chair, "Wanawake Pamoja", rule)
    for member in (second, third):
        groups.invite(wallet.db, wallet.policy, chair, chama_id, member.phone, CODE)
        assert groups.answer_invite(wallet.db, member, chama_id, True)
    amount = put_in if put_in is not None else 5 * wallet.policy.value("payment-min-sats")
    groups.contribute(wallet.db, wallet.policy, chair, chama_id, amount, f"key-{chama_id}-in")
    return chama_id, [chair, second, third]


def entries_of(wallet, proposal_id: int) -> int:
    with wallet.db.read() as s:
        return s.scalar(select(func.count()).select_from(Transaction)
                        .where(Transaction.idempotency_key == f"chama:{proposal_id}"))


def status_of(wallet, proposal_id: int) -> str:
    with wallet.db.read() as s:
        return s.scalar(select(ChamaProposal.status).where(ChamaProposal.id == proposal_id))


def code_of(wallet, proposal_id: int, user_id: int) -> str:
    with wallet.db.read() as s:
        return s.scalar(select(ChamaBallot.code).where(ChamaBallot.proposal_id == proposal_id,
                                                       ChamaBallot.user_id == user_id))


def sms_reply(client, phone: str, text: str, message_id: str, token: str = TOKEN):
    """Africa's Talking posting an incoming message: exactly the documented form fields."""
    return client.post(f"/sms/{token}/incoming", data={
        "from": phone, "to": "22384", "text": text, "date": "2026-12-07 04:00:00", "id": message_id,
        "networkCode": "63902"})


# ------------------------------------------------------------------ the check, by USSD and SMS
def test_a_chama_of_three_pays_after_the_second_approval_by_ussd_and_sms_reply(wallet, client, dial):
    chair, second, third = (dial(phone) for phone in DEMO)
    for phone in (chair, second, third):
        phone.run(PIN, PIN)
    minimum = wallet.policy.value("payment-min-sats")
    assert chair.run("9", "4", "8", "Wanawake", "2", "1") == "END " + t("en", "chama.created", group="Wanawake",
                                                                        code=CODE)
    for member in (second, third):
        assert chair.run("9", "4", "1", "5", "0" + member.phone[4:]).startswith("END ")
        assert member.run("9", "4", "1", "1") == "END " + t("en", "chama.joined", group="Wanawake")
    before = balance(wallet, chair.phone)
    put_in = chair.run("9", "4", "1", "1", str(3 * minimum), PIN)
    assert put_in.startswith("END " + t("en", "chama.contributed", amount=3 * minimum, group="Wanawake", ref="X",
                                        balance=0).split(" Ref")[0])
    assert balance(wallet, chair.phone) == before - 3 * minimum
    assert chair.run("9", "4", "1", "2", "1", "0" + PAYEE[4:], str(2 * minimum), PIN).startswith("END Proposed")
    with wallet.db.read() as s:
        [proposal_id] = s.scalars(select(ChamaProposal.id)).all()
    shown = second.run("9", "4", "1")
    assert t("en", "chama.group", group="Wanawake", amount=3 * minimum, count=1).split("\n")[3] in shown
    assert second.run("9", "4", "1", "3", "1", "1", PIN) == "END " + t("en", "chama.vote.counted")
    assert balance(wallet, PAYEE) in (None, 0) and status_of(wallet, proposal_id) == "open"
    # the third approves by replying to the SMS that carried their code
    code = code_of(wallet, proposal_id, view(wallet, third.phone).id)
    assert t("en", "sms.chama-vote", group="Wanawake", amount=2 * minimum, phone=PAYEE, otp=code) in outbox(
        wallet, third.phone)
    assert sms_reply(client, third.phone, f"yes {code}", "ATXid_1").get_json() == {"status": "paid"}
    assert balance(wallet, PAYEE) == 2 * minimum and holds(wallet, 1) == minimum
    assert entries_of(wallet, proposal_id) == 1
    # AT retries the same message, and the voter replies again: nothing more moves
    assert sms_reply(client, third.phone, f"yes {code}", "ATXid_1").get_json() == {"status": "already"}
    assert sms_reply(client, third.phone, f"YES {code}", "ATXid_2").get_json() == {"status": "closed"}
    assert balance(wallet, PAYEE) == 2 * minimum and entries_of(wallet, proposal_id) == 1
    statement = chair.run("9", "4", "1", "4")
    assert t("en", "chama.member-line", phone="0" + chair.phone[4:], amount=3 * minimum) in statement


def test_the_sms_callback_needs_its_token_and_a_code_of_the_senders_own(wallet, client):
    chama_id, (chair, second, third) = chama_of_three(wallet)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    code = code_of(wallet, proposal_id, second.id)
    assert sms_reply(client, second.phone, f"YES {code}", "m1", token="wrong-token-0123456789").status_code == 403
    # the third member cannot use the second's code; a stranger cannot either
    assert sms_reply(client, third.phone, f"YES {code}", "m2").get_json() == {"status": "no-ballot"}
    assert sms_reply(client, PAYEE, f"YES {code}", "m3").get_json() == {"status": "no-ballot"}
    assert sms_reply(client, second.phone, "hello", "m4").get_json() == {"status": "not-a-vote"}
    # Swahili words work; a NO from one of two voters makes a rule of two impossible: rejected
    assert sms_reply(client, second.phone, f"Hapana {code}", "m5").get_json() == {"status": "rejected"}
    assert status_of(wallet, proposal_id) == "rejected" and entries_of(wallet, proposal_id) == 0
    with wallet.db.read() as s:
        assert s.scalar(select(func.count()).select_from(SmsInbox)) == 4  # every message id, once


# ------------------------------------------------------------------ paid once, whatever the timing
def test_both_approving_at_the_same_moment_pays_once(wallet):
    chama_id, (chair, second, third) = chama_of_three(wallet)
    fourth = view(wallet, "+254711000111")
    groups.invite(wallet.db, wallet.policy, chair, chama_id, fourth.phone, CODE)
    groups.answer_invite(wallet.db, fourth, chama_id, True)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    start = threading.Barrier(3)
    outcomes: list[str] = []

    def approve(member: users.UserView) -> None:
        start.wait()
        outcomes.append(proposals.vote(wallet.db, wallet.policy, member.id, proposal_id, True))

    threads = [threading.Thread(target=approve, args=(m,)) for m in (second, third, fourth)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("paid") == 1, outcomes
    assert entries_of(wallet, proposal_id) == 1 and balance(wallet, PAYEE) == 2000


def test_a_payout_decided_twice_is_paid_once(wallet):
    """A twin of the deciding step (two requests both past their vote) finds the proposal paid."""
    chama_id, (chair, second, third) = chama_of_three(wallet)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True)
    assert proposals.vote(wallet.db, wallet.policy, third.id, proposal_id, True) == proposals.PAID
    with wallet.db.write() as s:
        assert proposals._decide(s, proposal_id) == proposals.CLOSED
    assert entries_of(wallet, proposal_id) == 1 and balance(wallet, PAYEE) == 2000


def test_a_vote_counts_once(wallet):
    chama_id, (chair, second, _third) = chama_of_three(wallet)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.COUNTED
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.ALREADY
    assert status_of(wallet, proposal_id) == "open" and entries_of(wallet, proposal_id) == 0


def test_the_proposer_has_no_vote_and_a_member_who_left_no_longer_counts(wallet):
    chama_id, (chair, second, third) = chama_of_three(wallet)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    assert proposals.vote(wallet.db, wallet.policy, chair.id, proposal_id, True) == proposals.NOT_MEMBER or \
        proposals.vote(wallet.db, wallet.policy, chair.id, proposal_id, True) == proposals.NO_BALLOT
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.COUNTED
    groups.leave(wallet.db, second, chama_id, "leave-second")
    # the second's approval no longer counts: the third's alone does not meet the rule of two,
    # and with one voter left the rule cannot be met: rejected, nothing paid
    assert proposals.vote(wallet.db, wallet.policy, third.id, proposal_id, True) == proposals.REJECTED
    assert proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True) == proposals.CLOSED
    assert entries_of(wallet, proposal_id) == 0 and balance(wallet, PAYEE) in (None, 0)


# ------------------------------------------------------------------ nothing paid
def test_a_rejected_proposal_pays_nothing(wallet, dial):
    chama_id, (chair, second, _third) = chama_of_three(wallet)
    before = holds(wallet, chama_id)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    phone = dial(second.phone)
    phone.run(PIN, PIN)
    assert phone.run("9", "4", "1", "3", "1", "2", PIN) == "END " + t("en", "chama.vote.rejected")
    assert status_of(wallet, proposal_id) == "rejected" and holds(wallet, chama_id) == before
    assert entries_of(wallet, proposal_id) == 0
    assert t("en", "sms.chama-rejected", group="Wanawake Pamoja", amount=2000, phone=PAYEE) in outbox(
        wallet, chair.phone)


def test_an_expired_proposal_pays_nothing(wallet, monkeypatch):
    chama_id, (chair, second, third) = chama_of_three(wallet)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True)
    later = utcnow() + dt.timedelta(hours=wallet.policy.value("chama-proposal-hours"), seconds=1)
    monkeypatch.setattr(proposals, "utcnow", lambda: later)
    assert worker.expire_chama_proposals(wallet) == 1
    assert status_of(wallet, proposal_id) == "expired"
    assert proposals.vote(wallet.db, wallet.policy, third.id, proposal_id, True) == proposals.CLOSED
    assert entries_of(wallet, proposal_id) == 0 and balance(wallet, PAYEE) in (None, 0)
    assert t("en", "sms.chama-expired", group="Wanawake Pamoja", amount=2000, phone=PAYEE) in outbox(
        wallet, chair.phone)


def test_a_late_approval_of_a_proposal_not_yet_swept_expires_it(wallet, monkeypatch):
    chama_id, (chair, second, third) = chama_of_three(wallet)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    proposals.vote(wallet.db, wallet.policy, second.id, proposal_id, True)
    later = utcnow() + dt.timedelta(hours=wallet.policy.value("chama-proposal-hours"), seconds=1)
    monkeypatch.setattr(proposals, "utcnow", lambda: later)
    assert proposals.vote(wallet.db, wallet.policy, third.id, proposal_id, True) == proposals.EXPIRED
    assert entries_of(wallet, proposal_id) == 0


def test_two_proposals_cannot_both_spend_the_same_group_balance(wallet):
    chama_id, (chair, second, third) = chama_of_three(wallet, put_in=5000)
    first = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 4000, PAYEE)
    other = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 4000, "+254733444666")
    for member in (second, third):
        proposals.vote(wallet.db, wallet.policy, member.id, first, True)
    proposals.vote(wallet.db, wallet.policy, second.id, other, True)
    assert proposals.vote(wallet.db, wallet.policy, third.id, other, True) == proposals.FAILED
    assert holds(wallet, chama_id) == 1000 and entries_of(wallet, other) == 0
    assert status_of(wallet, other) == "failed"


def test_the_group_account_is_never_overdrawn_by_the_journal(wallet):
    """The last guard: journal.record's conditional debit of a group's account."""
    chama_id, (chair, _second, _third) = chama_of_three(wallet, put_in=2000)
    entry = journal.Entry("chama-out", "TESTREF1", chair.id, "chama", "credit", 3000)
    with pytest.raises(InsufficientBalance):
        with wallet.db.write() as s:
            journal.record(s, entry, [journal.house(account(chama_id), 3000), journal.customer(chair.id, -3000)])
    assert holds(wallet, chama_id) == 2000


# ------------------------------------------------------------------ members and the books
def test_a_member_who_leaves_gets_back_what_the_rule_says(wallet):
    chama_id, (chair, second, _third) = chama_of_three(wallet)
    groups.contribute(wallet.db, wallet.policy, second, chama_id, 3000, "second-in")
    before = balance(wallet, second.phone)
    receipt = groups.leave(wallet.db, second, chama_id, "second-out")
    assert receipt.amount_sats == 3000 * wallet.policy.value("chama-leave-refund-percent") // 100
    assert balance(wallet, second.phone) == before + receipt.amount_sats
    assert groups.leave(wallet.db, second, chama_id, "second-out").replay  # the same request: once
    with pytest.raises(groups.ChamaRefused):
        groups.leave(wallet.db, chair, chama_id, "chair-out")  # the chair leaves last


def test_only_members_contribute_and_only_officials_invite(wallet):
    chama_id, (chair, second, _third) = chama_of_three(wallet)
    stranger = view(wallet, "+254711222333")
    with pytest.raises(groups.ChamaRefused, match="not-member"):
        groups.contribute(wallet.db, wallet.policy, stranger, chama_id, 2000, "stranger-in")
    with pytest.raises(groups.ChamaRefused, match="not-official"):
        groups.invite(wallet.db, wallet.policy, second, chama_id, stranger.phone, CODE)
    with pytest.raises(groups.ChamaRefused, match="already-member"):
        groups.invite(wallet.db, wallet.policy, chair, chama_id, second.phone, CODE)


def test_money_in_groups_is_owed_to_customers_in_the_solvency_report(wallet):
    with wallet.db.read() as s:
        owed = books.solvency(s, None).customers_sats
    chama_of_three(wallet, put_in=4000)
    with wallet.db.read() as s:
        assert books.solvency(s, None).customers_sats == owed
        assert journal.check(s) == []


def test_the_chama_screens_fit_and_speak_swahili(wallet, dial):
    chama_of_three(wallet)
    phone = dial(DEMO[1])
    phone.run(PIN, PIN)
    users.set_language(wallet.db, view(wallet, DEMO[1]).id, "sw")
    shown = phone.run("9", "4", "1")
    assert shown.startswith("CON Wanawake Pamoja") and "Changia" in shown


def test_an_sms_vote_from_a_number_on_sim_swap_hold_is_not_acted_on(wallet, client):
    chama_id, (chair, second, _third) = chama_of_three(wallet)
    proposal_id = proposals.propose(wallet.db, wallet.policy, chair, chama_id, 2000, PAYEE)
    sim_swap.mark_swapped(wallet.db, wallet.policy, second.phone)
    code = code_of(wallet, proposal_id, second.id)
    assert sms_reply(client, second.phone, f"YES {code}", "held-1").get_json() == {"status": "sim-swap-hold"}
    with wallet.db.read() as s:
        assert s.scalar(select(ChamaBallot.vote).where(ChamaBallot.proposal_id == proposal_id,
                                                       ChamaBallot.user_id == second.id)) is None


def test_contributions_are_held_to_the_daily_limit_like_sends(wallet):
    chama_id, (chair, _second, _third) = chama_of_three(wallet)
    limit, most = wallet.policy.value("daily-send-limit-sats"), wallet.policy.value("payment-max-sats")
    with wallet.db.write() as s:
        movements.credit_adjustment(s, chair.id, 2 * limit, "test: a rich chair", "rich-chair")
    given, n = 5 * wallet.policy.value("payment-min-sats"), 0  # chama_of_three's contribution
    while given + most <= limit:
        n += 1
        groups.contribute(wallet.db, wallet.policy, chair, chama_id, most, f"big-{n}")
        given += most
    with pytest.raises(PolicyDenied):
        groups.contribute(wallet.db, wallet.policy, chair, chama_id, most, "one-too-many")


def test_the_chair_names_officials_who_may_then_invite(wallet, dial):
    chama_id, (chair, second, _third) = chama_of_three(wallet)
    newcomer = "+254711222444"
    with pytest.raises(groups.ChamaRefused, match="not-chair"):
        groups.appoint(wallet.db, second, chama_id, chair.phone, "treasurer")
    phone = dial(chair.phone)
    phone.run(PIN, PIN)
    assert phone.run("9", "4", "1", "7", "0" + second.phone[4:], "2") == "END " + t(
        "en", "chama.appointed", phone="0" + second.phone[4:], group="Wanawake Pamoja")
    groups.invite(wallet.db, wallet.policy, second, chama_id, newcomer, CODE)  # a secretary invites
    with pytest.raises(groups.ChamaRefused, match="not-member"):
        groups.appoint(wallet.db, chair, chama_id, newcomer, "treasurer")  # invited, not active yet


def test_a_payout_that_would_lift_the_payee_over_their_balance_cap_fails_and_the_group_keeps_it(wallet):
    """Issue 34 with 35: the payee's tier balance cap holds for a group's payout too, decided under
    their row lock when the approvals are reached; the group's money stays where it was."""
    from helpers.wallet.customers import tiers
    cap = tiers.caps(wallet.policy, tiers.PHONE_ONLY, wallet.policy.value("fixed-kes-per-btc")).balance
    assert cap is not None
    from helpers.wallet import operators
    operators.adjust(wallet.db, "ops", DEMO[0], cap, "funding a chair for the test")
    chama_id, (chair, second, third) = chama_of_three(wallet, put_in=cap + 1000)
    newcomer = view(wallet, PAYEE)  # tier 0, empty: the payout alone passes its cap
    proposal = proposals.propose(wallet.db, wallet.policy, chair, chama_id, cap + 1, newcomer.phone)
    proposals.vote(wallet.db, wallet.policy, second.id, proposal, True)
    assert proposals.vote(wallet.db, wallet.policy, third.id, proposal, True) == "failed"
    assert status_of(wallet, proposal) == "failed" and entries_of(wallet, proposal) == 0
    assert holds(wallet, chama_id) == cap + 1000 and balance(wallet, PAYEE) == 0
