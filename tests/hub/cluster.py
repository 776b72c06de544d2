"""Three simulated PMTA hosts (own VMTAs, overlapping recipients), their daemons and a hub.

The accounting files are written here, record by record, so every test knows the exact ground
truth: which Message-Id lives on which host, and one bounced-then-complained message on host 2.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.client import HTTP
from tests.conftest import ACCT_HEADER, REPO, Watchtower, free_port, write_config

ACCT = ACCT_HEADER + ",header_Message-Id"
FBL = "type,timeLogged,orig,rcpt,feedbackType,userAgent,reportingMta,header_Message-Id"
RCPTS = [f"user{i}@{dom}" for i, dom in enumerate(["gmail.com", "yahoo.com", "outlook.com", "gmail.com",
                                                  "yahoo.com", "gmail.com", "hotmail.com", "gmail.com"])]
VMTAS = {1: ["vmta-a1", "vmta-a2"], 2: ["vmta-b1"], 3: ["vmta-c1", "vmta-c2"]}
MESSAGES_PER_HOST = 12
HOST2_MESSAGE = "order-77@shop.example"
COMPLAINED_MESSAGE = "promo-13@news.example"
COMPLAINED_RCPT = "carol@yahoo.com"
HUB_TIMEOUT = 5.0
"""The hub's per-host timeout: each real daemon must answer every fan-out within it (else the answer is partial),
on a loaded machine too. A stopped host refuses at once, so it does not slow the tests that stop one."""


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S+0000")


def acct_row(kind: str, t: float, tq: float, orig: str, rcpt: str, vmta: str, job: str, mid: str,
             status: str, diag: str, cat: str = "", ip: str = "10.1.1.1") -> str:
    action = {"d": "relayed", "b": "failed", "t": "delayed"}[kind]
    dom = rcpt.split("@")[1]
    return (f"{kind},{ts(t)},{ts(tq)},{orig},{rcpt},,{action},{status},{diag},mx.{dom} (192.0.2.7),{cat},smtp,"
            f"app (10.0.0.1),smtp,{ip},192.0.2.7,\"PIPELINING,8BITMIME\",2048,{vmta},{job},,{dom}/{vmta},"
            f"pool-{vmta[-2]},<{mid}>")


@dataclass
class Host:
    n: int
    root: Path
    timelines: int = 0
    message_ids: list[str] = field(default_factory=list)
    wt: Watchtower | None = None


def write_host(host: Host, base: float) -> None:
    """acct (d, b), diag (t) and fbl (f) files of one host; counts its timelines."""
    logs = host.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    acct, diag, fbl = [ACCT], [ACCT], [FBL]
    vmtas = VMTAS[host.n]
    for m in range(MESSAGES_PER_HOST):
        mid = f"m{m}-h{host.n}@mail{host.n}.example"
        if host.n == 2 and m == 5:
            mid = HOST2_MESSAGE
        host.message_ids.append(mid)
        sender = ("news.example", "shop.example")[m % 2]
        orig = f"bounce@{sender}"
        vmta = vmtas[m % len(vmtas)]
        tq = base + host.n * 7 + m * 60  # distinct and interleaved across hosts
        rcpts = [RCPTS[(m + host.n) % len(RCPTS)], RCPTS[(m * 3 + 1) % len(RCPTS)]]
        for r_i, rcpt in enumerate(dict.fromkeys(rcpts)):
            host.timelines += 1
            job = f"job-{host.n}-{m}"
            if (m + r_i) % 3 == 0:
                diag.append(acct_row("t", tq + 20, tq, orig, rcpt, vmta, job, mid, "4.7.0 (delivery time)",
                                     "smtp;421 4.7.0 try again later"))
            if (m + r_i) % 4 == 1:
                acct.append(acct_row("b", tq + 40, tq, orig, rcpt, vmta, job, mid,
                                     "5.1.1 (bad destination mailbox address)", "smtp;550 5.1.1 user unknown",
                                     "bad-mailbox"))
            else:
                acct.append(acct_row("d", tq + 40, tq, orig, rcpt, vmta, job, mid, "2.0.0 (success)",
                                     "smtp;250 2.0.0 OK"))
    if host.n == 2:  # the forensic case: deferred, bounced, then an FBL complaint about it
        host.message_ids.append(COMPLAINED_MESSAGE)
        host.timelines += 1
        tq = base + 30
        orig, job, vmta = "bounce@news.example", "job-2-promo", "vmta-b1"
        diag.append(acct_row("t", tq + 60, tq, orig, COMPLAINED_RCPT, vmta, job, COMPLAINED_MESSAGE,
                             "4.7.0 (TSS04)", "smtp;421 4.7.0 [TSS04] Messages from 10.1.1.1 temporarily deferred"))
        acct.append(acct_row("b", tq + 600, tq, orig, COMPLAINED_RCPT, vmta, job, COMPLAINED_MESSAGE,
                             "5.7.9 (policy)", "smtp;554 5.7.9 Message not accepted <script>alert(1)</script>",
                             "policy-related"))
        fbl.append(f"f,{ts(tq + 3600)},{orig},{COMPLAINED_RCPT},abuse,Yahoo!-Mail-Feedback/2.0,fbl.yahoo.com,"
                   f"<{COMPLAINED_MESSAGE}>")
    (logs / "acct-2026-01-01-0000.csv").write_text("\n".join(acct) + "\n")
    (logs / "diag-2026-01-01-0000.csv").write_text("\n".join(diag) + "\n")
    (logs / "fbl-2026-01-01-0000.csv").write_text("\n".join(fbl) + "\n")


def daemon_config(host: Host) -> Path:
    logs = host.root / "logs"
    sources = [{"name": n, "paths": [str(logs / f"{n}-*.csv")]} for n in ("acct", "diag", "fbl")]
    return write_config(host.root, sources=sources, correlator={"enabled": True})


def wait_ingested(host: Host, timeout: float = 30.0) -> None:
    """Until the host's search lists every timeline, each with its final record, and the complaint."""
    assert host.wt is not None
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        try:
            r = HTTP.get(host.wt.url + "/api/v1/search", params={"limit": 500}, timeout=5)
            if r.status_code == 200:
                items = r.json()["items"]
                seen = len(items)
                # every timeline here ends in d or b: one still deferred means its acct line is not read yet
                done = all(i["outcome"] in ("delivered", "bounced", "complained") for i in items) and (
                    host.n != 2 or any(i["outcome"] == "complained" for i in items))
                if seen == host.timelines and done:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"host {host.n}: {seen} of {host.timelines} timelines; {host.wt.log.read_text()[-2000:]}")


class HubProcess:
    """A `watchtower hub` subprocess."""

    def __init__(self, root: Path, targets: list[str], timeout: float, **extra: Any) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.listen = f"127.0.0.1:{free_port()}"
        self.config = root / "hub.yml"
        cfg = {"listen": self.listen, "hub": {"targets": targets, "timeout": timeout}, **extra}
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = root / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def start(self) -> HubProcess:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "exporter", "hub", "--config", str(self.config)],
                                         stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if HTTP.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("hub did not start: " + self.log.read_text()[-3000:])

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc


@dataclass
class Cluster:
    hosts: list[Host]
    hub: HubProcess
    base: float
    timeout: float

    def stop(self) -> None:
        self.hub.stop()
        for h in self.hosts:
            if h.wt is not None and h.wt.proc is not None:
                h.wt.proc.kill()
                h.wt.proc.wait()


def start_cluster(root: Path, timeout: float = HUB_TIMEOUT) -> Cluster:
    """Files for three hosts, three `watchtower run` daemons started in parallel, then a hub."""
    base = float(int(time.time() // 60 * 60) - 3 * 3600)
    hosts = [Host(n, root / f"host{n}") for n in (1, 2, 3)]
    for h in hosts:
        write_host(h, base)
        h.wt = Watchtower(daemon_config(h))
    hub = HubProcess(root / "hub", [h.wt.url for h in hosts if h.wt], timeout)
    cluster = Cluster(hosts, hub, base, timeout)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(h.wt.start) for h in hosts if h.wt] + [pool.submit(hub.start)]
            for f in futures:
                f.result()
            list(pool.map(wait_ingested, hosts))
    except BaseException:
        cluster.stop()
        raise
    return cluster


_shared: list[Cluster] = []
_users = [0]


def acquire(root: Callable[[], Path]) -> Cluster:
    """One cluster for tests/hub and tests/browser together (starting it is the slow part)."""
    if not _shared:
        _shared.append(start_cluster(root()))
    _users[0] += 1
    return _shared[0]


def release() -> None:
    _users[0] -= 1
    if _users[0] == 0 and _shared:
        _shared.pop().stop()
