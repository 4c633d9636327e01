"""Google Analytics 4 Measurement Protocol (web streams): ``/mp/collect``.

Config: ``measurement_id`` (``G-...``), ``api_secret`` (Admin › Data streams › Measurement
Protocol API secrets), optional ``validate`` (default false).

One event per request (``max_batch = 1``). A Measurement Protocol request belongs to ONE
client: ``client_id``, ``user_data`` and ``consent`` are request-level fields, and the 25-event
limit is about events of that one client. The worker batches events of any visitors together,
so a larger batch would either attribute other visitors' events to the first one or need a
request per client, which the one-request-per-batch interface does not have. Correctness first:
a request per event (GA4 documents no request rate limit for /mp/collect).

GA4 answers 2xx even for malformed events, so nothing can be learned from the response.
``validate = true`` is the test mode: each request is first sent to ``/debug/mp/collect``
(nothing recorded there) and what Google's validator reports dead-letters the event with its
``validationCode``, field path and description; the rest is then sent for real. It doubles the
requests, so it is off by default. Facts: destinations.md (f).

Routing tip: GA4 is analytics, so most sites set ``consent = ["analytics_storage"]`` on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlencode

import orjson

from relay.config import DestinationConfig, parse_bool
from relay.destinations import mapping
from relay.destinations.base import (
    Destination,
    Event,
    HttpRequest,
    HttpResponse,
    Outcome,
    outcomes_from_status,
)
from relay.pii import sha256_hex

API_URL = "https://www.google-analytics.com/mp/collect"
DEBUG_URL = "https://www.google-analytics.com/debug/mp/collect"
EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
# Names GA4 collects itself and rejects from the Measurement Protocol (Google's reserved list).
RESERVED_NAMES = frozenset({
    "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
    "adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_install",
    "app_remove", "app_store_refund", "app_store_subscription_cancel",
    "app_store_subscription_convert", "app_store_subscription_renew", "app_update",
    "app_upgrade", "dynamic_link_app_open", "dynamic_link_app_update",
    "dynamic_link_first_open", "error", "first_open", "first_visit", "in_app_purchase",
    "notification_dismiss", "notification_foreground", "notification_open",
    "notification_receive", "os_update", "screen_view", "session_start", "user_engagement",
})  # fmt: skip
RESERVED_PREFIXES = ("google_", "ga_", "firebase_")
MAX_PARAM_CHARS = 100  # longer string parameter values are rejected (limits table)
# The `_ga` cookie: "GA1.<domain depth>.<random>.<first visit s>"; the client id is the tail.
_GA_COOKIE = re.compile(r"GA\d+\.\d+\.(\d+\.\d+)")
_INDEX = re.compile(r"events\[(\d+)\]|index:\s*\[(\d+)\]", re.IGNORECASE)
_CONSENT_KEYS = ("ad_user_data", "ad_personalization")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string (use ${ENV} for secrets)")
    return value


def _measurement_id(value: Any) -> str:
    text = _text(value)
    if not re.fullmatch(r"G-[A-Z0-9]+", text):
        raise ValueError('must be a web stream measurement id such as "G-XXXXXXXXXX"')
    return text


def client_id(event: Event) -> str:
    """``client_id``: the site's GA client id, else a stable one derived from the visitor.

    Derivation uses the hashed external id or email, so the same person keeps one client id
    across events; when ad_user_data is denied no identity is used and the event id seeds it
    (the event then counts as its own visitor). The seed is hashed again so the id does not
    expose the identity hash; the ``<int>.<int>`` shape is that of a GA client id.
    """
    user = mapping.user(event)
    raw = user.get("ga_client_id")
    if raw:
        cookie = _GA_COOKIE.fullmatch(raw)
        return cookie.group(1) if cookie else raw
    seed = f"event:{event['event_id']}"
    if not mapping.ad_user_data_denied(event):
        if user.get("external_id"):
            seed = f"external_id:{user['external_id']}"
        elif user.get("em"):
            seed = f"em:{user['em']}"
    digest = sha256_hex(f"relay-ga4-client-id:{seed}")
    return f"{int(digest[:8], 16)}.{int(digest[8:16], 16)}"


def user_data(event: Event) -> dict[str, Any]:
    """Google's user-provided data: email with Gmail dots removed, phone in E.164, address
    parts (names and street hashed; city, region, postal code and country plain)."""
    if mapping.ad_user_data_denied(event):
        return {}
    user = mapping.user(event)
    data: dict[str, Any] = {}
    if user.get("em_google"):
        data["sha256_email_address"] = [user["em_google"]]
    if user.get("ph_e164"):
        data["sha256_phone_number"] = [user["ph_e164"]]
    address = {
        field: user[key]
        for field, key in (
            ("sha256_first_name", "fn"),
            ("sha256_last_name", "ln"),
            ("sha256_street", "street"),
            ("city", "ct"),
            ("region", "st"),
            ("postal_code", "zp"),
            ("country", "country"),
        )
        if user.get(key)
    }
    if address:
        data["address"] = [address]
    return data


def _param(value: str) -> str:
    # The stricter reading of the 100-character limit: cut rather than have GA4 drop the value.
    return value[:MAX_PARAM_CHARS]


class GA4Destination(Destination):
    type_name: ClassVar[str] = "ga4"
    max_batch: ClassVar[int] = 1  # one client per request: see the module docstring
    max_age_s: ClassVar[int | None] = 72 * 3600
    max_body_bytes: ClassVar[int | None] = 130_000
    option_parsers: ClassVar[Mapping[str, Any]] = {
        "measurement_id": _measurement_id,
        "api_secret": _text,
        "validate": parse_bool,
    }
    required_options: ClassVar[tuple[str, ...]] = ("measurement_id", "api_secret")

    def __init__(self, config: DestinationConfig) -> None:
        super().__init__(config)
        self.validate = bool(config.options.get("validate", False))

    def event_name(self, event: Event) -> str:
        # GA4's names are relay's canonical names; only an `event_names` override changes them.
        canonical = event["event_name"]
        return mapping.platform_event_name(self.config, canonical, {}) or canonical

    def unsendable(self, event: Event) -> str | None:
        name = self.event_name(event)
        if not EVENT_NAME.fullmatch(name):
            return (
                f'GA4 event names are letters, digits and "_", start with a letter and have at '
                f'most 40 characters: "{name[:60]}" (map it with event_names)'
            )
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            return f'"{name}" is reserved by GA4 and rejected from the Measurement Protocol'
        return None

    def event_payload(self, event: Event) -> dict[str, Any]:
        props = mapping.properties(event)
        params: dict[str, Any] = {}
        if props.get("currency"):
            params["currency"] = props["currency"]
        if isinstance(props.get("value"), int | float):
            params["value"] = props["value"]
        if props.get("order_id"):
            params["transaction_id"] = _param(str(props["order_id"]))
        items = []
        for item in mapping.contents(event):
            entry: dict[str, Any] = {"item_id": _param(item["id"])}
            if "quantity" in item:
                entry["quantity"] = item["quantity"]
            if "price" in item:
                entry["price"] = item["price"]
            items.append(entry)
        if items:
            params["items"] = items
        if url := mapping.page_url(event):
            params["page_location"] = _param(url)
        if referrer := mapping.referrer(event):
            params["page_referrer"] = _param(referrer)
        # Without engagement_time_msec GA4 leaves the event out of Realtime and user counts.
        # No session_id: relay does not know the browser's GA session.
        params["engagement_time_msec"] = 1
        return {
            "name": self.event_name(event),
            # per event, so a multi-event body would stay right (per-event time overrides)
            "timestamp_micros": int(event["event_time_ms"]) * 1000,
            "params": params,
        }

    def body(self, events: Sequence[Event]) -> bytes:
        # Request-level fields come from the first event: a batch is one event (max_batch 1).
        first = events[0]
        body: dict[str, Any] = {"client_id": client_id(first)}
        consent = first.get("consent") or {}
        known = {k: consent[k].upper() for k in _CONSENT_KEYS if k in consent}
        if known:
            body["consent"] = known
        if data := user_data(first):
            body["user_data"] = data
        body["events"] = [self.event_payload(e) for e in events]
        return orjson.dumps(body)

    def _request(self, url: str, events: Sequence[Event]) -> HttpRequest:
        secret = self.config.options["api_secret"]
        query = urlencode(
            {"measurement_id": self.config.options["measurement_id"], "api_secret": secret}
        )
        return HttpRequest(
            method="POST",
            url=self.endpoint_url(f"{url}?{query}"),
            headers={"Content-Type": "application/json"},
            body=self.body(events),
            secrets=(secret, urlencode({"s": secret})[2:]),
        )

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        return self._request(API_URL, events)

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        # 2xx says nothing about the events (GA4 drops malformed ones silently); only
        # transport-level statuses mean something: 429/5xx retried, other 4xx permanent.
        return outcomes_from_status(response, len(events))

    def validation_request(self, events: Sequence[Event]) -> HttpRequest | None:
        return self._request(DEBUG_URL, events) if self.validate else None

    def read_validation(self, events: Sequence[Event], response: HttpResponse) -> list[str | None]:
        try:
            messages = orjson.loads(response.body).get("validationMessages") or []
        except (orjson.JSONDecodeError, AttributeError):
            return [None] * len(events)
        reasons: list[list[str]] = [[] for _ in events]
        for message in messages:
            if not isinstance(message, dict):
                continue
            path = str(message.get("fieldPath") or "")
            text = (
                f"{message.get('validationCode') or 'INVALID'} at {path or 'request'}: "
                f"{message.get('description') or ''}".strip()
            )
            index = _event_index(path)
            if index is None:
                index = _event_index(str(message.get("description") or ""))
            # a request-level field (client_id, user_data...) fails every event it carries
            targets = [index] if index is not None and index < len(events) else range(len(events))
            for i in targets:
                reasons[i].append(text)
        return ["; ".join(r) if r else None for r in reasons]


def _event_index(text: str) -> int | None:
    m = _INDEX.search(text)
    if m is None:
        return None
    return int(m.group(1) or m.group(2))
