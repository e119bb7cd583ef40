"""Local stand-ins for the outside world: fake LND, BTCPay, Daraja and LNURL servers that check
every request against the official specs, and a TCP fault proxy."""
