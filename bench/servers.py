"""Start, watch and stop the servers under test: the bare ceiling and ``relay serve``."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELAY_KEY = "bench-server-key-4f1c2a9e"
SOURCE_NAME = "bench"
DESTINATION = "sink"
STARTUP_TIMEOUT_S = 120.0  # a 10M-row database takes a while to open
STOP_TIMEOUT_S = 30.0

# urllib must not route loopback requests through a proxy from the environment
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    """The benchmark cannot produce a trustworthy figure."""


def free_port() -> int:
    """A loopback port nothing listens on (also used as the webhook's dead endpoint)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_relay_config(directory: Path, port: int, db_path: Path, sink_port: int) -> Path:
    """A relay.toml: one server source, one webhook to a closed port, full durability."""
    path = directory / "relay.toml"
    path.write_text(
        f"""\
[server]
listen = "127.0.0.1:{port}"
max_body_bytes = 1048576
max_events_per_request = 500
shutdown_grace = "2s"

[storage]
path = "{db_path}"
durability = "full"

[[sources]]
name = "{SOURCE_NAME}"
key = "{RELAY_KEY}"
kind = "server"
time = "client"
max_age = "7d"

# Nothing listens on this port: deliveries are created on ingest as in production, the first
# claims fail fast with "connection refused" and the circuit breaker opens.
[[destinations]]
name = "{DESTINATION}"
type = "webhook"
url = "http://127.0.0.1:{sink_port}/hook"
secret = "bench-webhook-secret"

[logging]
level = "warning"
format = "json"
""",
        encoding="utf-8",
    )
    return path


def ceiling_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.ceiling", "--port", str(port)]


def relay_argv(config: Path) -> list[str]:
    script = Path(sys.executable).parent / "relay"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "relay"]
    return [*command, "serve", "--config", str(config)]


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with OPENER.open(self.url + path, timeout=timeout) as response:
            body: bytes = response.read()
            return body

    def peak_rss_kib(self) -> int:
        """VmHWM: the process's peak resident set size so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if m is None:
            raise BenchError(f"{self.name}: no VmHWM in /proc/{self.process.pid}/status")
        return int(m.group(1))

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running(name: str, argv: list[str], port: int, log_path: Path) -> Iterator[Server]:
    """Start a server, wait for its /healthz, and always stop it (SIGTERM, then SIGKILL)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(name, process, port, log_path)
    try:
        _wait_healthy(server)
        yield server
    finally:
        _stop(server)


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(
                f"{server.name} exited with {server.process.returncode} at startup:\n"
                + server.log_tail()
            )
        try:
            server.get("/healthz", timeout=1.0)
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{server.name}: /healthz did not answer in {STARTUP_TIMEOUT_S:.0f} s")


def _stop(server: Server) -> None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            print(f"warning: {server.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; killed")
