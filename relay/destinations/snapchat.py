"""Snap Conversions API v3: web and offline conversion events in batches of up to 2000.

Config: ``pixel_id`` (Events Manager → the Snap Pixel's id), ``access_token`` (the Conversions
API token generated in Business Details, or an OAuth token), optional ``validate`` (each event is
first checked against ``/events/validate``, which records nothing; off by default).

Dedup with the Snap Pixel is on ``event_id`` = the pixel's ``client_dedup_id`` (for PURCHASE
Snap may also match ``order_id`` against the pixel's ``transaction_id``). Snap has no free-form
custom events: a canonical event without a Snap standard event is dead-lettered with a reason
unless ``event_names`` maps it (e.g. to ``CUSTOM_EVENT_1``). App events are not supported: they
go to a Snap App ID with ``app_data``, which relay does not collect. Facts: destinations.md (e).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import orjson

from relay.config import DestinationConfig, parse_bool, parse_token
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

API_URL = "https://tr.snapchat.com/v3/{pixel_id}/events"
VALIDATE_URL = "https://tr.snapchat.com/v3/{pixel_id}/events/validate"

SNAP_EVENTS = frozenset({
    "PAGE_VIEW", "VIEW_CONTENT", "ADD_CART", "ADD_TO_WISHLIST", "SIGN_UP", "SEARCH", "PURCHASE",
    "ADD_BILLING", "START_CHECKOUT", "SUBSCRIBE", "START_TRIAL", "AD_CLICK", "AD_VIEW",
    "LIST_VIEW", "SAVE", "SHARE", "INVITE", "LOGIN", "RESERVE", "RATE", "COMPLETE_TUTORIAL",
    "LEVEL_COMPLETE", "ACHIEVEMENT_UNLOCKED", "SPEND_CREDITS", "CUSTOM_EVENT_1",
    "CUSTOM_EVENT_2", "CUSTOM_EVENT_3", "CUSTOM_EVENT_4", "CUSTOM_EVENT_5",
})  # fmt: skip

STANDARD_EVENTS: Mapping[str, str] = {
    "purchase": "PURCHASE",
    "page_view": "PAGE_VIEW",
    "view_item": "VIEW_CONTENT",
    "view_item_list": "LIST_VIEW",
    "add_to_cart": "ADD_CART",
    "add_to_wishlist": "ADD_TO_WISHLIST",
    "sign_up": "SIGN_UP",
    "search": "SEARCH",
    "add_payment_info": "ADD_BILLING",
    "begin_checkout": "START_CHECKOUT",
    "subscribe": "SUBSCRIBE",
    "start_trial": "START_TRIAL",
    "login": "LOGIN",
    # generate_lead has no Snap counterpart (no LEAD event): it needs an event_names entry.
}

# The v3 enum is UNCONFIRMED (SEG sends "website"/"app"/"OFFLINE"). Snap's own v3 example uses
# "MOBILE_APP", a v2 conversion type, and v2 types are said to be accepted: so the v2 set
# (WEB, MOBILE_APP, OFFLINE), the only one an official example backs. Every non-web, non-app
# source (store, phone, email, chat, ...) is an offline conversion for Snap.
WEB = "WEB"
OFFLINE = "OFFLINE"

# user_data hashes in the platform's order; relay.pii stores all but _HASHED_HERE already hashed
# (ph as digits with country code, this platform's rule).
_USER_HASHES = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
# stored as normalized plaintext: hashed here, since the platform wants them all hashed
_HASHED_HERE = frozenset({"ge", "ct", "st", "zp", "country"})
# Retry-After for CAPI is UNCONFIRMED: honoured when present, else the worker's backoff.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


def _pixel_id(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text or not all(c.isalnum() or c == "-" for c in text):
        raise ValueError("must be the Snap Pixel id (Events Manager), letters, digits and -")
    return text


class SnapchatDestination(Destination):
    type_name: ClassVar[str] = "snapchat"
    max_batch: ClassVar[int] = 2000
    # Snap reports events up to 37 days old, but RT's v3 adapter refuses anything past 7 days
    # (reason UNCONFIRMED): the stricter 7 days, after which the delivery expires.
    max_age_s: ClassVar[int | None] = 7 * 86400
    option_parsers: ClassVar[Mapping[str, Any]] = {
        "pixel_id": _pixel_id,
        "access_token": parse_token,
        "validate": parse_bool,
    }
    required_options: ClassVar[tuple[str, ...]] = ("pixel_id", "access_token")

    def __init__(self, config: DestinationConfig) -> None:
        super().__init__(config)
        self.validate = bool(config.options.get("validate", False))
        if self.validate:
            # The validator answers one INVALID (and one reason) for the whole request: with
            # one event per request the verdict is that event's. validate is a setup aid, so
            # the extra requests are acceptable.
            self.batch_size = 1

    def event_name(self, event: Event) -> str | None:
        name = event["event_name"]
        mapped = mapping.platform_event_name(self.config, name, STANDARD_EVENTS)
        if mapped is not None:
            return mapped
        return name if name in SNAP_EVENTS else None

    def unsendable(self, event: Event) -> str | None:
        canonical = event["event_name"]
        name = self.event_name(event)
        if name is None:
            lead = " (Snap has no lead event)" if canonical == "generate_lead" else ""
            return (
                f'no Snap event for "{canonical}"{lead}: Snap takes its standard events and'
                f' CUSTOM_EVENT_1..5 only; map it with event_names ({canonical} = "CUSTOM_EVENT_1")'
            )
        if name not in SNAP_EVENTS:
            return f'event_names maps "{canonical}" to "{name}", which is not a Snap event name'
        source = event.get("action_source")
        if source == "app":
            return "action_source app: Snap app events need a Snap App ID and app_data"
        if self.action_source(event) == WEB and not mapping.page_url(event):
            return "Snap needs event_source_url for a web event: send page.url"
        user = mapping.user(event)
        hashed = not mapping.ad_user_data_denied(event) and (user.get("em") or user.get("ph"))
        if not hashed and not (user.get("ip") and user.get("user_agent")):
            why = (
                " (ad_user_data denied: email and phone are not sent)"
                if user.get("em") or user.get("ph")
                else ""
            )
            return f"Snap needs user.email, user.phone, or both user.ip and user.user_agent{why}"
        if name == "PURCHASE":
            props = mapping.properties(event)
            missing = [k for k in ("value", "currency") if props.get(k) is None]
            if missing:
                return f"Snap rejects a PURCHASE without {' and '.join(missing)} (properties)"
        return None

    def action_source(self, event: Event) -> str:
        # No action_source: a website event, relay's main use (the pixel's companion).
        source = event.get("action_source")
        return WEB if source in (None, "website") else OFFLINE

    def user_data(self, event: Event) -> dict[str, Any]:
        user = mapping.user(event)
        data: dict[str, Any] = {}
        # ad_user_data denied: no hashed identifier. data_processing_options is not set: the
        # facts page names the field but not its values, and an unknown value could make Snap
        # refuse the event; without the identifiers there is nothing left to limit.
        if not mapping.ad_user_data_denied(event):
            for key in _USER_HASHES:
                value = user.get(key)
                if value:
                    data[key] = [sha256_hex(value) if key in _HASHED_HERE else value]
        if user.get("ip"):
            data["client_ip_address"] = user["ip"]
        if user.get("user_agent"):
            data["client_user_agent"] = user["user_agent"]
        # sc_cookie1 (the _scid cookie) is not collected by relay, so never sent.
        click_id = user.get("sc_click_id") or mapping.url_param(mapping.page_url(event), "ScCid")
        if click_id:
            data["sc_click_id"] = click_id
        return data

    def element(self, event: Event) -> dict[str, Any]:
        element: dict[str, Any] = {
            "event_name": self.event_name(event),
            # unix seconds as in Snap's own example (SEG sends ms, RT seconds: both seen)
            "event_time": mapping.event_time_s(event),
            "event_id": event["event_id"],
            "action_source": self.action_source(event),
        }
        url = mapping.page_url(event)
        if url:
            element["event_source_url"] = url
        element["user_data"] = self.user_data(event)
        custom = custom_data(event)
        if custom:
            element["custom_data"] = custom
        return element

    def _request(self, url_template: str, events: Sequence[Event]) -> HttpRequest:
        token = self.config.options["access_token"]
        encoded = quote(token, safe="")
        url = url_template.format(pixel_id=self.config.options["pixel_id"])
        return HttpRequest(
            method="POST",
            url=self.endpoint_url(f"{url}?access_token={encoded}"),
            headers={"Content-Type": "application/json"},
            body=orjson.dumps({"data": [self.element(e) for e in events]}),
            secrets=(token, encoded),
        )

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        return self._request(API_URL, events)

    def validation_request(self, events: Sequence[Event]) -> HttpRequest | None:
        return self._request(VALIDATE_URL, events) if self.validate else None

    def read_validation(self, events: Sequence[Event], response: HttpResponse) -> list[str | None]:
        body = _json_object(response.body)
        invalid = response.status == 400 or body.get("status") == "INVALID"
        if not invalid or len(events) != 1 or _unauthorized(body):
            # Valid, a verdict on several events that names none of them (not reached with
            # validate's one-event batches), or a setup fault that is no event's: the real
            # request decides (and pauses on the setup fault).
            return [None] * len(events)
        return [_snap_reason(body, response.body)]

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        count = len(events)
        status = response.status
        body = _json_object(response.body)
        detail = f"HTTP {status}: {_snap_reason(body, response.body)}"
        invalid = body.get("status") == "INVALID"
        if status in (401, 403) or (invalid and _unauthorized(body)):
            detail += ": check pixel_id and access_token in relay.toml"
            return [Outcome(OutcomeKind.RETRY, detail, pause=True)] * count
        if 200 <= status < 300:
            # The success body is not documented; an explicit INVALID is not taken as success.
            if invalid:
                return [Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)] * count
            return [Outcome(OutcomeKind.DELIVERED)] * count
        if status in _TRANSIENT_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.header("Retry-After"))
            return [Outcome(OutcomeKind.RETRY, detail, retry_after)] * count
        # 400 INVALID (one reason for the request) and other client errors: bisect.
        return [Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)] * count


def custom_data(event: Event) -> dict[str, Any]:
    props = mapping.properties(event)
    data: dict[str, Any] = {}
    if props.get("currency"):
        data["currency"] = props["currency"]
    if isinstance(props.get("value"), int | float):
        data["value"] = props["value"]
    if props.get("order_id"):
        data["order_id"] = props["order_id"]
    items = mapping.contents(event)
    if items:
        data["content_ids"] = [item["id"] for item in items]
        contents = []
        for item in items:
            entry: dict[str, Any] = {"id": item["id"]}
            if _whole(item.get("quantity")):
                entry["quantity"] = int(item["quantity"])
            if "price" in item:
                entry["item_price"] = item["price"]
            contents.append(entry)
        data["contents"] = contents
        data["num_items"] = sum(
            int(i["quantity"]) if _whole(i.get("quantity")) else 1 for i in items
        )
    search = props.get("search_term") or props.get("search_string")
    if isinstance(search, str) and search:
        data["search_string"] = search
    return data


def _whole(value: Any) -> bool:
    return isinstance(value, int | float) and value >= 0 and float(value).is_integer()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _unauthorized(body: Mapping[str, Any]) -> bool:
    """A token that may not use this pixel. Not on the facts page: a third-party guide shows
    Snap answering it as INVALID "Unauthorized resources" (status code not given). Bisecting
    and dead-lettering every event for a wrong pixel_id would lose them all: pause instead."""
    reason = body.get("reason")
    return isinstance(reason, str) and "unauthorized" in reason.lower()


def _snap_reason(body: Mapping[str, Any], raw: bytes) -> str:
    """Snap's ``{status, reason, param}`` error (shape UNCONFIRMED), else the body itself."""
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason:
        return summarize_body(raw) or "(empty body)"
    text = f"{body.get('status') or 'INVALID'}: {reason}"
    param = body.get("param")
    return f"{text} (param {param})" if param else text
