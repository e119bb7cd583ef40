"""The journal's entries become the transactions rows: one record of money

Revision ID: 0016_entries_are_transactions
Revises: 0015_lightning_payouts
Create Date: 2026-12-07 01:00:00.000000

`transactions` gains the entry's columns (kind, follows_id, memo) and every journal entry becomes
one transactions row: the movement row it was written for (its first entry), or a new row for an
entry that posts or voids a pending one (status `post` or `void`, `follows_id` the movement) and
for an entry with no movement (the opening balances of 0005). Postings move to the rows their
entries became, and `journal_entries` is dropped. A movement's second row (the recipient's side
of a transfer or of a paid request, which had no entry: the one entry's postings already say it)
is deleted (a credit row with no entry, of the customer a transfer or paid request with its
reference credits); rows from before the journal (0005 opened the books with one entry per
balance) stay as history, kind `before-journal`, with no postings. Balances, postings and
statements are unchanged. From now on a movement is posted or voided once (a unique index on
follows_id), and the database refuses an UPDATE of a movement's money columns and any DELETE
(triggers), as it refuses edits of postings.

Stop the web and worker processes for this upgrade, and take a backup: it cannot be undone (a
minute per few hundred thousand movements: it places the entries one by one).
"""

from alembic import op
import sqlalchemy as sa


revision = '0016_entries_are_transactions'
down_revision = '0015_lightning_payouts'
branch_labels = None
depends_on = None

BEFORE_JOURNAL = "before-journal"
_FIXED = ("user_id", "type", "kind", "direction", "amount_sats", "reference", "follows_id")
_MESSAGE = "a movement is never edited or deleted: post or void it"


def _fixed_movements(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [f"CREATE TRIGGER transactions_money_fixed BEFORE UPDATE OF {', '.join(_FIXED)} "
                f"ON transactions BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END",
                f"CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions "
                f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"]
    changed = " OR ".join(f"NOT (NEW.{c} <=> OLD.{c})" for c in _FIXED)
    return [f"CREATE TRIGGER transactions_money_fixed BEFORE UPDATE ON transactions FOR EACH ROW "  # noqa: S608
            f"BEGIN IF {changed} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{_MESSAGE}'; END IF; END",
            f"CREATE TRIGGER transactions_no_delete BEFORE DELETE ON transactions FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{_MESSAGE}'"]


def _append_only(table: str, dialect: str) -> list[str]:  # as 0005's
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {table}_no_{o} BEFORE {o.upper()} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END" for o in ("update", "delete")]
    return [f"CREATE TRIGGER {table}_no_{o} BEFORE {o.upper()} ON {table} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{table} are append-only'" for o in ("update", "delete")]


def _add_entry_columns(dialect: str) -> None:
    if dialect == "sqlite":  # ADD COLUMN, not a copy of the table other tables' keys point at
        op.execute("ALTER TABLE transactions ADD COLUMN kind VARCHAR(24) NOT NULL DEFAULT ''")
        op.execute("ALTER TABLE transactions ADD COLUMN memo VARCHAR(255) NOT NULL DEFAULT ''")
        op.execute("ALTER TABLE transactions ADD COLUMN follows_id INTEGER REFERENCES transactions (id)")
    else:
        op.add_column('transactions', sa.Column('kind', sa.String(length=24), nullable=False, server_default=''))
        op.add_column('transactions', sa.Column('memo', sa.String(length=255), nullable=False, server_default=''))
        op.add_column('transactions', sa.Column('follows_id', sa.Integer(), nullable=True))
    # unique: a pending movement is posted or voided by one entry, never two (NULLs do not collide)
    op.create_index('ix_transactions_follows_id', 'transactions', ['follows_id'], unique=True)
    if dialect != "sqlite":
        op.create_foreign_key('fk_transactions_follows', 'transactions', 'transactions', ['follows_id'], ['id'])


def _entries_to_rows(bind) -> dict[int, int]:
    """Each journal entry's row in transactions: {entry id: transactions id}."""
    movements = {row.id: row for row in bind.execute(sa.text(
        "SELECT id, user_id, type, direction FROM transactions"))}
    legs: dict[int, list[tuple[int | None, int]]] = {}
    for entry_id, user_id, amount in bind.execute(sa.text("SELECT entry_id, user_id, amount_sats FROM postings")):
        legs.setdefault(entry_id, []).append((user_id, int(amount)))
    rows: dict[int, int] = {}
    claimed: set[int] = set()
    entries = bind.execute(sa.text("SELECT id, kind, reference, transaction_id, follows_id, memo, created_at "
                                   "FROM journal_entries ORDER BY id")).all()
    for entry in entries:
        kind, memo = entry.kind[:24], (entry.memo or "")[:255]
        if entry.transaction_id is not None and entry.transaction_id not in claimed and entry.follows_id is None:
            bind.execute(sa.text("UPDATE transactions SET kind = :k, memo = :m WHERE id = :i"),
                         {"k": kind, "m": memo, "i": entry.transaction_id})
            rows[entry.id] = entry.transaction_id
            claimed.add(entry.transaction_id)
            continue
        movement = movements.get(entry.transaction_id) if entry.transaction_id is not None else None
        customers = [(user_id, amount) for user_id, amount in legs.get(entry.id, []) if user_id is not None]
        if movement is not None:
            user_id, kind_of, direction = movement.user_id, movement.type, movement.direction
        elif customers:  # an opening balance: the customer's credit
            user_id, kind_of, direction = customers[0][0], "opening", "credit" if customers[0][1] < 0 else "debit"
        else:
            raise RuntimeError(f"journal entry {entry.id} has neither a movement nor a customer: cannot place it")
        follows = rows.get(entry.follows_id) if entry.follows_id is not None else None
        if follows is None and entry.transaction_id in claimed and kind.endswith(("-post", "-void")):
            follows = entry.transaction_id  # a post or void written before `follows` was kept
        status = ("post" if kind.endswith("-post") else "void" if kind.endswith("-void") else "settled") \
            if follows is not None else "settled"
        size = sum(amount for _user, amount in legs.get(entry.id, []) if amount > 0) or 1
        new_id = bind.execute(sa.text(
            "INSERT INTO transactions (user_id, type, kind, direction, amount_sats, fee_sats, status, reference, "
            "follows_id, memo, created_at, settled_at) VALUES (:u, :t, :k, :d, :a, 0, :s, :r, :f, :m, :c, :c)"),
            {"u": user_id, "t": kind_of, "k": kind, "d": direction, "a": size, "s": status,
             "r": entry.reference[:16], "f": follows, "m": memo, "c": entry.created_at}).lastrowid
        rows[entry.id] = new_id
    return rows


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    for table in ("journal_entries", "postings"):
        for o in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{o}")
    _add_entry_columns(dialect)
    rows = _entries_to_rows(bind)
    # The postings, moved to their entries' rows: copied aside, the table made again with its key
    # on transactions, copied back.
    entry_map = op.create_table('entry_map', sa.Column('entry_id', sa.Integer(), primary_key=True, autoincrement=False),
                                sa.Column('row_id', sa.Integer(), nullable=False))
    op.bulk_insert(entry_map, [{"entry_id": e, "row_id": r} for e, r in rows.items()])
    op.create_table('postings_moved', sa.Column('id', sa.Integer(), primary_key=True, autoincrement=False),
                    sa.Column('entry_id', sa.Integer(), nullable=False), sa.Column('user_id', sa.Integer()),
                    sa.Column('account', sa.String(length=32)),
                    sa.Column('amount_sats', sa.BigInteger(), nullable=False))
    op.execute("INSERT INTO postings_moved (id, entry_id, user_id, account, amount_sats) "
               "SELECT p.id, m.row_id, p.user_id, p.account, p.amount_sats FROM postings p "
               "JOIN entry_map m ON m.entry_id = p.entry_id")
    op.drop_table('postings')  # and its indexes (InnoDB refuses to drop one a foreign key needs first)
    op.create_table('postings',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('account', sa.String(length=32), nullable=True),
    sa.Column('amount_sats', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('(user_id IS NULL) <> (account IS NULL)', name='ck_postings_one_account'),
    sa.ForeignKeyConstraint(['account'], ['ledger_accounts.code'], ),
    sa.ForeignKeyConstraint(['entry_id'], ['transactions.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute("INSERT INTO postings (id, entry_id, user_id, account, amount_sats) "
               "SELECT id, entry_id, user_id, account, amount_sats FROM postings_moved ORDER BY id")
    op.drop_table('postings_moved')
    op.drop_table('entry_map')
    op.create_index('ix_postings_entry_id', 'postings', ['entry_id'], unique=False)
    op.create_index('ix_postings_user', 'postings', ['user_id'], unique=False)
    op.create_index('ix_postings_account', 'postings', ['account'], unique=False)
    op.drop_table('journal_entries')
    # A movement's second side goes: a credit row with no entry of its own, the same reference as a
    # transfer or paid request, whose customer that entry credits. Rows from before the journal stay
    # as history.
    placed = set(rows.values())
    credited = {(entry_id, user_id) for entry_id, user_id in bind.execute(sa.text(
        "SELECT entry_id, user_id FROM postings WHERE user_id IS NOT NULL AND amount_sats < 0"))}
    between_customers = {reference: row_id for row_id, reference in bind.execute(sa.text(
        "SELECT id, reference FROM transactions WHERE kind IN ('transfer', 'request-paid')"))}
    second_sides = history = 0
    for row_id, reference, user_id, direction in bind.execute(sa.text(
            "SELECT id, reference, user_id, direction FROM transactions WHERE kind = ''")).all():
        if row_id in placed:
            continue
        entry_id = between_customers.get(reference)
        if direction == "credit" and entry_id is not None and (entry_id, user_id) in credited:
            bind.execute(sa.text("DELETE FROM transactions WHERE id = :i"), {"i": row_id})
            second_sides += 1
        else:
            bind.execute(sa.text("UPDATE transactions SET kind = :k WHERE id = :i"),
                         {"k": BEFORE_JOURNAL, "i": row_id})
            history += 1
    print(f"0016: {len(rows)} entries placed, {second_sides} second sides deleted, {history} rows kept as history")
    if dialect != "sqlite":
        for column in ('kind', 'memo'):
            op.alter_column('transactions', column, server_default=None, existing_nullable=False,
                            existing_type=sa.String(length=24 if column == 'kind' else 255))
    for statement in _append_only("postings", dialect) + _fixed_movements(dialect):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("0016 merged the journal's entries into transactions and deleted each movement's "
                              "second side: restore the backup taken before the upgrade (README, Upgrading)")
