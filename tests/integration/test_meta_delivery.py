"""Meta destination end to end: relay app, SQLite outbox, worker, and a fake Graph API."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.clock import FakeClock
from tests.conftest import BROWSER_KEY, ORIGIN, MakeRelay, Relay, event
from tests.platforms.fake_meta import BAD_TOKEN, FBTRACE_ID, TOO_OLD, FakeMeta, meta_error

UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeMeta]:
    api = FakeMeta(now_s=lambda: clock.now_ms() / 1000)
    await api.start()
    yield api
    await api.close()


def destination(fake: FakeMeta, extra: str = "", token: str | None = None) -> str:
    return f"""
[[destinations]]
name = "meta"
type = "meta"
pixel_id = "{fake.pixel_id}"
access_token = "{token or fake.access_token}"
endpoint = "{fake.base_url}"
{extra}
"""


async def start(make_relay: MakeRelay, fake: FakeMeta, extra: str = "") -> Relay:
    return await make_relay(webhook_url=None, extra=destination(fake, extra))


async def rows(relay: Relay) -> dict[str, tuple[str, int, str | None]]:
    found = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.attempts, d.last_error FROM deliveries d"
        " JOIN events e ON e.id = d.event_rowid WHERE d.destination = 'meta'"
    )
    return {r[0]: (r[1], r[2], r[3]) for r in found}


def web_purchase(event_id: str, **fields: Any) -> dict[str, Any]:
    return event(
        event_id,
        "Purchase",
        page={"url": "https://shop.example/thanks?fbclid=IwAR-click-1"},
        user={"email": " Buyer@Example.com ", "phone": "(650)555-1212"},
        **fields,
    )


async def test_browser_purchase_reaches_meta_as_documented(
    make_relay: MakeRelay, fake: FakeMeta, clock: FakeClock
) -> None:
    relay = await start(make_relay, fake)
    # the browser's clock agrees with relay's: its event time is kept (30 s ago)
    now_s = clock.now_ms() // 1000
    event_time_ms = clock.now_ms() - 30_000
    body = web_purchase("ord-1", event_time=now_s - 30, sent_at=now_s)
    answer = await relay.post(body, key=BROWSER_KEY, headers={"Origin": ORIGIN, "User-Agent": UA})
    assert answer.status == 202
    assert await relay.worker("meta").drain() == 1
    assert (await rows(relay))["ord-1"] == ("delivered", 1, None)

    [request] = fake.received
    assert request.query == {"access_token": "test-token"}
    [sent] = request.body["data"]
    assert sent["event_name"] == "Purchase"
    assert sent["event_id"] == "ord-1"  # the pixel's eventID: Meta dedups on it
    assert sent["event_time"] == event_time_ms // 1000  # seconds
    assert sent["action_source"] == "website"
    assert sent["event_source_url"] == "https://shop.example/thanks?fbclid=IwAR-click-1"
    user = sent["user_data"]
    assert user["em"] == [sha("buyer@example.com")]
    assert user["ph"] == [sha("16505551212")]
    assert user["client_ip_address"] == "127.0.0.1"
    assert user["client_user_agent"] == UA
    assert user["fbc"] == f"fb.1.{event_time_ms}.IwAR-click-1"
    assert sent["custom_data"] == {"value": 10.5, "currency": "EUR"}
    assert "test_event_code" not in request.body


async def test_backend_batch_with_test_event_code(make_relay: MakeRelay, fake: FakeMeta) -> None:
    relay = await start(make_relay, fake, 'test_event_code = "TEST55"')
    events = [event(f"b-{i}", "generate_lead", user={"external_id": f"crm-{i}"}) for i in range(3)]
    await relay.post({"events": events})
    assert await relay.worker("meta").drain() == 3
    [request] = fake.received
    assert request.body["test_event_code"] == "TEST55"
    assert [e["event_id"] for e in request.body["data"]] == ["b-0", "b-1", "b-2"]
    assert {e["action_source"] for e in request.body["data"]} == {"other"}
    assert request.body["data"][0]["user_data"]["external_id"] == [sha("crm-0")]
    assert {s for s, _, _ in (await rows(relay)).values()} == {"delivered"}


async def test_transient_error_is_retried_then_delivered(
    make_relay: MakeRelay, fake: FakeMeta, clock: FakeClock
) -> None:
    fake.script = [
        meta_error(2, "An unexpected error has occurred.", is_transient=True, status=500)
    ]
    relay = await start(make_relay, fake)
    await relay.post(event("t-1", user={"email": "a@example.com"}))
    worker = relay.worker("meta")
    assert await worker.run_once() == 1
    state, attempts, error = (await rows(relay))["t-1"]
    assert (state, attempts) == ("pending", 1)
    assert error is not None and error.startswith("Meta error 2 (OAuthException)")
    assert await worker.run_once() == 0  # backing off
    clock.advance(3600)
    assert await worker.drain() == 1
    assert (await rows(relay))["t-1"][:2] == ("delivered", 2)
    assert [e["event_id"] for e in fake.events()] == ["t-1"]


async def test_throttling_waits_for_retry_after(
    make_relay: MakeRelay, fake: FakeMeta, clock: FakeClock
) -> None:
    fake.script = [
        meta_error(17, "(#17) User request limit reached", headers={"Retry-After": "900"})
    ]
    relay = await start(make_relay, fake)
    await relay.post(event("rl-1"))
    worker = relay.worker("meta")
    await worker.run_once()
    clock.advance(899)
    assert await worker.run_once() == 0
    clock.advance(2)
    assert await worker.run_once() == 1
    assert (await rows(relay))["rl-1"][0] == "delivered"


async def test_bad_token_pauses_the_destination_and_keeps_events(
    make_relay: MakeRelay, fake: FakeMeta, clock: FakeClock
) -> None:
    # the token was revoked: Meta answers code 190
    relay = await make_relay(webhook_url=None, extra=destination(fake, token="revoked-token"))
    await relay.post({"events": [event("p-1"), event("p-2")]})
    worker = relay.worker("meta")
    assert await worker.run_once() == 2
    assert len(fake.rejected) == 1 and fake.rejected[0][1] == BAD_TOKEN
    assert worker.paused is not None and "Meta error 190" in worker.paused

    ready = await relay.client.get("/readyz")
    assert ready.status == 503
    problems = (await ready.json())["problems"]
    assert any(p.startswith("destination meta: paused: Meta error 190") for p in problems)

    clock.advance(86400)
    assert await worker.drain() == 0  # nothing claimed, no attempt burnt, no request
    assert len(fake.rejected) == 1 and not fake.received
    assert {s for s, _, _ in (await rows(relay)).values()} == {"pending"}
    assert "revoked-token" not in str(await rows(relay)) + worker.paused


async def test_one_bad_event_is_isolated_by_bisection(
    make_relay: MakeRelay, fake: FakeMeta
) -> None:
    ids = [f"ok-{i}" for i in range(8)]
    ids[5] = "bad"
    fake.poison_ids = {"bad"}
    relay = await start(make_relay, fake)
    await relay.post({"events": [event(i) for i in ids]})
    assert await relay.worker("meta").drain() == 8
    states = await rows(relay)
    assert {i: s for i, (s, _, _) in states.items()} == {
        i: "dead" if i == "bad" else "delivered" for i in ids
    }
    assert states["bad"][2] == (
        "Meta error 100 (OAuthException): (#100) Invalid parameter [fbtrace_id AbCdEfGhIjKlMnOp]"
    )
    assert sorted(e["event_id"] for e in fake.events()) == sorted(i for i in ids if i != "bad")
    # 8 -> 4 + 4; the bad half -> 2 + 2; the bad pair -> 1 + 1: 4 rejections, 3 acceptances
    assert (len(fake.rejected), len(fake.received)) == (4, 3)


async def test_too_old_is_dead_with_metas_message(make_relay: MakeRelay, fake: FakeMeta) -> None:
    fake.script = [TOO_OLD]
    relay = await start(make_relay, fake)
    await relay.post(event("old-1"))
    await relay.worker("meta").drain()
    state, attempts, error = (await rows(relay))["old-1"]
    assert (state, attempts) == ("dead", 1)
    assert error is not None and "2804003" in error and "Event Timestamp Too Old" in error


async def test_events_past_the_7_day_window_expire_unsent(
    make_relay: MakeRelay, fake: FakeMeta, clock: FakeClock
) -> None:
    relay = await start(make_relay, fake)
    await relay.post(event("late-1", event_time=clock.now_ms() // 1000 - 6 * 86400))
    clock.advance(86400 + 1)
    await relay.worker("meta").drain()
    assert (await rows(relay))["late-1"][0] == "expired"
    assert not fake.received and not fake.rejected


async def test_website_event_without_user_agent_is_dead_unsent(
    make_relay: MakeRelay, fake: FakeMeta
) -> None:
    relay = await start(make_relay, fake)
    # a backend relays a web purchase without the visitor's User-Agent
    await relay.post({"events": [web_purchase("no-ua"), event("fine")]})
    await relay.worker("meta").drain()
    states = await rows(relay)
    assert states["no-ua"][0] == "dead"
    assert "client_user_agent" in (states["no-ua"][2] or "")
    assert states["fine"][0] == "delivered"
    assert [e["event_id"] for e in fake.events()] == ["fine"]
    assert not fake.rejected  # dead-lettered by relay, never sent


async def test_denied_ad_user_data_is_sent_with_ldu_and_no_hashes(
    make_relay: MakeRelay, fake: FakeMeta
) -> None:
    relay = await start(make_relay, fake)
    body = web_purchase("ldu-1", consent={"ad_user_data": "denied"})
    await relay.post(body, key=BROWSER_KEY, headers={"Origin": ORIGIN, "User-Agent": UA})
    await relay.worker("meta").drain()
    [sent] = fake.events()
    assert sent["data_processing_options"] == ["LDU"]
    assert (sent["data_processing_options_country"], sent["data_processing_options_state"]) == (
        0,
        0,
    )
    assert set(sent["user_data"]) == {"client_ip_address", "client_user_agent", "fbc"}


async def test_dry_run_records_the_request_without_the_token(
    make_relay: MakeRelay, fake: FakeMeta
) -> None:
    relay = await start(make_relay, fake, "dry_run = true")
    await relay.post(event("dry-1"))
    await relay.worker("meta").drain()
    assert not fake.received and not fake.rejected
    assert relay.config.storage.dry_run_log is not None
    log = relay.config.storage.dry_run_log.read_text()
    assert "access_token=[redacted]" in log and "dry-1" in log
    assert fake.access_token not in log


async def test_attempts_keep_meta_trace_id_for_support(
    make_relay: MakeRelay, fake: FakeMeta
) -> None:
    relay = await start(make_relay, fake)
    await relay.post(
        web_purchase("trace-1"), key=BROWSER_KEY, headers={"Origin": ORIGIN, "User-Agent": "UA/1"}
    )
    await relay.worker("meta").drain()
    rows_ = await relay.state.store.fetchall("SELECT outcome, http_status, trace_id FROM attempts")
    assert [tuple(r) for r in rows_] == [("delivered", 200, FBTRACE_ID)]
