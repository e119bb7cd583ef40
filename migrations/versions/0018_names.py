"""Names before the PIN (issue 33): users.name and users.name_verified_at

Revision ID: 0018_names
Revises: 0017_sim_swap
Create Date: 2026-12-07 04:00:00.000000

A customer may give the name that people who send to their number see on the confirm screen
(as M-Pesa shows a recipient's); once verified it is fixed.

Also: users.pin_set_at of a customer with a PIN from before 0017 is set to when the account was
made (no later than the PIN). A customer whose PIN an operator resets has no PIN for a while; with
pin_set_at set they are never taken for a number that never claimed the sats sent to it (those
go back after unclaimed-return-days), and a SIM swap since then still counts against a reset.

"""

from alembic import op
import sqlalchemy as sa


revision = '0018_names'
down_revision = '0017_sim_swap'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('name_verified_at', sa.DateTime(), nullable=True))
    op.execute("UPDATE users SET pin_set_at = created_at WHERE pin_hash IS NOT NULL AND pin_set_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('name_verified_at')
        batch_op.drop_column('name')
