"""``python -m bench.dedup_index --rows N``: what the dedup key's storage costs SQLite inserts.

Two ways to enforce "one event, stored once" (design.md invariant 2) on a table shaped like
relay's ``events`` (same columns, the received_at index, the canonical ~1.3 KB payload):

- ``hash64``: the current design, ``dedup_key INTEGER`` (64-bit blake2b of the key) UNIQUE;
- ``text``: a UNIQUE index on ``(event_name, event_id)``, the ids random UUIDv4 strings.

For each: rows/s inserting ``--measure`` rows in 1000-row transactions (one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` each, as relay's group commit does) with
relay's pragmas (``relay.store.sqlite_pragmas("full")``: WAL, synchronous FULL), on an empty
table and on one already holding ``--rows`` rows; and the unique index's size at ``--rows``.
Row values are built before the clock starts: the figures are SQLite's cost alone.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.events import EVENT_NAME, ID_MARKER, canonical_sample
from bench.prefill import RESULTS, SOURCE, fast_connect
from relay.normalize import dedup_key
from relay.store import sqlite_pragmas

BATCH_ROWS = 1000
FILL_CHUNK = 100_000

_COLUMNS = (
    "event_name TEXT NOT NULL, event_id TEXT NOT NULL, source TEXT NOT NULL,"
    " received_at_ms INTEGER NOT NULL, event_time_ms INTEGER NOT NULL,"
    " time_rule TEXT NOT NULL, fingerprint INTEGER NOT NULL, payload BLOB NOT NULL"
)
_VALUE_NAMES = (
    "event_name, event_id, source, received_at_ms, event_time_ms, time_rule, fingerprint, payload"
)


@dataclass(frozen=True)
class Variant:
    name: str
    schema: tuple[str, ...]
    unique_index: str
    insert_columns: str
    conflict_target: str
    # event_id -> the leading values of a row (before the shared columns)
    key_values: Callable[[str], tuple[object, ...]]

    def insert_sql(self, rows: int) -> str:
        width = self.insert_columns.count(",") + 1
        values = ",".join(["(" + ",".join("?" * width) + ")"] * rows)
        return (
            f"INSERT INTO events ({self.insert_columns}) VALUES {values}"
            f" ON CONFLICT ({self.conflict_target}) DO NOTHING RETURNING id"
        )


HASH64 = Variant(
    name="hash64",
    schema=(
        f"CREATE TABLE events (id INTEGER PRIMARY KEY, dedup_key INTEGER NOT NULL, {_COLUMNS})",
        "CREATE UNIQUE INDEX events_dedup ON events (dedup_key)",
        "CREATE INDEX events_received_at ON events (received_at_ms)",
    ),
    unique_index="events_dedup",
    insert_columns=f"dedup_key, {_VALUE_NAMES}",
    conflict_target="dedup_key",
    key_values=lambda event_id: (dedup_key(EVENT_NAME, event_id),),
)
TEXT = Variant(
    name="text",
    schema=(
        f"CREATE TABLE events (id INTEGER PRIMARY KEY, {_COLUMNS})",
        "CREATE UNIQUE INDEX events_dedup ON events (event_name, event_id)",
        "CREATE INDEX events_received_at ON events (received_at_ms)",
    ),
    unique_index="events_dedup",
    insert_columns=_VALUE_NAMES,
    conflict_target="event_name, event_id",
    key_values=lambda event_id: (),
)
VARIANTS = (HASH64, TEXT)


@dataclass
class Inserts:
    rows_per_s: float
    txn_p50_ms: float
    txn_p99_ms: float


@dataclass
class Result:
    variant: str
    stored_rows: int
    empty: Inserts
    prefilled: Inserts
    index_bytes: int
    index_bytes_per_row: float
    file_bytes: int


def make_rows(variant: Variant, count: int, start_ms: int) -> Iterator[tuple[object, ...]]:
    """Rows with fresh random UUIDv4 ids, received_at rising by 1 ms from ``start_ms``."""
    template, fp = canonical_sample(SOURCE, start_ms)
    marker = ID_MARKER.encode()
    for i in range(count):
        event_id = str(uuid.uuid4())
        payload = template.replace(marker, event_id.encode())
        at_ms = start_ms + i
        yield (
            *variant.key_values(event_id),
            EVENT_NAME, event_id, SOURCE.name, at_ms, at_ms, "client", fp, payload,
        )  # fmt: skip


def create(path: Path, variant: Variant, fill_rows: int, log: Callable[[str], None]) -> None:
    """A database with the variant's schema and ``fill_rows`` rows, loaded as fast as possible
    in random key order (so index pages are as full as after growing in production)."""
    conn = fast_connect(path)
    try:
        for statement in variant.schema:
            conn.execute(statement)
        sql = f"INSERT INTO events ({variant.insert_columns}) VALUES ({_placeholders(variant)})"
        started, done = time.monotonic(), 0
        # received_at ends before now, so the rows measured later append to its index
        rows = make_rows(variant, fill_rows, int(time.time() * 1000) - fill_rows - 1)
        conn.execute("BEGIN")
        while done < fill_rows:
            chunk = [next(rows) for _ in range(min(FILL_CHUNK, fill_rows - done))]
            conn.executemany(sql, chunk)
            done += len(chunk)
            if done % 1_000_000 == 0 or done == fill_rows:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
                rate = done / (time.monotonic() - started)
                log(f"  {variant.name}: filled {done:,} rows ({rate / 1000:.0f} K rows/s)")
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def _placeholders(variant: Variant) -> str:
    return ",".join("?" * (variant.insert_columns.count(",") + 1))


def measure_inserts(path: Path, variant: Variant, rows: int, warmup_rows: int) -> Inserts:
    """Insert rows in BATCH_ROWS-row transactions with relay's pragmas; warmup not timed."""
    batches = _batches(variant, warmup_rows + rows)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in sqlite_pragmas("full"):
            conn.execute(pragma)
        sql = variant.insert_sql(BATCH_ROWS)
        times: list[float] = []
        for i, params in enumerate(batches):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            inserted = conn.execute(sql, params).fetchall()
            conn.execute("COMMIT")
            if i * BATCH_ROWS >= warmup_rows:
                times.append(time.perf_counter() - t0)
            if len(inserted) != BATCH_ROWS:
                raise RuntimeError(f"{variant.name}: a uuid4 collided? {len(inserted)} inserted")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    times.sort()
    return Inserts(
        rows_per_s=len(times) * BATCH_ROWS / sum(times),
        txn_p50_ms=1000 * statistics.median(times),
        txn_p99_ms=1000 * times[min(len(times) - 1, int(len(times) * 0.99))],
    )


def _batches(variant: Variant, rows: int) -> list[list[object]]:
    source = make_rows(variant, rows - rows % BATCH_ROWS, int(time.time() * 1000))
    out: list[list[object]] = []
    for _ in range(rows // BATCH_ROWS):
        params: list[object] = []
        for _ in range(BATCH_ROWS):
            params += next(source)
        out.append(params)
    return out


def index_bytes(path: Path, index: str) -> int:
    """The index's size: dbstat if SQLite has it, else the pages dropping it would free."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        try:
            row = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (index,))
            return int(row.fetchone()[0])
        except sqlite3.OperationalError:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute("BEGIN")
            before = conn.execute("PRAGMA freelist_count").fetchone()[0]
            conn.execute(f"DROP INDEX {index}")
            after = conn.execute("PRAGMA freelist_count").fetchone()[0]
            conn.execute("ROLLBACK")
            return int((after - before) * page_size)
    finally:
        conn.close()


def run_variant(
    variant: Variant, stored_rows: int, measure_rows: int, warmup_rows: int, work: Path
) -> Result:
    log = _progress
    empty_path = work / f"{variant.name}-empty.db"
    create(empty_path, variant, 0, log)
    log(f"  {variant.name}: inserting {measure_rows:,} rows into an empty table")
    empty = measure_inserts(empty_path, variant, measure_rows, warmup_rows)
    _remove(empty_path)

    path = work / f"{variant.name}-{stored_rows}.db"
    create(path, variant, stored_rows, log)
    size = index_bytes(path, variant.unique_index)
    log(f"  {variant.name}: inserting {measure_rows:,} rows after {stored_rows:,} stored")
    prefilled = measure_inserts(path, variant, measure_rows, warmup_rows)
    file_bytes = path.stat().st_size
    _remove(path)
    return Result(
        variant=variant.name,
        stored_rows=stored_rows,
        empty=empty,
        prefilled=prefilled,
        index_bytes=size,
        index_bytes_per_row=size / max(stored_rows, 1),
        file_bytes=file_bytes,
    )


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def print_table(results: list[Result]) -> None:
    n = results[0].stored_rows
    header = (
        f"{'variant':<8} {'empty rows/s':>12} {f'at {n:,} rows/s':>20} {'ratio':>6} "
        f"{'txn p99 ms':>10} {'index MiB':>9} {'B/row':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.variant:<8} {r.empty.rows_per_s:>12,.0f} {r.prefilled.rows_per_s:>20,.0f} "
            f"{r.prefilled.rows_per_s / r.empty.rows_per_s:>6.2f} "
            f"{r.prefilled.txn_p99_ms:>10.1f} {r.index_bytes / 2**20:>9.1f} "
            f"{r.index_bytes_per_row:>6.1f}"
        )
    print("ratio: rows/s with the rows stored over rows/s on the empty table")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.dedup_index", description=__doc__)
    p.add_argument("--rows", type=int, default=2_000_000, help="rows stored before measuring")
    p.add_argument("--measure", type=int, default=200_000, help="rows inserted and timed")
    p.add_argument("--warmup", type=int, default=20_000, help="rows inserted before timing")
    p.add_argument("--dir", type=Path, default=None, help="scratch directory (default: temp)")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    output = args.output or RESULTS / f"dedup_index-{args.rows}.json"
    with tempfile.TemporaryDirectory(prefix="relay-dedup-", dir=args.dir) as tmp:
        results = [
            run_variant(v, args.rows, args.measure, args.warmup, Path(tmp)) for v in VARIANTS
        ]
    print()
    print_table(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
