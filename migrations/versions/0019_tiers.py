"""Identity tiers (issue 34): users.tier, when it was set, the ID number's keyed hash and last
digits, the date of birth

Revision ID: 0019_tiers
Revises: 0018_names
Create Date: 2026-12-07 05:00:00.000000

Every customer starts at tier 0 (the phone only), whose caps (atoms.metta) are far below the one
daily limit there was before: an operator upgrading a live wallet tells customers first (README).

"""

from alembic import op
import sqlalchemy as sa


revision = '0019_tiers'
down_revision = '0018_names'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tier', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('tier_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('id_number_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('id_last_digits', sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column('birth_date', sa.Date(), nullable=True))
    # a unique index, not a constraint: SQLite would rebuild `users` for a constraint, and the rows
    # that name a customer refuse the rebuild's drop
    op.create_index('ix_users_id_number_hash', 'users', ['id_number_hash'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_users_id_number_hash', table_name='users')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('birth_date')
        batch_op.drop_column('id_last_digits')
        batch_op.drop_column('id_number_hash')
        batch_op.drop_column('tier_at')
        batch_op.drop_column('tier')
