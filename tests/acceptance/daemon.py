"""The real daemon as a subprocess, for acceptance tests."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """``relay serve`` as a subprocess on a free loopback port, logging to a file."""

    def __init__(self, tmp_path: Path, config_body: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "relay.toml"
        self.log = tmp_path / "relay.log"
        header = f'[server]\nlisten = "127.0.0.1:{self.port}"\nshutdown_grace = "5s"\n'
        self.config.write_text(header + config_body)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    async def wait_healthy(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(30):
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
                try:
                    async with session.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)  # polling a process we do not control

    async def wait_queue_empty(self, session: aiohttp.ClientSession, *names: str) -> None:
        async with asyncio.timeout(30):
            while True:
                async with session.get(f"{self.url}/metrics") as resp:
                    text = await resp.text()
                if all(f'relay_queue_depth{{destination="{n}"}} 0.0' in text for n in names):
                    return
                await asyncio.sleep(0.1)  # polling a process we do not control

    def stop(self) -> None:
        """Kill a daemon a failed test left running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def kill(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)
