"""`watchtower demo`: a simulated PMTA host and the exporter reading it, on loopback, in one process.

The simulator writes accounting files into <dir>/logs and serves its management API on a free
loopback port; a generated watchtower config points the exporter at both (from the beginning of
the files), and the exporter daemon runs next to it in the same event loop. Stops on Ctrl-C,
SIGTERM or after `--duration` real seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from simulator.config import SimConfig
from simulator.engine import Simulator
from simulator.scenario import ScenarioError, load_scenario
from simulator.server import ApiServer
from simulator.yamlfile import YamlFileError

log = logging.getLogger("watchtower.demo")
FAMILIES = ("acct", "diag", "fbl", "bounce")


def demo_config(directory: Path, listen: str, api_url: str) -> dict[str, Any]:
    """The watchtower config (as data) for a demo rooted at `directory`. Its store is capped and kept a day: a
    demo may be left running for weeks (the compose file's runs on a tmpfs, in RAM)."""
    logs = directory / "logs"
    return {
        "sources": [{"name": fam, "paths": [str(logs / f"{fam}-*.csv")]} for fam in FAMILIES],
        "state_dir": str(directory / "state"),
        "listen": listen,
        "tail": {"start_position": "beginning", "poll_interval": 0.5},
        "pmta": {"url": api_url, "poll_interval": 5, "timeout": 2},
        "correlator": {"max_db_size": "256MiB", "retention": "1d"},
    }


def demo_sim_config() -> SimConfig:
    """The simulator's files for a demo: 32 MiB each at most, deleted an hour after their last write (PMTA's
    delete-after), so the logs of a demo left running stay near 32 MiB a family plus an hour of traffic."""
    base = SimConfig()
    return base.model_copy(update={"files": [f.model_copy(update={"max_size": 32 * 1024**2, "delete_after": 3600.0})
                                             for f in base.files]})


async def serve_exporter(config_path: Path) -> Any:
    """Start the exporter daemon for `config_path`; returns (daemon, task). The one integration call."""
    from exporter.config import load_config
    from exporter.daemon import Daemon

    daemon = Daemon(load_config(config_path))
    return daemon, asyncio.create_task(daemon.serve(), name="watchtower")


async def _started(daemon: Any, exporter: asyncio.Task[Any]) -> bool:
    """Whether the exporter is up (its listener bound): its serve() returns 1 instead when it cannot start, and the
    banner would send the user to a port that is not the demo's."""
    started = getattr(daemon, "started", None)
    if started is None:  # a stand-in (tests)
        return True
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({waiting, exporter}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    return started.is_set() and not exporter.done()


FIRST_RECORDS_WITHIN = 60
"""Simulated seconds the demo may run ahead at once so that the first accounting files exist before the
exporter's first scan (one step wrote none: the first delivery takes a few simulated seconds)."""


def _first_records(sim: Simulator) -> list[str]:
    """Step the simulator until each family has written its first file, for at most FIRST_RECORDS_WITHIN
    simulated seconds; returns the families still without one (their records come later)."""
    assert sim.files is not None
    files = sim.files.files
    for _ in range(FIRST_RECORDS_WITHIN):
        if all(f.paths for f in files):
            break
        sim.step()
    return [f.spec.name for f in files if not f.paths]


SIMULATED_DAY = 86_400
"""The window the banner's replies line reads when simulated time runs ahead (a day: 24 minutes at --speed 60; the
most /api/v1/replies reads)."""


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _banner(sim: Simulator, api: str, listen: str, directory: Path, config_path: Path, speed: float,
            later: list[str]) -> str:
    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host
    metrics = f"http://{host}:{port}/metrics"
    pace = "simulated time = real time" if speed == 1 else f"{speed:g} simulated seconds per real second"
    ahead = "" if speed == 1 else f"&since={_iso(sim.start)}&until={_iso(sim.start + SIMULATED_DAY)}"
    desc = textwrap.fill(" ".join(sim.scenario.description.split()), width=100, initial_indent="  ",
                         subsequent_indent="  ")
    return "\n".join([
        f"PMTA Watchtower demo: scenario '{sim.scenario.name}' ({pace})",
        desc,
        "",
        f"  metrics           {metrics}",
        f"  simulated PMTA    {api}/status?format=json",
        f"  accounting files  {directory / 'logs'}",
        f"  exporter config   {config_path}",
        "",
        "Try (first numbers appear within a few seconds):",
        f"  curl -s {metrics} | grep -E '^pmta_(delivered|deferred|bounced)_total'",
        f"  curl -s {metrics} | grep '^pmta_queue_recipients'",
        f"  curl -s '{api}/queues?format=json'",
        f"  curl -s '{api}/vmtas?format=xml'",
        f"  curl -s 'http://{host}:{port}/api/v1/search?outcome=deferred&limit=3&format=text'   # message timelines",
        f"  curl -s 'http://{host}:{port}/api/v1/flows'   # sender -> VMTA -> ISP (Grafana node graph)",
        *([f"  curl -s 'http://{host}:{port}/api/v1/replies?vmta=vmta-03{ahead}'   # a VMTA's top replies"]
          if ahead else []),
        f"  curl -s 'http://{host}:{port}/healthz'",
        f"  pages (search, message forensics, flows): http://{host}:{port}/ui/",
        f"  {Path(sys.executable).parent / 'watchtower'} oneshot --config {config_path}   # the same files, once",
        "Timed events are minutes into the scenario; `make demo DEMO_ARGS='--speed 60'` (or `watchtower demo "
        "--speed 60`) shows them sooner. Ctrl-C stops.",
        *([f"At --speed {speed:g} the records' times run ahead of the clock: /api/v1/replies (and the dashboards' "
           "top replies), whose window ends now by default, need an `until` ahead, as the replies line above has."]
          if ahead else []),
        *([f"No {' or '.join(later)} file yet: the simulator creates one with its first such record;"
           " until then the exporter warns that the glob matches no file (yet)."] if later else []),
    ])


def _unusable_dir(directory: Path) -> str | None:
    """Why the demo cannot write its logs and state under `directory` (made if missing), or None."""
    try:
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)  # simulated recipients: private like real ones
        probe = directory / "logs"
        probe.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        return f"cannot create directories there ({exc.strerror or exc})"
    return None


def run_demo(args: argparse.Namespace, interrupted: Callable[[], bool] | None = None) -> int:
    """`watchtower demo`. `interrupted`: whether the command saw a ^C before the demo took SIGINT over
    (exporter.cli.ctrl_c_seen), one lost where it landed: the demo then stops before starting anything."""
    try:
        scenario = load_scenario(args.scenario)
        demo_sim_config().for_scenario(scenario, str(args.scenario))  # its pools against the senders' pools
    except (ScenarioError, YamlFileError) as exc:
        print(f"watchtower demo: {exc}", file=sys.stderr)
        return 2
    temp = args.dir is None
    # Absolute, `~` expanded: the generated config's paths must be (the exporter refuses relative ones, naming a
    # file the operator never wrote), and the simulator must write where that config reads.
    given = None if temp else Path(os.path.expanduser(args.dir)).absolute()
    if given is not None and given.exists() and not given.is_dir():
        print(f"watchtower demo: --dir {args.dir} is not a directory", file=sys.stderr)
        return 2
    if given is not None and (problem := _unusable_dir(given)):
        print(f"watchtower demo: --dir {args.dir}: {problem}", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="watchtower-demo-")) if given is None else given
    try:
        return asyncio.run(_demo(scenario, directory, args.listen, args.speed or 1.0, args.duration, interrupted))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback only at debug level
        print(f"watchtower demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        log.debug("traceback", exc_info=exc)
        return 1
    finally:
        if temp:
            shutil.rmtree(directory, ignore_errors=True)


async def _demo(scenario: Any, directory: Path, listen: str, speed: float, duration: float | None,
                interrupted: Callable[[], bool] | None = None) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    # At real speed the simulation starts FIRST_RECORDS_WITHIN seconds in the past: the steps before the exporter
    # starts (_first_records) are history, and the run catches up with the wall clock, so no record is stamped
    # in the future (PMTA's never are). Faster, simulated time runs ahead of the wall clock by design.
    real_time = speed == 1
    now = int(time.time())
    sim = Simulator(scenario, directory / "logs", config=demo_sim_config(),
                    start=now - FIRST_RECORDS_WITHIN if real_time else now)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if interrupted is not None and interrupted():  # a ^C from before that could not be raised where it landed
        sim.close()
        return 130
    async with ApiServer(sim) as api:
        config_path = directory / "watchtower.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(directory, listen, api.url), sort_keys=False),
                               encoding="utf-8")
        later = _first_records(sim)
        daemon, exporter = await serve_exporter(config_path)
        if not await _started(daemon, exporter):
            sim.close()
            if exporter.done() and not exporter.cancelled() and exporter.exception() is None \
                    and exporter.result() == 0:  # stopped (^C, SIGTERM) before it started: waiting for its address
                return 0
            print("watchtower demo: the exporter did not start (see the error above)", file=sys.stderr)
            return 1
        print(_banner(sim, api.url, listen, directory, config_path, speed, later), flush=True)
        sim_task = asyncio.create_task(sim.run(speed, stop=stop, duration=duration,
                                               start_at=time.time() if real_time else None), name="pmta-sim")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({sim_task, exporter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            if hasattr(daemon, "should_exit"):
                daemon.should_exit.set()
            else:
                exporter.cancel()
            results = await asyncio.gather(sim_task, exporter, stopper, return_exceptions=True)
            sim.close()
    failed = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    for exc in failed:
        print(f"watchtower demo: {type(exc).__name__}: {exc}", file=sys.stderr)
    code = results[1]  # Daemon.serve()'s exit code: 1 when it could not run on
    return 1 if failed or (type(code) is int and code != 0) else 0
