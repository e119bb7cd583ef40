"""Golden transcripts: every screen of the scripted flows in tests/golden_flows.py, replayed
through the Flask test client and compared with the recording in tests/golden/<flow>.<lang>.txt.

    .venv/bin/python -m pytest tests/unit/test_golden_transcripts.py                   # compare
    GOLDEN_UPDATE=1 .venv/bin/python -m pytest tests/unit/test_golden_transcripts.py   # re-record

A mismatch fails with a unified diff (recorded -> replayed). Re-record only when a screen was
meant to change, and read the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from tests.golden_flows import FLOWS, Flow
from tests.golden_replay import Normaliser, replay

GOLDEN_DIR = Path(__file__).parents[1] / "golden"
UPDATE = os.environ.get("GOLDEN_UPDATE", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture
def app_overrides():
    """Settings that show on screens, pinned so that a developer's environment or .env cannot
    change a transcript."""
    return {
        "USSD_SERVICE_CODE": "*384*123#",
        "PUBLIC_URL": "http://localhost:5000",
        "LIGHTNING_ADDRESS_DOMAIN": "",
        "LIGHTNING_BACKEND": "mock",
        "LIGHTNING_NETWORK": "bcrt",
        "INVOICE_EXPIRY_S": 3600,
        "MPESA_PROVIDER": "simulated",
        "DEFAULT_REGION": "KE",
        "DEFAULT_LANGUAGE": "en",
    }


def golden_path(flow: Flow) -> Path:
    return GOLDEN_DIR / f"{flow.id}.txt"


def check_transcript(flow: Flow, actual: str) -> None:
    """Compare with the recording (or write it, in record mode)."""
    path = golden_path(flow)
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        if not path.exists() or path.read_bytes() != actual.encode("utf-8"):
            path.write_bytes(actual.encode("utf-8"))
        return
    if not path.exists():
        pytest.fail(f"no recording {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}: "
                    "record it with GOLDEN_UPDATE=1", pytrace=False)
    expected = path.read_bytes().decode("utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"recorded {path.name}", tofile="replayed now", n=4))
        pytest.fail(f"flow {flow.id}: the screens changed\n{diff}\n"
                    "If the change is intended: GOLDEN_UPDATE=1 .venv/bin/python -m pytest "
                    "tests/unit/test_golden_transcripts.py", pytrace=False)


@pytest.mark.parametrize("flow", FLOWS, ids=[flow.id for flow in FLOWS])
def test_golden_transcript(flow, client, wallet):
    check_transcript(flow, replay(client, wallet, flow))


def test_no_stale_recordings():
    """Every recording belongs to a flow (in record mode, recordings of removed flows go)."""
    wanted = {golden_path(flow).name for flow in FLOWS}
    stale = sorted(p for p in GOLDEN_DIR.glob("*.txt") if p.name not in wanted)
    if UPDATE:
        for path in stale:
            path.unlink()
        return
    assert not stale, f"recordings without a flow: {[p.name for p in stale]} (GOLDEN_UPDATE=1 removes them)"


def test_flow_ids_are_unique():
    ids = [flow.id for flow in FLOWS]
    assert len(ids) == len(set(ids))
    assert {flow.lang for flow in FLOWS} == {"en", "sw"}
    names = {flow.name for flow in FLOWS}
    assert all(f"{name}.{lang}" in ids for name in names for lang in ("en", "sw")), "every flow in both languages"


# ------------------------------------------------------------------ the normaliser itself
def test_normaliser_numbers_volatile_values_and_keeps_the_rest():
    normalise = Normaliser()
    bolt11 = "lnbcrt25u1pjq9x7wpp5" + "q" * 40 + "xyz"
    text = (f"Invoice for 2,500 sats created, ref 7KQ2MZXA. Pay: {bolt11} "
            "M-Pesa ref SABCDEFGH2 on 05/12* and 31/01, by 06/01/2027, code QK10TX4N7P, phone +254712345678, "
            "ref 7KQ2MZXA again, ref HJ3RT8WN, (1,000-1,000,000) SatsPesa 254712345678@localhost:5000")
    assert normalise(text) == (
        "Invoice for 2,500 sats created, ref <REF-1>. Pay: <BOLT11-1> "
        "M-Pesa ref <RECEIPT-1> on <DD/MM>* and <DD/MM>, by <DD/MM/YYYY>, code QK10TX4N7P, phone +254712345678, "
        "ref <REF-1> again, ref <REF-2>, (1,000-1,000,000) SatsPesa 254712345678@localhost:5000")
    assert normalise.raw("<REF-2>") == "HJ3RT8WN"
    # everything that is not volatile stays byte-exact
    stable = "Balance: 100,000 sats\n1 Send BTC\n0 Exit  \tPIN 4821 KES 150,000 (*384*123#)"
    assert normalise(stable) == stable


def test_no_catalog_text_looks_volatile():
    """The patterns would hide a catalog word shaped like a reference (8 capitals, say): none is."""
    from helpers.infra.i18n import CATALOGS

    for lang, catalog in CATALOGS.items():
        for key, text in catalog.items():
            assert Normaliser()(text) == text, f"{lang} {key}: {text!r} would be normalised"
