"""Injectable time: the daemon uses ``SystemClock``; tests drive a ``FakeClock`` by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        """Run ``callback(*args)`` on the event loop once ``seconds`` have passed."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        return asyncio.get_running_loop().call_later(seconds, callback, *args)


class _FakeTimer:
    def __init__(self, when_ms: int, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when_ms = when_ms
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time moves only when a test calls ``advance``; timers and sleepers due by then fire."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._now_ms = start_ms
        self._timers: list[_FakeTimer] = []

    def now_ms(self) -> int:
        return self._now_ms

    def call_later(self, seconds: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        timer = _FakeTimer(self._now_ms + int(seconds * 1000), callback, args)
        self._timers.append(timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _set_done, future)
        try:
            await future
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        self._now_ms += int(seconds * 1000)
        due = [t for t in self._timers if t.when_ms <= self._now_ms and not t.cancelled]
        self._timers = [t for t in self._timers if t.when_ms > self._now_ms and not t.cancelled]
        for timer in sorted(due, key=lambda t: t.when_ms):
            timer.callback(*timer.args)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
