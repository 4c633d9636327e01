"""Admin HTTP API (``/v1/admin/...``) and the read-only status page (``/admin``).

Both sit behind ``[server] admin_key``, compared in constant time; without a configured key the
routes answer 404, like any unknown path, and a source key is just a wrong key (401). Reads open
their own read-only SQLite connection in a thread, never the daemon's writer connection; replay
and drop write in short transactions on a connection of their own, in a thread too.
"""

from __future__ import annotations

import asyncio
import hmac
import sqlite3
import urllib.request
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web

from relay import inspection
from relay.inspection import DeadFilter, InspectError, format_age, format_ms
from relay.state import STATE
from relay.worker import DeliveryWorker

T = TypeVar("T")

PAGE_REFRESH_S = 10
RECENT_FAILURES = 20
MAX_LIST = 1000
# The page shows delivery errors, which quote what platforms answered: nothing in it may run,
# load, frame it or leak its URL (which may hold the key).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
API_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
_FILTER_KEYS = {"destination", "reason", "since", "until", "ids", "all", "dry_run"}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/admin/status", get_status)
    app.router.add_get("/v1/admin/events/{event_id:.+}", get_event)
    app.router.add_get("/v1/admin/dead", get_dead)
    app.router.add_get(r"/v1/admin/dead/{delivery_id:\d+}", get_dead_one)
    app.router.add_post("/v1/admin/dead/replay", post_replay)
    app.router.add_post("/v1/admin/dead/drop", post_drop)
    app.router.add_get("/admin", get_page)


# ---- handlers


async def get_status(request: web.Request) -> web.Response:
    _authorize(request)
    return _json(await _status(request))


async def get_event(request: web.Request) -> web.Response:
    _authorize(request)
    event_id = request.match_info["event_id"]
    events = await _db(request, inspection.event_report, event_id)
    if not events:
        return _json({"error": "no event with this event_id"}, status=404)
    return _json({"event_id": event_id, "events": events})


async def get_dead(request: web.Request) -> web.Response:
    _authorize(request)
    unknown = set(request.query) - {"destination", "reason", "since", "until", "limit"}
    if unknown:
        raise _bad(f"unknown parameter: {sorted(unknown)[0]}")
    filters = _filters(request.query, request.app[STATE].clock.now_ms())
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise _bad("limit: must be an integer") from None
    if not 1 <= limit <= MAX_LIST:
        raise _bad(f"limit: must be between 1 and {MAX_LIST}")
    rows = await _db(request, inspection.dead_list, filters, limit)
    return _json({"dead": rows})


async def get_dead_one(request: web.Request) -> web.Response:
    _authorize(request)
    found = await _db(request, inspection.dead_show, int(request.match_info["delivery_id"]))
    if found is None:
        return _json({"error": "no delivery with this id"}, status=404)
    return _json(found)


async def post_replay(request: web.Request) -> web.Response:
    _authorize(request)
    state = request.app[STATE]
    now_ms = state.clock.now_ms()
    filters, dry_run = await _write_request(request, now_ms)
    requeued, skipped = await _db(
        request, inspection.dead_replay, filters, now_ms, dry_run=dry_run, readonly=dry_run
    )
    if not dry_run and requeued:
        # The store counts pending rows in memory (ingest backpressure); these came back.
        state.store.pending += requeued
        for name, worker in state.workers.items():
            if filters.destination in (None, name):
                worker.wake()
    return _json({"requeued": requeued, "skipped_past_window": skipped, "dry_run": dry_run})


async def post_drop(request: web.Request) -> web.Response:
    _authorize(request)
    filters, dry_run = await _write_request(request, request.app[STATE].clock.now_ms())
    dropped = await _db(request, inspection.dead_drop, filters, dry_run=dry_run, readonly=dry_run)
    return _json({"dropped": dropped, "dry_run": dry_run})


async def get_page(request: web.Request) -> web.Response:
    _authorize(request, allow_query_key=True)
    status = await _status(request)
    failures = await _db(request, inspection.recent_failures, RECENT_FAILURES)
    return web.Response(
        text=render_page(status, failures), content_type="text/html", headers=PAGE_HEADERS
    )


# ---- helpers


def _authorize(request: web.Request, *, allow_query_key: bool = False) -> None:
    """404 without a configured admin key; 401 unless the request carries it."""
    admin_key = request.app[STATE].config.server.admin_key
    if admin_key is None:
        raise web.HTTPNotFound()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if not given and allow_query_key:
        # for browsers, which cannot set the header: the key is then in the URL
        given = request.query.get("key", "")
    if not hmac.compare_digest(given.encode(), admin_key.encode()):
        raise web.HTTPUnauthorized(
            text='{"error": "admin key required: Authorization: Bearer <[server] admin_key>"}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="relay admin"', **API_HEADERS},
        )


async def _db(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(conn, *args)`` on a fresh connection, in a thread; read-only unless told."""
    path = request.app[STATE].config.storage.path
    readonly = kwargs.pop("readonly", True)
    try:
        return await asyncio.to_thread(_with_connection, path, readonly, fn, *args, **kwargs)
    except (InspectError, sqlite3.Error) as exc:
        raise web.HTTPServiceUnavailable(
            text=orjson.dumps({"error": f"database: {exc}"}).decode(),
            content_type="application/json",
            headers=API_HEADERS,
        ) from None


def _with_connection(
    path: Path, readonly: bool, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    conn = inspection.connect(path, readonly=readonly)
    try:
        return fn(conn, *args, **kwargs)
    finally:
        conn.close()


async def _status(request: web.Request) -> dict[str, Any]:
    state = request.app[STATE]
    now_ms = state.clock.now_ms()
    names = [d.name for d in state.destinations]
    rows = await _db(request, inspection.destination_status, now_ms, names)
    for row in rows:
        worker = state.workers.get(row["destination"])
        row["worker"] = None if worker is None else worker_state(worker, now_ms)
    return {"now_ms": now_ms, "destinations": rows}


def worker_state(worker: DeliveryWorker, now_ms: int) -> dict[str, Any]:
    """What only the running daemon knows: circuit, pause, the last transient error."""
    breaker = worker.breaker
    circuit = breaker.state
    if circuit == "open" and breaker.allows(now_ms):
        circuit = "half-open"  # the cooldown passed: the next batch is a probe
    return {
        "circuit": circuit,
        "consecutive_failures": breaker.failures,
        "reopens_at_ms": breaker.reopen_at_ms() if breaker.state == "open" else None,
        "paused": worker.paused,
        "last_error": worker.last_error,
        "running": worker.alive,
    }


async def _write_request(request: web.Request, now_ms: int) -> tuple[DeadFilter, bool]:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise _bad("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("body: must be a JSON object")
    if unknown := set(body) - _FILTER_KEYS:
        raise _bad(f"{sorted(unknown)[0]}: unknown key")
    filters = _filters(body, now_ms)
    for flag in ("all", "dry_run"):
        if not isinstance(body.get(flag, False), bool):
            raise _bad(f"{flag}: must be true or false")
    if filters.empty and not body.get("all", False):
        raise _bad('no filter: give destination, reason, since, until or ids, or "all": true')
    return filters, bool(body.get("dry_run", False))


def _filters(data: Mapping[str, Any], now_ms: int) -> DeadFilter:
    def text(name: str) -> str | None:
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise _bad(f"{name}: must be a non-empty string")
        return value

    def moment(name: str) -> int | None:
        value = data.get(name)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if not isinstance(value, str):
            raise _bad(f"{name}: must be epoch ms, a duration ago or an ISO 8601 time")
        try:
            return inspection.parse_time_ms(value, now_ms)
        except InspectError as exc:
            raise _bad(f"{name}: {exc}") from None

    ids = data.get("ids", [])
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise _bad("ids: must be a list of delivery ids")
    return DeadFilter(
        destination=text("destination"),
        reason=text("reason"),
        since_ms=moment("since"),
        until_ms=moment("until"),
        ids=tuple(ids),
    )


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": message}).decode(),
        content_type="application/json",
        headers=API_HEADERS,
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=API_HEADERS,
    )


# ---- the status page (pure: data in, HTML out; every value escaped)

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.err { max-width: 40em; overflow-wrap: anywhere; color: #a00; }
.bad { color: #a00; font-weight: bold; }
.small { color: #666; font-size: 12px; }
"""
_STATUS_COLUMNS = (
    "destination", "state", "pending", "in flight", "oldest", "delivered 1h / 24h",
    "dead 1h / 24h", "expired 1h / 24h", "last error (24h)",
)  # fmt: skip
_FAILURE_COLUMNS = ("time", "destination", "event", "attempt", "HTTP", "outcome", "detail")


def render_page(status: dict[str, Any], failures: list[dict[str, Any]]) -> str:
    now_ms = status["now_ms"]
    rows = []
    for d in status["destinations"]:
        rows.append(
            "<tr>"
            + _td(d["destination"])
            + _state_cell(d.get("worker"))
            + _td(d["pending"], "n")
            + _td(d["in_flight"], "n")
            + _td(format_age(d["oldest_pending_age_s"]), "n")
            + "".join(
                _td(f"{d[f'{s}_1h']} / {d[f'{s}_24h']}", "n")
                for s in ("delivered", "dead", "expired")
            )
            + _td(_error_text(d["last_error"], d["last_error_at_ms"], now_ms), "err")
            + "</tr>"
        )
    failure_rows = [
        "<tr>"
        + _td(format_ms(f["started_at_ms"]))
        + _td(f["destination"])
        + _td(f"{f['event_name']} {f['event_id']}")
        + _td(f["attempt"], "n")
        + _td("-" if f["http_status"] is None else f["http_status"], "n")
        + _td(f["outcome"])
        + _td(f["detail"] or "", "err")
        + "</tr>"
        for f in failures
    ]
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{PAGE_REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>relay status</title><style>{_STYLE}</style></head><body>"
        "<h1>relay</h1>"
        f'<p class="small">as of {escape(format_ms(now_ms))}; this page refreshes every '
        f"{PAGE_REFRESH_S} s</p>"
        f"<h2>Destinations</h2>{_table(_STATUS_COLUMNS, rows, 'no destinations configured')}"
        f"<h2>Recent failures</h2>{_table(_FAILURE_COLUMNS, failure_rows, 'no failures')}"
        "</body></html>\n"
    )


def _table(columns: tuple[str, ...], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="small">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _td(value: Any, css: str | None = None) -> str:
    attr = f' class="{css}"' if css else ""
    return f"<td{attr}>{escape(str(value))}</td>"


def _state_cell(worker: dict[str, Any] | None) -> str:
    if worker is None:
        return _td("-")
    if worker["paused"]:
        return f'<td class="bad">paused: {escape(worker["paused"])}</td>'
    circuit = worker["circuit"]
    return _td(f"circuit {circuit}", "bad" if circuit != "closed" else None)


def _error_text(error: str | None, at_ms: int | None, now_ms: int) -> str:
    if error is None or at_ms is None:
        return ""
    return f"{format_age((now_ms - at_ms) / 1000)} ago: {error}"


# ---- client side, for `relay status`: the live state of a running daemon


def fetch_status(base_url: str, admin_key: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    """``GET /v1/admin/status`` of a running relay, or None if it cannot be had."""
    req = urllib.request.Request(
        base_url.rstrip("/") + "/v1/admin/status",
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            data: dict[str, Any] = orjson.loads(resp.read())
            return data
    except (OSError, ValueError):
        return None
