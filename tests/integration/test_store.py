"""The outbox store on real SQLite files: migrations, dedup keys, collisions, claims."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from relay.clock import FakeClock
from relay.config import SourceConfig
from relay.migrations import Migration, SchemaError, load_migrations, migrate
from relay.normalize import RequestContext, normalize_event
from relay.store import OutboxStore, Route, migrate_file

SNAPSHOT = Path(__file__).parent / "snapshots" / "schema.sql"
SOURCE = SourceConfig(name="backend", key="k", kind="server", time="client", max_age_s=7 * 86400)


def schema_of(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC, name"
        ).fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return f"-- user_version {version}\n" + "\n".join(r[0] + ";" for r in rows) + "\n"


def test_migrated_schema_matches_the_snapshot(tmp_path: Path):
    """A migration changed after release would show here. Update the snapshot only together
    with a new migration file: `RELAY_UPDATE_SNAPSHOT=1 pytest tests/integration/test_store.py`."""
    db = tmp_path / "relay.db"
    assert migrate_file(db) == len(load_migrations())
    actual = schema_of(db)
    if os.environ.get("RELAY_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(actual)
    assert actual == SNAPSHOT.read_text()


def test_migrate_is_idempotent_and_refuses_a_newer_database(tmp_path: Path):
    db = tmp_path / "relay.db"
    version = migrate_file(db)
    assert migrate_file(db) == version
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {version + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer than this relay knows"):
        migrate_file(db)


def test_refuses_a_foreign_database(tmp_path: Path):
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="not a relay database"):
        migrate_file(db)


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    good = Migration(1, "0001_a.sql", "CREATE TABLE a (x INTEGER);")
    bad = Migration(2, "0002_b.sql", "CREATE TABLE b (x INTEGER);\nINSERT INTO nowhere VALUES (1);")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, [good, bad])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"a"}  # b was rolled back with its version
    conn.close()


def make_event(event_id: str, clock: FakeClock, value: float = 1.0):
    raw = {"event_id": event_id, "event_name": "purchase",
           "properties": {"value": value, "currency": "EUR"}}  # fmt: skip
    return normalize_event(raw, SOURCE, RequestContext(received_at_ms=clock.now_ms()))


async def test_hash_collisions_are_resolved_by_probing(tmp_path: Path):
    clock = FakeClock()
    store = OutboxStore(tmp_path / "relay.db", clock)
    await store.open()
    try:
        routes = [Route("hook", 2**62)]
        a = make_event("a", clock)
        # force b and c onto a's 64-bit key: what a real collision looks like to the store
        b = replace(make_event("b", clock), dedup_key=a.dedup_key)
        c = replace(make_event("c", clock), dedup_key=a.dedup_key)
        first = await store.insert_events([a, b], [routes, routes])
        assert [r.status for r in first] == ["accepted", "accepted"]
        second = await store.insert_events([c, b, a], [routes] * 3)
        assert [r.status for r in second] == ["accepted", "duplicate", "duplicate"]
        conflict = replace(make_event("b", clock, value=2.0), dedup_key=a.dedup_key)
        third = await store.insert_events([conflict], [routes])
        assert (third[0].status, third[0].conflict) == ("duplicate", True)
        rows = await store.fetchall("SELECT event_id, dedup_key FROM events ORDER BY id")
        assert [(r[0], r[1] - a.dedup_key) for r in rows] == [("a", 0), ("b", 1), ("c", 2)]
        assert (await store.fetchall("SELECT count(*) FROM deliveries"))[0][0] == 3
        assert store.pending == 3
    finally:
        await store.close()


async def test_pending_count_survives_restart(tmp_path: Path):
    clock = FakeClock()
    store = OutboxStore(tmp_path / "relay.db", clock)
    await store.open()
    routes = [Route("a", 2**62), Route("b", 2**62)]
    await store.insert_events([make_event("p-1", clock), make_event("p-2", clock)], [routes] * 2)
    await store.close()
    reopened = OutboxStore(tmp_path / "relay.db", clock)
    await reopened.open()
    try:
        assert reopened.pending == 4
        claimed = await reopened.claim("a", 10, 60)
        assert [c.event["event_id"] for c in claimed] == ["p-1", "p-2"]
        assert {c.attempt for c in claimed} == {1}
        assert await reopened.next_due_ms("a") == clock.now_ms() + 60_000
        backlog = await reopened.backlog()
        assert backlog == {"a": (2, clock.now_ms()), "b": (2, clock.now_ms())}
    finally:
        await reopened.close()


async def test_identities_merge_expire_and_are_forgotten(tmp_path: Path):
    clock = FakeClock()
    store = OutboxStore(tmp_path / "relay.db", clock)
    await store.open()
    try:
        user, anon = b"u" * 32, b"a" * 32
        await store.remember_identity([user], {"em": "1" * 64})
        clock.advance(10)
        await store.remember_identity([user, anon], {"fn": "2" * 64, "em": "3" * 64})
        assert await store.recall_identity([user], 86400) == {"em": "3" * 64, "fn": "2" * 64}
        assert await store.recall_identity([anon], 86400) == {"fn": "2" * 64, "em": "3" * 64}
        clock.advance(2 * 86400)
        assert await store.recall_identity([user, anon], 86400) == {}  # past retention: ignored
        assert await store.forget_identities(86400) == 2
        assert await store.fetchall("SELECT count(*) FROM identities") == [(0,)]
    finally:
        await store.close()
