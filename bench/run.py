"""``python -m bench.run``: relay's ingest throughput against the bare aiohttp ceiling.

For each server (bench.ceiling, ``relay serve`` on a fresh database) and each workload (single
events, 100-event batches), three runs of wrk (1 thread, 50 connections): a warmup, then the
measured period. Runs are interleaved so slow drift of the shared machine hits every column
alike. Reports medians, writes bench/results/latest.json, and checks after every relay run
that each acknowledged event is in the ``events`` table with its delivery row.

``--prefilled N`` adds three 100-event-batch runs on a copy of a database holding N events.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import BATCH, SINGLE, Workload, WrkResult, run_wrk, wrk_version
from bench.prefill import RESULTS, ensure_prefilled
from bench.servers import (
    BenchError,
    Server,
    ceiling_argv,
    free_port,
    relay_argv,
    running,
    write_relay_config,
)

CEILING = "ceiling"
RELAY = "relay"


@dataclass(frozen=True)
class Settings:
    warmup_s: float
    duration_s: float
    connections: int
    threads: int


@dataclass
class Run:
    server: str  # ceiling | relay | relay-prefilled-N
    workload: str
    events_per_request: int
    requests_per_s: float
    events_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    peak_rss_mib: float
    requests: int
    warmup_requests: int
    # relay only: the rows check and what the daemon said about itself
    stored_events: int | None = None
    commits: dict[str, float] = field(default_factory=dict)
    log_events: dict[str, int] = field(default_factory=dict)


def measure(
    server: Server, name: str, workload: Workload, settings: Settings, work_dir: Path
) -> tuple[Run, WrkResult]:
    """Warm up, measure, read the peak RSS; the caller stops the server."""
    kw: dict[str, Any] = {"connections": settings.connections, "threads": settings.threads}
    warm = run_wrk(server.url, workload, settings.warmup_s, work_dir, **kw)
    before = _commit_counters(server) if name != CEILING else {}
    result = run_wrk(server.url, workload, settings.duration_s, work_dir, **kw)
    after = _commit_counters(server) if name != CEILING else {}
    lat = result.latency_ms
    run = Run(
        server=name,
        workload=workload.name,
        events_per_request=workload.events_per_request,
        requests_per_s=result.requests_per_s,
        events_per_s=result.requests_per_s * workload.events_per_request,
        p50_ms=lat["p50"],
        p90_ms=lat["p90"],
        p99_ms=lat["p99"],
        max_ms=lat["max"],
        peak_rss_mib=server.peak_rss_kib() / 1024,
        requests=result.requests,
        warmup_requests=warm.requests,
    )
    if after:
        n = after["count"] - before["count"]
        run.commits = {
            "commits_per_s": n / result.duration_s,
            "avg_rows": (after["rows"] - before["rows"]) / n if n else 0.0,
            "avg_ms": 1000 * (after["seconds"] - before["seconds"]) / n if n else 0.0,
        }
    return run, result


def _commit_counters(server: Server) -> dict[str, float]:
    """Group-commit totals from relay's /metrics (events per transaction, time per commit)."""
    wanted = {
        "relay_commit_batch_rows_count": "count",
        "relay_commit_batch_rows_sum": "rows",
        "relay_commit_seconds_sum": "seconds",
    }
    out: dict[str, float] = {}
    for line in server.get("/metrics").decode().splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def run_ceiling(workload: Workload, settings: Settings, tmp: Path) -> Run:
    port = free_port()
    with running(CEILING, ceiling_argv(port), port, tmp / "ceiling.log") as server:
        run, _ = measure(server, CEILING, workload, settings, tmp)
    return run


def run_relay(
    name: str, workload: Workload, settings: Settings, run_dir: Path, db_path: Path
) -> Run:
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_relay_config(run_dir, port, db_path, sink_port=free_port())
    stored_before = _count(db_path, "events") if db_path.exists() else 0
    deliveries_before = _count(db_path, "deliveries") if db_path.exists() else 0
    log_path = run_dir / "relay.log"
    with running(name, relay_argv(config), port, log_path) as server:
        run, _ = measure(server, name, workload, settings, run_dir)
    exit_code = server.process.returncode
    run.log_events = _log_events(log_path)
    if exit_code != 0:
        raise BenchError(f"{name} exited with {exit_code} on SIGTERM:\n{server.log_tail()}")
    run.stored_events = _count(db_path, "events") - stored_before
    _check_stored(run, settings, _count(db_path, "deliveries") - deliveries_before)
    return run


def _count(db_path: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        count: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return count
    finally:
        conn.close()


def _check_stored(run: Run, settings: Settings, new_deliveries: int) -> None:
    """Every 202 wrk counted is a committed event (invariant 1). Requests still in flight when
    wrk stopped may have been stored too, so rows may exceed the count by that much."""
    acknowledged = (run.requests + run.warmup_requests) * run.events_per_request
    stored = run.stored_events or 0
    in_flight = 2 * settings.connections * run.events_per_request  # warmup's and the run's
    where = f"{run.server} {run.workload}"
    if stored <= 0 or stored < acknowledged - settings.connections * run.events_per_request:
        raise BenchError(f"{where}: {stored:,} events stored, {acknowledged:,} acknowledged")
    if stored < acknowledged:
        raise BenchError(
            f"{where}: {acknowledged - stored:,} acknowledged events are not in the database "
            f"({stored:,} stored, {acknowledged:,} acknowledged)"
        )
    if stored > acknowledged + in_flight:
        print(f"warning: {where}: {stored:,} stored, more than {acknowledged:,} + in flight")
    if new_deliveries != stored:
        raise BenchError(f"{where}: {stored:,} new events but {new_deliveries:,} deliveries")


def _log_events(log_path: Path) -> dict[str, int]:
    """level:event -> count, from relay's JSON log (warning and above)."""
    counts: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            counts["unparsed"] += 1
            continue
        counts[f"{entry.get('level')}:{entry.get('event')}"] += 1
    return dict(counts)


# ---- summary


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """Per (server, workload): the median of each figure over its runs; ratio to the ceiling."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.server, run.workload), []).append(run)
    ceiling = {w: statistics.median(r.requests_per_s for r in g) for (s, w), g in groups.items()
               if s == CEILING}  # fmt: skip
    rows = []
    for (server, workload), group in groups.items():
        median = {
            key: statistics.median(getattr(r, key) for r in group)
            for key in ("requests_per_s", "events_per_s", "p50_ms", "p99_ms", "peak_rss_mib")
        }
        rows.append(
            {
                "server": server,
                "workload": workload,
                "runs": len(group),
                **median,
                "ratio_to_ceiling": median["requests_per_s"] / ceiling[workload]
                if workload in ceiling
                else None,
                "requests_per_s_each_run": [round(r.requests_per_s, 1) for r in group],
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'workload':<9} {'server':<26} {'req/s':>9} {'events/s':>10} {'ratio':>6} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in sorted(rows, key=lambda r: (r["workload"] != SINGLE.name, r["server"])):
        ratio = r["ratio_to_ceiling"]
        print(
            f"{r['workload']:<9} {r['server']:<26} {r['requests_per_s']:>9,.0f} "
            f"{r['events_per_s']:>10,.0f} {'-' if r['server'] == CEILING else f'{ratio:.3f}':>6} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.1f} {r['peak_rss_mib']:>8.0f}"
        )


# ---- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="warmup seconds before each run")
    p.add_argument("--runs", type=int, default=3, help="runs per (server, workload)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prefilled", type=int, metavar="N", help="also run on N stored events")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(args.warmup, args.duration, args.connections, args.threads)
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": asdict(settings) | {"runs": args.runs, "prefilled": args.prefilled},
        "wrk": wrk_version(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "loadavg_before": os.getloadavg(),
    }
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp_name:
            tmp = Path(tmp_name)
            for i in range(args.runs):
                for workload in (SINGLE, BATCH):
                    for name in (CEILING, RELAY):
                        _progress(f"run {i + 1}/{args.runs}: {name} {workload.name}")
                        if name == CEILING:
                            runs.append(run_ceiling(workload, settings, tmp))
                        else:
                            run_dir = tmp / f"relay-{workload.name}-{i}"
                            db = run_dir / "relay.db"
                            runs.append(run_relay(RELAY, workload, settings, run_dir, db))
                            shutil.rmtree(run_dir)
                        _report(runs[-1])
            if args.prefilled:
                runs += _prefilled_runs(args.prefilled, settings, tmp, args.runs)
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    meta["loadavg_after"] = os.getloadavg()
    summary = summarize(runs)
    print()
    print_table(summary)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "summary": summary, "runs": [asdict(r) for r in runs]}
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


def _prefilled_runs(rows: int, settings: Settings, tmp: Path, count: int) -> list[Run]:
    source = ensure_prefilled(rows, log=_progress)
    run_dir = tmp / "prefilled"
    run_dir.mkdir()
    db = run_dir / "relay.db"
    _progress(f"copying {source.name} ({source.stat().st_size / 2**30:.1f} GiB)")
    shutil.copyfile(source, db)
    os.sync()  # let the copy's writeback finish before fsync-bound runs
    name = f"relay-prefilled-{_short(rows)}"
    runs = []
    for i in range(count):
        _progress(f"run {i + 1}/{count}: {name} {BATCH.name}")
        runs.append(run_relay(name, BATCH, settings, run_dir, db))
        _report(runs[-1])
    return runs


def _short(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("K", 1000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _report(run: Run) -> None:
    extra = ""
    if run.commits:
        c = run.commits
        extra = (
            f", {c['commits_per_s']:.0f} commits/s of {c['avg_rows']:.0f} events"
            f" in {c['avg_ms']:.1f} ms"
        )
    notable = {k: v for k, v in run.log_events.items() if k != "warning:circuit_opened"}
    if notable:
        extra += f", log: {notable}"
    print(
        f"    {run.requests_per_s:,.0f} req/s, {run.events_per_s:,.0f} events/s, "
        f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.1f} ms, max {run.max_ms:.0f} ms, "
        f"RSS {run.peak_rss_mib:.0f} MiB{extra}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
