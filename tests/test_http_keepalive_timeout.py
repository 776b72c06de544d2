"""`web.keep_alive_timeout` and `web.header_timeout` each govern their own wait, on real sockets to the real listener.

Review: with `header_timeout: 3s, keep_alive_timeout: 20s` a keep-alive connection idle after a complete answer was
closed after ~3.9 s: the connection guard's sweep took it for one waiting for its request head (its clock restarted
at the answer), so header_timeout capped keep_alive_timeout. An idle keep-alive connection (no byte of a next request
yet) is closed after keep_alive_timeout ("idle for this long after a response"); header_timeout counts from the first
byte of a request: a client that sends part of a head and stalls (slowloris) is still closed after it, on a new
connection as on a kept-alive one, and past web.max_connections the longest-idle connection still makes way.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import load_config
from exporter.http import EmbeddedServer, build_app
from tests.conftest import write_config
from tests.listener import serving

HEADER_TIMEOUT = 1.0
KEEP_ALIVE = 8.0
SWEEP = 1.0
"""The guard sweeps once a second: a connection it closes is closed up to this much past its timeout."""
SLACK = 1.5
"""A loaded machine's delay on top (a thread's wake-up, the event loop's turn)."""
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[tuple[int, EmbeddedServer]]:
    config = load_config(write_config(tmp_path, web={"header_timeout": f"{HEADER_TIMEOUT:g}s",
                                                     "keep_alive_timeout": f"{KEEP_ALIVE:g}s"}))
    assert (config.web.header_timeout, config.web.keep_alive_timeout) == (HEADER_TIMEOUT, KEEP_ALIVE)
    async with serving(build_app(CollectorRegistry(), lambda: {"ok": True}), config) as served:
        yield served


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket) -> tuple[str, bytes]:
    """One whole answer (status line, body) read off a kept-alive connection (framed by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole answer head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert "close" not in headers.get("connection", "").lower(), headers
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of an answer's body"
        body += chunk
    assert len(body) == length, "more than one answer"
    return lines[0], body


def exchange(sock: socket.socket) -> None:
    sock.sendall(REQUEST)
    status, body = read_answer(sock)
    assert status == "HTTP/1.1 200 OK" and b'"ok":true' in body, (status, body)


def closed(sock: socket.socket) -> bool:
    """The server closed (or reset) the connection; False while it is open with nothing to read."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def seconds_until_closed(sock: socket.socket, bound: float) -> float:
    """Seconds until the server closes the connection (EOF or reset), at most `bound` (then inf)."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if select.select([sock], [], [], 0.05)[0]:
            try:
                data = sock.recv(1)
            except ConnectionError:
                return time.monotonic() - start
            assert data == b"", f"an unexpected byte: {data!r}"
            return time.monotonic() - start
    return float("inf")


def idle_keep_alive(port: int) -> float:
    with connect(port) as sock:
        exchange(sock)
        return seconds_until_closed(sock, KEEP_ALIVE + 5)


def next_request_after_idling(port: int, idle: float) -> None:
    with connect(port) as sock:
        exchange(sock)
        time.sleep(idle)
        assert not closed(sock), f"closed while idle {idle}s after an answer (keep_alive_timeout {KEEP_ALIVE}s)"
        exchange(sock)  # the same connection answers the next request
        exchange(sock)


def stalled_head_after_an_answer(port: int, idle: float, dribble: bool) -> float:
    """Seconds from the first byte of a next request head (sent `idle` s after an answer, never finished) to the close."""
    with connect(port) as sock:
        exchange(sock)
        time.sleep(idle)
        assert not closed(sock), "closed while idle, before the next request began"
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        start = time.monotonic()
        if dribble:  # one more header byte every 0.2 s: each one must not restart header_timeout's clock
            for byte in b"Host: localhost\r\nX-Slow: " + b"a" * 40:
                if closed(sock):
                    break
                with contextlib.suppress(ConnectionError):
                    sock.sendall(bytes([byte]))
                time.sleep(0.2)
        left = KEEP_ALIVE + 5 - (time.monotonic() - start)
        return time.monotonic() - start + seconds_until_closed(sock, left)


def stalled_head_on_a_new_connection(port: int) -> float:
    with connect(port) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        return time.monotonic() - start + seconds_until_closed(sock, KEEP_ALIVE + 5)


def silent_new_connection(port: int) -> float:
    with connect(port) as sock:
        return seconds_until_closed(sock, KEEP_ALIVE + 5)


async def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout_not_header_timeout(listener):
    port, server = listener
    after = await asyncio.to_thread(idle_keep_alive, port)
    assert KEEP_ALIVE - 1.5 <= after <= KEEP_ALIVE + SWEEP + SLACK, \
        f"closed {after:.2f}s after its answer: keep_alive_timeout {KEEP_ALIVE}s, header_timeout {HEADER_TIMEOUT}s"
    assert server.guard is not None and server.guard.timed_out == 0  # closed by keep-alive, not as a slow head


async def test_a_keep_alive_connection_idle_past_header_timeout_answers_its_next_request(listener):
    port, _ = listener
    await asyncio.to_thread(next_request_after_idling, port, HEADER_TIMEOUT + SWEEP + 1.5)


@pytest.mark.parametrize("dribble", [False, True], ids=["stalled", "dribbled"])
async def test_a_head_begun_after_a_keep_alive_answer_and_stalled_is_closed_after_header_timeout(listener, dribble):
    """Slowloris on a kept-alive connection: uvicorn's keep-alive timer stops at the first byte, so header_timeout,
    counted from that byte (not from the answer, nor from each byte), is what closes it."""
    port, server = listener
    idle = HEADER_TIMEOUT + SWEEP + 0.5  # past header_timeout since the answer, well before keep_alive_timeout
    after = await asyncio.to_thread(stalled_head_after_an_answer, port, idle, dribble)
    assert HEADER_TIMEOUT - 0.1 <= after <= HEADER_TIMEOUT + SWEEP + SLACK, \
        f"closed {after:.2f}s after the first byte of a head that never ended (header_timeout {HEADER_TIMEOUT}s)"
    assert idle + after < KEEP_ALIVE  # not keep-alive's close
    assert server.guard is not None and server.guard.timed_out >= 1


async def test_a_new_connection_that_stalls_in_its_head_or_sends_nothing_is_closed_after_header_timeout(listener):
    port, server = listener
    stalled, silent = await asyncio.gather(asyncio.to_thread(stalled_head_on_a_new_connection, port),
                                           asyncio.to_thread(silent_new_connection, port))
    for after in (stalled, silent):
        assert HEADER_TIMEOUT - 0.1 <= after <= HEADER_TIMEOUT + SWEEP + SLACK, after
    assert server.guard is not None and server.guard.timed_out >= 2


def evicted_longest_idle(port: int, n: int) -> list[bool]:
    """`n` kept-alive connections each answered once (the first answered first), then one more that asks: which of
    the `n` were closed to make way for it. The newcomer is answered."""
    socks = []
    try:
        for _ in range(n):
            sock = connect(port)
            socks.append(sock)
            exchange(sock)
            time.sleep(0.05)
        with connect(port) as newcomer:
            exchange(newcomer)
            time.sleep(0.3)
            return [closed(s) for s in socks]
    finally:
        for s in socks:
            s.close()


async def test_past_max_connections_the_longest_idle_keep_alive_connection_makes_way(tmp_path: Path):
    config = load_config(write_config(tmp_path, web={"max_connections": 8, "header_timeout": "30s",
                                                     "keep_alive_timeout": "60s"}))
    async with serving(build_app(CollectorRegistry(), lambda: {"ok": True}), config) as (port, server):
        assert server.guard is not None and server.guard.max_connections == 8
        gone = await asyncio.to_thread(evicted_longest_idle, port, 8)
    assert gone == [True] + [False] * 7, gone
    assert (server.guard.evicted, server.guard.timed_out) == (1, 0)
