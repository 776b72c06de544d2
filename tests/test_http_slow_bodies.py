"""Request bodies that arrive slowly, or in many pieces, cannot keep scrapes out or hold the event loop; pages are
built off the loop.

Over TCP to the real listener (the daemon's and the hub's `make_server`): the connection cap, the header deadline
and the chunked framing live in the protocol, which an in-process ASGI transport skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from exporter import formquery
from exporter import http as http_mod
from exporter.config import load_config
from exporter.http import MAX_BODY_CHUNKS, EmbeddedServer, build_app
from hub.app import build_hub_app
from hub.config import HubConfig
from pages import build_pages_router
from tests.conftest import free_port, write_config
from tests.listener import serving
from tests.test_http_wire import big_registry, raw_exchange

CAP = 8
"""web.max_connections (its minimum): as many form tricklers as the cap, then a scrape."""
FORM_HEAD = (b"POST /api/v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n")


def open_form_tricklers(port: int, n: int) -> list[socket.socket]:
    """The review's client: a form POST announcing 10,000 bytes of body, of which it sends a few."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(FORM_HEAD + b"Content-Length: 10000\r\n\r\nrcpt=a")
        socks.append(s)
    return socks


async def seen_reading_bodies(server: EmbeddedServer, n: int) -> None:
    """Until the guard holds `n` connections whose request head has been parsed (their form body being read)."""
    for _ in range(1000):
        if sum(getattr(p, "cycle", None) is not None for p in server.guard.waiting) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the tricklers' requests were not seen")


def recording_search(calls: list[str]) -> APIRouter:
    router = APIRouter()

    @router.get("/api/v1/search")
    async def search(rcpt: str | None = None) -> dict[str, Any]:
        calls.append(rcpt or "")
        return {"items": []}

    return router


async def _scrapes_while_tricklers_hold_the_cap(port: int, server: EmbeddedServer, path: str) -> list[Any]:
    answers: list[Any] = []
    socks: list[socket.socket] = []
    try:
        for _ in range(3):
            for s in socks:
                s.close()
            socks = await asyncio.to_thread(open_form_tricklers, port, CAP)  # reconnecting, as the review's did
            await seen_reading_bodies(server, CAP)
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(b"a")  # trickling
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                    answers.append((await c.get(path)).status_code)
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)
    finally:
        for s in socks:
            s.close()
    return answers


async def test_form_bodies_trickled_on_every_slot_do_not_keep_scrapes_out(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """900 connections trickling a form body (a byte per 0.5 s, reconnecting every 3.5 s) made 74 /metrics probes
    in 81 fail: a connection reading its body counted as answering, so past the cap the newcomer was dropped unless
    an answer was older than EVICT_BUSY_AFTER. A body still arriving is idle: the oldest such connection makes way.
    (EVICT_BUSY_AFTER is put out of reach: the scrape must not depend on the tricklers' age.)"""
    monkeypatch.setattr(http_mod, "EVICT_BUSY_AFTER", 3600.0)
    calls: list[str] = []
    config = load_config(write_config(tmp_path, web={"max_connections": CAP}))
    app = build_app(big_registry(10), lambda: {"ok": True}, [recording_search(calls)])
    async with serving(app, config) as (port, server):
        answers = await _scrapes_while_tricklers_hold_the_cap(port, server, "/metrics")
        evicted = server.guard.evicted
    assert answers == [200] * 3
    assert evicted >= 3
    assert calls == []  # an evicted trickler's form is not run as a search for nobody


async def test_the_hub_keeps_answering_while_form_bodies_trickle_on_every_slot(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    """The hub shares the listener (the review's cyc_hub.py: its index failed the same way)."""
    monkeypatch.setattr(http_mod, "EVICT_BUSY_AFTER", 3600.0)
    config = HubConfig.model_validate({"listen": f"127.0.0.1:{free_port()}", "web": {"max_connections": CAP},
                                       "hub": {"targets": [f"http://127.0.0.1:{free_port()}"]}})
    app, hub = build_hub_app(config)
    try:
        async with serving(app, config) as (port, server):
            answers = await _scrapes_while_tricklers_hold_the_cap(port, server, "/healthz")
    finally:
        await hub.fanout.client.aclose()
    assert answers == [200] * 3


def _read_to_eof(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(FORM_HEAD + b"Content-Length: 100\r\n\r\nrcpt=a")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


async def test_a_form_body_is_bounded_by_the_header_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body still arriving is bounded as a late head is (web.header_timeout from the connection's opening): the
    connection is closed, not held for the form's own READ_SECONDS (put out of reach here)."""
    monkeypatch.setattr(formquery, "READ_SECONDS", 3600.0)
    calls: list[str] = []
    config = load_config(write_config(tmp_path, web={"header_timeout": "1s"}))
    app = build_app(big_registry(10), lambda: {"ok": True}, [recording_search(calls)])
    async with serving(app, config) as (port, server):
        answer = await asyncio.to_thread(_read_to_eof, port)
        timed_out = server.guard.timed_out
    assert answer == b"" and timed_out == 1
    assert calls == []


def chunked_form(chunks: int, extension: bytes = b"") -> bytes:
    """`rcpt=aaa...` in `chunks` chunks: `rcpt=`, then one `a` each."""
    body = (b"5\r\nrcpt=\r\n" + b"".join(b"1" + extension + b"\r\na\r\n" for _ in range(chunks - 1))
            + b"0\r\n\r\n")
    return FORM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body


@pytest.mark.parametrize(("chunks", "extension"), [(16_000, b""), (100, b";" + b"e" * 1000)],
                         ids=["16,000 one-byte chunks", "chunk extensions of 1 KB"])
async def test_a_body_of_many_chunks_is_refused(tmp_path: Path, chunks: int, extension: bytes) -> None:
    """16,000 one-byte chunks (96 KB) were parsed on the event loop (~90 ms each, /healthz waited ~1 s with 10 in
    parallel), and chunk extensions made 16 MB on the wire of a 4,000-byte form: both answered 200. The parser stops
    at the first chunk past MAX_BODY_CHUNKS: 413, and the connection closes."""
    calls: list[str] = []
    app = build_app(big_registry(10), lambda: {"ok": True}, [recording_search(calls)])
    async with serving(app, load_config(write_config(tmp_path))) as (port, _):
        status, headers, body = await asyncio.to_thread(raw_exchange, port, chunked_form(chunks, extension))
        few = await asyncio.to_thread(raw_exchange, port, chunked_form(MAX_BODY_CHUNKS))
    assert status.startswith("HTTP/1.1 413 ") and headers["connection"] == "close", (status, body[:200])
    assert (headers["content-type"], json.loads(body)) == ("application/json", {
        "error": f"request body in more than {MAX_BODY_CHUNKS} chunks", "parameter": None, "status": 413})
    assert few[0].startswith("HTTP/1.1 200 "), few  # a form in a few chunks is still a form
    assert calls == ["a" * (MAX_BODY_CHUNKS - 1)]  # the refused one never ran


async def test_the_timeline_by_id_page_is_built_off_the_event_loop(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """/ui/timelines/{id} built its HTML on the event loop (1,000 events of 4,000-character fields: ~300 ms a
    request), where its siblings (a message, a recipient's timeline) build theirs in a worker thread."""
    from pages import views

    loop_thread = threading.get_ident()
    built_on: list[int] = []
    real = views.Views.timeline_section

    def section(self: Any, *args: Any) -> str:
        built_on.append(threading.get_ident())
        return real(self, *args)

    class Backend:
        async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
            assert path == "/api/v1/timelines/7"
            return 200, {"timelines": [{"id": 7, "rcpt": "r@x.example", "outcome": "delivered",
                                        "events": [{"kind": "delivered", "ts": 1.0}] * 3}]}

    monkeypatch.setattr(views.Views, "timeline_section", section)
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: Backend()))
    async with serving(app, load_config(write_config(tmp_path))) as (port, _), httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{port}/ui/timelines/7")
    assert r.status_code == 200 and r.text.count('class="event"') == 3
    assert len(built_on) == 1 and loop_thread not in built_on


async def test_an_abandoned_form_behind_basic_auth_logs_no_error(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Regression review 2026-12-06: a form whose client left mid-body was answered with nothing, and with
    web.basic_auth_users Starlette's middleware around it logged `Exception in ASGI application ... No response
    returned.` with a ~40-line traceback for each (every trickler evicted or timed out). The search still never runs."""
    import base64

    from tests.test_http_auth_limits import PASSWORD, USERS

    calls: list[str] = []
    config = load_config(write_config(tmp_path, web={"basic_auth_users": USERS}))
    auth = base64.b64encode(f"prometheus:{PASSWORD}".encode())
    with caplog.at_level("WARNING"):
        async with serving(build_app(big_registry(1), lambda: {"ok": True}, [recording_search(calls)], USERS),
                           config) as (port, _server):
            for _ in range(2):
                s = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 10)
                s.sendall(FORM_HEAD + b"Authorization: Basic " + auth + b"\r\nContent-Length: 100\r\n\r\nrcpt=a")
                await asyncio.sleep(0.3)
                s.close()
            async with httpx.AsyncClient(auth=("prometheus", PASSWORD)) as client:  # the listener answers on
                assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
            await asyncio.sleep(0.3)
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [] and calls == []
