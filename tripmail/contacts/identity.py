"""Contact identifiers in their one stored form: normalised emails and phones, and the hashes of an email.

A leaf module: the schemas, the api and the worker all normalise identifiers this one way, and none of them
should load more than this to do it.
"""

import hashlib
from contextlib import suppress

import phonenumbers
import xxhash


def normalize_email(email: str) -> str:
    """Emails are unique per workspace regardless of case and surrounding blanks."""
    return email.strip().lower()


def normalize_phone(phone: str, default_region: str | None = None) -> str:
    """E.164 (+380501234567). A number written without its + (esputnik's 380501234567) or with 00 is read as
    international too; with a default region (UA), a local number (050 123 45 67) is read as one of that region
    first. ValueError says what a valid number looks like."""
    text = phone.strip()
    if default_region is not None and not text.startswith(("+", "00")):
        with suppress(phonenumbers.NumberParseException):
            local = phonenumbers.parse(text, default_region)
            if phonenumbers.is_valid_number(local):
                return phonenumbers.format_number(local, phonenumbers.PhoneNumberFormat.E164)
    expected = "international format (+380501234567)" + (
        f" or a local number of {default_region}" if default_region is not None else ""
    )
    text = "+" + text[2:] if text.startswith("00") else text if text.startswith("+") else "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{phone!r} is not a phone number in {expected}: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{phone!r} is not a valid phone number in {expected}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def email_md5(email: str) -> str:
    """The hex MD5 of a normalised email, which a client may name its contact by (altcraft's links)."""
    return hashlib.md5(email.encode(), usedforsecurity=False).hexdigest()


def email_xxh(email: str) -> str:
    """The hex xxHash64 of a normalised email, which a client may name its contact by (altcraft's links)."""
    return xxhash.xxh64_hexdigest(email.encode())
