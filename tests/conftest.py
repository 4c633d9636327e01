"""Shared fixtures: configs written as real TOML files, relay apps on loopback, fakes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from relay.app import create_app
from relay.clock import FakeClock
from relay.config import Config, load_config
from relay.state import STATE, AppState
from tests.fakes import FakeWebhook

SERVER_KEY = "test-server-key"
BROWSER_KEY = "test-browser-key"
WEBHOOK_SECRET = "test-webhook-secret"
ORIGIN = "https://shop.example"


def write_config(
    directory: Path,
    *,
    webhook_url: str | None = "http://127.0.0.1:9/hook",
    destination_extra: str = "",
    storage_extra: str = "",
    server_extra: str = "",
    extra: str = "",
) -> Path:
    """A relay.toml with a server source, a browser source and (optionally) a webhook."""
    text = f"""
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["10.0.0.0/8"]
{server_extra}

[storage]
path = "relay.db"
dry_run_log = "dry-run.jsonl"
{storage_extra}

[[sources]]
name = "backend"
key = "{SERVER_KEY}"
kind = "server"
time = "client"
max_age = "7d"

[[sources]]
name = "web"
key = "{BROWSER_KEY}"
kind = "browser"
allowed_origins = ["{ORIGIN}"]
time = "corrected"
"""
    if webhook_url:
        text += f"""
[[destinations]]
name = "hook"
type = "webhook"
url = "{webhook_url}"
secret = "{WEBHOOK_SECRET}"
backoff_base = "10s"
circuit_threshold = 3
{destination_extra}
"""
    path = directory / "relay.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


class Relay:
    """A relay app under test: HTTP client plus direct access to its state."""

    def __init__(self, client: TestClient, config: Config) -> None:
        self.client = client
        self.config = config

    @property
    def state(self) -> AppState:
        return self.client.server.app[STATE]

    async def post(self, body: Any, key: str = SERVER_KEY, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return await self.client.post("/v1/events", json=body, headers=headers, **kwargs)

    def worker(self, name: str = "hook") -> Any:
        return self.state.workers[name]


@pytest.fixture
def clock() -> FakeClock:
    # Fake time starts at the real "now" so events stamped by tests fall inside max_age.
    return FakeClock(start_ms=int(time.time() * 1000))


@pytest.fixture
async def webhook() -> AsyncIterator[FakeWebhook]:
    fake = FakeWebhook(secret=WEBHOOK_SECRET)
    await fake.start()
    yield fake
    await fake.close()


MakeRelay = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeRelay]:
    """Start a relay app from a written config; workers are driven by the test unless
    ``start_workers=True``."""
    clients: list[TestClient] = []

    async def make(start_workers: bool = False, **config_kw: Any) -> Relay:
        config = load_config(write_config(tmp_path, **config_kw))
        app = create_app(config, clock=clock, start_workers=start_workers)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Relay(client, config)

    yield make
    for client in clients:
        await client.close()


def event(event_id: str, name: str = "purchase", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_name": name,
        "user": {"email": "Buyer@Example.com"},
        "properties": {"value": 10.5, "currency": "EUR"},
    }
    body.update(fields)
    return body
