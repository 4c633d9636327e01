"""TikTok destination end to end: relay app, SQLite outbox, worker, and a fake Events API."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.clock import FakeClock
from tests.conftest import BROWSER_KEY, ORIGIN, MakeRelay, Relay, event
from tests.platforms.fake_tiktok import THROTTLED, FakeTikTok, tiktok_reply

UA = "Mozilla/5.0 (Linux; Android 15) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeTikTok]:
    api = FakeTikTok(now_s=lambda: clock.now_ms() / 1000)
    await api.start()
    yield api
    await api.close()


async def start(
    make_relay: MakeRelay, fake: FakeTikTok, extra: str = "", token: str | None = None
) -> Relay:
    return await make_relay(
        webhook_url=None,
        extra=f"""
[[destinations]]
name = "tiktok"
type = "tiktok"
pixel_code = "{fake.pixel_code}"
access_token = "{token or fake.access_token}"
endpoint = "{fake.base_url}"
{extra}
""",
    )


async def rows(relay: Relay) -> dict[str, tuple[str, int, str | None]]:
    found = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.attempts, d.last_error FROM deliveries d"
        " JOIN events e ON e.id = d.event_rowid WHERE d.destination = 'tiktok'"
    )
    return {r[0]: (r[1], r[2], r[3]) for r in found}


def web_purchase(event_id: str, **fields: Any) -> dict[str, Any]:
    return event(
        event_id,
        "CompletePayment",  # the pixel's older name: canonical "purchase"
        page={
            "url": "https://shop.example/thanks?ttclid=E.C.P.click-9",
            "referrer": "https://shop.example/cart",
        },
        user={"email": "Buyer@Example.com", "phone": "(650)555-1212", "ttp": "ttp-cookie-1"},
        properties={
            "value": 25.0,
            "currency": "usd",
            "order_id": "A-1",
            "contents": [{"id": "sku-9", "quantity": 2, "price": 12.5}],
        },
        **fields,
    )


async def test_browser_purchase_reaches_tiktok_as_documented(
    make_relay: MakeRelay, fake: FakeTikTok, clock: FakeClock
) -> None:
    relay = await start(make_relay, fake)
    now_s = clock.now_ms() // 1000
    event_time_ms = clock.now_ms() - 45_000
    body = web_purchase("ord-7", event_time=now_s - 45, sent_at=now_s)
    answer = await relay.post(body, key=BROWSER_KEY, headers={"Origin": ORIGIN, "User-Agent": UA})
    assert answer.status == 202
    assert await relay.worker("tiktok").drain() == 1
    assert (await rows(relay))["ord-7"] == ("delivered", 1, None)

    [request] = fake.received
    assert request.headers["Access-Token"] == "test-token"
    assert (request.body["event_source"], request.body["event_source_id"]) == (
        "web",
        fake.pixel_code,
    )
    [sent] = request.body["data"]
    assert sent["event"] == "Purchase"
    assert sent["event_id"] == "ord-7"  # the pixel's event_id: TikTok dedups on it
    assert sent["event_time"] == event_time_ms // 1000  # seconds
    assert sent["user"] == {
        "email": sha("buyer@example.com"),
        "phone": sha("+16505551212"),  # E.164 with its "+"
        "ip": "127.0.0.1",
        "user_agent": UA,
        "ttp": "ttp-cookie-1",
        "ttclid": "E.C.P.click-9",  # from the page URL
    }
    assert sent["page"] == {
        "url": "https://shop.example/thanks?ttclid=E.C.P.click-9",
        "referrer": "https://shop.example/cart",
    }
    assert sent["properties"] == {
        "value": 25.0,
        "currency": "USD",
        "order_id": "A-1",
        "contents": [{"content_id": "sku-9", "quantity": 2, "price": 12.5}],
        "content_type": "product",
    }
    assert "test_event_code" not in request.body and "limited_data_use" not in sent


async def test_test_event_code_and_limited_data_use(
    make_relay: MakeRelay, fake: FakeTikTok
) -> None:
    relay = await start(make_relay, fake, 'test_event_code = "TEST31337"')
    await relay.post(event("ldu-1", consent={"ad_user_data": "denied"}))
    await relay.worker("tiktok").drain()
    [request] = fake.received
    assert request.body["test_event_code"] == "TEST31337"
    [sent] = request.body["data"]
    assert sent["limited_data_use"] is True
    assert "user" not in sent  # the only identifier was a hashed email


async def test_throttled_40100_is_retried_then_delivered(
    make_relay: MakeRelay, fake: FakeTikTok, clock: FakeClock
) -> None:
    fake.script = [THROTTLED]
    relay = await start(make_relay, fake)
    await relay.post(event("th-1"))
    worker = relay.worker("tiktok")
    assert await worker.run_once() == 1
    assert (await rows(relay))["th-1"] == (
        "pending",
        1,
        "TikTok code 40100: Too many requests. Please retry in some time. "
        "[request_id 202601010000000123456789ABCDEF]",
    )
    assert await worker.run_once() == 0
    clock.advance(3600)
    assert await worker.drain() == 1
    assert (await rows(relay))["th-1"][:2] == ("delivered", 2)


async def test_http_503_honours_retry_after(
    make_relay: MakeRelay, fake: FakeTikTok, clock: FakeClock
) -> None:
    fake.script = [(503, {"Retry-After": "600"}, b"<html>Service Unavailable</html>")]
    relay = await start(make_relay, fake)
    await relay.post(event("u-1"))
    worker = relay.worker("tiktok")
    await worker.run_once()
    assert (await rows(relay))["u-1"][0] == "pending"
    clock.advance(599)
    assert await worker.run_once() == 0
    clock.advance(2)
    assert await worker.run_once() == 1
    assert [e["event_id"] for e in fake.events()] == ["u-1"]


async def test_one_invalid_event_is_isolated_by_bisection(
    make_relay: MakeRelay, fake: FakeTikTok
) -> None:
    ids = [f"ok-{i}" for i in range(8)]
    ids[2] = "bad"
    fake.poison_ids = {"bad"}
    relay = await start(make_relay, fake)
    await relay.post({"events": [event(i) for i in ids]})
    assert await relay.worker("tiktok").drain() == 8
    states = await rows(relay)
    assert {i: s for i, (s, _, _) in states.items()} == {
        i: "dead" if i == "bad" else "delivered" for i in ids
    }
    assert states["bad"][2] == (
        "TikTok code 40002: Batch.0.event_id: Invalid value. "
        "[request_id 202601010000000123456789ABCDEF]"
    )
    assert sorted(e["event_id"] for e in fake.events()) == sorted(i for i in ids if i != "bad")
    assert (len(fake.rejected), len(fake.received)) == (4, 3)  # 8, 4, 2, 1 refused


async def test_partial_success_20001_is_not_taken_as_delivered(
    make_relay: MakeRelay, fake: FakeTikTok
) -> None:
    # the whole batch answered 20001, then each half is fine: every event ends up delivered by a
    # code 0 answer, none on the strength of the ambiguous one
    fake.script = [tiktok_reply(20001, "Partial success.")]
    relay = await start(make_relay, fake)
    await relay.post({"events": [event("ps-1"), event("ps-2")]})
    await relay.worker("tiktok").drain()
    assert {i: s for i, (s, _, _) in (await rows(relay)).items()} == {
        "ps-1": "delivered",
        "ps-2": "delivered",
    }
    assert [[e["event_id"] for e in r.body["data"]] for r in fake.received] == [["ps-1"], ["ps-2"]]
    assert [r.body["data"][0]["event_id"] for r, _ in fake.rejected] == ["ps-1"]


async def test_no_permission_pauses_and_keeps_events(
    make_relay: MakeRelay, fake: FakeTikTok, clock: FakeClock
) -> None:
    relay = await start(make_relay, fake, token="someone-elses-token")
    await relay.post({"events": [event("np-1"), event("np-2")]})
    worker = relay.worker("tiktok")
    assert await worker.drain() == 2
    assert worker.paused is not None and worker.paused.startswith("TikTok code 40001")
    assert "someone-elses-token" not in worker.paused
    ready = await relay.client.get("/readyz")
    assert ready.status == 503
    assert any(p.startswith("destination tiktok: paused") for p in (await ready.json())["problems"])
    clock.advance(86400)
    assert await worker.drain() == 0
    assert {s for s, _, _ in (await rows(relay)).values()} == {"pending"}
    assert len(fake.rejected) == 1 and not fake.received


async def test_events_past_the_window_expire_unsent(
    make_relay: MakeRelay, fake: FakeTikTok, clock: FakeClock
) -> None:
    relay = await start(make_relay, fake)
    await relay.post(event("late-1", event_time=clock.now_ms() // 1000 - 6 * 86400))
    clock.advance(86400 + 1)
    await relay.worker("tiktok").drain()
    assert (await rows(relay))["late-1"][0] == "expired"
    assert not fake.received and not fake.rejected
