"""Operators' console sessions that can be ended (a server-side key per operator) and their second
factor (a TOTP secret and the time step of the last code used)

Revision ID: 0011_operator_sessions
Revises: 0010_airtime
Create Date: 2026-12-07 10:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_operator_sessions'
down_revision = '0010_airtime'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing operators have no session key (every cookie issued before is refused: they sign in
    # again) and no second factor (they enrol with `flask operator totp NAME` before signing in).
    with op.batch_alter_table('operators') as batch:
        batch.add_column(sa.Column('session_key', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('totp_secret', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('operators') as batch:
        batch.drop_column('totp_last_step')
        batch.drop_column('totp_secret')
        batch.drop_column('session_key')
