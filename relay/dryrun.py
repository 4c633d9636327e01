"""dry_run: the exact request a destination would send, appended to a JSONL file and logged."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from relay.destinations.base import HttpRequest

log = structlog.get_logger("relay.dryrun")


class DryRunRecorder:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    async def record(
        self, destination: str, request: HttpRequest, events: Sequence[Mapping[str, Any]]
    ) -> None:
        shown = request.redacted()  # tokens never leave the process, not even in dry_run
        event_ids = [e.get("event_id") for e in events]
        log.info("dry_run_request", destination=destination, event_ids=event_ids, request=shown)
        if self.path is None:
            return
        line = orjson.dumps({"destination": destination, "event_ids": event_ids, "request": shown})
        async with self._lock:
            await asyncio.to_thread(self._append, line + b"\n")

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        with open(self.path, "ab") as f:  # type: ignore[arg-type]
            f.write(line)
