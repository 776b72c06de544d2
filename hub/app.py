"""`watchtower hub`: the listener (same `listen`/`web` settings as the daemon), routes and pages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.boundedfile import read_regular
from exporter.config import ConfigError, invalid_config_report, printable
from exporter.http import build_app, error_body, exposure_warning, make_server
from hub import cursors
from hub.api import Hub, build_hub_routes
from hub.config import HubConfig, HubSection, load_hub_config
from hub.fanout import Fanout, make_client
from hub.targets import TargetSet

log = logging.getLogger(__name__)
FD_RESERVE = 64
"""Descriptors besides sockets: the interpreter's own, logs, TLS and secret files, the event loop's."""
NO_METRICS = "the hub has no metrics: let Prometheus scrape each daemon's /metrics (docs/scaling.md)"
INDEX = ("PMTA Watchtower hub {version}\n\n/healthz       health\n"
         "/api/v1/...    every daemon's message timelines, merged (docs/api.md, docs/scaling.md)\n"
         "/ui/           search, message forensics, flows (docs/scaling.md)\n/openapi.json  API description\n"
         "(no /metrics: Prometheus scrapes each daemon)\n")
SIGHUP_LINE = ("SIGHUP: the hub reloads nothing; restart it to apply a changed config, credentials or certificate "
               "(its file_sd and Prometheus targets are re-read every hub.refresh_interval without a signal)")
SIGHUP_LOG_INTERVAL = 1.0
"""A burst of SIGHUPs is one line, not one per signal."""


def build_hub_app(config: HubConfig) -> tuple[FastAPI, Hub]:
    """The FastAPI app of a hub: /healthz, /api/v1 (fan-out) and the pages under /ui."""
    from pages import with_pages

    section = config.hub
    if section.cursor_key_file is not None:  # shared by the hubs behind one address: each one's cursors valid on all
        cursors.CURSOR_KEY = sha256(read_regular(Path(section.cursor_key_file)).strip()).digest()  # hub.preflight
    client = make_client(section, per_host=config.web.api_max_concurrency)
    hub = Hub(TargetSet(section), Fanout(client, section.timeout, section.max_answer_size))

    def health() -> dict[str, Any]:
        return {"ok": True, "role": "hub", "targets": [t.name for t in hub.targets.static] or "dynamic"}

    router = with_pages(build_hub_routes(hub), config.pages.grafana_url, title="PMTA Watchtower hub")
    app = build_app(CollectorRegistry(), health, [router], config.web.basic_auth_users)
    _without_metrics(app)
    return app, hub


def _without_metrics(app: FastAPI) -> None:
    """build_app's /metrics would answer 200 with an empty body here (the hub keeps no series), so a Prometheus
    pointed at the hub by mistake would scrape nothing and report no error: a 404 saying where the metrics are,
    and an index that does not list /metrics."""
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in ("/metrics", "/")]

    @app.get("/metrics", include_in_schema=False)
    async def no_metrics() -> JSONResponse:
        return JSONResponse(error_body(404, NO_METRICS), status_code=404)

    @app.get("/", include_in_schema=False)
    async def index() -> PlainTextResponse:
        return PlainTextResponse(INDEX.format(version=__version__))


def startup_warnings(config: HubConfig, path: Path | None = None) -> list[str]:
    """What the daemon warns of at start for the same `listen` and `web` (the hub holds the daemons' credentials
    and serves every host's recipients): a plain-text password, then a listener reachable off-host without auth or
    TLS."""
    from exporter.preflight import basic_auth_warnings
    from hub.preflight import warnings as exposed_secrets

    out = basic_auth_warnings(config.web.basic_auth_users) + exposed_secrets(config, path)
    exposed = exposure_warning(config, "every host's stored recipients through /api/v1")  # type: ignore[arg-type]
    return out + ([exposed] if exposed else []) + clear_text_credential_warnings(config.hub)


def clear_text_credential_warnings(section: HubSection) -> list[str]:
    """hub.auth goes to every target, one credential for all the daemons: over plain http to another host it
    crosses the network in clear text (as pmta.url's secret would, which the daemon warns of too)."""
    from urllib.parse import urlsplit

    from exporter.pmta_api import is_loopback_host

    auth = section.auth
    if not (auth.username or auth.bearer_token_file):
        return []
    plain = [t.url for t in section.targets if urlsplit(t.url).scheme == "http"
             and not is_loopback_host(urlsplit(t.url).hostname or "")]
    out = [f"hub.targets: {url} is plain http: hub.auth's credential, the same for every daemon, crosses the network "
           "in clear text on every request; use https (hub.tls)" for url in plain]
    if (section.file_sd or section.prometheus) and section.scheme == "http":
        out.append("hub.scheme is http: hub.auth's credential, the same for every daemon, goes in clear text to every "
                   "discovered target (file_sd, prometheus) that is not this host; set hub.scheme: https")
    return out


def bind_problem(config: HubConfig) -> str | None:
    """Bind `listen` once before uvicorn does, as the daemon does (Daemon._probe_listen_address): a taken address
    is then one line naming it, exit 1; uvicorn logs its own error and ends with its own code (3)."""
    host, port = config.listen_host, config.listen_port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no error
            probe.bind(address)
    except OSError as exc:  # socket.gaierror included (preflight checked the name; DNS may differ now)
        why = (exc.strerror or str(exc)).lower()
        return f"listener could not bind {config.listen}: {why} (listen: {config.listen})"
    return None


_sighups_held = [0]
"""SIGHUPs received between run_hub's start and serve() taking the signal over."""


def _sighup_before_serving(_signum: int, _frame: object) -> None:
    _sighups_held[0] += 1  # said by serve() once it runs (no logging inside a signal handler)


def hold_sighup() -> None:
    """SIGHUP caught from run_hub's start until serve() takes it: its default action ended the hub (129) when a
    `systemctl reload` came during the start-up checks. A handler, not a blocked mask: threads started by the imports
    (polars') do not block it, and the kernel may hand a process its signal on any of them."""
    with contextlib.suppress(ValueError, OSError, AttributeError):  # not the main thread, or no such signal
        signal.signal(signal.SIGHUP, _sighup_before_serving)


class _SighupLine:
    """The hub's SIGHUP: nothing to reload (see SIGHUP_LINE), said at most once per SIGHUP_LOG_INTERVAL."""

    def __init__(self) -> None:
        self.said = -SIGHUP_LOG_INTERVAL

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.said >= SIGHUP_LOG_INTERVAL:
            self.said = now
            log.warning("%s", SIGHUP_LINE)


def _take_sighup(loop: asyncio.AbstractEventLoop) -> tuple[bool, Any] | None:
    """SIGHUP handled on the loop: one line, the hub serves on (it died with 129, docs/security.md says restart it).
    None when it cannot be handled here (not the main thread); else whether the process is the hub's (run_hub caught
    or blocked SIGHUP before) and the handler it had before. One caught or held before is said now."""
    try:
        blocked = signal.SIGHUP in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        previous = signal.getsignal(signal.SIGHUP)
        line = _SighupLine()
        loop.add_signal_handler(signal.SIGHUP, line)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, OSError):
        return None
    if blocked:  # (a caller that blocked it early, as exporter.cli does for `run`): one pending is taken now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    if _sighups_held[0]:
        _sighups_held[0] = 0
        line()
    return blocked or previous is _sighup_before_serving, previous


def _leave_sighup(loop: asyncio.AbstractEventLoop, taken: tuple[bool, Any] | None) -> None:
    """After the stop: in the hub's own process SIGHUP is ignored to the exit, never given back its default action (a
    reload overlapping the stop ended it with 129; the loop's remove_signal_handler() sets the default first, and
    closing the loop calls it); called in-process (tests), the handler it had before is put back."""
    if taken is None:
        return
    held, previous = taken
    if held:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        handlers = getattr(loop, "_signal_handlers", None)
        if isinstance(handlers, dict):
            handlers.pop(signal.SIGHUP, None)
        return
    loop.remove_signal_handler(signal.SIGHUP)
    if previous is not None:
        signal.signal(signal.SIGHUP, previous)


async def serve(config: HubConfig, interrupted: Callable[[], bool] | None = None) -> int:
    """Serve until SIGTERM/SIGINT: 0; 1 when the listener cannot bind (one line naming `listen`). SIGHUP reloads
    nothing: one line says so, and to restart the hub for a changed config."""
    if problem := bind_problem(config):
        log.error("%s", problem)
        return 1
    app, hub = build_hub_app(config)
    server = make_server(app, config)  # type: ignore[arg-type]  # same listen/web attributes as Config
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    if interrupted is not None and interrupted():  # a ^C from before that could not be raised (exporter.cli)
        server.should_exit = True
    hup = _take_sighup(loop)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits (its code 3) when it cannot bind, taken since the probe; it logged why
            log.critical("watchtower hub could not listen on %s (see the error above; exit 1)", config.listen)

    task = asyncio.create_task(run())
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            log.info("hub listening on %s, asking %s", config.listen,
                     ", ".join(t.name for t in hub.targets.static) or "discovered targets")
        await task
    finally:
        await hub.aclose()
        _leave_sighup(loop, hup)
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


def _checked_config(path: Path, web_config_file: Path | None = None) -> HubConfig | None:
    """The config, its files and URLs checked (as the daemon's check-config), or None after printing every problem.
    Only an OSError of reading `path` itself blames the config file: one of a file it names is that key's problem
    (exporter.preflight.reaching), and any other a `cannot check` line naming the file it came from."""
    from exporter.preflight import unreachable
    from hub import preflight

    try:
        config = load_hub_config(path, web_config_file)
    except ConfigError as exc:
        _report(exc.path, exc.problems, exc.lines)
        return None
    except OSError as exc:
        print(f"{printable(str(path))}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None
    try:
        found = preflight.problems(config)
    except OSError as exc:
        print(f"{printable(str(path))}: cannot check: {unreachable(exc)}", file=sys.stderr)
        return None
    if found:
        _report(str(path), found)
        return None
    return config


def _report(path: str, problems: list[str], lines: list[int | None] | None = None) -> None:
    sys.stderr.write(invalid_config_report(path, problems, lines))


def check_hub_config(path: Path, web_config_file: Path | None = None) -> bool:
    """`watchtower check-config --hub`: what `watchtower hub` checks before it listens (every problem printed: False)
    and the warnings it logs at start, without starting it; the caller says `FILE: ok` (exporter.cli.emit)."""
    config = _checked_config(path, web_config_file)
    if config is None:
        return False
    for warning in startup_warnings(config, path):
        print(f"{printable(str(path))}: warning: {warning}", file=sys.stderr)
    return True


def run_hub(path: Path, interrupted: Callable[[], bool] | None = None, web_config_file: Path | None = None) -> int:
    """CLI entry: exit 2 on a bad config (naming every problem) or unreadable secrets, 1 when the
    listener cannot bind, 0 after SIGTERM. `interrupted`: whether the command saw a ^C before the hub took SIGINT
    over (exporter.cli.ctrl_c_seen), one lost where it landed: the hub then stops as soon as it serves."""
    hold_sighup()  # until serve() takes it (the imports before this are exporter.cli's)
    config = _checked_config(path, web_config_file)
    if config is None:
        return 2
    from exporter import logsetup
    from exporter.fdlimit import raise_limit

    logsetup.setup(config.log_level, config.log_format, redact_addresses=True)  # no store here: never a local part
    for warning in startup_warnings(config, path):
        log.warning("%s", warning)
    log_fd_limit(raise_limit(), config)  # a connection pool per daemon: up to targets x api_max_concurrency
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per fanned-out request is noise
    try:
        return asyncio.run(serve(config, interrupted))
    except OSError as exc:  # secrets or TLS files unreadable
        print(f"watchtower hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
