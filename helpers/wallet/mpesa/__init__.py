"""M-Pesa's side of the wallet: pushed top-ups, Daraja's callbacks and results, the float readings."""
