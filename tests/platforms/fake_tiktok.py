"""A fake TikTok Events API 2.0 (``/open_api/v1.3/event/track/``) that validates like TikTok.

TikTok answers HTTP 200 with ``{"code": 0, "message": "OK"}``, and errors as HTTP 200 with a
non-zero code: 40001 (no permission on the pixel), 40002 (invalid parameter, the message naming
``Batch.<index>.<field>``), 40100 (throttled). One bad event fails the request (inferred, as
relay assumes: destinations.md (b)). The message texts are the fake's own except 40100's.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import FakeApi, Reply, json_reply

PATH = "/open_api/v1.3/event/track/"
MAX_EVENTS = 1000
# UNCONFIRMED for TikTok: the fake enforces relay's own 7-day assumption.
MAX_AGE_S = 7 * 86400
FUTURE_TOLERANCE_S = 300
REQUEST_ID = "202601010000000123456789ABCDEF"

EVENT_KEYS = frozenset(
    {"event", "event_time", "event_id", "user", "page", "properties", "limited_data_use"}
)
HASHED_USER_KEYS = frozenset({"email", "phone", "external_id"})
RAW_USER_KEYS = frozenset({"ip", "user_agent", "ttp", "ttclid", "locale"})

_SHA256 = re.compile(r"[0-9a-f]{64}")


def tiktok_reply(code: int, message: str, status: int = 200, **headers: str) -> Reply:
    return json_reply(status, {"code": code, "message": message, "request_id": REQUEST_ID}, headers)


THROTTLED = tiktok_reply(40100, "Too many requests. Please retry in some time.")


@dataclass
class FakeTikTok(FakeApi):
    routes: tuple[tuple[str, str], ...] = (("POST", PATH),)
    pixel_code: str = "CABCDEF0123456789"
    access_token: str = "test-token"
    # a request holding one of these event ids is refused as a whole (40002)
    poison_ids: set[str] = field(default_factory=set)
    now_s: Callable[[], float] = time.time

    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted request, in arrival order."""
        return [e for r in self.received for e in r.body["data"]]

    async def _handle(self, request: web.Request) -> web.Response:
        response = await super()._handle(request)
        # TikTok answers its errors with HTTP 200 too, which the base class files as accepted:
        # file them by their code. No await between the base's append and here: it is ours.
        assert isinstance(response.body, bytes)
        if response.status == 200 and orjson.loads(response.body).get("code") != 0:
            seen = self.received.pop()
            reply = (response.status, dict(response.headers), response.body)
            self.rejected.append((seen, reply))
        return response

    def check(self, request: web.Request, body: Any) -> Reply | None:
        # The real code for a wrong token is not in the facts page; 40001 is its documented
        # "no permission" answer.
        if request.headers.get("Access-Token") != self.access_token:
            return tiktok_reply(40001, "No permission to operate pixel with this access token.")
        if request.content_type != "application/json" or not isinstance(body, dict):
            return tiktok_reply(40002, "Request body must be a JSON object.")
        if body.get("event_source") != "web":
            return tiktok_reply(40002, "event_source: Must be one of: web.")
        if body.get("event_source_id") != self.pixel_code:
            return tiktok_reply(
                40001, f"No permission to operate pixel {body.get('event_source_id')}."
            )
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_EVENTS:
            return tiktok_reply(40002, f"data: Length must be between 1 and {MAX_EVENTS}.")
        for index, event in enumerate(data):
            problem = self.check_event(event)
            if problem is not None:
                return tiktok_reply(40002, f"Batch.{index}.{problem}")
        return None

    def check_event(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "_schema: Invalid input type."
        if unknown := set(event) - EVENT_KEYS:
            return f"{sorted(unknown)[0]}: Unknown field."
        if event.get("event_id") in self.poison_ids:
            return "event_id: Invalid value."
        if not isinstance(event.get("event"), str) or not event["event"]:
            return "event: Missing data for required field."
        if not isinstance(event.get("event_id"), str):
            return "event_id: Not a valid string."
        when = event.get("event_time")
        if not isinstance(when, int) or isinstance(when, bool):
            return "event_time: Not a valid integer."
        now = self.now_s()
        if not now - MAX_AGE_S <= when <= now + FUTURE_TOLERANCE_S:
            return "event_time: Must be a unix time in seconds within the last 7 days."
        if "limited_data_use" in event and not isinstance(event["limited_data_use"], bool):
            return "limited_data_use: Not a valid boolean."
        return (
            self.check_user(event.get("user", {}))
            or self.check_page(event.get("page", {}))
            or self.check_properties(event.get("properties", {}))
        )

    def check_user(self, user: Any) -> str | None:
        if not isinstance(user, dict):
            return "user: Not a valid mapping type."
        for key, value in user.items():
            values = value if key == "external_id" and isinstance(value, list) else [value]
            if key in HASHED_USER_KEYS:
                if not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in values):
                    return f"user.{key}: Must be a SHA-256 hash."
            elif key in RAW_USER_KEYS:
                if not isinstance(value, str) or _SHA256.fullmatch(value):
                    return f"user.{key}: Must not be hashed."
            else:
                return f"user.{key}: Unknown field."
        if "ip" in user:
            try:
                ipaddress.ip_address(user["ip"])
            except ValueError:
                return "user.ip: Not a valid IP address."
        return None

    def check_page(self, page: Any) -> str | None:
        if not isinstance(page, dict) or set(page) - {"url", "referrer"}:
            return "page: Only url and referrer are accepted."
        if not all(isinstance(v, str) for v in page.values()):
            return "page.url: Not a valid string."
        return None

    def check_properties(self, props: Any) -> str | None:
        if not isinstance(props, dict):
            return "properties: Not a valid mapping type."
        currency = props.get("currency")
        if currency is not None and not (isinstance(currency, str) and len(currency) == 3):
            return "properties.currency: Not a valid ISO 4217 currency."
        value = props.get("value")
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return "properties.value: Not a valid number."
        if props.get("content_type", "product") not in ("product", "product_group"):
            return "properties.content_type: Must be one of: product, product_group."
        for i, item in enumerate(props.get("contents", [])):
            if not isinstance(item, dict) or not isinstance(item.get("content_id"), str):
                return f"properties.contents.{i}.content_id: Not a valid string."
            price = item.get("price", 0)
            if not isinstance(price, int | float) or isinstance(price, bool):
                return f"properties.contents.{i}.price: Not a valid number."
        return None

    def accept(self, request: web.Request, body: Any) -> Reply:
        return tiktok_reply(0, "OK")
