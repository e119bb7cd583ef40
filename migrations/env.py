"""Alembic environment: the database comes from DATABASE_URL (as the app reads it), or from a
connection handed in by the caller (tests, `migrate()` in database.py)."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from dotenv import load_dotenv
from sqlalchemy import create_engine

from models import Base
import helpers.wallet.aml.tables  # noqa: F401,E402 - tables kept beside their code join the metadata
import helpers.wallet.privacy_tables  # noqa: F401,E402
import helpers.wallet.ledger.savings_tables  # noqa: F401,E402 - the savings tables join Base.metadata
import helpers.wallet.chama.tables  # noqa: F401,E402 - its tables are on Base too

config = context.config
if config.config_file_name and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name)
target_metadata = Base.metadata


def _url() -> str:
    load_dotenv()
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set: say which database to migrate")
    return url


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
