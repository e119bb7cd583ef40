"""Payments out of the wallet, one way for every rail (helpers/infra/rail.py).

`books`: the three verbs, each one journal entry in the caller's transaction together with the
payout row's move: reserve (the customer's sats to the rail's in-flight account), post (paid: on
to what paid it, our fee to income) and void (failed: back to the customer).
`machine`: a payout's life around its rail: sent, answered, queried by the worker, told by a
callback, resolved by an operator; each final word acts once.
"""
