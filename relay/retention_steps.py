"""Retention's SQL: the deletes and the vacuum steps, each one transaction, run by
``relay.retention`` on the daemon's writer thread or by ``relay purge`` on its own connection."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import structlog

from relay.store import file_bytes

log = structlog.get_logger("relay.retention")
T = TypeVar("T")

# ---- retention (relay/retention.py drives these in small batches, one transaction each)

# The partial index deliveries_finished (state, destination, updated_at_ms) serves these; a query
# must repeat its WHERE term verbatim for SQLite to use it. Old rows are found one destination at
# a time: with no destination term the index would be walked through every recent row.
_FINISHED = "state IN ('delivered', 'dead', 'expired')"
SQL_NEXT_FINISHED_DESTINATION = (
    f"SELECT min(destination) FROM deliveries WHERE {_FINISHED} AND state = ? AND destination > ?"
)
SQL_OLD_FINISHED_DELIVERIES = f"""
SELECT id FROM deliveries
 WHERE {_FINISHED} AND state = ? AND destination = ? AND updated_at_ms < ? LIMIT ?
"""
SQL_PURGE_ATTEMPTS = (
    "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE started_at_ms < ? LIMIT ?)"
)
# Ids travel as one JSON array: one statement per batch, whatever its size.
SQL_DELETE_ATTEMPTS_OF = (
    "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?))"
)
SQL_DELETE_DELIVERIES = "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?))"
# Events past the dedup window in (received_at_ms, id) order after a cursor, each with whether a
# delivery still holds it: pending or leased (never deleted), or dead/expired within
# dead_retention (the dead-delivery pass runs first, so any such row left is still kept).
SQL_OLD_EVENTS = """
SELECT e.id, e.received_at_ms,
       EXISTS (SELECT 1 FROM deliveries d WHERE d.event_rowid = e.id AND d.state <> 'delivered')
  FROM events e
 WHERE e.received_at_ms < ? AND (e.received_at_ms, e.id) > (?, ?)
 ORDER BY e.received_at_ms, e.id LIMIT ?
"""
SQL_DELETE_ATTEMPTS_OF_EVENTS = """
DELETE FROM attempts WHERE delivery_id IN
       (SELECT id FROM deliveries WHERE event_rowid IN (SELECT value FROM json_each(?)))
"""
SQL_DELETE_DELIVERIES_OF_EVENTS = (
    "DELETE FROM deliveries WHERE event_rowid IN (SELECT value FROM json_each(?))"
)
SQL_DELETE_EVENTS = "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))"
SQL_PURGE_IDENTITIES = """
DELETE FROM identities WHERE key_hash IN
       (SELECT key_hash FROM identities WHERE updated_at_ms < ? LIMIT ?)
"""


# ---- retention steps: each runs in one transaction, on the writer thread or a CLI connection


def run_transaction(conn: sqlite3.Connection, body: Callable[..., T], *args: Any) -> T:
    """``body(conn, *args)`` then COMMIT, on a connection other than the store's writer (CLI)."""
    try:
        result = body(conn, *args)
        conn.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()
        raise
    return result


def _begin(conn: sqlite3.Connection) -> None:
    # The step reads before it deletes: the write lock is taken first so nothing (a daemon beside
    # a CLI purge) changes the rows in between.
    if not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")


def purge_attempts(conn: sqlite3.Connection, before_ms: int, limit: int) -> dict[str, int]:
    _begin(conn)
    return {"attempts": conn.execute(SQL_PURGE_ATTEMPTS, (before_ms, limit)).rowcount}


def next_finished_destination(conn: sqlite3.Connection, state: str, after: str) -> str | None:
    """The first destination name above ``after`` with deliveries in ``state`` (a skip scan)."""
    row = conn.execute(SQL_NEXT_FINISHED_DESTINATION, (state, after)).fetchone()
    return row[0] if row else None


def purge_deliveries(
    conn: sqlite3.Connection, state: str, destination: str, before_ms: int, limit: int
) -> dict[str, int]:
    """Delete up to ``limit`` deliveries in a final ``state`` last updated before ``before_ms``,
    with their attempts (children first: the CLI's connection may not enforce foreign keys)."""
    _begin(conn)
    rows = conn.execute(
        SQL_OLD_FINISHED_DELIVERIES, (state, destination, before_ms, limit)
    ).fetchall()
    if not rows:
        return {"deliveries": 0, "attempts": 0}
    ids = orjson.dumps([r[0] for r in rows])
    attempts = conn.execute(SQL_DELETE_ATTEMPTS_OF, (ids,)).rowcount
    return {
        "deliveries": conn.execute(SQL_DELETE_DELIVERIES, (ids,)).rowcount,
        "attempts": attempts,
    }


def purge_events(
    conn: sqlite3.Connection, before_ms: int, after: tuple[int, int], limit: int
) -> tuple[dict[str, int], tuple[int, int] | None]:
    """Delete the events of the next ``limit`` received before ``before_ms`` (after the cursor
    ``after`` = (received_at_ms, id)) that no delivery holds; returns the counts and the cursor
    for the next batch, None when the range is done. Held events are stepped over, not rescanned
    by the following batches."""
    _begin(conn)
    rows = conn.execute(SQL_OLD_EVENTS, (before_ms, *after, limit)).fetchall()
    free = [r[0] for r in rows if not r[2]]
    counts = {"events": 0, "deliveries": 0, "attempts": 0}
    if free:
        ids = orjson.dumps(free)
        counts["attempts"] = conn.execute(SQL_DELETE_ATTEMPTS_OF_EVENTS, (ids,)).rowcount
        counts["deliveries"] = conn.execute(SQL_DELETE_DELIVERIES_OF_EVENTS, (ids,)).rowcount
        counts["events"] = conn.execute(SQL_DELETE_EVENTS, (ids,)).rowcount
    cursor = (rows[-1][1], rows[-1][0]) if len(rows) == limit else None
    return counts, cursor


def purge_identities(conn: sqlite3.Connection, before_ms: int, limit: int) -> dict[str, int]:
    _begin(conn)
    return {"identities": conn.execute(SQL_PURGE_IDENTITIES, (before_ms, limit)).rowcount}


def incremental_vacuum(conn: sqlite3.Connection, pages: int) -> int:
    """Return up to ``pages`` free pages to the filesystem; how many were. 0 on a database not in
    auto_vacuum = INCREMENTAL mode (created before relay set it; a full VACUUM converts it)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return 0
    before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    if before == 0:
        return 0
    # The pragma frees one page per step and answers a row with no columns, which execute()
    # takes for a statement without results and steps once: one page. executescript steps it
    # to the end (and commits first, but a step never runs inside a transaction).
    conn.executescript(f"PRAGMA incremental_vacuum({int(pages):d})")
    return int(before - conn.execute("PRAGMA freelist_count").fetchone()[0])


def checkpoint(conn: sqlite3.Connection, truncate_above_bytes: int, truncate_wait_ms: int) -> int:
    """Copy the WAL into the database (PASSIVE: never waits, and shrinks the file after a vacuum);
    if the WAL file is still above ``truncate_above_bytes``, truncate it (TRUNCATE waits for
    readers, so only up to ``truncate_wait_ms``). Returns the WAL file's size afterwards."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    wal = _wal_path(conn)
    size = file_bytes(wal) if wal else 0
    if wal and size > truncate_above_bytes:
        busy_timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute(f"PRAGMA busy_timeout = {int(truncate_wait_ms):d}")
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout):d}")
        if busy:
            log.info("wal_truncate_deferred", reason="a reader holds an older snapshot")
        size = file_bytes(wal)
    return size


def _wal_path(conn: sqlite3.Connection) -> str | None:
    for _, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return f"{file}-wal"
    return None
