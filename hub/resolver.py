"""The hub's own resolver of target host names: one name whose DNS hangs never delays the lookup of another.

httpx (httpcore, anyio) resolves a host name in asyncio's default executor, one lookup per new connection: a target
whose resolver never answers (glibc: 5 s x 2 attempts) held a thread of it per request, and once all were held the
other targets' lookups waited behind them and timed out too (hub review). Here a name is looked up on threads of
the hub's own (LOOKUP_THREADS, daemon threads: a hung lookup never holds the process's exit), once at a time
(concurrent lookups of one name share the one in flight, so a hung name holds one thread), and its answer is kept
TTL seconds (a failure NEGATIVE_TTL). A caller waits at most its connect timeout; the lookup itself cannot be
cancelled and runs to its end, filling the cache. `ResolvingBackend` is the httpcore network backend that uses it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import httpcore

LOOKUP_THREADS = 16
"""Lookups at once. More wait for a thread (within their caller's timeout): a hub's first request to a hundred
targets resolves them all in milliseconds; only when this many distinct names hang at once does a name wait its
whole timeout (and then says why)."""
TTL = 30.0
"""Seconds a name's addresses are used without asking again (a moved daemon is followed within that)."""
NEGATIVE_TTL = 3.0
"""Seconds a failed lookup's error is answered without asking again: a dead name costs a lookup per that, not one per
request."""
CACHE_SIZE = 1024
"""Names kept (answers and failures); past it the oldest entry goes."""
LOOKUP_SHARE = 0.9
"""Share of the connect timeout a connection waits for its lookup: the rest is for the connect, and a lookup that
takes too long is said as such (`could not resolve NAME within 0.9s`), not as the host's whole request timing out."""

Key = tuple[str, int]
Result = list[str] | str
"""A lookup's addresses, or the text of why it failed (raised as a new LookupFailed each time: one exception
raised again and again keeps growing its traceback)."""


class LookupFailed(OSError):
    """The resolver answered that the name does not resolve (or failed): a connect error of that host."""


class LookupTimeout(TimeoutError):
    """No answer within the caller's timeout: a connect timeout of that host."""


def ip_literal(host: str) -> str | None:
    """`host` as an address to connect to when it is one (`[::1]` is `::1`, a scope `%eth0` kept), else None."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return None
    return bare


class Resolver:
    """(host, port) -> addresses, on threads of its own, single-flight, with a positive and a negative cache."""

    def __init__(self, threads: int = LOOKUP_THREADS, ttl: float = TTL, negative_ttl: float = NEGATIVE_TTL,
                 size: int = CACHE_SIZE, clock: Callable[[], float] = time.monotonic) -> None:
        self.threads, self.ttl, self.negative_ttl, self.clock = max(1, threads), ttl, negative_ttl, clock
        self.size = max(1, size)
        self._lock = threading.Lock()
        self._cache: dict[Key, tuple[float, Result]] = {}
        self._flight: dict[Key, Future[list[str]]] = {}
        self._queued: deque[Key] = deque()
        self._running = 0
        self._waited: dict[Key, asyncio.Future[list[str]]] = {}
        """The lookup in flight of each name as one future of the event loop, which every waiter awaits shielded: a
        waiter that gives up takes its callback with it (one per waiter on the lookup itself kept ~730 bytes each
        for as long as a hung lookup lasted)."""

    def busy(self) -> int:
        """Threads looking a name up now."""
        with self._lock:
            return self._running

    async def resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The addresses of `host`, waited for at most `timeout` seconds (LookupTimeout), or LookupFailed."""
        key = (host, port)
        future = self._lookup(key)
        if not future.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._awaitable(key, future)), timeout)
            except TimeoutError:
                raise LookupTimeout(self._timeout_text(key, timeout)) from None
        return future.result()

    def _awaitable(self, key: Key, future: Future[list[str]]) -> asyncio.Future[list[str]]:
        """The event loop's one future of `key`'s lookup in flight (`_waited`), made on its first waiter."""
        loop = asyncio.get_running_loop()
        waited = self._waited.get(key)
        if waited is None or waited.done() or waited.get_loop() is not loop:
            waited = self._waited[key] = asyncio.wrap_future(future, loop=loop)
            waited.add_done_callback(functools.partial(self._settled, key))
        return waited

    def _settled(self, key: Key, waited: asyncio.Future[list[str]]) -> None:
        """Forget a settled lookup's future; its failure counts as seen (every waiter may have given up on it)."""
        if self._waited.get(key) is waited:
            del self._waited[key]
        if not waited.cancelled():
            waited.exception()

    def prefer(self, host: str, port: int, address: str) -> None:
        """`address` first among `host`'s cached addresses: the one connected to after an earlier one failed, so the
        next connections within TTL do not wait on the failing one first (an address dropping SYNs cost each new
        connection its share of the timeout)."""
        key = (host, port)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None or isinstance(cached[1], str) or cached[1][0] == address or address not in cached[1]:
                return
            self._cache[key] = (cached[0], [address, *(a for a in cached[1] if a != address)])

    def _timeout_text(self, key: Key, timeout: float | None) -> str:
        """Why a lookup took too long: a slow resolver, or every thread held by other names (this one queued)."""
        with self._lock:
            queued = key in self._queued
        busy = f" (all {self.threads} lookup threads busy with other names)" if queued else ""
        return f"could not resolve {key[0]} within {timeout:.3g}s{busy}"

    def _lookup(self, key: Key) -> Future[list[str]]:
        """A future of `key`'s addresses: done from the cache, the lookup in flight, or a new one."""
        with self._lock:
            now = self.clock()
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return _done(cached[1])
            future = self._flight.get(key)
            if future is not None:
                return future
            future = self._flight[key] = Future()
            future.set_running_or_notify_cancel()  # a waiter that gives up never cancels the lookup others share
            start = self._running < self.threads
            if start:
                self._running += 1
            else:
                self._queued.append(key)
        if start:
            self._start(key)
        return future

    def _start(self, key: Key) -> None:
        """A thread looking `key` up; none to be had (a process at its thread limit) is that lookup failing."""
        try:
            threading.Thread(target=self._work, args=(key,), name="hub-dns", daemon=True).start()
        except RuntimeError as exc:
            with self._lock:
                self._running -= 1
            self._answer(key, f"could not resolve {key[0]}: {exc}")

    def _work(self, key: Key) -> None:
        """Look up `key`, then the queued names one by one; the thread ends when none is left."""
        next_key: Key | None = key
        while next_key is not None:
            self._answer(next_key, _getaddrinfo(*next_key))
            with self._lock:
                next_key = self._queued.popleft() if self._queued else None
                if next_key is None:
                    self._running -= 1

    def _answer(self, key: Key, result: Result) -> None:
        """Cache `result` and hand it to the waiters (cached first: a request arriving now does not ask again)."""
        with self._lock:
            self._cache.pop(key, None)
            while len(self._cache) >= self.size:
                del self._cache[next(iter(self._cache))]
            ttl = self.negative_ttl if isinstance(result, str) else self.ttl
            self._cache[key] = (self.clock() + ttl, result)
            future = self._flight.pop(key)
        _settle(future, result)


def _getaddrinfo(host: str, port: int) -> Result:
    """The addresses of (host, port) in the resolver's order, each once, or why not. Never raises: a lookup that
    raised would leave its waiters (and the next requests, single-flight) waiting until their timeouts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    except Exception as exc:  # noqa: BLE001 - socket.gaierror, UnicodeError (a name idna refuses), anything else
        return f"could not resolve {host}: {exc}" if str(exc) else f"could not resolve {host}: {type(exc).__name__}"
    return addresses or f"could not resolve {host}: no address"


def _done(result: Result) -> Future[list[str]]:
    future: Future[list[str]] = Future()
    _settle(future, result)
    return future


def _settle(future: Future[list[str]], result: Result) -> None:
    if isinstance(result, str):
        future.set_exception(LookupFailed(result))
    else:
        future.set_result(result)


class ResolvingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with host names resolved by a `Resolver`, then connected by address (the
    inner backend's connect_tcp). Only the TCP connect sees the address: httpcore takes TLS's server_hostname (SNI
    and the certificate check) and the Host header from the request's URL (httpcore/_async/connection.py,
    `_connect`: `sni_hostname or self._origin.host`), never from connect_tcp's host."""

    def __init__(self, resolver: Resolver, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.resolver = resolver
        self.inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        """Connect to `host`'s addresses in the resolver's order, the next on a failed connect, all within
        `timeout`. An IP literal is connected to as it is."""
        address = ip_literal(host)
        if address is not None:
            return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            addresses = await self.resolver.resolve(host, port, None if timeout is None else LOOKUP_SHARE * timeout)
        except LookupTimeout as exc:
            raise httpcore.ConnectTimeout(str(exc)) from None
        except LookupFailed as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return await self._first_that_connects(host, addresses, port, deadline, local_address, socket_options)

    async def _first_that_connects(self, host: str, addresses: list[str], port: int, deadline: float | None,
                                   local_address: str | None, socket_options: Iterable[Any] | None,
                                   ) -> httpcore.AsyncNetworkStream:
        """Each address gets an equal share of the time left (an address whose SYN goes unanswered does not eat the
        others' time), the last one all of it; the last failure is raised. One that connects after another failed
        is tried first from then on (`Resolver.prefer`)."""
        failure: Exception = httpcore.ConnectError("no address")
        for i, address in enumerate(addresses):
            share = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise httpcore.ConnectTimeout(f"timed out connecting to {address}")
                share = left / (len(addresses) - i)
            try:
                stream = await self.inner.connect_tcp(address, port, share, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            if i:
                self.resolver.prefer(host, port, address)
            return stream
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
