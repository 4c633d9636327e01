"""TikTok Events API 2.0 (web events of a TikTok pixel): ``type = "tiktok"``.

Config: ``pixel_code`` (TikTok Ads Manager › Tools › Events › Web events › the pixel's code) and
``access_token`` (the pixel's Settings › Events API › Generate access token).

One request per batch: ``POST https://business-api.tiktok.com/open_api/v1.3/event/track/`` with
an ``Access-Token`` header and ``{"event_source": "web", "event_source_id": <pixel code>,
"data": [...]}``. TikTok deduplicates a server event against the pixel's on ``event`` +
``event_id`` within 48 h, so the pixel's ``event_id`` goes to ``event_id`` unchanged and the
pixel must use the same event name (the ``event_names`` table overrides the names below; a site
whose pixel still fires the older ``CompletePayment`` sets ``purchase = "CompletePayment"``).
Facts: destinations.md (b).

Test mode: ``test_event_code = "TEST123"`` adds the code to the body so the events show in the
pixel's Test Events tab. Off by default.

TikTok answers HTTP 200 for errors too, with a non-zero ``code``. Errors about the request as a
whole (40002 names a ``Batch.<index>`` element but fails the request) are ``whole_batch``: the
worker bisects, and what TikTok already took from a resent half is deduplicated on event_id.
No permission on the pixel (40001) pauses the destination instead, keeping every event queued.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

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
from relay.retry import parse_retry_after

TRACK_URL = "https://business-api.tiktok.com/open_api/v1.3/event/track/"

# TikTok's list has no page view event: page_view goes out under its canonical name, as a custom
# event (accepted, not usable for optimization). purchase is "Purchase", which replaced
# "CompletePayment" in TikTok's list of September 2025.
STANDARD_EVENTS: Mapping[str, str] = {
    "purchase": "Purchase",
    "add_to_cart": "AddToCart",
    "view_item": "ViewContent",
    "begin_checkout": "InitiateCheckout",
    "add_payment_info": "AddPaymentInfo",
    "generate_lead": "Lead",
    "sign_up": "CompleteRegistration",
    "search": "Search",
    "add_to_wishlist": "AddToWishlist",
    "subscribe": "Subscribe",
    "start_trial": "StartTrial",
    "contact": "Contact",
    "submit_application": "SubmitApplication",
    "schedule": "Schedule",
    "find_location": "FindLocation",
    "customize_product": "CustomizeProduct",
}

_OK = 0
# RudderStack treats 20001 as success; it is probably a partial success (UNCONFIRMED). The
# stricter reading: not proof that every event was taken. It is handled like a rejection of the
# request: bisection resends halves (TikTok drops what it already has by event_id) until the
# events it refuses are alone, and those are dead-lettered with TikTok's message.
_PARTIAL = 20001
_THROTTLED = 40100
# 40001: no permission on the pixel (a wrong pixel_code or a token of another account). The
# facts call it permanent, but it is the destination's setup, not the events: dead-lettering
# would cost every event (each batch bisected first, 2n-1 requests); a pause costs one request
# and keeps the events queued until the config is fixed.
_NO_PERMISSION = 40001
_INVALID = 40002

_PIXEL_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _pixel_code(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if _PIXEL_CODE.fullmatch(text) is None:
        raise ValueError("must be the pixel code from TikTok Events Manager (letters and digits)")
    return text


def user_fields(event: Event) -> dict[str, Any]:
    """TikTok ``user``: hashed email, E.164 phone and external_id; the rest raw."""
    user = mapping.user(event)
    out: dict[str, Any] = {}
    # ad_user_data denied strips the hashed identifiers and sets limited_data_use. IP and user
    # agent stay (TikTok's limited data use processing relies on them); ttp/ttclid are TikTok's
    # own cookie and click id, which exist only where ad_storage allowed them.
    if not mapping.ad_user_data_denied(event):
        if user.get("em"):
            out["email"] = user["em"]
        if user.get("ph_e164"):
            # TikTok hashes the phone in E.164 with its "+", unlike Meta (digits only).
            out["phone"] = user["ph_e164"]
        if user.get("external_id"):
            out["external_id"] = user["external_id"]
    if user.get("ip"):
        out["ip"] = user["ip"]
    if user.get("user_agent"):
        out["user_agent"] = user["user_agent"]
    if user.get("ttp"):
        out["ttp"] = user["ttp"]
    ttclid = user.get("ttclid") or mapping.url_param(mapping.page_url(event), "ttclid")
    if ttclid:
        out["ttclid"] = ttclid
    return out


def properties(event: Event) -> dict[str, Any]:
    props = mapping.properties(event)
    out: dict[str, Any] = {}
    for key in ("value", "currency", "order_id"):
        if props.get(key) is not None:
            out[key] = props[key]
    search = props.get("search_term") or props.get("query")
    if isinstance(search, str):
        out["query"] = search
    items = mapping.contents(event)
    if items:
        out["contents"] = [
            {
                "content_id": item["id"],
                **({"quantity": item["quantity"]} if "quantity" in item else {}),
                **({"price": item["price"]} if "price" in item else {}),
            }
            for item in items
        ]
        out["content_type"] = "product"
    return out


class TikTokDestination(Destination):
    type_name: ClassVar[str] = "tiktok"
    max_batch: ClassVar[int] = 1000
    # TikTok's window is UNCONFIRMED. 7 days, as Meta and Reddit: the stricter reading, since an
    # event expired by relay is visible in its deliveries, one dropped by TikTok is not.
    max_age_s: ClassVar[int | None] = 7 * 86400
    option_parsers: ClassVar[Mapping[str, Any]] = {
        "pixel_code": _pixel_code,
        "access_token": parse_token,
    }
    required_options: ClassVar[tuple[str, ...]] = ("pixel_code", "access_token")

    def event_name(self, event: Event) -> str:
        canonical = str(event["event_name"])
        return mapping.platform_event_name(self.config, canonical, STANDARD_EVENTS) or canonical

    def map_event(self, event: Event) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.event_name(event),
            "event_time": mapping.event_time_s(event),
            "event_id": event["event_id"],
        }
        user = user_fields(event)
        if user:
            out["user"] = user
        url, referrer = mapping.page_url(event), mapping.referrer(event)
        if url or referrer:
            out["page"] = {
                **({"url": url} if url else {}),
                **({"referrer": referrer} if referrer else {}),
            }
        props = properties(event)
        if props:
            out["properties"] = props
        if mapping.ad_user_data_denied(event):
            out["limited_data_use"] = True
        return out

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        token = self.config.options["access_token"]
        # "web": the configured id is a pixel code; app, offline and CRM events would need their
        # own event set ids, so every event goes out as a web event of the pixel.
        body: dict[str, Any] = {
            "event_source": "web",
            "event_source_id": self.config.options["pixel_code"],
            "data": [self.map_event(e) for e in events],
        }
        if self.config.test_event_code:
            body["test_event_code"] = self.config.test_event_code
        return HttpRequest(
            method="POST",
            url=self.endpoint_url(TRACK_URL),
            headers={"Content-Type": "application/json", "Access-Token": token},
            body=orjson.dumps(body),
            secrets=(token,),
        )

    def trace_id(self, response: HttpResponse) -> str | None:
        payload = _json(response.body)
        found = payload.get("request_id") if isinstance(payload, dict) else None
        return str(found) if found else None

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        outcome = classify(response)
        token = self.config.options["access_token"]
        if outcome.detail and token in outcome.detail:
            # details end up in the database, logs and /readyz
            outcome = replace(outcome, detail=outcome.detail.replace(token, "[redacted]"))
        return [outcome] * len(events)


def classify(response: HttpResponse) -> Outcome:
    """One Outcome for the whole request: TikTok's ``code`` first, then the HTTP status."""
    retry_after = parse_retry_after(response.header("Retry-After"))
    payload = _json(response.body)
    if not isinstance(payload, dict):
        payload = {}
    code = payload.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        if 200 <= response.status < 300:
            # Not TikTok's envelope (a proxy's?): resending is harmless, TikTok dedups on event_id.
            detail = f"HTTP {response.status} without TikTok's code: "
            return Outcome(OutcomeKind.RETRY, detail + summarize_body(response.body), retry_after)
        return outcomes_from_status(response, 1)[0]
    if code == _OK:
        return Outcome(OutcomeKind.DELIVERED)
    detail = f"TikTok code {code}: {payload.get('message') or 'no message'}"
    if payload.get("request_id"):
        detail += f" [request_id {payload['request_id']}]"
    if len(detail) > 600:
        detail = detail[:600] + "…"
    if code == _THROTTLED:
        return Outcome(OutcomeKind.RETRY, detail, retry_after)
    if code == _NO_PERMISSION:
        return Outcome(OutcomeKind.RETRY, detail, retry_after, pause=True)
    if code in (_PARTIAL, _INVALID):
        return Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)
    # Any other code: by HTTP status (TikTok normally answers 200, which makes it permanent).
    status = response.status
    if status in (408, 425, 429) or status >= 500:
        return Outcome(OutcomeKind.RETRY, f"HTTP {status}: {detail}", retry_after)
    return Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
