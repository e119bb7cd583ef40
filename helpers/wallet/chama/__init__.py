"""Chama (group) wallets: a group's money is a ledger account ("chama:<id>") that only the journal
writes; members contribute, propose payouts and approve them (tables.py, groups.py, proposals.py)."""
