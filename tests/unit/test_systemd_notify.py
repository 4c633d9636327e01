"""relay.systemd: sd_notify message format, socket addressing, watchdog timing."""

from __future__ import annotations

import asyncio
import os

import pytest

from relay.clock import FakeClock
from relay.systemd import (
    Notifier,
    format_message,
    ping_watchdog,
    socket_address,
    start_watchdog,
    watchdog_timeout_s,
)


class RecordingNotifier(Notifier):
    """A notifier that keeps what it would have sent."""

    def __init__(self) -> None:
        super().__init__("/run/systemd/notify")
        self.sent: list[dict[str, str | int]] = []

    def notify(self, **fields: str | int) -> bool:
        self.sent.append(fields)
        return True


async def settle() -> None:
    """Let woken tasks run up to their next await."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_message_is_one_assignment_a_line_in_order() -> None:
    message = format_message({"READY": 1, "STATUS": "listening on 127.0.0.1:8080"})
    assert message == b"READY=1\nSTATUS=listening on 127.0.0.1:8080"


def test_a_newline_in_a_value_cannot_start_another_assignment() -> None:
    assert format_message({"STATUS": "a\nREADY=1"}) == b"STATUS=a READY=1"


@pytest.mark.parametrize(
    ("notify_socket", "address"),
    [
        pytest.param("/run/systemd/notify", "/run/systemd/notify", id="path"),
        pytest.param(
            "@/org/freedesktop/systemd1/notify/123",
            b"\0/org/freedesktop/systemd1/notify/123",
            id="abstract",
        ),
        pytest.param("@relay", b"\0relay", id="abstract-short"),
        pytest.param("vsock:2:1234", None, id="vsock"),
        pytest.param("run/notify", None, id="relative"),
    ],
)
def test_socket_address(notify_socket: str, address: str | bytes | None) -> None:
    assert socket_address(notify_socket) == address


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.notify(READY=1) is False
    assert start_watchdog(notifier, {"WATCHDOG_USEC": "30000000"}) is None


def test_unsupported_socket_kind_disables_notifications() -> None:
    assert not Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


@pytest.mark.parametrize(
    ("environ", "timeout_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "<self>"}, 0.2),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_timeout(environ: dict[str, str], timeout_s: float | None) -> None:
    pid = os.getpid()
    environ = {k: str(pid) if v == "<self>" else v for k, v in environ.items()}
    assert watchdog_timeout_s(environ, pid) == timeout_s


async def test_watchdog_pings_at_half_the_timeout() -> None:
    clock = FakeClock()
    notifier = RecordingNotifier()
    task = asyncio.create_task(ping_watchdog(notifier, 30.0, clock))
    try:
        await settle()
        assert notifier.sent == [{"WATCHDOG": 1}]  # at once: systemd counts from READY
        clock.advance(14.9)
        await settle()
        assert len(notifier.sent) == 1
        clock.advance(0.1)
        await settle()
        assert len(notifier.sent) == 2
        for _ in range(3):
            clock.advance(15.0)
            await settle()
        assert notifier.sent == [{"WATCHDOG": 1}] * 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_start_watchdog_runs_only_when_systemd_watches_this_process() -> None:
    notifier = RecordingNotifier()
    assert start_watchdog(notifier, {}) is None
    assert start_watchdog(notifier, {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None
    task = start_watchdog(notifier, {"WATCHDOG_USEC": "1000000"}, FakeClock())
    assert task is not None
    await settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert notifier.sent == [{"WATCHDOG": 1}]
