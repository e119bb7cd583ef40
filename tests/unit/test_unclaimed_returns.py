"""Issue 33, sends nobody claims: sats sent to a phone that never created a PIN go back to the
sender once the claim day the recipient's SMS named (`unclaimed-return-days` after the send) is
over; once, by the worker, with an SMS to each; never after the recipient created a PIN, however
close the two come."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, func, select

from helpers.infra.i18n import t
from helpers.wallet import operators
from helpers.wallet.customers import users
from helpers.wallet.ledger import journal, unclaimed
from helpers.web import worker
from models import Transaction, User, utcnow
from tests.conftest import PIN, balance, movements, outbox

NEW = "+254733444555"
OTHER_NEW = "+254733444666"
CODE = "*384*123#"


def send(phone, to: str, amount: int) -> Transaction:
    """`phone` sends `amount` sats to `to` (typed as people write it); returns the movement."""
    assert phone.run("1", "0" + to[4:], str(amount), "1", PIN).startswith("END ")
    sent = last_send(phone.client.application.extensions["wallet"], to)
    assert sent is not None and sent.amount_sats == amount
    return sent


def last_send(wallet, to: str) -> Transaction:
    with wallet.db.read() as s:
        return s.scalars(movements().where(Transaction.kind == unclaimed.TRANSFER, Transaction.counterparty == to)
                         .order_by(Transaction.id.desc())).first()


def returns(wallet) -> list[Transaction]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Transaction).where(Transaction.kind == unclaimed.KIND).order_by(Transaction.id)))


def day_after_claim(wallet, sent: Transaction) -> dt.datetime:
    """The first moment the send is due: midnight (UTC) after its claim day."""
    claim_day = unclaimed.claim_by(wallet.policy, sent.created_at)
    return dt.datetime.combine(claim_day + dt.timedelta(days=1), dt.time())


def at(monkeypatch, moment: dt.datetime) -> None:
    """Move the clock of the module that decides on returns to `moment`."""
    monkeypatch.setattr(unclaimed, "utcnow", lambda: moment)


def claim_date(wallet, sent: Transaction) -> str:
    return unclaimed.claim_by(wallet.policy, sent.created_at).strftime("%d/%m/%Y")


def test_the_claim_sms_names_the_last_day_to_create_a_pin(wallet, alice):
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    day = claim_date(wallet, sent)
    assert outbox(wallet, NEW) == [t("en", "sms.new-recipient", phone=alice.phone, amount=amount, code=CODE,
                                     date=day)]
    assert day in outbox(wallet, NEW)[0]
    days = wallet.policy.value("unclaimed-return-days")
    assert unclaimed.claim_by(wallet.policy, sent.created_at) == (sent.created_at + dt.timedelta(days=days)).date()


def test_a_send_nobody_claims_goes_back_after_its_claim_day_and_not_before(monkeypatch, wallet, alice):
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    after_send = balance(wallet, alice.phone)
    first_due = day_after_claim(wallet, sent)

    at(monkeypatch, first_due - dt.timedelta(seconds=1))  # the claim day's last second
    assert unclaimed.due(wallet.db, wallet.policy) == []
    worker._every(wallet, "unclaimed")
    assert unclaimed.give_back(wallet.db, wallet.policy, sent.id) == unclaimed.NOT_DUE
    assert returns(wallet) == [] and balance(wallet, NEW) == amount

    at(monkeypatch, first_due)
    assert unclaimed.due(wallet.db, wallet.policy) == [sent.id]
    assert worker.return_unclaimed(wallet) == 1
    assert balance(wallet, alice.phone) == after_send + amount  # the amount, not the send's fee
    assert balance(wallet, NEW) == 0
    [back] = returns(wallet)
    assert (back.user_id, back.amount_sats, back.counterparty) == (sent.user_id, amount, NEW)
    assert back.idempotency_key == unclaimed.key(sent.id)
    days = wallet.policy.value("unclaimed-return-days")
    assert outbox(wallet, alice.phone)[-1] == t("en", "sms.unclaimed-returned", phone=NEW, amount=amount, days=days,
                                                ref=back.reference, balance=after_send + amount)
    assert outbox(wallet, NEW)[-1] == t("en", "sms.unclaimed-gone", phone=alice.phone, amount=amount, days=days,
                                        ref=back.reference)
    with wallet.db.read() as s:
        assert journal.check(s) == []
        lines = journal.statement(s, sent.user_id, limit=1)
    assert (lines[0].kind, lines[0].amount, lines[0].counterparty) == (unclaimed.KIND, amount, NEW)


def test_the_worker_returns_a_send_once_however_often_it_runs(monkeypatch, wallet, alice):
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    at(monkeypatch, day_after_claim(wallet, sent) + dt.timedelta(days=3))
    worker._every(wallet, "unclaimed")
    worker._every(wallet, "unclaimed")
    assert unclaimed.give_back(wallet.db, wallet.policy, sent.id) == unclaimed.ALREADY
    assert len(returns(wallet)) == 1 and balance(wallet, NEW) == 0
    days = wallet.policy.value("unclaimed-return-days")
    back = returns(wallet)[0]
    assert outbox(wallet, alice.phone).count(t("en", "sms.unclaimed-returned", phone=NEW, amount=amount, days=days,
                                               ref=back.reference, balance=balance(wallet, alice.phone))) == 1


def test_the_database_refuses_a_second_return_of_one_send(monkeypatch, wallet, alice):
    """Two workers that both passed the check of earlier returns: the unique key stops the second."""
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    at(monkeypatch, day_after_claim(wallet, sent))
    monkeypatch.setattr(unclaimed, "_RETURNED", select(Transaction.id).where(  # finds none
        Transaction.idempotency_key == bindparam("key"), Transaction.id < 0))
    assert unclaimed.give_back(wallet.db, wallet.policy, sent.id) == unclaimed.RETURNED
    operators.adjust(wallet.db, "ops", NEW, amount, "so a second debit would be covered")
    assert unclaimed.give_back(wallet.db, wallet.policy, sent.id) == unclaimed.ALREADY
    assert len(returns(wallet)) == 1 and balance(wallet, NEW) == amount


def test_a_recipient_who_created_a_pin_in_time_keeps_the_sats(monkeypatch, wallet, alice, dial):
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    dial(NEW).run(PIN, PIN)
    at(monkeypatch, day_after_claim(wallet, sent) + dt.timedelta(days=3))
    assert unclaimed.due(wallet.db, wallet.policy) == []
    assert worker.return_unclaimed(wallet) == 0
    assert unclaimed.give_back(wallet.db, wallet.policy, sent.id) == unclaimed.CLAIMED
    assert returns(wallet) == [] and balance(wallet, NEW) == amount


def test_a_pin_created_between_the_listing_and_the_return_keeps_the_sats(monkeypatch, wallet, alice):
    """The race: the worker lists the send, the recipient creates a PIN, then the worker returns
    it. The PIN is checked again under the row lock, so nothing moves."""
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    at(monkeypatch, day_after_claim(wallet, sent))
    listed = unclaimed.due

    def list_then_claim(db, policy, now=None, limit=500):
        found = listed(db, policy, now, limit)
        with db.read() as s:
            recipient = s.scalar(select(User.id).where(User.phone == NEW))
        assert users.set_first_pin(db, recipient, PIN, wallet.pepper)
        return found

    monkeypatch.setattr(unclaimed, "due", list_then_claim)
    assert worker.return_unclaimed(wallet) == 0
    assert returns(wallet) == [] and balance(wallet, NEW) == amount


def test_two_senders_to_one_number_each_get_their_own_back(monkeypatch, wallet, alice, bob):
    users.set_language(wallet.db, last_user_id(wallet, bob.phone), "sw")
    low = wallet.policy.value("payment-min-sats")
    from_alice = send(alice, NEW, low)
    from_bob = send(bob, NEW, low * 2)
    before = {alice.phone: balance(wallet, alice.phone), bob.phone: balance(wallet, bob.phone)}
    # the second send, to an account that now exists without a PIN, names its own claim day too
    assert outbox(wallet, NEW)[-1] == t("en", "sms.new-recipient", phone=bob.phone, amount=low * 2, code=CODE,
                                        date=claim_date(wallet, from_bob))
    at(monkeypatch, day_after_claim(wallet, from_bob))
    assert unclaimed.due(wallet.db, wallet.policy) == [from_alice.id, from_bob.id]
    assert worker.return_unclaimed(wallet) == 2
    assert balance(wallet, alice.phone) == before[alice.phone] + low
    assert balance(wallet, bob.phone) == before[bob.phone] + low * 2
    assert balance(wallet, NEW) == 0
    by_send = {back.idempotency_key: back for back in returns(wallet)}
    assert by_send[unclaimed.key(from_alice.id)].user_id == from_alice.user_id
    assert by_send[unclaimed.key(from_bob.id)].user_id == from_bob.user_id
    days = wallet.policy.value("unclaimed-return-days")
    assert outbox(wallet, bob.phone)[-1] == t("sw", "sms.unclaimed-returned", phone=NEW, amount=low * 2, days=days,
                                              ref=by_send[unclaimed.key(from_bob.id)].reference,
                                              balance=before[bob.phone] + low * 2)


def test_a_recipient_who_dialled_but_never_created_a_pin_is_still_returned(monkeypatch, wallet, alice, dial):
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    assert dial(NEW).run().startswith("CON " + t("en", "pin.create", digits=wallet.policy.value("pin-length")))
    at(monkeypatch, day_after_claim(wallet, sent))
    assert worker.return_unclaimed(wallet) == 1
    assert balance(wallet, NEW) == 0


def test_a_recipient_who_no_longer_holds_the_sats_is_skipped(monkeypatch, wallet, alice):
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, NEW, amount)
    operators.adjust(wallet.db, "ops", NEW, -1, "a correction")
    before = balance(wallet, alice.phone)
    at(monkeypatch, day_after_claim(wallet, sent))
    assert unclaimed.due(wallet.db, wallet.policy) == []
    assert unclaimed.give_back(wallet.db, wallet.policy, sent.id) == unclaimed.SHORT  # the conditional debit
    assert returns(wallet) == [] and balance(wallet, alice.phone) == before
    assert balance(wallet, NEW) == amount - 1


def test_a_customer_whose_pin_an_operator_reset_keeps_what_they_received(monkeypatch, wallet, alice, bob):
    """No PIN now, but one was set before: not an unclaimed account."""
    amount = wallet.policy.value("payment-min-sats")
    sent = send(alice, bob.phone, amount)
    operators.reset_pin(wallet.db, "ops", bob.phone, "the owner proved who they are")
    at(monkeypatch, day_after_claim(wallet, sent))
    assert unclaimed.due(wallet.db, wallet.policy) == []
    assert unclaimed.give_back(wallet.db, wallet.policy, sent.id) == unclaimed.CLAIMED
    assert returns(wallet) == []


def test_only_sends_between_customers_go_back(monkeypatch, wallet):
    with wallet.db.read() as s:  # the demo seed's opening credits, to customers without a PIN
        entry = s.scalar(select(func.min(Transaction.id)).where(Transaction.kind == "adjustment"))
    assert entry is not None
    at(monkeypatch, utcnow() + dt.timedelta(days=10 * wallet.policy.value("unclaimed-return-days")))
    assert unclaimed.give_back(wallet.db, wallet.policy, entry) == unclaimed.NOTHING


def test_the_worker_runs_the_returns_periodically(wallet):
    assert "unclaimed" in worker._periodic(wallet)


def last_user_id(wallet, phone: str) -> int:
    with wallet.db.read() as s:
        return s.scalar(select(User.id).where(User.phone == phone))
