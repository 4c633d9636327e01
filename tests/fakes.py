"""Fake destination servers: real aiohttp apps on 127.0.0.1 that validate like the real thing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

# (status, headers, body) answered for one request
Reply = tuple[int, dict[str, str], bytes]


@dataclass
class FakeWebhook:
    """Verifies the HMAC signature, records each request's events, answers from a script.

    ``script`` replies are used in order, then ``default`` forever. ``reject`` returns a reply
    for a batch it dislikes (e.g. containing a bad event), checked before the script.
    """

    secret: str
    script: list[Reply] = field(default_factory=list)
    default: Reply = (200, {}, b'{"ok": true}')
    reject: Callable[[list[dict[str, Any]]], Reply | None] | None = None
    requests: list[list[dict[str, Any]]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    # when set, requests wait for this event before being answered (a hung platform)
    hold: asyncio.Event | None = None
    bad_signatures: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hook"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Relay-Signature", ""), expected):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        events = orjson.loads(body)["events"]
        self.requests.append(events)
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        reply = self.reject(events) if self.reject else None
        if reply is None:
            reply = self.script.pop(0) if self.script else self.default
        status, headers, payload = reply
        if 200 <= status < 300:
            self.delivered.extend(events)
            self.arrived.set()
        return web.Response(status=status, headers=headers, body=payload)

    def delivered_ids(self) -> list[str]:
        return [e["event_id"] for e in self.delivered]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        """Wait until ``predicate()`` holds, re-checked after each request and delivery."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class Received:
    """One request a fake platform accepted for inspection."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON


@dataclass
class FakeApi:
    """Base of the fake ad-platform servers: a real aiohttp app on 127.0.0.1.

    Subclasses set ``routes`` (method, path pattern) and implement ``check(request, body)``,
    which validates like the real API and returns an error reply (the platform's real error
    shape) or None; ``accept(request, body)`` then returns the success reply. ``script``
    replies, when queued, override everything in order (e.g. 503, 503, then the real answer).
    """

    routes: tuple[tuple[str, str], ...] = ()
    script: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    rejected: list[tuple[Received, Reply]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        for method, path in self.routes:
            app.router.add_route(method, path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        seen = Received(
            request.method, request.path, dict(request.query), dict(request.headers), body
        )
        self.arrived.set()
        if self.script:
            reply = self.script.pop(0)
        else:
            reply = self.check(request, body) or self.accept(request, body)
        status, headers, payload = reply
        if 200 <= status < 300:
            self.received.append(seen)
        else:
            self.rejected.append((seen, reply))
        return web.Response(status=status, headers=headers, body=payload)

    def check(self, request: web.Request, body: Any) -> Reply | None:
        return None

    def accept(self, request: web.Request, body: Any) -> Reply:
        return 200, {}, b"{}"

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, orjson.dumps(body)
