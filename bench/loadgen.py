"""wrk as the load generator: one thread, keep-alive connections, fresh event ids per request."""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.events import ID_MARKER, raw_template
from bench.servers import OPENER, RELAY_KEY, BenchError

SCRIPT = Path(__file__).resolve().parent / "wrk" / "events.lua"
# A stall longer than this counts as a wrk timeout error (which fails the run) rather than as
# latency; wrk's default of 2 s would hide exactly the stalls worth seeing in p99.
REQUEST_TIMEOUT_S = 10


@dataclass(frozen=True)
class Workload:
    name: str
    events_per_request: int


SINGLE = Workload("single", 1)
BATCH = Workload("batch100", 100)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]  # p50, p90, p99, max, mean

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def probe(url: str, workload: Workload) -> str:
    """Send one request like wrk's and describe the answer (to say why wrk saw errors)."""
    template = raw_template(int(time.time())).decode()
    events = [
        template.replace(ID_MARKER, f"probe-{uuid.uuid4()}")
        for _ in range(workload.events_per_request)
    ]
    body = (
        events[0] if workload.events_per_request == 1 else '{"events":[' + ",".join(events) + "]}"
    )
    request = urllib.request.Request(
        f"{url}/v1/events",
        data=body.encode(),
        headers={"Authorization": f"Bearer {RELAY_KEY}", "Content-Type": "application/json"},
    )
    try:
        with OPENER.open(request, timeout=30) as response:
            return f"{response.status} {response.read()[:300]!r}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read()[:500]!r}"
    except OSError as exc:
        return f"no answer: {exc}"


def wrk_version() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk (or `make bench`)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def run_wrk(
    url: str,
    workload: Workload,
    seconds: int,
    work_dir: Path,
    connections: int = 50,
    threads: int = 1,
) -> WrkResult:
    """Load ``url`` for ``seconds``; raise BenchError on any non-2xx answer or socket error."""
    template = work_dir / "event-template.json"
    template.write_bytes(raw_template(int(time.time())))
    out = work_dir / f"wrk-{secrets.token_hex(4)}.json"
    env = os.environ | {
        "BENCH_TEMPLATE": str(template),
        "BENCH_MARKER": ID_MARKER,
        "BENCH_EVENTS": str(workload.events_per_request),
        "BENCH_PREFIX": secrets.token_hex(4),
        "BENCH_SEED": str(random.randrange(1, 2**31)),
        "BENCH_KEY": RELAY_KEY,
        "BENCH_OUT": str(out),
    }
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",  # wrk takes whole seconds only
        f"--timeout={REQUEST_TIMEOUT_S}s",
        "-s",
        str(SCRIPT),
        f"{url}/v1/events",
    ]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(out.read_text())
    out.unlink()
    result = WrkResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        errors=raw["errors"],
        latency_ms={k: v / 1000 for k, v in raw["latency_us"].items()},
    )
    if result.error_count:
        # wrk's "status" errors are answers >= 400; the others are socket errors and timeouts.
        raise BenchError(
            f"{url}: {workload.name}: {result.errors} out of {result.requests} requests "
            f"(every request must be answered 2xx):\n{proc.stdout}\n"
            f"one such request sent again: {probe(url, workload)}"
        )
    if result.requests == 0:
        raise BenchError(f"{url}: {workload.name}: wrk completed no request:\n{proc.stdout}")
    return result
