"""The destination interface: pure request building and pure response reading.

A destination never does I/O. The worker hands it a batch of canonical events and gets back an
``HttpRequest``; after sending, it hands back the ``HttpResponse`` and gets one ``Outcome`` per
event. That keeps every platform's wire format testable with golden files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import urlsplit

from relay.config import DestinationConfig
from relay.retry import parse_retry_after

Event = Mapping[str, Any]


class OutcomeKind(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    detail: str | None = None
    retry_after_s: float | None = None
    # True when the platform rejected the request as a whole without saying which event is at
    # fault: the worker bisects such a batch to isolate the bad events.
    whole_batch: bool = False
    # True when the fault is the destination's setup (a revoked token), not the events: the
    # worker keeps the events pending and pauses the destination until relay is restarted.
    pause: bool = False
    # True for a retry that is not this event's fault (the platform rejected a batch-mate):
    # resend at once, without backoff.
    resend_now: bool = False


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    # secret values embedded in url/headers/body (tokens), redacted wherever a request is shown
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        # url and headers may carry tokens: a repr must be safe to log
        return f"HttpRequest({self.method} {self.redacted()['url']}, {len(self.body)} bytes)"

    def redacted(self) -> dict[str, Any]:
        """The request as a JSON-able dict with every secret replaced."""

        def scrub(text: str) -> str:
            for secret in self.secrets:
                if secret:
                    text = text.replace(secret, "[redacted]")
            return text

        return {
            "method": self.method,
            "url": scrub(self.url),
            "headers": {k: scrub(v) for k, v in self.headers.items()},
            "body": scrub(self.body.decode("utf-8", "replace")),
        }


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """Header value by case-insensitive name (HTTP field names are case-insensitive)."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


class Destination:
    """Base class: subclasses set the class attributes and implement the two pure methods."""

    type_name: ClassVar[str]
    # most events one request may carry (the platform's documented limit)
    max_batch: ClassVar[int] = 1000
    # oldest event the platform accepts; None = no limit
    max_age_s: ClassVar[int | None] = None
    # largest request body the platform accepts; the worker halves a batch that exceeds it
    max_body_bytes: ClassVar[int | None] = None
    # type-specific config keys (parsers as in relay.config) and which of them are required
    option_parsers: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    required_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: DestinationConfig) -> None:
        self.config = config
        self.name = config.name
        self.batch_size = min(config.batch_size, self.max_batch)

    def deadline_ms(self, event: Event) -> int:
        """Past this the delivery is expired instead of sent (invariant 5)."""
        max_age_s = self.window_s(event)
        if max_age_s is None:
            return 2**62
        return int(event["event_time_ms"]) + max_age_s * 1000

    def window_s(self, event: Event) -> int | None:
        """The platform's maximum event age for this event (``max_age_s`` unless it varies)."""
        return self.max_age_s

    def startup_warnings(self) -> list[str]:
        """Configuration choices the operator must hear about at start (logged as warnings)."""
        return []

    def endpoint_url(self, url: str) -> str:
        """``url`` with scheme, host and port replaced by the ``endpoint`` override (a proxy or
        a fake server), keeping path and query."""
        if not self.config.endpoint:
            return url
        parts = urlsplit(url)
        return (
            self.config.endpoint.rstrip("/")
            + parts.path
            + (f"?{parts.query}" if parts.query else "")
        )

    def unsendable(self, event: Event) -> str | None:
        """Why this platform can never take this event (dead-lettered unsent), or None."""
        return None

    def trace_id(self, response: HttpResponse) -> str | None:
        """The platform's id for this request, kept in the delivery log (support asks for it)."""
        return None

    def validation_request(self, events: Sequence[Event]) -> HttpRequest | None:
        """A request to the platform's validation endpoint, sent before the real one when the
        destination is configured to validate (GA4, whose real endpoint never reports errors)."""
        return None

    def read_validation(self, events: Sequence[Event], response: HttpResponse) -> list[str | None]:
        """Per event: why the validator rejects it (the event is dead-lettered), or None."""
        return [None] * len(events)

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        raise NotImplementedError

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        raise NotImplementedError


def outcomes_from_status(response: HttpResponse, count: int) -> list[Outcome]:
    """Outcome for platforms whose only signal is the HTTP status.

    2xx delivered; 408, 425, 429 and 5xx are transient (honouring Retry-After); any other status
    is a permanent rejection of the whole request.
    """
    status = response.status
    if 200 <= status < 300:
        return [Outcome(OutcomeKind.DELIVERED)] * count
    detail = f"HTTP {status}: {summarize_body(response.body)}"
    if status in (408, 425, 429) or status >= 500:
        retry_after = parse_retry_after(response.header("Retry-After"))
        return [Outcome(OutcomeKind.RETRY, detail, retry_after)] * count
    return [Outcome(OutcomeKind.PERMANENT, detail, whole_batch=True)] * count


def summarize_body(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"
