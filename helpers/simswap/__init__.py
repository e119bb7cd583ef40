"""SIM swap providers: when did this phone number last get a new SIM (issue 33)."""
