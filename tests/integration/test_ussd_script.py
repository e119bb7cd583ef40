"""`python test_ussd.py URL` (every flow, exact balances) against the app under gunicorn: with
simulated M-Pesa on four workers (the mock node is one node whichever worker a request reaches:
the receive flow's invoice is made by one and paid through another), and with
MPESA_PROVIDER=daraja against the fake Daraja, whose callbacks reach
the gunicorn workers over loopback (two workers: each new OAuth token invalidates the other's);
and with LIGHTNING_BACKEND=lnbits on a real LNbits, where the receive flow's invoice is paid from
an outside LNbits wallet and must be credited exactly once (by LNbits' webhook or the poller)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fakes import fake_daraja
from tests import lnbits_server
from tests.conftest import TEST_PEPPER
from tests.servers import ROOT, Gunicorn


@pytest.mark.parametrize(("provider", "workers"), [("simulated", 4), ("daraja", 2)])
def test_the_end_to_end_script_passes(app, wallet, tmp_path, provider, workers):
    fake = fake_daraja.FakeDaraja() if provider == "daraja" else None

    def settings(url: str) -> dict[str, str]:
        extra = {"DEMO_MODE": "1"}  # /test/pay-invoice, for the receive flow
        if fake is not None:
            extra.update(fake_daraja.app_settings(fake.url, url))
        return extra

    server = Gunicorn(wallet.db.url, TEST_PEPPER, workers=workers, log_path=tmp_path / "gunicorn.log",
                      extra_env=settings)
    try:
        result = subprocess.run([sys.executable, "test_ussd.py", server.url], cwd=ROOT, capture_output=True,  # noqa: S603
                                text=True, timeout=600, check=False)
    finally:
        server.stop()
        if fake is not None:
            fake.wait_callbacks()
            fake.stop()
    assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "gunicorn.log").read_text()
    assert f"M-Pesa provider {provider}" in result.stdout and "RESULT: ALL PASSED" in result.stdout
    if fake is not None:
        assert fake.violations == []
        assert len(fake.stk) == 3 and len(fake.b2c) == 1  # the pushes and the payout went to the fake
        assert all(status == 200 for _, _, status in fake.callbacks)


@pytest.mark.skipif(not lnbits_server.available(),
                    reason="needs LNbits in .lnbits-venv: make test installs it (make .lnbits-venv/.installed)")
def test_the_script_passes_with_lnbits(tmp_path):
    lnbits = lnbits_server.LNbits()
    app_server = None
    try:
        pool, outside = lnbits.wallet("pool"), lnbits.wallet("outside")
        lnbits.fund(outside["id"], 100_000)
        app_server = Gunicorn(
            f"sqlite:///{tmp_path}/script.db", TEST_PEPPER, workers=2, log_path=tmp_path / "gunicorn.log",
            extra_env=lambda url: {
                "AUTO_CREATE_SCHEMA": "1", "DEMO_MODE": "1", "INVOICE_POLL_S": "2",
                "LIGHTNING_BACKEND": "lnbits", "LNBITS_URL": lnbits.url, "LNBITS_ADMIN_KEY": pool["adminkey"],
                "LNBITS_INVOICE_KEY": pool["inkey"], "LIGHTNING_WEBHOOK_TOKEN": "script-webhook-0123456789",
            })
        run = subprocess.run(  # noqa: S603 - our interpreter, our script
            [sys.executable, "test_ussd.py", app_server.url, "--lnbits-payer", lnbits.url, outside["adminkey"]],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        assert "RESULT: ALL PASSED" in run.stdout
        assert "paid from an outside LNbits wallet, credited once" in run.stdout
    finally:
        if app_server is not None:
            app_server.stop()
        lnbits.stop()
