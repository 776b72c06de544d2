"""One Gmail-throttle stack for the whole e2e session: simulator -> `watchtower run` (correlator on) ->
Prometheus (shipped rules, scaled) -> Alertmanager -> webhook.

The alert test and the live panel test share it: both need the incident in full swing (the critical
PmtaIspThrottling page delivered), which takes most of the stack's lifetime, so sharing saves a whole
scenario run. Prometheus also scrapes itself (job `prometheus`), as a shared Prometheus would, so
the dashboards' `job` filter is tested against a foreign target.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, Watchtower, free_port
from tests.e2e.stack import Stack

SPEED = 60.0
CRITICAL_TIMEOUT = 240.0


def run_sim(scenario: str, out: Path, api_port: int, start_now: bool = False,
            start: str | None = None) -> subprocess.Popen[bytes]:
    """The simulator, SPEED times real time; `start` a simulated start (ISO 8601), `start_now` the wall clock's."""
    log = open(out.parent / "sim.log", "ab")  # noqa: SIM115 - closed with the process
    when = "now" if start_now else start
    return subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "run", "--scenario", scenario, "--out", str(out),
         "--speed", str(SPEED), "--api", f"127.0.0.1:{api_port}", *(["--start", when] if when else [])],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def exporter_config(tmp: Path, logs: Path, api_port: int, correlator: bool = False) -> Path:
    cfg = {
        "sources": [
            {"name": "acct", "paths": [str(logs / "acct-*.csv")], "records": ["d", "b"]},
            {"name": "diag", "paths": [str(logs / "diag-*.csv")], "records": ["t", "tq"]},
            {"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]},
            {"name": "bounce", "paths": [str(logs / "bounce-*.csv")], "records": ["rb", "rs"]},
        ],
        "state_dir": str(tmp / "state"),
        "listen": f"127.0.0.1:{free_port()}",
        "tail": {"start_position": "beginning", "poll_interval": 0.2, "rescan_interval": 0.5},
        "pmta": {"url": f"http://127.0.0.1:{api_port}", "poll_interval": 1, "timeout": 2},
        "correlator": {"enabled": correlator},
    }
    path = tmp / "watchtower.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Pipeline:
    stack: Stack
    wt: Watchtower
    sim_started: float
    """Wall time the simulator started; its simulated clock (the records' times) began there too."""
    critical: dict[str, Any] | None = None
    critical_at: float | None = None
    """Wall time the critical page arrived: the dashboards are read as of then (the incident moves on: at ~99
    simulated minutes a backlog warning joins it, and it ends later, however long a slow machine takes to read)."""

    def record_time(self, wall: float) -> float:
        """The simulated time the records carry at wall time `wall` (SPEED x faster, plus a margin)."""
        return self.sim_started + (wall - self.sim_started) * SPEED + 2 * SPEED


def is_critical_gmail_throttle(a: dict[str, Any]) -> bool:
    lab = a["labels"]
    return (lab.get("alertname") == "PmtaIspThrottling" and lab.get("severity") == "critical"
            and lab.get("vmta") == "vmta-03" and lab.get("isp") == "gmail")


def wait_for_alert(stack: Stack, predicate: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [a for a in stack.webhook.alerts() if predicate(a)]
        if hits:
            return hits[0]
        time.sleep(0.5)
    firing = [(a["labels"].get("alertname"), a["labels"].get("vmta"), a["labels"].get("isp")) for a in stack.firing()]
    raise AssertionError(f"no matching alert in {timeout}s; firing in Prometheus: {firing}; "
                         f"webhook got {len(stack.webhook.alerts())} alerts")


_SHARED: list[Callable[[], None]] = []
"""Closers of the session's shared stacks, so the next stack can stop them first (2 cores)."""


def release_shared_stacks() -> None:
    """Stop the shared stack(s): their users ran first (pytest_collection_modifyitems)."""
    while _SHARED:
        _SHARED.pop()()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Within tests/e2e/, the tests of the shared Gmail-throttle stack run first and back to back, while
    the incident is on (the rest of the session keeps its order)."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if here in Path(str(item.fspath)).parents]
    ours = sorted((items[i] for i in slots), key=lambda it: "gmail_throttle" not in getattr(it, "fixturenames", ()))
    for i, item in zip(slots, ours, strict=True):
        items[i] = item


@pytest.fixture(scope="session")
def gmail_throttle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The Gmail-throttle stack, yielded once the critical vmta-03 x gmail page has been delivered."""
    tmp = tmp_path_factory.mktemp("gmail-throttle")
    logs = tmp / "logs"
    logs.mkdir()
    api_port = free_port()
    sim_started = time.time()
    sim = run_sim("gmail-throttle", logs, api_port, start_now=True)
    parts: dict[str, Any] = {}

    def close() -> None:
        if "stack" in parts:
            parts.pop("stack").close()
        wt = parts.pop("wt", None)
        if wt is not None and wt.proc is not None:
            wt.stop()
        if sim.poll() is None:
            sim.terminate()
            sim.wait(timeout=20)

    _SHARED.append(close)
    try:
        parts["wt"] = wt = Watchtower(exporter_config(tmp, logs, api_port, correlator=True)).start()
        parts["stack"] = stack = Stack(tmp, wt.listen, SPEED, self_scrape=True)
        pipeline = Pipeline(stack, wt, sim_started)
        pipeline.critical = wait_for_alert(stack, is_critical_gmail_throttle, CRITICAL_TIMEOUT)
        pipeline.critical_at = time.time()
        yield pipeline
    finally:
        close()
        if close in _SHARED:
            _SHARED.remove(close)
