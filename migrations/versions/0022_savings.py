"""Savings goals and standing orders (issue 35)

Revision ID: 0022_savings
Revises: 0021_privacy
Create Date: 2026-12-07 05:00:00.000000

A savings goal is a ledger sub-account of the new house account `savings` (a liability: owed to
customers): its postings carry its goal_id (postings.goal_id, added in place: the append-only
postings table keeps its triggers), savings_goals.balance_sats is their cache. A standing order
is a payment the worker makes each period for a customer who set it up with the PIN.

"""

from alembic import op
import sqlalchemy as sa


revision = '0022_savings'
down_revision = '0021_privacy'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'savings_goals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=20), nullable=False),
        sa.Column('target_sats', sa.BigInteger(), nullable=True),
        sa.Column('target_kes', sa.BigInteger(), nullable=True),
        sa.Column('lock_until', sa.DateTime(), nullable=False),
        sa.Column('balance_sats', sa.BigInteger(), nullable=False),
        sa.Column('autosave_bps', sa.Integer(), nullable=False),
        sa.Column('autosave_seen_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=8), nullable=False),
        sa.Column('open_key', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('closed_at', sa.DateTime(), nullable=True),
        sa.CheckConstraint('balance_sats >= 0', name='ck_savings_goals_balance'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('open_key'),
    )
    op.create_index('ix_savings_goals_user', 'savings_goals', ['user_id'])
    op.create_index('ix_savings_goals_due', 'savings_goals', ['status', 'lock_until'])
    op.create_table(
        'standing_orders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('destination', sa.String(length=64), nullable=False),
        sa.Column('amount_sats', sa.BigInteger(), nullable=False),
        sa.Column('period', sa.String(length=8), nullable=False),
        sa.Column('next_run_at', sa.DateTime(), nullable=False),
        sa.Column('cap_sats', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('runs', sa.Integer(), nullable=False),
        sa.Column('skips', sa.Integer(), nullable=False),
        sa.Column('setup_key', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('cancelled_at', sa.DateTime(), nullable=True),
        sa.CheckConstraint('amount_sats > 0', name='ck_standing_orders_amount'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('setup_key'),
    )
    op.create_index('ix_standing_orders_user', 'standing_orders', ['user_id'])
    op.create_index('ix_standing_orders_due', 'standing_orders', ['status', 'next_run_at'])
    # A plain ADD COLUMN (not a batch copy): the postings table and its triggers stay as they are.
    op.add_column('postings', sa.Column('goal_id', sa.Integer(), nullable=True))
    op.create_index(op.f('ix_postings_goal_id'), 'postings', ['goal_id'])
    op.execute("INSERT INTO ledger_accounts (code, kind, balance_sats) VALUES ('savings', 'liability', 0)")


def downgrade() -> None:
    op.execute("DELETE FROM ledger_accounts WHERE code = 'savings' AND balance_sats = 0")
    op.drop_index(op.f('ix_postings_goal_id'), table_name='postings')
    with op.batch_alter_table('postings', schema=None) as batch_op:
        batch_op.drop_column('goal_id')
    op.drop_index('ix_standing_orders_due', table_name='standing_orders')
    op.drop_index('ix_standing_orders_user', table_name='standing_orders')
    op.drop_table('standing_orders')
    op.drop_index('ix_savings_goals_due', table_name='savings_goals')
    op.drop_index('ix_savings_goals_user', table_name='savings_goals')
    op.drop_table('savings_goals')
