"""Reddit Conversions API v3: ``POST /api/v3/pixels/{pixel_id}/conversion_events``.

Config: ``pixel_id``, ``access_token`` (a Conversion Access Token from Events Manager: it does
not expire, so a 401 means it was deleted and pauses the destination), optional ``test_id``
(Reddit's test mode id from Events Manager; off by default).

Dedup with the Reddit Pixel is on ``metadata.conversion_id`` (the pixel's ``conversionId``)
and the event type, within 2 days. One invalid event makes Reddit reject the whole batch with
a 400 that does not say which: the worker bisects it. Facts: destinations.md (h1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from relay.config import DestinationConfig
from relay.destinations import mapping
from relay.destinations.base import (
    Destination,
    Event,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    summarize_body,
)
from relay.pii import sha256_hex
from relay.retry import parse_retry_after

API_URL = "https://ads-api.reddit.com/api/v3/pixels/{pixel_id}/conversion_events"
TRACKING_TYPES = frozenset({
    "PAGE_VISIT", "VIEW_CONTENT", "SEARCH", "ADD_TO_CART", "ADD_TO_WISHLIST", "LEAD",
    "PURCHASE", "SIGN_UP",
})  # fmt: skip
STANDARD_EVENTS = {
    "page_view": "PAGE_VISIT",
    "view_item": "VIEW_CONTENT",
    "search": "SEARCH",
    "add_to_cart": "ADD_TO_CART",
    "add_to_wishlist": "ADD_TO_WISHLIST",
    "generate_lead": "LEAD",
    "purchase": "PURCHASE",
    "sign_up": "SIGN_UP",
}
ACTION_SOURCES = {"website": "WEBSITE", "app": "APP", "physical_store": "PHYSICAL_STORE"}


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string (use ${ENV} for secrets)")
    return value


def event_type(config: DestinationConfig, canonical: str) -> dict[str, str]:
    """``type``: a standard tracking type, else CUSTOM with the name (the pixel's custom name
    must match for dedup). ``event_names`` may name a tracking type or a custom name."""
    name = mapping.platform_event_name(config, canonical, STANDARD_EVENTS) or canonical
    if name in TRACKING_TYPES:
        return {"tracking_type": name}
    return {"tracking_type": "CUSTOM", "custom_event_name": name}


def user_fields(event: Event) -> dict[str, Any]:
    user = mapping.user(event)
    out: dict[str, Any] = {}
    if mapping.ad_user_data_denied(event):
        # Reddit's limited-data-use mode; no hashed identifier is sent with it.
        out["data_processing_options"] = {"modes": ["LDU"]}
    else:
        if user.get("em"):
            out["email"] = user["em"]
        if user.get("external_id"):
            out["external_id"] = user["external_id"]
        # The phone hashing rule is not on the facts page (RT hashes what it is given). E.164
        # with "+" is the form Reddit's own docs describe for phone_number and the one the
        # other E.164 platforms share, so it is the variant sent.
        if user.get("ph_e164"):
            out["phone_number"] = user["ph_e164"]
        # Reddit is the one platform whose IP is hashed "when hashing is on" (RT): the stricter
        # reading is that ip_address is a hashed identifier, so it is SHA-256 of the raw IP
        # (and, like the other hashes, withheld when ad_user_data is denied).
        if user.get("ip"):
            out["ip_address"] = sha256_hex(user["ip"])
    if user.get("user_agent"):
        out["user_agent"] = user["user_agent"]
    return out


def metadata(event: Event) -> dict[str, Any]:
    props = mapping.properties(event)
    out: dict[str, Any] = {"conversion_id": event["event_id"]}
    if props.get("currency"):
        out["currency"] = props["currency"]
    if isinstance(props.get("value"), int | float):
        out["value"] = props["value"]
    products = mapping.contents(event)
    if products:
        out["item_count"] = sum(int(p.get("quantity", 1)) for p in products)
        out["products"] = [{"id": p["id"]} for p in products]
    return out


class RedditDestination(Destination):
    type_name: ClassVar[str] = "reddit"
    max_batch: ClassVar[int] = 1000
    # Reddit also refuses events more than 5 minutes in the future; ingest already clamps
    # event times to at most 60 s past the receive time, so no sent event is ever that far.
    max_age_s: ClassVar[int | None] = 7 * 86400
    option_parsers: ClassVar[Mapping[str, Any]] = {
        "pixel_id": _text,
        "access_token": _text,
        "test_id": _text,
    }
    required_options: ClassVar[tuple[str, ...]] = ("pixel_id", "access_token")

    def event_payload(self, event: Event) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "event_at": int(event["event_time_ms"]),
            # Relay's events come from websites unless the sender says otherwise.
            "action_source": ACTION_SOURCES.get(event.get("action_source") or "website", "OTHER"),
        }
        url = mapping.page_url(event)
        click_id = mapping.user(event).get("rdt_cid") or mapping.url_param(url, "rdt_cid")
        if click_id:
            payload["click_id"] = click_id
        if url:
            payload["event_source_url"] = url
        payload["type"] = event_type(self.config, event["event_name"])
        payload["user"] = user_fields(event)
        payload["metadata"] = metadata(event)
        return payload

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        options = self.config.options
        data: dict[str, Any] = {}
        if options.get("test_id"):
            data["test_id"] = options["test_id"]
        data["events"] = [self.event_payload(e) for e in events]
        token = options["access_token"]
        return HttpRequest(
            method="POST",
            url=self.endpoint_url(API_URL.format(pixel_id=quote(options["pixel_id"], safe=""))),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=orjson.dumps({"data": data}),
            secrets=(token,),
        )

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        count = len(events)
        status = response.status
        if 200 <= status < 300:
            return [Outcome(OutcomeKind.DELIVERED)] * count
        detail = f"HTTP {status}: {error_message(response.body)}"
        if status in (401, 403):
            # The token was deleted or lacks access to this pixel: every event would fail the
            # same way, so keep them queued and pause until the token is fixed.
            return [Outcome(OutcomeKind.RETRY, detail, pause=True)] * count
        if status in (408, 425, 429) or status >= 500:
            retry_after = parse_retry_after(response.header("Retry-After"))
            return [Outcome(OutcomeKind.RETRY, detail, retry_after)] * count
        # 400 rejects the batch without naming the event: bisected down to the bad one.
        return [Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)] * count


def error_message(body: bytes) -> str:
    """The message of an error body ({"message"}, {"error": {"message"}} or {"error": "..."})
    when there is one, else the body itself, shortened."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return summarize_body(body)
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict) and error.get("message"):
            return summarize_body(str(error["message"]).encode())
        if isinstance(error, str):
            return summarize_body(error.encode())
    return summarize_body(body)
