"""A fake Meta Conversions API: validates like Graph API v25.0 and answers in its shapes.

Success is ``{"events_received", "messages", "fbtrace_id"}``; errors are Graph's ``{"error":
{message, type, code, error_subcode, is_transient, fbtrace_id}}`` (destinations.md (a)). Like
Meta, one bad event rejects the whole request. The codes and shapes are the documented ones;
the message texts are the fake's own unless noted.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import FakeApi, Reply, json_reply

VERSION = "v25.0"
MAX_EVENTS = 1000
MAX_AGE_S = 7 * 86400
PHYSICAL_STORE_MAX_AGE_S = 62 * 86400
FUTURE_TOLERANCE_S = 60
FBTRACE_ID = "AbCdEfGhIjKlMnOp"

ACTION_SOURCES = frozenset(
    {
        "email", "website", "app", "phone_call", "chat", "physical_store", "system_generated",
        "business_messaging", "other",
    }
)  # fmt: skip
HASHED_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id"}
)
RAW_KEYS = frozenset({"client_ip_address", "client_user_agent", "fbc", "fbp"})
EVENT_KEYS = frozenset(
    {
        "event_name", "event_time", "event_id", "action_source", "event_source_url",
        "referrer_url", "user_data", "custom_data", "opt_out", "data_processing_options",
        "data_processing_options_country", "data_processing_options_state",
    }
)  # fmt: skip
BODY_KEYS = frozenset({"data", "test_event_code", "partner_agent", "namespace_id"})

_SHA256 = re.compile(r"[0-9a-f]{64}")
# fb.{subdomain_index}.{creation_time_ms}.{fbclid | random}
_COOKIE = re.compile(r"fb\.[0-9]\.[0-9]{13}\.\S+")


def meta_error(
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    type_: str = "OAuthException",
    is_transient: bool = False,
    user_title: str | None = None,
    user_msg: str | None = None,
    status: int = 400,
    headers: dict[str, str] | None = None,
) -> Reply:
    error: dict[str, Any] = {
        "message": message,
        "type": type_,
        "code": code,
        "is_transient": is_transient,
        "fbtrace_id": FBTRACE_ID,
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if user_title is not None:
        error["error_user_title"] = user_title
    if user_msg is not None:
        error["error_user_msg"] = user_msg
    return json_reply(status, {"error": error}, headers)


def invalid(message: str) -> Reply:
    return meta_error(100, f"(#100) {message}")


TOO_OLD = meta_error(
    100,
    "Invalid parameter",
    subcode=2804003,
    user_title="Event Timestamp Too Old",
    user_msg="The timestamp for this event is more than 7 days in the past.",
)
BAD_TOKEN = meta_error(190, "Invalid OAuth access token - Cannot parse access token")


@dataclass
class FakeMeta(FakeApi):
    routes: tuple[tuple[str, str], ...] = (("POST", "/{version}/{pixel_id}/events"),)
    pixel_id: str = "1234567890"
    access_token: str = "test-token"
    # a request holding one of these event ids is refused as a whole, as Meta does
    poison_ids: set[str] = field(default_factory=set)
    now_s: Callable[[], float] = time.time

    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted request, in arrival order."""
        return [e for r in self.received for e in r.body["data"]]

    def check(self, request: web.Request, body: Any) -> Reply | None:
        if request.match_info["version"] != VERSION:
            return invalid(f"Unknown API version {request.match_info['version']}")
        if request.query.get("access_token") != self.access_token:
            return BAD_TOKEN
        if request.match_info["pixel_id"] != self.pixel_id:
            pixel = request.match_info["pixel_id"]
            return meta_error(
                100,
                f"Unsupported post request. Object with ID '{pixel}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
                subcode=33,
                type_="GraphMethodException",
            )
        if request.content_type != "application/json":
            return invalid("The request body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return invalid("The parameter data is required")
        if unknown := set(body) - BODY_KEYS:
            return invalid(f"Param {sorted(unknown)[0]} is not valid")
        if not 1 <= len(body["data"]) <= MAX_EVENTS:
            return invalid(f"data must hold 1 to {MAX_EVENTS} events")
        for index, event in enumerate(body["data"]):
            problem = self.check_event(event)
            if problem is not None:
                return (
                    problem if isinstance(problem, tuple) else invalid(f"data[{index}]: {problem}")
                )
        return None

    def check_event(self, event: Any) -> Reply | str | None:
        if not isinstance(event, dict):
            return "each event must be an object"
        if unknown := set(event) - EVENT_KEYS:
            return f"Param {sorted(unknown)[0]} is not valid"
        if event.get("event_id") in self.poison_ids:
            return invalid("Invalid parameter")
        if not isinstance(event.get("event_name"), str) or not event["event_name"]:
            return "event_name is required"
        if not isinstance(event.get("event_id"), str) or not event["event_id"]:
            return "event_id must be a string"
        source = event.get("action_source")
        if source not in ACTION_SOURCES:
            return "action_source must be one of " + ", ".join(sorted(ACTION_SOURCES))
        when = event.get("event_time")
        if not isinstance(when, int) or isinstance(when, bool):
            return "event_time must be a unix timestamp in seconds"
        now = self.now_s()
        if when > now + FUTURE_TOLERANCE_S:
            return "event_time is in the future (milliseconds instead of seconds?)"
        max_age = PHYSICAL_STORE_MAX_AGE_S if source == "physical_store" else MAX_AGE_S
        if when < now - max_age:
            return TOO_OLD
        user = event.get("user_data")
        if not isinstance(user, dict) or not user:
            return "user_data must hold at least one customer information parameter"
        if source == "website" and not event.get("event_source_url"):
            return "event_source_url is required for website events"
        if source == "website" and not user.get("client_user_agent"):
            return "client_user_agent is required for website events"
        return self.check_user(user) or self.check_custom(event) or self.check_ldu(event)

    def check_user(self, user: dict[str, Any]) -> str | None:
        for key, value in user.items():
            if key in HASHED_KEYS:
                if not isinstance(value, list) or not value:
                    return f"user_data.{key} must be an array of SHA-256 hashes"
                if not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in value):
                    return f"user_data.{key} must be SHA-256 hashed (64 lowercase hex)"
            elif key in RAW_KEYS:
                if not isinstance(value, str) or _SHA256.fullmatch(value):
                    return f"user_data.{key} must not be hashed"
            else:
                return f"Param user_data.{key} is not valid"
        ip = user.get("client_ip_address")
        if ip is not None:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                return "user_data.client_ip_address is not an IP address"
        for key in ("fbc", "fbp"):
            if key in user and not _COOKIE.fullmatch(user[key]):
                return f"user_data.{key} is not fb.<index>.<time ms>.<value>"
        return None

    def check_custom(self, event: dict[str, Any]) -> str | None:
        custom = event.get("custom_data", {})
        if not isinstance(custom, dict):
            return "custom_data must be an object"
        currency = custom.get("currency")
        if currency is not None and not (isinstance(currency, str) and len(currency) == 3):
            return "custom_data.currency must be an ISO 4217 code"
        value = custom.get("value")
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return "custom_data.value must be a number"
        for item in custom.get("contents", []):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                return "custom_data.contents items need an id"
        return None

    def check_ldu(self, event: dict[str, Any]) -> str | None:
        options = event.get("data_processing_options")
        if options is None:
            return None
        if options not in ([], ["LDU"]):
            return 'data_processing_options must be [] or ["LDU"]'
        if options and (
            event.get("data_processing_options_country") not in (0, 1)
            or event.get("data_processing_options_state") not in (0, 1000)
        ):
            return "LDU needs data_processing_options_country (0|1) and _state (0|1000)"
        return None

    def accept(self, request: web.Request, body: Any) -> Reply:
        return json_reply(
            200, {"events_received": len(body["data"]), "messages": [], "fbtrace_id": FBTRACE_ID}
        )
