"""The ``relay`` command: parse arguments, load config, call library functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relay.config import ConfigError, load_config
from relay.logs import configure_logging
from relay.migrations import SchemaError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="relay", description="Self-hosted server-side conversion relay"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the daemon")
    p.add_argument("--config", "-c", type=Path, default=Path("relay.toml"))
    p = sub.add_parser("migrate", help="create or upgrade the database, then exit")
    p.add_argument("--config", "-c", type=Path, default=Path("relay.toml"))
    p = sub.add_parser("check-config", help="validate a relay.toml and print what it configures")
    p.add_argument("path", type=Path, nargs="?", default=Path("relay.toml"))
    args = parser.parse_args(argv)

    try:
        if args.command == "check-config":
            return _check_config(args.path)
        config = load_config(args.config)
        configure_logging(config.logging.level, config.logging.format)
        if args.command == "migrate":
            from relay.store import migrate_file

            version = migrate_file(config.storage.path)
            print(f"{config.storage.path}: schema version {version}")
            return 0
        from relay.server import serve

        serve(config)
        return 0
    except (ConfigError, SchemaError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2


def _check_config(path: Path) -> int:
    config = load_config(path)
    print(f"{path}: ok")
    print(f"  listen      {config.server.host}:{config.server.port}")
    print(f"  database    {config.storage.path} (durability {config.storage.durability})")
    for s in config.sources:
        print(f"  source      {s.name}: {s.kind}, time={s.time}, max_age={s.max_age_s}s")
    for d in config.destinations:
        print(f"  destination {d.name}: {d.type}{' (dry_run)' if d.dry_run else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
