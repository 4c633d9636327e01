"""Generic webhook: JSON batches POSTed to any URL, signed with HMAC-SHA256 over the body.

The receiver verifies ``X-Relay-Signature: sha256=<hex>`` with the shared secret and dedups on
each event's ``event_id`` + ``event_name`` (a retry resends the same ids).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson

from relay.destinations.base import (
    Destination,
    Event,
    HttpRequest,
    HttpResponse,
    Outcome,
    outcomes_from_status,
)

SIGNATURE_HEADER = "X-Relay-Signature"


def _url(value: Any) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _secret(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 8:
        raise ValueError("must be a string of at least 8 characters (use ${ENV} for secrets)")
    return value


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDestination(Destination):
    type_name: ClassVar[str] = "webhook"
    max_batch: ClassVar[int] = 1000
    option_parsers: ClassVar[dict[str, Any]] = {"url": _url, "secret": _secret}
    required_options: ClassVar[tuple[str, ...]] = ("url", "secret")

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        body = orjson.dumps({"events": list(events)})
        url = self.endpoint_url(self.config.options["url"])
        secret = self.config.options["secret"]
        return HttpRequest(
            method="POST",
            url=url,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)},
            body=body,
            secrets=(secret,),
        )

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        # A webhook answers for the request as a whole: a permanent error is bisected.
        return outcomes_from_status(response, len(events))
