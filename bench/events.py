"""The benchmark's event: one realistic ``purchase`` as a backend sends it (design.md's fields).

The wrk script and the prefill both start from ``sample_event``; every occurrence of
``ID_MARKER`` is replaced by a fresh event id per event (it is also part of ``order_id``).
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.config import SourceConfig
from relay.normalize import RequestContext, normalize_event

ID_MARKER = "@@EVENT_ID@@"
EVENT_NAME = "purchase"


def sample_event(event_id: str, event_time_s: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": EVENT_NAME,
        "event_time": event_time_s,
        "action_source": "website",
        "page": {
            "url": "https://shop.example.com/checkout/thank-you?utm_source=newsletter&step=done",
            "referrer": "https://shop.example.com/checkout/payment",
        },
        "user": {
            "email": "Jane.Doe+orders@Example.com",
            "phone": "+1 (415) 555-0132",
            "first_name": "Jane",
            "last_name": "Doe",
            "ip": "203.0.113.42",
            "user_agent": (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko) Version/17.1 Safari/605.1.15"
            ),
            "fbp": "fb.1.1732380000123.1234567890",
            "fbc": "fb.1.1732379000456.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCR",
        },
        "properties": {
            "value": 129.9,
            "currency": "USD",
            "order_id": f"ord-{event_id}",
            "contents": [
                {"id": "SKU-1042", "quantity": 1, "price": 89.9},
                {"id": "SKU-2210", "quantity": 2, "price": 20.0},
            ],
        },
    }


def raw_template(event_time_s: int) -> bytes:
    """The event as a client sends it, as JSON with ``ID_MARKER`` where the id goes."""
    return orjson.dumps(sample_event(ID_MARKER, event_time_s))


def canonical_sample(source: SourceConfig, received_at_ms: int) -> tuple[bytes, int]:
    """What relay stores for the sample event (PII hashed): the payload JSON with ``ID_MARKER``
    where the id goes, and the event's fingerprint."""
    ctx = RequestContext(received_at_ms=received_at_ms, ip="198.51.100.7", user_agent="bench")
    event = normalize_event(sample_event(ID_MARKER, received_at_ms // 1000), source, ctx)
    return orjson.dumps(event.payload), event.fingerprint
