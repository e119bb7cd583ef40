"""Monitoring (issue 34): aml_cases and phone_guards.aml_hold_case_id

Revision ID: 0020_aml
Revises: 0019_tiers
Create Date: 2026-12-07 05:00:00.000000

A monitoring rule's hit opens a case (one per rule, customer and window: unique); operators' notes
and actions on it are audit lines; they may hold the customer's money out while they look (the
phone's guard row names the case, so the guard reads it with the row it already reads). The rules
read the journal by time over every customer: transactions.created_at gets an index.

"""

from alembic import op
import sqlalchemy as sa


revision = '0020_aml'
down_revision = '0019_tiers'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('aml_cases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('window_key', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('assigned_to', sa.String(length=64), nullable=True),
    sa.Column('suspicious', sa.Boolean(), nullable=False),
    sa.Column('facts', sa.Text(), nullable=False),
    sa.Column('opened_at', sa.DateTime(), nullable=False),
    sa.Column('close_reason', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['phone'], ['users.phone'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('rule', 'phone', 'window_key', name='uq_aml_cases_rule_phone_window')
    )
    with op.batch_alter_table('aml_cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aml_cases_phone'), ['phone'], unique=False)
        batch_op.create_index(batch_op.f('ix_aml_cases_status'), ['status'], unique=False)
    with op.batch_alter_table('phone_guards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('aml_hold_case_id', sa.Integer(), nullable=True))
    # the rules read the journal by time, over every customer
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transactions_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('transactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_transactions_created_at'))
    with op.batch_alter_table('phone_guards', schema=None) as batch_op:
        batch_op.drop_column('aml_hold_case_id')
    with op.batch_alter_table('aml_cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aml_cases_status'))
        batch_op.drop_index(batch_op.f('ix_aml_cases_phone'))
    op.drop_table('aml_cases')
