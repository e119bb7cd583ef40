"""Operators of the console and the audit log of what they do (append-only)

Revision ID: 0008_operators_and_audit
Revises: 0007_prices_and_quotes
Create Date: 2026-12-06 03:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0008_operators_and_audit'
down_revision = '0007_prices_and_quotes'
branch_labels = None
depends_on = None


def _append_only(table: str, dialect: str) -> list[str]:  # as 0005's, for the journal
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {table}_no_{o} BEFORE {o.upper()} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END" for o in ("update", "delete")]
    return [f"CREATE TRIGGER {table}_no_{o} BEFORE {o.upper()} ON {table} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{table} are append-only'" for o in ("update", "delete")]


def upgrade() -> None:
    op.create_table('operators',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.Column('last_login_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('detail', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_audit_log_created_at'), 'audit_log', ['created_at'], unique=False)
    for statement in _append_only('audit_log', op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    op.drop_index(op.f('ix_audit_log_created_at'), table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_table('operators')
