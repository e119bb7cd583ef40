"""The money: users and PINs, the ledger and transfers, limits, invoices and payment requests,
Lightning payments, M-Pesa flows and callbacks, the policy (atoms.metta), background jobs."""
