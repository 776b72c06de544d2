"""Host names of targets are resolved by the hub's own resolver (hub.resolver), never in asyncio's default executor:
a target whose DNS hangs held a thread of that executor per request, and once they were all held every other target
named by host name timed out too (review: one such target among three named `localhost`, six requests every 0.5 s,
2 s `hub.timeout`: from the second wave on every answer was a 503 naming all four hosts missing). Fake daemons and
the hub on loopback, in the test's own event loop; socket.getaddrinfo is wrapped to hang or fail for some names."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpcore
import pytest

from hub.resolver import LookupFailed, LookupTimeout, Resolver, ResolvingBackend
from tests.hub.fakes import (
    DEAD,
    HUNG,
    HUNG_FOR,
    FakeDns,
    FakeHosts,
    Reply,
    Request,
    running_hub,
    search_page,
    small_default_executor,
    summary,
)

TIMEOUT = 1.0


def _daemon(req: Request) -> Reply:
    return search_page([summary(id=1)])


REPRO_TIMEOUT = 2.0
"""The review's hub.timeout: 1 s left the first wave's healthy hosts timed out on a loaded machine (fresh-clone suite,
three workers beside the e2e servers), the hub's first connections made within it."""


def _by_name(fleet: FakeHosts, host: str) -> str:
    """The URL of fake daemon `host`, its address named `localhost`."""
    return fleet.url(host).replace("127.0.0.1", "localhost")


def _missing(answer: Any) -> list[tuple[str, str]]:
    return [(m["host"], m["error"]) for m in answer.json()["missing_hosts"]]


async def test_a_target_whose_dns_hangs_never_makes_the_targets_named_by_host_name_missing(dns: FakeDns):
    """The review's repro: one hung name among three named `localhost`, waves of six requests every 0.5 s. Each
    wave answers with the three healthy hosts and only the hung one missing; the hung name is asked once (one
    lookup in flight, shared by every request: it holds one thread)."""
    small_default_executor()
    try:
        async with FakeHosts(_daemon) as fleet, running_hub({"timeout": REPRO_TIMEOUT, "targets": [
                *({"url": _by_name(fleet, h), "name": h} for h in ("a", "b", "c")), f"http://{HUNG}:9469"]}) as hub:
            waves = []
            for _ in range(4):
                waves.append(asyncio.gather(*(hub.get("/api/v1/search") for _ in range(6))))
                await asyncio.sleep(0.5)
            answers = await asyncio.wait_for(asyncio.gather(*waves), 10 * REPRO_TIMEOUT)
    finally:
        dns.release.set()  # before the loop's end waits for its default executor's threads
    for wave in answers:
        assert [(r.status_code, r.json()["hosts"], [h for h, _ in _missing(r)]) for r in wave] == [
            (200, ["a", "b", "c", f"{HUNG}:9469"], [f"{HUNG}:9469"])] * 6
    assert dns.count(HUNG) == 1


async def test_a_name_is_asked_once_within_its_time_to_live(dns: FakeDns):
    """Every request opens a connection (the daemon closes it): the second lookup of `localhost` is the cache's."""
    async with FakeHosts(_daemon) as fleet, running_hub({"timeout": TIMEOUT, "targets": [_by_name(fleet, "a")]}) as hub:
        first, second = [await hub.get("/api/v1/search") for _ in range(2)]
    assert [(first.status_code, _missing(first)), (second.status_code, _missing(second))] == [(200, [])] * 2
    assert len(fleet.requests) == 2 and dns.count("localhost") == 1


async def test_a_name_that_does_not_resolve_is_a_missing_host_saying_so_and_is_not_asked_again_at_once(dns: FakeDns):
    async with FakeHosts(_daemon) as fleet, running_hub({"timeout": TIMEOUT, "targets": [
            {"url": fleet.url("a"), "name": "a"}, f"http://{DEAD}:9469"]}) as hub:
        answers = [await hub.get("/api/v1/search") for _ in range(2)]
    why = f"ConnectError: could not resolve {DEAD}: [Errno {socket.EAI_NONAME}] Name or service not known"
    assert [(r.status_code, _missing(r)) for r in answers] == [(200, [(f"{DEAD}:9469", why)])] * 2
    assert dns.count(DEAD) == 1


async def test_a_target_addressed_by_ip_asks_no_resolver(dns: FakeDns):
    async with FakeHosts(_daemon) as fleet, running_hub({"timeout": TIMEOUT, "targets": [
            {"url": fleet.url("a"), "name": "a"}, {"url": f"http://[::1]:{fleet.port}", "name": "v6"}]}) as hub:
        dns.asked.clear()  # (the hub's own listen address, checked at start)
        answer = await hub.get("/api/v1/search")
    assert (answer.status_code, [h for h, _ in _missing(answer)]) == (200, ["v6"])  # (the fleet listens on v4 only)
    assert dns.asked == []


async def test_the_daemon_sees_the_host_name_it_is_named_by_not_its_address(dns: FakeDns):
    """The resolver connects to the address; the request (its Host header, and TLS's SNI and certificate check,
    which httpcore takes from the request's URL) keeps the target's name."""
    async with FakeHosts(_daemon) as fleet, running_hub({"timeout": TIMEOUT, "targets": [_by_name(fleet, "a")]}) as hub:
        assert (await hub.get("/api/v1/search")).status_code == 200
    assert [r.headers["host"] for r in fleet.requests] == [f"localhost:{fleet.port}"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_lookups_of_one_name_share_one_thread(dns: FakeDns):
    resolver = Resolver(threads=4)
    waits = [asyncio.create_task(resolver.resolve(HUNG, 80, 0.5)) for _ in range(10)]
    done = await asyncio.gather(*waits, return_exceptions=True)
    assert [type(e) for e in done] == [LookupTimeout] * 10
    assert str(done[0]) == f"could not resolve {HUNG} within 0.5s"
    assert dns.count(HUNG) == 1 and resolver.busy() == 1
    dns.release.set()  # the waiters that gave up did not cancel the lookup they shared: it ends, and is cached
    with pytest.raises(LookupFailed) as failed:
        await resolver.resolve(HUNG, 80, 5.0)
    assert str(failed.value) == f"could not resolve {HUNG}: [Errno {socket.EAI_AGAIN}] Temporary failure in name resolution"
    assert dns.count(HUNG) == 1


async def test_a_name_is_asked_again_once_its_answer_or_failure_expires(dns: FakeDns):
    clock = Clock()
    dns.answers["one.test"] = "192.0.2.1"
    resolver = Resolver(ttl=30.0, negative_ttl=3.0, clock=clock)
    for _ in range(2):
        assert await resolver.resolve("one.test", 80, 1.0) == ["192.0.2.1"]
        with pytest.raises(LookupFailed, match=f"^could not resolve {DEAD}: "):
            await resolver.resolve(DEAD, 80, 1.0)
    clock.now += 3.5
    with pytest.raises(LookupFailed):
        await resolver.resolve(DEAD, 80, 1.0)
    assert await resolver.resolve("one.test", 80, 1.0) == ["192.0.2.1"]
    assert (dns.count("one.test"), dns.count(DEAD)) == (1, 2)
    clock.now += 30.0
    assert await resolver.resolve("one.test", 80, 1.0) == ["192.0.2.1"]
    assert dns.count("one.test") == 2


async def test_the_cache_keeps_the_latest_names_only(dns: FakeDns):
    dns.answers.update({"a.test": "192.0.2.1", "b.test": "192.0.2.2", "c.test": "192.0.2.3"})
    resolver = Resolver(size=2)
    for name in ("a.test", "b.test", "c.test", "b.test", "c.test", "a.test"):
        await resolver.resolve(name, 80, 1.0)
    assert dns.asked == ["a.test", "b.test", "c.test", "a.test"]


async def test_when_every_lookup_thread_is_held_a_new_name_waits_its_timeout_then_runs_when_one_frees(dns: FakeDns):
    """A lookup past the threads waits for one (a burst of many targets at a hub's start resolves in milliseconds),
    never longer than its caller's timeout, saying why."""
    dns.answers["ok.test"] = "192.0.2.7"
    resolver = Resolver(threads=1)
    hung = asyncio.create_task(resolver.resolve(HUNG, 80, HUNG_FOR))
    while dns.count(HUNG) == 0:
        await asyncio.sleep(0.01)
    with pytest.raises(LookupTimeout) as held:
        await resolver.resolve("ok.test", 80, 0.3)
    assert str(held.value) == "could not resolve ok.test within 0.3s (all 1 lookup threads busy with other names)"
    assert dns.asked == [HUNG]
    dns.release.set()
    with pytest.raises(LookupFailed):
        await hung
    assert await resolver.resolve("ok.test", 80, 5.0) == ["192.0.2.7"]
    assert dns.asked == [HUNG, "ok.test"]


class Inner(httpcore.AsyncNetworkBackend):
    """A network backend that connects nowhere: refuses the addresses in `refuse`, else gives `stream` (an empty
    one), and records the addresses it was asked."""

    def __init__(self, refuse: tuple[str, ...] = (), stream: httpcore.AsyncNetworkStream | None = None) -> None:
        self.refuse, self.stream, self.asked = refuse, stream, []  # type: list[str]

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        self.asked.append(host)
        if host in self.refuse:
            raise httpcore.ConnectError(f"[Errno 111] Connection refused ({host})")
        return self.stream or httpcore.AsyncMockStream([])


@pytest.mark.parametrize(("host", "connected"), [
    ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1"), ("[fe80::1%2]", "fe80::1%2")])
async def test_an_ip_literal_is_connected_to_as_it_is(dns: FakeDns, host: str, connected: str):
    inner = Inner()
    await ResolvingBackend(Resolver(), inner).connect_tcp(host, 80, timeout=1.0)
    assert (inner.asked, dns.asked) == ([connected], [])


async def test_the_next_address_is_tried_when_one_refuses(dns: FakeDns, monkeypatch: pytest.MonkeyPatch):
    resolver = Resolver()

    async def two(host: str, port: int, timeout: float | None) -> list[str]:
        return ["2001:db8::1", "192.0.2.1"]

    monkeypatch.setattr(resolver, "resolve", two)
    inner = Inner(refuse=("2001:db8::1",))
    await ResolvingBackend(resolver, inner).connect_tcp("two.test", 80, timeout=1.0)
    assert inner.asked == ["2001:db8::1", "192.0.2.1"]
    inner = Inner(refuse=("2001:db8::1", "192.0.2.1"))
    with pytest.raises(httpcore.ConnectError, match=r"^\[Errno 111\] Connection refused \(192\.0\.2\.1\)$"):
        await ResolvingBackend(resolver, inner).connect_tcp("two.test", 80, timeout=1.0)
    assert inner.asked == ["2001:db8::1", "192.0.2.1"]


async def test_an_address_that_connects_after_one_failed_is_tried_first_from_then_on(dns: FakeDns):
    """`localhost` as ::1 then 127.0.0.1 where the daemon listens on IPv4 only and IPv6 drops SYNs: each new connection
    waited half its timeout on ::1 (review); the address that connected goes first while the answer is cached."""
    dns.answers["two.test"] = "192.0.2.1"
    resolver = Resolver()
    assert await resolver.resolve("two.test", 80, 1.0) == ["192.0.2.1"]
    key = ("two.test", 80)
    expires = resolver._cache[key][0]
    resolver._cache[key] = (expires, ["2001:db8::1", "192.0.2.1", "192.0.2.2"])  # as a dual-stack name answers
    inner = Inner(refuse=("2001:db8::1",))
    backend = ResolvingBackend(resolver, inner)
    await backend.connect_tcp("two.test", 80, timeout=1.0)
    await backend.connect_tcp("two.test", 80, timeout=1.0)
    assert inner.asked == ["2001:db8::1", "192.0.2.1", "192.0.2.1"]
    assert resolver._cache[key] == (expires, ["192.0.2.1", "2001:db8::1", "192.0.2.2"])
    assert dns.count("two.test") == 1


async def test_waiters_that_give_up_on_a_hung_lookup_leave_nothing_on_it(dns: FakeDns):
    """Each waiter's callback stayed on the shared lookup until it ended: a resolver that never answers (an NSS
    module hung for good) grew the hub's memory with every request to that name (review: 20,000 requests, 20,001
    callbacks)."""
    resolver = Resolver()
    for _ in range(3):
        waits = [asyncio.create_task(resolver.resolve(HUNG, 80, 0.05)) for _ in range(200)]
        assert {type(e) for e in await asyncio.gather(*waits, return_exceptions=True)} == {LookupTimeout}
    lookup = resolver._flight[(HUNG, 80)]
    assert len(lookup._done_callbacks) == 1  # the event loop's one future of it (`Resolver._waited`)
    assert len(resolver._waited[(HUNG, 80)]._callbacks) == 2  # its chain to the lookup and its clean-up: no shield
    dns.release.set()
    with pytest.raises(LookupFailed):
        await resolver.resolve(HUNG, 80, 5.0)
    assert resolver._waited == {} and dns.count(HUNG) == 1


class TlsStream(httpcore.AsyncMockStream):
    """A connection that answers one daemon's 200 and keeps what it was asked: TLS's server_hostname, the bytes."""

    def __init__(self) -> None:
        body = b'{"items": [], "next_cursor": null, "limit": 50, "scan_limited": false}'
        super().__init__([b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body])
        self.server_hostname: str | None = None
        self.sent = b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.sent += buffer

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        self.server_hostname = server_hostname
        return self


async def test_tls_checks_and_names_the_target_by_its_host_name_not_its_address(dns: FakeDns):
    """Through the hub's own pools: the connect goes to the address, TLS's SNI/certificate check and the Host
    header keep the name (httpcore takes them from the request's URL, not from connect_tcp's host)."""
    import httpx

    from hub.fanout import PerHostPools

    stream, dns.answers["daemon.test"] = TlsStream(), "192.0.2.9"
    pools = PerHostPools(True, 2)
    pools.backend.inner = inner = Inner(stream=stream)
    async with httpx.AsyncClient(transport=pools) as client:
        answer = await client.get("https://daemon.test:9469/api/v1/search")
    assert (answer.status_code, inner.asked, stream.server_hostname) == (200, ["192.0.2.9"], "daemon.test")
    assert b"\r\nHost: daemon.test:9469\r\n" in stream.sent and dns.asked == ["daemon.test"]
