"""Outgoing payment hashes, reserved once (a payee's reused invoice is never paid twice)

Revision ID: 0004_outgoing_payments
Revises: 0003_mpesa
Create Date: 2026-12-05 15:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0004_outgoing_payments'
down_revision = '0003_mpesa'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outgoing_payments',
    sa.Column('payment_hash', sa.String(length=64), nullable=False),
    sa.Column('transaction_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], ),
    sa.PrimaryKeyConstraint('payment_hash'),
    sa.UniqueConstraint('transaction_id')
    )
    # Payments already pending or settled keep their hash (the oldest row of each, should an
    # earlier version have recorded one twice).
    op.execute(
        "INSERT INTO outgoing_payments (payment_hash, transaction_id, created_at) "
        "SELECT payment_hash, MIN(id), MIN(created_at) FROM transactions "
        "WHERE type = 'send' AND direction = 'debit' AND payment_hash IS NOT NULL "
        "AND status IN ('pending', 'settled') GROUP BY payment_hash"
    )


def downgrade() -> None:
    op.drop_table('outgoing_payments')
