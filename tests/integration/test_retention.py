"""Retention on real SQLite files with the injected clock: what goes when, what never goes,
incremental vacuum, the disk guard and the storage metrics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from relay import retention, retention_steps
from relay.clock import FakeClock
from relay.config import SourceConfig, StorageConfig
from relay.migrations import migrate
from relay.normalize import RequestContext, normalize_event
from relay.retention import DELETED_KINDS, DiskGuard, purge, run_retention
from relay.store import OutboxStore, Record, Route, migrate_file, sqlite_pragmas
from tests.conftest import MakeRelay, event
from tests.fakes import FakeWebhook

DAY_S = 86400
DAY_MS = DAY_S * 1000
MIB = 1024 * 1024
SOURCE = SourceConfig(name="backend", key="k", kind="server", time="client", max_age_s=7 * DAY_S)
FAR = 2**62


def storage(path: Path) -> StorageConfig:
    return StorageConfig(
        path=path,
        dedup_window_s=7 * DAY_S,
        log_retention_s=14 * DAY_S,
        dead_retention_s=30 * DAY_S,
        identity_retention_s=30 * DAY_S,
    )


def advance_ms(clock: FakeClock, ms: int) -> None:
    before = clock.now_ms()
    clock.advance(ms / 1000)
    assert clock.now_ms() == before + ms  # boundaries are exact to the millisecond


def deleted(result: dict[str, int]) -> dict[str, int]:
    return {kind: result[kind] for kind in DELETED_KINDS}


def nothing() -> dict[str, int]:
    return dict.fromkeys(DELETED_KINDS, 0)


def make_event(event_id: str, clock: FakeClock):
    raw = {"event_id": event_id, "event_name": "purchase",
           "properties": {"value": 1.0, "currency": "EUR"}}  # fmt: skip
    return normalize_event(raw, SOURCE, RequestContext(received_at_ms=clock.now_ms()))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[OutboxStore]:
    s = OutboxStore(tmp_path / "relay.db", FakeClock())
    await s.open()
    yield s
    await s.close()


async def finish(store: OutboxStore, destination: str, outcomes: dict[str, str]) -> None:
    """Claim every due delivery of ``destination`` and record the outcome named per event id
    (delivered, dead, expired, retry); deliveries not named stay leased."""
    now = store.clock.now_ms()
    records = []
    for c in await store.claim(destination, 100, 60):
        outcome = outcomes.get(c.event["event_id"])
        if outcome is None:
            continue
        state = "pending" if outcome == "retry" else outcome
        records.append(Record(c.delivery_id, c.lease_token, c.attempt, state, FAR, now, 5,
                              200 if outcome == "delivered" else 500, outcome, None))  # fmt: skip
    await store.record(records)


async def event_ids(store: OutboxStore) -> set[str]:
    return {r[0] for r in await store.fetchall("SELECT event_id FROM events")}


async def test_each_kind_goes_at_its_boundary_and_pending_events_never(store: OutboxStore):
    clock = store.clock
    assert isinstance(clock, FakeClock)
    routes = {
        "delivered": ["a"], "dead": ["a"], "expired": ["a"], "retrying": ["a"],
        "mixed": ["a", "b"], "leased": ["b"], "pending": ["c"], "unrouted": [],
    }  # fmt: skip
    await store.insert_events(
        [make_event(name, clock) for name in routes],
        [[Route(d, FAR) for d in dests] for dests in routes.values()],
    )
    await finish(store, "a", {"delivered": "delivered", "dead": "dead", "expired": "expired",
                              "retrying": "retry", "mixed": "delivered"})  # fmt: skip
    await finish(store, "b", {"mixed": "dead"})  # "leased" stays leased
    await store.remember_identity([b"u" * 32], {"em": "1" * 64})
    config = storage(store.path)

    advance_ms(clock, 7 * DAY_MS)  # exactly the dedup window: the keys must still be there
    assert deleted(await run_retention(store, config, clock)) == nothing()

    advance_ms(clock, 1)
    assert deleted(await run_retention(store, config, clock)) == {
        "events": 2, "deliveries": 2, "attempts": 2, "identities": 0,
    }  # fmt: skip
    assert await event_ids(store) == set(routes) - {"delivered", "unrouted"}
    # the mixed event lost its delivered delivery; its dead one holds it
    assert await store.fetchall(
        "SELECT d.destination, d.state FROM deliveries d JOIN events e ON e.id = d.event_rowid"
        " WHERE e.event_id = 'mixed'"
    ) == [("b", "dead")]

    advance_ms(clock, 7 * DAY_MS - 1)  # exactly log_retention
    assert deleted(await run_retention(store, config, clock)) == nothing()
    advance_ms(clock, 1)
    assert deleted(await run_retention(store, config, clock)) == {
        "events": 0, "deliveries": 0, "attempts": 4, "identities": 0,
    }  # fmt: skip
    assert await store.fetchall("SELECT count(*) FROM attempts") == [(0,)]

    advance_ms(clock, 16 * DAY_MS - 1)  # exactly dead_retention (and identity_retention)
    assert deleted(await run_retention(store, config, clock)) == nothing()
    advance_ms(clock, 1)
    assert deleted(await run_retention(store, config, clock)) == {
        "events": 3, "deliveries": 3, "attempts": 0, "identities": 1,
    }  # fmt: skip
    assert await event_ids(store) == {"pending", "leased", "retrying"}

    clock.advance(365 * DAY_S)
    assert deleted(await run_retention(store, config, clock)) == nothing()
    assert await store.fetchall("SELECT state FROM deliveries ORDER BY state") == [
        ("leased",), ("pending",), ("pending",),
    ]  # fmt: skip
    assert store.retention_deleted == {"events": 5, "deliveries": 5, "attempts": 6,
                                       "identities": 1}  # fmt: skip
    assert store.pending == 3


async def test_small_batches_step_over_held_events(store: OutboxStore):
    """Batches smaller than the rows to delete; held events at the start of the range must not
    stop the events after them from going."""
    clock = store.clock
    assert isinstance(clock, FakeClock)
    held = [make_event(f"held-{n}", clock) for n in range(5)]
    await store.insert_events(held, [[Route("c", FAR)]] * 5)
    clock.advance(1)
    free = [make_event(f"free-{n}", clock) for n in range(12)]
    await store.insert_events(free, [[Route("a", FAR), Route("b", FAR)]] * 12)
    await finish(store, "a", {f"free-{n}": "delivered" for n in range(12)})
    await finish(store, "b", {f"free-{n}": "dead" for n in range(12)})
    clock.advance(31 * DAY_S)
    result = await run_retention(store, storage(store.path), clock, batch_rows=4)
    assert deleted(result) == {"events": 12, "deliveries": 24, "attempts": 24, "identities": 0}
    assert await event_ids(store) == {f"held-{n}" for n in range(5)}


async def test_a_delivered_event_blocks_its_duplicate_until_the_dedup_window_has_passed(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock
):
    relay = await make_relay(webhook_url=webhook.url)
    assert (await (await relay.post(event("o-1"))).json())["results"][0]["status"] == "accepted"
    await relay.worker().drain()
    assert webhook.delivered_ids() == ["o-1"]
    state = relay.state

    clock.advance(7 * DAY_S - 1)
    await run_retention(state.store, relay.config.storage, clock)
    again = await (await relay.post(event("o-1"))).json()
    assert again["results"][0]["status"] == "duplicate"

    clock.advance(2)
    await run_retention(state.store, relay.config.storage, clock)
    assert await state.store.fetchall("SELECT count(*) FROM events") == [(0,)]
    after = await (await relay.post(event("o-1"))).json()
    assert after["results"][0]["status"] == "accepted"
    assert await state.store.fetchall("SELECT state FROM deliveries") == [("pending",)]


async def test_the_hourly_maintenance_round_purges_and_logs(
    make_relay: MakeRelay, clock: FakeClock
):
    relay = await make_relay(webhook_url=None)
    await relay.post(event("h-1"))
    with capture_logs() as logs:
        clock.advance(7 * DAY_S)
        # an hour at a time: the startup round may still be running, its hourly sleep not begun
        await until(
            lambda: any(e["event"] == "retention_purged" for e in logs),
            tick=lambda: clock.advance(3600),
        )
    [purged] = [e for e in logs if e["event"] == "retention_purged"]
    assert purged["events"] == 1
    assert await relay.state.store.fetchall("SELECT count(*) FROM events") == [(0,)]


async def seed_bulk(store: OutboxStore, count: int) -> None:
    """``count`` delivered events of ~1 KB at the clock's now, in one statement each."""
    now = store.clock.now_ms()
    await store.execute_write(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " INSERT INTO events (dedup_key, event_name, event_id, source, received_at_ms,"
        " event_time_ms, time_rule, fingerprint, payload)"
        " SELECT i * 7919, 'purchase', 'bulk-' || i, 'backend', ?, ?, 'server', 0,"
        " randomblob(1000) FROM n",
        (count, now, now),
    )
    await store.execute_write(
        "INSERT INTO deliveries (event_rowid, destination, state, next_attempt_at_ms,"
        " deadline_ms, created_at_ms, updated_at_ms)"
        " SELECT id, 'a', 'delivered', ?, ?, ?, ? FROM events",
        (now, FAR, now, now),
    )


async def test_incremental_vacuum_shrinks_a_new_database_file(store: OutboxStore):
    assert await store.fetchall("PRAGMA auto_vacuum") == [(2,)]  # incremental
    await seed_bulk(store, 20_000)
    await store.fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    before = store.path.stat().st_size
    assert before > 20 * MIB
    assert isinstance(store.clock, FakeClock)
    store.clock.advance(7 * DAY_S + 1)
    result = await run_retention(store, storage(store.path), store.clock)
    assert (result["events"], result["deliveries"]) == (20_000, 20_000)
    assert result["vacuumed_pages"] > 5000
    assert store.path.stat().st_size < before / 20
    assert await store.fetchall("PRAGMA freelist_count") == [(0,)]
    assert store.database_bytes() == store.path.stat().st_size + result["wal_bytes"]


async def test_a_database_created_before_auto_vacuum_keeps_its_free_pages(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn)  # what relay did before it set auto_vacuum
    conn.close()
    clock = FakeClock()
    store = OutboxStore(path, clock)
    await store.open()
    try:
        assert await store.fetchall("PRAGMA auto_vacuum") == [(0,)]  # a no-op on this file
        await seed_bulk(store, 2000)
        clock.advance(7 * DAY_S + 1)
        result = await run_retention(store, storage(path), clock)
        assert (result["events"], result["vacuumed_pages"]) == (2000, 0)
        [(free_pages,)] = await store.fetchall("PRAGMA freelist_count")
        assert free_pages > 0  # reused by later inserts; `VACUUM` would convert the file
    finally:
        await store.close()


async def test_purge_on_a_plain_connection_beside_the_open_store(store: OutboxStore):
    """What `relay purge` runs: its own connection while the daemon's store is open."""
    clock = store.clock
    assert isinstance(clock, FakeClock)
    await seed_bulk(store, 50)
    await store.insert_events([make_event("kept", clock)], [[Route("c", FAR)]])
    conn = sqlite3.connect(store.path, isolation_level=None)
    for pragma in sqlite_pragmas("full"):
        conn.execute(pragma)
    seen: list[dict[str, int]] = []
    try:
        result = purge(conn, storage(store.path), clock.now_ms() + 8 * DAY_S * 1000,
                       progress=seen.append, batch_rows=20)  # fmt: skip
    finally:
        conn.close()
    assert deleted(result) == {"events": 50, "deliveries": 50, "attempts": 0, "identities": 0}
    assert [p["deliveries"] for p in seen if p["deliveries"]][:3] == [20, 40, 50]
    assert deleted(seen[-1]) == deleted(result)
    assert await event_ids(store) == {"kept"}
    await store.insert_events([make_event("after", clock)], [[Route("c", FAR)]])  # still writable


def test_retention_statements_use_indexes(tmp_path: Path):
    path = tmp_path / "relay.db"
    migrate_file(path)
    conn = sqlite3.connect(path)
    try:
        statements = {
            retention_steps.SQL_PURGE_ATTEMPTS: (0, 1),
            retention_steps.SQL_NEXT_FINISHED_DESTINATION: ("dead", ""),
            retention_steps.SQL_OLD_FINISHED_DELIVERIES: ("dead", "a", 0, 1),
            retention_steps.SQL_DELETE_ATTEMPTS_OF: ("[]",),
            retention_steps.SQL_DELETE_DELIVERIES: ("[]",),
            retention_steps.SQL_OLD_EVENTS: (0, 0, 0, 1),
            retention_steps.SQL_DELETE_ATTEMPTS_OF_EVENTS: ("[]",),
            retention_steps.SQL_DELETE_DELIVERIES_OF_EVENTS: ("[]",),
            retention_steps.SQL_DELETE_EVENTS: ("[]",),
            retention_steps.SQL_PURGE_IDENTITIES: (0, 1),
        }
        for sql, params in statements.items():
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            scans = [step for step in plan if step.startswith("SCAN") and "json_each" not in step]
            assert not scans, (sql, plan)
    finally:
        conn.close()


class FakeDisk:
    """An injected os.statvfs: no test fills a real disk."""

    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes
        self.error: OSError | None = None
        self.paths: list[str] = []

    def __call__(self, path: str) -> SimpleNamespace:
        self.paths.append(path)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(f_bavail=self.free_bytes // 4096, f_frsize=4096)


async def until(
    condition: Callable[[], bool], tick: Callable[[], None] | None = None, timeout_s: float = 5.0
) -> None:
    """Let background tasks run (real time: they wait on the writer thread) until ``condition``,
    calling ``tick`` between two looks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
        if tick is not None:
            tick()


async def test_disk_guard_refuses_below_min_free_and_recovers(tmp_path: Path):
    clock = FakeClock()
    store = OutboxStore(tmp_path / "data" / "relay.db", clock)
    disk = FakeDisk(free_bytes=1024 * MIB)
    guard = DiskGuard(store, 256 * MIB, statvfs=disk)
    with capture_logs() as logs:
        task = asyncio.create_task(guard.run(clock))
        await until(lambda: store.disk_free_bytes == 1024 * MIB)
        assert store.refusing is None
        assert disk.paths == [str(tmp_path / "data")]

        disk.free_bytes = 100 * MIB
        clock.advance(retention.DISK_CHECK_INTERVAL_S)
        await until(lambda: store.refusing is not None)
        assert store.refusing == "disk: 100 MiB free, below min_free_disk (256 MiB)"
        disk.free_bytes = 90 * MIB
        clock.advance(retention.DISK_CHECK_INTERVAL_S)
        await until(lambda: store.disk_free_bytes == 90 * MIB)
        assert store.refusing == "disk: 90 MiB free, below min_free_disk (256 MiB)"

        disk.error = OSError(5, "Input/output error")
        assert guard.check() == store.refusing  # unknown: the last decision stands
        assert guard.check() == store.refusing
        disk.error = None

        disk.free_bytes = 300 * MIB
        clock.advance(retention.DISK_CHECK_INTERVAL_S)
        await until(lambda: store.refusing is None)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    events = [(e["event"], e.get("free_mib")) for e in logs]
    assert events == [("disk_low", 100), ("disk_check_failed", None), ("disk_recovered", 300)]
    assert logs[0]["log_level"] == "error"
    assert logs[0]["min_free_disk_mib"] == 256


async def test_min_free_disk_zero_never_refuses(tmp_path: Path):
    store = OutboxStore(tmp_path / "relay.db", FakeClock())
    assert DiskGuard(store, 0, statvfs=FakeDisk(0)).check() is None
    assert store.disk_free_bytes == 0


async def test_metrics_show_size_free_space_and_deletions(make_relay: MakeRelay, clock: FakeClock):
    relay = await make_relay(webhook_url=None)
    await relay.post(event("m-1"))
    clock.advance(7 * DAY_S + 1)
    await run_retention(relay.state.store, relay.config.storage, clock)
    text = (await (await relay.client.get("/metrics")).text()).splitlines()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text
        if line and not line.startswith("#")
    }
    assert values["relay_database_bytes"] > 0
    assert values["relay_disk_free_bytes"] > 0
    assert values['relay_retention_deleted_total{kind="events"}'] == 1
    assert values['relay_retention_deleted_total{kind="attempts"}'] == 0
