"""Operator queries and actions: status, event reports, dead letters, backup, test sends.

Functions on a ``sqlite3.Connection`` of the caller's own (``connect``), never the daemon's
writer: the CLI calls them directly, the admin API through ``asyncio.to_thread``. WAL lets reads
run beside the daemon's writes; replay and drop write in ``BEGIN IMMEDIATE`` transactions of at
most ``BATCH_ROWS`` rows, so the daemon's writer waits one short batch at most (busy_timeout).

Indexes used: ``deliveries_due`` (backlog), ``deliveries_finished`` (hour/day counts, dead
letters), ``attempts_failed`` (errors), ``event_names``. Statements repeat a partial index's
WHERE term verbatim (``_FINISHED``): that is how SQLite knows the index applies.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

import orjson

from relay.config import DestinationConfig, SourceConfig, parse_duration_s
from relay.destinations.base import HttpRequest, HttpResponse
from relay.normalize import dedup_key

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
# rows per write transaction: a few ms of the write lock, so the daemon never waits long
BATCH_ROWS = 1000

Progress = Callable[[int, int], None]  # (done, total)

_FINISHED = "d.state IN ('delivered', 'dead', 'expired')"
_DEAD = f"{_FINISHED} AND d.state = 'dead'"

# ---- status

SQL_BACKLOG = """
SELECT count(*), coalesce(sum(state = 'leased' AND next_attempt_at_ms > :now), 0),
       min(created_at_ms)
  FROM deliveries WHERE destination = :destination AND state IN ('pending', 'leased')
"""
SQL_FINISHED_COUNTS = f"""
SELECT d.state, count(*), sum(d.updated_at_ms >= :hour_ago) FROM deliveries d
 WHERE {_FINISHED} AND d.destination = :destination AND d.updated_at_ms >= :day_ago
 GROUP BY d.state
"""
# newest failed attempt per destination in the last day (bare columns come from the max() row)
SQL_LAST_FAILURES = """
SELECT d.destination, a.detail, max(a.started_at_ms) FROM attempts a
  JOIN deliveries d ON d.id = a.delivery_id
 WHERE a.outcome <> 'delivered' AND a.started_at_ms >= :day_ago
 GROUP BY d.destination
"""
SQL_RECENT_FAILURES = """
SELECT a.started_at_ms, d.destination, e.event_name, e.event_id, a.delivery_id, a.attempt,
       a.http_status, a.outcome, a.detail
  FROM attempts a JOIN deliveries d ON d.id = a.delivery_id JOIN events e ON e.id = d.event_rowid
 WHERE a.outcome <> 'delivered' ORDER BY a.started_at_ms DESC, a.id DESC LIMIT :limit
"""

# ---- events

_EVENT = (
    "SELECT id, event_name, event_id, source, received_at_ms, event_time_ms, time_rule, payload"
)
SQL_EVENT_NAMES = "SELECT name FROM event_names"
# the dedup key of (name, id) for each known name, plus a few probe steps past each key: where a
# 64-bit hash collision moved an event (store.py, open addressing)
SQL_EVENTS_BY_KEYS = f"{_EVENT} FROM events WHERE event_id = ? AND dedup_key IN ({{}}) ORDER BY id"
COLLISION_PROBES = 4
_DELIVERY_COLUMNS = (
    "d.id, d.destination, d.state, d.attempts, d.next_attempt_at_ms, d.deadline_ms,"
    " d.created_at_ms, d.updated_at_ms, d.last_error"
)
SQL_DELIVERIES_OF_EVENT = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d WHERE d.event_rowid = ?"
SQL_DELIVERY = (
    f"SELECT {_DELIVERY_COLUMNS}, e.event_name, e.event_id FROM deliveries d"
    " JOIN events e ON e.id = d.event_rowid WHERE d.id = ?"
)
# every column, so what later migrations add to the delivery log (trace ids) shows up too
SQL_ATTEMPTS_OF_DELIVERY = "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY id"

# ---- dead letters: _DEAD plus the filter terms a DeadFilter sets

_FILTER_TERMS = {
    "destination": "d.destination = :destination",
    "reason": "d.last_error LIKE :reason ESCAPE '\\'",
    "since_ms": "d.updated_at_ms >= :since_ms",
    "until_ms": "d.updated_at_ms < :until_ms",
    "ids": "d.id IN (SELECT value FROM json_each(:ids))",
}
SQL_DEAD_LIST = """
SELECT d.id, d.destination, e.event_name, e.event_id, d.attempts, d.created_at_ms,
       d.updated_at_ms, d.deadline_ms, d.last_error
  FROM deliveries d JOIN events e ON e.id = d.event_rowid
 WHERE {where} ORDER BY d.updated_at_ms DESC, d.id DESC LIMIT :limit
"""
SQL_DEAD_COUNT = (
    "SELECT count(*), coalesce(sum(d.deadline_ms > :now), 0) FROM deliveries d WHERE {where}"
)
# keyset pagination in index order: each batch starts where the previous one stopped
SQL_DEAD_BATCH = """
SELECT d.id, d.destination, d.updated_at_ms, d.deadline_ms FROM deliveries d
 WHERE {where} AND (d.destination, d.updated_at_ms, d.id) > (:after_dest, :after_ms, :after_id)
 ORDER BY d.destination, d.updated_at_ms, d.id LIMIT :batch
"""
# attempts restart at 0: a replay gets a fresh max_attempts budget (the attempt log keeps the
# earlier tries); last_error stays until the next attempt replaces it
SQL_REQUEUE = """
UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at_ms = :now,
       lease_token = NULL, updated_at_ms = :now
 WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'dead'
"""
# attempts go with their delivery (ON DELETE CASCADE); the event stays for retention
SQL_DROP = (
    "DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'dead'"
)


class InspectError(RuntimeError):
    """An operator request that cannot be done, with a message for the operator."""


@dataclass(frozen=True)
class DeadFilter:
    destination: str | None = None
    reason: str | None = None  # case-insensitive substring of last_error
    since_ms: int | None = None  # died at or after (updated_at_ms)
    until_ms: int | None = None  # died before
    ids: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return self == DeadFilter()

    def where(self) -> tuple[str, dict[str, Any]]:
        terms, params = [_DEAD], {}
        for name, term in _FILTER_TERMS.items():
            value = getattr(self, name)
            if value is None or value == ():
                continue
            terms.append(term)
            if name == "reason":
                value = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                value += "%"
            elif name == "ids":
                value = orjson.dumps(list(value)).decode()
            params[name] = value
        return " AND ".join(terms), params


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """Open the relay database; never creates it. ``readonly`` opens it ``mode=ro``."""
    if not path.is_file():
        raise InspectError(f"{path}: no such database (check [storage] path, or run relay migrate)")
    uri = f"file:{pathname2url(str(path.resolve()))}?mode={'ro' if readonly else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")  # drop relies on ON DELETE CASCADE
    if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
        conn.close()
        raise InspectError(f"{path}: not a relay database (no schema version)")
    return conn


def _write_batch(conn: sqlite3.Connection, sql: str, ids: list[int], now_ms: int) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        changed = conn.execute(sql, {"ids": orjson.dumps(ids).decode(), "now": now_ms}).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return changed


# ---- status


def destination_status(
    conn: sqlite3.Connection, now_ms: int, destinations: list[str]
) -> list[dict[str, Any]]:
    """Per destination: backlog, in flight, oldest pending age, finished counts of the last
    hour and day, and the newest failed attempt's message of the last day (older failures are
    in ``dead_list``). Cost: the backlog rows, the index entries of the rows finished in the
    last day, and the failed attempts of the last day."""
    hour_ago, day_ago = now_ms - HOUR_MS, now_ms - DAY_MS
    failures = {
        dest: (detail, at_ms)
        for dest, detail, at_ms in conn.execute(SQL_LAST_FAILURES, {"day_ago": day_ago})
    }
    rows = []
    for name in destinations:
        backlog, in_flight, oldest = conn.execute(
            SQL_BACKLOG, {"now": now_ms, "destination": name}
        ).fetchone()
        row: dict[str, Any] = {
            "destination": name,
            "pending": backlog - in_flight,
            "in_flight": in_flight,
            "oldest_pending_age_s": None if oldest is None else max(0, now_ms - oldest) / 1000,
            **{f"{s}_{w}": 0 for s in ("delivered", "dead", "expired") for w in ("1h", "24h")},
        }
        args = {"destination": name, "hour_ago": hour_ago, "day_ago": day_ago}
        for state, day, hour in conn.execute(SQL_FINISHED_COUNTS, args):
            row[f"{state}_1h"], row[f"{state}_24h"] = hour, day
        row["last_error"], row["last_error_at_ms"] = failures.get(name, (None, None))
        rows.append(row)
    return rows


def recent_failures(conn: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    return _dicts(conn.execute(SQL_RECENT_FAILURES, {"limit": limit}))


# ---- events


def event_report(conn: sqlite3.Connection, event_id: str) -> list[dict[str, Any]]:
    """Every stored event with this id (any name): the canonical event as stored (identifiers
    hashed), its deliveries and each delivery's attempts."""
    names = [row[0] for row in conn.execute(SQL_EVENT_NAMES)]
    keys = [
        (key + step + 2**63) % 2**64 - 2**63  # wraps like the store's probe
        for key in (dedup_key(name, event_id) for name in names)
        for step in range(COLLISION_PROBES)
    ]
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        sql = SQL_EVENTS_BY_KEYS.format(",".join("?" * len(part)))
        found += _dicts(conn.execute(sql, (event_id, *part)))
    return [_event_with_deliveries(conn, e) for e in sorted(found, key=lambda e: e["id"])]


def _event_with_deliveries(conn: sqlite3.Connection, event: dict[str, Any]) -> dict[str, Any]:
    event["payload"] = orjson.loads(event["payload"])
    deliveries = _dicts(conn.execute(SQL_DELIVERIES_OF_EVENT, (event["id"],)))
    for delivery in deliveries:
        delivery["attempts_log"] = _attempts(conn, delivery["id"])
    event["deliveries"] = deliveries
    return event


def _attempts(conn: sqlite3.Connection, delivery_id: int) -> list[dict[str, Any]]:
    return _dicts(conn.execute(SQL_ATTEMPTS_OF_DELIVERY, (delivery_id,)))


# ---- dead letters


def dead_list(
    conn: sqlite3.Connection, filters: DeadFilter = DeadFilter(), limit: int = 100
) -> list[dict[str, Any]]:
    """Dead deliveries, newest first."""
    where, params = filters.where()
    return _dicts(conn.execute(SQL_DEAD_LIST.format(where=where), {**params, "limit": limit}))


def dead_show(conn: sqlite3.Connection, delivery_id: int) -> dict[str, Any] | None:
    """One delivery (in any state) with its event's name and id, and its attempts."""
    rows = _dicts(conn.execute(SQL_DELIVERY, (delivery_id,)))
    return {**rows[0], "attempts_log": _attempts(conn, delivery_id)} if rows else None


def dead_count(conn: sqlite3.Connection, filters: DeadFilter, now_ms: int) -> tuple[int, int]:
    """(dead rows matching, of which still inside the platform's window)."""
    where, params = filters.where()
    sql = SQL_DEAD_COUNT.format(where=where)
    total, inside = conn.execute(sql, {**params, "now": now_ms}).fetchone()
    return int(total), int(inside)


def dead_replay(
    conn: sqlite3.Connection, filters: DeadFilter, now_ms: int, *, dry_run: bool = False,
    progress: Progress | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Re-queue matching dead deliveries still inside their platform window (due now, with a
    fresh attempt budget); (requeued, skipped because past the window)."""
    total, inside = dead_count(conn, filters, now_ms)
    if dry_run:
        return inside, total - inside
    requeued = skipped = 0
    for rows in _dead_batches(conn, filters):
        ids = [r[0] for r in rows if r[3] > now_ms]
        skipped += len(rows) - len(ids)
        if ids:
            requeued += _write_batch(conn, SQL_REQUEUE, ids, now_ms)
        if progress is not None:
            progress(requeued + skipped, total)
    return requeued, skipped


def dead_drop(
    conn: sqlite3.Connection, filters: DeadFilter, *, dry_run: bool = False,
    progress: Progress | None = None,
) -> int:  # fmt: skip
    """Delete matching dead deliveries and their attempt log; the number deleted."""
    total, _ = dead_count(conn, filters, 0)
    if dry_run:
        return total
    dropped = 0
    for rows in _dead_batches(conn, filters):
        dropped += _write_batch(conn, SQL_DROP, [r[0] for r in rows], 0)
        if progress is not None:
            progress(dropped, total)
    return dropped


def _dead_batches(conn: sqlite3.Connection, filters: DeadFilter) -> Any:
    """Batches of (id, destination, updated_at_ms, deadline_ms); writes re-check the state."""
    where, params = filters.where()
    sql = SQL_DEAD_BATCH.format(where=where)
    after: tuple[str, int, int] = ("", -1, -1)
    while True:
        args = {**params, "after_dest": after[0], "after_ms": after[1], "after_id": after[2]}
        rows = conn.execute(sql, {**args, "batch": BATCH_ROWS}).fetchall()
        if not rows:
            return
        yield rows
        after = (rows[-1][1], rows[-1][2], rows[-1][0])


# ---- backup


def backup(
    source: Path, target: Path, *, force: bool = False, progress: Progress | None = None
) -> int:
    """Online backup to a temporary file, checked, then renamed to ``target``; pages copied.
    The copy is one read transaction's snapshot: otherwise every daemon write between two steps
    restarts the backup, which on a busy relay may never finish (the WAL grows meanwhile)."""
    if target.exists() and not force:
        raise InspectError(f"{target}: exists (use --force to overwrite)")
    src = connect(source, readonly=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot
        pages = src.execute("PRAGMA page_count").fetchone()[0]
        report = None if progress is None else (lambda _s, left, n: progress(n - left, n))
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst, pages=1024, progress=report)
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
        if check != "ok":
            raise InspectError(f"{target}: the copy failed its integrity check: {check}")
        os.replace(partial, target)
    finally:
        src.close()
        partial.unlink(missing_ok=True)
    return int(pages)


# ---- send-test: one synthetic purchase through the platform's test mode (a boolean option for
# these types: option, what it does)
_TEST_FLAGS = {
    "pinterest": ("test", "test mode (?test=true: validated, not recorded)"),
    "snapchat": ("validate", "validation endpoint only (nothing recorded)"),
    "ga4": ("validate", "validation endpoint only (nothing recorded)"),
}


def with_test_mode(
    cfg: DestinationConfig, test_code: str | None = None, really_send: bool = False
) -> tuple[DestinationConfig, str]:
    """The destination's config switched to its platform's test mode, and what that mode is.
    Refuses where a test would be recorded as a real conversion, unless ``really_send``."""
    kind, options = cfg.type, dict(cfg.options)
    if kind in _TEST_FLAGS:
        flag, mode = _TEST_FLAGS[kind]
        return replace(cfg, options={**options, flag: True}), mode
    if kind in ("meta", "tiktok", "reddit"):
        key = "test_id" if kind == "reddit" else "test_event_code"
        code = test_code or (options.get(key) if kind == "reddit" else cfg.test_event_code)
        if not code:
            raise InspectError(
                f"{cfg.name}: {kind} takes test events with a test code from its Events Manager:"
                f" pass --test-event-code (or set {key} in relay.toml)"
            )
        if kind == "reddit":
            return replace(cfg, options={**options, key: code}), f"test mode (test_id {code})"
        return replace(cfg, test_event_code=code), f"test mode (test_event_code {code})"
    if kind == "webhook":
        return cfg, "a normal signed POST"
    if really_send:
        return cfg, "NO test mode: a real conversion"
    raise InspectError(
        f"{cfg.name}: {kind} has no test mode, so the test event would count as a real"
        " conversion; pass --really-send to send it anyway (LinkedIn: use a dedicated rule)"
    )


def synthetic_event(now_ms: int) -> dict[str, Any]:
    """A canonical purchase as ingest would store it (identifiers hashed), marked as a test."""
    from relay.normalize import RequestContext, normalize_event

    event_id = f"relay-send-test-{now_ms}"
    raw = {
        "event_id": event_id, "event_name": "purchase", "action_source": "website",
        "page": {"url": "https://relay.invalid/send-test"},
        "user": {"email": "send-test@relay.invalid", "external_id": "relay-send-test",
                 "ip": "192.0.2.1", "user_agent": "Mozilla/5.0 (relay send-test)"},
        "properties": {"value": 1.0, "currency": "USD", "order_id": event_id,
                       "contents": [{"id": "relay-send-test", "quantity": 1, "price": 1.0}]},
    }  # fmt: skip
    source = SourceConfig(name="send-test", key="-", kind="server", time="server", max_age_s=60)
    event = normalize_event(raw, source, RequestContext(received_at_ms=now_ms))
    payload: dict[str, Any] = orjson.loads(orjson.dumps(event.payload))
    return payload


async def send_test(
    cfg: DestinationConfig, now_ms: int, test_code: str | None = None, really_send: bool = False
) -> dict[str, Any]:
    """Send one synthetic purchase through the test mode; the platform's answer, redacted."""
    import aiohttp

    from relay.app import USER_AGENT
    from relay.destinations import registry

    test_cfg, mode = with_test_mode(cfg, test_code, really_send)
    cls = registry.get(test_cfg.type)
    assert cls is not None  # load_config validated the type
    destination, event = cls(test_cfg), synthetic_event(now_ms)
    if (reason := destination.unsendable(event)) is not None:
        raise InspectError(f"{cfg.name}: the test event cannot be sent: {reason}")
    validation = destination.validation_request([event])
    request = validation or destination.build_request([event])
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    headers = {"User-Agent": USER_AGENT, **request.headers}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, request.url, headers=headers, data=request.body,
                            timeout=timeout) as resp,
        ):  # fmt: skip
            response = HttpResponse(resp.status, dict(resp.headers), await resp.read())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise InspectError(_scrub(f"{cfg.name}: {type(exc).__name__}: {exc}", request)) from None
    if validation is not None:
        reason = destination.read_validation([event], response)[0]
        ok = reason is None and 200 <= response.status < 300
        outcome, detail = ("delivered" if ok else "permanent"), reason
    else:
        answer = destination.read_response([event], response)[0]
        outcome, detail = answer.kind.value, answer.detail
    return {
        "destination": cfg.name, "type": cfg.type, "mode": mode, "event_id": event["event_id"],
        "request": f"{request.method} {request.redacted()['url']}",
        "status": response.status, "outcome": outcome,
        "detail": None if detail is None else _scrub(detail, request),
        "response": _scrub(response.body.decode("utf-8", "replace"), request),
    }  # fmt: skip


def _scrub(text: str, request: HttpRequest) -> str:
    for secret in request.secrets:  # platforms echo tokens in error messages
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


# ---- pure helpers shared by the CLI and the admin API


def parse_time_ms(text: str, now_ms: int) -> int:
    """``"2h"`` (2 hours ago), an ISO 8601 time (UTC unless it says otherwise), or epoch ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    with suppress(ValueError):
        return now_ms - int(parse_duration_s(text) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InspectError(
            f'"{text}": not a time; use a duration ago ("2h", "3d") or ISO 8601'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_ms(ms: int | None) -> str:
    if ms is None or ms >= 2**61:  # 2**62 is "no platform window" (Destination.deadline_ms)
        return "-" if ms is None else "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_age(seconds: float | None) -> str:
    s = int(seconds or 0)
    if seconds is None or s < 120:
        return "-" if seconds is None else f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _dicts(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
