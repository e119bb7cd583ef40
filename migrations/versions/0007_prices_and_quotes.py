"""Prices (the feed's reference BTC/KES) and quotes (conversions held for a customer)

Revision ID: 0007_prices_and_quotes
Revises: 0006_float_readings
Create Date: 2026-12-06 02:30:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0007_prices_and_quotes'
down_revision = '0006_float_readings'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kes_per_btc', sa.BigInteger(), nullable=False),
    sa.Column('sources', sa.String(length=255), nullable=False),
    sa.Column('answers', sa.String(length=1000), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_prices_created_at'), 'prices', ['created_at'], unique=False)
    op.create_table('quotes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('kes', sa.BigInteger(), nullable=False),
    sa.Column('sats', sa.BigInteger(), nullable=False),
    sa.Column('fee_sats', sa.BigInteger(), nullable=False),
    sa.Column('kes_per_btc', sa.BigInteger(), nullable=False),
    sa.Column('spread_bps', sa.Integer(), nullable=False),
    sa.Column('price_source', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reference')
    )
    op.create_index(op.f('ix_quotes_expires_at'), 'quotes', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_quotes_expires_at'), table_name='quotes')
    op.drop_table('quotes')
    op.drop_index(op.f('ix_prices_created_at'), table_name='prices')
    op.drop_table('prices')
