"""Tests that start real parts: gunicorn, MariaDB faults, a real LNbits, Chromium; marked slow."""
