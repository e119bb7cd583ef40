"""A real LNbits (PyPI package, FakeWallet funding source) on a free loopback port, in its own
virtualenv (LNBITS_VENV, default .lnbits-venv; `make test` creates it)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from tests.servers import ROOT, free_port, stop_process_group

VENV = Path(os.environ.get("LNBITS_VENV", ROOT / ".lnbits-venv"))


def available() -> bool:
    return (VENV / "bin" / "lnbits").exists()


class LNbits:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="lnbits-data-")
        site_packages = subprocess.run(  # noqa: S603 - our venv's interpreter
            [str(VENV / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
            capture_output=True, text=True, check=True).stdout.strip()
        env = {**os.environ, "LNBITS_DATA_FOLDER": self.data, "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
               "LNBITS_ADMIN_UI": "true",
               # our webhook is on 127.0.0.1 here; LNbits only calls public domains by default
               "LNBITS_CALLBACK_URL_RULES": '["http://127\\\\.0\\\\.0\\\\.1(:\\\\d+)?"]',
               "LNBITS_CALLBACK_ALLOW_PRIVATE_IPS": "true"}
        self.log = open(Path(self.data) / "lnbits.log", "wb")  # noqa: SIM115 - closed in stop()
        # LNbits finds lnbits/static relative to the working directory: run it from site-packages.
        self.process = subprocess.Popen(  # noqa: S603
            [str(VENV / "bin" / "lnbits"), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=site_packages, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(self.url + "/api/v1/health", timeout=2, allow_redirects=False).status_code:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("LNbits did not start")
            time.sleep(0.5)
        response = requests.put(self.url + "/api/v1/auth/first_install", timeout=10, json={
            "username": "admin", "password": "test-password-1", "password_repeat": "test-password-1"})
        response.raise_for_status()
        self.token = response.json()["access_token"]

    def wallet(self, name: str) -> dict:
        response = requests.post(self.url + "/api/v1/account", json={"name": name}, timeout=10)
        response.raise_for_status()
        return response.json()

    def fund(self, wallet_id: str, sats: int) -> None:
        response = requests.put(self.url + "/users/api/v1/balance", timeout=10, json={"id": wallet_id, "amount": sats},
                                headers={"Authorization": f"Bearer {self.token}"})
        response.raise_for_status()

    def pay(self, admin_key: str, bolt11: str) -> dict:
        response = requests.post(self.url + "/api/v1/payments", json={"out": True, "bolt11": bolt11},
                                 headers={"X-Api-Key": admin_key}, timeout=30)
        response.raise_for_status()
        return response.json()

    def invoice(self, invoice_key: str, sats: int) -> dict:
        response = requests.post(self.url + "/api/v1/payments", headers={"X-Api-Key": invoice_key}, timeout=10,
                                 json={"out": False, "amount": sats, "memo": "outside", "expiry": 600})
        response.raise_for_status()
        return response.json()

    def balance_sat(self, invoice_key: str) -> int:
        response = requests.get(self.url + "/api/v1/wallet", headers={"X-Api-Key": invoice_key}, timeout=10)
        response.raise_for_status()
        return response.json()["balance"] // 1000

    def stop(self) -> None:
        stop_process_group(self.process, wait_s=15)
        self.log.close()
