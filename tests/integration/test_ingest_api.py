"""POST /v1/events through real HTTP on loopback into a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import gzip
import sqlite3

import orjson
import pytest

from relay.store import StoreUnavailable
from tests.conftest import BROWSER_KEY, ORIGIN, SERVER_KEY, MakeRelay, event


def stored_ids(relay) -> list[str]:
    """Read through a separate connection: only committed rows are visible there."""
    conn = sqlite3.connect(relay.config.storage.path)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY id")]
    finally:
        conn.close()


async def test_single_event_is_accepted_and_stored_with_its_delivery(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await relay.post(event("e-1"))
    assert resp.status == 202
    assert await resp.json() == {"results": [{"event_id": "e-1", "status": "accepted"}]}
    assert stored_ids(relay) == ["e-1"]
    rows = await relay.state.store.fetchall("SELECT destination, state, attempts FROM deliveries")
    assert [tuple(r) for r in rows] == [("hook", "pending", 0)]


async def test_fifty_concurrent_posts_of_one_event_store_it_once(make_relay: MakeRelay):
    relay = await make_relay()
    responses = await asyncio.gather(*(relay.post(event("same-id")) for _ in range(50)))
    statuses = [(await r.json())["results"][0]["status"] for r in responses]
    assert all(r.status == 202 for r in responses)
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    assert stored_ids(relay) == ["same-id"]
    rows = await relay.state.store.fetchall("SELECT count(*) FROM deliveries")
    assert rows[0][0] == 1


async def test_browser_and_server_spellings_of_one_event_are_one_event(make_relay: MakeRelay):
    relay = await make_relay()
    server = await relay.post(event("order-77", name="purchase"))
    browser_body = {"eventID": "order-77", "event_name": "Purchase",
                    "properties": {"value": 10.5, "currency": "eur"}}  # fmt: skip
    browser = await relay.post(browser_body, key=BROWSER_KEY, headers={"Origin": ORIGIN})
    assert (await server.json())["results"][0]["status"] == "accepted"
    assert (await browser.json())["results"][0]["status"] == "duplicate"
    assert stored_ids(relay) == ["order-77"]
    metrics = relay.state.metrics
    assert metrics.event_id_aliases.labels("web", "eventID")._value.get() == 1
    assert metrics.ingest_conflicts.labels("web")._value.get() == 0


async def test_duplicate_with_a_different_value_is_counted_as_conflict(make_relay: MakeRelay):
    relay = await make_relay()
    await relay.post(event("c-1"))
    resp = await relay.post(event("c-1", properties={"value": 99, "currency": "EUR"}))
    assert (await resp.json())["results"][0]["status"] == "duplicate"
    assert relay.state.metrics.ingest_conflicts.labels("backend")._value.get() == 1


async def test_batch_answers_per_event_and_one_bad_event_loses_nothing(make_relay: MakeRelay):
    relay = await make_relay()
    body = {"events": [event("b-1"), {"event_id": "b-2"}, event("b-3", event_time="yesterday")]}
    resp = await relay.post(body)
    assert resp.status == 202
    results = (await resp.json())["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected"]
    assert results[1] == {
        "event_id": "b-2",
        "status": "rejected",
        "error": "event_name: is required and must be a non-empty string",
    }
    assert results[2]["error"].startswith("event_time:")
    assert stored_ids(relay) == ["b-1"]


async def test_all_rejected_answers_400_naming_the_field(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await relay.post(event("v-1", properties={"value": "lots", "currency": "EUR"}))
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "properties.value: must be a number"
    assert stored_ids(relay) == []


@pytest.mark.parametrize(
    ("raw", "error_prefix"),
    [
        (b"{not json", "body: not valid JSON"),
        (b"[1, 2]", "body: must be an event object"),
        (b'{"events": {}}', "events: must be a list"),
        (b'{"events": []}', "events: empty list"),
    ],
)
async def test_malformed_bodies_get_400_naming_the_problem(
    make_relay: MakeRelay, raw, error_prefix
):
    relay = await make_relay()
    resp = await relay.client.post(
        "/v1/events", data=raw, headers={"Authorization": f"Bearer {SERVER_KEY}"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"].startswith(error_prefix)


async def test_missing_or_wrong_key_is_401(make_relay: MakeRelay):
    relay = await make_relay()
    assert (await relay.client.post("/v1/events", json=event("k-1"))).status == 401
    resp = await relay.post(event("k-1"), key="nope")
    assert resp.status == 401
    assert "authorization" in (await resp.json())["error"]


async def test_key_in_query_and_text_plain_body_for_send_beacon(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await relay.client.post(
        f"/v1/events?key={BROWSER_KEY}",
        data=orjson.dumps(event("beacon-1")),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
    )
    assert resp.status == 202
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert stored_ids(relay) == ["beacon-1"]


async def test_gzip_body_is_accepted(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await relay.client.post(
        "/v1/events",
        data=gzip.compress(orjson.dumps({"events": [event("gz-1"), event("gz-2")]})),
        headers={"Authorization": f"Bearer {SERVER_KEY}", "Content-Encoding": "gzip"},
    )
    assert resp.status == 202
    assert stored_ids(relay) == ["gz-1", "gz-2"]


async def test_oversized_body_and_too_many_events_are_413(make_relay: MakeRelay):
    relay = await make_relay(server_extra="max_body_bytes = 2000\nmax_events_per_request = 3")
    big = event("big-1", properties={"value": 1, "currency": "EUR", "note": "x" * 5000})
    resp = await relay.post(big)
    assert resp.status == 413
    assert (await resp.json())["error"] == "body: larger than max_body_bytes (2000 bytes)"
    resp = await relay.post({"events": [event(f"n-{i}") for i in range(4)]})
    assert resp.status == 413
    assert "max_events_per_request (3)" in (await resp.json())["error"]
    assert stored_ids(relay) == []


async def test_gzip_bomb_is_bounded_by_max_body_bytes(make_relay: MakeRelay):
    relay = await make_relay(server_extra="max_body_bytes = 100000")
    bomb = gzip.compress(b'{"event_name": "' + b"a" * 5_000_000 + b'"}')
    assert len(bomb) < 100000
    resp = await relay.client.post(
        "/v1/events",
        data=bomb,
        headers={"Authorization": f"Bearer {SERVER_KEY}", "Content-Encoding": "gzip"},
    )
    assert resp.status == 413


async def test_cors_preflight_and_origin_allowlist(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await relay.client.options(
        "/v1/events",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in resp.headers["Access-Control-Allow-Headers"]
    bad = await relay.client.options("/v1/events", headers={"Origin": "https://evil.example"})
    assert bad.status == 403
    assert "Access-Control-Allow-Origin" not in bad.headers
    post = await relay.post(
        event("o-1"), key=BROWSER_KEY, headers={"Origin": "https://evil.example"}
    )
    assert post.status == 403
    assert "origin" in (await post.json())["error"]
    # a server key used from a web page is refused: it would leak into every visitor's browser
    post = await relay.post(event("o-2"), key=SERVER_KEY, headers={"Origin": ORIGIN})
    assert post.status == 403
    assert stored_ids(relay) == []


async def test_browser_source_takes_ip_and_user_agent_from_the_request(make_relay: MakeRelay):
    relay = await make_relay()
    await relay.post(
        event("ip-1"), key=BROWSER_KEY, headers={"Origin": ORIGIN, "User-Agent": "Mozilla/5.0 test"}
    )
    # the peer (127.0.0.1) is not a trusted proxy, so X-Forwarded-For is ignored
    await relay.post(
        event("ip-2"), key=BROWSER_KEY, headers={"Origin": ORIGIN, "X-Forwarded-For": "203.0.113.9"}
    )
    await relay.post(event("ip-3"), headers={"User-Agent": "backend/1.0"})
    rows = await relay.state.store.fetchall("SELECT event_id, payload FROM events ORDER BY id")
    users = {eid: orjson.loads(p).get("user", {}) for eid, p in rows}
    assert users["ip-1"]["ip"] == "127.0.0.1"
    assert users["ip-1"]["user_agent"] == "Mozilla/5.0 test"
    assert users["ip-2"]["ip"] == "127.0.0.1"
    assert "ip" not in users["ip-3"] and "user_agent" not in users["ip-3"]


async def test_no_plaintext_email_or_phone_at_rest(make_relay: MakeRelay):
    relay = await make_relay()
    user = {"email": "Secret.Person@Example.com", "phone": "+1 650 555 1212", "first_name": "Ada"}
    await relay.post(event("pii-1", user=user))
    await relay.state.store.close()
    raw = b"".join(
        p.read_bytes() for p in relay.config.storage.path.parent.glob("relay.db*") if p.is_file()
    )
    for secret in (b"secret.person", b"Secret.Person", b"650", b"5551212", b"Ada"):
        assert secret not in raw


async def test_write_failure_answers_503_and_acknowledges_nothing(make_relay: MakeRelay):
    relay = await make_relay()
    assert (await relay.post(event("before"))).status == 202
    store = relay.state.store
    # SQLite's page quota makes the next write fail exactly as a full disk does (SQLITE_FULL).
    [(pages,)] = await store.fetchall("PRAGMA page_count")
    await store.execute_write(f"PRAGMA max_page_count = {pages}")
    big = [event(f"full-{i}", properties={"value": 1, "currency": "EUR", "pad": "x" * 3000})
           for i in range(20)]  # fmt: skip
    resp = await relay.post({"events": big})
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    assert "storage" in (await resp.json())["error"]
    ready = await relay.client.get("/readyz")
    assert ready.status == 503
    # space comes back: the same request now succeeds, and relay recovered by itself
    await store.execute_write("PRAGMA max_page_count = 1073741823")
    resp = await relay.post({"events": big})
    assert resp.status == 202
    assert stored_ids(relay) == ["before"] + [f"full-{i}" for i in range(20)]
    ready = await relay.client.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready", "problems": []})


async def test_group_commit_shares_transactions_and_acks_only_committed(make_relay: MakeRelay):
    relay = await make_relay()
    responses = await asyncio.gather(
        *(relay.post({"events": [event(f"g-{i}-{j}") for j in range(5)]}) for i in range(40))
    )
    assert all(r.status == 202 for r in responses)
    acked = {r["event_id"] for resp in responses for r in (await resp.json())["results"]}
    assert acked == set(stored_ids(relay))
    assert len(acked) == 200
    histogram = relay.state.metrics.commit_rows
    commits = histogram._sum.get(), sum(b.get() for b in histogram._buckets)
    assert commits[0] == 200
    assert commits[1] < 40  # fewer transactions than requests: commits were shared


async def test_backlog_limit_answers_503_instead_of_dropping(make_relay: MakeRelay):
    relay = await make_relay(storage_extra="max_backlog = 2")
    assert (await relay.post({"events": [event("q-1"), event("q-2")]})).status == 202
    resp = await relay.post(event("q-3"))
    assert resp.status == 503
    assert "backlog" in (await resp.json())["error"]
    assert stored_ids(relay) == ["q-1", "q-2"]


async def test_shutting_down_store_refuses_instead_of_acknowledging(make_relay: MakeRelay):
    relay = await make_relay()
    await relay.state.store.close()
    with pytest.raises(StoreUnavailable):
        await relay.state.store.insert_events([], [])


async def test_consent_denial_and_events_filter_choose_deliveries(make_relay: MakeRelay):
    relay = await make_relay(destination_extra='events = ["purchase"]\nconsent = ["ad_user_data"]')
    await relay.post(event("f-1"))
    await relay.post(event("f-2", name="page_view"))
    await relay.post(event("f-3", consent={"ad_user_data": "denied"}))
    await relay.post(event("f-4", consent={"ad_user_data": "granted"}))
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id FROM deliveries d JOIN events e ON e.id = d.event_rowid ORDER BY d.id"
    )
    assert [r[0] for r in rows] == ["f-1", "f-4"]
    assert stored_ids(relay) == ["f-1", "f-2", "f-3", "f-4"]


async def test_health_ready_and_metrics(make_relay: MakeRelay):
    relay = await make_relay()
    await relay.post(event("m-1"))
    assert (await relay.client.get("/healthz")).status == 200
    ready = await relay.client.get("/readyz")
    assert ready.status == 200
    text = await (await relay.client.get("/metrics")).text()
    assert 'relay_ingest_events_total{source="backend",status="accepted"} 1.0' in text
    assert 'relay_queue_depth{destination="hook"} 1.0' in text
    assert "relay_commit_seconds_bucket" in text
    assert 'relay_ingest_requests_total{code="202"} 1.0' in text


async def test_disk_guard_refusal_answers_503_on_every_ingest_path(make_relay: MakeRelay):
    relay = await make_relay()
    relay.state.store.refusing = "disk: 100 MiB free, below min_free_disk (256 MiB)"
    resp = await relay.post(event("disk-1"))
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    assert (await resp.json())["error"].startswith("disk: 100 MiB free")
    basic = base64.b64encode(f"{SERVER_KEY}:".encode()).decode()
    resp = await relay.client.post(
        "/v1/track",
        json={"type": "track", "event": "Order Completed", "messageId": "disk-2"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert resp.status == 503
    assert (await resp.json())["code"] == "storage_full"
    ready = await relay.client.get("/readyz")
    assert ready.status == 503
    assert "min_free_disk" in (await ready.json())["problems"][0]
    relay.state.store.refusing = None
    assert (await relay.post(event("disk-3"))).status == 202
    assert stored_ids(relay) == ["disk-3"]
