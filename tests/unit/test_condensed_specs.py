"""tests/fakes/specs/*.json (what we use of LND's and BTCPay's REST APIs, which the fakes check every
request against) are what scripts/condense_specs.py writes from the official specs. Where the
official files lie beside this clone (../shared/specs, as on this project's machines and CI),
regenerate and compare; a clone elsewhere still runs the fakes' checks on the committed files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT.parent / "shared" / "specs"
SCRIPT = ROOT / "scripts" / "condense_specs.py"
needs_official_specs = pytest.mark.skipif(
    not (SPECS / "lnd").is_dir() or not (SPECS / "btcpay").is_dir(),
    reason=f"the official LND and BTCPay specs are not at {SPECS}: the committed condensed schema "
           "(tests/fakes/specs) was not compared with them (the fakes' checks still ran)")


def check(specs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--specs", str(specs)],
                          capture_output=True, text=True, timeout=60)


@needs_official_specs
def test_the_condensed_specs_are_what_the_official_ones_say():
    done = check(SPECS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


@needs_official_specs
def test_a_field_gone_from_the_official_spec_shows_as_a_difference(tmp_path):
    copy = Path(shutil.copytree(SPECS, tmp_path / "specs", ignore=shutil.ignore_patterns("daraja", "africastalking")))
    router = copy / "lnd" / "router.swagger.json"
    doc = json.loads(router.read_text())
    del doc["definitions"]["routerrpcSendPaymentRequest"]["properties"]["fee_limit_sat"]
    router.write_text(json.dumps(doc))
    done = check(copy)
    assert done.returncode == 1
    assert any(line.startswith("-") and '"fee_limit_sat": {' in line for line in done.stdout.splitlines())


@needs_official_specs
def test_a_response_field_the_code_reads_must_be_in_the_official_spec(tmp_path):
    copy = Path(shutil.copytree(SPECS, tmp_path / "specs", ignore=shutil.ignore_patterns("daraja", "africastalking")))
    common = copy / "btcpay" / "swagger.template.lightning.common.json"
    doc = json.loads(common.read_text())
    del doc["components"]["schemas"]["LightningPaymentData"]["properties"]["feeAmount"]
    common.write_text(json.dumps(doc))
    done = check(copy)
    assert done.returncode != 0
    assert "the code reads 'feeAmount'" in done.stderr


def test_the_condensed_specs_name_every_operation_the_backends_call():
    """The backends' paths (their module docstrings and calls) against the condensed files: each
    operation appears once per version, with the fields the fakes check."""
    lnd = json.loads((ROOT / "tests" / "fakes" / "specs" / "lnd.json").read_text())
    btcpay = json.loads((ROOT / "tests" / "fakes" / "specs" / "btcpay.json").read_text())
    assert sorted(lnd["versions"]) == ["master", "v0.20.3-beta"]
    for version in lnd["versions"].values():
        ops = {(o["method"], o["path"]): o for o in version["operations"]}
        assert ops[("POST", "/v2/router/send")]["body"]["fields"]["fee_limit_sat"] == {"format": "int64",
                                                                                      "type": "string"}
        assert "no_inflight_updates" in ops[("GET", "/v2/router/track/{payment_hash}")]["query"]
    paths = {o["path"].rsplit("lightning/{cryptoCode}", 1)[-1] for o in btcpay["operations"]}
    assert paths == {"/invoices", "/invoices/{id}", "/invoices/pay", "/payments/{paymentHash}", "/balance"}
