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

import httpx
import pytest

from tests.conftest import RECORD_DAY, AcctWriter, total, write_config

pytestmark = pytest.mark.integration


def _follower_pid(daemon_pid: int) -> int:
    """The correlator process: the daemon's child running multiprocessing's spawn_main (not its resource tracker)."""
    for _ in range(100):
        for child in Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                return int(child)
        time.sleep(0.1)
    raise AssertionError("no correlator process")


def test_complaints_read_while_the_correlator_process_lags_join_their_deliveries(tmp_path: Path,
                                                                                 watchtower_factory) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    acct = AcctWriter(logs)
    fbl = logs / "fbl-2026-11-25-0000.csv"
    fbl.write_text("type,timeLogged,orig,rcpt,feedbackType,reportingMta\n")  # no Message-Id: rcpt + orig
    acct.write(5)
    sources = [{"name": "acct", "paths": [str(logs / "acct-*.csv")]},
               {"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]}]
    config = write_config(tmp_path, sources, tail={"checkpoint_interval": 0.1},
                          correlator={"enabled": True, "worker": "process"})
    wt = watchtower_factory(config).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 5)
    wt.committed()
    follower = _follower_pid(wt.proc.pid)
    os.kill(follower, signal.SIGSTOP)  # the correlator process falls behind
    try:
        acct.write(5)  # u5..u9 delivered
        wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 10)
        time.sleep(0.5)  # committed: the acct file advanced
        with fbl.open("a") as f:  # their complaints
            f.writelines(f"f,{RECORD_DAY} 13:00:00+0000,bounce@sender.example,u{n}@gmail.com,abuse,fbl.example\n"
                         for n in range(5, 10))
        wt.wait_for(lambda s: total(s, "pmta_complaints_total") >= 5)
        time.sleep(0.5)
        acct.write(5)  # u10..u14: the acct file advanced last, after the fbl file
        wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 15)
        time.sleep(0.5)
    finally:
        os.kill(follower, signal.SIGCONT)
    wt.committed()
    outcomes = {}
    for n in range(5, 10):
        items = httpx.get(wt.url + "/api/v1/search", params={"rcpt": f"u{n}@gmail.com"}, timeout=5).json()["items"]
        outcomes[n] = sorted(item["outcome"] for item in items)
    wt.stop()
    assert outcomes == {n: ["complained"] for n in range(5, 10)}  # one timeline each: delivered, then complained


def test_a_thread_worker_resuming_after_a_restart_stores_complaints_after_their_deliveries(tmp_path: Path,
                                                                                           watchtower_factory) -> None:
    """A store behind its files at a start is read again from the sink positions, range after range: a thread
    worker took them in the order the files were registered (the fbl source listed first), so the complaints were
    stored before their deliveries and stayed timelines of their own."""
    import yaml

    logs = tmp_path / "logs"
    logs.mkdir()
    fbl = logs / "fbl-2026-11-25-0000.csv"
    fbl.write_text("type,timeLogged,orig,rcpt,feedbackType,reportingMta\n")
    acct = AcctWriter(logs)
    acct.write(5)
    sources = [{"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]},
               {"name": "acct", "paths": [str(logs / "acct-*.csv")]}]
    config = write_config(tmp_path, sources, tail={"checkpoint_interval": 0.1},
                          correlator={"enabled": True, "worker": "process"})
    wt = watchtower_factory(config).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 5)
    wt.committed()
    follower = _follower_pid(wt.proc.pid)
    os.kill(follower, signal.SIGSTOP)  # the store falls behind: deliveries u5..u9, then their complaints
    acct.write(5)
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 10)
    time.sleep(0.5)
    with fbl.open("a") as f:
        f.writelines(f"f,{RECORD_DAY} 13:00:00+0000,bounce@sender.example,u{n}@gmail.com,abuse,fbl.example\n"
                     for n in range(5, 10))
    wt.wait_for(lambda s: total(s, "pmta_complaints_total") >= 5)
    time.sleep(0.5)  # committed: the metrics and offsets, not the store
    wt.kill9()
    os.kill(follower, signal.SIGKILL)
    data = yaml.safe_load(config.read_text())
    data["correlator"]["worker"] = "thread"
    config.write_text(yaml.safe_dump(data))
    wt.start()
    wt.committed()
    outcomes = {}
    for n in range(5, 10):
        items = httpx.get(wt.url + "/api/v1/search", params={"rcpt": f"u{n}@gmail.com"}, timeout=5).json()["items"]
        outcomes[n] = sorted(item["outcome"] for item in items)
    wt.stop()
    assert outcomes == {n: ["complained"] for n in range(5, 10)}
