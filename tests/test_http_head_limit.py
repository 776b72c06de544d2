"""The documented 16 KiB bound on a request's line + headers holds however the head arrives.

h11's `max_incomplete_event_size` only bounds a head still being received: one that arrived whole
in a single read (a 70,000-byte `name[]` value, a 20 KB header) was served 200. These requests go
over a real socket to the real uvicorn server, as a client would send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from exporter.config import load_config
from exporter.http import MAX_REQUEST_HEAD, build_app
from tests.conftest import write_config
from tests.listener import serving


def head(target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def padded_to(size: int, where: str) -> bytes:
    """A GET /metrics head of exactly `size` bytes, padded in the query string or in a header."""
    if where == "query":
        base = head("/metrics?x=", [("Connection", "close")])
        return head("/metrics?x=" + "a" * (size - len(base)), [("Connection", "close")])
    base = head("/metrics", [("Connection", "close"), ("X-Pad", "")])
    return head("/metrics", [("Connection", "close"), ("X-Pad", "b" * (size - len(base)))])


async def exchange(port: int, request: bytes, pieces: int = 1) -> tuple[int, bytes]:
    return await asyncio.to_thread(_exchange, port, request, pieces)


def _exchange(port: int, request: bytes, pieces: int) -> tuple[int, bytes]:
    """Send the head (whole, or trickled in pieces) on a plain socket; read the answer to EOF."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        step = -(-len(request) // pieces)
        try:
            for i in range(0, len(request), step):
                sock.sendall(request[i:i + step])
                if pieces > 1 and select.select([sock], [], [], 0.05)[0]:
                    break  # answered mid-head: sending more would only reset the connection
        except ConnectionError:
            pass  # refused mid-head: the answer is already on its way
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


@pytest.fixture
async def port(tmp_path: Path):
    reg = CollectorRegistry()
    Counter("watchtower_probe", "probe", registry=reg).inc()
    config = load_config(write_config(tmp_path))
    async with serving(build_app(reg, lambda: {"ok": True}), config) as (listen_port, _):
        yield listen_port


@pytest.mark.parametrize("where", ["query", "header"])
async def test_head_at_the_limit_is_served_one_byte_more_is_400(port, where):
    at_limit = padded_to(MAX_REQUEST_HEAD, where)
    assert len(at_limit) == MAX_REQUEST_HEAD
    status, body = await exchange(port, at_limit)
    assert status == 200 and b"watchtower_probe_total 1.0" in body

    status, body = await exchange(port, padded_to(MAX_REQUEST_HEAD + 1, where))
    assert status == 400
    error = json.loads(body)
    assert error == {"status": 400, "parameter": None,
                     "error": f"request line + headers are {MAX_REQUEST_HEAD + 1} bytes, at most {MAX_REQUEST_HEAD}"}


@pytest.mark.parametrize("size", [20_000, 70_000])
async def test_large_heads_in_one_piece_or_trickled_are_400(port, size):
    whole = padded_to(size, "query")
    assert (await exchange(port, whole))[0] == 400
    assert (await exchange(port, whole, pieces=8))[0] == 400  # still incomplete at 16 KiB: h11's own 400
    status, body = await exchange(port, padded_to(size, "header"))
    assert status == 400 and b"at most 16384" in body


async def test_the_listener_still_serves_after_refusing(port):
    assert (await exchange(port, padded_to(70_000, "header")))[0] == 400
    status, body = await exchange(port, head("/healthz", [("Connection", "close")]))
    assert status == 200 and json.loads(body) == {"ok": True}
