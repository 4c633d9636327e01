"""Snapchat destination end to end: relay app -> worker -> fake Snap Conversions API v3."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.clock import FakeClock
from relay.pii import sha256_hex
from tests.conftest import BROWSER_KEY, ORIGIN, MakeRelay, Relay, event
from tests.fakes import json_reply
from tests.platforms.fake_snapchat import FakeSnapchat

EM = sha256_hex("buyer@example.com")
PAGE = {"url": "https://shop.example/done?ScCid=snap-click-1"}


@pytest.fixture
async def api(clock: FakeClock) -> AsyncIterator[FakeSnapchat]:
    fake = FakeSnapchat(now_s=lambda: clock.now_ms() / 1000)
    await fake.start()
    yield fake
    await fake.close()


def destination(api: FakeSnapchat, extra: str = "") -> str:
    return f"""
[[destinations]]
name = "snapchat"
type = "snapchat"
endpoint = "{api.base_url}"
pixel_id = "1234567890"
access_token = "test-token"
backoff_base = "10s"
{extra}
"""


async def start(make_relay: MakeRelay, api: FakeSnapchat, extra: str = "") -> Relay:
    return await make_relay(webhook_url=None, extra=destination(api, extra))


def snap_event(event_id: str, name: str = "purchase", **fields):
    return event(event_id, name, page=PAGE, **fields)


async def states(relay: Relay) -> dict[str, tuple[str, str | None]]:
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.last_error"
        " FROM deliveries d JOIN events e ON e.id = d.event_rowid"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_a_purchase_arrives_with_dedup_id_time_and_identity(
    make_relay: MakeRelay, api: FakeSnapchat, clock: FakeClock
):
    relay = await start(make_relay, api)
    when_ms = clock.now_ms() - 3_600_000
    user = {"email": "Buyer@Example.com", "phone": "+44 844 412 4653"}
    await relay.post(snap_event("ord-1", event_time=when_ms, user=user))
    assert await relay.worker("snapchat").drain() == 1
    assert api.events == [
        {
            "event_name": "PURCHASE",
            "event_time": when_ms // 1000,
            "event_id": "ord-1",
            "action_source": "WEB",
            "event_source_url": PAGE["url"],
            "user_data": {
                "em": [EM],
                "ph": [sha256_hex("448444124653")],
                "sc_click_id": "snap-click-1",
            },
            "custom_data": {"currency": "EUR", "value": 10.5},
        }
    ]
    [request] = api.received
    assert request.path == "/v3/1234567890/events"
    assert request.query == {"access_token": "test-token"}
    assert (await states(relay))["ord-1"] == ("delivered", None)


async def test_browser_and_backend_copies_reach_snap_once(make_relay: MakeRelay, api: FakeSnapchat):
    relay = await start(make_relay, api)
    await relay.post(snap_event("dup-1"), key=BROWSER_KEY, headers={"Origin": ORIGIN})
    await relay.post(snap_event("dup-1"))
    await relay.worker("snapchat").drain()
    assert api.event_ids() == ["dup-1"]
    assert api.events[0]["user_data"]["client_ip_address"] == "127.0.0.1"


async def test_a_purchase_without_currency_is_dead_unsent_and_the_rest_delivered(
    make_relay: MakeRelay, api: FakeSnapchat
):
    relay = await start(make_relay, api)
    batch = [
        snap_event("s-1"),
        snap_event("s-2", properties={"value": 99}),
        snap_event("s-3", "page_view"),
    ]
    await relay.post({"events": batch})
    await relay.worker("snapchat").drain()
    result = await states(relay)
    assert result["s-2"] == ("dead", "Snap rejects a PURCHASE without currency (properties)")
    assert result["s-1"] == result["s-3"] == ("delivered", None)
    assert api.event_ids() == ["s-1", "s-3"]
    assert api.rejected == []  # the bad one was never sent


async def test_an_invalid_event_is_isolated_by_bisection(make_relay: MakeRelay, api: FakeSnapchat):
    api.invalid_event = lambda e: "Invalid item id" if e["event_id"] == "bad" else None
    relay = await start(make_relay, api)
    ids = ["ok-1", "ok-2", "bad", "ok-4"]
    await relay.post({"events": [snap_event(i) for i in ids]})
    await relay.worker("snapchat").drain()
    result = await states(relay)
    assert result["bad"] == ("dead", "HTTP 400: INVALID: Invalid item id")
    assert {result[i][0] for i in ids if i != "bad"} == {"delivered"}
    assert sorted(api.event_ids()) == ["ok-1", "ok-2", "ok-4"]


async def test_a_revoked_token_pauses_the_destination(
    make_relay: MakeRelay, api: FakeSnapchat, clock: FakeClock
):
    api.token = "rotated"
    relay = await start(make_relay, api)
    await relay.post({"events": [snap_event("a-1"), snap_event("a-2")]})
    worker = relay.worker("snapchat")
    assert await worker.run_once() == 2
    assert worker.paused is not None and worker.paused.startswith("HTTP 401")
    clock.advance(86400)
    assert await worker.run_once() == 0
    assert {s for s, _ in (await states(relay)).values()} == {"pending"}


async def test_a_wrong_pixel_id_pauses_instead_of_dead_lettering(
    make_relay: MakeRelay, api: FakeSnapchat
):
    api.pixel_id = "another-pixel"
    relay = await start(make_relay, api)
    await relay.post({"events": [snap_event("w-1"), snap_event("w-2")]})
    worker = relay.worker("snapchat")
    await worker.drain()
    assert worker.paused is not None and "Unauthorized resources" in worker.paused
    assert {s for s, _ in (await states(relay)).values()} == {"pending"}
    assert len(api.rejected) == 1  # not bisected


async def test_503_then_200_is_delivered_after_retry_after(
    make_relay: MakeRelay, api: FakeSnapchat, clock: FakeClock
):
    api.script = [json_reply(503, {"status": "ERROR"}, {"Retry-After": "60"})]
    relay = await start(make_relay, api)
    await relay.post(snap_event("r-1"))
    worker = relay.worker("snapchat")
    assert await worker.run_once() == 1
    assert (await states(relay))["r-1"][0] == "pending"
    clock.advance(59)
    assert await worker.run_once() == 0
    clock.advance(2)
    assert await worker.run_once() == 1
    assert (await states(relay))["r-1"] == ("delivered", None)


async def test_validate_checks_each_event_first_then_sends_it(
    make_relay: MakeRelay, api: FakeSnapchat
):
    relay = await start(make_relay, api, "validate = true")
    await relay.post({"events": [snap_event("v-1"), snap_event("v-2", "view_item")]})
    await relay.worker("snapchat").drain()
    validate, events = "/v3/1234567890/events/validate", "/v3/1234567890/events"
    assert api.paths == [validate, events, validate, events]
    assert [e["event_id"] for e in api.validated] == ["v-1", "v-2"]
    assert api.event_ids() == ["v-1", "v-2"]


async def test_validate_dead_letters_what_the_validator_rejects(
    make_relay: MakeRelay, api: FakeSnapchat
):
    api.invalid_event = lambda e: "Invalid item id" if e["event_id"] == "v-bad" else None
    relay = await start(make_relay, api, "validate = true")
    await relay.post(snap_event("v-bad"))
    await relay.worker("snapchat").drain()
    assert (await states(relay))["v-bad"] == ("dead", "validation: INVALID: Invalid item id")
    assert api.paths == ["/v3/1234567890/events/validate"]  # the real endpoint never saw it
