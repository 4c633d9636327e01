"""The honest ceiling: relay's HTTP stack and JSON parse, with no validation and no storage.

``python -m bench.ceiling --port 8081`` serves ``POST /v1/events`` on aiohttp + uvloop: read the
body, parse it with orjson, answer 202 ``{"results": [{"event_id", "status": "accepted"}...]}``
built from the parsed events. ``GET /healthz`` answers 200 so the driver can wait for it.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvloop
from aiohttp import web


async def post_events(request: web.Request) -> web.Response:
    data: Any = orjson.loads(await request.read())
    items = data["events"] if isinstance(data, dict) and "events" in data else [data]
    results = [{"event_id": e.get("event_id"), "status": "accepted"} for e in items]
    return web.Response(
        status=202, body=orjson.dumps({"results": results}), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application(client_max_size=1_048_576)  # relay's default max_body_bytes
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # access_log=None and backlog 1024 as in relay.server
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        shutdown_timeout=2.0,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
