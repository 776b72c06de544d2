"""A target whose connection failed is not asked again for a while, and requests at once to a target not known
make one connection attempt, not one each (hub.hosthealth). Review: 1,000 targets that refused or never accepted,
16 hub requests at once: each host request cost the hub's event loop ~0.5-0.8 ms of CPU, so the answers came ~22-29 s
late against a 3 s hub.timeout, healthy hosts' included. Real sockets on loopback: refusing targets are closed ports,
the connection attempts counted where httpcore makes them (its AnyIO backend), every answer read."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator

import httpcore
import pytest

from hub import hosthealth
from hub.config import HubConfig
from hub.fanout import Fanout, make_client
from hub.targets import Target
from tests.hub.fakes import FakeHosts, Reply, running_hub, search_page, summary

REFUSED = "ConnectError: All connection attempts failed"
NOT_ASKED = re.compile(r"not asked: connecting to it failed \d+\.\ds ago \(ConnectError: All connection attempts "
                       r"failed\); asked again in \d+\.\ds")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[int]]:
    """Connection attempts per port, counted in httpcore's own connect (the real one runs)."""
    counted: Counter[int] = Counter()
    real = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self: object, host: str, port: int, *args: object, **kwargs: object) -> object:
        counted[port] += 1
        return await real(self, host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    yield counted


def _fanout(timeout: float = 2.0) -> Fanout:
    config = HubConfig.model_validate({"hub": {"targets": ["http://127.0.0.1:1"], "timeout": timeout}})
    return Fanout(make_client(config.hub), config.hub.timeout)


async def test_requests_at_once_try_a_dead_target_once_then_it_is_not_asked(attempts: Counter[int]):
    """8 requests at once over 5 refusing targets and a healthy one: one connection attempt per refusing target (the
    first request's), the 7 others told at once, without one of their own; the healthy host answers all 8."""
    ports = [_closed_port() for _ in range(5)]
    async with FakeHosts(lambda req: search_page([summary(id=1)])) as fleet:
        targets = [Target("alive", fleet.url("alive")), *(Target(f"dead{p}", f"http://127.0.0.1:{p}") for p in ports)]
        fanout = _fanout()
        try:
            rounds = await asyncio.gather(*(fanout.all(targets, "/api/v1/search", {}) for _ in range(8)))
            assert [p for p in ports if attempts[p] != 1] == []
            assert [[a.ok for a in answers][0] for answers in rounds] == [True] * 8
            assert len([r for r in fleet.requests if r.host == "alive"]) == 8
            for i, port in enumerate(ports, start=1):
                errors = Counter(NOT_ASKED.sub("not asked", answers[i].error or "") for answers in rounds)
                assert errors == {REFUSED: 1, "not asked": 7}, (port, errors)
            again = await fanout.all(targets, "/api/v1/search", {})  # within DOWN_FOR: no new attempt
            assert [p for p in ports if attempts[p] != 1] == []
            assert all(NOT_ASKED.fullmatch(a.error or "") for a in again[1:]), [a.error for a in again]
            assert again[0].ok
        finally:
            await fanout.aclose()


async def test_a_dead_target_is_tried_again_after_hub_timeout(attempts: Counter[int]):
    """Past its hub.timeout (0.3s here) one request tries it again (a daemon restarted is asked again), and a target
    that now listens answers."""
    port = _closed_port()
    target = Target("back", f"http://127.0.0.1:{port}")
    fanout = _fanout(timeout=0.3)
    assert isinstance(fanout.health, hosthealth.HostHealth) and fanout.health.down_for == 0.3
    try:
        first = await fanout.one(target, "/api/v1/search", {})
        skipped = await fanout.one(target, "/api/v1/search", {})
        assert (first.error, attempts[port]) == (REFUSED, 1)
        assert NOT_ASKED.fullmatch(skipped.error or ""), skipped.error
        await asyncio.sleep(0.35)
        answers = Counter()
        server = await asyncio.start_server(_one_page, "127.0.0.1", port)
        try:
            for ans in await asyncio.gather(*(fanout.one(target, "/api/v1/search", {}) for _ in range(4))):
                answers[ans.error or "ok"] += 1
        finally:
            server.close()
        assert answers == {"ok": 4}
        assert attempts[port] == 5  # the probe's, then each request's own (the fake closes every connection)
    finally:
        await fanout.aclose()


async def _one_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = b'{"items": [], "next_cursor": null, "limit": 50, "scan_limited": false}'
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def test_a_healthy_fleet_asked_by_many_requests_at_once_answers_every_one(attempts: Counter[int]):
    """The cap tried before (a FIFO of host requests) left a healthy fleet's later requests `not asked`: here only a
    first connection is waited for. 20 hosts x 16 requests at once from a fresh hub: all 320 answered."""
    page = search_page([summary(id=1)])
    async with FakeHosts(lambda req: Reply(body=page.body, delay=0.05)) as fleet:
        targets = [Target(f"h{i}", fleet.url(f"h{i}")) for i in range(20)]
        fanout = _fanout()
        try:
            rounds = await asyncio.gather(*(fanout.all(targets, "/api/v1/search", {}) for _ in range(16)))
        finally:
            await fanout.aclose()
    assert Counter(a.error or "ok" for answers in rounds for a in answers) == {"ok": 320}
    assert Counter(r.host for r in fleet.requests) == {f"h{i}": 16 for i in range(20)}


async def test_a_probe_cut_short_lets_the_others_go_on(attempts: Counter[int]):
    """The first request's budget ends before its connection is made (a caller's deadline): the requests waiting on
    it go on, one of them trying next, and all of them answer."""
    async with FakeHosts(lambda req: search_page([summary(id=1)])) as fleet:
        target = Target("h", fleet.url("h"))
        fanout = _fanout()
        try:
            cut = asyncio.ensure_future(fanout.one(target, "/api/v1/search", {}, time.monotonic() + 0.0005))
            await asyncio.sleep(0)
            others = await asyncio.gather(*(fanout.one(target, "/api/v1/search", {}) for _ in range(5)))
            await cut
        finally:
            await fanout.aclose()
    assert [a.error for a in others] == [None] * 5


async def test_the_hub_says_why_a_dead_target_is_missing():
    """Through the hub's own API: the second request's missing host says it was not asked, and why."""
    port = _closed_port()
    async with FakeHosts(lambda req: search_page([summary(id=1)])) as fleet:
        async with running_hub({"targets": [{"url": fleet.url("alive"), "name": "alive"},
                                            {"url": f"http://127.0.0.1:{port}", "name": "dead"}]}) as hub:
            first = (await hub.get("/api/v1/search")).json()
            second = (await hub.get("/api/v1/search")).json()
    assert [(m["host"], m["error"]) for m in first["missing_hosts"]] == [("dead", REFUSED)]
    [(host, error)] = [(m["host"], m["error"]) for m in second["missing_hosts"]]
    assert host == "dead" and NOT_ASKED.fullmatch(error), error
    assert len(second["items"]) == 1
