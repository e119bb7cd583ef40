"""The phone simulator page in headless Chromium (Debian's), driven by Playwright: a whole send
flow typed on the on-screen keypad, checked on the screen and in the database, and a screenshot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.infra.i18n import t
from helpers.wallet.rules import policy
from tests.conftest import DEMO, PIN, TEST_PEPPER, balance, configure
from tests.servers import Gunicorn

playwright = pytest.importorskip("playwright.sync_api",
                                 reason="needs playwright: make installs it (requirements-dev.lock)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))
# Chromium must not try to reach the internet from here (and, as root, needs --no-sandbox).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_a_send_flow_on_the_simulator(app, wallet, tmp_path):
    server = Gunicorn(wallet.db.url, TEST_PEPPER, workers=1, threads=2, log_path=tmp_path / "gunicorn.log")
    amount = policy().value("payment-min-sats") * 2
    fee = policy().fee_sats("internal", amount)
    a0, b0 = balance(wallet, DEMO[0]), balance(wallet, DEMO[1])
    try:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 820, "height": 640})
            page.goto(server.url + "/simulator")
            page.fill("#phone", DEMO[0])
            screen = page.locator("#display")

            def keys(text: str) -> None:
                for char in text:
                    page.click(f'button[data-key="{char}"]')

            def answer(text: str, expect: str) -> None:
                keys(text)
                page.click("#call")
                playwright.expect(screen).to_contain_text(expect)

            answer("*384*123#", t("en", "pin.create", digits=4).splitlines()[-1])
            answer(PIN, t("en", "pin.repeat"))
            answer(PIN, t("en", "pin.set"))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "simulator-menu.png"))  # the picture in README
            answer("1", t("en", "send.phone"))
            answer("0" + DEMO[1][4:], t("en", "send.amount", phone=DEMO[1], min=1000, max=1000000).splitlines()[0])
            answer(str(amount), t("en", "send.confirm", amount=amount, phone=DEMO[1], fee=fee,
                                  total=amount + fee, recipient="").splitlines()[0])
            answer("1", t("en", "pin.enter"))
            answer(PIN, t("en", "send.done", amount=amount, phone=DEMO[1], fee=fee, ref="", balance=0).split(" Ref")[0])
            assert page.locator("#screen").get_attribute("data-state") == "end"
            sent = t("en", "sms.sent", amount=amount, phone=DEMO[1], fee=fee, ref="", balance=0).split(" Ref")[0]
            playwright.expect(page.locator("#sms")).to_contain_text(sent)  # the SMS beside the phone
            page.screenshot(path=str(ARTIFACTS / "simulator.png"))
            browser.close()
    finally:
        server.stop()
    assert (ARTIFACTS / "simulator.png").stat().st_size > 10_000
    assert balance(wallet, DEMO[0]) == a0 - amount - fee
    assert balance(wallet, DEMO[1]) == b0 + amount


def test_the_simulator_is_off_in_production_unless_enabled(app, client):
    assert client.get("/simulator").status_code == 200
    configure(app, simulator_enabled=False)
    assert client.get("/simulator").status_code == 404


def test_the_sms_panel_shows_what_the_phone_received(app, client, wallet, alice, bob):  # bob has a PIN
    amount = policy().value("payment-min-sats")
    alice.run("1", "0" + DEMO[1][4:], str(amount), "1", PIN)
    found = client.get("/simulator/sms", query_string={"phone": "0" + DEMO[1][4:]}).get_json()
    assert found["phone"] == DEMO[1]
    assert found["messages"][0]["text"].startswith(t("en", "sms.received", amount=amount, phone=DEMO[0], ref="",
                                                     balance=0).split(" Ref")[0])
    configure(app, simulator_enabled=False)
    assert client.get("/simulator/sms", query_string={"phone": DEMO[1]}).status_code == 404
