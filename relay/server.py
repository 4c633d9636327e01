"""``relay serve``: uvloop, the app on a TCP listener, ordered shutdown on SIGTERM/SIGINT.

Under systemd (``Type=notify``) it reports ``READY=1`` once the database is migrated and open and
the listener accepts, ``STOPPING=1`` when a stop signal arrives, and pings the watchdog from the
event loop in between (relay/systemd.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys

import structlog
import uvloop
from aiohttp import web

from relay.app import create_app
from relay.config import Config
from relay.reload import reload_config
from relay.systemd import Notifier, start_watchdog

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
    notifier = Notifier.from_environ()
    app = create_app(config)
    # shutdown_timeout: how long in-flight ingest requests get to finish after the listener
    # closes; their commits are flushed before the store closes.
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=config.server.shutdown_grace_s
    )
    # setup() runs the cleanup_ctx startups: the store applies pending migrations and opens.
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
    listen = ", ".join(_format_address(a) for a in runner.addresses)
    log.info(
        "relay_started",
        listen=listen,
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
    reloading = asyncio.Lock()  # one reload at a time; a second SIGHUP waits its turn

    async def reload() -> None:
        async with reloading:
            notifier.notify(RELOADING=1, STATUS="reloading the configuration")
            await reload_config(app, config.path)
            notifier.notify(READY=1, STATUS=f"listening on {listen}")

    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = asyncio.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    # Only now: systemd starts units ordered After=relay.service and counts the start as done
    # when READY arrives, so it must mean "accepting and able to commit".
    notifier.notify(READY=1, STATUS=f"listening on {listen}")
    watchdog = start_watchdog(notifier)
    await stop.wait()
    notifier.notify(STOPPING=1, STATUS="draining: in-flight requests and deliveries")
    log.info("relay_stopping")
    await runner.cleanup()
    # The watchdog pings on through the drain, so a drain slower than WatchdogSec is not
    # mistaken for a hung loop.
    if watchdog is not None:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    notifier.close()
    log.info("relay_stopped")


def _format_address(address: object) -> str:
    """A listening socket's address as host:port ([v6]:port); other kinds as given."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
