"""`python test_ussd.py` (the end-to-end script operators run) against the app under gunicorn,
with LIGHTNING_BACKEND=lnbits on a real LNbits: the receive flow's invoice is paid from an outside
LNbits wallet and must be credited exactly once (by LNbits' webhook or the poller)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import lnbits_server
from tests.conftest import TEST_PEPPER
from tests.servers import ROOT, Gunicorn


@pytest.mark.skipif(not lnbits_server.available(), reason="needs LNbits in .lnbits-venv (make test installs it)")
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
