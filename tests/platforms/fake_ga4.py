"""A fake GA4 Measurement Protocol: ``/mp/collect`` and ``/debug/mp/collect`` (destinations.md f).

Like the real one, ``/mp/collect`` answers 204 whatever it gets: a valid request for the right
stream lands in ``collected``, anything else in ``dropped`` (GA4 discards it silently). The
debug endpoint runs the same checks and answers 200 ``{"validationMessages": [...]}``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import FakeApi, Reply, json_reply

MEASUREMENT_ID = "G-TEST123"
API_SECRET = "test-secret"
HEX64 = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
RESERVED = frozenset({"session_start", "first_open", "first_visit", "user_engagement"})
WINDOW_US = 72 * 3600 * 1_000_000
RAW_SIZE = web.RequestKey("raw_size", int)

Message = dict[str, str]


def _now_ms() -> int:
    return int(time.time() * 1000)


def message(path: str, description: str, code: str) -> Message:
    return {"fieldPath": path, "description": description, "validationCode": code}


@dataclass
class FakeGA4(FakeApi):
    routes: tuple[tuple[str, str], ...] = (
        ("POST", "/mp/collect"),
        ("POST", "/debug/mp/collect"),
    )
    measurement_id: str = MEASUREMENT_ID
    api_secret: str = API_SECRET
    now_ms: Callable[[], int] = _now_ms
    collected: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[Any, list[Message]]] = field(default_factory=list)
    debug_requests: list[Any] = field(default_factory=list)

    def validate(self, body: Any, raw_size: int) -> list[Message]:
        if not isinstance(body, dict):
            return [message("", "Unable to parse the request body as JSON", "VALUE_INVALID")]
        found = []
        if raw_size >= 130_000:
            found.append(message("", "Request body must be under 130 kB", "VALUE_OUT_OF_BOUNDS"))
        if not isinstance(body.get("client_id"), str) or not body["client_id"]:
            found.append(message("client_id", "client_id is required", "VALUE_REQUIRED"))
        for key, value in (body.get("consent") or {}).items():
            if value not in ("GRANTED", "DENIED"):
                found.append(message(f"consent.{key}", "GRANTED or DENIED", "VALUE_INVALID"))
        found += self.user_data_problems(body.get("user_data") or {})
        events = body.get("events")
        if not isinstance(events, list) or not 1 <= len(events) <= 25:
            found.append(message("events", "1 to 25 events", "EXCEEDED_MAX_ENTITIES"))
            return found
        for i, event in enumerate(events):
            found += self.event_problems(i, event)
        return found

    def user_data_problems(self, data: dict[str, Any]) -> list[Message]:
        found = []
        hashed = [
            (f"user_data.{k}", v)
            for k in ("sha256_email_address", "sha256_phone_number")
            for v in data.get(k, [])
        ]
        for address in data.get("address", []):
            hashed += [
                (f"user_data.address.{k}", v) for k, v in address.items() if k.startswith("sha256_")
            ]
            for key in ("city", "region", "postal_code", "country"):
                if key in address and HEX64.fullmatch(address[key]):
                    found.append(message(f"user_data.address.{key}", "not hashed", "VALUE_INVALID"))
        for path, value in hashed:
            if not HEX64.fullmatch(str(value)):
                found.append(message(path, "must be a hex SHA-256 digest", "VALUE_INVALID"))
        return found

    def event_problems(self, i: int, event: dict[str, Any]) -> list[Message]:
        path = f"events[{i}]"
        name = str(event.get("name", ""))
        if not NAME.fullmatch(name):
            return [
                message(
                    f"{path}.name",
                    f"Event at index: [{i}] has invalid name [{name}].",
                    "NAME_INVALID",
                )
            ]
        if name in RESERVED or name.startswith(("google_", "ga_", "firebase_")):
            return [message(f"{path}.name", f"Event name [{name}] is reserved.", "NAME_RESERVED")]
        found = []
        micros = event.get("timestamp_micros")
        now_us = self.now_ms() * 1000
        if micros is not None and not (
            isinstance(micros, int) and now_us - WINDOW_US <= micros <= now_us
        ):
            found.append(
                message(
                    f"{path}.timestamp_micros",
                    "must be within the last 72 hours",
                    "VALUE_OUT_OF_BOUNDS",
                )
            )
        params = event.get("params") or {}
        if len(params) > 25:
            found.append(message(f"{path}.params", "at most 25 params", "EXCEEDED_MAX_ENTITIES"))
        for key, value in params.items():
            if isinstance(value, str) and len(value) > 100:
                found.append(
                    message(f"{path}.params.{key}", "at most 100 characters", "VALUE_OUT_OF_BOUNDS")
                )
        # GA4 documents currency as required whenever value is set (no revenue without it)
        if "value" in params and "currency" not in params:
            found.append(
                message(
                    f"{path}.params.currency",
                    "Currency is required when value is set.",
                    "VALUE_REQUIRED",
                )
            )
        for j, item in enumerate(params.get("items") or []):
            if not item.get("item_id") and not item.get("item_name"):
                found.append(
                    message(f"{path}.params.items[{j}]", "item_id or item_name", "VALUE_REQUIRED")
                )
        return found

    async def _handle(self, request: web.Request) -> web.Response:
        # The reply depends on the raw size, which FakeApi's parsed body loses: keep it aside.
        request[RAW_SIZE] = len(await request.read())
        return await super()._handle(request)

    def accept(self, request: web.Request, body: Any) -> Reply:
        problems = self.validate(body, request.get(RAW_SIZE, 0))
        if request.path == "/debug/mp/collect":
            # the validator does not check api_secret (validating-events)
            self.debug_requests.append(body)
            return json_reply(200, {"validationMessages": problems})
        query = request.query
        if query.get("measurement_id") != self.measurement_id:
            problems.append(message("measurement_id", "unknown stream", "VALUE_INVALID"))
        if query.get("api_secret") != self.api_secret:
            problems.append(message("api_secret", "wrong secret", "VALUE_INVALID"))
        if problems:
            self.dropped.append((body, problems))
        else:
            for event in body["events"]:
                request_fields = {k: v for k, v in body.items() if k != "events"}
                self.collected.append({**request_fields, "event": event})
        return 204, {}, b""

    def names(self) -> list[str]:
        return [c["event"]["name"] for c in self.collected]
