"""A fake LinkedIn Conversions API: validates BATCH_CREATE requests like destinations.md (c).

Any invalid element fails the whole batch with HTTP 422 and one ``Index: <i>, ERROR :: /path ::
text`` line per problem (LinkedIn's real shape, as RT's fixtures record it); a valid batch gets
200 ``{"elements": [{"status": 201}, ...]}`` and lands in ``conversions``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import FakeApi, Reply, json_reply

TOKEN = "test-token"
HEX64 = re.compile(r"[0-9a-f]{64}")
RULE_URN = re.compile(r"urn:lla:llaPartnerConversion:(\d+)")
AMOUNT = re.compile(r"-?\d+(\.\d+)?")
ID_TYPES = frozenset({
    "SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "ACXIOM_ID", "ORACLE_MOAT_ID",
})  # fmt: skip
WINDOW_MS = 90 * 86400 * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def api_error(status: int, message: str, code: str | None = None, service: int | None = None):
    body: dict[str, Any] = {"status": status, "message": message}
    if code:
        body["code"] = code
    if service:
        body["serviceErrorCode"] = service
    return json_reply(status, body)


@dataclass
class FakeLinkedIn(FakeApi):
    routes: tuple[tuple[str, str], ...] = (("POST", "/rest/conversionEvents"),)
    token: str = TOKEN
    # conversion rules that exist on the ad account (created with the CONVERSIONS_API method)
    rules: frozenset[str] = frozenset({"1111", "2222", "3333"})
    # LinkedIn-Version values still active: older ones answer 426
    oldest_version: str = "202512"
    revoked: bool = False
    now_ms: Callable[[], int] = _now_ms
    conversions: list[dict[str, Any]] = field(default_factory=list)

    def check(self, request: web.Request, body: Any) -> Reply | None:
        headers = request.headers
        if self.revoked:
            return api_error(
                401, "The token used in the request has been revoked by the user",
                "REVOKED_ACCESS_TOKEN", 65601,
            )  # fmt: skip
        if headers.get("Authorization") != f"Bearer {self.token}":
            return api_error(401, "Invalid access token", "INVALID_ACCESS_TOKEN", 65600)
        version = headers.get("LinkedIn-Version", "")
        if not re.fullmatch(r"\d{6}", version):
            return api_error(400, "A version must be present. Please specify a version.")
        if version < self.oldest_version:
            return api_error(426, f"Requested version {version} is not active", "NOT_ACTIVE")
        if headers.get("X-Restli-Protocol-Version") != "2.0.0":
            return api_error(400, "Rest.li protocol version 2.0.0 required")
        if headers.get("X-RestLi-Method") != "BATCH_CREATE":
            return api_error(400, "elements are only accepted by BATCH_CREATE")
        if not headers.get("Content-Type", "").startswith("application/json"):
            return api_error(415, "Unsupported Media Type")
        elements = body.get("elements") if isinstance(body, dict) else None
        if not isinstance(elements, list) or not 1 <= len(elements) <= 5000:
            return api_error(400, "elements: between 1 and 5000 elements")
        lines = []
        for index, element in enumerate(elements):
            problems = self.element_problems(element)
            if problems:
                lines.append(f"Index: {index}, ERROR :: {problems[0]}")
                lines += [f"ERROR :: {p}" for p in problems[1:]]
        if lines:
            return json_reply(422, {"message": "\n".join(lines) + "\n", "status": 422})
        return None

    def element_problems(self, el: Any) -> list[str]:
        if not isinstance(el, dict):
            return [":: element must be an object"]
        problems = []
        m = RULE_URN.fullmatch(str(el.get("conversion", "")))
        if m is None:
            problems.append("/conversion :: field is required but not found")
        elif m.group(1) not in self.rules:
            problems.append(f"/conversion :: conversion rule {m.group(1)} does not exist")
        at = el.get("conversionHappenedAt")
        if not isinstance(at, int) or at < 10**12:
            problems.append("/conversionHappenedAt :: must be epoch milliseconds")
        elif not self.now_ms() - WINDOW_MS <= at <= self.now_ms() + 60_000:
            problems.append("/conversionHappenedAt :: must be within the past 90 days")
        value = el.get("conversionValue")
        if value is not None and (
            not re.fullmatch(r"[A-Z]{3}", str(value.get("currencyCode")))
            or not isinstance(value.get("amount"), str)
            or not AMOUNT.fullmatch(value["amount"])
        ):
            problems.append("/conversionValue :: currencyCode and a decimal string amount")
        event_id = el.get("eventId")
        if event_id is not None and (not isinstance(event_id, str) or len(event_id) > 64):
            problems.append("/eventId :: must be a string of at most 64 characters")
        user = el.get("user") or {}
        ids = user.get("userIds") or []
        info = user.get("userInfo") or {}
        if not ids and not (info.get("firstName") and info.get("lastName")):
            problems.append("/user/userInfo/firstName :: field is required but not found")
        for i, uid in enumerate(ids):
            kind, value = uid.get("idType"), str(uid.get("idValue", ""))
            if kind not in ID_TYPES:
                problems.append(f"/user/userIds/{i}/idType :: unknown {kind}")
            elif kind == "SHA256_EMAIL" and not HEX64.fullmatch(value):
                problems.append(f"/user/userIds/{i}/idValue :: not a SHA-256 hex digest")
            elif kind != "SHA256_EMAIL" and (not value or HEX64.fullmatch(value)):
                problems.append(f"/user/userIds/{i}/idValue :: must be the raw id, not a hash")
        return problems

    def accept(self, request: web.Request, body: Any) -> Reply:
        self.conversions.extend(body["elements"])
        return json_reply(200, {"elements": [{"status": 201} for _ in body["elements"]]})

    def event_ids(self) -> list[str]:
        return [c["eventId"] for c in self.conversions]
