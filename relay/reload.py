"""SIGHUP: re-read relay.toml and apply it without dropping a request.

Sources, destinations and request-time limits apply at once: keys and routes are swapped in one
step of the event loop, a destination whose settings changed gets a new worker (the old one
finishes or records its in-flight batch first), a removed one stops, a new one starts. What is
bound at start (the listener, the database, the body limit) keeps its old value and the log
says a restart is needed. A file that does not load is logged and ignored: the running
configuration stays.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import structlog
from aiohttp import web

from relay import ingest
from relay.app import add_worker, build_destination
from relay.config import Config, ConfigError, load_config
from relay.logs import configure_logging
from relay.state import STATE

log = structlog.get_logger("relay.reload")


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """Keys whose new value takes effect only after a restart."""
    changed = []
    if (old.server.host, old.server.port) != (new.server.host, new.server.port):
        changed.append("server.listen")
    if old.server.max_body_bytes != new.server.max_body_bytes:
        changed.append("server.max_body_bytes")
    if old.storage != new.storage:
        changed.append("storage")
    return changed


def effective(old: Config, new: Config) -> Config:
    """The new configuration with the start-bound values it cannot change while running."""
    server = replace(
        new.server,
        host=old.server.host,
        port=old.server.port,
        max_body_bytes=old.server.max_body_bytes,
    )
    return replace(new, server=server, storage=old.storage)


async def reload_config(app: web.Application, path: Path) -> bool:
    state = app[STATE]
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc), action="kept the running configuration")
        return False
    old = state.config
    pending_restart = restart_only_changes(old, new)
    config = effective(old, new)

    old_by_name = {d.name: d for d in state.destinations}
    keep, start, stop = [], [], []
    for dest_config in config.destinations:
        current = old_by_name.get(dest_config.name)
        if current is not None and current.config == dest_config:
            keep.append(current)
        else:
            start.append(build_destination(dest_config))
            if current is not None:
                stop.append(current.name)
    new_names = {d.name for d in config.destinations}
    stop += [name for name in old_by_name if name not in new_names]

    # One synchronous step: requests see either the old or the new keys and routes, never a mix.
    state.config = config
    state.sources_by_key = {ingest.key_digest(s.key): s for s in config.sources}
    state.destinations = keep + start
    stopping = [state.workers.pop(name) for name in stop if name in state.workers]
    configure_logging(config.logging.level, config.logging.format)

    await asyncio.gather(*(w.stop(config.server.shutdown_grace_s) for w in stopping))
    for dest in start:
        add_worker(state, dest)
    log.info(
        "config_reloaded",
        sources=[s.name for s in config.sources],
        destinations_started=[d.name for d in start],
        destinations_stopped=stop,
        needs_restart=pending_restart,
    )
    if pending_restart:
        log.warning("config_reload_needs_restart", keys=pending_restart)
    return True
