"""`pmta-sim`: list scenarios, generate files as fast as possible, or run live with the management API.

    pmta-sim list
    pmta-sim generate --scenario gmail-throttle --out /tmp/pmta [--minutes 90] [--truth truth.json]
    pmta-sim run --scenario noise --out /tmp/pmta --speed 600 [--api 127.0.0.1:8080] [--duration 60]

Exit codes: 0 ok, 1 runtime failure (an output that cannot be written), 2 bad arguments, scenario or config.
No traceback reaches the terminal: every failure is one line, as with `watchtower`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from exporter.cliargs import MAX_DURATION, MAX_SPEED, abandon_stdout, at_most
from simulator import interrupted_while_importing as _interrupted_while_importing
from simulator.config import SimConfig
from simulator.engine import Simulator
from simulator.scenario import ScenarioError, list_scenarios, load_scenario, start_epoch
from simulator.server import ApiServer
from simulator.yamlfile import YamlFileError, keys_of, read_mapping, validation_problem

EXIT_INTERRUPTED = 130

MAX_MINUTES = MAX_DURATION / 60
"""Most `generate --minutes`: 30 simulated days, as `run --duration` (about 13 GB of files at the baseline's 10
recipients a second; `--minutes 1e9` wrote 200 MB in 20 s and went on)."""


def host_port(text: str) -> tuple[str, int]:
    """argparse type of --api: host:port, port 0-65535 (0: a free port); a bare host or :port is allowed."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "0"
    if host.startswith("[") or host.endswith("]"):  # [::1]:8080; `[::1:8080` or `::1]:8080` is a typo
        if not (host.startswith("[") and host.endswith("]")) or not host[1:-1]:
            raise argparse.ArgumentTypeError(f"expected host:port ([addr]:port for IPv6), got {text!r}")
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"expected host:port (an IPv6 address in brackets: [::1]:8080), got {text!r}")
    if not port.isdigit() or int(port) > 65535 or any(c.isspace() or c in "[]" for c in host):
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host or "127.0.0.1", int(port)


def a_path(text: str) -> Path:
    """argparse type of --out, --truth, --config: a path that is not empty (Path("") is the working directory)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r} (a NUL character)")
    return Path(text)


def a_start(text: str) -> str:
    """argparse type of --start: `now`, or ISO 8601 with an offset that the simulated clock can run from."""
    if text == "now":
        return text
    try:
        start_epoch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pmta-sim", description="Simulated PowerMTA: accounting files + management API.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped scenarios")
    for name, text in (("generate", "write N simulated minutes as fast as possible, print the ground truth"),
                       ("run", "run in step with the wall clock and serve the management API")):
        c = sub.add_parser(name, help=text)
        c.add_argument("--scenario", default="baseline", help="scenario name or YAML file (default baseline)")
        c.add_argument("--out", type=a_path, required=True, help="directory for the accounting files")
        c.add_argument("--seed", type=int, default=None, help="random seed (default: config, 1)")
        c.add_argument("--start", type=a_start, default=None,
                       help="simulated start, ISO 8601 with offset, or 'now' (default: the scenario's)")
        c.add_argument("--config", type=a_path, default=None, help="simulator settings YAML (docs/simulator.md)")
    gen = sub.choices["generate"]
    gen.add_argument("--minutes", type=at_most(MAX_MINUTES), default=None,
                     help=f"simulated minutes (default: scenario duration; at most {MAX_MINUTES:.0f} (30 days), "
                          "as run's --duration)")
    gen.add_argument("--truth", type=a_path, default=None, help="write the ground truth JSON here")
    run = sub.choices["run"]
    run.add_argument("--speed", type=at_most(MAX_SPEED), default=1.0,
                     help="simulated seconds per real second (default 1, at most 3600)")
    run.add_argument("--api", type=host_port, default="127.0.0.1:0",
                     help="host:port of the management API (default: a free port)")
    run.add_argument("--duration", type=at_most(MAX_DURATION), default=None, help="stop after this many real seconds")
    return p


def load_sim_config(path: Path | None) -> SimConfig:
    """The `--config` settings (an empty file: the defaults); YamlFileError in one line naming the file and the key,
    read as a scenario is (bounded: /dev/zero, a FIFO)."""
    if path is None:
        return SimConfig()
    data = read_mapping(path, "simulator config", keys_of(SimConfig), empty=True)
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, str(path)) from None


def build_simulator(args: argparse.Namespace) -> Simulator:
    start = int(time.time()) if args.start == "now" else args.start
    scenario = load_scenario(args.scenario)
    config = load_sim_config(args.config)
    where = str(args.scenario) + (f" (with --config {args.config})" if args.config is not None else "")
    config.for_scenario(scenario, where)  # the scenario's pools against the settings' senders: one line, exit 2
    return Simulator(scenario, args.out, config=config, seed=args.seed, start=start)


def main(argv: list[str] | None = None) -> int:
    """The command line; every failure is one line on stderr: exit 2 for bad arguments, 1 at run time, 130 on ^C.
    A reader that went away (`pmta-sim list | head`) ends it quietly (exit 1), as with `watchtower`."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_importing:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here main() catches KeyboardInterrupt
    try:
        try:
            args = _parser().parse_args(argv)
            code = _guarded(args)
            if sys.stdout is not None:
                sys.stdout.flush()
            return code
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    except BrokenPipeError:
        abandon_stdout(argv is None)
        return 1


def _guarded(args: argparse.Namespace) -> int:
    try:
        return _main(args)
    except BrokenPipeError:
        raise
    except OSError as exc:  # an output that cannot be written: the --out directory, --truth, the API's address
        if exc.errno == errno.EPIPE:
            raise BrokenPipeError(*exc.args) from None
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pmta-sim: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"pmta-sim: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    if args.command == "list":
        for name in list_scenarios():
            desc = " ".join(load_scenario(name).description.split())
            print(f"{name:24} {desc[:100]}")
        return 0
    try:
        sim = build_simulator(args)
    except ValidationError as exc:  # not expected (every path above names its file): still one line
        print(f"pmta-sim: {validation_problem(exc, str(args.scenario))}", file=sys.stderr)
        return 2
    except (ScenarioError, YamlFileError, ValueError, OSError) as exc:
        print(f"pmta-sim: {exc}", file=sys.stderr)
        return 2
    if args.command == "generate":
        truth = sim.generate(args.minutes)
        if args.truth:
            try:
                args.truth.write_text(truth.to_json(), encoding="utf-8")
            except OSError as exc:
                print(f"pmta-sim: cannot write --truth {args.truth}: {exc.strerror or exc}", file=sys.stderr)
                return 1
        counts = ", ".join(f"{t}={n}" for (t,), n in sorted(truth.by("type").items()))
        print(f"{sim.scenario.name}: {truth.injected} recipients injected; records {counts}")
        for path in truth.files:
            print(f"  {path}")
        return 0
    host, port = args.api
    return asyncio.run(_run(sim, args.speed, args.duration, host, port))


async def _run(sim: Simulator, speed: float, duration: float | None, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    api = ApiServer(sim, host, port)
    try:
        await api.start()
    except OSError as exc:  # a name that does not resolve, an address in use or not ours
        sim.close()
        shown = f"[{host}]" if ":" in host else host
        print(f"pmta-sim: --api {shown}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        print(f"pmta-sim: scenario {sim.scenario.name} at {speed:g}x, files in {sim.out_dir}", flush=True)
        print(f"pmta-sim: management API {api.url}/status?format=json  (Ctrl-C stops)", flush=True)
        try:
            await sim.run(speed, stop=stop, duration=duration)
        finally:
            sim.close()
    finally:
        await api.stop()
    return 0


if signal.getsignal(signal.SIGINT) is _interrupted_while_importing:
    # The last statement of the import (main() restores it too): from here a ^C is a KeyboardInterrupt, which
    # main() catches
    signal.signal(signal.SIGINT, signal.default_int_handler)

if __name__ == "__main__":
    sys.exit(main())
