"""relay.destinations: the pure interface (base) and the generic webhook (golden request)."""

import hashlib
import hmac
import json
from typing import Any

import pytest

from relay.config import DestinationConfig
from relay.destinations import registry
from relay.destinations.base import (
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    outcomes_from_status,
    summarize_body,
)
from relay.destinations.webhook import SIGNATURE_HEADER, WebhookDestination

SECRET = "whsec-0123456789"

EVENTS: list[dict[str, Any]] = [
    {
        "event_id": "ord-1001",
        "event_name": "purchase",
        "event_time_ms": 1_700_000_000_000,
        "user": {"em": "a" * 64, "ip": "203.0.113.9"},
        "properties": {"value": 19.99, "currency": "EUR", "title": "Café crème"},
    },
    {"event_id": "pv-1", "event_name": "page_view", "event_time_ms": 1_700_000_000_500},
]

GOLDEN_BODY = (
    b'{"events":['
    b'{"event_id":"ord-1001","event_name":"purchase","event_time_ms":1700000000000,'
    b'"user":{"em":"' + b"a" * 64 + b'","ip":"203.0.113.9"},'
    b'"properties":{"value":19.99,"currency":"EUR","title":"Caf\xc3\xa9 cr\xc3\xa8me"}},'
    b'{"event_id":"pv-1","event_name":"page_view","event_time_ms":1700000000500}'
    b"]}"
)


def webhook(url: str = "https://hooks.example.com/relay/in?tenant=7", **kw: Any):
    config = DestinationConfig(
        name="hook", type="webhook", options={"url": url, "secret": SECRET}, **kw
    )
    return WebhookDestination(config)


def response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> HttpResponse:
    return HttpResponse(status=status, headers=headers or {}, body=body)


# --- outcomes_from_status ------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered_for_every_event(status: int) -> None:
    assert outcomes_from_status(response(status), 3) == [Outcome(OutcomeKind.DELIVERED)] * 3


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_retry_with_detail(status: int) -> None:
    outcomes = outcomes_from_status(response(status, body=b"upstream busy\n"), 2)
    assert outcomes == [Outcome(OutcomeKind.RETRY, f"HTTP {status}: upstream busy", None)] * 2
    assert not any(o.whole_batch for o in outcomes)


def test_retry_honours_retry_after_seconds() -> None:
    outcomes = outcomes_from_status(response(429, {"Retry-After": "7"}, b"slow down"), 1)
    assert outcomes == [Outcome(OutcomeKind.RETRY, "HTTP 429: slow down", 7.0)]


@pytest.mark.parametrize("name", ["retry-after", "RETRY-AFTER", "Retry-after"])
def test_retry_after_header_name_is_case_insensitive(name: str) -> None:
    # HTTP field names are case-insensitive (RFC 9110 §5.1); the worker builds HttpResponse
    # headers with dict(resp.headers), which keeps the server's spelling.
    (outcome,) = outcomes_from_status(response(503, {name: "12"}), 1)
    assert outcome.retry_after_s == 12.0


def test_unparseable_retry_after_is_ignored() -> None:
    (outcome,) = outcomes_from_status(response(503, {"Retry-After": "later"}), 1)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after_s is None


@pytest.mark.parametrize("status", [301, 304, 400, 401, 403, 404, 413, 422, 499])
def test_other_statuses_are_permanent_for_the_whole_batch(status: int) -> None:
    outcomes = outcomes_from_status(response(status, {"Retry-After": "5"}, b'{"error":"bad"}'), 2)
    expected = Outcome(OutcomeKind.PERMANENT, f'HTTP {status}: {{"error":"bad"}}', whole_batch=True)
    assert outcomes == [expected] * 2


def test_no_events_no_outcomes() -> None:
    assert outcomes_from_status(response(200), 0) == []
    assert outcomes_from_status(response(500), 0) == []


def test_summarize_body() -> None:
    assert summarize_body(b"  line one\nline two \n") == "line one line two"
    assert summarize_body(b"x" * 300) == "x" * 300
    assert summarize_body(b"x" * 301) == "x" * 300 + "…"
    assert summarize_body(b"abc", limit=2) == "ab…"
    assert summarize_body(b"bad \xff byte") == "bad \ufffd byte"


# --- HttpRequest.redacted ------------------------------------------------------------------


def test_redacted_replaces_every_secret_everywhere() -> None:
    request = HttpRequest(
        method="POST",
        url="https://graph.example/v1/events?access_token=tok-AAA",
        headers={"Authorization": "Bearer tok-AAA", "X-Api-Key": "key-BBB", "Accept": "*/*"},
        body=b'{"token":"tok-AAA","key":"key-BBB","x":"tok-AAA"}',
        secrets=("tok-AAA", "key-BBB"),
    )
    assert request.redacted() == {
        "method": "POST",
        "url": "https://graph.example/v1/events?access_token=[redacted]",
        "headers": {
            "Authorization": "Bearer [redacted]",
            "X-Api-Key": "[redacted]",
            "Accept": "*/*",
        },
        "body": '{"token":"[redacted]","key":"[redacted]","x":"[redacted]"}',
    }


def test_redacted_ignores_empty_secrets_and_keeps_non_secrets() -> None:
    request = HttpRequest("GET", "https://x.example/a", {"A": "b"}, b"caf\xc3\xa9", secrets=("",))
    assert request.redacted() == {
        "method": "GET",
        "url": "https://x.example/a",
        "headers": {"A": "b"},
        "body": "café",
    }


def test_redacted_is_json_serializable() -> None:
    request = HttpRequest("POST", "https://x.example", {}, b"\xff", secrets=("s",))
    assert json.loads(json.dumps(request.redacted()))["body"] == "\ufffd"


# --- webhook -------------------------------------------------------------------------------


def test_webhook_is_registered() -> None:
    assert registry.get("webhook") is WebhookDestination
    assert "webhook" in registry.names()
    assert registry.get("nope") is None


def test_webhook_golden_request() -> None:
    request = webhook().build_request(EVENTS)
    assert request.method == "POST"
    assert request.url == "https://hooks.example.com/relay/in?tenant=7"
    assert request.body == GOLDEN_BODY
    assert json.loads(request.body) == {"events": EVENTS}
    expected_sig = hmac.new(SECRET.encode(), GOLDEN_BODY, hashlib.sha256).hexdigest()
    assert dict(request.headers) == {
        "Content-Type": "application/json",
        "X-Relay-Signature": f"sha256={expected_sig}",
    }
    assert request.secrets == (SECRET,)


def test_webhook_signature_verifies_like_a_receiver_would() -> None:
    request = webhook().build_request(EVENTS)
    scheme, _, received = request.headers[SIGNATURE_HEADER].partition("=")
    assert scheme == "sha256"
    computed = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received, computed)
    wrong = hmac.new(b"another-secret", request.body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(received, wrong)
    tampered = hmac.new(SECRET.encode(), request.body + b" ", hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(received, tampered)


def test_webhook_request_is_deterministic() -> None:
    assert webhook().build_request(EVENTS) == webhook().build_request(EVENTS)


def test_webhook_secret_is_not_in_the_request_and_redacted_view() -> None:
    request = webhook().build_request(EVENTS)
    assert SECRET.encode() not in request.body
    assert SECRET not in json.dumps(request.redacted())


def test_webhook_empty_batch() -> None:
    request = webhook().build_request([])
    assert request.body == b'{"events":[]}'


@pytest.mark.parametrize(
    ("url", "endpoint", "expected"),
    [
        ("https://hooks.example.com/relay/in?tenant=7", "http://127.0.0.1:9999",
         "http://127.0.0.1:9999/relay/in?tenant=7"),
        ("https://hooks.example.com/relay/in?tenant=7", "http://127.0.0.1:9999/",
         "http://127.0.0.1:9999/relay/in?tenant=7"),
        ("https://hooks.example.com/relay/in", "http://proxy.internal:8080/egress/",
         "http://proxy.internal:8080/egress/relay/in"),
        ("https://hooks.example.com", "http://127.0.0.1:9999", "http://127.0.0.1:9999"),
    ],
)  # fmt: skip
def test_webhook_endpoint_override_keeps_path_and_query(
    url: str, endpoint: str, expected: str
) -> None:
    request = webhook(url, endpoint=endpoint).build_request(EVENTS)
    assert request.url == expected
    assert request.body == webhook(url).build_request(EVENTS).body


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, [Outcome(OutcomeKind.DELIVERED)] * 2),
        (204, {}, [Outcome(OutcomeKind.DELIVERED)] * 2),
        (503, {"Retry-After": "30"}, [Outcome(OutcomeKind.RETRY, "HTTP 503: nope", 30.0)] * 2),
        (400, {}, [Outcome(OutcomeKind.PERMANENT, "HTTP 400: nope", whole_batch=True)] * 2),
    ],
)
def test_webhook_read_response(
    status: int, headers: dict[str, str], expected: list[Outcome]
) -> None:
    assert webhook().read_response(EVENTS, response(status, headers, b"nope")) == expected


def test_webhook_batch_size_is_capped_by_the_platform_limit() -> None:
    assert webhook(batch_size=5000).batch_size == WebhookDestination.max_batch == 1000
    assert webhook(batch_size=50).batch_size == 50


def test_webhook_has_no_deadline() -> None:
    assert webhook().deadline_ms({"event_time_ms": 1_700_000_000_000}) == 2**62
