"""Segment-protocol endpoints over real HTTP: what Segment-style clients need to see."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.conftest import BROWSER_KEY, ORIGIN, SERVER_KEY, MakeRelay, Relay


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(message_id: str, event: str = "Order Completed", **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "event": event,
        "userId": "user-42",
        "properties": {"revenue": 25.5, "currency": "usd", "order_id": f"o-{message_id}"},
        "context": {"ip": "203.0.113.7", "userAgent": "segment-test/1.0"},
        # the test clock starts at the real time, so events are stamped relative to it
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        **extra,
    }


async def stored(relay: Relay) -> dict[str, dict[str, Any]]:
    rows = await relay.state.store.fetchall("SELECT event_id, payload FROM events ORDER BY id")
    return {event_id: orjson.loads(payload) for event_id, payload in rows}


async def post(relay: Relay, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    headers = basic(SERVER_KEY) if headers is None else headers
    return await relay.client.post(path, data=orjson.dumps(body), headers=headers)


async def test_batch_is_answered_exactly_200_success_after_commit(make_relay: MakeRelay, clock):
    relay = await make_relay(extra="")
    body = {
        "batch": [track("m-1"), track("m-2", event="Product Added")],
        "sentAt": "2026-01-01T00:00:01Z",
    }
    resp = await post(relay, "/v1/batch", body)
    assert resp.status == 200
    assert await resp.read() == b'{"success":true}'
    events = await stored(relay)
    assert [e["event_name"] for e in events.values()] == ["purchase", "add_to_cart"]
    assert events["m-1"]["properties"]["value"] == 25.5
    assert events["m-1"]["properties"]["currency"] == "USD"
    assert len(events["m-1"]["user"]["external_id"]) == 64  # userId, hashed


async def test_retried_batch_is_stored_once(make_relay: MakeRelay):
    relay = await make_relay()
    body = {"batch": [track("r-1"), track("r-2")]}
    for _ in range(3):  # every client resends the same messageIds on retry
        assert (await post(relay, "/v1/batch", body)).status == 200
    assert list(await stored(relay)) == ["r-1", "r-2"]
    rows = await relay.state.store.fetchall("SELECT count(*) FROM deliveries")
    assert rows[0][0] == 2


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t"])
async def test_single_message_paths_and_write_key_in_the_body(make_relay: MakeRelay, path: str):
    relay = await make_relay()
    message = track(f"s{path[-1]}") | {"writeKey": SERVER_KEY}
    resp = await relay.client.post(
        path, data=orjson.dumps(message), headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 200
    assert list(await stored(relay)) == [f"s{path[-1]}"]


async def test_page_call_is_a_page_view(make_relay: MakeRelay):
    relay = await make_relay()
    properties = {"url": "https://shop.example/?fbclid=x", "referrer": "https://google.com/"}
    page = {"type": "page", "messageId": "p-1", "anonymousId": "a-1", "properties": properties}
    assert (await post(relay, "/v1/page", page)).status == 200
    [event] = (await stored(relay)).values()
    assert event["event_name"] == "page_view"
    assert event["page"]["url"] == "https://shop.example/?fbclid=x"


async def test_gzip_labelled_as_a_form_is_read_as_json(make_relay: MakeRelay):
    relay = await make_relay()
    headers = basic(SERVER_KEY) | {
        "Content-Encoding": "gzip",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    data = gzip.compress(orjson.dumps({"batch": [track("gz-1")]}))
    resp = await relay.client.post("/v1/batch", data=data, headers=headers)
    assert resp.status == 200
    assert list(await stored(relay)) == ["gz-1"]


async def test_auth_errors_have_code_and_message(make_relay: MakeRelay):
    relay = await make_relay()
    for headers in ({}, basic("wrong-key"), {"Authorization": f"Bearer {SERVER_KEY}"}):
        resp = await post(relay, "/v1/batch", {"batch": [track("a-1")]}, headers)
        assert resp.status == 401
        body = await resp.json()
        assert body["code"] == "unauthorized" and body["message"]
    assert await stored(relay) == {}


async def test_size_limits_say_which_was_exceeded(make_relay: MakeRelay):
    relay = await make_relay()
    big = track("big-1", properties={"note": "x" * 33_000})
    resp = await post(relay, "/v1/track", big)
    assert resp.status == 413
    assert "a message may be at most 32 KB" in (await resp.json())["message"]
    resp = await post(relay, "/v1/batch", {"batch": [big]})
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "message_too_large" and "'big-1'" in body["message"]
    batch = {"batch": [track(f"b-{i}", properties={"note": "y" * 20_000}) for i in range(30)]}
    resp = await post(relay, "/v1/batch", batch)
    assert resp.status == 413
    assert "a batch may be at most 500 KB" in (await resp.json())["message"]
    assert await stored(relay) == {}


async def test_invalid_messages_are_dropped_and_the_rest_kept(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await post(
        relay, "/v1/batch", {"batch": [{"type": "track", "messageId": "x"}, track("ok-1")]}
    )
    assert resp.status == 200
    assert list(await stored(relay)) == ["ok-1"]
    resp = await post(relay, "/v1/batch", {"batch": [{"type": "track", "messageId": "y"}]})
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "invalid_message" and body["message"].startswith("event")


async def test_overload_is_503_with_an_integer_retry_after(make_relay: MakeRelay):
    relay = await make_relay(storage_extra="max_backlog = 1")
    assert (await post(relay, "/v1/batch", {"batch": [track("o-1")]})).status == 200
    resp = await post(relay, "/v1/batch", {"batch": [track("o-2")]})
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    assert (await resp.json())["code"] == "backlog_full"


async def test_identify_traits_enrich_later_events_hashed(make_relay: MakeRelay):
    relay = await make_relay()
    identify = {"type": "identify", "messageId": "i-1", "userId": "user-42",
                "traits": {"email": "Jane@Example.com", "firstName": "Jane"}}  # fmt: skip
    assert (await post(relay, "/v1/identify", identify)).status == 200
    later = track("t-1")
    assert (await post(relay, "/v1/track", later)).status == 200
    events = await stored(relay)
    assert list(events) == ["t-1"]  # identify is not an event
    user = events["t-1"]["user"]
    assert len(user["em"]) == 64 and len(user["fn"]) == 64
    rows = await relay.state.store.fetchall("SELECT key_hash, user_fields FROM identities")
    assert len(rows) == 1 and len(rows[0][0]) == 32  # keyed by the hash of "user:user-42"
    assert b"jane" not in rows[0][1].lower() and b"user-42" not in rows[0][1]


async def test_group_and_alias_are_accepted_and_not_stored(make_relay: MakeRelay):
    relay = await make_relay()
    group = {"type": "group", "groupId": "g"}
    alias = {"type": "alias", "previousId": "a", "userId": "b"}
    for path, body in (("/v1/group", group), ("/v1/alias", alias)):
        assert (await post(relay, path, body)).status == 200
    assert await stored(relay) == {}


async def test_browser_cors_preflight_allows_authorization(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await relay.client.options(
        "/v1/t", headers={"Origin": ORIGIN, "Access-Control-Request-Headers": "authorization"}
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in resp.headers["Access-Control-Allow-Headers"]
    resp = await post(relay, "/v1/t", track("c-1"), basic(BROWSER_KEY) | {"Origin": ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_settings_document_points_analytics_js_at_relay(make_relay: MakeRelay):
    relay = await make_relay()
    resp = await relay.client.get(f"/v1/projects/{BROWSER_KEY}/settings")
    assert resp.status == 200
    segment_io = (await resp.json())["integrations"]["Segment.io"]
    assert segment_io["apiKey"] == BROWSER_KEY
    assert segment_io["apiHost"] == f"{relay.client.host}:{relay.client.port}/v1"
    assert segment_io["protocol"] == "http"
    assert (await relay.client.get("/v1/projects/nope/settings")).status == 404
