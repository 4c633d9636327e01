"""GA4 destination end to end: relay app -> worker -> fake Measurement Protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.clock import FakeClock
from relay.pii import sha256_hex
from tests.conftest import BROWSER_KEY, ORIGIN, MakeRelay, Relay, event
from tests.platforms.fake_ga4 import FakeGA4


@pytest.fixture
async def api(clock: FakeClock) -> AsyncIterator[FakeGA4]:
    fake = FakeGA4(now_ms=clock.now_ms)
    await fake.start()
    yield fake
    await fake.close()


def destination(api: FakeGA4, extra: str = "") -> str:
    return f"""
[[destinations]]
name = "ga4"
type = "ga4"
endpoint = "{api.base_url}"
measurement_id = "G-TEST123"
api_secret = "test-secret"
backoff_base = "10s"
{extra}
"""


async def states(relay: Relay) -> dict[str, tuple[str, str | None]]:
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.last_error"
        " FROM deliveries d JOIN events e ON e.id = d.event_rowid"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_each_event_is_collected_with_its_client_time_and_user_data(
    make_relay: MakeRelay, api: FakeGA4, clock: FakeClock
):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    when_ms = clock.now_ms() - 600_000
    first = {"email": "First.Last@gmail.com", "ga_client_id": "GA1.1.1111111111.1700000000"}
    second = {"email": "other@example.com", "ga_client_id": "GA1.1.2222222222.1700000001"}
    body = {
        "events": [
            event("o-1", user=first, event_time=when_ms, properties={"order_id": "o-1"}),
            event("o-2", user=second, consent={"ad_user_data": "denied"}),
        ]
    }
    await relay.post(body)
    assert await relay.worker("ga4").drain() == 2
    # one request per visitor: a Measurement Protocol request carries one client_id
    assert len(api.received) == 2
    one, two = api.collected
    assert one["client_id"] == "1111111111.1700000000"
    assert one["event"]["timestamp_micros"] == when_ms * 1000
    assert one["event"]["params"]["transaction_id"] == "o-1"
    assert one["user_data"] == {"sha256_email_address": [sha256_hex("firstlast@gmail.com")]}
    assert two["client_id"] == "2222222222.1700000001"
    assert "user_data" not in two and two["consent"] == {"ad_user_data": "DENIED"}
    assert api.dropped == []
    assert {s for s, _ in (await states(relay)).values()} == {"delivered"}


async def test_browser_and_backend_copies_are_collected_once(make_relay: MakeRelay, api: FakeGA4):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("dup-1"), key=BROWSER_KEY, headers={"Origin": ORIGIN})
    await relay.post(event("dup-1"))
    await relay.worker("ga4").drain()
    assert len(api.collected) == 1


async def test_validate_dead_letters_what_the_debug_endpoint_rejects(
    make_relay: MakeRelay, api: FakeGA4
):
    relay = await make_relay(webhook_url=None, extra=destination(api, "validate = true"))
    no_currency = event("bad-1", properties={"value": 5})
    await relay.post({"events": [event("good-1"), no_currency]})
    await relay.worker("ga4").drain()
    assert len(api.debug_requests) == 2
    result = await states(relay)
    assert result["bad-1"] == (
        "dead",
        "validation: VALUE_REQUIRED at events[0].params.currency: "
        "Currency is required when value is set.",
    )
    assert result["good-1"] == ("delivered", None)
    assert [c["event"]["params"].get("currency") for c in api.collected] == ["EUR"]
    # without validate, GA4 would have answered 204 and silently dropped it
    assert api.dropped == []


async def test_without_validate_a_bad_event_is_silently_dropped_by_ga4(
    make_relay: MakeRelay, api: FakeGA4
):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("bad-1", properties={"value": 5}))
    await relay.worker("ga4").drain()
    assert api.debug_requests == [] and api.collected == []
    assert len(api.dropped) == 1
    assert (await states(relay))["bad-1"][0] == "delivered"


async def test_a_reserved_name_is_dead_unsent(make_relay: MakeRelay, api: FakeGA4):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("s-1", "session_start"))
    await relay.worker("ga4").drain()
    assert api.received == []
    state, error = (await states(relay))["s-1"]
    assert state == "dead" and error is not None and "reserved" in error


async def test_5xx_is_retried_then_delivered(make_relay: MakeRelay, api: FakeGA4, clock: FakeClock):
    api.script = [(503, {"Retry-After": "30"}, b"Service Unavailable")]
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("r-1"))
    worker = relay.worker("ga4")
    await worker.run_once()
    assert (await states(relay))["r-1"] == ("pending", "HTTP 503: Service Unavailable")
    clock.advance(31)
    assert await worker.run_once() == 1
    assert len(api.collected) == 1
    assert (await states(relay))["r-1"][0] == "delivered"
