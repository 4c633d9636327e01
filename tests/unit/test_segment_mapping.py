"""relay.segment: Segment-protocol messages -> native raw event -> relay.normalize.

Messages are shaped as each client sends them (../shared/segment-protocol.md).
"""

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from relay.config import SourceConfig
from relay.normalize import InvalidEvent, NormalizedEvent, RequestContext, normalize_event
from relay.segment import (
    MESSAGE_TYPES,
    SEGMENT_EVENT_NAMES,
    identity_keys,
    message_type,
    to_native_event,
    traits_of,
)

R = 1_700_000_000_000  # received_at: 2023-11-14T22:13:20Z
SECOND = 1000
HOUR = 3_600_000

WEB = SourceConfig(name="web", key="k", kind="browser", time="corrected", max_age_s=7 * 86400)
CTX = RequestContext(received_at_ms=R, ip="203.0.113.9", user_agent="Mozilla/5.0 (X11)")


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def ingest(
    message: dict[str, Any],
    names: dict[str, str] | None = None,
    sent_at: Any = None,
) -> NormalizedEvent:
    """What the HTTP layer does with one track/page/screen message."""
    kind = message_type(message, "track")
    return normalize_event(to_native_event(message, kind, names or {}, sent_at), WEB, CTX)


def track(event: str, properties: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "properties": properties or {},
        "messageId": "m-1",
        "timestamp": "2023-11-14T22:13:10.000Z",
        **extra,
    }


# --- realistic client messages -----------------------------------------------------------

# segment-analytics-python 2.4: a batch element; the envelope carries sentAt.
PYTHON_ORDER: dict[str, Any] = {
    "integrations": {},
    "anonymousId": None,
    "timestamp": "2023-11-14T22:13:15.123456+00:00",
    "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    "userId": "user-42",
    "type": "track",
    "event": "Order Completed",
    "properties": {
        "order_id": "50314b8e9bcf000000000000",
        "total": 27.50,
        "revenue": 25.00,
        "shipping": 3,
        "tax": 2,
        "currency": "usd",
        "products": [
            {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "price": 19,
             "quantity": 1, "name": "Monopoly: 3rd Edition"},
            {"sku": "46493-32", "price": 3, "quantity": 2, "name": "Uno Card Game"},
        ],
    },
    "messageId": "2f1b4c1e-8a8e-4f1a-9d3c-0f6e3b9a7c11",
}  # fmt: skip
PYTHON_SENT_AT = "2023-11-14T22:13:16.123456+00:00"

# rudder-sdk-python 2.1: identify traits only in context.traits; channel "server".
RUDDER_IDENTIFY: dict[str, Any] = {
    "type": "identify",
    "userId": "user-42",
    "anonymousId": "5d9c6d8e-3c1f-4e5b-9d6a-6c0e2f7b1a90",
    "channel": "server",
    "timestamp": "2023-11-14T22:13:10.000000+00:00",
    "context": {
        "library": {"name": "rudder-sdk-python", "version": "2.1.0"},
        "traits": {
            "email": "Jane.Doe@Example.com",
            "firstName": "Jane",
            "lastName": "Doe",
            "phone": "+1 (650) 555-1212",
            "plan": "premium",
            "address": {"street": "1 Main St", "city": "New York", "state": "New York",
                        "postalCode": "10001-1234", "country": "US"},
        },
    },
    "integrations": {"All": True},
    "messageId": "7a1c2c55-6f1d-4b8a-b0e2-9b2d7c3e4f50",
}  # fmt: skip

# @segment/analytics-node 3.1: node-next messageId, _metadata.
NODE_ADD: dict[str, Any] = {
    "type": "track",
    "event": "Product Added",
    "userId": "user-42",
    "properties": {"cart_id": "skdjsidjsdkdj29j", "product_id": "507f1f77bcf86cd799439011",
                   "sku": "G-32", "name": "Monopoly: 3rd Edition", "price": 18.99,
                   "quantity": 1, "currency": "EUR", "value": 18.99},
    "context": {"library": {"name": "@segment/analytics-node", "version": "3.1.0"}},
    "integrations": {"Segment.io": True, "Google Analytics": {"clientId": "123.456"}},
    "_metadata": {"nodeVersion": "20.11.0", "jsRuntime": "node"},
    "messageId": "node-next-1699999998000-4d3b7c1e-29f4-4a52-8d43-1c9f0b6e2a77",
    "timestamp": "2023-11-14T22:13:18.000Z",
}  # fmt: skip


def next_message(kind: str, device_clock_ms: int, **fields: Any) -> dict[str, Any]:
    """browser analytics-next 1.84: originalTimestamp and its own sentAt, no timestamp. The
    call happened 30 s before the send, both read off a device clock `device_clock_ms` off."""
    return {
        "type": kind,
        "userId": None,
        "anonymousId": "b1f0e2c3-7d4a-4c8e-9f1b-2a3d4e5f6a7b",
        "context": {
            "library": {"name": "analytics.js", "version": "npm:next-1.84.0"},
            "page": {"path": "/checkout", "referrer": "https://www.google.com/",
                     "search": "?fbclid=IwAR2x", "title": "Checkout",
                     "url": "https://shop.example/checkout?fbclid=IwAR2x"},
            "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)",
            "locale": "en-US",
            "campaign": {"source": "facebook", "medium": "cpc", "name": "winter"},
            "consent": {"categoryPreferences": {"Advertising": True}},
        },
        "integrations": {},
        "messageId": "ajs-next-1699999970000-0a5c1e4b-5b9d-4b1e-8c0f-3e2d1c0b9a88",
        "originalTimestamp": _iso(R - 30 * SECOND + device_clock_ms),
        "sentAt": _iso(R + device_clock_ms),
        "writeKey": "k",
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        **fields,
    }  # fmt: skip


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# --- message_type --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "default", "expected"),
    [
        ({"type": "page"}, "track", "page"),  # the message's own type wins over the endpoint's
        ({"type": "Identify"}, None, "identify"),
        ({}, "track", "track"),
        ({"type": None}, "screen", "screen"),
    ],
)
def test_message_type(message: dict[str, Any], default: str | None, expected: str) -> None:
    assert message_type(message, default) == expected


def test_message_types_are_the_six_calls() -> None:
    assert frozenset({"track", "page", "screen", "identify", "group", "alias"}) == MESSAGE_TYPES


@pytest.mark.parametrize(
    ("message", "default", "error"),
    [
        ({"type": "purchase"}, None, "type: unknown message type 'purchase'; expected one of "
         "alias, group, identify, page, screen, track"),
        ({"type": 3}, "track", "type: unknown message type int; expected one of "
         "alias, group, identify, page, screen, track"),
        ({}, None, "type: missing; expected one of alias, group, identify, page, screen, track"),
        (["track"], "track", "message: must be a JSON object"),
    ],
)  # fmt: skip
def test_message_type_rejects(message: Any, default: str | None, error: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        message_type(message, default)
    assert str(exc.value) == error


# --- event names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Order Completed", "purchase"),
        ("Product Added", "add_to_cart"),
        ("Checkout Started", "begin_checkout"),
        ("Products Searched", "search"),
        ("Product Viewed", "view_item"),
        ("Product List Viewed", "view_item_list"),
        ("Product Clicked", "select_item"),
        ("Cart Viewed", "view_cart"),
        ("Product Removed", "remove_from_cart"),
        ("Product Added to Wishlist", "add_to_wishlist"),
        ("Payment Info Entered", "add_payment_info"),
        ("Order Refunded", "refund"),
        ("Signed Up", "sign_up"),
        ("Signed In", "login"),
        ("Trial Started", "start_trial"),
        ("order  completed", "purchase"),  # hand-written casing and spacing
    ],
)
def test_spec_names_become_canonical(name: str, canonical: str) -> None:
    event = ingest(track(name))
    assert event.event_name == canonical
    assert event.payload["event_name"] == canonical


def test_every_spec_name_is_tested() -> None:
    assert len(SEGMENT_EVENT_NAMES) == 15


@pytest.mark.parametrize("name", ["Promotion Viewed", "Lead Generated", "Coupon Entered"])
def test_other_names_stay_custom_verbatim(name: str) -> None:
    assert ingest(track(name)).event_name == name


def test_source_overrides_win_over_the_spec_table() -> None:
    names = {"Order Completed": "Subscription Paid", "Demo Booked": "schedule"}
    assert ingest(track("Order Completed"), names).event_name == "Subscription Paid"
    assert ingest(track("Demo Booked"), names).event_name == "schedule"


# --- analytics-python: an order ------------------------------------------------------------


def test_python_order_completed() -> None:
    event = ingest(PYTHON_ORDER, sent_at=PYTHON_SENT_AT)
    assert event.event_id == "2f1b4c1e-8a8e-4f1a-9d3c-0f6e3b9a7c11"
    assert event.event_name == "purchase"
    assert event.payload["properties"] == {
        "order_id": "50314b8e9bcf000000000000",
        "value": 25.00,  # revenue, not total (which adds tax and shipping)
        "total": 27.50,
        "revenue": 25.00,
        "shipping": 3,
        "tax": 2,
        "currency": "USD",
        "contents": [
            {"id": "507f1f77bcf86cd799439011", "quantity": 1, "price": 19},
            {"id": "46493-32", "quantity": 2, "price": 3},
        ],
    }
    assert event.payload["user"]["external_id"] == sha("user-42")
    # sent 1 s after the call: the event happened 1 s before receipt
    assert (event.event_time_ms, event.time_rule) == (R - 1 * SECOND, "corrected")


@pytest.mark.parametrize(
    ("properties", "value"),
    [
        ({"value": 9, "revenue": 8, "total": 7}, 9),
        ({"revenue": 8, "total": 7}, 8),
        ({"total": 7}, 7),
        ({"revenue": 0, "total": 7}, 0),
        ({"value": "12.50"}, 12.5),
    ],
)
def test_value_precedence(properties: dict[str, Any], value: float) -> None:
    assert ingest(track("Order Completed", properties)).payload["properties"]["value"] == value


def test_order_id_camel_case_and_search_query_renamed() -> None:
    event = ingest(track("Products Searched", {"orderId": 77, "query": "blue hotpants"}))
    assert event.payload["properties"] == {"order_id": "77", "search_term": "blue hotpants"}


def test_products_id_fallback_numeric_strings_and_lines_without_id() -> None:
    products = [{"id": "p-9", "price": "19.99", "quantity": "2"}, {"name": "no id"}]
    event = ingest(track("Checkout Started", {"products": products}))
    assert event.payload["properties"]["contents"] == [{"id": "p-9", "quantity": 2, "price": 19.99}]


@pytest.mark.parametrize(
    ("products", "error"),
    [
        ({"product_id": "a"}, "properties.products: must be a list of objects"),
        ([{"product_id": "a"}, "b"], "properties.products[1]: must be an object"),
    ],
)
def test_malformed_products_rejected(products: Any, error: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        ingest(track("Order Completed", {"products": products}))
    assert str(exc.value) == error


# --- analytics-node: a single product --------------------------------------------------------


def test_node_product_added_single_product_becomes_contents() -> None:
    event = ingest(NODE_ADD, sent_at="2023-11-14T22:13:19.500Z")
    assert event.event_id == "node-next-1699999998000-4d3b7c1e-29f4-4a52-8d43-1c9f0b6e2a77"
    assert event.event_name == "add_to_cart"
    properties = event.payload["properties"]
    assert properties["contents"] == [
        {"id": "507f1f77bcf86cd799439011", "quantity": 1, "price": 18.99}
    ]
    assert (properties["value"], properties["currency"]) == (18.99, "EUR")
    assert "_metadata" not in orjson.dumps(event.payload).decode()
    assert (event.event_time_ms, event.time_rule) == (R - 1500, "corrected")


# --- rudder-sdk-python identify: traits ------------------------------------------------------


def test_rudder_identify_traits_from_context() -> None:
    assert message_type(RUDDER_IDENTIFY, "track") == "identify"
    assert traits_of(RUDDER_IDENTIFY) == {
        "email": "Jane.Doe@Example.com",
        "phone": "+1 (650) 555-1212",
        "first_name": "Jane",
        "last_name": "Doe",
        "street": "1 Main St",
        "city": "New York",
        "state": "New York",
        "zip": "10001-1234",
        "country": "US",
        "external_id": "user-42",
    }  # "plan" is not a user field: not copied
    assert identity_keys(RUDDER_IDENTIFY) == [
        "user:user-42",
        "anon:5d9c6d8e-3c1f-4e5b-9d6a-6c0e2f7b1a90",
    ]


def test_identify_is_not_an_event() -> None:
    with pytest.raises(InvalidEvent) as exc:
        to_native_event(RUDDER_IDENTIFY, "identify", {})
    assert str(exc.value) == "type: 'identify' messages are not events; only track, page, screen"


def test_top_level_traits_win_over_context_traits() -> None:
    message = {
        "type": "identify",
        "userId": 1234,
        "traits": {"email": "new@example.com", "birthday": "1990-05-17T00:00:00.000Z",
                   "gender": "female", "first_name": "Ann", "name": "Ann Lee", "plan": "x"},
        "context": {"traits": {"email": "old@example.com", "lastName": "Lee"}},
    }  # fmt: skip
    assert traits_of(message) == {
        "email": "new@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "date_of_birth": "1990-05-17T00:00:00.000Z",
        "gender": "female",
        "external_id": "1234",
    }


@pytest.mark.parametrize(
    ("message", "keys"),
    [
        ({"userId": None, "anonymousId": "a-1"}, ["anon:a-1"]),
        ({"userId": " u-1 ", "anonymousId": ""}, ["user:u-1"]),
        ({"userId": 42.0}, ["user:42"]),
        ({"userId": True, "anonymousId": {"x": 1}}, []),
        ({}, []),
    ],
)
def test_identity_keys(message: dict[str, Any], keys: list[str]) -> None:
    assert identity_keys(message) == keys


def test_track_with_context_traits_hashes_and_never_keeps_plaintext() -> None:
    message = track(
        "Order Completed",
        {"value": 10, "currency": "USD", "email": "jane.doe@example.com"},
        userId="user-42",
        context={"traits": RUDDER_IDENTIFY["context"]["traits"]},
    )
    event = ingest(message)
    user = event.payload["user"]
    assert user["em"] == sha("jane.doe@example.com")
    assert user["ph"] == sha("16505551212")
    assert user["fn"] == sha("jane")
    assert user["ln"] == sha("doe")
    assert user["street"] == sha("1 main st")
    assert (user["ct"], user["st"], user["zp"], user["country"]) == ("newyork", "ny", "10001", "us")
    assert user["external_id"] == sha("user-42")
    assert event.payload["properties"] == {"value": 10, "currency": "USD"}
    dumped = orjson.dumps(event.payload).decode().lower()
    assert "jane" not in dumped
    assert "example.com" not in dumped
    assert event.warnings == []


def test_personal_properties_move_into_user() -> None:
    # The B2B SaaS spec's Signed Up carries the person's details in properties.
    event = ingest(
        track("Signed Up", {"type": "organic", "email": "sam@example.com", "first_name": "Sam",
                            "phone": "+44 20 7946 0958", "address": {"city": "London"}})
    )  # fmt: skip
    assert event.payload["properties"] == {"type": "organic"}
    user = event.payload["user"]
    assert (user["em"], user["fn"], user["ph"]) == (
        sha("sam@example.com"),
        sha("sam"),
        sha("442079460958"),
    )
    assert user["ct"] == "london"


def test_traits_win_over_personal_properties() -> None:
    message = track(
        "Signed Up", {"email": "typed@example.com"}, traits={"email": "known@example.com"}
    )
    assert ingest(message).payload["user"]["em"] == sha("known@example.com")


# --- analytics-next: page, track, clock skew -------------------------------------------------


def test_next_page_call() -> None:
    message = next_message(
        "page",
        0,
        name="Checkout",
        properties={"path": "/checkout", "referrer": "https://www.google.com/",
                    "search": "?fbclid=IwAR2x", "title": "Checkout", "name": "Checkout",
                    "url": "https://shop.example/checkout?fbclid=IwAR2x"},
    )  # fmt: skip
    native = to_native_event(message, message_type(message), {})
    assert native["page"] == {
        "url": "https://shop.example/checkout?fbclid=IwAR2x",
        "referrer": "https://www.google.com/",
    }
    event = normalize_event(native, WEB, CTX)
    assert event.event_name == "page_view"
    assert event.event_id == "ajs-next-1699999970000-0a5c1e4b-5b9d-4b1e-8c0f-3e2d1c0b9a88"
    assert event.payload["page"] == native["page"]
    assert event.payload["properties"]["page_name"] == "Checkout"
    assert event.payload["user"] == {
        "ip": "203.0.113.9",  # the browser's request, filled in by normalize
        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)",
    }
    assert "consent" not in event.payload  # Segment Consent Management is out of scope
    assert "campaign" not in orjson.dumps(event.payload).decode()


def test_page_call_properties_url_wins_but_not_a_tracks() -> None:
    override = {"url": "https://shop.example/virtual", "referrer": "https://a.example/"}
    page = ingest(next_message("page", 0, properties=override))
    assert page.payload["page"] == override
    product = ingest(next_message("track", 0, event="Product Viewed", properties=override))
    assert product.payload["page"] == {
        "url": "https://shop.example/checkout?fbclid=IwAR2x",
        "referrer": "https://www.google.com/",
    }


def test_context_ip_and_user_agent() -> None:
    message = track("Cart Viewed", context={"ip": "198.51.100.7", "userAgent": "curl/8.4"})
    assert ingest(message).payload["user"] == {"ip": "198.51.100.7", "user_agent": "curl/8.4"}


def test_clock_skew_device_two_hours_fast() -> None:
    event = ingest(next_message("track", 2 * HOUR, event="Order Completed"))
    # receivedAt - (sentAt - originalTimestamp): the 30 s send delay, not the 2 h skew
    assert (event.event_time_ms, event.time_rule) == (R - 30 * SECOND, "corrected")


def test_own_sent_at_wins_over_the_envelope() -> None:
    message = next_message("track", 0, event="Order Completed")
    event = ingest(message, sent_at=_iso(R - 10 * SECOND))
    assert event.event_time_ms == R - 30 * SECOND


def test_screen_is_an_app_page_view() -> None:
    message = {"type": "screen", "name": "Home", "properties": {"variation": "blue"},
               "messageId": "s-1", "anonymousId": "a-1", "channel": "mobile"}  # fmt: skip
    event = ingest(message)
    assert event.event_name == "page_view"
    assert event.payload["action_source"] == "app"
    assert event.payload["properties"] == {"variation": "blue", "page_name": "Home"}


# --- tolerance -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamp",
    [
        "2023-11-14T22:13:10Z",
        "2023-11-14T22:13:10.000Z",
        "2023-11-14T22:13:10.000000Z",
        "2023-11-14T22:13:10+00:00",
        "2023-11-14T22:13:10.000+00:00",
        "2023-11-14T22:13:10.000000+00:00",
    ],
)
def test_timestamp_forms(stamp: str) -> None:
    event = ingest(track("Order Completed", timestamp=stamp), sent_at="2023-11-14T22:13:20Z")
    assert (event.event_time_ms, event.time_rule) == (R - 10 * SECOND, "corrected")


def test_null_message_id_and_missing_timestamp() -> None:
    message = track("Order Completed", messageId=None, integrations={"All": True})
    del message["timestamp"]
    native = to_native_event(message, "track", {})
    assert native == {"event_name": "purchase"}
    event = normalize_event(native, WEB, CTX)
    assert event.id_generated is True
    assert (event.event_time_ms, event.time_rule) == (R, "server")


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "track", "properties": {}}, "event: a track call needs an event name"),
        ({"type": "track", "event": "  "}, "event: a track call needs an event name"),
        ({"type": "track", "event": ["Order Completed"]},
         "event: a track call needs an event name"),
        (track("x", timestamp="yesterday"),
         "timestamp: not a unix time or ISO 8601 date-time: 'yesterday'"),
        (track("x", messageId={"id": 1}), "messageId: must be a string"),
        (track("x", properties=[1]), "properties: must be an object"),
        (track("x", context="web"), "context: must be an object"),
        (track("x", context={"page": "/"}), "context.page: must be an object"),
        (track("x", traits="vip"), "traits: must be an object"),
    ],
)  # fmt: skip
def test_invalid_messages_name_the_field(message: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        ingest(message)
    assert str(exc.value) == error


def test_non_object_message_rejected() -> None:
    with pytest.raises(InvalidEvent) as exc:
        to_native_event("Order Completed", "track", {})  # type: ignore[arg-type]
    assert str(exc.value) == "message: must be a JSON object"
