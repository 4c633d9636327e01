"""The ``relay`` command: parse arguments, load config, call library functions, print.

Operator commands (status, events, dead, backup, send-test) open the database of the config
on a connection of their own, read-only unless they write, beside a running daemon; the logic
is in ``relay.inspection``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import structlog

from relay import inspection
from relay.config import Config, ConfigError, load_config
from relay.inspection import DeadFilter, InspectError, format_age, format_ms
from relay.logs import configure_logging
from relay.migrations import SchemaError

ERROR_WIDTH = 90  # last-error text in tables; --json has it whole


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.path)
        config = load_config(args.config)
        if args.command not in ("serve", "migrate"):
            _logs_to_stderr(config.logging.level)
            return int(_COMMANDS[args.command](config, args))
        configure_logging(config.logging.level, config.logging.format)
        if args.command == "migrate":
            from relay.store import migrate_file

            version = migrate_file(config.storage.path)
            print(f"{config.storage.path}: schema version {version}")
            return 0
        from relay.server import serve

        serve(config)
        return 0
    except (ConfigError, SchemaError, InspectError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"relay: database: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # RELAY_CONFIG lets an operator on a server type `relay status` without --config
    default_config = Path(os.environ.get("RELAY_CONFIG", "relay.toml"))
    common.add_argument("--config", "-c", type=Path, default=default_config)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--destination", help="only this destination")
    filters.add_argument("--reason", help="last error contains this text (case-insensitive)")
    filters.add_argument("--since", help='died at or after: "2h" (ago), ISO 8601, or epoch ms')
    filters.add_argument("--until", help="died before (same forms as --since)")
    writes = argparse.ArgumentParser(add_help=False, parents=[filters])
    writes.add_argument("--id", type=int, action="append", default=[], help="a delivery id")
    writes.add_argument("--all", action="store_true", help="every dead delivery (no filter)")
    writes.add_argument("--dry-run", action="store_true", help="only print the count")

    parser = argparse.ArgumentParser(
        prog="relay", description="Self-hosted server-side conversion relay"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common], help="run the daemon")
    sub.add_parser("migrate", parents=[common], help="create or upgrade the database, then exit")
    p = sub.add_parser("check-config", help="validate a relay.toml and print what it configures")
    p.add_argument("path", type=Path, nargs="?", default=Path("relay.toml"))
    p = sub.add_parser("status", parents=[common, as_json], help="per-destination status")
    p.add_argument("--url", help="admin API of the running relay (default: [server] listen)")
    events = sub.add_parser("events", help="stored events").add_subparsers(
        dest="action", required=True
    )
    p = events.add_parser("show", parents=[common, as_json], help="an event and its deliveries")
    p.add_argument("event_id")
    dead = sub.add_parser("dead", help="dead letters").add_subparsers(dest="action", required=True)
    p = dead.add_parser("list", parents=[common, as_json, filters], help="newest first")
    p.add_argument("--limit", type=int, default=100)
    p = dead.add_parser("show", parents=[common, as_json], help="one delivery and its attempts")
    p.add_argument("delivery_id", type=int)
    dead.add_parser(
        "replay", parents=[common, as_json, writes], help="re-queue those inside their window"
    )
    dead.add_parser("drop", parents=[common, as_json, writes], help="delete them")
    sub.add_parser("purge", parents=[common, as_json], help="run retention now")
    p = sub.add_parser("backup", parents=[common], help="online copy of the database")
    p.add_argument("path", type=Path)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p = sub.add_parser("send-test", parents=[common, as_json], help="one test event, sent now")
    p.add_argument("destination")
    p.add_argument("--test-event-code", help="Meta/TikTok test_event_code, Reddit test_id")
    p.add_argument("--really-send", action="store_true", help="send where there is no test mode")
    return parser


class _StderrLogger:
    """Writes to the current ``sys.stderr``: stdout carries the command's output (--json)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr)

    log = debug = info = warning = warn = error = err = critical = exception = fatal = msg


def _logs_to_stderr(level: str) -> None:
    # Not cached on first use: a short-lived command gains nothing, and a cached logger would
    # outlive a later reconfiguration (tests running commands in-process).
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _connect(config: Config, readonly: bool = True) -> sqlite3.Connection:
    return inspection.connect(config.storage.path, readonly=readonly)


# ---- commands


def _status(config: Config, args: argparse.Namespace) -> int:
    names = [d.name for d in config.destinations]
    with closing(_connect(config)) as conn:
        rows = inspection.destination_status(conn, _now_ms(), names)
    live, note = _live(config, args.url)
    for row in rows:
        row["worker"] = live.get(row["destination"]) if live is not None else None
    if args.json:
        return _print_json({"destinations": rows, "live": live is not None, "note": note})
    table = [
        [
            r["destination"],
            _state_text(r["worker"]),
            r["pending"],
            r["in_flight"],
            format_age(r["oldest_pending_age_s"]),
            *(f"{r[f'{s}_1h']}/{r[f'{s}_24h']}" for s in ("delivered", "dead", "expired")),
            _short(r["last_error"]),
        ]
        for r in rows
    ]
    print(_table(["DESTINATION", "STATE", "PENDING", "IN FLIGHT", "OLDEST", "DELIVERED 1h/24h",
                  "DEAD 1h/24h", "EXPIRED 1h/24h", "LAST ERROR (24h)"], table))  # fmt: skip
    if note:
        print(f"\n{note}")
    return 0


def _live(config: Config, url: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """Circuit and pause state from the running daemon's admin API (they live in memory)."""
    from relay.admin import fetch_status

    key = config.server.admin_key
    if key is None:
        return None, "circuit and pause state: set [server] admin_key to see them here"
    host, port = config.server.host, config.server.port
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    url = url or f"http://{f'[{host}]' if ':' in host else host}:{port}"
    data = fetch_status(url, key)
    if data is None:
        return None, f"circuit and pause state: relay's admin API at {url} did not answer"
    return {d["destination"]: d.get("worker") for d in data.get("destinations", [])}, None


def _events(config: Config, args: argparse.Namespace) -> int:
    with closing(_connect(config)) as conn:
        events = inspection.event_report(conn, args.event_id)
    if args.json:
        _print_json({"event_id": args.event_id, "events": events})
    else:
        for event in events:
            _print_event(event)
        if not events:
            print(f"no stored event has event_id {args.event_id!r}")
    return 0 if events else 1


def _dead(config: Config, args: argparse.Namespace) -> int:
    now_ms = _now_ms()
    if args.action == "show":
        with closing(_connect(config)) as conn:
            found = inspection.dead_show(conn, args.delivery_id)
        if found is None:
            print(f"no delivery with id {args.delivery_id}", file=sys.stderr)
            return 1
        if args.json:
            return _print_json(found)
        print(f"event {found['event_name']} {found['event_id']}")
        _print_delivery(found)
        return 0
    filters = DeadFilter(
        destination=args.destination,
        reason=args.reason,
        since_ms=None if args.since is None else inspection.parse_time_ms(args.since, now_ms),
        until_ms=None if args.until is None else inspection.parse_time_ms(args.until, now_ms),
        ids=tuple(getattr(args, "id", ())),
    )
    if args.action == "list":
        with closing(_connect(config)) as conn:
            rows = inspection.dead_list(conn, filters, args.limit)
        if args.json:
            return _print_json({"dead": rows})
        table = [
            [r["id"], r["destination"], f"{r['event_name']} {r['event_id']}", r["attempts"],
             format_ms(r["updated_at_ms"]), _window(r["deadline_ms"], now_ms),
             _short(r["last_error"])]
            for r in rows
        ]  # fmt: skip
        print(_table(["ID", "DESTINATION", "EVENT", "ATTEMPTS", "DIED", "WINDOW", "ERROR"], table))
        return 0
    if filters.empty and not args.all:
        raise InspectError(f"dead {args.action}: give a filter (--destination, --reason, --since,"
                           " --until, --id) or --all")  # fmt: skip
    progress = _Progress(args.action)
    with closing(_connect(config, readonly=args.dry_run)) as conn:
        if args.action == "replay":
            requeued, skipped = inspection.dead_replay(
                conn, filters, now_ms, dry_run=args.dry_run, progress=progress
            )
            result = {"requeued": requeued, "skipped_past_window": skipped}
        else:
            result = {"dropped": inspection.dead_drop(
                conn, filters, dry_run=args.dry_run, progress=progress)}  # fmt: skip
    progress.done()
    if args.json:
        return _print_json({**result, "dry_run": args.dry_run})
    would = "would be " if args.dry_run else ""
    if args.action == "replay":
        print(f"{result['requeued']} {would}re-queued; {result['skipped_past_window']} past the"
              " platform's window (cannot be replayed)")  # fmt: skip
    else:
        print(f"{result['dropped']} {would}dropped")
    return 0


def _purge(config: Config, args: argparse.Namespace) -> int:
    from relay import retention

    progress = _Progress("purge", unit="rows deleted")
    with closing(_connect(config, readonly=False)) as conn:
        totals = retention.purge(
            conn,
            config.storage,
            _now_ms(),
            progress=lambda t: progress(sum(t[k] for k in retention.DELETED_KINDS), None),
        )
    progress.done()
    if args.json:
        return _print_json(totals)
    print(", ".join(f"{totals[k]} {k}" for k in retention.DELETED_KINDS) + " deleted;"
          f" {totals['vacuumed_pages']} pages given back to the filesystem")  # fmt: skip
    return 0


def _backup(config: Config, args: argparse.Namespace) -> int:
    progress = _Progress("backup", unit="pages")
    pages = inspection.backup(config.storage.path, args.path, force=args.force, progress=progress)
    progress.done()
    size_mib = args.path.stat().st_size / 1024**2
    print(f"{args.path}: {pages} pages, {size_mib:.1f} MiB, quick_check ok")
    return 0


def _send_test(config: Config, args: argparse.Namespace) -> int:
    dest = next((d for d in config.destinations if d.name == args.destination), None)
    if dest is None:
        names = ", ".join(d.name for d in config.destinations) or "none"
        raise InspectError(f"no destination named {args.destination!r} (configured: {names})")
    result = asyncio.run(
        inspection.send_test(dest, _now_ms(), args.test_event_code, args.really_send)
    )
    if args.json:
        _print_json(result)
    else:
        for key in ("destination", "type", "mode", "event_id", "request", "status", "outcome"):
            print(f"{key + ':':12} {result[key]}")
        if result["detail"]:
            print(f"{'detail:':12} {result['detail']}")
        print(f"{'response:':12} {result['response'][:4000]}")
    return 0 if result["outcome"] == "delivered" else 1


_COMMANDS = {
    "status": _status,
    "events": _events,
    "dead": _dead,
    "purge": _purge,
    "backup": _backup,
    "send-test": _send_test,
}


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


# ---- printing


def _print_json(data: Any) -> int:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _print_event(event: dict[str, Any]) -> None:
    print(f"event {event['event_name']} {event['event_id']} (source {event['source']})")
    print(f"  received   {format_ms(event['received_at_ms'])}")
    print(f"  event time {format_ms(event['event_time_ms'])} (rule: {event['time_rule']})")
    print(f"  stored as  {orjson.dumps(event['payload']).decode()}")
    for delivery in event["deliveries"]:
        _print_delivery(delivery)
    if not event["deliveries"]:
        print("  no deliveries (routed nowhere, or dropped)")


def _print_delivery(d: dict[str, Any]) -> None:
    line = f"  -> {d['destination']} (delivery {d['id']}): {d['state']}, attempts {d['attempts']}"
    if d["state"] in ("pending", "leased"):
        line += f", next {format_ms(d['next_attempt_at_ms'])}"
    print(line + f", deadline {format_ms(d['deadline_ms'])}")
    if d["last_error"]:
        print(f"     last error: {d['last_error']}")
    known = {"id", "delivery_id", "attempt", "started_at_ms", "duration_ms", "http_status",
             "outcome", "detail"}  # fmt: skip
    for a in d["attempts_log"]:
        status = "-" if a["http_status"] is None else a["http_status"]
        extra = "".join(f" {k}={v}" for k, v in a.items() if k not in known and v is not None)
        detail = f": {a['detail']}" if a["detail"] else ""
        print(f"     #{a['attempt']} {format_ms(a['started_at_ms'])} {a['duration_ms']} ms"
              f" HTTP {status} {a['outcome']}{extra}{detail}")  # fmt: skip


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _short(text: str | None) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def _state_text(worker: dict[str, Any] | None) -> str:
    if worker is None:
        return "?"
    return "paused" if worker.get("paused") else str(worker.get("circuit", "?"))


def _window(deadline_ms: int, now_ms: int) -> str:
    if deadline_ms <= now_ms:
        return "closed"
    return "open" if deadline_ms >= 2**61 else f"{format_age((deadline_ms - now_ms) / 1000)} left"


class _Progress:
    """Progress on stderr: rewritten in place on a terminal, a few lines otherwise."""

    def __init__(self, label: str, unit: str = "rows") -> None:
        self.label, self.unit = label, unit
        self.shown_at = 0.0
        self.printed = False
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.shown_at < (0.2 if self.tty else 5.0) and (total is None or done < total):
            return
        self.shown_at, self.printed = now, True
        end = "\r" if self.tty else "\n"
        count = done if total is None else f"{done}/{total}"
        sys.stderr.write(f"{self.label}: {count} {self.unit}{end}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.printed and self.tty:
            sys.stderr.write("\n")


if __name__ == "__main__":
    sys.exit(main())
