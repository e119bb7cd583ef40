"""Send BTC to a Lightning address typed on the keypad: resolved by LNURL-pay, checked against
the payee's bounds and the policy, amount + maximum fee reserved, paid with a fee limit, refunded
only when the node confirms a failure, settled later by the reconciler. The payee's server is
tests/fakes/fake_lnurl.py on loopback; the nodes are the mock, the fake LND and the fake BTCPay (both
checking every request against the official specs)."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from helpers.wallet.payouts import payments
from helpers.infra.i18n import receipt_text, t
from helpers.infra.settings import Settings
from helpers.lightning.lnurl_pay import LnurlPayError, parse_address, resolve
from lightning import MockBackend, decode_invoice
from models import FAILED, PENDING, SETTLED, Transaction
from tests.fakes import fake_btcpay, fake_lnd
from tests.conftest import DEMO, PIN, balance, outbox, snapshot
from tests.fakes.fake_lnurl import FakeLnurl
from tests.servers import free_port

AMOUNT = 2500


def sent_row(wallet) -> Transaction:
    with wallet.db.read() as s:
        return s.scalar(select(Transaction).where(Transaction.payment_hash.is_not(None), Transaction.type == "send",
                                                  Transaction.follows_id.is_(None)).order_by(Transaction.id.desc()))


def max_fee(wallet, amount: int = AMOUNT) -> int:
    return wallet.policy.fee_sats("lightning", amount)


# ------------------------------------------------------------------ the happy path
def test_a_user_pays_a_lightning_address(insecure, payee, alice):
    wallet = insecure
    node_before = wallet.lightning.balance().balance_sat
    a0 = balance(wallet, DEMO[0])
    address = payee.address("carol")
    assert alice.run("1", address) == "CON " + t("en", "send.ln.amount", payee=address,
                                                 min=wallet.policy.value("payment-min-sats"),
                                                 max=wallet.policy.value("payment-max-sats"))
    fee = max_fee(wallet)
    assert alice.press(str(AMOUNT)) == "CON " + t("en", "send.ln.confirm", amount=AMOUNT, payee=address, fee=fee,
                                                  total=AMOUNT + fee)
    alice.press("1")
    reply = alice.press(PIN)
    row = sent_row(wallet)
    left = wallet.policy.value("daily-send-limit-sats") - AMOUNT
    assert reply == "END " + receipt_text("en", "lnsend.done", left, amount=AMOUNT, payee=address, fee=0,
                                          ref=row.reference, balance=a0 - AMOUNT)
    assert balance(wallet, DEMO[0]) == a0 - AMOUNT  # the unused fee reserve came back
    assert (row.status, row.amount_sats, row.fee_sats, row.counterparty) == (SETTLED, AMOUNT, 0, address)
    assert row.payment_hash == decode_invoice(payee.invoices[-1]).payment_hash
    assert wallet.lightning.balance().balance_sat == node_before - AMOUNT
    assert payee.requests == ["/.well-known/lnurlp/carol", "/cb/carol/callback"]
    assert outbox(wallet, DEMO[0])[-1] == receipt_text("en", "sms.sent", left, amount=AMOUNT, phone=address, fee=0,
                                                       ref=row.reference, balance=a0 - AMOUNT)


def test_the_confirmation_replayed_pays_once_and_fetches_one_invoice(insecure, payee, alice):
    wallet = insecure
    a0 = balance(wallet, DEMO[0])
    first = alice.run("1", payee.address(), str(AMOUNT), "1", PIN)
    assert first.startswith("END ")
    again = alice.post(alice.text)  # Africa's Talking delivers the last step again
    assert again == first
    # The same path in a fresh session (the dialled code) is ended by the walker before any money
    # step (the idempotency key itself is tested by test_pay_address_twice_under_one_key_...).
    alice.session_id += "-twin"
    assert alice.post(alice.text) == "END " + t("en", "error.dialled-past", code=wallet.service_code)
    assert balance(wallet, DEMO[0]) == a0 - AMOUNT
    assert len(payee.invoices) == 1


def test_an_address_at_our_own_domain_is_an_internal_send(insecure, payee, alice):
    wallet = insecure
    from helpers.wallet.incoming import lnurl

    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    ours = lnurl.address(wallet.settings, DEMO[1])
    fee = wallet.policy.fee_sats("internal", 3000)
    reply = alice.run("1", ours.upper(), "3000", "1", PIN)
    assert reply.startswith("END " + t("en", "send.done", amount=3000, phone=DEMO[1], fee=fee, ref="X",
                                       balance=0).split(" Ref")[0])
    assert (balance(wallet, DEMO[0]), balance(wallet, DEMO[1])) == (a0 - 3000 - fee, b0 + 3000)
    assert payee.requests == []


def test_pay_address_twice_under_one_key_fetches_one_invoice_and_debits_once(insecure, payee):
    """The replay lookup at the top of pay_address: a second call with the key never asks the
    payee's server for another invoice nor the node to pay, and gets the first payment's result."""
    from helpers.wallet.customers import users
    from lightning import State

    wallet = insecure
    with wallet.db.read() as s:
        user = users.UserView.of(users.get(s, DEMO[0]))
    params = resolve(*parse_address(payee.address()), wallet.settings)
    a0 = balance(wallet, DEMO[0])
    first = payments.pay_address(wallet, user, params, AMOUNT, "pay-twice-key")
    asked = list(payee.requests)
    again = payments.pay_address(wallet, user, params, AMOUNT, "pay-twice-key")
    assert (first.state, first.replay) == (State.SUCCEEDED, False)
    assert (again.state, again.replay) == (State.SUCCEEDED, True)
    assert (again.receipt.reference, again.receipt.transaction_id) == (first.receipt.reference,
                                                                       first.receipt.transaction_id)
    assert payee.requests == asked and len(payee.invoices) == 1
    assert balance(wallet, DEMO[0]) == a0 - AMOUNT - first.receipt.fee_sats


# ------------------------------------------------------------------ refused before any sat is reserved
@pytest.mark.parametrize("typed", ["carol@", "@example.com", "a@b@c.com", "carol@exa mple.com", "carol@.com",
                                   "x" * 60 + "@example.com"])
def test_a_malformed_address_is_re_prompted(insecure, alice, typed):
    before = snapshot(insecure)
    reply = alice.run("1", typed)
    assert reply == "CON " + t("en", "error.address") + "\n" + t("en", "send.phone")
    assert snapshot(insecure) == before


@pytest.mark.parametrize("mode,reason", [
    ("error", "refused"), ("not_json", "bad-answer"), ("huge", "bad-answer"), ("redirect", "bad-answer"),
    ("bad_bounds", "bad-answer"),
])
def test_a_payee_server_that_misbehaves_is_refused_at_the_address(insecure, payee, alice, mode, reason):
    payee.mode = mode
    before = snapshot(insecure)
    reply = alice.run("1", payee.address())
    assert reply == "CON " + t("en", f"lnurl.{reason}") + "\n" + t("en", "send.phone")
    assert snapshot(insecure) == before
    # the refusal is remembered: later steps of this session never call the payee again
    asked = len(payee.requests)
    alice.press("0712345678")
    assert len(payee.requests) == asked


def test_an_unreachable_payee_is_refused(insecure, alice):
    reply = alice.run("1", f"carol@127.0.0.1:{free_port()}")
    assert reply == "CON " + t("en", "lnurl.unreachable") + "\n" + t("en", "send.phone")


def test_private_and_plain_http_hosts_are_never_called_by_default(wallet, payee, alice):
    assert not wallet.settings.lnurl_allow_insecure
    reply = alice.run("1", payee.address())
    assert reply == "CON " + t("en", "lnurl.unreachable") + "\n" + t("en", "send.phone")
    assert payee.requests == []
    with pytest.raises(LnurlPayError):  # https to a loopback name is refused before connecting
        resolve("carol", "localhost", Settings.from_mapping({"LNURL_TIMEOUT_S": 1}))
    assert parse_address("Carol@Example.COM") == ("carol", "example.com")


@pytest.mark.parametrize("mode", ["wrong_amount", "wrong_network", "wrong_hash", "expired", "no_invoice"])
def test_an_unusable_invoice_is_refused_before_reserving(insecure, payee, alice, mode):
    wallet = insecure
    alice.run("1", payee.address(), str(AMOUNT), "1")
    payee.mode = mode  # the payee's server turns bad between the screens
    before = snapshot(wallet)
    node_before = wallet.lightning.balance().balance_sat
    reason = "bad-answer" if mode == "no_invoice" else "bad-invoice"
    assert alice.press(PIN) == "END " + t("en", f"lnurl.{reason}") + " " + t("en", "lnsend.nothing-sent")
    assert snapshot(wallet) == before
    assert wallet.lightning.balance().balance_sat == node_before


def test_amounts_outside_the_payees_bounds_are_re_prompted(insecure, alice):
    wallet = insecure
    payee = FakeLnurl(min_msat=5_000_000, max_msat=8_000_000)  # 5,000 to 8,000 sats
    try:
        prompt = alice.run("1", payee.address())
        assert prompt == "CON " + t("en", "send.ln.amount", payee=payee.address(), min=5000, max=8000)
        assert alice.press("4999").startswith("CON " + t("en", "deny.below-payee-minimum", min=5000))
        assert alice.press("8001").startswith("CON " + t("en", "deny.above-payee-maximum", max=8000))
        top = wallet.policy.value("payment-max-sats")
        assert alice.press(str(top + 1)).startswith("CON " + t("en", "deny.above-payee-maximum", max=8000))
        assert alice.press("6000").startswith("CON " + t("en", "send.ln.confirm", amount=6000,
                                                         payee=payee.address(), fee=max_fee(wallet, 6000),
                                                         total=6000 + max_fee(wallet, 6000)))
    finally:
        payee.stop()


def test_the_balance_must_cover_amount_and_maximum_fee(insecure, payee, alice):
    wallet = insecure
    a0 = balance(wallet, DEMO[0])
    amount = a0 - max_fee(wallet, a0)
    while amount + max_fee(wallet, amount) <= a0:  # the first amount the balance cannot cover with its fee
        amount += 1
    reply = alice.run("1", payee.address(), str(amount))
    assert reply.startswith("CON " + t("en", "deny.insufficient-balance", balance=a0))
    assert balance(wallet, DEMO[0]) == a0


# ------------------------------------------------------------------ what the node says, and later
def _pay(wallet, alice, payee) -> Transaction:
    alice.run("1", payee.address(), str(AMOUNT), "1", PIN)
    return sent_row(wallet)


LND_CASES = [
    # fake LND mode, booked right after paying, booked after the reconciler asked again
    ("succeed", SETTLED, SETTLED),
    ("inflight_then_succeed", PENDING, SETTLED),
    ("inflight_then_fail", PENDING, FAILED),
    ("fail", FAILED, FAILED),
    ("fail_unconfirmed", PENDING, PENDING),  # "failed" once, then in flight: never refunded
    ("not_found", PENDING, PENDING),
    ("http500", PENDING, PENDING),
    ("malformed", PENDING, PENDING),
    ("timeout", PENDING, PENDING),
]


def _check_booked(wallet, row: Transaction, status: str, a0: int, fee_paid: int) -> None:
    assert row.status == status
    expected = {SETTLED: a0 - AMOUNT - fee_paid, FAILED: a0, PENDING: a0 - AMOUNT - max_fee(wallet)}[status]
    assert balance(wallet, DEMO[0]) == expected
    assert row.fee_sats == (fee_paid if status == SETTLED else max_fee(wallet))


@pytest.mark.parametrize("mode,first,final", LND_CASES)
def test_lnd_payment_faults_never_create_or_lose_a_sat(insecure, payee, alice, mode, first, final):
    from helpers.lightning.lnd import LndBackend

    wallet = insecure
    lnd = fake_lnd.FakeLnd()
    try:
        wallet.lightning = LndBackend(lnd.url, fake_lnd.MACAROON, timeout_s=1, pay_timeout_s=1)
        lnd.mode = mode
        a0 = balance(wallet, DEMO[0])
        row = _pay(wallet, alice, payee)
        fee_paid = wallet.lightning.payment_status(row.payment_hash).fee_sat
        _check_booked(wallet, row, first, a0, fee_paid)
        for _ in range(3):  # the poller asks again and again: booked once
            payments.reconcile(wallet)
        _check_booked(wallet, sent_row(wallet), final, a0, fee_paid)
        if final == FAILED:
            assert t("en", "sms.lightning-failed", amount=AMOUNT, phone=payee.address(), ref=row.reference,
                     balance=a0) in outbox(wallet, DEMO[0])
        assert lnd.violations == []
    finally:
        lnd.stop()


BTCPAY_CASES = [
    # fake BTCPay mode, booked after paying, what the payment becomes later, booked after reconciling
    ("complete", SETTLED, None, SETTLED),
    ("pending", PENDING, "Complete", SETTLED),
    ("pending", PENDING, "Failed", FAILED),
    ("pending", PENDING, None, PENDING),
    ("failed", FAILED, None, FAILED),
    ("failed_unconfirmed", PENDING, None, PENDING),
    ("http500", PENDING, None, PENDING),
    ("refused", FAILED, None, FAILED),  # 400 and no such payment: it was never sent
]


@pytest.mark.parametrize("mode,first,later,final", BTCPAY_CASES)
def test_btcpay_payment_faults_never_create_or_lose_a_sat(insecure, payee, alice, mode, first, later, final):
    from helpers.lightning.btcpay import BTCPayBackend

    wallet = insecure
    btcpay = fake_btcpay.FakeBTCPay()
    try:
        wallet.lightning = BTCPayBackend(btcpay.url, fake_btcpay.API_KEY, fake_btcpay.STORE, timeout_s=1,
                                         pay_timeout_s=1)
        btcpay.mode = mode
        a0 = balance(wallet, DEMO[0])
        row = _pay(wallet, alice, payee)
        fee_paid = wallet.lightning.payment_status(row.payment_hash).fee_sat
        _check_booked(wallet, row, first, a0, fee_paid)
        if later:
            btcpay.finish(row.payment_hash, later)
            fee_paid = wallet.lightning.payment_status(row.payment_hash).fee_sat
        for _ in range(3):
            payments.reconcile(wallet)
        _check_booked(wallet, sent_row(wallet), final, a0, fee_paid)
        assert btcpay.violations == []
    finally:
        btcpay.stop()


def test_the_node_gets_the_policys_fee_limit_and_a_route_one_sat_dearer_fails_and_refunds(insecure, payee, alice):
    wallet = insecure
    node = wallet.lightning
    assert isinstance(node, MockBackend)
    a0 = balance(wallet, DEMO[0])
    node.route_fee_sat = max_fee(wallet)  # the dearest route the limit allows: paid
    row = _pay(wallet, alice, payee)
    assert node.last_fee_limit_sat == max_fee(wallet)
    assert (row.status, row.fee_sats) == (SETTLED, max_fee(wallet))
    a1 = a0 - AMOUNT - max_fee(wallet)
    assert balance(wallet, DEMO[0]) == a1
    node.route_fee_sat = max_fee(wallet) + 1  # one sat above the limit: no route, the node says failed
    row = _pay(wallet, alice, payee)
    assert node.last_fee_limit_sat == max_fee(wallet)
    assert row.status == FAILED and balance(wallet, DEMO[0]) == a1
    assert outbox(wallet, DEMO[0])[-1] == t("en", "sms.lightning-failed", amount=AMOUNT, phone=payee.address(),
                                            ref=row.reference, balance=a1)


def test_a_node_charging_more_than_the_reserve_costs_the_customer_only_the_reserve(insecure, payee, alice):
    wallet = insecure
    wallet.lightning.route_fee_sat = max_fee(wallet) + 7
    wallet.lightning.ignore_fee_limit = True  # a misbehaving node: pays and charges above the limit
    a0 = balance(wallet, DEMO[0])
    row = _pay(wallet, alice, payee)
    assert wallet.lightning.payment_status(row.payment_hash).fee_sat == max_fee(wallet) + 7
    assert (row.status, row.fee_sats) == (SETTLED, max_fee(wallet))
    assert balance(wallet, DEMO[0]) == a0 - AMOUNT - max_fee(wallet)
    assert alice.reply == "END " + receipt_text("en", "lnsend.done", wallet.policy.value("daily-send-limit-sats")
                                                - AMOUNT, amount=AMOUNT, payee=payee.address(), fee=max_fee(wallet),
                                                ref=row.reference, balance=a0 - AMOUNT - max_fee(wallet))


def test_lnd_is_sent_the_policys_fee_limit_and_a_dearer_route_is_refunded(insecure, payee, alice):
    from helpers.lightning.lnd import LndBackend

    wallet = insecure
    lnd = fake_lnd.FakeLnd()
    try:
        wallet.lightning = LndBackend(lnd.url, fake_lnd.MACAROON, timeout_s=1, pay_timeout_s=1)
        a0 = balance(wallet, DEMO[0])
        lnd.route_fee_sat = max_fee(wallet) + 1
        row = _pay(wallet, alice, payee)
        assert lnd.fee_limits == {row.payment_hash: max_fee(wallet)}
        assert row.status == FAILED and balance(wallet, DEMO[0]) == a0
        assert lnd.violations == []
    finally:
        lnd.stop()


def test_a_node_that_raises_leaves_the_payment_pending(insecure, payee, alice):
    wallet = insecure

    class Broken(MockBackend):
        def pay_invoice(self, bolt11, max_fee_sat):
            raise RuntimeError("bug in a backend")

    wallet.lightning = Broken()
    a0 = balance(wallet, DEMO[0])
    row = _pay(wallet, alice, payee)
    assert alice.reply == "END " + t("en", "lnsend.pending", amount=AMOUNT, payee=payee.address(), ref=row.reference)
    assert row.status == PENDING and balance(wallet, DEMO[0]) == a0 - AMOUNT - max_fee(wallet)
    payments.reconcile(wallet)  # the node never heard of it: unknown is not failed
    assert sent_row(wallet).status == PENDING


def test_the_reconciler_refunds_only_on_two_failed_answers_in_a_row(insecure, payee, alice):
    from lightning import State, StatusResult

    wallet = insecure
    answers: list[State] = []

    class Flaky(MockBackend):
        def payment_status(self, payment_hash):
            return StatusResult(answers.pop(0))

    class Undecided(MockBackend):
        def pay_invoice(self, bolt11, max_fee_sat):
            from lightning import PaymentResult
            return PaymentResult(State.PENDING, decode_invoice(bolt11).payment_hash, error="in flight")

    wallet.lightning = Undecided()
    a0 = balance(wallet, DEMO[0])
    row = _pay(wallet, alice, payee)
    flaky = Flaky()
    wallet.lightning = flaky
    answers.extend([State.FAILED, State.PENDING])  # "failed", then "in flight" on the second look
    payments.reconcile(wallet)
    assert sent_row(wallet).status == PENDING and balance(wallet, DEMO[0]) == a0 - AMOUNT - max_fee(wallet)
    answers.extend([State.FAILED, State.FAILED])
    payments.reconcile(wallet)
    assert sent_row(wallet).status == FAILED and balance(wallet, DEMO[0]) == a0
    assert row.payment_hash == sent_row(wallet).payment_hash


def test_flask_reconcile_settles_payments_out(insecure, payee, alice, runner):
    wallet = insecure
    lnd = fake_lnd.FakeLnd()
    try:
        from helpers.lightning.lnd import LndBackend

        wallet.lightning = LndBackend(lnd.url, fake_lnd.MACAROON, timeout_s=1, pay_timeout_s=1)
        lnd.mode = "inflight_then_succeed"
        row = _pay(wallet, alice, payee)
        assert row.status == PENDING
        result = runner.invoke(args=["reconcile"])
        assert "'settled': 1" in result.output, result.output
        assert sent_row(wallet).status == SETTLED
    finally:
        lnd.stop()


def test_an_operator_ends_a_payment_the_node_never_heard_of(insecure, payee, alice, runner):
    """`flask resolve-payment`: the node is asked first and wins; only what it cannot say is the
    operator's to decide, with a reason kept in the ledger row."""
    from lightning import PaymentResult, State, StatusResult

    wallet = insecure
    node_says = {"state": State.PENDING}

    class Forgetful(MockBackend):
        def pay_invoice(self, bolt11, max_fee_sat):  # the answer is lost; the node has no record
            return PaymentResult(State.PENDING, decode_invoice(bolt11).payment_hash, error="timeout")

        def payment_status(self, payment_hash):
            return StatusResult(node_says["state"], fee_sat=4, error="" if node_says["state"] is not State.PENDING
                                else "unknown payment")

    wallet.lightning = Forgetful()
    a0 = balance(wallet, DEMO[0])
    row = _pay(wallet, alice, payee)
    assert row.status == PENDING
    assert runner.invoke(args=["resolve-payment", "NOSUCHREF", "--outcome", "failed", "--reason", "t1"]).exit_code != 0
    node_says["state"] = State.SUCCEEDED  # the node knows better than the operator: no refund
    refused = runner.invoke(args=["resolve-payment", row.reference, "--outcome", "failed", "--reason", "ticket 7"])
    assert refused.exit_code != 0 and "paid" in refused.output
    assert sent_row(wallet).status == PENDING and balance(wallet, DEMO[0]) == a0 - AMOUNT - max_fee(wallet)
    node_says["state"] = State.PENDING  # it has no record of the payment: the operator decides
    done = runner.invoke(args=["resolve-payment", row.reference.lower(), "--outcome", "failed",
                               "--reason", "ticket 7: node has no record"])
    assert done.exit_code == 0, done.output
    final = sent_row(wallet)
    assert final.status == FAILED and "ticket 7: node has no record" in final.description
    assert balance(wallet, DEMO[0]) == a0
    assert outbox(wallet, DEMO[0])[-1] == t("en", "sms.lightning-failed", amount=AMOUNT, phone=payee.address(),
                                            ref=row.reference, balance=a0)
    again = runner.invoke(args=["resolve-payment", row.reference, "--outcome", "failed", "--reason", "twice"])
    assert again.exit_code != 0 and balance(wallet, DEMO[0]) == a0  # refunded once


@pytest.fixture
def resolver(monkeypatch):
    """A local resolver stub: names in `answers` resolve to the addresses listed, one list per
    lookup in turn (the last repeats); every other name resolves as usual."""
    real = socket.getaddrinfo
    answers: dict[str, list[str]] = {}
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            asked.append(host)
            address = answers[host][min(asked.count(host), len(answers[host])) - 1]
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers, asked


def test_a_host_that_resolves_to_loopback_is_refused(wallet, payee, alice, resolver):
    answers, asked = resolver
    answers["shop.example.com"] = ["127.0.0.1"]
    assert not wallet.settings.lnurl_allow_insecure
    reply = alice.run("1", "carol@shop.example.com")
    assert reply == "CON " + t("en", "lnurl.unreachable") + "\n" + t("en", "send.phone")
    assert asked == ["shop.example.com"] and payee.requests == []
    answers["private.example.com"] = ["10.0.0.7"]
    with pytest.raises(LnurlPayError, match="host not allowed"):
        resolve("carol", "private.example.com", wallet.settings)


def test_the_connection_goes_to_the_address_that_was_checked(insecure, payee, alice, resolver):
    """DNS rebinding: the name answers a checked address once, then another one. The request
    must go to the first (here the payee's server on 127.0.0.1; 127.0.0.2 has nothing listening)."""
    answers, asked = resolver
    port = payee.domain.rsplit(":", 1)[1]
    answers["shop.test"] = ["127.0.0.1", "127.0.0.2"]
    address = f"carol@shop.test:{port}"
    assert alice.run("1", address).startswith("CON " + t("en", "send.ln.amount", payee=address, min=1, max=1)[:20])
    assert asked == ["shop.test"] and len(payee.requests) == 1
    assert payee.hosts == [f"shop.test:{port}"]  # the name, not the address, in Host
