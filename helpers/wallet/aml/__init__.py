"""Monitoring against money laundering (issue 34): rules over the journal (facts.py, decided by
atoms.metta), the cases they open and what operators do with them (cases.py), and the report of a
suspicious case for the Financial Reporting Centre (report.py)."""
