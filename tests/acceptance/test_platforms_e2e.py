"""The daemon with all seven ad platforms pointed at their fakes: a purchase sent by the browser
(clock two hours fast, `eventID` spelling) and by the backend (`event_id`) reaches each platform
exactly once, with the pixel's id in the platform's dedup field and the corrected time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.acceptance.daemon import Daemon
from tests.conftest import BROWSER_KEY, ORIGIN, SERVER_KEY
from tests.fakes import FakeApi
from tests.platforms.fake_ga4 import FakeGA4
from tests.platforms.fake_linkedin import FakeLinkedIn
from tests.platforms.fake_meta import FakeMeta
from tests.platforms.fake_pinterest import FakePinterest
from tests.platforms.fake_reddit import FakeReddit
from tests.platforms.fake_snapchat import FakeSnapchat
from tests.platforms.fake_tiktok import FakeTikTok

pytestmark = pytest.mark.acceptance

EVENT_ID = "ord-e2e-7731"
SKEW_MS = 2 * 3600 * 1000  # the visitor's clock is two hours fast

# platform -> (dedup id, event time in ms) of each event in an accepted request body
Extract = Callable[[dict[str, Any]], list[tuple[str, int]]]
EXTRACT: dict[str, Extract] = {
    "meta": lambda b: [(e["event_id"], e["event_time"] * 1000) for e in b["data"]],
    "tiktok": lambda b: [(e["event_id"], e["event_time"] * 1000) for e in b["data"]],
    "linkedin": lambda b: [(e["eventId"], e["conversionHappenedAt"]) for e in b["elements"]],
    # GA4 has no event id: the order id is its purchase dedup key
    "ga4": lambda b: [
        (
            e["params"]["transaction_id"],
            (e.get("timestamp_micros") or b["timestamp_micros"]) // 1000,
        )
        for e in b["events"]
    ],
    "pinterest": lambda b: [(e["event_id"], e["event_time"] * 1000) for e in b["data"]],
    "snapchat": lambda b: [(e["event_id"], e["event_time"] * 1000) for e in b["data"]],
    "reddit": lambda b: [
        (e["metadata"]["conversion_id"], e["event_at"]) for e in b["data"]["events"]
    ],
}


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeApi]]:
    apis: dict[str, FakeApi] = {
        "meta": FakeMeta(),
        "tiktok": FakeTikTok(),
        "linkedin": FakeLinkedIn(),
        "ga4": FakeGA4(),
        "pinterest": FakePinterest(),
        "snapchat": FakeSnapchat(),
        "reddit": FakeReddit(),
    }
    for api in apis.values():
        await api.start()
    yield apis
    for api in apis.values():
        await api.close()


def config(f: dict[str, Any]) -> str:
    return f"""
[storage]
path = "relay.db"

[[sources]]
name = "web"
key = "{BROWSER_KEY}"
kind = "browser"
allowed_origins = ["{ORIGIN}"]

[[sources]]
name = "backend"
key = "{SERVER_KEY}"
kind = "server"

[[destinations]]
name = "meta"
type = "meta"
endpoint = "{f["meta"].base_url}"
pixel_id = "{f["meta"].pixel_id}"
access_token = "{f["meta"].access_token}"

[[destinations]]
name = "tiktok"
type = "tiktok"
endpoint = "{f["tiktok"].base_url}"
pixel_code = "{f["tiktok"].pixel_code}"
access_token = "{f["tiktok"].access_token}"

[[destinations]]
name = "linkedin"
type = "linkedin"
endpoint = "{f["linkedin"].base_url}"
access_token = "{f["linkedin"].token}"
conversion_rules = {{ purchase = "1111" }}

[[destinations]]
name = "ga4"
type = "ga4"
endpoint = "{f["ga4"].base_url}"
measurement_id = "{f["ga4"].measurement_id}"
api_secret = "{f["ga4"].api_secret}"

[[destinations]]
name = "pinterest"
type = "pinterest"
endpoint = "{f["pinterest"].base_url}"
ad_account_id = "{f["pinterest"].ad_account_id}"
access_token = "{f["pinterest"].token}"

[[destinations]]
name = "snapchat"
type = "snapchat"
endpoint = "{f["snapchat"].base_url}"
pixel_id = "{f["snapchat"].pixel_id}"
access_token = "{f["snapchat"].token}"

[[destinations]]
name = "reddit"
type = "reddit"
endpoint = "{f["reddit"].base_url}"
pixel_id = "{f["reddit"].pixel_id}"
access_token = "{f["reddit"].token}"
"""


async def test_one_purchase_from_browser_and_backend_reaches_every_platform_once(
    tmp_path: Path, fakes: dict[str, FakeApi]
):
    daemon = Daemon(tmp_path, config(fakes))
    daemon.start()
    now_ms = int(time.time() * 1000)
    browser_copy = {
        "eventID": EVENT_ID,  # the pixel's spelling
        "event_name": "Purchase",
        "event_time": now_ms + SKEW_MS - 1500,
        "sent_at": now_ms + SKEW_MS,
        "page": {"url": "https://shop.example/checkout/done?fbclid=IwAR-e2e", "referrer": ""},
        "user": {"fbp": "fb.1.1700000000000.42", "li_fat_id": "li-click-e2e"},
        "properties": {"value": 59.0, "currency": "EUR", "order_id": EVENT_ID},
    }
    backend_copy = {
        "event_id": EVENT_ID,
        "event_name": "purchase",
        "event_time": now_ms - 1000,
        "page": {"url": "https://shop.example/checkout/done"},
        "user": {"email": "Buyer@Example.com", "phone": "+49 30 1234567"},
        "properties": {"value": 59.0, "currency": "EUR", "order_id": EVENT_ID},
    }
    try:
        async with aiohttp.ClientSession() as session:
            await daemon.wait_healthy(session)
            async with session.post(
                f"{daemon.url}/v1/events?key={BROWSER_KEY}",
                json=browser_copy,
                headers={"Origin": ORIGIN, "User-Agent": "Mozilla/5.0 (e2e)"},
            ) as resp:
                assert (await resp.json())["results"][0]["status"] == "accepted"
            async with session.post(
                f"{daemon.url}/v1/events",
                json=backend_copy,
                headers={"Authorization": f"Bearer {SERVER_KEY}"},
            ) as resp:
                assert (await resp.json())["results"][0]["status"] == "duplicate"

            async with asyncio.timeout(30):
                await asyncio.gather(
                    *(api.wait_for(lambda a=api: bool(a.received)) for api in fakes.values())
                )
            await daemon.wait_queue_empty(session, *fakes)
    finally:
        daemon.stop()

    for name, api in fakes.items():
        assert not api.rejected, (name, api.rejected)
        seen = [item for r in api.received for item in EXTRACT[name](r.body)]
        assert [event_id for event_id, _ in seen] == [EVENT_ID], name
        # the browser's clock was two hours fast: skew-corrected to about the send time
        [(_, time_ms)] = seen
        assert abs(time_ms - now_ms) < 60_000, (name, time_ms - now_ms)
