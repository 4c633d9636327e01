"""Delivery workers against a fake webhook on loopback, with an injected clock."""

from __future__ import annotations

import asyncio

import orjson

from relay.clock import FakeClock
from tests.conftest import WEBHOOK_SECRET, MakeRelay, Relay, event
from tests.fakes import FakeWebhook


async def delivery_rows(relay: Relay) -> list[tuple]:
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.attempts, d.last_error FROM deliveries d"
        " JOIN events e ON e.id = d.event_rowid ORDER BY d.id"
    )
    return [tuple(r) for r in rows]


async def attempt_rows(relay: Relay) -> list[tuple]:
    rows = await relay.state.store.fetchall(
        "SELECT attempt, http_status, outcome FROM attempts ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_503_503_200_is_delivered_on_the_third_attempt(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    webhook.script = [(503, {}, b"busy"), (503, {}, b"busy")]
    relay = await make_relay(webhook_url=webhook.url)
    await relay.post(event("r-1"))
    worker = relay.worker()
    assert await worker.run_once() == 1
    assert (await delivery_rows(relay))[0][:3] == ("r-1", "pending", 1)
    assert await worker.run_once() == 0  # backing off: not due yet
    clock.advance(3600)
    assert await worker.run_once() == 1
    clock.advance(3600)
    assert await worker.run_once() == 1
    assert (await delivery_rows(relay))[0][:3] == ("r-1", "delivered", 3)
    assert await attempt_rows(relay) == [
        (1, 503, "retry"),
        (2, 503, "retry"),
        (3, 200, "delivered"),
    ]
    assert webhook.delivered_ids() == ["r-1"]
    assert webhook.bad_signatures == 0


async def test_400_is_dead_with_the_platform_message(make_relay: MakeRelay, webhook: FakeWebhook):
    webhook.default = (400, {}, b'{"error": "unknown field foo"}')
    relay = await make_relay(webhook_url=webhook.url)
    await relay.post(event("d-1"))
    await relay.worker().drain()
    [(event_id, state, attempts, error)] = await delivery_rows(relay)
    assert (event_id, state, attempts) == ("d-1", "dead", 1)
    assert error == 'HTTP 400: {"error": "unknown field foo"}'
    assert len(webhook.requests) == 1  # never retried


async def test_retry_after_is_honoured(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    webhook.script = [(429, {"Retry-After": "600"}, b"slow down")]
    relay = await make_relay(webhook_url=webhook.url)
    await relay.post(event("ra-1"))
    worker = relay.worker()
    start = clock.now_ms()
    await worker.run_once()
    [next_at] = [r[0] for r in await relay.state.store.fetchall(
        "SELECT next_attempt_at_ms FROM deliveries")]  # fmt: skip
    assert next_at >= start + 600_000
    clock.advance(599)
    assert await worker.run_once() == 0
    clock.advance(2)
    assert await worker.run_once() == 1
    assert webhook.delivered_ids() == ["ra-1"]


async def test_bad_event_is_isolated_by_bisection(make_relay: MakeRelay, webhook: FakeWebhook):
    def reject(events):
        if any(e["event_id"] == "bad" for e in events):
            return 422, {}, b'{"error": "bad event in batch"}'
        return None

    webhook.reject = reject
    relay = await make_relay(webhook_url=webhook.url)
    ids = ["ok-1", "ok-2", "ok-3", "bad", "ok-5", "ok-6", "ok-7"]
    await relay.post({"events": [event(i) for i in ids]})
    await relay.worker().drain()
    states = {r[0]: r[1] for r in await delivery_rows(relay)}
    assert states == {i: ("dead" if i == "bad" else "delivered") for i in ids}
    assert sorted(webhook.delivered_ids()) == sorted(i for i in ids if i != "bad")
    # one claim, one attempt per delivery, however many requests the bisection took
    assert {r[2] for r in await delivery_rows(relay)} == {1}
    assert len(webhook.requests) > 2


async def test_circuit_breaker_pauses_without_burning_attempts(
    make_relay: MakeRelay, clock: FakeClock
):
    # port 9 (discard) is closed on loopback: every send is a transport error
    relay = await make_relay(destination_extra='circuit_cooldown = "60s"\nbatch_size = 1')
    await relay.post({"events": [event(f"cb-{i}") for i in range(5)]})
    worker = relay.worker()
    for _ in range(3):  # circuit_threshold = 3
        assert await worker.run_once() == 1
    assert worker.breaker.state == "open"
    assert await worker.run_once() == 0  # open: nothing is claimed
    attempts = [r[2] for r in await delivery_rows(relay)]
    assert attempts == [1, 1, 1, 0, 0]
    assert "transport error" in (await delivery_rows(relay))[0][3]
    clock.advance(61)
    assert await worker.run_once() == 1  # half-open probe
    assert worker.breaker.state == "open"  # probe failed: open again, longer
    clock.advance(61)
    assert await worker.run_once() == 0  # the re-open doubled the cooldown
    metrics = await (await relay.client.get("/metrics")).text()
    assert 'relay_circuit_open{destination="hook"} 1.0' in metrics


async def test_expired_lease_is_reclaimed_and_redelivered(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    relay = await make_relay(webhook_url=webhook.url, destination_extra='lease = "30s"')
    await relay.post(event("l-1"))
    store = relay.state.store
    # a worker claims and then "crashes": it never records an outcome
    [lost] = await store.claim("hook", 10, 30)
    assert await store.claim("hook", 10, 30) == []  # leased: invisible to other claims
    clock.advance(31)
    [again] = await store.claim("hook", 10, 30)
    assert (again.delivery_id, again.attempt) == (lost.delivery_id, 2)
    # the crashed worker's late record cannot overwrite the new lease holder's row
    stale = await relay.worker().process([lost])
    assert stale == 1
    assert (await delivery_rows(relay))[0][1] == "leased"
    await relay.worker().process([again])
    assert (await delivery_rows(relay))[0][:3] == ("l-1", "delivered", 2)
    assert webhook.delivered_ids() == ["l-1", "l-1"]  # at least once; the id dedups downstream


async def test_past_the_platform_window_is_expired_not_sent(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    relay = await make_relay(webhook_url=webhook.url)
    await relay.post(event("x-1"))
    await relay.state.store.execute_write(
        "UPDATE deliveries SET deadline_ms = ?", (clock.now_ms() + 1000,)
    )
    clock.advance(2)
    await relay.worker().drain()
    assert (await delivery_rows(relay))[0][:2] == ("x-1", "expired")
    assert webhook.requests == []


async def test_retry_that_would_pass_the_deadline_expires(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    webhook.default = (503, {"Retry-After": "7200"}, b"down")
    relay = await make_relay(webhook_url=webhook.url)
    await relay.post(event("x-2"))
    await relay.state.store.execute_write(
        "UPDATE deliveries SET deadline_ms = ?", (clock.now_ms() + 3_600_000,)
    )
    await relay.worker().run_once()
    row = (await delivery_rows(relay))[0]
    assert row[:2] == ("x-2", "expired")
    assert "time window" in row[3]


async def test_max_attempts_dead_letters(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    webhook.default = (500, {}, b"oops")
    relay = await make_relay(webhook_url=webhook.url, destination_extra="max_attempts = 3")
    await relay.post(event("m-1"))
    worker = relay.worker()
    for _ in range(3):
        await worker.run_once()
        clock.advance(3600)
    row = (await delivery_rows(relay))[0]
    assert row[:3] == ("m-1", "dead", 3)
    assert row[3].startswith("gave up after 3 attempts")


async def test_dry_run_records_the_exact_request_without_the_secret(
    make_relay: MakeRelay, webhook: FakeWebhook
):
    relay = await make_relay(webhook_url=webhook.url, destination_extra="dry_run = true")
    await relay.post({"events": [event("dr-1"), event("dr-2")]})
    await relay.worker().drain()
    assert webhook.requests == []
    assert [r[1] for r in await delivery_rows(relay)] == ["delivered", "delivered"]
    lines = relay.config.storage.dry_run_log.read_bytes().splitlines()
    [record] = [orjson.loads(line) for line in lines]
    assert record["destination"] == "hook"
    assert record["event_ids"] == ["dr-1", "dr-2"]
    request = record["request"]
    assert request["url"] == webhook.url
    assert [e["event_id"] for e in orjson.loads(request["body"])["events"]] == ["dr-1", "dr-2"]
    assert request["headers"]["X-Relay-Signature"].startswith("sha256=")
    assert WEBHOOK_SECRET not in relay.config.storage.dry_run_log.read_text()


async def test_running_workers_deliver_as_events_arrive(
    make_relay: MakeRelay, webhook: FakeWebhook
):
    relay = await make_relay(webhook_url=webhook.url, start_workers=True)
    await relay.post({"events": [event(f"live-{i}") for i in range(30)]})
    await webhook.wait_for(lambda: len(webhook.delivered) >= 30)
    assert sorted(webhook.delivered_ids()) == sorted(f"live-{i}" for i in range(30))
    assert (await relay.client.get("/readyz")).status == 200


async def test_one_dead_destination_does_not_slow_another(
    make_relay: MakeRelay, webhook: FakeWebhook
):
    second = f"""
[[destinations]]
name = "dead-end"
type = "webhook"
url = "http://10.255.255.1:9/hook"
secret = "{WEBHOOK_SECRET}"
timeout = "30s"
"""
    relay = await make_relay(webhook_url=webhook.url, start_workers=True, extra=second)
    await relay.post({"events": [event(f"iso-{i}") for i in range(10)]})
    # the unroutable destination hangs for its 30 s timeout; the webhook is served regardless
    await webhook.wait_for(lambda: len(webhook.delivered) >= 10, timeout_s=10)
    assert len(webhook.delivered) == 10


async def test_shutdown_records_interrupted_deliveries(make_relay: MakeRelay, webhook: FakeWebhook):
    webhook.hold = asyncio.Event()  # the platform never answers
    relay = await make_relay(webhook_url=webhook.url, start_workers=True)
    await relay.post(event("sd-1"))
    worker = relay.worker()
    await webhook.wait_for(lambda: bool(webhook.requests))
    await worker.stop(grace_s=0.05)
    rows = await delivery_rows(relay)
    assert rows[0][:3] == ("sd-1", "pending", 1)
    assert rows[0][3] == "interrupted by shutdown"
    assert await attempt_rows(relay) == [(1, None, "retry")]
    webhook.hold.set()


async def test_stop_does_not_wait_for_a_hung_platform_to_free_a_slot(
    make_relay: MakeRelay, webhook: FakeWebhook
):
    webhook.hold = asyncio.Event()
    relay = await make_relay(
        webhook_url=webhook.url,
        start_workers=True,
        destination_extra='concurrency = 1\nbatch_size = 1\ntimeout = "600s"',
    )
    await relay.post({"events": [event("slot-1"), event("slot-2")]})
    await webhook.wait_for(lambda: bool(webhook.requests))
    # the loop sits at full concurrency; without a wake-up, stop would wait out the 600 s timeout
    async with asyncio.timeout(10):
        await relay.worker().stop(grace_s=0.05)
    rows = await delivery_rows(relay)
    assert [r[:2] for r in rows] == [("slot-1", "pending"), ("slot-2", "pending")]
    assert rows[0][3] == "interrupted by shutdown"
    webhook.hold.set()


async def test_a_delivered_row_carries_no_error_after_earlier_failures(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    webhook.script = [(503, {}, b"busy")]
    relay = await make_relay(webhook_url=webhook.url)
    await relay.post(event("ok-after-503"))
    await relay.worker().run_once()
    assert (await delivery_rows(relay))[0][3] == "HTTP 503: busy"
    clock.advance(3600)
    await relay.worker().run_once()
    assert (await delivery_rows(relay))[0] == ("ok-after-503", "delivered", 2, None)
