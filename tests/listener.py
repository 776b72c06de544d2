"""The daemon's real listener (`make_server`) on a loopback port, for tests that speak TCP to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from exporter.http import EmbeddedServer, make_server


async def start(app: Any, config: Any) -> tuple[EmbeddedServer, asyncio.Task[None]]:
    """`app` served on the config's loopback port, once it listens (the caller stops it: should_exit, await task)."""
    server = make_server(app, config)
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "the server did not start listening"
    return server, task


@contextlib.asynccontextmanager
async def serving(app: Any, config: Any) -> AsyncIterator[tuple[int, EmbeddedServer]]:
    """(port, server) while `app` is served; stopped (gracefully) on leaving."""
    server, task = await start(app, config)
    try:
        yield config.listen_port, server
    finally:
        server.should_exit = True
        await task
