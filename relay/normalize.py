"""Incoming event -> canonical stored event. Pure functions: ``received_at_ms`` is passed in.

The canonical event is what every destination mapper reads: snake_case fields, a canonical
event name, server-canonical time with the rule that set it, and personal identifiers already
normalized and hashed (relay.pii).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.config import SourceConfig
from relay.pii import normalize_user

# A future event time beyond this is a client clock error: clamp to the receive time.
FUTURE_TOLERANCE_MS = 60_000
MAX_EVENT_ID_LEN = 256
MAX_EVENT_NAME_LEN = 100

EVENT_ID_ALIASES = ("eventID", "eventId")

# GA4-style recommended names are canonical; the platforms' own spellings map onto them so the
# browser copy ("Purchase" from a pixel snippet) and the backend copy ("purchase") are one event.
STANDARD_EVENTS = frozenset(
    {
        "page_view", "view_item", "view_item_list", "select_item", "view_cart",
        "add_to_cart", "remove_from_cart", "add_to_wishlist", "begin_checkout",
        "add_shipping_info", "add_payment_info", "purchase", "refund", "generate_lead",
        "sign_up", "login", "search", "subscribe", "start_trial", "contact", "schedule",
        "submit_application", "find_location", "customize_product", "donate",
    }
)  # fmt: skip
EVENT_NAME_ALIASES = {
    "pageview": "page_view",
    "page_visit": "page_view",
    "view_content": "view_item",
    "viewcontent": "view_item",
    "addtocart": "add_to_cart",
    "add_cart": "add_to_cart",
    "addtowishlist": "add_to_wishlist",
    "initiate_checkout": "begin_checkout",
    "initiatecheckout": "begin_checkout",
    "start_checkout": "begin_checkout",
    "addpaymentinfo": "add_payment_info",
    "add_billing": "add_payment_info",
    "complete_payment": "purchase",
    "completepayment": "purchase",
    "lead": "generate_lead",
    "complete_registration": "sign_up",
    "completeregistration": "sign_up",
    "signup": "sign_up",
    "starttrial": "start_trial",
}

# "AddToCart", "add-to-cart", "addtocart" all squash to the same letters
_SQUASHED_STANDARD = {name.replace("_", ""): name for name in STANDARD_EVENTS}

ACTION_SOURCES = frozenset(
    {
        "website", "app", "email", "phone_call", "chat", "physical_store",
        "system_generated", "business_messaging", "other",
    }
)  # fmt: skip
CONSENT_KINDS = ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")
KNOWN_FIELDS = frozenset(
    {
        "event_id", *EVENT_ID_ALIASES, "event_name", "event_time", "sent_at", "action_source",
        "page", "user", "properties", "consent",
    }
)  # fmt: skip

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s\-.]+")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


class InvalidEvent(ValueError):
    """Rejects one event; the message starts with the field it is about."""


@dataclass(slots=True)
class RequestContext:
    """What the HTTP layer knows about the request that carried the events."""

    received_at_ms: int
    ip: str | None = None
    user_agent: str | None = None
    sent_at: Any = None  # envelope-level sent_at, the default for events without their own


@dataclass(slots=True)
class NormalizedEvent:
    event_id: str
    event_name: str
    event_time_ms: int
    time_rule: str
    fingerprint: int
    dedup_key: int
    payload: dict[str, Any]
    # which alias spelling carried the id (eventID/eventId), for dedup diagnostics
    id_alias: str | None = None
    id_generated: bool = False
    warnings: list[str] = field(default_factory=list)


def parse_time_ms(value: Any, field_name: str) -> int:
    """Unix seconds, milliseconds (or microseconds), or ISO 8601 -> epoch milliseconds."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            value = float(text)
        else:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidEvent(
                    f"{field_name}: not a unix time or ISO 8601 date-time: {text[:40]!r}"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return int(parsed.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEvent(f"{field_name}: must be unix seconds, milliseconds or ISO 8601")
    if value <= 0:
        raise InvalidEvent(f"{field_name}: must be a positive unix time")
    # Magnitude tells the unit: seconds reach 1e11 only in the year 5138.
    if value >= 1e14:
        return int(value / 1000)
    if value >= 1e11:
        return int(value)
    return int(value * 1000)


def apply_time_policy(
    policy: str,
    received_at_ms: int,
    event_time_ms: int | None,
    sent_at_ms: int | None,
    max_age_s: int,
) -> tuple[int, str]:
    """Server-canonical event time and the rule that set it (invariant 4)."""
    if event_time_ms is None or policy == "server":
        time_ms, rule = received_at_ms, "server"
    elif policy == "client":
        time_ms, rule = event_time_ms, "client"
    elif sent_at_ms is None:
        # Without sent_at the client clock's skew is unknowable: trust the server clock.
        time_ms, rule = received_at_ms, "server_no_sent_at"
    else:
        # Segment's formula: the gap between the client's send time and our receive time is the
        # client clock's skew (network latency taken as negligible).
        time_ms, rule = received_at_ms - (sent_at_ms - event_time_ms), "corrected"
    if time_ms > received_at_ms + FUTURE_TOLERANCE_MS:
        time_ms, rule = received_at_ms, "clamped_future"
    if received_at_ms - time_ms > max_age_s * 1000:
        age_h = (received_at_ms - time_ms) / 3_600_000
        raise InvalidEvent(
            f"event_time: {age_h:.1f} h old, older than this source's max_age of "
            f"{max_age_s / 3600:g} h"
        )
    return time_ms, rule


def canonical_event_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidEvent("event_name: is required and must be a non-empty string")
    return _canonical_name(name.strip())


@functools.lru_cache(maxsize=4096)  # a site uses a handful of names: a small cache always hits
def _canonical_name(name: str) -> str:
    if len(name) > MAX_EVENT_NAME_LEN:
        raise InvalidEvent(f"event_name: longer than {MAX_EVENT_NAME_LEN} characters")
    snake = _SEPARATORS.sub("_", _CAMEL_BOUNDARY.sub("_", name)).lower()
    if snake in STANDARD_EVENTS:
        return snake
    squashed = snake.replace("_", "")
    compact = (
        EVENT_NAME_ALIASES.get(snake)
        or EVENT_NAME_ALIASES.get(squashed)
        or _SQUASHED_STANDARD.get(squashed)
    )
    # Custom names are kept as sent: platforms show them to the advertiser verbatim.
    return compact or name


def extract_event_id(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """(event_id, alias used). Mismatched spellings are the most common dedup failure, so every
    spelling is accepted; two spellings with different values are an error, not a guess."""
    found: list[tuple[str, str]] = []
    for key in ("event_id", *EVENT_ID_ALIASES):
        value = raw.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidEvent(f"{key}: must be a string")
        # Trimmed: a stray newline from a backend template must not split one event in two.
        text = str(value).strip()
        if text:
            found.append((key, text))
    if not found:
        return None, None
    if len({v for _, v in found}) > 1:
        keys = " and ".join(k for k, _ in found)
        raise InvalidEvent(f"event_id: {keys} carry different values")
    key, value = found[0]
    if len(value) > MAX_EVENT_ID_LEN:
        raise InvalidEvent(f"{key}: longer than {MAX_EVENT_ID_LEN} characters")
    return value, (key if key != "event_id" else None)


def dedup_key(event_name: str, event_id: str) -> int:
    """Signed 64-bit hash of the dedup key (event_name, event_id), an SQLite INTEGER."""
    digest = hashlib.blake2b(f"{event_name}\x00{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def fingerprint(properties: dict[str, Any]) -> int:
    """Hash of the fields two copies of one event must agree on."""
    # _properties already made value a number: 10, 10.0 and "10.00" are one amount.
    value = properties.get("value")
    amount = None if value is None else round(float(value), 6)
    text = f"{amount!r}\x00{properties.get('currency')!r}"
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def normalize_event(raw: Any, source: SourceConfig, ctx: RequestContext) -> NormalizedEvent:
    """Validate and canonicalize one event, or raise InvalidEvent naming the field."""
    if not isinstance(raw, dict):
        raise InvalidEvent("event: must be a JSON object")
    # the key is client-controlled: cap what is echoed back
    warnings = [f"{k[:64]}: unknown field; dropped" for k in raw if k not in KNOWN_FIELDS]

    event_name = canonical_event_name(raw.get("event_name"))
    event_id, alias = extract_event_id(raw)
    generated = event_id is None
    if event_id is None:
        # No id means no dedup with a pixel; relay still needs one for its own outbox.
        event_id = str(uuid.uuid4())
        warnings.append("event_id: missing; relay generated one, which cannot dedup with a pixel")

    event_time = raw.get("event_time")
    sent_at = raw.get("sent_at")
    if sent_at is None:
        sent_at = ctx.sent_at
    time_ms, time_rule = apply_time_policy(
        source.time,
        ctx.received_at_ms,
        parse_time_ms(event_time, "event_time") if event_time is not None else None,
        parse_time_ms(sent_at, "sent_at") if sent_at is not None else None,
        source.max_age_s,
    )

    payload: dict[str, Any] = {
        "event_id": event_id,
        "event_name": event_name,
        "event_time_ms": time_ms,
        "received_at_ms": ctx.received_at_ms,
        "time_rule": time_rule,
        "source": source.name,
    }
    action_source = raw.get("action_source")
    if action_source is None and source.kind == "browser":
        action_source = "website"
    if action_source is not None:
        if not isinstance(action_source, str) or action_source not in ACTION_SOURCES:
            raise InvalidEvent("action_source: must be one of " + ", ".join(sorted(ACTION_SOURCES)))
        payload["action_source"] = action_source

    page = _page(raw.get("page"))
    if page:
        payload["page"] = page

    user_raw = raw.get("user", {})
    if not isinstance(user_raw, dict):
        raise InvalidEvent("user: must be an object")
    user, user_warnings = normalize_user(user_raw, source.default_region)
    warnings.extend(user_warnings)
    # The socket (or trusted proxy) IP and the request's user agent belong to the visitor only
    # when the browser itself sent the event; for a backend they would be the server's.
    if source.kind == "browser":
        if "ip" not in user and ctx.ip:
            user["ip"] = ctx.ip
        if "user_agent" not in user and ctx.user_agent:
            user["user_agent"] = ctx.user_agent
    if user:
        payload["user"] = user

    properties = _properties(raw.get("properties"))
    if properties:
        payload["properties"] = properties
    consent = _consent(raw.get("consent"))
    if consent:
        payload["consent"] = consent
    if alias:
        payload["event_id_alias"] = alias
    if generated:
        payload["event_id_generated"] = True

    return NormalizedEvent(
        event_id=event_id,
        event_name=event_name,
        event_time_ms=time_ms,
        time_rule=time_rule,
        fingerprint=fingerprint(properties),
        dedup_key=dedup_key(event_name, event_id),
        payload=payload,
        id_alias=alias,
        id_generated=generated,
        warnings=warnings,
    )


def _page(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent("page: must be an object with url and referrer")
    page = {}
    for key in ("url", "referrer"):
        item = value.get(key)
        if item is None or item == "":
            continue
        if not isinstance(item, str) or len(item) > 4096:
            raise InvalidEvent(f"page.{key}: must be a string of at most 4096 characters")
        page[key] = item
    return page


def _properties(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent("properties: must be an object")
    properties = dict(value)
    if properties.get("value") is not None:
        amount = properties["value"]
        if isinstance(amount, str):
            try:
                amount = float(amount)
            except ValueError:
                raise InvalidEvent("properties.value: must be a number") from None
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not math.isfinite(amount)
        ):
            raise InvalidEvent("properties.value: must be a number")
        properties["value"] = amount
    if properties.get("currency") is not None:
        currency = properties["currency"]
        if not isinstance(currency, str) or not _CURRENCY.match(currency.strip()):
            raise InvalidEvent("properties.currency: must be a three-letter ISO 4217 code")
        properties["currency"] = currency.strip().upper()
    if properties.get("order_id") is not None:
        if isinstance(properties["order_id"], bool) or not isinstance(
            properties["order_id"], str | int
        ):
            raise InvalidEvent("properties.order_id: must be a string")
        properties["order_id"] = str(properties["order_id"])
    contents = properties.get("contents")
    if contents is not None and (
        not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents)
    ):
        raise InvalidEvent(
            "properties.contents: must be a list of objects with id, quantity, price"
        )
    return properties


def _consent(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent("consent: must be an object")
    consent = {}
    for key, state in value.items():
        if isinstance(state, str):
            state = state.strip().lower()
        if key not in CONSENT_KINDS:
            raise InvalidEvent(
                f"consent.{key}: unknown; expected one of " + ", ".join(CONSENT_KINDS)
            )
        if state is True or state == "granted":
            consent[key] = "granted"
        elif state is False or state == "denied":
            consent[key] = "denied"
        else:
            raise InvalidEvent(f'consent.{key}: must be "granted" or "denied"')
    return consent


def consent_allows(payload: dict[str, Any], required: tuple[str, ...]) -> bool:
    """An explicit denial of any required kind blocks delivery; absent consent does not (the
    site's consent banner decides whether the event is sent at all)."""
    consent = payload.get("consent") or {}
    return all(consent.get(kind) != "denied" for kind in required)
