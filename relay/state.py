"""What the running app holds, under one typed AppKey (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay.clock import Clock
from relay.config import Config, SourceConfig
from relay.destinations.base import Destination
from relay.metrics import Metrics
from relay.normalize import NormalizedEvent, consent_allows
from relay.store import OutboxStore, Route
from relay.worker import DeliveryWorker


@dataclass
class AppState:
    config: Config
    clock: Clock
    store: OutboxStore
    metrics: Metrics
    destinations: list[Destination]
    sources_by_key: dict[bytes, SourceConfig]
    workers: dict[str, DeliveryWorker] = field(default_factory=dict)
    # False when a test or a one-shot command drives the workers by hand
    workers_started: bool = True
    # set when the delivery context starts; a config reload builds new workers with them
    session: Any = None
    recorder: Any = None

    def route(self, event: NormalizedEvent) -> list[Route]:
        """The deliveries an accepted event gets: each destination's events filter and consent."""
        routes = []
        for dest in self.destinations:
            cfg = dest.config
            if cfg.events is not None and event.event_name not in cfg.events:
                continue
            if cfg.consent and not consent_allows(event.payload, cfg.consent):
                continue
            routes.append(Route(dest.name, dest.deadline_ms(event.payload)))
        return routes


STATE = web.AppKey("state", AppState)
