"""What every real-client test sends and checks: one user's identify, purchase and page view
(plus a group and an alias call, accepted and not stored).

The clients under test (tests/clients/test_*_client*.py) are the real libraries from the package
registry, pointed at an in-process relay on a loopback port. Each sends the calls below its own
way; what reaches the fake webhook must be the same whatever the client.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from relay import ingest
from tests.conftest import Relay
from tests.fakes import FakeWebhook

USER_ID = "user-42"
EMAIL = "Jane.Doe@Example.com"
PHONE = "+1 415 555 0100"
# Segment's reserved traits; birthday is a date (each test passes it as its library serializes
# one), address an object.
TRAITS: dict[str, Any] = {
    "email": EMAIL,
    "phone": PHONE,
    "firstName": "Jane",
    "address": {"street": "1 Main St", "city": "San Francisco", "postalCode": "94107-1234",
                "state": "California", "country": "US"},
}  # fmt: skip
BIRTHDAY = datetime.date(1990, 5, 17)
ORDER = {
    "order_id": "o-1001",
    "revenue": 42.5,
    "currency": "eur",
    "products": [
        {"product_id": "sku-1", "quantity": 2, "price": 12.5},
        {"sku": "sku-2", "quantity": 1, "price": "17.5"},
    ],
}
PAGE_URL = "https://shop.example/checkout?fbclid=abc"
PAGE = {"url": PAGE_URL, "referrer": "https://search.example/"}

GROUP_ID = "company-7"
PREVIOUS_ID = "anon-7"


def order_time() -> datetime.datetime:
    """When the purchase happened, as the caller passes it: an hour ago, whole milliseconds."""
    ms = (int(time.time()) - 3600) * 1000 + 123
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)


# Plaintext that must not reach a destination or relay's database in any spelling.
PLAINTEXT = ("jane", "example.com", "4155550100", "415 555", "user-42", "main st", "1990")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def relay_host(relay: Relay) -> str:
    """The base URL a client library is given as its host: http://127.0.0.1:PORT."""
    return str(relay.client.make_url("")).rstrip("/")


@dataclass
class Exchange:
    """One HTTP request a client library made and relay's answer, as the client saw them."""

    path: str
    status: int
    request_headers: dict[str, str]
    message_ids: list[str]
    response_headers: dict[str, str]
    response_body: bytes

    @property
    def retry_after(self) -> str | None:
        for name, value in self.response_headers.items():
            if name.lower() == "retry-after":
                return value
        return None

    def describe(self) -> str:
        return (
            f"POST {self.path} {self.message_ids} -> {self.status} "
            f"{self.retry_after or ''} {self.response_body[:200]!r}"
        )


def describe(exchanges: list[Exchange]) -> str:
    return "\n".join(exchange.describe() for exchange in exchanges) or "(no request answered)"


class Answers:
    """Records the status of every answer relay gives, and can make relay answer 503 (delivery
    backlog full) to the next `count` requests: `refuse` raises the store's pending-delivery
    counter that relay's backlog check reads, restored as soon as relay has answered them."""

    def __init__(self, relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
        self.relay = relay
        self.statuses: list[int] = []
        self._remaining = 0
        self._saved = 0
        # relay's Retry-After is 5 s; the clients honour it, so a shorter one keeps tests quick
        monkeypatch.setattr(ingest, "RETRY_AFTER_S", "1")
        metrics = relay.state.metrics
        original = metrics.count_request

        def count_request(status: int) -> None:
            original(status)
            self.statuses.append(status)
            if status == 503 and self._remaining:
                self._remaining -= 1
                if not self._remaining:
                    relay.state.store.pending = self._saved

        monkeypatch.setattr(metrics, "count_request", count_request)

    def refuse(self, count: int = 1) -> None:
        store = self.relay.state.store
        self._saved = store.pending
        self._remaining = count
        store.pending = self.relay.config.storage.max_backlog


async def stored_ids(relay: Relay) -> Counter[str]:
    rows = await relay.state.store.fetchall("SELECT event_id FROM events")
    return Counter(row[0] for row in rows)


async def check_stored_once(relay: Relay, ids: dict[str, str]) -> None:
    """The track and page calls are stored once each; identify is no event."""
    assert await stored_ids(relay) == Counter({ids["track"]: 1, ids["page"]: 1})
    rows = await relay.state.store.fetchall("SELECT count(*) FROM deliveries")
    assert rows[0][0] == 2
    # neither the events nor the remembered identify traits keep plaintext
    rows = await relay.state.store.fetchall("SELECT payload FROM events")
    rows += await relay.state.store.fetchall("SELECT user_fields FROM identities")
    for (blob,) in rows:
        text = (blob.decode() if isinstance(blob, bytes) else str(blob)).lower()
        assert not [p for p in PLAINTEXT if p in text], text


async def deliver_and_check(
    relay: Relay, webhook: FakeWebhook, ids: dict[str, str], order_time: datetime.datetime
) -> None:
    """Run the webhook worker; the purchase and the page view arrive once each, mapped."""
    await relay.worker().drain()
    assert webhook.bad_signatures == 0
    assert Counter(webhook.delivered_ids()) == Counter({ids["track"]: 1, ids["page"]: 1})
    by_id = {event["event_id"]: event for event in webhook.delivered}
    purchase, page = by_id[ids["track"]], by_id[ids["page"]]

    assert purchase["event_name"] == "purchase"
    assert purchase["source"] == "backend"
    properties = purchase["properties"]
    assert (properties["value"], properties["currency"]) == (42.5, "EUR")
    assert properties["order_id"] == "o-1001"
    assert properties["contents"] == [
        {"id": "sku-1", "quantity": 2, "price": 12.5},
        {"id": "sku-2", "quantity": 1, "price": 17.5},
    ]
    # the caller's timestamp, kept as sent for this server source (time = "client")
    assert purchase["event_time_ms"] == int(order_time.timestamp() * 1000)

    assert page["event_name"] == "page_view"
    assert page["page"] == {"url": PAGE_URL, "referrer": "https://search.example/"}
    assert page["properties"]["page_name"] == "Checkout"
    # the library stamped the page call itself, with the real time
    assert abs(page["event_time_ms"] - time.time() * 1000) < 60_000

    # Neither call carried the email or phone: they come from the earlier identify's traits,
    # normalized and hashed; userId is hashed too.
    for user in (purchase["user"], page["user"]):
        assert user["external_id"] == sha256(USER_ID)
        assert user["em"] == sha256("jane.doe@example.com")
        assert user["ph"] == sha256("14155550100")
        assert user["fn"] == sha256("jane")
        assert user["db"] == sha256("19900517")
        assert user["street"] == sha256("1 main st")
        assert (user["ct"], user["st"], user["zp"], user["country"]) == (
            "sanfrancisco", "ca", "94107", "us")  # fmt: skip
    text = orjson.dumps(webhook.delivered).decode().lower()
    assert not [p for p in PLAINTEXT if p in text], text
