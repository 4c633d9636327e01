"""Pinterest Conversions API v5: conversion events in batches of up to 1000.

Config: ``ad_account_id`` (the ad account's number in Ads Manager), ``access_token`` (the
conversion access token generated in Ads Manager, or an OAuth token with ``ads:write``; its user
needs a role on the ad account), optional ``test`` (``?test=true``: Pinterest validates and
answers as usual but records nothing; off by default).

Dedup with the Pinterest tag is on ``event_id``, so the tag must be given the same id. A canonical
event without a Pinterest standard event is sent as Pinterest's ``custom`` event. Facts:
destinations.md (d).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

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

API_URL = "https://api.pinterest.com/v5/ad_accounts/{ad_account_id}/events"

# Pinterest's accepted event_name values; any other name is "not accepted".
PINTEREST_EVENTS = frozenset({
    "add_payment_info", "add_to_cart", "add_to_wishlist", "app_install", "app_open", "checkout",
    "contact", "custom", "customize_product", "find_location", "initiate_checkout", "lead",
    "page_visit", "schedule", "search", "signup", "start_trial", "submit_application",
    "subscribe", "view_category", "view_content", "watch_video",
})  # fmt: skip

STANDARD_EVENTS: Mapping[str, str] = {
    "purchase": "checkout",  # Pinterest's "checkout" is the completed order
    "add_to_cart": "add_to_cart",
    "page_view": "page_visit",
    "view_item": "view_content",
    "view_item_list": "view_category",
    "search": "search",
    "sign_up": "signup",
    "generate_lead": "lead",
    "add_payment_info": "add_payment_info",
    "begin_checkout": "initiate_checkout",
    "add_to_wishlist": "add_to_wishlist",
    "subscribe": "subscribe",
    "start_trial": "start_trial",
    "contact": "contact",
    "schedule": "schedule",
    "submit_application": "submit_application",
    "find_location": "find_location",
    "customize_product": "customize_product",
}
# Pinterest takes any other conversion as its generic "custom" event (a made-up name would be
# rejected); the canonical name is not sent, since Pinterest has no field for it.
CUSTOM_EVENT = "custom"

# Pinterest knows web, offline and app_android/app_ios only: a conversion that happened
# neither on the site nor in an app (store, phone, email, chat, ...) is "offline". An event
# without action_source is taken as web, relay's main use (the tag's companion).
ACTION_SOURCES: Mapping[str, str] = {
    "website": "web",
    "physical_store": "offline",
    "phone_call": "offline",
    "email": "offline",
    "chat": "offline",
    "business_messaging": "offline",
    "system_generated": "offline",
    "other": "offline",
}
_ANDROID = re.compile(r"android", re.IGNORECASE)
_IOS = re.compile(r"\b(iphone|ipad|ipod|ios)\b|cfnetwork|darwin", re.IGNORECASE)

# user_data hashes in the platform's order; relay.pii stores all but _HASHED_HERE already hashed
# (ph as digits with country code, this platform's rule).
_USER_HASHES = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
# stored as normalized plaintext: hashed here, since the platform wants them all hashed
_HASHED_HERE = frozenset({"ge", "ct", "st", "zp", "country"})
# Retry-After is UNCONFIRMED for Pinterest: honoured when present, else the worker's backoff.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_AUTH_FAILED_CODE = 2
_NO_PERMISSION_CODE = 29
_PARTIAL_FAILURE_CODE = 953


def _ad_account_id(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError("must be the ad account's number (Ads Manager → Business → Ad accounts)")
    return text


def decimal_string(amount: float) -> str:
    """Pinterest's money values are strings (parsed to a double): never exponent notation."""
    if isinstance(amount, int):
        return str(amount)
    return format(Decimal(repr(float(amount))), "f")


class PinterestDestination(Destination):
    type_name: ClassVar[str] = "pinterest"
    max_batch: ClassVar[int] = 1000
    # The window is UNCONFIRMED ("commonly said to be 7 days", and too old events fail one by
    # one): 7 days is the stricter reading, past it the delivery expires instead of failing.
    max_age_s: ClassVar[int | None] = 7 * 86400
    option_parsers: ClassVar[Mapping[str, Any]] = {
        "ad_account_id": _ad_account_id,
        "access_token": parse_token,
        "test": parse_bool,
    }
    required_options: ClassVar[tuple[str, ...]] = ("ad_account_id", "access_token")

    def __init__(self, config: DestinationConfig) -> None:
        super().__init__(config)
        self.test = bool(config.options.get("test", False))

    def event_name(self, event: Event) -> str:
        name = event["event_name"]
        mapped = mapping.platform_event_name(self.config, name, STANDARD_EVENTS)
        if mapped is not None:
            return mapped
        return name if name in PINTEREST_EVENTS else CUSTOM_EVENT

    def action_source(self, event: Event) -> str | None:
        source = event.get("action_source")
        if source is None:
            return "web"
        if source == "app":
            # app_android or app_ios: only the device's user agent can say which.
            ua = mapping.user(event).get("user_agent") or ""
            if _ANDROID.search(ua):
                return "app_android"
            return "app_ios" if _IOS.search(ua) else None
        return ACTION_SOURCES.get(source, "offline")

    def unsendable(self, event: Event) -> str | None:
        name = self.event_name(event)
        if name not in PINTEREST_EVENTS:
            return (
                f'event_names maps "{event["event_name"]}" to "{name}", which is not a Pinterest'
                " event name (" + ", ".join(sorted(PINTEREST_EVENTS)) + ")"
            )
        if self.action_source(event) is None:
            return (
                "action_source app: Pinterest needs app_android or app_ios, and user.user_agent"
                " does not say which (send the device's user agent)"
            )
        user = mapping.user(event)
        has_email = bool(user.get("em")) and not mapping.ad_user_data_denied(event)
        if not has_email and not (user.get("ip") and user.get("user_agent")):
            why = " (ad_user_data denied: the email is not sent)" if user.get("em") else ""
            return f"Pinterest needs user.email, or both user.ip and user.user_agent{why}"
        return None

    def user_data(self, event: Event) -> dict[str, Any]:
        user = mapping.user(event)
        data: dict[str, Any] = {}
        # ad_user_data denied: no hashed identifier at all. `opt_out` is not set: the facts page
        # lists the field without saying it means limited data use (it reads as a tracking
        # opt-out, which is a different statement about the visitor).
        if not mapping.ad_user_data_denied(event):
            for key in _USER_HASHES:
                value = user.get(key)
                # zp is "digits only": a postcode with letters (UK "m11ae") has no digits-only
                # form that is still the user's postcode, so it is left out rather than mangled.
                if value and not (key == "zp" and not value.isdigit()):
                    data[key] = [sha256_hex(value) if key in _HASHED_HERE else value]
        if user.get("ip"):
            data["client_ip_address"] = user["ip"]
        if user.get("user_agent"):
            data["client_user_agent"] = user["user_agent"]
        click_id = user.get("epik") or mapping.url_param(mapping.page_url(event), "epik")
        if click_id:
            data["click_id"] = click_id
        return data

    def element(self, event: Event) -> dict[str, Any]:
        element: dict[str, Any] = {
            "event_name": self.event_name(event),
            "action_source": self.action_source(event),
            "event_time": mapping.event_time_s(event),
            "event_id": event["event_id"],
        }
        url = mapping.page_url(event)
        if url:
            element["event_source_url"] = url
        element["user_data"] = self.user_data(event)
        custom = custom_data(event)
        if custom:
            element["custom_data"] = custom
        return element

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        token = self.config.options["access_token"]
        url = API_URL.format(ad_account_id=self.config.options["ad_account_id"])
        if self.test:
            url += "?test=true"
        return HttpRequest(
            method="POST",
            url=self.endpoint_url(url),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=orjson.dumps({"data": [self.element(e) for e in events]}),
            secrets=(token,),
        )

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        count = len(events)
        status = response.status
        body = _json_object(response.body)
        code = body.get("code")
        detail = _error_detail(status, body, response.body)
        if 200 <= status < 300:
            outcomes = _event_outcomes(body.get("events"), count)
            # 200 is the request accepted; without usable statuses there is nothing to fail.
            return outcomes or [Outcome(OutcomeKind.DELIVERED)] * count
        if status == 422 and code == _PARTIAL_FAILURE_CODE:
            details = body.get("details")
            statuses = details.get("events") if isinstance(details, dict) else None
            outcomes = _event_outcomes(statuses, count)
            if outcomes:
                return outcomes
        if status == 401 or code == _AUTH_FAILED_CODE:
            detail += ": the access_token is not valid; put a new one in relay.toml"
            return [Outcome(OutcomeKind.RETRY, detail, pause=True)] * count
        if status == 403 or code == _NO_PERMISSION_CODE:
            # Listed as permanent, but it is the token's user lacking a role on the ad account:
            # a setup fault every event would hit, so pause and keep the events.
            detail += ": the token's user needs a role on this ad account"
            return [Outcome(OutcomeKind.RETRY, detail, pause=True)] * count
        if status in _TRANSIENT_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.header("Retry-After"))
            return [Outcome(OutcomeKind.RETRY, detail, retry_after)] * count
        # 400 code 4196 and the rest: the request as a whole, no event named: bisect.
        return [Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)] * count


def custom_data(event: Event) -> dict[str, Any]:
    props = mapping.properties(event)
    data: dict[str, Any] = {}
    if props.get("currency"):
        data["currency"] = props["currency"]
    if isinstance(props.get("value"), int | float):
        data["value"] = decimal_string(props["value"])
    if props.get("order_id"):
        data["order_id"] = props["order_id"]
    items = mapping.contents(event)
    if items:
        data["content_ids"] = [item["id"] for item in items]
        contents = []
        for item in items:
            entry: dict[str, Any] = {"id": item["id"]}
            if "price" in item:
                entry["item_price"] = decimal_string(item["price"])
            if _whole(item.get("quantity")):
                entry["quantity"] = int(item["quantity"])
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


def _event_outcomes(statuses: Any, count: int) -> list[Outcome] | None:
    """Per-event outcomes from Pinterest's ``events`` array (request order), or None when it
    does not have one entry per event."""
    if not isinstance(statuses, list) or len(statuses) != count:
        return None
    outcomes = []
    for entry in statuses:
        entry = entry if isinstance(entry, dict) else {}
        if entry.get("status") == "processed":
            warning = entry.get("warning_message")
            outcomes.append(
                Outcome(OutcomeKind.DELIVERED, f"Pinterest: {warning}" if warning else None)
            )
        else:
            message = entry.get("error_message") or f"status {entry.get('status')!r}"
            outcomes.append(Outcome(OutcomeKind.PERMANENT, f"Pinterest: {message}"))
    return outcomes


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _error_detail(status: int, body: Mapping[str, Any], raw: bytes) -> str:
    if "code" in body or "message" in body:
        return f"HTTP {status}: Pinterest code {body.get('code')}: {body.get('message')}"
    return f"HTTP {status}: {summarize_body(raw)}"
