"""Customers: accounts, PINs, limits on what they may do, the demo accounts."""
