"""`python test_ussd.py URL` (every flow, exact balances) against the app under gunicorn: with
simulated M-Pesa, and with MPESA_PROVIDER=daraja against the fake Daraja, whose callbacks reach
the gunicorn workers over loopback (two workers: each new OAuth token invalidates the other's)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import fake_daraja
from tests.conftest import TEST_PEPPER
from tests.servers import ROOT, Gunicorn


@pytest.mark.parametrize("provider", ["simulated", "daraja"])
def test_the_end_to_end_script_passes(app, wallet, tmp_path, provider):
    fake = fake_daraja.FakeDaraja() if provider == "daraja" else None

    def settings(url: str) -> dict[str, str]:
        extra = {"DEMO_MODE": "1"}  # /test/pay-invoice, for the receive flow
        if fake is not None:
            extra.update(fake_daraja.app_settings(fake.url, url))
        return extra

    server = Gunicorn(wallet.db.url, TEST_PEPPER, workers=2, log_path=tmp_path / "gunicorn.log", extra_env=settings)
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
