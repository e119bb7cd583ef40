"""Data protection and the travel rule (issue 34): privacy_requests, payouts' originator

Revision ID: 0021_privacy
Revises: 0020_aml
Create Date: 2026-12-07 05:00:00.000000

`privacy_requests` registers every data-protection request (export, name correction, erasure)
with its date and outcome, and the worker's pseudonymisation of erased customers' money records
after the retention period. A payout to another custodian keeps its sender's phone and name
(payouts.originator_phone, originator_name): what the travel rule asks of a VASP-to-VASP transfer.

"""

from alembic import op
import sqlalchemy as sa


revision = '0021_privacy'
down_revision = '0020_aml'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'privacy_requests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('subject', sa.String(length=20), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('requested_at', sa.DateTime(), nullable=False),
        sa.Column('done_at', sa.DateTime(), nullable=True),
        sa.Column('outcome', sa.String(length=255), nullable=False),
        sa.Column('operator', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_privacy_requests_subject', 'privacy_requests', ['subject'], unique=False)
    with op.batch_alter_table('payouts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('originator_phone', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('originator_name', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('payouts', schema=None) as batch_op:
        batch_op.drop_column('originator_name')
        batch_op.drop_column('originator_phone')
    op.drop_index('ix_privacy_requests_subject', table_name='privacy_requests')
    op.drop_table('privacy_requests')
