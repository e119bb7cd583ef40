"""The mock Lightning node's book (LIGHTNING_BACKEND=mock): its invoices and payments in the
database, so that every worker process is one node

Revision ID: 0012_mock_node
Revises: 0011_operator_sessions
Create Date: 2026-12-07 10:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0012_mock_node'
down_revision = '0011_operator_sessions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mock_node_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('payment_hash', sa.String(length=64), nullable=False),
    sa.Column('amount_sats', sa.BigInteger(), nullable=False),
    sa.Column('fee_sats', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('bolt11', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=True),
    sa.Column('preimage', sa.String(length=64), nullable=True),
    sa.Column('error', sa.String(length=255), nullable=True),
    sa.Column('balance_change_sats', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'payment_hash', name='uq_mock_node_entries_kind_hash')
    )


def downgrade() -> None:
    op.drop_table('mock_node_entries')
