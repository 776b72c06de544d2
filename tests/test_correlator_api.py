"""The /api/v1 routes through httpx against a FastAPI app: JSON, text, paging, 4xx bodies, flows shape."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from correlator import CorrelatorSink
from correlator import api as api_module
from correlator.api import ApiLimits
from exporter.config import CorrelatorConfig
from tests.test_correlator_support import CORPUS, NOW, Harness, batch, class_of, corpus_harness, isp_of


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from corpus_harness(tmp_path)


def _error(r: httpx.Response, status: int, parameter: str | None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status and body["parameter"] == parameter and body["error"]
    return body


async def test_message_json(h: Harness) -> None:
    async with h.client() as c:
        r = await c.get("/api/v1/messages/" + quote("<m1@shop.example>", safe=""))
    assert r.status_code == 200
    body = r.json()
    assert (body["message_id"], body["recipients_total"], body["truncated"]) == ("m1@shop.example", 1, False)
    (tl,) = body["recipients"]
    assert tl["rcpt"] == "alice@gmail.com" and tl["outcome"] == "complained"
    assert [e["kind"] for e in tl["events"]] == [
        "received", "deferred", "queue_deferred", "delivered", "remote_status", "complaint"]
    assert tl["events"][3] | {"ts": 0} == {
        "time": "2024-05-01T10:20:00Z", "ts": 0, "kind": "delivered", "record_type": "d", "attempt": 2,
        "vmta": "vmta1", "vmta_pool": "pool-a", "source_ip": "192.0.2.10", "dsn_action": "relayed",
        "dsn_status": "2.0.0 (success)", "dsn_diag": "smtp;250 2.0.0 OK 1714558800 - gsmtp",
        "dsn_mta": "gmail-smtp-in.l.google.com (142.250.1.27)", "bounce_category": "success",
        "response_class": None, "queue": None, "feedback_type": None, "user_agent": None,
        "reporting_mta": None, "source": "/var/log/pmta/acct-2024-05-01-0000.csv:2",
    }


async def test_message_text_by_query_and_by_accept(h: Harness) -> None:
    async with h.client() as c:
        r1 = await c.get("/api/v1/messages/m1@shop.example", params={"format": "text"})
        r2 = await c.get("/api/v1/messages/m1@shop.example", headers={"Accept": "text/plain"})
    for r in (r1, r2):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r1.text == r2.text
    lines = r1.text.splitlines()
    assert lines[0] == "Message-Id <m1@shop.example>"
    assert lines[1] == "rcpt alice@gmail.com  message-id m1@shop.example  job J1"
    assert "outcome COMPLAINED  attempts 2" in lines[2]
    assert lines[4].startswith("  2024-05-01 10:05:00Z  deferred         #1  vmta1  4.7.28 (unusual rate)")
    assert lines[4].endswith("[deferred]")
    assert lines[-1].startswith("  2024-05-02 08:00:00Z  complaint") and "abuse" in lines[-1]


async def test_unknown_message_is_404_json(h: Harness) -> None:
    async with h.client() as c:
        _error(await c.get("/api/v1/messages/nope@nowhere"), 404, "message_id")
        _error(await c.get("/api/v1/messages/%3C%3E"), 400, "message_id")


async def test_timeline_by_job_and_rcpt(h: Harness) -> None:
    async with h.client() as c:
        r = await c.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": "Bob@Yahoo.com"})
        assert r.status_code == 200
        body = r.json()
        assert (body["job_id"], body["rcpt"], len(body["timelines"])) == ("J1", "bob@yahoo.com", 1)
        assert [e["kind"] for e in body["timelines"][0]["events"]] == ["queued", "deferred", "bounced", "complaint"]
        r = await c.get("/api/v1/timeline", params={"message_id": "<m3@shop.example>", "rcpt": "carol@outlook.com"})
        assert r.json()["timelines"][0]["outcome"] == "bounced"
        t = await c.get("/api/v1/timeline?job_id=J1&rcpt=bob@yahoo.com&format=text")
        assert t.text.startswith("job J1 rcpt bob@yahoo.com\nrcpt bob@yahoo.com")
        tid = body["timelines"][0]["id"]
        assert (await c.get(f"/api/v1/timelines/{tid}")).json()["timelines"][0]["rcpt"] == "bob@yahoo.com"
        _error(await c.get("/api/v1/timelines/999999"), 404, "timeline_id")
        _error(await c.get("/api/v1/timelines/abc"), 400, "timeline_id")
        _error(await c.get("/api/v1/timeline", params={"job_id": "J1"}), 400, "rcpt")
        _error(await c.get("/api/v1/timeline", params={"rcpt": "bob@yahoo.com"}), 400, "job_id")
        _error(await c.get("/api/v1/timeline", params={"rcpt": " ", "job_id": "J1"}), 400, "rcpt")
        # J2 is stored (carol's), not for bob: the recipient is the parameter at fault; J99 is stored for no one
        _error(await c.get("/api/v1/timeline", params={"job_id": "J2", "rcpt": "bob@yahoo.com"}), 404, "rcpt")
        _error(await c.get("/api/v1/timeline", params={"job_id": "J99", "rcpt": "bob@yahoo.com"}), 404, "job_id")
        _error(await c.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": "b@y.com", "format": "xml"}),
               400, "format")


def _many(h: Harness, n: int) -> None:
    lines = "\n".join(
        f"d,{1714550400 + i * 60},,s@shop.example,p{i}@gmail.com,2.0.0,{'vA' if i % 3 else 'vB'},JP" for i in range(n))
    h.commit(batch("/l/acct-many.csv", "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId\n" + lines))


async def test_search_pages_with_cursor(h: Harness) -> None:
    _many(h, 25)
    async with h.client() as c:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"job_id": "JP", "limit": 10} | ({"cursor": cursor} if cursor else {})
            body = (await c.get("/api/v1/search", params=params)).json()
            pages += 1
            seen += [i["rcpt"] for i in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert pages == 3 and seen == [f"p{i}@gmail.com" for i in range(24, -1, -1)]  # newest first, no repeats
        # filters combine; vmta and outcome narrow a job / time scan
        body = (await c.get("/api/v1/search", params={"vmta": "vB", "job_id": "JP", "limit": 100})).json()
        assert [i["rcpt"] for i in body["items"]] == [f"p{i}@gmail.com" for i in range(24, -1, -3)]
        body = (await c.get("/api/v1/search", params={"outcome": "bounced"})).json()
        assert sorted(i["rcpt"] for i in body["items"]) == ["carol@outlook.com"]
        body = (await c.get("/api/v1/search", params={"rcpt": "ALICE@gmail.com"})).json()
        assert [i["message_id"] for i in body["items"]] == ["m1@shop.example"]
        assert "events" not in body["items"][0]
        body = (await c.get("/api/v1/search", params={"since": "2024-05-01T10:00:00Z",
                                                      "until": "2024-05-01 10:10:00+0000"})).json()
        assert [i["rcpt"] for i in body["items"]] == ["bob@yahoo.com", "alice@gmail.com"]  # carol began 09:59
        body = (await c.get("/api/v1/search", params={"since": str(1714550400 + 23 * 60), "until": "1714550400"})).json()
        assert body["items"] == []
        body = (await c.get("/api/v1/search", params={"since": str(1714550400 + 23 * 60), "job_id": "JP"})).json()
        assert [i["rcpt"] for i in body["items"]] == ["p24@gmail.com", "p23@gmail.com"]
        body = (await c.get("/api/v1/search", params={"since": "1d"})).json()  # NOW is 2024-05-04T00:00Z
        assert [i["rcpt"] for i in body["items"]] == ["eve@example.net"]
        text = (await c.get("/api/v1/search", params={"job_id": "JP", "limit": 2, "format": "text"})).text
        assert text.splitlines()[0].startswith("2024-05-01 08:24:00Z  delivered   p24@gmail.com  job=JP")
        assert text.splitlines()[-1].startswith("next cursor: ")


async def test_search_bad_input_is_400_naming_the_parameter(h: Harness) -> None:
    async with h.client() as c:
        first = (await c.get("/api/v1/search", params={"limit": 1})).json()
        cursor = first["next_cursor"]
        _error(await c.get("/api/v1/search", params={"limit": 1, "vmta": "vmta1", "cursor": cursor}), 400, "cursor")
        _error(await c.get("/api/v1/search", params={"cursor": "!!not-a-cursor"}), 400, "cursor")
        bogus = base64.urlsafe_b64encode(json.dumps({"a": 1}).encode()).decode()
        _error(await c.get("/api/v1/search", params={"cursor": bogus}), 400, "cursor")
        _error(await c.get("/api/v1/search", params={"since": "yesterday"}), 400, "since")
        _error(await c.get("/api/v1/search", params={"until": "2024-13-01"}), 400, "until")
        _error(await c.get("/api/v1/search", params={"limit": 0}), 400, "limit")
        _error(await c.get("/api/v1/search", params={"limit": "ten"}), 400, "limit")
        _error(await c.get("/api/v1/search", params={"outcome": "lost"}), 400, "outcome")


def test_search_scan_budget_returns_a_cursor_that_continues(h: Harness) -> None:
    _many(h, 25)
    with h.reader() as r:
        items, nxt, limited = r.search(rcpt_h=None, job_h=None, vmta="vB", outcome=None, since=None, until=None,
                                       limit=50, after=None, budget=5)
        assert limited and nxt is not None
        found = [i["rcpt"] for i in items]
        while nxt is not None:
            items, nxt, limited = r.search(rcpt_h=None, job_h=None, vmta="vB", outcome=None, since=None,
                                           until=None, limit=50, after=nxt, budget=5)
            found += [i["rcpt"] for i in items]
    assert found == [f"p{i}@gmail.com" for i in range(24, -1, -3)]


async def test_flows_node_graph_shape(h: Harness) -> None:
    async with h.client() as c:
        r = await c.get("/api/v1/flows", params={"since": "2024-05-01T00:00:00Z"})
        assert r.status_code == 200
        body = r.json()
        text = (await c.get("/api/v1/flows", params={"since": "2024-05-01T00:00:00Z", "format": "text"})).text
        _error(await c.get("/api/v1/flows", params={"since": "soon"}), 400, "since")
        empty = (await c.get("/api/v1/flows")).json()  # default: the last hour before NOW
    assert body["since"] == "2024-05-01T00:00:00Z" and body["until"] is None
    nodes = {n["id"]: n for n in body["nodes"]}
    assert set(nodes) == {"sender:shop.example", "sender:other.example", "sender:else.example", "vmta:vmta1",
                          "vmta:vmta2", "vmta:vmta3", "vmta:none", "isp:gmail", "isp:yahoo", "isp:microsoft",
                          "isp:other"}
    assert nodes["vmta:vmta1"] | {"arc__delivered": 0, "arc__bounced": 0, "arc__deferred": 0} == {
        "id": "vmta:vmta1", "title": "vmta1", "subtitle": "vmta", "mainstat": 2, "secondarystat": 2,
        "arc__delivered": 0, "arc__bounced": 0, "arc__deferred": 0, "detail__delivered": 1, "detail__bounced": 1,
        "detail__deferred": 2, "detail__complained": 2, "detail__remote_bounced": 0, "detail__kind": "vmta",
    }
    assert nodes["vmta:vmta1"]["arc__delivered"] == 0.25 and nodes["vmta:vmta1"]["arc__deferred"] == 0.5
    for n in body["nodes"]:
        assert abs(n["arc__delivered"] + n["arc__bounced"] + n["arc__deferred"] - 1) < 1e-3 or n["mainstat"] == 0
    edges = {e["id"]: e for e in body["edges"]}
    e = edges["sender:shop.example->vmta:vmta1"]
    assert (e["source"], e["target"], e["mainstat"], e["secondarystat"]) == (
        "sender:shop.example", "vmta:vmta1", 2, 2)
    assert 1 <= e["thickness"] <= 10 and max(x["thickness"] for x in body["edges"]) == 10
    assert all(x["source"] in nodes and x["target"] in nodes for x in body["edges"])
    assert "sender:shop.example -> vmta:vmta1  delivered=1 bounced=1 deferred=2 complained=2" in text
    assert empty["nodes"] == [] and empty["edges"] == []


async def test_flows_bound_senders(tmp_path: Path) -> None:
    h = Harness(tmp_path, CorrelatorConfig(max_flow_senders=1))
    for b in CORPUS:
        h.commit(b)
    async with h.client() as c:
        body = (await c.get("/api/v1/flows", params={"since": "2024-05-01"})).json()
    senders = {n["id"] for n in body["nodes"] if n["subtitle"] == "sender"}
    assert senders == {"sender:shop.example", "sender:other"}
    other = next(n for n in body["nodes"] if n["id"] == "sender:other")
    assert other["detail__delivered"] == 1 and other["detail__complained"] == 2
    h.close()


async def test_store_not_ready_is_503(tmp_path: Path) -> None:
    sink = CorrelatorSink(CorrelatorConfig(), tmp_path / "absent.db", isp_of=isp_of, class_of=class_of,
                          clock=lambda: NOW)
    app = FastAPI()
    app.include_router(sink.asgi_routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        _error(await c.get("/api/v1/messages/x@y"), 503, None)
        _error(await c.get("/api/v1/search"), 503, None)
    sink.close()


async def test_openapi_documents_routes_and_models(h: Harness) -> None:
    app = FastAPI()
    app.include_router(h.sink.asgi_routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        spec = (await c.get("/openapi.json")).json()
    paths = spec["paths"]
    assert {"/api/v1/messages/{message_id}", "/api/v1/timeline", "/api/v1/timelines/{timeline_id}",
            "/api/v1/search", "/api/v1/flows"} <= set(paths)
    schemas = spec["components"]["schemas"]
    assert {"MessageResponse", "TimelineResponse", "SearchResponse", "FlowsResponse", "Timeline", "Event",
            "ApiError", "FlowNode", "FlowEdge"} <= set(schemas)
    ok = paths["/api/v1/search"]["get"]["responses"]
    assert ok["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SearchResponse")
    assert ok["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ApiError")
    params = {p["name"] for p in paths["/api/v1/search"]["get"]["parameters"]}
    assert params == {"rcpt", "job_id", "vmta", "outcome", "since", "until", "limit", "cursor", "format"}


# --- issue 9: crafted input, limits, terminal escapes ---------------------------------------------

def _app(h: Harness, limits: object = None) -> FastAPI:
    from exporter.http import build_app

    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [h.sink.asgi_routes()])
    if limits is not None:
        app.state.api_limits = limits
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


CRAFTED_TIMES = ["nan", "NaN", "inf", "-inf", "1e20", "-1", "0001-01-01T00:00:00+1400", "9999-12-31T23:59:59-1400",
                 "99999999999999999999w", "1e400"]


async def test_crafted_times_are_400(h: Harness) -> None:
    async with h.client() as c:
        for value in CRAFTED_TIMES:
            _error(await c.get("/api/v1/search", params={"since": value}), 400, "since")
            _error(await c.get("/api/v1/search", params={"until": value}), 400, "until")
            _error(await c.get("/api/v1/flows", params={"since": value}), 400, "since")


def _cursor(obj: object) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CRAFTED_CURSORS = [b"[Infinity, 1, \"x\"]", b"[NaN, 1, \"x\"]", b"[1e400, 1, \"x\"]", [10**29, 1, "x"],
                   [1.0, 10**29, "x"], [1.0, -1, "x"], [1.0, 1.5, "x"], [True, 1, "x"], b"[" * 1000 + b"]" * 1000,
                   [1, 2], "x" * 300, [1, 2, ["x"]], b"\xff\xfe"]


async def test_crafted_cursors_are_400(h: Harness) -> None:
    async with h.client() as c:
        for raw in CRAFTED_CURSORS:
            _error(await c.get("/api/v1/search", params={"cursor": _cursor(raw)}), 400, "cursor")


async def test_timeline_ids_beyond_int64_are_400(h: Harness) -> None:
    async with h.client() as c:
        for tid in ("9223372036854775808", "0", "-1", "1" * 400):
            _error(await c.get(f"/api/v1/timelines/{tid}"), 400, "timeline_id")
        _error(await c.get("/api/v1/timelines/9223372036854775807"), 404, "timeline_id")


async def test_routes_methods_and_openapi_through_the_listener_app(h: Harness) -> None:
    async with _client(_app(h)) as c:
        _error(await c.get("/api/v1/nope"), 404, None)
        r = await c.delete("/api/v1/search")
        _error(r, 405, None)
        spec = (await c.get("/openapi.json")).json()
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert "422" not in op["responses"], path
            if path.startswith(("/api/v1/search", "/api/v1/timeline", "/api/v1/messages", "/api/v1/flows")):
                ref = op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ApiError"), path
    assert "HTTPValidationError" not in spec.get("components", {}).get("schemas", {})


async def test_api_concurrency_limit_answers_503_and_recovers(h: Harness) -> None:
    app = _app(h, ApiLimits(max_concurrency=1, queue_timeout=0.05, query_timeout=5))
    async with _client(app) as c:
        assert (await c.get("/api/v1/search")).status_code == 200
        slots = app.state.api_slots
        await slots.acquire()  # a request in flight holds the only slot
        r = await c.get("/api/v1/search")
        body = _error(r, 503, None)
        assert "concurrent" in body["error"] and r.headers["retry-after"] == "1"
        assert (await c.get("/metrics")).status_code == 200  # scrapes never wait for API slots
        slots.release()
        assert (await c.get("/api/v1/search")).status_code == 200


async def test_query_time_budget_interrupts_with_503(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "PROGRESS_STEPS", 1)
    async with _client(_app(h, ApiLimits(max_concurrency=2, queue_timeout=1, query_timeout=0))) as c:
        body = _error(await c.get("/api/v1/search", params={"vmta": "vmta1"}), 503, None)
        assert "time budget" in body["error"]
    async with _client(_app(h)) as c:  # the pooled connection is usable again, without the handler
        assert len((await c.get("/api/v1/search", params={"vmta": "vmta1"})).json()["items"]) == 2


ESC_DIAG = "smtp;421 \x1b]0;pwned\x07\x1b[2J\x9b31m try later\u2028x \u202egnp.exe\u2066"


async def test_text_rendering_escapes_control_characters(h: Harness) -> None:
    h.commit(batch("/l/acct-esc.csv", "type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId,header_Message-Id\n"
                   f"t,1714550400,s@shop.example,esc@gmail.com,4.0.0,\"{ESC_DIAG}\",v\x1bE,JE,<e\x1b[1m@x>\n"))
    async with h.client() as c:
        texts = [(await c.get("/api/v1/timeline", params={"job_id": "JE", "rcpt": "esc@gmail.com",
                                                          "format": "text"})).text,
                 (await c.get("/api/v1/search", params={"job_id": "JE", "format": "text"})).text]
        js = (await c.get("/api/v1/timeline", params={"job_id": "JE", "rcpt": "esc@gmail.com"})).json()
    assert js["timelines"][0]["events"][-1]["dsn_diag"] == ESC_DIAG  # JSON keeps the exact bytes
    for text in texts:
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u202a-\u202e\u2066-\u2069]", text), repr(text)
    # Bidi overrides too: a terminal that renders bidi would show "exe.png" for the U+202E (Trojan Source).
    assert "smtp;421 \\x1b]0;pwned\\x07\\x1b[2J\\x9b31m try later\\u2028x \\u202egnp.exe\\u2066" in texts[0]
    assert "vmta=v\\x1bE" in texts[1]


# --- audit: cursor bounds, query budget on every route, paging with relative times, empty values --


DEEP_CURSORS = [b"[" * 1100, b"[" * 1100 + b"]" * 1100, b'[1,2,"x",' + b"[" * 1100, b'{"a":' * 1100,
                b'[1,2,"[[[[",[1]]', b'[1,2,"x",[1]]', b"[1,2,\"x\"," + b"1" * 400 + b"]"]


async def test_deep_or_long_cursors_are_400_naming_cursor(h: Harness) -> None:
    async with h.client() as c:
        for raw in DEEP_CURSORS:
            _error(await c.get("/api/v1/search", params={"cursor": _cursor(raw)}), 400, "cursor")


def test_the_shared_token_decoder_bounds_depth_and_length() -> None:
    from correlator.api import BadRequest, decode_token

    assert decode_token(_cursor({"a": ["[{", [1]]}), max_chars=100, max_depth=3) == {"a": ["[{", [1]]}
    for raw, depth in ((b"[" * 1100, 3), (b"[[[[1]]]]", 3), (b'{"a":[[1]]}', 2), (b"[NaN]", 3), (b"[1]x", 3)):
        with pytest.raises(BadRequest) as exc:
            decode_token(_cursor(raw), max_chars=10_000, max_depth=depth)
        assert (exc.value.status, exc.value.parameter, exc.value.error) == (400, "cursor", "malformed cursor")
    with pytest.raises(BadRequest):
        decode_token(_cursor([1] * 50), max_chars=100, max_depth=3)


BUDGET_ROUTES = [("/api/v1/messages/m1@shop.example", {}), ("/api/v1/timeline", {"job_id": "J1", "rcpt": "bob@yahoo.com"}),
                 ("/api/v1/timelines/1", {}), ("/api/v1/search", {}), ("/api/v1/flows", {"since": "30d"}),
                 ("/api/v1/replies", {"since": "24h", "limit": 100}),
                 ("/api/v1/lookup", {"message_id": "m1@shop.example"}),
                 ("/api/v1/lookup", {"job_id": "J1", "rcpt": "bob@yahoo.com"})]


@pytest.mark.parametrize("path,params", BUDGET_ROUTES, ids=lambda v: v if isinstance(v, str) else "")
async def test_every_route_stops_at_the_query_time_budget(h: Harness, monkeypatch: pytest.MonkeyPatch,
                                                          path: str, params: dict) -> None:
    monkeypatch.setattr(api_module, "PROGRESS_STEPS", 1)
    async with _client(_app(h, ApiLimits(max_concurrency=2, queue_timeout=1, query_timeout=0))) as c:
        body = _error(await c.get(path, params=params), 503, None)
    assert body["error"] == ("query exceeded its time budget (0s); narrow the filters (rcpt or job_id) "
                             "or the time range")
    async with _client(_app(h)) as c:  # and the route answers within the default budget
        assert (await c.get(path, params=params)).status_code == 200


async def test_replies_python_work_stops_at_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SQL finishes in budget; the grouping in Python is what runs over: it stops at the next row."""
    from correlator import replies as replies_module

    h = Harness(tmp_path, clock=lambda: 1714568400.0)  # 2024-05-01T13:00Z: the corpus' t and b records
    for b in CORPUS:
        h.commit(b)
    clock = [0.0]
    monkeypatch.setattr(api_module, "deadline_clock", lambda: clock[0])
    monkeypatch.setattr(api_module, "PROGRESS_STEPS", 10**9)  # SQLite never looks at the clock
    calls = []
    real = replies_module.normalise

    def slow_normalise(diag: str) -> str:
        calls.append(diag)
        clock[0] += 100  # each text "takes" 100 s
        return real(diag)

    monkeypatch.setattr(replies_module, "normalise", slow_normalise)
    async with _client(_app(h, ApiLimits(max_concurrency=2, queue_timeout=1, query_timeout=5))) as c:
        _error(await c.get("/api/v1/replies", params={"since": "24h"}), 503, None)
    assert len(calls) == 1
    clock[0] = 0.0
    calls.clear()
    async with _client(_app(h, ApiLimits(max_concurrency=2, queue_timeout=1, query_timeout=10**6))) as c:
        assert (await c.get("/api/v1/replies", params={"since": "24h"})).json()["total"] == len(calls) > 1
    h.close()


def _boundary(h: Harness, now: float, n: int) -> None:
    """n timelines first seen 1 s apart from `now - 2h` on (plus one just before it)."""
    lines = "\n".join(f"d,{now - 7200 + i},,s@shop.example,b{i}@gmail.com,2.0.0,vA,JB" for i in range(-1, n))
    h.commit(batch("/l/acct-boundary.csv", "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId\n" + lines))


async def page_through_boundary(client: httpx.AsyncClient, clock: list[float]) -> list[str]:
    """Every page of `since=2h` over `_boundary`'s timelines, the clock moving 15 s on between pages."""
    seen, cursor = [], None
    for _ in range(10):
        params = {"since": "2h", "job_id": "JB", "limit": 7} | ({"cursor": cursor} if cursor else {})
        body = (await client.get("/api/v1/search", params=params)).json()
        seen += [i["rcpt"] for i in body["items"]]
        cursor = body["next_cursor"]
        clock[0] += 15
        if cursor is None:
            break
    return seen


async def test_search_pages_keep_the_first_pages_relative_bounds(tmp_path: Path) -> None:
    clock = [NOW]
    h = Harness(tmp_path, clock=lambda: clock[0])
    _boundary(h, NOW, 30)
    async with h.client() as c:
        seen = await page_through_boundary(c, clock)
    assert seen == [f"b{i}@gmail.com" for i in range(29, -1, -1)]
    h.close()


async def test_empty_query_values_are_absent_values(h: Harness) -> None:
    _many(h, 25)
    same = [("/api/v1/search", {"limit": 100}, ["rcpt", "job_id", "vmta", "outcome", "since", "until", "cursor",
                                                "format"]),
            ("/api/v1/search", {"job_id": "JP", "since": "2024-05-01T08:10:00Z"}, ["vmta", "rcpt", "until"]),
            ("/api/v1/flows", {}, ["since", "until", "format"]),
            ("/api/v1/flows", {"since": "2024-05-01"}, ["until"]),
            ("/api/v1/replies", {"since": "2024-05-01T10:00:00Z"}, ["vmta", "isp", "until", "limit"]),
            ("/api/v1/replies", {}, ["since"]),
            ("/api/v1/lookup", {"message_id": "m1@shop.example"}, ["job_id", "rcpt", "limit"]),
            ("/api/v1/messages/m1@shop.example", {}, ["limit", "format"]),
            ("/api/v1/timeline", {"job_id": "J1", "rcpt": "bob@yahoo.com"}, ["message_id", "format"])]
    async with h.client() as c:
        for path, params, names in same:
            want = await c.get(path, params=params)
            assert want.status_code == 200, (path, want.text)
            for name in names:
                for blank in ("", " "):
                    got = await c.get(path, params={**params, name: blank})
                    assert (got.status_code, got.json()) == (200, want.json()), (path, name, blank)
        # a required parameter left empty is a missing one
        _error(await c.get("/api/v1/timeline", params={"job_id": "J1", "rcpt": ""}), 400, "rcpt")
        _error(await c.get("/api/v1/timeline", params={"job_id": "", "rcpt": "bob@yahoo.com"}), 400, "job_id")


async def test_flows_echo_the_bucket_bounds_they_read(tmp_path: Path) -> None:
    h = Harness(tmp_path, clock=lambda: 1714645267.273148)  # 2024-05-02T10:21:07.273148Z
    for b in CORPUS:
        h.commit(b)
    async with h.client() as c:
        body = (await c.get("/api/v1/flows", params={"since": "1d", "until": "30m"})).json()
        exact = (await c.get("/api/v1/flows", params={"since": "2024-05-01T10:20:00Z",
                                                       "until": "2024-05-01T10:30:00Z"})).json()
        inner = (await c.get("/api/v1/flows", params={"since": "2024-05-01T10:24:59Z",
                                                       "until": "2024-05-01T10:25:01Z"})).json()
    assert (body["since"], body["until"]) == ("2024-05-01T10:20:00Z", "2024-05-02T09:55:00Z")
    assert (exact["since"], exact["until"]) == ("2024-05-01T10:20:00Z", "2024-05-01T10:30:00Z")
    assert (inner["since"], inner["until"]) == ("2024-05-01T10:20:00Z", "2024-05-01T10:30:00Z")
    assert inner["nodes"] == exact["nodes"] and inner["edges"] == exact["edges"]  # the buckets actually read
    h.close()


async def test_flows_up_to_the_last_time_accepted_answer_not_500(tmp_path: Path) -> None:
    """`until` rounds up to a bucket's end: at 9999-12-31T23:59:59 that was the year 10000, and a 500."""
    h = Harness(tmp_path, clock=lambda: 1714645267.0)
    for b in CORPUS:
        h.commit(b)
    async with h.client() as c:
        for until in ("253402300799", "9999-12-31T23:59:59Z"):
            r = await c.get("/api/v1/flows", params={"since": "2024-05-01T00:00:00Z", "until": until})
            assert r.status_code == 200, r.text
            assert r.json()["until"] == "9999-12-31T23:59:59Z"
            assert r.json()["nodes"]  # the corpus's buckets are read
            page = await c.get("/ui/flows", params={"since": "2024-05-01T00:00:00Z", "until": until})
            assert page.status_code == 200, page.text[:300]
    h.close()


@pytest.mark.parametrize("path,params", BUDGET_ROUTES, ids=lambda v: v if isinstance(v, str) else "")
async def test_every_json_answer_is_encoded_off_the_event_loop(h: Harness, monkeypatch: pytest.MonkeyPatch,
                                                               path: str, params: dict) -> None:
    """A route returning a dict is encoded by FastAPI on the event loop (a /lookup of 1,000 timelines held
    /metrics ~0.6 s): each encodes its model in its worker thread."""
    import threading

    from pydantic import BaseModel

    encoded_on: list[int] = []
    real = BaseModel.model_dump_json

    def dump(self: BaseModel, *a: Any, **kw: Any) -> str:
        encoded_on.append(threading.get_ident())
        return real(self, *a, **kw)

    monkeypatch.setattr(BaseModel, "model_dump_json", dump)
    async with _client(_app(h)) as c:
        assert (await c.get(path, params=params)).status_code == 200
    assert encoded_on and threading.get_ident() not in encoded_on


@pytest.mark.parametrize(("accept", "text"), [
    ("text/plain", True), ("application/json", False), ("", False), ("*/*", False),
    ("text/plain;q=0, application/xml", False),  # text refused: JSON (a substring test served text)
    ("application/json;q=0.1, text/plain", True),  # text preferred
    ("text/plain, application/json;q=0", True),  # JSON refused
    ("TEXT/PLAIN", True), ("Text/Plain; charset=utf-8", True),  # media types are case-insensitive
    ("text/*", True), ("text/plain;q=0.5, application/json;q=0.5", False),  # a tie: JSON, the default
    ("text/plain;q=bogus, application/json;q=0.2", False),  # an unreadable weight is no acceptance
])
async def test_accept_is_negotiated_by_weight_and_case_insensitively(h: Harness, accept: str, text: bool) -> None:
    """`Accept` was a substring test: `text/plain;q=0` (text refused) got text, `application/json;q=0.1, text/plain`
    (text preferred) got JSON, and `TEXT/PLAIN` got JSON. RFC 9110 §12.5.1: each type's weight is its most specific
    range's; the daemon's and the hub's routes share the rule."""
    async with h.client() as c:
        r = await c.get("/api/v1/messages/m1@shop.example", headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain" if text else "application/json"), r.headers


async def test_integers_are_decimal_digits_only(h: Harness) -> None:
    """`/timelines/1_0` answered timeline 10 and `limit=1_0` read as 10 (pydantic's lax int takes `_` separators,
    `+`, `10.0`): docs/api.md says a timeline_id that is not an integer is a 400."""
    async with h.client() as c:
        tid = (await c.get("/api/v1/search", params={"limit": 1})).json()["items"][0]["id"]
        assert (await c.get(f"/api/v1/timelines/{tid}")).status_code == 200
        assert (await c.get(f"/api/v1/timelines/0{tid}")).status_code == 200  # leading zeros are digits
        for odd in (f"{tid}_0", f"0_{tid}", f"+{tid}", f"{tid}.0", f"%20{tid}"):
            body = _error(await c.get(f"/api/v1/timelines/{odd}"), 400, "timeline_id")
            assert "integer" in body["error"], body
        for route in ("/api/v1/search", "/api/v1/messages/m1@shop.example"):
            for odd in ("1_0", "+5", "5.0"):
                _error(await c.get(route, params={"limit": odd}), 400, "limit")
            assert (await c.get(route, params={"limit": "5"})).status_code == 200


async def test_text_timeline_by_message_id_names_it_and_search_trims_vmta(h: Harness) -> None:
    """A timeline asked by Message-Id began `job - rcpt ...` in text, never naming the Message-Id looked up; a
    search by ` vmta1` (a pasted space) found nothing while ` J1` found J1's."""
    _many(h, 6)
    async with h.client() as c:
        text = (await c.get("/api/v1/timeline", params={"message_id": "<m3@shop.example>", "rcpt": "carol@outlook.com",
                                                        "format": "text"})).text
        assert text.splitlines()[0] == "message-id m3@shop.example rcpt carol@outlook.com"
        text = (await c.get("/api/v1/timeline?job_id=J1&rcpt=bob@yahoo.com&format=text")).text
        assert text.splitlines()[0] == "job J1 rcpt bob@yahoo.com"
        plain = (await c.get("/api/v1/search", params={"vmta": "vB", "job_id": "JP"})).json()["items"]
        padded = (await c.get("/api/v1/search", params={"vmta": " vB\t", "job_id": " JP "})).json()["items"]
        assert len(plain) == 2 and padded == plain
