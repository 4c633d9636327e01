"""relay.retry: backoff arithmetic, Retry-After parsing and the circuit breaker."""

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from relay.retry import CircuitBreaker, RetryPolicy, parse_retry_after

POLICY = RetryPolicy(base_s=2.0, max_s=3600.0, max_attempts=12)

# --- RetryPolicy.delay_s ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "cap_s"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0), (11, 2048.0), (12, 3600.0), (13, 3600.0),
     (100, 3600.0), (10_000, 3600.0)],
)  # fmt: skip
def test_full_jitter_bounds(attempt: int, cap_s: float) -> None:
    assert POLICY.delay_s(attempt, rand=0.0) == 0.0
    assert POLICY.delay_s(attempt, rand=1.0) == cap_s
    assert POLICY.delay_s(attempt, rand=0.25) == cap_s * 0.25


def test_delay_uses_own_policy_parameters() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=10.0, max_attempts=3)
    assert [policy.delay_s(a, rand=1.0) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_random_jitter_stays_within_the_cap() -> None:
    delays = [POLICY.delay_s(4) for _ in range(200)]
    assert all(0.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("attempt", "retry_after_s", "rand", "expected"),
    [
        (1, 30.0, 0.0, 30.0),  # floor above the jitter
        (1, 30.0, 1.0, 30.0),  # floor above the cap itself
        (5, 1.0, 1.0, 32.0),  # jitter above the floor: the longer wait wins
        (5, 10.0, 0.5, 16.0),
        (1, 0.0, 0.0, 0.0),
        (1, 100_000.0, 0.0, 3600.0),  # a huge Retry-After is capped by max_s
        (20, 7200.0, 1.0, 3600.0),
    ],
)
def test_retry_after_is_a_floor_capped_by_max(
    attempt: int, retry_after_s: float, rand: float, expected: float
) -> None:
    assert POLICY.delay_s(attempt, retry_after_s=retry_after_s, rand=rand) == expected


@pytest.mark.parametrize(
    ("attempt", "exhausted"), [(1, False), (11, False), (12, True), (13, True)]
)
def test_exhausted_at_max_attempts(attempt: int, exhausted: bool) -> None:
    assert POLICY.exhausted(attempt) is exhausted


def test_single_attempt_policy_is_exhausted_after_the_first_try() -> None:
    assert RetryPolicy(max_attempts=1).exhausted(1) is True


# --- parse_retry_after ---------------------------------------------------------------------

NOW_S = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: retry now, never negative
        ("Wed, 21 Oct 2015 09:30:00 +0200", 120.0),
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value, now_s=NOW_S) == expected


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "-5", "1.5", "12s", "Wed, 21 Oct 2015 07:30:00 -0000"]
)
def test_parse_retry_after_unusable_values(value: str | None) -> None:
    assert parse_retry_after(value, now_s=NOW_S) is None


def test_parse_retry_after_http_date_against_the_real_clock() -> None:
    far = format_datetime(datetime(2999, 1, 1, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(far) > 365 * 86400


# --- CircuitBreaker ------------------------------------------------------------------------

T0 = 1_000_000


def opened(threshold: int = 3, cooldown_s: float = 30.0) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold=threshold, cooldown_s=cooldown_s)
    for _ in range(threshold - 1):
        assert breaker.record_failure(T0) is False
    assert breaker.record_failure(T0) is True
    return breaker


def test_closed_breaker_allows() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=30.0)
    assert breaker.state == "closed"
    assert breaker.allows(0) is True


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=30.0)
    assert breaker.record_failure(T0) is False
    assert breaker.record_failure(T0 + 1) is False
    assert breaker.state == "closed"
    assert breaker.allows(T0 + 1) is True
    assert breaker.record_failure(T0 + 2) is True
    assert breaker.state == "open"
    assert breaker.opened_at_ms == T0 + 2


def test_success_between_failures_resets_the_count() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=30.0)
    breaker.record_failure(T0)
    breaker.record_failure(T0)
    breaker.record_success()
    assert breaker.record_failure(T0) is False
    assert breaker.record_failure(T0) is False
    assert breaker.state == "closed"
    assert breaker.record_failure(T0) is True


def test_open_breaker_refuses_until_cooldown_then_allows_a_probe() -> None:
    breaker = opened()
    assert breaker.allows(T0) is False
    assert breaker.allows(T0 + 29_999) is False
    assert breaker.reopen_at_ms() == T0 + 30_000
    assert breaker.allows(T0 + 30_000) is True
    assert breaker.allows(T0 + 90_000) is True


def test_failures_while_open_do_not_extend_the_cooldown() -> None:
    breaker = opened()
    assert breaker.record_failure(T0 + 10_000) is False
    assert breaker.opened_at_ms == T0
    assert breaker.allows(T0 + 30_000) is True


def test_failed_probe_reopens_with_doubled_cooldown() -> None:
    breaker = opened()
    probe_at = T0 + 30_000
    assert breaker.record_failure(probe_at) is True
    assert breaker.state == "open"
    assert breaker.allows(probe_at + 59_999) is False
    assert breaker.allows(probe_at + 60_000) is True
    second_probe = probe_at + 60_000
    assert breaker.record_failure(second_probe) is True
    assert breaker.reopen_at_ms() == second_probe + 120_000


def test_reopen_backoff_is_capped_at_32x() -> None:
    breaker = opened(threshold=1, cooldown_s=1.0)
    now = T0
    cooldowns = []
    for _ in range(8):
        cooldowns.append(breaker.reopen_at_ms() - now)
        now = breaker.reopen_at_ms()
        assert breaker.record_failure(now) is True
    assert cooldowns == [1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000]


def test_successful_probe_closes_and_resets() -> None:
    breaker = opened()
    breaker.record_failure(T0 + 30_000)  # re-open: cooldown now 60 s
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.opened_at_ms is None
    assert breaker.allows(T0 + 30_001) is True
    # Back to the first threshold and the base cooldown.
    now = T0 + 100_000
    assert breaker.record_failure(now) is False
    assert breaker.record_failure(now) is False
    assert breaker.record_failure(now) is True
    assert breaker.allows(now + 29_999) is False
    assert breaker.allows(now + 30_000) is True
