"""A daemon (and a hub in front of it) whose accounting file holds hostile and awkward values: bidi
overrides and terminal escapes in recipients, jobs and replies, markup in replies, Message-Ids made
of dots or holding `/`, `?`, `#`, `%`, many VMTAs (a crowded Sankey column), a timeline without
Message-Id; and a daemon with `hash_recipients` and basic auth, with a hub that needs auth too."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.client import HTTP
from tests.conftest import ACCT_HEADER, REPO, Watchtower, write_config
from tests.hub.cluster import HubProcess, acct_row

RLO = "\u202e"
MARKUP = '"><img src=x onerror=alert(1)>'
SPOOF_JOB = f"job{RLO}1"
SPOOF_RCPT = f"evil{RLO}liam@gmail.com"
SPOOF_MESSAGE = "slash/mid@x"
ODD_MESSAGE = "a?b#c%d@x"
DOTS_MESSAGE = ".."
CROWDED_VMTAS = 80
INTL_RCPT, INTL_VMTA, INTL_JOB = "用户@例子.中国", "خادم-1", "وظيفة-7"
LONG_SENDER = "newsletters.customer-engagement.marketing-department.example-company.example"
LONG_JOB = "campaign-" + "x" * 400  # no break point in 400 characters
LONG_VMTA = "vmta-" + "v" * 300  # a flows row's name without a break point
NO_MID_RCPT = "bob@gmail.com"
HASHED_RCPT = "alice@gmail.com"
USER, PASSWORD, HUB_PASSWORD = "ops", "s3cret", "hub-s3cret"


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass
class Pair:
    daemon: Watchtower
    hub: HubProcess
    base: float
    auth: tuple[str, str] | None = None
    hub_auth: tuple[str, str] | None = None

    def url(self, where: str) -> str:
        """Base URL of the daemon or of the hub in front of it."""
        return self.daemon.url if where == "daemon" else self.hub.url

    def stop(self) -> None:
        self.hub.stop()
        if self.daemon.proc is not None:
            self.daemon.proc.kill()
            self.daemon.proc.wait()
            self.daemon.proc = None


def _wait(url: str, want: int, auth: tuple[str, str] | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        try:
            r = HTTP.get(url + "/api/v1/search", params={"limit": 500}, auth=auth, timeout=5)
            if r.status_code == 200:
                seen = len(r.json()["items"])
                if seen == want:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{seen} of {want} timelines at {url}")


def _start(proc: Watchtower | HubProcess, url: str, auth: tuple[str, str] | None) -> None:
    """start() waits for /healthz to answer 200, which auth turns into a 401: start it here, wait for 200 with auth."""
    if auth is None:
        proc.start()
        return
    command = "run" if isinstance(proc, Watchtower) else "hub"
    with open(proc.log, "ab") as logf:
        proc.proc = subprocess.Popen([sys.executable, "-m", "exporter", command, "--config", str(proc.config)],
                                     stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log.read_text()[-3000:]
        try:
            if HTTP.get(url + "/healthz", auth=auth, timeout=1).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("not listening: " + proc.log.read_text()[-3000:])


def _in_parallel(*starts: Callable[[], object]) -> None:
    """Start the daemon and its hub at once, as tests/hub/cluster.py does (the hub needs no daemon to start)."""
    with ThreadPoolExecutor(len(starts)) as pool:
        for future in [pool.submit(start) for start in starts]:
            future.result()


def _acct_start(root: Path) -> tuple[float, Path, list[str]]:
    """An hour ago on a whole minute (records in the pages' default window), the logs directory, the header row."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return float(int(time.time() // 60 * 60) - 3600), logs, [ACCT_HEADER + ",header_Message-Id"]


@contextmanager
def hostile_pair(root: Path) -> Iterator[Pair]:
    base, logs, rows = _acct_start(root)
    rows.append(acct_row("b", base + 40, base, "bounce@news.example", SPOOF_RCPT, "vmta-x", SPOOF_JOB, SPOOF_MESSAGE,
                         "5.1.1 (bad)", _csv(f"smtp;550 {RLO}evil\x1b[31m {MARKUP}"), "bad-mailbox"))
    rows.append(acct_row("d", base + 50, base, "bounce@news.example", "u2@gmail.com", "vmta-y", "job2", DOTS_MESSAGE,
                         "2.0.0 (ok)", "smtp;250 ok"))
    rows.append(acct_row("d", base + 60, base, "bounce@news.example", "u3@gmail.com", "vmta-y", "job3", ODD_MESSAGE,
                         "2.0.0 (ok)", "smtp;250 ok"))
    rows.append(acct_row("d", base + 65, base, f"bounce@{LONG_SENDER}", "u4@gmail.com", "vmta-y", "job4", "long@x",
                         "2.0.0 (ok)", "smtp;250 ok"))
    rows.append(acct_row("t", base + 66, base, "bounce@news.example", INTL_RCPT, INTL_VMTA, INTL_JOB, "intl@x",
                         "4.2.2 (full)", "smtp;452 4.2.2 صندوق ممتلئ mailbox full"))
    rows.append(acct_row("d", base + 67, base, "bounce@news.example", "u5@gmail.com", "vmta-y", LONG_JOB, "longjob@x",
                         "2.0.0 (ok)", "smtp;250 ok"))
    rows.append(acct_row("d", base + 68, base, "bounce@news.example", "u6@gmail.com", LONG_VMTA, "job6", "longvmta@x",
                         "2.0.0 (ok)", "smtp;250 ok"))
    for i in range(CROWDED_VMTAS):
        rows.append(acct_row("d", base + 70, base, f"bounce@s{i % 10}.example", f"v{i}@d{i % 30}.example",
                             f"vmta-{i}", "jobm", f"m{i}@x", "2.0.0 (ok)", "smtp;250 ok"))
    (logs / "acct-2026-01-01-0000.csv").write_text("\n".join(rows) + "\n")
    cfg = write_config(root, sources=[{"name": "acct", "paths": [str(logs / "acct-*.csv")]}],
                       correlator={"enabled": True})
    wt = Watchtower(cfg)
    hub = HubProcess(root / "hub", [wt.url], 2.0)
    pair = Pair(wt, hub, base)
    try:
        _in_parallel(wt.start, hub.start)
        _wait(wt.url, 7 + CROWDED_VMTAS, None)
        yield pair
    finally:
        pair.stop()


@contextmanager
def private_pair(root: Path) -> Iterator[Pair]:
    """hash_recipients on, basic auth on the daemon and on the hub (which logs in to the daemon)."""
    base, logs, rows = _acct_start(root)
    rows.append(acct_row("b", base + 40, base, "bounce@news.example", HASHED_RCPT, "vmta-x", "job1", "m1@x",
                         "5.1.1 (bad)", f"smtp;550 5.1.1 <{HASHED_RCPT}>: user unknown", "bad-mailbox"))
    rows.append(acct_row("d", base + 50, base, "bounce@news.example", NO_MID_RCPT, "vmta-y", "job2", "",
                         "2.0.0 (ok)", "smtp;250 ok"))
    (logs / "acct-2026-01-01-0000.csv").write_text("\n".join(rows) + "\n")
    cfg = write_config(root, sources=[{"name": "acct", "paths": [str(logs / "acct-*.csv")]}],
                       correlator={"enabled": True, "hash_recipients": True},
                       web={"basic_auth_users": {USER: PASSWORD}})
    (root / "pw").write_text(PASSWORD)
    wt = Watchtower(cfg)
    hub = HubProcess(root / "hub", [wt.url], 2.0, web={"basic_auth_users": {USER: HUB_PASSWORD}})
    hub_cfg = yaml.safe_load(hub.config.read_text())
    hub_cfg["hub"]["auth"] = {"username": USER, "password_file": str(root / "pw")}
    hub.config.write_text(yaml.safe_dump(hub_cfg))
    pair = Pair(wt, hub, base, (USER, PASSWORD), (USER, HUB_PASSWORD))
    try:
        _in_parallel(lambda: _start(wt, wt.url, pair.auth), lambda: _start(hub, hub.url, pair.hub_auth))
        _wait(wt.url, 2, pair.auth)
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A daemon and a hub over `hostile_pair`'s records, one per test module (a plugin of tests/conftest.py)."""
    with hostile_pair(tmp_path_factory.mktemp("hostile")) as pair:
        yield pair


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A daemon and a hub over `private_pair`'s records (hashed recipients, basic auth)."""
    with private_pair(tmp_path_factory.mktemp("private")) as pair:
        yield pair
