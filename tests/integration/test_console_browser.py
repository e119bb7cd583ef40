"""The operator console in headless Chromium (Debian's), driven by Playwright, on a phone-sized
screen: sign in (password and TOTP code), find a customer, credit them with a reason, confirm,
see the audit line; a screenshot of each page is saved."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from helpers.wallet import operators
from models import AuditEntry
from tests.conftest import DEMO, TEST_PEPPER, balance
from tests.integration.test_simulator import ARTIFACTS, CHROMIUM, FLAGS
from tests.unit.test_console import totp_code
from tests.servers import Gunicorn

playwright = pytest.importorskip("playwright.sync_api",
                                 reason="needs playwright: make installs it (requirements-dev.lock)")
pytestmark = pytest.mark.skipif(CHROMIUM is None or shutil.which(CHROMIUM) is None,
                                reason="needs Debian's chromium (apt-get install chromium)")
PHONE_SCREEN = {"width": 390, "height": 844}  # a phone held upright


def test_sign_in_find_a_customer_and_credit_them(app, wallet, tmp_path):
    operators.add(wallet.db, "wanjiru", "correct horse battery")
    server = Gunicorn(wallet.db.url, TEST_PEPPER, workers=1, threads=2, log_path=tmp_path / "gunicorn.log")
    before = balance(wallet, DEMO[1])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport=PHONE_SCREEN)
            page.goto(server.url + "/admin/")
            playwright.expect(page.locator("h1")).to_have_text("Sign in")  # no session: the login page
            page.fill("input[name=username]", "wanjiru")
            page.fill("input[name=password]", "correct horse battery")
            page.fill("input[name=code]", totp_code(wallet.db))
            page.click("button[type=submit]")
            playwright.expect(page.locator("#coverage")).to_contain_text("%")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE_SCREEN["width"]  # the page fits a phone: no sideways scrolling
            page.screenshot(path=str(ARTIFACTS / "console-dashboard.png"), full_page=True)
            page.click("text=Customer")
            page.fill("input[name=phone]", "0" + DEMO[1][4:])
            page.click("text=Find")
            playwright.expect(page.locator("#customer-phone")).to_have_text(DEMO[1])
            page.fill("#adjust input[name=sats]", "2500")
            page.fill("#adjust input[name=reason]", "ticket 77: top-up lost, M-Pesa receipt seen")
            page.click("#adjust button")
            playwright.expect(page.locator("#confirm-what")).to_have_text(f"Credit 2,500 sats to {DEMO[1]}?")
            page.screenshot(path=str(ARTIFACTS / "console-confirm.png"), full_page=True)
            page.click("#confirm button")
            playwright.expect(page.locator("[role=status]")).to_contain_text("Credited 2,500 sats")
            playwright.expect(page.locator("table.audit")).to_contain_text("ticket 77: top-up lost")
            page.screenshot(path=str(ARTIFACTS / "console-customer.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    assert balance(wallet, DEMO[1]) == before + 2500
    with wallet.db.read() as s:
        line = s.scalar(select(AuditEntry).where(AuditEntry.action == "credit"))
    assert (line.operator, line.subject) == ("wanjiru", DEMO[1])
    assert line.reason == "ticket 77: top-up lost, M-Pesa receipt seen"
    assert (ARTIFACTS / "console-customer.png").stat().st_size > 10_000
