"""Which targets the hub can connect to: one whose connection just failed is not asked again for a while.

Every host request costs the hub's event loop ~0.5-0.8 ms of CPU (httpx, httpcore's pool, anyio's connect), whether
the host answers or refuses. Asked by many requests at once (a dashboard's panels), a fleet of dead targets cost
requests x targets of it: 1,000 targets that refused or never accepted, 16 hub requests at once, ~10-25 s of CPU on
the one event loop, so every answer came long after `hub.timeout` and healthy hosts timed out too (hub lifecycle
review). Here a target's connections go through a state kept per target URL, as a circuit breaker does:

* connected lately (`up`): requests go as ever, nothing waits;
* its last connection attempt failed (refused, unreachable, a name that does not resolve, no answer to the connect
  within hub.timeout): not asked for `down_for` seconds (hub.timeout: hub.fanout.make_client); such a host is
  missing at once, its answer saying why (`not asked: connecting to it failed 0.4s ago (...); asked again in 1.6s`);
* not known (never connected, or its `down_for` is over): one request connects (the probe) and the others asking it
  meanwhile wait for that connection's outcome, within their own budgets, instead of each opening one.

So a dead fleet costs one connection attempt per target per hub.timeout, however many requests ask it, and a healthy
fleet pays nothing: only a first connection is waited for, and a host's answer time never is (the slot-based cap
tried before held healthy hosts' requests behind slow answers). A kept-alive connection that breaks changes
nothing here; the next connection attempt tells.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore

DOWN_FOR = 2.0
"""Seconds a target whose connection attempt failed is not asked, unless told otherwise (the hub's own is its
hub.timeout, whose default this is): a restarted daemon is asked again within that."""


@dataclass
class _State:
    up: bool = False
    """A connection attempt succeeded since the last one that failed."""
    down_until: float = 0.0
    failed_at: float = 0.0
    reason: str = ""
    trying: asyncio.Future[bool | None] | None = None
    """The probe's connection: True connected, False failed, None ended without telling (cancelled, no connect)."""


class HostHealth:
    """Per target (its URL, the pool key of hub.fanout.PerHostPools): connected lately, down, or being tried."""

    def __init__(self, down_for: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.down_for = DOWN_FOR if down_for is None else down_for
        self.clock = clock
        self._states: dict[str, _State] = {}

    async def admit(self, key: str) -> tuple[str | None, bool]:
        """(why the request is not sent, or None; whether it is the probe that settles the target's first
        connection). Waits while another request's first connection to the target is being tried: the caller's own
        budget (asyncio.wait_for around it) bounds that wait."""
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        while True:
            if state.up:
                return None, False
            now = self.clock()
            if state.down_until > now:
                return (f"not asked: connecting to it failed {now - state.failed_at:.1f}s ago ({state.reason}); "
                        f"asked again in {state.down_until - now:.1f}s"), False
            trying = state.trying
            loop = asyncio.get_running_loop()
            if trying is None or trying.done() or trying.get_loop() is not loop:
                state.trying = loop.create_future()
                return None, True
            await asyncio.shield(trying)  # a waiter that gives up leaves the probe's future alone

    def settled(self, key: str) -> None:
        """The probe's request is over: a first connection it never reported (cancelled before connecting, a request
        that failed before it connected) lets the waiters go on, the next of them trying."""
        state = self._states.get(key)
        if state is not None:
            self._settle(state, None)

    def connected(self, key: str) -> None:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        state.up = True
        state.down_until = 0.0
        self._settle(state, True)

    def failed(self, key: str, reason: str) -> None:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        now = self.clock()
        state.up, state.failed_at, state.down_until, state.reason = False, now, now + self.down_for, reason
        self._settle(state, False)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the states of targets no longer asked (their pools were closed)."""
        for key in keys:
            state = self._states.pop(key, None)
            if state is not None:
                self._settle(state, None)

    def __len__(self) -> int:
        return len(self._states)

    @staticmethod
    def _settle(state: _State, outcome: bool | None) -> None:
        trying, state.trying = state.trying, None
        if trying is not None and not trying.done() and not trying.get_loop().is_closed():
            trying.set_result(outcome)


class ReportingBackend(httpcore.AsyncNetworkBackend):
    """The network backend of one target's pool: connects through `inner` and tells `health` how it went."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, health: HostHealth, key: str) -> None:
        self.inner, self.health, self.key = inner, health, key

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            stream = await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            self.health.failed(self.key, _reason(exc))
            raise
        self.health.connected(self.key)
        return stream

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def _reason(exc: BaseException) -> str:
    """`Type: text` of a connect failure, as hub.fanout says a host's error (`ConnectError: ...`)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    name = {httpcore.ConnectError: "ConnectError", httpcore.ConnectTimeout: "ConnectTimeout"}.get(type(exc),
                                                                                                 type(exc).__name__)
    return f"{name}: {exc}" if str(exc) else name
