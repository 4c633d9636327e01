"""relay.toml -> frozen, typed configuration, validated at load.

Every error names the file and the key (``relay.toml: destinations[1].batch_size: ...``) and
unknown keys are errors, because a misspelt key silently ignored is a misconfigured relay.
Secrets are referenced as ``${ENV}`` (or ``${ENV:-default}``), never required inline.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A configuration problem, with the file and key in its message."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 1_048_576
    max_events_per_request: int = 500
    # in-flight deliveries get this long to finish on SIGTERM (systemd's stop timeout exceeds it)
    shutdown_grace_s: float = 10.0
    # key of the admin API and status page (/admin, /v1/admin/...); never a source key.
    # None disables them.
    admin_key: str | None = None


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    durability: Literal["full", "normal"] = "full"
    dedup_window_s: int = 7 * 86400
    # pending deliveries past which ingest answers 503 instead of growing the backlog further
    max_backlog: int = 5_000_000
    # group commit: most rows one transaction takes from the queue
    commit_max_rows: int = 5000
    dry_run_log: Path | None = None
    # how long traits learned from identify calls are kept for enriching later events
    identity_retention_s: int = 30 * 86400
    # dead and expired deliveries (and their events, once no delivery is pending) are kept this
    # long for inspection and replay
    dead_retention_s: int = 30 * 86400
    # attempt rows (the delivery log) are kept this long
    log_retention_s: int = 14 * 86400
    # ingest answers 503 when the filesystem holding the database has less free space than this
    min_free_disk_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class SourceConfig:
    name: str
    key: str
    kind: Literal["browser", "server"]
    time: Literal["server", "corrected", "client"]
    max_age_s: int
    allowed_origins: tuple[str, ...] = ()
    default_region: str = "US"
    # Segment-protocol event names -> relay canonical names, before the built-in e-commerce table
    event_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    type: str
    dry_run: bool = False
    endpoint: str | None = None
    test_event_code: str | None = None
    events: frozenset[str] | None = None
    event_names: Mapping[str, str] = field(default_factory=dict)
    # consent kinds an event must not deny to be routed here (ad_storage, ad_user_data, ...)
    consent: tuple[str, ...] = ()
    batch_size: int = 500
    concurrency: int = 2
    rate_limit: float = 0.0  # requests per second, 0 = unlimited
    max_attempts: int = 12
    timeout_s: float = 10.0
    lease_s: float = 60.0
    backoff_base_s: float = 2.0
    backoff_max_s: float = 3600.0
    circuit_threshold: int = 5
    circuit_cooldown_s: float = 30.0
    # keys specific to the destination type (url, secret, pixel_id, ...)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    storage: StorageConfig
    sources: tuple[SourceConfig, ...]
    destinations: tuple[DestinationConfig, ...]
    logging: LoggingConfig = LoggingConfig()


# ---- value parsers: each takes the raw TOML value and returns the typed value or raises
# ValueError with a message that completes "<key>: ..."

Parser = Callable[[Any], Any]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration_s(value: Any) -> float:
    """``30``, ``"30s"``, ``"5m"``, ``"48h"``, ``"7d"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as 30, "30s", "5m", "48h" or "7d"')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError('must be a duration such as 30, "30s", "5m", "48h" or "7d"')
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}  # fmt: skip


def _size_bytes(value: Any) -> int:
    """``268435456``, ``"256MiB"``, ``"1GB"`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    raise ValueError('must be a size such as 268435456, "256MiB" or "1GB"')


def _duration_int_s(value: Any) -> int:
    return int(parse_duration_s(value))


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def parse_token(value: Any) -> str:
    """An access token or API secret: one word (a pasted space or newline breaks auth)."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueError("must be a non-empty access token without spaces (use ${ENV} for secrets)")
    return value.strip()


def _pos_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer")
    return value


def _non_neg_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("must be a number >= 0")
    return float(value)


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise ValueError('must be a table of name = "value"')
    return {k: str(v) for k, v in value.items()}


def _one_of(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return str(value)

    return parse


def _listen(value: Any) -> tuple[str, int]:
    text = _str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError('must be "host:port", e.g. "127.0.0.1:8080"')
    return host.strip("[]") or "0.0.0.0", int(port)


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in _str_list(value))
    except ValueError as exc:
        raise ValueError(f"must be a list of IP addresses or CIDR ranges ({exc})") from None


def _region(value: Any) -> str:
    text = _str(value)
    if not re.fullmatch(r"[A-Za-z]{2}", text):
        raise ValueError('must be an ISO 3166 two-letter region such as "US"')
    return text.upper()


# ---- sections: key -> parser; a key absent from the file takes the dataclass default

_SERVER_KEYS: dict[str, Parser] = {
    "listen": _listen,
    "trusted_proxies": _networks,
    "max_body_bytes": _pos_int,
    "max_events_per_request": _pos_int,
    "shutdown_grace": parse_duration_s,
    "admin_key": parse_token,
}
_STORAGE_KEYS: dict[str, Parser] = {
    "path": _str,
    "durability": _one_of("full", "normal"),
    "dedup_window": _duration_int_s,
    "max_backlog": _pos_int,
    "commit_max_rows": _pos_int,
    "dry_run_log": _str,
    "identity_retention": _duration_int_s,
    "dead_retention": _duration_int_s,
    "log_retention": _duration_int_s,
    "min_free_disk": _size_bytes,
}
_SOURCE_KEYS: dict[str, Parser] = {
    "name": _str,
    "key": _str,
    "kind": _one_of("browser", "server"),
    "time": _one_of("server", "corrected", "client"),
    "max_age": _duration_int_s,
    "allowed_origins": _str_list,
    "default_region": _region,
    "event_names": _str_map,
}
_DESTINATION_KEYS: dict[str, Parser] = {
    "name": _str,
    "type": _str,
    "dry_run": parse_bool,
    "endpoint": _str,
    "test_event_code": _str,
    "events": _str_list,
    "event_names": _str_map,
    "consent": _str_list,
    "batch_size": _pos_int,
    "concurrency": _pos_int,
    "rate_limit": _non_neg_float,
    "max_attempts": _pos_int,
    "timeout": parse_duration_s,
    "lease": parse_duration_s,
    "backoff_base": parse_duration_s,
    "backoff_max": parse_duration_s,
    "circuit_threshold": _pos_int,
    "circuit_cooldown": parse_duration_s,
}
_LOGGING_KEYS: dict[str, Parser] = {
    "level": _one_of("debug", "info", "warning", "error"),
    "format": _one_of("auto", "json", "console"),
}
# config keys whose value is a duration: the dataclass field carries the unit
_RENAMED = {
    "shutdown_grace": "shutdown_grace_s",
    "dedup_window": "dedup_window_s",
    "max_age": "max_age_s",
    "timeout": "timeout_s",
    "lease": "lease_s",
    "backoff_base": "backoff_base_s",
    "backoff_max": "backoff_max_s",
    "circuit_cooldown": "circuit_cooldown_s",
    "identity_retention": "identity_retention_s",
    "dead_retention": "dead_retention_s",
    "log_retention": "log_retention_s",
    "min_free_disk": "min_free_disk_bytes",
}
_CONSENT_KINDS = ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Loader:
    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.path = path
        self.environ = environ

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")

    def expand(self, key: str, value: Any) -> Any:
        """Replace ${ENV} / ${ENV:-default} in strings, recursively."""
        if isinstance(value, str):

            def sub(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                found = self.environ.get(name)
                if default is not None and not found:
                    return default  # like the shell's :-, also when set but empty
                if found is not None:
                    return found
                raise self.error(key, f"environment variable {name} is not set")

            return _ENV_REF.sub(sub, value)
        if isinstance(value, list):
            return [self.expand(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self.expand(f"{key}.{k}", v) for k, v in value.items()}
        return value

    def section(
        self,
        where: str,
        raw: Any,
        keys: Mapping[str, Parser],
        required: tuple[str, ...] = (),
        extra: Mapping[str, Parser] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Parse a table: (known keys with field names, type-specific extra keys)."""
        if not isinstance(raw, dict):
            raise self.error(where, "must be a table")
        known: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for key, value in raw.items():
            parser = keys.get(key)
            target = known
            if parser is None and extra is not None and key in extra:
                parser, target = extra[key], extras
            if parser is None or not isinstance(key, str):
                raise self.error(f"{where}.{key}", "unknown key")
            try:
                target[_RENAMED.get(key, key)] = parser(self.expand(f"{where}.{key}", value))
            except ValueError as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise self.error(f"{where}.{key}", str(exc)) from None
        for key in required:
            if key not in raw:
                raise self.error(f"{where}.{key}", "is required")
        return known, extras


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a relay.toml. Relative paths in it are relative to the file."""
    from relay.destinations import registry  # late import: destinations depend on config types

    path = Path(path)
    loader = _Loader(path, os.environ if environ is None else environ)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    sections = {"server", "storage", "sources", "destinations", "logging"}
    for key in raw:
        if key not in sections:
            raise loader.error(key, "unknown key")
    base = path.resolve().parent

    server_kw, _ = loader.section("server", raw.get("server", {}), _SERVER_KEYS)
    if "listen" in server_kw:
        server_kw["host"], server_kw["port"] = server_kw.pop("listen")
    server = ServerConfig(**server_kw)

    storage_kw, _ = loader.section("storage", raw.get("storage", {}), _STORAGE_KEYS, ("path",))
    storage_kw["path"] = base / storage_kw["path"]
    if "dry_run_log" in storage_kw:
        storage_kw["dry_run_log"] = base / storage_kw["dry_run_log"]
    storage = StorageConfig(**storage_kw)

    sources = tuple(
        _load_source(loader, i, s) for i, s in enumerate(_tables(loader, raw, "sources"))
    )
    _unique(loader, "sources", [s.name for s in sources], "name")
    _unique(loader, "sources", [s.key for s in sources], "key")
    if server.admin_key is not None and server.admin_key in {s.key for s in sources}:
        # browser keys are public: an admin key equal to one would open the admin API to anyone
        raise loader.error("server.admin_key", "must differ from every source key")

    destinations = []
    for i, table in enumerate(_tables(loader, raw, "destinations")):
        where = f"destinations[{i}]"
        if not isinstance(table, dict):
            raise loader.error(where, "must be a table")
        type_name = table.get("type")
        dest_type = registry.get(type_name) if isinstance(type_name, str) else None
        if dest_type is None:
            raise loader.error(
                f"{where}.type", "must be one of " + ", ".join(f'"{t}"' for t in registry.names())
            )
        known, options = loader.section(
            where, table, _DESTINATION_KEYS, ("name", "type"), extra=dest_type.option_parsers
        )
        for key in dest_type.required_options:
            if key not in options:
                raise loader.error(f"{where}.{key}", f'is required for type "{type_name}"')
        if "events" in known:
            known["events"] = frozenset(known["events"])
        for kind in known.get("consent", ()):
            if kind not in _CONSENT_KINDS:
                raise loader.error(
                    f"{where}.consent", "entries must be among " + ", ".join(_CONSENT_KINDS)
                )
        destinations.append(DestinationConfig(**known, options=options))
    _unique(loader, "destinations", [d.name for d in destinations], "name")

    logging_kw, _ = loader.section("logging", raw.get("logging", {}), _LOGGING_KEYS)
    return Config(
        path=path,
        server=server,
        storage=storage,
        sources=sources,
        destinations=tuple(destinations),
        logging=LoggingConfig(**logging_kw),
    )


def _tables(loader: _Loader, raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise loader.error(key, f"must be an array of tables ([[{key}]])")
    return value


def _load_source(loader: _Loader, index: int, table: Any) -> SourceConfig:
    where = f"sources[{index}]"
    known, _ = loader.section(where, table, _SOURCE_KEYS, ("name", "key", "kind"))
    # Browser clocks drift by hours, so browsers default to skew correction; a backend's clock
    # is trusted unless configured otherwise.
    known.setdefault("time", "corrected" if known["kind"] == "browser" else "client")
    known.setdefault("max_age_s", 7 * 86400)
    return SourceConfig(**known)


def _unique(loader: _Loader, where: str, values: list[str], key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise loader.error(f"{where}[{i}].{key}", "is used twice; it must be unique")
        seen.add(value)
