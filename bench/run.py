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
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import BATCH, SINGLE, Workload, run_wrk, wrk_version
from bench.prefill import RESULTS, ensure_prefilled
from bench.servers import (
    REPO,
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
    warmup_s: int
    duration_s: int
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
) -> Run:
    """Warm up, measure, read the peak RSS; the caller stops the server."""
    kw: dict[str, Any] = {"connections": settings.connections, "threads": settings.threads}
    warmup_requests = 0
    if settings.warmup_s > 0:
        warmup_requests = run_wrk(server.url, workload, settings.warmup_s, work_dir, **kw).requests
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
        warmup_requests=warmup_requests,
    )
    if {"count", "rows", "seconds"} <= after.keys() and after["count"] > before["count"]:
        n = after["count"] - before["count"]
        run.commits = {
            "commits_per_s": n / result.duration_s,
            "avg_rows": (after["rows"] - before["rows"]) / n,
            "avg_ms": 1000 * (after["seconds"] - before["seconds"]) / n,
        }
    return run


def _commit_counters(server: Server) -> dict[str, float]:
    """Group-commit totals from relay's /metrics (events per transaction, time per commit);
    empty if relay no longer exports them."""
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
        run = measure(server, CEILING, workload, settings, tmp)
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
        run = measure(server, name, workload, settings, run_dir)
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
    if stored <= 0 or stored < acknowledged:
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
    """Per (server, workload): the median of each figure over its runs, and ratios of the median
    requests/s to the ceiling's (and, for a prefilled database, to the fresh database's)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.server, run.workload), []).append(run)
    medians = {
        key: {
            figure: statistics.median(getattr(r, figure) for r in group)
            for figure in ("requests_per_s", "events_per_s", "p50_ms", "p99_ms", "peak_rss_mib")
        }
        for key, group in groups.items()
    }
    rows = []
    for (server, workload), median in medians.items():
        ceiling = medians.get((CEILING, workload))
        fresh = medians.get((RELAY, workload))
        rows.append(
            {
                "server": server,
                "workload": workload,
                "runs": len(groups[server, workload]),
                **median,
                "ratio_to_ceiling": _ratio(median, ceiling) if server != CEILING else None,
                "ratio_to_fresh_relay": _ratio(median, fresh)
                if server not in (CEILING, RELAY)
                else None,
                "requests_per_s_each_run": [
                    round(r.requests_per_s, 1) for r in groups[server, workload]
                ],
            }
        )
    return rows


def _ratio(median: dict[str, float], base: dict[str, float] | None) -> float | None:
    return median["requests_per_s"] / base["requests_per_s"] if base else None


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'workload':<9} {'server':<21} {'req/s':>8} {'events/s':>9} {'ratio':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in sorted(rows, key=lambda r: (r["workload"] != SINGLE.name, r["server"])):
        ratio = "-" if r["ratio_to_ceiling"] is None else f"{r['ratio_to_ceiling']:.3f}"
        print(
            f"{r['workload']:<9} {r['server']:<21} {r['requests_per_s']:>8,.0f} "
            f"{r['events_per_s']:>9,.0f} {ratio:>6} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.1f} "
            f"{r['peak_rss_mib']:>7.0f}"
        )
        if r["ratio_to_fresh_relay"] is not None:
            print(f"{'':<9} {'':<21} {'vs fresh relay:':>18} {r['ratio_to_fresh_relay']:.3f}")
    print("ratio: relay requests/s over the ceiling's (medians of each server's runs)")


# ---- main


def relay_source_digest() -> str:
    """A digest of relay's source files and migrations: the code each ``relay serve`` loads."""
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "relay").rglob("*.py"), *(REPO / "migrations").glob("*.sql")]):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_describe() -> str:
    """The commit, and whether relay's tracked files differ from it."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "relay", "migrations")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted relay changes" if dirty else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=int, default=10, help="measured seconds per run")
    p.add_argument("--warmup", type=int, default=2, help="warmup seconds before each run")
    p.add_argument("--runs", type=int, default=3, help="runs per (server, workload)")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prefilled", type=int, metavar="N", help="also run on N stored events")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = p.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.runs < 1:
        p.error("--duration and --runs must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"relay {git_describe()}, source digest {relay_source_digest()}")
    settings = Settings(args.warmup, args.duration, args.connections, args.threads)
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": asdict(settings) | {"runs": args.runs, "prefilled": args.prefilled},
        "wrk": wrk_version(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "loadavg_before": os.getloadavg(),
        "relay_commit": git_describe(),
        "relay_source_digest": relay_source_digest(),
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
    if relay_source_digest() != meta["relay_source_digest"]:
        meta["relay_source_changed_during_run"] = True
        print("\nwarning: relay's source changed during the benchmark: runs mix code versions")
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
