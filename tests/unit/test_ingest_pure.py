"""relay.ingest pure helpers: the visitor's IP behind proxies, and CORS origin checks."""

import ipaddress

import pytest

from relay.config import SourceConfig
from relay.ingest import client_ip, origin_allowed

TRUSTED = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
VISITOR = "203.0.113.9"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        (None, None, None),
        (None, VISITOR, None),
        ("198.51.100.4", None, "198.51.100.4"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
    ],
)
def test_peer_without_forwarded_for(
    peer: str | None, forwarded_for: str | None, expected: str | None
) -> None:
    assert client_ip(peer, forwarded_for, TRUSTED) == expected


@pytest.mark.parametrize("forwarded_for", [VISITOR, f"1.2.3.4, {VISITOR}", "10.0.0.5"])
def test_forwarded_for_from_an_untrusted_peer_is_ignored(forwarded_for: str) -> None:
    assert client_ip("198.51.100.4", forwarded_for, TRUSTED) == "198.51.100.4"


def test_no_trusted_proxies_configured_ignores_forwarded_for() -> None:
    assert client_ip("127.0.0.1", VISITOR, ()) == "127.0.0.1"


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        (VISITOR, VISITOR),
        (f"  {VISITOR}  ", VISITOR),
        # left entries are whatever the client wrote: the right-most untrusted hop wins
        (f"1.2.3.4, {VISITOR}", VISITOR),
        (f"1.2.3.4,{VISITOR}", VISITOR),
        # trusted proxies in the chain are skipped
        (f"{VISITOR}, 10.0.0.2", VISITOR),
        (f"1.2.3.4, {VISITOR}, 10.1.2.3, 127.0.0.1", VISITOR),
        # every hop a trusted proxy: nothing better than the peer
        ("10.0.0.2, 10.0.0.3", "127.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),
        (f"2001:db8::1, {VISITOR}", VISITOR),
    ],
)
def test_right_most_untrusted_hop_behind_a_trusted_peer(forwarded_for: str, expected: str) -> None:
    assert client_ip("127.0.0.1", forwarded_for, TRUSTED) == expected


def test_ipv6_trusted_peer() -> None:
    assert client_ip("::1", VISITOR, TRUSTED) == VISITOR
    assert client_ip("2001:db8::7", VISITOR, TRUSTED) == "2001:db8::7"


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        # garbage right of the visitor: the chain cannot be trusted past it, use the peer
        (f"{VISITOR}, unknown", "127.0.0.1"),
        (f"{VISITOR}, garbage, 10.0.0.2", "127.0.0.1"),
        (f"{VISITOR}:51234", "127.0.0.1"),
        ("[2001:db8::1]", "127.0.0.1"),
        ("999.1.1.1", "127.0.0.1"),
        ("<script>", "127.0.0.1"),
        # garbage left of the visitor is never reached
        (f"unknown, {VISITOR}", VISITOR),
        (f"<script>, {VISITOR}", VISITOR),
        # empty entries are skipped
        (f" , {VISITOR}, ,", VISITOR),
        (",,,", "127.0.0.1"),
    ],
)
def test_garbage_forwarded_for_entries(forwarded_for: str, expected: str) -> None:
    assert client_ip("127.0.0.1", forwarded_for, TRUSTED) == expected


def test_garbage_peer_is_returned_untrusted() -> None:
    assert client_ip("not-an-ip", VISITOR, TRUSTED) == "not-an-ip"


# --- origin_allowed -------------------------------------------------------------------------


def source(*origins: str) -> SourceConfig:
    return SourceConfig(
        name="web",
        key="k",
        kind="browser",
        time="corrected",
        max_age_s=7 * 86400,
        allowed_origins=origins,
    )


@pytest.mark.parametrize(
    ("origins", "origin", "allowed"),
    [
        (("https://shop.example",), "https://shop.example", True),
        (("https://shop.example", "https://www.shop.example"), "https://www.shop.example", True),
        (("https://shop.example",), "https://evil.example", False),
        (("https://shop.example",), "http://shop.example", False),
        (("https://shop.example",), "https://shop.example:8443", False),
        (("https://shop.example",), "https://shop.example.evil.example", False),
        (("https://shop.example",), "https://shop.example/", False),
        (("https://shop.example",), "null", False),
        (("https://shop.example",), "", False),
        ((), "https://shop.example", False),
        (("*",), "https://anything.example", True),
        (("https://shop.example", "*"), "null", True),
    ],
)
def test_origin_allowed(origins: tuple[str, ...], origin: str, allowed: bool) -> None:
    assert origin_allowed(source(*origins), origin) is allowed


def test_ipv4_mapped_peer_counts_as_trusted() -> None:
    assert client_ip("::ffff:127.0.0.1", VISITOR, TRUSTED) == VISITOR
