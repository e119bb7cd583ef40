"""Chama (group) wallets (issue 35): groups, members, payout proposals, ballots, incoming SMS

Revision ID: 0023_chama
Revises: 0022_savings
Create Date: 2026-12-07 04:10:00.000000

A group's money is a ledger account ("chama:<id>", made with the group); these tables hold who
belongs, what is proposed and who voted. sms_inbox: Africa's Talking's incoming message ids, each
acted on once.
"""

from alembic import op
import sqlalchemy as sa


revision = '0023_chama'
down_revision = '0022_savings'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'chamas',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=20), nullable=False),
        sa.Column('approvals_needed', sa.Integer(), nullable=False),
        sa.Column('leave_refund_pct', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'chama_members',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('chama_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('role', sa.String(length=10), nullable=False),
        sa.Column('status', sa.String(length=8), nullable=False),
        sa.Column('joined_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['chama_id'], ['chamas.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('chama_id', 'user_id', name='uq_chama_members_chama_user'),
    )
    op.create_index('ix_chama_members_user', 'chama_members', ['user_id'], unique=False)
    op.create_table(
        'chama_proposals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('chama_id', sa.Integer(), nullable=False),
        sa.Column('proposer_id', sa.Integer(), nullable=False),
        sa.Column('amount_sats', sa.BigInteger(), nullable=False),
        sa.Column('to_kind', sa.String(length=8), nullable=False),
        sa.Column('to_phone', sa.String(length=20), nullable=False),
        sa.Column('status', sa.String(length=8), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('entry_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['chama_id'], ['chamas.id']),
        sa.ForeignKeyConstraint(['proposer_id'], ['users.id']),
        sa.ForeignKeyConstraint(['entry_id'], ['transactions.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_chama_proposals_status_expires', 'chama_proposals', ['status', 'expires_at'], unique=False)
    op.create_index('ix_chama_proposals_chama', 'chama_proposals', ['chama_id'], unique=False)
    op.create_table(
        'chama_ballots',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=12), nullable=False),
        sa.Column('vote', sa.String(length=4), nullable=True),
        sa.Column('voted_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['proposal_id'], ['chama_proposals.id']),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('proposal_id', 'user_id', name='uq_chama_ballots_proposal_user'),
    )
    op.create_index('ix_chama_ballots_user_code', 'chama_ballots', ['user_id', 'code'], unique=False)
    op.create_table(
        'sms_inbox',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.String(length=64), nullable=False),
        sa.Column('phone', sa.String(length=20), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('message_id'),
    )


def downgrade() -> None:
    op.drop_table('sms_inbox')
    op.drop_index('ix_chama_ballots_user_code', table_name='chama_ballots')
    op.drop_table('chama_ballots')
    op.drop_index('ix_chama_proposals_chama', table_name='chama_proposals')
    op.drop_index('ix_chama_proposals_status_expires', table_name='chama_proposals')
    op.drop_table('chama_proposals')
    op.drop_index('ix_chama_members_user', table_name='chama_members')
    op.drop_table('chama_members')
    op.drop_table('chamas')
