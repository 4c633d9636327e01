"""Worker mechanisms that platform adapters rely on, through a test-only destination: body-size
splitting, a validation pre-request, and pausing on a setup fault."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import orjson
import pytest

from relay.clock import FakeClock
from relay.config import DestinationConfig
from relay.destinations.base import (
    Destination,
    Event,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
)
from relay.worker import DeliveryWorker
from tests.conftest import MakeRelay, Relay, event
from tests.fakes import FakeApi, json_reply


@dataclass
class ProbeApi(FakeApi):
    routes: tuple[tuple[str, str], ...] = (("POST", "/send"), ("POST", "/validate"))
    invalid: tuple[str, ...] = ()
    revoked: bool = False

    def accept(self, request: Any, body: Any) -> tuple[int, dict[str, str], bytes]:
        if request.path == "/validate":
            return json_reply(200, {"invalid": [i for i in body["ids"] if i in self.invalid]})
        if self.revoked:
            return json_reply(401, {"error": "token revoked"})
        return json_reply(200, {"ok": len(body["ids"])})


class Probe(Destination):
    type_name: ClassVar[str] = "probe"
    max_batch: ClassVar[int] = 100
    max_body_bytes: ClassVar[int | None] = 2500
    validate = False

    def build_request(self, events: Sequence[Event]) -> HttpRequest:
        body = {"ids": [e["event_id"] for e in events], "pad": ["x" * 400 for _ in events]}
        return HttpRequest(
            "POST", self.endpoint_url("http://probe.invalid/send"), {}, orjson.dumps(body)
        )

    def read_response(self, events: Sequence[Event], response: HttpResponse) -> list[Outcome]:
        if response.status == 401:
            return [Outcome(OutcomeKind.RETRY, "HTTP 401: token revoked", pause=True)] * len(events)
        return [Outcome(OutcomeKind.DELIVERED)] * len(events)

    def validation_request(self, events: Sequence[Event]) -> HttpRequest | None:
        if not self.validate:
            return None
        body = orjson.dumps({"ids": [e["event_id"] for e in events]})
        return HttpRequest("POST", self.endpoint_url("http://probe.invalid/validate"), {}, body)

    def read_validation(self, events: Sequence[Event], response: HttpResponse) -> list[str | None]:
        invalid = set(orjson.loads(response.body)["invalid"])
        return [
            "id rejected by the validator" if e["event_id"] in invalid else None for e in events
        ]


@pytest.fixture
async def api() -> AsyncIterator[ProbeApi]:
    fake = ProbeApi()
    await fake.start()
    yield fake
    await fake.close()


async def probe_worker(
    relay: Relay, api: ProbeApi, clock: FakeClock, session: aiohttp.ClientSession
):
    destination = Probe(DestinationConfig(name="hook", type="probe", endpoint=api.base_url))
    return destination, DeliveryWorker(destination, relay.state.store, session, clock)


async def states(relay: Relay) -> dict[str, tuple[str, str | None]]:
    rows = await relay.state.store.fetchall(
        "SELECT e.event_id, d.state, d.last_error"
        " FROM deliveries d JOIN events e ON e.id = d.event_rowid"
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def test_batches_over_the_body_limit_are_sent_in_halves(
    make_relay: MakeRelay, api: ProbeApi, clock: FakeClock
):
    relay = await make_relay()
    await relay.post({"events": [event(f"big-{i}") for i in range(10)]})
    async with aiohttp.ClientSession() as session:
        _, worker = await probe_worker(relay, api, clock, session)
        assert await worker.drain() == 10
    sizes = [len(orjson.dumps(r.body)) for r in api.received]
    assert len(api.received) > 1 and max(sizes) <= Probe.max_body_bytes
    assert sorted(i for r in api.received for i in r.body["ids"]) == sorted(
        f"big-{i}" for i in range(10)
    )
    assert {s for s, _ in (await states(relay)).values()} == {"delivered"}


async def test_validator_rejections_are_dead_and_the_rest_is_sent(
    make_relay: MakeRelay, api: ProbeApi, clock: FakeClock
):
    api.invalid = ("v-2",)
    relay = await make_relay()
    await relay.post({"events": [event("v-1"), event("v-2"), event("v-3")]})
    async with aiohttp.ClientSession() as session:
        destination, worker = await probe_worker(relay, api, clock, session)
        destination.validate = True
        await worker.drain()
    sent = [r.body["ids"] for r in api.received if r.path == "/send"]
    assert sent == [["v-1", "v-3"]]
    result = await states(relay)
    assert result["v-2"] == ("dead", "validation: id rejected by the validator")
    assert result["v-1"][0] == result["v-3"][0] == "delivered"


async def test_a_revoked_token_pauses_the_destination_and_keeps_events(
    make_relay: MakeRelay, api: ProbeApi, clock: FakeClock
):
    api.revoked = True
    relay = await make_relay()
    await relay.post({"events": [event("p-1"), event("p-2")]})
    async with aiohttp.ClientSession() as session:
        _, worker = await probe_worker(relay, api, clock, session)
        assert await worker.run_once() == 2
        assert worker.paused == "HTTP 401: token revoked"
        clock.advance(86400)
        assert await worker.run_once() == 0  # paused: nothing is claimed, no attempt burnt
    assert {s for s, _ in (await states(relay)).values()} == {"pending"}
    assert len(api.rejected) == 1
