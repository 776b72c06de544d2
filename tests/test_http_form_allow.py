"""A 405's `Allow` lists every method the route answers: a form POST included on /api/v1 and /ui (review 2026-12).

docs/api.md gave `POST /api/v1/search` as the example of a wrong method, yet a form POSTed there answers 200
(exporter.formquery); a PUT answered `Allow: GET, HEAD`, leaving that POST out. Over TCP to the real listener, as
a client meets it. A POST that is no form (no body, JSON) is told what the route takes: 415 with `Accept-Post`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import load_config
from exporter.formquery import FORM_TYPE
from exporter.http import build_app
from hub.app import build_hub_app
from hub.config import HubConfig
from tests.conftest import write_config
from tests.listener import serving
from tests.test_correlator_support import Harness, corpus_harness
from tests.test_http_wire import big_registry

FORM_ROUTES = ("/api/v1/search", "/api/v1/timeline", "/api/v1/messages/m1@shop.example", "/ui/", "/ui/flows")
NOT_A_FORM = ("a POST here is an HTML form (Content-Type: application/x-www-form-urlencoded) of the GET's "
              "parameters; or use GET")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from corpus_harness(tmp_path)


async def _daemon(tmp_path: Path, h: Harness, check: Any) -> None:
    app = build_app(big_registry(10), lambda: {"ok": True}, [h.sink.asgi_routes()])
    async with serving(app, load_config(write_config(tmp_path))) as (port, _):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            await check(c)


async def test_a_wrong_method_on_a_form_route_lists_post_in_allow(tmp_path: Path, h: Harness) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        for path in FORM_ROUTES:
            for method in ("PUT", "DELETE", "PATCH"):
                r = await c.request(method, path)
                assert (r.status_code, r.headers.get("allow")) == (405, "GET, HEAD, POST"), (method, path)
                assert r.json() == {"error": f"method {method} not allowed", "parameter": None, "status": 405}
            posted = await c.post(path, data={"since": "3650d"})  # what Allow promises is answered, as the GET
            got = await c.get(path, params={"since": "3650d"})
            assert (posted.status_code, posted.text) == (got.status_code, got.text), path
            assert posted.status_code not in (405, 415), (path, posted.text)
        r = await c.post("/api/v1/search", data={"rcpt": "alice@gmail.com", "since": "3650d"})
        assert r.status_code == 200 and r.json()["items"], r.text

    await _daemon(tmp_path, h, check)


async def test_a_post_that_is_no_form_is_told_what_the_route_takes(tmp_path: Path, h: Harness) -> None:
    """A bodyless or JSON POST reaches the route as a POST: 405 listing POST would contradict itself."""
    async def check(c: httpx.AsyncClient) -> None:
        for path in FORM_ROUTES:
            for body in ({}, {"content": b'{"rcpt": "alice@gmail.com"}', "headers": {"content-type": "application/json"}}):
                r = await c.post(path, **body)
                assert r.status_code == 415, (path, body, r.text)
                assert r.json() == {"error": NOT_A_FORM, "parameter": None, "status": 415}
                assert r.headers.get("accept-post") == FORM_TYPE and r.headers.get("allow") is None

    await _daemon(tmp_path, h, check)


async def test_routes_that_take_no_form_keep_their_allow(tmp_path: Path, h: Harness) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        for method in ("POST", "PUT"):
            for path in ("/metrics", "/healthz", "/"):
                r = await c.request(method, path)
                assert (r.status_code, r.headers.get("allow")) == (405, "GET, HEAD"), (method, path)
        r = await c.post("/metrics", data={"name[]": "x"})
        assert (r.status_code, r.headers.get("allow")) == (405, "GET, HEAD")

    await _daemon(tmp_path, h, check)


async def test_the_hub_answers_alike(tmp_path: Path) -> None:
    """The hub's listener is the daemon's (exporter.http.build_app): its routes take a form too."""
    config = HubConfig.model_validate({"listen": "127.0.0.1:27471", "hub": {"targets": ["http://127.0.0.1:27472"]}})
    app, hub = build_hub_app(config)
    try:
        async with serving(app, config) as (port, _):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                r = await c.delete("/api/v1/search")
                assert (r.status_code, r.headers.get("allow")) == (405, "GET, HEAD, POST")
                r = await c.post("/api/v1/search")
                assert (r.status_code, r.headers.get("accept-post")) == (415, FORM_TYPE)
                r = await c.put("/metrics")
                assert (r.status_code, r.headers.get("allow")) == (405, "GET, HEAD")
    finally:
        await hub.aclose()
