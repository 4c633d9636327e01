"""The admin API and status page on a relay app: the admin key (never a source key), JSON shapes,
dead letters and replay (which wakes the workers), and the HTML page with its headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from relay import admin
from relay.app import create_app
from relay.cli import main
from relay.clock import FakeClock
from relay.config import load_config
from tests.conftest import BROWSER_KEY, SERVER_KEY, Relay, event, write_config
from tests.fakes import FakeWebhook

ADMIN_KEY = "test-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def make_admin(tmp_path: Path, clock: FakeClock, webhook: FakeWebhook) -> AsyncIterator[Any]:
    """A relay app with the admin routes added before it starts, as app.py wires them."""
    clients: list[TestClient] = []

    async def make(admin_key: str | None = ADMIN_KEY, start_workers: bool = False) -> Relay:
        server_extra = f'admin_key = "{admin_key}"' if admin_key else ""
        config = load_config(
            write_config(tmp_path, webhook_url=webhook.url, server_extra=server_extra)
        )
        app = create_app(config, clock=clock, start_workers=start_workers)
        admin.add_routes(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Relay(client, config)

    yield make
    for client in clients:
        await client.close()


async def get_json(relay: Relay, path: str, status: int = 200, **kwargs: Any) -> Any:
    response = await relay.client.get(path, headers=AUTH, **kwargs)
    assert response.status == status, await response.text()
    return await response.json()


async def post_json(relay: Relay, path: str, body: Any, status: int = 200) -> Any:
    response = await relay.client.post(path, headers=AUTH, data=orjson.dumps(body))
    assert response.status == status, await response.text()
    return await response.json()


async def dead_letter(relay: Relay, webhook: FakeWebhook, *event_ids: str) -> None:
    webhook.default = (400, {}, b'{"error": "unknown field <script>alert(1)</script>"}')
    for event_id in event_ids:
        assert (await relay.post(event(event_id))).status == 202
    await relay.worker().drain()


async def test_without_an_admin_key_the_routes_do_not_exist(make_admin):
    relay = await make_admin(admin_key=None)
    for path in ("/v1/admin/status", "/v1/admin/dead", "/v1/admin/events/x", "/admin"):
        assert (await relay.client.get(path, headers=AUTH)).status == 404
    response = await relay.client.post("/v1/admin/dead/replay", json={"all": True})
    assert response.status == 404


async def test_only_the_admin_key_opens_the_api(make_admin):
    relay = await make_admin()
    response = await relay.client.get("/v1/admin/status")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for key in (SERVER_KEY, BROWSER_KEY, "wrong", ADMIN_KEY + "x", ADMIN_KEY[:-1]):
        response = await relay.client.get(
            "/v1/admin/status", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status == 401, key
    basic = {"Authorization": f"Basic {ADMIN_KEY}"}
    assert (await relay.client.get("/v1/admin/status", headers=basic)).status == 401
    # the query key is for the browser page only
    assert (await relay.client.get(f"/v1/admin/status?key={ADMIN_KEY}")).status == 401
    response = await relay.client.post("/v1/admin/dead/drop", json={"all": True})
    assert response.status == 401
    assert (await relay.client.get("/v1/admin/status", headers=AUTH)).status == 200


async def test_status_has_the_counts_and_the_live_worker_state(
    make_admin, webhook: FakeWebhook, clock: FakeClock, capsys
):
    relay = await make_admin()
    webhook.default = (503, {}, b"upstream busy")
    assert (await relay.post(event("s-1"))).status == 202
    worker = relay.worker()
    for _ in range(3):  # circuit_threshold = 3 in the test config
        assert await worker.run_once() == 1
        clock.advance(3600)
    clock.advance(-3600 + 1)  # just after the third failure: the circuit is open
    status = await get_json(relay, "/v1/admin/status")
    [hook] = status["destinations"]
    assert status["now_ms"] == clock.now_ms()
    assert (hook["destination"], hook["pending"], hook["in_flight"]) == ("hook", 1, 0)
    assert hook["last_error"] == "HTTP 503: upstream busy"
    assert hook["worker"] == {
        "circuit": "open",
        "consecutive_failures": 3,
        "reopens_at_ms": worker.breaker.reopen_at_ms(),
        "paused": None,
        "last_error": "HTTP 503: upstream busy",
        "running": False,  # this test drives the worker by hand
    }

    # `relay status` shows the live state through this API
    argv = ["status", "--url", str(relay.client.make_url("")), "--config", str(relay.config.path)]
    assert await asyncio.to_thread(main, argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("hook"))
    assert line.split()[:3] == ["hook", "open", "1"]

    clock.advance(3600)
    status = await get_json(relay, "/v1/admin/status")
    assert status["destinations"][0]["worker"]["circuit"] == "half-open"  # cooldown over


async def test_event_lookup(make_admin, webhook: FakeWebhook):
    relay = await make_admin()
    assert (await relay.post(event("e-1"))).status == 202
    await relay.worker().drain()
    report = await get_json(relay, "/v1/admin/events/e-1")
    [stored] = report["events"]
    assert stored["event_name"] == "purchase" and stored["payload"]["user"]["em"]
    assert "Buyer@Example.com" not in orjson.dumps(stored).decode()  # identifiers are hashed
    [delivery] = stored["deliveries"]
    assert (delivery["destination"], delivery["state"], delivery["attempts"]) == (
        "hook",
        "delivered",
        1,
    )
    [attempt] = delivery["attempts_log"]
    assert (attempt["attempt"], attempt["http_status"], attempt["outcome"]) == (1, 200, "delivered")
    assert (await get_json(relay, "/v1/admin/events/nope", status=404))["error"]
    assert (await relay.post(event("order/7 b"))).status == 202  # ids are any text
    report = await get_json(relay, "/v1/admin/events/order%2F7%20b")
    assert report["event_id"] == "order/7 b" and len(report["events"]) == 1


async def test_dead_letters_list_show_and_filters(make_admin, webhook: FakeWebhook):
    relay = await make_admin()
    await dead_letter(relay, webhook, "d-1", "d-2")
    dead = (await get_json(relay, "/v1/admin/dead"))["dead"]
    assert [d["event_id"] for d in dead] == ["d-2", "d-1"]
    assert dead[0]["last_error"].startswith("HTTP 400: ")
    params: dict[str, str]
    for params, count in (
        ({"destination": "nope"}, 0),
        ({"reason": "UNKNOWN FIELD"}, 2),
        ({"since": "1h"}, 2),
        ({"until": "1h"}, 0),
        ({"limit": "1"}, 1),
    ):
        found = await get_json(relay, "/v1/admin/dead", params=params)
        assert len(found["dead"]) == count, params
    for params in ({"limit": "0"}, {"since": "yesterday"}, {"colour": "red"}):
        assert "error" in await get_json(relay, "/v1/admin/dead", status=400, params=params)
    one = await get_json(relay, f"/v1/admin/dead/{dead[0]['id']}")
    assert (one["event_id"], one["state"], len(one["attempts_log"])) == ("d-2", "dead", 1)
    await get_json(relay, "/v1/admin/dead/99999", status=404)


async def test_replay_requeues_and_wakes_the_workers(
    make_admin, webhook: FakeWebhook, clock: FakeClock
):
    relay = await make_admin(start_workers=True)
    webhook.default = (400, {}, b'{"error": "bad"}')
    assert (await relay.post(event("r-1"))).status == 202
    deadline = asyncio.get_running_loop().time() + 10
    while not (await get_json(relay, "/v1/admin/dead"))["dead"]:  # the worker records it
        assert asyncio.get_running_loop().time() < deadline, "never dead-lettered"
        await asyncio.sleep(0.01)

    webhook.default = (200, {}, b"{}")
    assert "error" in await post_json(relay, "/v1/admin/dead/replay", {}, status=400)
    dry = await post_json(relay, "/v1/admin/dead/replay", {"destination": "hook", "dry_run": True})
    assert dry == {"requeued": 1, "skipped_past_window": 0, "dry_run": True}
    pending_before = relay.state.store.pending
    done = await post_json(relay, "/v1/admin/dead/replay", {"all": True})
    assert done == {"requeued": 1, "skipped_past_window": 0, "dry_run": False}
    assert relay.state.store.pending == pending_before + 1
    # the fake clock never moves here: only the wake-up can make the idle worker claim again
    await webhook.wait_for(lambda: webhook.delivered_ids() == ["r-1"])
    assert (await get_json(relay, "/v1/admin/dead"))["dead"] == []


async def test_drop_and_body_validation(make_admin, webhook: FakeWebhook):
    relay = await make_admin()
    await dead_letter(relay, webhook, "x-1")
    [dead] = (await get_json(relay, "/v1/admin/dead"))["dead"]
    for body in ({"ids": ["1"]}, {"all": "yes"}, {"colour": "red"}, [1], {"since": 1.5}):
        assert "error" in await post_json(relay, "/v1/admin/dead/drop", body, status=400)
    response = await relay.client.post("/v1/admin/dead/drop", headers=AUTH, data=b"{not json")
    assert response.status == 400
    body = {"ids": [dead["id"]], "dry_run": True}
    assert await post_json(relay, "/v1/admin/dead/drop", body) == {"dropped": 1, "dry_run": True}
    body = {"ids": [dead["id"]]}
    assert await post_json(relay, "/v1/admin/dead/drop", body) == {"dropped": 1, "dry_run": False}
    assert (await get_json(relay, "/v1/admin/dead"))["dead"] == []
    rows = await relay.state.store.fetchall("SELECT count(*) FROM attempts")
    assert rows == [(0,)]


async def test_status_page(make_admin, webhook: FakeWebhook):
    relay = await make_admin()
    response = await relay.client.get("/admin", headers=AUTH)
    assert response.status == 200
    assert "no failures" in await response.text()

    await dead_letter(relay, webhook, "p-1")
    response = await relay.client.get(f"/admin?key={ADMIN_KEY}")  # as a browser would
    assert response.status == 200
    assert response.content_type == "text/html"
    for name, value in admin.PAGE_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'"
    )
    html = await response.text()
    assert '<meta http-equiv="refresh" content="10">' in html
    assert "<h2>Destinations</h2><table>" in html and "<td>hook</td>" in html
    assert "<th>delivered 1h / 24h</th>" in html and "<td>circuit closed</td>" in html
    assert "<h2>Recent failures</h2><table>" in html and "p-1" in html
    # the platform's answer is shown, never interpreted
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html

    assert (await relay.client.get("/admin")).status == 401
    assert (await relay.client.get("/admin?key=wrong")).status == 401
    headers = {"Authorization": f"Bearer {SERVER_KEY}"}
    assert (await relay.client.get("/admin", headers=headers)).status == 401
