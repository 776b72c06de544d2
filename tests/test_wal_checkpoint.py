"""The state database's WAL is copied into the database by a thread of its own, never by a commit.

A commit that crosses SQLite's automatic checkpoint threshold copies the whole WAL into the database
(and fsyncs both) before it returns: measured at ~1 s of 8 in the correlator's write path
(bench/bench_corr_write.py). These tests pin that the copy happens off the writer, that a failing
copy is reported once and never stops commits, and that closing the store stops the thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from exporter import walcheckpoint
from exporter.state import StateStore


class BlobSink:
    """A sink whose every write adds `rows` rows of 1 KiB: WAL frames to copy."""

    def __init__(self, rows: int = 200) -> None:
        self.rows = rows

    def setup(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS blobs (x BLOB)")

    def write(self, conn: sqlite3.Connection, batches) -> None:  # type: ignore[no-untyped-def]
        conn.executemany("INSERT INTO blobs VALUES (?)", [(bytes(1024),)] * self.rows)

    def maintain(self, conn: sqlite3.Connection) -> None:
        pass


def _checkpointer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(walcheckpoint.THREAD_NAME)]


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


async def test_commits_leave_the_wal_copy_to_a_thread_of_its_own(tmp_path: Path):
    db = tmp_path / "state" / "watchtower.db"
    store = StateStore(db, [BlobSink()])
    others = set(_checkpointer_threads())  # of stores other tests left open
    await store.open()
    assert store._conn is not None  # noqa: SLF001
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == walcheckpoint.WAL_CAP_PAGES  # noqa: SLF001
    before = db.stat().st_size
    for _ in range(5):  # ~1 MiB in the WAL: far below SQLite's own 1000-page threshold (16 MiB here)
        await store.write_rows([object()])  # type: ignore[list-item]
    # the rows reach the database file itself without another commit, and without the writer doing it
    assert _wait_for(lambda: db.stat().st_size >= before + 5 * 200 * 1024)
    ours = [t for t in _checkpointer_threads() if t not in others]
    assert len(ours) == 1
    await store.close()
    assert not ours[0].is_alive()
    assert not Path(f"{db}-wal").exists()  # the last connection closed still removes the WAL
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1000
    conn.close()


async def test_a_failing_wal_copy_is_reported_once_and_commits_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    failures = 3
    real = walcheckpoint.WalCheckpointer._checkpoint

    def flaky(self: walcheckpoint.WalCheckpointer) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        real(self)

    monkeypatch.setattr(walcheckpoint.WalCheckpointer, "_checkpoint", flaky)
    caplog.set_level(logging.INFO, logger="watchtower.state")
    db = tmp_path / "watchtower.db"
    store = StateStore(db, [BlobSink()])
    await store.open()
    before = db.stat().st_size
    for _ in range(6):
        await store.write_rows([object()])  # type: ignore[list-item]
        time.sleep(0.05)
    assert _wait_for(lambda: failures == 0 and db.stat().st_size >= before + 6 * 200 * 1024)
    warnings = [r.getMessage() for r in caplog.records  # (threads of stores other tests left open log too)
                if r.levelno == logging.WARNING and r.getMessage().startswith(str(db))]
    assert warnings == [f"{db}: cannot copy the WAL into the database (disk I/O error); commits go on, "
                        "and copy it themselves once it holds "
                        f"{walcheckpoint.WAL_CAP_PAGES} pages"]
    assert any(r.getMessage() == f"{db}: the WAL is copied into the database again"
               for r in caplog.records if r.levelno == logging.INFO)
    await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1200
    conn.close()


async def test_the_correlator_processs_copy_failures_are_left_to_the_daemon_to_say(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """Both processes copy the one WAL, and on a full disk both failed: each failure and each recovery was logged
    twice, the correlator process's without its prefix (full-disk review 2026-12-05). The store of the process
    that does not report readers (`reports_readers=False`) says neither."""
    attempts = []

    def failing(self: walcheckpoint.WalCheckpointer) -> None:
        attempts.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(walcheckpoint.WalCheckpointer, "_checkpoint", failing)
    caplog.set_level(logging.INFO, logger="watchtower.state")
    db = tmp_path / "watchtower.db"
    store = StateStore(db, [BlobSink()], reports_readers=False)
    await store.open()
    for _ in range(3):
        await store.write_rows([object()])  # type: ignore[list-item]
        time.sleep(0.05)
    assert _wait_for(lambda: len(attempts) >= 2)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO
            and r.getMessage().startswith(str(db))] == []
    await store.close()


async def test_a_throwaway_store_runs_no_copy_thread(tmp_path: Path):
    """oneshot's store is deleted at exit: copying its WAL only delayed the exit (~50 ms of a 0.9 s run)."""
    others = set(_checkpointer_threads())
    store = StateStore(tmp_path / "watchtower.db", [BlobSink()], throwaway=True)
    await store.open()
    await store.write_rows([object()])  # type: ignore[list-item]
    assert [t for t in _checkpointer_threads() if t not in others] == []
    await store.close()


async def test_an_unexpected_error_in_the_copy_thread_is_one_line_and_commits_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """Not an SQLite error (a bug, MemoryError): no traceback from the thread; the writers copy at the cap."""
    def broken(self: walcheckpoint.WalCheckpointer) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(walcheckpoint.WalCheckpointer, "_checkpoint", broken)
    db = tmp_path / "watchtower.db"
    others = set(_checkpointer_threads())
    store = StateStore(db, [BlobSink()])
    await store.open()
    ours = [t for t in _checkpointer_threads() if t not in others]
    for _ in range(3):
        await store.write_rows([object()])  # type: ignore[list-item]
    assert _wait_for(lambda: not ours[0].is_alive())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.getMessage().startswith(str(db))]
    assert errors == [f"{db}: the WAL copy thread stopped (RuntimeError: unexpected); commits copy the WAL "
                      f"themselves once it holds {walcheckpoint.WAL_CAP_PAGES} pages"]
    assert all(r.exc_info is None for r in caplog.records)
    await store.write_rows([object()])  # type: ignore[list-item]
    await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 800
    conn.close()


def test_a_stop_while_the_thread_starts_closes_its_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """stop() interrupts the thread's connection as soon as it exists: here during the thread's first statement.
    That left the connection open (the thread returned before its close), and the next open of the database in
    another mode found it locked (a fresh-clone run failed so: `PRAGMA journal_mode=DELETE` -> database is locked)."""
    db = tmp_path / "state.db"
    real_connect = sqlite3.connect
    setup = real_connect(db)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.close()
    wal = walcheckpoint.WalCheckpointer(db)
    opened: list[object] = []

    class StoppedAtFirstStatement:
        """A real connection whose first statement meets stop(), as the race does."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn
            opened.append(self)

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if not wal._stopping:  # noqa: SLF001 - the race: stop() arrives during this statement
                wal._stopping = True  # noqa: SLF001
                raise sqlite3.OperationalError("interrupted")
            return self.conn.execute(sql, *args)

        def interrupt(self) -> None:
            self.conn.interrupt()

        def close(self) -> None:
            opened.remove(self)
            self.conn.close()

    monkeypatch.setattr(walcheckpoint.sqlite3, "connect", lambda *a, **k: StoppedAtFirstStatement(real_connect(*a, **k)))
    with caplog.at_level(logging.WARNING, logger="watchtower.state"):
        wal.start()
        wal._thread.join(timeout=10)  # noqa: SLF001 - the thread ends on its own: its first statement met the stop
        assert not wal._thread.is_alive()  # noqa: SLF001
        wal.stop()
    monkeypatch.undo()
    assert opened == []
    assert "cannot copy the WAL" not in caplog.text  # a stop is not a failure
    conn = real_connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    finally:
        conn.close()


async def test_a_reader_holding_an_old_snapshot_is_reported_and_the_wal_shrinks_once_it_lets_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """A `sqlite3` shell left inside a transaction keeps the WAL from being copied: it grew by ~12 MB/s at 20k
    records/s with no line in the log, /healthz ok, and stayed 180 MB after the reader let go (review 2026-12-04).
    Now a WAL past WAL_CAP_PAGES that has not been copied whole for STUCK_SECONDS is one WARNING (and a /healthz
    problem, `wal_problem`), an INFO when it is copied again, and the file shrinks back to journal_size_limit."""
    monkeypatch.setattr(walcheckpoint, "WAL_CAP_PAGES", 20)
    monkeypatch.setattr(walcheckpoint, "STUCK_SECONDS", 0.3)
    monkeypatch.setattr(walcheckpoint, "IDLE_SECONDS", 0.05)
    caplog.set_level(logging.INFO, logger="watchtower.state")
    db = tmp_path / "watchtower.db"
    store = StateStore(db, [BlobSink()])
    await store.open()
    await store.write_rows([object()])  # type: ignore[list-item]
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM blobs").fetchone()  # an old snapshot, held
    wal = Path(f"{db}-wal")
    for _ in range(30):  # ~6 MiB while the reader holds on
        await store.write_rows([object()])  # type: ignore[list-item]
    assert _wait_for(lambda: store.wal_problem is not None, 5)
    held = wal.stat().st_size
    assert held > 5 * 2**20
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.getMessage().startswith(str(db))]
    assert len(warnings) == 1 and "a reader keeps an old snapshot" in warnings[0], warnings
    assert store.wal_problem is not None and "MiB" in store.wal_problem
    reader.execute("COMMIT")
    reader.close()
    assert _wait_for(lambda: store.wal_problem is None, 5)
    assert any(r.getMessage() == f"{db}: the WAL is copied into the database again"
               for r in caplog.records if r.levelno == logging.INFO)
    await store.write_rows([object()])  # the next write starts the WAL over: truncated to the limit
    assert _wait_for(lambda: wal.stat().st_size <= walcheckpoint.wal_size_limit(16384), 5), wal.stat().st_size
    await store.close()


async def test_the_correlator_process_leaves_the_stuck_reader_report_to_the_daemon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """Both processes copy the same WAL, so one reader holding an old snapshot was warned of twice (the daemon's line
    and the correlator process's; review 2026-12-04). A store opened with `reports_readers=False` (the correlator
    process's) copies as before and says nothing of it; the daemon's store says it once."""
    monkeypatch.setattr(walcheckpoint, "WAL_CAP_PAGES", 20)
    monkeypatch.setattr(walcheckpoint, "STUCK_SECONDS", 0.2)
    monkeypatch.setattr(walcheckpoint, "IDLE_SECONDS", 0.05)
    caplog.set_level(logging.INFO, logger="watchtower.state")
    db = tmp_path / "watchtower.db"
    daemon, follower = StateStore(db, [BlobSink()]), StateStore(db, [BlobSink()], reports_readers=False)
    await daemon.open()
    await follower.open()
    await follower.write_rows([object()])  # type: ignore[list-item]
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM blobs").fetchone()
    for _ in range(30):
        await follower.write_rows([object()])  # type: ignore[list-item]
    assert _wait_for(lambda: daemon.wal_problem is not None, 5)
    time.sleep(0.5)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "old snapshot" in r.getMessage()]
    assert len(warned) == 1 and follower.wal_problem is None
    reader.execute("COMMIT")
    reader.close()
    await follower.close()
    await daemon.close()
