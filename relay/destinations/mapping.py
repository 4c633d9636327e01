"""Pure helpers shared by the platform mappers: names, time, click ids, consent, contents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from relay.config import DestinationConfig

Event = Mapping[str, Any]


def platform_event_name(
    config: DestinationConfig, canonical: str, standard: Mapping[str, str]
) -> str | None:
    """The platform's name for a canonical event: the destination's ``event_names`` override,
    then the platform's standard table; None when neither has it (custom event)."""
    return config.event_names.get(canonical) or standard.get(canonical)


def event_time_s(event: Event) -> int:
    return int(event["event_time_ms"]) // 1000


def user(event: Event) -> Mapping[str, str]:
    return event.get("user") or {}


def properties(event: Event) -> Mapping[str, Any]:
    return event.get("properties") or {}


def page_url(event: Event) -> str | None:
    return (event.get("page") or {}).get("url")


def referrer(event: Event) -> str | None:
    return (event.get("page") or {}).get("referrer")


def url_param(url: str | None, name: str) -> str | None:
    """First value of a query parameter of ``url`` (click ids such as fbclid, ttclid, epik)."""
    if not url:
        return None
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def meta_fbc(event: Event) -> str | None:
    """The ``fbc`` click id: the stored cookie value, else built from an ``fbclid`` in the page
    URL as ``fb.1.<click time ms>.<fbclid>`` (Meta's format; subdomain index 1 = the site's
    registrable domain, the event time standing in for the click time)."""
    stored = user(event).get("fbc")
    if stored:
        return stored
    fbclid = url_param(page_url(event), "fbclid")
    return f"fb.1.{int(event['event_time_ms'])}.{fbclid}" if fbclid else None


def ad_user_data_denied(event: Event) -> bool:
    """The visitor refused that their data be used for ads: send no identifiers, and say so
    where the platform has a limited-data-use flag."""
    return (event.get("consent") or {}).get("ad_user_data") == "denied"


def contents(event: Event) -> list[dict[str, Any]]:
    """Canonical ``properties.contents``: [{id, quantity, price}], malformed entries skipped."""
    out = []
    for item in properties(event).get("contents") or []:
        if isinstance(item, dict) and item.get("id") is not None:
            entry: dict[str, Any] = {"id": str(item["id"])}
            if isinstance(item.get("quantity"), int | float):
                entry["quantity"] = item["quantity"]
            if isinstance(item.get("price"), int | float):
                entry["price"] = item["price"]
            out.append(entry)
    return out
