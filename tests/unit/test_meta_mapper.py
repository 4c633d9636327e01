"""Meta Conversions API mapper: the golden request, names, identity, consent, time, errors."""

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
from relay.destinations.meta import STANDARD_EVENTS, MetaDestination
from relay.pii import normalize_user

GOLDEN = Path(__file__).parent.parent / "golden" / "meta.json"
TOKEN = "test-token"
OPTIONS = {"pixel_id": "1234567890", "access_token": TOKEN}
T_MS = 1_767_225_600_123
UA = "Mozilla/5.0 (X11; Linux x86_64)"


def meta(**kw: Any) -> MetaDestination:
    return MetaDestination(DestinationConfig(name="meta", type="meta", options=OPTIONS, **kw))


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
    body = orjson.loads(meta(**kw).build_request([event]).body)
    return body["data"][0]


# --- golden ----------------------------------------------------------------------------------


def test_golden_request() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    request = meta().build_request(golden["events"])
    shown = request.redacted()
    assert request.method == golden["request"]["method"]
    assert shown["url"] == golden["request"]["url"]
    assert dict(request.headers) == golden["request"]["headers"]
    assert orjson.loads(request.body) == golden["request"]["body"]


def test_golden_hashes_are_metas_normalization_of_the_plaintext() -> None:
    # independent of the mapper: the golden file's hashes are Meta's rules applied by hand
    user = json.loads(GOLDEN.read_text())["request"]["body"]["data"][0]["user_data"]
    expected = {
        "em": "jane.doe@example.com",
        "ph": "16505551212",
        "fn": "jane",
        "ln": "doe",
        "db": "19900417",
        "ge": "f",
        "ct": "newyork",
        "st": "ny",
        "zp": "10001",
        "country": "us",
        "external_id": "cust-42",
    }
    assert {k: user[k] for k in expected} == {k: [sha(v)] for k, v in expected.items()}


def test_url_carries_the_token_as_a_secret_query_parameter() -> None:
    request = meta().build_request([ev()])
    assert request.url == (
        "https://graph.facebook.com/v25.0/1234567890/events?access_token=test-token"
    )
    assert TOKEN in request.secrets
    assert TOKEN not in repr(request) and TOKEN not in json.dumps(request.redacted())


def test_token_with_url_special_characters_is_encoded_and_redacted() -> None:
    options = {"pixel_id": "1234567890", "access_token": "EAAB+x/y=="}
    dest = MetaDestination(DestinationConfig(name="m", type="meta", options=options))
    request = dest.build_request([ev()])
    assert request.url.endswith("?access_token=EAAB%2Bx%2Fy%3D%3D")
    assert "EAAB" not in request.redacted()["url"]


def test_endpoint_override_keeps_path_and_token() -> None:
    request = meta(endpoint="http://127.0.0.1:8999").build_request([ev()])
    assert request.url == "http://127.0.0.1:8999/v25.0/1234567890/events?access_token=test-token"


def test_test_event_code_only_when_configured() -> None:
    assert "test_event_code" not in orjson.loads(meta().build_request([ev()]).body)
    body = orjson.loads(meta(test_event_code="TEST4242").build_request([ev()]).body)
    assert body["test_event_code"] == "TEST4242"


def test_limits_and_window() -> None:
    dest = meta(batch_size=5000)
    assert dest.max_batch == 1000 and dest.batch_size == 1000
    assert dest.deadline_ms({"event_time_ms": T_MS}) == T_MS + 7 * 86400 * 1000


# --- names, dedup, time ----------------------------------------------------------------------


@pytest.mark.parametrize(("canonical", "standard"), sorted(STANDARD_EVENTS.items()))
def test_standard_event_names(canonical: str, standard: str) -> None:
    assert mapped(ev(canonical))["event_name"] == standard


def test_table_covers_metas_standard_events() -> None:
    assert set(STANDARD_EVENTS.values()) == {
        "PageView", "ViewContent", "Search", "AddToCart", "AddToWishlist", "InitiateCheckout",
        "AddPaymentInfo", "Purchase", "Lead", "CompleteRegistration", "Contact",
        "CustomizeProduct", "Donate", "FindLocation", "Schedule", "StartTrial",
        "SubmitApplication", "Subscribe",
    }  # fmt: skip


def test_custom_events_keep_their_name_and_overrides_win() -> None:
    assert mapped(ev("view_cart"))["event_name"] == "view_cart"
    names = {"purchase": "OrderPlaced", "view_cart": "ViewCart"}
    assert mapped(ev("purchase"), event_names=names)["event_name"] == "OrderPlaced"
    assert mapped(ev("view_cart"), event_names=names)["event_name"] == "ViewCart"


def test_event_id_and_time_in_seconds() -> None:
    event = mapped(ev(event_id="pixel-abc", event_time_ms=1_700_000_000_999))
    assert event["event_id"] == "pixel-abc"
    assert event["event_time"] == 1_700_000_000


# --- action source and unsendable events -----------------------------------------------------


def web(**fields: Any) -> dict[str, Any]:
    return ev(
        page={"url": "https://shop.example/p"},
        user={"em": sha("a@example.com"), "user_agent": UA, "ip": "198.51.100.1"},
        **fields,
    )


def test_action_source_defaults() -> None:
    assert mapped(web())["action_source"] == "website"
    assert mapped(ev())["action_source"] == "other"
    assert mapped(ev(action_source="physical_store"))["action_source"] == "physical_store"
    assert meta().unsendable(web()) is None
    assert meta().unsendable(ev()) is None


def test_website_event_without_user_agent_is_unsendable() -> None:
    event = ev(page={"url": "https://shop.example/p"})
    reason = meta().unsendable(event)
    assert reason is not None
    assert "client_user_agent" in reason and "user.user_agent" in reason


def test_website_event_without_page_url_is_unsendable() -> None:
    reason = meta().unsendable(ev(action_source="website", user={"user_agent": UA}))
    assert reason is not None and "event_source_url" in reason


def test_event_without_any_user_data_is_unsendable() -> None:
    reason = meta().unsendable(ev(user={}))
    assert reason is not None and "at least one user_data" in reason
    # consent strips the only identifier: nothing left to send
    denied = ev(consent={"ad_user_data": "denied"})
    assert meta().unsendable(denied) is not None


# --- identity ---------------------------------------------------------------------------------


def test_user_data_hashes_as_arrays_and_raw_values_raw() -> None:
    stored, _ = normalize_user(
        {
            "email": "A@Example.com",
            "phone": "+1 650 555 1212",
            "gender": "m",
            "city": "San Francisco",
            "state": "CA",
            "zip": "94107",
            "country": "US",
            "ip": "2001:db8::1",
            "user_agent": UA,
            "fbp": "fb.1.1767225000000.42",
        },
        "US",
    )
    user = mapped(ev(user=stored))["user_data"]
    assert user["em"] == [sha("a@example.com")]
    assert user["ph"] == [sha("16505551212")]
    assert user["ge"] == [sha("m")]
    assert user["ct"] == [sha("sanfrancisco")]
    assert user["st"] == [sha("ca")]
    assert user["zp"] == [sha("94107")]
    assert user["country"] == [sha("us")]
    assert user["client_ip_address"] == "2001:db8::1"
    assert user["client_user_agent"] == UA
    assert user["fbp"] == "fb.1.1767225000000.42"
    assert "em_google" not in user and "ph_e164" not in user


@pytest.mark.parametrize(
    ("field", "plain", "normalized"),
    [
        ("phone", "(650)555-1212", "16505551212"),  # Meta's published example
        ("email", "  John_Smith@Example.COM ", "john_smith@example.com"),
        ("city", "New York", "newyork"),
        ("state", "New York", "ny"),
        ("zip", "94107-1234", "94107"),
        ("country", "US", "us"),
    ],
)
def test_published_normalization_examples(field: str, plain: str, normalized: str) -> None:
    stored, warnings = normalize_user({field: plain}, "US")
    assert warnings == []
    key = {"phone": "ph", "email": "em", "city": "ct", "state": "st", "zip": "zp"}.get(field, field)
    assert mapped(ev(user=stored))["user_data"][key] == [sha(normalized)]


def test_uk_zip_uses_the_compact_form() -> None:
    stored, _ = normalize_user({"zip": "M1 1AE", "country": "GB"}, "GB")
    assert mapped(ev(user=stored))["user_data"]["zp"] == [sha("m11ae")]


def test_fbc_stored_cookie_wins_over_fbclid() -> None:
    page = {"url": "https://shop.example/?fbclid=IwAR-click"}
    stored = mapped(ev(page=page, user={"user_agent": UA, "fbc": "fb.1.1700000000000.old"}))
    assert stored["user_data"]["fbc"] == "fb.1.1700000000000.old"


def test_fbc_is_built_from_fbclid_in_the_page_url() -> None:
    page = {"url": "https://shop.example/?utm_source=fb&fbclid=IwAR-click"}
    built = mapped(ev(page=page, user={"user_agent": UA}))
    assert built["user_data"]["fbc"] == f"fb.1.{T_MS}.IwAR-click"
    assert "fbc" not in mapped(web())["user_data"]


def test_page_url_and_referrer() -> None:
    event = mapped(
        ev(
            page={"url": "https://shop.example/p", "referrer": "https://search.example/"},
            user={"user_agent": UA},
        )
    )
    assert event["event_source_url"] == "https://shop.example/p"
    assert event["referrer_url"] == "https://search.example/"


# --- consent ----------------------------------------------------------------------------------


def test_ad_user_data_denied_strips_hashes_and_sets_ldu() -> None:
    stored, _ = normalize_user(
        {"email": "a@example.com", "phone": "+16505551212", "city": "Paris", "external_id": "x"},
        "US",
    )
    stored.update(ip="198.51.100.1", user_agent=UA, fbp="fb.1.1767225000000.42")
    event = ev(page={"url": "https://shop.example/"}, user=stored)
    granted = mapped({**event, "consent": {"ad_user_data": "granted"}})
    assert {"em", "ph", "ct", "external_id"} <= set(granted["user_data"])
    assert "data_processing_options" not in granted
    denied = mapped({**event, "consent": {"ad_user_data": "denied"}})
    assert denied["user_data"] == {
        "client_ip_address": "198.51.100.1",
        "client_user_agent": UA,
        "fbp": "fb.1.1767225000000.42",
    }
    assert denied["data_processing_options"] == ["LDU"]
    assert denied["data_processing_options_country"] == 0
    assert denied["data_processing_options_state"] == 0


# --- custom data ------------------------------------------------------------------------------


def test_custom_data() -> None:
    props = {
        "value": 42.5,
        "currency": "USD",
        "order_id": "o-9",
        "contents": [{"id": "a", "quantity": 3, "price": 10.0}, {"id": "b", "price": 12.5}],
        "coupon": "WINTER",
    }
    assert mapped(ev(properties=props))["custom_data"] == {
        "value": 42.5,
        "currency": "USD",
        "order_id": "o-9",
        "contents": [
            {"id": "a", "quantity": 3, "item_price": 10.0},
            {"id": "b", "item_price": 12.5},
        ],
        "content_ids": ["a", "b"],
        "content_type": "product",
        "num_items": 4,
    }
    assert "custom_data" not in mapped(ev())
    assert mapped(ev("search", properties={"search_term": "red shoes"}))["custom_data"] == {
        "search_string": "red shoes"
    }


# --- responses --------------------------------------------------------------------------------


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return HttpResponse(status, headers or {}, raw)


def error(code: int, **fields: Any) -> dict[str, Any]:
    return {
        "error": {
            "message": fields.pop("message", "Something"),
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "Trace123",
            **fields,
        }
    }


def outcomes(response: HttpResponse, n: int = 2) -> list[Outcome]:
    return meta().read_response([ev()] * n, response)


def test_success_is_delivered() -> None:
    body = {"events_received": 2, "messages": [], "fbtrace_id": "Trace123"}
    assert outcomes(reply(200, body)) == [Outcome(OutcomeKind.DELIVERED)] * 2


def test_200_without_metas_answer_is_retried() -> None:
    [outcome] = outcomes(reply(200, b"<html>portal</html>"), 1)
    assert outcome.kind is OutcomeKind.RETRY and "events_received" in (outcome.detail or "")


@pytest.mark.parametrize(
    ("code", "subcode", "transient", "kind", "whole_batch", "pause"),
    [
        (4, None, False, OutcomeKind.RETRY, False, False),  # app rate limit
        (17, None, False, OutcomeKind.RETRY, False, False),  # user rate limit
        (80003, None, False, OutcomeKind.RETRY, False, False),  # ad account rate limit
        (1, None, False, OutcomeKind.RETRY, False, False),
        (2, None, True, OutcomeKind.RETRY, False, False),
        (341, None, False, OutcomeKind.RETRY, False, False),
        (368, None, False, OutcomeKind.RETRY, False, False),
        (5000, None, False, OutcomeKind.RETRY, False, False),
        (21009, None, False, OutcomeKind.RETRY, False, False),
        (999999, None, False, OutcomeKind.RETRY, False, False),  # unmapped: retried
        (100, 2804003, False, OutcomeKind.PERMANENT, True, False),  # too old
        (100, 2804019, False, OutcomeKind.PERMANENT, True, False),
        (100, None, False, OutcomeKind.PERMANENT, True, False),
        (100, None, True, OutcomeKind.RETRY, False, False),  # Meta says transient: trust it
        (3, None, False, OutcomeKind.PERMANENT, True, False),
        (294, None, False, OutcomeKind.PERMANENT, True, False),
        (105, None, False, OutcomeKind.PERMANENT, True, False),
        (190, 460, False, OutcomeKind.RETRY, False, True),  # bad token: pause
        (190, None, False, OutcomeKind.RETRY, False, True),
        (200, None, False, OutcomeKind.RETRY, False, True),  # no permission on the pixel
        (100, 33, False, OutcomeKind.RETRY, False, True),  # pixel missing / not visible
        (33, None, False, OutcomeKind.RETRY, False, True),
    ],
)
def test_error_codes(
    code: int,
    subcode: int | None,
    transient: bool,
    kind: OutcomeKind,
    whole_batch: bool,
    pause: bool,
) -> None:
    fields: dict[str, Any] = {"is_transient": transient}
    if subcode is not None:
        fields["error_subcode"] = subcode
    result = outcomes(reply(400 if code != 2 else 500, error(code, **fields)))
    assert len(result) == 2 and result[0] == result[1]
    assert (result[0].kind, result[0].whole_batch, result[0].pause) == (kind, whole_batch, pause)
    assert "[fbtrace_id Trace123]" in (result[0].detail or "")


def test_too_old_detail_has_metas_words() -> None:
    body = error(
        100,
        message="Invalid parameter",
        error_subcode=2804003,
        is_transient=False,
        error_user_title="Event Timestamp Too Old",
        error_user_msg="The timestamp for this event is too far in the past.",
    )
    [outcome] = outcomes(reply(400, body), 1)
    assert outcome == Outcome(
        OutcomeKind.PERMANENT,
        "Meta error 100/2804003 (OAuthException): Invalid parameter - Event Timestamp Too Old: "
        "The timestamp for this event is too far in the past. [fbtrace_id Trace123]",
        whole_batch=True,
    )


def test_bad_token_detail_and_pause() -> None:
    body = error(
        190, message="Error validating access token: Session has expired", error_subcode=463
    )
    [outcome] = outcomes(reply(400, body), 1)
    assert outcome.pause and outcome.kind is OutcomeKind.RETRY
    assert outcome.detail == (
        "Meta error 190/463 (OAuthException): Error validating access token: Session has expired"
        " [fbtrace_id Trace123]"
    )


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(error(190, message=f"Malformed access token {TOKEN}")),
        f"<html>Cannot POST /v25.0/1/events?access_token={TOKEN}</html>".encode(),
    ],
)
def test_a_token_echoed_in_an_error_is_redacted(body: bytes) -> None:
    [outcome] = outcomes(reply(400, body), 1)
    assert outcome.detail is not None and "[redacted]" in outcome.detail
    assert TOKEN not in outcome.detail


def test_throttling_honours_retry_after() -> None:
    [outcome] = outcomes(reply(400, error(17), {"retry-after": "120"}), 1)
    assert outcome.kind is OutcomeKind.RETRY and outcome.retry_after_s == 120.0


@pytest.mark.parametrize(
    ("status", "kind", "whole_batch"),
    [
        (502, OutcomeKind.RETRY, False),
        (503, OutcomeKind.RETRY, False),
        (429, OutcomeKind.RETRY, False),
        (400, OutcomeKind.PERMANENT, True),
        (404, OutcomeKind.PERMANENT, True),
    ],
)
def test_html_bodies_by_status(status: int, kind: OutcomeKind, whole_batch: bool) -> None:
    [outcome] = outcomes(reply(status, b"<html><body>Error</body></html>", {"Retry-After": "5"}), 1)
    assert (outcome.kind, outcome.whole_batch) == (kind, whole_batch)
    assert outcome.detail == f"HTTP {status}: <html><body>Error</body></html>"
    if kind is OutcomeKind.RETRY:
        assert outcome.retry_after_s == 5.0


# --- config -----------------------------------------------------------------------------------


def test_registered_under_its_type_name() -> None:
    assert registry.get("meta") is MetaDestination


def write(tmp_path: Path, keys: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(
        f'[storage]\npath = "r.db"\n[[destinations]]\nname = "fb"\ntype = "meta"\n{keys}\n',
        encoding="utf-8",
    )
    return path


def test_config_keys(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, 'pixel_id = 1234567890\naccess_token = "${META_TOKEN}"'),
        environ={"META_TOKEN": "EAAB123"},
    )
    assert config.destinations[0].options == {"pixel_id": "1234567890", "access_token": "EAAB123"}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('access_token = "t"', "destinations[0].pixel_id: is required"),
        ('pixel_id = "1"', "destinations[0].access_token: is required"),
        ('pixel_id = "px-1"\naccess_token = "t"', "destinations[0].pixel_id: must be the numeric"),
        ('pixel_id = "1"\naccess_token = "a b"', "destinations[0].access_token: must be"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, keys: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, keys), environ={})
