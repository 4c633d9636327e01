"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import sqlite3

import orjson
from aiohttp import web

from relay.state import STATE
from relay.store import StoreUnavailable


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    problems = []
    try:
        await state.store.check_writable()
    except (StoreUnavailable, sqlite3.Error) as exc:
        problems.append(f"storage: {exc}")
    if state.store.refusing:
        problems.append(f"storage: {state.store.refusing}")
    if state.store.last_write_error:
        problems.append(f"storage: last commit failed: {state.store.last_write_error}")
    for name, worker in state.workers.items():
        if state.workers_started and not worker.alive:
            problems.append(f"worker {name}: not running")
        if worker.paused:
            problems.append(f"destination {name}: paused: {worker.paused}")
    body = {"status": "ready" if not problems else "not ready", "problems": problems}
    return web.Response(
        status=200 if not problems else 503,
        body=orjson.dumps(body),
        content_type="application/json",
    )


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    for name, worker in state.workers.items():
        state.metrics.circuit_open.labels(name).set(1 if worker.breaker.state == "open" else 0)
        state.metrics.destination_paused.labels(name).set(1 if worker.paused else 0)
    text = await state.metrics.render(
        state.store, [d.name for d in state.destinations], state.clock.now_ms()
    )
    return web.Response(
        body=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )
