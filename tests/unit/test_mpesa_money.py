"""The M-Pesa money paths of Daraja (STK push top-up, B2C withdrawal, B2B till and paybill payment,
the status queries) in the fast tier: an in-process provider answers as Daraja does ("accepted",
then the outcome by callback), and the callbacks go straight to helpers/wallet/mpesa/callbacks.py
with Daraja's bodies (tests/fakes/fake_daraja.py builds them; no server, no waiting). The real
HTTP exchange with a fake Daraja is tests/unit/test_daraja.py, in the slow tier.

Each test is also the one that kills a plausible one-line slip in the money code (issue 31,
item 12; docs/mutation.md lists them)."""

from __future__ import annotations

import itertools

import pytest

from helpers.infra.i18n import t
from helpers.mpesa.daraja import msisdn
from helpers.mpesa.provider import MpesaProvider, PayoutResult, PushResult, TopupQueryResult
from helpers.infra.phone import safaricom
from helpers.wallet.mpesa import callbacks as mpesa_callbacks, flows as mpesa_flows
from helpers.wallet.reports import books
from lightning import State
from models import FAILED, PENDING, SETTLED, MpesaRequest, Transaction
from tests.conftest import movements
from tests.conftest import mpesa_request_of, KES_MIN, PIN, balance, credit_sats, outbox, snapshot
from tests.fakes.fake_daraja import FakeDaraja

_ids = itertools.count(1)


class InstantDaraja(MpesaProvider):
    """Daraja's answers without the network: every request is accepted (a push gets its checkout
    ids, a payout its ConversationID, a business payment Daraja's OriginatorConversationID); the
    outcome comes later, from the test, as Daraja's callback would. `query_answer`: what the STK
    query says; `before_query_answer`: what happens at M-Pesa while the query is on its way."""

    name = "daraja"
    topup_by_push = True
    payouts_async = True

    def __init__(self) -> None:
        self.query_answer = TopupQueryResult(State.PENDING)
        self.before_query_answer = None
        self.payout_queries: list[str] = []

    def confirm_topup(self, code: str, phone: str, kes: int) -> bool:
        raise AssertionError("a push provider never takes a typed code")

    def accepts_phone(self, phone: str) -> bool:
        return safaricom(phone)

    def push_topup(self, phone: str, kes: int, reference: str) -> PushResult:
        n = next(_ids)
        return PushResult(State.PENDING, checkout_request_id=f"ws_CO_{n}", merchant_request_id=f"{n}-1")

    def query_topup(self, checkout_request_id: str) -> TopupQueryResult:
        if self.before_query_answer is not None:
            self.before_query_answer()
        return self.query_answer

    def payout(self, phone: str, kes: int, reference: str) -> PayoutResult:
        return PayoutResult(State.PENDING, conversation_id=f"AG_{next(_ids)}")

    def pay_business(self, command: str, party_b: str, account: str, kes: int, reference: str,
                     requester: str) -> PayoutResult:
        n = next(_ids)
        return PayoutResult(State.PENDING, conversation_id=f"AG_{n}", originator_id=f"{n}-b2b-1")

    def query_payout(self, reference: str, original: str | None = None) -> bool:
        self.payout_queries.append(reference)
        return True


@pytest.fixture
def daraja(wallet, monkeypatch):
    provider = InstantDaraja()
    monkeypatch.setattr(wallet, "mpesa", provider)
    return provider


def request_of(wallet, kind: str):
    return mpesa_request_of(wallet, kind)


def payout_row(wallet) -> Transaction:
    with wallet.db.read() as s:
        return s.scalars(movements().where(Transaction.type == "withdraw")
                         .order_by(Transaction.id.desc())).first()


def fees_earned(wallet) -> int:
    with wallet.db.read() as s:
        return books.totals(s)["fees_earned_sats"]


# ------------------------------------------------------------------ Daraja's callbacks, as it sends them
def paid_push(request: MpesaRequest, receipt: str = "QKA1B2C3D4", kes: int | None = None) -> dict:
    return FakeDaraja.stk_callback({"merchant": request.merchant_request_id, "checkout": request.checkout_request_id,
                                    "kes": request.amount_kes if kes is None else kes,
                                    "phone": msisdn(request.phone), "result": "0", "receipt": receipt})


def b2c_record(request: MpesaRequest, status: str = "Completed", kes: int | None = None,
               receipt: str = "QKB1C2D3E4") -> dict:
    return {"originator": request.originator_conversation_id, "conversation": request.conversation_id,
            "receipt": receipt, "status": status, "kes": request.amount_kes if kes is None else kes,
            "phone": msisdn(request.phone)}


def status_answer(request: MpesaRequest, status: str, kes: int | None = None) -> dict:
    return FakeDaraja.status_result(b2c_record(request, status, kes),
                                    {"OriginatorConversationID": "9-416199-2", "ConversationID": "AG_query"})


def deliver(wallet, kind: str, event: str, request: MpesaRequest, body: dict) -> tuple[int, str]:
    return mpesa_callbacks.handle(wallet.db, wallet.rail, kind, event, request.reference, body)


# ------------------------------------------------------------------ the steps a customer takes
def top_up(alice, kes: int) -> MpesaRequest:
    assert alice.run("4", str(kes)).startswith("CON ")
    assert alice.press("1").startswith("END ")
    return request_of(alice.client.application.extensions["wallet"], "stk")


def withdraw(alice, kes: int) -> MpesaRequest:
    wallet = alice.client.application.extensions["wallet"]
    reply = alice.run("5", str(kes), "1", PIN)
    assert reply == "END " + t("en", "withdraw.pending", kes=kes, phone=alice.phone, ref=payout_row(wallet).reference)
    return request_of(wallet, "b2c")


def pay_till(alice, kes: int, till: str = "52187") -> MpesaRequest:
    wallet = alice.client.application.extensions["wallet"]
    reply = alice.run("8", "1", till, str(kes), PIN)
    assert reply == "END " + t("en", "mpesapay.pending", kes=kes, payee=f"Till {till}",
                               ref=payout_row(wallet).reference)
    return request_of(wallet, "b2b")


# ------------------------------------------------------------------ top-up by STK push
def test_a_paid_push_credits_the_quoted_sats_once(alice, wallet, daraja):
    kes = KES_MIN
    before = balance(wallet, alice.phone)
    request = top_up(alice, kes)
    assert request.status == PENDING and balance(wallet, alice.phone) == before
    assert deliver(wallet, "stk", "", request, paid_push(request)) == (200, "credited")
    assert deliver(wallet, "stk", "", request, paid_push(request)) == (200, "duplicate")
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    assert request_of(wallet, "stk").status == SETTLED


def test_a_push_paid_for_another_amount_credits_nothing(alice, wallet, daraja):
    request = top_up(alice, KES_MIN)
    before = snapshot(wallet)
    status, _why = deliver(wallet, "stk", "", request, paid_push(request, kes=KES_MIN + 1))
    assert status == 400 and snapshot(wallet) == before and request_of(wallet, "stk").status == PENDING


def test_a_paid_callback_after_the_query_said_failed_still_credits(alice, wallet, daraja):
    """The status query answered "failed" (no sats moved), then M-Pesa's own callback says the
    customer paid, with a receipt: the customer paid, so the sats are credited, once."""
    kes = KES_MIN
    before = balance(wallet, alice.phone)
    request = top_up(alice, kes)
    daraja.query_answer = TopupQueryResult(State.FAILED, "1037", "DS timeout user cannot be reached")
    assert mpesa_flows.reconcile(wallet.db, daraja, wallet.rail, 0, 0) == {"topup-failed": 1}
    assert request_of(wallet, "stk").status == FAILED and balance(wallet, alice.phone) == before
    assert deliver(wallet, "stk", "", request, paid_push(request)) == (200, "credited")
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    assert request_of(wallet, "stk").status == SETTLED
    assert deliver(wallet, "stk", "", request, paid_push(request)) == (200, "duplicate")  # once
    assert balance(wallet, alice.phone) == before + credit_sats(kes)


def test_a_failed_answer_after_the_credit_changes_nothing(alice, wallet, daraja):
    """The status query is on its way when the paid callback credits the push; the query then
    answers "failed": the settled push stays settled and the customer is not told it failed."""
    kes = KES_MIN
    before = balance(wallet, alice.phone)
    request = top_up(alice, kes)
    daraja.before_query_answer = lambda: deliver(wallet, "stk", "", request, paid_push(request))
    daraja.query_answer = TopupQueryResult(State.FAILED, "1032", "Request cancelled by user")
    assert mpesa_flows.reconcile(wallet.db, daraja, wallet.rail, 0, 0) == {"topup-already-done": 1}
    assert not mpesa_flows.fail_topup(wallet.db, request.reference, "1032", "late")
    assert request_of(wallet, "stk").status == SETTLED
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    failed_sms = t("en", "sms.topup-failed", kes=kes, ref=request.reference)
    assert failed_sms not in outbox(wallet, alice.phone)


def test_a_cancelled_push_credits_nothing_and_says_so_once(alice, wallet, daraja):
    kes = KES_MIN
    request = top_up(alice, kes)
    before = snapshot(wallet)
    cancelled = FakeDaraja.stk_callback({"merchant": request.merchant_request_id,
                                         "checkout": request.checkout_request_id, "result": "1032"})
    assert deliver(wallet, "stk", "", request, cancelled) == (200, "failed")
    assert deliver(wallet, "stk", "", request, cancelled) == (200, "duplicate")
    assert snapshot(wallet) == before and request_of(wallet, "stk").status == FAILED
    failed_sms = t("en", "sms.topup-failed", kes=kes, ref=request.reference)
    assert outbox(wallet, alice.phone).count(failed_sms) == 1


# ------------------------------------------------------------------ withdrawal (B2C)
def test_a_paid_withdrawal_is_debited_once_and_its_fee_earned(alice, wallet, daraja):
    kes = KES_MIN
    before, fees_before = balance(wallet, alice.phone), fees_earned(wallet)
    request = withdraw(alice, kes)
    row = payout_row(wallet)
    reserved = row.amount_sats + row.fee_sats
    assert row.fee_sats > 0 and balance(wallet, alice.phone) == before - reserved
    assert fees_earned(wallet) == fees_before  # not earned while pending
    paid = FakeDaraja.b2c_result(b2c_record(request))
    assert deliver(wallet, "b2c", "result", request, paid) == (200, "settled")
    assert deliver(wallet, "b2c", "result", request, paid) == (200, "duplicate")
    assert payout_row(wallet).status == SETTLED and balance(wallet, alice.phone) == before - reserved
    assert fees_earned(wallet) == fees_before + row.fee_sats


def test_a_failed_withdrawal_refunds_once_and_its_fee_is_not_earned(alice, wallet, daraja):
    kes = KES_MIN
    before, fees_before = balance(wallet, alice.phone), fees_earned(wallet)
    request = withdraw(alice, kes)
    declined = FakeDaraja.b2c_result(b2c_record(request, "Declined"))
    assert deliver(wallet, "b2c", "result", request, declined) == (200, "refunded")
    assert deliver(wallet, "b2c", "result", request, declined) == (200, "duplicate")
    row = payout_row(wallet)
    assert row.status == FAILED and row.fee_sats > 0 and balance(wallet, alice.phone) == before
    assert fees_earned(wallet) == fees_before  # a refunded fee was never earned
    assert t("en", "withdraw.failed", ref=row.reference) in outbox(wallet, alice.phone)


def test_a_withdrawal_result_for_another_amount_moves_nothing(alice, wallet, daraja):
    request = withdraw(alice, KES_MIN)
    before = snapshot(wallet)
    altered = FakeDaraja.b2c_result(b2c_record(request, kes=KES_MIN + 1))
    assert deliver(wallet, "b2c", "result", request, altered)[0] == 400
    assert snapshot(wallet) == before and payout_row(wallet).status == PENDING


def test_the_status_query_settles_a_withdrawal_without_result(alice, wallet, daraja):
    kes = KES_MIN
    before = balance(wallet, alice.phone)
    request = withdraw(alice, kes)
    assert mpesa_flows.reconcile(wallet.db, daraja, wallet.rail, 0, 0) == {"payout-queried": 1}
    assert daraja.payout_queries == [request.reference]
    assert deliver(wallet, "status", "result", request, status_answer(request, "Authorized")) == (200, "still pending")
    assert payout_row(wallet).status == PENDING
    assert deliver(wallet, "status", "result", request, status_answer(request, "Completed")) == (200, "settled")
    row = payout_row(wallet)
    assert row.status == SETTLED and balance(wallet, alice.phone) == before - row.amount_sats - row.fee_sats


@pytest.mark.parametrize("state", ["Completed", "Declined"])
def test_a_status_answer_for_another_amount_neither_settles_nor_refunds(alice, wallet, daraja, state):
    """Transaction Status reports a payment of another amount: not the payment we asked about,
    whatever it says happened to it. The withdrawal stays pending, its sats reserved."""
    request = withdraw(alice, KES_MIN)
    before = snapshot(wallet)
    status, _why = deliver(wallet, "status", "result", request, status_answer(request, state, kes=KES_MIN + 1))
    assert status == 400
    assert snapshot(wallet) == before and payout_row(wallet).status == PENDING
    assert request_of(wallet, "b2c").status == PENDING


@pytest.mark.parametrize("ours_originator,ours_conversation,settles", [
    (True, True, True), (True, False, True), (False, True, True), (False, False, False)])
def test_a_status_answer_is_about_our_payment_when_one_of_its_ids_is_ours(alice, wallet, daraja, ours_originator,
                                                                           ours_conversation, settles):
    request = withdraw(alice, KES_MIN)
    record = {**b2c_record(request), **({} if ours_originator else {"originator": "SatsPesa-OTHER"}),
              **({} if ours_conversation else {"conversation": "AG_other"})}
    answer = FakeDaraja.status_result(record, {"OriginatorConversationID": "9-416199-2", "ConversationID": "AG_q"})
    before = snapshot(wallet)
    if settles:
        assert deliver(wallet, "status", "result", request, answer) == (200, "settled")
        assert payout_row(wallet).status == SETTLED
    else:
        assert deliver(wallet, "status", "result", request, answer)[0] == 400
        assert snapshot(wallet) == before and payout_row(wallet).status == PENDING


def test_a_declined_status_answer_refunds_once(alice, wallet, daraja):
    before = balance(wallet, alice.phone)
    request = withdraw(alice, KES_MIN)
    assert deliver(wallet, "status", "result", request, status_answer(request, "Declined")) == (200, "refunded")
    assert deliver(wallet, "status", "result", request, status_answer(request, "Declined")) == (200, "duplicate")
    assert payout_row(wallet).status == FAILED and balance(wallet, alice.phone) == before


# ------------------------------------------------------------------ till and paybill (B2B)
def test_a_till_payment_settles_on_its_result_once(alice, wallet, daraja):
    kes = KES_MIN * 2
    before = balance(wallet, alice.phone)
    request = pay_till(alice, kes)
    row = payout_row(wallet)
    assert row.status == PENDING and balance(wallet, alice.phone) == before - row.amount_sats - row.fee_sats
    altered = FakeDaraja.b2b_result(b2c_record(request, kes=kes + 1))
    assert deliver(wallet, "b2b", "result", request, altered)[0] == 400
    assert payout_row(wallet).status == PENDING
    paid = FakeDaraja.b2b_result(b2c_record(request))
    assert deliver(wallet, "b2b", "result", request, paid) == (200, "settled")
    assert deliver(wallet, "b2b", "result", request, paid) == (200, "duplicate")
    assert payout_row(wallet).status == SETTLED
    assert balance(wallet, alice.phone) == before - row.amount_sats - row.fee_sats


def test_a_declined_paybill_payment_refunds_once(alice, wallet, daraja):
    kes = KES_MIN * 2
    before = balance(wallet, alice.phone)
    alice.run("8", "2", "888880", "ACC77", str(kes), PIN)
    request = request_of(wallet, "b2b")
    declined = FakeDaraja.b2b_result(b2c_record(request, "Declined"))
    assert deliver(wallet, "b2b", "result", request, declined) == (200, "refunded")
    assert deliver(wallet, "b2b", "result", request, declined) == (200, "duplicate")
    assert payout_row(wallet).status == FAILED and balance(wallet, alice.phone) == before
