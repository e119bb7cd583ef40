"""The Flask side: one blueprint per surface (USSD, provider callbacks, probes, LNURL, simulator,
demo) and the operator CLI (`flask <command>`)."""
