"""LinkedIn Conversions API: conversion events created in batches (Rest.li BATCH_CREATE).

Config: ``access_token`` (3-legged OAuth token with ``rw_conversions``), ``conversion_rules``
(canonical event name -> conversion rule id, each rule created with the *Conversions API*
method), optional ``api_version`` (``YYYYMM``, the ``LinkedIn-Version`` header).

LinkedIn has no event names: each event is sent as a conversion rule URN, so an event without a
rule is dead-lettered unsent with the missing ``conversion_rules`` entry named (set ``events``
on the destination to route only the events that have rules). ``event_names`` may also map an
event to a rule id and takes precedence, as it does on every platform. No test mode is
documented: use a dedicated conversion rule while testing. Facts: destinations.md (c).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
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
    summarize_body,
)
from relay.retry import parse_retry_after

API_URL = "https://api.linkedin.com/rest/conversionEvents"
# Monthly versions are sunset about a year after release (202511 sunsets 2026-11-16, and an
# inactive version answers 426). 202603 is the newest one seen in production code (SEG), so it
# is the newest confirmed to exist; `api_version` moves relay forward without a release.
DEFAULT_API_VERSION = "202603"
RULE_URN_PREFIX = "urn:lla:llaPartnerConversion:"
MAX_EVENT_ID_CHARS = 64  # eventId is plain text of at most 64 characters
# "Index: <i>, ERROR :: /path :: text": a new failing element. Further "ERROR :: ..." lines
# without an index belong to the element named last.
_INDEXED_ERROR = re.compile(r"^Index:\s*(\d+),\s*ERROR\s*::\s*(.*)$")
_ERROR = re.compile(r"^ERROR\s*::\s*(.*)$")
# serviceErrorCode 65601 / REVOKED_ACCESS_TOKEN: dead until someone re-authorizes. An expired
# token (EXPIRED_ACCESS_TOKEN; not on the facts page, LinkedIn's error list) is just as dead for
# relay, which cannot refresh tokens: pausing keeps the events instead of burning attempts.
_DEAD_TOKEN_CODES = frozenset({"REVOKED_ACCESS_TOKEN", "EXPIRED_ACCESS_TOKEN"})
_REVOKED_SERVICE_CODE = 65601


def _rule_id(value: Any) -> str:
    text = str(value).strip() if isinstance(value, str | int) else ""
    text = text.removeprefix(RULE_URN_PREFIX)
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError("conversion rule ids are numbers (Campaign Manager → Conversions)")
    return text


def _rules(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise ValueError('must be a table of event name = "conversion rule id"')
    return {str(name): _rule_id(rule) for name, rule in value.items()}


def _version(value: Any) -> str:
    if not isinstance(value, str | int) or not re.fullmatch(r"20\d{2}(0[1-9]|1[0-2])", str(value)):
        raise ValueError('must be a LinkedIn API version "YYYYMM", e.g. "202603"')
    return str(value)


def decimal_string(amount: float) -> str:
    """``conversionValue.amount`` is a decimal string: never exponent notation."""
    if isinstance(amount, int):
        return str(amount)
    return format(Decimal(repr(float(amount))), "f")


class LinkedInDestination(Destination):
    type_name: ClassVar[str] = "linkedin"
    max_batch: ClassVar[int] = 5000
    max_age_s: ClassVar[int | None] = 90 * 86400
    option_parsers: ClassVar[Mapping[str, Any]] = {
        "access_token": parse_token,
        "conversion_rules": _rules,
        "api_version": _version,
    }
    required_options: ClassVar[tuple[str, ...]] = ("access_token", "conversion_rules")

    def rule_id(self, event: Event) -> str | None:
        name = event["event_name"]
        rule = mapping.platform_event_name(
            self.config, name, self.config.options["conversion_rules"]
        )
        return rule.removeprefix(RULE_URN_PREFIX) if rule else None

    def unsendable(self, event: Event) -> str | None:
        name = event["event_name"]
        rule = self.rule_id(event)
        if rule is None:
            return (
                f'no LinkedIn conversion rule for event "{name}": add it to conversion_rules '
                f'({name} = "<rule id>"), or leave it out of this destination\'s events'
            )
        if not rule.isdigit():
            return f'event_names maps "{name}" to "{rule}", which is not a conversion rule id'
        if len(event["event_id"]) > MAX_EVENT_ID_CHARS:
            return f"event_id longer than LinkedIn's {MAX_EVENT_ID_CHARS} characters (eventId)"
        if not self.user_ids(event):
            why = " (ad_user_data denied)" if mapping.ad_user_data_denied(event) else ""
            return f"no LinkedIn user id{why}: needs a hashed email or the li_fat_id click id"
        return None

    def user_ids(self, event: Event) -> list[dict[str, str]]:
        user = mapping.user(event)
        ids = []
        # The email is the only hashed identifier; the li_fat_id click id is LinkedIn's own
        # token for the ad click and is kept when ad_user_data is denied (LinkedIn has no
        # limited-data-use flag; consent strips hashed identifiers only).
        if user.get("em") and not mapping.ad_user_data_denied(event):
            ids.append({"idType": "SHA256_EMAIL", "idValue": user["em"]})
        li_fat_id = user.get("li_fat_id") or mapping.url_param(mapping.page_url(event), "li_fat_id")
        if li_fat_id:
            ids.append({"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": li_fat_id})
        return ids

    def element(self, event: Event) -> dict[str, Any]:
        element: dict[str, Any] = {}
        rule = self.rule_id(event)
        if rule:
            element["conversion"] = RULE_URN_PREFIX + rule
        element["conversionHappenedAt"] = int(event["event_time_ms"])
        props = mapping.properties(event)
        # currencyCode is required with an amount: a value without a currency is not sent
        # rather than sent in a guessed currency.
        if isinstance(props.get("value"), int | float) and props.get("currency"):
            element["conversionValue"] = {
                "currencyCode": props["currency"],
                "amount": decimal_string(props["value"]),
            }
        element["eventId"] = event["event_id"]
        # userInfo (firstName + lastName) needs the names in plaintext; relay stores them only
        # hashed, so matching relies on the user ids.
        element["user"] = {"userIds": self.user_ids(event)}
        return element

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        token = self.config.options["access_token"]
        body = orjson.dumps({"elements": [self.element(e) for e in events]})
        return HttpRequest(
            method="POST",
            url=self.endpoint_url(API_URL),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "LinkedIn-Version": self.config.options.get("api_version", DEFAULT_API_VERSION),
                "X-Restli-Protocol-Version": "2.0.0",
                "X-RestLi-Method": "BATCH_CREATE",
            },
            body=body,
            secrets=(token,),
        )

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        count = len(events)
        status = response.status
        error = _json_object(response.body)
        detail = _error_detail(status, error, response.body)
        if 200 <= status < 300:
            return _element_outcomes(error, count)
        if status == 422:
            failed = parse_index_errors(str(error.get("message") or ""))
            if not any(i < count for i in failed):
                return [Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)] * count
            # LinkedIn fails the whole batch for one bad element: the others were not recorded
            # and are resent without a Retry-After floor (the worker still applies its jitter).
            resend = Outcome(
                OutcomeKind.RETRY, "resent: LinkedIn rejected another event", resend_now=True
            )
            return [
                Outcome(OutcomeKind.PERMANENT, f"HTTP 422: {failed[i]}") if i in failed else resend
                for i in range(count)
            ]
        if status == 401:
            dead = (
                error.get("code") in _DEAD_TOKEN_CODES
                or error.get("serviceErrorCode") == _REVOKED_SERVICE_CODE
            )
            if dead:
                detail += ": re-authorize and put the new access_token in relay.toml"
            return [Outcome(OutcomeKind.RETRY, detail, pause=dead)] * count
        if status == 403:
            # The token's member lacks a role on the ad account (or the rule is another
            # account's): a setup fault that every event would hit, so pause and keep them.
            return [Outcome(OutcomeKind.RETRY, detail, pause=True)] * count
        if status == 426:
            version = self.config.options.get("api_version", DEFAULT_API_VERSION)
            message = f"{detail}: LinkedIn-Version {version} is no longer active; set api_version"
            return [
                Outcome(OutcomeKind.RETRY, message + " to a current YYYYMM", pause=True)
            ] * count
        if status in (408, 425, 429) or status >= 500:
            retry_after = parse_retry_after(response.header("Retry-After"))
            return [Outcome(OutcomeKind.RETRY, detail, retry_after)] * count
        return [Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)] * count


def parse_index_errors(message: str) -> dict[int, str]:
    """Element index -> its errors ("/path :: text; /path :: text") from a 422 message."""
    errors: dict[int, list[str]] = {}
    current: int | None = None
    for line in message.splitlines():
        line = line.strip()
        if m := _INDEXED_ERROR.match(line):
            current = int(m.group(1))
            errors.setdefault(current, []).append(m.group(2).strip())
        elif (m := _ERROR.match(line)) and current is not None:
            errors[current].append(m.group(1).strip())
    return {i: "; ".join(texts) for i, texts in errors.items()}


def _element_outcomes(body: Mapping[str, Any], count: int) -> list[Outcome]:
    """Per-element statuses of a BATCH_CREATE answer (201 = created)."""
    elements = body.get("elements")
    if not isinstance(elements, list) or len(elements) != count:
        # a 2xx without per-element detail (a single create answers 201 with no body)
        return [Outcome(OutcomeKind.DELIVERED)] * count
    outcomes = []
    for element in elements:
        status = element.get("status") if isinstance(element, dict) else None
        if status in (200, 201):
            outcomes.append(Outcome(OutcomeKind.DELIVERED))
        else:
            summary = summarize_body(orjson.dumps(element))
            outcomes.append(Outcome(OutcomeKind.PERMANENT, f"element status {status}: {summary}"))
    return outcomes


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _error_detail(status: int, error: Mapping[str, Any], body: bytes) -> str:
    if "message" not in error:
        return f"HTTP {status}: {summarize_body(body)}"
    code = error.get("code") or error.get("serviceErrorCode")
    label = f"HTTP {status} {code}" if code else f"HTTP {status}"
    return f"{label}: {summarize_body(str(error['message']).encode())}"
