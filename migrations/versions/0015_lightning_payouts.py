"""Lightning payments out become payouts; outgoing_payments' guard becomes UNIQUE(rail, rail_key)

Revision ID: 0015_lightning_payouts
Revises: 0014_mpesa_payouts
Create Date: 2026-12-06 23:30:00.000000

payouts gains fee_limit_sats (the most a rail itself may cost, reserved with the payout: a
Lightning route's fee) and its destination becomes TEXT (a Lightning invoice). Each Lightning
payment out (a send debit with a payment hash) becomes a payouts row of rail 'lightning' with the
movement's reference, owner, amount and reserved fee (the fee limit; a settled one's is what it
cost): pending -> sent (the node was asked and has not answered), settled -> posted, failed ->
voided. Its rail key is the payment hash where outgoing_payments held it for this movement, or
where no movement held it and this is the first settled one of that hash (else the first pending one) (one payment
per hash, as before); otherwise NULL (a duplicate from before the guard: refunded, never
settled). rail_ref keeps the hash in every case. The worker's
'payment' jobs are deleted: its sweep gives each open payout a 'payout' job. outgoing_payments
is dropped; the downgrade writes it back from the payouts' keys.

Stop the web and worker processes for this upgrade (seconds).
"""

from alembic import op
import sqlalchemy as sa


revision = '0015_lightning_payouts'
down_revision = '0014_mpesa_payouts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('payouts') as batch:
        batch.add_column(sa.Column('fee_limit_sats', sa.BigInteger(), nullable=False, server_default='0'))
        batch.alter_column('destination', type_=sa.Text(), existing_type=sa.String(length=255),
                           existing_nullable=False)
    with op.batch_alter_table('payouts') as batch:
        batch.alter_column('fee_limit_sats', server_default=None, existing_type=sa.BigInteger(),
                           existing_nullable=False)
    op.execute("""
        INSERT INTO payouts (reference, rail, user_id, transaction_id, destination, amount_sats, fee_sats,
                             fee_limit_sats, amount_kes, state, rail_key, rail_ref, receipt, result_desc, queries,
                             created_at, finished_at)
        SELECT t.reference, 'lightning', t.user_id, t.id, COALESCE(t.counterparty, ''), t.amount_sats, 0,
               t.fee_sats, NULL,
               CASE WHEN t.status = 'settled' THEN 'posted' WHEN t.status = 'failed' THEN 'voided' ELSE 'sent' END,
               CASE WHEN o.payment_hash IS NOT NULL THEN o.payment_hash
                    WHEN t.status IN ('pending', 'settled')
                         AND NOT EXISTS (SELECT 1 FROM outgoing_payments o2 WHERE o2.payment_hash = t.payment_hash)
                         AND t.id = COALESCE(
                             (SELECT MIN(t2.id) FROM transactions t2 WHERE t2.payment_hash = t.payment_hash
                              AND t2.type = 'send' AND t2.direction = 'debit' AND t2.status = 'settled'),
                             (SELECT MIN(t3.id) FROM transactions t3 WHERE t3.payment_hash = t.payment_hash
                              AND t3.type = 'send' AND t3.direction = 'debit' AND t3.status = 'pending'))
                    THEN t.payment_hash END,
               t.payment_hash, NULL, NULL, 0, t.created_at, t.settled_at
        FROM transactions t LEFT JOIN outgoing_payments o ON o.transaction_id = t.id
        WHERE t.type = 'send' AND t.direction = 'debit' AND t.payment_hash IS NOT NULL
        ORDER BY t.id""")
    jobs = sa.table('jobs', sa.column('kind', sa.String))
    op.execute(jobs.delete().where(jobs.c.kind == 'payment'))
    op.drop_table('outgoing_payments')


def downgrade() -> None:
    op.create_table('outgoing_payments',
    sa.Column('payment_hash', sa.String(length=64), nullable=False),
    sa.Column('transaction_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.id'], ),
    sa.PrimaryKeyConstraint('payment_hash'),
    sa.UniqueConstraint('transaction_id')
    )
    op.execute("""
        INSERT INTO outgoing_payments (payment_hash, transaction_id, created_at)
        SELECT rail_key, transaction_id, created_at FROM payouts
        WHERE rail = 'lightning' AND rail_key IS NOT NULL""")
    op.execute("DELETE FROM payouts WHERE rail = 'lightning'")
    with op.batch_alter_table('payouts') as batch:
        batch.alter_column('destination', type_=sa.String(length=255), existing_type=sa.Text(),
                           existing_nullable=False)
        batch.drop_column('fee_limit_sats')
