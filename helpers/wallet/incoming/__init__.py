"""Money coming in by Lightning: invoices and LNURL."""
