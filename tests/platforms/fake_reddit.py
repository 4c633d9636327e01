"""A fake Reddit Conversions API v3 (destinations.md h1).

One invalid event fails the whole request with a 400 that does not say which event (what makes
RT resend events one by one); a valid batch answers 200 and lands in ``events``. The error body
shape is not on the facts page: ``{"error": {"code", "message"}}`` stands in for it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import FakeApi, Reply, json_reply

PIXEL_ID = "t2_pixel123"
TOKEN = "test-token"
HEX64 = re.compile(r"[0-9a-f]{64}")
TRACKING_TYPES = frozenset({
    "PAGE_VISIT", "VIEW_CONTENT", "SEARCH", "ADD_TO_CART", "ADD_TO_WISHLIST", "LEAD",
    "PURCHASE", "SIGN_UP", "CUSTOM",
})  # fmt: skip
ACTION_SOURCES = frozenset({"WEBSITE", "APP", "PHYSICAL_STORE", "OTHER"})
HASHED_USER_FIELDS = ("email", "external_id", "phone_number", "ip_address")
MAX_AGE_MS = 7 * 86400 * 1000
MAX_FUTURE_MS = 5 * 60 * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def error(status: int, message: str) -> Reply:
    return json_reply(status, {"error": {"code": status, "message": message}})


@dataclass
class FakeReddit(FakeApi):
    routes: tuple[tuple[str, str], ...] = (("POST", "/api/v3/pixels/{pixel_id}/conversion_events"),)
    pixel_id: str = PIXEL_ID
    token: str = TOKEN
    revoked: bool = False
    now_ms: Callable[[], int] = _now_ms
    # a test's stand-in for whatever else Reddit refuses in an event: the reason, or None
    refuse: Callable[[dict[str, Any]], str | None] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    test_ids: list[str | None] = field(default_factory=list)

    def check(self, request: web.Request, body: Any) -> Reply | None:
        if self.revoked or request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "Unauthorized: invalid or revoked access token")
        if request.match_info["pixel_id"] != self.pixel_id:
            return error(404, "pixel not found")
        data = body.get("data") if isinstance(body, dict) else None
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list) or not 1 <= len(events) <= 1000:
            return error(400, "data.events: between 1 and 1000 events")
        for event in events:
            problem = self.event_problem(event)
            if problem:
                return error(400, f"invalid request: {problem}")
        return None

    def event_problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "event must be an object"
        if self.refuse is not None and (reason := self.refuse(event)):
            return reason
        at = event.get("event_at")
        if not isinstance(at, int) or at < 10**12:
            return "event_at must be epoch milliseconds"
        now = self.now_ms()
        if not now - MAX_AGE_MS <= at <= now + MAX_FUTURE_MS:
            return "event_at must be within the last 7 days and at most 5 minutes ahead"
        if event.get("action_source") not in ACTION_SOURCES:
            return "action_source is invalid"
        kind = event.get("type") or {}
        if kind.get("tracking_type") not in TRACKING_TYPES:
            return "type.tracking_type is invalid"
        if (kind["tracking_type"] == "CUSTOM") != bool(kind.get("custom_event_name")):
            return "type.custom_event_name goes with (and only with) CUSTOM"
        click_id = event.get("click_id")
        if click_id is not None and (not isinstance(click_id, str) or HEX64.fullmatch(click_id)):
            return "click_id must be the raw rdt_cid"
        user = event.get("user") or {}
        for key in HASHED_USER_FIELDS:
            if key in user and not HEX64.fullmatch(str(user[key])):
                return f"user.{key} must be a SHA-256 hex digest"
        if "user_agent" in user and HEX64.fullmatch(str(user["user_agent"])):
            return "user.user_agent must not be hashed"
        modes = (user.get("data_processing_options") or {}).get("modes", [])
        if any(mode != "LDU" for mode in modes):
            return "user.data_processing_options.modes accepts LDU"
        meta = event.get("metadata") or {}
        if not isinstance(meta.get("conversion_id", ""), str):
            return "metadata.conversion_id must be a string"
        if "currency" in meta and not re.fullmatch(r"[A-Z]{3}", str(meta["currency"])):
            return "metadata.currency must be ISO 4217"
        if "value" in meta and not isinstance(meta["value"], int | float):
            return "metadata.value must be a number"
        if "item_count" in meta and not isinstance(meta["item_count"], int):
            return "metadata.item_count must be an integer"
        return None

    def accept(self, request: web.Request, body: Any) -> Reply:
        self.events.extend(body["data"]["events"])
        self.test_ids.append(body["data"].get("test_id"))
        return json_reply(200, {"message": "Successfully processed"})

    def conversion_ids(self) -> list[str]:
        return [e["metadata"]["conversion_id"] for e in self.events]
