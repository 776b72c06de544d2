"""Shared fixtures: a real `watchtower run` process on loopback, PMTA-like files, exposition reading."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.client import HTTP

REPO = Path(__file__).resolve().parent.parent
settings.register_profile("watchtower", deadline=None)
settings.load_profile("watchtower")
"""No per-example deadline in any property test (Hypothesis's default is 200 ms): a loaded CI machine may stall one
example that long, and a deadline miss fails the test though nothing is wrong. Each test's max_examples bounds it."""
os.environ.setdefault("GOGC", "400")
"""Go's collector for the Go programs the tests start (promtool, amtool, Prometheus, Alertmanager) runs a quarter as
often: `promtool test rules` over rules/tests took 27.4 s of CPU at Go's default (100), 22.8 s at 400, with a peak of
~280 MB instead of ~140 MB. Their results do not depend on it."""
pytest_plugins = ["tests.browser.hostile"]  # the `hostile` and `private` daemon + hub fixtures of the /ui tests

ACCT_HEADER = (
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,"
    "dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool"
)


PORTS_PER_WORKER = 1500
PORTS_FROM = 20000
"""Test listeners take ports below the kernel's ephemeral range (32768-60999 by default), a block per xdist worker.
A port the kernel handed out for bind(0) could be taken, before the daemon bound it, by an outgoing connection of
another test (those use the ephemeral range) or by the other worker: `address already in use` (seen in CI)."""
_next_port = [os.getpid() % PORTS_PER_WORKER]  # two test runs side by side (-n0) start at different places


def free_port() -> int:
    """A loopback port free now, from this worker's block; cycles through the block, skipping ports in use."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = PORTS_FROM + (int(worker) if worker.isdigit() else 0) % 8 * PORTS_PER_WORKER
    for _ in range(PORTS_PER_WORKER):
        port = base + _next_port[0] % PORTS_PER_WORKER
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {base}-{base + PORTS_PER_WORKER - 1}")


def correlator_pid(daemon_pid: int) -> int:
    """The correlator process: the daemon's child running multiprocessing's spawn_main (not its resource tracker)."""
    for _ in range(100):
        for child in Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:  # exited meanwhile
                continue
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                return int(child)
        time.sleep(0.1)
    raise AssertionError("no correlator process")


RECORD_DAY = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
"""Date of the records the writers below produce: yesterday (UTC). A fixed date aged past the daemon's default
`correlator.retention` (7 days) seven days after it, and its timelines were then pruned in the middle of tests."""


def d_line(n: int, vmta: str = "vmta-1", domain: str = "gmail.com", pool: str = "pool-a") -> str:
    """One realistic `d` record with a unique recipient (default acct field order)."""
    return (
        f"d,{RECORD_DAY} 12:00:{n % 60:02d}+0000,{RECORD_DAY} 11:59:00+0000,bounce@sender.example,u{n}@{domain},,"
        f"relayed,2.0.0 (success),smtp;250 2.0.0 OK {n} - gsmtp,gmail-smtp-in.l.google.com (142.250.1.27),"
        f"success,smtp,app (10.0.0.1),smtp,10.1.1.1,142.250.1.27,\"PIPELINING,8BITMIME\",1234,{vmta},job{n % 7},,"
        f"{domain}/{vmta},{pool}"
    )


class AcctWriter:
    """Writes PMTA-style rotated files into a directory and keeps the ground truth."""

    def __init__(self, directory: Path, base: str = "acct", form: str = "csv") -> None:
        self.dir = directory
        self.base = base
        self.form = form
        """csv, or json: PMTA's JSON accounting form (one object per line, no header line)."""
        self.seq = 0
        self.n = 0
        self.written: dict[str, int] = {}
        self.path = self.rotate()

    def rotate(self) -> Path:
        """Start a new file as PMTA does: a higher -NNNN, a header line first."""
        self.path = self.dir / f"{self.base}-2026-11-25-{self.seq:04d}.{self.form}"
        self.seq += 1
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(ACCT_HEADER + "\n" if self.form == "csv" else "")
        return self.path

    def line(self, n: int, vmta: str) -> str:
        text = d_line(n, vmta)
        if self.form == "csv":
            return text
        return json.dumps(dict(zip(ACCT_HEADER.split(","), next(csv.reader([text])), strict=True)))

    def write(self, count: int, vmta: str = "vmta-1", path: Path | None = None) -> None:
        with open(path or self.path, "a", encoding="utf-8") as f:
            for _ in range(count):
                f.write(self.line(self.n, vmta) + "\n")
                self.n += 1
        self.written[vmta] = self.written.get(vmta, 0) + count

    @property
    def total(self) -> int:
        return sum(self.written.values())


def write_config(tmp: Path, sources: list[dict[str, Any]] | None = None, **overrides: Any) -> Path:
    cfg: dict[str, Any] = {
        "sources": sources or [{"name": "acct", "paths": [str(tmp / "logs" / "acct-*.csv")]}],
        "state_dir": str(tmp / "state"),
        "listen": f"127.0.0.1:{free_port()}",
        "tail": {"start_position": "beginning", "poll_interval": 0.05, "rescan_interval": 0.05,
                 "checkpoint_interval": 0.1},
        "correlator": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    (tmp / "logs").mkdir(exist_ok=True)
    path = tmp / "watchtower.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """All samples of a /metrics page keyed by (name, sorted labels)."""
    text = HTTP.get(url, timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


class Watchtower:
    """A `watchtower run` subprocess: start, stop gracefully, kill -9, scrape."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.listen = yaml.safe_load(config.read_text())["listen"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "watchtower.log"

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def start(self) -> Watchtower:
        logf = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(self.config)],
            stdout=logf, stderr=subprocess.STDOUT, cwd=REPO,
        )
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"watchtower exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if HTTP.get(self.url + "/healthz", timeout=1).status_code in (200, 503):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("watchtower did not start listening: " + self.log.read_text()[-3000:])

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.proc = None
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.url + "/metrics")

    def wait_for(self, check: Callable[[dict[Any, float]], bool], timeout: float = 30.0) -> dict[Any, float]:
        """Scrape until `check` holds (bounded); returns the last scrape."""
        deadline = time.monotonic() + timeout
        samples: dict[Any, float] = {}
        while time.monotonic() < deadline:
            try:
                samples = self.scrape()
                if check(samples):
                    return samples
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"condition not met in {timeout}s; last delivered total "
                             f"{total(samples, 'pmta_delivered_total')}; log: {self.log.read_text()[-2000:]}")

    def committed(self, timeout: float = 120.0) -> None:
        """Wait until everything read is in the state database: the correlator (its own process by default)
        may trail /metrics, and a stop leaves what it has not stored to the next start."""
        deadline = time.monotonic() + timeout
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            health = HTTP.get(self.url + "/healthz", timeout=5).json()
            if health.get("commit_backlog_rows") == 0 and health.get("commit_backlog_bytes") == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"commit backlog not drained in {timeout}s: {health}")

    def settle(self) -> dict[Any, float]:
        """Scrape after the daemon has had time for several more poll passes (to catch over-counting)."""
        time.sleep(0.5)
        return self.scrape()


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """Commands run in-process (`main([...])`) install their log handler on the root logger, bound to the test's
    captured stderr: left there, a later test's log line goes to a closed stream ('--- Logging error ---')."""
    import logging

    from exporter.logsetup import PER_REQUEST_LOGGERS

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in PER_REQUEST_LOGGERS}  # setup() and the hub set them
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.fixture
def watchtower_factory(tmp_path: Path) -> Iterator[Callable[[Path], Watchtower]]:
    started: list[Watchtower] = []

    def make(config: Path) -> Watchtower:
        wt = Watchtower(config)
        started.append(wt)
        return wt

    yield make
    for wt in started:
        if wt.proc is not None:
            wt.proc.kill()
            wt.proc.wait()


def oneshot_nonzero(tmp_path: Path, correlator: bool, prefixes: tuple[str, ...], **config: Any) -> dict[str, float]:
    """`watchtower oneshot` over tmp_path/logs/*.csv (one source `acct`), correlator on or off: its non-zero samples
    whose names start with `prefixes` (tests compare the two runs)."""
    cfg = write_config(tmp_path / ("on" if correlator else "off"),
                       [{"name": "acct", "paths": [str(tmp_path / "logs" / "*.csv")]}],
                       correlator={"enabled": correlator}, **config)
    proc = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(cfg)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith(prefixes):
            name, _, v = line.rpartition(" ")
            if float(v):
                out[name] = float(v)
    return out


SHARED_STACKS = {"gmail_throttle": "e2e", "hostile": "ui-stack", "private": "ui-stack", "wide_hub": "ui-stack",
                 "driver": "ui-stack", "browser_cluster": "ui-stack"}
"""Session fixtures that start whole stacks (Prometheus + Alertmanager + daemon, daemons + hub, chromium) -> the group
of tests `make check` runs on one xdist worker (`pytest -n 3`), so that each stack is started once."""
STACK_GROUPS = (("tests/e2e/", "e2e"), ("tests/browser/", "ui-stack"), ("tests/test_pages_audit.py", "ui-stack"),
                ("tests/hub/test_hub.py", "ui-stack"))
"""Where the users of SHARED_STACKS are (tests/hub/test_hub.py's `cluster` is the browser tests' own: hub/conftest.py
`acquire`). The e2e group runs in the order tests/e2e/conftest.py sets: the shared stack's tests first."""


def run_group(nodeid: str) -> str:
    """The unit one xdist worker runs whole: a stack's group, else the test's file (its module fixtures set up once)."""
    path = nodeid.split("::", 1)[0]
    return next((group for prefix, group in STACK_GROUPS if path.startswith(prefix)), path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a shared stack outside its group would start a second one on the other worker: refused."""
    wrong = [f"{item.nodeid} uses {fixture}" for item in items for fixture, group in SHARED_STACKS.items()
             if fixture in getattr(item, "fixturenames", ()) and run_group(item.nodeid) != group]
    if wrong:
        raise pytest.UsageError("tests/conftest.py STACK_GROUPS: add these tests' files to their stack's group: "
                                + "; ".join(wrong))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's loadscope, scoped by run_group (xdist 3.8's `--dist loadgroup` did not keep marked tests together
    under pytest 9.2: tried, they ran on both workers)."""
    from xdist.scheduler import LoadScopeScheduling

    class StackScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return run_group(nodeid)

    return StackScheduling(config, log)
