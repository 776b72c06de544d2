"""The hub's own threads: its work off the event loop never runs in asyncio's default executor.

httpx (anyio) resolved every target's host name in the default executor (6 threads on 2 CPUs): a target whose DNS
never answered filled it, and every answer that encoded, merged or rendered there waited for that resolver, though it
never asked that target (hub review 2026-12-06; names are resolved on the hub's own threads now, hub.resolver).
So the hub's CPU work (encoding answers, merging, rendering text, reading file_sd files and Prometheus answers) runs
on a few threads of its own (WORK), as big answers are decoded on theirs (fanout.DECODE_THREADS). The pools are made
on first use, and shut down when a hub ends (`shutdown`); a hub started after that in the same process (tests) gets
new ones.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

WORK_THREADS = 4
"""Threads for the hub's CPU work: the interpreter lock runs one at a time anyway; a few let a file_sd read waiting
on a pipe (up to hub.timeout) not hold the encoding of answers."""


class Threads:
    """A bounded pool of named threads, made on first use and made again after `shutdown`."""

    def __init__(self, count: int, name: str) -> None:
        self.count, self.name = count, name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        _ALL.append(self)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        with self._lock:  # (a hub in another thread may be shutting it down)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix=self.name)
            return self._pool.submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on one of these threads, awaited."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def shutdown(self) -> None:
        """No new work; what is queued or running ends on its own (a decode a timeout abandoned), then its threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


_ALL: list[Threads] = []

WORK = Threads(WORK_THREADS, "hub-work")


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on the hub's work threads (WORK), awaited: the hub's `asyncio.to_thread`."""
    return await WORK.run(functools.partial(fn, *args, **kwargs))


def shutdown() -> None:
    """End every pool of the hub's (at its shutdown)."""
    for threads in _ALL:
        threads.shutdown()
