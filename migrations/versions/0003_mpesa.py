"""M-Pesa requests (Daraja STK pushes and B2C payments)

Revision ID: 0003_mpesa
Revises: 0002
Create Date: 2026-11-23 03:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0003_mpesa'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mpesa_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('reference', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('transaction_id', sa.Integer(), nullable=True),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('amount_kes', sa.BigInteger(), nullable=False),
    sa.Column('amount_sats', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('merchant_request_id', sa.String(length=64), nullable=True),
    sa.Column('checkout_request_id', sa.String(length=64), nullable=True),
    sa.Column('originator_conversation_id', sa.String(length=64), nullable=True),
    sa.Column('conversation_id', sa.String(length=64), nullable=True),
    sa.Column('receipt', sa.String(length=32), nullable=True),
    sa.Column('result_code', sa.String(length=16), nullable=True),
    sa.Column('result_desc', sa.String(length=255), nullable=True),
    sa.Column('idempotency_key', sa.String(length=64), nullable=True),
    sa.Column('queries', sa.Integer(), nullable=False),
    sa.Column('last_query_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('checkout_request_id'),
    sa.UniqueConstraint('idempotency_key'),
    sa.UniqueConstraint('originator_conversation_id'),
    sa.UniqueConstraint('reference'),
    sa.UniqueConstraint('transaction_id')
    )
    with op.batch_alter_table('mpesa_requests', schema=None) as batch_op:
        batch_op.create_index('ix_mpesa_requests_status_kind', ['status', 'kind'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mpesa_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_mpesa_requests_status_kind')

    op.drop_table('mpesa_requests')
