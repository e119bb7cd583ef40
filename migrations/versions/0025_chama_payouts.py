"""Chama: payouts in KES to M-Pesa or a till; what a leaver did not get back

Revision ID: 0025_chama_payouts
Revises: 0024_standing_order_kinds
Create Date: 2026-12-07 07:00:00.000000

chama_proposals: the KES, the price, the fee fixed when proposed, and the payout's reference.
chama_members.forfeited_sats: what a member who left kept in the group (not counted again if they
come back). Each group's leave rule (chamas.leave_refund_pct) is stored since 0023 with the then
global default, so existing groups keep it: nothing to backfill there.
"""

from alembic import op
import sqlalchemy as sa


revision = '0025_chama_payouts'
down_revision = '0024_standing_order_kinds'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('chama_proposals') as batch:
        batch.add_column(sa.Column('amount_kes', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('kes_per_btc', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('fee_sats', sa.BigInteger(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('payout_ref', sa.String(length=16), nullable=True))
    with op.batch_alter_table('chama_proposals') as batch:
        batch.alter_column('fee_sats', server_default=None, existing_type=sa.BigInteger(), existing_nullable=False)
    with op.batch_alter_table('chama_members') as batch:
        batch.add_column(sa.Column('forfeited_sats', sa.BigInteger(), nullable=False, server_default='0'))
    with op.batch_alter_table('chama_members') as batch:
        batch.alter_column('forfeited_sats', server_default=None, existing_type=sa.BigInteger(),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('chama_members') as batch:
        batch.drop_column('forfeited_sats')
    with op.batch_alter_table('chama_proposals') as batch:
        batch.drop_column('payout_ref')
        batch.drop_column('fee_sats')
        batch.drop_column('kes_per_btc')
        batch.drop_column('amount_kes')
