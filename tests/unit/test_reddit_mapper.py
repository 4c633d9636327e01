"""Reddit Conversions API v3 mapper: golden request, event types, identity, LDU, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import ConfigError, DestinationConfig, load_config
from relay.destinations.base import HttpResponse, Outcome, OutcomeKind
from relay.destinations.reddit import RedditDestination
from relay.pii import normalize_user, sha256_hex
from tests.conftest import write_config

GOLDEN = json.loads((Path(__file__).parent.parent / "golden" / "reddit.json").read_text())
TOKEN = "test-token"
T = 1_763_000_000_000
EM = sha256_hex("buyer@example.com")


def reddit(event_names: dict[str, str] | None = None, **options: Any) -> RedditDestination:
    opts = {"pixel_id": "t2_pixel123", "access_token": TOKEN, **options}
    return RedditDestination(
        DestinationConfig(name="reddit", type="reddit", event_names=event_names or {}, options=opts)
    )


def ev(event_id: str = "e-1", name: str = "purchase", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_id": event_id, "event_name": name, "event_time_ms": T}
    base.update(fields)
    return base


def sent(event: dict[str, Any], dest: RedditDestination | None = None) -> Any:
    [payload] = orjson.loads((dest or reddit()).build_request([event]).body)["data"]["events"]
    return payload


def reply(status: int, payload: Any = None, headers: dict[str, str] | None = None):
    raw = b"" if payload is None else orjson.dumps(payload)
    return HttpResponse(status, headers or {}, raw)


# --- the request --------------------------------------------------------------------------


def test_golden_request() -> None:
    request = reddit().build_request(GOLDEN["events"])
    shown = request.redacted()
    expected = GOLDEN["request"]
    assert (request.method, shown["url"], shown["headers"]) == (
        expected["method"],
        expected["url"],
        expected["headers"],
    )
    assert orjson.loads(request.body) == expected["body"]


def test_token_is_a_redacted_bearer_header() -> None:
    request = reddit().build_request([ev()])
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(request) and TOKEN not in json.dumps(request.redacted())


def test_pixel_id_is_quoted_into_the_path_and_endpoint_overrides_the_host() -> None:
    dest = RedditDestination(
        DestinationConfig(
            name="r",
            type="reddit",
            endpoint="http://127.0.0.1:8081",
            options={"pixel_id": "t2_a/b", "access_token": TOKEN},
        )
    )
    url = dest.build_request([ev()]).url
    assert url == "http://127.0.0.1:8081/api/v3/pixels/t2_a%2Fb/conversion_events"


def test_limits() -> None:
    assert RedditDestination.max_batch == 1000
    assert reddit().deadline_ms({"event_time_ms": T}) == T + 7 * 86400 * 1000


def test_time_is_epoch_milliseconds_and_conversion_id_is_the_event_id() -> None:
    payload = sent(ev("pixel-conv-9", event_time_ms=T + 5))
    assert payload["event_at"] == T + 5
    assert payload["metadata"]["conversion_id"] == "pixel-conv-9"


def test_test_id_only_when_configured() -> None:
    assert "test_id" not in orjson.loads(reddit().build_request([ev()]).body)["data"]
    data = orjson.loads(reddit(test_id="t2_test").build_request([ev()]).body)["data"]
    assert data["test_id"] == "t2_test"


# --- event types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canonical", "tracking_type"),
    [
        ("page_view", "PAGE_VISIT"),
        ("view_item", "VIEW_CONTENT"),
        ("search", "SEARCH"),
        ("add_to_cart", "ADD_TO_CART"),
        ("add_to_wishlist", "ADD_TO_WISHLIST"),
        ("generate_lead", "LEAD"),
        ("purchase", "PURCHASE"),
        ("sign_up", "SIGN_UP"),
    ],
)
def test_standard_events(canonical: str, tracking_type: str) -> None:
    assert sent(ev(name=canonical))["type"] == {"tracking_type": tracking_type}


def test_other_events_are_custom_with_their_name() -> None:
    assert sent(ev(name="begin_checkout"))["type"] == {
        "tracking_type": "CUSTOM",
        "custom_event_name": "begin_checkout",
    }


def test_event_names_override_to_a_tracking_type_or_a_custom_name() -> None:
    dest = reddit(event_names={"subscribe": "SIGN_UP", "purchase": "BigPurchase"})
    assert sent(ev(name="subscribe"), dest)["type"] == {"tracking_type": "SIGN_UP"}
    assert sent(ev(name="purchase"), dest)["type"] == {
        "tracking_type": "CUSTOM",
        "custom_event_name": "BigPurchase",
    }


@pytest.mark.parametrize(
    ("action_source", "expected"),
    [
        (None, "WEBSITE"),
        ("website", "WEBSITE"),
        ("app", "APP"),
        ("physical_store", "PHYSICAL_STORE"),
        ("email", "OTHER"),
        ("system_generated", "OTHER"),
    ],
)
def test_action_source(action_source: str | None, expected: str) -> None:
    event = ev() if action_source is None else ev(action_source=action_source)
    assert sent(event)["action_source"] == expected


def test_metadata() -> None:
    props = {
        "value": 12.5,
        "currency": "USD",
        "contents": [{"id": "A", "quantity": 2}, {"id": "B"}, {"quantity": 4}],
    }
    assert sent(ev("c-1", properties=props))["metadata"] == {
        "conversion_id": "c-1",
        "currency": "USD",
        "value": 12.5,
        "item_count": 3,
        "products": [{"id": "A"}, {"id": "B"}],
    }
    assert sent(ev("c-2"))["metadata"] == {"conversion_id": "c-2"}


# --- identity ---------------------------------------------------------------------------------


def test_user_fields_hashed_and_raw() -> None:
    user = {
        "em": EM,
        "external_id": "e" * 64,
        "ph": "d" * 64,
        "ph_e164": "p" * 64,
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
        "fn": "f" * 64,
    }
    assert sent(ev(user=user))["user"] == {
        "email": EM,
        "external_id": "e" * 64,
        "phone_number": "p" * 64,
        # hashed IP: the stricter reading of RT's "hashed when hashing is on"
        "ip_address": sha256_hex("203.0.113.9"),
        "user_agent": "Mozilla/5.0",
    }


def test_phone_is_the_e164_hash() -> None:
    stored, _ = normalize_user({"phone": "(650) 555-1212"}, "US")
    assert sent(ev(user=stored))["user"]["phone_number"] == sha256_hex("+16505551212")


def test_click_id_from_the_cookie_else_the_landing_url() -> None:
    page = {"url": "https://shop.example/?rdt_cid=from-url"}
    assert sent(ev(page=page))["click_id"] == "from-url"
    assert sent(ev(page=page, user={"rdt_cid": "stored"}))["click_id"] == "stored"
    assert "click_id" not in sent(ev())


def test_ad_user_data_denied_sets_ldu_and_drops_hashed_ids() -> None:
    user = {
        "em": EM,
        "external_id": "e" * 64,
        "ph_e164": "p" * 64,
        "ip": "203.0.113.9",
        "user_agent": "UA",
        "rdt_cid": "click",
    }
    payload = sent(ev(user=user, consent={"ad_user_data": "denied"}))
    assert payload["user"] == {"data_processing_options": {"modes": ["LDU"]}, "user_agent": "UA"}
    assert payload["click_id"] == "click"
    granted = sent(ev(user=user, consent={"ad_user_data": "granted"}))
    assert "data_processing_options" not in granted["user"] and granted["user"]["email"] == EM


# --- responses --------------------------------------------------------------------------------

TWO = [ev("a"), ev("b")]


def test_200_is_delivered() -> None:
    outcomes = reddit().read_response(TWO, reply(200, {"message": "ok"}))
    assert outcomes == [Outcome(OutcomeKind.DELIVERED)] * 2


def test_400_is_a_whole_batch_rejection_with_the_message() -> None:
    error = {"error": {"code": 400, "message": "invalid event_at"}}
    outcomes = reddit().read_response(TWO, reply(400, error))
    assert (
        outcomes
        == [Outcome(OutcomeKind.PERMANENT, "HTTP 400: invalid event_at", whole_batch=True)] * 2
    )


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"message": "top-level"}', "HTTP 400: top-level"),
        (b'{"error": "plain"}', "HTTP 400: plain"),
        (b"not json", "HTTP 400: not json"),
    ],
)
def test_error_messages_of_other_shapes(body: bytes, detail: str) -> None:
    [outcome] = reddit().read_response([ev()], HttpResponse(400, {}, body))
    assert outcome.detail == detail


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_pause(status: int) -> None:
    outcomes = reddit().read_response(TWO, reply(status, {"error": {"message": "unauthorized"}}))
    assert all(o.kind is OutcomeKind.RETRY and o.pause for o in outcomes)


@pytest.mark.parametrize("status", [429, 500, 502])
def test_transient_statuses_retry_with_retry_after(status: int) -> None:
    outcomes = reddit().read_response(TWO, reply(status, None, {"Retry-After": "60"}))
    assert all(o.kind is OutcomeKind.RETRY and o.retry_after_s == 60.0 for o in outcomes)
    assert not any(o.pause for o in outcomes)


# --- configuration ---------------------------------------------------------------------------


def test_config_keys(tmp_path: Path) -> None:
    extra = """
[[destinations]]
name = "reddit"
type = "reddit"
pixel_id = "t2_abc"
access_token = "tok"
test_id = "t2_abc_test"
"""
    [dest] = load_config(write_config(tmp_path, webhook_url=None, extra=extra)).destinations
    assert dest.options == {"pixel_id": "t2_abc", "access_token": "tok", "test_id": "t2_abc_test"}


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ('pixel_id = "t2_abc"', "access_token: is required"),
        ('access_token = "tok"', "pixel_id: is required"),
        ('pixel_id = ""\naccess_token = "tok"', "non-empty"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, lines: str, error: str) -> None:
    extra = f'\n[[destinations]]\nname = "reddit"\ntype = "reddit"\n{lines}\n'
    with pytest.raises(ConfigError, match=error):
        load_config(write_config(tmp_path, webhook_url=None, extra=extra))
