"""Meta Conversions API (Facebook and Instagram ads): ``type = "meta"``.

Config: ``pixel_id`` (the numeric dataset/pixel id from Events Manager) and ``access_token``
(Events Manager › the pixel › Settings › Conversions API › Generate access token).

One request per batch: ``POST https://graph.facebook.com/v25.0/{pixel_id}/events`` with the token
in the ``access_token`` query parameter and a JSON body ``{"data": [...]}``. Meta deduplicates a
server event against the pixel's on ``event_id`` + ``event_name`` within 48 h, so the pixel's
``eventID`` goes to ``event_id`` unchanged and the pixel must use the same event name (the
``event_names`` table overrides the standard names below). Facts: destinations.md (a).

Test mode: ``test_event_code = "TEST123"`` adds the code to the body so the events show in Events
Manager's Test Events tab. WARNING: Meta does NOT drop test events. They are processed like any
other event and used for ad targeting and measurement; remove the code in production.

Meta rejects the whole request when any one event is invalid and does not say which: those
errors are ``whole_batch`` and the worker bisects the batch to isolate the bad events. A rejected
access token (code 190) pauses the destination instead, keeping every event queued.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus, urlencode

import orjson

from relay.config import parse_token
from relay.destinations import mapping
from relay.destinations.base import (
    Destination,
    Event,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    outcomes_from_status,
    summarize_body,
)
from relay.pii import sha256_hex
from relay.retry import parse_retry_after

API_VERSION = "v25.0"
EVENTS_URL = f"https://graph.facebook.com/{API_VERSION}/{{pixel_id}}/events"

STANDARD_EVENTS: Mapping[str, str] = {
    "purchase": "Purchase",
    "page_view": "PageView",
    "view_item": "ViewContent",
    "add_to_cart": "AddToCart",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "generate_lead": "Lead",
    "sign_up": "CompleteRegistration",
    "search": "Search",
    "add_to_wishlist": "AddToWishlist",
    "subscribe": "Subscribe",
    "start_trial": "StartTrial",
    "contact": "Contact",
    "schedule": "Schedule",
    "submit_application": "SubmitApplication",
    "find_location": "FindLocation",
    "customize_product": "CustomizeProduct",
    "donate": "Donate",
}

# user_data keys the store keeps hashed already, and those it keeps as normalized plaintext that
# Meta wants hashed (normalized as Meta asks: relay.pii). Meta takes arrays for all of them.
_STORED_HASHED = ("em", "ph", "fn", "ln", "db")
_HASHED_HERE = ("ge", "ct", "st", "zp", "country")

# Error codes, as destinations.md (a) §8 classifies them, except that the setup faults pause.
_TOKEN_REJECTED = 190
# 200: the token lacks permission on the pixel; 33 (alone, or as code 100's subcode): the pixel
# does not exist or the token may not see it. Like a bad token these are the destination's
# setup, not the events: dead-lettering would cost every event (and a bisection of each batch
# first, 2n-1 requests), while a pause costs one request and keeps the events.
_SETUP_CODES = frozenset({200, 33})
_PIXEL_MISSING_SUBCODE = 33
_THROTTLED = frozenset({4, 17, 80003})
_TRANSIENT = frozenset({1, 2, 341, 368, 5000, 21009})
# 100 covers every invalid-parameter subcode, 2804003 "Event Timestamp Too Old" included.
_INVALID_REQUEST = frozenset({100, 3, 294, 105})

_PIXEL_ID = re.compile(r"[0-9]{1,32}")


def _pixel_id(value: Any) -> str:
    # TOML users may write the id as a number
    numeric = isinstance(value, str | int) and not isinstance(value, bool)
    text = str(value).strip() if numeric else ""
    if _PIXEL_ID.fullmatch(text) is None:
        raise ValueError("must be the numeric pixel (dataset) id from Meta Events Manager")
    return text


def action_source(event: Event) -> str:
    """The event's own action_source, else "website" when it has a page URL, else "other".

    "other" is Meta's value for a conversion that happened "in a way that is not listed": a
    backend that names no source could be a CRM, a shop or a renewal job, and relay must not
    claim "system_generated" (an automatic conversion such as a renewal) on its behalf.
    """
    explicit = event.get("action_source")
    if isinstance(explicit, str) and explicit:
        return explicit
    return "website" if mapping.page_url(event) else "other"


def user_data(event: Event) -> dict[str, Any]:
    """Meta ``user_data``: hashed identifiers as arrays, IP, user agent and cookies raw."""
    user = mapping.user(event)
    out: dict[str, Any] = {}
    # ad_user_data denied strips every hashed identifier (ge/ct/st/zp/country are hashed too).
    # IP and user agent stay: Meta needs them for website events and to geolocate the LDU flag.
    # fbp/fbc stay: they are Meta's own cookies, which exist only where ad_storage allowed them.
    if not mapping.ad_user_data_denied(event):
        for key in _STORED_HASHED:
            if user.get(key):
                out[key] = [user[key]]
        for key in _HASHED_HERE:
            if user.get(key):
                out[key] = [sha256_hex(user[key])]
        if user.get("external_id"):
            # stored as a SHA-256 already: Meta recommends (does not require) hashing it
            out["external_id"] = [user["external_id"]]
    if user.get("ip"):
        out["client_ip_address"] = user["ip"]
    if user.get("user_agent"):
        out["client_user_agent"] = user["user_agent"]
    fbc = mapping.meta_fbc(event)
    if fbc:
        out["fbc"] = fbc
    if user.get("fbp"):
        out["fbp"] = user["fbp"]
    return out


def custom_data(event: Event) -> dict[str, Any]:
    props = mapping.properties(event)
    out: dict[str, Any] = {}
    for key in ("value", "currency", "order_id", "content_name", "content_category"):
        if props.get(key) is not None:
            out[key] = props[key]
    search = props.get("search_term") or props.get("search_string")
    if isinstance(search, str):
        out["search_string"] = search
    items = mapping.contents(event)
    if items:
        out["contents"] = [
            {
                "id": item["id"],
                **({"quantity": item["quantity"]} if "quantity" in item else {}),
                **({"item_price": item["price"]} if "price" in item else {}),
            }
            for item in items
        ]
        out["content_ids"] = [item["id"] for item in items]
        out["content_type"] = "product"
        count = sum(item.get("quantity", 1) for item in items)
        out["num_items"] = int(count) if float(count).is_integer() else count
    return out


class MetaDestination(Destination):
    type_name: ClassVar[str] = "meta"
    max_batch: ClassVar[int] = 1000
    # Events older than 7 days make Meta reject the whole request; physical_store events may be
    # 62 days old (see window_s).
    max_age_s: ClassVar[int | None] = 7 * 86400
    option_parsers: ClassVar[Mapping[str, Any]] = {
        "pixel_id": _pixel_id,
        "access_token": parse_token,
    }
    required_options: ClassVar[tuple[str, ...]] = ("pixel_id", "access_token")

    def window_s(self, event: Event) -> int | None:
        return 62 * 86400 if event.get("action_source") == "physical_store" else self.max_age_s

    def startup_warnings(self) -> list[str]:
        if self.config.test_event_code:
            return [
                "test_event_code is set: Meta records test events like real ones "
                "(they count in reporting and optimization); remove it in production"
            ]
        return []

    def event_name(self, event: Event) -> str:
        canonical = str(event["event_name"])
        return mapping.platform_event_name(self.config, canonical, STANDARD_EVENTS) or canonical

    def unsendable(self, event: Event) -> str | None:
        if action_source(event) == "website":
            if not mapping.page_url(event):
                return (
                    "Meta requires event_source_url for website events: the event has no "
                    "page.url (send page.url, or an action_source other than website)"
                )
            if not mapping.user(event).get("user_agent"):
                return (
                    "Meta requires client_user_agent for website events: the event has no "
                    "user.user_agent (a backend source must forward the visitor's User-Agent)"
                )
        if not user_data(event):
            return (
                "Meta requires at least one user_data parameter: the event has no identifier "
                "it may send (email, phone, external_id, IP, user agent, fbp, fbc...)"
            )
        return None

    def map_event(self, event: Event) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_name": self.event_name(event),
            "event_time": mapping.event_time_s(event),
            "event_id": event["event_id"],
            "action_source": action_source(event),
        }
        url, referrer = mapping.page_url(event), mapping.referrer(event)
        if url:
            out["event_source_url"] = url
        if referrer:
            out["referrer_url"] = referrer
        out["user_data"] = user_data(event)
        custom = custom_data(event)
        if custom:
            out["custom_data"] = custom
        if mapping.ad_user_data_denied(event):
            # Limited Data Use with country 0 and state 0: Meta geolocates the visitor from the
            # IP and applies LDU where the law calls for it. Naming a place (1/1000 = California)
            # would be a claim relay cannot make; stripping the hashes above is the main effect.
            out["data_processing_options"] = ["LDU"]
            out["data_processing_options_country"] = 0
            out["data_processing_options_state"] = 0
        return out

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        token = self.config.options["access_token"]
        body: dict[str, Any] = {"data": [self.map_event(e) for e in events]}
        if self.config.test_event_code:
            body["test_event_code"] = self.config.test_event_code
        url = EVENTS_URL.format(pixel_id=quote(self.config.options["pixel_id"], safe=""))
        url = self.endpoint_url(f"{url}?{urlencode({'access_token': token})}")
        return HttpRequest(
            method="POST",
            url=url,
            headers={"Content-Type": "application/json"},
            body=orjson.dumps(body),
            secrets=tuple(dict.fromkeys((token, quote_plus(token)))),
        )

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        outcome = self._read(response)
        if outcome.detail:
            # Graph echoes a malformed token in its message, and a proxy's error page may echo
            # the URL: details end up in the database, logs and /readyz.
            token = self.config.options["access_token"]
            detail = outcome.detail
            for secret in (token, quote_plus(token)):
                detail = detail.replace(secret, "[redacted]")
            outcome = replace(outcome, detail=detail)
        return [outcome] * len(events)

    def trace_id(self, response: HttpResponse) -> str | None:
        # fbtrace_id sits at the top of a success and inside "error" of a failure
        payload = _json(response.body)
        if not isinstance(payload, dict):
            return None
        error = payload.get("error")
        found = payload.get("fbtrace_id") or (
            error.get("fbtrace_id") if isinstance(error, dict) else None
        )
        return str(found) if found else None

    def _read(self, response: HttpResponse) -> Outcome:
        payload = _json(response.body)
        if 200 <= response.status < 300:
            if isinstance(payload, dict) and "events_received" in payload:
                return Outcome(OutcomeKind.DELIVERED)
            # Not Meta's answer (a proxy's?): resending is harmless, Meta dedups on event_id.
            detail = f"HTTP {response.status} without events_received: "
            return Outcome(OutcomeKind.RETRY, detail + summarize_body(response.body))
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            # an HTML error page or a proxy's answer: 5xx retried, 4xx rejects the request
            return outcomes_from_status(response, 1)[0]
        return classify_error(error, parse_retry_after(response.header("Retry-After")))


def classify_error(error: Mapping[str, Any], retry_after_s: float | None = None) -> Outcome:
    """One Outcome for the whole request from Meta's ``{"error": {...}}``."""
    code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
    detail = error_detail(error)
    if code == _TOKEN_REJECTED or code in _SETUP_CODES or subcode == _PIXEL_MISSING_SUBCODE:
        # The token is invalid, expired or revoked, or may not use this pixel: every event would
        # fail the same way. Pause (loudly, in /readyz) and keep the events queued.
        return Outcome(OutcomeKind.RETRY, detail, retry_after_s, pause=True)
    if code in _THROTTLED or code in _TRANSIENT or error.get("is_transient") is True:
        return Outcome(OutcomeKind.RETRY, detail, retry_after_s)
    if code in _INVALID_REQUEST:
        return Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)
    # Unmapped codes are retried (as production adapters do): max_attempts bounds the cost.
    return Outcome(OutcomeKind.RETRY, detail, retry_after_s)


def error_detail(error: Mapping[str, Any]) -> str:
    code, subcode = error.get("code"), error.get("error_subcode")
    text = f"Meta error {code}" + (f"/{subcode}" if subcode is not None else "")
    if error.get("type"):
        text += f" ({error['type']})"
    text += f": {error.get('message') or 'no message'}"
    title, message = error.get("error_user_title"), error.get("error_user_msg")
    if title or message:
        text += " - " + ": ".join(str(part) for part in (title, message) if part)
    if error.get("fbtrace_id"):
        text += f" [fbtrace_id {error['fbtrace_id']}]"
    return text if len(text) <= 600 else text[:600] + "…"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
