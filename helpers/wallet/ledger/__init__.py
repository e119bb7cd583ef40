"""The record of money: the journal (entries and postings, the one writer of balances) and the
movements between customers and into the wallet."""
