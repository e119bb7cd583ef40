"""Airtime in the books: solvency counts the airtime float as an asset, so a delivered airtime
purchase leaves what we hold against what we owe where it was (the customer's sats went out, the
airtime prepaid at Africa's Talking went with them). Against the fake of Africa's Talking that
tests/unit/test_airtime.py uses."""

from __future__ import annotations

from helpers.wallet.ledger import journal

from helpers.wallet.reports import books
from models import AIRTIME_FLOAT, SETTLED, Transaction
from tests.conftest import PIN
from tests.unit.test_airtime import app_overrides, at, only_request, report  # noqa: F401 - its fixtures


def surplus(wallet, node_sats: int = 10**9) -> tuple[int, books.Solvency]:
    with wallet.db.read() as s:
        found = books.solvency(s, node_sats)
        assert found.airtime_float_sats == journal.balances(s).get(AIRTIME_FLOAT, 0)
    return found.assets_sats - found.liabilities_sats, found


def test_delivered_airtime_moves_assets_and_liabilities_alike(alice, wallet, client, at):  # noqa: F811
    kes = wallet.policy.airtime_bounds()[0]
    before, _ = surplus(wallet)
    alice.run("8", "3", "1", str(kes), PIN)
    request = only_request(wallet)
    at.final[request.rail_key] = "Success"
    report(client, at.report(request.rail_key))
    with wallet.db.read() as s:
        row = s.query(Transaction).filter(Transaction.reference == request.reference,
                                          Transaction.follows_id.is_(None)).one()
    assert row.status == SETTLED
    after, found = surplus(wallet)
    assert found.airtime_float_sats == -row.amount_sats  # the seed's float was untouched
    assert after == before + row.fee_sats  # only the fee (income) changes what we hold net
