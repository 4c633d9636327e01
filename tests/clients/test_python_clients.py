"""Segment's analytics-python and RudderStack's rudder-sdk-python, the real libraries from the
package registry, sending to an in-process relay on a loopback port.

Each library runs as in production: calls are queued and its own consumer thread sends them in
batches (with its own retry policy) over `requests`; the test thread only calls track, page,
identify and flush, from a worker thread so relay's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import requests
import rudderstack.analytics.request as rudder_request
import segment.analytics.request as segment_request
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from relay import ingest
from tests.clients.scenario import (
    BIRTHDAY,
    GROUP_ID,
    ORDER,
    PAGE,
    PREVIOUS_ID,
    TRAITS,
    USER_ID,
    Answers,
    Exchange,
    check_stored_once,
    deliver_and_check,
    describe,
    order_time,
    relay_host,
)
from tests.conftest import SERVER_KEY, MakeRelay, Relay
from tests.fakes import FakeWebhook


@dataclass(frozen=True)
class Library:
    name: str
    client_class: Any
    # the module-level requests session the library sends with, tapped to see its exchanges
    session: requests.Session
    options: dict[str, Any]
    gzip: bool  # whether its requests are gzipped: RudderStack's default, Segment's option

    def client(self, host: str, errors: list[Exception], **options: Any) -> Any:
        return self.client_class(
            SERVER_KEY,
            host=host,
            on_error=lambda error, batch: errors.append(error),
            # small windows: the consumer thread sends soon after the calls are queued
            upload_interval=0.05,
            **({"timeout": 10} | self.options | options),
        )


LIBRARIES = [
    Library("segment", SegmentClient, segment_request._session, {}, gzip=False),
    Library("segment-gzip", SegmentClient, segment_request._session, {"gzip": True}, gzip=True),
    Library("rudderstack", RudderClient, rudder_request._session, {}, gzip=True),
]
library_param = pytest.mark.parametrize("library", LIBRARIES, ids=lambda lib: lib.name)


def tap(session: requests.Session, monkeypatch: pytest.MonkeyPatch) -> list[Exchange]:
    """Record every request the library's session made and relay's answer to it."""
    exchanges: list[Exchange] = []

    def record(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        request = response.request
        body = request.body.encode() if isinstance(request.body, str) else request.body
        assert isinstance(body, bytes)
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        exchanges.append(
            Exchange(
                path=urlsplit(request.url).path,
                status=response.status_code,
                request_headers=dict(request.headers),
                message_ids=[m["messageId"] for m in orjson.loads(body)["batch"]],
                response_headers=dict(response.headers),
                response_body=response.content,
            )
        )
        return response

    monkeypatch.setattr(session, "hooks", {"response": [record]})
    return exchanges


def send_calls(client: Any, ordered_at: datetime) -> dict[str, str]:
    """identify, then a purchase and a page view by the same user, a group and an alias call;
    flush and stop the library's consumer thread. Returns the messageId the library gave each
    call."""
    traits = copy.deepcopy(TRAITS) | {"birthday": BIRTHDAY}  # serialized by the library
    calls: dict[str, Callable[[], tuple[bool, dict[str, Any]]]] = {
        "identify": lambda: client.identify(USER_ID, traits=traits),
        "track": lambda: client.track(
            USER_ID, "Order Completed", properties=copy.deepcopy(ORDER), timestamp=ordered_at
        ),
        "page": lambda: client.page(USER_ID, name="Checkout", properties=dict(PAGE)),
        "group": lambda: client.group(USER_ID, GROUP_ID, traits={"name": "Acme"}),
        "alias": lambda: client.alias(PREVIOUS_ID, USER_ID),
    }
    ids = {}
    for kind, call in calls.items():
        queued, message = call()
        assert queued, f"{kind} was not queued"
        ids[kind] = message["messageId"]
    client.flush()  # returns when every queued message was sent or given up
    client.join()
    return ids


async def drive(
    library: Library, relay: Relay, ordered_at: datetime, **options: Any
) -> tuple[dict[str, str], list[Exception]]:
    errors: list[Exception] = []
    client = library.client(relay_host(relay), errors, **options)
    async with asyncio.timeout(60):
        ids = await asyncio.to_thread(send_calls, client, ordered_at)
    return ids, errors


def check_wire(library: Library, exchanges: list[Exchange]) -> None:
    for exchange in exchanges:
        assert exchange.path == "/v1/batch"
        assert exchange.request_headers["Authorization"].startswith("Basic ")
        assert exchange.request_headers.get("Content-Encoding") == (
            "gzip" if library.gzip else None
        )


@library_param
async def test_calls_arrive_once_with_the_mapped_fields(
    library: Library, make_relay: MakeRelay, webhook: FakeWebhook, monkeypatch: pytest.MonkeyPatch
):
    relay = await make_relay(webhook_url=webhook.url)
    exchanges = tap(library.session, monkeypatch)
    ordered_at = order_time()
    ids, errors = await drive(library, relay, ordered_at, max_retries=1)
    assert not errors, describe(exchanges)
    check_wire(library, exchanges)
    answers = {(e.status, e.response_body) for e in exchanges}
    assert answers == {(200, b'{"success":true}')}, describe(exchanges)
    assert sorted(i for e in exchanges for i in e.message_ids) == sorted(ids.values())
    await check_stored_once(relay, ids)
    await deliver_and_check(relay, webhook, ids, ordered_at)


# (plain JSON batches are covered above; gzip is the harder body to resend)
@pytest.mark.parametrize("library", LIBRARIES[1:], ids=lambda lib: lib.name)
async def test_a_refused_batch_is_resent_by_the_library_and_stored_once(
    library: Library, make_relay: MakeRelay, webhook: FakeWebhook, monkeypatch: pytest.MonkeyPatch
):
    relay = await make_relay(webhook_url=webhook.url)
    exchanges = tap(library.session, monkeypatch)
    answers = Answers(relay, monkeypatch)
    answers.refuse(1)
    ordered_at = order_time()
    ids, errors = await drive(library, relay, ordered_at, max_retries=3)
    assert not errors, describe(exchanges)
    check_wire(library, exchanges)
    refused, *later = exchanges
    assert refused.status == 503, describe(exchanges)
    assert refused.retry_after == "1"
    assert orjson.loads(refused.response_body)["code"] == "backlog_full"
    assert later and {e.status for e in later} == {200}, describe(exchanges)
    # the library's own retry resent the refused messages, same messageIds
    assert set(refused.message_ids) <= {i for e in later for i in e.message_ids}
    assert answers.statuses == [e.status for e in exchanges]
    await check_stored_once(relay, ids)
    await deliver_and_check(relay, webhook, ids, ordered_at)


@pytest.mark.parametrize("library", [LIBRARIES[0], LIBRARIES[2]], ids=lambda lib: lib.name)
async def test_a_batch_resent_after_a_lost_answer_is_deduplicated(
    library: Library, make_relay: MakeRelay, webhook: FakeWebhook, monkeypatch: pytest.MonkeyPatch
):
    """relay commits the first batch but its answer never reaches the library (held past the
    library's 1 s timeout); the library resends it and relay answers 200 without storing twice."""
    relay = await make_relay(webhook_url=webhook.url)
    exchanges = tap(library.session, monkeypatch)
    answers = Answers(relay, monkeypatch)
    original = ingest.store_events
    stores: list[list[tuple[str, str]]] = []
    resent = asyncio.Event()

    async def store_events(state: Any, source: Any, events: list[Any]) -> Any:
        results = await original(state, source, events)
        stores.append([(e.event_id, r.status) for e, r in zip(events, results, strict=True)])
        if len(stores) == 1:
            async with asyncio.timeout(30):
                await resent.wait()  # until the library's resend has been stored
        else:
            resent.set()
        return results

    monkeypatch.setattr(ingest, "store_events", store_events)
    ordered_at = order_time()
    ids, errors = await drive(library, relay, ordered_at, max_retries=3, timeout=1)
    assert not errors, describe(exchanges)
    # (the library may split the calls into more than one batch; it sends them in order)
    assert len(stores) >= 2, stores
    held, resend, *rest = stores
    assert {status for _, status in held} == {"accepted"}, stores
    assert resend == [(event_id, "duplicate") for event_id, _ in held], stores
    assert {status for batch in rest for _, status in batch} <= {"accepted"}, stores
    # relay answered the resend of stored messages exactly 200, which the libraries need
    # (RudderStack retries any other 2xx); the held answer never reached the library
    assert set(answers.statuses) == {200}
    assert {e.status for e in exchanges} == {200}, describe(exchanges)
    assert {event_id for event_id, _ in held} <= set(exchanges[0].message_ids)
    await check_stored_once(relay, ids)
    await deliver_and_check(relay, webhook, ids, ordered_at)
