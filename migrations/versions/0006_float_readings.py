"""M-Pesa float readings: Daraja's Account Balance answers, beside the books' recorded float

Revision ID: 0006_float_readings
Revises: 0005_journal
Create Date: 2026-12-06 02:45:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0006_float_readings'
down_revision = '0005_journal'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('float_readings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('available_cents', sa.BigInteger(), nullable=True),
    sa.Column('accounts', sa.String(length=1000), nullable=True),
    sa.Column('result_desc', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reference')
    )


def downgrade() -> None:
    op.drop_table('float_readings')
