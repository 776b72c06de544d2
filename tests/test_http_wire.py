"""The listener on a real loopback socket: clients that never read, requests h11 cannot parse, HEAD, gzip q-values.

Every request goes over TCP to the real uvicorn server (the daemon's `make_server`, the hub's app on the same
listener code), as a client would send it: these defects live in the protocol and the middleware, which an
in-process ASGI transport skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry, Counter

from exporter.config import load_config
from exporter.exposition import wants_gzip
from exporter.http import MAX_REQUEST_HEAD, EmbeddedServer, build_app
from hub.app import build_hub_app
from hub.config import HubConfig
from tests.conftest import free_port, write_config
from tests.listener import serving, start
from tests.test_correlator_support import Harness, corpus_harness

TCP_CLOSE = 7
"""tcpi_state (first byte of TCP_INFO) of a socket the peer reset: closed without the client reading a byte."""
STUCK = 8
"""Non-reading clients: as many as web.max_connections (its minimum), so before the fix a newcomer was refused."""
PIPELINED = 40


def big_registry(help_bytes: int) -> CollectorRegistry:
    """A registry whose /metrics page is ~help_bytes long (one counter with a long HELP)."""
    reg = CollectorRegistry()
    Counter("watchtower_probe", "p" * help_bytes, registry=reg).inc()
    return reg


def raw_exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send `request` on a plain socket, read the answer to EOF: (status line, headers, body)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(request)
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


# --- 1. clients that never read their answers -------------------------------------------------------

def open_non_readers(port: int, n: int) -> list[socket.socket]:
    """The audit's client: a tiny receive buffer, PIPELINED requests, never a recv(). Each is opened once the
    previous one is being answered, so the server sees it busy (in flight), never idle."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n" * PIPELINED)
        socks.append(s)
        assert select.select([s], [], [], 10)[0], "no answer started"
    return socks


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def wait_reset(socks: list[socket.socket], bound: float) -> list[int]:
    """States of the sockets once all are closed by the server, or when `bound` seconds have passed."""
    deadline = time.monotonic() + bound
    while any(tcp_state(s) != TCP_CLOSE for s in socks) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [tcp_state(s) for s in socks]


def read_to_end(sock: socket.socket) -> str:
    """How the connection ends for a client reading what it still holds: 'eof', 'reset' or 'open'."""
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "open"
    return "eof"


def slow_but_steady_get(port: int, slow_for: float) -> bytes:
    """GET /metrics read 2 KB per 20 ms (~40 KB/s once the tiny receive buffer is counted) for `slow_for` seconds,
    then at full speed; the body.

    At that pace the server's own write buffer moves only when the kernel has freed ~400 KB of its socket
    buffer (~10 s), so only the kernel's queue shows the client is reading."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = bytearray()
        until = time.monotonic() + slow_for
        while chunk := s.recv(2048 if time.monotonic() < until else 65536):
            answer += chunk
            if time.monotonic() < until:
                time.sleep(0.02)
    return bytes(answer.partition(b"\r\n\r\n")[2])


async def test_clients_that_never_read_are_reset_after_send_timeout_and_newcomers_served(tmp_path: Path):
    config = load_config(write_config(tmp_path, web={"max_connections": 8, "send_timeout": "500ms"}))
    async with serving(build_app(big_registry(256 * 1024), lambda: {"ok": True}), config) as (port, server):
        socks = await asyncio.to_thread(open_non_readers, port, STUCK)
        try:
            # each held ~10 MB of answers it never read; the server resets them (keep_alive_timeout 5 s and
            # header_timeout 10 s never applied: a request is in flight, blocked on the write)
            states = await asyncio.to_thread(wait_reset, socks, 30)
            assert states == [TCP_CLOSE] * STUCK
            assert [await asyncio.to_thread(read_to_end, s) for s in socks] == ["reset"] * STUCK
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                r = await c.get("/healthz")
            assert (r.status_code, r.json()) == (200, {"ok": True})
            assert (server.guard.stalled, server.guard.evicted, server.guard.timed_out) == (STUCK, 0, 0)
        finally:
            for s in socks:
                s.close()


async def test_clients_answered_slowly_cannot_keep_newcomers_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """As many connections as web.max_connections, each with pipelined requests it reads only a trickle of: always in
    flight and never stalled, so every newcomer was refused, scrapes included, for as long as they went on (a
    review saw /healthz fail 44 times in 45 over a minute). Past the cap the connection whose answer has been in
    flight longest (over EVICT_BUSY_AFTER) makes way for the newcomer."""
    import exporter.http as http_mod

    monkeypatch.setattr(http_mod, "EVICT_BUSY_AFTER", 0.3)
    config = load_config(write_config(tmp_path, web={"max_connections": 8, "send_timeout": "60s"}))
    async with serving(build_app(big_registry(256 * 1024), lambda: {"ok": True}), config) as (port, server):
        socks = await asyncio.to_thread(open_non_readers, port, STUCK)
        try:
            await asyncio.sleep(1.5)  # a sweep (every second) has seen their answers in flight
            answers = []
            for _ in range(3):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
                    r = await c.get("/healthz")
                answers.append((r.status_code, r.json()))
            assert answers == [(200, {"ok": True})] * 3
            assert server.guard.evicted >= 1 and server.guard.stalled == 0
        finally:
            for s in socks:
                s.close()


async def test_shutdown_does_not_wait_for_clients_that_never_read(tmp_path: Path):
    config = load_config(write_config(tmp_path, web={"send_timeout": "500ms"}))
    server, task = await start(build_app(big_registry(256 * 1024), lambda: {"ok": True}), config)
    socks = await asyncio.to_thread(open_non_readers, config.listen_port, 2)
    try:
        server.should_exit = True  # uvicorn's graceful shutdown waits for answers these clients never take
        await asyncio.wait_for(task, 30)
        ends = [await asyncio.to_thread(read_to_end, s) for s in socks]
        # Each connection is ended, none left open: reset when the answer it never took was still queued, or closed
        # (eof) when the kernel's send buffer had taken the rest of it (the buffers grow with the machine's memory
        # and load: a fresh-clone run saw both end so); the shutdown itself never waited for them (wait_for above)
        assert set(ends) <= {"reset", "eof"}, ends
        assert server.guard.stalled == ends.count("reset")
    finally:
        for s in socks:
            s.close()


async def test_a_slow_reader_that_keeps_reading_gets_the_whole_answer(tmp_path: Path):
    # send_timeout 3 s, not 500 ms: the reader is a thread of this process (same GIL), and a loaded machine can
    # keep it off the CPU for a whole sweep (every second); with 500 ms one such sweep without progress reset it
    config = load_config(write_config(tmp_path, web={"send_timeout": "3s"}))
    reg = big_registry(3 * 1024 * 1024)  # more than the kernel buffers hold: the server waits on the client
    async with serving(build_app(reg, lambda: {"ok": True}), config) as (port, server):
        # slow for twice send_timeout: the server's own buffer stays put all that time (a guard that looked only
        # at it resets this reader ~5 s in), so only the kernel's queue can show the guard it is being read
        body = await asyncio.to_thread(slow_but_steady_get, port, 6.0)
    assert len(body) > 3 * 1024 * 1024 and body.endswith(b"watchtower_probe_total 1.0\n")
    assert server.guard.stalled == 0


# --- 2. errors answered below the routes (h11's parser, Starlette's last resort): JSON too ----------

@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[tuple[int, EmbeddedServer]]:
    config = load_config(write_config(tmp_path))
    async with serving(build_app(big_registry(10), lambda: {"ok": True}), config) as served:
        yield served


async def requests_done(server: EmbeddedServer) -> None:
    """Until every request task has returned (a route may still run after its connection closed)."""
    for _ in range(500):
        if not server.server_state.tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a request task is still running")


MALFORMED = {
    "no HTTP version": b"GET /api/v1/search\r\n\r\n",
    "byte 0xff in the target": b"GET /api/v1/messages/\xff HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nnocolon\r\n\r\n",
    "bad chunk size, route running": b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_requests_get_the_json_400(listener, request_bytes, caplog):
    port, server = listener
    with caplog.at_level(logging.INFO):
        status, headers, body = await asyncio.to_thread(raw_exchange, port, request_bytes)
        await requests_done(server)
    assert status == "HTTP/1.1 400 Bad Request"
    assert (headers["content-type"], headers["connection"]) == ("application/json", "close")
    assert json.loads(body) == {"error": "malformed HTTP request", "parameter": None, "status": 400}
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_a_head_over_256_kib_gets_the_json_400(listener):
    port, _ = listener
    request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 300 * 1024 + b"\r\n\r\n"
    status, headers, body = await asyncio.to_thread(raw_exchange, port, request)
    assert status == "HTTP/1.1 400 Bad Request" and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": 400, "parameter": None, "error": f"request line + headers are over "
                                f"{MAX_REQUEST_HEAD} bytes, at most {MAX_REQUEST_HEAD}"}


async def test_a_route_that_raises_answers_the_json_500(tmp_path: Path):
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    config = load_config(write_config(tmp_path))
    async with serving(build_app(big_registry(10), lambda: {"ok": True}, [router]), config) as (port, _):
        status, headers, body = await asyncio.to_thread(
            raw_exchange, port, b"GET /boom HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert (status, headers["content-type"]) == ("HTTP/1.1 500 Internal Server Error", "application/json")
    assert json.loads(body) == {"error": "internal error", "parameter": None, "status": 500}


# --- 3. HEAD on every GET route, daemon and hub -----------------------------------------------------

MID = quote("<m1@shop.example>")
GET_ROUTES = {
    "/metrics": "/metrics", "/healthz": "/healthz", "/": "/", "/openapi.json": "/openapi.json",
    "/api/v1/messages/{message_id}": f"/api/v1/messages/{MID}",
    "/api/v1/timeline": "/api/v1/timeline?rcpt=alice@gmail.com&job_id=J1",
    "/api/v1/timelines/{timeline_id}": "/api/v1/timelines/x",
    "/api/v1/search": "/api/v1/search?rcpt=alice@gmail.com&since=3650d",
    "/api/v1/flows": "/api/v1/flows", "/api/v1/replies": "/api/v1/replies",
    "/api/v1/lookup": f"/api/v1/lookup?message_id={MID}",
    "//api/v1/{rest}": "//api/v1/search", "/ui/": "/ui/?rcpt=alice@gmail.com", "/ui/messages/{message_id}": f"/ui/messages/{MID}",
    "/ui/timeline": "/ui/timeline?rcpt=alice@gmail.com&job_id=J1", "/ui/flows": "/ui/flows",
}
"""Every GET route of the daemon and the hub (route pattern: a request to it)."""


def assert_covers_the_api(app: FastAPI) -> None:
    """GET_ROUTES names every documented /api/v1 route (a new one must be added here)."""
    documented = {path for path, ops in app.openapi()["paths"].items() if "get" in ops}
    assert documented <= set(GET_ROUTES), documented - set(GET_ROUTES)


async def assert_head_like_get(base: str, paths: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        for path in paths:
            got, head = await c.get(path), await c.head(path)
            assert head.status_code == got.status_code, path
            assert {**head.headers, "date": ""} == {**got.headers, "date": ""}, path
            assert head.content == b"", path


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from corpus_harness(tmp_path)


async def test_head_answers_every_get_route_of_the_daemon_like_get(tmp_path: Path, h: Harness):
    app = build_app(big_registry(10), lambda: {"ok": True}, [h.sink.asgi_routes()])
    config = load_config(write_config(tmp_path))
    reported = ["/metrics", "/healthz", "/api/v1/search?rcpt=alice@gmail.com&since=3650d", "/ui/", "/ui/flows",
                f"/ui/messages/{MID}"]
    async with serving(app, config) as (port, _):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for path in reported:
                r = await c.head(path)
                assert (r.status_code, r.content) == (200, b""), path
        await assert_head_like_get(f"http://127.0.0.1:{port}", reported + list(GET_ROUTES.values()))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            r = await c.post("/metrics")
        assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
    assert_covers_the_api(app)


async def test_head_answers_every_get_route_of_the_hub_like_get(tmp_path: Path, h: Harness):
    daemon = build_app(big_registry(10), lambda: {"ok": True}, [h.sink.asgi_routes()])
    async with serving(daemon, load_config(write_config(tmp_path))) as (daemon_port, _):
        config = HubConfig.model_validate({"listen": f"127.0.0.1:{free_port()}",
                                           "hub": {"targets": [f"http://127.0.0.1:{daemon_port}"]}})
        app, hub = build_hub_app(config)
        try:
            async with serving(app, config) as (port, _):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                    for path in ("/healthz", "/api/v1/search?rcpt=alice@gmail.com&since=3650d", "/ui/", "/ui/flows"):
                        r = await c.head(path)
                        assert (r.status_code, r.content) == (200, b""), path
                await assert_head_like_get(f"http://127.0.0.1:{port}", list(GET_ROUTES.values()))
        finally:
            await hub.fanout.client.aclose()
        assert_covers_the_api(app)


# --- 4. gzip only when Accept-Encoding gives it a q above 0 -----------------------------------------

REFUSED = ["gzip;q=0", "gzip; q=0.000", "gzip;q=0, *", "*;q=0", "identity", "GZIP;Q=0, br"]
ACCEPTED = ["gzip", "br, gzip;q=0.5", "*", "identity;q=0.5, *;q=0.1", "gzip;q=1.0", "x-gzip"]


async def test_gzip_follows_the_q_values_on_metrics_and_pages(tmp_path: Path, h: Harness):
    app = build_app(big_registry(4096), lambda: {"ok": True}, [h.sink.asgi_routes()])
    config = load_config(write_config(tmp_path))
    async with serving(app, config) as (port, _):
        for path in ("/metrics", "/ui/flows", "/ui/"):
            for value in REFUSED + ACCEPTED:
                request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: {value}\r\nConnection: close\r\n\r\n"
                status, headers, body = await asyncio.to_thread(raw_exchange, port, request.encode())
                assert status == "HTTP/1.1 200 OK", (path, value)
                if value in REFUSED:
                    assert "content-encoding" not in headers and body.startswith((b"# HELP", b"<!doctype")), (
                        path, value)
                else:
                    assert headers["content-encoding"] == "gzip", (path, value)
                    assert gzip.decompress(body).startswith((b"# HELP", b"<!doctype")), (path, value)


def test_wants_gzip_reads_q_values():
    assert [wants_gzip(v) for v in REFUSED + ["", "gzip;q=nan", "gzip;q=2", "gzip;q=x", "*;q=0, deflate"]] == [False] * 11
    assert [wants_gzip(v) for v in ACCEPTED + ["*;q=0, gzip", "gzip;level=1", " GZip ; Q = 0.001"]] == [True] * 9
