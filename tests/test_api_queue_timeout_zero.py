"""`web.api_queue_timeout: 0` ("0: no wait"): a free /api/v1 slot is taken at once, a busy API answers 503 at once.

Review: with 0, every /api/v1 request and every /ui page answered 503 "too many concurrent API requests", on the daemon
and on the hub, with every slot free: `asyncio.wait_for(slots.acquire(), timeout=0)` cancels the acquire before it
runs (Python 3.11). Real HTTP requests to the real listener (`make_server`), as the daemon and the hub serve them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import load_config
from exporter.http import build_app
from hub.app import build_hub_app
from hub.config import HubConfig
from tests.conftest import free_port, write_config
from tests.listener import serving
from tests.test_correlator_support import Harness, corpus_harness

SEARCH = "/api/v1/search?rcpt=alice@gmail.com&since=3650d"
MESSAGE = "/api/v1/messages/%3Cm1%40shop.example%3E"
PAGE = "/ui/?rcpt=alice@gmail.com&since=3650d"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from corpus_harness(tmp_path)


def _daemon(h: Harness) -> Any:
    from pages import with_pages

    return build_app(CollectorRegistry(), lambda: {"ok": True}, [with_pages(h.sink.asgi_routes())])


async def test_queue_timeout_0_serves_the_api_and_the_pages_while_a_slot_is_free(tmp_path: Path, h: Harness):
    config = load_config(write_config(tmp_path, web={"api_queue_timeout": 0, "api_max_concurrency": 2}))
    assert config.web.api_queue_timeout == 0
    app = _daemon(h)
    async with serving(app, config) as (port, _), httpx.AsyncClient(timeout=10) as c:
        base = f"http://127.0.0.1:{port}"
        for path in (SEARCH, MESSAGE, PAGE, SEARCH):
            r = await c.get(base + path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
        assert (await c.get(base + SEARCH)).json()["items"], "the search found alice's timeline"
        # concurrent requests up to the limit, and beyond it: each one is answered, none is left hanging
        answers = await asyncio.gather(*(c.get(base + SEARCH) for _ in range(6)))
        assert {r.status_code for r in answers} <= {200, 503} and 200 in {r.status_code for r in answers}

        # one slot busy, one free: the free one is taken
        await app.state.api_slots.acquire()
        assert (await c.get(base + SEARCH)).status_code == 200
        # every slot busy: 503 at once ("no wait"), saying when to retry
        await app.state.api_slots.acquire()
        started = time.monotonic()
        busy = await c.get(base + SEARCH)
        page = await c.get(base + PAGE)
        waited = time.monotonic() - started
        assert (busy.status_code, busy.headers["retry-after"]) == (503, "1"), busy.text
        assert "too many concurrent API requests" in busy.json()["error"]
        assert page.status_code == 503 and "503: too many concurrent" in page.text
        assert waited < 1.0, waited
        assert (await c.get(base + "/metrics")).status_code == 200  # scrapes never wait for API slots
        app.state.api_slots.release()
        app.state.api_slots.release()
        for path in (SEARCH, PAGE):
            assert (await c.get(base + path)).status_code == 200, path
    assert app.state.api_slots._value == 2, "every slot given back"


async def test_a_positive_queue_timeout_still_waits_for_a_slot(tmp_path: Path, h: Harness):
    """The other timeouts keep their meaning: a request waits up to api_queue_timeout for a slot freed meanwhile."""
    config = load_config(write_config(tmp_path, web={"api_queue_timeout": "3s", "api_max_concurrency": 1}))
    app = _daemon(h)
    async with serving(app, config) as (port, _), httpx.AsyncClient(timeout=10) as c:
        base = f"http://127.0.0.1:{port}"
        assert (await c.get(base + SEARCH)).status_code == 200
        await app.state.api_slots.acquire()
        asyncio.get_running_loop().call_later(0.5, app.state.api_slots.release)
        started = time.monotonic()
        r = await c.get(base + SEARCH)
        assert r.status_code == 200 and 0.4 < time.monotonic() - started < 3.0, r.text


async def test_queue_timeout_0_on_the_hub_and_its_daemon(tmp_path: Path, h: Harness):
    daemon_config = load_config(write_config(tmp_path, web={"api_queue_timeout": 0}))
    async with serving(_daemon(h), daemon_config) as (daemon_port, _):
        config = HubConfig.model_validate({"listen": f"127.0.0.1:{free_port()}",
                                           "hub": {"targets": [f"http://127.0.0.1:{daemon_port}"]},
                                           "web": {"api_queue_timeout": 0}})
        assert config.web.api_queue_timeout == 0
        app, hub = build_hub_app(config)
        try:
            async with serving(app, config) as (port, _), httpx.AsyncClient(timeout=10) as c:
                base = f"http://127.0.0.1:{port}"
                r = await c.get(base + SEARCH)
                assert r.status_code == 200, r.text[:300]
                assert r.json()["items"] and not r.json().get("missing_hosts"), r.text[:300]
                for path in (MESSAGE, PAGE):
                    r = await c.get(base + path)
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
        finally:
            await hub.fanout.aclose()
