"""Destination types by their ``type`` name in relay.toml.

Every module of this package that defines a ``Destination`` subclass with a ``type_name`` is a
destination type: adding a platform means adding its module, nothing here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import relay.destinations as package
from relay.destinations.base import Destination


def _discover() -> dict[str, type[Destination]]:
    found: dict[str, type[Destination]] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name in ("base", "registry", "mapping"):
            continue
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Destination) and cls.__module__ == module.__name__:
                found[cls.type_name] = cls
    return found


_TYPES = _discover()


def get(type_name: str) -> type[Destination] | None:
    return _TYPES.get(type_name)


def names() -> list[str]:
    return sorted(_TYPES)
