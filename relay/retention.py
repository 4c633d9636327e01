"""Retention and size: what is old enough to go, deleted in small batches; the disk guard.

What is kept, and for how long ([storage] in relay.toml):
- an event is its own dedup key, so no event is deleted before ``dedup_window`` has passed since
  it was received, and never while one of its deliveries is pending or leased;
- delivered deliveries go once ``dedup_window`` has passed (with their event when nothing else
  holds it);
- dead and expired deliveries stay ``dead_retention`` for inspection and replay, and hold their
  event that long;
- attempt rows (the delivery log) go after ``log_retention``, or with their delivery if sooner;
- identify traits go after ``identity_retention``.

Every batch is one short transaction (``BATCH_ROWS`` rows) on the store's writer thread, so
group commits queued by ingest run between two batches instead of waiting for the whole round.
The same plan runs on a plain sqlite3 connection for ``relay purge`` (``purge``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from relay import retention_steps as rs
from relay.clock import Clock
from relay.config import StorageConfig
from relay.store import OutboxStore

log = structlog.get_logger("relay.retention")

# The kinds of rows retention deletes (the `kind` label of relay_retention_deleted_total).
DELETED_KINDS = ("events", "deliveries", "attempts", "identities")
# Rows per transaction (a batch of events also takes their deliveries and attempts with it).
# Measured with fsync per commit: ~8 ms per batch at 2000, ~20 ms at 5000, for the same total
# time; a commit of ingest waits for at most one batch.
BATCH_ROWS = 2000
# 4 MiB of 4 KiB pages per incremental_vacuum step: moving them takes about as long as one
# delete batch (tens of ms), the write lock's hold time.
VACUUM_STEP_PAGES = 1024
# wal_autocheckpoint (10000 pages, ~40 MiB) bounds the WAL in normal operation; past this it
# grew (a long reader, a large round) and is truncated, waiting at most this long for readers.
WAL_TRUNCATE_ABOVE_BYTES = 64 * 1024 * 1024
WAL_TRUNCATE_WAIT_MS = 250
DISK_CHECK_INTERVAL_S = 5.0
_MIB = 1024 * 1024

Progress = Callable[[dict[str, int]], None]


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than these epoch-millisecond instants may be deleted."""

    events_before_ms: int  # received before: past the dedup window (also delivered deliveries)
    dead_before_ms: int  # dead or expired deliveries last updated before
    attempts_before_ms: int  # attempts started before
    identities_before_ms: int  # identities updated before


def cutoffs(storage: StorageConfig, now_ms: int) -> Cutoffs:
    return Cutoffs(
        events_before_ms=now_ms - storage.dedup_window_s * 1000,
        dead_before_ms=now_ms - storage.dead_retention_s * 1000,
        attempts_before_ms=now_ms - storage.log_retention_s * 1000,
        identities_before_ms=now_ms - storage.identity_retention_s * 1000,
    )


@dataclass(frozen=True)
class Step:
    """One transaction: ``body(conn, *args)``, a step function of relay.store."""

    body: Callable[..., Any]
    args: tuple[Any, ...]


def plan(c: Cutoffs, batch_rows: int, totals: dict[str, int]) -> Generator[Step, Any, None]:
    """The steps of one retention round; each step's result is sent back in, and what it deleted
    is added to ``totals``. Runs the same under asyncio (``run_retention``) and the CLI
    (``purge``), which only differ in how they execute a step."""

    def add(counts: dict[str, int]) -> None:
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n

    # The delivery log first: the passes after it then have fewer attempt rows to delete.
    while True:
        counts = yield Step(rs.purge_attempts, (c.attempts_before_ms, batch_rows))
        add(counts)
        if counts["attempts"] < batch_rows:
            break
    # Dead and expired before events: an event is deletable once no such delivery is left.
    for state, before_ms in (
        ("dead", c.dead_before_ms),
        ("expired", c.dead_before_ms),
        ("delivered", c.events_before_ms),
    ):
        destination = yield Step(rs.next_finished_destination, (state, ""))
        while destination is not None:
            while True:
                args = (state, destination, before_ms, batch_rows)
                counts = yield Step(rs.purge_deliveries, args)
                add(counts)
                if counts["deliveries"] < batch_rows:
                    break
            destination = yield Step(rs.next_finished_destination, (state, destination))
    cursor: tuple[int, int] | None = (-(2**63), -(2**63))
    while cursor is not None:
        counts, cursor = yield Step(rs.purge_events, (c.events_before_ms, cursor, batch_rows))
        add(counts)
    while True:
        counts = yield Step(rs.purge_identities, (c.identities_before_ms, batch_rows))
        add(counts)
        if counts["identities"] < batch_rows:
            break
    # Deleted rows leave free pages inside the file; give them back to the filesystem.
    while True:
        freed = yield Step(rs.incremental_vacuum, (VACUUM_STEP_PAGES,))
        add({"vacuumed_pages": freed})
        if freed < VACUUM_STEP_PAGES:
            break
    # A vacuum shrinks the file only once its pages are checkpointed out of the WAL.
    wal_bytes = yield Step(rs.checkpoint, (WAL_TRUNCATE_ABOVE_BYTES, WAL_TRUNCATE_WAIT_MS))
    totals["wal_bytes"] = wal_bytes


def _new_totals() -> dict[str, int]:
    return {kind: 0 for kind in (*DELETED_KINDS, "vacuumed_pages", "wal_bytes")}


async def run_retention(
    store: OutboxStore, storage: StorageConfig, clock: Clock, batch_rows: int = BATCH_ROWS
) -> dict[str, int]:
    """One retention round in the daemon; returns rows deleted by kind, ``vacuumed_pages`` and
    ``wal_bytes`` (the WAL file's size afterwards)."""
    totals = _new_totals()
    steps = plan(cutoffs(storage, clock.now_ms()), batch_rows, totals)
    result: Any = None
    try:
        while True:
            try:
                step = steps.send(result)
            except StopIteration:
                break
            result = await store.run_maintenance(step.body, *step.args)
            await asyncio.sleep(0)
    finally:
        for kind in DELETED_KINDS:
            store.retention_deleted[kind] = store.retention_deleted.get(kind, 0) + totals[kind]
    return totals


def purge(
    conn: sqlite3.Connection,
    storage: StorageConfig,
    now_ms: int,
    progress: Progress | None = None,
    batch_rows: int = BATCH_ROWS,
) -> dict[str, int]:
    """One retention round on a plain connection (``relay purge``), safe beside the running
    daemon: each batch is its own BEGIN IMMEDIATE transaction, so the daemon's writer waits at
    most one batch (give ``conn`` a busy_timeout, as ``relay.store.sqlite_pragmas`` does).
    ``progress`` gets the running totals after every batch."""
    totals = _new_totals()
    steps = plan(cutoffs(storage, now_ms), batch_rows, totals)
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration:
            return totals
        result = rs.run_transaction(conn, step.body, *step.args)
        if progress is not None:
            progress(dict(totals))


# ---- disk guard


class FsStats(Protocol):
    """What the guard reads of ``os.statvfs``'s result (tests pass their own)."""

    @property
    def f_bavail(self) -> int: ...

    @property
    def f_frsize(self) -> int: ...


StatVfs = Callable[[str], FsStats]


class DiskGuard:
    """Refuses ingest (``store.refusing``) while the database's filesystem has less free space
    than ``min_free_bytes``, so the disk never fills under the outbox: a full disk would fail
    every commit, the worker's outcome records included. Logs once per transition."""

    def __init__(
        self, store: OutboxStore, min_free_bytes: int, statvfs: StatVfs = os.statvfs
    ) -> None:
        self.store = store
        self.min_free_bytes = min_free_bytes
        self.statvfs = statvfs
        self.directory = os.path.abspath(store.path.parent)
        self.low = False
        self._check_failed = False

    def check(self) -> str | None:
        """Read the free space now; returns the refusal reason, or None."""
        try:
            # statvfs is one quick syscall on a local filesystem: no thread hop needed.
            stats = self.statvfs(self.directory)
        except OSError as exc:
            if not self._check_failed:
                log.warning("disk_check_failed", path=self.directory, error=str(exc))
                self._check_failed = True
            return self.store.refusing
        self._check_failed = False
        free = stats.f_bavail * stats.f_frsize
        self.store.disk_free_bytes = free
        if self.min_free_bytes > 0 and free < self.min_free_bytes:
            reason = (
                f"disk: {free // _MIB} MiB free, below min_free_disk "
                f"({self.min_free_bytes // _MIB} MiB)"
            )
            if not self.low:
                log.error(
                    "disk_low",
                    path=self.directory,
                    free_mib=free // _MIB,
                    min_free_disk_mib=self.min_free_bytes // _MIB,
                    message="ingest answers 503 until free space is above min_free_disk; "
                    "free space on this filesystem or lower dead_retention/log_retention",
                )
                self.low = True
            self.store.refusing = reason
        elif self.low:
            log.info(
                "disk_recovered",
                path=self.directory,
                free_mib=free // _MIB,
                min_free_disk_mib=self.min_free_bytes // _MIB,
                message="ingest accepts events again",
            )
            self.low = False
            self.store.refusing = None
        return self.store.refusing

    async def run(self, clock: Clock, interval_s: float = DISK_CHECK_INTERVAL_S) -> None:
        while True:
            self.check()
            await clock.sleep(interval_s)
