"""Data protection (issue 34): what we hold about a person exported, a name corrected, a customer
erased (refused while money is held), erased customers' money records pseudonymised after the
retention period; and the travel rule: a payment to another custodian keeps its sender, and the
payee's LNURL service gets the payer's verified name when it asks (LUD-18)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile

import pytest
from sqlalchemy import select, update

from helpers.infra.i18n import t
from helpers.infra.phone import normalise
from helpers.lightning.lnurl_pay import NAME_MANDATORY, NAME_OPTIONAL
from helpers.wallet import operators, privacy
from helpers.wallet.customers import users
from helpers.wallet.incoming import invoices
from helpers.wallet.ledger import journal
from helpers.web import worker
from helpers.wallet.privacy_tables import PrivacyRequest
from models import (CORRECT, ERASE, EXPORT, RETAIN, AuditEntry, Payout, SmsOutbox, Transaction,
                    User, UssdSession, utcnow)
from tests.conftest import DEMO, PIN, balance, outbox

AMOUNT = 2500
NAME = "AMINA OTIENO"


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


# ------------------------------------------------------------------ data-protection requests
CAROL = "+254722000111"
SENT = 3000


def books_clean(wallet) -> bool:
    with wallet.db.read() as s:
        return journal.check(s) == []


@pytest.fixture
def carol(wallet, dial, alice):
    """A customer with a history and nothing held: a PIN, a name, a send received from alice and
    an operator's debit of all of it (sessions, SMS, movements both ways), balance 0."""
    phone = dial(CAROL)
    phone.run(PIN, PIN)
    name(wallet, CAROL, NAME, verified=False)
    assert alice.run("1", "0" + CAROL[4:], str(SENT), "1", PIN).startswith("END ")
    operators.adjust(wallet.db, "wanjiru", CAROL, -balance(wallet, CAROL), "ticket 9: closing the account")
    assert balance(wallet, CAROL) == 0
    return phone


def rows_of(wallet, model, *where) -> list:
    with wallet.db.read() as s:
        return list(s.scalars(select(model).where(*where)))


def register(wallet, kind: str) -> list[PrivacyRequest]:
    return rows_of(wallet, PrivacyRequest, PrivacyRequest.kind == kind)


def test_export_holds_everything_we_keep_about_a_person(wallet, carol, runner, tmp_path):
    result = runner.invoke(args=["customer", "export", "0" + CAROL[4:], "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / f"{CAROL[1:]}.json").read_text())
    tables = data["tables"]
    [user] = tables["users"]
    with wallet.db.read() as s:
        row = users.get(s, CAROL)
        statement = journal.statement(s, row.id)
        assert set(user) == set(User.__table__.columns.keys())  # every column, new ones too
    assert (user["phone"], user["name"], user["pin_hash"]) == (CAROL, NAME, "set")  # never the hash
    assert [line["reference"] for line in tables["statement"]] == [line.reference for line in statement]
    assert tables["ussd_sessions"] and {r["phone"] for r in tables["ussd_sessions"]} == {CAROL}
    assert [r["message"] for r in tables["sms_outbox"]] == outbox(wallet, CAROL)
    assert {r["user_id"] for r in tables["transactions"]} == {row.id}
    assert [r["subject"] for r in tables["audit_log"]] and {r["subject"] for r in tables["audit_log"]} == {CAROL}
    with zipfile.ZipFile(tmp_path / f"{CAROL[1:]}.zip") as archive:
        names = set(archive.namelist())
        assert {"export.json", "users.csv", "statement.csv", "sms_outbox.csv", "ussd_sessions.csv"} <= names
        with archive.open("users.csv") as users_csv:
            assert next(csv.DictReader(io.TextIOWrapper(users_csv)))["name"] == NAME
    [request] = register(wallet, EXPORT)
    assert (request.subject, request.operator) == (CAROL, "cli") and request.done_at is not None


def test_erasure_is_refused_while_money_is_held(wallet, runner, alice):
    assert books_clean(wallet)
    held = balance(wallet, DEMO[0])
    result = runner.invoke(args=["customer", "erase", DEMO[0], "--reason", "ticket 7: customer asked"])
    assert result.exit_code == 1 and f"sats held: {held}" in result.output
    assert rows_of(wallet, User, User.phone == DEMO[0])[0].pin_hash is not None  # nothing changed
    assert rows_of(wallet, UssdSession, UssdSession.phone == DEMO[0])
    [request] = register(wallet, ERASE)
    assert request.subject == DEMO[0] and request.done_at is None and "sats held" in request.outcome
    listed = runner.invoke(args=["customer", "requests"]).output
    assert "erase" in listed and DEMO[0] in listed and "refused" in listed
    assert books_clean(wallet)


def test_erasure_is_refused_while_an_invoice_can_still_be_paid(wallet, carol):
    with wallet.db.read() as s:
        user = users.UserView.of(users.get(s, CAROL))
    invoices.issue(wallet.db, wallet.policy, wallet.lightning, user, wallet.policy.value("payment-min-sats"),
                   "a receive", 600, "receive-key")
    with pytest.raises(privacy.PrivacyRefused, match="invoices that can still be paid: 1"):
        privacy.erase(wallet.db, wallet.settings.pin_pepper, "wanjiru", CAROL, "ticket 8: customer asked")
    assert rows_of(wallet, User, User.phone == CAROL)


def test_erasure_replaces_the_person_by_a_pseudonym_and_keeps_the_money_records(wallet, carol):
    privacy.export(wallet.db, "wanjiru", CAROL)
    assert books_clean(wallet)
    alice_lines_before = statement_of(wallet, DEMO[0])
    done = privacy.erase(wallet.db, wallet.settings.pin_pepper, "wanjiru", CAROL, "ticket 8: customer asked")
    alias = privacy.pseudonym(CAROL, wallet.settings.pin_pepper)
    assert done.pseudonym == alias and alias.startswith("+000") and len(alias) <= 20 and alias[1:].isdigit()
    assert normalise(alias, wallet.settings.default_region) is None  # no one dials from it
    assert rows_of(wallet, User, User.phone == CAROL) == []
    [user] = rows_of(wallet, User, User.phone == alias)
    assert (user.name, user.name_verified_at, user.pin_hash) == (None, None, None)
    assert rows_of(wallet, UssdSession, UssdSession.phone == CAROL) == []
    assert rows_of(wallet, SmsOutbox, SmsOutbox.phone == CAROL) == []
    assert {sms.message for sms in rows_of(wallet, SmsOutbox, SmsOutbox.phone == alias)} == {privacy.ERASED_SMS}
    assert done.sessions > 0 and done.sms > 0
    # the money records stay: carol's movements, and alice's send still naming carol's number
    assert rows_of(wallet, Transaction, Transaction.user_id == user.id)
    assert rows_of(wallet, Transaction, Transaction.counterparty == CAROL)
    assert [(line.reference, line.amount) for line in statement_of(wallet, DEMO[0])] == [
        (line.reference, line.amount) for line in alice_lines_before]
    assert books_clean(wallet)
    # the register: the erasure, and the earlier export now under the pseudonym
    assert {(r.kind, r.subject) for r in rows_of(wallet, PrivacyRequest)} == {(EXPORT, alias), (ERASE, alias)}
    assert rows_of(wallet, AuditEntry, AuditEntry.action == "privacy-erase", AuditEntry.subject == alias)


def statement_of(wallet, phone: str):
    with wallet.db.read() as s:
        return journal.statement(s, users.get(s, phone).id)


def test_after_retention_the_worker_pseudonymises_the_erased_customers_money_records(wallet, carol, monkeypatch):
    secret = wallet.settings.pin_pepper
    privacy.erase(wallet.db, secret, "wanjiru", CAROL, "ticket 8: customer asked")
    alias = privacy.pseudonym(CAROL, secret)
    [user] = rows_of(wallet, User, User.phone == alias)
    worker._every(wallet, "retention")  # not yet: kept for retention-years
    assert rows_of(wallet, Transaction, Transaction.counterparty == CAROL) and register(wallet, RETAIN) == []
    years = wallet.policy.value("retention-years")
    later = utcnow() + dt.timedelta(days=366 * years + 3)
    monkeypatch.setattr(privacy, "utcnow", lambda: later)
    worker._every(wallet, "retention")
    assert rows_of(wallet, Transaction, Transaction.counterparty == CAROL) == []
    assert rows_of(wallet, Transaction, Transaction.counterparty == alias)  # alice's send names the pseudonym
    own = rows_of(wallet, Transaction, Transaction.user_id == user.id)
    assert all(DEMO[0] not in f"{row.counterparty} {row.memo} {row.description}" for row in own)
    [retained] = register(wallet, RETAIN)
    assert retained.subject == alias and retained.done_at in (later, later.replace(microsecond=0))  # MariaDB: seconds
    worker._every(wallet, "retention")  # once
    assert len(register(wallet, RETAIN)) == 1
    assert books_clean(wallet)


def test_a_name_is_corrected_before_verification_and_after_only_with_a_reason(wallet, carol, runner):
    assert runner.invoke(args=["customer", "correct-name", CAROL, "amina  atieno"]).exit_code == 0
    assert rows_of(wallet, User, User.phone == CAROL)[0].name == "AMINA ATIENO"
    name(wallet, CAROL, "AMINA ATIENO", verified=True)
    refused = runner.invoke(args=["customer", "correct-name", CAROL, "Amina Otieno"])
    assert refused.exit_code == 1 and "verified" in refused.output
    assert runner.invoke(args=["customer", "correct-name", CAROL, "Amina Otieno", "--reason",
                               "ticket 3: national ID seen"]).exit_code == 0
    [user] = rows_of(wallet, User, User.phone == CAROL)
    assert user.name == "AMINA OTIENO" and user.name_verified_at is not None
    outcomes = [(r.done_at is not None, r.outcome) for r in register(wallet, CORRECT)]
    assert outcomes == [(True, "name corrected"), (False, outcomes[1][1]), (True, "name corrected (verified)")]


def test_the_console_exports_and_erases_with_its_csrf_token(client, wallet, carol):
    from tests.unit.test_console import csrf_of, sign_in

    operators.add(wallet.db, "wanjiru", "correct horse battery")
    sign_in(client)
    page = client.get("/admin/customer", query_string={"phone": CAROL}).get_data(as_text=True)
    assert client.post(f"/admin/customer/{CAROL}/export", data={}).status_code == 400  # no token
    download = client.post(f"/admin/customer/{CAROL}/export", data={"csrf": csrf_of(page)})
    assert download.status_code == 200 and download.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.data)) as archive:
        assert json.loads(archive.read("export.json"))["tables"]["users"][0]["phone"] == CAROL
    client.post(f"/admin/customer/{CAROL}/name", data={"csrf": csrf_of(page), "name": "amina wanjiku"})
    assert rows_of(wallet, User, User.phone == CAROL)[0].name == "AMINA WANJIKU"
    erased = client.post(f"/admin/customer/{CAROL}/erase", data={"csrf": csrf_of(page), "reason": "ticket 4: asked"})
    alias = privacy.pseudonym(CAROL, wallet.settings.pin_pepper)
    assert erased.status_code == 302 and rows_of(wallet, User, User.phone == alias)
    assert [r.operator for r in register(wallet, ERASE)] == ["wanjiru"]
    assert [r.operator for r in register(wallet, CORRECT)] == ["wanjiru"]


def test_metadata_too_long_to_keep_sends_no_optional_name_and_refuses_a_mandatory_one(insecure, payee, monkeypatch):
    from helpers.lightning import lnurl_pay

    monkeypatch.setattr(lnurl_pay, "MAX_KEPT_METADATA", len(payee.metadata("carol")) - 1)
    payee.payer_data = {"name": {"mandatory": False}}
    params = lnurl_pay.resolve(*lnurl_pay.parse_address(payee.address()), insecure.settings)
    assert (params.payer_name, params.metadata) == (lnurl_pay.NAME_NOT_ASKED, "")
    payee.payer_data = {"name": {"mandatory": True}}
    with pytest.raises(lnurl_pay.LnurlPayError):
        lnurl_pay.resolve(*lnurl_pay.parse_address(payee.address()), insecure.settings)


def test_an_open_case_of_any_cases_table_refuses_erasure(wallet, carol):
    """The check is generic: a table named *_cases with user_id and closed_at (the AML cases of
    another branch) holds an erasure while one of the customer's cases is open."""
    from sqlalchemy import Column, DateTime, Integer, Table, insert

    from models import Base

    cases = Table("test_cases", Base.metadata, Column("id", Integer, primary_key=True), Column("user_id", Integer),
                  Column("closed_at", DateTime))
    try:
        cases.create(wallet.db.engine)
        with wallet.db.write() as s:
            s.execute(insert(cases).values(user_id=users.get(s, CAROL).id))
        with pytest.raises(privacy.PrivacyRefused, match="open cases: 1"):
            privacy.erase(wallet.db, wallet.settings.pin_pepper, "wanjiru", CAROL, "ticket 8: customer asked")
        with wallet.db.write() as s:
            s.execute(update(cases).values(closed_at=utcnow()))
        privacy.erase(wallet.db, wallet.settings.pin_pepper, "wanjiru", CAROL, "ticket 8: customer asked")
    finally:
        cases.drop(wallet.db.engine, checkfirst=True)
        Base.metadata.remove(cases)
