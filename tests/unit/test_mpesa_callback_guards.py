"""The guards of Daraja's callbacks and of the status queries, in the fast tier, through the
surfaces that stay when the M-Pesa code behind them moves: the customer dials (the test client),
the app talks to the project's fake Daraja on loopback (tests/fakes/fake_daraja.py, which checks
every request against the Daraja docs), Daraja's callbacks come to the app's callback URLs (the
ones the app gave Daraja), and the operator runs `flask reconcile`, `flask resolve-mpesa` and the
worker's M-Pesa job.

No server of the app: the fake's callbacks go through the Flask test client. The fake can also
lose the answer to a request (it does the work and closes the connection without answering), as
a network does. Outcomes are chosen by the amount's last two digits (fake_daraja.OUTCOMES).

Each test kills a mutant docs/mutation.md listed as surviving the fast tier (named in its
docstring). Not tested, because no behaviour differs (equivalent mutants):
- `_same_amount:4` (the `except InvalidOperation` answer): the amount is matched against
  `[0-9]{1,12}(\\.[0-9]{1,2})?` first, and Decimal() reads every such text, so it never raises.
- `b2c_result:1` (B2C results checked with `strict_originator=False`): every B2C request carries our
  own OriginatorConversationID from the start (it is sent with the request), so the check runs
  either way.
- `_finish_payout:10` (the answer when the reservation is not pending): a payout's request and its
  reservation move in one database transaction, and nothing else moves a reservation that has a
  request, so no reachable state has a pending request beside a finished reservation.
`stk:20` changes only the operator's log (a warning for a paid callback after a failure): that
is output operators act on, so it is tested by the warning's level and the reference it names.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

import pytest

from helpers.infra.i18n import t
from helpers.web import worker
from models import Transaction
from tests.conftest import movements
from tests.conftest import KES_MIN, PIN, balance, credit_sats, outbox, snapshot
from tests.fakes import fake_daraja
from tests.fakes.fake_daraja import FakeDaraja, kes_for, receipt

STATUS_QUERY = "/transactionstatus/v1/query"


class Daraja(FakeDaraja):
    """The fake Daraja, its callbacks delivered to the app through the test client. `lose_answers`:
    requests are carried out but their answer never comes back (the connection closes).
    `paid_then_refused`: a B2C payment's result (paid) comes before the answer to the request,
    which is a refusal."""

    def __init__(self) -> None:
        super().__init__()
        self.connect(None)

    def connect(self, app) -> None:
        """Serve the next test: its app, and nothing remembered from the last one."""
        self.wait_callbacks()
        with self.lock:
            self.app = app
            self.lose_answers = self.paid_then_refused = False
            for remembered in (self.stk, self.b2c, self.received, self.callbacks, self.violations, self._threads):
                remembered.clear()

    def send(self, url: str, payload) -> int:
        status = self.app.test_client().post(urlsplit(url).path, json=payload).status_code
        with self.lock:
            self.callbacks.append((url, payload, status))
        return status

    def reply(self, request, status: int, payload) -> None:
        if self.lose_answers and urlsplit(request.path).path != "/oauth/v1/generate":
            return  # done, and the answer is lost: the connection closes without one
        FakeDaraja.reply(request, status, payload)

    def _b2c(self, request, body: dict) -> None:
        if not self.paid_then_refused:
            return super()._b2c(request, body)
        record = {"originator": body["OriginatorConversationID"], "conversation": "AG_20261206_00000000000000paid",
                  "kes": body["Amount"], "phone": str(body["PartyB"]), "receipt": receipt(), "status": "Completed"}
        self.send(body["ResultURL"], self.b2c_result(record))
        self.reply(request, 400, {"requestId": "1-1-1", "errorCode": "400.002.02",
                                  "errorMessage": "Bad Request - Invalid Amount"})

    def sent(self, path_end: str) -> list[dict]:
        """Every request body the app sent to the API whose path ends with `path_end`."""
        with self.lock:
            return [body for path, body in self.received if path.endswith(path_end)]


@pytest.fixture(scope="module")
def fake():
    fake = Daraja()  # one for the module: stopping one takes half a second
    yield fake
    fake.stop()


@pytest.fixture
def app_overrides(fake):
    return fake_daraja.app_settings(fake.url, "https://wallet.example")


@pytest.fixture
def daraja(app, fake):
    fake.connect(app)
    yield fake
    fake.wait_callbacks()  # before the app's own checks (conftest)
    assert fake.violations == [], fake.violations  # every request the app made matched the docs


# ------------------------------------------------------------------ helpers
def withdrawals(wallet) -> list[Transaction]:
    with wallet.db.read() as s:
        return list(s.scalars(movements().where(Transaction.type == "withdraw").order_by(Transaction.id)))


def reference_in(url: str) -> str:
    """Our reference: the last segment of a callback URL the app gave Daraja."""
    return url.rsplit("/", 1)[-1]


def top_up(alice, daraja, kes: int) -> dict:
    """Dial a top-up by STK push and confirm it: Daraja's record of the push."""
    assert alice.run("4", str(kes)).startswith("CON ")
    assert alice.press("1").startswith("END ")
    return list(daraja.stk.values())[-1]


def paid_top_up(alice, daraja) -> str:
    """A top-up paid and credited by its callback: its M-Pesa receipt."""
    record = top_up(alice, daraja, kes_for("never", KES_MIN))
    assert daraja.send(record["url"], FakeDaraja.stk_callback(record)) == 200
    return record["receipt"]


def withdraw(alice, daraja, kes: int) -> tuple[str, dict]:
    """Dial a withdrawal to one's own number: the ResultURL the app gave Daraja, and Daraja's record."""
    reply = alice.run("5", str(kes), "1", PIN)
    assert reply.startswith("END "), reply
    body = daraja.sent("/b2c/v3/paymentrequest")[-1]
    return body["ResultURL"], daraja.b2c[body["OriginatorConversationID"]]


def pay_till(alice, daraja, kes: int) -> tuple[str, dict]:
    """Dial a till payment: the ResultURL the app gave Daraja, and Daraja's record (Daraja names it)."""
    reply = alice.run("8", "1", "52187", str(kes), PIN)
    assert reply.startswith("END "), reply
    body = daraja.sent("/b2b/v1/paymentrequest")[-1]
    return body["ResultURL"], [record for record in daraja.b2c.values() if record.get("command")][-1]


def reconcile(runner) -> str:
    result = runner.invoke(args=["reconcile", "--mpesa-after-seconds", "0"])
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------ top-up by STK push
def test_a_push_callback_without_result_code_changes_nothing(alice, wallet, daraja):
    """stk:3 - a callback that names the push but carries no ResultCode is refused: the push is not
    failed (no SMS saying so), and the real callback still credits it."""
    kes = kes_for("never", KES_MIN)
    before = balance(wallet, alice.phone)
    record = top_up(alice, daraja, kes)
    no_code = FakeDaraja.stk_callback({**record, "result": "1032"})
    del no_code["Body"]["stkCallback"]["ResultCode"]
    unchanged = snapshot(wallet)
    assert daraja.send(record["url"], no_code) == 400
    assert snapshot(wallet) == unchanged and outbox(wallet, alice.phone) == []
    assert daraja.send(record["url"], FakeDaraja.stk_callback(record)) == 200
    assert balance(wallet, alice.phone) == before + credit_sats(kes)


def test_a_paid_callback_for_a_push_m_pesa_refused_credits_nothing(alice, wallet, daraja):
    """stk:16 - M-Pesa refused the push (it gave it no ids): a "paid" callback for it is forged."""
    kes = kes_for("refused", KES_MIN)
    assert alice.run("4", str(kes)).startswith("CON ")
    assert alice.press("1") == "END " + t("en", "topup.push-failed")
    push = daraja.sent("/stkpush/v1/processrequest")[-1]
    forged = FakeDaraja.stk_callback({"merchant": "1-1", "checkout": "ws_CO_1", "kes": kes, "phone": push["PartyA"],
                                      "result": "0", "receipt": "ABCDE12345"})
    before = snapshot(wallet)
    assert daraja.send(push["CallBackURL"], forged) == 400
    assert snapshot(wallet) == before


def test_a_push_whose_answer_was_lost_is_credited_by_its_callback_and_keeps_its_ids(alice, wallet, daraja):
    """stk:16, stk:19 - the answer to the push was lost, so the app never learnt its ids: the paid
    callback credits it, and its ids (CheckoutRequestID and MerchantRequestID) become the push's:
    a later callback with another of either is refused."""
    kes = kes_for("never", KES_MIN)
    before = balance(wallet, alice.phone)
    daraja.lose_answers = True
    record = top_up(alice, daraja, kes)
    daraja.lose_answers = False
    assert daraja.send(record["url"], FakeDaraja.stk_callback(record)) == 200
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    credited = snapshot(wallet)
    assert daraja.send(record["url"], FakeDaraja.stk_callback({**record, "merchant": "9-forged-1"})) == 400
    assert daraja.send(record["url"], FakeDaraja.stk_callback({**record, "checkout": "ws_CO_forged"})) == 400
    assert daraja.send(record["url"], FakeDaraja.stk_callback(record)) == 200  # the real one: a duplicate
    assert snapshot(wallet) == credited


def test_a_paid_callback_after_a_failure_is_credited_and_warned_about(alice, wallet, daraja, caplog):
    """stk:20 - the only difference is the operator's log: a paid callback for a push M-Pesa had
    called failed is credited with a warning naming it; an ordinary paid callback warns nothing."""
    ordinary = top_up(alice, daraja, kes_for("never", KES_MIN))
    with caplog.at_level(logging.WARNING):
        assert daraja.send(ordinary["url"], FakeDaraja.stk_callback(ordinary)) == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and reference_in(ordinary["url"])
            in r.getMessage()] == []
    kes = kes_for("cancelled", KES_MIN)
    before = balance(wallet, alice.phone)
    cancelled = top_up(alice, daraja, kes)
    daraja.wait_callbacks()  # the fake's own callback: cancelled by the customer
    assert t("en", "sms.topup-failed", kes=kes, ref=reference_in(cancelled["url"])) in outbox(wallet, alice.phone)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        paid = FakeDaraja.stk_callback({**cancelled, "result": "0", "receipt": receipt()})
        assert daraja.send(cancelled["url"], paid) == 200
    assert balance(wallet, alice.phone) == before + credit_sats(kes)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and reference_in(cancelled["url"])
            in r.getMessage()] != []


# ------------------------------------------------------------------ withdrawal (B2C)
@pytest.mark.parametrize("left_out", ["TransactionID", "TransactionReceipt"])
def test_a_withdrawal_result_with_one_of_its_receipts_settles(alice, wallet, daraja, left_out):
    """b2c_result:3 - the docs list TransactionID as optional in a B2C result, beside the
    TransactionReceipt parameter; both are the M-Pesa receipt: either one settles the payout, and
    the customer's SMS carries it."""
    url, record = withdraw(alice, daraja, kes_for("never", KES_MIN))
    result = FakeDaraja.b2c_result(record)
    if left_out == "TransactionID":
        del result["Result"]["TransactionID"]
    else:
        params = result["Result"]["ResultParameters"]["ResultParameter"]
        params[:] = [item for item in params if item["Key"] != "TransactionReceipt"]
    assert daraja.send(url, result) == 200
    (row,) = withdrawals(wallet)
    assert row.status == "settled"
    assert any(record["receipt"] in sms for sms in outbox(wallet, alice.phone))


def test_a_result_without_conversation_id_does_not_stop_the_real_one_being_kept(alice, wallet, daraja):
    """b2c_result:7 - the answer to the B2C request was lost, so the app learns M-Pesa's
    ConversationID from a result. A result without one records none; the next one's is kept, and a
    later result with another ConversationID is refused. (The first two carry a receipt that
    already credited a top-up, so neither settles.)"""
    used = paid_top_up(alice, daraja)
    daraja.lose_answers = True
    url, record = withdraw(alice, daraja, kes_for("never", KES_MIN))
    daraja.lose_answers = False
    daraja.send(url, FakeDaraja.b2c_result({**record, "conversation": "", "receipt": used}))
    daraja.send(url, FakeDaraja.b2c_result({**record, "receipt": used}))
    assert [row.status for row in withdrawals(wallet)] == ["pending"]
    pending = snapshot(wallet)
    forged = FakeDaraja.b2c_result({**record, "conversation": "AG_20261206_000000000000forged"})
    assert daraja.send(url, forged) == 400
    assert snapshot(wallet) == pending and [row.status for row in withdrawals(wallet)] == ["pending"]
    assert daraja.send(url, FakeDaraja.b2c_result(record)) == 200
    assert [row.status for row in withdrawals(wallet)] == ["settled"]


def test_a_refusal_answered_after_the_paid_result_does_not_say_failed(alice, wallet, daraja):
    """_finish_payout:4 - M-Pesa's result (paid) arrives before its answer to the request, which
    is a refusal: the payout stays paid, and the customer is not told it failed."""
    kes = kes_for("success", KES_MIN)
    before = balance(wallet, alice.phone)
    daraja.paid_then_refused = True
    reply = alice.run("5", str(kes), "1", PIN)
    (row,) = withdrawals(wallet)
    assert row.status == "settled" and balance(wallet, alice.phone) == before - row.amount_sats - row.fee_sats
    assert reply != "END " + t("en", "withdraw.failed", ref=row.reference)
    assert t("en", "withdraw.failed", ref=row.reference) not in outbox(wallet, alice.phone)


def test_an_operator_cannot_settle_a_payout_with_a_receipt_already_used(alice, wallet, daraja, runner):
    """_finish_payout:11 - `flask resolve-mpesa --outcome paid` with a receipt that is already on
    another movement fails (nothing settled, the command says so); with the payout's own it works."""
    used = paid_top_up(alice, daraja)
    url, record = withdraw(alice, daraja, kes_for("never", KES_MIN))
    reference = reference_in(url)
    before = snapshot(wallet)
    reused = runner.invoke(args=["resolve-mpesa", reference, "--outcome", "paid", "--receipt", used,
                                 "--reason", "ticket 12: statement"])
    assert reused.exit_code != 0, reused.output
    assert snapshot(wallet) == before and [row.status for row in withdrawals(wallet)] == ["pending"]
    done = runner.invoke(args=["resolve-mpesa", reference, "--outcome", "paid", "--receipt", record["receipt"],
                               "--reason", "ticket 12: statement"])
    assert done.exit_code == 0, done.output
    assert [row.status for row in withdrawals(wallet)] == ["settled"]


# ------------------------------------------------------------------ till and paybill (B2B)
def test_a_business_result_from_another_originator_moves_nothing(alice, wallet, daraja):
    """_payout_result:2 - Daraja named the business payment (its OriginatorConversationID): a result
    with another one is refused, though its ConversationID is right."""
    url, record = pay_till(alice, daraja, kes_for("never", KES_MIN * 2))
    before = snapshot(wallet)
    forged = FakeDaraja.b2b_result({**record, "originator": "ffff-ffff-999999"})
    assert daraja.send(url, forged) == 400
    assert snapshot(wallet) == before and [row.status for row in withdrawals(wallet)] == ["pending"]
    assert daraja.send(url, FakeDaraja.b2b_result(record)) == 200
    assert [row.status for row in withdrawals(wallet)] == ["settled"]


def test_a_business_payment_whose_answer_was_lost_is_settled_by_its_result(alice, wallet, daraja):
    """b2b_result:1 - the answer to the B2B request (with the ids Daraja gave it) was lost: its
    result still settles it, and the receipt names the business as the result does."""
    daraja.lose_answers = True
    url, record = pay_till(alice, daraja, kes_for("never", KES_MIN * 2))
    daraja.lose_answers = False
    assert [row.status for row in withdrawals(wallet)] == ["pending"]
    assert daraja.send(url, FakeDaraja.b2b_result(record)) == 200
    assert [row.status for row in withdrawals(wallet)] == ["settled"]
    assert any(fake_daraja.BUSINESS_NAME in sms for sms in outbox(wallet, alice.phone))


def test_a_business_payment_is_queried_by_the_id_daraja_gave_it(alice, wallet, daraja, runner):
    """_query:3, _query:4, _query:5 - the status query about a business payment asks about the
    OriginatorConversationID Daraja gave it (not one of ours), and its answer settles it."""
    paid_top_up(alice, daraja)  # another M-Pesa request in the books
    url, record = pay_till(alice, daraja, kes_for("never", KES_MIN * 2))
    reconcile(runner)
    assert [body["OriginalConversationID"] for body in daraja.sent(STATUS_QUERY)] == [record["originator"]]
    daraja.wait_callbacks()  # Transaction Status answers by callback: Completed
    assert [row.status for row in withdrawals(wallet)] == ["settled"]


def test_a_business_payment_daraja_never_identified_is_not_queried(alice, wallet, daraja, runner):
    """_query:3, _query:5 - without Daraja's id there is nothing to ask Transaction Status about
    (our own ids are not the payment's): no query; it stays pending for its result or an operator."""
    daraja.lose_answers = True
    pay_till(alice, daraja, kes_for("never", KES_MIN * 2))
    daraja.lose_answers = False
    reconcile(runner)
    assert daraja.sent(STATUS_QUERY) == []
    assert [row.status for row in withdrawals(wallet)] == ["pending"]


# ------------------------------------------------------------------ the status queries' claim
def test_the_worker_asks_again_about_a_payout_still_undecided(alice, wallet, daraja):
    """_claim:1 - the worker's M-Pesa job asks about a pending payout each time it runs: Daraja
    answers "Authorized" (not final), and the next run asks again."""
    url, _record = withdraw(alice, daraja, kes_for("undecided", KES_MIN))
    mpesa_job = worker.HANDLERS[worker.MPESA]
    for asked in (1, 2, 3):
        assert mpesa_job(wallet, reference_in(url)) is False  # still pending: the job stays
        daraja.wait_callbacks()
        assert len(daraja.sent(STATUS_QUERY)) == asked
    assert [row.status for row in withdrawals(wallet)] == ["pending"]


def test_reconcile_counts_the_status_queries_of_a_pending_payout(alice, wallet, daraja, runner):
    """_claim:1, _claim:4 - each `flask reconcile` asks again about an undecided payout, and its
    list of pending M-Pesa requests says how many times it was asked."""
    url, _record = withdraw(alice, daraja, kes_for("undecided", KES_MIN))
    line = re.compile(rf"^PENDING mpesa .*ref={reference_in(url)} .*queries=(-?\d+)", re.MULTILINE)
    for asked in (1, 2):
        output = reconcile(runner)
        daraja.wait_callbacks()
        assert [int(n) for n in line.findall(output)] == [asked], output
        assert len(daraja.sent(STATUS_QUERY)) == asked
