"""relay under systemd: the notify protocol as the real daemon speaks it, and the shipped unit.

The daemon tests bind a datagram socket, pass it as ``$NOTIFY_SOCKET`` (systemd's side of
sd_notify) and read what ``relay serve`` reports: READY once it serves, watchdog pings, STOPPING
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import configparser
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from relay.config import ServerConfig
from tests.acceptance.daemon import Daemon
from tests.conftest import SERVER_KEY

pytestmark = pytest.mark.acceptance

UNIT = Path(__file__).parents[2] / "systemd" / "relay.service"
INSTALLED_RELAY = "/opt/relay/venv/bin/relay"

CONFIG = f"""
[storage]
path = "relay.db"

[[sources]]
name = "backend"
key = "{SERVER_KEY}"
kind = "server"
"""


class NotifySocket:
    """systemd's end of sd_notify: a datagram socket collecting ``KEY=value`` messages."""

    def __init__(self, name: str) -> None:
        """``name``: a filesystem path, or ``@name`` for the abstract namespace."""
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + name[1:] if name.startswith("@") else name)
        self.sock.setblocking(False)
        self.received: list[dict[str, str]] = []

    async def next(self, daemon: Daemon, timeout_s: float = 30) -> dict[str, str]:
        try:
            async with asyncio.timeout(timeout_s):
                data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        except TimeoutError:
            got = f"got {self.received}\n{daemon.log.read_text()}"
            raise AssertionError(f"no notification in {timeout_s:.1f} s; {got}") from None
        message = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.received.append(message)
        return message

    async def wait_for(self, key: str, daemon: Daemon, timeout_s: float = 30) -> dict[str, str]:
        """The next message carrying ``key``, skipping others (watchdog pings)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            remaining_s = max(0.0, deadline - asyncio.get_running_loop().time())
            if key in (message := await self.next(daemon, remaining_s)):
                return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch):
    """An abstract-namespace notify socket, exported as NOTIFY_SOCKET for the daemon."""
    sock = NotifySocket(f"@relay-test-{uuid.uuid4().hex}")
    monkeypatch.setenv("NOTIFY_SOCKET", sock.name)
    yield sock
    sock.close()


async def test_ready_is_sent_once_migrated_and_listening(tmp_path: Path, notify_socket):
    daemon = Daemon(tmp_path, CONFIG)
    daemon.start()
    try:
        # no polling of /healthz first: READY alone must mean "serving"
        ready = await notify_socket.next(daemon)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{daemon.url}/readyz") as resp,
        ):
            assert resp.status == 200, await resp.text()
    finally:
        daemon.stop()
    assert ready["READY"] == "1"
    assert ready["STATUS"] == f"listening on 127.0.0.1:{daemon.port}"
    # no watchdog configured (no WATCHDOG_USEC): READY was all
    assert notify_socket.received == [ready]


async def test_watchdog_pings_keep_coming_from_the_running_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # a socket path this time (the other tests use the abstract namespace)
    sock = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", sock.name)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # pings every 0.1 s
    daemon = Daemon(tmp_path, CONFIG)
    daemon.start()
    try:
        first = await sock.next(daemon)
        pings = [await sock.next(daemon, timeout_s=1.0) for _ in range(5)]
    finally:
        daemon.stop()
        sock.close()
    # the watchdog starts only once READY is sent: systemd enforces it from then on
    assert first["READY"] == "1"
    assert pings == [{"WATCHDOG": "1"}] * 5


async def test_watchdog_env_of_another_process_is_ignored(
    tmp_path: Path, notify_socket, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # inherited from a parent systemd was watching
    daemon = Daemon(tmp_path, CONFIG)
    daemon.start()
    try:
        await notify_socket.wait_for("READY", daemon)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await notify_socket.wait_for("STOPPING", daemon)
        assert await asyncio.to_thread(daemon.proc.wait, 30) == 0
    finally:
        daemon.stop()
    assert [m for m in notify_socket.received if "WATCHDOG" in m] == []


async def test_sigterm_sends_stopping_then_exits_zero(
    tmp_path: Path, notify_socket, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    daemon = Daemon(tmp_path, CONFIG)
    daemon.start()
    try:
        await notify_socket.wait_for("READY", daemon)
        await notify_socket.wait_for("WATCHDOG", daemon)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        stopping = await notify_socket.wait_for("STOPPING", daemon)
        exit_code = await asyncio.to_thread(daemon.proc.wait, 30)
    finally:
        daemon.stop()
    assert stopping["STOPPING"] == "1"
    assert stopping["STATUS"].startswith("draining")
    assert exit_code == 0
    log = daemon.log.read_text()
    assert log.index("relay_stopping") < log.index("relay_stopped")
    # STOPPING reached systemd before the drain began; nothing but pings after it
    after = notify_socket.received[notify_socket.received.index(stopping) + 1 :]
    assert all(m == {"WATCHDOG": "1"} for m in after)


# ---- the unit file


def read_unit(path: Path = UNIT) -> dict[str, dict[str, str]]:
    """The unit's sections; a key given twice keeps its last value (systemd appends some, but
    the unit sets each key once)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return {name: dict(parser[name]) for name in parser.sections()}


_TIMESPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?")
_TIMESPAN_S = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, None: 1}


def timespan_s(value: str) -> float:
    """systemd.time(7) spans as units use them here: "30", "30s", "5min", "1min 30s"."""
    parts = _TIMESPAN.findall(value)
    assert parts and _TIMESPAN.sub("", value).strip() == "", f"unparsed time span {value!r}"
    return sum(float(n) * _TIMESPAN_S[u or None] for n, u in parts)


HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
    "PrivateDevices": "true",
    "NoNewPrivileges": "true",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
    "SystemCallArchitectures": "native",
    "MemoryDenyWriteExecute": "true",
    "LockPersonality": "true",
    "RestrictRealtime": "true",
    "RestrictSUIDSGID": "true",
    "ProtectKernelTunables": "true",
    "ProtectKernelModules": "true",
    "ProtectKernelLogs": "true",
    "ProtectControlGroups": "true",
    "ProtectClock": "true",
    "ProtectHostname": "true",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


def test_unit_file_declares_notify_watchdog_and_sandbox(tmp_path: Path):
    """The unit's contract with relay, read in Python everywhere; where systemd-analyze is
    installed (Debian ships it with systemd), systemd's own parser must accept the unit too."""
    unit = read_unit()
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert timespan_s(service["WatchdogSec"]) >= 2  # relay pings at half of it
    assert service["Restart"] == "on-failure"
    assert timespan_s(service["RestartSec"]) > 0
    # the drain takes up to shutdown_grace for requests, then shutdown_grace for deliveries
    assert timespan_s(service["TimeoutStopSec"]) > 2 * ServerConfig().shutdown_grace_s
    assert service["User"] == "relay"
    assert service["StateDirectory"] == "relay"
    assert service["WorkingDirectory"] == "/var/lib/relay"
    assert service["EnvironmentFile"] == "-/etc/relay/relay.env"
    assert service["ExecStartPre"] == f"{INSTALLED_RELAY} migrate --config /etc/relay/relay.toml"
    assert service["ExecStart"] == f"{INSTALLED_RELAY} serve --config /etc/relay/relay.toml"
    assert {k: service.get(k) for k in HARDENING} == HARDENING
    assert "AmbientCapabilities" not in service  # 8080 needs no capability
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        verify_with_systemd_analyze(analyze, tmp_path)


def verify_with_systemd_analyze(analyze: str, tmp_path: Path) -> None:
    # verify also checks that ExecStart's program exists: point it at this checkout's relay
    text = UNIT.read_text(encoding="utf-8").replace(INSTALLED_RELAY, f"{sys.executable} -m relay")
    unit = tmp_path / "relay.service"
    unit.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # unknown keys and bad values are only warnings: the unit must produce none
    assert "relay.service" not in output, output
