"""The write lock is taken as soon as the other writer leaves it free (exporter/writelock.py).

The daemon and its correlator process write to one database. With SQLite's own busy handler a writer that has
waited a while sleeps 100 ms between attempts and misses a lock left free for less: these tests leave it free
between two transactions of another connection only until the waiting writer has had its next attempt.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from exporter import writelock


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (who TEXT)")
    conn.close()
    return path


def _holder(path: Path, first: float, gap: float, then: float, started: threading.Event) -> threading.Thread:
    """Another writer: holds the lock `first` seconds, leaves it free `gap` seconds, holds it `then` seconds."""
    def run() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=0)
        conn.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(first)
        conn.execute("COMMIT")
        time.sleep(gap)
        try:
            conn.execute("BEGIN IMMEDIATE")  # fails if the writer under test took the lock in the gap
        except sqlite3.OperationalError:
            conn.close()
            return
        conn.execute("INSERT INTO t VALUES ('holder')")
        time.sleep(then)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_writer_takes_the_lock_in_a_short_gap_between_two_transactions_of_another(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The gap is made of the writer's attempts, not of wall time: on a loaded machine the writer may be kept off
    # the CPU for longer than any gap a timer could leave. What makes a gap short is checked on the pauses it asks
    # for between attempts (SQLite's handler pauses 100 ms, and inside C: none of them would be seen here).
    path = _db(tmp_path)
    started, retried, freed, gap_over, done = (threading.Event() for _ in range(5))
    pauses: list[float] = []
    after_free = 0

    def sleep(seconds: float) -> None:
        """The writer's pause after a refused attempt."""
        nonlocal after_free
        pauses.append(seconds)
        retried.set()
        if freed.is_set():
            after_free += 1
            if after_free >= 2:  # the attempt before this pause began after the COMMIT, and was refused all the same
                gap_over.set()
        time.sleep(seconds)

    monkeypatch.setattr(writelock, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=0)
        conn.execute("BEGIN IMMEDIATE")
        started.set()
        retried.wait(30)  # the writer was refused at least once: it waits in begin_immediate's loop
        conn.execute("COMMIT")
        freed.set()
        gap_over.wait(30)  # until the writer's next attempt, which can only have begun after the COMMIT, has ended
        try:
            conn.execute("BEGIN IMMEDIATE")  # fails if the writer under test took the lock in the gap
        except sqlite3.OperationalError:
            conn.close()
            return
        conn.execute("INSERT INTO t VALUES ('holder')")
        done.wait(30)  # a writer that missed the gap waits in vain, until its timeout
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert started.wait(5)
    conn = sqlite3.connect(path, isolation_level=None, timeout=2.0)
    try:
        writelock.begin_immediate(conn, timeout_ms=2000)  # raises `database is locked` if it missed the gap
    finally:  # it has the lock (the holder may try again, and find it taken), or gave up: the holder goes on
        retried.set()
        gap_over.set()
        done.set()
    conn.execute("INSERT INTO t VALUES ('writer')")
    conn.execute("COMMIT")
    holder.join(10)
    who = [r[0] for r in conn.execute("SELECT who FROM t ORDER BY rowid")]
    assert who[0] == "writer"  # in the gap, not after the holder's second transaction
    assert who in (["writer"], ["writer", "holder"])  # the holder got in again after it, or found it still there
    # it waited by asking again, never pausing long enough to miss a lock left free for a few tens of ms
    assert pauses and max(pauses) <= 0.01, pauses
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2000
    conn.close()


def test_a_lock_held_throughout_still_ends_in_database_is_locked(tmp_path: Path) -> None:
    path = _db(tmp_path)
    started = threading.Event()
    holder = _holder(path, first=1.0, gap=0.0, then=0.0, started=started)
    started.wait(5)
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        writelock.begin_immediate(conn, timeout_ms=200)
    assert not conn.in_transaction
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 200  # statements keep waiting as configured
    holder.join()
    conn.close()


def test_an_error_other_than_busy_is_not_retried(tmp_path: Path) -> None:
    conn = sqlite3.connect(_db(tmp_path), isolation_level=None)
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        writelock.begin_immediate(conn)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == writelock.BUSY_TIMEOUT_MS
    conn.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_long_hold_is_logged_with_its_work_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    clock = _Clock()
    watch = writelock.HoldWatch("a write of the correlator's rows", logging.getLogger("test.holds"), clock)
    caplog.set_level(logging.WARNING, logger="test.holds")
    held = []
    for start, seconds, work in [(0, 4.9, "a"), (10, 6.0, "b"), (20, 9.0, "c"), (30, 7.0, "d"), (100, 5.0, "e")]:
        clock.now = 1000.0 + start
        watch.begun()
        clock.now += seconds
        held.append(watch.ended(lambda w=work: f"{w} rows"))
    assert held == pytest.approx([4.9, 6.0, 9.0, 7.0, 5.0])
    assert watch.longest == pytest.approx(9.0)
    assert [r.getMessage() for r in caplog.records] == [
        "a write of the correlator's rows held the state database's write lock for 6.0 s (b rows); other writers"
        " (the daemon's checkpoints) waited meanwhile",
        "a write of the correlator's rows held the state database's write lock for 5.0 s (e rows); other writers"
        " (the daemon's checkpoints) waited meanwhile (2 more over 5 s since the last such line)",
    ]
