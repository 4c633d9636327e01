"""Retry policy and circuit breaker: pure arithmetic, ``now`` and randomness passed in."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 2.0
    max_s: float = 3600.0
    max_attempts: int = 12

    def delay_s(
        self, attempt: int, retry_after_s: float | None = None, rand: float | None = None
    ) -> float:
        """Delay before the next try after failed try number ``attempt`` (1-based).

        Full jitter (uniform in [0, min(max, base * 2^(attempt-1))]) spreads a thundering herd of
        retries after an outage; a platform's Retry-After is a floor, never shortened by jitter.
        """
        cap = min(self.max_s, self.base_s * 2 ** min(attempt - 1, 62))
        jittered = cap * (random.random() if rand is None else rand)
        if retry_after_s is not None:
            return max(jittered, min(retry_after_s, self.max_s))
        return jittered

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


class CircuitBreaker:
    """Opens after ``threshold`` consecutive transient failures; half-opens after a cooldown.

    While open the worker claims nothing, so an unreachable platform burns no attempts and no
    event ages toward dead-lettering merely because the endpoint is down.
    """

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at_ms: int | None = None
        self.opens = 0

    @property
    def state(self) -> str:
        if self.opened_at_ms is None:
            return "closed"
        return "open"

    def allows(self, now_ms: int) -> bool:
        """True when a request may go out (closed, or open past its cooldown: a probe)."""
        return self.opened_at_ms is None or now_ms >= self.reopen_at_ms()

    def reopen_at_ms(self) -> int:
        assert self.opened_at_ms is not None
        # consecutive re-opens back off up to 32x the cooldown
        factor = 2 ** min(self.opens - 1, 5)
        return self.opened_at_ms + int(self.cooldown_s * 1000 * factor)

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at_ms = None
        self.opens = 0

    def record_failure(self, now_ms: int) -> bool:
        """Count a transient failure; True if this failure opened (or re-opened) the circuit."""
        self.failures += 1
        if self.failures >= self.threshold and (
            self.opened_at_ms is None or now_ms >= self.reopen_at_ms()
        ):
            self.opened_at_ms = now_ms
            self.opens += 1
            return True
        return False
