"""Property test over every route and parameter of the listener: never a 500, never a traceback.

The app is the one the daemon serves (build_app + the correlator's routers) over a real SQLite
store holding the shared corpus. Parameters come from the OpenAPI description, so a route added
later is fuzzed without touching this file; routes outside the schema (/ui pages, /metrics...)
get random query strings and path tails. Answers must be 2xx/3xx or an ApiError-shaped 4xx/503.
"""

from __future__ import annotations

import asyncio
import logging
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.routing import Route

from exporter.http import build_app
from tests.test_correlator_support import CORPUS, Harness

CRAFTED = ["nan", "NaN", "inf", "-inf", "Infinity", "1e20", "1e400", "-1", "0", "9223372036854775808",
           "-9223372036854775809", str(10**29), "0001-01-01T00:00:00+1400", "9999-12-31T23:59:59-1400",
           "2024-05-01T10:00:00Z", "1714550400", "99999999999999999999w", "15m", "7d", "", " ", "\x00", "\x1b[2J",
           "%", "%00", "..", "../../etc/passwd", "*", "$__all", "<m1@shop.example>", "alice@gmail.com", "J1",
           "vmta1", "text", "json", "W1swLjAsMSwieCJdXQ", "WyJJbmZpbml0eSIsMSwieCJd", "W1tbW1tbW1tbW1tbW1tbW1s"]
VALUES = st.one_of(
    st.sampled_from(CRAFTED),
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=300),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])


class Client:
    """Synchronous calls into the ASGI app (hypothesis drives sync tests); a 500 comes back as a response."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                      base_url="http://fuzz")

    def request(self, method: str, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, url, params=params))

    def get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", url, params)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def app_and_spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, dict[str, Any]]]:
    h = Harness(Path(tmp_path_factory.mktemp("fuzz")))
    for b in CORPUS:
        h.commit(b)
    client = Client(build_app(CollectorRegistry(), lambda: {"ok": True}, [h.sink.asgi_routes()]))
    yield client, client.get("/openapi.json").json()
    client.close()
    h.close()


def _operations(spec: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(path, op.get("parameters", [])) for path, ops in spec["paths"].items() for op in ops.values()]


def _check(r: Any, caplog: pytest.LogCaptureFixture, what: str) -> None:
    assert r.status_code < 500 or r.status_code == 503, f"{what} -> {r.status_code}: {r.text[:300]}"
    if r.status_code >= 400 and r.request.method != "HEAD" and r.headers.get("content-type", "").startswith(
            "application/json"):
        body = r.json()
        assert body["status"] == r.status_code and body["error"], what
    bad = [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]
    assert not bad and "Traceback" not in caplog.text, f"{what}: {caplog.text[-2000:]}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_documented_routes_never_500(app_and_spec: tuple[Client, dict[str, Any]], data: st.DataObject,
                                     caplog: pytest.LogCaptureFixture) -> None:
    client, spec = app_and_spec
    path, params = data.draw(st.sampled_from(_operations(spec)))
    query: dict[str, str] = {}
    url = path
    for p in params:
        if p["in"] == "path":
            url = url.replace("{" + p["name"] + "}", quote(data.draw(VALUES, label=p["name"]), safe="") or "x")
        elif p["in"] == "query" and data.draw(st.booleans()):
            query[p["name"]] = data.draw(VALUES, label=p["name"])
    caplog.clear()
    r = client.get(url, params=query)
    _check(r, caplog, f"GET {url} {query}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_path_and_method_never_500(app_and_spec: tuple[Client, dict[str, Any]], data: st.DataObject,
                                       caplog: pytest.LogCaptureFixture) -> None:
    client, _ = app_and_spec
    routes = sorted({r.path.split("{")[0] for r in client.app.routes if isinstance(r, Route)})  # type: ignore[attr-defined]
    base = data.draw(st.sampled_from(routes + ["/", "/nope", "/api/v2/x"]))
    tail = data.draw(st.one_of(st.just(""), VALUES.map(lambda v: quote(v, safe="/"))))
    method = data.draw(METHODS)
    query = data.draw(st.dictionaries(st.sampled_from(["since", "until", "cursor", "limit", "q", "id", "vmta", "x"]),
                                      VALUES, max_size=3))
    caplog.clear()
    r = client.request(method, base + tail, params=query)
    _check(r, caplog, f"{method} {base + tail} {query}")
