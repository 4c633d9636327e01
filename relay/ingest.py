"""``POST /v1/events``: authenticate, parse, normalize, store (group commit), answer 202.

The 202 is sent only after the transaction holding the events has committed (invariant 1).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from relay.config import IPNetwork, SourceConfig
from relay.normalize import InvalidEvent, NormalizedEvent, RequestContext, normalize_event
from relay.state import STATE, AppState
from relay.store import InsertResult, StoreUnavailable

log = structlog.get_logger("relay.ingest")

CORS_ALLOW_HEADERS = "authorization, content-type, content-encoding"
RETRY_AFTER_S = "5"


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"error": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def key_digest(key: str) -> bytes:
    # Sources are looked up by the digest of their key, so the lookup time says nothing about
    # how much of a guessed key was right.
    return hashlib.sha256(key.encode()).digest()


def find_source(request: web.Request, state: AppState) -> SourceConfig | None:
    auth = request.headers.get("Authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.query.get("key", "")
    return state.sources_by_key.get(key_digest(key)) if key else None


def origin_allowed(source: SourceConfig, origin: str) -> bool:
    return "*" in source.allowed_origins or origin in source.allowed_origins


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> str | None:
    """The visitor's IP: the socket peer, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (left entries are client-forged)."""
    if peer is None:
        return None
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not _is_trusted(hop, trusted):
            return hop
    return peer


def public_scheme(request: web.Request, trusted: tuple[IPNetwork, ...]) -> str:
    """The scheme clients use: a trusted proxy terminating TLS says so in X-Forwarded-Proto."""
    proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
    if proto in ("http", "https") and request.remote and _is_trusted(request.remote, trusted):
        return proto
    return request.scheme


def _is_trusted(ip: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack listener
    return any(address in net for net in trusted)


async def preflight(request: web.Request) -> web.Response:
    state = request.app[STATE]
    origin = request.headers.get("Origin", "")
    source = find_source(request, state)
    candidates = [source] if source else [s for s in state.config.sources if s.kind == "browser"]
    if not origin or not any(s.kind == "browser" and origin_allowed(s, origin) for s in candidates):
        return error_response(403, f"origin: {origin or '(none)'} is not allowed")
    headers = cors_headers(origin) | {
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": "86400",
    }
    return web.Response(status=204, headers=headers)


async def post_events(request: web.Request) -> web.Response:
    state = request.app[STATE]
    response = await _post_events(request, state)
    state.metrics.count_request(response.status)
    return response


async def _post_events(request: web.Request, state: AppState) -> web.Response:
    source = find_source(request, state)
    if source is None:
        return error_response(
            401,
            "authorization: missing or unknown source key (Authorization: Bearer <key> or ?key=)",
        )
    refusal, headers = check_origin(request, source)
    if refusal is not None:
        return error_response(403, refusal)

    if (refusal := ingest_refusal(state)) is not None:
        return error_response(503, refusal, headers | {"Retry-After": RETRY_AFTER_S})

    try:
        # aiohttp undoes Content-Encoding: gzip and enforces client_max_size on the inflated body.
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = state.config.server.max_body_bytes
        return error_response(413, f"body: larger than max_body_bytes ({limit} bytes)", headers)
    # sendBeacon can only send text/plain, so the content type is not trusted to say JSON.
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error_response(400, f"body: not valid JSON ({exc})", headers)

    envelope_sent_at = None
    if isinstance(data, dict) and "events" in data:
        items = data["events"]
        envelope_sent_at = data.get("sent_at")
        if not isinstance(items, list):
            return error_response(400, "events: must be a list of event objects", headers)
    elif isinstance(data, dict):
        items = [data]
    else:
        return error_response(400, 'body: must be an event object or {"events": [...]}', headers)
    limit = state.config.server.max_events_per_request
    if len(items) > limit:
        return error_response(
            413, f"events: {len(items)} events exceed max_events_per_request ({limit})", headers
        )
    if not items:
        return error_response(400, "events: empty list", headers)

    ctx = request_context(request, state, envelope_sent_at)
    results: list[dict[str, Any]] = []
    accepted: list[NormalizedEvent] = []
    positions: list[int] = []
    for raw in items:
        try:
            event = normalize_event(raw, source, ctx)
        except InvalidEvent as exc:
            results.append(_rejected(raw, str(exc)))
            continue
        positions.append(len(results))
        results.append({"event_id": event.event_id, "status": "accepted"})
        if event.warnings:
            results[-1]["warnings"] = event.warnings
        accepted.append(event)

    if accepted:
        try:
            stored = await store_events(state, source, accepted)
        except StoreUnavailable as exc:
            return error_response(
                503,
                f"storage: {exc}; nothing was stored, retry later",
                headers | {"Retry-After": RETRY_AFTER_S},
            )
        for position, outcome in zip(positions, stored, strict=True):
            results[position]["status"] = outcome.status

    rejected = 0
    for result in results:
        state.metrics.count_event(source.name, result["status"])
        rejected += result["status"] == "rejected"
    status = 400 if rejected == len(results) else 202
    payload: dict[str, Any] = {"results": results}
    if status == 400:
        payload["error"] = results[0]["error"]
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def ingest_refusal(state: AppState) -> str | None:
    """Why ingest must answer 503 before reading the body: a full backlog or a disk nearly full
    (the disk guard's reason). Nothing is acknowledged that could not be stored."""
    if state.store.pending >= state.config.storage.max_backlog:
        return "backlog: the delivery backlog is full; retry later"
    if state.store.refusing is not None:
        return f"{state.store.refusing}; nothing was stored, retry later"
    return None


def check_origin(request: web.Request, source: SourceConfig) -> tuple[str | None, dict[str, str]]:
    """(why a browser request is refused or None, the CORS headers for the answer)."""
    origin = request.headers.get("Origin")
    if not origin:
        return None, {}
    if source.kind != "browser":
        # a server key used from a web page would leak into every visitor's browser
        return (
            f"origin: source {source.name} is a server source; "
            "browsers must use a browser source key"
        ), {}
    if not origin_allowed(source, origin):
        return f"origin: {origin} is not allowed for source {source.name}", {}
    return None, cors_headers(origin)


def request_context(request: web.Request, state: AppState, sent_at: Any = None) -> RequestContext:
    trusted = state.config.server.trusted_proxies
    return RequestContext(
        received_at_ms=state.clock.now_ms(),
        ip=client_ip(request.remote, request.headers.get("X-Forwarded-For"), trusted),
        user_agent=request.headers.get("User-Agent"),
        sent_at=sent_at,
    )


async def store_events(
    state: AppState, source: SourceConfig, events: list[NormalizedEvent]
) -> list[InsertResult]:
    """Commit events with their deliveries (raises StoreUnavailable), count what happened, and
    wake the workers of destinations that got new deliveries."""
    routes = [state.route(e) for e in events]
    stored = await state.store.insert_events(events, routes)
    woken: set[str] = set()
    for event, outcome, event_routes in zip(events, stored, routes, strict=True):
        if outcome.conflict:
            state.metrics.ingest_conflicts.labels(source.name).inc()
            log.info(
                "duplicate_conflict",
                source=source.name,
                event_name=event.event_name,
                event_id=event.event_id,
            )
        if event.id_alias:
            state.metrics.event_id_aliases.labels(source.name, event.id_alias).inc()
        if outcome.status == "accepted":
            woken.update(r.destination for r in event_routes)
    for name in woken:
        if name in state.workers:
            state.workers[name].wake()
    return stored


def _rejected(raw: Any, error: str) -> dict[str, Any]:
    event_id = None
    if isinstance(raw, dict):
        for key in ("event_id", "eventID", "eventId"):
            if isinstance(raw.get(key), str | int) and not isinstance(raw.get(key), bool):
                event_id = str(raw[key])
                break
    return {"event_id": event_id, "status": "rejected", "error": error}
