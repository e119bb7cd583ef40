"""Adapters to the Lightning rails: node backends (LND, LNbits, BTCPay) found by lightning.py's
registry, the LNURL-pay client for other wallets' addresses, and webhook signatures."""
