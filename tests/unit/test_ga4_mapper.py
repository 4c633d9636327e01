"""GA4 Measurement Protocol mapper: golden request, client id, user data, consent, validation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import ConfigError, DestinationConfig, load_config
from relay.destinations.base import HttpResponse, Outcome, OutcomeKind
from relay.destinations.ga4 import GA4Destination, client_id
from relay.pii import normalize_user, sha256_hex
from tests.conftest import write_config

GOLDEN = json.loads((Path(__file__).parent.parent / "golden" / "ga4.json").read_text())
SECRET = "test-secret"
T = 1_763_000_000_000
EM = sha256_hex("buyer@example.com")


def ga4(batch_size: int = 500, event_names: dict[str, str] | None = None, **options: Any):
    opts = {"measurement_id": "G-TEST123", "api_secret": SECRET, **options}
    config = DestinationConfig(
        name="ga4", type="ga4", batch_size=batch_size, event_names=event_names or {}, options=opts
    )
    return GA4Destination(config)


def ev(event_id: str = "e-1", name: str = "purchase", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_id": event_id, "event_name": name, "event_time_ms": T}
    base.update(fields)
    return base


def body(events: list[dict[str, Any]], dest: GA4Destination | None = None) -> Any:
    return orjson.loads((dest or ga4()).build_request(events).body)


def reply(status: int, payload: Any = None, headers: dict[str, str] | None = None):
    raw = b"" if payload is None else orjson.dumps(payload)
    return HttpResponse(status, headers or {}, raw)


# --- the request --------------------------------------------------------------------------


def test_golden_request() -> None:
    request = ga4().build_request(GOLDEN["events"])
    shown = request.redacted()
    expected = GOLDEN["request"]
    assert (request.method, shown["url"], shown["headers"]) == (
        expected["method"],
        expected["url"],
        expected["headers"],
    )
    assert orjson.loads(request.body) == expected["body"]


def test_api_secret_is_a_redacted_query_parameter() -> None:
    request = ga4().build_request([ev()])
    assert request.url == (
        "https://www.google-analytics.com/mp/collect?measurement_id=G-TEST123&api_secret=test-secret"
    )
    assert SECRET in request.secrets
    assert SECRET not in repr(request) and SECRET not in json.dumps(request.redacted())


def test_a_secret_with_url_special_characters_is_redacted_too() -> None:
    request = ga4(api_secret="a+b/c=d").build_request([ev()])
    assert "a+b/c=d" not in json.dumps(request.redacted())


def test_one_event_per_request_and_the_documented_limits() -> None:
    # A request is one client's: the worker's batches mix visitors (module docstring).
    assert ga4(batch_size=500).batch_size == 1
    assert GA4Destination.max_body_bytes == 130_000
    assert ga4().deadline_ms({"event_time_ms": T}) == T + 72 * 3600 * 1000


def test_time_is_microseconds() -> None:
    [event] = body([ev(event_time_ms=T + 7)])["events"]
    assert event["timestamp_micros"] == (T + 7) * 1000


def test_params() -> None:
    props = {
        "value": 30,
        "currency": "EUR",
        "order_id": 77,
        "contents": [{"id": 5, "quantity": 3}, {"quantity": 1}, {"id": "B", "price": 1.5}],
        "coupon": "custom keys are not sent",
    }
    page = {"url": "https://shop.example/p", "referrer": "https://ref.example/"}
    [event] = body([ev(properties=props, page=page)])["events"]
    assert event["params"] == {
        "currency": "EUR",
        "value": 30,
        "transaction_id": "77",
        "items": [{"item_id": "5", "quantity": 3}, {"item_id": "B", "price": 1.5}],
        "page_location": "https://shop.example/p",
        "page_referrer": "https://ref.example/",
        "engagement_time_msec": 1,
    }


def test_long_parameter_values_are_cut_to_100_characters() -> None:
    url = "https://shop.example/?" + "q" * 200
    [event] = body([ev(page={"url": url})])["events"]
    assert event["params"]["page_location"] == url[:100]


# --- event names -----------------------------------------------------------------------------


def test_canonical_names_are_ga4_names_and_overridable() -> None:
    assert body([ev(name="generate_lead")])["events"][0]["name"] == "generate_lead"
    dest = ga4(event_names={"generate_lead": "lead_form_sent"})
    assert body([ev(name="generate_lead")], dest)["events"][0]["name"] == "lead_form_sent"
    assert body([ev(name="webinar_signup")])["events"][0]["name"] == "webinar_signup"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("webinar signup", "letters, digits"),
        ("1st_visit", "start with a letter"),
        ("x" * 41, "40 characters"),
        ("session_start", "reserved"),
        ("first_visit", "reserved"),
        ("ga_custom", "reserved"),
        ("firebase_thing", "reserved"),
        ("google_ads", "reserved"),
    ],
)
def test_names_ga4_rejects_are_unsendable(name: str, why: str) -> None:
    reason = ga4().unsendable(ev(name=name))
    assert reason is not None and why in reason


def test_valid_custom_names_are_sendable() -> None:
    assert ga4().unsendable(ev(name="webinar_signup")) is None
    assert ga4().unsendable(ev(name="x" * 40)) is None


# --- client id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "sent"),
    [
        ("GA1.1.1234567890.1700000000", "1234567890.1700000000"),
        ("GA1.2.987654321.1690000000", "987654321.1690000000"),
        ("1234567890.1700000000", "1234567890.1700000000"),
        ("site-chosen-id", "site-chosen-id"),
    ],
)
def test_client_id_from_the_ga_cookie(stored: str, sent: str) -> None:
    assert client_id(ev(user={"ga_client_id": stored, "em": EM})) == sent


def test_derived_client_id_is_stable_per_person_and_shaped_like_ga() -> None:
    first = client_id(ev("a", user={"em": EM}))
    assert re.fullmatch(r"\d+\.\d+", first)
    assert client_id(ev("b", user={"em": EM})) == first
    assert client_id(ev("a", user={"em": sha256_hex("other@example.com")})) != first
    assert EM[:8] not in first  # not the identity hash itself
    by_external = client_id(ev("a", user={"em": EM, "external_id": sha256_hex("u-1")}))
    assert by_external == client_id(ev("z", user={"external_id": sha256_hex("u-1")}))
    assert by_external != first


def test_without_identity_or_with_ad_user_data_denied_the_event_id_seeds_it() -> None:
    anonymous = client_id(ev("a"))
    assert re.fullmatch(r"\d+\.\d+", anonymous) and anonymous == client_id(ev("a"))
    assert client_id(ev("b")) != anonymous
    denied = {"ad_user_data": "denied"}
    assert client_id(ev("a", user={"em": EM}, consent=denied)) == anonymous


# --- user data and consent -------------------------------------------------------------------


def test_user_data_uses_googles_variants() -> None:
    # Published rules (destinations.md f.5): Gmail dots removed, phone E.164 with "+".
    stored, _ = normalize_user({"email": "First.Last@Gmail.com", "phone": "+1 650-555-1212"}, "US")
    sent = body([ev(user=stored)])["user_data"]
    assert sent == {
        "sha256_email_address": [sha256_hex("firstlast@gmail.com")],
        "sha256_phone_number": [sha256_hex("+16505551212")],
    }


def test_address_carries_what_exists() -> None:
    user = {"fn": "f" * 64, "zp": "94043", "country": "us", "ip": "203.0.113.9"}
    assert body([ev(user=user)])["user_data"] == {
        "address": [{"sha256_first_name": "f" * 64, "postal_code": "94043", "country": "us"}]
    }
    assert "user_data" not in body([ev(user={"ip": "203.0.113.9"})])


def test_ad_user_data_denied_sends_no_user_data_and_says_so() -> None:
    user = {"em": EM, "em_google": EM, "ph_e164": "p" * 64, "fn": "f" * 64}
    sent = body([ev(user=user, consent={"ad_user_data": "denied"})])
    assert "user_data" not in sent
    assert sent["consent"] == {"ad_user_data": "DENIED"}


def test_consent_is_sent_when_known() -> None:
    consent = {"ad_user_data": "granted", "ad_personalization": "denied", "ad_storage": "granted"}
    assert body([ev(consent=consent)])["consent"] == {
        "ad_user_data": "GRANTED",
        "ad_personalization": "DENIED",
    }
    assert "consent" not in body([ev()])


# --- responses and validation ----------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204])
def test_2xx_is_delivered(status: int) -> None:
    assert ga4().read_response([ev()], reply(status)) == [Outcome(OutcomeKind.DELIVERED)]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_statuses_retry_with_retry_after(status: int) -> None:
    [outcome] = ga4().read_response([ev()], reply(status, None, {"Retry-After": "12"}))
    assert outcome.kind is OutcomeKind.RETRY and outcome.retry_after_s == 12.0


def test_other_4xx_is_permanent() -> None:
    [outcome] = ga4().read_response([ev()], HttpResponse(400, {}, b"Bad Request"))
    assert outcome.kind is OutcomeKind.PERMANENT and outcome.detail == "HTTP 400: Bad Request"


def test_no_validation_request_unless_validate() -> None:
    assert ga4().validation_request([ev()]) is None


def test_validation_request_is_the_same_body_to_the_debug_endpoint() -> None:
    dest = ga4(validate=True)
    request = dest.validation_request([ev()])
    assert request is not None
    assert request.url.startswith("https://www.google-analytics.com/debug/mp/collect?")
    assert request.body == dest.build_request([ev()]).body
    assert SECRET in request.secrets


def test_validation_messages_become_the_events_dead_reason() -> None:
    messages = {
        "validationMessages": [
            {
                "fieldPath": "events[0].params.currency",
                "description": "Currency is required when value is set.",
                "validationCode": "VALUE_REQUIRED",
            }
        ]
    }
    reasons = ga4(validate=True).read_validation([ev()], reply(200, messages))
    assert reasons == [
        "VALUE_REQUIRED at events[0].params.currency: Currency is required when value is set."
    ]
    assert ga4().read_validation([ev()], reply(200, {"validationMessages": []})) == [None]


def test_validation_messages_are_matched_to_their_event() -> None:
    messages = {
        "validationMessages": [
            {
                "fieldPath": "events",
                "description": "Event at index: [1] has invalid name [_x].",
                "validationCode": "NAME_INVALID",
            },
            {
                "fieldPath": "client_id",
                "description": "missing",
                "validationCode": "VALUE_REQUIRED",
            },
        ]
    }
    reasons = ga4().read_validation([ev("a"), ev("b")], reply(200, messages))
    assert reasons == [
        "VALUE_REQUIRED at client_id: missing",
        "NAME_INVALID at events: Event at index: [1] has invalid name [_x].; "
        "VALUE_REQUIRED at client_id: missing",
    ]


def test_an_unreadable_validation_answer_rejects_nothing() -> None:
    assert ga4().read_validation([ev()], HttpResponse(200, {}, b"<html>")) == [None]


# --- configuration ---------------------------------------------------------------------------


def test_config_keys(tmp_path: Path) -> None:
    extra = """
[[destinations]]
name = "ga4"
type = "ga4"
measurement_id = "G-ABC123"
api_secret = "s3cr3t"
validate = true
"""
    [dest] = load_config(write_config(tmp_path, webhook_url=None, extra=extra)).destinations
    assert dest.options == {"measurement_id": "G-ABC123", "api_secret": "s3cr3t", "validate": True}


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('measurement_id = "G-ABC"', "api_secret: is required"),
        ('api_secret = "s"', "measurement_id: is required"),
        ('measurement_id = "UA-1234-1"\napi_secret = "s"', "measurement id"),
        ('measurement_id = "G-ABC"\napi_secret = "s"\nvalidate = "yes"', "true or false"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, lines: str, error: str) -> None:
    extra = f'\n[[destinations]]\nname = "ga4"\ntype = "ga4"\n{lines}\n'
    with pytest.raises(ConfigError, match=error):
        load_config(write_config(tmp_path, webhook_url=None, extra=extra))
