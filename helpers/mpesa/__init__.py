"""Adapters to M-Pesa: the provider interface, the simulated provider and Safaricom's Daraja API.
Flows that move money with them live in helpers/wallet/."""
