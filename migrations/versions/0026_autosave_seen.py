"""Auto-save considers each receipt once (issue 35): the receipts each goal has considered

Revision ID: 0026_autosave_seen
Revises: 0025_chama_payouts
Create Date: 2026-12-07 07:00:00.000000

savings_goals.autosave_seen_id was a high-water mark of swept entry ids; ids are handed out at
insert and committed in any order, so a receipt committed after a later one was swept was never
saved from. Each considered receipt is now a row (goal, entry); the column stays as the floor (the
newest entry when auto-save was switched on).
"""

from alembic import op
import sqlalchemy as sa


revision = '0026_autosave_seen'
down_revision = '0025_chama_payouts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'savings_autosave_seen',
        sa.Column('goal_id', sa.Integer(), nullable=False),
        sa.Column('entry_id', sa.Integer(), nullable=False),
        sa.Column('share_sats', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['goal_id'], ['savings_goals.id']),
        sa.ForeignKeyConstraint(['entry_id'], ['transactions.id']),
        sa.PrimaryKeyConstraint('goal_id', 'entry_id'),
    )


def downgrade() -> None:
    op.drop_table('savings_autosave_seen')
