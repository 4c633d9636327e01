"""The aiohttp app factory: store, HTTP client session and workers live in cleanup_ctx.

Shutdown runs the contexts in reverse: workers stop claiming and finish in-flight batches, the
client session closes, and last the store flushes its commit queue and closes. aiohttp has
already stopped accepting and waited for in-flight requests before any of that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from relay import admin, ingest, ops, retention, segment_ingest
from relay.clock import Clock, SystemClock
from relay.config import Config, DestinationConfig
from relay.destinations import registry
from relay.destinations.base import Destination
from relay.dryrun import DryRunRecorder
from relay.metrics import Metrics
from relay.state import STATE, AppState
from relay.store import OutboxStore
from relay.worker import DeliveryWorker

log = structlog.get_logger("relay.app")

USER_AGENT = "relay/0.1 (+https://github.com/relay-dev/relay)"


def create_app(
    config: Config, clock: Clock | None = None, start_workers: bool = True
) -> web.Application:
    clock = clock or SystemClock()
    metrics = Metrics()
    store = OutboxStore(
        config.storage.path, clock, config.storage.durability, config.storage.commit_max_rows
    )
    store.commit_observer = metrics.observe_commit
    destinations = [build_destination(d) for d in config.destinations]
    state = AppState(
        config=config,
        clock=clock,
        store=store,
        metrics=metrics,
        destinations=destinations,
        sources_by_key={ingest.key_digest(s.key): s for s in config.sources},
        workers_started=start_workers,
    )

    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[STATE] = state
    app.router.add_post("/v1/events", ingest.post_events)
    app.router.add_route("OPTIONS", "/v1/events", ingest.preflight)
    segment_ingest.add_routes(app)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    admin.add_routes(app)

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    async def delivery_ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=32),
            headers={"User-Agent": USER_AGENT},
        )
        state.session = session
        state.recorder = DryRunRecorder(config.storage.dry_run_log)
        for dest in destinations:
            add_worker(state, dest)
        yield
        if state.workers_started:
            grace = state.config.server.shutdown_grace_s
            await asyncio.gather(*(w.stop(grace) for w in state.workers.values()))
        await session.close()

    async def maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(maintain(store, config, clock), name="relay-maintenance")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(delivery_ctx)
    app.cleanup_ctx.append(maintenance_ctx)
    return app


def build_destination(config: DestinationConfig) -> Destination:
    cls = registry.get(config.type)
    assert cls is not None  # load_config validated the type
    return cls(config)


def add_worker(state: AppState, dest: Destination) -> DeliveryWorker:
    """Create (and, in the daemon, start) the delivery loop of one destination."""
    for warning in dest.startup_warnings():
        log.warning("destination_warning", destination=dest.name, warning=warning)
    worker = DeliveryWorker(
        dest, state.store, state.session, state.clock, state.recorder, state.metrics
    )
    state.workers[dest.name] = worker
    if state.workers_started:
        worker.start()
    return worker


MAINTENANCE_INTERVAL_S = 3600.0


async def maintain(store: OutboxStore, config: Config, clock: Clock) -> None:
    """Housekeeping: the disk guard every few seconds, and every hour a retention round (events,
    deliveries, attempts and identify traits past their windows; incremental vacuum; WAL
    checkpoint; the in-memory backlog count re-read, since operators may re-queue rows from
    another process)."""
    guard = retention.DiskGuard(store, config.storage.min_free_disk_bytes)
    guard_task = asyncio.create_task(guard.run(clock), name="relay-disk-guard")
    loop = asyncio.get_running_loop()
    first_round = True  # the store counted the backlog when it opened
    try:
        while True:
            started = loop.time()
            try:
                result = await retention.run_retention(store, config.storage, clock)
                if any(result[kind] for kind in (*retention.DELETED_KINDS, "vacuumed_pages")):
                    log.info(
                        "retention_purged", **result, duration_s=round(loop.time() - started, 3)
                    )
                if not first_round:
                    await store.recount_pending()
            except Exception as exc:  # a failed round is retried next hour
                log.error("maintenance_failed", error=str(exc), error_type=type(exc).__name__)
            first_round = False
            await clock.sleep(MAINTENANCE_INTERVAL_S)
    finally:
        guard_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await guard_task
