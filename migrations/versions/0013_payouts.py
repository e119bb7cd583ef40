"""One payouts table for every rail: airtime's requests move into it (the other rails follow)

Revision ID: 0013_payouts
Revises: 0012_mock_node
Create Date: 2026-12-06 22:00:00.000000

Each airtime_requests row becomes a payouts row of rail 'airtime' with the same reference,
owner, reservation and ids: pending with AT's requestId -> sent, pending without -> reserved,
settled -> posted, failed -> voided. Amounts come from the reservation's movement row. The
downgrade writes them back. The worker's jobs about them (kind 'airtime') become 'payout' jobs.

Stop the web and worker processes for this upgrade (seconds): code from before it reads
airtime_requests, which it drops.
"""

from alembic import op
import sqlalchemy as sa


revision = '0013_payouts'
down_revision = '0012_mock_node'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('payouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=16), nullable=False),
    sa.Column('rail', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('transaction_id', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=255), nullable=False),
    sa.Column('amount_sats', sa.BigInteger(), nullable=False),
    sa.Column('fee_sats', sa.BigInteger(), nullable=False),
    sa.Column('amount_kes', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('rail_key', sa.String(length=64), nullable=True),
    sa.Column('receipt', sa.String(length=64), nullable=True),
    sa.Column('result_desc', sa.String(length=255), nullable=True),
    sa.Column('queries', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reference'),
    sa.UniqueConstraint('rail', 'rail_key', name='uq_payouts_rail_key'),
    sa.UniqueConstraint('transaction_id')
    )
    op.create_index('ix_payouts_state', 'payouts', ['state'], unique=False)
    op.execute("""
        INSERT INTO payouts (reference, rail, user_id, transaction_id, destination, amount_sats, fee_sats,
                             amount_kes, state, rail_key, receipt, result_desc, queries, created_at, finished_at)
        SELECT a.reference, 'airtime', a.user_id, a.transaction_id, a.phone, t.amount_sats, t.fee_sats,
               a.amount_kes,
               CASE WHEN a.status = 'settled' THEN 'posted'
                    WHEN a.status = 'failed' THEN 'voided'
                    WHEN a.request_id IS NOT NULL THEN 'sent'
                    ELSE 'reserved' END,
               a.request_id, CASE WHEN a.status = 'settled' THEN a.request_id END, a.result_desc, a.queries,
               a.created_at, a.finished_at
        FROM airtime_requests a JOIN transactions t ON t.id = a.transaction_id
        ORDER BY a.id""")
    op.execute("UPDATE jobs SET kind = 'payout' WHERE kind = 'airtime'")
    op.drop_index('ix_airtime_requests_status', table_name='airtime_requests')
    op.drop_table('airtime_requests')


def downgrade() -> None:
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
    op.execute("""
        INSERT INTO airtime_requests (reference, user_id, transaction_id, phone, amount_kes, status, request_id,
                                      result_desc, queries, created_at, finished_at)
        SELECT reference, user_id, transaction_id, destination, COALESCE(amount_kes, 0),
               CASE WHEN state = 'posted' THEN 'settled' WHEN state = 'voided' THEN 'failed' ELSE 'pending' END,
               rail_key, result_desc, queries, created_at, finished_at
        FROM payouts WHERE rail = 'airtime' ORDER BY id""")
    op.execute("UPDATE jobs SET kind = 'airtime' WHERE kind = 'payout'")
    op.drop_index('ix_payouts_state', table_name='payouts')
    op.drop_table('payouts')
