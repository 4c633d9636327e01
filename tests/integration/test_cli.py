"""The operator CLI against a real database seeded through the store: status, events show, dead
letters (list, show, replay only inside the window, drop), backup, purge, send-test, and reads
and replays while a running relay app writes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay import inspection
from relay.cli import main
from relay.clock import FakeClock
from relay.config import DestinationConfig, load_config
from relay.normalize import RequestContext, normalize_event
from relay.store import OutboxStore, Record, Route
from tests.conftest import MakeRelay, event, write_config
from tests.fakes import FakeWebhook
from tests.integration.test_store import SOURCE
from tests.platforms.fake_ga4 import FakeGA4
from tests.platforms.fake_meta import FakeMeta
from tests.platforms.fake_pinterest import FakePinterest
from tests.platforms.fake_reddit import FakeReddit
from tests.platforms.fake_snapchat import FakeSnapchat
from tests.platforms.fake_tiktok import FakeTikTok

HOUR_S = 3600
META = """
[[destinations]]
name = "meta"
type = "meta"
pixel_id = "{pixel_id}"
access_token = "{token}"
endpoint = "{endpoint}"
"""
OAUTH_ERROR = "HTTP 400: Invalid OAuth access token (fbtrace_id AbC)"


class Seeded:
    """Ids and times of the seeded rows, for the assertions."""

    def __init__(self, config_path: Path, clock: FakeClock) -> None:
        self.config_path = config_path
        self.clock = clock
        self.delivery: dict[str, int] = {}


async def _one(
    store: OutboxStore, clock: FakeClock, event_id: str, dest: str, deadline_ms: int
) -> None:
    raw = {"event_id": event_id, "event_name": "purchase",
           "properties": {"value": 5.0, "currency": "EUR"}}  # fmt: skip
    normalized = normalize_event(raw, SOURCE, RequestContext(received_at_ms=clock.now_ms()))
    assert [r.status for r in await store.insert_events([normalized], [[Route(dest, deadline_ms)]])]


async def _try(
    store: OutboxStore, clock: FakeClock, dest: str, state: str, outcome: str,
    status: int | None, detail: str | None, lease_s: float = 60, next_in_s: float = 0,
) -> int:  # fmt: skip
    [claimed] = await store.claim(dest, 1, lease_s)
    now = clock.now_ms()
    record = Record(claimed.delivery_id, claimed.lease_token, claimed.attempt, state,
                    now + int(next_in_s * 1000), now, 120, status, outcome, detail)  # fmt: skip
    assert await store.record([record]) == 1
    return claimed.delivery_id


@pytest.fixture
async def seeded(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Seeded]:
    """hook: one delivered 3 h ago, one 30 min ago, one in flight, one pending.
    meta: one expired, one dead inside its window (a retry, then an OAuth error), one dead
    whose window has closed since."""
    extra = META.format(pixel_id="1", token="t", endpoint="http://127.0.0.1:9")
    path = write_config(tmp_path, extra=extra, server_extra="")
    seeded = Seeded(path, clock)
    store = OutboxStore(load_config(path).storage.path, clock)
    await store.open()
    far = clock.now_ms() + 7 * 86400_000
    await _one(store, clock, "old-1", "hook", far)
    await _try(store, clock, "hook", "delivered", "delivered", 200, None)
    clock.advance(3 * HOUR_S)
    await _one(store, clock, "ok-1", "hook", far)
    await _try(store, clock, "hook", "delivered", "delivered", 200, None)
    await _one(store, clock, "exp-1", "meta", clock.now_ms() + 60_000)
    clock.advance(120)
    seeded.delivery["exp-1"] = await _try(
        store, clock, "meta", "expired", "expired", None, "past the platform's time window"
    )
    await _one(store, clock, "dead-1", "meta", far)
    await _try(store, clock, "meta", "pending", "retry", 503, "HTTP 503: busy", next_in_s=10)
    clock.advance(20)
    seeded.delivery["dead-1"] = await _try(store, clock, "meta", "dead", "dead", 400, OAUTH_ERROR)
    clock.advance(5)  # late-1 is the newest failure
    await _one(store, clock, "late-1", "meta", clock.now_ms() + 600_000)
    seeded.delivery["late-1"] = await _try(
        store, clock, "meta", "dead", "dead", 400, "HTTP 400: Invalid parameter"
    )
    await _one(store, clock, "fly-1", "hook", far)
    await _try(store, clock, "hook", "pending", "retry", None, "x", lease_s=0)  # claimable again
    [claimed] = await store.claim("hook", 1, 2 * HOUR_S)  # in flight for two hours
    seeded.delivery["fly-1"] = claimed.delivery_id
    await _one(store, clock, "pend-1", "hook", far)
    await store.close()
    clock.advance(30 * 60)  # late-1's window (10 min) has closed; ok-1 is 30 min old
    yield seeded


def run(capsys: pytest.CaptureFixture[str], seeded: Seeded, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--config", str(seeded.config_path)])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], seeded: Seeded, *argv: str) -> Any:
    code, out, err = run(capsys, seeded, *argv, "--json")
    assert code == 0, err
    return orjson.loads(out)


def at_fake_now(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """The CLI reads the system clock; make it the test's clock."""
    monkeypatch.setattr("relay.cli._now_ms", clock.now_ms)


async def test_status_table_and_json(seeded: Seeded, capsys, monkeypatch, clock: FakeClock):
    at_fake_now(monkeypatch, clock)
    status = run_json(capsys, seeded, "status")
    rows = {r["destination"]: r for r in status["destinations"]}
    hook, meta = rows["hook"], rows["meta"]
    assert (hook["pending"], hook["in_flight"]) == (1, 1)
    assert (hook["delivered_1h"], hook["delivered_24h"]) == (1, 2)
    assert hook["oldest_pending_age_s"] == 30 * 60  # fly-1, created just before pend-1
    assert hook["last_error"] == "x"
    assert (meta["pending"], meta["in_flight"], meta["oldest_pending_age_s"]) == (0, 0, None)
    assert (meta["dead_1h"], meta["dead_24h"], meta["expired_1h"]) == (2, 2, 1)
    assert meta["last_error"] == "HTTP 400: Invalid parameter"  # the newest failure
    assert meta["worker"] is None and status["live"] is False
    assert "admin_key" in status["note"]

    code, out, _ = run(capsys, seeded, "status")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:5] == ["DESTINATION", "STATE", "PENDING", "IN", "FLIGHT"]
    hook_line = next(line for line in lines if line.startswith("hook"))
    assert hook_line.split()[:8] == ["hook", "?", "1", "1", "30m", "1/2", "0/0", "0/0"]
    meta_line = next(line for line in lines if line.startswith("meta"))
    assert meta_line.split()[2:8] == ["0", "0", "-", "0/0", "2/2", "1/1"]
    assert "HTTP 400: Invalid parameter" in meta_line


async def test_what_happened_to_event_x(seeded: Seeded, capsys):
    code, out, _ = run(capsys, seeded, "events", "show", "dead-1")
    assert code == 0
    assert out.startswith("event purchase dead-1 (source backend)")
    assert "-> meta (delivery" in out and ": dead, attempts 2" in out
    assert "HTTP 503 retry: HTTP 503: busy" in out
    assert f"HTTP 400 dead: {OAUTH_ERROR}" in out

    report = run_json(capsys, seeded, "events", "show", "dead-1")
    [stored] = report["events"]
    assert stored["payload"]["event_id"] == "dead-1" and stored["time_rule"] == "server"
    [delivery] = stored["deliveries"]
    assert (delivery["destination"], delivery["state"], delivery["attempts"]) == ("meta", "dead", 2)
    assert [(a["attempt"], a["http_status"], a["outcome"]) for a in delivery["attempts_log"]] == [
        (1, 503, "retry"),
        (2, 400, "dead"),
    ]
    assert run(capsys, seeded, "events", "show", "nope")[0] == 1


async def test_dead_list_and_show(seeded: Seeded, capsys, monkeypatch, clock: FakeClock):
    at_fake_now(monkeypatch, clock)
    listed = run_json(capsys, seeded, "dead", "list")["dead"]
    assert [r["event_id"] for r in listed] == ["late-1", "dead-1"]  # newest first
    assert [r["event_id"] for r in run_json(
        capsys, seeded, "dead", "list", "--reason", "oauth")["dead"]] == ["dead-1"]  # fmt: skip
    assert run_json(capsys, seeded, "dead", "list", "--destination", "hook")["dead"] == []
    assert run_json(capsys, seeded, "dead", "list", "--since", "10m")["dead"] == []
    assert len(run_json(capsys, seeded, "dead", "list", "--since", "1h")["dead"]) == 2
    assert len(run_json(capsys, seeded, "dead", "list", "--until", "10m")["dead"]) == 2
    code, out, _ = run(capsys, seeded, "dead", "list")
    assert code == 0 and "closed" in out and "left" in out  # late-1's window closed; dead-1's not

    shown = run_json(capsys, seeded, "dead", "show", str(seeded.delivery["dead-1"]))
    assert (shown["event_id"], shown["state"], shown["last_error"]) == (
        "dead-1",
        "dead",
        OAUTH_ERROR,
    )
    assert len(shown["attempts_log"]) == 2
    assert run(capsys, seeded, "dead", "show", "999999")[0] == 1


async def test_replay_requeues_only_inside_the_window(
    seeded: Seeded, capsys, monkeypatch, clock: FakeClock
):
    at_fake_now(monkeypatch, clock)
    code, out, err = run(capsys, seeded, "dead", "replay")
    assert code == 2 and "--all" in err  # no filter: refused
    code, out, _ = run(capsys, seeded, "dead", "replay", "--destination", "meta", "--dry-run")
    assert out.strip() == (
        "1 would be re-queued; 1 past the platform's window (cannot be replayed)"
    )
    result = run_json(capsys, seeded, "dead", "replay", "--destination", "meta")
    assert result == {"requeued": 1, "skipped_past_window": 1, "dry_run": False}

    with sqlite3.connect(load_config(seeded.config_path).storage.path) as conn:
        rows = dict(conn.execute("SELECT id, state || ' ' || attempts || ' ' ||"
                                 " (next_attempt_at_ms = ?) FROM deliveries",
                                 (clock.now_ms(),)).fetchall())  # fmt: skip
        attempts = conn.execute(
            "SELECT count(*) FROM attempts WHERE delivery_id = ?", (seeded.delivery["dead-1"],)
        ).fetchone()[0]
    assert rows[seeded.delivery["dead-1"]] == "pending 0 1"  # due now, fresh attempt budget
    assert rows[seeded.delivery["late-1"]].startswith("dead ")
    assert attempts == 2  # the attempt log is kept
    status = run_json(capsys, seeded, "status")["destinations"]
    assert next(r for r in status if r["destination"] == "meta")["pending"] == 1
    # replayed again: nothing left inside the window
    again = run_json(capsys, seeded, "dead", "replay", "--all")
    assert again == {"requeued": 0, "skipped_past_window": 1, "dry_run": False}


async def test_drop_deletes_deliveries_and_their_log_but_keeps_events(seeded: Seeded, capsys):
    code, out, _ = run(capsys, seeded, "dead", "drop", "--reason", "OAuth", "--dry-run")
    assert (code, out.strip()) == (0, "1 would be dropped")
    assert run_json(capsys, seeded, "dead", "drop", "--reason", "OAuth") == {
        "dropped": 1,
        "dry_run": False,
    }
    db = load_config(seeded.config_path).storage.path
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT count(*) FROM deliveries WHERE id = ?",
                            (seeded.delivery["dead-1"],)).fetchone()[0]  # fmt: skip
        log = conn.execute("SELECT count(*) FROM attempts WHERE delivery_id = ?",
                           (seeded.delivery["dead-1"],)).fetchone()[0]  # fmt: skip
        kept = conn.execute("SELECT count(*) FROM events WHERE event_id = 'dead-1'").fetchone()[0]
    assert (left, log, kept) == (0, 0, 1)
    code, out, _ = run(capsys, seeded, "dead", "drop", "--id", str(seeded.delivery["late-1"]))
    assert out.strip() == "1 dropped"
    assert run_json(capsys, seeded, "dead", "list")["dead"] == []


async def test_backup_is_a_consistent_openable_copy(seeded: Seeded, capsys, tmp_path: Path):
    target = tmp_path / "backups" / "relay-copy.db"
    target.parent.mkdir()
    code, out, err = run(capsys, seeded, "backup", str(target))
    assert code == 0 and "quick_check ok" in out and "backup: " in err
    code, _, err = run(capsys, seeded, "backup", str(target))
    assert code == 2 and "--force" in err
    assert run(capsys, seeded, "backup", str(target), "--force")[0] == 0
    assert [p.name for p in target.parent.iterdir()] == ["relay-copy.db"]  # no partial left

    source = load_config(seeded.config_path).storage.path
    counts = (
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries),"
        " (SELECT count(*) FROM attempts), (SELECT user_version FROM pragma_user_version)"
    )
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with sqlite3.connect(source) as original:
            assert copy.execute(counts).fetchone() == original.execute(counts).fetchone()
    finally:
        copy.close()


async def test_purge_runs_retention(seeded: Seeded, capsys, monkeypatch, clock: FakeClock):
    at_fake_now(monkeypatch, clock)
    result = run_json(capsys, seeded, "purge")
    assert result["events"] == 0  # nothing is past the 7-day dedup window yet
    clock.advance(40 * 86400)
    result = run_json(capsys, seeded, "purge")
    # everything finished goes; the in-flight and pending rows hold their events
    assert (result["events"], result["deliveries"], result["attempts"]) == (5, 5, 7)
    status = {r["destination"]: r for r in run_json(capsys, seeded, "status")["destinations"]}
    assert (status["hook"]["pending"], status["hook"]["in_flight"]) == (2, 0)  # lease expired


async def test_missing_database_and_unknown_destination(tmp_path: Path, capsys):
    path = write_config(tmp_path)
    assert main(["status", "--config", str(path)]) == 2
    assert "no such database" in capsys.readouterr().err
    assert main(["send-test", "nope", "--config", str(path)]) == 2
    assert "no destination named 'nope'" in capsys.readouterr().err


async def test_reads_and_replays_while_the_relay_writes(
    make_relay: MakeRelay, webhook: FakeWebhook, clock: FakeClock, capsys
):
    relay = await make_relay(webhook_url=webhook.url)
    for start in range(0, 2500, 100):
        body = {"events": [event(f"c-{n}") for n in range(start, start + 100)]}
        assert (await relay.post(body)).status == 202
    await relay.state.store.execute_write(
        "UPDATE deliveries SET state = 'dead', last_error = 'HTTP 400: seeded'"
    )
    config = str(relay.config.path)

    async def keep_posting() -> int:
        posted = 0
        for n in range(40):
            response = await relay.post({"events": [event(f"w-{n}-{i}") for i in range(25)]})
            assert response.status == 202
            posted += 25
        return posted

    replay = asyncio.to_thread(main, ["dead", "replay", "--all", "--json", "--config", config])
    status = asyncio.to_thread(main, ["status", "--json", "--config", config])
    code, posted, status_code = await asyncio.gather(replay, keep_posting(), status)
    assert (code, status_code) == (0, 0)
    out, err = capsys.readouterr()
    assert '"requeued": 2500' in out and "replay: 2500/2500 rows" in err
    pending = await relay.state.store.fetchall(
        "SELECT count(*) FROM deliveries WHERE state = 'pending'"
    )
    assert pending[0][0] == 2500 + posted

    clock.advance(120)  # the CLI stamped next_attempt_at_ms with the system clock
    assert await relay.worker().drain() == 2500 + posted
    assert len(webhook.delivered) == 2500 + posted
    shown = await asyncio.to_thread(main, ["events", "show", "c-7", "--config", config])
    assert shown == 0 and "-> hook" in capsys.readouterr().out


async def test_send_test_webhook_posts_one_signed_event(
    webhook: FakeWebhook, tmp_path: Path, capsys
):
    path = write_config(tmp_path, webhook_url=webhook.url)
    code = await asyncio.to_thread(main, ["send-test", "hook", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    [[sent]] = webhook.requests
    assert sent["event_id"].startswith("relay-send-test-") and sent["event_name"] == "purchase"
    assert "status:      200" in out and "outcome:     delivered" in out
    assert webhook.bad_signatures == 0


async def test_send_test_meta_needs_a_test_code_and_uses_it(tmp_path: Path, capsys):
    fake = FakeMeta()
    await fake.start()
    try:
        extra = META.format(pixel_id=fake.pixel_id, token=fake.access_token, endpoint=fake.base_url)
        path = str(write_config(tmp_path, webhook_url=None, extra=extra))
        code = await asyncio.to_thread(main, ["send-test", "meta", "--config", path])
        assert code == 2 and "--test-event-code" in capsys.readouterr().err
        assert fake.received == []
        argv = ["send-test", "meta", "--test-event-code", "TEST4242", "--json", "--config", path]
        code = await asyncio.to_thread(main, argv)
        result = orjson.loads(capsys.readouterr().out)
        assert code == 0, result
        [received] = fake.received
        assert received.body["test_event_code"] == "TEST4242"
        assert result["status"] == 200 and "events_received" in result["response"]
        assert fake.access_token not in result["request"]  # the token is redacted
    finally:
        await fake.close()


def _sent_in_test_mode(kind: str, received: Any) -> bool:
    return {
        "ga4": lambda r: r.path == "/debug/mp/collect",  # the validator only
        "snapchat": lambda r: r.path.endswith("/events/validate"),
        "pinterest": lambda r: r.query.get("test") == "true",
        "tiktok": lambda r: r.body["test_event_code"] == "CODE1",
        "reddit": lambda r: r.body["data"]["test_id"] == "CODE1",
    }[kind](received)


@pytest.mark.parametrize(
    ("kind", "fake_class", "options"),
    [
        ("ga4", FakeGA4,
         lambda f: {"measurement_id": f.measurement_id, "api_secret": f.api_secret}),
        ("snapchat", FakeSnapchat, lambda f: {"pixel_id": f.pixel_id, "access_token": f.token}),
        ("pinterest", FakePinterest,
         lambda f: {"ad_account_id": f.ad_account_id, "access_token": f.token}),
        ("tiktok", FakeTikTok,
         lambda f: {"pixel_code": f.pixel_code, "access_token": f.access_token}),
        ("reddit", FakeReddit, lambda f: {"pixel_id": f.pixel_id, "access_token": f.token}),
    ],
)  # fmt: skip
async def test_send_test_uses_each_platforms_test_mode(kind: str, fake_class: Any, options: Any):
    fake = fake_class()
    await fake.start()
    try:
        cfg = DestinationConfig(name=kind, type=kind, endpoint=fake.base_url, options=options(fake))
        result = await inspection.send_test(cfg, int(time.time() * 1000), "CODE1")
        assert (result["status"], result["outcome"]) == (200, "delivered"), result
        [received] = fake.received
        assert _sent_in_test_mode(kind, received), received
    finally:
        await fake.close()


def test_linkedin_has_no_test_mode_and_refuses_unless_really_sent():
    cfg = DestinationConfig(name="li", type="linkedin", options={"access_token": "t"})
    with pytest.raises(inspection.InspectError, match="--really-send"):
        inspection.with_test_mode(cfg)
    assert inspection.with_test_mode(cfg, really_send=True)[0] is cfg


def test_operator_queries_use_their_indexes(tmp_path: Path):
    """The statements that would otherwise scan millions of rows (see relay/inspection.py)."""
    from relay.store import migrate_file

    migrate_file(tmp_path / "relay.db")
    conn = sqlite3.connect(tmp_path / "relay.db")
    where, params = inspection.DeadFilter(destination="meta", reason="x").where()
    all_where, all_params = inspection.DeadFilter().where()
    cursor = {"after_dest": "", "after_ms": 0, "after_id": 0, "batch": 1}
    expected = {
        inspection.SQL_FINISHED_COUNTS: ({"destination": "d", "hour_ago": 0, "day_ago": 0},
                                      "COVERING INDEX deliveries_finished"),
        inspection.SQL_LAST_FAILURES: ({"day_ago": 0}, "INDEX attempts_failed"),
        inspection.SQL_RECENT_FAILURES: ({"limit": 20}, "INDEX attempts_failed"),
        inspection.SQL_EVENTS_BY_KEYS.format("?"): (("x", 1), "INDEX events_dedup_key"),
        inspection.SQL_BACKLOG: ({"now": 0, "destination": "d"}, "INDEX deliveries_due"),
        inspection.SQL_DEAD_LIST.format(where=where): ({**params, "limit": 1},
                                                    "INDEX deliveries_finished"),
        inspection.SQL_DEAD_BATCH.format(where=all_where): ({**all_params, **cursor},
                                                         "INDEX deliveries_finished"),
    }  # fmt: skip
    try:
        for sql, (args, index) in expected.items():
            plan = " / ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            assert index in plan.split(" / ")[0], (sql, plan)
            assert "SCAN d " not in plan and "SCAN deliveries" not in plan, plan
    finally:
        conn.close()


def test_parse_time():
    now = 1_767_225_600_000
    assert inspection.parse_time_ms("2h", now) == now - 2 * 3_600_000
    assert inspection.parse_time_ms("2026-01-01T00:00:00Z", now) == now
    assert inspection.parse_time_ms("2026-01-01 01:00:00+01:00", now) == now
    assert inspection.parse_time_ms(str(now), now) == now
    with pytest.raises(inspection.InspectError, match="not a time"):
        inspection.parse_time_ms("yesterday", now)
