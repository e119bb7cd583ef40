"""A new payout rail is an adapter: this file adds one (a bank transfer, faked here) and never
touches helpers/wallet/. Its money is reserved, posted and voided by the wallet's payout machine,
its callback is checked by the adapter and acted on once, the worker's one job kind asks it, the
operator's `flask resolve` ends it (audited) and the console lists it; the books check clean
after every path (conftest's ledger check after each test)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from helpers.infra.i18n import CATALOGS, t
from helpers.infra.rail import Answer, Books, CallbackRefused, Claim, PayoutView, Said
from helpers.wallet import operators
from helpers.wallet.customers import users
from helpers.wallet.ledger import journal, movements
from helpers.wallet.errors import InsufficientBalance, PolicyDenied
from helpers.wallet.payouts import books, machine
from helpers.web import worker
from models import ADJUSTMENTS, POSTED, SENT, VOIDED, AuditEntry, Transaction, LedgerAccount, Payout, utcnow
from tests.conftest import DEMO, FIXED_PRICE, PIN, balance, outbox

BANK = "bank"
SECRET = "bank-callback-secret"


@dataclass
class FakeBank:
    """A bank's transfer API as the adapter sees it: accepts a transfer with an id, answers a
    status query, and later posts a signed callback."""

    accept: bool = True
    status: dict[str, str] = field(default_factory=dict)  # transfer id -> "done" | "rejected" | "queued"
    sent: list[tuple[str, str, int]] = field(default_factory=list)


class BankRail:
    name = BANK
    books = Books(kind="bank", label="Bank", movement="bank", in_flight="bank-in-flight", paid_from="bank-float")

    def __init__(self, bank: FakeBank) -> None:
        self.bank = bank

    def send(self, payout: PayoutView) -> Answer:
        self.bank.sent.append((payout.reference, payout.destination, payout.amount_kes or 0))
        if not self.bank.accept:
            return Answer.failed("account closed")
        transfer = f"TR{len(self.bank.sent):06d}"
        self.bank.status[transfer] = "queued"
        return Answer.pending("queued", rail_key=transfer)

    def query(self, payout: PayoutView) -> Answer:
        said = self.bank.status.get(payout.rail_key or "", "queued")
        if said == "done":
            return Answer.paid(receipt=f"BK{payout.rail_key}", reason="done")
        return Answer.failed("rejected") if said == "rejected" else Answer.pending("queued")

    def parse_callback(self, fields: dict) -> Claim:
        if fields.get("secret") != SECRET:
            raise CallbackRefused(403, "forbidden")
        if not fields.get("transfer") or fields.get("status") not in ("done", "rejected"):
            raise CallbackRefused(400, "malformed")
        answer = (Answer.paid(receipt=f"BK{fields['transfer']}", reason="done") if fields["status"] == "done"
                  else Answer.failed("rejected"))
        return Claim(str(fields["transfer"]), answer, dict(fields))

    def confirm(self, payout: PayoutView, claim: Claim) -> Answer:
        if int(claim.fields.get("kes", -1)) != payout.amount_kes:
            raise CallbackRefused(400, "refused")
        return claim.answer

    def posted_text(self, payout: PayoutView, language: str, balance: int, answer: Answer,
                    left: int | None) -> str:
        return (f"Bank transfer {payout.movement_reference} of KES {payout.amount_kes} sent ({answer.receipt}). "
                f"Balance {balance}. Left today {left}")

    def voided_text(self, payout: PayoutView, language: str, balance: int) -> str:
        return f"Bank transfer {payout.movement_reference} failed; sats returned. Balance {balance}"


@pytest.fixture
def bank(wallet):
    fake = FakeBank()
    wallet.rails[BANK] = lambda svc: BankRail(fake)
    assert machine.open_accounts(wallet.db, BankRail(fake)) == ["bank-float", "bank-in-flight"]
    return fake


def reserve(wallet, phone: str, kes: int, sats: int, fee: int, key: str):
    """The use case a bank rail would bring with its screens: its own policy check, the wallet's
    reserve."""
    user = users.register(wallet.db, phone, "en", wallet.service_code)
    rail = wallet.rail(BANK)
    limit = wallet.policy.value("kes-max")  # the bank rail's policy: M-Pesa's KES bounds, say

    def work():
        with wallet.db.write() as s:
            def check(after: int) -> int:
                if kes > limit:
                    raise PolicyDenied("above-maximum")
                return wallet.policy.left_today(movements.sent_today(s, user.id) + sats)
            return books.reserve(s, rail, user.id, sats, fee, "KCB 1234567890", key, check=check, amount_kes=kes,
                                 description=f"Bank transfer KES {kes}")
    return movements.run_once(wallet.db, key, work)


def kinds(wallet, reference: str) -> list[str]:
    with wallet.db.read() as s:
        return list(s.scalars(select(Transaction.kind).where(Transaction.reference == reference)
                              .order_by(Transaction.id)))


def payout_of(wallet, reference: str) -> Payout:
    found = machine.find(wallet.db, reference)
    assert found is not None
    return found


def test_a_bank_payout_is_reserved_sent_and_posted_once_by_its_callback(app, wallet, client, bank):
    a0 = balance(wallet, DEMO[0])
    receipt = reserve(wallet, DEMO[0], 500, 5_000, 25, "bank-1")
    assert balance(wallet, DEMO[0]) == a0 - 5_025
    assert reserve(wallet, DEMO[0], 500, 5_000, 25, "bank-1").replay  # the same step again: nothing more
    assert machine.send(wallet.db, wallet.rail(BANK), receipt.reference).said is Said.PENDING
    payout = payout_of(wallet, receipt.reference)
    assert (payout.state, payout.rail_key, bank.sent) == (SENT, "TR000001", [(payout.reference, "KCB 1234567890", 500)])

    rail = wallet.rail(BANK)
    assert machine.callback(wallet.db, rail, {"secret": "guess", "transfer": "TR000001", "status": "done"}) == (
        403, "forbidden")
    assert machine.callback(wallet.db, rail, {"secret": SECRET, "transfer": "TR999999", "status": "done",
                                              "kes": 500}) == (404, "unknown")
    assert machine.callback(wallet.db, rail, {"secret": SECRET, "transfer": "TR000001", "status": "done",
                                              "kes": 5}) == (400, "refused")
    done = {"secret": SECRET, "transfer": "TR000001", "status": "done", "kes": 500}
    assert machine.callback(wallet.db, rail, done) == (200, machine.POSTED_WORD)
    assert machine.callback(wallet.db, rail, done) == (200, "already-done")
    assert payout_of(wallet, receipt.reference).state == POSTED
    assert balance(wallet, DEMO[0]) == a0 - 5_025
    assert kinds(wallet, receipt.reference) == ["bank-pending", "bank-post"]
    assert outbox(wallet, DEMO[0])[-1].startswith(f"Bank transfer {receipt.reference} of KES 500 sent (BKTR000001)")
    with wallet.db.read() as s:
        assert s.get_one(LedgerAccount, "bank-float").balance_sats == -5_000  # paid out of the bank float
        assert s.get_one(LedgerAccount, "bank-in-flight").balance_sats == 0
        assert journal.balances(s)["fee-income"] <= -25


def test_the_customer_s_history_and_statement_show_a_bank_payout(wallet, alice, bank, monkeypatch):
    for lang, word in (("en", "Bank"), ("sw", "Benki")):  # the rail's texts, as its catalog entries
        monkeypatch.setitem(CATALOGS[lang], "who.bank", word)
    receipt = reserve(wallet, DEMO[0], 500, 5_000, 25, "bank-9")
    history = alice.run("6", "1")
    date = utcnow().strftime("%d/%m")
    assert t("en", "history.line", sign="-", amount=5_025, who="Bank", date=date + "*", ref=receipt.reference) \
        in history
    with wallet.db.read() as s:
        line = journal.statement(s, users.get(s, DEMO[0]).id, limit=1)[0]
    assert (line.kind, line.reference, line.amount, line.pending) == ("bank-pending", receipt.reference, -5_025, True)


def test_a_refused_transfer_gives_the_sats_back_at_once_and_a_late_success_changes_nothing(wallet, bank):
    bank.accept = False
    a0 = balance(wallet, DEMO[0])
    receipt = reserve(wallet, DEMO[0], 300, 3_000, 10, "bank-2")
    assert machine.send(wallet.db, wallet.rail(BANK), receipt.reference).said is Said.FAILED
    assert payout_of(wallet, receipt.reference).state == VOIDED and balance(wallet, DEMO[0]) == a0
    assert not machine.finish(wallet.db, wallet.rail(BANK), receipt.reference, Answer.paid(reason="late"))
    assert balance(wallet, DEMO[0]) == a0
    assert kinds(wallet, receipt.reference) == ["bank-pending", "bank-void"]
    assert outbox(wallet, DEMO[0])[-1] == f"Bank transfer {receipt.reference} failed; sats returned. Balance {a0}"


def test_the_worker_asks_the_bank_and_finishes_its_payouts(wallet, bank):
    a0 = balance(wallet, DEMO[0])
    first = reserve(wallet, DEMO[0], 100, 1_000, 0, "bank-3")
    second = reserve(wallet, DEMO[0], 200, 2_000, 0, "bank-4")
    for receipt in (first, second):
        machine.send(wallet.db, wallet.rail(BANK), receipt.reference)
    assert worker.sweep(wallet) >= 2  # one job kind for every rail's open payouts
    handle = worker.HANDLERS[worker.PAYOUT]
    one, two = payout_of(wallet, first.reference), payout_of(wallet, second.reference)
    assert handle(wallet, one.reference) is False  # the bank: still queued
    bank.status[one.rail_key] = "done"
    bank.status[two.rail_key] = "rejected"
    assert handle(wallet, one.reference) is True and handle(wallet, two.reference) is True
    assert (payout_of(wallet, first.reference).state, payout_of(wallet, second.reference).state) == (POSTED, VOIDED)
    assert payout_of(wallet, first.reference).queries == 2
    assert balance(wallet, DEMO[0]) == a0 - 1_000


def test_an_operator_resolves_a_bank_payout_audited_and_the_console_lists_it(wallet, runner, client, bank):
    from tests.unit.test_console import PASSWORD, sign_in

    a0 = balance(wallet, DEMO[0])
    receipt = reserve(wallet, DEMO[0], 100, 1_000, 5, "bank-5")
    operators.add(wallet.db, "wanjiru", PASSWORD)
    sign_in(client)
    assert receipt.reference in client.get("/admin/pending").get_data(as_text=True)
    done = runner.invoke(args=["resolve", receipt.reference, "--outcome", "failed", "--reason", "T-9 bank says no"])
    assert done.exit_code == 0, done.output
    assert balance(wallet, DEMO[0]) == a0 and payout_of(wallet, receipt.reference).state == VOIDED
    again = runner.invoke(args=["resolve", receipt.reference, "--outcome", "paid", "--reason", "T-9"])
    assert again.exit_code != 0 and balance(wallet, DEMO[0]) == a0
    with wallet.db.read() as s:
        audit = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "resolve")))
    assert [(line.subject, line.detail) for line in audit] == [(payout_of(wallet, receipt.reference).reference,
                                                               "failed")]
    assert receipt.reference not in client.get("/admin/pending").get_data(as_text=True)


def test_a_bank_payout_cannot_spend_what_is_not_there_or_pass_the_policy(wallet, bank):
    have = balance(wallet, DEMO[0])
    with pytest.raises(InsufficientBalance):
        reserve(wallet, DEMO[0], 100, have, 1, "bank-6")
    with pytest.raises(PolicyDenied):
        reserve(wallet, DEMO[0], wallet.policy.value("kes-max") + 1, 1_000, 0, "bank-7")
    assert balance(wallet, DEMO[0]) == have
    with wallet.db.read() as s:
        assert list(s.scalars(select(Payout).where(Payout.rail == BANK))) == []


def test_a_payout_the_bank_never_named_waits_for_its_answer(wallet, bank):
    receipt = reserve(wallet, DEMO[0], 100, 1_000, 0, "bank-8")  # the send never happened (a crash)
    payout = payout_of(wallet, receipt.reference)
    assert payout.rail_key is None and payout.created_at <= utcnow() + dt.timedelta(seconds=1)
    assert machine.query(wallet.db, wallet.rail(BANK), payout.reference).said is Said.PENDING
    assert machine.send(wallet.db, wallet.rail(BANK), payout.reference).said is Said.PENDING  # sent now, once
    assert machine.send(wallet.db, wallet.rail(BANK), payout.reference).reason == "not reserved"
    assert len(bank.sent) == 1


def test_a_rail_answer_after_an_operator_void_keeps_its_key_and_is_reported(wallet, bank, caplog):
    """The send is waiting for the bank when an operator voids the payout; the bank then says it
    took the transfer: nothing moves again, the key is kept (its callback finds the payout) and
    the contradiction is logged for people to reconcile."""
    receipt = reserve(wallet, DEMO[0], 100, 1_000, 0, "bank-10")
    a0 = balance(wallet, DEMO[0])
    rail = wallet.rail(BANK)
    real_send = rail.send

    def send_while_an_operator_voids(payout):
        assert machine.finish(wallet.db, rail, payout.reference, Answer.failed("operator"), "operator: T-1")
        said = real_send(payout)
        bank.status[said.rail_key] = "done"
        return Answer.paid(receipt="BKLATE", rail_key=said.rail_key, reason="done")

    rail.send = send_while_an_operator_voids
    assert machine.send(wallet.db, rail, receipt.reference).said is Said.PENDING  # what took effect: not the pay
    payout = payout_of(wallet, receipt.reference)
    assert (payout.state, payout.rail_key) == (VOIDED, "TR000001")
    assert balance(wallet, DEMO[0]) == a0 + 1_000
    assert "reconcile it with the rail by hand" in caplog.text
    done = {"secret": SECRET, "transfer": "TR000001", "status": "done", "kes": 100}
    assert machine.callback(wallet.db, rail, done) == (200, "already-done")


def test_resolve_asks_the_rail_first_and_the_rail_wins(wallet, runner, bank):
    a0 = balance(wallet, DEMO[0])
    receipt = reserve(wallet, DEMO[0], 100, 1_000, 0, "bank-11")
    machine.send(wallet.db, wallet.rail(BANK), receipt.reference)
    bank.status[payout_of(wallet, receipt.reference).rail_key] = "done"
    said = runner.invoke(args=["resolve", receipt.reference, "--outcome", "failed", "--reason", "T-2 guess"])
    assert said.exit_code != 0 and "the rail itself says paid" in said.output
    assert payout_of(wallet, receipt.reference).state == POSTED and balance(wallet, DEMO[0]) == a0 - 1_000
    with wallet.db.read() as s:
        assert list(s.scalars(select(AuditEntry).where(AuditEntry.action == "resolve"))) == []


def test_resolve_airtime_refuses_another_rail_s_payout(wallet, runner, bank):
    receipt = reserve(wallet, DEMO[0], 100, 1_000, 0, "bank-12")
    said = runner.invoke(args=["resolve-airtime", receipt.reference, "--outcome", "failed", "--reason", "T-3"])
    assert said.exit_code != 0 and payout_of(wallet, receipt.reference).state not in (POSTED, VOIDED)


def test_a_payout_whose_movement_is_not_pending_is_left_open_and_unchanged(wallet, bank):
    from sqlalchemy import update

    from models import FAILED, PENDING, Transaction

    receipt = reserve(wallet, DEMO[0], 100, 1_000, 0, "bank-13")
    before = balance(wallet, DEMO[0])
    with wallet.db.write() as s:  # a movement finished behind the payout's back (it cannot be, by the code)
        s.execute(update(Transaction).where(Transaction.id == receipt.transaction_id).values(status=FAILED))
    rail = wallet.rail(BANK)
    assert not machine.finish(wallet.db, rail, receipt.reference, Answer.failed("rejected"))
    assert not machine.finish(wallet.db, rail, receipt.reference, Answer.paid(reason="done"))
    assert payout_of(wallet, receipt.reference).state == books.RESERVED and balance(wallet, DEMO[0]) == before
    with wallet.db.write() as s:  # as it was, for the ledger check after the test
        s.execute(update(Transaction).where(Transaction.id == receipt.transaction_id).values(status=PENDING))


def test_a_cost_beyond_the_fee_limit_is_the_wallet_s_never_the_customer_s(wallet, bank, caplog):
    """The bank reserved no fee limit; an answer that says the transfer cost 7 sats: the 7 sats
    leave the bank float as they did, the wallet's adjustments carry them (logged), and the
    customer pays nothing more than was reserved."""
    with wallet.db.read() as s:
        adjustments = s.get_one(LedgerAccount, ADJUSTMENTS).balance_sats
    a0 = balance(wallet, DEMO[0])
    receipt = reserve(wallet, DEMO[0], 100, 1_000, 0, "bank-14")
    assert machine.finish(wallet.db, wallet.rail(BANK), receipt.reference, Answer.paid(cost_sats=7))
    assert payout_of(wallet, receipt.reference).state == POSTED and balance(wallet, DEMO[0]) == a0 - 1_000
    assert "the wallet absorbs 7" in caplog.text
    with wallet.db.read() as s:
        assert s.get_one(LedgerAccount, "bank-float").balance_sats == -1_007
        assert s.get_one(LedgerAccount, ADJUSTMENTS).balance_sats == adjustments + 7


# ------------------------------------------------------------------ the rail's screens, texts and use case
class BankAccount:
    """The account number to pay: digits only."""

    secret = False

    def prompt(self, ctx, data: dict) -> str:
        return ctx.t("bank.account")

    def handle(self, ctx, data: dict, token: str):
        from helpers.ussd.walker import Push, Retry

        if not token.isdigit() or not 6 <= len(token) <= 16:
            return Retry(ctx.t("bank.bad-account"))
        return Push("bank.amount", {"account": token})


class BankAmount:
    """The KES to send, within the rail's bounds (its policy: M-Pesa's KES bounds, say)."""

    secret = False

    def prompt(self, ctx, data: dict) -> str:
        return ctx.t("bank.amount", min=ctx.value("kes-min"), max=ctx.value("kes-max"))

    def handle(self, ctx, data: dict, token: str):
        from helpers.ussd.walker import Push, Retry

        if not token.isdigit() or not ctx.value("kes-min") <= int(token) <= ctx.value("kes-max"):
            return Retry(ctx.t("bank.amount", min=ctx.value("kes-min"), max=ctx.value("kes-max")))
        return Push("pin", {"action": "bank", "account": data["account"], "kes": int(token)})


def pay_to_bank(svc, user, proof, account: str, kes: int, key: str):
    """The rail's use case: the PIN's proof, its sats at the price, the wallet's reserve, then send."""
    from helpers.wallet import use_cases

    use_cases.require_pin(proof, user)
    sats = svc.policy.kes_to_sats_debit(kes, FIXED_PRICE)
    fee = svc.policy.fee_sats("mpesa-withdraw", sats)
    rail = svc.rail(BANK)

    def work():
        with svc.db.write() as s:
            return books.reserve(s, rail, user.id, sats, fee, f"KCB {account}", key,
                                 check=lambda after: 0, amount_kes=kes, description=f"Bank transfer KES {kes}")
    receipt = movements.run_once(svc.db, key, work)
    if not receipt.replay:
        machine.send(svc.db, rail, receipt.reference)
    return receipt


def bank_action(ctx, data: dict, proof) -> str:
    try:
        receipt = pay_to_bank(ctx.svc, ctx.user, proof, data["account"], data["kes"], ctx.key)
    except InsufficientBalance as exc:
        return ctx.t("deny.insufficient-balance", balance=exc.balance_sats)
    ctx.recorded = True
    return ctx.t("bank.sent", kes=data["kes"], account=data["account"], ref=receipt.reference)


BANK_TEXTS = {
    "en": {"bank.account": "Bank account number:", "bank.bad-account": "Not an account number.",
           "bank.amount": "Amount in KES ({min}-{max}):", "who.bank": "Bank",
           "bank.sent": "KES {kes} to bank account {account} is on its way. Ref {ref}"},
    "sw": {"bank.account": "Nambari ya akaunti ya benki:", "bank.bad-account": "Si nambari ya akaunti.",
           "bank.amount": "Kiasi kwa KES ({min}-{max}):", "who.bank": "Benki",
           "bank.sent": "KES {kes} kwa akaunti {account} zinatumwa. Kumb {ref}"},
}


@pytest.fixture
def bank_screens(monkeypatch, bank):
    """The rail's screens, texts and menu line, added from here: nothing in helpers/ changes."""
    import handlers
    from helpers.ussd import actions
    from helpers.ussd.account_screens import MAIN_OPTIONS

    monkeypatch.setitem(handlers.SCREENS, "bank.account", BankAccount())
    monkeypatch.setitem(handlers.SCREENS, "bank.amount", BankAmount())
    monkeypatch.setitem(MAIN_OPTIONS, "10", "bank.account")
    monkeypatch.setitem(actions.ACTIONS, "bank", bank_action)
    for lang, texts in BANK_TEXTS.items():
        for key, text in texts.items():
            monkeypatch.setitem(CATALOGS[lang], key, text)
        exit_line = CATALOGS[lang]["main"].rsplit("\n", 1)[1]
        monkeypatch.setitem(CATALOGS[lang], "main", CATALOGS[lang]["main"].replace(
            "\n" + exit_line, "\n10 " + texts["who.bank"] + "\n" + exit_line))
    return bank


def test_a_customer_pays_a_bank_account_through_the_rail_s_own_screens(wallet, alice, bank_screens, client):
    a0 = balance(wallet, DEMO[0])
    menu = alice.run()
    assert "\n10 Bank\n" in menu
    assert alice.press("10") == "CON " + t("en", "bank.account")
    assert alice.press("12ab") == "CON " + t("en", "bank.bad-account") + "\n" + t("en", "bank.account")
    kes_min, kes_max = wallet.policy.value("kes-min"), wallet.policy.value("kes-max")
    alice.press("1234567890")
    assert alice.press(str(kes_max + 1)).startswith("CON " + t("en", "bank.amount", min=kes_min, max=kes_max))
    assert alice.press(str(kes_min)).startswith("CON ")  # the PIN
    reply = alice.press(PIN)
    with wallet.db.read() as s:
        row = s.scalars(select(Payout).where(Payout.rail == BANK)).one()
    assert reply == "END " + t("en", "bank.sent", kes=kes_min, account="1234567890", ref=row.reference)
    assert (row.state, row.destination) == (SENT, "KCB 1234567890")
    assert bank_screens.sent == [(row.reference, "KCB 1234567890", kes_min)]
    sats = wallet.policy.kes_to_sats_debit(kes_min, FIXED_PRICE)
    assert balance(wallet, DEMO[0]) == a0 - sats - wallet.policy.fee_sats("mpesa-withdraw", sats)
    done = {"secret": SECRET, "transfer": row.rail_key, "status": "done", "kes": kes_min}
    assert machine.callback(wallet.db, wallet.rail(BANK), done) == (200, machine.POSTED_WORD)
    assert payout_of(wallet, row.reference).state == POSTED


def test_the_rail_s_screens_speak_swahili(wallet, dial, bank_screens):
    phone = dial(DEMO[1])
    phone.run(PIN, PIN)
    phone.press("6", "2", "2")  # My Account, Language, Kiswahili
    assert "\n10 Benki\n" in phone.run()
    assert phone.press("10") == "CON " + t("sw", "bank.account")
