"""Normalize and SHA-256 hash the personal identifiers of an incoming event's `user` object.

Runs once at ingest so no plaintext identifier is ever stored (design invariant 6). Every
variant a platform needs is computed here, because a hash cannot be re-normalized later:
adapters only pick the stored fields they send. Warnings name the field and the reason but
never echo the value, since they end up in API answers and logs.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping
from string import ascii_lowercase, digits
from typing import Any

import phonenumbers

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
# YYYY-MM-DD, YYYYMMDD or YYYY/MM/DD (one separator style), optionally the rest of an ISO
# datetime; only the date part is used.
_DATE_OF_BIRTH = re.compile(r"([0-9]{4})([-/]?)([0-9]{2})\2([0-9]{2})(?:[T ][0-9].*)?", re.DOTALL)
_US_ZIP = re.compile(r"[0-9]{5}")
# ASCII fast path of _fold: what to delete per kept-category set (most input is ASCII, and the
# per-character unicodedata loop was a fifth of ingest CPU).
_ASCII_DELETE = {
    keep: str.maketrans(
        "", "", "".join(c for c in map(chr, range(128)) if not c.isspace() and c not in kept)
    )
    for keep, kept in (("LM", ascii_lowercase), ("LN", ascii_lowercase + digits))
}
# A phone already written internationally: "+", digits, and only formatting between them.
_INTERNATIONAL_PHONE = re.compile(r"\+[0-9][0-9 ().\-]{6,24}")
_PHONE_FORMATTING = str.maketrans("", "", " ().-")

_MAX_RAW_CHARS = 1024
_MAX_KEY_CHARS_IN_WARNING = 64

# Stored verbatim: platforms require click ids, cookies, IP and user agent unhashed
# (destinations.md cheat-sheet "Never hash these").
_RAW_FIELDS = frozenset({
    "ip", "user_agent", "fbp", "fbc", "ttp", "ttclid", "epik",
    "sc_click_id", "li_fat_id", "rdt_cid", "ga_client_id",
})  # fmt: skip

# Hashed fields and the stored keys a value that arrives already hashed goes to. A hashed
# phone cannot be re-normalized into the other variant, so every platform gets it as the
# sender hashed it (it matches only where the sender used that platform's rule).
_PREHASHED_TARGETS: dict[str, tuple[str, ...]] = {
    "email": ("em", "em_google"), "phone": ("ph", "ph_e164"), "first_name": ("fn",),
    "last_name": ("ln",), "date_of_birth": ("db",), "street": ("street",),
    "external_id": ("external_id",),
}  # fmt: skip
_PLAIN_FIELDS = frozenset({"gender", "city", "state", "zip", "country"})

_GOOGLE_MAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

_GENDERS = {
    "f": "f", "female": "f", "woman": "f",
    "m": "m", "male": "m", "man": "m",
    "n": "n", "nonbinary": "n", "non-binary": "n", "non binary": "n",
}  # fmt: skip

# Keyed by the normalized name (lowercase letters only), so "New York" and "new-york" both hit.
_US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota": "mn",
    "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
    "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
    "americansamoa": "as", "guam": "gu", "northernmarianaislands": "mp", "puertorico": "pr",
    "usvirginislands": "vi",
}  # fmt: skip


class _Dropped(Exception):
    """A field value that cannot be used; the message is the reason shown in the warning."""


def sha256_hex(s: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of `s` (the form every platform expects)."""
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def is_sha256_hex(s: str) -> bool:
    """True when `s` is exactly 64 hex digits, i.e. a value the sender already hashed."""
    return _SHA256_HEX.fullmatch(s) is not None


def normalize_user(
    user: Mapping[str, Any], default_region: str
) -> tuple[dict[str, str], list[str]]:
    """Canonical stored user fields and warnings (each warning names the field, e.g.
    "user.phone: not a valid phone number for region US; dropped")."""
    if not isinstance(user, dict):
        return {}, ["user: expected an object; dropped"]
    us = _is_us(user.get("country"), default_region)
    stored: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in user.items():
        try:
            stored.update(_normalize_field(key, value, default_region, us))
        except _Dropped as reason:
            # Keys are client-controlled too: cap what reaches a log line.
            label = str(key)[:_MAX_KEY_CHARS_IN_WARNING]
            warnings.append(f"user.{label}: {reason}; dropped")
    return stored, warnings


def _normalize_field(key: str, value: Any, region: str, us: bool) -> dict[str, str]:
    if key in _RAW_FIELDS:
        raw = _text(value, numbers=True)
        if len(raw) > _MAX_RAW_CHARS:
            raise _Dropped(f"longer than {_MAX_RAW_CHARS} characters")
        return {key: raw} if raw else {}
    if key not in _PREHASHED_TARGETS and key not in _PLAIN_FIELDS:
        # Unknown keys could carry personal data we would otherwise store in plaintext.
        raise _Dropped("unknown field")
    text = _text(value, numbers=key == "external_id")
    if not text:
        return {}
    if key in _PREHASHED_TARGETS and is_sha256_hex(text):
        return dict.fromkeys(_PREHASHED_TARGETS[key], text.lower())
    match key:
        case "email":
            return _hash_email(text)
        case "phone":
            return _hash_phone(text, region)
        case "first_name":
            return {"fn": sha256_hex(_nonempty(_fold(text, "LM", spaces=True)))}
        case "last_name":
            return {"ln": sha256_hex(_nonempty(_fold(text, "LM", spaces=True)))}
        case "date_of_birth":
            return {"db": sha256_hex(_date_of_birth(text))}
        case "street":
            # Google (GA4 user_data, Ads enhanced conversions) is the only consumer and the
            # reference: remove symbols, lowercase, trim. Digits stay (house numbers).
            return {"street": sha256_hex(_nonempty(_fold(text, "LMN", spaces=True)))}
        case "external_id":
            # Trimmed only, never lowercased: ids can be case sensitive (base64, some UUID
            # schemes), and the browser pixel sends the id exactly as the site gave it.
            return {"external_id": sha256_hex(text)}
        case "gender":
            return {"ge": _gender(text)}
        case "city":
            # Meta's example "New York" -> "newyork"; digits go too (as in Meta's SDK).
            return {"ct": _nonempty(_fold(text, "LM", spaces=False))}
        case "state":
            return {"st": _state(text, us)}
        case "zip":
            return {"zp": _zip(text, us)}
        case "country":
            return {"country": _country(text)}
        case _:
            raise _Dropped("unknown field")


def _text(value: Any, *, numbers: bool) -> str:
    """The trimmed string form of a JSON value; "" for null."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return _number_text(value)
    raise _Dropped(f"expected a string, got {_json_type(value)}")


def _number_text(value: float) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Dropped("not a finite number")
        # A JSON encoder may write the id 123 as 123.0; the site's pixel sends "123".
        if value.is_integer():
            return str(int(value))
    return str(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _nonempty(normalized: str) -> str:
    # Hashing "" would give every such user the same identifier.
    if not normalized:
        raise _Dropped("nothing left after normalization")
    return normalized


def _fold(text: str, keep: str, *, spaces: bool) -> str:
    """NFC + lowercase, keeping only characters whose Unicode major category is in `keep`
    (L letters, M combining marks, N digits); whitespace runs become one space or vanish.

    Letters of every script and their accents are kept: Meta and Snap ask for UTF-8 names,
    not ASCII transliteration, and stripping "é" would miss what the browser pixel sends.
    Combining marks must stay because many scripts (Devanagari, Thai) have no precomposed
    forms. str.lower() rather than casefold(): platforms lowercase, they do not fold "ß".
    """
    if text.isascii() and keep in _ASCII_DELETE:
        return (" " if spaces else "").join(text.lower().translate(_ASCII_DELETE[keep]).split())
    folded = unicodedata.normalize("NFC", text.lower())
    words = (
        "".join(c for c in word if unicodedata.category(c)[0] in keep) for word in folded.split()
    )
    return (" " if spaces else "").join(word for word in words if word)


def _hash_email(text: str) -> dict[str, str]:
    email = text.lower()
    if _EMAIL.fullmatch(email) is None:
        raise _Dropped("not an email address")
    local, _, domain = email.partition("@")
    # Google ignores dots in Gmail local parts; Meta and others hash the address as typed.
    google = f"{local.replace('.', '')}@{domain}" if domain in _GOOGLE_MAIL_DOMAINS else email
    return {"em": sha256_hex(email), "em_google": sha256_hex(google)}


def _hash_phone(text: str, region: str) -> dict[str, str]:
    region = region.strip().upper()
    # libphonenumber only knows the default region's own international prefix (011 in the
    # US); "00" is the ITU prefix most of the world types (Snap's "0044 ..." example).
    if text.startswith("00"):
        text = "+" + text[2:]
    e164 = _plain_international(text)
    if e164 is not None:
        return {"ph": sha256_hex(e164.removeprefix("+")), "ph_e164": sha256_hex(e164)}
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise _Dropped(f"not a valid phone number for region {region}") from None
    # "Possible" (right length) rather than "valid": test numbers like 555-... must pass.
    # Local-only numbers (no area code) are refused: their E.164 form would be wrong.
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise _Dropped(f"not a valid phone number for region {region}")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # Meta, Snap, Pinterest: country code + number, digits only. TikTok, GA4: E.164 with "+".
    return {"ph": sha256_hex(e164.removeprefix("+")), "ph_e164": sha256_hex(e164)}


def _plain_international(text: str) -> str | None:
    """E.164 of an unambiguous international number without libphonenumber's full parse (a
    quarter of ingest CPU), or None to take the full parse.

    Unambiguous: "+", a known country code, a national number not starting with 0 (a written
    trunk prefix such as "+44 (0)20" or Italy's leading 0 need the full rules), and a total
    length of 10 to 15 digits.
    """
    if _INTERNATIONAL_PHONE.fullmatch(text) is None:
        return None
    digits = text[1:].translate(_PHONE_FORMATTING)
    if not digits.isdigit() or not 10 <= len(digits) <= 15:
        return None
    for size in (1, 2, 3):
        if int(digits[:size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            if digits[size] == "0":
                return None
            return "+" + digits
    return None


def _date_of_birth(text: str) -> str:
    match = _DATE_OF_BIRTH.fullmatch(text)
    if match is None:
        raise _Dropped("not a date (expected YYYY-MM-DD)")
    try:
        day = datetime.date(int(match[1]), int(match[3]), int(match[4]))
    except ValueError:
        raise _Dropped("not a calendar date") from None
    # isoformat() zero-pads the year, strftime("%Y") does not on every libc.
    return day.isoformat().replace("-", "")


def _gender(text: str) -> str:
    gender = _GENDERS.get(text.lower())
    if gender is None:
        raise _Dropped("not one of f, m, n")
    return gender


def _state(text: str, us: bool) -> str:
    state = _nonempty(_fold(text, "LN", spaces=False))
    # Meta and Pinterest want the 2-letter ANSI code for US states.
    return _US_STATES.get(state, state) if us else state


def _zip(text: str, us: bool) -> str:
    # Every platform compares zips without spaces or dashes ("M1 1AE" -> "m11ae").
    zip_code = _nonempty(_fold(text, "LN", spaces=False))
    if not us:
        return zip_code
    # Meta: US zips are the first 5 digits; a ZIP+4 would hash differently.
    if _US_ZIP.fullmatch(zip_code[:5]) is None:
        raise _Dropped("not a US ZIP code")
    return zip_code[:5]


def _country(text: str) -> str:
    if _COUNTRY.fullmatch(text) is None:
        raise _Dropped("not an ISO 3166 alpha-2 country code")
    return text.lower()


def _is_us(country: Any, default_region: str) -> bool:
    """Whether US rules apply: the user's own country if usable, else the default region."""
    if isinstance(country, str) and _COUNTRY.fullmatch(country.strip()):
        return country.strip().lower() == "us"
    return default_region.strip().upper() == "US"
