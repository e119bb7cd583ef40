"""Phone numbers: parse what a person types into E.164, default region Kenya."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
_MAX_INPUT = 20


def normalise(raw: str, region: str = "KE") -> str | None:
    """Return the E.164 form of a valid mobile number of `region`, or None for anything else."""
    raw = (raw or "").strip()
    if not raw or len(raw) > _MAX_INPUT:
        return None
    return _normalise(raw, region)


@lru_cache(maxsize=4096)  # every request parses its caller's number; a pure function of short input
def _normalise(raw: str, region: str) -> str | None:
    if raw[0].isdigit() and raw.startswith("254") and len(raw) == 12:
        raw = "+" + raw  # typed without the plus, as keypads make easy
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        return None
    if phonenumbers.region_code_for_number(number) != region:
        return None  # we serve, and SMS, one country's mobile numbers
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(e164: str) -> str:
    """A phone number fit for logs: +2547****5678."""
    if len(e164) < 8:
        return "****"
    return e164[:5] + "****" + e164[-4:]
