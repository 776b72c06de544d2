"""kill -9 during ingestion with the correlator on: every record is in the store exactly once.

The correlator's rows, the tailer's offsets and the counters are committed in one transaction,
so after any number of crashes the store and /metrics both equal what was written.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest

from tests.client import HTTP
from tests.conftest import AcctWriter, total, write_config

pytestmark = pytest.mark.integration


def resource_trackers_of(pid: int) -> list[int]:
    """The multiprocessing resource tracker processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"resource_tracker" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (its output is all written either way)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stored_deliveries(state: Path) -> tuple[int, int]:
    with sqlite3.connect(state / "watchtower.db") as db:
        events = db.execute("SELECT count(*) FROM corr_events WHERE type = (SELECT type FROM corr_events "
                            "GROUP BY type ORDER BY count(*) DESC LIMIT 1)").fetchone()[0]
        timelines = db.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
    return events, timelines


@pytest.mark.parametrize("form", ["csv", "json"])
def test_kill_9_with_the_correlator_keeps_every_record_exactly_once(tmp_path: Path, watchtower_factory, form: str):
    """Also in PMTA's JSON accounting form, whose files the correlator process reads from the checkpointed columns."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs", form=form)
    sources = [{"name": "acct", "paths": [str(tmp_path / "logs" / f"acct-*.{form}")]}]
    cfg = write_config(tmp_path, sources, correlator={"enabled": True}, tail={"checkpoint_interval": 0.05})
    wt = watchtower_factory(cfg).start()
    rng = random.Random(4)
    for _ in range(10 if form == "csv" else 5):  # the JSON form: the restarts' path, in half the rounds
        writer.write(rng.randint(200, 900), rng.choice(["vmta-1", "vmta-2"]))
        if rng.random() < 0.3:
            writer.rotate()
        time.sleep(rng.uniform(0.0, 0.4))
        wt.kill9()
        wt.start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= writer.total)
    samples = wt.settle()
    assert total(samples, "pmta_delivered_total") == writer.total
    wt.committed()  # the correlator's process may trail the metrics: a stop leaves the rest to the next start
    wt.stop()
    events, timelines = stored_deliveries(tmp_path / "state")
    assert (events, timelines) == (writer.total, writer.total)  # one recipient, one delivery each
    wt.start()
    n = writer.n - 1  # the last record written: its timeline has exactly one delivery
    r = HTTP.get(f"{wt.url}/api/v1/timeline", params={"job_id": f"job{n % 7}", "rcpt": f"u{n}@gmail.com"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "delivered" in r.text and r.text.count("smtp;250 2.0.0 OK") == 1, body


def test_a_daemon_killed_with_its_correlator_process_leaves_no_python_noise_in_its_log(
        tmp_path: Path, watchtower_factory) -> None:
    """After a `kill -9` (or an OOM kill) of the daemon, Python's multiprocessing resource tracker printed two
    lines about "leaked semaphore objects" into the journal: the locks of the counters shared with the
    correlator process, which only that process writes. An operator read it as a leak to report."""
    import fcntl

    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    writer.write(50)
    wt = watchtower_factory(write_config(tmp_path, correlator={"enabled": True, "worker": "process"})).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 50)
    for _ in range(200):
        time.sleep(0.05)
        if stored_deliveries(tmp_path / "state")[0] == 50:
            break
    assert wt.proc is not None
    trackers = resource_trackers_of(wt.proc.pid)
    wt.kill9()
    lock = tmp_path / "state" / "correlator.lock"
    with open(lock, "a") as f:  # the orphaned correlator process holds it until it has seen its parent gone
        for _ in range(200):
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            raise AssertionError("the correlator process outlived its daemon by 10 s")
    # the resource tracker, its last child gone, reports what it cleans up, then exits: wait for that exit
    # (10 s at most) rather than a fixed second; with no tracker found, the second this test always gave it
    deadline = time.monotonic() + (10.0 if trackers else 1.0)
    while time.monotonic() < deadline and not (trackers and all(gone(pid) for pid in trackers)):
        time.sleep(0.02)
    log = wt.log.read_text()
    assert "resource_tracker" not in log and "Traceback" not in log, log[-2000:]


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_a_span_taken_before_the_first_scan_waits_for_the_copy_it_names(tmp_path: Path, watchtower_factory,
                                                                        worker: str) -> None:
    """While the daemon was down its file was copied (a new inode) into `moved_to` and the original removed. The
    correlator, behind on that file, takes its span before the daemon's first scan has committed the checkpoint's
    new identity: it found neither the old path nor the old inode, logged the records as lost for the timelines
    ("cannot be read again") and skipped them (found by the randomized restart suite, seed 6). It waits for the
    daemon's first reconciled commit (bounded), then reads the copy."""
    logs, moved = tmp_path / "logs", tmp_path / "moved"
    logs.mkdir()
    moved.mkdir()
    writer = AcctWriter(logs)
    writer.write(300)
    sources = [{"name": "acct", "paths": [str(logs / "acct-*.csv")], "moved_to": [str(moved / "acct-*.csv")]}]
    cfg = write_config(tmp_path, sources, correlator={"enabled": True, "worker": worker},
                       tail={"checkpoint_interval": 6.0})  # the daemon's first commit after the correlator's look
    wt = watchtower_factory(cfg).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 300)
    wt.committed()
    assert wt.stop() == 0
    state = tmp_path / "state"
    with sqlite3.connect(state / "watchtower.db") as db:  # the correlator stopped behind: back to the header line
        (header,) = db.execute("SELECT header FROM wt_checkpoints").fetchone()
        db.execute("UPDATE wt_checkpoints SET sink_offset = ?, sink_line = 1, sink_header = ?",
                   (len(header) + 1, header))
    copy = moved / writer.path.name
    copy.write_bytes(writer.path.read_bytes())  # `cp` to another disk, then the original removed
    writer.path.unlink()
    wt.start()
    wt.committed(timeout=60)
    samples = wt.settle()
    assert total(samples, "pmta_delivered_total") == 300  # nothing counted again
    assert samples.get(("watchtower_commit_backlog_lost_bytes_total", ()), 0.0) == 0.0
    assert wt.stop() == 0
    log = wt.log.read_text()
    assert "cannot be read again" not in log and "Traceback" not in log, log[-3000:]
    # the thread worker waited for the daemon's re-key; the process worker may also find the copy by its first record
    # (exporter.follower.locate) before the daemon's first commit
    waits = log.count("waiting (60 s at most) for the daemon's first scans")
    assert waits == 1 if worker == "thread" else waits <= 1, log[-3000:]
    with sqlite3.connect(state / "watchtower.db") as db:
        assert db.execute("SELECT path, sink_offset IS NULL OR sink_offset = offset FROM wt_checkpoints").fetchall() \
            == [(str(copy), 1)]
    assert stored_deliveries(state) == (300, 300)  # each record once: the ones it held were skipped


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_bytes_the_correlator_cannot_read_again_are_counted_by_either_worker(tmp_path: Path, watchtower_factory,
                                                                           worker: str) -> None:
    """Review 2026-12-05: with the default process worker, the correlator process logged "its last N bytes ... cannot
    be read again" but watchtower_commit_backlog_lost_bytes_total stayed 0 (its count was its own process's); the
    thread worker counted them. Here the correlator stopped behind by a whole file, deleted while the daemon was
    down."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    writer.write(300)
    cfg = write_config(tmp_path, correlator={"enabled": True, "worker": worker})
    wt = watchtower_factory(cfg).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 300)
    wt.committed()
    assert wt.stop() == 0
    with sqlite3.connect(tmp_path / "state" / "watchtower.db") as db:  # the correlator behind: at the header line
        (header,) = db.execute("SELECT header FROM wt_checkpoints").fetchone()
        db.execute("UPDATE wt_checkpoints SET sink_offset = ?, sink_line = 1, sink_header = ?",
                   (len(header) + 1, header))
    behind = writer.path.stat().st_size - len(header) - 1
    writer.path.unlink()
    wt.start()
    samples = wt.wait_for(lambda s: s.get(("watchtower_commit_backlog_lost_bytes_total", ()), 0.0) > 0)
    assert samples[("watchtower_commit_backlog_lost_bytes_total", ())] == behind
    assert total(samples, "pmta_delivered_total") == 300
    assert wt.stop() == 0
    assert f"its last {behind} bytes (from line 2) were counted in the metrics but cannot be read again" \
        in wt.log.read_text()
