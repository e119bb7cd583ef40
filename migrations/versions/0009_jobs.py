"""Jobs: background work claimed by one worker at a time with a lease

Revision ID: 0009_jobs
Revises: 0008_operators_and_audit
Create Date: 2026-12-06 03:05:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0009_jobs'
down_revision = '0008_operators_and_audit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=80), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('leased_by', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('done_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'key', name='uq_jobs_kind_key')
    )
    op.create_index('ix_jobs_due', 'jobs', ['done_at', 'due_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_due', table_name='jobs')
    op.drop_table('jobs')
