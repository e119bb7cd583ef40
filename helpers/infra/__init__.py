"""Plumbing every layer may use: settings, texts (i18n), phone numbers, digits, references,
metrics, the SMS outbox, write-behind, HTTP calls and the database fast path. It imports only
models.py (and database.py for type hints)."""
