"""M-Pesa payouts (B2C withdrawals, B2B tills and paybills) move from mpesa_requests into payouts

Revision ID: 0014_mpesa_payouts
Revises: 0013_payouts
Create Date: 2026-12-06 23:00:00.000000

payouts gains rail_ref (Daraja's ConversationID beside the OriginatorConversationID, its rail_key)
and last_query_at. Each b2c/b2b row of mpesa_requests becomes a payouts row of rail 'mpesa-b2c' or
'mpesa-b2b' with its reference, owner, reservation, ids, receipt and queries: pending with an id
from Daraja -> sent, without -> reserved (a B2C's originator id is ours from the start, so only a
ConversationID counts as Daraja's answer), settled -> posted, failed -> voided (by the movement's
status where the two disagree). The worker's jobs
about them (kind 'mpesa') become 'payout' jobs. mpesa_requests keeps the STK pushes.

Stop the web and worker processes for this upgrade (seconds).
"""

from alembic import op
import sqlalchemy as sa


revision = '0014_mpesa_payouts'
down_revision = '0013_payouts'
branch_labels = None
depends_on = None

_JOBS = sa.table('jobs', sa.column('kind', sa.String), sa.column('key', sa.String))


def upgrade() -> None:
    with op.batch_alter_table('payouts') as batch:
        batch.add_column(sa.Column('rail_ref', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('last_query_at', sa.DateTime(), nullable=True))
    op.execute("""
        INSERT INTO payouts (reference, rail, user_id, transaction_id, destination, amount_sats, fee_sats,
                             amount_kes, state, rail_key, rail_ref, receipt, result_desc, queries, last_query_at,
                             created_at, finished_at)
        SELECT m.reference, CASE WHEN m.kind = 'b2c' THEN 'mpesa-b2c' ELSE 'mpesa-b2b' END, m.user_id, m.transaction_id,
               CASE WHEN m.kind = 'b2c' THEN m.phone ELSE COALESCE(t.counterparty, m.phone) END,
               t.amount_sats, t.fee_sats, m.amount_kes,
               CASE WHEN t.status = 'settled' THEN 'posted'
                    WHEN t.status = 'failed' THEN 'voided'
                    WHEN m.conversation_id IS NOT NULL THEN 'sent'
                    WHEN m.kind = 'b2b' AND m.originator_conversation_id IS NOT NULL THEN 'sent'
                    ELSE 'reserved' END,
               m.originator_conversation_id, m.conversation_id, m.receipt, m.result_desc, m.queries,
               m.last_query_at, m.created_at, m.finished_at
        FROM mpesa_requests m JOIN transactions t ON t.id = m.transaction_id
        WHERE m.kind IN ('b2c', 'b2b')
        ORDER BY m.id""")
    requests = sa.table('mpesa_requests', sa.column('kind', sa.String), sa.column('reference', sa.String))
    op.execute(_JOBS.update()
               .where(_JOBS.c.kind == 'mpesa',
                      _JOBS.c.key.in_(sa.select(requests.c.reference).where(requests.c.kind.in_(['b2c', 'b2b']))))
               .values(kind='payout'))  # core, not text: `key` is a reserved word on MySQL
    # only the rows copied: one whose movement is missing stays, for people to read
    op.execute("DELETE FROM mpesa_requests WHERE kind IN ('b2c', 'b2b') "
               "AND reference IN (SELECT reference FROM payouts)")


def downgrade() -> None:
    op.execute("""
        INSERT INTO mpesa_requests (kind, reference, user_id, transaction_id, phone, amount_kes, amount_sats,
                                    status, originator_conversation_id, conversation_id, receipt, result_desc,
                                    queries, last_query_at, created_at, finished_at)
        SELECT CASE WHEN p.rail = 'mpesa-b2c' THEN 'b2c' ELSE 'b2b' END, p.reference, p.user_id,
               p.transaction_id, CASE WHEN p.rail = 'mpesa-b2c' THEN p.destination ELSE u.phone END,
               COALESCE(p.amount_kes, 0), p.amount_sats,
               CASE WHEN p.state = 'posted' THEN 'settled' WHEN p.state = 'voided' THEN 'failed' ELSE 'pending' END,
               p.rail_key, p.rail_ref, p.receipt, p.result_desc, p.queries, p.last_query_at, p.created_at,
               p.finished_at
        FROM payouts p JOIN users u ON u.id = p.user_id
        WHERE p.rail IN ('mpesa-b2c', 'mpesa-b2b') ORDER BY p.id""")
    payouts = sa.table('payouts', sa.column('rail', sa.String), sa.column('reference', sa.String))
    op.execute(_JOBS.update()
               .where(_JOBS.c.kind == 'payout',
                      _JOBS.c.key.in_(sa.select(payouts.c.reference)
                                      .where(payouts.c.rail.in_(['mpesa-b2c', 'mpesa-b2b']))))
               .values(kind='mpesa'))
    op.execute("DELETE FROM payouts WHERE rail IN ('mpesa-b2c', 'mpesa-b2b')")
    with op.batch_alter_table('payouts') as batch:
        batch.drop_column('last_query_at')
        batch.drop_column('rail_ref')
