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
        conn.execute(text("DROP TABLE alembic_version"))
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
