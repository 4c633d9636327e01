"""A fake Pinterest Conversions API v5 that validates like destinations.md (d).

Request-level faults answer Pinterest's ``{"code", "message"}`` errors (401 code 2, 403 code 29,
400 code 4196). Each event is then checked on its own: all processed -> 200 with one status per
event; any failed -> 422 code 953 (DetailedError) with the per-event statuses in ``details``.
Processed events land in ``events`` (``test_events`` under ``?test=true``: not recorded).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay.destinations.pinterest import PINTEREST_EVENTS
from tests.fakes import FakeApi, Reply, json_reply

TOKEN = "test-token"
AD_ACCOUNT_ID = "1234567890"
HEX64 = re.compile(r"[0-9a-f]{64}")
CURRENCY = re.compile(r"[A-Z]{3}")
DECIMAL = re.compile(r"-?\d+(\.\d+)?")
ACTION_SOURCES = frozenset({"app_android", "app_ios", "web", "offline"})
# The window is UNCONFIRMED (≈7 d); the fake enforces the reading relay takes.
WINDOW_S = 7 * 86400
MAX_EVENTS = 1000
HASHED_FIELDS = (
    "em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id", "hashed_maids"
)  # fmt: skip
RAW_FIELDS = ("client_ip_address", "client_user_agent", "click_id", "partner_id")
EVENT_FIELDS = frozenset({
    "event_name", "action_source", "event_time", "event_id", "user_data", "event_source_url",
    "opt_out", "partner_name", "custom_data", "app_id", "app_name", "app_version", "app_info",
    "device_brand", "device_carrier", "device_model", "device_type", "os_version", "wifi",
    "language",
})  # fmt: skip
CUSTOM_FIELDS = frozenset({
    "currency", "value", "content_ids", "contents", "content_name", "content_category",
    "content_brand", "num_items", "order_id", "search_string", "opt_out_type", "np",
})  # fmt: skip


def api_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return json_reply(status, {"code": code, "message": message}, headers)


def _now_s() -> float:
    return time.time()


@dataclass
class FakePinterest(FakeApi):
    routes: tuple[tuple[str, str], ...] = (("POST", "/v5/ad_accounts/{ad_account_id}/events"),)
    token: str = TOKEN
    ad_account_id: str = AD_ACCOUNT_ID
    now_s: Callable[[], float] = _now_s
    # a per-event failure message for events the real API would fail for reasons the fake
    # cannot know (e.g. a catalogue check), or None
    fail_event: Callable[[dict[str, Any]], str | None] | None = None
    # a request-level rejection (e.g. 400 code 4196) for a batch the test wants rejected whole
    reject_batch: Callable[[list[dict[str, Any]]], Reply | None] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    test_events: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def event_ids(self) -> list[str]:
        return [e["event_id"] for e in self.events]

    def check(self, request: web.Request, body: Any) -> Reply | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return api_error(401, 2, "Authentication failed.")
        if request.match_info["ad_account_id"] != self.ad_account_id:
            return api_error(403, 29, "You are not permitted to access that resource.")
        if set(request.query) - {"test"} or request.query.get("test", "true") != "true":
            return api_error(400, 4196, f"Invalid query parameters: {dict(request.query)}")
        if request.headers.get("Content-Type") != "application/json":
            return api_error(400, 4196, "Content-Type must be application/json")
        if (
            not isinstance(body, dict)
            or set(body) != {"data"}
            or not isinstance(body["data"], list)
        ):
            return api_error(400, 4196, "Invalid request body: expected {data: [...]}")
        if not 1 <= len(body["data"]) <= MAX_EVENTS:
            return api_error(400, 4196, f"data must hold 1 to {MAX_EVENTS} events")
        if self.reject_batch is not None:
            return self.reject_batch(body["data"])
        return None

    def accept(self, request: web.Request, body: Any) -> Reply:
        test = request.query.get("test") == "true"
        statuses = []
        for event in body["data"]:
            error = self.event_error(event)
            if error is None and self.fail_event is not None:
                error = self.fail_event(event)
            if error is None:
                (self.test_events if test else self.events).append(event)
                statuses.append({"status": "processed", "error_message": "", "warning_message": ""})
            else:
                self.failed.append((event, error))
                statuses.append({"status": "failed", "error_message": error, "warning_message": ""})
        summary = {
            "num_events_received": len(statuses),
            "num_events_processed": sum(s["status"] == "processed" for s in statuses),
            "events": statuses,
        }
        if summary["num_events_processed"] == len(statuses):
            return json_reply(200, summary)
        return json_reply(
            422,
            {
                "code": 953,
                "message": "Not all events were successfully processed",
                "details": summary,
            },
        )

    def event_error(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "Event must be an object"
        for key in ("event_name", "action_source", "event_time", "event_id", "user_data"):
            if key not in event:
                return f"Missing required field: {key}"
        if unknown := set(event) - EVENT_FIELDS:
            return f"Unknown fields: {sorted(unknown)}"
        if event["event_name"] not in PINTEREST_EVENTS:
            return f"Invalid event_name parameter: {event['event_name']}"
        if event["action_source"] not in ACTION_SOURCES:
            return f"Invalid action_source parameter: {event['action_source']}"
        if not isinstance(event["event_id"], str) or not event["event_id"]:
            return "Invalid event_id parameter"
        when = event["event_time"]
        if isinstance(when, bool) or not isinstance(when, int) or when > 10**11:
            return f"Invalid event_time parameter: {when!r} is not unix seconds"
        now = self.now_s()
        if when < now - WINDOW_S:
            return "Invalid event_timestamp parameter. Given timestamp is in the past."
        if when > now + 60:
            return "Invalid event_timestamp parameter. Given timestamp is in the future."
        return self.user_data_error(event["user_data"]) or self.custom_data_error(
            event.get("custom_data", {})
        )

    def user_data_error(self, user: Any) -> str | None:
        if not isinstance(user, dict):
            return "user_data must be an object"
        if unknown := set(user) - set(HASHED_FIELDS) - set(RAW_FIELDS):
            return f"Unknown user_data fields: {sorted(unknown)}"
        for key in HASHED_FIELDS:
            if key in user and not (
                isinstance(user[key], list)
                and user[key]
                and all(isinstance(v, str) and HEX64.fullmatch(v) for v in user[key])
            ):
                return f"user_data.{key} must be an array of SHA-256 hashes"
        for key in RAW_FIELDS:
            if key in user and (not isinstance(user[key], str) or HEX64.fullmatch(user[key])):
                return f"user_data.{key} must be sent unhashed"
        if "client_ip_address" in user:
            try:
                ipaddress.ip_address(user["client_ip_address"])
            except ValueError:
                return "user_data.client_ip_address is not an IP address"
        if not (
            "em" in user
            or "hashed_maids" in user
            or ("client_ip_address" in user and "client_user_agent" in user)
        ):
            return "user_data needs em, hashed_maids, or client_ip_address + client_user_agent"
        return None

    def custom_data_error(self, custom: Any) -> str | None:
        if not isinstance(custom, dict):
            return "custom_data must be an object"
        if unknown := set(custom) - CUSTOM_FIELDS:
            return f"Unknown custom_data fields: {sorted(unknown)}"
        if "value" in custom and not (
            isinstance(custom["value"], str) and DECIMAL.fullmatch(custom["value"])
        ):
            return "custom_data.value must be a string holding a number"
        if "currency" in custom and not CURRENCY.fullmatch(str(custom["currency"])):
            return "custom_data.currency must be an ISO-4217 code"
        for item in custom.get("contents", []):
            if "item_price" in item and not (
                isinstance(item["item_price"], str) and DECIMAL.fullmatch(item["item_price"])
            ):
                return "custom_data.contents[].item_price must be a string holding a number"
            if "quantity" in item and not isinstance(item["quantity"], int):
                return "custom_data.contents[].quantity must be an integer"
        if "num_items" in custom and not isinstance(custom["num_items"], int):
            return "custom_data.num_items must be an integer"
        return None
