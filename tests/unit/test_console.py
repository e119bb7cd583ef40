"""The operator console at /admin, through Flask's test client: sign-in and its lock, the CSRF
token on every form, the session's idle timeout, a customer's page and each action with its
audit line. tests/integration/test_console_browser.py drives the same pages in Chromium."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from helpers.wallet import operators
from models import ADJUSTMENTS, AuditEntry, JournalEntry, LedgerAccount, User
from tests.conftest import DEMO, PIN, balance, configure, outbox

PASSWORD = "correct horse battery"


@pytest.fixture
def operator(wallet):
    operators.add(wallet.db, "wanjiru", PASSWORD)
    return "wanjiru"


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def sign_in(client, username="wanjiru", password=PASSWORD):
    token = csrf_of(client.get("/admin/login").get_data(as_text=True))
    return client.post("/admin/login", data={"csrf": token, "username": username, "password": password})


def audit_lines(wallet, action: str) -> list[AuditEntry]:
    with wallet.db.read() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_every_page_wants_a_signed_in_operator(client, operator):
    for path in ("/admin/", "/admin/pending", "/admin/sms", "/admin/customer?phone=0712345678"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
    assert "Sign in" in client.get("/admin/login").get_data(as_text=True)


def test_a_form_without_its_csrf_token_is_refused(client, operator, wallet):
    assert client.post("/admin/login", data={"username": "wanjiru", "password": PASSWORD}).status_code == 400
    assert sign_in(client).status_code == 302
    before = balance(wallet, DEMO[0])
    refused = client.post(f"/admin/customer/{DEMO[0]}/adjust", data={"sats": "500", "reason": "ticket 7 test"})
    assert refused.status_code == 400 and balance(wallet, DEMO[0]) == before
    forged = client.post(f"/admin/customer/{DEMO[0]}/adjust",
                         data={"sats": "500", "reason": "ticket 7 test", "csrf": "x" * 43})
    assert forged.status_code == 400 and balance(wallet, DEMO[0]) == before


def test_ten_wrong_passwords_lock_the_login_even_for_the_right_one(client, operator, wallet):
    for n in range(operators.MAX_FAILED_LOGINS - 1):
        assert sign_in(client, password=f"wrong {n}").status_code == 401
    locked = sign_in(client, password="wrong again")
    assert locked.status_code == 429 and "locked" in locked.get_data(as_text=True)
    assert sign_in(client).status_code == 429  # the right password too, until the lock ends
    with wallet.db.write() as s:  # the lock ends
        s.execute(text("UPDATE operators SET locked_until = NULL"))
    assert sign_in(client).status_code == 302
    assert len(audit_lines(wallet, "login-failed")) == operators.MAX_FAILED_LOGINS
    assert len(audit_lines(wallet, "login-refused")) == 1 and len(audit_lines(wallet, "login")) == 1


def test_an_unknown_operator_gets_the_same_answer(client, operator):
    response = sign_in(client, username="nobody")
    assert response.status_code == 401 and "Wrong username or password" in response.get_data(as_text=True)


def test_the_session_ends_after_the_idle_time(client, operator, app, monkeypatch):
    sign_in(client)
    assert client.get("/admin/").status_code == 200
    configure(app, admin_session_minutes=0)
    assert client.get("/admin/").status_code == 302


def test_the_dashboard_shows_customers_solvency_and_volume(client, operator, wallet, alice):
    alice.run("1", "0" + DEMO[1][4:], "2000", "1", PIN)
    sign_in(client)
    page = client.get("/admin/").get_data(as_text=True)
    with wallet.db.read() as s:
        customers = s.scalar(select(func.count()).select_from(User))
    assert f'id="customers">{customers:,}<' in page
    assert "Coverage" in page and "%" in page.split('id="coverage">')[1][:20]
    assert "2,000 sats in 1 movements" in page  # today's bar


def test_a_credit_and_a_debit_with_reasons_are_entries_and_audit_lines(client, operator, wallet):
    sign_in(client)
    page = client.get("/admin/customer", query_string={"phone": "0712345678"}).get_data(as_text=True)
    assert f"{balance(wallet, DEMO[0]):,} sats" in page
    token = csrf_of(page)
    before = balance(wallet, DEMO[0])
    adjustments = wallet.db.session.get(LedgerAccount, ADJUSTMENTS).balance_sats
    wallet.db.session.remove()
    client.post(f"/admin/customer/{DEMO[0]}/adjust", data={"csrf": token, "sats": "1500", "direction": "credit",
                                                         "reason": "ticket 42: lost top-up, receipt QK1"})
    client.post(f"/admin/customer/{DEMO[0]}/adjust", data={"csrf": token, "sats": "500", "direction": "debit",
                                                         "reason": "ticket 43: double credit"})
    assert balance(wallet, DEMO[0]) == before + 1000
    (credit,), (debit,) = audit_lines(wallet, "credit"), audit_lines(wallet, "debit")
    why = "ticket 42: lost top-up, receipt QK1"
    assert (credit.operator, credit.subject, credit.reason) == ("wanjiru", DEMO[0], why)
    assert debit.detail.startswith("-500 sats")
    with wallet.db.read() as s:
        assert s.get(LedgerAccount, ADJUSTMENTS).balance_sats == adjustments + 1000
        memos = list(s.scalars(select(JournalEntry.memo).where(JournalEntry.kind == "adjustment")
                               .order_by(JournalEntry.id.desc()).limit(2)))
    assert memos == ["operator wanjiru: ticket 43: double credit", f"operator wanjiru: {why}"]
    assert any("credited you 1,500 sats" in sms for sms in outbox(wallet, DEMO[0]))
    page = client.get("/admin/customer", query_string={"phone": DEMO[0]}).get_data(as_text=True)
    assert "ticket 42: lost top-up" in page and "+1,500" in page


def test_no_credit_without_a_reason_and_no_debit_past_the_balance(client, operator, wallet):
    sign_in(client)
    token = csrf_of(client.get("/admin/customer", query_string={"phone": DEMO[2]}).get_data(as_text=True))
    have = balance(wallet, DEMO[2])
    no_reason = client.post(f"/admin/customer/{DEMO[2]}/adjust", data={"csrf": token, "sats": "10", "reason": " "},
                            follow_redirects=True)
    assert "say why" in no_reason.get_data(as_text=True)
    too_much = client.post(f"/admin/customer/{DEMO[2]}/adjust",
                           data={"csrf": token, "sats": str(have + 1), "direction": "debit", "reason": "ticket 9 x"},
                           follow_redirects=True)
    assert "never overdraws" in too_much.get_data(as_text=True)
    assert balance(wallet, DEMO[2]) == have and audit_lines(wallet, "debit") == []


def test_unlock_and_reset_a_pin_with_a_reason(client, operator, wallet, alice):
    for _ in range(wallet.policy.value("pin-max-attempts")):
        alice.run("1", "0" + DEMO[1][4:], "1000", "1", "9999")
    sign_in(client)
    page = client.get("/admin/customer", query_string={"phone": DEMO[0]}).get_data(as_text=True)
    assert 'id="pin-state">locked<' in page
    client.post(f"/admin/customer/{DEMO[0]}/unlock", data={"csrf": csrf_of(page), "reason": "ticket 5: ID seen"})
    page = client.get("/admin/customer", query_string={"phone": DEMO[0]}).get_data(as_text=True)
    assert 'id="pin-state">set<' in page
    client.post(f"/admin/customer/{DEMO[0]}/reset-pin", data={"csrf": csrf_of(page), "reason": "ticket 6: ID seen"})
    assert 'id="pin-state">not set<' in client.get("/admin/customer", query_string={"phone": DEMO[0]}).get_data(
        as_text=True)
    assert [a.reason for a in audit_lines(wallet, "unlock-pin")] == ["ticket 5: ID seen"]
    assert [a.reason for a in audit_lines(wallet, "reset-pin")] == ["ticket 6: ID seen"]


def test_reconcile_now_and_the_pending_and_sms_pages(client, operator, wallet):
    sign_in(client)
    page = client.get("/admin/pending").get_data(as_text=True)
    client.post("/admin/reconcile", data={"csrf": csrf_of(page)})
    assert len(audit_lines(wallet, "reconcile")) == 1
    assert client.get("/admin/sms").status_code == 200


def test_the_audit_log_cannot_be_edited(wallet, operator):
    with pytest.raises(DBAPIError), wallet.db.write() as s:
        s.execute(text("UPDATE audit_log SET reason = 'nothing happened'"))
    with pytest.raises(DBAPIError), wallet.db.write() as s:
        s.execute(text("DELETE FROM audit_log"))


def test_operator_add_from_the_command_line(runner, wallet):
    result = runner.invoke(args=["operator", "add", "Amina", "--password", "a long passphrase"])
    assert result.exit_code == 0, result.output
    assert operators.login(wallet.db, "amina", "a long passphrase", "test").ok
    short = runner.invoke(args=["operator", "add", "baraka", "--password", "short"])
    assert short.exit_code == 1 and "at least 12 characters" in short.output


def test_every_command_the_docs_name_exists(app):
    """README, Dockerfile, .env.example and the compose file name `flask --app app <command>`s:
    each must be a real command (an old `init-db` was named where the command is `db-upgrade`)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    named = set()
    for name in ("README.md", "Dockerfile", ".env.example", "docker-compose.btcpay.yml", "docker-compose.yml",
                 "SECURITY.md"):
        path = root / name
        if path.exists():
            named |= set(re.findall(r"flask --app app ([a-z][a-z-]*)", path.read_text()))
    assert {"db-upgrade", "ledger", "price", "operator"} <= named
    assert named <= set(app.cli.list_commands(None)), named - set(app.cli.list_commands(None))


def test_a_credit_form_sent_twice_moves_money_once(client, operator, wallet):
    sign_in(client)
    page = client.get("/admin/customer", query_string={"phone": DEMO[0]}).get_data(as_text=True)
    nonce = re.search(r'name="nonce" value="([0-9a-f]{32})"', page).group(1)
    form = {"csrf": csrf_of(page), "nonce": nonce, "sats": "700", "direction": "credit", "reason": "ticket 8: lost"}
    before = balance(wallet, DEMO[0])
    client.post(f"/admin/customer/{DEMO[0]}/adjust", data=form)
    again = client.post(f"/admin/customer/{DEMO[0]}/adjust", data=form, follow_redirects=True)
    assert "sent already" in again.get_data(as_text=True)
    assert balance(wallet, DEMO[0]) == before + 700 and len(audit_lines(wallet, "credit")) == 1
