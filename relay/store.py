"""The SQLite outbox: every runtime SQL statement of relay lives here.

One writer connection serializes whole write transactions (group-committed inserts from ingest,
claims and outcome records from workers); a separate reader connection serves status queries,
which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson
import structlog

from relay.clock import Clock
from relay.migrations import migrate
from relay.normalize import NormalizedEvent

log = structlog.get_logger("relay.store")
T = TypeVar("T")

_INT64_MAX = 2**63 - 1
# SQLite allows 32766 bound parameters per statement; 9 per event row.
_INSERT_CHUNK = 1000

_EVENT_COLUMNS = (
    "dedup_key, event_name, event_id, source, received_at_ms, event_time_ms, time_rule,"
    " fingerprint, payload"
)
_DELIVERY_COLUMNS = (
    "event_rowid, destination, next_attempt_at_ms, deadline_ms, created_at_ms, updated_at_ms"
)

SQL_FIND_BY_KEYS = (
    "SELECT json_group_array(json_array(dedup_key, id, event_name, event_id, fingerprint))"
    " FROM events WHERE dedup_key IN ({})"
)
SQL_INSERT_ONE_EVENT = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dedup_key) DO NOTHING RETURNING id"
)
SQL_FIND_BY_KEY = "SELECT event_name, event_id, fingerprint FROM events WHERE dedup_key = ?"
# A leased row's next_attempt_at_ms is its lease expiry, so one condition finds both due rows
# and rows whose worker died holding them.
SQL_CLAIM = """
UPDATE deliveries
   SET state = 'leased', attempts = attempts + 1, lease_token = :token,
       next_attempt_at_ms = :lease_until, updated_at_ms = :now
 WHERE id IN (SELECT id FROM deliveries
               WHERE destination = :destination AND state IN ('pending', 'leased')
                 AND next_attempt_at_ms <= :now
               ORDER BY next_attempt_at_ms LIMIT :limit)
RETURNING id, event_rowid, attempts, deadline_ms
"""
SQL_EVENT_PAYLOADS = "SELECT id, payload FROM events WHERE id IN ({})"
SQL_RECORD = """
UPDATE deliveries
   SET state = :state, next_attempt_at_ms = :next_at, lease_token = NULL,
       last_error = :detail, updated_at_ms = :now
 WHERE id = :id AND lease_token = :token
"""
SQL_INSERT_ATTEMPT = """
INSERT INTO attempts
       (delivery_id, attempt, started_at_ms, duration_ms, http_status, outcome, detail, trace_id)
VALUES (:id, :attempt, :started_at, :duration_ms, :http_status, :outcome, :detail, :trace_id)
"""
SQL_NEXT_DUE = """
SELECT min(next_attempt_at_ms) FROM deliveries
 WHERE destination = ? AND state IN ('pending', 'leased')
"""
SQL_BACKLOG = """
SELECT destination, count(*), min(created_at_ms) FROM deliveries
 WHERE state IN ('pending', 'leased') GROUP BY destination
"""
SQL_PENDING_COUNT = "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'leased')"
SQL_REMEMBER_NAME = "INSERT OR IGNORE INTO event_names (name) VALUES (?)"
SQL_RECALL_IDENTITY = (
    "SELECT user_fields FROM identities WHERE updated_at_ms >= ? AND key_hash IN ({})"
    " ORDER BY updated_at_ms"
)
SQL_REMEMBER_IDENTITY = """
INSERT INTO identities (key_hash, user_fields, updated_at_ms) VALUES (?, ?, ?)
ON CONFLICT (key_hash) DO UPDATE SET user_fields = excluded.user_fields,
                                     updated_at_ms = excluded.updated_at_ms
"""
SQL_FIND_IDENTITY = "SELECT user_fields FROM identities WHERE key_hash = ?"
SQL_FORGET_IDENTITIES = "DELETE FROM identities WHERE updated_at_ms < ?"


class StoreUnavailable(RuntimeError):
    """The store cannot take writes now (disk full, I/O error, shutting down): answer 503."""


@dataclass(frozen=True, slots=True)
class Route:
    """A delivery to create for an accepted event."""

    destination: str
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class InsertResult:
    status: str  # "accepted" | "duplicate"
    conflict: bool = False


ACCEPTED = InsertResult("accepted")
DUPLICATE = InsertResult("duplicate")
CONFLICT = InsertResult("duplicate", conflict=True)


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    attempt: int
    deadline_ms: int
    lease_token: int
    event: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """The outcome of one try of one delivery."""

    delivery_id: int
    lease_token: int
    attempt: int
    state: str  # pending (retry later) | delivered | dead | expired
    next_attempt_at_ms: int
    started_at_ms: int
    duration_ms: int
    http_status: int | None
    outcome: str  # delivered | retry | dead | expired
    detail: str | None
    trace_id: str | None = None


@dataclass
class _PendingInsert:
    events: Sequence[NormalizedEvent]
    routes: Sequence[Sequence[Route]]
    future: asyncio.Future[list[InsertResult]]


def sqlite_pragmas(durability: str) -> list[str]:
    return [
        "PRAGMA journal_mode = WAL",
        # FULL fsyncs the WAL on every commit: the only setting under which an acknowledged
        # event survives power loss. NORMAL survives a process crash only.
        f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}",
        "PRAGMA busy_timeout = 10000",
        "PRAGMA foreign_keys = ON",
        # 64 MiB of page cache keeps the dedup index's inner pages hot at millions of rows.
        "PRAGMA cache_size = -65536",
        # Checkpointing every 1000 pages (the default) was a large share of insert cost; 10000
        # pages (~40 MiB) keeps the WAL bounded while checkpoints run an order less often.
        "PRAGMA wal_autocheckpoint = 10000",
        "PRAGMA temp_store = MEMORY",
    ]


def migrate_file(path: Path) -> int:
    """Create or upgrade the database file; returns the schema version (sync, at startup)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Takes effect only on a new, empty file (before the first table); on a file created
        # without it this is a no-op until a full VACUUM. Retention gives freed pages back to the
        # filesystem with PRAGMA incremental_vacuum.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        return migrate(conn)
    finally:
        conn.close()


class OutboxStore:
    def __init__(
        self, path: Path, clock: Clock, durability: str = "full", commit_max_rows: int = 5000
    ) -> None:
        self.path = path
        self.clock = clock
        self.durability = durability
        self.commit_max_rows = commit_max_rows
        # Every write transaction runs whole, in one hop, on this single thread: a per-statement
        # hop (aiosqlite's model) waits for a busy event loop between statements and left the
        # writer idle most of the time under load. One thread also serializes the transactions.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-writer")
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_PendingInsert | None] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        # event names known to be in event_names, so a new name costs one insert, once
        self._known_names: set[str] = set()
        # deliveries not yet in a final state, kept in memory for backpressure checks per request
        self.pending = 0
        self.last_write_error: str | None = None
        self.commit_observer: Any = None  # callable(rows, seconds), set by metrics
        # Why ingest must refuse new events now (503), e.g. "disk: 200 MiB free, below
        # min_free_disk (256 MiB)"; None while writes are welcome. Set by relay.retention's disk
        # guard, read by every ingest request, so it is a plain attribute.
        self.refusing: str | None = None
        self.disk_free_bytes: int | None = None  # last reading of the disk guard
        # rows deleted by retention since start, by kind (events, deliveries, attempts, ...)
        self.retention_deleted: dict[str, int] = {}

    # ---- lifecycle

    async def open(self) -> None:
        await asyncio.to_thread(migrate_file, self.path)
        await self._run(self._open_writer)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in sqlite_pragmas(self.durability):
            await self._reader.execute(pragma)
        async with self._reader.execute(SQL_PENDING_COUNT) as cur:
            row = await cur.fetchone()
            self.pending = row[0] if row else 0
        self._committer = asyncio.create_task(self._commit_loop(), name="relay-group-commit")

    def _open_writer(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in sqlite_pragmas(self.durability):
            conn.execute(pragma)
        # The first INSERT/UPDATE of a transaction now opens it (BEGIN IMMEDIATE) inside its own
        # call: every execute() is a GIL handoff, and under load each handoff cost up to the
        # switch interval.
        conn.isolation_level = "IMMEDIATE"
        self._writer = conn

    async def close(self) -> None:
        """Flush every queued insert (their requests are still waiting), then close."""
        if self._closing:
            return
        self._closing = True
        if self._committer is not None:
            await self._queue.put(None)
            await self._committer
        if self._writer is not None:
            await self._run(self._writer.close)
        self._executor.shutdown(wait=True)
        if self._reader is not None:
            await self._reader.close()

    @property
    def committer_alive(self) -> bool:
        return self._committer is not None and not self._committer.done()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _write(self, body: Callable[..., T], *args: Any) -> T:
        """Run ``body(conn, *args)`` in one write transaction on the writer thread."""
        return await self._run(self._transaction, body, *args)

    def _transaction(self, body: Callable[..., T], *args: Any) -> T:
        conn = self._writer
        assert conn is not None
        try:
            result = body(conn, *args)
            conn.commit()
        except BaseException:
            # a failed COMMIT may already have rolled back
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
        return result

    # ---- ingest: group commit

    async def insert_events(
        self, events: Sequence[NormalizedEvent], routes: Sequence[Sequence[Route]]
    ) -> list[InsertResult]:
        """Store events (deduplicated) with their deliveries; returns after COMMIT only."""
        if self._closing or not self.committer_alive:
            raise StoreUnavailable("relay is shutting down")
        future: asyncio.Future[list[InsertResult]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_PendingInsert(events, routes, future))
        return await future

    async def _commit_loop(self) -> None:
        # One writer drains whatever queued while the previous commit ran: under load groups grow
        # by themselves, idle there is no added latency.
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            group, rows = [first], len(first.events)
            while rows < self.commit_max_rows and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                group.append(item)
                rows += len(item.events)
            await self._commit_group(group, rows)

    async def _commit_group(self, group: list[_PendingInsert], rows: int) -> None:
        started = asyncio.get_running_loop().time()
        events = [e for item in group for e in item.events]
        routes = [r for item in group for r in item.routes]
        new_names = {e.event_name for e in events} - self._known_names
        try:
            results, new_deliveries = await self._write(
                _insert_events, events, routes, self.clock.now_ms(), new_names
            )
        except Exception as exc:  # any failure answers 503; the loop must outlive it
            self.last_write_error = str(exc)
            log.error("commit_failed", error=str(exc), error_type=type(exc).__name__, rows=rows)
            for item in group:
                if not item.future.done():
                    item.future.set_exception(StoreUnavailable(f"storage write failed: {exc}"))
            return
        self.last_write_error = None
        self._known_names |= new_names
        self.pending += new_deliveries
        position = 0
        for item in group:
            if not item.future.done():
                item.future.set_result(results[position : position + len(item.events)])
            position += len(item.events)
        if self.commit_observer is not None:
            self.commit_observer(rows, asyncio.get_running_loop().time() - started)

    # ---- delivery: claims and outcomes

    async def claim(self, destination: str, limit: int, lease_s: float) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries; the attempt is counted now, at claim time."""
        now_ms = self.clock.now_ms()
        args = {
            "token": random.getrandbits(62),
            "lease_until": now_ms + int(lease_s * 1000),
            "now": now_ms,
            "destination": destination,
            "limit": limit,
        }
        return await self._write(_claim, args)

    async def record(self, records: Sequence[Record]) -> int:
        """Write outcomes and attempt log rows; returns how many deliveries still held their lease
        (a lease that expired and was re-claimed elsewhere is not overwritten)."""
        if not records:
            return 0
        applied, finished = await self._write(_record, records, self.clock.now_ms())
        self.pending -= finished
        return applied

    # ---- identities (Segment identify traits, already hashed)

    async def remember_identity(self, key_hashes: Sequence[bytes], fields: dict[str, str]) -> None:
        """Merge ``fields`` into what is stored under each key (newer values win)."""
        await self._write(_remember_identity, key_hashes, fields, self.clock.now_ms())

    async def recall_identity(self, key_hashes: Sequence[bytes], max_age_s: int) -> dict[str, str]:
        """The stored fields of these keys, merged oldest first; entries past ``max_age_s`` are
        ignored (retention deletes them later)."""
        if not key_hashes:
            return {}
        assert self._reader is not None
        since = self.clock.now_ms() - max_age_s * 1000
        sql = SQL_RECALL_IDENTITY.format(",".join("?" * len(key_hashes)))
        merged: dict[str, str] = {}
        async with self._reader.execute(sql, (since, *key_hashes)) as cur:
            for (blob,) in await cur.fetchall():
                merged.update(orjson.loads(blob))
        return merged

    async def forget_identities(self, max_age_s: int) -> int:
        """Delete identities not updated within ``max_age_s``; returns how many."""
        cutoff = self.clock.now_ms() - max_age_s * 1000
        return await self._write(
            lambda conn: conn.execute(SQL_FORGET_IDENTITIES, (cutoff,)).rowcount
        )

    async def run_maintenance(self, body: Callable[..., T], *args: Any) -> T:
        """Run ``body(conn, *args)`` (a retention step below) in its own transaction on the
        writer thread: group commits queued meanwhile run between two steps."""
        return await self._write(body, *args)

    def database_bytes(self) -> int:
        """Size of the database file plus its WAL."""
        return database_bytes(self.path)

    async def recount_pending(self) -> int:
        """Re-read the backlog count (``relay dead replay`` from another process adds rows)."""
        assert self._reader is not None
        async with self._reader.execute(SQL_PENDING_COUNT) as cur:
            row = await cur.fetchone()
        self.pending = row[0] if row else 0
        return self.pending

    async def check_writable(self) -> None:
        """Raise if a write transaction cannot be opened (readyz)."""
        if not self.committer_alive:
            raise StoreUnavailable("group commit writer is not running")
        await self._write(_probe_write)

    async def execute_write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement in its own write transaction (tests, maintenance)."""
        await self._write(lambda conn: conn.execute(sql, params))

    # ---- reads (reader connection: never waits for the writer)

    async def next_due_ms(self, destination: str) -> int | None:
        assert self._reader is not None
        async with self._reader.execute(SQL_NEXT_DUE, (destination,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def backlog(self) -> dict[str, tuple[int, int]]:
        """destination -> (pending or leased count, oldest created_at_ms)."""
        assert self._reader is not None
        async with self._reader.execute(SQL_BACKLOG) as cur:
            return {d: (n, oldest) for d, n, oldest in await cur.fetchall()}

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """Read-only query on the reader connection (status endpoints, tests)."""
        assert self._reader is not None
        async with self._reader.execute(sql, params) as cur:
            return list(await cur.fetchall())


# ---- transaction bodies: run on the writer thread, inside BEGIN IMMEDIATE ... COMMIT


def _event_params(e: NormalizedEvent, key: int) -> tuple[Any, ...]:
    return (
        key, e.event_name, e.event_id, e.payload["source"], e.payload["received_at_ms"],
        e.event_time_ms, e.time_rule, e.fingerprint, orjson.dumps(e.payload),
    )  # fmt: skip


def _insert_events(
    conn: sqlite3.Connection,
    events: Sequence[NormalizedEvent],
    routes: Sequence[Sequence[Route]],
    now_ms: int,
    new_names: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[InsertResult], int]:
    """Insert deduplicated events and their deliveries; (result per event, deliveries created).

    The multi-row INSERT ... ON CONFLICT DO NOTHING is the dedup check (no read-then-write race).
    Nothing here steps through result rows one by one: every step releases and re-takes the GIL,
    and under load each re-take waited for the busy event loop (RETURNING cost 5x the insert).
    """
    results: list[InsertResult] = []
    new_rows: list[tuple[int, Sequence[Route]]] = []
    for start in range(0, len(events), _INSERT_CHUNK):
        chunk = events[start : start + _INSERT_CHUNK]
        cur = conn.execute(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(chunk))
            + " ON CONFLICT (dedup_key) DO NOTHING",
            [p for e in chunk for p in _event_params(e, e.dedup_key)],
        )
        # Rows one INSERT adds get consecutive rowids (each max+1, in VALUES order; skipped
        # conflicts take none), so rowcount and lastrowid say which rows are new.
        inserted = cur.rowcount
        first_new = (cur.lastrowid or 0) - inserted + 1 if inserted > 0 else 0
        if inserted == len(chunk):
            results += [ACCEPTED] * len(chunk)
            new_rows += [(first_new + n, routes[start + n]) for n in range(len(chunk))]
            continue
        stored = _stored_by_key(conn, {e.dedup_key for e in chunk})
        taken: set[int] = set()  # rows of this chunk already credited to an earlier copy
        for i, e in enumerate(chunk, start=start):
            found = stored.get(e.dedup_key)
            if found is not None and found[1:3] == (e.event_name, e.event_id):
                rowid = found[0]
                if inserted > 0 and rowid >= first_new and rowid not in taken:
                    taken.add(rowid)
                    results.append(ACCEPTED)  # the first copy, inserted just now
                    new_rows.append((rowid, routes[i]))
                else:
                    results.append(CONFLICT if found[3] != e.fingerprint else DUPLICATE)
                continue
            result, new_rowid = _insert_probing(conn, e)
            results.append(result)
            if new_rowid is not None:
                new_rows.append((new_rowid, routes[i]))
    if new_names:
        conn.executemany(SQL_REMEMBER_NAME, [(name,) for name in new_names])
    return results, _insert_deliveries(conn, new_rows, now_ms)


def _stored_by_key(
    conn: sqlite3.Connection, keys: set[int]
) -> dict[int, tuple[int, str, str, int]]:
    """dedup_key -> (rowid, event_name, event_id, fingerprint), in one aggregated row per query."""
    found: dict[int, tuple[int, str, str, int]] = {}
    key_list = list(keys)
    for start in range(0, len(key_list), _INSERT_CHUNK):
        part = key_list[start : start + _INSERT_CHUNK]
        sql = SQL_FIND_BY_KEYS.format(",".join("?" * len(part)))
        for key, rowid, name, event_id, fp in orjson.loads(conn.execute(sql, part).fetchone()[0]):
            found[key] = (rowid, name, event_id, fp)
    return found


def _insert_probing(
    conn: sqlite3.Connection, e: NormalizedEvent
) -> tuple[InsertResult, int | None]:
    """Open addressing for a 64-bit hash collision (about 1 in 10^5 over 10^7 stored events):
    the event takes the next free key, and a later copy walks the same chain to find it.
    Retention may cut a chain, at worst storing one extra copy of an event it already saw."""
    key = e.dedup_key
    while True:
        key = key + 1 if key < _INT64_MAX else -(2**63)
        row = conn.execute(SQL_FIND_BY_KEY, (key,)).fetchone()
        if row is None:
            inserted = conn.execute(SQL_INSERT_ONE_EVENT, _event_params(e, key)).fetchone()
            assert inserted is not None  # single writer: the slot was free a moment ago
            log.info("dedup_key_collision", event_name=e.event_name, probe_key=key)
            return ACCEPTED, inserted[0]
        if (row[0], row[1]) == (e.event_name, e.event_id):
            return CONFLICT if row[2] != e.fingerprint else DUPLICATE, None


def _insert_deliveries(
    conn: sqlite3.Connection, new_rows: list[tuple[int, Sequence[Route]]], now_ms: int
) -> int:
    rows = [
        (rowid, route.destination, now_ms, route.deadline_ms, now_ms, now_ms)
        for rowid, routes in new_rows
        for route in routes
    ]
    for start in range(0, len(rows), _INSERT_CHUNK):
        part = rows[start : start + _INSERT_CHUNK]
        sql = f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES " + ",".join(
            ["(?,?,?,?,?,?)"] * len(part)
        )
        conn.execute(sql, [p for row in part for p in row])
    return len(rows)


def _claim(conn: sqlite3.Connection, args: dict[str, Any]) -> list[Claimed]:
    rows = conn.execute(SQL_CLAIM, args).fetchall()
    if not rows:
        return []
    payloads: dict[int, bytes] = {}
    event_rowids = list({r[1] for r in rows})
    for start in range(0, len(event_rowids), 500):
        part = event_rowids[start : start + 500]
        sql = SQL_EVENT_PAYLOADS.format(",".join("?" * len(part)))
        payloads.update(conn.execute(sql, part).fetchall())
    return [
        Claimed(r[0], r[2], r[3], args["token"], orjson.loads(payloads[r[1]]))
        for r in sorted(rows, key=lambda r: r[0])
    ]


def _record(conn: sqlite3.Connection, records: Sequence[Record], now_ms: int) -> tuple[int, int]:
    """(rows whose lease still held, of which reached a final state)."""
    applied = finished = 0
    for r in records:
        changed = conn.execute(
            SQL_RECORD,
            {
                "state": r.state,
                "next_at": r.next_attempt_at_ms,
                # a delivered row carries no error; a note (dry_run) stays in its attempt row
                "detail": None if r.state == "delivered" else r.detail,
                "now": now_ms,
                "id": r.delivery_id,
                "token": r.lease_token,
            },
        ).rowcount
        applied += changed
        if changed and r.state != "pending":
            finished += 1
    conn.executemany(
        SQL_INSERT_ATTEMPT,
        [
            {
                "id": r.delivery_id,
                "attempt": r.attempt,
                "started_at": r.started_at_ms,
                "duration_ms": r.duration_ms,
                "http_status": r.http_status,
                "outcome": r.outcome,
                "detail": r.detail,
                "trace_id": r.trace_id,
            }
            for r in records
        ],
    )
    return applied, finished


def _probe_write(conn: sqlite3.Connection) -> None:
    """Take the write lock and give it back: proves a write transaction can start."""
    conn.execute("BEGIN IMMEDIATE")


def _remember_identity(
    conn: sqlite3.Connection, key_hashes: Sequence[bytes], fields: dict[str, str], now_ms: int
) -> None:
    for key in key_hashes:
        row = conn.execute(SQL_FIND_IDENTITY, (key,)).fetchone()
        merged = {**orjson.loads(row[0]), **fields} if row else fields
        conn.execute(SQL_REMEMBER_IDENTITY, (key, orjson.dumps(merged), now_ms))


def database_bytes(path: Path) -> int:
    return file_bytes(str(path)) + file_bytes(f"{path}-wal")


def file_bytes(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
