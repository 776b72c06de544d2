"""The `watchtower` command: run | oneshot | check-config | healthcheck | demo.

Parses arguments, loads the one Config object, checks it against the machine (exporter.preflight)
and hands it to the daemon. A config problem is never a traceback: one line per problem naming
the key, exit 2.

Exit codes (docs/reliability.md, docs/security.md): 0 ok; 1 runtime failure (listener could not bind, the
state database unusable while it runs: its disk full, its files deleted; unhealthy for `healthcheck`); 2 invalid
configuration or usage, or a state database `run` refuses to start with (no SQLite file, damaged, another HMAC key:
no restart mends it; 1 for `healthcheck`: Docker reserves a health check's exit 2).
"""

from __future__ import annotations

import gc
import os
import signal
import sys

_sigint_seen = False
"""A ^C arrived since main() began (`_interrupt`): see `interrupted`."""
_terminated_by: int | None = None
"""The SIGTERM, SIGHUP or SIGQUIT a oneshot pass was sent (`_on_sigterm`), raised or not: see `ctrl_c_seen`."""


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGINT as Python's default handler treats it, under another name (see _run), and remembered: raised inside a C
    extension's import it can come out as another error (`TypeError: expected a message argument` from `import ssl`,
    seen once in the fresh-clone suite), which `interrupted` still takes for the ^C it was."""
    global _sigint_seen
    _sigint_seen = True
    raise KeyboardInterrupt


def ctrl_c_seen() -> bool:
    """Whether a ^C reached the command since main() began, raised or not. One landing where an exception cannot
    propagate (a weakref callback that an import runs: importlib's module locks have them) is only printed, and the
    start goes on: the daemon and the hub ask this once they have taken SIGINT over, and stop (seen in CI: a daemon
    served on after its ^C until killed 60 s later)."""
    return _sigint_seen


def _quiet_lost_ctrl_c(unraisable: sys.UnraisableHookArgs) -> None:
    """sys.unraisablehook while the command runs: a ^C (or a oneshot's SIGTERM) it remembers that could not be raised
    where it landed is acted on by `ctrl_c_seen`'s askers, not shown as `Exception ignored in ...` with a traceback."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and (_sigint_seen or _terminated_by is not None):
        return
    sys.__unraisablehook__(unraisable)


def _interrupted_while_importing(_signum: int, _frame: object) -> None:
    """^C before main() can catch it (the imports below take a few tenths of a second): the exit a shell expects,
    not a KeyboardInterrupt traceback through the import machinery."""
    os._exit(130)  # nothing is open or buffered yet


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where ^C is ignored (`nohup`, `&`)
    try:
        signal.signal(signal.SIGINT, _interrupted_while_importing)
    except ValueError:  # imported from a thread other than the main one (a library use): signals are not ours
        pass

if sys.argv[1:2] in (["run"], ["hub"]):
    # `systemctl reload` right after a start: SIGHUP's default action would end the daemon (or the hub) before its
    # handler is in place (a second of imports and checks). Held from here, before the imports (threads they start
    # inherit the mask), until then (Daemon.serve, hub.app.serve).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

_GC = gc.isenabled()
gc.disable()  # the start-up imports (pydantic, the config models) create long-lived objects: collecting is wasted

import argparse  # noqa: E402
import contextlib  # noqa: E402
import errno  # noqa: E402
import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from exporter import allocator, fdlimit  # noqa: E402

allocator.set_default()  # polars' page-return policy is read when polars loads: before any import of it

from exporter import __version__  # noqa: E402
from exporter.cliargs import MAX_DURATION, MAX_SPEED, abandon_stdout, at_most  # noqa: E402
from exporter.config import Config, ConfigError, invalid_config_report, load_config, printable  # noqa: E402

if _GC:
    gc.enable()

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command ^C ended."""
log = logging.getLogger("watchtower.cli")


class StdoutError(Exception):
    """Standard output cannot take what a command prints (closed, a full disk, a reader gone): one line, exit 1."""

    def __init__(self, why: str, broken_pipe: bool = False) -> None:
        super().__init__(why)
        self.broken_pipe = broken_pipe


def emit(text: str) -> None:
    """Write `text` to stdout and flush it now, so a failure surfaces here as StdoutError, not as a traceback
    (or an `Exception ignored` line) at interpreter exit."""
    out = sys.stdout
    if out is None:  # started with stdout closed (`>&-`)
        raise StdoutError("it is closed")
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError as exc:
        raise StdoutError(exc.strerror or "broken pipe", broken_pipe=True) from exc
    except OSError as exc:
        raise StdoutError(exc.strerror or str(exc), broken_pipe=exc.errno == errno.EPIPE) from exc
    except ValueError as exc:  # "I/O operation on closed file"
        raise StdoutError(str(exc)) from exc


MAX_HEALTH_TIMEOUT = 3600.0
"""Longest `healthcheck --timeout` (seconds): a Docker health check's own timeout is seconds."""


def config_path(text: str) -> Path:
    """argparse type of a config file argument: an empty one would be Path('.'), the working directory."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give the YAML config file")
    return Path(text)


def dir_path(text: str) -> Path:
    """argparse type of a directory argument: an empty one would be Path('.'), the working directory."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a directory")
    return Path(text)


def listen_address(text: str) -> str:
    """argparse type of a listener address: host:port as the config's `listen` takes it."""
    from exporter.config import check_listen

    try:
        return check_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="watchtower", description="PowerMTA observability daemon.",
                                epilog="exit codes: 0 ok, 1 runtime failure or unhealthy, 2 invalid configuration")
    p.add_argument("--version", action="version", version=f"watchtower {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="tail accounting files and serve /metrics until SIGTERM")
    run.add_argument("--config", required=True, type=config_path, help="YAML config file")
    _web_config_option(run)
    one = sub.add_parser("oneshot", help="read every matching file from byte 0, print the exposition, exit")
    one.add_argument("--config", required=True, type=config_path, help="YAML config file")
    chk = sub.add_parser("check-config", help="validate a config file against this machine; exit 2 listing "
                         "every problem")
    chk.add_argument("file", type=config_path, nargs="?", help="YAML config file (or --config FILE)")
    chk.add_argument("--config", dest="config_opt", type=config_path, default=None, help="YAML config file")
    chk.add_argument("--hub", action="store_true", help="the file is a `watchtower hub` config (docs/scaling.md)")
    _web_config_option(chk)
    hc = sub.add_parser("healthcheck", help="GET /healthz of the running daemon (for Docker HEALTHCHECK); "
                        "exit 0 healthy, 1 not")
    hc.add_argument("--config", required=True, type=config_path, help="YAML config file of the daemon")
    _web_config_option(hc)
    hc.add_argument("--timeout", type=at_most(MAX_HEALTH_TIMEOUT), default=4.0,
                    help="seconds for the whole answer (the daemon is asked directly: proxy variables are ignored)")
    demo = sub.add_parser("demo", help="simulated PMTA traffic + the exporter, on loopback")
    demo.add_argument("--scenario", default="gmail-throttle", help="scenario name or YAML file")
    demo.add_argument("--listen", type=listen_address, default="127.0.0.1:9469", help="exporter listener host:port")
    demo.add_argument("--speed", type=at_most(MAX_SPEED), default=1.0, help="simulated seconds per real second")
    demo.add_argument("--dir", type=dir_path, default=None, help="where logs and state go (default: a temp dir)")
    demo.add_argument("--duration", type=at_most(MAX_DURATION), default=None,
                      help="stop after this many real seconds")
    hub = sub.add_parser("hub", help="one /api/v1 and the /ui pages over many daemons (fan-out, docs/scaling.md)")
    hub.add_argument("--config", required=True, type=config_path, help="hub YAML config file")
    _web_config_option(hub)
    return p


def _web_config_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--web.config.file", dest="web_config_file", type=config_path, default=None,
                         metavar="FILE", help="TLS and basic auth of the listener from node_exporter's web config "
                         "file (exporter-toolkit format; instead of the config's web.tls_*/basic_auth_users)")


def _report(path: Path, problems: list[str], lines: list[int | None] | None = None) -> None:
    sys.stderr.write(invalid_config_report(path, problems, lines))


def _load(path: Path, preflight: bool = True, oneshot: bool = False, run: bool = False,
          web_config_file: Path | None = None) -> Config | None:
    """The validated config, or None after printing every problem (shape first, then the machine)."""
    from exporter import preflight as checks

    try:
        config = load_config(path, web_config_file=web_config_file)
    except ConfigError as exc:
        _report(Path(exc.path), exc.problems, exc.lines)  # (the config file, or --web.config.file)
        return None
    except OSError as exc:
        print(f"{printable(str(path))}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return None
    if preflight:
        try:
            problems = checks.problems(config, uses_state_dir=not oneshot,  # oneshot: a temporary store, in TMPDIR
                                       waits_for_address=run)
        except OSError as exc:  # each check names its own key; this is for a stat one of them does not guard
            print(f"{printable(str(path))}: cannot check: {checks.unreachable(exc)}", file=sys.stderr)
            return None
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
    if args.hub:
        from hub.app import check_hub_config

        if not check_hub_config(path, args.web_config_file):
            return EXIT_CONFIG
    else:
        config = _load(path, web_config_file=args.web_config_file)
        if config is None:
            return EXIT_CONFIG
        for warning in preflight.warnings(config, config_path=path):
            print(f"{printable(str(path))}: warning: {warning}", file=sys.stderr)
        from exporter.http import exposure_warning  # (the web stack: what `run` loads too)

        if (exposed := exposure_warning(config)) is not None:  # what `run` logs at start
            print(f"{printable(str(path))}: warning: {exposed}", file=sys.stderr)
    emit(f"{printable(str(path))}: ok\n")
    return EXIT_OK


HEALTH_SHOWN_CHARS = 200
"""Most characters of an answer's body (or an error) a healthcheck line shows."""
HEALTH_READ_BYTES = 8192
"""Most bytes of an answer read: /healthz is a small JSON object; another server's page can be anything."""


def one_line(text: str, limit: int = HEALTH_SHOWN_CHARS) -> str:
    """`text` as one bounded line a terminal shows as it is: whitespace runs (newlines too) become one space,
    other control and format characters (escapes, bidi overrides) go. The port may be answered by another
    server, whose page came out whole, over many lines, escapes included."""
    kept = "".join(ch if ch.isprintable() else " " if ch.isspace() else "" for ch in text)
    flat = " ".join(kept.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class HealthDeadline(Exception):
    """No complete answer within the healthcheck's --timeout."""


def _get_bounded(url: str, auth: Any, timeout: float) -> tuple[int, str, bool]:
    """(status, the body's first HEALTH_READ_BYTES as text, whether it was cut there) of GET `url`, within `timeout`
    in all (HealthDeadline past it); a server that sends without end is cut there, not read until it stops.

    httpx's timeout bounds each read: a server trickling a header line a second held the probe for hours. The request
    runs on a daemon thread, given up at the deadline (the process exits at once after). Proxy variables are
    ignored: the daemon's own listener is asked directly, never through an HTTP_PROXY of the image."""
    import threading

    import httpx

    answer: list[tuple[int, str, bool] | BaseException] = []

    def get() -> None:
        try:
            # The certificate names the public host, not loopback; this is a local liveness probe.
            with httpx.stream("GET", url, auth=auth, timeout=timeout, verify=False,  # noqa: S501
                              trust_env=False) as r:
                body = b""
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) >= HEALTH_READ_BYTES:
                        break
                text = body[:HEALTH_READ_BYTES].decode(r.encoding or "utf-8", errors="replace")
                answer.append((r.status_code, text, len(body) >= HEALTH_READ_BYTES))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which says it in one line
            answer.append(exc)

    worker = threading.Thread(target=get, name="healthcheck", daemon=True)
    worker.start()
    worker.join(timeout)
    if not answer:
        raise HealthDeadline(f"no complete answer within {timeout:g} s")
    if isinstance(answer[0], BaseException):
        raise answer[0]
    return answer[0]


HEALTH_KEY = "files_followed"
"""A key of the daemon's /healthz object (exporter/daemon.py Daemon.health) that another server's 200 does not hold:
`python3 -m http.server` serving a file named healthz was taken for a healthy daemon."""


def is_watchtower_health(body: str, cut: bool) -> bool:
    """The body is the daemon's /healthz JSON object; one cut at HEALTH_READ_BYTES (a long `problems` list) is
    judged by its start, where the daemon puts HEALTH_KEY."""
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return cut and body.lstrip().startswith("{") and f'"{HEALTH_KEY}":' in body
    return isinstance(data, dict) and HEALTH_KEY in data


def _healthcheck(args: argparse.Namespace) -> int:
    """0 when /healthz says ok in the daemon's own words (a 200 from another server is unhealthy). With auth on and
    no WATCHTOWER_HEALTHCHECK_USER/_PASSWORD, a 401 from the listener counts as alive (the process answers HTTP);
    with them, the full status is checked."""
    import httpx

    config = _load(args.config, preflight=False, web_config_file=args.web_config_file)
    if config is None:
        return EXIT_FAILURE  # unhealthy: Docker reserves a health check's exit 2
    host = config.listen_host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    scheme = "https" if config.web.tls_cert_file else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{config.listen_port}/healthz"
    user = os.environ.get("WATCHTOWER_HEALTHCHECK_USER")
    password = os.environ.get("WATCHTOWER_HEALTHCHECK_PASSWORD", "")
    auth: Any = (user, password) if user else None
    try:
        status, body, cut = _get_bounded(url, auth, args.timeout)
    except (httpx.HTTPError, HealthDeadline) as exc:
        print(f"unhealthy: {url}: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except OverflowError:  # the socket's deadline (the option is bounded: a caller of _healthcheck may not be)
        print(f"unhealthy: {url}: timeout {args.timeout:g} s is longer than this platform can wait", file=sys.stderr)
        return EXIT_FAILURE
    if status == 401 and auth is None and config.web.basic_auth_users:
        emit(f"alive: {url} answers (auth required; set WATCHTOWER_HEALTHCHECK_USER and "
             "WATCHTOWER_HEALTHCHECK_PASSWORD for the full check)\n")
        return EXIT_OK
    if status == 200 and is_watchtower_health(body, cut):
        emit(f"healthy: {url}\n")
        return EXIT_OK
    if status == 200:
        print(f"unhealthy: {url}: HTTP 200 but not watchtower's /healthz answer (another server on this port?): "
              f"{one_line(body)}".rstrip(), file=sys.stderr)
        return EXIT_FAILURE
    print(f"unhealthy: {url}: HTTP {status} {one_line(body)}".rstrip(), file=sys.stderr)
    return EXIT_FAILURE


def _oneshot(args: argparse.Namespace, exit_now: bool = False) -> int:
    """One pass, then exit. The start (config, logging, imports) and the metrics-only pass run without the
    cyclic garbage collector (`oneshot.no_collections`: they free what they allocate by reference counting,
    so collections would only rescan what is alive); the correlator's pass (asyncio, SQLite) keeps it.

    `exit_now` (the command line, not a caller of main()): once the metrics-only exposition is written
    and flushed, the process ends without the interpreter's teardown, which would free every frame,
    table and module one object at a time (~60 ms) only to give the memory back to the kernel."""
    from exporter import logsetup
    from exporter.oneshot import backfill_sources, no_collections

    fdlimit.raise_limit()  # a backfill of many files under `ulimit -n` as low as the hard limit allows

    if sys.stdout is None:  # nowhere to print the exposition: say so before reading anything
        raise StdoutError("it is closed")
    with no_collections():  # the config load, logging and the imports of the pass create long-lived objects
        config = _load(args.config, oneshot=True)
        if config is None:
            return EXIT_CONFIG
        config = backfill_sources(config)  # what PMTA's move-to put away is counted too
        logsetup.setup(config.log_level, config.log_format, redact_addresses=config.correlator.hash_recipients)
        if config.correlator.enabled:
            allocator.use(allocator.ONESHOT_CORRELATOR)
            from exporter.daemon import run_oneshot
        else:  # metrics only: no state database, no web stack, no event loop, no collections (exporter/oneshot.py)
            from exporter.oneshot import run_oneshot
    if exit_now and not config.correlator.enabled:  # never on again: the process ends right after the output
        gc.disable()  # a collection there would only rescan what the pass left alive (~120k objects, ~30 ms)

    try:
        with _sigterm_interrupts():
            _raise_if_interrupted()  # one lost while the config loaded: not after a whole backfill
            text = run_oneshot(config)
            _raise_if_interrupted()  # one lost during the pass: the same as one raised there
    except Terminated as exc:
        log.critical("watchtower oneshot interrupted by %s: nothing printed", exc.name)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        log.critical("watchtower oneshot interrupted: nothing printed")
        return EXIT_FAILURE
    except (SystemExit, GeneratorExit):  # (KeyboardInterrupt: above)
        raise
    except BaseException as exc:  # noqa: BLE001 - one line for the operator; the traceback only at debug level
        if isinstance(exc, Exception) and interrupted(exc):  # a ^C that came out of an import as another error
            log.critical("watchtower oneshot interrupted: nothing printed")
            return EXIT_FAILURE
        if not isinstance(exc, Exception):  # a Rust panic (pyo3_runtime.PanicException), e.g. out of descriptors
            said = " ".join(str(exc).split())
            if "TooManyOpenFiles" in said or "Too many open files" in said:
                log.critical("watchtower oneshot failed, nothing printed: too many open files (ulimit -n %s): %s: %s",
                             _fd_limit(), type(exc).__name__, said)
                log.debug("traceback", exc_info=exc)
            else:  # a bug (ours or a library's), not a limit: said as such, its traceback at debug level
                log.critical("watchtower oneshot failed, nothing printed: internal error (a bug: please report it; "
                             "`log_level: debug` shows its traceback): %s: %s", type(exc).__name__, said)
                log.debug("traceback", exc_info=exc)
            return EXIT_FAILURE
        setup = setup_problem(exc)
        if setup is not None:
            _report(args.config, [setup])
            return EXIT_CONFIG
        from exporter.state import StateError  # its messages name the file and the way out
        from exporter.writer import describe

        log.critical("watchtower oneshot failed, nothing printed: %s",
                     exc if isinstance(exc, StateError) else describe(exc))
        log.debug("traceback", exc_info=exc)
        return EXIT_FAILURE
    emit(text)
    code = EXIT_OK
    unreadable = getattr(text, "unreadable", ())
    if unreadable:  # each was named once as it failed; a backfill script must not take this for a full count
        log.error("watchtower oneshot: %d path%s could not be read; the exposition above counts only what was read",
                  len(unreadable), "" if len(unreadable) == 1 else "s")
        code = EXIT_FAILURE
    if exit_now and not config.correlator.enabled:
        _exit_now(code)
    return code


def _fd_limit() -> str:
    """The soft limit of open files, as `ulimit -n` shows it."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


class Terminated(KeyboardInterrupt):
    """SIGTERM, SIGHUP (a dropped ssh session) or SIGQUIT during a oneshot pass, raised like SIGINT's
    KeyboardInterrupt so that the same unwinding runs: the correlator's temporary store (recipient data and its
    HMAC key) is removed, not left in TMPDIR by the default action."""

    @property
    def name(self) -> str:
        return signal.Signals(self.args[0]).name


def _on_sigterm(signum: int, _frame: object) -> None:
    global _terminated_by
    _terminated_by = signum  # remembered: raised where it cannot propagate, it is raised again after (`_oneshot`)
    raise Terminated(signum)


def _raise_if_interrupted() -> None:
    """A ^C or SIGTERM the oneshot was sent that could not be raised where it landed (`ctrl_c_seen`), raised now."""
    if _terminated_by is not None:
        raise Terminated(_terminated_by)
    if _sigint_seen:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGQUIT interrupt the pass as SIGINT does (asyncio.run then cancels the pass and awaits
    its cleanup); outside the pass the default actions are back (there is nothing to clean up)."""
    taken = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    try:
        previous = [signal.signal(s, _on_sigterm) for s in taken]
    except ValueError:  # not the main thread (a test's): signals are not ours to take
        yield
        return
    try:
        yield
    finally:
        for s, handler in zip(taken, previous, strict=True):
            signal.signal(s, handler)


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
    config = _load(args.config, run=True, web_config_file=args.web_config_file)
    if config is None:
        return EXIT_CONFIG
    logsetup.setup(config.log_level, config.log_format, redact_addresses=config.correlator.hash_recipients)
    fdlimit.raise_limit()
    # (globs matching nothing: the tailer says its own)
    for warning in preflight.run_warnings(config, config_path=args.config):
        log.warning("%s", warning)
    import asyncio  # `run` only: the metrics-only oneshot has no event loop

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Not Python's own handler: asyncio.run would take that over and turn a ^C into a cancellation of serve()
        # before the daemon installs its handler, which a start-up step can absorb (a ^C lost) or surface as a
        # CancelledError. This one raises KeyboardInterrupt wherever it lands: main() says 130.
        signal.signal(signal.SIGINT, _interrupt)
    serving = None
    try:
        from exporter.daemon import Daemon

        daemon = Daemon(config, owns_process=True, config_path=args.config,  # the file: checked again on SIGHUP
                        interrupted=ctrl_c_seen, web_config_path=args.web_config_file)
        serving = daemon.serve()
        return int(asyncio.run(serving) or 0)  # ^C before it took SIGINT: main()
    except Exception as exc:  # noqa: BLE001 - one line for the operator; the traceback only at debug level
        if interrupted(exc):
            return EXIT_INTERRUPTED
        setup = setup_problem(exc)
        if setup is not None:
            _report(args.config, [setup])
            return EXIT_CONFIG
        log.critical("watchtower could not run: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=exc)
        _drop_quietly(exc)
        return EXIT_FAILURE
    finally:
        if serving is not None:  # never awaited when the event loop could not be made (no warning about it)
            serving.close()


def setup_problem(exc: BaseException) -> str | None:
    """The `key: what` line of a file the config names found unusable as the daemon set up, after the checks passed
    (correlator.hmac_key_file changed since): said as check-config says it, exit 2. None for anything else. Looked up
    in sys.modules: such an error was raised by the correlator, so its module is loaded (none imported here)."""
    keys = sys.modules.get("correlator.keys")
    if keys is not None and isinstance(exc, keys.KeyFileError):
        return str(exc)
    return None


def _drop_quietly(exc: BaseException) -> None:
    """Free what `exc`'s frames hold without the noise of a half-made event loop: one whose self-pipe could not be
    made (out of descriptors, `ulimit -n`) fails again in its __del__ (`no attribute '_ssock'`), said after the
    one line that named the problem."""
    import traceback

    hook = sys.unraisablehook

    def quiet(unraisable: sys.UnraisableHookArgs) -> None:
        if not (isinstance(unraisable.exc_value, AttributeError) and "_ssock" in str(unraisable.exc_value)):
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        traceback.clear_frames(exc.__traceback__)
        gc.collect()
    finally:
        sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    """The command line (`argv` None: sys.argv); tests call it with `argv`, and then it always returns.

    Standard output that cannot be written is handled here, once for every subcommand: one line on stderr,
    exit 1; a reader that went away (`| head`) ends the command quietly, as Unix tools do."""
    global _sigint_seen, _terminated_by
    _sigint_seen = False
    _terminated_by = None
    handler = signal.getsignal(signal.SIGINT)
    if handler is _interrupted_while_importing or (argv is None and handler is signal.default_int_handler):
        # From here main() catches KeyboardInterrupt; restored any earlier (at the end of this module's import), a
        # ^C landing in the rest of the import printed a traceback (seen once, fresh-clone suite). The command's
        # handler remembers a ^C (`_interrupt`); a caller's own handler (tests pass `argv`) is left alone
        signal.signal(signal.SIGINT, _interrupt if argv is None else signal.default_int_handler)
    if argv is None and sys.unraisablehook is sys.__unraisablehook__:  # the command line: this process is ours
        sys.unraisablehook = _quiet_lost_ctrl_c
    try:
        try:
            code = _main(argv)
        except SystemExit as done:  # argparse's --version/--help print to stdout too
            _flush_stdout()
            raise done from None
        except KeyboardInterrupt:  # ^C before a command took SIGINT over (imports, checks): no traceback
            return EXIT_INTERRUPTED
        except Exception as exc:
            if interrupted(exc):
                return EXIT_INTERRUPTED
            raise
        _flush_stdout()
        return code
    except StdoutError as exc:
        if not exc.broken_pipe:
            print(f"watchtower: cannot write to standard output: {exc}", file=sys.stderr)
        abandon_stdout(argv is None)
        return EXIT_FAILURE


def interrupted(exc: BaseException) -> bool:
    """Is `exc` a ^C in disguise? A KeyboardInterrupt raised while an import creates a class comes out of
    `__set_name__` as Python 3.11's `RuntimeError: Error calling __set_name__ ...` (seen once, 0.46 s into `run`), and
    one raised in a C extension's import as whatever it was doing then (`TypeError: expected a message argument`):
    any error once a ^C was seen (`_interrupt`) is taken for it."""
    if _sigint_seen:
        return True
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: causes of causes
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _flush_stdout() -> None:
    """What is still buffered for stdout, written now (a failure is a StdoutError, not an exit-time warning)."""
    if sys.stdout is not None:
        emit("")


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
    except SystemExit as usage:
        if usage.code == EXIT_CONFIG and words[:1] == ["healthcheck"]:  # Docker reserves a health check's 2
            raise SystemExit(EXIT_FAILURE) from None
        raise
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "healthcheck":
        return _healthcheck(args)
    if args.command == "demo":
        from exporter import logsetup
        from simulator.demo import run_demo

        logsetup.setup("info", "text")
        return run_demo(args, interrupted=ctrl_c_seen)
    if args.command == "hub":
        from hub.app import run_hub

        return run_hub(args.config, interrupted=ctrl_c_seen, web_config_file=args.web_config_file)
    return _run(args, exit_now=argv is None)


if signal.getsignal(signal.SIGINT) is _interrupted_while_importing:
    # The last statement of the import (main() restores it too): from here a ^C is a KeyboardInterrupt, which
    # main() catches, and a library user (a test process) gets Python's own handler back
    signal.signal(signal.SIGINT, signal.default_int_handler)
