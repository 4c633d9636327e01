"""A relay database with N events already stored, their deliveries all 'delivered'.

Built with the real migrations, the real ``dedup_key`` of random UUIDv4 ids and the canonical
payload relay stores for the benchmark's event (bench.events), as fast as SQLite allows: no
journal, no fsync, one big page cache, ``executemany`` in transactions of a million rows.

Ids are inserted in random order, as clients send them, so the dedup index's pages end up as
full as in a database that grew in production (a sorted or rebuilt index would be packed, and
then split on nearly every new key). The cache holds the whole index, so order costs little.

``python -m bench.prefill --rows 10000000`` builds ``bench/results/prefilled-10000000.db``;
``bench.run --prefilled N`` does the same on demand and reuses the file when present.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.events import EVENT_NAME, ID_MARKER, canonical_sample
from bench.servers import DESTINATION, RELAY_KEY, SOURCE_NAME
from relay.config import SourceConfig
from relay.migrations import migrate
from relay.normalize import dedup_key

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK_ROWS = 100_000
COMMIT_EVERY_ROWS = 1_000_000
SPAN_MS = 6 * 86_400_000  # received_at spread over the last six days, oldest first
DEADLINE_MS = 7 * 86_400_000

SQL_EVENT = (
    "INSERT INTO events (id, dedup_key, event_name, event_id, source, received_at_ms,"
    " event_time_ms, time_rule, fingerprint, payload) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
SQL_DELIVERY = (
    "INSERT INTO deliveries (event_rowid, destination, state, attempts, next_attempt_at_ms,"
    " deadline_ms, created_at_ms, updated_at_ms) VALUES (?,?,'delivered',1,?,?,?,?)"
)

SOURCE = SourceConfig(
    name=SOURCE_NAME, key=RELAY_KEY, kind="server", time="client", max_age_s=7 * 86400
)


def fast_connect(path: Path, cache_mib: int = 2048) -> sqlite3.Connection:
    """A connection for bulk loading: no rollback journal, no fsync, a big page cache."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "PRAGMA journal_mode = OFF",
        "PRAGMA synchronous = OFF",
        f"PRAGMA cache_size = -{cache_mib * 1024}",
        "PRAGMA temp_store = MEMORY",
        "PRAGMA locking_mode = EXCLUSIVE",
    ):
        conn.execute(pragma)
    return conn


def prefilled_path(rows: int) -> Path:
    return RESULTS / f"prefilled-{rows}.db"


def ensure_prefilled(rows: int, log: Callable[[str], None] = print) -> Path:
    """The cached prefilled database, built first if missing (atomically: a crash leaves none)."""
    path = prefilled_path(rows)
    if path.exists():
        log(f"prefill: reusing {path} ({path.stat().st_size / 2**30:.1f} GiB)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    build(partial, rows, log)
    os.replace(partial, path)
    return path


def build(path: Path, rows: int, log: Callable[[str], None] = print) -> None:
    started = time.monotonic()
    conn = fast_connect(path)
    try:
        migrate(conn)
        done = 0
        conn.execute("BEGIN")
        for events, deliveries in _chunks(rows, int(time.time() * 1000)):
            conn.executemany(SQL_EVENT, events)
            conn.executemany(SQL_DELIVERY, deliveries)
            done += len(events)
            if done % COMMIT_EVERY_ROWS == 0 or done == rows:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
                elapsed = time.monotonic() - started
                rate = done / elapsed
                log(
                    f"prefill: {done:,} / {rows:,} events ({rate / 1000:.0f} K rows/s,"
                    f" ETA {(rows - done) / rate:.0f} s)"
                )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")  # what relay uses; leaves no -wal once closed
    finally:
        conn.close()
    size = path.stat().st_size / 2**30
    log(f"prefill: {rows:,} events in {time.monotonic() - started:.0f} s, {size:.1f} GiB")


Rows = list[tuple[object, ...]]


def _chunks(rows: int, now_ms: int) -> Iterator[tuple[Rows, Rows]]:
    """Event and delivery rows, CHUNK_ROWS at a time, received_at rising towards now."""
    start_ms = now_ms - SPAN_MS
    step_ms = SPAN_MS / max(rows, 1)
    marker = ID_MARKER.encode()
    for base in range(0, rows, CHUNK_ROWS):
        count = min(CHUNK_ROWS, rows - base)
        template, fp = canonical_sample(SOURCE, start_ms + int(base * step_ms))
        events: Rows = []
        deliveries: Rows = []
        for i in range(base, base + count):
            event_id = str(uuid.uuid4())
            at_ms = start_ms + int(i * step_ms)
            payload = template.replace(marker, event_id.encode())
            key = dedup_key(EVENT_NAME, event_id)
            events.append(
                (i + 1, key, EVENT_NAME, event_id, SOURCE_NAME, at_ms, at_ms, "client", fp, payload)
            )
            deliveries.append(
                (i + 1, DESTINATION, at_ms + 200, at_ms + DEADLINE_MS, at_ms, at_ms + 200)
            )
        yield events, deliveries


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the prefilled relay database.")
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    ensure_prefilled(args.rows)


if __name__ == "__main__":
    main()
