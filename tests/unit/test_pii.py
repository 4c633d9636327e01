"""relay.pii: expected hashes are computed here with hashlib, independently of the module."""

import hashlib
from typing import Any

import phonenumbers
import pytest

from relay.pii import is_sha256_hex, normalize_user, sha256_hex


def h(s: str) -> str:
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


HASHED = "A" * 32 + "0123456789abcdef" * 2  # 64 hex digits, mixed case


# --- helpers -----------------------------------------------------------------------------


def test_sha256_hex_is_lowercase_hex_of_utf8() -> None:
    assert sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex("josé") == hashlib.sha256("josé".encode()).hexdigest()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a" * 64, True),
        ("0123456789ABCDEF" * 4, True),
        ("a" * 63, False),
        ("a" * 65, False),
        ("g" * 64, False),
        ("a" * 64 + "\n", False),
        ("", False),
    ],
)
def test_is_sha256_hex(value: str, expected: bool) -> None:
    assert is_sha256_hex(value) is expected


# --- email -------------------------------------------------------------------------------


def test_email_trimmed_and_lowercased() -> None:
    stored, warnings = normalize_user({"email": "  John.Doe@Example.COM \n"}, "US")
    assert stored == {"em": h("john.doe@example.com"), "em_google": h("john.doe@example.com")}
    assert warnings == []


@pytest.mark.parametrize("domain", ["gmail.com", "googlemail.com", "GMail.com"])
def test_email_google_variant_drops_dots_for_gmail(domain: str) -> None:
    stored, _ = normalize_user({"email": f"J.o.h.n+ads@{domain}"}, "US")
    lower = domain.lower()
    assert stored["em"] == h(f"j.o.h.n+ads@{lower}")
    assert stored["em_google"] == h(f"john+ads@{lower}")


def test_email_google_variant_keeps_dots_for_other_domains() -> None:
    stored, _ = normalize_user({"email": "john.doe@gmail.co.uk"}, "US")
    assert stored["em_google"] == h("john.doe@gmail.co.uk") == stored["em"]


@pytest.mark.parametrize("email", ["not-an-email", "a@b@c", "@example.com", "john doe@x.com"])
def test_email_without_address_shape_dropped(email: str) -> None:
    assert normalize_user({"email": email}, "US") == (
        {},
        ["user.email: not an email address; dropped"],
    )


# --- phone -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "region", "digits"),
    [
        ("(650)555-1212", "US", "16505551212"),  # Meta's example
        ("+44 844 412 4653", "US", "448444124653"),  # Snap's example
        ("0044 844 412 4653", "US", "448444124653"),  # "00" international prefix
        ("011 44 844 412 4653", "US", "448444124653"),  # US international prefix
        ("030 1234567", "DE", "49301234567"),
        ("030 1234567", "de", "49301234567"),
        ("+1 415 000 0000", "DE", "14150000000"),  # possible though not valid
        ("1-800-FLOWERS", "US", "18003569377"),
    ],
)
def test_phone_digits_and_e164_variants(phone: str, region: str, digits: str) -> None:
    stored, warnings = normalize_user({"phone": phone}, region)
    assert stored == {"ph": h(digits), "ph_e164": h("+" + digits)}
    assert warnings == []


def test_tiktok_e164_example() -> None:
    stored, _ = normalize_user({"phone": "+14150000000"}, "US")
    assert stored["ph_e164"] == hashlib.sha256(b"+14150000000").hexdigest()


@pytest.mark.parametrize("phone", ["12", "call me maybe", "555-1212", "+0 123", "1" * 30])
def test_invalid_phone_dropped_with_warning(phone: str) -> None:
    assert normalize_user({"phone": phone}, "US") == (
        {},
        ["user.phone: not a valid phone number for region US; dropped"],
    )


def test_national_phone_with_unknown_region_dropped() -> None:
    assert normalize_user({"phone": "030 1234567"}, "ZZ") == (
        {},
        ["user.phone: not a valid phone number for region ZZ; dropped"],
    )


def test_phone_as_number_dropped() -> None:
    assert normalize_user({"phone": 16505551212}, "US") == (
        {},
        ["user.phone: expected a string, got number; dropped"],
    )


# --- pre-hashed values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "keys"),
    [
        ("email", ["em", "em_google"]),
        ("phone", ["ph", "ph_e164"]),
        ("first_name", ["fn"]),
        ("last_name", ["ln"]),
        ("date_of_birth", ["db"]),
        ("street", ["street"]),
        ("external_id", ["external_id"]),
    ],
)
def test_prehashed_value_kept_lowercased(field: str, keys: list[str]) -> None:
    stored, warnings = normalize_user({field: f" {HASHED} "}, "US")
    assert stored == dict.fromkeys(keys, HASHED.lower())
    assert warnings == []


def test_prehashed_not_applied_to_plain_fields() -> None:
    stored, warnings = normalize_user({"city": HASHED}, "US")
    assert stored == {"ct": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabcdefabcdef"}
    assert warnings == []


# --- names, date of birth, street, external id -------------------------------------------


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("  John ", "john"),
        ("O'Brien", "obrien"),
        ("Jean-Luc", "jeanluc"),
        ("Mary   Ann\t", "mary ann"),
        ("José", "josé"),
        ("Jose\u0301", "josé"),  # decomposed accent composes (NFC)
        ("ÉLODIE", "élodie"),
        ("Strauß", "strauß"),
        ("Дмитрий", "дмитрий"),
        ("山田", "山田"),
        ("देव", "देव"),  # combining vowel sign kept
        ("Anna2", "anna"),
    ],
)
def test_names_normalized(name: str, normalized: str) -> None:
    stored, warnings = normalize_user({"first_name": name, "last_name": name}, "US")
    assert stored == {"fn": h(normalized), "ln": h(normalized)}
    assert warnings == []


def test_name_with_nothing_left_dropped() -> None:
    assert normalize_user({"last_name": "-.-"}, "US") == (
        {},
        ["user.last_name: nothing left after normalization; dropped"],
    )


@pytest.mark.parametrize(
    "dob",
    [
        "1990-05-17",
        "19900517",
        "1990/05/17",
        " 1990-05-17 ",
        "1990-05-17T00:00:00Z",
        "1990-05-17T08:30:00+02:00",
        "1990-05-17 08:30:00",
    ],
)
def test_date_of_birth_formats(dob: str) -> None:
    assert normalize_user({"date_of_birth": dob}, "US") == ({"db": h("19900517")}, [])


def test_date_of_birth_early_year_zero_padded() -> None:
    assert normalize_user({"date_of_birth": "0999-01-02"}, "US") == ({"db": h("09990102")}, [])


@pytest.mark.parametrize(
    ("dob", "reason"),
    [
        ("17/05/1990", "not a date (expected YYYY-MM-DD)"),
        ("1990-5-17", "not a date (expected YYYY-MM-DD)"),
        ("1990-05/17", "not a date (expected YYYY-MM-DD)"),
        ("1990-05-17garbage", "not a date (expected YYYY-MM-DD)"),
        ("1990-05-17 or so", "not a date (expected YYYY-MM-DD)"),
        ("May 17, 1990", "not a date (expected YYYY-MM-DD)"),
        ("1990-02-30", "not a calendar date"),
        ("1990-13-01", "not a calendar date"),
        ("0000-01-01", "not a calendar date"),
    ],
)
def test_bad_date_of_birth_dropped(dob: str, reason: str) -> None:
    assert normalize_user({"date_of_birth": dob}, "US") == (
        {},
        [f"user.date_of_birth: {reason}; dropped"],
    )


@pytest.mark.parametrize(
    ("street", "normalized"),
    [
        ("  1600 Amphitheatre   Pkwy ", "1600 amphitheatre pkwy"),
        ("1600 Amphitheatre Pkwy.", "1600 amphitheatre pkwy"),
        ("Straße des 17. Juni 135", "straße des 17 juni 135"),
    ],
)
def test_street_normalized(street: str, normalized: str) -> None:
    assert normalize_user({"street": street}, "US") == ({"street": h(normalized)}, [])


@pytest.mark.parametrize(
    ("external_id", "hashed_text"),
    [(" AbC-123 ", "AbC-123"), (12345, "12345"), (123.0, "123"), (1.5, "1.5")],
)
def test_external_id_trimmed_not_lowercased(external_id: Any, hashed_text: str) -> None:
    assert normalize_user({"external_id": external_id}, "US") == (
        {"external_id": h(hashed_text)},
        [],
    )


# --- plain fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gender", "code"),
    [
        ("f", "f"),
        ("F", "f"),
        (" Female ", "f"),
        ("woman", "f"),
        ("m", "m"),
        ("MALE", "m"),
        ("Man", "m"),
        ("n", "n"),
        ("Non-Binary", "n"),
        ("nonbinary", "n"),
    ],
)
def test_gender_normalized(gender: str, code: str) -> None:
    assert normalize_user({"gender": gender}, "US") == ({"ge": code}, [])


@pytest.mark.parametrize("gender", ["x", "unknown", "fem ale"])
def test_unknown_gender_dropped(gender: str) -> None:
    assert normalize_user({"gender": gender}, "US") == (
        {},
        ["user.gender: not one of f, m, n; dropped"],
    )


@pytest.mark.parametrize(
    ("city", "normalized"),
    [
        ("New York", "newyork"),
        ("São Paulo", "sãopaulo"),
        ("Sa\u0303o Paulo", "sãopaulo"),
        ("St. John's", "stjohns"),
        ("Paris 15", "paris"),
        ("MÜNCHEN", "münchen"),
        ("東京", "東京"),
    ],
)
def test_city_normalized(city: str, normalized: str) -> None:
    assert normalize_user({"city": city}, "US") == ({"ct": normalized}, [])


@pytest.mark.parametrize(
    ("state", "country", "region", "normalized"),
    [
        ("CA", None, "US", "ca"),
        ("California", None, "US", "ca"),
        ("new york", None, "US", "ny"),
        ("New-York", "US", "DE", "ny"),
        ("District of Columbia", "us", "DE", "dc"),
        ("N.Y.", None, "US", "ny"),
        ("California", None, "DE", "california"),
        ("Georgia", "ge", "US", "georgia"),
        ("Bayern", "de", "DE", "bayern"),
        ("NSW 2", "au", "US", "nsw2"),
    ],
)
def test_state_normalized(state: str, country: str | None, region: str, normalized: str) -> None:
    user: dict[str, Any] = {"state": state}
    if country is not None:
        user["country"] = country
    stored, warnings = normalize_user(user, region)
    assert stored["st"] == normalized
    assert warnings == []


@pytest.mark.parametrize(
    ("zip_code", "country", "region", "normalized"),
    [
        ("94035-1234", None, "US", "94035"),
        ("94035", "us", "DE", "94035"),
        (" 94035 1234 ", "US", "GB", "94035"),
        ("M1 1AE", "gb", "US", "m11ae"),
        ("10115", None, "DE", "10115"),
        ("1234-567", "pt", "US", "1234567"),
        ("94035-1234", "ca", "US", "940351234"),
    ],
)
def test_zip_normalized(zip_code: str, country: str | None, region: str, normalized: str) -> None:
    user: dict[str, Any] = {"zip": zip_code}
    if country is not None:
        user["country"] = country
    stored, warnings = normalize_user(user, region)
    assert stored["zp"] == normalized
    assert warnings == []


@pytest.mark.parametrize("zip_code", ["9403", "ABCDE", "M1 1AE"])
def test_bad_us_zip_dropped(zip_code: str) -> None:
    assert normalize_user({"zip": zip_code}, "US") == (
        {},
        ["user.zip: not a US ZIP code; dropped"],
    )


def test_invalid_country_falls_back_to_default_region_for_us_rules() -> None:
    stored, warnings = normalize_user({"zip": "94035-1234", "country": "USA"}, "US")
    assert stored == {"zp": "94035"}
    assert warnings == ["user.country: not an ISO 3166 alpha-2 country code; dropped"]


@pytest.mark.parametrize(("country", "code"), [("US", "us"), ("de", "de"), (" Gb ", "gb")])
def test_country_lowercased(country: str, code: str) -> None:
    assert normalize_user({"country": country}, "US") == ({"country": code}, [])


@pytest.mark.parametrize("country", ["USA", "Germany", "u", "1a", "ÜS"])
def test_bad_country_dropped(country: str) -> None:
    assert normalize_user({"country": country}, "US") == (
        {},
        ["user.country: not an ISO 3166 alpha-2 country code; dropped"],
    )


# --- raw pass-through ----------------------------------------------------------------------

RAW = {
    "ip": "2001:db8::1",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
    "fbp": "fb.1.1596403881668.1116446470",
    "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
    "ttp": "2Jx8Zx0yb8kXeWrrLDDk6s7S3bz",
    "ttclid": "E.C.P.CsABAbCd",
    "epik": "dj0yJnU9Q1lHbWtB",
    "sc_click_id": "a1b2c3d4-E5F6-7890-abcd-ef1234567890",
    "li_fat_id": "df3d2b5e-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
    "rdt_cid": "1234567890123456789",
    "ga_client_id": "1234567890.1700000000",
}


def test_raw_fields_stored_untouched() -> None:
    assert normalize_user(RAW, "US") == (RAW, [])


def test_raw_fields_trimmed_and_numbers_stringified() -> None:
    stored, warnings = normalize_user({"ip": " 203.0.113.7 ", "rdt_cid": 42}, "US")
    assert stored == {"ip": "203.0.113.7", "rdt_cid": "42"}
    assert warnings == []


def test_raw_field_at_limit_kept_and_over_limit_dropped() -> None:
    stored, warnings = normalize_user({"user_agent": "u" * 1024, "fbc": "f" * 1025}, "US")
    assert stored == {"user_agent": "u" * 1024}
    assert warnings == ["user.fbc: longer than 1024 characters; dropped"]


# --- defensive handling --------------------------------------------------------------------


def test_empty_and_null_values_silently_ignored() -> None:
    user = {"email": "", "phone": None, "first_name": "   ", "ip": "", "external_id": None}
    assert normalize_user(user, "US") == ({}, [])


def test_unknown_field_dropped_with_warning() -> None:
    stored, warnings = normalize_user({"ssn": "078-05-1120", "email": "a@b.co"}, "US")
    assert stored == {"em": h("a@b.co"), "em_google": h("a@b.co")}
    assert warnings == ["user.ssn: unknown field; dropped"]


def test_unknown_field_warning_key_capped() -> None:
    _, warnings = normalize_user({"k" * 500: 1}, "US")
    assert warnings == [f"user.{'k' * 64}: unknown field; dropped"]


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("email", 5, "number"),
        ("email", ["a"], "array"),
        ("email", {"a": 1}, "object"),
        ("email", True, "boolean"),
        ("first_name", 3.5, "number"),
        ("date_of_birth", 19900517, "number"),
        ("country", ["us"], "array"),
        ("gender", False, "boolean"),
        ("zip", 94035, "number"),
        ("external_id", True, "boolean"),
        ("external_id", [1], "array"),
        ("ip", {"v4": "1.2.3.4"}, "object"),
        ("fbp", False, "boolean"),
    ],
)
def test_wrong_type_dropped_with_warning(field: str, value: Any, kind: str) -> None:
    assert normalize_user({field: value}, "US") == (
        {},
        [f"user.{field}: expected a string, got {kind}; dropped"],
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_number_dropped(value: float) -> None:
    assert normalize_user({"external_id": value}, "US") == (
        {},
        ["user.external_id: not a finite number; dropped"],
    )


def test_user_that_is_not_an_object() -> None:
    assert normalize_user(["email"], "US") == ({}, ["user: expected an object; dropped"])  # type: ignore[arg-type]


def test_one_bad_field_does_not_affect_others() -> None:
    user = {
        "email": "Jane@Example.com",
        "phone": "nope",
        "first_name": "Jane",
        "country": "US",
        "ip": "203.0.113.7",
        "favourite_colour": "blue",
    }
    stored, warnings = normalize_user(user, "US")
    assert stored == {
        "em": h("jane@example.com"),
        "em_google": h("jane@example.com"),
        "fn": h("jane"),
        "country": "us",
        "ip": "203.0.113.7",
    }
    assert warnings == [
        "user.phone: not a valid phone number for region US; dropped",
        "user.favourite_colour: unknown field; dropped",
    ]


def test_input_not_mutated_and_no_plaintext_stored() -> None:
    user = {"email": "jane@example.com", "phone": "+16505551212", "first_name": "Jane"}
    snapshot = dict(user)
    stored, _ = normalize_user(user, "US")
    assert user == snapshot
    assert all(is_sha256_hex(v) for v in stored.values())
    assert len(stored) == 5


def test_international_fast_path_agrees_with_libphonenumber_for_every_region() -> None:
    """The shortcut for "+CC ..." numbers must hash exactly what the full parse would."""
    from relay.pii import _plain_international

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            written = phonenumbers.format_number(
                example, phonenumbers.PhoneNumberFormat.INTERNATIONAL
            )
            expected = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            fast = _plain_international(written)
            if fast is not None:
                checked += 1
                assert fast == expected, (region, written)
    assert checked > 300  # the shortcut really covers most of the world's numbers
