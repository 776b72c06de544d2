"""Retention's clock survives a restart: a new process does not trust a system clock stepped ahead.

correlator/wallclock.py kept a forward step of the system clock from rushing retention inside one running process
only: a new sink (a restart of the daemon, the daemon's respawn of the correlator process) was seeded with
`time.time()`, so started with the clock 3 days ahead it deleted every timeline of a 2-day retention at once, for
good, without a word (review: 5,000 timelines 6 h old -> 0 within 12 s). The store keeps the last trusted retention
time (corr_meta `retention_time`) and a new sink's clock starts from it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from correlator import store
from correlator.wallclock import SteadyWallClock
from exporter.config import CorrelatorConfig
from tests.conftest import ACCT_HEADER, Watchtower, correlator_pid, write_config
from tests.test_correlator_support import Harness, batch

DAY = 86400.0
HOUR = 3600.0
STEP = 3 * DAY


def _acct(name: str, start: float, n: int, prefix: str) -> object:
    rows = "\n".join(f"d,{start + i},{start + i},s@shop.example,{prefix}{i}@gmail.com,v1,J-{prefix}" for i in range(n))
    return batch(f"/l/{name}.csv", "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId\n" + rows)


def _timelines(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0])
    finally:
        conn.close()


def _retention_time(db: Path) -> float:
    conn = sqlite3.connect(db)
    try:
        return float(conn.execute("SELECT value FROM corr_meta WHERE key = ?", (store.RETENTION_TIME,)).fetchone()[0])
    finally:
        conn.close()


def _stepped(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Callable[[], float]:
    """The system clock `seconds` ahead from now on (every reader of time.time in this process)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)
    return time.time


def _store_of_fresh_timelines(tmp_path: Path, retention: str = "2d") -> Path:
    """A store of 10 timelines 6 h old, written and pruned by a sink under the true clock, then closed."""
    h = Harness(tmp_path, CorrelatorConfig(retention=retention), clock=time.time)
    h.commit(_acct("fresh", time.time() - 6 * HOUR, 10, "fresh"))
    assert _timelines(h.db) == 10
    h.close()
    return h.db


def test_a_restart_under_a_clock_stepped_ahead_prunes_nothing_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    db = _store_of_fresh_timelines(tmp_path)
    clock = _stepped(monkeypatch, STEP)  # the new process starts with the clock 3 days ahead
    with caplog.at_level(logging.INFO, logger="watchtower.correlator"):
        h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=clock)
        h.sink.maintain(h.conn)
        h.sink.maintain(h.conn)
    assert _timelines(db) == 10
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "system clock" in r.getMessage()]
    # once, with its size; INFO: at a start the gap is most often a stop that long, no fault
    assert len(said) == 1 and said[0][0] == "INFO" and said[0][1].startswith("retention resumes 2592"), said
    h.close()


def test_a_restart_goes_on_from_the_stored_time_and_keeps_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new clock starts from the stored time (catching up at twice real time) and each prune stores where it is:
    a second restart goes on from there, not from the stepped clock."""
    db = _store_of_fresh_timelines(tmp_path)
    kept = _retention_time(db)
    assert abs(kept - time.time()) < 60
    clock = _stepped(monkeypatch, STEP)
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=clock)
    h.sink.maintain(h.conn)
    now = _retention_time(h.db)
    assert kept <= now < kept + 60  # not the stepped clock's time
    h.close()
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=clock)
    h.sink.maintain(h.conn)
    assert _timelines(db) == 10
    h.close()


def test_a_store_written_before_the_retention_time_is_seeded_from_its_newest_timeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = _store_of_fresh_timelines(tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DELETE FROM corr_meta WHERE key='retention_time'")  # as an older version left it
    conn.close()
    clock = _stepped(monkeypatch, STEP)
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=clock)
    h.sink.maintain(h.conn)
    assert _timelines(db) == 10
    h.close()


def test_a_start_with_the_clock_behind_the_stored_time_follows_it_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a backward step in a running process: followed at once, pruning waits (nothing deleted either way)."""
    db = _store_of_fresh_timelines(tmp_path)
    clock = _stepped(monkeypatch, -DAY)
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=clock)
    h.sink.maintain(h.conn)
    assert _timelines(db) == 10
    now = _retention_time(h.db)
    assert abs(now - clock()) < 60  # the clock as it reads now (behind), as in a running process
    h.close()


def test_an_empty_store_starts_from_the_clock(tmp_path: Path) -> None:
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=time.time)
    h.sink.maintain(h.conn)
    now = _retention_time(h.db)
    assert abs(now - time.time()) < 60
    h.close()


def test_store_seed_reads_the_newest_activity_without_a_stored_time(tmp_path: Path) -> None:
    h = Harness(tmp_path, CorrelatorConfig(), clock=lambda: 1714521600.0 + DAY)
    now = 1714521600.0 + 2 * DAY
    assert store.retention_seed(h.conn, now) is None  # empty, no stored time: the clock it is
    h.commit(_acct("a", 1714521600.0, 3, "a"), maintain=False)
    assert store.retention_seed(h.conn, now) == 1714521600.0 + DAY  # each commit keeps the retention clock's reading
    h.conn.execute("DELETE FROM corr_meta WHERE key = ?", (store.RETENTION_TIME,))  # as an older version left it
    assert store.retention_seed(h.conn, now) == pytest.approx(1714521602.0, abs=store.FLOW_BUCKET)
    assert store.retention_seed(h.conn, 1714521600.0 - DAY) == 1714521600.0 - DAY  # newest activity: at most now
    store.record_retention_time(h.conn, 1714600000.5)
    assert store.retention_seed(h.conn, now) == 1714600000.5
    store.record_retention_time(h.conn, 0.0)  # recorded while the clock read 1970 (a start before NTP set it)
    assert store.retention_seed(h.conn, now) == pytest.approx(1714521602.0, abs=store.FLOW_BUCKET)
    h.close()


def test_a_start_under_a_clock_far_behind_does_not_hold_pruning_back_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start with the clock 30 days behind records that time; the next start under the right clock went on from it
    (30 days without pruning) where it should go on from what the store shows had happened: the newest record."""
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=time.time)
    h.commit(_acct("old", time.time() - 5 * DAY, 10, "old"), maintain=False)
    h.commit(_acct("new", time.time() - HOUR, 10, "new"), maintain=False)
    h.close()
    clock = _stepped(monkeypatch, -30 * DAY)
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=clock)
    h.sink.maintain(h.conn)
    assert _timelines(h.db) == 20  # behind: pruning waits
    h.close()
    monkeypatch.undo()
    h = Harness(tmp_path, CorrelatorConfig(retention="2d"), clock=time.time)
    h.sink.maintain(h.conn)
    assert _timelines(h.db) == 10  # the 5-day-old ones, past the 2-day retention of the newest record's time
    h.close()


def test_a_seeded_clock_catches_up_with_the_wall_clock_as_a_step_does() -> None:
    wall, mono = [10_000.0], [0.0]
    clock = SteadyWallClock(lambda: wall[0], lambda: mono[0], start=9_000.0)

    def tick(seconds: float) -> float:
        mono[0] += seconds
        wall[0] += seconds
        return clock()

    assert tick(100) == pytest.approx(9_200.0)  # 1000 s behind, closed at 1x (runs at 2x real time)
    for _ in range(8):
        assert tick(100) < wall[0]
    assert tick(100) == wall[0]
    behind = SteadyWallClock(lambda: wall[0], lambda: mono[0], start=wall[0] + DAY)
    assert behind() == wall[0]  # a start behind the stored time: followed back at once


# --- the daemon itself: a restart, and the respawn of the correlator process, under a clock 3 days ahead -------------

SITECUSTOMIZE = '''
import os, time
_real_time, _real_ns = time.time, time.time_ns
_file = os.environ["WT_TEST_CLOCK_OFFSET_FILE"]
_cache = [0.0, -1.0]
def _offset():
    now = time.monotonic()
    if now - _cache[1] > 0.1:
        try:
            _cache[0] = float(open(_file).read() or 0)
        except (OSError, ValueError):
            _cache[0] = 0.0
        _cache[1] = now
    return _cache[0]
time.time = lambda: _real_time() + _offset()
time.time_ns = lambda: _real_ns() + int(_offset() * 1e9)
'''


def _wait(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen in {timeout}s; log: {log.read_text()[-3000:]}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the correlator's pid")
def test_daemon_restart_and_correlator_respawn_under_a_stepped_clock_keep_fresh_timelines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    offset = tmp_path / "clock-offset"
    offset.write_text("0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("WT_TEST_CLOCK_OFFSET_FILE", str(offset))
    config = write_config(tmp_path, correlator={"enabled": True, "retention": "2d", "worker": "process"})
    queued = time.time() - 6 * HOUR
    stamp = time.strftime("%Y-%m-%d %H:%M:%S+0000", time.gmtime(queued))
    n = 300
    rows = [f"d,{stamp},{stamp},b@s.example,u{i}@gmail.com,,relayed,2.0.0 (success),smtp;250 ok,mx (1.2.3.4),"
            f"success,smtp,app (10.0.0.1),smtp,10.1.1.1,1.2.3.4,PIPELINING,1234,vmta-1,job1,,gmail.com/vmta-1,pool-a"
            for i in range(n)]
    (tmp_path / "logs" / "acct-2026-11-25-0000.csv").write_text(ACCT_HEADER + "\n" + "\n".join(rows) + "\n")
    db = tmp_path / "state" / "watchtower.db"
    wt = Watchtower(config).start()
    try:
        wt.committed(timeout=30)
        # the correlator's own process stores them after the daemon's commit (a loaded fresh clone: 0 at this point)
        _wait(lambda: _timelines(db) == n, 60, f"the {n} timelines stored", wt.log)
        wt.stop()
        kept = _retention_time(db)
        offset.write_text(str(STEP))  # the next start finds the clock 3 days ahead
        wt.start()
        log = wt.log
        said = "retention resumes"
        # the correlator process's first prune comes within MAINTAIN_INTERVAL (5 s) of its start: it says so, then
        # its last transaction keeps the time it pruned at (no records come: nothing else writes it)
        _wait(lambda: (log.read_text().count(said) >= 1 and _retention_time(db) > kept) or _timelines(db) < n, 15,
              "the step's warning and a prune", log)
        assert _timelines(db) == n
        assert _retention_time(db) < kept + 60  # the trusted time, not the stepped clock's
        assert wt.proc is not None
        pid = correlator_pid(wt.proc.pid)
        os.kill(pid, 9)  # the daemon respawns it; the new one must not trust the clock either
        time.sleep(0.3)
        kept = _retention_time(db)
        _wait(lambda: (log.read_text().count(said) >= 2 and _retention_time(db) > kept) or _timelines(db) < n, 20,
              "the respawn's warning and a prune", log)
        assert _timelines(db) == n
    finally:
        if wt.proc is not None:
            wt.stop()
