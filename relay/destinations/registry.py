"""Destination types by their ``type`` name in relay.toml."""

from __future__ import annotations

from relay.destinations.base import Destination
from relay.destinations.webhook import WebhookDestination

_TYPES: dict[str, type[Destination]] = {cls.type_name: cls for cls in (WebhookDestination,)}


def get(type_name: str) -> type[Destination] | None:
    return _TYPES.get(type_name)


def names() -> list[str]:
    return sorted(_TYPES)
