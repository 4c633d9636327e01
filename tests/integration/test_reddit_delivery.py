"""Reddit destination end to end: relay app -> worker -> fake Reddit Conversions API v3."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.clock import FakeClock
from relay.pii import sha256_hex
from tests.conftest import BROWSER_KEY, ORIGIN, MakeRelay, Relay, event
from tests.fakes import json_reply
from tests.platforms.fake_reddit import FakeReddit


@pytest.fixture
async def api(clock: FakeClock) -> AsyncIterator[FakeReddit]:
    fake = FakeReddit(now_ms=clock.now_ms)
    await fake.start()
    yield fake
    await fake.close()


def destination(api: FakeReddit, extra: str = "") -> str:
    return f"""
[[destinations]]
name = "reddit"
type = "reddit"
endpoint = "{api.base_url}"
pixel_id = "t2_pixel123"
access_token = "test-token"
backoff_base = "10s"
{extra}
"""


async def states(relay: Relay) -> dict[str, tuple[str, str | None]]:
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.last_error"
        " FROM deliveries d JOIN events e ON e.id = d.event_rowid"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_a_browser_purchase_arrives_with_conversion_id_time_and_identity(
    make_relay: MakeRelay, api: FakeReddit, clock: FakeClock
):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    page = {"url": "https://shop.example/done?rdt_cid=rdt-click-1"}
    await relay.post(
        event("ord-1", page=page),
        key=BROWSER_KEY,
        headers={"Origin": ORIGIN, "User-Agent": "Mozilla/5.0 test"},
    )
    assert await relay.worker("reddit").drain() == 1
    [sent] = api.events
    assert sent["metadata"] == {"conversion_id": "ord-1", "currency": "EUR", "value": 10.5}
    assert abs(sent["event_at"] - clock.now_ms()) < 1000
    assert sent["type"] == {"tracking_type": "PURCHASE"}
    assert sent["action_source"] == "WEBSITE"
    assert sent["click_id"] == "rdt-click-1"
    user = sent["user"]
    assert user["email"] == sha256_hex("buyer@example.com")
    assert user["ip_address"] == sha256_hex("127.0.0.1")  # the socket IP, hashed
    assert user["user_agent"] == "Mozilla/5.0 test"
    assert api.test_ids == [None]
    assert await states(relay) == {"ord-1": ("delivered", None)}


async def test_browser_and_backend_copies_reach_reddit_once(make_relay: MakeRelay, api: FakeReddit):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("dup-1"), key=BROWSER_KEY, headers={"Origin": ORIGIN})
    await relay.post(event("dup-1"))
    await relay.worker("reddit").drain()
    assert api.conversion_ids() == ["dup-1"]


async def test_a_400_batch_is_bisected_to_the_bad_event(make_relay: MakeRelay, api: FakeReddit):
    api.refuse = lambda e: (
        "metadata.conversion_id rejected" if e["metadata"]["conversion_id"] == "e-2" else None
    )
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post({"events": [event(f"e-{i}") for i in range(5)]})
    await relay.worker("reddit").drain()
    assert sorted(api.conversion_ids()) == ["e-0", "e-1", "e-3", "e-4"]
    assert len(api.rejected) > 1  # the whole batch, then the halves holding e-2
    result = await states(relay)
    assert result["e-2"] == ("dead", "HTTP 400: invalid request: metadata.conversion_id rejected")
    assert {result[f"e-{i}"][0] for i in (0, 1, 3, 4)} == {"delivered"}


async def test_ldu_when_ad_user_data_is_denied(make_relay: MakeRelay, api: FakeReddit):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("l-1", consent={"ad_user_data": "denied"}))
    await relay.worker("reddit").drain()
    [sent] = api.events
    assert sent["user"] == {"data_processing_options": {"modes": ["LDU"]}}


async def test_test_id_reaches_reddit(make_relay: MakeRelay, api: FakeReddit):
    relay = await make_relay(webhook_url=None, extra=destination(api, 'test_id = "t2_test"'))
    await relay.post(event("t-1"))
    await relay.worker("reddit").drain()
    assert api.test_ids == ["t2_test"]


async def test_401_pauses_and_keeps_the_events(
    make_relay: MakeRelay, api: FakeReddit, clock: FakeClock
):
    api.revoked = True
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post({"events": [event("a-1"), event("a-2")]})
    worker = relay.worker("reddit")
    assert await worker.run_once() == 2
    assert worker.paused is not None and worker.paused.startswith("HTTP 401")
    clock.advance(86400)
    assert await worker.run_once() == 0
    assert {s for s, _ in (await states(relay)).values()} == {"pending"}


async def test_429_waits_for_retry_after_then_delivers(
    make_relay: MakeRelay, api: FakeReddit, clock: FakeClock
):
    api.script = [json_reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "90"})]
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("r-1"))
    worker = relay.worker("reddit")
    await worker.run_once()
    assert (await states(relay))["r-1"] == ("pending", "HTTP 429: rate limited")
    clock.advance(89)
    assert await worker.run_once() == 0
    clock.advance(2)
    assert await worker.run_once() == 1
    assert api.conversion_ids() == ["r-1"]
