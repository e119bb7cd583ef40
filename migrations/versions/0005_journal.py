"""The double-entry journal: house accounts, append-only entries and postings, opening entries

Revision ID: 0005_journal
Revises: 0004_outgoing_payments
Create Date: 2026-12-05 17:30:00.000000

Every customer's balance becomes an opening entry against `opening-balances`; every pending
debit (a Lightning payment or M-Pesa payout in flight) becomes its pending entry against the
in-flight account, so that its later posting or voiding follows it like any other. Balances are
unchanged. The journal's tables refuse UPDATE and DELETE (triggers).
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = '0005_journal'
down_revision = '0004_outgoing_payments'
branch_labels = None
depends_on = None

HOUSE = {"lightning-node": "asset", "mpesa-float": "asset", "lightning-in-flight": "liability",
         "mpesa-in-flight": "liability", "fee-income": "income", "adjustments": "equity",
         "opening-balances": "equity"}


def _append_only(table: str, dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {table}_no_{o} BEFORE {o.upper()} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END" for o in ("update", "delete")]
    return [f"CREATE TRIGGER {table}_no_{o} BEFORE {o.upper()} ON {table} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{table} are append-only'" for o in ("update", "delete")]


def upgrade() -> None:
    accounts = op.create_table('ledger_accounts',
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('balance_sats', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('journal_entries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('reference', sa.String(length=24), nullable=False),
    sa.Column('transaction_id', sa.Integer(), nullable=True),
    sa.Column('follows_id', sa.Integer(), nullable=True),
    sa.Column('memo', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['follows_id'], ['journal_entries.id'], ),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_journal_entries_reference', 'journal_entries', ['reference'], unique=False)
    op.create_index('ix_journal_entries_transaction_id', 'journal_entries', ['transaction_id'], unique=False)
    op.create_table('postings',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('account', sa.String(length=32), nullable=True),
    sa.Column('amount_sats', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('(user_id IS NULL) <> (account IS NULL)', name='ck_postings_one_account'),
    sa.ForeignKeyConstraint(['account'], ['ledger_accounts.code'], ),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entries.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_postings_entry_id', 'postings', ['entry_id'], unique=False)
    op.create_index('ix_postings_user', 'postings', ['user_id'], unique=False)
    op.create_index('ix_postings_account', 'postings', ['account'], unique=False)
    bind = op.get_bind()
    op.bulk_insert(accounts, [{"code": c, "kind": k, "balance_sats": 0} for c, k in HOUSE.items()])
    _opening_entries(bind)
    for table in ("journal_entries", "postings"):
        for statement in _append_only(table, bind.dialect.name):
            op.execute(statement)


def _opening_entries(bind) -> None:
    entries = sa.Table("journal_entries", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                       sa.Column("kind", sa.String), sa.Column("reference", sa.String),
                       sa.Column("transaction_id", sa.Integer), sa.Column("follows_id", sa.Integer),
                       sa.Column("memo", sa.String), sa.Column("created_at", sa.DateTime))
    postings = sa.table("postings", sa.column("entry_id"), sa.column("user_id"), sa.column("account"),
                        sa.column("amount_sats"))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    totals: dict[str, int] = {}

    def entry(kind: str, reference: str, transaction_id, legs) -> None:
        entry_id = bind.execute(entries.insert().values(kind=kind, reference=reference, transaction_id=transaction_id,
                                                        follows_id=None, memo="opening", created_at=now)
                                ).inserted_primary_key[0]
        bind.execute(postings.insert(), [{"entry_id": entry_id, "user_id": u, "account": a, "amount_sats": n}
                                         for u, a, n in legs])
        for _u, a, n in legs:
            if a is not None:
                totals[a] = totals.get(a, 0) + n

    for user_id, balance in bind.execute(sa.text("SELECT id, balance_sats FROM users WHERE balance_sats <> 0")):
        entry("opening", f"OPEN{user_id}"[:24], None,
              [(user_id, None, -balance), (None, "opening-balances", balance)])
    pending = bind.execute(sa.text(
        "SELECT id, type, reference, amount_sats + fee_sats FROM transactions "
        "WHERE status = 'pending' AND direction = 'debit'")).all()
    for tx_id, kind, reference, reserved in pending:
        in_flight, entry_kind = (("mpesa-in-flight", "withdraw-pending") if kind == "withdraw"
                                 else ("lightning-in-flight", "lightning-pending"))
        entry(entry_kind, reference, tx_id, [(None, "opening-balances", reserved), (None, in_flight, -reserved)])
    for code, amount in totals.items():
        bind.execute(sa.text("UPDATE ledger_accounts SET balance_sats = balance_sats + :n WHERE code = :c"),
                     {"n": amount, "c": code})


def downgrade() -> None:
    for table in ("journal_entries", "postings"):
        for o in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{o}")
    op.drop_index('ix_postings_account', table_name='postings')
    op.drop_index('ix_postings_user', table_name='postings')
    op.drop_index('ix_postings_entry_id', table_name='postings')
    op.drop_table('postings')
    op.drop_index('ix_journal_entries_transaction_id', table_name='journal_entries')
    op.drop_index('ix_journal_entries_reference', table_name='journal_entries')
    op.drop_table('journal_entries')
    op.drop_table('ledger_accounts')
