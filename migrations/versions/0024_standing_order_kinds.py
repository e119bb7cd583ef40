"""Standing orders to a Lightning address, a till or a paybill, in sats or KES (issue 35)

Revision ID: 0024_standing_order_kinds
Revises: 0023_chama
Create Date: 2026-12-07 07:00:00.000000

unit: what the customer typed the amount in (sats, or kes: converted at each run's price);
amount_kes: a KES order's amount; account: a paybill's account reference. Existing orders are
sats orders.
"""

from alembic import op
import sqlalchemy as sa


revision = '0024_standing_order_kinds'
down_revision = '0023_chama'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('standing_orders', sa.Column('unit', sa.String(length=4), nullable=False, server_default='sats'))
    op.add_column('standing_orders', sa.Column('amount_kes', sa.BigInteger(), nullable=True))
    op.add_column('standing_orders', sa.Column('account', sa.String(length=13), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('standing_orders', schema=None) as batch_op:
        batch_op.drop_column('account')
        batch_op.drop_column('amount_kes')
        batch_op.drop_column('unit')
