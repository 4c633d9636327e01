"""Segment's @segment/analytics-node, the real library from the npm registry, sending to an
in-process relay on a loopback port.

tests/clients/node/send.mjs makes the calls with the library and prints what it did as JSON
lines (its requests, relay's answers, each call's messageId and any library error); `make test`
installs the library there with `npm ci` from the committed package-lock.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.clients.scenario import (
    BIRTHDAY,
    GROUP_ID,
    ORDER,
    PAGE,
    PREVIOUS_ID,
    TRAITS,
    USER_ID,
    Answers,
    Exchange,
    check_stored_once,
    deliver_and_check,
    describe,
    order_time,
    relay_host,
)
from tests.conftest import SERVER_KEY, MakeRelay, Relay
from tests.fakes import FakeWebhook

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "send.mjs"
LIBRARY = NODE_DIR / "node_modules" / "@segment" / "analytics-node" / "package.json"


def calls(ordered_at: datetime) -> list[dict[str, Any]]:
    """The calls send.mjs makes; dates as JSON.stringify writes a Date."""
    user = {"userId": USER_ID}
    birthday = f"{BIRTHDAY.isoformat()}T00:00:00.000Z"
    timestamp = ordered_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    order = {"event": "Order Completed", "properties": ORDER, "timestamp": timestamp}
    return [
        {"method": "identify", "params": user | {"traits": TRAITS | {"birthday": birthday}}},
        {"method": "track", "params": user | order},
        {"method": "page", "params": user | {"name": "Checkout", "properties": PAGE}},
        {"method": "group", "params": user | {"groupId": GROUP_ID, "traits": {"name": "Acme"}}},
        {"method": "alias", "params": user | {"previousId": PREVIOUS_ID}},
    ]


@dataclass
class NodeRun:
    returncode: int
    lines: list[dict[str, Any]]
    stderr: str
    exchanges: list[Exchange]
    ids: dict[str, str]  # method -> the messageId the library gave the call

    def describe(self) -> str:
        output = "\n".join(json.dumps(line) for line in self.lines)
        return f"exit {self.returncode}\n{output}\n{self.stderr}"


def node() -> str:
    """The node binary; fails (never skips) when the Node client cannot run."""
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not on PATH: the Node client test needs Node.js 20 or newer")
    if not LIBRARY.is_file():
        pytest.fail(
            f"{LIBRARY.parent} is missing: run `make test`, which installs the Node test "
            "dependencies (npm ci --prefix tests/clients/node) before running pytest"
        )
    return path


def parse(line: str) -> dict[str, Any]:
    try:
        parsed = json.loads(line)
    except json.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"event": "output", "text": line}


async def send(relay: Relay, ordered_at: datetime, **env: str) -> NodeRun:
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(SCRIPT),
        json.dumps(calls(ordered_at)),
        cwd=NODE_DIR,
        env={**os.environ, "HOST": relay_host(relay), "WRITE_KEY": SERVER_KEY, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    lines = [parse(line) for line in out.decode().splitlines() if line.strip()]
    exchanges = []
    request_headers: dict[str, str] = {}
    for line in lines:
        if line["event"] == "http_request":
            request_headers = line["headers"]
        elif line["event"] == "http_response":
            exchanges.append(
                Exchange(
                    path=urlsplit(line["url"]).path,
                    status=line["status"],
                    request_headers=request_headers,
                    message_ids=[m["messageId"] for m in line["body"]["batch"]],
                    response_headers=line["headers"],
                    response_body=b"",  # the library does not expose it
                )
            )
    ids = {line["method"]: line["messageId"] for line in lines if line["event"] == "sent"}
    return NodeRun(proc.returncode, lines, err.decode(), exchanges, ids)


def check_wire(exchanges: list[Exchange]) -> None:
    for exchange in exchanges:
        assert exchange.path == "/v1/batch"
        assert exchange.request_headers["Authorization"].startswith("Basic ")


async def test_calls_arrive_once_with_the_mapped_fields(
    make_relay: MakeRelay, webhook: FakeWebhook
):
    relay = await make_relay(webhook_url=webhook.url)
    ordered_at = order_time()
    run = await send(relay, ordered_at, MAX_RETRIES="1")
    assert run.returncode == 0, run.describe()
    assert sorted(run.ids) == ["alias", "group", "identify", "page", "track"], run.describe()
    check_wire(run.exchanges)
    assert {e.status for e in run.exchanges} == {200}, describe(run.exchanges)
    assert sorted(i for e in run.exchanges for i in e.message_ids) == sorted(run.ids.values())
    await check_stored_once(relay, run.ids)
    await deliver_and_check(relay, webhook, run.ids, ordered_at)


async def test_a_refused_batch_is_resent_by_the_library_and_stored_once(
    make_relay: MakeRelay, webhook: FakeWebhook, monkeypatch: pytest.MonkeyPatch
):
    relay = await make_relay(webhook_url=webhook.url)
    answers = Answers(relay, monkeypatch)
    answers.refuse(1)
    ordered_at = order_time()
    run = await send(relay, ordered_at, MAX_RETRIES="3")
    assert run.returncode == 0, run.describe()
    check_wire(run.exchanges)
    refused, *later = run.exchanges
    assert refused.status == 503, describe(run.exchanges)
    assert refused.retry_after == "1"
    assert later and {e.status for e in later} == {200}, describe(run.exchanges)
    # the library's own retry resent the same batch: same messageIds, counted as a retry
    assert later[0].message_ids == refused.message_ids
    assert later[0].request_headers["X-Retry-Count"] == "1"
    assert answers.statuses == [e.status for e in run.exchanges]
    await check_stored_once(relay, run.ids)
    await deliver_and_check(relay, webhook, run.ids, ordered_at)
