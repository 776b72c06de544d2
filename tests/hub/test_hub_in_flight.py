"""The hub's host requests in flight are bounded across all its requests (hub.fanout.MAX_HOST_REQUESTS): nothing
capped them but web.api_max_concurrency x targets, and each costs the hub's event loop ~1.3 ms of CPU (review: 1,000
targets accepting no connection, 16 hub requests at once: answers of ~29 s against a 3 s hub.timeout, a healthy host
among them reported timed out, /healthz slow). A host request that gets no slot within its share of its budget is not
sent: that host is missing, saying so. Fake daemons and the hub on loopback, in the test's own event loop; the limit
is made 4, against 10 hosts that never answer and one that does."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hub import fanout
from hub.fanout import Fanout, HostSlots
from hub.targets import Target
from tests.hub import fakes
from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary

TIMEOUT = 1.0
LIMIT = 4
HUNG = [f"hung{i}" for i in range(10)]
NOT_ASKED = ("not asked: the hub had 4 host requests in flight (its limit) for the 0.5s this host could wait, "
             "50% of its 1s budget")
TIMED_OUT = "timed out after 1s"


def _daemon(req: Request) -> Reply:
    return Reply(hang=True) if req.host.startswith("hung") else search_page([summary(id=1)])


class CountingHosts(FakeHosts):
    """FakeHosts that counts the requests open at once, the most in `most`: one that is answered from its arrival to
    its answer written (before the hub can read it), a hung one until the hub closes its connection, as the kernel
    tells (a peek at a copy of its socket when the next request comes: never late by a turn of the event loop)."""

    def __init__(self) -> None:
        super().__init__(_daemon)
        self.most = 0
        self.answering = 0
        self.hung: list[socket.socket] = []
        self._readers: dict[Any, asyncio.StreamReader] = {}

    def open_now(self) -> int:
        for sock in [s for s in self.hung if _closed(s)]:
            self.hung.remove(sock)
            sock.close()
        return len(self.hung) + self.answering

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._readers[writer] = reader
        try:
            await super()._serve(reader, writer)
        finally:
            self._readers.pop(writer, None)

    async def _answer(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        self.most = max(self.most, self.open_now() + 1)
        if not reply.hang:
            self.answering += 1
            try:
                return await super()._answer(writer, reply)
            finally:
                self.answering -= 1
        raw = writer.get_extra_info("socket")
        sock = socket.fromfd(raw.fileno(), raw.family, raw.type)
        self.hung.append(sock)
        await self._readers[writer].read()  # until the hub closes the connection (or the fleet ends)

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        for sock in self.hung:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def hubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The limit made LIMIT; the hubs `running_hub` builds, kept (their fan-out's slots are looked at)."""
    monkeypatch.setattr(fanout, "MAX_HOST_REQUESTS", LIMIT)
    built: list[Any] = []
    build = fakes.build_hub_app

    def keep(config: Any) -> Any:
        app, hub = build(config)
        built.append(hub)
        return app, hub

    monkeypatch.setattr(fakes, "build_hub_app", keep)
    yield built


def _targets(fleet: FakeHosts) -> list[dict[str, str]]:
    return [{"url": fleet.url(h), "name": h} for h in ("alive", *HUNG)]


def _missing(answer: httpx.Response) -> list[tuple[str, str]]:
    return [(m["host"], m["error"]) for m in answer.json()["missing_hosts"]]


def _free(hub: Any) -> tuple[int, int]:
    return hub.fanout.slots.busy, hub.fanout.slots.waiting


async def test_hosts_past_the_limit_are_not_asked_and_say_why(hubs: list[Any]):
    """One hub request: `alive`, hung0-2 take the four slots; alive's answer hands its slot to hung3; hung4-9 wait half
    their budget (the four slots stay held by hosts that never answer) and are not sent."""
    async with CountingHosts() as fleet, running_hub({"timeout": TIMEOUT, "targets": _targets(fleet)}) as hub:
        answer = await asyncio.wait_for(hub.get("/api/v1/search"), 3 * TIMEOUT)
        free = _free(hubs[0])
    assert fleet.most == LIMIT
    assert (answer.status_code, answer.json()["partial"], len(answer.json()["items"])) == (200, True, 1)
    assert _missing(answer) == [(h, TIMED_OUT) for h in HUNG[:4]] + [(h, NOT_ASKED) for h in HUNG[4:]]
    assert sorted(r.host for r in fleet.requests) == ["alive", "hung0", "hung1", "hung2", "hung3"]
    assert free == (0, 0)


async def test_hub_requests_at_once_never_have_more_host_requests_in_flight_than_the_limit(hubs: list[Any]):
    """Six hub requests at once (66 host requests): the daemons never see more than four at once; the healthy host
    is in every answer or missing as not asked, never timed out; a hung host is timed out exactly as often as it was
    asked, else not asked; /healthz answers while every slot is held and requests wait for one."""
    async with CountingHosts() as fleet, running_hub({"timeout": TIMEOUT, "targets": _targets(fleet)},
                                                     web={"api_max_concurrency": 8}) as hub:
        asks = [asyncio.create_task(hub.get("/api/v1/search")) for _ in range(6)]
        while _free(hubs[0])[1] == 0:
            await asyncio.sleep(0.01)
        health = await hub.get("/healthz")
        full = _free(hubs[0])
        answers = await asyncio.wait_for(asyncio.gather(*asks), 3 * TIMEOUT)
        free = _free(hubs[0])
    assert fleet.most == LIMIT
    assert health.status_code == 200 and full[0] == LIMIT and full[1] > 0
    reasons: Counter[tuple[str, str]] = Counter()
    for answer in answers:
        assert answer.status_code in (200, 503), answer.text
        assert answer.json()["hosts"] == ["alive", *HUNG]
        missing = dict(_missing(answer))
        assert missing.get("alive", NOT_ASKED) == NOT_ASKED
        assert set(missing) >= set(HUNG)
        reasons.update((h, why) for h, why in missing.items())
    present = sum("alive" not in dict(_missing(a)) for a in answers)
    assert present >= 1 and {why for _, why in reasons} <= {TIMED_OUT, NOT_ASKED}
    asked = Counter(r.host for r in fleet.requests)
    assert asked == Counter({"alive": present, **{h: reasons[(h, TIMED_OUT)] for h in HUNG if reasons[(h, TIMED_OUT)]}})
    assert free == (0, 0)


async def test_a_client_that_leaves_frees_every_slot(hubs: list[Any]):
    """Clients gone while their requests hold and wait for slots: every slot is free again within the budget, and the
    next request asks the healthy host."""
    async with CountingHosts() as fleet, running_hub({"timeout": TIMEOUT, "targets": _targets(fleet)},
                                                     web={"api_max_concurrency": 8}) as hub:
        asks = [asyncio.create_task(hub.get("/api/v1/search")) for _ in range(3)]
        while _free(hubs[0])[1] == 0:
            await asyncio.sleep(0.01)
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
        for _ in range(int(3 * TIMEOUT / 0.01)):
            if _free(hubs[0]) == (0, 0):
                break
            await asyncio.sleep(0.01)
        free = _free(hubs[0])
        after = await hub.get("/api/v1/search")
    assert free == (0, 0)
    assert after.status_code == 200 and "alive" not in dict(_missing(after))
    assert fleet.most == LIMIT


async def test_a_cancelled_fan_out_gives_back_its_slots_at_once():
    """The hub request's task cancelled (its client gone) while host requests hold slots and others wait: no slot
    stays held, no waiter stays queued."""
    started = asyncio.Event()

    async def never(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    out = Fanout(httpx.AsyncClient(transport=httpx.MockTransport(never)), 10.0)
    out.slots = HostSlots(2)
    targets = [Target(url=f"http://h{i}", name=f"h{i}") for i in range(5)]
    task = asyncio.create_task(out.all(targets, "/api/v1/search", {}))
    await started.wait()
    assert (out.slots.busy, out.slots.waiting) == (2, 3)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (out.slots.busy, out.slots.waiting) == (0, 0)
    await out.aclose()


async def test_slots_are_handed_out_first_come_first_served():
    slots = HostSlots(1)
    assert await slots.acquire(0.0) is True
    assert await slots.acquire(0.0) is False  # none free, no wait
    got: list[str] = []

    async def wait(name: str, timeout: float) -> None:
        if await slots.acquire(timeout):
            got.append(name)

    late = asyncio.create_task(wait("gives up", 0.01))
    first, second = asyncio.create_task(wait("first", 5)), asyncio.create_task(wait("second", 5))
    gone = asyncio.create_task(wait("cancelled", 5))
    await asyncio.sleep(0.05)
    gone.cancel()
    await asyncio.sleep(0)
    assert late.done() and (slots.busy, slots.waiting) == (1, 2)
    slots.release()
    await first
    assert got == ["first"] and (slots.busy, slots.waiting) == (1, 1)
    slots.release()
    await second
    slots.release()
    assert got == ["first", "second"] and (slots.busy, slots.waiting) == (0, 0)
