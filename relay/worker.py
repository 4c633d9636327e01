"""Delivery workers: one loop per destination, isolated from every other destination.

Each round claims due deliveries by lease, expires those past the platform window, builds the
request with the destination's pure mapper, sends it over the shared ClientSession, reads
per-event outcomes (pure again), and records them: delivered, retry with backoff, dead, expired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

import aiohttp
import structlog

from relay.clock import Clock
from relay.destinations.base import Destination, HttpRequest, HttpResponse, Outcome, OutcomeKind
from relay.dryrun import DryRunRecorder
from relay.metrics import Metrics
from relay.retry import CircuitBreaker, RetryPolicy
from relay.store import Claimed, OutboxStore, Record

log = structlog.get_logger("relay.worker")

# Longest idle wait between checks when nothing is due (a new event wakes the worker anyway).
IDLE_POLL_S = 30.0
# Platforms' error bodies can be large HTML pages; keep what fits in the attempt log.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sent:
    """What one request did for one delivery."""

    outcome: Outcome
    http_status: int | None
    started_at_ms: int
    duration_ms: int
    trace_id: str | None = None


class DeliveryWorker:
    def __init__(
        self,
        destination: Destination,
        store: OutboxStore,
        session: aiohttp.ClientSession,
        clock: Clock,
        recorder: DryRunRecorder | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        cfg = destination.config
        self.destination = destination
        self.name = destination.name
        self.store = store
        self.session = session
        self.clock = clock
        self.recorder = recorder
        self.metrics = metrics
        self.policy = RetryPolicy(cfg.backoff_base_s, cfg.backoff_max_s, cfg.max_attempts)
        self.breaker = CircuitBreaker(cfg.circuit_threshold, cfg.circuit_cooldown_s)
        self.concurrency = cfg.concurrency
        self._min_interval_ms = int(1000 / cfg.rate_limit) if cfg.rate_limit > 0 else 0
        self._next_send_ms = 0
        # set by wake() when new deliveries were written; cleared by each claim attempt
        self._woken = False
        # the loop's current wait; wake() resolves it only when ``_wakeable``, stop() always
        self._waiter: asyncio.Future[None] | None = None
        self._wakeable = False
        self._stopping = False
        self._inflight: set[asyncio.Task[int]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        # why the destination is paused (a revoked token): nothing is claimed until a restart
        self.paused: str | None = None

    # ---- lifecycle

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self.run(), name=f"relay-worker-{self.name}")

    @property
    def alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def wake(self) -> None:
        """New deliveries are due. Called for every ingest request, so it stays this cheap."""
        self._woken = True
        if self._wakeable and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; give in-flight batches ``grace_s`` to finish, then cancel them (they
        still record their outcome)."""
        self._stopping = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._loop_task is not None:
            await self._loop_task
        if self._inflight:
            _, late = await asyncio.wait(self._inflight, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except Exception as exc:  # a bug or a database error must not kill the loop
                log.exception("worker_step_failed", destination=self.name, error=str(exc))
                await self._wait(5.0, wakeable=False)

    async def _step(self) -> None:
        now_ms = self.clock.now_ms()
        if self.paused is not None:
            await self._wait(IDLE_POLL_S, wakeable=False)
            return
        if not self.breaker.allows(now_ms):
            # new events change nothing while the circuit is open: only time does
            await self._wait((self.breaker.reopen_at_ms() - now_ms) / 1000, wakeable=False)
            return
        # A half-open circuit sends one probe batch at a time.
        limit = 1 if self.breaker.state == "open" else self.concurrency
        if len(self._inflight) >= limit:
            # also woken by stop(), which must not wait for a slow platform to free a slot
            await self._wait(None, wakeable=False, or_any=self._inflight)
            return
        self._woken = False
        claimed = await self.store.claim(
            self.name, self.destination.batch_size, self.destination.config.lease_s
        )
        if not claimed:
            next_due = await self.store.next_due_ms(self.name)
            wait_s = IDLE_POLL_S if next_due is None else (next_due - now_ms) / 1000
            await self._wait(min(max(wait_s, 0.0), IDLE_POLL_S), wakeable=True)
            return
        task = asyncio.create_task(self.process(claimed))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _wait(
        self,
        seconds: float | None,
        *,
        wakeable: bool,
        or_any: set[asyncio.Task[int]] | None = None,
    ) -> None:
        """Wait until ``seconds`` pass (None: no timer), stop(), wake() if ``wakeable``, or one
        of ``or_any`` finishes. One future and one timer: no task per wait, since every ingest
        request wakes the loop."""
        if self._stopping or (wakeable and self._woken):
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._wakeable = wakeable
        timer = None if seconds is None else self.clock.call_later(seconds, _resolve, waiter)
        try:
            if or_any:
                await asyncio.wait({*or_any, waiter}, return_when=asyncio.FIRST_COMPLETED)
            else:
                await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            self._wakeable = False

    # ---- deterministic driving for tests and `relay` one-shot commands

    async def run_once(self) -> int:
        """Claim one batch and process it fully; the number of deliveries handled."""
        if self.paused is not None or not self.breaker.allows(self.clock.now_ms()):
            return 0
        claimed = await self.store.claim(
            self.name, self.destination.batch_size, self.destination.config.lease_s
        )
        return await self.process(claimed) if claimed else 0

    async def drain(self) -> int:
        """Process every delivery due now (retries scheduled later stay scheduled)."""
        total = 0
        while handled := await self.run_once():
            total += handled
        return total

    # ---- one batch

    async def process(self, claimed: Sequence[Claimed]) -> int:
        now_ms = self.clock.now_ms()
        records: list[Record] = []
        live: list[Claimed] = []
        for c in claimed:
            if now_ms >= c.deadline_ms:
                records.append(
                    self._record(
                        c,
                        Sent(
                            Outcome(OutcomeKind.EXPIRED, "past the platform's time window"),
                            None,
                            now_ms,
                            0,
                        ),
                    )
                )
            elif (reason := self.destination.unsendable(c.event)) is not None:
                records.append(
                    self._record(c, Sent(Outcome(OutcomeKind.PERMANENT, reason), None, now_ms, 0))
                )
            else:
                live.append(c)
        try:
            if live:
                sent = await self._deliver(live)
                records += [self._record(c, s) for c, s in zip(live, sent, strict=True)]
        except asyncio.CancelledError:
            # Shutdown grace ran out mid-request: the platform may or may not have the events, and
            # its dedup field makes a resend harmless. Retry right away after restart.
            stamp = self.clock.now_ms()
            done = {r.delivery_id for r in records}
            interrupted = Sent(
                Outcome(OutcomeKind.RETRY, "interrupted by shutdown", resend_now=True),
                None,
                stamp,
                0,
            )
            records += [self._record(c, interrupted) for c in live if c.delivery_id not in done]
            await asyncio.shield(self.store.record(records))
            raise
        await self.store.record(records)
        if self.metrics is not None:
            for r in records:
                self.metrics.deliveries.labels(self.name, r.outcome).inc()
        return len(claimed)

    async def _deliver(self, claimed: Sequence[Claimed]) -> list[Sent]:
        events = [c.event for c in claimed]
        request = self.destination.build_request(events)
        limit = self.destination.max_body_bytes
        if limit is not None and len(request.body) > limit and len(claimed) > 1:
            middle = len(claimed) // 2  # over the platform's body limit: send it in halves
            return await self._deliver(claimed[:middle]) + await self._deliver(claimed[middle:])
        if self.destination.config.dry_run:
            started = self.clock.now_ms()
            if self.recorder is not None:
                validation = self.destination.validation_request(events)
                if validation is not None:
                    await self.recorder.record(self.name, validation, events)
                await self.recorder.record(self.name, request, events)
            return [
                Sent(
                    Outcome(OutcomeKind.DELIVERED, "dry_run: request recorded, not sent"),
                    None,
                    started,
                    0,
                )
            ] * len(events)

        validation = self.destination.validation_request(events)
        if validation is not None:
            rejected = await self._validate(validation, claimed)
            if rejected:
                keep = [c for c in claimed if c.delivery_id not in rejected]
                sent_by_id = {
                    c.delivery_id: rejected[c.delivery_id]
                    for c in claimed
                    if c.delivery_id in rejected
                }
                if keep:
                    for c, s in zip(keep, await self._deliver_checked(keep), strict=True):
                        sent_by_id[c.delivery_id] = s
                return [sent_by_id[c.delivery_id] for c in claimed]
        return await self._deliver_checked(claimed)

    async def _validate(self, request: HttpRequest, claimed: Sequence[Claimed]) -> dict[int, Sent]:
        """Dead-letter what the platform's validator rejects (validators answer 2xx with
        messages, or 4xx); one that cannot be reached or fails (5xx) blocks nothing: the real
        request still decides."""
        events = [c.event for c in claimed]
        await self._respect_rate_limit()
        started = self.clock.now_ms()
        response = await self._exchange(request)
        if isinstance(response, str) or response.status >= 500:
            return {}
        reasons = self.destination.read_validation(events, response)
        return {
            c.delivery_id: Sent(
                Outcome(OutcomeKind.PERMANENT, f"validation: {reason}"), response.status, started, 0
            )
            for c, reason in zip(claimed, reasons, strict=True)
            if reason is not None
        }

    async def _deliver_checked(self, claimed: Sequence[Claimed]) -> list[Sent]:
        events = [c.event for c in claimed]
        request = self.destination.build_request(events)
        await self._respect_rate_limit()
        started = self.clock.now_ms()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        response, outcomes = await self._send(request, events)
        duration_s = loop.time() - t0
        trace = self.destination.trace_id(response) if response is not None else None
        sent = [
            Sent(o, response.status if response else None, started, int(duration_s * 1000), trace)
            for o in outcomes
        ]

        transient = response is None or all(o.kind is OutcomeKind.RETRY for o in outcomes)
        if transient:
            self.last_error = outcomes[0].detail if outcomes else None
            if self.breaker.record_failure(self.clock.now_ms()):
                log.warning(
                    "circuit_opened",
                    destination=self.name,
                    failures=self.breaker.failures,
                    error=self.last_error,
                )
        else:
            if self.breaker.state == "open":
                log.info("circuit_closed", destination=self.name)
            self.breaker.record_success()
        if self.metrics is not None:
            self.metrics.delivery_seconds.labels(self.name).observe(duration_s)
        if self.paused is None and any(o.pause for o in outcomes):
            self.paused = next(o.detail for o in outcomes if o.pause) or "paused by the platform"
            log.error(
                "destination_paused",
                destination=self.name,
                reason=self.paused,
                action="fix the credentials in relay.toml and restart relay; events stay queued",
            )

        if len(claimed) > 1 and any(
            o.kind is OutcomeKind.PERMANENT and o.whole_batch for o in outcomes
        ):
            # The platform rejected the request without naming the bad event: halve until the bad
            # ones are alone, so one malformed event does not dead-letter its batch-mates.
            log.info("batch_bisected", destination=self.name, size=len(claimed))
            middle = len(claimed) // 2
            return await self._deliver_checked(claimed[:middle]) + await self._deliver_checked(
                claimed[middle:]
            )
        return sent

    async def _send(
        self, request: HttpRequest, events: Sequence[object]
    ) -> tuple[HttpResponse | None, list[Outcome]]:
        response = await self._exchange(request)
        if isinstance(response, str):
            return None, [Outcome(OutcomeKind.RETRY, response)] * len(events)
        outcomes = [
            _scrubbed(o, request.secrets)
            for o in self.destination.read_response(list(events), response)  # type: ignore[arg-type]
        ]
        if len(outcomes) != len(events):
            raise RuntimeError(
                f"{self.name}: read_response gave {len(outcomes)} outcomes for {len(events)} events"
            )
        return response, outcomes

    async def _exchange(self, request: HttpRequest) -> HttpResponse | str:
        """Send one request: the response, or a transport error's description."""
        timeout = aiohttp.ClientTimeout(total=self.destination.config.timeout_s)
        try:
            async with self.session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                timeout=timeout,
            ) as resp:
                body = await resp.content.read(MAX_RESPONSE_BYTES)
                return HttpResponse(resp.status, dict(resp.headers), body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = f"transport error: {type(exc).__name__}: {exc}".strip()
            for secret in request.secrets:  # aiohttp puts the URL, with any token, in messages
                if secret:
                    detail = detail.replace(secret, "[redacted]")
            return detail

    async def _respect_rate_limit(self) -> None:
        if not self._min_interval_ms:
            return
        now_ms = self.clock.now_ms()
        wait_ms = self._next_send_ms - now_ms
        self._next_send_ms = max(now_ms, self._next_send_ms) + self._min_interval_ms
        if wait_ms > 0:
            await self.clock.sleep(wait_ms / 1000)

    def _record(self, c: Claimed, sent: Sent) -> Record:
        outcome = sent.outcome
        now_ms = self.clock.now_ms()
        state, kind, next_at, detail = "delivered", "delivered", now_ms, outcome.detail
        if outcome.kind is OutcomeKind.EXPIRED:
            state = kind = "expired"
        elif outcome.kind is OutcomeKind.PERMANENT:
            state = kind = "dead"
        elif outcome.kind is OutcomeKind.RETRY:
            kind = "retry"
            delay_s = (
                0.0 if outcome.resend_now else self.policy.delay_s(c.attempt, outcome.retry_after_s)
            )
            next_at = now_ms + int(delay_s * 1000)
            if self.policy.exhausted(c.attempt):
                state, kind = "dead", "dead"
                detail = f"gave up after {c.attempt} attempts; last: {outcome.detail}"
            elif next_at >= c.deadline_ms:
                state, kind = "expired", "expired"
                detail = f"next retry would pass the platform's time window; last: {outcome.detail}"
            else:
                state = "pending"
        if kind in ("dead", "expired"):
            log.warning(
                f"delivery_{kind}",
                destination=self.name,
                event_id=c.event.get("event_id"),
                detail=detail,
            )
        return Record(
            delivery_id=c.delivery_id,
            lease_token=c.lease_token,
            attempt=c.attempt,
            state=state,
            next_attempt_at_ms=next_at,
            started_at_ms=sent.started_at_ms,
            duration_ms=sent.duration_ms,
            http_status=sent.http_status,
            outcome=kind,
            detail=detail,
            trace_id=sent.trace_id,
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _scrubbed(outcome: Outcome, secrets: Sequence[str]) -> Outcome:
    """A platform may echo the token in its error text ("Malformed access token ..."): the
    detail is stored and logged, so the secrets come out here, for every destination."""
    detail = outcome.detail
    if not detail or not any(s and s in detail for s in secrets):
        return outcome
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, "[redacted]")
    return replace(outcome, detail=detail)
