"""A lookup sent as a form keeps the address out of the request line; a request framed two ways is refused.

Over TCP to the real listener (the daemon's `make_server`): what a reverse proxy logs is the request line, and
what it frames is Content-Length or Transfer-Encoding; an in-process transport shows neither.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter import formquery
from exporter.config import CorrelatorConfig, load_config
from exporter.http import MAX_REQUEST_HEAD, build_app
from tests.conftest import write_config
from tests.listener import serving
from tests.test_correlator_support import CORPUS, Harness
from tests.test_http_wire import big_registry, raw_exchange


@pytest.fixture
def h(tmp_path: Path) -> Any:
    harness = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=tmp_path / "hmac.key"))
    for b in CORPUS:
        harness.commit(b)
    yield harness
    harness.close()


FORM = {"content-type": "application/x-www-form-urlencoded"}


async def test_a_form_posted_to_a_lookup_answers_as_its_get(tmp_path: Path, h: Harness) -> None:
    """Every route was GET only: a lookup by recipient put the address in the request line (nginx logs it, a
    browser keeps it in its history). POSTed as a form (`curl --data-urlencode rcpt=...`), it answers the same."""
    app = build_app(big_registry(10), lambda: {"ok": True}, [h.sink.asgi_routes()])
    async with serving(app, load_config(write_config(tmp_path))) as (port, _):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for path, params in (("/api/v1/search", {"rcpt": "alice@gmail.com", "since": "3650d"}),
                                 ("/api/v1/timeline", {"rcpt": "bob@yahoo.com", "job_id": "J1"}),
                                 ("/api/v1/lookup", {"rcpt": "bob@yahoo.com", "job_id": "J1"}),
                                 ("/api/v1/search", {"rcpt": "alice@gmail.com", "since": "3650d", "format": "text"})):
                got = await c.get(path, params=params)
                posted = await c.post(path, data=params)
                assert got.status_code == 200 and (posted.status_code, posted.text) == (200, got.text), path
                assert "alice@" not in posted.text and "bob@" not in posted.text
            # the form's fields join the query string's; the body's value wins a field given in both
            posted = await c.post("/api/v1/search?limit=1&rcpt=nobody@x.org", data={"rcpt": "alice@gmail.com",
                                                                                 "since": "3650d"})
            assert posted.status_code == 200 and posted.json()["limit"] == 1 and posted.json()["items"], posted.text
            # a POST that is no form is told what the route takes (tests/test_http_form_allow.py)
            r = await c.post("/api/v1/search", content=b'{"rcpt": "alice@gmail.com"}',
                             headers={"content-type": "application/json"})
            assert (r.status_code, r.headers["accept-post"]) == (415, "application/x-www-form-urlencoded")
            r = await c.post("/metrics", data={"name[]": "x"})
            assert r.status_code == 405


async def test_a_form_is_bounded_by_the_request_head_limit_and_a_time_limit(tmp_path: Path, h: Harness,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formquery, "READ_SECONDS", 1.0)
    app = build_app(big_registry(10), lambda: {"ok": True}, [h.sink.asgi_routes()])
    async with serving(app, load_config(write_config(tmp_path))) as (port, _):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            r = await c.post("/api/v1/search", data={"rcpt": "a" * MAX_REQUEST_HEAD + "@gmail.com"})
            assert r.status_code == 413 and r.json()["error"] == (
                f"form body too large: the request it makes is at most {MAX_REQUEST_HEAD} bytes")
            assert r.headers["connection"] == "close"
        answer = await asyncio.to_thread(_trickled, port)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"form body not received within 1 s" in answer


def _trickled(port: int, to_eof: bool = True) -> bytes:
    """The answer to a form whose body stops short of its Content-Length (94 bytes never sent), read to EOF (or to
    the end of its head)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /api/v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded"
                     b"\r\nContent-Length: 100\r\n\r\nrcpt=a")
        answer = b""
        while (to_eof or b"\r\n\r\n" not in answer) and (chunk := sock.recv(65536)):
            answer += chunk
    return answer


async def test_a_request_with_both_content_length_and_transfer_encoding_is_refused_and_closed(
        tmp_path: Path, h: Harness) -> None:
    """Both were accepted and a request pipelined after was served on the same connection: behind a proxy that frames
    by the other header, a request smuggled past it (RFC 9112 §6.1: the server MUST close the connection)."""
    app = build_app(big_registry(10), lambda: {"ok": True}, [h.sink.asgi_routes()])
    async with serving(app, load_config(write_config(tmp_path))) as (port, _):
        status, headers, body = await asyncio.to_thread(raw_exchange, port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                                                        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                                                        b"GET /api/v1/flows HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status.startswith("HTTP/1.1 400 ") and headers.get("connection") == "close", (status, headers)
    assert body.count(b"HTTP/1.1") == 0 and b"Transfer-Encoding" in body  # one answer, the refusal


async def test_a_form_without_credentials_is_refused_before_its_body_is_read(tmp_path: Path, h: Harness) -> None:
    """The form was read before basic auth: a client without credentials that trickled its body held the
    connection until the read's time limit and got a 408, not the 401 (regression review 2026-12-06)."""
    import bcrypt

    users = {"ops": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()}
    app = build_app(big_registry(10), lambda: {"ok": True}, [h.sink.asgi_routes()], basic_auth_users=users)
    async with serving(app, load_config(write_config(tmp_path))) as (port, _):
        answer = await asyncio.to_thread(_trickled, port, False)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, auth=("ops", "s3cret")) as c:
            posted = await c.post("/api/v1/search", data={"rcpt": "alice@gmail.com", "since": "3650d"})
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert posted.status_code == 200 and posted.json()["items"]
