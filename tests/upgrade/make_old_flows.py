"""Fill a fresh SQLite database with money flows run by the code of an older commit, and write
its rows and what that code said about them (balances, statements, open payouts, house
balances) to JSON, for tests/integration/test_upgrade.py to load, upgrade and compare.

Run on a checkout of the older commit (its modules are the ones imported):

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old .venv/bin/python tests/upgrade/make_old_flows.py tests/upgrade/old_flows_<rev>.json
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from sqlalchemy import MetaData, select, text

from app import create_app
from helpers.airtime.provider import AirtimeResult, SimulatedAirtime
from helpers.mpesa.provider import PayoutResult, SimulatedMpesa
from helpers.wallet import airtime, journal, lightning_out, mpesa_flows, transactions, users
from helpers.web import worker
from lightning import State
from models import B2C, PENDING, DEBIT, Transaction, User

PEPPER = "upgrade-fixture-pepper-0123456789"


class ScriptedAirtime(SimulatedAirtime):
    def __init__(self) -> None:
        super().__init__()
        self.next = AirtimeResult(State.SUCCEEDED, "ATQid_ok")

    def send(self, phone, kes, reference):
        return self.next


class ScriptedMpesa(SimulatedMpesa):
    def __init__(self) -> None:
        super().__init__()
        self.next = PayoutResult(State.PENDING, error="no answer")

    def payout(self, phone, kes, reference):
        return self.next


def _plain(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value


def main(out: str) -> None:
    folder = tempfile.mkdtemp()
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{folder}/old.db", "AUTO_CREATE_SCHEMA": True,
                      "DEMO_MODE": True, "SMS_AUTO_FLUSH": False, "PIN_PEPPER": PEPPER, "RATE_LIMITS": False,
                      "INVOICE_POLL_S": 0, "WRITE_BEHIND_S": 0, "AIRTIME_PROVIDER": "simulated"})
    svc = app.extensions["wallet"]
    db, policy = svc.db, svc.policy
    with db.read() as s:
        phones = [u.phone for u in s.scalars(select(User).order_by(User.id))]
    people = [users.register(db, phone, "en", "*483#") for phone in phones[:3]]
    alice, bob, carol = people
    price = 10_000_000  # KES per BTC: 1 KES = 10 sats
    n = iter(range(1000))

    def key() -> str:
        return f"upgrade-{next(n)}"

    transactions.transfer(db, policy, alice, bob.phone, 5_000, key(), "*483#")
    transactions.transfer(db, policy, bob, carol.phone, 1_200, key(), "*483#")
    transactions.topup(db, policy, carol, 500, 5_000, price, "UPG0000001", key())
    provider = ScriptedAirtime()
    for who, kes, said in ((alice, 100, AirtimeResult(State.SUCCEEDED, "ATQid_delivered")),
                           (alice, 50, AirtimeResult(State.FAILED, "", "refused")),
                           (bob, 20, AirtimeResult(State.PENDING, "ATQid_sent")),
                           (carol, 30, AirtimeResult(State.PENDING, "", "no answer"))):
        provider.next = said
        sats, fee = kes * 10, policy.fee_sats("airtime", kes * 10)
        receipt = airtime.reserve(db, policy, who, who.phone, kes, sats, fee, price, key())
        airtime.send(db, provider, receipt, who.phone, kes)
    mpesa = ScriptedMpesa()
    for who, kes, said in ((alice, 300, PayoutResult(State.PENDING, error="no answer")),
                           (bob, 250, PayoutResult(State.FAILED, error="refused"))):
        mpesa.next = said
        sats, fee = kes * 10, 10
        request = mpesa_flows.PayoutRequest.new(B2C, who.id, who.phone, kes, sats)
        receipt = transactions.reserve_withdrawal(db, policy, who, kes, sats, fee, price, who.phone, key(),
                                                  payout_row=request.row)
        mpesa_flows.pay_out(db, mpesa, receipt.transaction_id, request, who.phone, kes)
    receipt = lightning_out.reserve_lightning(db, policy, carol, 3_000, 30, (1, 10**9), "cd" * 32,
                                              "lnbc-upgrade", key())
    worker.sweep(svc)  # the worker's jobs about what is pending, as a running deployment has them

    with db.read() as s:
        balances = {u.phone: u.balance_sats for u in s.scalars(select(User).order_by(User.id))}
        statements = {phone: [[line.kind, line.reference, line.amount, line.counterparty, line.pending, line.memo]
                              for line in journal.statement(s, s.scalar(select(User.id).where(User.phone == phone)))]
                      for phone in balances}
        open_payouts = sorted([row.reference, row.type, row.amount_sats, row.fee_sats] for row in s.scalars(
            select(Transaction).where(Transaction.status == PENDING, Transaction.direction == DEBIT)))
        house = journal.balances(s)
        revision = s.execute(text("SELECT version_num FROM alembic_version")).scalar()
    meta = MetaData()
    meta.reflect(db.engine)
    tables = {}
    with db.engine.connect() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            tables[table.name] = [{k: _plain(v) for k, v in row._mapping.items()}
                                  for row in conn.execute(table.select().order_by(*table.primary_key.columns))]
    Path(out).write_text(json.dumps({"revision": revision, "tables": tables, "balances": balances,
                                     "statements": statements, "open_payouts": open_payouts, "house": house},
                                    indent=1, sort_keys=True) + "\n")
    print(f"{out}: revision {revision}, {sum(len(rows) for rows in tables.values())} rows")


if __name__ == "__main__":
    main(sys.argv[1])
