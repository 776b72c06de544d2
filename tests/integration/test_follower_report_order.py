"""The correlator process stores what the daemon read in an order that keeps a report after its delivery.

It reads each file's committed range again, one whole range after another. Ordered by the time each file last
advanced, a busy acct file sorted after the fbl file whose reports are about deliveries earlier in that acct
range: with the follower behind, every such complaint was stored first and stayed a timeline of its own, beside its
delivery (the thread worker, storing in read order, joined them). Reports-only sources now come last.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.client import HTTP
from tests.conftest import RECORD_DAY, AcctWriter, correlator_pid, total, write_config

pytestmark = pytest.mark.integration


class Lagging:
    """A daemon with the correlator process over an acct and an fbl source (fbl listed `fbl_first` or last), 5
    deliveries stored; `lag()` stops the correlator process, `deliver()`/`complain()` write records and wait until
    the daemon counted and committed them."""

    def __init__(self, tmp_path: Path, factory: Any, fbl_first: bool) -> None:
        logs = tmp_path / "logs"
        logs.mkdir()
        self.acct = AcctWriter(logs)
        self.fbl = logs / "fbl-2026-11-25-0000.csv"
        self.fbl.write_text("type,timeLogged,orig,rcpt,feedbackType,reportingMta\n")  # no Message-Id: rcpt + orig
        self.acct.write(5)
        sources = [{"name": "acct", "paths": [str(logs / "acct-*.csv")]},
                   {"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]}]
        self.config = write_config(tmp_path, sources[::-1] if fbl_first else sources,
                                   tail={"checkpoint_interval": 0.1}, correlator={"enabled": True, "worker": "process"})
        self.wt = factory(self.config).start()
        self.delivered = 5
        self.wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 5)
        self.wt.committed()
        self.follower = correlator_pid(self.wt.proc.pid)

    def lag(self) -> None:
        os.kill(self.follower, signal.SIGSTOP)

    def deliver(self, n: int) -> None:
        self.acct.write(n)
        self.delivered += n
        self.wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= self.delivered)
        time.sleep(0.5)  # committed: the acct file advanced

    def complain(self, rcpts: range) -> None:
        with self.fbl.open("a") as f:
            f.writelines(f"f,{RECORD_DAY} 13:00:00+0000,bounce@sender.example,u{n}@gmail.com,abuse,fbl.example\n"
                         for n in rcpts)
        self.wt.wait_for(lambda s: total(s, "pmta_complaints_total") >= len(rcpts))
        time.sleep(0.5)

    def outcomes(self, rcpts: range) -> dict[int, list[str]]:
        """Each recipient's timelines' outcomes, once the store holds everything read."""
        self.wt.committed()
        found = {}
        for n in rcpts:
            items = HTTP.get(self.wt.url + "/api/v1/search", params={"rcpt": f"u{n}@gmail.com"},
                              timeout=5).json()["items"]
            found[n] = sorted(item["outcome"] for item in items)
        return found


def test_complaints_read_while_the_correlator_process_lags_join_their_deliveries(tmp_path: Path,
                                                                                 watchtower_factory) -> None:
    run = Lagging(tmp_path, watchtower_factory, fbl_first=False)
    run.lag()  # the correlator process falls behind
    try:
        run.deliver(5)  # u5..u9
        run.complain(range(5, 10))  # their complaints
        run.deliver(5)  # u10..u14: the acct file advanced last, after the fbl file
    finally:
        os.kill(run.follower, signal.SIGCONT)
    outcomes = run.outcomes(range(5, 10))
    run.wt.stop()
    assert outcomes == {n: ["complained"] for n in range(5, 10)}  # one timeline each: delivered, then complained


def test_a_thread_worker_resuming_after_a_restart_stores_complaints_after_their_deliveries(tmp_path: Path,
                                                                                           watchtower_factory) -> None:
    """A store behind its files at a start is read again from the sink positions, range after range: a thread
    worker took them in the order the files were registered (the fbl source listed first), so the complaints were
    stored before their deliveries and stayed timelines of their own."""
    run = Lagging(tmp_path, watchtower_factory, fbl_first=True)
    run.lag()  # the store falls behind: deliveries u5..u9, then their complaints
    run.deliver(5)
    run.complain(range(5, 10))
    run.wt.kill9()
    os.kill(run.follower, signal.SIGKILL)
    data = yaml.safe_load(run.config.read_text())
    data["correlator"]["worker"] = "thread"
    run.config.write_text(yaml.safe_dump(data))
    run.wt.start()
    outcomes = run.outcomes(range(5, 10))
    run.wt.stop()
    assert outcomes == {n: ["complained"] for n in range(5, 10)}


def test_complaints_read_after_a_restart_about_deliveries_the_store_lacks_name_their_vmta(tmp_path: Path,
                                                                                           watchtower_factory) -> None:
    """The correlator process stalled (a full disk failed its writes; here SIGSTOP), the deliveries counted and
    checkpointed but not stored; then a restart. The daemon's memory of recent deliveries (what attributes a report
    before the store has its delivery) starts empty, and the complaints read after the start were counted under
    vmta="unknown" for good, with nothing saying so (full-disk review 2026-12-05). The daemon now fills that memory
    from the ranges the correlator process has yet to store before it reads on."""
    run = Lagging(tmp_path, watchtower_factory, fbl_first=False)
    run.lag()
    run.deliver(5)  # u5..u9: counted and checkpointed, not stored
    run.wt.kill9()
    os.kill(run.follower, signal.SIGKILL)
    with run.fbl.open("a") as f:  # their complaints, written while the daemon was down
        f.writelines(f"f,{RECORD_DAY} 13:00:00+0000,bounce@sender.example,u{n}@gmail.com,abuse,fbl.example\n"
                     for n in range(5, 10))
    run.wt.start()
    samples = run.wt.wait_for(lambda s: total(s, "pmta_complaints_total") >= 5)
    complaints = {dict(labels).get("vmta"): v for (name, labels), v in samples.items()
                  if name == "pmta_complaints_total" and v}
    log = run.wt.log.read_text()
    run.wt.stop()
    assert complaints == {"vmta-1": 5.0}, complaints
    assert "Traceback" not in log
