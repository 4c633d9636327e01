"""LinkedIn destination end to end: relay app -> worker -> fake LinkedIn Conversions API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.clock import FakeClock
from relay.pii import sha256_hex
from tests.conftest import BROWSER_KEY, ORIGIN, MakeRelay, Relay, event
from tests.fakes import json_reply
from tests.platforms.fake_linkedin import FakeLinkedIn

EM = sha256_hex("buyer@example.com")


@pytest.fixture
async def api(clock: FakeClock) -> AsyncIterator[FakeLinkedIn]:
    fake = FakeLinkedIn(now_ms=clock.now_ms)
    await fake.start()
    yield fake
    await fake.close()


def destination(api: FakeLinkedIn, extra: str = "") -> str:
    return f"""
[[destinations]]
name = "linkedin"
type = "linkedin"
endpoint = "{api.base_url}"
access_token = "test-token"
conversion_rules = {{ purchase = "1111", generate_lead = "2222", sign_up = "9999" }}
backoff_base = "10s"
{extra}
"""


async def states(relay: Relay) -> dict[str, tuple[str, str | None]]:
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.last_error"
        " FROM deliveries d JOIN events e ON e.id = d.event_rowid"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_a_purchase_arrives_with_dedup_id_time_and_identity(
    make_relay: MakeRelay, api: FakeLinkedIn, clock: FakeClock
):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    when_ms = clock.now_ms() - 3_600_000
    user = {"email": " Buyer@Example.com", "li_fat_id": "AQHp-click"}
    await relay.post(event("ord-1", user=user, event_time=when_ms))
    assert await relay.worker("linkedin").drain() == 1
    [conversion] = api.conversions
    assert conversion == {
        "conversion": "urn:lla:llaPartnerConversion:1111",
        "conversionHappenedAt": when_ms,
        "conversionValue": {"currencyCode": "EUR", "amount": "10.5"},
        "eventId": "ord-1",
        "user": {
            "userIds": [
                {"idType": "SHA256_EMAIL", "idValue": EM},
                {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "AQHp-click"},
            ]
        },
    }
    [seen] = api.received
    assert seen.headers["LinkedIn-Version"] == "202603"
    assert await states(relay) == {"ord-1": ("delivered", None)}


async def test_browser_and_backend_copies_reach_linkedin_once(
    make_relay: MakeRelay, api: FakeLinkedIn
):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("dup-1"), key=BROWSER_KEY, headers={"Origin": ORIGIN})
    await relay.post(event("dup-1"))
    await relay.worker("linkedin").drain()
    assert api.event_ids() == ["dup-1"]


async def test_422_index_fails_that_event_and_resends_the_others(
    make_relay: MakeRelay, api: FakeLinkedIn, clock: FakeClock
):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    # sign_up's rule 9999 does not exist on the ad account: LinkedIn fails the whole batch
    await relay.post({"events": [event("p-0"), event("s-1", "sign_up"), event("p-2")]})
    worker = relay.worker("linkedin")
    assert await worker.run_once() == 3
    [(seen, (status, _, _))] = api.rejected
    assert status == 422 and len(seen.body["elements"]) == 3
    result = await states(relay)
    assert result["s-1"] == ("dead", "HTTP 422: /conversion :: conversion rule 9999 does not exist")
    assert result["p-0"][0] == result["p-2"][0] == "pending"
    # the others are resent at once: no backoff for another event's fault
    assert await worker.drain() == 2
    assert api.event_ids() == ["p-0", "p-2"]
    assert {k: v[0] for k, v in (await states(relay)).items()} == {
        "p-0": "delivered",
        "s-1": "dead",
        "p-2": "delivered",
    }


async def test_an_event_without_a_rule_is_dead_unsent(make_relay: MakeRelay, api: FakeLinkedIn):
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post({"events": [event("c-1", "add_to_cart"), event("p-1")]})
    await relay.worker("linkedin").drain()
    assert api.event_ids() == ["p-1"]
    state, error = (await states(relay))["c-1"]
    assert state == "dead" and error is not None and "conversion_rules" in error


async def test_events_filter_routes_only_events_with_rules(
    make_relay: MakeRelay, api: FakeLinkedIn
):
    extra = destination(api, 'events = ["purchase"]')
    relay = await make_relay(webhook_url=None, extra=extra)
    await relay.post({"events": [event("c-1", "add_to_cart"), event("p-1")]})
    await relay.worker("linkedin").drain()
    assert api.event_ids() == ["p-1"]
    assert await states(relay) == {"p-1": ("delivered", None)}


async def test_a_revoked_token_pauses_and_keeps_the_events(
    make_relay: MakeRelay, api: FakeLinkedIn, clock: FakeClock
):
    api.revoked = True
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post({"events": [event("r-1"), event("r-2")]})
    worker = relay.worker("linkedin")
    assert await worker.run_once() == 2
    assert worker.paused is not None and "REVOKED_ACCESS_TOKEN" in worker.paused
    clock.advance(86400)
    assert await worker.run_once() == 0
    assert {s for s, _ in (await states(relay)).values()} == {"pending"}


async def test_an_inactive_api_version_pauses_with_the_fix(
    make_relay: MakeRelay, api: FakeLinkedIn
):
    relay = await make_relay(webhook_url=None, extra=destination(api, 'api_version = "202511"'))
    await relay.post(event("v-1"))
    worker = relay.worker("linkedin")
    await worker.run_once()
    assert worker.paused is not None and "api_version" in worker.paused
    assert (await states(relay))["v-1"][0] == "pending"


async def test_429_waits_for_retry_after_then_delivers(
    make_relay: MakeRelay, api: FakeLinkedIn, clock: FakeClock
):
    api.script = [
        json_reply(429, {"status": 429, "message": "Too many requests"}, {"Retry-After": "120"})
    ]
    relay = await make_relay(webhook_url=None, extra=destination(api))
    await relay.post(event("t-1"))
    worker = relay.worker("linkedin")
    await worker.run_once()
    assert (await states(relay))["t-1"] == ("pending", "HTTP 429: Too many requests")
    clock.advance(119)
    assert await worker.run_once() == 0
    clock.advance(2)
    assert await worker.run_once() == 1
    assert api.event_ids() == ["t-1"]
