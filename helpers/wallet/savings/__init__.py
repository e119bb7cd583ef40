"""Savings goals and standing orders (issue 35)."""
