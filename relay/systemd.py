"""systemd integration: readiness and stop notifications, and the watchdog.

sd_notify(3) is one datagram of newline-separated ``KEY=VALUE`` lines sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``: a filesystem path, or an abstract-namespace name when it starts with
"@". That is the whole protocol, about twenty lines, so it is written here instead of taken from
a library: a library would add a dependency (systemd-python also a C build against libsystemd)
and still leave the part relay cares about, pinging the watchdog from the event loop, to us.

Outside systemd (no ``$NOTIFY_SOCKET``) everything here is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

from relay.clock import Clock, SystemClock

log = structlog.get_logger("relay.systemd")

# A datagram to a local socket only blocks while systemd's receive queue is full; bound that so
# a stuck service manager cannot stall the event loop (the watchdog would notice anyway).
SEND_TIMEOUT_S = 1.0


def socket_address(notify_socket: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` -> the address to send to: the path itself, or for ``@name`` the
    abstract-namespace address (a leading NUL byte). None for kinds relay does not speak
    (``vsock:...``, a relative path)."""
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    if notify_socket.startswith("/"):
        return notify_socket
    return None


def format_message(fields: Mapping[str, str | int]) -> bytes:
    """``{"READY": 1, "STATUS": "..."}`` -> ``b"READY=1\\nSTATUS=..."``. A newline inside a
    value would start a bogus assignment, so it becomes a space."""
    return "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items()).encode()


def watchdog_timeout_s(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout systemd enforces on this process (``WatchdogSec=``), or None: not
    set, not a positive number, or ``WATCHDOG_PID`` naming another process (inherited)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        owner = environ.get("WATCHDOG_PID")
        if owner and int(owner) != pid:
            return None
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


class Notifier:
    """Sends sd_notify messages to the service manager; a no-op without an address."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        name = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
        if not name:
            return cls(None)
        address = socket_address(name)
        if address is None:
            log.warning("notify_socket_unsupported", notify_socket=name)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines; False when disabled or the send failed (logged: a lost
        notification must not take the daemon down)."""
        if self.address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.settimeout(SEND_TIMEOUT_S)
        try:
            self._sock.sendto(format_message(fields), self.address)
        except OSError as exc:
            log.warning("notify_failed", keys=sorted(fields), error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def ping_watchdog(notifier: Notifier, timeout_s: float, clock: Clock) -> None:
    """``WATCHDOG=1`` every half of systemd's timeout, from the event loop. A blocked or
    deadlocked loop stops the pings and systemd kills and restarts relay; pings from a thread
    would keep a dead loop looking alive."""
    while True:
        notifier.notify(WATCHDOG=1)
        await clock.sleep(timeout_s / 2)


def start_watchdog(
    notifier: Notifier,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> asyncio.Task[None] | None:
    """The ping task when systemd watches this process, else None."""
    if not notifier.enabled:
        return None
    timeout_s = watchdog_timeout_s(os.environ if environ is None else environ, os.getpid())
    if timeout_s is None:
        return None
    return asyncio.create_task(
        ping_watchdog(notifier, timeout_s, clock or SystemClock()), name="relay-watchdog"
    )
