"""`watchtower hub`: the listener (same `listen`/`web` settings as the daemon), routes and pages."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from exporter.config import ConfigError
from exporter.http import build_app, make_server
from hub.api import Hub, build_hub_routes
from hub.config import HubConfig, load_hub_config
from hub.fanout import Fanout, make_client
from hub.targets import TargetSet

log = logging.getLogger(__name__)
FD_RESERVE = 64
"""Descriptors besides sockets: the interpreter's own, logs, TLS and secret files, the event loop's."""


def build_hub_app(config: HubConfig) -> tuple[FastAPI, Hub]:
    """The FastAPI app of a hub: /healthz, /api/v1 (fan-out) and the pages under /ui."""
    from pages import with_pages

    section = config.hub
    client = make_client(section, per_host=config.web.api_max_concurrency)
    hub = Hub(TargetSet(section), Fanout(client, section.timeout, section.max_answer_size))

    def health() -> dict[str, Any]:
        return {"ok": True, "role": "hub", "targets": [t.name for t in hub.targets.static] or "dynamic"}

    router = with_pages(build_hub_routes(hub), config.pages.grafana_url, title="PMTA Watchtower hub")
    app = build_app(CollectorRegistry(), health, [router], config.web.basic_auth_users)
    return app, hub


async def serve(config: HubConfig) -> int:
    app, hub = build_hub_app(config)
    server = make_server(app, config)  # type: ignore[arg-type]  # same listen/web attributes as Config
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    async def run() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind; it has logged why
            log.critical("watchtower hub could not listen on %s (exit %s)", config.listen, exc.code)

    task = asyncio.create_task(run())
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            log.info("hub listening on %s, asking %s", config.listen,
                     ", ".join(t.name for t in hub.targets.static) or "discovered targets")
        await task
    finally:
        await hub.fanout.aclose()
    return 0 if server.started else 1


def fd_limit_problem(limit: int, config: HubConfig) -> str | None:
    """Too few descriptors for the static targets' pools and the listener's clients: connections then fail with
    EMFILE, which httpx reports as a connect error naming none of this (discovered targets add to the need)."""
    need = len(config.hub.targets) * config.web.api_max_concurrency + config.web.max_connections + FD_RESERVE
    if limit >= need:
        return None
    return (f"open file limit {limit} is below the {need} descriptors {len(config.hub.targets)} targets x "
            f"web.api_max_concurrency {config.web.api_max_concurrency} + web.max_connections "
            f"{config.web.max_connections} may use: raise LimitNOFILE (systemd) or ulimit -n, or lower "
            "web.api_max_concurrency")


def log_fd_limit(limit: int, config: HubConfig) -> None:
    if problem := fd_limit_problem(limit, config):
        log.warning("%s", problem)
    else:
        log.info("open file limit %d", limit)


def run_hub(path: Path) -> int:
    """CLI entry: exit 2 on a bad config (naming every problem) or unreadable secrets, 1 when the
    listener cannot bind, 0 after SIGTERM."""
    from hub import preflight

    try:
        config = load_hub_config(path)
        if found := preflight.problems(config):  # the files and URLs it names, as the daemon's check-config
            raise ConfigError(str(path), found)
    except ConfigError as exc:
        print(f"{exc.path}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    from exporter import logsetup
    from exporter.http import raise_fd_limit

    logsetup.setup(config.log_level, config.log_format, redact_addresses=True)  # no store here: never a local part
    log_fd_limit(raise_fd_limit(), config)  # a connection pool per daemon: up to targets x api_max_concurrency
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per fanned-out request is noise
    try:
        return asyncio.run(serve(config))
    except OSError as exc:  # secrets or TLS files unreadable
        print(f"watchtower hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
