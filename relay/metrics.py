"""Prometheus metrics, one registry per app (tests run several apps in one process)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from relay.retention import DELETED_KINDS
from relay.store import OutboxStore

# The *_created series double the exposition size and no dashboard uses them.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self._requests: dict[int, Any] = {}
        self._events: dict[tuple[str, str], Any] = {}
        self._retention_seen: dict[str, int] = {}
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.ingest_requests = Counter(
            "relay_ingest_requests", "Ingest HTTP requests by status code", ["code"], registry=r
        )
        self.ingest_events = Counter(
            "relay_ingest_events",
            "Ingested events by source and result (accepted, duplicate, rejected)",
            ["source", "status"],
            registry=r,
        )
        self.ingest_conflicts = Counter(
            "relay_ingest_conflicts",
            "Duplicates whose value or currency differ from the stored copy",
            ["source"],
            registry=r,
        )
        self.event_id_aliases = Counter(
            "relay_ingest_event_id_alias",
            "Events whose id came in an alias spelling (eventID, eventId)",
            ["source", "alias"],
            registry=r,
        )
        self.commit_rows = Histogram(
            "relay_commit_batch_rows",
            "Events per group-commit transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "relay_commit_seconds",
            "Group-commit transaction latency",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.queue_depth = Gauge(
            "relay_queue_depth", "Deliveries pending or in flight", ["destination"], registry=r
        )
        self.oldest_pending_age = Gauge(
            "relay_oldest_pending_age_seconds",
            "Age of the oldest undelivered delivery",
            ["destination"],
            registry=r,
        )
        self.deliveries = Counter(
            "relay_deliveries",
            "Delivery tries by outcome (delivered, retry, dead, expired)",
            ["destination", "outcome"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "relay_delivery_request_seconds",
            "Latency of requests to destinations",
            ["destination"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.destination_paused = Gauge(
            "relay_destination_paused",
            "1 while a destination is paused by a setup fault (e.g. a revoked token)",
            ["destination"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "relay_circuit_open",
            "1 while a destination's circuit breaker is open",
            ["destination"],
            registry=r,
        )

        self.database_bytes = Gauge(
            "relay_database_bytes", "Size of the SQLite database file plus its WAL", registry=r
        )
        self.disk_free_bytes = Gauge(
            "relay_disk_free_bytes",
            "Free space on the filesystem holding the database (ingest refuses below "
            "min_free_disk)",
            registry=r,
        )
        self.retention_deleted = Counter(
            "relay_retention_deleted",
            "Rows deleted by retention (events, deliveries, attempts, identities)",
            ["kind"],
            registry=r,
        )

    def count_request(self, code: int) -> None:
        # labels() takes a lock and builds a key each call; the hot path keeps the children
        child = self._requests.get(code)
        if child is None:
            child = self._requests[code] = self.ingest_requests.labels(str(code))
        child.inc()

    def count_event(self, source: str, status: str) -> None:
        child = self._events.get((source, status))
        if child is None:
            child = self._events[source, status] = self.ingest_events.labels(source, status)
        child.inc()

    def observe_commit(self, rows: int, seconds: float) -> None:
        self.commit_rows.observe(rows)
        self.commit_seconds.observe(seconds)

    async def render(self, store: OutboxStore, destinations: list[str], now_ms: int) -> bytes:
        backlog = await store.backlog()
        for name in destinations:
            count, oldest = backlog.get(name, (0, now_ms))
            self.queue_depth.labels(name).set(count)
            self.oldest_pending_age.labels(name).set(max(0, now_ms - oldest) / 1000)
        self._render_storage(store)
        return generate_latest(self.registry)

    def _render_storage(self, store: OutboxStore) -> None:
        self.database_bytes.set(store.database_bytes())
        free = store.disk_free_bytes  # the disk guard's last reading, every few seconds
        if free is None:
            try:
                stats = os.statvfs(store.path.parent)
                free = stats.f_bavail * stats.f_frsize
            except OSError:
                free = None
        if free is not None:
            self.disk_free_bytes.set(free)
        # The store counts what retention deleted since start; the counter follows it.
        for kind in DELETED_KINDS:
            total = store.retention_deleted.get(kind, 0)
            child = self.retention_deleted.labels(kind)
            if total > self._retention_seen.get(kind, 0):
                child.inc(total - self._retention_seen.get(kind, 0))
            self._retention_seen[kind] = total
