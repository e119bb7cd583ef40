"""The operator console at /admin, through Flask's test client: sign-in and its lock, the CSRF
token on every form, the session's idle timeout, a customer's page and each action with its
audit line. tests/integration/test_console_browser.py drives the same pages in Chromium."""

from __future__ import annotations

import html
import re
import threading
import time

import pyotp
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from helpers.wallet import operators
from models import ADJUSTMENTS, AuditEntry, Transaction, LedgerAccount, Operator, User
from tests.conftest import DEMO, PIN, balance, configure, outbox

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def one_throttle_window():
    """Sign-in tries are counted in fixed windows (operators.THROTTLE_MINUTES): a test that counts
    them must not straddle a window's end. Near one, wait for the next window to begin."""
    window = operators.THROTTLE_MINUTES * 60
    left = window - time.time() % window
    if left < 60:
        time.sleep(left + 0.5)


@pytest.fixture
def operator(wallet):
    operators.add(wallet.db, "wanjiru", PASSWORD)
    return "wanjiru"


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def totp_code(db, username: str = "wanjiru") -> str:
    """The code the operator's authenticator shows now. Each sign-in of a test counts as a new
    30-second step (a code is taken once; test_a_code_is_taken_once proves it)."""
    with db.write() as s:
        s.execute(update(Operator).where(Operator.username == username).values(totp_last_step=None))
        secret = s.scalar(select(Operator.totp_secret).where(Operator.username == username))
    return pyotp.TOTP(secret).now() if secret else "000000"


def sign_in(client, username="wanjiru", password=PASSWORD, code=None, address="127.0.0.1"):
    """Sign in from `address` with the password and (unless given) the operator's current code."""
    token = csrf_of(client.get("/admin/login").get_data(as_text=True))
    code = totp_code(client.application.extensions["wallet"].db, username) if code is None else code
    return client.post("/admin/login", data={"csrf": token, "username": username, "password": password,
                                             "code": code}, environ_base={"REMOTE_ADDR": address})


def confirm_adjust(client, phone: str, form: dict):
    """A credit or debit through both steps: the form (what will happen), then its confirmation."""
    preview = client.post(f"/admin/customer/{phone}/adjust", data=form)
    page = preview.get_data(as_text=True)
    if 'id="confirm"' not in page:
        return preview
    fields = {name: html.unescape(value) for name, value in
              re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.split('id="confirm"')[1])}
    return client.post(f"/admin/customer/{phone}/adjust/confirm", data=fields)


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


def test_a_form_without_its_token_gets_the_consoles_own_page_not_json(client, operator):
    """An old tab's form: the console's page (a plain message, a way back), not raw JSON."""
    assert sign_in(client).status_code == 302
    refused = client.post("/admin/reconcile", data={})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400 and refused.mimetype == "text/html"
    assert "Nothing was done: this form's security token is missing or out of date" in page
    assert 'href="/admin/"' in page and not page.lstrip().startswith("{")
    signed_out = client.__class__(client.application)  # another browser, no session
    assert 'href="/admin/login"' in signed_out.post("/admin/login", data={}).get_data(as_text=True)


def test_the_console_fits_a_phone():
    """Tables scroll inside their box and every touch target is at least 44 px high (base.html)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "helpers" / "web" / "templates" / "admin"
    css = (folder / "base.html").read_text()
    assert ".scroll { overflow-x: auto; max-width: 100%;" in css
    assert "button, input, select { min-height: 44px; }" in css and "min-width: 44px" in css
    for page in folder.glob("*.html"):
        text = page.read_text()
        assert text.count("<table") == text.count('<div class="scroll"><table'), f"{page.name}: a table outside .scroll"


ATTACKER = "203.0.113.9"


def refusal(response) -> tuple[int, str]:
    """What a refused sign-in says: its status and its message."""
    return response.status_code, re.search(r'role="alert">([^<]*)<', response.get_data(as_text=True)).group(1)


def test_wrong_sign_ins_slow_down_their_address_never_lock_the_operator_out(client, operator, wallet):
    for n in range(operators.MAX_FAILED_LOGINS):
        assert sign_in(client, password=f"wrong {n}", address=ATTACKER).status_code == 401
    throttled = sign_in(client, address=ATTACKER)  # from there, even the right password waits
    assert throttled.status_code == 429 and "try again in" in throttled.get_data(as_text=True)
    assert sign_in(client).status_code == 302  # the operator, from their own address, is not locked out
    assert len(audit_lines(wallet, "login-failed")) == operators.MAX_FAILED_LOGINS  # the throttled try: none


def test_one_address_trying_many_names_is_throttled_for_every_name(client, operator):
    for n in range(operators.MAX_FAILED_PER_ADDRESS):
        assert sign_in(client, username=f"guess{n}", address=ATTACKER).status_code == 401
    assert sign_in(client, address=ATTACKER).status_code == 429
    assert sign_in(client).status_code == 302


def test_an_unknown_operator_gets_the_same_answers_as_a_known_one(client, operator):
    for n in range(operators.MAX_FAILED_LOGINS):
        known = sign_in(client, password=f"wrong {n}", address="198.51.100.1")
        unknown = sign_in(client, username="nobody", password=f"wrong {n}", address="198.51.100.2")
        assert refusal(known) == refusal(unknown) and known.status_code == 401
    known = sign_in(client, address="198.51.100.1")
    unknown = sign_in(client, username="nobody", address="198.51.100.2")
    assert refusal(known) == refusal(unknown) and known.status_code == 429


def test_a_password_without_the_second_factor_does_not_sign_in(client, operator, wallet):
    assert sign_in(client, code="").status_code == 401
    assert sign_in(client, code="123456" if totp_code(wallet.db) != "123456" else "654321").status_code == 401
    assert client.get("/admin/").status_code == 302
    assert sign_in(client).status_code == 302


def test_a_code_is_taken_once(client, operator, wallet):
    code = totp_code(wallet.db)
    assert sign_in(client, code=code).status_code == 302
    other = client.application.test_client()  # someone who saw the code typed
    assert refusal(sign_in(other, code=code))[0] == 401 and other.get("/admin/").status_code == 302


def test_an_operator_without_a_second_factor_is_told_to_enrol_once_the_password_is_right(client, operator, wallet):
    with wallet.db.write() as s:  # as an operator created before the second factor existed
        s.execute(update(Operator).values(totp_secret=None))
    assert refusal(sign_in(client, password="wrong one"))[0] == 401
    told = sign_in(client)
    assert told.status_code == 403 and "flask operator totp wanjiru" in told.get_data(as_text=True)


def test_failed_sign_ins_are_counted_apart_from_the_actions(client, operator, wallet):
    for n in range(3):
        sign_in(client, username="nobody", password=f"wrong {n}", address=ATTACKER)
    sign_in(client)
    page = client.get("/admin/").get_data(as_text=True)
    actions = page.split("Recent operator actions")[1].split("Failed sign-ins")[0]
    assert "login-failed" not in actions and ">login<" in actions
    assert 'id="failed-sign-ins">3 in the last' in page and "from 1 addresses" in page and ATTACKER in page


def test_operator_totp_prints_a_new_factor_once_and_the_old_one_stops(runner, client, operator, wallet):
    with wallet.db.read() as s:
        old = s.scalar(select(Operator.totp_secret))
    result = runner.invoke(args=["operator", "totp", "wanjiru"])
    assert result.exit_code == 0, result.output
    uri = re.search(r"otpauth://totp/\S+", result.output).group(0)
    new = pyotp.parse_uri(uri)
    assert new.secret != old and "wanjiru" in uri
    assert sign_in(client, code=pyotp.TOTP(old).now()).status_code == 401
    assert sign_in(client, code=new.now()).status_code == 302
    assert [a.subject for a in audit_lines(wallet, "operator-totp")] == ["wanjiru"]


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
    confirm_adjust(client, DEMO[0], {"csrf": token, "sats": "1500", "direction": "credit",
                                     "reason": "ticket 42: lost top-up, receipt QK1"})
    confirm_adjust(client, DEMO[0], {"csrf": token, "sats": "500", "direction": "debit",
                                     "reason": "ticket 43: double credit"})
    assert balance(wallet, DEMO[0]) == before + 1000
    (credit,), (debit,) = audit_lines(wallet, "credit"), audit_lines(wallet, "debit")
    why = "ticket 42: lost top-up, receipt QK1"
    assert (credit.operator, credit.subject, credit.reason) == ("wanjiru", DEMO[0], why)
    assert debit.detail.startswith("-500 sats")
    with wallet.db.read() as s:
        assert s.get(LedgerAccount, ADJUSTMENTS).balance_sats == adjustments + 1000
        memos = list(s.scalars(select(Transaction.memo).where(Transaction.kind == "adjustment")
                               .order_by(Transaction.id.desc()).limit(2)))
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
    factor = pyotp.parse_uri(re.search(r"otpauth://totp/\S+", result.output).group(0))
    assert operators.login(wallet.db, "amina", "a long passphrase", factor.now(), "test").ok
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
    confirm_adjust(client, DEMO[0], form)
    again = client.post(f"/admin/customer/{DEMO[0]}/adjust/confirm", data=form, follow_redirects=True)
    assert "sent already" in again.get_data(as_text=True)
    assert balance(wallet, DEMO[0]) == before + 700 and len(audit_lines(wallet, "credit")) == 1


# ------------------------------------------------------------------ a credit or debit is confirmed first
def test_a_credit_is_shown_to_confirm_before_anything_moves(client, operator, wallet):
    sign_in(client)
    page = client.get("/admin/customer", query_string={"phone": DEMO[0]}).get_data(as_text=True)
    before = balance(wallet, DEMO[0])
    form = {"csrf": csrf_of(page), "sats": "1200", "direction": "debit", "reason": "ticket 50: double top-up"}
    shown = client.post(f"/admin/customer/{DEMO[0]}/adjust", data=form).get_data(as_text=True)
    assert balance(wallet, DEMO[0]) == before and audit_lines(wallet, "debit") == []  # nothing yet
    assert f"Debit 1,200 sats from {DEMO[0]}?" in shown and f"{before - 1200:,} sats</strong> after" in shown
    confirm_adjust(client, DEMO[0], form)
    assert balance(wallet, DEMO[0]) == before - 1200 and len(audit_lines(wallet, "debit")) == 1


# ------------------------------------------------------------------ a session ends when it must, everywhere
def stolen_copy(client):
    """Another browser holding a copy of this one's session cookie."""
    thief = client.application.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def credit_from(client, sats: int = 5000):
    page = client.get("/admin/customer", query_string={"phone": DEMO[0]})
    if page.status_code != 200:
        return page
    form = {"csrf": csrf_of(page.get_data(as_text=True)), "sats": str(sats), "direction": "credit",
            "reason": "ticket 66: thief"}
    return client.post(f"/admin/customer/{DEMO[0]}/adjust/confirm", data=form)


def test_a_copy_of_the_session_stops_working_at_sign_out(client, operator, wallet):
    sign_in(client)
    thief = stolen_copy(client)
    assert thief.get("/admin/").status_code == 200  # a copy works while the session lives
    page = client.get("/admin/").get_data(as_text=True)
    client.post("/admin/logout", data={"csrf": csrf_of(page)})
    before = balance(wallet, DEMO[0])
    assert thief.get("/admin/").status_code == 302
    assert credit_from(thief).status_code in (302, 400) and balance(wallet, DEMO[0]) == before


def _delete_row(runner, wallet):
    with wallet.db.write() as s:
        s.execute(text("DELETE FROM operators WHERE username = 'wanjiru'"))


ENDINGS = {
    "row deleted": _delete_row,
    "removed": lambda runner, wallet: runner.invoke(args=["operator", "remove", "wanjiru", "--reason", "left us"]),
    "locked": lambda runner, wallet: runner.invoke(args=["operator", "lock", "wanjiru", "--reason", "lost phone"]),
    "password changed": lambda runner, wallet: runner.invoke(
        args=["operator", "password", "wanjiru", "--password", "another long passphrase"]),
    "second factor renewed": lambda runner, wallet: runner.invoke(args=["operator", "totp", "wanjiru"]),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_every_session_of_an_operator_ends_when_they_are_removed_locked_or_change_password(
        client, runner, operator, wallet, ending):
    sign_in(client)
    thief = stolen_copy(client)
    ENDINGS[ending](runner, wallet)
    before = balance(wallet, DEMO[0])
    for browser in (client, thief):
        assert browser.get("/admin/").status_code == 302
        assert credit_from(browser).status_code in (302, 400)
    assert balance(wallet, DEMO[0]) == before and audit_lines(wallet, "credit") == []


def test_a_locked_operator_cannot_sign_in_until_unlocked(client, runner, operator):
    assert runner.invoke(args=["operator", "lock", "wanjiru", "--reason", "lost phone"]).exit_code == 0
    assert refusal(sign_in(client))[0] == 403
    assert refusal(sign_in(client, password="wrong one"))[0] == 401  # told only with the right password
    assert runner.invoke(args=["operator", "unlock", "wanjiru", "--reason", "phone found"]).exit_code == 0
    assert sign_in(client).status_code == 302


# ------------------------------------------------------------------ an action and its audit line: both or neither
def audit_down(*args, **kwargs):
    """The audit line cannot be written (the database refuses it, the connection drops)."""
    raise RuntimeError("audit log unavailable")


def pin_hash_of(wallet, phone: str):
    with wallet.db.read() as s:
        return s.scalar(select(User.pin_hash).where(User.phone == phone))


def test_a_console_pin_reset_without_its_audit_line_resets_nothing(client, operator, wallet, alice, monkeypatch):
    sign_in(client)
    page = client.get("/admin/customer", query_string={"phone": DEMO[0]}).get_data(as_text=True)
    pin = pin_hash_of(wallet, DEMO[0])
    monkeypatch.setattr(operators, "audit", audit_down)
    failed = client.post(f"/admin/customer/{DEMO[0]}/reset-pin", data={"csrf": csrf_of(page), "reason": "ticket 6: ID"})
    assert failed.status_code == 500
    assert pin is not None and pin_hash_of(wallet, DEMO[0]) == pin


def test_a_pin_reset_from_the_command_line_is_audited_in_its_transaction(runner, wallet, alice, monkeypatch):
    pin = pin_hash_of(wallet, DEMO[0])
    assert pin is not None
    monkeypatch.setattr(operators, "audit", audit_down)
    assert runner.invoke(args=["reset-pin", DEMO[0], "--reason", "ticket 8: ID seen"]).exit_code != 0
    assert pin_hash_of(wallet, DEMO[0]) == pin
    monkeypatch.undo()
    assert runner.invoke(args=["reset-pin", DEMO[0], "--reason", "ticket 8: ID seen"]).exit_code == 0
    (line,) = audit_lines(wallet, "reset-pin")
    assert (line.subject, line.reason) == (DEMO[0], "ticket 8: ID seen") and pin_hash_of(wallet, DEMO[0]) is None


def test_a_credit_from_the_command_line_is_audited_in_its_transaction(runner, wallet, monkeypatch):
    before = balance(wallet, DEMO[0])
    monkeypatch.setattr(operators, "audit", audit_down)
    assert runner.invoke(args=["credit", DEMO[0], "900", "--reason", "ticket 9: lost top-up"]).exit_code != 0
    assert balance(wallet, DEMO[0]) == before
    monkeypatch.undo()
    assert runner.invoke(args=["credit", DEMO[0], "900", "--reason", "ticket 9: lost top-up"]).exit_code == 0
    (line,) = audit_lines(wallet, "credit")
    assert (line.operator, line.subject, line.reason) == ("cli", DEMO[0], "ticket 9: lost top-up")
    assert balance(wallet, DEMO[0]) == before + 900


@pytest.mark.parametrize("code", ["１２３４５６", "12345é", "\u0661\u0662\u0663\u0664\u0665\u0666"])
def test_a_code_in_other_characters_is_a_wrong_try_never_a_500(client, operator, wallet, code):
    """Full-width or Arabic-Indic digits, or any non-ASCII text, as the TOTP code: refused and
    counted like any wrong try (a TypeError here used to answer 500 and count nothing)."""
    for n in range(operators.MAX_FAILED_LOGINS):
        assert sign_in(client, code=code, address=ATTACKER).status_code == 401, n
    assert sign_in(client, address=ATTACKER).status_code == 429
    assert len(audit_lines(wallet, "login-failed")) == operators.MAX_FAILED_LOGINS


def test_a_new_sign_in_ends_every_earlier_session_of_the_operator(client, operator, wallet):
    sign_in(client)
    thief = stolen_copy(client)
    assert thief.get("/admin/").status_code == 200
    other = client.application.test_client()
    assert sign_in(other).status_code == 302  # the operator signs in again (another device)
    assert thief.get("/admin/").status_code == 302 and client.get("/admin/").status_code == 302
    assert other.get("/admin/").status_code == 200


def test_parallel_wrong_tries_from_one_address_do_not_pass_the_limit(app, operator, wallet):
    """Each try is counted before it is checked (the counters' atomic upsert), so tries sent at
    once cannot all read a count under the limit and all be checked."""
    tries = operators.MAX_FAILED_LOGINS * 2
    gate = threading.Barrier(tries)
    answers: list[int] = []

    def attempt(n: int) -> None:
        client = app.test_client()
        token = csrf_of(client.get("/admin/login").get_data(as_text=True))
        gate.wait()
        answers.append(client.post("/admin/login", data={"csrf": token, "username": "wanjiru",
                                                         "password": f"wrong {n}", "code": "000000"},
                                   environ_base={"REMOTE_ADDR": ATTACKER}).status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers) == [401] * operators.MAX_FAILED_LOGINS + [429] * (tries - operators.MAX_FAILED_LOGINS)
    assert len(audit_lines(wallet, "login-failed")) == operators.MAX_FAILED_LOGINS
