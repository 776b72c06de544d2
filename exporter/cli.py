"""The `watchtower` command: run | oneshot | check-config | healthcheck | demo.

Parses arguments, loads the one Config object, checks it against the machine (exporter.preflight)
and hands it to the daemon. A config problem is never a traceback: one line per problem naming
the key, exit 2.

Exit codes (docs/security.md, README): 0 ok; 1 runtime failure (listener could not bind, state
database unusable, unhealthy for `healthcheck`); 2 invalid configuration or usage.
"""

from __future__ import annotations

import gc

_GC = gc.isenabled()
gc.disable()  # the start-up imports (pydantic, the config models) create long-lived objects: collecting is wasted

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from exporter import allocator  # noqa: E402

allocator.set_default()  # polars' page-return policy is read when polars loads: before any import of it

from exporter import __version__  # noqa: E402
from exporter.config import Config, ConfigError, load_config  # noqa: E402

if _GC:
    gc.enable()

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("watchtower.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="watchtower", description="PowerMTA observability daemon.",
                                epilog="exit codes: 0 ok, 1 runtime failure or unhealthy, 2 invalid configuration")
    p.add_argument("--version", action="version", version=f"watchtower {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="tail accounting files and serve /metrics until SIGTERM")
    run.add_argument("--config", required=True, type=Path, help="YAML config file")
    one = sub.add_parser("oneshot", help="read every matching file from byte 0, print the exposition, exit")
    one.add_argument("--config", required=True, type=Path, help="YAML config file")
    chk = sub.add_parser("check-config", help="validate a config file against this machine; exit 2 listing "
                         "every problem")
    chk.add_argument("file", type=Path, nargs="?", help="YAML config file (or --config FILE)")
    chk.add_argument("--config", dest="config_opt", type=Path, default=None, help="YAML config file")
    hc = sub.add_parser("healthcheck", help="GET /healthz of the running daemon (for Docker HEALTHCHECK); "
                        "exit 0 healthy, 1 not")
    hc.add_argument("--config", required=True, type=Path, help="YAML config file of the daemon")
    hc.add_argument("--timeout", type=float, default=4.0, help="seconds")
    demo = sub.add_parser("demo", help="simulated PMTA traffic + the exporter, on loopback")
    demo.add_argument("--scenario", default="gmail-throttle", help="scenario name or YAML file")
    demo.add_argument("--listen", default="127.0.0.1:9469", help="exporter listener host:port")
    demo.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    demo.add_argument("--dir", type=Path, default=None, help="where logs and state go (default: a temp dir)")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    hub = sub.add_parser("hub", help="one /api/v1 and the /ui pages over many daemons (fan-out, docs/scaling.md)")
    hub.add_argument("--config", required=True, type=Path, help="hub YAML config file")
    return p


def _report(path: Path, problems: list[str]) -> None:
    print(f"{path}: invalid configuration", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def _load(path: Path, preflight: bool = True) -> Config | None:
    """The validated config, or None after printing every problem (shape first, then the machine)."""
    from exporter import preflight as checks

    try:
        config = load_config(path)
    except ConfigError as exc:
        _report(path, exc.problems)
        return None
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None
    if preflight:
        problems = checks.problems(config)
        if problems:
            _report(path, problems)
            return None
    return config


def _check_config(args: argparse.Namespace) -> int:
    from exporter import preflight

    path = args.config_opt or args.file
    if path is None or (args.config_opt and args.file):
        print("watchtower check-config: give the config file once: FILE or --config FILE", file=sys.stderr)
        return EXIT_CONFIG
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    for warning in preflight.warnings(config):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    print(f"{path}: ok")
    return EXIT_OK


def _healthcheck(args: argparse.Namespace) -> int:
    """0 when /healthz says ok. With auth on and no WATCHTOWER_HEALTHCHECK_USER/_PASSWORD, a 401 from the
    listener counts as alive (the process answers HTTP); with them, the full status is checked."""
    import httpx

    config = _load(args.config, preflight=False)
    if config is None:
        return EXIT_CONFIG
    host = config.listen_host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    scheme = "https" if config.web.tls_cert_file else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{config.listen_port}/healthz"
    user = os.environ.get("WATCHTOWER_HEALTHCHECK_USER")
    password = os.environ.get("WATCHTOWER_HEALTHCHECK_PASSWORD", "")
    auth: Any = (user, password) if user else None
    try:
        # The certificate names the public host, not loopback; this is a local liveness probe.
        r = httpx.get(url, auth=auth, timeout=args.timeout, verify=False)  # noqa: S501
    except httpx.HTTPError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if r.status_code == 401 and auth is None and config.web.basic_auth_users:
        print(f"alive: {url} answers (auth required; set WATCHTOWER_HEALTHCHECK_USER and "
              "WATCHTOWER_HEALTHCHECK_PASSWORD for the full check)")
        return EXIT_OK
    if r.status_code == 200:
        print(f"healthy: {url}")
        return EXIT_OK
    print(f"unhealthy: {url}: HTTP {r.status_code} {r.text[:200]}", file=sys.stderr)
    return EXIT_FAILURE


def _oneshot(args: argparse.Namespace, exit_now: bool = False) -> int:
    """One pass, then exit. The start (config, logging, imports) and the metrics-only pass run without the
    cyclic garbage collector (`oneshot.no_collections`: they free what they allocate by reference counting,
    so collections would only rescan what is alive); the correlator's pass (asyncio, SQLite) keeps it.

    `exit_now` (the command line, not a caller of main()): once the metrics-only exposition is written
    and flushed, the process ends without the interpreter's teardown, which would free every frame,
    table and module one object at a time (~60 ms) only to give the memory back to the kernel."""
    from exporter import logsetup
    from exporter.oneshot import no_collections

    with no_collections():  # the config load, logging and the imports of the pass create long-lived objects
        config = _load(args.config)
        if config is None:
            return EXIT_CONFIG
        logsetup.setup(config.log_level, config.log_format, redact_addresses=config.correlator.hash_recipients)
        if config.correlator.enabled:
            allocator.use(allocator.ONESHOT_CORRELATOR)
            from exporter.daemon import run_oneshot
        else:  # metrics only: no state database, no web stack, no event loop, no collections (exporter/oneshot.py)
            from exporter.oneshot import run_oneshot

    try:
        text = run_oneshot(config)
    except KeyboardInterrupt:
        log.critical("watchtower oneshot interrupted: nothing printed")
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - one line for the operator; the traceback only at debug level
        from exporter.state import StateError  # its messages name the file and the way out
        from exporter.writer import describe

        log.critical("watchtower oneshot failed, nothing printed: %s",
                     exc if isinstance(exc, StateError) else describe(exc))
        log.debug("traceback", exc_info=exc)
        return EXIT_FAILURE
    sys.stdout.write(text)
    if exit_now and not config.correlator.enabled:
        _exit_now(EXIT_OK)
    return EXIT_OK


def _exit_now(code: int) -> None:
    """End the process at once after flushing what it wrote (stdout, stderr, log handlers); returns
    (and the caller exits normally) if a flush fails, e.g. stdout is a closed pipe."""
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def _run(args: argparse.Namespace, exit_now: bool = False) -> int:
    from exporter import logsetup, preflight

    if args.command == "oneshot":
        return _oneshot(args, exit_now)
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    logsetup.setup(config.log_level, config.log_format, redact_addresses=config.correlator.hash_recipients)
    from exporter.http import raise_fd_limit  # the web stack is imported by `run` only

    raise_fd_limit()
    for warning in preflight.warnings(config):
        if "basic_auth_users" in warning:
            log.warning("%s", warning)
    import asyncio  # `run` only: the metrics-only oneshot has no event loop

    try:
        from exporter.daemon import Daemon

        return int(asyncio.run(Daemon(config, owns_process=True).serve()) or 0)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - one line for the operator; the traceback only at debug level
        log.critical("watchtower could not run: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=exc)
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """The command line (`argv` None: sys.argv); tests call it with `argv`, and then it always returns."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "healthcheck":
        return _healthcheck(args)
    if args.command == "demo":
        from exporter import logsetup
        from simulator.demo import run_demo

        logsetup.setup("info", "text")
        return run_demo(args)
    if args.command == "hub":
        from hub.app import run_hub

        return run_hub(args.config)
    return _run(args, exit_now=argv is None)
