"""Airtime: requests to Africa's Talking's Airtime API and the two house accounts it moves

Revision ID: 0010_airtime
Revises: 0009_jobs
Create Date: 2026-12-06 04:50:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0010_airtime'
down_revision = '0009_jobs'
branch_labels = None
depends_on = None

# models.AIRTIME_FLOAT (asset) and models.AIRTIME_IN_FLIGHT (liability), as they were when written
ACCOUNTS = {"airtime-float": "asset", "airtime-in-flight": "liability"}


def upgrade() -> None:
    op.create_table('airtime_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('transaction_id', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('amount_kes', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('result_desc', sa.String(length=255), nullable=True),
    sa.Column('queries', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reference'),
    sa.UniqueConstraint('request_id'),
    sa.UniqueConstraint('transaction_id')
    )
    op.create_index('ix_airtime_requests_status', 'airtime_requests', ['status'], unique=False)
    accounts = sa.table('ledger_accounts', sa.column('code', sa.String), sa.column('kind', sa.String),
                        sa.column('balance_sats', sa.BigInteger))
    op.bulk_insert(accounts, [{"code": code, "kind": kind, "balance_sats": 0} for code, kind in ACCOUNTS.items()])


def downgrade() -> None:
    accounts = sa.table('ledger_accounts', sa.column('code', sa.String))
    op.execute(accounts.delete().where(accounts.c.code.in_(list(ACCOUNTS))))
    op.drop_index('ix_airtime_requests_status', table_name='airtime_requests')
    op.drop_table('airtime_requests')
