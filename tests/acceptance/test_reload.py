"""SIGHUP reloads relay.toml in the running daemon: new keys and destinations apply at once, an
invalid file is logged and the running configuration kept."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.acceptance.daemon import Daemon
from tests.conftest import WEBHOOK_SECRET, event
from tests.fakes import FakeWebhook

pytestmark = pytest.mark.acceptance


def config(key: str, hook_name: str, hook_url: str, extra: str = "") -> str:
    return f"""
[storage]
path = "relay.db"

[[sources]]
name = "backend"
key = "{key}"
kind = "server"

[[destinations]]
name = "{hook_name}"
type = "webhook"
url = "{hook_url}"
secret = "{WEBHOOK_SECRET}"
{extra}
"""


async def wait_for_log(daemon: Daemon, text: str, count: int = 1) -> None:
    async with asyncio.timeout(20):
        while True:
            if daemon.log.read_text().count(text) >= count:
                return
            await asyncio.sleep(0.05)  # polling a file another process writes


async def post(session: aiohttp.ClientSession, daemon: Daemon, key: str, event_id: str) -> int:
    async with session.post(
        f"{daemon.url}/v1/events", json=event(event_id), headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        return resp.status


async def test_sighup_applies_a_valid_config_and_keeps_the_old_on_an_invalid_one(
    tmp_path: Path,
):
    first, second = FakeWebhook(secret=WEBHOOK_SECRET), FakeWebhook(secret=WEBHOOK_SECRET)
    await first.start()
    await second.start()
    daemon = Daemon(tmp_path, config("key-one-0001", "hook-a", first.url))
    header = daemon.config.read_text().split("[storage]")[0]
    daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            await daemon.wait_healthy(session)
            assert await post(session, daemon, "key-one-0001", "before-1") == 202
            await first.wait_for(lambda: first.delivered_ids() == ["before-1"])

            # a new key and a different destination, applied without a restart
            daemon.config.write_text(header + config("key-two-0002", "hook-b", second.url))
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_for_log(daemon, "config_reloaded")
            assert await post(session, daemon, "key-one-0001", "old-key") == 401
            assert await post(session, daemon, "key-two-0002", "after-1") == 202
            await second.wait_for(lambda: second.delivered_ids() == ["after-1"])
            assert first.delivered_ids() == ["before-1"]  # hook-a was removed

            # an invalid file: logged, and the running configuration stays
            daemon.config.write_text(
                header + config("key-three", "hook-c", second.url, "bogus = 1")
            )
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_for_log(daemon, "config_reload_failed")
            assert await post(session, daemon, "key-two-0002", "after-2") == 202
            await second.wait_for(lambda: second.delivered_ids() == ["after-1", "after-2"])
            assert daemon.kill(signal.SIGTERM) == 0
    finally:
        daemon.stop()
        await first.close()
        await second.close()
    log = daemon.log.read_text()
    assert "relay.toml: destinations[0].bogus: unknown key" in log
    assert "key-two-0002" not in log and WEBHOOK_SECRET not in log
