"""Pinterest destination end to end: relay app -> worker -> fake Pinterest Conversions API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.clock import FakeClock
from relay.pii import sha256_hex
from tests.conftest import BROWSER_KEY, ORIGIN, MakeRelay, Relay, event
from tests.platforms.fake_pinterest import FakePinterest, api_error

EM = sha256_hex("buyer@example.com")


@pytest.fixture
async def api(clock: FakeClock) -> AsyncIterator[FakePinterest]:
    fake = FakePinterest(now_s=lambda: clock.now_ms() / 1000)
    await fake.start()
    yield fake
    await fake.close()


def destination(api: FakePinterest, extra: str = "") -> str:
    return f"""
[[destinations]]
name = "pinterest"
type = "pinterest"
endpoint = "{api.base_url}"
ad_account_id = "1234567890"
access_token = "test-token"
backoff_base = "10s"
{extra}
"""


async def start(make_relay: MakeRelay, api: FakePinterest, extra: str = "") -> Relay:
    return await make_relay(webhook_url=None, extra=destination(api, extra))


async def states(relay: Relay) -> dict[str, tuple[str, str | None]]:
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.last_error"
        " FROM deliveries d JOIN events e ON e.id = d.event_rowid"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_a_purchase_arrives_with_dedup_id_time_and_identity(
    make_relay: MakeRelay, api: FakePinterest, clock: FakeClock
):
    relay = await start(make_relay, api)
    when_ms = clock.now_ms() - 3_600_000
    page = {"url": "https://shop.example/done?epik=dj0yJnU9click"}
    await relay.post(event("ord-1", event_time=when_ms, page=page))
    assert await relay.worker("pinterest").drain() == 1
    [sent] = api.events
    assert sent == {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": when_ms // 1000,
        "event_id": "ord-1",
        "event_source_url": page["url"],
        "user_data": {"em": [EM], "click_id": "dj0yJnU9click"},
        "custom_data": {"currency": "EUR", "value": "10.5"},
    }
    [request] = api.received
    assert request.path == "/v5/ad_accounts/1234567890/events" and request.query == {}
    assert (await states(relay))["ord-1"] == ("delivered", None)


async def test_browser_and_backend_copies_reach_pinterest_once(
    make_relay: MakeRelay, api: FakePinterest
):
    relay = await start(make_relay, api)
    await relay.post(event("dup-1"), key=BROWSER_KEY, headers={"Origin": ORIGIN})
    await relay.post(event("dup-1"))
    await relay.worker("pinterest").drain()
    assert api.event_ids() == ["dup-1"]
    [sent] = api.events
    # the browser copy carries the visitor's IP and user agent, raw
    assert sent["user_data"]["client_ip_address"] == "127.0.0.1"
    assert sent["user_data"]["client_user_agent"]


async def test_422_code_953_fails_one_event_and_delivers_the_rest(
    make_relay: MakeRelay, api: FakePinterest
):
    message = "Invalid content_ids: sku-x is not in the catalog"
    api.fail_event = lambda e: message if e["event_id"] == "p-2" else None
    relay = await start(make_relay, api)
    await relay.post({"events": [event("p-1"), event("p-2"), event("p-3")]})
    await relay.worker("pinterest").drain()
    result = await states(relay)
    assert result["p-2"] == ("dead", f"Pinterest: {message}")
    assert result["p-1"] == result["p-3"] == ("delivered", None)
    assert api.event_ids() == ["p-1", "p-3"]
    # one request: Pinterest processed the others, so nothing was resent or bisected
    [(request, (status, _, _))] = api.rejected
    assert status == 422 and [e["event_id"] for e in request.body["data"]] == ["p-1", "p-2", "p-3"]


async def test_a_401_pauses_the_destination_and_keeps_the_events(
    make_relay: MakeRelay, api: FakePinterest, clock: FakeClock
):
    api.token = "rotated-token"
    relay = await start(make_relay, api)
    await relay.post({"events": [event("a-1"), event("a-2")]})
    worker = relay.worker("pinterest")
    assert await worker.run_once() == 2
    assert worker.paused is not None and "access_token is not valid" in worker.paused
    assert "test-token" not in worker.paused
    clock.advance(86400)
    assert await worker.run_once() == 0  # paused: nothing claimed, no attempt burnt
    assert {s for s, _ in (await states(relay)).values()} == {"pending"}
    assert len(api.rejected) == 1


async def test_rate_limit_is_retried_after_retry_after(
    make_relay: MakeRelay, api: FakePinterest, clock: FakeClock
):
    api.script = [api_error(429, 8, "Rate limit exceeded", {"Retry-After": "120"})]
    relay = await start(make_relay, api)
    await relay.post(event("r-1"))
    worker = relay.worker("pinterest")
    assert await worker.run_once() == 1
    assert (await states(relay))["r-1"][0] == "pending"
    clock.advance(119)
    assert await worker.run_once() == 0
    clock.advance(2)
    assert await worker.run_once() == 1
    assert (await states(relay))["r-1"] == ("delivered", None)
    assert api.event_ids() == ["r-1"]


async def test_a_400_code_4196_batch_is_bisected_to_the_bad_event(
    make_relay: MakeRelay, api: FakePinterest
):
    def reject(data: list[dict[str, Any]]):
        if any(e["event_id"] == "bad" for e in data):
            return api_error(400, 4196, "Invalid parameters")
        return None

    api.reject_batch = reject
    relay = await start(make_relay, api)
    ids = ["ok-1", "ok-2", "bad", "ok-4", "ok-5"]
    await relay.post({"events": [event(i) for i in ids]})
    await relay.worker("pinterest").drain()
    result = await states(relay)
    assert result["bad"] == ("dead", "HTTP 400: Pinterest code 4196: Invalid parameters")
    assert {result[i][0] for i in ids if i != "bad"} == {"delivered"}
    assert sorted(api.event_ids()) == ["ok-1", "ok-2", "ok-4", "ok-5"]


async def test_test_mode_sends_test_true_and_pinterest_records_nothing(
    make_relay: MakeRelay, api: FakePinterest
):
    relay = await start(make_relay, api, "test = true")
    await relay.post(event("t-1"))
    await relay.worker("pinterest").drain()
    assert [r.query for r in api.received] == [{"test": "true"}]
    assert api.events == [] and [e["event_id"] for e in api.test_events] == ["t-1"]


async def test_denied_ad_user_data_sends_no_hashes_and_no_ip_ua_is_unsendable(
    make_relay: MakeRelay, api: FakePinterest
):
    relay = await start(make_relay, api)
    denied = {"ad_user_data": "denied"}
    await relay.post(event("c-1", consent=denied), key=BROWSER_KEY, headers={"Origin": ORIGIN})
    await relay.post(event("c-2", consent=denied))  # backend: no visitor IP or user agent
    await relay.worker("pinterest").drain()
    [sent] = api.events
    assert sent["event_id"] == "c-1"
    assert set(sent["user_data"]) == {"client_ip_address", "client_user_agent"}
    state, error = (await states(relay))["c-2"]
    assert state == "dead" and error is not None and "ad_user_data denied" in error
    assert api.failed == []  # the unsendable one never left relay


async def test_an_app_event_without_a_device_user_agent_is_dead_unsent(
    make_relay: MakeRelay, api: FakePinterest
):
    relay = await start(make_relay, api)
    await relay.post(event("app-1", action_source="app"))
    await relay.post(event("app-2", action_source="app", user={"email": "a@b.co",
                     "user_agent": "Dalvik/2.1.0 (Linux; U; Android 14)"}))  # fmt: skip
    await relay.worker("pinterest").drain()
    result = await states(relay)
    assert result["app-1"][0] == "dead" and "app_android or app_ios" in (result["app-1"][1] or "")
    assert [(e["event_id"], e["action_source"]) for e in api.events] == [("app-2", "app_android")]
