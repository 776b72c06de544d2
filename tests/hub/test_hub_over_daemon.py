"""The hub in front of a real daemon app (the correlator harness, reached through httpx's ASGI transport):
cursor bounds, paging with relative times, empty values and the flows window, without processes."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from correlator.api import BadRequest
from exporter.http import build_app
from hub.app import build_hub_app
from hub.config import HubConfig
from hub.cursors import MAX_HUB_CURSOR
from hub.search import decode_cursor
from tests.test_correlator_api import _boundary, _many, page_through_boundary
from tests.test_correlator_support import CORPUS, NOW, Harness

DAEMON = "http://daemon-1:9469"


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@contextmanager
def corpus_daemon(tmp_path: Path, clock: Callable[[], float]) -> Iterator[Harness]:
    """A daemon's store holding the shared CORPUS, its clock `clock`: what the hub tests put behind a hub."""
    harness = Harness(tmp_path, clock=clock)
    for b in CORPUS:
        harness.commit(b)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def h(tmp_path: Path, clock: list[float]) -> Any:
    with corpus_daemon(tmp_path, lambda: clock[0]) as harness:
        yield harness


@asynccontextmanager
async def clients(h: Harness, clock: Callable[[], float],
                  transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """(hub client, daemon client): the hub's only target is the harness daemon (its routes in the daemon's app, which
    answers a POSTed form as its GET: how the hub asks by address), on the same clock."""
    daemon = build_app(CollectorRegistry(), dict, routers=[h.sink.asgi_routes()])
    app, hub = build_hub_app(HubConfig.model_validate({"hub": {"targets": [DAEMON]}}))
    await hub.fanout.client.aclose()
    hub.fanout.client = httpx.AsyncClient(transport=transport or httpx.ASGITransport(app=daemon))
    hub.clock = clock
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as via_hub, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=daemon), base_url=DAEMON) as direct:
        try:
            yield via_hub, direct
        finally:
            await hub.fanout.client.aclose()


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HUB_CURSORS = [b"[" * 1100, b'{"f":"x","h":' + b"[" * 1100, b'{"f":"x","h":{"a":' + b"{" * 1100,
               b'{"f":"x","h":{"u":[[[[1]]],0]}}', b'{"f":NaN,"h":{}}', b'{"f":"x","h":{},"n":1e30}',
               b"\xff", b"[]", b'{"h":{}}']


async def test_deep_long_or_odd_hub_cursors_are_400_naming_cursor(h: Harness, clock: list[float]) -> None:
    async with clients(h, lambda: clock[0]) as (via_hub, _):
        for raw in HUB_CURSORS:
            r = await via_hub.get("/api/v1/search", params={"cursor": _token(raw)})
            assert (r.status_code, r.json()["parameter"], r.json()["error"]) == (400, "cursor", "malformed cursor"), raw[:40]
    for long in ("A" * (MAX_HUB_CURSOR + 1), _token(b'{"f":"' + b"x" * MAX_HUB_CURSOR + b'","h":{}}')):
        with pytest.raises(BadRequest) as exc:  # longer than the listener's request head lets through
            decode_cursor(long, "x")
        assert (exc.value.status, exc.value.parameter, exc.value.error) == (400, "cursor", "malformed cursor")


async def test_hub_search_pages_keep_the_first_pages_relative_bounds(tmp_path: Path) -> None:
    clock = [NOW]
    h = Harness(tmp_path, clock=lambda: clock[0])
    _boundary(h, NOW, 30)
    async with clients(h, lambda: clock[0]) as (via_hub, _):
        seen = await page_through_boundary(via_hub, clock)  # the hub's and the daemon's clocks move on
    assert seen == [f"b{i}@gmail.com" for i in range(29, -1, -1)]
    h.close()


def _strip(body: Any) -> Any:
    """A hub body without what the hub adds (host, partial, missing_hosts, hosts, next_cursor_problem)."""
    added = ("host", "hosts", "partial", "missing_hosts", "next_cursor_problem")
    if isinstance(body, dict):
        return {k: _strip(v) for k, v in body.items() if k not in added}
    if isinstance(body, list):
        return [_strip(v) for v in body]
    return body


async def test_hub_treats_empty_values_as_the_daemon_does(h: Harness, clock: list[float]) -> None:
    _many(h, 25)
    cases = [("/api/v1/search", {"limit": 100}, ["rcpt", "job_id", "vmta", "outcome", "since", "until", "cursor"]),
             ("/api/v1/flows", {}, ["since", "until"]),
             ("/api/v1/replies", {"since": "2024-05-01T10:00:00Z"}, ["vmta", "pool", "isp", "until"]),
             ("/api/v1/replies", {"since": "2024-05-01T10:00:00Z", "pool": "pool-a,none"}, ["vmta"]),
             ("/api/v1/lookup", {"message_id": "m1@shop.example"}, ["job_id", "rcpt"]),
             ("/api/v1/timeline", {"job_id": "J1", "rcpt": "bob@yahoo.com"}, ["message_id"])]
    async with clients(h, lambda: clock[0]) as (via_hub, direct):
        for path, params, names in cases:
            want = (await direct.get(path, params=params)).json()
            for name in [None, *names]:
                q = params if name is None else {**params, name: ""}
                got = await via_hub.get(path, params=q)
                assert got.status_code == 200, (path, name, got.text)
                body = _strip(got.json())
                if path == "/api/v1/search":
                    body["next_cursor"] = want["next_cursor"] = None  # hub and daemon cursors differ
                if path == "/api/v1/replies":  # the hub breaks ties among equal counts its own way
                    body["replies"].sort(key=json.dumps)
                    want["replies"].sort(key=json.dumps)
                assert body == want, (path, name)
        for params, name in (({"job_id": "J1", "rcpt": ""}, "rcpt"), ({"job_id": "", "rcpt": "b@y.com"}, "job_id")):
            r = await via_hub.get("/api/v1/timeline", params=params)
            d = await direct.get("/api/v1/timeline", params=params)
            assert (r.status_code, r.json()["parameter"]) == (d.status_code, d.json()["parameter"]) == (400, name)


async def test_hub_flows_echo_the_daemons_bucket_bounds(h: Harness, clock: list[float]) -> None:
    clock[0] = 1714645267.273148  # 2024-05-02T10:21:07.273148Z
    async with clients(h, lambda: clock[0]) as (via_hub, direct):
        hub = (await via_hub.get("/api/v1/flows", params={"since": "1d", "until": "30m"})).json()
        own = (await direct.get("/api/v1/flows", params={"since": "1d", "until": "30m"})).json()
    assert (hub["since"], hub["until"]) == (own["since"], own["until"]) == ("2024-05-01T10:20:00Z",
                                                                             "2024-05-02T09:55:00Z")
    assert _strip(hub["edges"]) == own["edges"] and hub["edges"]


async def test_a_daemon_answering_deeply_nested_json_is_a_missing_host_not_a_500(h: Harness,
                                                                                clock: list[float]) -> None:
    nested = httpx.MockTransport(lambda request: httpx.Response(
        200, content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}))
    async with clients(h, lambda: clock[0], nested) as (via_hub, _):
        for path in ("/api/v1/search", "/api/v1/flows", "/api/v1/replies"):
            r = await via_hub.get(path)
            assert r.status_code == 503, (path, r.text)
            assert [(m["url"], m["error"]) for m in r.json()["missing_hosts"]] == [(DAEMON, "HTTP 200: not JSON")]


async def test_the_hub_never_echoes_the_address_asked_for_when_hosts_hash(tmp_path: Path) -> None:
    """Hosts with hash_recipients answer `hmac-sha256:<hex>`: the hub's text title and JSON show that, not the
    address the caller sent."""
    from exporter.config import CorrelatorConfig

    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"),
                clock=lambda: NOW)
    for b in CORPUS:
        h.commit(b)
    params = {"job_id": "J1", "rcpt": "Bob@Yahoo.com"}
    async with clients(h, lambda: NOW) as (via_hub, direct):
        own = (await direct.get("/api/v1/timeline", params=params)).json()
        text = await via_hub.get("/api/v1/timeline", params={**params, "format": "text"})
        body = (await via_hub.get("/api/v1/timeline", params=params)).json()
    assert own["rcpt"].startswith("hmac-sha256:") and body["rcpt"] == own["rcpt"]
    assert text.status_code == 200 and f"rcpt {own['rcpt']}" in text.text and "bob@" not in text.text.lower()
    h.close()


async def test_the_hubs_text_timeline_names_its_key_as_the_hosts_show_it(tmp_path: Path) -> None:
    """The hub's text timeline began `job - rcpt ...` for a lookup by Message-Id, and quoted the jobId as the caller
    typed it: with hosts that hash, `job J-zed@gmail.com rcpt hmac-sha256:...`, the address beside its hash. Its
    first line is now the daemon's own: the key named, as the hosts show it."""
    from exporter.config import CorrelatorConfig
    from tests.test_correlator_support import batch

    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"),
                clock=lambda: NOW)
    for b in CORPUS:
        h.commit(b)
    h.commit(batch("/l/acct-zed.csv", "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId,header_Message-Id\n"
                   "d,1714550400,,s@shop.example,zed@gmail.com,2.0.0,vA,J-zed@gmail.com,<zed@gmail.com.77@shop>\n"))
    firsts = []
    async with clients(h, lambda: NOW) as (via_hub, direct):
        for params in ({"job_id": "J-zed@gmail.com", "rcpt": "zed@gmail.com"},
                       {"message_id": "<zed@gmail.com.77@shop>", "rcpt": "zed@gmail.com"}):
            own = await direct.get("/api/v1/timeline", params={**params, "format": "text"})
            hub = await via_hub.get("/api/v1/timeline", params={**params, "format": "text"})
            assert own.status_code == hub.status_code == 200, (own.text, hub.text)
            firsts.append((own.text.splitlines()[0], hub.text.splitlines()[0]))
    h.close()
    (job_own, job_hub), (mid_own, mid_hub) = firsts
    assert job_hub == job_own and job_own.startswith("job J-<rcpt> rcpt hmac-sha256:")
    assert mid_hub == mid_own and mid_own.startswith("message-id <rcpt>.77@shop rcpt hmac-sha256:")


async def test_integer_parameters_are_digits_and_their_bounds_are_in_the_openapi_schema(h: Harness,
                                                                                       clock: list[float]) -> None:
    """The hub read `/api/v1/timelines/5_0` as timeline 50 and `+5`, `5.0`, ` 5` as 5 (the daemon's routes refused
    them; the hub's id had no bounds either), and wrapping the integers for digits moved their bounds out of the
    OpenAPI schema (`ge`/`le`, which JSON Schema does not know, for `minimum`/`maximum`), on both."""
    async with clients(h, lambda: clock[0]) as (via_hub, direct):
        item = (await via_hub.get("/api/v1/search", params={"limit": 1})).json()["items"][0]
        tid, host = item["id"], item["host"]
        assert (await via_hub.get(f"/api/v1/timelines/{tid}", params={"host": host})).status_code == 200
        for odd in (f"{tid}_0", f"0_{tid}", f"+{tid}", f"{tid}.0", f"%20{tid}", "0", "9223372036854775808"):
            r = await via_hub.get(f"/api/v1/timelines/{odd}", params={"host": host})
            assert r.status_code == 400 and r.json()["parameter"] == "timeline_id", (odd, r.text)
        for client in (via_hub, direct):
            spec = (await client.get("/openapi.json")).json()
            bounds = {(path, p["name"]): (p["schema"].get("minimum"), p["schema"].get("maximum"), set(p["schema"]))
                      for path, methods in spec["paths"].items() for p in methods.get("get", {}).get("parameters", [])
                      if p["name"] in ("limit", "timeline_id")}
            assert bounds, spec["paths"].keys()
            for key, (low, high, fields) in bounds.items():
                assert low == 1 and high in (100, 500, 1000, 2**63 - 1) and not {"ge", "le"} & fields, (key, fields)
