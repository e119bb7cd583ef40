"""Phone numbers: parse what a person types into E.164, default region Kenya."""

from __future__ import annotations

import re

from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumber, PhoneNumberType, carrier

_MOBILE_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
_MAX_INPUT = 20
_TYPED = re.compile(r"[+0-9 ()-]+")


def normalise(raw: str, region: str = "KE") -> str | None:
    """Return the E.164 form of a valid mobile number of `region`, or None for anything else."""
    raw = (raw or "").strip()
    if not raw or len(raw) > _MAX_INPUT or not _TYPED.fullmatch(raw):
        # phonenumbers reads other scripts' digits as 0-9, letters as keypad digits and "x1" as
        # an extension: only what a number is written with passes
        return None
    return _normalise(raw, region)


@lru_cache(maxsize=4096)  # every request parses its caller's number; a pure function of short input
def _normalise(raw: str, region: str) -> str | None:
    number = _international(raw, region)
    if number is not None:  # "+2547...": the form Africa's Talking gives every caller
        return raw if _mobile_of(number, region) else None
    if raw[0].isdigit() and raw.startswith("254") and len(raw) == 12:
        raw = "+" + raw  # typed without the plus, as keypads make easy
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException:
        return None
    if not _mobile_of(number, region):  # a mobile type is also a valid number of its region
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _mobile_of(number: PhoneNumber, region: str) -> bool:
    return (phonenumbers.number_type(number) in _MOBILE_TYPES
            and phonenumbers.region_code_for_number(number) == region)  # we serve, and SMS, one country


def _international(raw: str, region: str) -> PhoneNumber | None:
    """`raw` as a PhoneNumber, built directly, when it is already "+<the region's code><digits>"
    and parsing could not change those digits (no leading zero, nothing the region strips as a
    national prefix); else None. A quarter of the cost of phonenumbers.parse, and a cache miss
    is the first step of every session of a caller not seen for a while."""
    code, plus, prefix = _calling_code(region)
    national = raw[len(plus):]
    if prefix is None or not raw.startswith(plus) or not 2 <= len(national) <= 17:
        return None
    if not national.isascii() or not national.isdigit() or national[0] == "0":
        return None
    if prefix and national.startswith(prefix):
        return None
    return PhoneNumber(country_code=code, national_number=int(national))


@lru_cache(maxsize=8)
def _calling_code(region: str) -> tuple[int, str, str | None]:
    """(254, "+254", "0") for KE: the region's calling code, as typed, and what parsing strips as
    its national prefix ("" when nothing, None when that is a pattern: such regions always take
    phonenumbers.parse)."""
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.country_code is None:
        return 0, "+", None
    prefix = metadata.national_prefix_for_parsing or ""
    return metadata.country_code, f"+{metadata.country_code}", prefix if prefix.isdigit() or not prefix else None


def local(e164: str, region: str = "KE") -> str:
    """How people of `region` write a number of their own country (0712345678); others as E.164."""
    try:
        number = phonenumbers.parse(e164)
    except NumberParseException:
        return e164
    if phonenumbers.region_code_for_number(number) != region:
        return e164
    return re.sub(r"[^0-9]", "", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))


def safaricom(e164: str) -> bool:
    """Is this a Safaricom number (the only one M-Pesa pays), by phonenumbers' carrier data for
    Kenya's mobile ranges? An Airtel or Telkom number, or any other country's, is not."""
    try:
        number = phonenumbers.parse(e164)
    except NumberParseException:
        return False
    return (phonenumbers.region_code_for_number(number) == "KE"
            and carrier.name_for_number(number, "en") == "Safaricom")


def mask(e164: str) -> str:
    """A phone number fit for logs: +2547****5678."""
    if len(e164) < 8:
        return "****"
    return e164[:5] + "****" + e164[-4:]
