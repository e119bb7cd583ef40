"""Defects found by trying to break the wallet (issue 25), each reproduced here first: a payee's
reused invoice paid twice, an ended session that still acted, a customer's receive limit used up
by strangers, and digits of other scripts read as numbers."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from helpers.wallet.ledger import journal
from helpers.wallet.payouts import lightning_out, payments
from helpers.wallet.errors import InvoiceAlreadyPaid
from helpers.infra.i18n import t
from lightning import MockBackend, PaymentResult, State, decode_invoice
from models import (DEBIT, FAILED, LN_IN_FLIGHT, NODE, PENDING, SEND, SETTLED, Invoice, Payout, SmsOutbox,
                    Transaction, User,
                    UssdSession)
from tests.conftest import DEMO, PIN, balance, configure, snapshot
from tests.fakes.fake_lnurl import FakeLnurl, mock_issuer

AMOUNT = 2000


def reusing_issuer():
    """A payee's server that answers the same BOLT11 for the same amount (valid network, amount
    and description hash): a lazy or hostile LNURL server."""
    issue, issued = mock_issuer(), {}

    def same_invoice(sats: int, metadata: str) -> str:
        if (sats, metadata) not in issued:
            issued[(sats, metadata)] = issue(sats, metadata)
        return issued[(sats, metadata)]
    return same_invoice


@pytest.fixture
def reusing_payee():
    server = FakeLnurl(issue=reusing_issuer())
    yield server
    server.stop()


def pay(phone, payee, amount: int = AMOUNT) -> str:
    return phone.run("1", payee.address("bob"), str(amount), "1", PIN)


def sends(wallet) -> list[Transaction]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Transaction).where(Transaction.type == SEND, Transaction.direction == DEBIT,
                                                        Transaction.payment_hash.is_not(None),
                                                        Transaction.follows_id.is_(None))
                              .order_by(Transaction.id)))


# ------------------------------------------------------------------ 1. one invoice, paid once
def test_a_reused_invoice_is_paid_once_and_the_second_attempt_reserves_nothing(insecure, reusing_payee, alice):
    wallet = insecure
    a0, node0 = balance(wallet, DEMO[0]), wallet.lightning.balance().balance_sat
    first = pay(alice, reusing_payee)
    row = sends(wallet)[0]
    assert first.startswith("END ") and row.status == SETTLED
    after_first = balance(wallet, DEMO[0])
    assert after_first == a0 - AMOUNT - row.fee_sats
    before = snapshot(wallet)
    second = pay(alice, reusing_payee)
    assert reusing_payee.invoices[0] == reusing_payee.invoices[1]  # the payee did answer the same invoice
    assert second == "END " + t("en", "lnsend.already-paid")
    assert snapshot(wallet) == before  # nothing reserved, nothing recorded
    assert balance(wallet, DEMO[0]) == after_first
    assert wallet.lightning.balance().balance_sat == node0 - AMOUNT - row.fee_sats
    assert [r.status for r in sends(wallet)] == [SETTLED]


def test_the_database_refuses_a_second_reservation_of_one_hash(wallet, alice):
    """The guard is a key in the database, not a read before the write: it holds across
    processes and instances (on MariaDB, a second transaction waits for the first, then fails)."""
    with wallet.db.read() as s:
        user = s.scalar(select(User).where(User.phone == DEMO[0]))
    a0 = balance(wallet, DEMO[0])
    fee = wallet.policy.fee_sats("lightning", AMOUNT)
    bounds = (wallet.policy.value("payment-min-sats"), wallet.policy.value("payment-max-sats"))
    payment_hash = "ab" * 32
    rail = wallet.rail("lightning")
    lightning_out.reserve_lightning(wallet.db, rail, wallet.policy, user, AMOUNT, fee, bounds, payment_hash, "x@y",
                                    "key-1")
    with pytest.raises(InvoiceAlreadyPaid):
        lightning_out.reserve_lightning(wallet.db, rail, wallet.policy, user, AMOUNT, fee, bounds, payment_hash, "x@y",
                                       "key-2")
    assert balance(wallet, DEMO[0]) == a0 - AMOUNT - fee  # debited once
    # A replay under the first key is still answered with the first receipt, not refused.
    again = lightning_out.reserve_lightning(wallet.db, rail, wallet.policy, user, AMOUNT, fee, bounds, payment_hash,
                                           "x@y", "key-1")
    assert again.replay
    first = sends(wallet)[0]
    # A payment the node confirmed failed releases the hash: the invoice may be tried again.
    lightning_out.refund_lightning(wallet.db, rail, first.id)
    lightning_out.reserve_lightning(wallet.db, rail, wallet.policy, user, AMOUNT, fee, bounds, payment_hash, "x@y",
                                    "key-3")
    assert balance(wallet, DEMO[0]) == a0 - AMOUNT - fee
    lightning_out.refund_lightning(wallet.db, rail, sends(wallet)[-1].id)


def test_a_node_saying_already_paid_refunds_that_attempt_once_and_keeps_the_hash(insecure, reusing_payee, alice):
    """The invoice was paid by someone else on our node (or before the guard existed): the node
    refuses, this attempt is refunded once, and it is never settled by a later status lookup."""
    wallet = insecure
    bolt11 = reusing_payee.issue(AMOUNT, reusing_payee.metadata("bob"))
    assert wallet.lightning.pay_invoice(bolt11, 10).state is State.SUCCEEDED  # paid outside the ledger
    a0 = balance(wallet, DEMO[0])
    reply = pay(alice, reusing_payee)
    row = sends(wallet)[-1]
    assert reply == "END " + t("en", "lnsend.failed", ref=row.reference)
    assert row.status == FAILED and balance(wallet, DEMO[0]) == a0
    with wallet.db.read() as s:  # nobody may pay that invoice again
        assert holder(s, row.payment_hash) == row.id
    assert pay(alice, reusing_payee) == "END " + t("en", "lnsend.already-paid")


def holder(s, payment_hash: str) -> int | None:
    """The movement whose payout holds this payment hash (nobody else may reserve it)."""
    return s.scalar(select(Payout.transaction_id).where(Payout.rail == "lightning", Payout.rail_key == payment_hash))


def in_flight(wallet, monkeypatch) -> list[str]:
    """The node takes payments and says nothing yet: each stays pending. Returns what it took."""
    taken: list[str] = []

    def take(bolt11: str, max_fee_sat: int) -> PaymentResult:
        taken.append(bolt11)
        return PaymentResult(State.PENDING, decode_invoice(bolt11).payment_hash)
    monkeypatch.setattr(wallet.lightning, "pay_invoice", take)
    return taken


def test_a_duplicate_left_pending_from_before_the_guard_is_refunded_not_settled(insecure, reusing_payee, alice,
                                                                                monkeypatch):
    """Rows from before the guard: two pending payments of one hash, the migrations gave the hash
    to the first (0004, then 0015 made it the first payout's rail key). The node says the hash
    succeeded; only the holder is settled by it."""
    wallet = insecure
    node_pays = type(wallet.lightning).pay_invoice
    taken = in_flight(wallet, monkeypatch)
    pay(alice, reusing_payee)
    first = sends(wallet)[0]
    a0 = balance(wallet, DEMO[0])
    with wallet.db.write() as s:  # the duplicate the old code could make, with no guard row
        dupe_id = journal.record(s, journal.Entry("lightning-pending", "DUPE0001", first.user_id, SEND, DEBIT, AMOUNT,
                                                  status=PENDING, payment_hash=first.payment_hash),
                                 [journal.customer(first.user_id, AMOUNT), journal.house(LN_IN_FLIGHT, -AMOUNT)]).id
        s.add(Payout(reference="DUPE0001", rail="lightning", user_id=first.user_id, transaction_id=dupe_id,
                     destination="", amount_sats=AMOUNT, fee_sats=0, fee_limit_sats=0, state="sent", rail_key=None,
                     rail_ref=first.payment_hash, queries=0))  # as migration 0015 moves such a row
    assert node_pays(wallet.lightning, taken[0], first.fee_sats).state is State.SUCCEEDED  # the node pays it once
    counts = payments.reconcile(wallet)
    assert counts["settled"] == 1 and counts["refunded"] == 1
    by_ref = {row.reference: row.status for row in sends(wallet)}
    assert by_ref == {first.reference: SETTLED, "DUPE0001": FAILED}
    assert balance(wallet, DEMO[0]) == a0 + first.fee_sats - wallet.lightning.payment_status(first.payment_hash).fee_sat
    with wallet.db.read() as s:
        assert holder(s, first.payment_hash) == first.id


def test_an_operator_refund_of_a_payment_the_node_may_still_make_keeps_the_hash(insecure, reusing_payee, alice,
                                                                                 monkeypatch):
    wallet = insecure
    in_flight(wallet, monkeypatch)
    pay(alice, reusing_payee)
    row = sends(wallet)[0]
    payments.resolve_by_operator(wallet, row.reference, paid=False, reason="ticket 7: customer asked")
    with wallet.db.read() as s:  # the node may still pay it: nobody else may reserve it meanwhile
        assert holder(s, row.payment_hash) == row.id
    assert pay(alice, reusing_payee) == "END " + t("en", "lnsend.already-paid")


def test_a_money_step_retried_after_the_session_life_says_what_happened(app, wallet, alice):
    amount = wallet.policy.value("payment-min-sats")
    alice.run("1", "0" + DEMO[1][4:], str(amount), "1", PIN)
    ref = wallet.db.session.scalar(select(Transaction.reference).where(Transaction.type == SEND))
    life = wallet.settings.ussd_session_timeout_s
    with wallet.db.write() as s:  # the first answer was never saved, and the session is old now
        row = s.scalar(select(UssdSession).where(UssdSession.session_id == alice.session_id))
        row.last_reply, row.last_text_hash = None, None
        row.created_at -= dt.timedelta(seconds=life + 1)
    before = snapshot(wallet)
    assert alice.post(alice.text) == "END " + t("en", "replay", ref=ref)
    assert snapshot(wallet) == before


def test_the_mock_node_refuses_to_pay_a_paid_invoice_again():
    node = MockBackend()
    bolt11 = mock_issuer()(AMOUNT, "[]")
    assert node.pay_invoice(bolt11, 10).state is State.SUCCEEDED
    again = node.pay_invoice(bolt11, 10)
    assert (again.state, again.already_paid) == (State.FAILED, True)
    assert node.payment_status(again.payment_hash).state is State.SUCCEEDED  # the first payment stands


def test_ledger_check_names_a_hash_settled_twice_and_one_the_node_never_paid(insecure, reusing_payee, alice, runner):
    wallet = insecure
    pay(alice, reusing_payee)
    assert runner.invoke(args=["ledger-check"]).exit_code == 0
    row = sends(wallet)[0]
    with wallet.db.write() as s:  # what the defect did: a second settled row for the same hash
        for reference, payment_hash in (("TWICE001", row.payment_hash), ("NEVER001", "cd" * 32)):
            journal.record(s, journal.Entry("lightning-defect", reference, row.user_id, SEND, DEBIT, AMOUNT,
                                            payment_hash=payment_hash),
                           [journal.customer(row.user_id, AMOUNT), journal.house(NODE, -AMOUNT)])
    result = runner.invoke(args=["ledger-check"])
    assert result.exit_code == 1
    assert f"hash={row.payment_hash} refs={row.reference},TWICE001: settled 2 times" in result.output
    assert f"hash={'cd' * 32} refs=NEVER001: node says pending" in result.output
    with wallet.db.write() as s:  # leave books the fixture's own check accepts: both failed, and given back
        s.execute(update(Transaction).where(Transaction.reference.in_(["TWICE001", "NEVER001"]))
                  .values(status=FAILED))
        journal.record(s, journal.Entry("adjustment", "UNDO0001", row.user_id, "adjust", "credit", 2 * AMOUNT),
                       [journal.house(NODE, 2 * AMOUNT), journal.customer(row.user_id, -2 * AMOUNT)])


# ------------------------------------------------------------------ 2. an ended session acts on nothing
NEW_PIN = "9146"


def pin_hash(wallet, phone: str) -> str:
    with wallet.db.read() as s:
        return s.scalar(select(User.pin_hash).where(User.phone == phone))


def test_an_ended_session_answers_end_and_does_not_change_the_pin(wallet, alice):
    assert alice.run("6", "3", PIN, NEW_PIN, NEW_PIN) == "END " + t("en", "pinchange.done")
    changed = pin_hash(wallet, DEMO[0])
    before = snapshot(wallet)
    # The same session, a path nobody typed screen by screen: 0000 is not the PIN.
    assert alice.post("6*3*0000*1357*1357") == "END " + t("en", "error.expired")
    assert pin_hash(wallet, DEMO[0]) == changed and snapshot(wallet) == before
    # The request that ended it, repeated (a network retry), gets its own answer again.
    assert alice.post(alice.text) == "END " + t("en", "pinchange.done")


def test_an_ended_session_sends_nothing_more(wallet, alice, bob):
    amount = wallet.policy.value("payment-min-sats")
    assert alice.run("1", "0" + DEMO[1][4:], str(amount), "1", PIN).startswith("END ")
    before = snapshot(wallet)
    assert alice.post(f"1*0{DEMO[1][4:]}*{amount}*1*{PIN}*1") == "END " + t("en", "error.expired")
    assert alice.post(f"1*0{DEMO[1][4:]}*{amount + 1}*1*{PIN}") == "END " + t("en", "error.expired")
    assert snapshot(wallet) == before


def test_a_session_older_than_its_life_answers_end(app, wallet, alice):
    alice.start()
    alice.press("1")  # a choice: the session row is written
    life = wallet.settings.ussd_session_timeout_s
    with wallet.db.write() as s:
        row = s.scalar(select(UssdSession).where(UssdSession.session_id == alice.session_id))
        row.created_at -= dt.timedelta(seconds=life + 1)
    assert alice.press("0" + DEMO[1][4:]) == "END " + t("en", "error.expired")


def test_an_old_pin_checked_on_one_path_is_not_carried_into_another(wallet, alice):
    original = pin_hash(wallet, DEMO[0])
    alice.start()
    assert alice.press("6", "3", PIN) == "CON " + t("en", "pinchange.new", digits=wallet.policy.value("pin-length"))
    # Same session, still open: a different old PIN at the same place, then a new PIN.
    assert alice.post("6*3*0000*" + NEW_PIN) == "END " + t("en", "error.expired")
    assert alice.post("6*3*0000*" + NEW_PIN + "*" + NEW_PIN) == "END " + t("en", "error.expired")
    assert pin_hash(wallet, DEMO[0]) == original


# ------------------------------------------------------------------ 3. strangers cannot block receiving
def test_lnurl_invoices_from_strangers_do_not_use_up_the_customers_own_limit(app, client, wallet, alice):
    configure(app, rate_limits=True)
    own_limit, _ = wallet.policy.rate_limit("invoices-per-phone")
    per_source, _ = wallet.policy.rate_limit("lnurl-invoices-per-source")
    name = DEMO[0].lstrip("+")
    amount_msat = wallet.policy.value("payment-min-sats") * 1000
    answers = [client.get(f"/lnurlp/{name}/callback?amount={amount_msat}").get_json()
               for _ in range(max(own_limit, per_source) + 1)]
    assert all("pr" in a for a in answers[:per_source])
    assert answers[per_source] == {"status": "ERROR", "reason": "too many invoices asked for; try later"}
    # Another source still gets invoices, and the customer's own menu is untouched.
    other = client.get(f"/lnurlp/{name}/callback?amount={amount_msat}", environ_base={"REMOTE_ADDR": "127.0.0.9"})
    assert "pr" in other.get_json()
    reply = alice.run("2", str(wallet.policy.value("payment-min-sats")))
    assert reply.startswith("END ") and reply != "END " + t("en", "error.too-many")
    with wallet.db.read() as s:  # strangers' invoices expire soon and message nobody
        lnurl = list(s.scalars(select(Invoice).where(Invoice.idempotency_key.is_(None))))
        assert lnurl and all(
            abs((i.expires_at - i.created_at).total_seconds() - wallet.settings.lnurl_invoice_expiry_s) < 5
            for i in lnurl)
        assert s.scalar(select(SmsOutbox.id).where(SmsOutbox.message.contains(lnurl[0].bolt11))) is None


# ------------------------------------------------------------------ 4. ASCII digits only
def test_lnurl_refuses_amounts_and_names_in_other_scripts_digits(client, wallet):
    fullwidth = "".join(chr(ord("０") + int(d)) for d in "10000000")
    answer = client.get(f"/lnurlp/{DEMO[0].lstrip('+')}/callback?amount={fullwidth}").get_json()
    assert answer == {"status": "ERROR", "reason": "amount (msat) is required"}
    arabic = "".join(chr(0x0660 + int(d)) for d in DEMO[0].lstrip("+"))
    assert client.get(f"/.well-known/lnurlp/{arabic}").status_code == 404
    amount = str(wallet.policy.value("payment-min-sats") * 1000)
    assert client.get(f"/lnurlp/{arabic}/callback?amount={amount}").get_json()["status"] == "ERROR"
    with wallet.db.read() as s:
        assert s.scalar(select(Invoice.id)) is None


@pytest.mark.parametrize("screen_inputs,typed,error", [
    (["1"], "".join(chr(0x0660 + int(d)) for d in "0712345678"), "error.phone"),
    (["2"], "".join(chr(ord("０") + int(d)) for d in "5000"), "error.amount"),
    (["4"], "".join(chr(0x0966 + int(d)) for d in "500"), "error.amount"),  # Devanagari
])
def test_the_menu_refuses_other_scripts_digits(wallet, alice, screen_inputs, typed, error):
    before = snapshot(wallet)
    alice.run(*screen_inputs)
    assert alice.press(typed).startswith("CON " + t("en", error))
    assert snapshot(wallet) == before


def test_a_pin_in_other_scripts_digits_is_not_a_pin(wallet, alice):
    digits = wallet.policy.value("pin-length")
    fullwidth_pin = "".join(chr(ord("０") + int(d)) for d in PIN)
    alice.run("6", "3")
    assert alice.press(fullwidth_pin).startswith("CON " + t("en", "pin.format", digits=digits))
    with wallet.db.read() as s:
        assert s.scalar(select(User.pin_failures).where(User.phone == DEMO[0])) == 0


def test_payee_bounds_in_other_scripts_digits_are_refused():
    from helpers.lightning.lnurl_pay import _msat

    assert _msat(1000) == 1000 and _msat("1000") == 1000
    for bad in ("１０００", "١٠٠٠", True, 1.5, None):
        with pytest.raises(ValueError):
            _msat(bad)



@pytest.mark.parametrize("typed", ["0712-ABC-DEF", "0712345678x1", "0712345678 ext 1", "+254 712 ٣45678"])
def test_a_phone_number_with_letters_or_an_extension_is_no_number(typed):
    from helpers.infra.phone import normalise

    assert normalise("0712 345 678") == "+254712345678"  # spaces, as people write numbers
    assert normalise(typed) is None


def test_an_mpesa_code_or_amount_in_look_alike_characters_is_refused():
    from helpers.mpesa.provider import normalise_code
    from helpers.wallet.mpesa.callbacks import _same_amount

    assert normalise_code("qk12ab34cd") == "QK12AB34CD"
    for look_alike in ("QK12AB34Cı", "QK12AB34Cſ", "QK12AB34ﬁ"):  # upper() makes each ASCII
        assert normalise_code(look_alike) is None
    assert _same_amount("100", 100) and _same_amount("100.00", 100)
    for bad in ("１００", "1_00", "١٠٠", "1e2"):
        assert not _same_amount(bad, 100)
