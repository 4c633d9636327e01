"""``relay serve``: uvloop, the app on a TCP listener, ordered shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

import structlog
import uvloop
from aiohttp import web

from relay.app import create_app
from relay.config import Config

log = structlog.get_logger("relay.server")


# The writer thread re-takes the GIL after every SQLite call; with the event loop busy it waited
# up to the default 5 ms switch interval each time, and every acknowledgement waits for that
# commit. 0.5 ms hands the GIL over ten times sooner (bench/README.md has the figures).
GIL_SWITCH_INTERVAL_S = 0.0005
GC_GEN0_THRESHOLD = 50_000


def serve(config: Config) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    uvloop.run(_serve(config))


async def _serve(config: Config) -> None:
    app = create_app(config)
    # shutdown_timeout: how long in-flight ingest requests get to finish after the listener
    # closes; their commits are flushed before the store closes.
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=config.server.shutdown_grace_s
    )
    await runner.setup()
    site = web.TCPSite(
        runner, config.server.host, config.server.port, backlog=1024, reuse_address=True
    )
    await site.start()
    # Everything allocated so far (modules, phone metadata, the app) lives until exit: freeze it
    # out of the cyclic GC's scans, and collect the young generation less often. Full
    # collections walking those objects were a large, random share of request time.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    log.info(
        "relay_started",
        listen=f"{config.server.host}:{config.server.port}",
        database=str(config.storage.path),
        durability=config.storage.durability,
        sources=[s.name for s in config.sources],
        destinations=[
            f"{d.name} ({d.type}{', dry_run' if d.dry_run else ''})" for d in config.destinations
        ],
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("relay_stopping")
    await runner.cleanup()
    log.info("relay_stopped")
