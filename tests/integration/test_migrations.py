"""The Alembic migrations build exactly the schema the models describe, on SQLite and MySQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from models import Base


def test_migrations_match_the_models(app, wallet):
    db = wallet.db
    db.session.remove()
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.migrate()
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []
    assert set(Base.metadata.tables) <= set(inspect(db.engine).get_table_names())
    db.migrate()  # at head already: nothing to do, no error
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.drop_schema()
    db.create_schema()  # leave what the fixture expects


def test_workers_starting_together_migrate_one_at_a_time(tmp_path):
    """gunicorn starts its workers at once on a fresh SQLite file: each migrates at start, and none
    may fail with 'database is locked' (a worker that fails to boot takes the master down)."""
    import subprocess
    import sys

    from tests.servers import ROOT

    url = f"sqlite:///{tmp_path}/fresh.db"
    code = f"from database import Database; Database({url!r}).migrate()"
    workers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE)  # noqa: S603
               for _ in range(6)]
    failures = [err.decode()[-2000:] for worker in workers
                for _out, err in [worker.communicate(timeout=120)] if worker.returncode != 0]
    assert failures == []


def test_the_journal_migration_opens_the_books_with_every_balance_unchanged(app, wallet):
    """A database at 0004 (no journal) with customers' balances and payments in flight: after the
    migration every balance is the same, the journal proves them, and a payment pending from
    before is posted or voided through the journal like any other."""
    from helpers.wallet.ledger import journal
    from helpers.wallet.mpesa import flows as mpesa_flows
    from helpers.wallet.payouts import lightning_out
    from models import LN_IN_FLIGHT, MPESA_IN_FLIGHT, LedgerAccount

    db = wallet.db
    db.session.remove()
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.migrate("0004_outgoing_payments")
    with db.engine.begin() as conn:  # what the code before the journal left behind
        for uid, phone, sats in ((1, "+254712000001", 50_000), (2, "+254712000002", 0)):
            conn.execute(text("INSERT INTO users (id, phone, balance_sats, language, pin_failures, pin_locks, "
                              "created_at) VALUES (:i, :p, :b, 'en', 0, 0, CURRENT_TIMESTAMP)"),
                         {"i": uid, "p": phone, "b": sats})
        for tid, kind, ref, amount, fee, status in ((1, "adjust", "OPEN1", 52_500, 0, "settled"),
                                                    (2, "send", "LNPEND1", 2_000, 10, "pending"),
                                                    (3, "withdraw", "WDPEND1", 480, 10, "pending")):
            direction = "credit" if kind == "adjust" else "debit"
            conn.execute(text("INSERT INTO transactions (id, user_id, type, direction, amount_sats, fee_sats, status, "
                              "reference, payment_hash, created_at) VALUES (:i, 1, :t, :d, :a, :f, :s, :r, :h, "
                              "CURRENT_TIMESTAMP)"),
                         {"i": tid, "t": kind, "d": direction, "a": amount, "f": fee, "s": status, "r": ref,
                          "h": "ab" * 32 if kind == "send" else None})
    db.migrate()
    with db.read() as s:
        assert journal.check(s) == []
        assert s.get(LedgerAccount, LN_IN_FLIGHT).balance_sats == -2_010
        assert s.get(LedgerAccount, MPESA_IN_FLIGHT).balance_sats == -490
        assert dict(s.execute(text("SELECT id, balance_sats FROM users")).all()) == {1: 50_000, 2: 0}
        # the row from before the journal stays as history (0016), though the opening entry shares its reference
        assert s.execute(text("SELECT kind, amount_sats FROM transactions WHERE id = 1")).one() == (
            "before-journal", 52_500)
    assert lightning_out.settle_lightning(db, wallet.rail("lightning"), 2, 4) is not None
    assert mpesa_flows.refund_withdrawal(db, 3)
    with db.read() as s:
        assert journal.check(s) == []
        assert s.get(LedgerAccount, LN_IN_FLIGHT).balance_sats == 0
        assert s.get(LedgerAccount, MPESA_IN_FLIGHT).balance_sats == 0
        assert dict(s.execute(text("SELECT id, balance_sats FROM users")).all()) == {1: 50_000 + 6 + 490, 2: 0}
    db.session.remove()
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.create_schema()  # leave what the fixture expects
    from helpers.wallet import demo

    demo.seed_demo(db)


def test_a_pin_from_before_0017_counts_as_set_when_the_account_was_made(app, wallet):
    """0018: customers with a PIN and no pin_set_at get their account's creation time; a number
    that never set a PIN keeps none (its received sats may go back, unclaimed)."""
    db = wallet.db
    db.session.remove()
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.migrate("0017_sim_swap")
    with db.engine.begin() as conn:
        for uid, phone, pin in ((1, "+254712000001", "scrypt$x"), (2, "+254712000002", None)):
            conn.execute(text("INSERT INTO users (id, phone, balance_sats, language, pin_hash, pin_failures, "
                              "pin_locks, created_at) VALUES (:i, :p, 0, 'en', :h, 0, 0, '2025-01-02 03:04:05')"),
                         {"i": uid, "p": phone, "h": pin})
    db.migrate()
    with db.engine.connect() as conn:
        found = dict(conn.execute(text("SELECT id, pin_set_at FROM users")).all())
    assert str(found[1])[:19] == "2025-01-02 03:04:05" and found[2] is None
    db.session.remove()
    db.drop_schema()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.create_schema()  # leave what the fixture expects
    from helpers.wallet import demo

    demo.seed_demo(db)
