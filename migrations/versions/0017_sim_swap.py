"""SIM swaps and Forgot PIN (issue 33): phone_guards, one row per phone

Revision ID: 0017_sim_swap
Revises: 0016_entries_are_transactions
Create Date: 2026-12-07 12:00:00.000000

Each row holds the phone's last SIM swap as its provider said (the cached answer, the question
still open), an operator's release of the hold a recent swap puts on money out, and a Forgot-PIN
reset under way; and users.pin_set_at (when the PIN was last set: a SIM swap since then, not
cleared by an operator, refuses a self-service reset).

"""

from alembic import op
import sqlalchemy as sa


revision = '0017_sim_swap'
down_revision = '0016_entries_are_transactions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('phone_guards',
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('swap_answer', sa.String(length=16), nullable=False),
    sa.Column('last_swap_at', sa.DateTime(), nullable=True),
    sa.Column('held_swap_at', sa.DateTime(), nullable=True),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('asked_at', sa.DateTime(), nullable=True),
    sa.Column('early_answer', sa.String(length=255), nullable=True),
    sa.Column('next_ask_at', sa.DateTime(), nullable=True),
    sa.Column('cleared_swap_at', sa.DateTime(), nullable=True),
    sa.Column('reset_due_at', sa.DateTime(), nullable=True),
    sa.Column('reset_told_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('phone')
    )
    with op.batch_alter_table('phone_guards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_phone_guards_request_id'), ['request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_phone_guards_reset_due_at'), ['reset_due_at'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pin_set_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('pin_set_at')
    with op.batch_alter_table('phone_guards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_phone_guards_reset_due_at'))
        batch_op.drop_index(batch_op.f('ix_phone_guards_request_id'))
    op.drop_table('phone_guards')
