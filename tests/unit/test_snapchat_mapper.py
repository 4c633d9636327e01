"""Snap Conversions API v3 mapper: golden request, names, identity, consent, validation, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import ConfigError, DestinationConfig, load_config
from relay.destinations.base import HttpResponse, Outcome, OutcomeKind
from relay.destinations.snapchat import SNAP_EVENTS, STANDARD_EVENTS, SnapchatDestination
from relay.pii import normalize_user, sha256_hex

GOLDEN = Path(__file__).parent.parent / "golden" / "snapchat.json"
T_MS = 1767225600000
OPTIONS = {"pixel_id": "1234567890", "access_token": "test-token"}
URL = "https://shop.example/p"


def destination(**kw: Any) -> SnapchatDestination:
    options = {**OPTIONS, **kw.pop("options", {})}
    return SnapchatDestination(
        DestinationConfig(name="snapchat", type="snapchat", options=options, **kw)
    )


def make_event(name: str = "page_view", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "event_name": name,
        "event_time_ms": T_MS + 999,
        "action_source": "website",
        "page": {"url": URL},
        "user": {"em": sha256_hex("buyer@example.com")},
    }
    event.update(fields)
    return event


def purchase(**props: Any) -> dict[str, Any]:
    return make_event("purchase", properties={"value": 10.5, "currency": "EUR", **props})


def sent(dest: SnapchatDestination, event: dict[str, Any]) -> dict[str, Any]:
    [element] = orjson.loads(dest.build_request([event]).body)["data"]
    return element


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return HttpResponse(status, headers or {}, raw)


# ---- golden and Snap's published normalization examples


def test_golden_request() -> None:
    golden = orjson.loads(GOLDEN.read_bytes())
    request = destination().build_request(golden["events"])
    shown = request.redacted()
    assert request.method == golden["request"]["method"]
    assert shown["url"] == golden["request"]["url"]
    assert shown["headers"] == golden["request"]["headers"]
    assert orjson.loads(request.body) == golden["request"]["body"]
    assert request.url.endswith("/events?access_token=test-token")
    assert "test-token" in request.secrets and "test-token" not in repr(request)


@pytest.mark.parametrize("typed", ["+44 844 412 4653", "0044 844 412 4653"])
def test_published_phone_example(typed: str) -> None:
    """Snap: "+44 844 412 4653" -> 448444124653 (a leading 00 is dropped as well)."""
    stored, warnings = normalize_user({"phone": typed}, "US")
    assert warnings == []
    assert stored["ph"] == sha256_hex("448444124653")
    # the hash Snap's parameter page prints for it
    assert stored["ph"] == "dc008fda46e2e64002cf2f82a4906236282d431c4f75e5b60bfe79fc48546383"
    assert sent(destination(), make_event(user=stored))["user_data"]["ph"] == [stored["ph"]]


# Snap's parameter page: input, and the hash it prints for the normalized value
PUBLISHED = [
    ("email", "Person@Example.com", "em",
     "542d240129883c019e106e3b1b2d3f3cb3537c43c425364de8e951d5a3083345"),
    ("first_name", "John", "fn",
     "96d9632f363564cc3032521409cf22a852f2032eec099ed5967c0d000cec607a"),
    ("first_name", "Raphaël", "fn",
     "e74bb89e718fe1e19c422a48382870399f8bf7ca8dfa008739e75b0be76627b7"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "typed", "key", "expected"), PUBLISHED)
def test_published_identity_examples(field: str, typed: str, key: str, expected: str) -> None:
    stored, _ = normalize_user({field: typed}, "US")
    user = {**stored, "ip": "198.51.100.1", "user_agent": "UA/1"}
    assert sent(destination(), make_event(user=user))["user_data"][key] == [expected]


def test_plaintext_fields_are_hashed_and_raw_ones_are_not() -> None:
    stored, _ = normalize_user(
        {
            "gender": "Female",
            "city": "New York",
            "state": "New York",
            "zip": "10001-1234",
            "country": "US",
            "ip": "203.0.113.9",
            "user_agent": "UA/2",
            "sc_click_id": "click-1",
        },
        "US",
    )
    user_data = sent(destination(), make_event(user=stored))["user_data"]
    assert user_data == {
        "ge": [sha256_hex("f")],
        "ct": [sha256_hex("newyork")],
        "st": [sha256_hex("ny")],
        "zp": [sha256_hex("10001")],
        "country": [sha256_hex("us")],
        "client_ip_address": "203.0.113.9",
        "client_user_agent": "UA/2",
        "sc_click_id": "click-1",
    }


def test_sc_click_id_from_the_sccid_url_parameter() -> None:
    event = make_event(page={"url": "https://shop.example/?ScCid=from-url"})
    assert sent(destination(), event)["user_data"]["sc_click_id"] == "from-url"
    event["user"] = {**event["user"], "sc_click_id": "stored"}
    assert sent(destination(), event)["user_data"]["sc_click_id"] == "stored"


# ---- event names


@pytest.mark.parametrize(("canonical", "expected"), sorted(STANDARD_EVENTS.items()))
def test_standard_names_are_snap_names(canonical: str, expected: str) -> None:
    assert expected in SNAP_EVENTS
    event = purchase() if canonical == "purchase" else make_event(canonical)
    assert sent(destination(), event)["event_name"] == expected


def test_custom_and_lead_events_need_an_event_names_entry() -> None:
    dest = destination()
    reason = dest.unsendable(make_event("newsletter_click"))
    assert reason is not None and "CUSTOM_EVENT_1..5" in reason and "event_names" in reason
    lead = dest.unsendable(make_event("generate_lead"))
    assert lead is not None and "Snap has no lead event" in lead
    mapped = destination(event_names={"generate_lead": "CUSTOM_EVENT_1", "share_cart": "SHARE"})
    assert mapped.unsendable(make_event("generate_lead")) is None
    assert sent(mapped, make_event("generate_lead"))["event_name"] == "CUSTOM_EVENT_1"
    assert sent(mapped, make_event("share_cart"))["event_name"] == "SHARE"
    # a name that already is Snap's passes as it is
    assert sent(dest, make_event("CUSTOM_EVENT_2"))["event_name"] == "CUSTOM_EVENT_2"


def test_an_override_to_a_name_snap_does_not_know_is_unsendable() -> None:
    reason = destination(event_names={"page_view": "PageView"}).unsendable(make_event())
    assert reason == 'event_names maps "page_view" to "PageView", which is not a Snap event name'


def test_a_purchase_needs_value_and_currency() -> None:
    dest = destination()
    assert dest.unsendable(purchase()) is None
    no_currency = make_event("purchase", properties={"value": 3})
    assert dest.unsendable(no_currency) == "Snap rejects a PURCHASE without currency (properties)"
    assert dest.unsendable(make_event("purchase")) == (
        "Snap rejects a PURCHASE without value and currency (properties)"
    )
    # also when an override makes another event a PURCHASE
    renamed = destination(event_names={"order_paid": "PURCHASE"})
    assert "PURCHASE without value" in (renamed.unsendable(make_event("order_paid")) or "")


# ---- fields


def test_dedup_id_time_in_seconds_action_source_and_custom_data() -> None:
    element = sent(
        destination(),
        purchase(order_id="o-9", contents=[{"id": "a", "quantity": 2, "price": 4.5}]),
    )
    assert element == {
        "event_name": "PURCHASE",
        "event_time": (T_MS + 999) // 1000,
        "event_id": "e-1",
        "action_source": "WEB",
        "event_source_url": URL,
        "user_data": {"em": [sha256_hex("buyer@example.com")]},
        "custom_data": {
            "currency": "EUR",
            "value": 10.5,
            "order_id": "o-9",
            "content_ids": ["a"],
            "contents": [{"id": "a", "quantity": 2, "item_price": 4.5}],
            "num_items": 2,
        },
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [(None, "WEB"), ("website", "WEB"), ("physical_store", "OFFLINE"), ("email", "OFFLINE")],
)
def test_action_source(source: str | None, expected: str) -> None:
    event = make_event()
    event.pop("action_source")
    if source:
        event["action_source"] = source
    assert sent(destination(), event)["action_source"] == expected


def test_web_events_need_a_page_url_and_app_events_are_unsendable() -> None:
    dest = destination()
    no_url = make_event()
    no_url.pop("page")
    assert dest.unsendable(no_url) == "Snap needs event_source_url for a web event: send page.url"
    offline = {**no_url, "action_source": "physical_store"}
    assert dest.unsendable(offline) is None
    assert "event_source_url" not in sent(dest, offline)
    assert "Snap App ID" in (dest.unsendable(make_event(action_source="app")) or "")


# ---- consent and the identity requirement


def test_ad_user_data_denied_strips_hashed_identifiers_only() -> None:
    stored, _ = normalize_user(
        {
            "email": "a@b.co",
            "phone": "+14155550100",
            "last_name": "Doe",
            "country": "US",
            "external_id": "x",
            "ip": "198.51.100.1",
            "user_agent": "UA/1",
        },
        "US",
    )
    event = make_event(user=stored, consent={"ad_user_data": "denied"})
    assert destination().unsendable(event) is None
    element = sent(destination(), event)
    assert element["user_data"] == {
        "client_ip_address": "198.51.100.1",
        "client_user_agent": "UA/1",
    }
    assert "data_processing_options" not in element


def test_the_identity_requirement() -> None:
    dest = destination()
    assert dest.unsendable(make_event(user={"ph": sha256_hex("1")})) is None
    assert dest.unsendable(make_event(user={"ip": "198.51.100.1", "user_agent": "UA"})) is None
    assert dest.unsendable(make_event(user={"ip": "198.51.100.1"})) == (
        "Snap needs user.email, user.phone, or both user.ip and user.user_agent"
    )
    denied = make_event(consent={"ad_user_data": "denied"})
    assert "ad_user_data denied" in (dest.unsendable(denied) or "")


# ---- request and validation


def test_token_is_url_encoded_and_redacted_and_endpoint_overridden() -> None:
    dest = destination(endpoint="http://127.0.0.1:8999", options={"access_token": "a+b/c=="})
    request = dest.build_request([make_event()])
    assert request.url == "http://127.0.0.1:8999/v3/1234567890/events?access_token=a%2Bb%2Fc%3D%3D"
    assert "a%2Bb" not in request.redacted()["url"]
    assert dest.validation_request([make_event()]) is None


def test_validate_sends_one_event_per_request_to_the_validator_first() -> None:
    dest = destination(options={"validate": True})
    assert dest.batch_size == 1 and destination().batch_size == 500
    check = dest.validation_request([make_event()])
    real = dest.build_request([make_event()])
    assert check is not None
    assert (
        check.url == "https://tr.snapchat.com/v3/1234567890/events/validate?access_token=test-token"
    )
    assert check.body == real.body and check.secrets == real.secrets


def test_read_validation() -> None:
    dest = destination(options={"validate": True})
    one, two = [make_event()], [make_event(), make_event(event_id="e-2")]
    bad = {"status": "INVALID", "reason": "Unhashed PII", "param": "user_data.em"}
    assert dest.read_validation(one, reply(400, bad)) == [
        "INVALID: Unhashed PII (param user_data.em)"
    ]
    assert dest.read_validation(one, reply(200, {"status": "VALID"})) == [None]
    assert dest.read_validation(two, reply(400, bad)) == [None, None]
    unauthorized = {"status": "INVALID", "reason": "Unauthorized resources"}
    assert dest.read_validation(one, reply(400, unauthorized)) == [None]


def test_config_keys(tmp_path: Path) -> None:
    def load(extra: str) -> DestinationConfig:
        path = tmp_path / "relay.toml"
        path.write_text(
            f'[storage]\npath = "r.db"\n[[destinations]]\nname = "s"\ntype = "snapchat"\n{extra}'
        )
        return load_config(path, environ={"TOKEN": "secret"}).destinations[0]

    pixel = "0a1b2c3d-0000-4000-8000-123456789abc"
    config = load(f'pixel_id = "{pixel}"\naccess_token = "${{TOKEN}}"\nvalidate = true')
    assert dict(config.options) == {"pixel_id": pixel, "access_token": "secret", "validate": True}
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.access_token: is required"):
        load('pixel_id = "1"')
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.pixel_id: must be"):
        load('pixel_id = "../x"\naccess_token = "t"')
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.validate: must be true or false"):
        load('pixel_id = "1"\naccess_token = "t"\nvalidate = 1')


# ---- responses

TWO = [make_event(event_id="e-1"), make_event(event_id="e-2")]


def test_2xx_is_delivered_unless_it_says_invalid() -> None:
    dest = destination()
    assert (
        dest.read_response(TWO, reply(200, {"status": "VALID"}))
        == [Outcome(OutcomeKind.DELIVERED)] * 2
    )
    assert dest.read_response(TWO, reply(200, b"")) == [Outcome(OutcomeKind.DELIVERED)] * 2
    outcomes = dest.read_response(TWO, reply(200, {"status": "INVALID", "reason": "bad"}))
    assert {(o.kind, o.whole_batch) for o in outcomes} == {(OutcomeKind.PERMANENT, True)}


def test_400_is_a_permanent_whole_batch_rejection_with_snaps_reason() -> None:
    body = {"status": "INVALID", "reason": "Timestamp out of range", "param": "event_time"}
    assert (
        destination().read_response(TWO, reply(400, body))
        == [
            Outcome(
                OutcomeKind.PERMANENT,
                "HTTP 400: INVALID: Timestamp out of range (param event_time)",
                whole_batch=True,
            )
        ]
        * 2
    )
    [plain] = destination().read_response(TWO[:1], reply(400, b"Bad Request"))
    assert plain == Outcome(OutcomeKind.PERMANENT, "HTTP 400: Bad Request", whole_batch=True)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"status": "INVALID", "reason": "Unauthorized request"}),
        (403, b"forbidden"),
        (400, {"status": "INVALID", "reason": "Unauthorized resources"}),
    ],
)
def test_credential_faults_pause_the_destination(status: int, body: Any) -> None:
    outcomes = destination().read_response(TWO, reply(status, body))
    for outcome in outcomes:
        assert (outcome.kind, outcome.pause, outcome.whole_batch) == (
            OutcomeKind.RETRY,
            True,
            False,
        )
        assert outcome.detail is not None and outcome.detail.startswith(f"HTTP {status}: ")
        assert outcome.detail.endswith("check pixel_id and access_token in relay.toml")


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(429, {"Retry-After": "120"}, 120.0), (500, {}, None), (503, {"retry-after": "5"}, 5.0)],
)
def test_transient_errors_are_retried_honouring_retry_after(
    status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    [outcome] = destination().read_response(TWO[:1], reply(status, b"busy", headers))
    assert outcome == Outcome(OutcomeKind.RETRY, f"HTTP {status}: busy", retry_after)
