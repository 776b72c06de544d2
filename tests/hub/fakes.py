"""Fake daemons and a hub, all on loopback in the test's own event loop: real HTTP both ways, without processes.

`FakeHosts` is one asyncio listener serving many hosts (`/<host>/api/v1/...`, as many daemons behind one port);
each answer is chosen by a function of the request and written raw, so a test can send what no daemon would (a
gzip bomb, a 404 from a listener without /api/v1, a body that never ends). `running_hub` serves a hub on a free
port with the listener `watchtower hub` uses (its request-head limit included).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import socket
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from exporter.config import ConfigError
from exporter.http import make_server
from hub.app import build_hub_app
from hub.config import HubConfig, load_hub_config
from tests.conftest import free_port

EMPTY_SEARCH = {"items": [], "next_cursor": None, "limit": 50, "scan_limited": False}


def summary(**kw: Any) -> dict[str, Any]:
    """A daemon's search item (TimelineSummary)."""
    item = {"id": 1, "message_id": "m@x.example", "job_id": "j", "rcpt": "u@x.example", "rcpt_hashed": False,
            "rcpt_domain": "x.example", "orig": None, "sender_domain": None, "vmta": "v", "vmta_pool": None,
            "queue": None, "isp": None, "outcome": "delivered", "attempts": 1, "first_seen": "2026-01-01T00:00:00Z",
            "last_seen": None, "queued_at": None, "done_at": None, "complained": False, "remote_bounced": False}
    return {**item, **kw}


def timeline(**kw: Any) -> dict[str, Any]:
    """A daemon's timeline: a summary with its events."""
    return {**summary(**kw), "events": [{"time": "2026-01-01T00:00:00Z", "ts": 1767225600.0, "kind": "delivered",
                                         "record_type": "d"}], "queue_events_omitted": 0}


class ThreeItemFleet:
    """A fleet in memory (`one` as hub.fanout's): each host has 3 items, the higher its number the newer, and the
    message m@x with 3 recipients; a page of `limit` from `cursor` (a number)."""

    timeout = 5.0

    def __init__(self, targets: list[Any]) -> None:
        self.pos = {t.url: i for i, t in enumerate(targets)}

    async def one(self, t: Any, path: str, params: dict[str, Any], deadline: float | None = None) -> Any:
        from hub.fanout import HostAnswer

        i = self.pos[t.url]
        start, lim = int(params.get("cursor", 0)), int(params["limit"])
        nxt = str(start + lim) if start + lim < 3 else None
        if path.startswith("/api/v1/messages/"):
            rows = [timeline(id=k) for k in range(1, 4)]
            return HostAnswer(t, 200, {"message_id": "m@x", "recipients_total": 3, "truncated": nxt is not None,
                                       "next_cursor": nxt, "recipients": rows[start:start + lim]})
        rows = [summary(id=k, first_seen=f"2026-01-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}."
                                         f"{9 - k}Z") for k in range(1, 4)]
        return HostAnswer(t, 200, {"items": rows[start:start + lim], "next_cursor": nxt, "limit": lim,
                                   "scan_limited": False})


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """JSON-encoded, unless `raw` is given."""
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    gzip: bool = False
    hang: bool = False
    """Read the request, then send nothing (until the test ends)."""
    drip: float = 0.0
    """Seconds between bytes of the body (after the head)."""
    delay: float = 0.0
    """Seconds before the head is sent (a slow daemon that does answer)."""


@dataclass(frozen=True)
class Request:
    host: str
    path: str
    params: dict[str, str]
    """The query string's fields and a POSTed form's (as a daemon answers a form: its GET, exporter.formquery)."""
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    target: str = ""
    """The request line's target as sent (what a reverse proxy in front of the daemon logs)."""


Handler = Callable[[Request], Reply]


class FakeHosts:
    """Many fake daemons behind one loopback port: host `h` is `url(h)` (or one host, "", at the port's root, as
    file_sd and Prometheus name daemons); every request is kept in `requests`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, host: str) -> str:
        return f"http://127.0.0.1:{self.port}/{host}"

    async def __aenter__(self) -> FakeHosts:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await asyncio.sleep(0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *fields = head.decode("latin-1").split("\r\n")
            parts = urlsplit(line.split(" ")[1])
            host, _, path = parts.path.lstrip("/").partition("/")
            if host == "api":  # a daemon's own URL, without a path: one host behind this port
                host, path = "", parts.path.lstrip("/")
            headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
            params = dict(parse_qsl(parts.query))
            if line.startswith("POST ") and headers.get("content-length", "0").isdigit():
                form = await reader.readexactly(int(headers.get("content-length", "0")))
                params.update(parse_qsl(form.decode("latin-1")))
            req = Request(unquote(host), "/" + path, params, headers, line.split(" ")[0], line.split(" ")[1])
            self.requests.append(req)
            await self._answer(writer, self.handler(req))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.hang:
            await asyncio.sleep(3600)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        headers = {"content-type": "application/json", **reply.headers}
        if reply.gzip:
            body = gzip.compress(body, 9)
            headers["content-encoding"] = "gzip"
        headers.update({"content-length": str(len(body)), "connection": "close"})
        head = f"HTTP/1.1 {reply.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode())
        if not reply.drip:
            writer.write(body)
            await writer.drain()
            return
        for i in range(len(body)):
            writer.write(body[i:i + 1])
            await writer.drain()
            await asyncio.sleep(reply.drip)


@asynccontextmanager
async def running_hub(hub: dict[str, Any], **top: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A hub served on a free loopback port (as `watchtower hub` serves it) and a client for it."""
    config = HubConfig.model_validate({"listen": f"127.0.0.1:{free_port()}", "hub": hub, **top})
    app, state = build_hub_app(config)
    server = make_server(app, config)  # type: ignore[arg-type]  # same listen/web attributes as Config
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the hub did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://{config.listen}", timeout=60, trust_env=False,
                                     limits=httpx.Limits(max_connections=100)) as client:
            yield client
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await state.aclose()


def search_page(items: list[dict[str, Any]], next_cursor: str | None = None) -> Reply:
    return Reply(body={"items": items, "next_cursor": next_cursor, "limit": 50, "scan_limited": False})


def cursor_text(cursor: str) -> str:
    """What a hub cursor holds, as text: base64 of JSON, or of a format byte and deflated JSON."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    if raw[:1] in (b"{", b"["):
        return raw.decode()
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw[1:]).decode()


def startup_problems(path: Path) -> list[str]:
    """What `watchtower hub` lists before it exits 2 (the config's problems, else its start-up checks'), without
    ever serving: main() on a config it accepts would serve forever."""
    from hub import preflight

    try:
        config = load_hub_config(path)
    except ConfigError as exc:
        return exc.problems
    return preflight.problems(config)


HUNG = "hung.invalid"
"""A name whose lookup never answers (until the test's end) under `fake_dns`."""
DEAD = "dead.invalid"
"""A name whose lookup fails at once under `fake_dns`."""
HUNG_FOR = 30.0
"""Longest a lookup of HUNG holds its thread (the test's end releases it sooner)."""


DEFAULT_THREADS = 4
"""Threads of the small default executor (asyncio makes min(32, CPUs + 4): a 2-CPU machine's less a couple)."""


def small_default_executor() -> None:
    """The running loop's default executor made DEFAULT_THREADS threads: few enough for a hung resolver to fill."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(DEFAULT_THREADS, thread_name_prefix="test-default"))


@dataclass
class FakeDns:
    asked: list[str] = field(default_factory=list)
    """Every name getaddrinfo was called with, in order (any thread)."""
    release: threading.Event = field(default_factory=threading.Event)
    answers: dict[str, str] = field(default_factory=dict)
    """Names answered with an address of the test's choice (no real lookup)."""

    def count(self, name: str) -> int:
        return self.asked.count(name)


@contextlib.contextmanager
def fake_dns(monkeypatch: Any) -> Iterator[FakeDns]:
    """socket.getaddrinfo that never answers for HUNG (until the block's end), fails at once for DEAD, answers
    `answers` itself and passes every other name to the real one."""
    fake, real, lock = FakeDns(), socket.getaddrinfo, threading.Lock()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        with lock:
            fake.asked.append(name)
        if name == HUNG:
            fake.release.wait(HUNG_FOR)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name == DEAD:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if name in fake.answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (fake.answers[name], int(port or 0)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield fake
    finally:
        fake.release.set()  # no lookup thread stays blocked past the test
