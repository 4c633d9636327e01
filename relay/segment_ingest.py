"""Segment tracking protocol over HTTP, so existing Segment and RudderStack SDKs send to relay.

The clients' needs are strict (../shared/segment-protocol.md): success is exactly 200 with a JSON
body (one client retries any other 2xx forever), errors are 400/413 with ``code`` and
``message``, overload is 429/503 with an integer Retry-After, and the write key comes as the
Basic user name or as ``writeKey`` in the body. Bodies are JSON whatever the Content-Type says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import orjson
import structlog
from aiohttp import web

from relay import ingest, segment
from relay.config import SourceConfig
from relay.normalize import InvalidEvent, NormalizedEvent, normalize_event
from relay.pii import normalize_user
from relay.state import STATE, AppState
from relay.store import StoreUnavailable

log = structlog.get_logger("relay.segment")

# the protocol's documented limits
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024

SINGLE_PATHS = {
    "track": ("/v1/track", "/v1/t"),
    "page": ("/v1/page", "/v1/p"),
    "screen": ("/v1/screen", "/v1/s"),
    "identify": ("/v1/identify", "/v1/i"),
    "group": ("/v1/group", "/v1/g"),
    "alias": ("/v1/alias", "/v1/a"),
}
# /v1/b is analytics.js's batching (and beacon) path, /v1/import the historical import path
BATCH_PATHS = ("/v1/batch", "/v1/import", "/v1/b")
SETTINGS_PATH = "/v1/projects/{write_key}/settings"

# What identify traits may be remembered per user: hashed identifiers and coarse location, never
# the IP, user agent or click ids of one visit.
IDENTITY_FIELDS = frozenset(
    {"em", "em_google", "ph", "ph_e164", "fn", "ln", "db", "street", "external_id",
     "ge", "ct", "st", "zp", "country"}
)  # fmt: skip

SUCCESS = b'{"success":true}'


def add_routes(app: web.Application) -> None:
    for kind, paths in SINGLE_PATHS.items():
        for path in paths:
            app.router.add_post(path, _handler(kind))
            app.router.add_route("OPTIONS", path, ingest.preflight)
    for path in BATCH_PATHS:
        app.router.add_post(path, _handler(None))
        app.router.add_route("OPTIONS", path, ingest.preflight)
    app.router.add_get(SETTINGS_PATH, settings)


def _handler(kind: str | None) -> Any:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        response = await _handle(request, state, kind)
        state.metrics.count_request(response.status)
        return response

    return handle


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"code": code, "message": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def basic_user(authorization: str) -> str | None:
    """The user part of ``Authorization: Basic`` (Segment's write key, empty password)."""
    if authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def identity_key_hashes(message: dict[str, Any]) -> list[bytes]:
    return [hashlib.sha256(key.encode()).digest() for key in segment.identity_keys(message)]


async def _handle(request: web.Request, state: AppState, kind: str | None) -> web.Response:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(
            413, "payload_too_large", f"body larger than {state.config.server.max_body_bytes} bytes"
        )
    limit = MAX_MESSAGE_BYTES if kind else MAX_BATCH_BYTES
    if len(body) > limit:
        what = "a message" if kind else "a batch"
        return error(
            413,
            "payload_too_large",
            f"{what} may be at most {limit // 1024} KB; got {len(body)} bytes",
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error(400, "invalid_json", f"body is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return error(400, "invalid_body", "body must be a JSON object")
    if kind is None:
        messages = data.get("batch")
        if not isinstance(messages, list) or not messages:
            return error(400, "invalid_batch", "batch: must be a non-empty list of messages")
    else:
        messages = [data]

    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return error(
            401,
            "unauthorized",
            "Bearer is Segment's OAuth; send the write key as the Basic user name",
        )
    key = basic_user(authorization) or data.get("writeKey")
    if not key and isinstance(messages[0], dict):
        key = messages[0].get("writeKey")
    source = (
        state.sources_by_key.get(ingest.key_digest(key)) if isinstance(key, str) and key else None
    )
    if source is None:
        return error(401, "unauthorized", "missing or unknown write key")
    refusal, headers = ingest.check_origin(request, source)
    if refusal is not None:
        return error(403, "forbidden_origin", refusal)
    if (refusal := ingest.ingest_refusal(state)) is not None:
        code = "backlog_full" if refusal.startswith("backlog") else "storage_full"
        return error(503, code, refusal, headers | {"Retry-After": ingest.RETRY_AFTER_S})
    if kind is None:
        for message in messages:
            size = len(orjson.dumps(message))
            if size > MAX_MESSAGE_BYTES:
                message_id = message.get("messageId") if isinstance(message, dict) else None
                return error(
                    400,
                    "message_too_large",
                    f"message {message_id!r} is {size} bytes; a message may be at most 32 KB",
                    headers,
                )

    ctx = ingest.request_context(request, state, data.get("sentAt"))
    events: list[NormalizedEvent] = []
    keyed: list[tuple[NormalizedEvent, list[bytes]]] = []
    errors: list[str] = []
    handled = 0
    for message in messages:
        try:
            if not isinstance(message, dict):
                raise InvalidEvent("message: must be a JSON object")
            message_kind = segment.message_type(message, kind)
            if message_kind == "identify":
                await _remember(state, source, message)
                handled += 1
                continue
            if message_kind in ("group", "alias"):
                handled += 1  # accepted and not stored: no ad platform takes them
                continue
            native = segment.to_native_event(
                message, message_kind, source.event_names, data.get("sentAt")
            )
            event = normalize_event(native, source, ctx)
        except InvalidEvent as exc:
            errors.append(str(exc))
            state.metrics.count_event(source.name, "rejected")
            log.info("segment_message_rejected", source=source.name, error=str(exc))
            continue
        except StoreUnavailable as exc:
            return error(
                503,
                "storage_unavailable",
                f"storage: {exc}; retry later",
                headers | {"Retry-After": ingest.RETRY_AFTER_S},
            )
        events.append(event)
        keyed.append((event, identity_key_hashes(message)))

    for event, key_hashes in keyed:
        await _enrich(state, event, key_hashes)
    if events:
        try:
            stored = await ingest.store_events(state, source, events)
        except StoreUnavailable as exc:
            return error(
                503,
                "storage_unavailable",
                f"storage: {exc}; nothing was stored, retry later",
                headers | {"Retry-After": ingest.RETRY_AFTER_S},
            )
        for outcome in stored:
            state.metrics.count_event(source.name, outcome.status)
    if errors and not events and not handled:
        return error(400, "invalid_message", errors[0], headers)
    return web.Response(status=200, body=SUCCESS, content_type="application/json", headers=headers)


async def _remember(state: AppState, source: SourceConfig, message: dict[str, Any]) -> None:
    """Store an identify call's traits (normalized and hashed) against the user's keys."""
    fields, _ = normalize_user(segment.traits_of(message), source.default_region)
    kept = {k: v for k, v in fields.items() if k in IDENTITY_FIELDS}
    key_hashes = identity_key_hashes(message)
    if kept and key_hashes:
        await state.store.remember_identity(key_hashes, kept)


async def _enrich(state: AppState, event: NormalizedEvent, key_hashes: list[bytes]) -> None:
    """Fill identifiers a track call lacks from the user's earlier identify traits."""
    if not key_hashes:
        return
    known = await state.store.recall_identity(key_hashes, state.config.storage.identity_retention_s)
    if not known:
        return
    user = event.payload.setdefault("user", {})
    for field, value in known.items():
        user.setdefault(field, value)


async def settings(request: web.Request) -> web.Response:
    """The settings document analytics.js fetches from its CDN: pointing the library's CDN host
    at relay makes it send its events here."""
    state = request.app[STATE]
    write_key = request.match_info["write_key"]
    source = state.sources_by_key.get(ingest.key_digest(write_key))
    if source is None:
        return error(404, "not_found", "unknown write key")
    refusal, headers = ingest.check_origin(request, source)
    if refusal is not None:
        return error(403, "forbidden_origin", refusal)
    body = {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{request.host}/v1",
                "protocol": ingest.public_scheme(request, state.config.server.trusted_proxies),
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "remotePlugins": [],
    }
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers | {"Cache-Control": "max-age=300"},
    )
