"""LinkedIn Conversions API mapper: golden request, rule mapping, identity, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import ConfigError, DestinationConfig, load_config
from relay.destinations.base import HttpResponse, Outcome, OutcomeKind
from relay.destinations.linkedin import (
    DEFAULT_API_VERSION,
    LinkedInDestination,
    decimal_string,
    parse_index_errors,
)
from relay.pii import normalize_user, sha256_hex
from tests.conftest import write_config

GOLDEN = json.loads((Path(__file__).parent.parent / "golden" / "linkedin.json").read_text())
TOKEN = "test-token"
RULES = {"purchase": "1111", "generate_lead": "2222", "sign_up": "3333"}
EM = sha256_hex("buyer@example.com")
T = 1_763_000_000_000


def linkedin(**options: Any) -> LinkedInDestination:
    event_names = options.pop("event_names", {})
    opts = {"access_token": TOKEN, "conversion_rules": RULES, **options}
    return LinkedInDestination(
        DestinationConfig(name="linkedin", type="linkedin", event_names=event_names, options=opts)
    )


def ev(event_id: str = "e-1", name: str = "purchase", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_id": event_id, "event_name": name, "event_time_ms": T}
    base.setdefault("user", {"em": EM})
    base.update(fields)
    return base


def body(dest: LinkedInDestination, events: list[dict[str, Any]]) -> Any:
    return orjson.loads(dest.build_request(events).body)


def reply(status: int, payload: Any = None, headers: dict[str, str] | None = None):
    raw = b"" if payload is None else orjson.dumps(payload)
    return HttpResponse(status, headers or {}, raw)


# --- the request --------------------------------------------------------------------------


def test_golden_request() -> None:
    request = linkedin().build_request(GOLDEN["events"])
    shown = request.redacted()
    expected = GOLDEN["request"]
    assert (request.method, shown["url"], shown["headers"]) == (
        expected["method"],
        expected["url"],
        expected["headers"],
    )
    assert orjson.loads(request.body) == expected["body"]


def test_token_is_a_bearer_header_and_redacted() -> None:
    request = linkedin().build_request([ev()])
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.secrets == (TOKEN,)
    assert TOKEN not in repr(request) and TOKEN not in json.dumps(request.redacted())


def test_api_version_defaults_to_a_current_one_and_is_overridable() -> None:
    assert DEFAULT_API_VERSION >= "202603"  # 202511 sunsets 2026-11-16
    assert linkedin().build_request([ev()]).headers["LinkedIn-Version"] == DEFAULT_API_VERSION
    request = linkedin(api_version="202609").build_request([ev()])
    assert request.headers["LinkedIn-Version"] == "202609"


def test_endpoint_override_keeps_the_path() -> None:
    dest = LinkedInDestination(
        DestinationConfig(
            name="li",
            type="linkedin",
            endpoint="http://127.0.0.1:9999/",
            options={"access_token": TOKEN, "conversion_rules": RULES},
        )
    )
    assert dest.build_request([ev()]).url == "http://127.0.0.1:9999/rest/conversionEvents"


def test_limits() -> None:
    dest = linkedin()
    assert LinkedInDestination.max_batch == 5000
    assert dest.deadline_ms({"event_time_ms": T}) == T + 90 * 86400 * 1000


def test_time_is_epoch_milliseconds() -> None:
    [element] = body(linkedin(), [ev(event_time_ms=T + 123)])["elements"]
    assert element["conversionHappenedAt"] == T + 123


def test_event_id_is_the_dedup_field() -> None:
    [element] = body(linkedin(), [ev("pixel-id-7")])["elements"]
    assert element["eventId"] == "pixel-id-7"


@pytest.mark.parametrize(
    ("amount", "text"),
    [(50, "50"), (50.0, "50.0"), (19.99, "19.99"), (1e-05, "0.00001"), (1e16, "10000000000000000")],
)
def test_amount_is_a_decimal_string(amount: float, text: str) -> None:
    assert decimal_string(amount) == text


def test_value_without_currency_sends_no_conversion_value() -> None:
    [element] = body(linkedin(), [ev(properties={"value": 10})])["elements"]
    assert "conversionValue" not in element


# --- conversion rules ------------------------------------------------------------------------


def test_each_event_maps_to_its_conversion_rule_urn() -> None:
    events = [ev("a", "purchase"), ev("b", "generate_lead"), ev("c", "sign_up")]
    conversions = [e["conversion"] for e in body(linkedin(), events)["elements"]]
    assert conversions == [
        "urn:lla:llaPartnerConversion:1111",
        "urn:lla:llaPartnerConversion:2222",
        "urn:lla:llaPartnerConversion:3333",
    ]


def test_event_names_override_maps_to_a_rule_id() -> None:
    dest = linkedin(event_names={"purchase": "9999", "add_to_cart": "4444"})
    assert dest.unsendable(ev(name="add_to_cart")) is None
    events = [ev("a", "purchase"), ev("b", "add_to_cart")]
    conversions = [e["conversion"] for e in body(dest, events)["elements"]]
    assert conversions == ["urn:lla:llaPartnerConversion:9999", "urn:lla:llaPartnerConversion:4444"]


def test_an_event_without_a_rule_is_unsendable_naming_the_missing_entry() -> None:
    reason = linkedin().unsendable(ev(name="add_to_cart"))
    assert reason is not None
    assert "conversion_rules" in reason and 'add_to_cart = "<rule id>"' in reason


def test_an_event_names_override_that_is_not_a_rule_id_is_unsendable() -> None:
    reason = linkedin(event_names={"purchase": "Purchase"}).unsendable(ev())
    assert reason is not None and "not a conversion rule id" in reason


def test_too_long_event_id_is_unsendable() -> None:
    assert linkedin().unsendable(ev("x" * 64)) is None
    reason = linkedin().unsendable(ev("x" * 65))
    assert reason is not None and "64" in reason


# --- identity and consent --------------------------------------------------------------------


def test_email_hash_and_raw_li_fat_id_are_the_user_ids() -> None:
    user = {"em": EM, "li_fat_id": "AQ-click", "ip": "203.0.113.9", "fn": "a" * 64}
    [element] = body(linkedin(), [ev(user=user)])["elements"]
    assert element["user"] == {
        "userIds": [
            {"idType": "SHA256_EMAIL", "idValue": EM},
            {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "AQ-click"},
        ]
    }


def test_li_fat_id_from_the_landing_url_when_no_cookie_value() -> None:
    event = ev(user={}, page={"url": "https://shop.example/?li_fat_id=AQ-url&x=1"})
    [element] = body(linkedin(), [event])["elements"]
    assert element["user"]["userIds"] == [
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "AQ-url"}
    ]
    stored = ev(user={"li_fat_id": "AQ-cookie"}, page=event["page"])
    [element] = body(linkedin(), [stored])["elements"]
    assert element["user"]["userIds"][0]["idValue"] == "AQ-cookie"


def test_email_normalization_published_rule() -> None:
    # SHA256_EMAIL: SHA-256 hex of the trimmed, lowercased email (destinations.md c.5)
    stored, _ = normalize_user({"email": "  Buyer@Example.COM "}, "US")
    [element] = body(linkedin(), [ev(user=stored)])["elements"]
    assert element["user"]["userIds"] == [{"idType": "SHA256_EMAIL", "idValue": EM}]


def test_an_event_without_any_user_id_is_unsendable() -> None:
    reason = linkedin().unsendable(ev(user={"ip": "203.0.113.9", "user_agent": "UA"}))
    assert reason is not None and "user id" in reason


def test_ad_user_data_denied_strips_the_email_hash_but_keeps_the_click_id() -> None:
    denied = {"ad_user_data": "denied"}
    with_click = ev(user={"em": EM, "li_fat_id": "AQ-click"}, consent=denied)
    assert linkedin().unsendable(with_click) is None
    [element] = body(linkedin(), [with_click])["elements"]
    assert element["user"]["userIds"] == [
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "AQ-click"}
    ]
    reason = linkedin().unsendable(ev(user={"em": EM}, consent=denied))
    assert reason is not None and "ad_user_data denied" in reason


# --- configuration ---------------------------------------------------------------------------


def test_config_keys(tmp_path: Path) -> None:
    extra = """
[[destinations]]
name = "li"
type = "linkedin"
access_token = "tok"
api_version = "202606"

[destinations.conversion_rules]
purchase = "1111"
sign_up = 3333
generate_lead = "urn:lla:llaPartnerConversion:2222"
"""
    config = load_config(write_config(tmp_path, webhook_url=None, extra=extra))
    [dest] = config.destinations
    assert dest.options == {
        "access_token": "tok",
        "conversion_rules": {"purchase": "1111", "sign_up": "3333", "generate_lead": "2222"},
        "api_version": "202606",
    }


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('access_token = "tok"', "conversion_rules: is required"),
        ('conversion_rules = { purchase = "1" }', "access_token: is required"),
        ('access_token = "t"\nconversion_rules = { purchase = "abc" }', "rule ids are numbers"),
        (
            'access_token = "t"\nconversion_rules = { purchase = "1" }\napi_version = "2026"',
            "YYYYMM",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, lines: str, error: str) -> None:
    extra = f'\n[[destinations]]\nname = "li"\ntype = "linkedin"\n{lines}\n'
    with pytest.raises(ConfigError, match=error):
        load_config(write_config(tmp_path, webhook_url=None, extra=extra))


# --- responses -------------------------------------------------------------------------------

THREE = [ev("a"), ev("b"), ev("c")]


def test_batch_success_is_read_per_element() -> None:
    answer = {
        "elements": [{"status": 201}, {"status": 400, "message": "bad rule"}, {"status": 201}]
    }
    outcomes = linkedin().read_response(THREE, reply(200, answer))
    assert [o.kind for o in outcomes] == [
        OutcomeKind.DELIVERED,
        OutcomeKind.PERMANENT,
        OutcomeKind.DELIVERED,
    ]
    assert outcomes[1].detail is not None and "bad rule" in outcomes[1].detail
    assert not outcomes[1].whole_batch


def test_2xx_without_elements_delivers_everything() -> None:
    outcomes = linkedin().read_response(THREE, reply(201))
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}


def test_422_index_lines_fail_those_events_and_resend_the_rest() -> None:
    message = (
        "Index: 1, ERROR :: /conversionValue/amount :: field is required but not found\n"
        "ERROR :: /user/userInfo/firstName :: field is required but not found\n"
    )
    outcomes = linkedin().read_response(THREE, reply(422, {"message": message, "status": 422}))
    resend = Outcome(OutcomeKind.RETRY, "resent: LinkedIn rejected another event", resend_now=True)
    assert outcomes[0] == outcomes[2] == resend
    assert outcomes[1] == Outcome(
        OutcomeKind.PERMANENT,
        "HTTP 422: /conversionValue/amount :: field is required but not found; "
        "/user/userInfo/firstName :: field is required but not found",
    )


def test_parse_index_errors_several_indices() -> None:
    message = "Index: 0, ERROR :: /a :: x\nIndex: 2, ERROR :: /b :: y\nERROR :: /c :: z\n"
    assert parse_index_errors(message) == {0: "/a :: x", 2: "/b :: y; /c :: z"}


def test_422_without_index_lines_is_a_whole_batch_rejection() -> None:
    outcomes = linkedin().read_response(
        THREE, reply(422, {"message": "Unprocessable", "status": 422})
    )
    assert all(o.kind is OutcomeKind.PERMANENT and o.whole_batch for o in outcomes)
    assert outcomes[0].detail == "HTTP 422: Unprocessable"


@pytest.mark.parametrize(
    "error",
    [
        {"status": 401, "code": "REVOKED_ACCESS_TOKEN", "serviceErrorCode": 65601, "message": "m"},
        {"status": 401, "serviceErrorCode": 65601, "message": "revoked"},
    ],
)
def test_revoked_token_pauses(error: dict[str, Any]) -> None:
    outcomes = linkedin().read_response(THREE, reply(401, error))
    assert all(o.kind is OutcomeKind.RETRY and o.pause for o in outcomes)
    assert outcomes[0].detail is not None and "access_token" in outcomes[0].detail


def test_other_401_is_retried_without_pausing() -> None:
    error = {
        "status": 401,
        "code": "INVALID_ACCESS_TOKEN",
        "serviceErrorCode": 65600,
        "message": "x",
    }
    [outcome] = linkedin().read_response([ev()], reply(401, error))
    assert outcome == Outcome(OutcomeKind.RETRY, "HTTP 401 INVALID_ACCESS_TOKEN: x")


def test_403_pauses() -> None:
    error = {"status": 403, "serviceErrorCode": 100, "message": "Not enough permissions"}
    [outcome] = linkedin().read_response([ev()], reply(403, error))
    assert outcome.kind is OutcomeKind.RETRY and outcome.pause
    assert outcome.detail == "HTTP 403 100: Not enough permissions"


def test_426_pauses_and_says_to_update_api_version() -> None:
    [outcome] = linkedin(api_version="202511").read_response([ev()], reply(426, {"message": "x"}))
    assert outcome.kind is OutcomeKind.RETRY and outcome.pause
    assert outcome.detail is not None
    assert "202511" in outcome.detail and "api_version" in outcome.detail


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_statuses_retry_with_retry_after(status: int) -> None:
    outcomes = linkedin().read_response(
        THREE, reply(status, {"message": "slow down"}, {"Retry-After": "30"})
    )
    assert all(o.kind is OutcomeKind.RETRY and o.retry_after_s == 30.0 for o in outcomes)
    assert not any(o.pause for o in outcomes)


def test_other_4xx_is_permanent_whole_batch_with_the_message() -> None:
    error = {"status": 400, "message": "Conversion's method should be CONVERSIONS_API"}
    outcomes = linkedin().read_response(THREE, reply(400, error))
    assert (
        outcomes
        == [
            Outcome(
                OutcomeKind.PERMANENT,
                "HTTP 400: Conversion's method should be CONVERSIONS_API",
                whole_batch=True,
            )
        ]
        * 3
    )
