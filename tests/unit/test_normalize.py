"""relay.normalize: incoming event -> canonical stored event (pure, time passed in)."""

import hashlib
import uuid
from typing import Any

import orjson
import pytest

from relay.config import SourceConfig
from relay.normalize import (
    InvalidEvent,
    RequestContext,
    apply_time_policy,
    canonical_event_name,
    consent_allows,
    dedup_key,
    fingerprint,
    normalize_event,
    parse_time_ms,
)

R = 1_700_000_000_000  # received_at: 2023-11-14T22:13:20Z
SECOND = 1000
HOUR = 3_600_000
WEEK_S = 7 * 86400

BROWSER = SourceConfig(name="web", key="k", kind="browser", time="corrected", max_age_s=WEEK_S)
SERVER = SourceConfig(name="backend", key="k2", kind="server", time="client", max_age_s=WEEK_S)
CTX = RequestContext(received_at_ms=R, ip="203.0.113.9", user_agent="Mozilla/5.0 (X11)")


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def norm(raw: dict[str, Any], source: SourceConfig = BROWSER, ctx: RequestContext = CTX):
    return normalize_event({"event_name": "purchase", **raw}, source, ctx)


# --- event_id ----------------------------------------------------------------------------


def test_event_id_canonical_spelling_has_no_alias() -> None:
    event = norm({"event_id": "ord-1"})
    assert event.event_id == "ord-1"
    assert event.id_alias is None
    assert event.id_generated is False
    assert "event_id_alias" not in event.payload
    assert event.payload["event_id"] == "ord-1"


@pytest.mark.parametrize("alias", ["eventID", "eventId"])
def test_event_id_alias_is_recorded(alias: str) -> None:
    event = norm({alias: "ord-1"})
    assert event.event_id == "ord-1"
    assert event.id_alias == alias
    assert event.payload["event_id_alias"] == alias
    assert event.warnings == []


@pytest.mark.parametrize(
    "raw",
    [
        {"event_id": "a", "eventID": "b"},
        {"event_id": "a", "eventId": "b"},
        {"eventID": "a", "eventId": "b"},
        {"event_id": "1", "eventID": 2},
    ],
)
def test_two_spellings_with_different_values_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent, match=r"^event_id: .*different values"):
        norm(raw)


@pytest.mark.parametrize(
    ("raw", "alias"),
    [
        ({"event_id": "a", "eventID": "a"}, None),
        ({"eventID": "a", "eventId": "a"}, "eventID"),
        ({"event_id": 7, "eventId": "7"}, None),
    ],
)
def test_same_value_in_two_spellings_is_accepted(raw: dict[str, Any], alias: str | None) -> None:
    event = norm(raw)
    assert event.event_id == str(raw.get("event_id", raw.get("eventID")))
    assert event.id_alias == alias


def test_numeric_event_id_becomes_a_string() -> None:
    event = norm({"event_id": 1234567890123})
    assert event.event_id == "1234567890123"
    assert event.payload["event_id"] == "1234567890123"


@pytest.mark.parametrize("value", [1.5, True, ["a"], {"id": "a"}])
def test_event_id_of_wrong_type_is_rejected(value: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"^event_id: must be a string"):
        norm({"event_id": value})


def test_overlong_event_id_is_rejected_naming_the_spelling_used() -> None:
    assert norm({"eventID": "x" * 256}).event_id == "x" * 256
    with pytest.raises(InvalidEvent, match=r"^eventID: longer than 256"):
        norm({"eventID": "x" * 257})


@pytest.mark.parametrize("raw", [{}, {"event_id": None}, {"event_id": ""}])
def test_missing_event_id_is_generated_with_a_warning(raw: dict[str, Any]) -> None:
    event = norm(raw)
    assert uuid.UUID(event.event_id).version == 4
    assert event.id_generated is True
    assert event.id_alias is None
    assert event.payload["event_id_generated"] is True
    assert event.payload["event_id"] == event.event_id
    assert [w for w in event.warnings if w.startswith("event_id:")] == [
        "event_id: missing; relay generated one, which cannot dedup with a pixel"
    ]


def test_generated_ids_differ_between_events() -> None:
    assert norm({}).event_id != norm({}).event_id


# --- event_name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Purchase", "purchase"),
        ("purchase", "purchase"),
        ("PURCHASE", "purchase"),
        ("  purchase  ", "purchase"),
        ("PageView", "page_view"),
        ("page_view", "page_view"),
        ("InitiateCheckout", "begin_checkout"),
        ("Lead", "generate_lead"),
        ("CompleteRegistration", "sign_up"),
        ("Add To Cart", "add_to_cart"),
        ("AddToCart", "add_to_cart"),
        ("add-to-cart", "add_to_cart"),
        ("ViewContent", "view_item"),
        ("CompletePayment", "purchase"),
        ("AddPaymentInfo", "add_payment_info"),
        ("Search", "search"),
    ],
)
def test_canonical_event_name(name: str, expected: str) -> None:
    assert canonical_event_name(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MyCustomEvent", "MyCustomEvent"),
        ("Video Played", "Video Played"),
        (" quiz_done ", "quiz_done"),
    ],
)
def test_custom_event_names_are_kept_verbatim(name: str, expected: str) -> None:
    assert canonical_event_name(name) == expected


@pytest.mark.parametrize("name", [None, "", "   ", 5, True, ["purchase"], {"name": "purchase"}])
def test_missing_or_non_string_event_name_is_rejected(name: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"^event_name: is required"):
        canonical_event_name(name)


def test_overlong_event_name_is_rejected() -> None:
    assert canonical_event_name("e" * 100) == "e" * 100
    with pytest.raises(InvalidEvent, match=r"^event_name: longer than 100"):
        canonical_event_name("e" * 101)


def test_missing_event_name_rejects_the_event() -> None:
    with pytest.raises(InvalidEvent, match=r"^event_name: "):
        normalize_event({"event_id": "a"}, BROWSER, CTX)


@pytest.mark.parametrize("raw", [None, [], "purchase", 5])
def test_non_object_event_is_rejected(raw: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"^event: must be a JSON object"):
        normalize_event(raw, BROWSER, CTX)


# --- parse_time_ms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, 1_700_000_000_000),  # unix seconds
        (1_700_000_000.5, 1_700_000_000_500),
        (1_700_000_000_123, 1_700_000_000_123),  # milliseconds
        (1_700_000_000_123_456, 1_700_000_000_123),  # microseconds
        ("1700000000", 1_700_000_000_000),
        ("1700000000.25", 1_700_000_000_250),
        ("1700000000123", 1_700_000_000_123),
        (" 1700000000123 ", 1_700_000_000_123),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("2023-11-15T00:13:20+02:00", 1_700_000_000_000),
        ("2023-11-14T17:13:20-05:00", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),  # naive is taken as UTC
        ("2023-11-14 22:13:20", 1_700_000_000_000),
    ],
)
def test_parse_time_ms(value: Any, expected: int) -> None:
    assert parse_time_ms(value, "event_time") == expected


@pytest.mark.parametrize(
    "value",
    [True, False, -1, 0, -1_700_000_000, "-1700000000", "yesterday", "", "2023-13-45", None,
     [1], {"t": 1}, float("nan"), float("inf")],
)  # fmt: skip
@pytest.mark.parametrize("field", ["event_time", "sent_at"])
def test_parse_time_ms_rejects_naming_the_field(value: Any, field: str) -> None:
    with pytest.raises(InvalidEvent, match=rf"^{field}: "):
        parse_time_ms(value, field)


# --- apply_time_policy -----------------------------------------------------------------------


def test_server_policy_uses_received_at() -> None:
    assert apply_time_policy("server", R, R - HOUR, R - 5 * SECOND, WEEK_S) == (R, "server")


@pytest.mark.parametrize("policy", ["server", "client", "corrected"])
def test_no_event_time_uses_received_at(policy: str) -> None:
    assert apply_time_policy(policy, R, None, R, WEEK_S) == (R, "server")


def test_client_policy_trusts_event_time() -> None:
    assert apply_time_policy("client", R, R - HOUR, None, WEEK_S) == (R - HOUR, "client")


@pytest.mark.parametrize("skew_ms", [3 * HOUR, -3 * HOUR, 0])
def test_corrected_policy_removes_client_clock_skew(skew_ms: int) -> None:
    # Event happened 10 minutes before the send; the request arrived 200 ms after it was sent.
    true_event, true_sent = R - 600 * SECOND - 200, R - 200
    event_time, sent_at = true_event + skew_ms, true_sent + skew_ms
    assert apply_time_policy("corrected", R, event_time, sent_at, WEEK_S) == (
        R - 600 * SECOND,
        "corrected",
    )


def test_corrected_policy_without_sent_at_falls_back_to_server_time() -> None:
    assert apply_time_policy("corrected", R, R - HOUR, None, WEEK_S) == (R, "server_no_sent_at")


def test_client_clock_three_hours_ahead_is_clamped_under_client_policy() -> None:
    assert apply_time_policy("client", R, R + 3 * HOUR, None, WEEK_S) == (R, "clamped_future")


def test_client_clock_three_hours_behind_is_kept_under_client_policy() -> None:
    assert apply_time_policy("client", R, R - 3 * HOUR, None, WEEK_S) == (R - 3 * HOUR, "client")


@pytest.mark.parametrize(
    ("ahead_ms", "expected"),
    [
        (1, (R + 1, "client")),
        (60 * SECOND, (R + 60 * SECOND, "client")),
        (60 * SECOND + 1, (R, "clamped_future")),
        (HOUR, (R, "clamped_future")),
    ],
)
def test_future_clamp_beyond_60_s(ahead_ms: int, expected: tuple[int, str]) -> None:
    assert apply_time_policy("client", R, R + ahead_ms, None, WEEK_S) == expected


def test_corrected_time_in_the_future_is_clamped() -> None:
    # event_time after sent_at by 2 minutes: corrected time lands 2 minutes in the future
    got = apply_time_policy("corrected", R, R + 120 * SECOND, R, WEEK_S)
    assert got == (R, "clamped_future")


def test_event_exactly_max_age_old_is_accepted() -> None:
    assert apply_time_policy("client", R, R - 3600 * SECOND, None, 3600) == (
        R - 3600 * SECOND,
        "client",
    )


@pytest.mark.parametrize("policy", ["client", "corrected"])
def test_event_older_than_max_age_is_rejected_naming_event_time(policy: str) -> None:
    event_time = R - 3600 * SECOND - 1
    sent_at = R if policy == "corrected" else None
    with pytest.raises(InvalidEvent, match=r"^event_time: 1\.0 h old, .*max_age of 1 h"):
        apply_time_policy(policy, R, event_time, sent_at, 3600)


# --- time through normalize_event --------------------------------------------------------


def test_event_sent_at_drives_correction() -> None:
    event = norm({"event_id": "a", "event_time": (R + 3 * HOUR - HOUR) // 1000,
                  "sent_at": (R + 3 * HOUR) // 1000})  # fmt: skip
    assert (event.event_time_ms, event.time_rule) == (R - HOUR, "corrected")
    assert event.payload["event_time_ms"] == R - HOUR
    assert event.payload["received_at_ms"] == R
    assert event.payload["time_rule"] == "corrected"


def test_envelope_sent_at_is_used_when_the_event_has_none() -> None:
    ctx = RequestContext(received_at_ms=R, sent_at="2023-11-14T19:13:20Z")  # clock 3 h behind
    event = norm({"event_id": "a", "event_time": "2023-11-14T19:03:20Z"}, ctx=ctx)
    assert (event.event_time_ms, event.time_rule) == (R - 600 * SECOND, "corrected")


def test_event_sent_at_takes_precedence_over_envelope() -> None:
    ctx = RequestContext(received_at_ms=R, sent_at=R - 10 * HOUR)
    event = norm({"event_id": "a", "event_time": R - 60 * SECOND, "sent_at": R}, ctx=ctx)
    assert (event.event_time_ms, event.time_rule) == (R - 60 * SECOND, "corrected")


def test_corrected_source_without_any_sent_at_uses_server_time() -> None:
    event = norm({"event_id": "a", "event_time": R - HOUR})
    assert (event.event_time_ms, event.time_rule) == (R, "server_no_sent_at")


def test_bad_sent_at_is_rejected_naming_sent_at() -> None:
    with pytest.raises(InvalidEvent, match=r"^sent_at: "):
        norm({"event_id": "a", "event_time": R, "sent_at": "soon"})


def test_too_old_event_is_rejected_by_normalize() -> None:
    with pytest.raises(InvalidEvent, match=r"^event_time: "):
        norm({"event_id": "a", "event_time": R - 8 * 86400 * SECOND}, source=SERVER)


# --- request context: ip and user agent ------------------------------------------------------


def test_browser_source_fills_ip_and_user_agent_from_request() -> None:
    user = norm({"event_id": "a"}).payload["user"]
    assert user == {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11)"}


def test_browser_source_keeps_ip_and_user_agent_sent_in_the_event() -> None:
    user = norm({"event_id": "a", "user": {"ip": "198.51.100.7", "user_agent": "Agent/1"}})
    assert user.payload["user"] == {"ip": "198.51.100.7", "user_agent": "Agent/1"}


def test_server_source_never_takes_ip_or_user_agent_from_request() -> None:
    event = norm({"event_id": "a"}, source=SERVER)
    assert "user" not in event.payload
    event = norm({"event_id": "a", "user": {"ip": "198.51.100.7"}}, source=SERVER)
    assert event.payload["user"] == {"ip": "198.51.100.7"}


def test_browser_source_without_request_ip_adds_nothing() -> None:
    event = norm({"event_id": "a"}, ctx=RequestContext(received_at_ms=R))
    assert "user" not in event.payload


# --- action_source -----------------------------------------------------------------------


def test_action_source_defaults_to_website_for_browser_only() -> None:
    assert norm({"event_id": "a"}).payload["action_source"] == "website"
    assert "action_source" not in norm({"event_id": "a"}, source=SERVER).payload


@pytest.mark.parametrize("value", ["app", "physical_store", "system_generated"])
def test_valid_action_source_is_kept(value: str) -> None:
    assert norm({"event_id": "a", "action_source": value}).payload["action_source"] == value
    assert (
        norm({"event_id": "a", "action_source": value}, source=SERVER).payload["action_source"]
        == value
    )


@pytest.mark.parametrize("value", ["web", "Website", "", 1, ["website"], {"type": "website"}])
def test_invalid_action_source_is_rejected(value: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"^action_source: must be one of"):
        norm({"event_id": "a", "action_source": value})


# --- properties ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("19.99", 19.99), (" 5 ", 5.0), ("0", 0.0), (19.99, 19.99), (10, 10), (0, 0)],
)
def test_properties_value_numeric(value: Any, expected: float) -> None:
    got = norm({"event_id": "a", "properties": {"value": value}}).payload["properties"]["value"]
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize("value", ["abc", "", "nan", "inf", True, [1], {"v": 1}, float("nan")])
def test_properties_value_non_numeric_is_rejected(value: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"^properties\.value: must be a number"):
        norm({"event_id": "a", "properties": {"value": value}})


@pytest.mark.parametrize(("value", "expected"), [("usd", "USD"), (" eur ", "EUR"), ("GBP", "GBP")])
def test_currency_is_uppercased(value: str, expected: str) -> None:
    props = norm({"event_id": "a", "properties": {"currency": value}}).payload["properties"]
    assert props["currency"] == expected


@pytest.mark.parametrize("value", ["US", "USDD", "U$D", "", 840, "us d"])
def test_invalid_currency_is_rejected(value: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"^properties\.currency: "):
        norm({"event_id": "a", "properties": {"currency": value}})


def test_order_id_becomes_a_string_and_other_properties_are_kept() -> None:
    props = {"order_id": 1001, "contents": [{"id": "sku-1", "quantity": 2, "price": 5}], "x": 1}
    assert norm({"event_id": "a", "properties": props}).payload["properties"] == {
        "order_id": "1001",
        "contents": [{"id": "sku-1", "quantity": 2, "price": 5}],
        "x": 1,
    }


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ("cheap", "properties"),
        ({"order_id": True}, "properties.order_id"),
        ({"contents": {"id": "x"}}, "properties.contents"),
        ({"contents": ["x"]}, "properties.contents"),
    ],
)
def test_invalid_properties_are_rejected(properties: Any, field: str) -> None:
    with pytest.raises(InvalidEvent, match=rf"^{field}: "):
        norm({"event_id": "a", "properties": properties})


# --- consent -------------------------------------------------------------------------------


def test_consent_normalization() -> None:
    raw = {"ad_storage": True, "analytics_storage": "granted", "ad_user_data": False,
           "ad_personalization": "denied"}  # fmt: skip
    assert norm({"event_id": "a", "consent": raw}).payload["consent"] == {
        "ad_storage": "granted",
        "analytics_storage": "granted",
        "ad_user_data": "denied",
        "ad_personalization": "denied",
    }


@pytest.mark.parametrize(
    ("consent", "field"),
    [
        ({"ad_storage": "yes"}, "consent.ad_storage"),
        ({"ad_storage": 1}, "consent.ad_storage"),
        ({"ad_storage": None}, "consent.ad_storage"),
        ({"marketing": "granted"}, "consent.marketing"),
        ("granted", "consent"),
    ],
)
def test_invalid_consent_is_rejected(consent: Any, field: str) -> None:
    with pytest.raises(InvalidEvent, match=rf"^{field}: "):
        norm({"event_id": "a", "consent": consent})


def test_no_consent_leaves_no_consent_key() -> None:
    assert "consent" not in norm({"event_id": "a"}).payload


@pytest.mark.parametrize(
    ("consent", "required", "allowed"),
    [
        (None, ("ad_storage",), True),
        ({}, ("ad_storage",), True),
        ({"ad_storage": "granted"}, ("ad_storage",), True),
        ({"ad_storage": "denied"}, ("ad_storage",), False),
        ({"ad_storage": "denied"}, (), True),
        ({"ad_storage": "denied"}, ("ad_user_data",), True),
        (
            {"ad_storage": "granted", "ad_user_data": "denied"},
            ("ad_storage", "ad_user_data"),
            False,
        ),
    ],
)
def test_consent_allows(
    consent: dict[str, str] | None, required: tuple[str, ...], allowed: bool
) -> None:
    payload: dict[str, Any] = {} if consent is None else {"consent": consent}
    assert consent_allows(payload, required) is allowed


def test_consent_allows_on_a_normalized_payload() -> None:
    payload = norm({"event_id": "a", "consent": {"ad_user_data": False}}).payload
    assert consent_allows(payload, ("ad_user_data",)) is False
    assert consent_allows(payload, ("ad_storage",)) is True


# --- unknown fields, page ---------------------------------------------------------------------


def test_unknown_top_level_fields_are_dropped_with_a_warning() -> None:
    event = norm({"event_id": "a", "custom_data": {"x": 1}, "userData": {"em": "x"}})
    assert event.warnings == [
        "custom_data: unknown field; dropped",
        "userData: unknown field; dropped",
    ]
    assert set(event.payload) == {
        "event_id", "event_name", "event_time_ms", "received_at_ms", "time_rule", "source",
        "action_source", "user",
    }  # fmt: skip
    assert event.payload["source"] == "web"


def test_page_is_kept_and_validated() -> None:
    page = {"url": "https://shop.example/p/1", "referrer": "", "title": "x"}
    assert norm({"event_id": "a", "page": page}).payload["page"] == {
        "url": "https://shop.example/p/1"
    }
    with pytest.raises(InvalidEvent, match=r"^page\.url: "):
        norm({"event_id": "a", "page": {"url": 5}})
    with pytest.raises(InvalidEvent, match=r"^page: "):
        norm({"event_id": "a", "page": "https://shop.example"})


def test_user_must_be_an_object() -> None:
    with pytest.raises(InvalidEvent, match=r"^user: must be an object"):
        norm({"event_id": "a", "user": "john@example.com"})


# --- dedup_key and fingerprint ---------------------------------------------------------------


def test_dedup_key_is_stable_across_releases() -> None:
    # The key is stored in SQLite: changing the hash would break dedup across an upgrade.
    assert dedup_key("purchase", "order-1001") == 980810853165582687
    assert dedup_key("purchase", "order-1001") == dedup_key("purchase", "order-1001")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("purchase", "1"), ("purchase", "2")),
        (("purchase", "1"), ("add_to_cart", "1")),
        (("purchase", "1"), ("Purchase", "1")),
        (("a", "bc"), ("ab", "c")),  # the separator keeps the two fields apart
    ],
)
def test_dedup_key_differs(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert dedup_key(*a) != dedup_key(*b)


@pytest.mark.parametrize("event_id", ["", "1", "order-1001", "é" * 256, "x" * 1000])
def test_dedup_key_is_signed_64_bit(event_id: str) -> None:
    assert -(2**63) <= dedup_key("purchase", event_id) < 2**63


def test_browser_and_backend_copies_share_a_dedup_key() -> None:
    browser = norm({"event_name": "Purchase", "eventID": "ord-9"})
    backend = norm({"event_name": "purchase", "event_id": "ord-9"}, source=SERVER)
    assert browser.event_name == backend.event_name == "purchase"
    assert browser.dedup_key == backend.dedup_key == dedup_key("purchase", "ord-9")


def test_fingerprint_equal_for_equal_value_and_currency() -> None:
    assert fingerprint({"value": 10.5, "currency": "USD"}) == fingerprint(
        {"currency": "USD", "value": 10.5, "order_id": "other"}
    )
    assert fingerprint({}) == fingerprint({"order_id": "x"})


@pytest.mark.parametrize(
    "other",
    [{"value": 10.6, "currency": "USD"}, {"value": 10.5, "currency": "EUR"}, {"value": 10.5}, {}],
)
def test_fingerprint_differs_when_value_or_currency_differs(other: dict[str, Any]) -> None:
    assert fingerprint({"value": 10.5, "currency": "USD"}) != fingerprint(other)


def test_same_amount_sent_as_int_float_or_string_has_one_fingerprint() -> None:
    # The browser sends "10", the backend 10: the same purchase, not a content conflict.
    prints = {
        norm({"event_id": "a", "properties": {"value": v, "currency": "usd"}}).fingerprint
        for v in (10, 10.0, "10", "10.00")
    }
    assert len(prints) == 1


def test_normalized_event_fingerprint_uses_normalized_properties() -> None:
    a = norm({"event_id": "a", "properties": {"value": "10.5", "currency": "usd"}})
    b = norm({"event_id": "a", "properties": {"value": 10.5, "currency": "USD"}}, source=SERVER)
    assert a.fingerprint == b.fingerprint == fingerprint({"value": 10.5, "currency": "USD"})


# --- PII -----------------------------------------------------------------------------------


def test_user_pii_is_hashed_and_never_stored_in_plaintext() -> None:
    user = {"email": " John.Doe@Example.COM ", "first_name": "John", "last_name": "Doe",
            "phone": "+1 (650) 555-1234", "external_id": "cust-42"}  # fmt: skip
    event = norm({"event_id": "a", "user": user}, source=SERVER)
    stored = event.payload["user"]
    assert stored["em"] == sha("john.doe@example.com")
    assert stored["fn"] == sha("john")
    assert stored["ln"] == sha("doe")
    assert stored["external_id"] == sha("cust-42")
    dumped = orjson.dumps(event.payload).decode().lower()
    for plain in ("john", "doe@", "example.com", "650", "555-1234", "cust-42"):
        assert plain not in dumped


# --- edge cases fixed after review -------------------------------------------------------


def test_event_id_is_trimmed_so_a_stray_newline_does_not_split_an_event() -> None:
    assert norm({"event_id": " ord-1\n"}).event_id == "ord-1"
    assert norm({"event_id": "ord-1"}).dedup_key == norm({"event_id": "ord-1\n"}).dedup_key


@pytest.mark.parametrize(
    ("name", "expected"),
    [("begincheckout", "begin_checkout"), ("GenerateLead", "generate_lead"),
     ("LogIn", "login"), ("Log In", "login"), ("view-item", "view_item")],
)  # fmt: skip
def test_run_together_spellings_of_standard_names(name: str, expected: str) -> None:
    assert canonical_event_name(name) == expected


def test_consent_values_are_case_insensitive() -> None:
    consent = norm({"consent": {"ad_storage": "GRANTED", "ad_user_data": " Denied "}})
    assert consent.payload["consent"] == {"ad_storage": "granted", "ad_user_data": "denied"}


def test_null_sent_at_falls_back_to_the_envelope() -> None:
    ctx = RequestContext(received_at_ms=R, sent_at=R - 3_600_000)
    event = norm({"event_time": R - 3_600_000 - 5000, "sent_at": None}, ctx=ctx)
    assert (event.event_time_ms, event.time_rule) == (R - 5000, "corrected")


def test_unknown_field_warning_caps_the_echoed_key() -> None:
    event = norm({"x" * 5000: 1})
    assert event.warnings[0] == "x" * 64 + ": unknown field; dropped"
