"""TikTok Events API 2.0 mapper: the golden request, names, identity, consent, time, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.config import ConfigError, DestinationConfig, load_config
from relay.destinations import registry
from relay.destinations.base import HttpResponse, Outcome, OutcomeKind
from relay.destinations.tiktok import STANDARD_EVENTS, TikTokDestination
from relay.pii import normalize_user

GOLDEN = Path(__file__).parent.parent / "golden" / "tiktok.json"
TOKEN = "test-token"
OPTIONS = {"pixel_code": "CABCDEF0123456789", "access_token": TOKEN}
T_MS = 1_767_225_600_123
UA = "Mozilla/5.0 (X11; Linux x86_64)"


def tiktok(**kw: Any) -> TikTokDestination:
    return TikTokDestination(DestinationConfig(name="tt", type="tiktok", options=OPTIONS, **kw))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ev(name: str = "purchase", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "event_name": name,
        "event_time_ms": T_MS,
        "user": {"em": sha("a@example.com")},
    }
    event.update(fields)
    return event


def mapped(event: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return orjson.loads(tiktok(**kw).build_request([event]).body)["data"][0]


# --- golden ----------------------------------------------------------------------------------


def test_golden_request() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    request = tiktok().build_request(golden["events"])
    shown = request.redacted()
    assert request.method == golden["request"]["method"]
    assert request.url == golden["request"]["url"]
    assert shown["headers"] == golden["request"]["headers"]
    assert orjson.loads(request.body) == golden["request"]["body"]


def test_golden_hashes_follow_tiktoks_rules() -> None:
    # independent of the mapper: the phone is hashed in E.164 WITH its "+"
    user = json.loads(GOLDEN.read_text())["request"]["body"]["data"][0]["user"]
    assert user["email"] == sha("jane.doe@example.com")
    assert user["phone"] == sha("+16505551212")
    assert user["external_id"] == sha("cust-42")


def test_token_goes_in_the_access_token_header_as_a_secret() -> None:
    request = tiktok().build_request([ev()])
    assert request.url == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
    assert request.headers["Access-Token"] == TOKEN
    assert request.headers["Content-Type"] == "application/json"
    assert request.secrets == (TOKEN,)
    assert TOKEN not in json.dumps(request.redacted())


def test_envelope_and_endpoint_override() -> None:
    request = tiktok(endpoint="http://127.0.0.1:8999/").build_request([ev(), ev(event_id="e-2")])
    assert request.url == "http://127.0.0.1:8999/open_api/v1.3/event/track/"
    body = orjson.loads(request.body)
    assert body["event_source"] == "web"
    assert body["event_source_id"] == "CABCDEF0123456789"
    assert [e["event_id"] for e in body["data"]] == ["e-1", "e-2"]


def test_test_event_code_only_when_configured() -> None:
    assert "test_event_code" not in orjson.loads(tiktok().build_request([ev()]).body)
    body = orjson.loads(tiktok(test_event_code="TEST777").build_request([ev()]).body)
    assert body["test_event_code"] == "TEST777"


def test_limits_and_window() -> None:
    dest = tiktok(batch_size=5000)
    assert dest.batch_size == 1000
    # UNCONFIRMED window: the stricter 7 d
    assert dest.deadline_ms({"event_time_ms": T_MS}) == T_MS + 7 * 86400 * 1000


# --- names, dedup, time ----------------------------------------------------------------------


@pytest.mark.parametrize(("canonical", "standard"), sorted(STANDARD_EVENTS.items()))
def test_standard_event_names(canonical: str, standard: str) -> None:
    assert mapped(ev(canonical))["event"] == standard


def test_purchase_is_the_current_name_and_completepayment_an_override() -> None:
    assert mapped(ev("purchase"))["event"] == "Purchase"
    names = {"purchase": "CompletePayment"}
    assert mapped(ev("purchase"), event_names=names)["event"] == "CompletePayment"


@pytest.mark.parametrize("canonical", ["page_view", "donate", "login", "view_cart", "my_event"])
def test_events_without_a_standard_name_go_out_as_custom(canonical: str) -> None:
    assert mapped(ev(canonical))["event"] == canonical
    assert tiktok().unsendable(ev(canonical)) is None


def test_event_id_and_time_in_seconds() -> None:
    event = mapped(ev(event_id="pixel-xyz", event_time_ms=1_700_000_000_999))
    assert (event["event_id"], event["event_time"]) == ("pixel-xyz", 1_700_000_000)


# --- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "region", "e164"),
    [
        ("(650)555-1212", "US", "+16505551212"),
        ("+44 844 412 4653", "US", "+448444124653"),
        ("0044 844 412 4653", "US", "+448444124653"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_phone_is_the_e164_hash(plain: str, region: str, e164: str) -> None:
    stored, warnings = normalize_user({"phone": plain}, region)
    assert warnings == []
    assert mapped(ev(user=stored))["user"] == {"phone": sha(e164)}


def test_user_fields() -> None:
    stored, _ = normalize_user({"email": " A@Example.COM ", "external_id": "u-1"}, "US")
    stored.update(ip="203.0.113.5", user_agent=UA, ttp="ttp-cookie", ttclid="click-1", fbp="x")
    assert mapped(ev(user=stored))["user"] == {
        "email": sha("a@example.com"),
        "external_id": sha("u-1"),
        "ip": "203.0.113.5",
        "user_agent": UA,
        "ttp": "ttp-cookie",
        "ttclid": "click-1",
    }


def test_ttclid_from_the_page_url_when_not_stored() -> None:
    page = {"url": "https://shop.example/?ttclid=E.C.P.fromurl&x=1"}
    assert mapped(ev(page=page, user={}))["user"] == {"ttclid": "E.C.P.fromurl"}
    stored = mapped(ev(page=page, user={"ttclid": "E.C.P.cookie"}))
    assert stored["user"]["ttclid"] == "E.C.P.cookie"
    assert "user" not in mapped(ev(page={"url": "https://shop.example/"}, user={}))


def test_page() -> None:
    page = {"url": "https://shop.example/p", "referrer": "https://search.example/"}
    assert mapped(ev(page=page))["page"] == page
    assert mapped(ev(page={"referrer": "https://r.example/"}))["page"] == {
        "referrer": "https://r.example/"
    }
    assert "page" not in mapped(ev())


# --- consent ----------------------------------------------------------------------------------


def test_ad_user_data_denied_strips_hashes_and_sets_limited_data_use() -> None:
    stored, _ = normalize_user(
        {"email": "a@example.com", "phone": "+16505551212", "external_id": "u-1"}, "US"
    )
    stored.update(ip="203.0.113.5", user_agent=UA, ttp="ttp-cookie")
    granted = mapped(ev(user=stored, consent={"ad_user_data": "granted"}))
    assert {"email", "phone", "external_id"} <= set(granted["user"])
    assert "limited_data_use" not in granted
    denied = mapped(ev(user=stored, consent={"ad_user_data": "denied"}))
    assert denied["user"] == {"ip": "203.0.113.5", "user_agent": UA, "ttp": "ttp-cookie"}
    assert denied["limited_data_use"] is True


# --- properties -------------------------------------------------------------------------------


def test_properties() -> None:
    props = {
        "value": 42.5,
        "currency": "USD",
        "order_id": "o-9",
        "contents": [{"id": "a", "quantity": 3, "price": 10.0}, {"id": 7}],
        "coupon": "WINTER",
    }
    assert mapped(ev(properties=props))["properties"] == {
        "value": 42.5,
        "currency": "USD",
        "order_id": "o-9",
        "contents": [{"content_id": "a", "quantity": 3, "price": 10.0}, {"content_id": "7"}],
        "content_type": "product",
    }
    assert "properties" not in mapped(ev())
    search = mapped(ev("search", properties={"search_term": "red shoes"}))
    assert search["properties"] == {"query": "red shoes"}


# --- responses --------------------------------------------------------------------------------


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return HttpResponse(status, headers or {}, raw)


def outcomes(response: HttpResponse, n: int = 2) -> list[Outcome]:
    return tiktok().read_response([ev()] * n, response)


def test_code_0_is_delivered() -> None:
    ok = {"code": 0, "message": "OK", "request_id": "r-1"}
    assert outcomes(reply(200, ok)) == [Outcome(OutcomeKind.DELIVERED)] * 2
    assert (
        outcomes(reply(200, {"code": 0, "message": "OK"})) == [Outcome(OutcomeKind.DELIVERED)] * 2
    )


def test_throttled_40100_is_retried_with_retry_after() -> None:
    body = {"code": 40100, "message": "Too many requests. Please retry in some time."}
    [outcome] = outcomes(reply(200, body, {"Retry-After": "30"}), 1)
    assert outcome == Outcome(
        OutcomeKind.RETRY,
        "TikTok code 40100: Too many requests. Please retry in some time.",
        30.0,
    )


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (40002, "Batch.0.properties.contents.0.content_id: Not a valid string"),
        (20001, "Partial success."),  # UNCONFIRMED meaning: not taken as delivered
        (40999, "Something else."),  # any other code on HTTP 200: permanent
    ],
)
def test_rejections_are_permanent_for_the_whole_batch(code: int, message: str) -> None:
    body = {"code": code, "message": message, "request_id": "r-9"}
    result = outcomes(reply(200, body))
    assert (
        result
        == [
            Outcome(
                OutcomeKind.PERMANENT,
                f"TikTok code {code}: {message} [request_id r-9]",
                whole_batch=True,
            )
        ]
        * 2
    )


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_other_codes_on_5xx_or_429_are_retried(status: int) -> None:
    body = {"code": 50000, "message": "System error"}
    [outcome] = outcomes(reply(status, body, {"Retry-After": "12"}), 1)
    assert outcome == Outcome(
        OutcomeKind.RETRY, f"HTTP {status}: TikTok code 50000: System error", 12.0
    )


@pytest.mark.parametrize(
    ("status", "kind", "whole_batch"),
    [
        (503, OutcomeKind.RETRY, False),
        (429, OutcomeKind.RETRY, False),
        (404, OutcomeKind.PERMANENT, True),
        (200, OutcomeKind.RETRY, False),  # 200 without TikTok's envelope: not proof
    ],
)
def test_non_json_bodies(status: int, kind: OutcomeKind, whole_batch: bool) -> None:
    [outcome] = outcomes(reply(status, b"<html>gateway</html>", {"Retry-After": "9"}), 1)
    assert (outcome.kind, outcome.whole_batch) == (kind, whole_batch)
    assert "<html>gateway</html>" in (outcome.detail or "")
    if kind is OutcomeKind.RETRY:
        assert outcome.retry_after_s == 9.0


def test_no_permission_40001_pauses_the_destination() -> None:
    body = {"code": 40001, "message": "No permission to operate pixel CABC."}
    result = outcomes(reply(200, body))
    assert (
        result
        == [
            Outcome(
                OutcomeKind.RETRY,
                "TikTok code 40001: No permission to operate pixel CABC.",
                pause=True,
            )
        ]
        * 2
    )


def test_a_token_echoed_in_an_error_is_redacted() -> None:
    body = {"code": 40001, "message": f"Access token {TOKEN} has no permission."}
    [outcome] = outcomes(reply(200, body), 1)
    assert outcome.detail == "TikTok code 40001: Access token [redacted] has no permission."


# --- config -----------------------------------------------------------------------------------


def test_registered_under_its_type_name() -> None:
    assert registry.get("tiktok") is TikTokDestination


def write(tmp_path: Path, keys: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(
        f'[storage]\npath = "r.db"\n[[destinations]]\nname = "tt"\ntype = "tiktok"\n{keys}\n',
        encoding="utf-8",
    )
    return path


def test_config_keys(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, 'pixel_code = "CABC123"\naccess_token = "${TT_TOKEN}"'),
        environ={"TT_TOKEN": "abc123"},
    )
    assert config.destinations[0].options == {"pixel_code": "CABC123", "access_token": "abc123"}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('access_token = "t"', r"destinations\[0\]\.pixel_code: is required"),
        ('pixel_code = "C1"', r"destinations\[0\]\.access_token: is required"),
        ('pixel_code = "C 1"\naccess_token = "t"', r"destinations\[0\]\.pixel_code: must be"),
        ('pixel_code = "C1"\naccess_token = ""', r"destinations\[0\]\.access_token: must be"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, keys: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, keys), environ={})


def test_trace_id_is_tiktoks_request_id() -> None:
    dest = tiktok()
    answer = HttpResponse(200, {}, b'{"code": 0, "message": "OK", "request_id": "2026112312"}')
    assert dest.trace_id(answer) == "2026112312"
    assert dest.trace_id(HttpResponse(502, {}, b"<html>bad gateway</html>")) is None
