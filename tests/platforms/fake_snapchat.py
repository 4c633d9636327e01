"""A fake Snap Conversions API v3 that validates like destinations.md (e).

Both ``/v3/{pixel_id}/events`` and ``/v3/{pixel_id}/events/validate`` check the whole request and
answer one verdict for it: any invalid event -> 400 ``{"status": "INVALID", "reason", "param"}``
(the shape is UNCONFIRMED; the facts page's third-party schema). A valid request gets 200
``{"status": "VALID"}`` (the success body is undocumented); the real endpoint records its events in
``events``, the validator records nothing (``validated`` keeps what it approved, for tests).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay.destinations.snapchat import SNAP_EVENTS
from tests.fakes import FakeApi, Reply, json_reply

TOKEN = "test-token"
PIXEL_ID = "1234567890"
HEX64 = re.compile(r"[0-9a-f]{64}")
ACTION_SOURCES = frozenset({"WEB", "MOBILE_APP", "OFFLINE"})
# Events older than 37 days are not reported; relay's own limit is the stricter 7 days.
WINDOW_S = 37 * 86400
MAX_EVENTS = 2000
HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
RAW_FIELDS = ("client_ip_address", "client_user_agent", "sc_click_id", "sc_cookie1")


def invalid(reason: str, param: str | None = None) -> Reply:
    body = {"status": "INVALID", "reason": reason}
    if param:
        body["param"] = param
    return json_reply(400, body)


def _now_s() -> float:
    return time.time()


class Invalid(Exception):
    def __init__(self, reason: str, param: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param


@dataclass
class FakeSnapchat(FakeApi):
    routes: tuple[tuple[str, str], ...] = (
        ("POST", "/v3/{pixel_id}/events"),
        ("POST", "/v3/{pixel_id}/events/validate"),
    )
    token: str = TOKEN
    pixel_id: str = PIXEL_ID
    now_s: Callable[[], float] = _now_s
    # an INVALID reason for events the real API would refuse for reasons the fake cannot know
    invalid_event: Callable[[dict[str, Any]], str | None] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    validated: list[dict[str, Any]] = field(default_factory=list)
    # path of every request the fake judged (scripted replies skip the checks), in order
    paths: list[str] = field(default_factory=list)

    def event_ids(self) -> list[str]:
        return [e["event_id"] for e in self.events]

    def check(self, request: web.Request, body: Any) -> Reply | None:
        self.paths.append(request.path)
        if request.query.get("access_token") != self.token:
            return json_reply(401, {"status": "INVALID", "reason": "Unauthorized request"})
        if request.match_info["pixel_id"] != self.pixel_id:
            # what a third-party guide shows for a pixel the token may not use
            return invalid("Unauthorized resources")
        if request.headers.get("Content-Type") != "application/json":
            return invalid("Content-Type must be application/json")
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return invalid("Request body must be {data: [...]}", "data")
        if not 1 <= len(body["data"]) <= MAX_EVENTS:
            return invalid(f"data must hold 1 to {MAX_EVENTS} events", "data")
        try:
            for event in body["data"]:
                self.check_event(event)
                reason = self.invalid_event(event) if self.invalid_event else None
                if reason is not None:
                    raise Invalid(reason)
        except Invalid as exc:
            return invalid(exc.reason, exc.param)
        return None

    def accept(self, request: web.Request, body: Any) -> Reply:
        if request.path.endswith("/validate"):
            self.validated.extend(body["data"])
        else:
            self.events.extend(body["data"])
        return json_reply(200, {"status": "VALID"})

    def check_event(self, event: Any) -> None:
        if not isinstance(event, dict):
            raise Invalid("Each event must be an object")
        for key in ("event_name", "action_source", "event_time", "user_data"):
            if key not in event:
                raise Invalid(f"Missing required parameter {key}", key)
        if event["event_name"] not in SNAP_EVENTS:
            raise Invalid("Invalid event_name", "event_name")
        if event["action_source"] not in ACTION_SOURCES:
            raise Invalid("Invalid action_source", "action_source")
        if event["action_source"] == "WEB" and not event.get("event_source_url"):
            raise Invalid("event_source_url is required for web events", "event_source_url")
        if not isinstance(event.get("event_id", ""), str):
            raise Invalid("event_id must be a string", "event_id")
        when = event["event_time"]
        if isinstance(when, bool) or not isinstance(when, int) or when > 10**11:
            raise Invalid("event_time must be a unix timestamp in seconds", "event_time")
        now = self.now_s()
        if not now - WINDOW_S <= when <= now + 60:
            raise Invalid("Timestamp out of range", "event_time")
        self.check_user(event["user_data"])
        if event["event_name"] == "PURCHASE":
            custom = event.get("custom_data") or {}
            if not isinstance(custom.get("value"), int | float | str) or not custom.get("currency"):
                raise Invalid("PURCHASE requires price and currency", "custom_data")

    def check_user(self, user: Any) -> None:
        if not isinstance(user, dict):
            raise Invalid("user_data must be an object", "user_data")
        if unknown := set(user) - set(HASHED_FIELDS) - set(RAW_FIELDS) - {"madid", "idfv"}:
            raise Invalid(f"Unknown user_data parameters {sorted(unknown)}", "user_data")
        for key in HASHED_FIELDS:
            values = user.get(key)
            if values is None:
                continue
            values = values if isinstance(values, list) else [values]
            if not values or not all(isinstance(v, str) and HEX64.fullmatch(v) for v in values):
                raise Invalid("Unhashed PII", f"user_data.{key}")
        for key in RAW_FIELDS:
            if key in user and (not isinstance(user[key], str) or HEX64.fullmatch(user[key])):
                raise Invalid("Must not be hashed", f"user_data.{key}")
        if "client_ip_address" in user:
            try:
                ipaddress.ip_address(user["client_ip_address"])
            except ValueError:
                raise Invalid("Bad IP address", "user_data.client_ip_address") from None
        if not (
            "em" in user
            or "ph" in user
            or "madid" in user
            or ("client_ip_address" in user and "client_user_agent" in user)
        ):
            raise Invalid("Insufficient PII", "user_data")
