"""Pinterest Conversions API v5 mapper: golden request, names, identity, consent, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import ConfigError, DestinationConfig, load_config
from relay.destinations.base import HttpResponse, Outcome, OutcomeKind
from relay.destinations.pinterest import (
    PINTEREST_EVENTS,
    STANDARD_EVENTS,
    PinterestDestination,
    decimal_string,
)
from relay.pii import normalize_user, sha256_hex

GOLDEN = Path(__file__).parent.parent / "golden" / "pinterest.json"
T_MS = 1767225600000
OPTIONS = {"ad_account_id": "1234567890", "access_token": "test-token"}


def destination(**kw: Any) -> PinterestDestination:
    options = {**OPTIONS, **kw.pop("options", {})}
    return PinterestDestination(
        DestinationConfig(name="pinterest", type="pinterest", options=options, **kw)
    )


def make_event(name: str = "purchase", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "event_name": name,
        "event_time_ms": T_MS + 999,
        "user": {"em": sha256_hex("buyer@example.com")},
    }
    event.update(fields)
    return event


def sent(dest: PinterestDestination, event: dict[str, Any]) -> dict[str, Any]:
    [element] = orjson.loads(dest.build_request([event]).body)["data"]
    return element


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return HttpResponse(status, headers or {}, raw)


# ---- golden


def test_golden_request() -> None:
    golden = orjson.loads(GOLDEN.read_bytes())
    request = destination().build_request(golden["events"])
    shown = request.redacted()
    assert request.method == golden["request"]["method"]
    assert shown["url"] == golden["request"]["url"]
    assert shown["headers"] == golden["request"]["headers"]
    assert orjson.loads(request.body) == golden["request"]["body"]
    assert request.headers["Authorization"] == "Bearer test-token"
    assert request.secrets == ("test-token",)
    assert "test-token" not in repr(request)


def test_golden_identity_is_the_platforms_normalization() -> None:
    """The golden hashes, recomputed from plaintext as Pinterest's rules state them."""
    golden = orjson.loads(GOLDEN.read_bytes())
    user_data = golden["request"]["body"]["data"][0]["user_data"]
    plain = {
        "em": "buyer@example.com",
        "ph": "16505551212",  # (650) 555-1212 in the US: digits with country code
        "fn": "ann",
        "ln": "lee",
        "ge": "f",
        "db": "19900203",
        "ct": "sanfrancisco",
        "st": "ca",
        "zp": "94103",  # digits only (the ZIP+4 tail is not the 5-digit zip)
        "country": "us",
        "external_id": "cust-42",
    }
    assert {k: v for k, v in user_data.items() if k in plain} == {
        k: [sha256_hex(v)] for k, v in plain.items()
    }
    assert user_data["client_ip_address"] == "203.0.113.7"  # raw
    assert user_data["click_id"] == "dj0yJnU9cGluLWNsaWNr"  # from the page URL's epik


def test_published_phone_example_goes_into_ph() -> None:
    stored, _ = normalize_user({"phone": "(650)555-1212"}, "US")
    element = sent(destination(), make_event(user={**stored, "ip": "198.51.100.1"}))
    assert element["user_data"]["ph"] == [sha256_hex("16505551212")]


# ---- event names


@pytest.mark.parametrize(("canonical", "expected"), sorted(STANDARD_EVENTS.items()))
def test_standard_names_are_pinterest_names(canonical: str, expected: str) -> None:
    assert expected in PINTEREST_EVENTS
    assert sent(destination(), make_event(canonical))["event_name"] == expected


def test_unknown_names_are_pinterests_custom_event_and_its_own_names_pass() -> None:
    dest = destination()
    assert sent(dest, make_event("newsletter_click"))["event_name"] == "custom"
    assert sent(dest, make_event("watch_video"))["event_name"] == "watch_video"
    assert dest.unsendable(make_event("newsletter_click")) is None


def test_event_names_override() -> None:
    dest = destination(event_names={"newsletter_click": "lead", "purchase": "custom"})
    assert sent(dest, make_event("newsletter_click"))["event_name"] == "lead"
    assert sent(dest, make_event("purchase"))["event_name"] == "custom"


def test_an_override_to_a_name_pinterest_does_not_accept_is_unsendable() -> None:
    dest = destination(event_names={"purchase": "Purchase"})
    reason = dest.unsendable(make_event("purchase"))
    assert reason is not None and '"Purchase", which is not a Pinterest event name' in reason


# ---- fields


def test_dedup_id_time_in_seconds_and_source_url() -> None:
    element = sent(destination(), make_event(page={"url": "https://shop.example/p"}))
    assert element["event_id"] == "e-1"
    assert element["event_time"] == (T_MS + 999) // 1000
    assert element["event_source_url"] == "https://shop.example/p"


@pytest.mark.parametrize(
    ("source", "ua", "expected"),
    [
        (None, None, "web"),
        ("website", None, "web"),
        ("physical_store", None, "offline"),
        ("phone_call", None, "offline"),
        ("other", None, "offline"),
        ("app", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)", "app_android"),
        ("app", "MyShop/3.2 CFNetwork/1490.0.4 Darwin/23.2.0", "app_ios"),
        ("app", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X)", "app_ios"),
    ],
)
def test_action_source(source: str | None, ua: str | None, expected: str) -> None:
    event = make_event()
    if source:
        event["action_source"] = source
    if ua:
        event["user"] = {**event["user"], "user_agent": ua}
    assert sent(destination(), event)["action_source"] == expected


def test_an_app_event_whose_os_is_unknown_is_unsendable() -> None:
    reason = destination().unsendable(make_event(action_source="app"))
    assert reason is not None and "app_android or app_ios" in reason


def test_money_is_sent_as_strings_and_contents_counted() -> None:
    props = {
        "value": 1e16,
        "currency": "JPY",
        "order_id": "o-1",
        "contents": [{"id": 7, "quantity": 3, "price": 5}, {"id": "b", "price": 0.1}, "junk"],
    }
    custom = sent(destination(), make_event(properties=props))["custom_data"]
    assert custom == {
        "currency": "JPY",
        "value": "10000000000000000",
        "order_id": "o-1",
        "content_ids": ["7", "b"],
        "contents": [
            {"id": "7", "item_price": "5", "quantity": 3},
            {"id": "b", "item_price": "0.1"},
        ],
        "num_items": 4,
    }
    assert decimal_string(129.99) == "129.99"
    assert decimal_string(1e-7) == "0.0000001"


def test_search_term_is_the_search_string() -> None:
    custom = sent(destination(), make_event("search", properties={"search_term": "red shoes"}))
    assert custom["custom_data"] == {"search_string": "red shoes"}


def test_click_id_stored_epik_wins_over_the_url_parameter() -> None:
    page = {"url": "https://shop.example/?epik=from-url"}
    user = {"em": sha256_hex("a@b.co")}
    assert sent(destination(), make_event(page=page, user=user))["user_data"]["click_id"] == (
        "from-url"
    )
    stored = {**user, "epik": "from-cookie"}
    assert sent(destination(), make_event(page=page, user=stored))["user_data"]["click_id"] == (
        "from-cookie"
    )


def test_a_postcode_with_letters_is_not_sent_as_zp() -> None:
    stored, _ = normalize_user({"zip": "M1 1AE", "country": "GB"}, "GB")
    user_data = sent(destination(), make_event(user={**make_event()["user"], **stored}))
    assert "zp" not in user_data["user_data"]
    assert user_data["user_data"]["country"] == [sha256_hex("gb")]


# ---- consent and the identity requirement


def test_ad_user_data_denied_strips_every_hashed_identifier() -> None:
    stored, _ = normalize_user(
        {
            "email": "a@b.co",
            "phone": "+14155550100",
            "first_name": "A",
            "city": "Paris",
            "zip": "75001",
            "country": "FR",
            "external_id": "x",
            "ip": "198.51.100.1",
            "user_agent": "UA/1",
            "epik": "click",
        },
        "US",
    )
    event = make_event(user=stored, consent={"ad_user_data": "denied"})
    assert destination().unsendable(event) is None
    element = sent(destination(), event)
    assert element["user_data"] == {
        "client_ip_address": "198.51.100.1",
        "client_user_agent": "UA/1",
        "click_id": "click",
    }
    assert "opt_out" not in element


def test_without_email_or_ip_and_user_agent_the_event_is_unsendable() -> None:
    dest = destination()
    assert dest.unsendable(make_event(user={"ip": "198.51.100.1", "user_agent": "UA"})) is None
    reason = dest.unsendable(make_event(user={"ip": "198.51.100.1", "ph": sha256_hex("1")}))
    assert reason == "Pinterest needs user.email, or both user.ip and user.user_agent"
    denied = make_event(consent={"ad_user_data": "denied"})
    assert "ad_user_data denied" in (dest.unsendable(denied) or "")


# ---- request


def test_test_mode_and_endpoint_override() -> None:
    assert destination().build_request([make_event()]).url == (
        "https://api.pinterest.com/v5/ad_accounts/1234567890/events"
    )
    dest = destination(endpoint="http://127.0.0.1:8999/", options={"test": True})
    assert dest.build_request([make_event()]).url == (
        "http://127.0.0.1:8999/v5/ad_accounts/1234567890/events?test=true"
    )


def test_config_keys(tmp_path: Path) -> None:
    def load(extra: str) -> DestinationConfig:
        path = tmp_path / "relay.toml"
        path.write_text(
            f'[storage]\npath = "r.db"\n[[destinations]]\nname = "p"\ntype = "pinterest"\n{extra}'
        )
        return load_config(path, environ={"TOKEN": "secret"}).destinations[0]

    config = load('ad_account_id = "549755885175"\naccess_token = "${TOKEN}"\ntest = true')
    assert dict(config.options) == {
        "ad_account_id": "549755885175",
        "access_token": "secret",
        "test": True,
    }
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.access_token: is required"):
        load('ad_account_id = "1"')
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.ad_account_id: must be"):
        load('ad_account_id = "act_1"\naccess_token = "t"')
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.test: must be true or false"):
        load('ad_account_id = "1"\naccess_token = "t"\ntest = "yes"')


# ---- responses

THREE = [make_event(event_id=f"e-{i}") for i in range(3)]


def statuses(*entries: tuple[str, str]) -> list[dict[str, str]]:
    return [
        {
            "status": s,
            "error_message": msg if s == "failed" else "",
            "warning_message": msg if s == "processed" else "",
        }
        for s, msg in entries
    ]


def test_200_all_processed_is_delivered_with_warnings_kept() -> None:
    body = {
        "num_events_received": 3,
        "num_events_processed": 3,
        "events": statuses(
            ("processed", ""), ("processed", "Missing event_source_url"), ("processed", "")
        ),
    }
    assert destination().read_response(THREE, reply(200, body)) == [
        Outcome(OutcomeKind.DELIVERED),
        Outcome(OutcomeKind.DELIVERED, "Pinterest: Missing event_source_url"),
        Outcome(OutcomeKind.DELIVERED),
    ]


def test_200_with_a_failed_status_fails_that_event() -> None:
    body = {
        "events": statuses(("processed", ""), ("failed", "Invalid currency"), ("processed", ""))
    }
    outcomes = destination().read_response(THREE, reply(200, body))
    assert [o.kind for o in outcomes] == ["delivered", "permanent", "delivered"]
    assert outcomes[1] == Outcome(OutcomeKind.PERMANENT, "Pinterest: Invalid currency")


def test_200_without_per_event_statuses_is_delivered() -> None:
    assert (
        destination().read_response(THREE, reply(200, b"")) == [Outcome(OutcomeKind.DELIVERED)] * 3
    )


def test_422_code_953_fails_only_the_failed_events() -> None:
    message = "Invalid event_timestamp parameter. Given timestamp is in the past."
    body = {
        "code": 953,
        "message": "Not all events were successfully processed",
        "details": {
            "num_events_received": 3,
            "num_events_processed": 2,
            "events": statuses(("processed", ""), ("processed", ""), ("failed", message)),
        },
    }
    outcomes = destination().read_response(THREE, reply(422, body))
    assert outcomes == [
        Outcome(OutcomeKind.DELIVERED),
        Outcome(OutcomeKind.DELIVERED),
        Outcome(OutcomeKind.PERMANENT, f"Pinterest: {message}"),
    ]


def test_422_without_usable_details_is_bisected() -> None:
    body = {"code": 953, "message": "Not all events were successfully processed"}
    outcomes = destination().read_response(THREE, reply(422, body))
    assert {(o.kind, o.whole_batch) for o in outcomes} == {(OutcomeKind.PERMANENT, True)}


def test_400_code_4196_is_a_permanent_whole_batch_rejection() -> None:
    body = {"code": 4196, "message": "Invalid parameters: data[0].event_name"}
    [outcome] = destination().read_response(THREE[:1], reply(400, body))
    assert outcome == Outcome(
        OutcomeKind.PERMANENT,
        "HTTP 400: Pinterest code 4196: Invalid parameters: data[0].event_name",
        whole_batch=True,
    )


@pytest.mark.parametrize(
    ("status", "code", "hint"),
    [(401, 2, "access_token is not valid"), (403, 29, "needs a role on this ad account")],
)
def test_auth_and_permission_faults_pause_the_destination(
    status: int, code: int, hint: str
) -> None:
    outcomes = destination().read_response(THREE, reply(status, {"code": code, "message": "no"}))
    assert len(outcomes) == 3
    for o in outcomes:
        assert (o.kind, o.pause, o.whole_batch) == (OutcomeKind.RETRY, True, False)
        assert o.detail and o.detail.startswith(f"HTTP {status}: Pinterest code {code}: no: ")
        assert hint in o.detail


@pytest.mark.parametrize(
    ("status", "body", "headers", "retry_after"),
    [
        (429, {"code": 8, "message": "Rate limit exceeded"}, {"Retry-After": "30"}, 30.0),
        (503, {"code": 4197, "message": "Endpoint ramped down"}, {}, None),
        (502, b"<html>bad gateway</html>", {}, None),
    ],
)
def test_transient_errors_are_retried_honouring_retry_after(
    status: int, body: Any, headers: dict[str, str], retry_after: float | None
) -> None:
    [o] = destination().read_response(THREE[:1], reply(status, body, headers))
    assert (o.kind, o.retry_after_s, o.pause) == (OutcomeKind.RETRY, retry_after, False)
    assert o.detail is not None and o.detail.startswith(f"HTTP {status}: ")
