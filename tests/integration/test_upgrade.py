"""A database filled by an older commit's code (tests/upgrade/make_old_flows.py: transfers, a
top-up, airtime delivered, refused, accepted and unanswered, M-Pesa payouts pending and failed, a
Lightning payment in flight) is upgraded to the head revision: every balance, statement line,
open payout and house balance is what the old code said, the books check clean, and the payouts
the old code left open are finished by the new code like any other. On SQLite and MariaDB."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import DateTime, MetaData, select, text

from helpers.infra.rail import Answer
from helpers.wallet.ledger import journal
from helpers.wallet.payouts import machine as payouts
from helpers.web import worker
from models import (AIRTIME_RAIL, DEBIT, LIGHTNING_RAIL, MPESA_B2B_RAIL, MPESA_B2C_RAIL, OPEN_PAYOUT, PENDING, Job,
                    MpesaRequest,
                    Payout, Transaction, User)

FIXTURES = sorted((Path(__file__).parent.parent / "upgrade").glob("old_flows_*.json"))


def _load(db, fixture: dict) -> None:
    """The old rows, into a schema at the old revision."""
    db.session.remove()
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.migrate(fixture["revision"])
    meta = MetaData()
    meta.reflect(db.engine)
    with db.engine.begin() as conn:
        conn.execute(meta.tables["ledger_accounts"].delete())  # the migrations' seed: the dump has them
        for table in meta.sorted_tables:
            rows = fixture["tables"].get(table.name) or []
            times = {c.name for c in table.columns if isinstance(c.type, DateTime)}
            if rows:
                conn.execute(table.insert(), [{k: dt.datetime.fromisoformat(v) if k in times and v else v
                                               for k, v in row.items()} for row in rows])


def _restore(db) -> None:
    db.session.remove()
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.create_schema()  # leave what the fixtures of other tests expect
    from helpers.wallet import demo

    demo.seed_demo(db)


@pytest.fixture(params=FIXTURES, ids=[path.stem for path in FIXTURES])
def upgraded(request, app, wallet):
    fixture = json.loads(request.param.read_text())
    _load(wallet.db, fixture)
    wallet.db.migrate()
    yield fixture
    _restore(wallet.db)


def _statements(s, phones) -> dict:
    return {phone: [[line.kind, line.reference, line.amount, line.counterparty, line.pending, line.memo]
                    for line in journal.statement(s, s.scalar(select(User.id).where(User.phone == phone)))]
            for phone in phones}


def test_an_upgrade_keeps_every_balance_statement_line_and_open_payout(upgraded, wallet):
    state_of = {"pending": "sent", "settled": "posted", "failed": "voided"}
    with wallet.db.read() as s:
        assert journal.check(s) == []
        assert {u.phone: u.balance_sats for u in s.scalars(select(User))} == upgraded["balances"]
        assert _statements(s, upgraded["balances"]) == upgraded["statements"]
        # house accounts the old code had keep their balances; accounts added since start empty
        kept = journal.balances(s)
        assert {code: kept[code] for code in upgraded["house"]} == upgraded["house"]
        assert all(kept[code] == 0 for code in set(kept) - set(upgraded["house"]))
        open_movements = sorted([row.reference, row.type, row.amount_sats, row.fee_sats] for row in s.scalars(
            select(Transaction).where(Transaction.status == PENDING, Transaction.direction == DEBIT)))
        assert open_movements == upgraded["open_payouts"]
        # every open airtime and M-Pesa movement is an open payout of the same money (its reference
        # the movement's or, for M-Pesa, the request's); a Lightning payment's is not a payout yet
        open_payouts = {(p.transaction_id, p.amount_sats, p.fee_sats + p.fee_limit_sats) for p in s.scalars(
            select(Payout).where(Payout.state.in_(OPEN_PAYOUT)))}
        movements = {row.reference: row.id for row in s.scalars(select(Transaction))}
        assert open_payouts == {(movements[ref], amount, fee) for ref, kind, amount, fee in upgraded["open_payouts"]
                                if kind in ("airtime", "withdraw", "send")} != set()
        # each Lightning payment out is a payout keyed by its payment hash (held once)
        sends = {row["id"]: row for row in upgraded["tables"]["transactions"]
                 if row["type"] == "send" and row["direction"] == "debit" and row["payment_hash"]}
        assert {p.transaction_id: (p.rail_key, p.rail_ref, p.state) for p in s.scalars(
            select(Payout).where(Payout.rail == LIGHTNING_RAIL))} == {
            tid: (row["payment_hash"] if row["status"] != "failed" else None, row["payment_hash"],
                  state_of[row["status"]]) for tid, row in sends.items()} != {}
        # each old request is a payout with its reference, owner, reservation and the rail's ids
        state = {"settled": "posted", "failed": "voided"}
        old = {row["reference"]: (AIRTIME_RAIL, row["user_id"], row["transaction_id"], row["request_id"], None,
                                  state.get(row["status"], "sent" if row["request_id"] else "reserved"))
               for row in upgraded["tables"].get("airtime_requests", [])}
        old.update({row["reference"]: (MPESA_B2C_RAIL if row["kind"] == "b2c" else MPESA_B2B_RAIL, row["user_id"],
                                       row["transaction_id"], row["originator_conversation_id"],
                                       row["conversation_id"],
                                       state.get(row["status"], "sent" if row["conversation_id"] else "reserved"))
                    for row in upgraded["tables"].get("mpesa_requests", []) if row["kind"] in ("b2c", "b2b")})
        assert {p.reference: (p.rail, p.user_id, p.transaction_id, p.rail_key, p.rail_ref, p.state)
                for p in s.scalars(select(Payout).where(Payout.rail != LIGHTNING_RAIL))} == old
        assert list(s.scalars(select(MpesaRequest.kind).where(MpesaRequest.kind != "stk"))) == []
        # the worker's jobs about them are payout jobs now, and the sweep adds no twin
        old_jobs = {row["key"] for row in upgraded["tables"].get("jobs", [])
                    if row["kind"] == "airtime" or (row["kind"] == "mpesa" and row["key"] in old)}
        assert old_jobs and set(s.scalars(select(Job.key).where(Job.kind == "payout"))) == old_jobs
        assert list(s.scalars(select(Job.key).where(Job.kind.in_(["airtime", "mpesa"])))) == []
    worker.sweep(wallet)
    with wallet.db.read() as s:
        keys = list(s.scalars(select(Job.key).where(Job.kind == "payout")))
        assert sorted(keys) == sorted(set(keys)) and old_jobs <= set(keys)
        assert {p.reference for p in s.scalars(select(Payout).where(Payout.state.in_(OPEN_PAYOUT)))} <= set(keys)


def test_payouts_left_open_by_the_old_code_are_finished_by_the_new(upgraded, wallet):
    """The first open payout of each rail is paid (an M-Pesa one with its receipt), the rest fail:
    each acts once, the failed ones' sats go back, the books check clean."""
    before = payouts.pending(wallet.db)
    assert {p.rail for p in before} >= {AIRTIME_RAIL, MPESA_B2C_RAIL, LIGHTNING_RAIL}
    with wallet.db.read() as s:
        balances = {u.id: u.balance_sats for u in s.scalars(select(User))}
    paid_rails: set[str] = set()
    for n, payout in enumerate(before):
        rail = wallet.rail(payout.rail)
        assert rail is not None
        if payout.rail not in paid_rails:
            paid_rails.add(payout.rail)
            assert payouts.finish(wallet.db, rail, payout.reference, Answer.paid(receipt=f"UPG{n:07d}", reason="late"))
            balances[payout.user_id] += payout.fee_limit_sats  # what the route did not cost (nothing) goes back
            assert not payouts.finish(wallet.db, rail, payout.reference, Answer.failed("again"))
        else:
            assert payouts.finish(wallet.db, rail, payout.reference, Answer.failed("late report"))
            balances[payout.user_id] += payout.amount_sats + payout.fee_sats + payout.fee_limit_sats
    with wallet.db.read() as s:
        assert journal.check(s) == []
        assert {u.id: u.balance_sats for u in s.scalars(select(User))} == balances
    assert payouts.pending(wallet.db) == []
