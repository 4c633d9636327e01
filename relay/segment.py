"""Segment tracking-protocol messages -> relay's native raw event. Pure functions.

The HTTP layer (relay.segment_ingest) parses each message and calls these; the result goes to
relay.normalize.normalize_event like any native event, so validation, hashing and the time
policy stay in one place. What the clients really send: ../shared/segment-protocol.md.

Deliberately not mapped:
- ``context.campaign``: utm values are not click ids. Click ids (fbclid, ...) stay in the page
  URL, which the platform mappers read.
- ``context.consent.categoryPreferences`` (Segment Consent Management): its categories are
  named per workspace and do not map onto relay's consent kinds; out of scope for now.
- ``integrations``, ``_metadata``, ``channel``, ``context.library``, ``anonymousId``: routing
  and library metadata, no event data (anonymousId only keys stored traits: identity_keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from relay.normalize import InvalidEvent, parse_time_ms

# Segment's V2 e-commerce spec and B2B SaaS spec names that have a canonical relay event.
# Others (Promotion Viewed, Coupon Entered, Order Cancelled, ...) stay custom, verbatim.
SEGMENT_EVENT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "Products Searched": "search",
        "Product List Viewed": "view_item_list",
        "Product Clicked": "select_item",
        "Product Viewed": "view_item",
        "Product Added": "add_to_cart",
        "Product Removed": "remove_from_cart",
        "Cart Viewed": "view_cart",
        "Checkout Started": "begin_checkout",
        "Payment Info Entered": "add_payment_info",
        "Order Completed": "purchase",
        "Order Refunded": "refund",
        "Product Added to Wishlist": "add_to_wishlist",
        "Signed Up": "sign_up",
        "Signed In": "login",
        "Trial Started": "start_trial",
    }
)
MESSAGE_TYPES = frozenset({"track", "page", "screen", "identify", "group", "alias"})
EVENT_TYPES = frozenset({"track", "page", "screen"})


def _fold(name: str) -> str:
    return " ".join(name.split()).lower()


# Hand-written instrumentation drifts in case and spacing ("order completed"); spec names do not
# collide when folded.
_SPEC_NAMES = {_fold(name): canonical for name, canonical in SEGMENT_EVENT_NAMES.items()}

# Native user field -> trait keys, first present wins: Segment's reserved traits (camelCase)
# and the snake_case spellings RudderStack and hand-written code use. Only keys relay.pii
# accepts are produced: it would drop any other key with a warning.
_TRAITS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("email", ("email",)),
    ("phone", ("phone",)),
    ("first_name", ("firstName", "first_name")),
    ("last_name", ("lastName", "last_name")),
    # Segment's birthday is a Date; JSON-serialized it is an ISO date-time whose date part
    # relay.pii keeps.
    ("date_of_birth", ("birthday", "date_of_birth")),
    ("gender", ("gender",)),
)
_ADDRESS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("street", ("street",)),
    ("city", ("city",)),
    ("state", ("state",)),
    ("zip", ("postalCode", "postal_code", "zip")),
    ("country", ("country",)),
)
# Personal data some events carry in properties (the B2B SaaS spec's "Signed Up" has email,
# phone, first_name, last_name): moved into `user` so it is hashed, never stored as sent.
_PERSONAL_PROPERTIES = frozenset({"address", *(key for _, keys in _TRAITS for key in keys)})


def message_type(message: Mapping[str, Any], default: str | None = None) -> str:
    """The message's type from its "type" field, else `default` (the HTTP layer passes the
    endpoint's type, e.g. "track" for /v1/track and /v1/t); raises InvalidEvent("type: ...")."""
    if not isinstance(message, Mapping):
        raise InvalidEvent("message: must be a JSON object")
    value = message.get("type")
    if value is None or value == "":
        if default is None:
            raise InvalidEvent("type: missing; expected one of " + ", ".join(sorted(MESSAGE_TYPES)))
        value = default
    kind = value.strip().lower() if isinstance(value, str) else ""
    if kind not in MESSAGE_TYPES:
        # client-controlled: cap what is echoed back
        shown = repr(value[:40]) if isinstance(value, str) else type(value).__name__
        raise InvalidEvent(
            f"type: unknown message type {shown}; expected one of "
            + ", ".join(sorted(MESSAGE_TYPES))
        )
    return kind


def to_native_event(
    message: Mapping[str, Any], kind: str, names: Mapping[str, str], sent_at: Any = None
) -> dict[str, Any]:
    """A track/page/screen message as relay's native raw event (the dict normalize_event takes):
    event_id, event_name, event_time, sent_at, page, user, properties (only keys that exist).
    `names`: the source's own Segment-name -> canonical overrides, checked before
    SEGMENT_EVENT_NAMES. `sent_at`: the batch envelope's sentAt, used when the message has none.
    Raises InvalidEvent naming the field (e.g. "event: a track call needs an event name")."""
    if not isinstance(message, Mapping):
        raise InvalidEvent("message: must be a JSON object")
    if kind not in EVENT_TYPES:
        raise InvalidEvent(f"type: {kind!r} messages are not events; only track, page, screen")
    context = _object(message, "context", "context")
    properties = dict(_object(message, "properties", "properties"))
    native: dict[str, Any] = {}

    # Every client resends the same messageId on retry: it is the natural dedup id. A null one
    # is allowed; relay then generates an id.
    message_id = message.get("messageId")
    if message_id is not None and message_id != "":
        if isinstance(message_id, bool) or not isinstance(message_id, str | int):
            raise InvalidEvent("messageId: must be a string")
        native["event_id"] = message_id

    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidEvent("event: a track call needs an event name")
        name = name.strip()
        native["event_name"] = names.get(name) or _SPEC_NAMES.get(_fold(name)) or name
    else:
        # relay treats an app screen as a page view: its canonical names have no screen event.
        native["event_name"] = "page_view"
        page_name = message.get("name") or properties.get("name")
        if isinstance(page_name, str) and page_name.strip():
            properties.setdefault("page_name", page_name.strip())
    if kind == "screen" or message.get("channel") == "mobile":
        native["action_source"] = "app"

    # timestamp (client- or caller-set) else originalTimestamp (the device's call time); the
    # source's time policy applies Segment's receivedAt - (sentAt - timestamp) correction.
    event_time = _time(message, "timestamp")
    if event_time is None:
        event_time = _time(message, "originalTimestamp")
    if event_time is not None:
        native["event_time"] = event_time
    own_sent_at = _time(message, "sentAt")
    if own_sent_at is None and sent_at is not None and sent_at != "":
        own_sent_at = parse_time_ms(sent_at, "sentAt")
    if own_sent_at is not None:
        native["sent_at"] = own_sent_at

    page = _page(kind, properties, _object(context, "page", "context.page"))
    if page:
        native["page"] = page

    user = traits_of(message)
    for field, value in _personal_fields(properties).items():
        user.setdefault(field, value)
    for key in _PERSONAL_PROPERTIES:
        properties.pop(key, None)
    for field, key in (("ip", "ip"), ("user_agent", "userAgent")):
        if context.get(key) not in (None, ""):
            user[field] = context[key]
    if user:
        native["user"] = user

    properties = _commerce(properties)
    if properties:
        native["properties"] = properties
    return native


def traits_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """Native `user` fields from an identify's `traits` and any message's `context.traits`
    (email, phone, first_name, last_name, date_of_birth, gender, street, city, state, zip,
    country, external_id from userId), for storing against the user and for merging."""
    user: dict[str, Any] = {}
    # The call's own traits are what the caller set now; context.traits may be a cached copy.
    for traits in (
        _object(message, "traits", "traits"),
        _object(_object(message, "context", "context"), "traits", "context.traits"),
    ):
        for field, value in _personal_fields(traits).items():
            user.setdefault(field, value)
    user_id = _id_text(message.get("userId"))
    if user_id is not None:
        user["external_id"] = user_id
    return user


def identity_keys(message: Mapping[str, Any]) -> list[str]:
    """Keys under which a user's traits are stored and looked up: "user:<userId>" and
    "anon:<anonymousId>" for those present (the caller hashes them before storage)."""
    keys = []
    for prefix, field in (("user", "userId"), ("anon", "anonymousId")):
        value = _id_text(message.get(field))
        if value is not None:
            keys.append(f"{prefix}:{value}")
    return keys


def _object(container: Mapping[str, Any], key: str, label: str) -> Mapping[str, Any]:
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"{label}: must be an object")
    return value


def _id_text(value: Any) -> str | None:
    """A user or anonymous id as text; None when absent, empty or not an id-like value."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a JSON encoder may write 42 as 42.0
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _first(container: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = container.get(key)
        if value is not None and value != "":
            return value
    return None


def _personal_fields(traits: Mapping[str, Any]) -> dict[str, Any]:
    fields = {field: _first(traits, keys) for field, keys in _TRAITS}
    address = traits.get("address")
    # A free-text address string cannot be split reliably into street, city, zip: ignored.
    if isinstance(address, Mapping):
        fields.update({field: _first(address, keys) for field, keys in _ADDRESS})
    return {field: value for field, value in fields.items() if value is not None}


def _time(message: Mapping[str, Any], key: str) -> int | None:
    value = message.get(key)
    if value is None or value == "":
        return None
    # Parsed here so a bad value is reported under the field the client sent.
    return parse_time_ms(value, key)


def _page(
    kind: str, properties: Mapping[str, Any], context_page: Mapping[str, Any]
) -> dict[str, Any]:
    page = {}
    for key in ("url", "referrer"):
        # A page call's properties describe the page viewed (the caller may override them);
        # a track call's properties.url is something else, e.g. a product's URL.
        value = properties.get(key) if kind != "track" else None
        if value is None or value == "":
            value = context_page.get(key)
        if value is not None and value != "":
            page[key] = value
    return page


def _commerce(properties: dict[str, Any]) -> dict[str, Any]:
    # Segment: revenue excludes tax and shipping, total includes them; an explicit value wins,
    # then revenue, which is what GA4's value means (tax and shipping are separate there).
    amount = _first(properties, ("value", "revenue", "total"))
    if amount is not None:
        properties["value"] = amount
    order_id = properties.pop("orderId", None)  # analytics.js v1 spelling
    if properties.get("order_id") is None and order_id is not None:
        properties["order_id"] = order_id
    query = properties.pop("query", None)
    if properties.get("search_term") is None and query is not None:
        properties["search_term"] = query
    products = properties.pop("products", None)
    if properties.get("contents") is None:
        if products is not None:
            properties["contents"] = _contents(products)
        elif _first(properties, ("product_id", "sku")) is not None:
            # Single-product events (Product Viewed, Product Added) carry the product's fields
            # at the top of properties.
            properties["contents"] = [_item(properties, ("product_id", "sku"))]
    return properties


def _contents(products: Any) -> list[dict[str, Any]]:
    if not isinstance(products, list):
        raise InvalidEvent("properties.products: must be a list of objects")
    contents = []
    for index, product in enumerate(products):
        if not isinstance(product, Mapping):
            raise InvalidEvent(f"properties.products[{index}]: must be an object")
        item = _item(product, ("product_id", "sku", "id"))
        # without an id no platform can use the line
        if "id" in item:
            contents.append(item)
    return contents


def _item(product: Mapping[str, Any], id_keys: tuple[str, ...]) -> dict[str, Any]:
    item = {"id": _first(product, id_keys)}
    for key in ("quantity", "price"):
        item[key] = _number(product.get(key))
    return {key: value for key, value in item.items() if value is not None}


def _number(value: Any) -> Any:
    """A numeric string as a number (some clients send "19.99"); anything else unchanged."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if not math.isfinite(number):
            return value
        return int(number) if number.is_integer() and "." not in value else number
    return value
