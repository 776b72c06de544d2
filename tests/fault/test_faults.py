"""Fault suite (issue #8): real daemons under kill -9, SIGTERM mid-backfill, a full state disk and a
low descriptor limit. In each, /metrics totals and the correlator's stored deliveries equal the
records written, exactly. Run alone with `pytest -m fault`.
"""

from __future__ import annotations

import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.client import HTTP
from tests.conftest import RECORD_DAY, REPO, AcctWriter, Watchtower, total, write_config

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def stored_deliveries(state: Path) -> int:
    """Delivery events in the correlator store (one per `d` record written)."""
    with sqlite3.connect(state / "watchtower.db") as db:
        return int(db.execute("SELECT count(*) FROM corr_events").fetchone()[0])


def restart_and_expect_exact(wt: Watchtower, want: int, state: Path) -> None:
    """Start again and wait: /metrics counts `want` deliveries, and so does the correlator's store."""
    wt.start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= want, timeout=120)
    assert total(wt.settle(), "pmta_delivered_total") == want
    wt.committed()
    wt.stop()
    assert stored_deliveries(state) == want


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_kill_9_twenty_times_from_the_first_second_of_a_first_run(tmp_path: Path, watchtower_factory):
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    writer.write(500)  # history before the very first start: skipped (start_position: end)
    history = writer.total
    cfg = write_config(tmp_path, correlator={"enabled": True},
                       tail={"start_position": "end", "checkpoint_interval": 0.05})
    wt = watchtower_factory(cfg)
    rng = random.Random(8)
    wt.start()
    time.sleep(rng.uniform(0.0, 0.2))  # inside the first second of the first run
    wt.kill9()
    writer.write(300)  # while down after a first run that never reached a periodic commit
    for _ in range(20):
        wt.start()
        for _ in range(rng.randint(1, 3)):
            writer.write(rng.randint(50, 600), rng.choice(["vmta-1", "vmta-2", "vmta-3"]))
            if rng.random() < 0.3:
                writer.rotate()
        time.sleep(rng.uniform(0.0, 0.4))
        wt.kill9()
        if rng.random() < 0.4:
            writer.write(rng.randint(1, 200), "vmta-4")
    wt.start()
    want = writer.total - history
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= want, timeout=60)
    assert total(wt.settle(), "pmta_delivered_total") == want
    wt.committed()
    wt.stop()
    assert stored_deliveries(tmp_path / "state") == want


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_kill_9_while_the_correlator_reads_its_backlog_again_from_the_files(tmp_path: Path, watchtower_factory,
                                                                           worker: str):
    """The correlator far behind (1,000 rows in memory, the rest as file ranges; or in its own process):
    each kill -9 lands while it reads ranges again; the checkpoints kept up, so each restart resumes it
    from its own positions (a correlator process left by a killed daemon exits, its successor waits)."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    for vmta in ("vmta-1", "vmta-2"):
        writer.write(30_000, vmta)
        writer.rotate()
    cfg = write_config(tmp_path, correlator={"enabled": True, "worker": worker},
                       tail={"checkpoint_interval": 0.2, "max_pending_rows": 1000})
    wt = watchtower_factory(cfg)
    behind = 0
    for kill in range(4):
        wt.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill while ranges wait to be read again
            if HTTP.get(wt.url + "/healthz", timeout=5).json().get("commit_backlog_bytes", 0) > 0:
                behind += 1
                break
            time.sleep(0.05)
        time.sleep(0.3 * kill)
        wt.kill9()
        writer.write(2_000, "vmta-3")
    assert behind >= 2  # the kills did land while the correlator was reading ranges again
    restart_and_expect_exact(wt, writer.total, tmp_path / "state")


def test_sigterm_mid_backfill_stops_without_waiting_for_the_correlator_and_resumes_exactly(tmp_path: Path, watchtower_factory):
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    for _ in range(3):
        writer.write(40_000, random.Random(writer.n).choice(["vmta-1", "vmta-2"]))
        writer.rotate()
    # shutdown_timeout 1 s (default 3 s): the stop gives up there, the correlator left behind
    cfg = write_config(tmp_path, correlator={"enabled": True},
                       tail={"checkpoint_interval": 1.0, "shutdown_timeout": 1.0})
    wt = watchtower_factory(cfg).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 5_000, timeout=60)
    assert wt.proc is not None
    wt.proc.send_signal(signal.SIGTERM)
    try:
        rc = wt.proc.wait(timeout=120)  # a hang guard: the stop takes about shutdown_timeout
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM mid-backfill: the daemon had not exited after 120 s (the stop hung)")
    wt.proc = None
    assert rc == 0
    # it stopped mid-backfill instead of waiting for the correlator to store what was read: the correlator's
    # positions are behind the daemon's (a NULL position is caught up), read again at the next start
    with sqlite3.connect(tmp_path / "state" / "watchtower.db") as db:
        behind = db.execute("SELECT sum(offset - coalesce(sink_offset, offset)) FROM wt_checkpoints").fetchone()[0]
    assert behind > 0, f"the stop waited for the correlator to catch up (stored {stored_deliveries(tmp_path / 'state')})"
    restart_and_expect_exact(wt, writer.total, tmp_path / "state")


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mnt = tmp_path / "state"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the state dir (needs root): {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_state_disk_full_then_freed_loses_and_repeats_nothing(tmp_path: Path, small_tmpfs: Path, watchtower_factory,
                                                              worker: str):
    """The thread worker holds rows for the correlator, so reading pauses once they fill the limit; the
    process worker holds none (its child reads the files again), so reading and counting go on. Memory
    stays flat either way, and once space is freed the metrics and the timelines are exact."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    cfg = write_config(tmp_path, correlator={"enabled": True, "worker": worker},
                       tail={"checkpoint_interval": 0.2, "max_pending_rows": 20_000})
    wt = watchtower_factory(cfg).start()
    assert wt.proc is not None
    for _ in range(6):
        writer.write(10_000)
        writer.rotate()
    deadline = time.monotonic() + 60
    health: dict = {}
    while time.monotonic() < deadline:  # the 2 MiB state disk fills up
        health = HTTP.get(wt.url + "/healthz", timeout=5).json()
        if health.get("problems") and "full" in " ".join(health["problems"]):
            break
        time.sleep(0.2)
    assert health.get("ok") is False, health
    assert HTTP.get(wt.url + "/healthz", timeout=5).status_code == 503
    peak = 0.0
    for _ in range(20):  # keeps failing: memory flat
        peak = max(peak, rss_mb(wt.proc.pid))
        time.sleep(0.1)
    assert wt.proc.poll() is None  # alive
    assert peak < 300, f"RSS {peak:.0f} MB while the disk is full"
    assert HTTP.get(wt.url + "/healthz", timeout=5).json()["reading_paused"] is (worker == "thread")
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_tmpfs)], check=True)  # space freed
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= writer.total, timeout=120)
    assert total(wt.settle(), "pmta_delivered_total") == writer.total
    deadline = time.monotonic() + 30  # the metrics may be complete before the next commit retry succeeds
    while not (health := HTTP.get(wt.url + "/healthz", timeout=5).json())["ok"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health["ok"] is True, health["problems"]
    assert total(wt.scrape(), "watchtower_checkpoint_errors_total") >= 1
    wt.kill9()  # what is stored is exact too: a restart continues from the committed counters
    wt.start()
    assert total(wt.settle(), "pmta_delivered_total") == writer.total
    wt.committed()
    wt.stop()
    assert stored_deliveries(small_tmpfs) == writer.total


def test_a_low_descriptor_limit_is_neither_a_crash_nor_a_rotation(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    for i in range(300):
        writer.write(2, f"vmta-{i % 5}")
        writer.rotate()
    cfg = write_config(tmp_path, tail={"max_open_files": 32})
    wt = Watchtower(cfg)

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

    log = open(wt.log, "ab")  # noqa: SIM115
    wt.proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(cfg)], cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT, preexec_fn=low_limit)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                HTTP.get(wt.url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= writer.total, timeout=60)
        samples = wt.settle()
        assert total(samples, "pmta_delivered_total") == writer.total
        assert total(samples, "watchtower_rotations_total") == 0
        assert total(samples, "watchtower_files_open") <= 32
        assert total(samples, "watchtower_files_followed") == 301
        assert "Traceback" not in wt.log.read_text()
    finally:
        wt.proc.send_signal(signal.SIGTERM)
        wt.proc.wait(timeout=30)


def test_oneshot_whose_temporary_store_cannot_grow_says_so_in_one_line(tmp_path: Path):
    """oneshot with the correlator keeps its store in TMPDIR; a full disk there (here: a file size limit, so
    every write past 1 MB fails as on a full disk) ends the run with one line naming that store and the
    database's words, exit 1, and no partial exposition on stdout. A complaint about every delivery: the store
    holds only the deliveries a report can reach (correlator/reach.py), here all 20,000 (~6 MB)."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    writer.write(20_000)
    (tmp_path / "logs" / "fbl-1.csv").write_text("type,timeLogged,orig,rcpt,feedbackType\n" + "".join(
        f"f,{RECORD_DAY} 13:00:00+0000,bounce@sender.example,u{n}@gmail.com,abuse\n" for n in range(20_000)))
    cfg = write_config(tmp_path, correlator={"enabled": True}, sources=[
        {"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]},
        {"name": "fbl", "paths": [str(tmp_path / "logs" / "fbl-*.csv")], "records": ["f"]}])
    (tmp_path / "tmp").mkdir()

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=small_files,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path / "tmp")})
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"temporary correlator store in {tmp_path / 'tmp'}/watchtower-oneshot-" in lines[0]
    assert "OperationalError" in lines[0] and "TMPDIR" in lines[0]
    assert list((tmp_path / "tmp").iterdir()) == []  # removed on the way out
