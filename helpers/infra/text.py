"""What people and other servers type: numbers are ASCII digits only.

`str.isdigit` and `int()` also take other scripts' digits (full-width '１', Arabic-Indic '٣'...),
so a number that looks different on a screen would parse to the same value. Every number the
wallet reads from outside goes through here."""

from __future__ import annotations


def is_digits(value: str) -> bool:
    """True when `value` is one or more ASCII digits 0-9 and nothing else."""
    return value.isascii() and value.isdigit()


def parse_digits(value: str, max_digits: int) -> int | None:
    """The number `value` spells in at most `max_digits` ASCII digits, else None."""
    return int(value) if is_digits(value) and len(value) <= max_digits else None
