"""Issue #8 defects shown in-process or with one short-lived daemon: each failed before its fix.

Scan faults (symlink loops, descriptors exhausted) must be counted, never fatal and never mistaken
for rotation; descriptors stay within `tail.max_open_files`; a damaged, emptied or foreign state
database is refused with a message naming the file; commit and maintenance failures never kill the
daemon and never lose or double-count a record.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exporter.backlog import RowBacklog
from exporter.config import SourceConfig, TailConfig, load_config
from exporter.daemon import Daemon
from exporter.exposition import render_sync
from exporter.fingerprint import read_fingerprint
from exporter.metrics import SelfMetrics
from exporter.state import Commit, StateError, StateStore
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER, RECORD_DAY, REPO, AcctWriter, Watchtower, total, write_config

THREAD_WORKER = {"worker": "thread"}
"""Tests of the daemon's own state writer thread (a sink injected in-process) pin that worker."""


def tailer_for(directory: Path, **tail: object) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "acct-*.csv")])
    return Tailer([src], TailConfig(rescan_interval=0, start_position="beginning", **tail), SelfMetrics(reg)), reg


async def drain(tailer: Tailer, force: bool = True) -> int:
    rows = 0

    def on_batch(stream, batch) -> None:  # type: ignore[no-untyped-def]
        nonlocal rows
        rows += len(batch)

    more = await tailer.poll(on_batch, force_scan=force)
    while more:
        more = await tailer.poll(on_batch)
    return rows


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, labels) or 0.0


# --- defect 3: a stat error on one glob match is counted, never fatal ------------------------------
async def test_symlink_loop_in_the_glob_is_counted_and_the_other_files_are_read(tmp_path: Path):
    w = AcctWriter(tmp_path)
    w.write(7)
    os.symlink(tmp_path / "acct-loop.csv", tmp_path / "acct-loop.csv")  # ELOOP on stat
    tailer, reg = tailer_for(tmp_path)
    assert await drain(tailer) == 7
    assert await drain(tailer) == 0  # rescans keep counting, still no crash
    assert sample(reg, "watchtower_read_errors_total", source="acct", reason="stat") == 2
    await tailer.close()


# --- defect 8: a failed scan is not an empty one; descriptors are bounded ---------------------------
async def test_a_scan_that_fails_with_emfile_is_not_a_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    w = AcctWriter(tmp_path)
    for _ in range(20):
        w.write(3)
        w.rotate()
    tailer, reg = tailer_for(tmp_path)
    assert await drain(tailer) == 60
    real_scandir = os.scandir

    def no_fds(path=".", *a, **k):  # type: ignore[no-untyped-def]
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "scandir", no_fds)  # glob() swallows this and returns []
    assert await drain(tailer) == 0
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert sample(reg, "watchtower_rotations_total", source="acct") == 0
    assert sample(reg, "watchtower_files_followed", source="acct") == 21
    assert sample(reg, "watchtower_read_errors_total", source="acct", reason="scan") == 1
    w.write(4)
    assert await drain(tailer) == 4  # still following the newest file, nothing re-read
    await tailer.close()


async def test_open_descriptors_stay_within_max_open_files(tmp_path: Path):
    w = AcctWriter(tmp_path)
    paths = []
    for _ in range(40):
        paths.append(w.path)
        w.write(2)
        w.rotate()
    tailer, reg = tailer_for(tmp_path, max_open_files=8)
    assert await drain(tailer) == 80
    assert sum(1 for s in tailer.streams.values() if s.file is not None) <= 8
    for p in paths:  # every file grows again: reopened at its offset, never re-read
        w.write(1, path=p)
    assert await drain(tailer) == 40
    assert sample(reg, "watchtower_files_open") <= 8
    await tailer.close()


def test_fingerprints_are_digests_not_raw_log_lines(tmp_path: Path):
    w = AcctWriter(tmp_path)
    w.write(20)
    fp = read_fingerprint(str(w.path))
    assert b"@" not in fp and b"gmail" not in fp and len(fp) == 36


# --- defect 10: a state database that is not what it should be is refused, by name -----------------
def run_watchtower(config: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", "run", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("damage", ["zero_bytes", "schema_without_marker", "garbage"])
def test_a_damaged_or_emptied_state_database_is_refused_with_its_name(tmp_path: Path, damage: str):
    cfg = write_config(tmp_path)
    db = tmp_path / "state" / "watchtower.db"
    db.parent.mkdir(mode=0o700)
    if damage == "zero_bytes":
        db.write_bytes(b"")
    elif damage == "schema_without_marker":
        conn = sqlite3.connect(db)
        conn.executescript("CREATE TABLE wt_checkpoints (file_id TEXT); CREATE TABLE wt_series (metric TEXT);")
        conn.close()
    else:
        db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    proc = run_watchtower(cfg)
    assert proc.returncode == 2, proc.stderr  # no restart mends it: systemd's RestartPreventExitStatus=2
    assert str(db) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "move the file aside" in proc.stderr


async def test_a_corrupted_page_is_found_by_quick_check_at_start(tmp_path: Path):
    db = tmp_path / "watchtower.db"
    store = StateStore(db)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE filler (x)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(200),) for _ in range(400)])
    conn.commit()
    conn.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for p in range(4, len(data) // page - 1):  # break the page-type byte of the filler table's b-tree pages
        data[p * page] = 0x00
    db.write_bytes(bytes(data))
    with pytest.raises(StateError, match="damaged|not a usable"):
        await StateStore(db).open()


async def test_state_files_are_private(tmp_path: Path):
    db = tmp_path / "state" / "watchtower.db"
    store = StateStore(db)
    await store.open()
    await store.write_checkpoint(Commit())
    assert (db.parent.stat().st_mode & 0o777) == 0o700
    for f in db.parent.iterdir():
        assert (f.stat().st_mode & 0o777) == 0o600, f
    await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384  # a new database: 16 KiB pages
    conn.close()


# --- defect 1: the first run's start decision is committed before anything is read -----------------
def test_kill_before_the_first_commit_does_not_skip_records_written_meanwhile(tmp_path: Path, watchtower_factory):
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(300)  # history: skipped by start_position end
    cfg = write_config(tmp_path, tail={"start_position": "end", "checkpoint_interval": 30})
    wt = watchtower_factory(cfg).start()
    wt.kill9()  # long before the first periodic checkpoint
    w.write(300)  # written while the daemon is down: must be counted
    wt.start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 300)
    assert total(wt.settle(), "pmta_delivered_total") == 300
    wt.stop()


# --- defects 4 and 6: failing commits and maintenance never kill the daemon or lose a record --------
class FailingSink:
    """A correlator stand-in whose writes fail while `failing` is set (as SQLITE_FULL would)."""

    def __init__(self) -> None:
        self.failing = False
        self.maintain_fails = True
        self.rows: set[tuple[str, int]] = set()
        self.stored: list[tuple[str, int, str]] = []
        self.maintained = 0
        self.released = 0
        self.delay = 0.0
        """Seconds per row written: a correlator slower than the traffic."""

    def setup(self, conn: sqlite3.Connection) -> None:
        pass

    def observe(self, batch) -> None:  # type: ignore[no-untyped-def]
        pass

    def release(self, batch) -> None:  # type: ignore[no-untyped-def]
        self.released += len(batch)

    def lookup_vmta(self, columns, rows, resume=False):  # type: ignore[no-untyped-def]
        return [None] * len(rows)

    def write(self, conn: sqlite3.Connection, batches) -> None:  # type: ignore[no-untyped-def]
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        if self.delay:
            time.sleep(self.delay * sum(len(b) for b in batches))
        for b in batches:
            rcpt = b.columns.rcpt
            for n, row in zip(b.line_numbers, b.rows, strict=True):
                self.stored.append((b.file_id, n, row[rcpt]))
            self.rows.update((b.file_id, n) for n in b.line_numbers)

    def maintain(self, conn: sqlite3.Connection) -> None:
        self.maintained += 1
        if self.maintain_fails:
            raise sqlite3.OperationalError("database or disk is full")

    def asgi_routes(self) -> None:
        return None


async def test_commit_failures_pause_reading_and_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import exporter.daemon as daemon_mod

    monkeypatch.setattr("exporter.maintenance.MAINTAIN_INTERVAL", 0.05)
    monkeypatch.setattr("exporter.writer.RETRY_MAX", 0.05)
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    cfg = load_config(write_config(tmp_path, tail={"max_pending_rows": 1000, "chunk_bytes": 64 * 1024},
                                   correlator=THREAD_WORKER))
    sink = FailingSink()
    monkeypatch.setattr(daemon_mod, "_correlator", lambda *a: sink)
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 10)
    for _ in range(100):  # maintenance (failing) runs only while commits succeed: let it run once first
        if sink.maintained:
            break
        await asyncio.sleep(0.05)
    sink.failing = True
    w.write(5000)
    peak = 0
    for _ in range(60):
        await asyncio.sleep(0.05)
        peak = max(peak, d.queue.backlog_rows + d.pipeline.pending_rows)
    health = d.health()
    assert health["ok"] is False and "disk is full" in health["problems"][0]
    assert health["reading_paused"] is True
    assert peak < 1000 + 300  # bounded: at most one 64 KiB chunk (~200 rows) past the limit
    assert sink.maintained >= 1  # maintenance failed too, and the daemon lives on
    sink.failing = False
    sink.maintain_fails = False
    for _ in range(200):
        await asyncio.sleep(0.05)
        if len(sink.rows) == 5000 and d.queue.backlog_rows == 0:
            break
    assert len(sink.rows) == 5000
    assert d.registry.get_sample_value("pmta_delivered_total", {"vmta": "vmta-1", "vmta_pool": "pool-a",
                                                                 "isp": "gmail"}) == 5000
    assert d.health()["ok"] is True
    assert d.registry.get_sample_value("watchtower_maintenance_errors_total") >= 1
    d.should_exit.set()
    assert await asyncio.wait_for(task, 10) == 0
    conn = sqlite3.connect(tmp_path / "state" / "watchtower.db")
    stored = conn.execute("SELECT value FROM wt_series WHERE metric='pmta_delivered_total'").fetchone()[0]
    assert float(stored) == 5000


def test_commit_failure_log_states_only_what_is_true(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The writer does not know when reading pauses (the daemon decides, and says so in its own line):
    its error names the file and SQLite's words, says nothing is lost, and counts the rows held only
    when there are some (with the correlator's own process or no correlator there are none)."""
    from exporter.writer import CommitQueue

    queue = CommitQueue(StateStore(tmp_path / "watchtower.db", []))
    with caplog.at_level("ERROR", logger="watchtower.state"):
        queue._failed("checkpoint", sqlite3.OperationalError("database or disk is full"))  # noqa: SLF001
    (first,) = [r.getMessage() for r in caplog.records]
    assert first == (f"checkpoint to {tmp_path / 'watchtower.db'} failed: OperationalError: database or disk is full;"
                     " nothing is lost: it is retried until it succeeds")
    caplog.clear()
    queue.backlog.rows = 1234  # as if the thread worker's rows waited in memory
    with caplog.at_level("ERROR", logger="watchtower.state"):
        queue._failed("rows", sqlite3.OperationalError("disk I/O error"))  # noqa: SLF001
    (second,) = [r.getMessage() for r in caplog.records]
    assert second.endswith("still failing (2 attempts): OperationalError: disk I/O error; nothing is lost: it is retried until it"
                           " succeeds (1234 rows wait in memory)"), second


def test_a_commit_failing_on_a_damaged_database_does_not_say_nothing_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A `-wal` truncated in place while the daemon ran (review, 2026-12-05: 1 try in 25) zeroed the database's first
    page; every commit then failed with `file is not a database`, logged as "nothing is lost", and the next start
    refused the file: every counter and checkpoint was gone. SQLite's damage codes (NOTADB, CORRUPT) are said as such."""
    from exporter.writer import CommitQueue

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"\0" * 8192)  # what the review found: a first page of zeros
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        sqlite3.connect(broken).execute("SELECT * FROM sqlite_master").fetchall()
    queue = CommitQueue(StateStore(tmp_path / "watchtower.db", []))
    with caplog.at_level("ERROR", logger="watchtower.state"):
        queue._failed("checkpoint", damaged.value)  # noqa: SLF001
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (f"checkpoint to {tmp_path / 'watchtower.db'} failed: DatabaseError: file is not a database; the"
                    " database file is damaged (changed outside the daemon, or a failing disk): what it held may be"
                    " lost and retries cannot mend it; stop the daemon and see docs/runbooks.md#correlator-store-damaged")


async def _until(check: Any) -> None:
    """Poll `check` until true (the caller's asyncio.wait_for bounds it)."""
    while not check():
        await asyncio.sleep(0.01)


async def test_sigterm_mid_backfill_commits_within_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture):
    """A slow sink (5k rows/s) and a big backlog: stop gives up at shutdown_timeout, after the slice in flight,
    instead of writing the whole backlog (4 s)."""
    import exporter.daemon as daemon_mod

    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(20000)
    cfg = load_config(write_config(tmp_path, tail={"shutdown_timeout": 1.0}, correlator=THREAD_WORKER))
    sink = FailingSink()
    sink.maintain_fails = False
    real_write = sink.write

    def slow_write(conn, batches):  # type: ignore[no-untyped-def]
        time.sleep(sum(len(b) for b in batches) * 2e-4)  # 5,000 rows/s: 4 s for the backlog
        real_write(conn, batches)

    sink.write = slow_write  # type: ignore[method-assign]
    monkeypatch.setattr(daemon_mod, "_correlator", lambda *a: sink)
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 10)
    # stop once 8,000 rows wait in memory: 1.6 s of writes at least, past shutdown_timeout and a slice
    await asyncio.wait_for(_until(lambda: d.queue.backlog_rows >= 8000), 60)
    with caplog.at_level("WARNING", logger="watchtower.daemon"):
        d.should_exit.set()
        # a hang guard only (a stop that wrote the whole backlog would end in 4 s, and is caught below)
        assert await asyncio.wait_for(task, 60) == 0, "the stop hung"
    # the deadline fired: the stop gave up with rows still waiting, and said so
    gave_up = [r.getMessage() for r in caplog.records if "stopped before committing" in r.getMessage()]
    assert len(gave_up) == 1, f"the stop did not give up at shutdown_timeout: wrote {len(sink.rows)} rows"
    line = gave_up[0]
    assert line.endswith("rows wait, commit error: none); those records are read again at the next start"), line
    assert 0 < len(sink.rows) < 20000  # stopped mid-backlog: the rest is read again at the next start


# --- SIGHUP reloads the classification tables; a bad table is refused and the daemon lives on -------
def _write_mycorp(w: AcctWriter, n: int) -> None:
    """n deliveries to mycorp.test, whose MX is Google's (gmail until a table pins the domain)."""
    from tests.conftest import d_line

    with open(w.path, "a", encoding="utf-8") as f:
        for i in range(n):
            f.write(d_line(10_000 + w.n + i, domain="mycorp.test") + "\n")
    w.n += n


def _pin_mycorp_to_other(table: Path) -> None:
    table.write_text(table.read_text().replace("domains: [yahoo.co.jp,", "domains: [mycorp.test, yahoo.co.jp,", 1))


def _sighup(wt: Watchtower, logged: str) -> None:
    """SIGHUP the daemon and wait (up to 10 s) until its log says `logged`."""
    import signal

    assert wt.proc is not None
    wt.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while logged not in wt.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_sighup_reloads_the_isp_table_and_survives_a_broken_one(tmp_path: Path, watchtower_factory):
    import shutil

    table = tmp_path / "isps.yaml"
    shutil.copy(REPO / "exporter" / "classify" / "isps.yaml", table)
    (tmp_path / "logs").mkdir()
    w = AcctWriter(tmp_path / "logs")
    cfg = write_config(tmp_path, classify={"isp_file": str(table)})
    wt = watchtower_factory(cfg).start()
    _write_mycorp(w, 5)  # its MX is Google's: gmail
    wt.wait_for(lambda s: total(s, "pmta_delivered_total", isp="gmail") == 5)
    _pin_mycorp_to_other(table)
    _sighup(wt, "classification tables reloaded")
    _write_mycorp(w, 3)  # pinned to other by the reloaded table
    wt.wait_for(lambda s: total(s, "pmta_delivered_total", isp="other") == 3)
    table.write_text("version: 1\nproviders: {nonsense: {}}\n")
    _sighup(wt, "not reloaded")
    _write_mycorp(w, 2)
    wt.wait_for(lambda s: total(s, "pmta_delivered_total", isp="other") == 5)
    assert wt.proc.poll() is None
    assert "Traceback" not in wt.log.read_text()
    assert wt.stop() == 0


def test_sighup_checks_the_config_file_and_says_what_a_restart_would_do(tmp_path: Path, watchtower_factory):
    """`systemctl reload` read the tables only and said "reloaded" whatever the config file had become: an edit
    that broke it went unnoticed until the next crash or reboot, which then exited 2 (and systemd gave up). The
    file is checked on SIGHUP: a broken one is an ERROR naming its problem (the daemon goes on as it was), and
    settings that changed are named as taking effect at the next restart."""
    (tmp_path / "logs").mkdir()
    AcctWriter(tmp_path / "logs")
    cfg = write_config(tmp_path)
    wt = watchtower_factory(cfg).start()
    good = cfg.read_text()
    data = yaml.safe_load(good)
    cfg.write_text(yaml.safe_dump({**data, "listen": "127.0.0.1:99999"}))
    line = next(n for n, text in enumerate(cfg.read_text().splitlines(), 1) if text.startswith("listen:"))
    _sighup(wt, "a restart would fail")
    said = [ln for ln in wt.log.read_text().splitlines() if "SIGHUP" in ln]
    assert any(" ERROR " in ln and str(cfg) in ln and f"(line {line}: listen: " in ln and "a restart would fail" in ln
               for ln in said), said  # (the line of the key, as check-config says it)
    cfg.write_text(yaml.safe_dump({**data, "log_level": "debug", "tail": {**data["tail"], "poll_interval": 0.7}}))
    _sighup(wt, "take effect at the next restart")
    changed = [ln for ln in wt.log.read_text().splitlines() if "take effect at the next restart" in ln]
    assert len(changed) == 1 and " WARNING " in changed[0], changed
    assert "log_level, tail.poll_interval" in changed[0], changed
    cfg.write_text(good)
    before = wt.log.read_text().count("take effect at the next restart")
    _sighup(wt, "classification tables reloaded")
    time.sleep(0.5)
    assert wt.log.read_text().count("take effect at the next restart") == before  # as started: nothing to say
    assert wt.proc is not None and wt.proc.poll() is None
    assert "Traceback" not in wt.log.read_text()
    assert wt.stop() == 0


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_sighup_reloads_the_tables_the_correlator_uses_too(tmp_path: Path, watchtower_factory, worker: str):
    """Timelines take their ISP from the same table as the metrics: after SIGHUP, new timelines follow the
    reloaded table in either worker (the correlator's own process is told too), so the API and the
    metrics never disagree about a recipient domain's provider."""
    import shutil

    table = tmp_path / "isps.yaml"
    shutil.copy(REPO / "exporter" / "classify" / "isps.yaml", table)
    (tmp_path / "logs").mkdir()
    w = AcctWriter(tmp_path / "logs")
    cfg = write_config(tmp_path, classify={"isp_file": str(table)}, correlator={"enabled": True, "worker": worker})
    wt = watchtower_factory(cfg).start()
    db = tmp_path / "state" / "watchtower.db"

    def timeline_isps(want: int) -> dict[str, int]:
        deadline = time.monotonic() + 30
        while True:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                counts = dict(conn.execute("SELECT isp, count(*) FROM corr_timelines GROUP BY isp").fetchall())
            except sqlite3.OperationalError:  # tables not created yet
                counts = {}
            finally:
                conn.close()
            if sum(counts.values()) >= want or time.monotonic() > deadline:
                return counts
            time.sleep(0.1)

    _write_mycorp(w, 4)  # its MX is Google's: gmail
    wt.wait_for(lambda s: total(s, "pmta_delivered_total", isp="gmail") == 4)
    assert timeline_isps(4) == {"gmail": 4}
    _pin_mycorp_to_other(table)
    _sighup(wt, "classification tables reloaded")
    _write_mycorp(w, 3)  # pinned to other by the reloaded table, in the metrics and in the timelines
    wt.wait_for(lambda s: total(s, "pmta_delivered_total", isp="other") == 3)
    assert timeline_isps(7) == {"gmail": 4, "other": 3}
    assert wt.proc.poll() is None
    assert "Traceback" not in wt.log.read_text()
    assert wt.stop() == 0


# --- a row slice that holds the write lock long is logged: the daemon's checkpoints wait behind it ---
async def test_a_row_slice_holding_the_write_lock_long_is_logged_with_its_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    from exporter import writelock
    from exporter.records import Columns, RecordBatch
    from tests.conftest import ACCT_HEADER

    monkeypatch.setattr(writelock, "LONG_HOLD_S", 0.2)
    w = AcctWriter(tmp_path)
    w.write(10)
    columns = Columns.from_header(ACCT_HEADER.split(","))
    rows = [line.split(",")[: len(columns.names)] for line in w.path.read_text().splitlines()[1:]]
    batch = RecordBatch("acct", str(w.path), columns, rows, list(range(2, 12)), file_id="f00d")
    class CostlySink(FailingSink):
        """Advances the hold watch's clock by its cost per row instead of sleeping: a loaded machine stretching the
        quick write past LONG_HOLD_S logged it too (held times are the sink's cost, not wall time)."""

        def __init__(self) -> None:
            super().__init__()
            self.cost = 0.0
            """Seconds per row written."""

        def write(self, conn: sqlite3.Connection, batches) -> None:  # type: ignore[no-untyped-def]
            clock[0] += self.cost * sum(len(b) for b in batches)
            super().write(conn, batches)

    clock = [100.0]
    sink = CostlySink()
    store = StateStore(tmp_path / "state" / "watchtower.db", [sink])
    await store.open()
    store.row_holds.clock = lambda: clock[0]
    caplog.set_level(logging.WARNING, logger="watchtower.state")
    backlog = RowBacklog()
    backlog.add([batch], [])
    assert await store.write_backlog(backlog, [], 4, 1 << 20) == (4, 0)  # quick: not logged
    sink.cost = 0.1  # per row: the next slice holds the lock 0.6 s
    assert await store.write_backlog(backlog, [], 6, 1 << 20) == (6, 0)
    await store.close()
    held = [r.getMessage() for r in caplog.records if "write lock" in r.getMessage()]
    assert len(held) == 1 and held[0].startswith("a write of the correlator's rows held the state database's write"
                                                 " lock for 0.6 s (6 rows); other writers (the daemon's checkpoints)"
                                                 " waited meanwhile"), held
    assert store.row_holds.longest == pytest.approx(0.6)
    assert len(sink.rows) == 10


# --- span slices are sized per source: a slow source's pieces do not hold the lock for a fast one's size ---
def test_span_slices_are_sized_per_source_so_a_slow_sources_slices_stay_short(tmp_path: Path, monkeypatch):
    """Complaints (each searched deep in the store) cost ~20x what deliveries cost per byte: a piece of the
    complaint file sized on the delivery file's rate held the write lock for 13 s. The correlator process
    follows the files in rounds (what each gained since the last); each source learns its own size, so only the
    very first complaint piece (the starting size) is long.

    The writer's clock is the sink's cost (a fake monotonic clock the sink advances), not wall time: on a loaded
    machine the real per-slice overhead (reading, commits) hid the 20x ratio and acct's size fell to fbl's floor
    (a fresh-clone run failed so)."""
    import types

    from exporter import writer as writer_module
    from exporter.spans import span_at
    from exporter.writer import SliceSizes, write_slices
    from tests.conftest import ACCT_HEADER

    class CostPerSource(FailingSink):
        def __init__(self) -> None:
            super().__init__()
            self.slices: list[tuple[str, int, float]] = []

        def write(self, conn: sqlite3.Connection, batches) -> None:  # type: ignore[no-untyped-def]
            cost = sum(len(b) * (200e-6 if b.source == "fbl" else 10e-6) for b in batches)  # per row: 200 us a
            super().write(conn, batches)  # complaint, 10 us a delivery
            clock[0] += cost
            self.slices.append((batches[0].source, sum(len(b) for b in batches), cost))

    clock = [1000.0]
    monkeypatch.setattr(writer_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time))

    lines, pieces = 12_000, 4
    files = {}
    for name in ("acct", "fbl"):
        w = AcctWriter(tmp_path, name)
        w.write(lines)
        data = w.path.read_bytes()
        ends = [i + 1 for i, c in enumerate(data) if c == 10]  # byte after each line (the header's first)
        st = w.path.stat()
        cuts = [0] + [ends[k * lines // pieces] for k in range(1, pieces)] + [len(data)]
        files[name] = [span_at(name, name, str(w.path), st.st_dev, st.st_ino,
                               (cuts[k], 0 if k == 0 else k * lines // pieces + 1, "" if k == 0 else ACCT_HEADER),
                               cuts[k + 1], None) for k in range(pieces)]
    sink = CostPerSource()
    store = StateStore(tmp_path / "state" / "watchtower.db", [sink])
    store._open(check=False)
    backlog = RowBacklog()
    sizes = SliceSizes(seconds=0.05)
    try:
        for acct, fbl in zip(files["acct"], files["fbl"], strict=True):  # a round: what each file gained since
            backlog.add([], [acct, fbl])
            while backlog:
                write_slices(store, backlog, [], sizes, 5.0, lambda: True)
    finally:
        store._close()
    assert len(sink.rows) == 2 * lines and len(sink.stored) == 2 * lines  # every line of both files, once
    long_fbl = [rows for source, rows, cost in sink.slices if source == "fbl" and cost > 0.2]
    assert len(long_fbl) == 1, sink.slices  # the first piece only: then the fbl size is the fbl rate's
    assert all(cost <= 0.1 for source, _rows, cost in sink.slices if source == "acct"), sink.slices
    # Each size is its own source's rate times 0.05 s (within the 64 KiB floor and 2x growth): ~20x apart.
    assert sizes.by_source["acct"] >= 8 * sizes.by_source["fbl"], (sizes.by_source, sink.slices)


def _a_span_of_the_correlator_process(tmp_path: Path) -> tuple[AcctWriter, object, os.stat_result, bytes, int]:
    """logs/acct-*.csv with 50 records, and the correlator process's span of them from the header line on (its `live`
    a follower.Where): (writer, span, the file's stat, its fingerprint, the span's first byte)."""
    from exporter.fingerprint import fingerprint_of, read_head
    from exporter.follower import Where
    from exporter.spans import span_at
    from tests.conftest import ACCT_HEADER

    (tmp_path / "logs").mkdir()
    w = AcctWriter(tmp_path / "logs")
    w.write(50)
    st = w.path.stat()
    fingerprint = fingerprint_of(read_head(str(w.path)))
    start = len(ACCT_HEADER) + 1
    span = span_at("f1", "acct", str(w.path), st.st_dev, st.st_ino, (start, 1, ACCT_HEADER), st.st_size, None,
                   fingerprint=fingerprint)
    span.live = Where(span.path, (st.st_dev, st.st_ino), [str(tmp_path / "logs" / "*.csv")], os.getpid(),
                      fingerprint)
    return w, span, st, fingerprint, start


def _checkpoint_row(conn, path: Path, st: os.stat_result, fingerprint: bytes, start: int,  # type: ignore[no-untyped-def]
                    gone_since: float | None = None) -> None:
    """The span's file as wt_checkpoints holds it: read to its end, the correlator at its header line."""
    from tests.conftest import ACCT_HEADER

    conn.execute(
        "INSERT INTO wt_checkpoints (file_id, source, path, dev, ino, fingerprint, offset, line_no, header, gone_since,"
        " updated, sink_offset, sink_line, sink_header) VALUES ('f1', 'acct', ?, ?, ?, ?, ?, 51, ?, ?, 0, ?, 1, ?)",
        (str(path), st.st_dev, st.st_ino, fingerprint, st.st_size, ACCT_HEADER, gone_since, start, ACCT_HEADER))


def _stored_whole(store: StateStore, sink: FailingSink, span: object, caplog: pytest.LogCaptureFixture) -> None:
    """Slices until the span is stored, then: its 50 records once each, nothing given up."""
    from exporter.writer import SliceSizes, write_slices

    backlog = RowBacklog()
    backlog.add([], [span])
    try:
        with caplog.at_level(logging.INFO):
            while backlog:
                write_slices(store, backlog, [], SliceSizes(seconds=0.05), 5.0, lambda: True)
    finally:
        store._close()
    assert sorted(n for _f, n in sink.rows) == list(range(2, 52))  # every record, once
    assert store.bytes_lost == 0
    assert not any("cannot be read again" in r.getMessage() for r in caplog.records)


def test_a_span_whose_file_the_tailer_found_copied_elsewhere_is_read_there(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture):
    """The correlator process takes its spans from the checkpoints at its start, maybe before the daemon's first
    scan found a file copied (`cp` + `mv`) and moved to moved_to while it was down and re-keyed its checkpoint: the
    span named the old path and inode, found neither, and its records were never stored (found by the randomized
    restart suite). It follows the re-keyed checkpoint."""

    w, span, st, fingerprint, start = _a_span_of_the_correlator_process(tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    copy = moved / w.path.name
    copy.write_bytes(w.path.read_bytes())  # moved across file systems, or moved then copied: a new inode
    w.path.unlink()
    sink = FailingSink()
    store = StateStore(tmp_path / "state" / "watchtower.db", [sink])
    store._open(check=False)
    # the daemon's first scan re-keyed the checkpoint (exporter.tailer._take_copy)
    _checkpoint_row(store._conn, copy, copy.stat(), fingerprint, start)
    _stored_whole(store, sink, span, caplog)


@pytest.mark.parametrize("daemon", ["re-keys it", "re-keys it as the mark is read", "renames it", "finds it nowhere",
                                    "never says"])
def test_a_span_whose_file_is_not_found_waits_for_the_daemons_reconciled_commit(tmp_path: Path, daemon: str,
                                                                                caplog: pytest.LogCaptureFixture):
    """Before the daemon's first scans have decided every checkpoint of the last stop, a span whose file is nowhere
    may name a copy the daemon is about to re-key (or a file renamed out of the globs, its path about to change): it
    waits for the commit the daemon marks with its run token (exporter/reconciled.py). Marked, it reads the file
    where the checkpoint now says, or gives the span up as before; never marked, it gives up once the wait is over.
    The mark is read before the checkpoint: the other order dropped a span re-keyed between the two reads."""
    from exporter.reconciled import Reconciliation, mark_reconciled
    from exporter.writer import SliceSizes, write_slices

    w, span, st, fingerprint, start = _a_span_of_the_correlator_process(tmp_path)
    if daemon == "renames it":
        found = w.path.with_name(w.path.name + ".old")  # renamed in place, out of the globs, while it was down
        w.path.rename(found)
    else:
        (tmp_path / "moved").mkdir()
        found = tmp_path / "moved" / w.path.name
        found.write_bytes(w.path.read_bytes())  # moved to another disk while the daemon was down: a new inode
        w.path.unlink()
    sink = FailingSink()
    store = StateStore(tmp_path / "state" / "watchtower.db", [sink], run="run-1")
    store._open(check=False)
    conn = store._conn

    def daemon_commits() -> None:
        if daemon != "finds it nowhere":  # its first scans found it (exporter.tailer _take_copy, _read_on_where_it_is)
            fst = found.stat()
            conn.execute("UPDATE wt_checkpoints SET path = ?, dev = ?, ino = ? WHERE file_id = 'f1'",
                         (str(found), fst.st_dev, fst.st_ino))
        mark_reconciled(conn, "run-1")

    class Racing(Reconciliation):
        """The daemon's commit lands as the correlator looks for the mark (between its two reads, in the old order)."""

        looks = 0

        def pending(self, conn, what):  # type: ignore[no-untyped-def]
            Racing.looks += 1
            if Racing.looks == 4:
                daemon_commits()
            return super().pending(conn, what)

    store.reconciliation = (Racing if daemon == "re-keys it as the mark is read" else Reconciliation)(
        "run-1", wait=0.5 if daemon == "never says" else 60.0)
    _checkpoint_row(conn, w.path, st, fingerprint, start)  # the checkpoint of the last stop, as the correlator finds it
    mark_reconciled(conn, "run-0")  # the mark of the daemon's previous run says nothing of this one
    backlog = RowBacklog()
    backlog.add([], [span])

    def write() -> None:
        write_slices(store, backlog, [], SliceSizes(seconds=0.05), 5.0, lambda: True)

    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                write()
                assert store.span_waits and backlog and store.bytes_lost == 0 and not sink.rows
                store.span_waits = False
            if daemon == "never says":
                time.sleep(0.6)
            elif daemon != "re-keys it as the mark is read":
                daemon_commits()
            while backlog:
                write()
    finally:
        store._close()
    said = [r.getMessage() for r in caplog.records]
    given_up = [m for m in said if "cannot be read again" in m]
    if daemon in ("finds it nowhere", "never says"):
        assert not sink.rows and store.bytes_lost == st.st_size - start and len(given_up) == 1, given_up
    else:
        assert sorted(n for _f, n in sink.rows) == list(range(2, 52))  # every record, once
        assert store.bytes_lost == 0 and not given_up
    assert len([m for m in said if "waiting (60 s at most)" in m or "waiting (0 s at most)" in m]) == 1, said
    assert len([m for m in said if "has not found every file" in m]) == (daemon == "never says")


def test_a_span_of_a_retired_file_copied_while_down_is_read_from_the_copy(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture):
    """The daemon had read a file to its end and retired it, the correlator process still behind on it; while the
    daemon was down the file was copied into moved_to (a new inode) and removed. The daemon's scans do not look for
    a retired file again (the metrics are done with it), so nothing re-keyed its checkpoint, and the correlator gave
    its last 26,324 bytes up (randomized restart suite, seed 40). The correlator finds the copy by its first record."""
    import os

    from exporter.follower import Where
    from exporter.reconciled import mark_reconciled
    from tests.conftest import ACCT_HEADER

    w, span, st, fingerprint, start = _a_span_of_the_correlator_process(tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    span.live = Where(span.path, (st.st_dev, st.st_ino), [str(tmp_path / "logs" / "*.csv"), str(moved / "*.csv")],
                      os.getpid(), fingerprint)
    (moved / "other.csv").write_text(ACCT_HEADER + "\n" + "".join(f"{line}\n" for line in
                                                                 w.path.read_text().splitlines()[2:]))  # not it
    copy = moved / w.path.name
    copy.write_bytes(w.path.read_bytes())
    w.path.unlink()
    sink = FailingSink()
    store = StateStore(tmp_path / "state" / "watchtower.db", [sink], run="run-1")
    store._open(check=False)
    _checkpoint_row(store._conn, w.path, st, fingerprint, start, gone_since=1.0)  # retired, never re-keyed
    mark_reconciled(store._conn, "run-1")  # the daemon's first scans are done
    _stored_whole(store, sink, span, caplog)  # from the copy


async def test_the_reconciled_mark_is_committed_once_the_first_scans_decide_not_at_the_next_checkpoint_tick(
        tmp_path: Path) -> None:
    """The correlator waits RECONCILE_WAIT (60 s) at most for the daemon's mark; with `tail.checkpoint_interval` at
    60 s or more, the mark waited for the next tick and came too late: a span of a file copied while the daemon was
    down was given up again (the loss the mark exists to prevent). The mark is committed as soon as the tailer has
    decided every checkpoint of the last stop."""
    cfg = load_config(write_config(tmp_path, tail={"checkpoint_interval": 600.0}))
    AcctWriter(tmp_path / "logs").write(20)
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        assert await _until_marked(d, tmp_path / "state" / "watchtower.db") == d.run_token
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def _until_marked(d: Daemon, db: Path, seconds: float = 20.0) -> str | None:
    """The run token of the daemon's reconciled mark (wt_meta) once it is `d`'s, or whatever it is after `seconds`."""
    deadline = time.monotonic() + seconds
    mark = None
    while mark != d.run_token and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        conn = sqlite3.connect(db)
        try:
            row = conn.execute("SELECT value FROM wt_meta WHERE key = 'reconciled'").fetchone()
        except sqlite3.OperationalError:  # not created yet
            row = None
        finally:
            conn.close()
        mark = row[0] if row else None
    return mark


# --- rows stored before their file's checkpoint: the file is registered in the same transaction ---
async def test_a_file_whose_rows_were_stored_before_its_checkpoint_keeps_its_id(tmp_path: Path):
    """kill -9 between a row slice and the checkpoint: the next start knows the file under the same id
    (at offset 0), so the sinks skip its stored lines instead of storing them again under a new id."""
    from exporter.filestream import Checkpoint
    from exporter.fingerprint import fingerprint_of, read_head
    from exporter.records import Columns, RecordBatch
    from tests.conftest import ACCT_HEADER

    w = AcctWriter(tmp_path)
    w.write(10)
    st = w.path.stat()
    cp = Checkpoint("f00d", "acct", str(w.path), st.st_dev, st.st_ino, fingerprint_of(read_head(str(w.path))),
                    st.st_size, 11, ACCT_HEADER)
    rows = [line.split(",") for line in w.path.read_text().splitlines()[1:]]
    columns = Columns.from_header(ACCT_HEADER.split(","))
    rows = [r[: len(columns.names)] for r in rows]
    batch = RecordBatch("acct", str(w.path), columns, rows, list(range(2, 12)), file_id="f00d")
    sink = FailingSink()
    store = StateStore(tmp_path / "state" / "watchtower.db", [sink])
    await store.open()
    backlog = RowBacklog()
    backlog.add([batch], [])
    assert await store.write_backlog(backlog, [cp], 4, 1 << 20) == (4, 0)  # rows 1-4; "kill -9" before the checkpoint
    await store.close()
    loaded = await StateStore(tmp_path / "state" / "watchtower.db", [sink]).open()
    assert [(c.file_id, c.offset, c.line_no) for c in loaded.checkpoints] == [("f00d", 0, 0)]
    tailer = Tailer([SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")])],
                    TailConfig(start_position="end"), None, loaded.checkpoints, first_run=False)
    tailer.scan()
    (stream,) = tailer.streams.values()
    assert (stream.cp.file_id, stream.cp.offset) == ("f00d", 0)  # same id, read again from the start
    await tailer.close()


# --- issue #10: a slow correlator never holds the metrics back, and its backlog is not held in memory -----
async def slow_sink_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay: float
                           ) -> tuple[Daemon, asyncio.Task[int], FailingSink, AcctWriter]:
    """A started daemon (1,000 rows in memory at most, 16 KiB reads) whose correlator takes `delay` s a row."""
    import exporter.daemon as daemon_mod

    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    cfg = load_config(write_config(tmp_path, tail={"max_pending_rows": 1000, "chunk_bytes": 16 * 1024},
                                   correlator=THREAD_WORKER))
    sink = FailingSink()
    sink.maintain_fails = False
    sink.delay = delay
    monkeypatch.setattr(daemon_mod, "_correlator", lambda *a: sink)
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 10)
    return d, task, sink, w


async def test_a_slow_correlator_lags_on_spans_while_the_metrics_keep_up(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    d, task, sink, w = await slow_sink_daemon(tmp_path, monkeypatch, 0.0003)  # 8,000 rows: 2.4 s behind
    w.write(4000)
    w.rotate()
    w.write(4000)
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    db = sqlite3.connect(tmp_path / "state" / "watchtower.db")
    counted_then = checkpointed_then = None
    peak_rows = 0
    for _ in range(400):
        await asyncio.sleep(0.02)
        peak_rows = max(peak_rows, d.queue.backlog_rows + d.pipeline.pending_rows)
        if counted_then is None and d.registry.get_sample_value("pmta_delivered_total", labels) == 8000:
            counted_then = len(sink.rows)
        row = db.execute("SELECT value FROM wt_series WHERE metric='pmta_delivered_total'").fetchone()
        if checkpointed_then is None and row and float(row[0]) == 8000:
            checkpointed_then = len(sink.rows)
        if len(sink.rows) == 8000:
            break
    db.close()
    assert counted_then is not None and counted_then < 8000  # every record counted, the correlator behind
    assert checkpointed_then is not None and checkpointed_then < 8000  # and the count committed
    assert sink.released > 0  # rows past the limit were let go, to be read again from the files
    assert peak_rows <= 1000 + 200  # memory: the limit plus at most one 16 KiB chunk
    assert len(sink.rows) == 8000 and len(sink.stored) == 8000  # each line once, none lost
    names = sorted({f for f, _n, _r in sink.stored})
    assert len(names) == 2
    for file_id in names:  # the same line numbers and content as a first read gives
        got = sorted((n, r) for f, n, r in sink.stored if f == file_id)
        assert [n for n, _ in got] == list(range(2, 4002))
    assert sorted(r for _f, _n, r in sink.stored) == sorted(f"u{i}@gmail.com" for i in range(8000))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not d.queue.pending:
            break
    assert d.registry.get_sample_value("watchtower_commit_backlog_bytes") == 0
    assert d.health()["ok"] is True
    d.should_exit.set()
    assert await asyncio.wait_for(task, 10) == 0
    conn = sqlite3.connect(tmp_path / "state" / "watchtower.db")
    stored = conn.execute("SELECT value FROM wt_series WHERE metric='pmta_delivered_total'").fetchone()[0]
    assert float(stored) == 8000


async def test_a_backlog_file_removed_before_it_is_read_again_is_reported(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture):
    d, task, sink, w = await slow_sink_daemon(tmp_path, monkeypatch, 0.002)  # far behind while counted
    w.write(4000)
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    for _ in range(200):
        await asyncio.sleep(0.02)
        if d.registry.get_sample_value("pmta_delivered_total", labels) == 4000:
            break
    assert d.pipeline.spans or d.queue.span_bytes
    w.path.unlink()
    sink.delay = 0
    for _ in range(300):
        await asyncio.sleep(0.02)
        if not d.queue.pending and d.registry.get_sample_value("watchtower_commit_backlog_lost_bytes_total"):
            break
    lost = d.registry.get_sample_value("watchtower_commit_backlog_lost_bytes_total")
    assert lost and lost > 0
    assert d.registry.get_sample_value("watchtower_commit_backlog_bytes_lost_total") == lost  # its deprecated name
    assert 0 < len(sink.rows) < 4000
    assert d.registry.get_sample_value("pmta_delivered_total", labels) == 4000  # the metrics counted them all
    assert any("cannot be read again for the correlator" in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)
    d.should_exit.set()
    assert await asyncio.wait_for(task, 10) == 0


@pytest.mark.parametrize(("elsewhere", "sink"), [(False, "caught up"), (True, "caught up"), (True, "behind")])
def test_a_gone_checkpoint_is_forgotten_once_the_sinks_hold_its_lines(tmp_path: Path, elsewhere: bool, sink: str):
    """With the correlator in its own process (the default) every sink position is explicit, and the forget asked
    for NULL: a gone checkpoint stayed in wt_checkpoints for ever, one row per rotated file. One the sinks are still
    behind on stays (its lines are still to be read again)."""
    from exporter.filestream import Checkpoint

    store = StateStore(tmp_path / "watchtower.db", [], sinks_elsewhere=elsewhere)
    store._open()
    cp = Checkpoint("f1", "acct", "/x/a.csv", 1, 2, b"", 100, 3, "h")
    store._write_checkpoint(Commit(checkpoints=[cp]))
    if elsewhere:  # the correlator process's position (the daemon's own writer commits its positions itself)
        behind = 40 if sink == "behind" else 100
        store._conn.execute("UPDATE wt_checkpoints SET sink_offset=?, sink_line=1, sink_header=header", (behind,))
    cp.gone_since = time.time() - 10 * 86400
    store._write_checkpoint(Commit(checkpoints=[cp], forget_before=time.time() - 86400))
    left = store._conn.execute("SELECT file_id FROM wt_checkpoints").fetchall()
    store._close()
    assert left == ([("f1",)] if sink == "behind" else [])


async def test_a_state_database_of_an_older_version_gets_the_sink_positions_as_caught_up(tmp_path: Path):
    """Before sink positions, a checkpoint was written only after its rows: every file is caught up."""
    db = tmp_path / "state" / "watchtower.db"
    db.parent.mkdir(mode=0o700)
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE wt_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE wt_checkpoints (file_id TEXT PRIMARY KEY, source TEXT NOT NULL, path TEXT NOT NULL,"
        " dev INTEGER NOT NULL, ino INTEGER NOT NULL, fingerprint BLOB NOT NULL, offset INTEGER NOT NULL,"
        " line_no INTEGER NOT NULL, header TEXT NOT NULL, gone_since REAL, updated REAL NOT NULL);"
        "INSERT INTO wt_meta VALUES ('schema_version', '1'), ('initialized', '1');"
        "INSERT INTO wt_checkpoints VALUES ('f1', 'acct', '/x.csv', 1, 2, x'00', 500, 9, 'type', NULL, 0);")
    conn.close()
    loaded = await StateStore(db).open()
    assert [(c.file_id, c.offset) for c in loaded.checkpoints] == [("f1", 500)]
    assert loaded.sink_positions == {}
    conn = sqlite3.connect(db)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(wt_checkpoints)")}
    assert {"sink_offset", "sink_line", "sink_header"} <= cols
    conn.close()


async def test_a_slow_slice_is_interrupted_at_the_shutdown_deadline(tmp_path: Path):
    """SIGTERM must not wait for a long SQLite statement: past the deadline it is interrupted, rolled back,
    and the committed checkpoint says where the correlator resumes (the batch's first byte)."""
    from exporter.filestream import Checkpoint
    from exporter.records import Columns, RecordBatch
    from exporter.writer import CommitQueue
    from tests.conftest import ACCT_HEADER, d_line

    class EndlessSink(FailingSink):
        def write(self, conn: sqlite3.Connection, batches) -> None:  # type: ignore[no-untyped-def]
            conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                         "SELECT count(*) FROM c WHERE x > 1e15").fetchone()

    columns = Columns.from_header(ACCT_HEADER.split(","))
    rows = [d_line(n).split(",")[: len(columns.names)] for n in range(10)]
    batch = RecordBatch("acct", "/logs/acct.csv", columns, rows, list(range(2, 12)), file_id="f00d")
    cp = Checkpoint("f00d", "acct", "/logs/acct.csv", 1, 2, b"", 5000, 11, ACCT_HEADER)
    store = StateStore(tmp_path / "state" / "watchtower.db", [EndlessSink()])
    await store.open()
    queue = CommitQueue(store)
    queue.start()
    queue.put(Commit(checkpoints=[cp], batches=[batch]))
    try:  # hang guards: the statement is endless, and the store's one thread is free again only once it is interrupted
        assert await asyncio.wait_for(queue.drain(0.3), 60) is False  # the rows were not stored
        await asyncio.wait_for(store.close(), 60)
    except TimeoutError:
        store._conn.interrupt()  # noqa: SLF001 - let the thread go, or the process could not exit
        pytest.fail("the endless statement was not interrupted at the shutdown deadline: the stop hung")
    assert queue.error is None  # an interrupt at the deadline is not a failure to report
    conn = sqlite3.connect(tmp_path / "state" / "watchtower.db")
    assert conn.execute("SELECT offset, sink_offset, sink_line FROM wt_checkpoints").fetchall() == [(5000, 0, 0)]
    conn.close()


async def test_a_checkpoint_waits_out_the_correlator_process_long_transaction(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The correlator's own process holds the write lock for one slice at a time, but a slice of reports about old
    deliveries can take seconds (measured: lock waits past 5 s, eight in a row, at 20k records/s with complaints 10
    minutes late). A checkpoint waits longer for the lock than a rows' write (CHECKPOINT_LOCK_WAIT_MS): a long
    transaction of the other process is contention, not a failed commit to log and count."""
    import threading

    import exporter.state as state_mod
    from exporter.state import Checkpoint
    from exporter.writer import CommitQueue

    monkeypatch.setattr(state_mod, "BUSY_TIMEOUT_MS", 200)  # scaled down: the rows' limit
    monkeypatch.setattr(state_mod, "CHECKPOINT_LOCK_WAIT_MS", 3000)
    db = tmp_path / "state" / "watchtower.db"
    store = StateStore(db, [])
    await store.open()
    failures: list[int] = []
    queue = CommitQueue(store, on_error=lambda: failures.append(1))
    queue.start()
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the correlator process's slice
    release = threading.Timer(0.8, lambda: other.execute("COMMIT"))
    release.start()
    cp = Checkpoint("f00d", "acct", "/logs/acct.csv", 1, 2, b"", 5000, 11, "type,timeLogged")
    queue.put(Commit(checkpoints=[cp]))
    assert await queue.drain(5.0) is True
    release.join()
    other.close()
    assert failures == [] and queue.error is None
    await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT offset FROM wt_checkpoints").fetchall() == [(5000,)]
    conn.close()


async def test_a_checkpoint_waiting_for_the_lock_does_not_hold_up_a_stop(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock held for good by another process: a stop still returns at its deadline (the wait for the lock is
    given up there like a running statement), and the checkpoint is not reported as failed."""
    import exporter.state as state_mod
    from exporter.state import Checkpoint
    from exporter.writer import CommitQueue

    monkeypatch.setattr(state_mod, "CHECKPOINT_LOCK_WAIT_MS", 3_600_000)  # a wait not given up would last an hour
    db = tmp_path / "state" / "watchtower.db"
    store = StateStore(db, [])
    await store.open()
    queue = CommitQueue(store)
    queue.start()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    queue.put(Commit(checkpoints=[Checkpoint("f00d", "acct", "/logs/acct.csv", 1, 2, b"", 5000, 11, "type")]))
    try:  # hang guards: the store's one thread is free again only once its wait for the lock is given up
        assert await asyncio.wait_for(queue.drain(0.3), 60) is False
        await asyncio.wait_for(store.close(), 60)
    except TimeoutError:
        other.execute("ROLLBACK")  # let the thread go, or the process could not exit
        pytest.fail("the checkpoint's wait for the lock was not given up at the shutdown deadline: the stop hung")
    assert queue.error is None
    other.execute("ROLLBACK")
    other.close()


# --- correlator.worker: process: the correlator in a process of its own, following the checkpoints -------
def _events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM corr_events").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


async def _until_stored(d: Daemon, db: Path, n: int, tries: int) -> None:
    """Polls every 50 ms, at most `tries` times, until the store holds `n` events and no commit waits; the caller
    asserts what it expects either way."""
    for _ in range(tries):
        await asyncio.sleep(0.05)
        if _events(db) == n and d.health()["commit_backlog_bytes"] == 0:
            return


async def test_the_correlator_process_stores_every_record_once_and_is_restarted_when_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import signal

    import exporter.daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "FOLLOWER_RESTART_WAIT", 0.2)
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(300)  # history: start_position end, so neither counted nor stored
    cfg = load_config(write_config(tmp_path, tail={"start_position": "end", "max_pending_rows": 1000},
                                   correlator={"enabled": True, "worker": "process"}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    first = d.follower.process
    assert first.is_alive()
    for _ in range(4):
        w.write(2000)
        w.rotate()
    db = tmp_path / "state" / "watchtower.db"
    for _ in range(400):  # kill it once it has stored some, not all
        await asyncio.sleep(0.05)
        if _events(db) > 0:
            break
    os.kill(first.pid, signal.SIGKILL)
    problems: list[str] = []
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    for _ in range(600):
        await asyncio.sleep(0.05)
        problems += d.health()["problems"]
        if _events(db) >= 8000 and d.health()["commit_backlog_bytes"] == 0:
            break
    assert any("correlator process exited" in p for p in problems)
    assert d.follower.process is not first and d.follower.process.is_alive()  # restarted
    assert d.registry.get_sample_value("pmta_delivered_total", labels) == 8000
    assert _events(db) == 8000  # every record once: none of the history, none twice
    d.should_exit.set()
    assert await asyncio.wait_for(task, 20) == 0
    assert not d.follower.process.is_alive()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM wt_checkpoints WHERE sink_offset IS NULL OR sink_offset != offset"
                        ).fetchone()[0] == 0
    conn.close()


async def test_a_correlator_process_that_cannot_start_is_retried_and_the_metrics_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Spawning the child can fail (no /dev/shm for its shared counters, the process limit reached,
    ENOMEM). That is the correlator's problem, reported and retried; it must not stop the daemon or its
    metrics, at start or at a restart."""
    import exporter.daemon as daemon_mod
    from exporter import follower

    monkeypatch.setattr(daemon_mod, "FOLLOWER_RESTART_WAIT", 0.2)
    real_start = follower.start
    attempts: list[int] = []

    def failing_start(config, run):  # type: ignore[no-untyped-def]
        attempts.append(1)
        if len(attempts) <= 3:
            raise OSError(28, "No space left on device")  # sem_open on a full /dev/shm
        return real_start(config, run)

    monkeypatch.setattr(follower, "start", failing_start)
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    cfg = load_config(write_config(tmp_path, correlator={"enabled": True, "worker": "process"}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    w.write(500)
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    problems: list[str] = []
    db = tmp_path / "state" / "watchtower.db"
    for _ in range(400):
        await asyncio.sleep(0.05)
        problems += d.health()["problems"]
        if _events(db) >= 500:
            break
    assert d.registry.get_sample_value("pmta_delivered_total", labels) == 500
    assert any("correlator process could not start: OSError" in p for p in problems), problems
    assert len(attempts) == 4 and d.follower is not None and d.follower.process.is_alive()
    assert _events(db) == 500  # the retried child stored them all
    assert d.health()["ok"] is True
    d.should_exit.set()
    assert await asyncio.wait_for(task, 20) == 0


async def test_a_correlator_process_that_keeps_exiting_backs_off_says_so_once_and_is_unhealthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """A correlator process that exits at every start (its lock file replaced by a directory) was restarted every
    2 s forever: three log lines each time (~5,400 an hour), /healthz ok, no metric and no alert. Now the waits
    double up to FOLLOWER_MAX_WAIT, a repeated exit is logged at most every FOLLOWER_LOG_EVERY, /healthz is not ok
    while it is down after FOLLOWER_UNHEALTHY_EXITS exits in a row, and watchtower_correlator_restarts_total
    counts the restarts; once the cause is gone it starts, stores everything and the daemon is healthy again."""
    import logging

    import exporter.daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "FOLLOWER_RESTART_WAIT", 0.05)
    monkeypatch.setattr(daemon_mod, "FOLLOWER_MAX_WAIT", 0.4)
    monkeypatch.setattr(daemon_mod, "FOLLOWER_LOG_EVERY", 3600.0)
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "correlator.lock").mkdir()  # the process refuses it and exits 1
    cfg = load_config(write_config(tmp_path, correlator={"enabled": True, "worker": "process"}))
    d = Daemon(cfg)
    starts: list[float] = []  # at each start, how far past the restart time the daemon had set (not before: >= 0)
    real_start = d._start_follower

    def counted() -> None:
        starts.append(time.monotonic() - d._follower_next_start)  # noqa: SLF001
        real_start()

    monkeypatch.setattr(d, "_start_follower", counted)
    waits: list[float] = []
    real_down = d._follower_down

    def down() -> float:
        waits.append(real_down())
        return waits[-1]

    monkeypatch.setattr(d, "_follower_down", down)
    with caplog.at_level(logging.INFO, logger="watchtower"):
        task = asyncio.create_task(d.serve())
        await asyncio.wait_for(d.started.wait(), 20)
        w.write(500)
        unhealthy = False
        deadline = time.monotonic() + 60  # until 7 starts, however slowly a loaded machine spawns them
        while (len(starts) < 7 or not unhealthy) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            health = d.health()
            if not health["ok"]:
                unhealthy = True
                assert any("correlator process keeps exiting" in p for p in health["problems"]), health
        assert unhealthy and len(starts) >= 7, starts
        # The wait doubles up to FOLLOWER_MAX_WAIT, and each start came only after its wait: the waits the daemon
        # chose, and no start before the time each set (not how many starts fit a window: load made spawns take
        # over 1 s).
        assert waits[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4], waits
        assert [late >= 0 for late in starts] == [True] * len(starts), starts
        restarts = d.registry.get_sample_value("watchtower_correlator_restarts_total")
        assert restarts == len(starts) - 1
        exits = [r for r in caplog.records if r.name == "watchtower.daemon" and "exited with code" in r.getMessage()]
        assert len(exits) == 1, [r.getMessage() for r in exits]  # the rest within FOLLOWER_LOG_EVERY: not logged
        (tmp_path / "state" / "correlator.lock").rmdir()
        db = tmp_path / "state" / "watchtower.db"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if _events(db) >= 500 and d.health()["ok"]:
                break
        assert _events(db) == 500 and d.health()["ok"] is True, d.health()
        assert d.follower is not None and d.follower.process.is_alive()
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


def _proc_start_time(pid: int) -> float:
    """When process `pid` started (seconds since the epoch), from /proc as the kernel counts it."""
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime


@pytest.mark.parametrize("worker", ["thread", "process"])
async def test_the_correlator_process_has_process_metrics_of_its_own(tmp_path: Path, worker: str):
    """`process_*` describe the daemon only; with the correlator in its own process (the default) its
    memory and CPU are `watchtower_correlator_process_*`, so the whole footprint is on /metrics."""
    cfg = load_config(write_config(tmp_path, correlator={"enabled": True, "worker": worker}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    try:
        rss = d.registry.get_sample_value("watchtower_correlator_process_resident_memory_bytes")
        cpu = d.registry.get_sample_value("watchtower_correlator_process_cpu_seconds_total")
        if worker == "thread":
            assert rss is None and cpu is None
        else:
            assert rss is not None and rss > 5 * 2**20  # an interpreter of its own
            assert cpu is not None and cpu >= 0
            # The child's figures, not the daemon's: its start time is the one /proc gives for the child's pid
            # (the daemon, this test's process, started well before; /proc counts in clock ticks).
            child = d.follower.process.pid
            assert child is not None and child != os.getpid()
            started = d.registry.get_sample_value("watchtower_correlator_process_start_time_seconds")
            own = d.registry.get_sample_value("process_start_time_seconds")
            assert started is not None and abs(started - _proc_start_time(child)) < 0.02, (started, own)
            assert abs(_proc_start_time(os.getpid()) - own) < 0.02 and abs(started - own) > 0.02, (started, own)
        assert d.registry.get_sample_value("process_resident_memory_bytes") > 10 * 2**20  # the daemon's own
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_state_files_are_private_with_the_correlator_in_its_own_process(tmp_path: Path):
    """The correlator process's lock file was created 0644 next to the 0600 database."""
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(10)
    d = Daemon(load_config(write_config(tmp_path, correlator={"enabled": True, "worker": "process"})))
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    state = tmp_path / "state"
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            if _events(state / "watchtower.db") == 10:
                break
        assert _events(state / "watchtower.db") == 10
        files = {f.name: f.stat().st_mode & 0o777 for f in state.iterdir()}
        assert "correlator.lock" in files
        assert {name: mode for name, mode in files.items() if mode != 0o600} == {}
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_after_a_restart_the_correlator_process_backlog_is_right_from_the_first_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The child's positions used to be read first by the gauge refresh, after the listener was up: until
    then every file the daemon had read counted whole (a 3 GB blip in `commit_backlog_bytes` at each restart of
    bench_daemon's live run)."""
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(1000)
    cfg = load_config(write_config(tmp_path, correlator={"enabled": True, "worker": "process"}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    try:
        await _until_stored(d, tmp_path / "state" / "watchtower.db", 1000, 400)
        assert _events(tmp_path / "state" / "watchtower.db") == 1000
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0

    async def no_refresh(self: Daemon) -> None:  # only what startup itself knows
        return None

    monkeypatch.setattr(Daemon, "_follower_gauges", no_refresh)
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    try:
        assert d.health()["commit_backlog_bytes"] == 0
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_the_correlator_process_backlog_counts_what_was_read_but_not_yet_committed(tmp_path: Path):
    """With the correlator in its own process, its backlog is measured from its positions to what the
    daemon has *read*, not only to the last committed checkpoint: between two checkpoints (here 60 s apart)
    the metrics already count rows the child cannot even see yet, and /healthz must not call that caught up
    (the fault suite's `committed()` and WatchtowerStateCommitsFailing rely on it)."""
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    cfg = load_config(write_config(tmp_path, tail={"checkpoint_interval": 60.0},
                                   correlator={"enabled": True, "worker": "process"}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    try:
        await _until_marked(d, tmp_path / "state" / "watchtower.db")  # the first scans' commit: the next is 60 s away
        w.write(2000)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if d.registry.get_sample_value("pmta_delivered_total", labels) == 2000:
                break
        size = w.path.stat().st_size
        header = len(w.path.read_bytes().split(b"\n", 1)[0]) + 1
        deadline = time.monotonic() + 20  # until a gauge refresh (FOLLOWER_GAUGE_INTERVAL) after the read
        while (d.registry.get_sample_value("watchtower_commit_backlog_bytes") not in (size, size - header)
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        assert _events(tmp_path / "state" / "watchtower.db") == 0  # nothing committed for the child to read
        assert d.health()["commit_backlog_bytes"] in (size, size - header)
        assert d.registry.get_sample_value("watchtower_commit_backlog_bytes") in (size, size - header)
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_reports_past_the_lookup_budget_are_counted_unattributed_and_the_count_is_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The metrics of a batch wait for its reports' vmta lookups. Past the batch's budget of index seeks
    (correlator.attribution.SEEK_BUDGET and SEEKS_PER_REPORT; 0 here: every store lookup is over it) a report is
    counted at once with vmta `unknown`, and `watchtower_attribution_skipped_total` says how many were."""
    from correlator import attribution

    monkeypatch.setattr(attribution, "SEEK_BUDGET", 0)
    monkeypatch.setattr(attribution, "SEEKS_PER_REPORT", 0)
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(20)
    fbl = tmp_path / "logs" / "fbl-2026-11-25-0000.csv"
    sources = [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")], "records": ["d"]},
               {"name": "fbl", "paths": [str(tmp_path / "logs" / "fbl-*.csv")], "records": ["f"]}]
    d = Daemon(load_config(write_config(tmp_path, sources, correlator={"enabled": True, "worker": "thread"})))
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    try:
        for _ in range(400):
            await asyncio.sleep(0.05)
            if _events(tmp_path / "state" / "watchtower.db") == 20:
                break
        assert _events(tmp_path / "state" / "watchtower.db") == 20  # stored and committed
        d.pipeline.sink.recent.limit = 1  # and out of the in-memory index: the store must answer
        fbl.write_text("type,timeLogged,orig,rcpt,jobId\n" + "".join(
            f"f,{RECORD_DAY} 13:00:00+0000,bounce@sender.example,u{n}@gmail.com,job{n % 7}\n" for n in range(5)))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if d.registry.get_sample_value("watchtower_attribution_skipped_total") == 5:
                break
        assert d.registry.get_sample_value("watchtower_attribution_skipped_total") == 5
        complaints = {labels["vmta"]: value for m in d.registry.collect() for (name, labels, value, *_r) in m.samples
                      if name == "pmta_complaints_total"}
        assert complaints == {"unknown": 5}
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


@pytest.mark.parametrize("worker", ["process", "thread"])
async def test_reading_goes_on_while_the_state_thread_waits_for_the_write_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: str) -> None:
    """The state thread runs one job at a time, and a checkpoint may wait there for the write lock (the correlator's
    own process holds it for a slice; measured live: 14 s at 20k records/s and a 20 GB store). The event loop must not
    wait behind it: it once awaited the correlator process's positions (the backlog gauge) and retention pruning on that
    thread, so reading, and the metrics, stopped until the lock was free (a metrics lag p99 of 19 s in that run). Here
    the lock is held by another connection until the records appended meanwhile are counted."""
    import exporter.state as state_mod
    from exporter import maintenance

    monkeypatch.setattr(maintenance, "MAINTAIN_INTERVAL", 0.3)  # thread: pruning comes due while the lock is held
    monkeypatch.setattr(state_mod, "BUSY_TIMEOUT_MS", 60_000)  # thread: a slice waits as long as a checkpoint
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(1000)
    cfg = load_config(write_config(tmp_path, tail={"checkpoint_interval": 0.2},
                                   correlator={"enabled": True, "worker": worker}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}

    async def delivered(n: int) -> float | None:
        for _ in range(200):
            if d.registry.get_sample_value("pmta_delivered_total", labels) == n:
                break
            await asyncio.sleep(0.05)
        return d.registry.get_sample_value("pmta_delivered_total", labels)

    other = sqlite3.connect(tmp_path / "state" / "watchtower.db", isolation_level=None, check_same_thread=False)
    try:
        assert await delivered(1000) == 1000
        await asyncio.sleep(0.5)  # let a commit (a checkpoint or a slice) and its write run first
        other.execute("BEGIN IMMEDIATE")
        w.write(10)
        assert await delivered(1010) == 1010  # its checkpoint now waits for the lock on the state thread
        await asyncio.sleep(1.0)  # the jobs the loop queues behind it (gauge, pruning) pile up
        w.write(500)
        assert await delivered(1510) == 1510  # read and counted while the lock is still held
        committed = other.execute("SELECT max(offset) FROM wt_checkpoints").fetchone()[0]
        assert committed < w.path.stat().st_size  # while no commit of the last records could land
    finally:
        other.execute("ROLLBACK")
        other.close()
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0


async def test_a_restart_behind_leaves_the_correlator_rows_to_the_correlator_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With the correlator in its own process, a start behind its positions (a stop while it was catching up)
    also handed the files' unread ranges to the daemon's own writer, so two processes stored the same rows,
    each with its own link cache and key filter: a deferral and the delivery of one message, stored by
    different processes, made two timelines (3-5k of 31k deferrals split off at a restart mid-backfill of
    the benchmark corpus). Only the correlator process may store the correlator's rows."""
    from correlator.sink import CorrelatorSink
    from exporter import follower

    n = 600
    logs = tmp_path / "logs"
    w = AcctWriter(logs if logs.mkdir() is None else tmp_path)
    w.write(n)  # u{i}@gmail.com delivered, job{i % 7}, queued at 11:59:00
    diag = logs / "diag-2026-11-25-0000.csv"
    diag.write_text("type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,jobId,vmtaPool\n" + "".join(
        f"t,{RECORD_DAY} 11:59:30+0000,{RECORD_DAY} 11:59:00+0000,bounce@sender.example,u{i}@gmail.com,4.7.28,"
        f"smtp;421 4.7.28 try later,vmta-1,job{i % 7},pool-a\n" for i in range(n)))
    sources = [{"name": "acct", "paths": [str(logs / "acct-*.csv")], "records": ["d"]},
               {"name": "diag", "paths": [str(logs / "diag-*.csv")], "records": ["t"]}]
    cfg = load_config(write_config(tmp_path, sources, correlator={"enabled": True, "worker": "process"}))
    db = tmp_path / "state" / "watchtower.db"

    def no_child(config, run):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(follower, "start", no_child)  # first run: the metrics read everything, nothing is stored
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    for _ in range(400):
        await asyncio.sleep(0.05)
        counted = [v for m in d.registry.collect() for (name, _labels, v, *_r) in m.samples
                   if name in ("pmta_delivered_total", "pmta_deferred_total")]
        if sum(counted) == 2 * n:
            break
    d.should_exit.set()
    assert await asyncio.wait_for(task, 20) == 0
    conn = sqlite3.connect(db)
    behind = conn.execute("SELECT count(*) FROM wt_checkpoints WHERE sink_offset < offset").fetchone()[0]
    conn.close()
    assert behind == 2 and _events(db) == 0  # both files to store at the next start

    monkeypatch.undo()
    stored_here: list[int] = []
    real_write = CorrelatorSink.write

    def write_here(self, conn, batches):  # type: ignore[no-untyped-def]
        stored_here.append(sum(len(b) for b in batches))
        return real_write(self, conn, batches)

    monkeypatch.setattr(CorrelatorSink, "write", write_here)  # this process only: the child is spawned
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    try:
        await _until_stored(d, db, 2 * n, 600)
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0
    assert sum(stored_here) == 0
    conn = sqlite3.connect(db)
    timelines = conn.execute("SELECT outcome, count(*), sum(attempts) FROM corr_timelines GROUP BY outcome").fetchall()
    conn.close()
    assert timelines == [(2, n, 2 * n)]  # one timeline per message, its deferral and its delivery together


async def test_a_file_behind_whose_inode_another_file_took_is_not_read_again_as_its_old_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The correlator process reads a file it is behind on again by (device, inode), wherever the file went. ext4
    gives a deleted file's inode to the next file at once: that file's bytes, found by the old identity, were read as
    the old file's lines (stored twice, under two file ids). The first bytes must match too. Here the old file's
    inode is given other, longer content under another name (what a reuse looks like to the reader)."""
    from exporter import follower
    from tests.conftest import ACCT_HEADER, d_line

    logs = tmp_path / "logs"
    logs.mkdir()
    w = AcctWriter(logs)
    w.write(300)
    cfg = load_config(write_config(tmp_path, [{"name": "acct", "paths": [str(logs / "acct-*.csv")]}],
                                   correlator={"enabled": True, "worker": "process"}))
    db = tmp_path / "state" / "watchtower.db"

    def no_child(config, run):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(follower, "start", no_child)  # first run: counted, not stored; the sink is behind
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    for _ in range(400):
        await asyncio.sleep(0.05)
        if d.registry.get_sample_value("pmta_delivered_total", labels) == 300:
            break
    d.should_exit.set()
    assert await asyncio.wait_for(task, 20) == 0
    monkeypatch.undo()

    ino = w.path.stat().st_ino
    other = logs / "acct-2026-11-25-0009.csv"
    w.path.rename(other)
    with open(other, "r+b") as f:  # the same inode, 600 other records
        f.write((ACCT_HEADER + "\n" + "".join(d_line(i) + "\n" for i in range(1000, 1600))).encode())
        f.truncate()
    assert other.stat().st_ino == ino
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    try:
        await _until_stored(d, db, 600, 400)
        await asyncio.sleep(1.0)  # the old file's span, were it read again, would be stored by now too
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0
    assert d.registry.get_sample_value("pmta_delivered_total", labels) == 900  # 300 restored, 600 read
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT rcpt, attempts FROM corr_timelines ORDER BY rcpt").fetchall()
    behind = conn.execute("SELECT count(*) FROM wt_checkpoints WHERE sink_offset < offset").fetchone()[0]
    conn.close()
    assert _events(db) == 600 and behind == 0
    assert stored == sorted((f"u{i}@gmail.com", 1) for i in range(1000, 1600))  # each once, none of the old file


@pytest.mark.parametrize("elsewhere", [True, False])
async def test_the_commit_queue_takes_no_sink_rows_when_the_sinks_write_elsewhere(tmp_path: Path, elsewhere: bool):
    """The queue itself refuses what only a second writer could store: rows, spans to read again."""
    from exporter.spans import span_at
    from exporter.writer import CommitQueue

    queue = CommitQueue(StateStore(tmp_path / "watchtower.db", [object()], sinks_elsewhere=elsewhere))  # type: ignore[list-item]
    span = span_at("f1", "acct", str(tmp_path / "acct.csv"), 1, 2, (0, 0, ""), 1000, None)
    queue.add_backlog([span])
    queue.put(Commit(checkpoints=[], spans=[span_at("f1", "acct", str(tmp_path / "acct.csv"), 1, 2, (1000, 9, ""),
                                                   2000, None)]))
    assert queue.span_bytes == (0 if elsewhere else 2000)


async def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Two daemons given one state_dir (another listen address) both committed checkpoints and counters to one
    database and both stored timelines. The second one now exits 1 at start, naming the directory and the holder;
    the first goes on; once it has stopped, the directory is free again."""
    import yaml

    from tests.conftest import free_port

    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(10)
    first_cfg = write_config(tmp_path, correlator={"enabled": True, "worker": "thread"})
    data = yaml.safe_load(first_cfg.read_text())
    data["listen"] = f"127.0.0.1:{free_port()}"
    second_cfg = tmp_path / "second.yml"
    second_cfg.write_text(yaml.safe_dump(data))
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    first = Daemon(load_config(first_cfg))
    task = asyncio.create_task(first.serve())
    await asyncio.wait_for(first.started.wait(), 20)
    try:
        with caplog.at_level("ERROR", logger="watchtower.daemon"):
            assert await asyncio.wait_for(Daemon(load_config(second_cfg)).serve(), 20) == 1
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
            f"another watchtower daemon (pid {os.getpid()}) uses the state directory {tmp_path / 'state'}: each "
            "daemon needs a state_dir of its own"]
        w.write(5)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if first.registry.get_sample_value("pmta_delivered_total", labels) == 15:
                break
        assert first.registry.get_sample_value("pmta_delivered_total", labels) == 15
        assert first.health()["ok"] is True
    finally:
        first.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0
    second = Daemon(load_config(second_cfg))
    task = asyncio.create_task(second.serve())
    await asyncio.wait_for(second.started.wait(), 20)
    second.should_exit.set()
    assert await asyncio.wait_for(task, 20) == 0
    assert (tmp_path / "state" / "watchtower.lock").stat().st_mode & 0o777 == 0o600


async def test_a_lock_file_that_cannot_be_opened_is_one_error_line_naming_it(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "state" / "watchtower.lock").mkdir(parents=True)  # even root cannot open a directory for writing
    d = Daemon(load_config(write_config(tmp_path)))
    with caplog.at_level("ERROR", logger="watchtower.daemon"):
        assert await asyncio.wait_for(d.serve(), 20) == 2  # no restart mends it
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"{tmp_path / 'state' / 'watchtower.lock'} is not a regular file; move it aside"]


@pytest.mark.parametrize(("table", "version"), [("wt_meta", "99"), ("wt_meta", "abc"), ("corr_meta", "999"),
                                                ("corr_meta", "abc")])
def test_a_state_database_of_a_newer_version_is_refused_naming_the_file(tmp_path: Path, table: str, version: str):
    """A newer state schema was used silently; a newer correlator schema stopped the daemon with "internal error:
    RuntimeError" naming no file and no way out."""
    (tmp_path / "logs").mkdir(exist_ok=True)
    cfg = write_config(tmp_path, correlator={"enabled": True, "worker": "thread"})
    wt = Watchtower(cfg).start()
    wt.stop()
    db = tmp_path / "state" / "watchtower.db"
    conn = sqlite3.connect(db)
    with conn:
        assert conn.execute(f"UPDATE {table} SET value=? WHERE key='schema_version'", (version,)).rowcount == 1
    conn.close()
    proc = subprocess.run([sys.executable, "-m", "exporter", "run", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2, proc.stderr  # no restart mends it: systemd's RestartPreventExitStatus=2
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert f"{db}: " in proc.stderr and "schema" in proc.stderr and "move" in proc.stderr


async def test_a_first_start_on_a_full_disk_leaves_no_temporary_database(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """Each failed create left `.watchtower.db.<pid>.tmp` (and its -wal, -shm): a restart loop on a full disk piled
    them up on that disk. The error said to move aside a watchtower.db that did not exist."""
    state = tmp_path / "state"
    state.mkdir()
    (state / ".watchtower.db.4242.tmp").write_bytes(b"x")  # an earlier failed start's
    (state / ".watchtower.db.4242.tmp-wal").write_bytes(b"x")
    real = sqlite3.connect

    class FullDisk:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *a: object) -> object:
            return self.conn.execute(sql, *a)

        def executescript(self, sql: str) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        def close(self) -> None:
            self.conn.close()

    monkeypatch.setattr(sqlite3, "connect", lambda path, **kw: FullDisk(real(path, **kw)))
    with pytest.raises(StateError) as exc:
        await StateStore(state / "watchtower.db").open()
    assert sorted(p.name for p in state.iterdir()) == []
    assert "free space on the file system of" in str(exc.value) and "move the file aside" not in str(exc.value)


async def test_a_new_database_whose_log_could_not_be_copied_in_is_no_half_made_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A first start on a nearly full disk (160-220 KiB free): the create committed into the temporary file's WAL,
    its close could not copy the WAL into the file, and the file was renamed into place without its schema, the
    WAL left under the temporary name. Every later start refused the `malformed` database, space freed or not
    (full-disk review 2026-12-05). Here another connection keeps the close from copying the WAL, as the full disk
    did."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    real = sqlite3.connect
    held: list[sqlite3.Connection] = []

    class Creating:
        """The create's connection; another one opens on its file just before the schema is written."""

        def __init__(self, path: object, conn: sqlite3.Connection) -> None:
            self.path, self.conn = path, conn

        def execute(self, sql: str, *a: object) -> object:
            return self.conn.execute(sql, *a)

        def executescript(self, sql: str) -> object:
            held.append(real(self.path, check_same_thread=False))  # type: ignore[arg-type]
            held[-1].execute("PRAGMA schema_version").fetchone()
            return self.conn.executescript(sql)

        def close(self) -> None:
            self.conn.close()

    def connect(path: object, *a: object, **kw: object) -> object:
        conn = real(path, *a, **kw)  # type: ignore[arg-type]
        return Creating(path, conn) if str(path).endswith(".tmp") else conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    try:
        first = StateStore(state / "watchtower.db")
        try:
            await first.open()
        except StateError:
            pass  # failing is allowed; what it leaves must be usable
        else:
            await first.close()
    finally:
        for conn in held:
            conn.close()
    monkeypatch.setattr(sqlite3, "connect", real)
    again = StateStore(state / "watchtower.db")
    await again.open()  # not "malformed", not "no watchtower marker"
    await again.close()
    assert sorted(p.name for p in state.iterdir() if ".tmp" in p.name) == []


@pytest.mark.parametrize(("error", "advice"), [("unable to open database file", "chown"),
                                               ("attempt to write a readonly database", "chown"),
                                               ("database or disk is full", "free space")])
async def test_an_sqlite_error_that_is_not_damage_does_not_say_to_move_the_database_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str, advice: str):
    """A root-owned watchtower.db opened by the service user said "not a usable SQLite database ... move the file
    aside ... counters restart at 0": throwing good state away, where `chown` was the fix."""
    db = tmp_path / "watchtower.db"
    store = StateStore(db)
    await store.open()
    await store.close()

    def refuse(*a: object, **kw: object) -> None:
        raise sqlite3.OperationalError(error)

    monkeypatch.setattr(sqlite3, "connect", refuse)
    with pytest.raises(StateError) as exc:
        await StateStore(db).open()
    assert advice in str(exc.value) and "move the file aside" not in str(exc.value)


# --- counters never go backwards across an unclean stop -------------------------------------------
_DELIVERED = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}


async def _run_until(d: Daemon, n: float) -> None:
    for _ in range(200):
        if d.registry.get_sample_value("pmta_delivered_total", _DELIVERED) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pmta_delivered_total never reached {n}")


async def _serving_after(tmp_path: Path, n: int) -> tuple[AcctWriter, Any, Daemon, asyncio.Task[int]]:
    """(writer, config, daemon, its serve task) once a daemon has read and shown `n` deliveries from the start."""
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(n)
    cfg = load_config(write_config(tmp_path, tail={"start_position": "beginning"}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await _run_until(d, n)
    return w, cfg, d, task


@pytest.mark.parametrize("stop", ["kill -9", "clean"])
async def test_after_an_unclean_stop_restored_counters_wait_until_reading_caught_up(tmp_path: Path, stop: str) -> None:
    """/metrics shows what was read before it is committed (every tail.checkpoint_interval). After kill -9, an OOM
    kill or a power cut the restored counters are lower than those a Prometheus last scraped, and rate() takes any
    drop for a reset: the whole counter counted again, for the width of every rule's window. After an unclean stop
    the record counters are left out of /metrics until the files are read to where they were at start (beyond the
    furthest the stopped daemon can have read); after a clean stop they are shown from the start."""
    w, cfg, first, task = await _serving_after(tmp_path, 300)
    first.should_exit.set()
    assert await asyncio.wait_for(task, 10) == 0
    lock = tmp_path / "state" / "watchtower.lock"
    assert lock.read_text() == ""  # a clean stop says so
    w.write(200)  # read, shown, and not yet committed when the daemon was killed:
    if stop == "kill -9":
        lock.write_text("4242\n")  # what the lock file keeps after its holder died
    again = Daemon(cfg)
    await again.startup()
    try:
        shown = again.registry.get_sample_value("pmta_delivered_total", _DELIVERED)
        page = render_sync(again.registry).decode()
        assert 'watchtower_metric_series{metric="pmta_delivered_total"} 1.0' in page  # its own health is shown
        if stop == "kill -9":
            assert shown is None and "\npmta_delivered_total{" not in page  # not 300 after 500 was scraped
            assert lock.read_text() == f"{os.getpid()}\n"
        else:
            assert shown == 300.0 and '\npmta_delivered_total{isp="gmail"' in page
        assert again.health()["counters_withheld"] is (stop == "kill -9")  # what /healthz says meanwhile
        withheld = 1.0 if stop == "kill -9" else 0.0  # ...and /metrics, for the rules (queue.yaml)
        assert f"\nwatchtower_counters_withheld {withheld}\n" in page
        loop = asyncio.create_task(again.main_loop())
        await _run_until(again, 500)
        assert again.health()["counters_withheld"] is False
        assert "\nwatchtower_counters_withheld 0.0\n" in render_sync(again.registry).decode()
        again.should_exit.set()
        await asyncio.wait_for(loop, 10)
    finally:
        await again.shutdown()
    assert lock.read_text() == ""


async def test_a_stop_whose_final_commit_raises_is_not_marked_clean(tmp_path: Path) -> None:
    """The lock file is emptied only when everything shown was committed: a final drain that raises (rather than
    reporting that it did not finish) must leave the pid, so the next start holds its counters back."""
    _w, _cfg, d, task = await _serving_after(tmp_path, 50)

    async def broken_drain(_timeout: float) -> bool:
        raise RuntimeError("folding failed")

    d.queue.drain = broken_drain  # type: ignore[method-assign]
    d.should_exit.set()
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(task, 10)
    assert (tmp_path / "state" / "watchtower.lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("worker", ["thread", "process"])
@pytest.mark.parametrize("gone", ["database", "lock file", "state directory", "-shm", "-wal"])
async def test_a_state_file_deleted_under_a_running_daemon_stops_it_with_one_line_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, gone: str, worker: str):
    """`rm -rf state/` (or of the database or the lock file alone) went unnoticed: the daemon committed into the
    deleted file with /healthz ok, a second daemon could take the directory at once (its lock file gone too), and
    the next start was a first run. The daemon now sees the path name another file (or none), logs one ERROR
    naming it and stops with 1 (systemd starts it again); a second daemon is then the only one.

    The -shm (or -wal) deleted: a process opening the database next (the correlator's, restarted) made a second
    index beside the one the others held, and the database was destroyed with /healthz ok (review). The database
    deleted: its -wal stayed, SQLite applied it to the next start's new database, and every start was refused as
    malformed until someone removed it by hand (review). The next start now runs, with every record counted once."""
    import shutil

    import exporter.daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "STATE_FILES_CHECK_INTERVAL", 0.1)
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    cfg = load_config(write_config(tmp_path, correlator={"enabled": True, "worker": worker}))
    state = tmp_path / "state"
    d = Daemon(cfg)
    with caplog.at_level(logging.INFO, logger="watchtower"):
        task = asyncio.create_task(d.serve())
        await asyncio.wait_for(d.started.wait(), 20)
        w.write(200)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if d.registry.get_sample_value("watchtower_last_checkpoint_timestamp_seconds"):
                break
        target = {"database": state / "watchtower.db", "lock file": state / "watchtower.lock",
                  "state directory": state, "-shm": state / "watchtower.db-shm",
                  "-wal": state / "watchtower.db-wal"}[gone]
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        assert await asyncio.wait_for(task, 20) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "watchtower.daemon"]
    named = {"lock file": str(state / "watchtower.lock"), "-shm": str(state / "watchtower.db-shm"),
             "-wal": str(state / "watchtower.db-wal")}.get(gone, str(state / "watchtower.db"))
    assert len(errors) == 1 and errors[0].startswith(named) and "deleted while the daemon ran" in errors[0], errors
    assert not any("Traceback" in r.getMessage() for r in caplog.records)
    caplog.clear()
    w.write(100)
    again = Daemon(cfg)  # systemd's restart
    task = asyncio.create_task(again.serve())
    try:
        await asyncio.wait_for(again.started.wait(), 20)
        labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
        # restored 200 + 100 new; or a first run (database or directory gone) from byte 0 (tail.start_position
        # beginning): both writes, 300 too (the wait for 100 it had first never held: 20 s lost per case)
        want = 300
        deadline = time.monotonic() + 20
        while again.registry.get_sample_value("pmta_delivered_total", labels) != want and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert again.registry.get_sample_value("pmta_delivered_total", labels) == want
        assert again.health()["ok"] is True, again.health()
    finally:
        again.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_a_disk_io_error_on_a_full_disk_at_start_says_to_free_space_not_to_move_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """On a full disk SQLite reports `disk I/O error` (it cannot create the -shm file): the message advised moving
    the database aside, which loses every checkpoint (review 2026-12-04). A full file system is named whatever
    SQLite's words; the database is kept."""
    import os as os_mod

    state = tmp_path / "state"
    store = StateStore(state / "watchtower.db")
    await store.open()
    await store.close()
    real_statvfs, real_connect = os_mod.statvfs, sqlite3.connect

    class Full:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_blocks, self.f_bavail, self.f_files, self.f_favail = st.f_blocks or 1, 0, st.f_files, st.f_favail

    def failing(path: object, **kw: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(os_mod, "statvfs", lambda p: Full(real_statvfs(p)))
    monkeypatch.setattr(sqlite3, "connect", failing)
    with pytest.raises(StateError) as exc:
        await StateStore(state / "watchtower.db").open()
    text = str(exc.value)
    assert "disk I/O error" in text and f"{state} is full" in text and "move the file aside" not in text, text
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert (state / "watchtower.db").stat().st_size > 0  # kept


@pytest.mark.parametrize("first_start", [True, False])
async def test_a_disk_io_error_with_a_few_blocks_left_is_a_full_disk_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_start: bool):
    """32-48 KiB free: SQLite cannot make its -shm and says `disk I/O error`, and the message advised moving aside
    a database that did not exist ("if the file itself is damaged ... counters restart at 0"). A first start has no
    database to keep, and said it was kept (full-disk review 2026-12-05)."""
    import os as os_mod

    state = tmp_path / "state"
    if not first_start:
        store = StateStore(state / "watchtower.db")
        await store.open()
        await store.close()
    else:
        state.mkdir(mode=0o700)
    real_statvfs = os_mod.statvfs

    class NearlyFull:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_blocks, self.f_files, self.f_favail = st.f_blocks or 1, st.f_files, st.f_favail
            self.f_frsize, self.f_bavail = 4096, 8  # 32 KiB

    def failing(path: object, **kw: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(os_mod, "statvfs", lambda p: NearlyFull(real_statvfs(p)))
    monkeypatch.setattr(sqlite3, "connect", failing)
    with pytest.raises(StateError) as exc:
        await StateStore(state / "watchtower.db").open()
    text = str(exc.value)
    assert f"the file system of {state} is full" in text and "move the file aside" not in text, text
    if first_start:
        assert "kept" not in text and "nothing was created" in text, text
    else:
        assert text.endswith("the database is kept and resumed from"), text


def test_a_lock_whose_pid_cannot_be_written_is_still_held_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """A clean previous stop leaves the lock file empty; on a full disk writing the pid failed with ENOSPC and the
    daemon refused to start. The lock (flock) is what keeps a second daemon out: it is held, and the missing pid
    only means a crash now would not be seen at the next start (one WARNING)."""
    from exporter.instancelock import InstanceLock, StateDirInUse

    (tmp_path / "watchtower.lock").write_text("")
    (tmp_path / "watchtower.lock").chmod(0o600)
    lock = InstanceLock(tmp_path)

    def no_space(*_a: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with caplog.at_level(logging.WARNING, logger="watchtower.daemon"):
        lock.acquire()
    monkeypatch.undo()
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'watchtower.lock'}: cannot write this daemon's pid (No space left on device): a crash now "
        "would not be seen at the next start; the state directory is locked all the same"]
    with pytest.raises(StateDirInUse):
        InstanceLock(tmp_path).acquire()
    lock.release(clean=True)  # nothing left buffered to fail at close
    assert (tmp_path / "watchtower.lock").read_text() == ""


@pytest.mark.parametrize("log_every", [3600.0, 0.0])
def test_the_correlator_process_says_when_its_writes_resume_and_repeats_a_lasting_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, log_every: float) -> None:
    """Its failed writes were logged once and never again: no reminder while they went on, no line when they
    resumed (docs/reliability.md promises both, as the daemon's own writer does; review 2026-12-04)."""
    import logging
    import sqlite3

    from exporter import follower as follower_mod
    from exporter.follower import Follower
    from exporter.state import private_dir

    cfg = load_config(write_config(tmp_path, correlator={"enabled": True}))
    stop: list[bool] = []
    outcomes = ["full", "full", "full", "ok", "ok"]

    def write(*_a: object, **_k: object) -> None:
        outcome = outcomes.pop(0)
        if not outcomes:
            stop.append(True)
        if outcome == "full":
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("exporter.writer.write_slices", write)
    monkeypatch.setattr(follower_mod, "FAILURE_LOG_EVERY", log_every)
    monkeypatch.setattr(follower_mod.time, "sleep", lambda _s: None)
    private_dir(Path(cfg.state_dir))
    with caplog.at_level(logging.INFO, logger="watchtower"):
        Follower(cfg, os.getppid(), stop).run()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "correlator process: write" in r.getMessage()]
    db = Path(cfg.state_dir) / "watchtower.db"
    first = ("ERROR", f"correlator process: write to {db} failed: OperationalError: database or disk is full; "
                      "retried until it succeeds")
    again = [("ERROR", f"correlator process: write to {db} failed again ({n} attempts so far): OperationalError: "
                       "database or disk is full") for n in (2, 3)]
    resumed = ("WARNING", f"correlator process: writes to {db} resumed after 3 failed attempts")
    assert said == ([first, resumed] if log_every else [first, *again, resumed])


def test_a_state_dir_that_is_a_link_to_nothing_is_named_by_check_config_and_run(tmp_path: Path) -> None:
    """A state_dir symlink to a volume not mounted: check-config said ok, and run stopped with `could not run:
    FileExistsError: [Errno 17] File exists` (review 2026-12-04). Both name the link and its missing target."""
    import yaml

    config = write_config(tmp_path)
    state = Path(yaml.safe_load(config.read_text())["state_dir"])
    state.symlink_to(tmp_path / "mnt" / "watchtower")
    said = f"state_dir: {state} is a symbolic link to {tmp_path / 'mnt' / 'watchtower'}, which does not exist " \
           "(a volume not mounted?)"
    check = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and check.stderr.splitlines()[-1].strip() == said, check.stderr
    run = subprocess.run([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode in (1, 2) and said in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "FileExistsError" not in run.stderr


def test_the_correlator_restart_wait_stays_at_its_cap_however_long_the_crash_loop(tmp_path: Path) -> None:
    """The doubling wait was computed before its cap: after ~1,025 exits in a row (17 hours of a correlator that
    cannot start) 2.0 * 2**1024 raised OverflowError and stopped the daemon (review 2026-12-04)."""
    import exporter.daemon as daemon_mod

    d = Daemon(load_config(write_config(tmp_path, correlator={"enabled": True, "worker": "process"})))
    waits = [d._follower_down() for _ in range(1100)]
    assert waits[:3] == [daemon_mod.FOLLOWER_RESTART_WAIT * k for k in (1, 2, 4)]
    assert waits[-1] == daemon_mod.FOLLOWER_MAX_WAIT and d._follower_in_a_row == 1100


def test_a_file_system_that_counts_no_inodes_is_not_taken_for_a_full_one(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """btrfs and many FUSE mounts report 0 inodes (f_files = f_favail = 0): every start-up SQLite error there was
    explained as a full disk (review 2026-12-04)."""
    from exporter.state import _cause

    class Btrfs:
        f_blocks, f_bavail, f_files, f_favail = 1000, 500, 0, 0

    monkeypatch.setattr(os, "statvfs", lambda _p: Btrfs())
    said = _cause(sqlite3.OperationalError("unable to open database file"), tmp_path / "watchtower.db")
    assert "full" not in said.replace(str(tmp_path), "DIR") and "chown" in said  # (a --basetemp may say `full`)


def test_changed_delay_buckets_restart_the_histograms_instead_of_relabelling_them(tmp_path: Path, watchtower_factory):
    """The stored bucket counts were restored under the new `le` bounds when the list kept its length (5 delays of
    10 s read back as none at or below 15 s), and silently dropped when it did not (_count reset, _sum kept nowhere)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    head = "type,timeLogged,timeQueued,rcpt,vmta\n"
    (logs / "acct-1.csv").write_text(head + "".join(
        f"d,2026-12-01 00:00:10+0000,2026-12-01 00:00:00+0000,u{i}@gmail.com,v1\n" for i in range(5)))
    cfg = write_config(tmp_path, metrics={"delay_buckets": [5.0, 60.0]})
    wt = watchtower_factory(cfg).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 5)
    wt.committed()
    assert wt.stop() == 0
    listen = wt.listen
    cfg = write_config(tmp_path, metrics={"delay_buckets": [15.0, 60.0]}, listen=listen)
    wt = watchtower_factory(cfg).start()
    (logs / "acct-1.csv").write_text((logs / "acct-1.csv").read_text() + "".join(
        f"d,2026-12-01 00:01:10+0000,2026-12-01 00:01:00+0000,w{i}@gmail.com,v1\n" for i in range(5)))
    s = wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 10)
    assert wt.stop() == 0
    buckets = {dict(k)["le"]: v for (name, k), v in s.items() if name == "pmta_delivery_delay_seconds_bucket"}
    count = total(s, "pmta_delivery_delay_seconds_count")
    assert (buckets, count) == ({"15.0": 5.0, "60.0": 5.0, "+Inf": 5.0}, 5.0)  # the 5 read since, under their bounds
    log = wt.log.read_text()
    assert "metrics.delay_buckets changed from [5.0, 60.0] to [15.0, 60.0]" in log, log[-2000:]
    assert "Traceback" not in log


async def test_a_backup_restored_beside_a_later_wal_is_refused_untouched_naming_the_wal(tmp_path: Path):
    """The state database restored from a backup while the -wal of a later run stayed beside it: the start replayed
    that -wal over the backup, found it damaged, and its close copied the -wal into the file: the backup itself was
    damaged, and the advice (move it aside, counters restart at 0) lost what moving the -wal aside would have kept."""
    import shutil

    db = tmp_path / "state" / "watchtower.db"
    store = StateStore(db)
    await store.open()
    await store.close()

    def fill(metric: str, n: int) -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO wt_series VALUES (?,?,?)", [(metric, f"v{i}", "1") for i in range(n)])
        conn.execute("COMMIT")
        conn.close()

    fill("pmta_delivered_total", 3000)
    shutil.copy(db, tmp_path / "backup.db")
    fill("pmta_bounced_total", 3000)  # copied into the file at its close: the file moved on past the backup
    crash = ("import os, sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('PRAGMA wal_autocheckpoint=0')\n"
             "c.execute('BEGIN')\n"
             "c.executemany('INSERT OR REPLACE INTO wt_series VALUES (?,?,?)', "
             "[('pmta_deferred_total', 'd%d' % i, '2') for i in range(5000)])\n"
             "c.execute(\"DELETE FROM wt_series WHERE labels LIKE 'v1%'\")\n"
             "c.execute('COMMIT')\n"
             "os._exit(0)\n")  # killed: its -wal stays
    subprocess.run([sys.executable, "-c", crash, str(db)], check=True)
    shutil.copy(tmp_path / "backup.db", db)
    restored = db.read_bytes()
    with pytest.raises(StateError) as refused:
        await StateStore(db).open()
    said = str(refused.value)
    assert said.index("move watchtower.db-wal and watchtower.db-shm aside") < said.index("counters restart"), said
    assert db.read_bytes() == restored
    for name in ("watchtower.db-wal", "watchtower.db-shm"):  # as the message says: the backup is whole
        (tmp_path / "state" / name).rename(tmp_path / name)
    again = StateStore(db)
    loaded = await again.open()
    await again.close()
    assert len(loaded.series) == 3000


def test_a_read_only_database_file_of_this_user_is_told_to_be_made_writable_not_chowned(tmp_path: Path) -> None:
    """A 0400 database owned by the right user was told "check that the user owns it (chown)", which it does."""
    from exporter.state import _cause

    db = tmp_path / "watchtower.db"
    db.write_bytes(b"")
    db.chmod(0o400)
    said = _cause(sqlite3.OperationalError("attempt to write a readonly database"), db)
    assert said.startswith(f"{db} is not writable (mode 0400): chmod u+w {db}"), said
    db.chmod(0o600)
    said = _cause(sqlite3.OperationalError("attempt to write a readonly database"), db)
    assert "chown" in said and "chmod" not in said, said


async def test_a_lock_file_this_user_cannot_open_is_told_to_be_chowned(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`watchtower.lock: cannot lock the state directory: Permission denied` gave no way out."""
    from exporter import instancelock
    from exporter.daemon import StartupError

    def denied(self: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(instancelock.InstanceLock, "acquire", denied)
    daemon = Daemon(load_config(write_config(tmp_path)))
    with pytest.raises(StartupError) as refused:
        await daemon.startup()
    said = str(refused.value)
    assert said.endswith(f"Permission denied: chown it to the user running watchtower (uid {os.getuid()}), "
                         "as every file in the state directory"), said


def test_a_lock_file_refused_by_its_directory_or_its_own_mode_is_told_the_chmod_that_mends_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state_dir set to 000 (the lock file this user's own) was told to chown the file, which changes nothing
    (review, 2026-12-05): the directory's mode is what refuses. Root passes every access check, so os.access is
    what the kernel would answer for the daemon's user."""
    from exporter.instancelock import LOCK_FILE, way_out

    lock = tmp_path / LOCK_FILE
    lock.write_text("")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    assert way_out(lock) == f"chmod u+rwx {tmp_path}"
    monkeypatch.setattr(os, "access", real_access)
    assert way_out(lock) == f"chmod u+rw {lock}"  # the directory lets it in: the file's own mode refuses
    assert way_out(tmp_path / "gone.lock") == (f"chown it to the user running watchtower (uid {os.geteuid()}), as "
                                               "every file in the state directory")


async def test_a_oneshot_store_that_cannot_be_made_does_not_promise_to_be_resumed_from(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch):
    """oneshot's store (deleted at exit) on a full TMPDIR said "the database is kept and resumed from"."""
    from exporter import state

    monkeypatch.setattr(state, "_full", lambda _d: True)

    def no_space(*_a: object, **_k: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    store = StateStore(tmp_path / "oneshot.db", throwaway=True)
    monkeypatch.setattr(store, "_open_checked", no_space)
    with pytest.raises(StateError) as refused:
        await store.open()
    said = str(refused.value)
    assert "is full: free space there" in said and "resumed from" not in said, said


async def test_a_database_left_with_a_hot_rollback_journal_still_opens(tmp_path: Path) -> None:
    """The read-only check before the writer opens could not roll a hot journal back ("attempt to write a readonly
    database", and chown advice): a copy of the store in rollback mode, killed mid-transaction, no longer started."""
    db = tmp_path / "state" / "watchtower.db"
    store = StateStore(db)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    crash = ("import os, sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('PRAGMA cache_size=1')\n"
             "c.execute('BEGIN')\n"
             "c.executemany('INSERT INTO wt_series VALUES (?,?,?)', [('m', 'l%d' % i, '1') for i in range(20000)])\n"
             "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", crash, str(db)], check=True)
    assert (tmp_path / "state" / "watchtower.db-journal").exists()
    again = StateStore(db)
    loaded = await again.open()
    await again.close()
    assert loaded.series == []  # the killed transaction rolled back


async def test_a_file_the_daemon_cannot_read_is_a_problem_on_healthz_and_its_bytes_are_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the daemon's user may not read (the forgotten `usermod -a -G pmta`) was logged, but /healthz said ok
    with no problem and 0 bytes behind while 830 KB waited: it names the file, and its bytes count as behind (ok stays
    true: the daemon runs, and the read-errors alert says the rest)."""
    from exporter.filestream import FileStream

    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(30)
    real = FileStream._open_file

    async def denied(self: FileStream) -> Any:
        if self.cp.path == str(w.path):
            raise PermissionError(13, "Permission denied", self.cp.path)
        return await real(self)

    monkeypatch.setattr(FileStream, "_open_file", denied)
    d = Daemon(load_config(write_config(tmp_path)))
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        deadline = time.monotonic() + 20
        while not d.health()["problems"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        health = d.health()
        assert health["problems"] == [f"cannot read 1 path: {w.path} (watchtower_read_errors_total counts the "
                                      "failures; the log says why)"], health
        assert health["ok"] is True and health["bytes_behind"] == w.path.stat().st_size, health
        assert d.registry.get_sample_value("watchtower_behind_bytes", {"source": "acct"}) == w.path.stat().st_size
        monkeypatch.setattr(FileStream, "_open_file", real)  # permissions fixed
        while d.health()["problems"] and time.monotonic() < deadline + 20:
            await asyncio.sleep(0.05)
        assert d.health()["problems"] == [] and d.registry.get_sample_value(
            "pmta_delivered_total", {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}) == 30
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


def test_a_wal_left_without_its_database_is_moved_aside_and_the_start_is_a_first_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`rm watchtower.db` while the daemon was stopped (or by a version that did not remove the log): the -wal and
    -shm stayed, SQLite applied that log to the new database, and every start was refused as malformed until someone
    removed them by hand (review). They are moved aside, said once, and the start is a first run."""
    import shutil

    state = tmp_path / "state"
    live = tmp_path / "live"
    live.mkdir()
    conn = sqlite3.connect(live / "watchtower.db", isolation_level=None)  # a database with committed, unmerged log
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    state.mkdir(mode=0o700)
    for side in ("-wal", "-shm"):  # copied while open: the deleted database's log, as the daemon left it
        shutil.copy(live / f"watchtower.db{side}", state / f"watchtower.db{side}")
    conn.close()
    store = StateStore(state / "watchtower.db")
    with caplog.at_level(logging.WARNING, logger="watchtower.state"):
        loaded = store._open(check=True)
    store._close()
    assert loaded.first_run is True, loaded
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{state / 'watchtower.db-wal'}: the log of a deleted state database (no watchtower.db beside it): "
                    "moved aside to watchtower.db-wal.orphaned; this start is a first run",
                    f"{state / 'watchtower.db-shm'}: the log of a deleted state database (no watchtower.db beside it): "
                    "moved aside to watchtower.db-shm.orphaned; this start is a first run"], said
    check = sqlite3.connect(state / "watchtower.db")
    assert check.execute("PRAGMA quick_check").fetchone() == ("ok",)
    assert check.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone() == (0,)  # not applied
    check.close()
    (state / "watchtower.db").unlink()  # the same again: the first orphan is kept, the second beside it
    shutil.copy(state / "watchtower.db-wal.orphaned", state / "watchtower.db-wal")
    again = StateStore(state / "watchtower.db")
    again._open(check=True)
    again._close()
    assert (state / "watchtower.db-wal.orphaned").exists() and (state / "watchtower.db-wal.orphaned.1").exists()


def test_turning_the_correlator_on_again_says_what_has_no_timelines(tmp_path: Path, watchtower_factory) -> None:
    """Records read while `correlator.enabled` was false have no timelines, and turning it on again left that hole
    without a word (reconfiguration review 2026-12-05). The start that turns it on says since when it was off, once."""
    cfg = write_config(tmp_path, correlator={"enabled": False})
    wt = watchtower_factory(cfg).start()
    assert wt.stop() == 0
    data = yaml.safe_load(cfg.read_text())
    for enabled in (False, True, True):  # off again (the time kept is the first), then on twice
        data["correlator"] = {"enabled": enabled, "worker": "thread"}
        cfg.write_text(yaml.safe_dump(data))
        wt.start()
        assert wt.stop() == 0
    said = [line.split(": ", 1)[1] for line in wt.log.read_text().splitlines() if " WARNING " in line]
    gaps = [m for m in said if m.startswith("the correlator was off from ")]
    assert len(gaps) == 1, said
    assert gaps[0].endswith("until this start: the records read meanwhile have no timelines (the counters count "
                            "them); timelines go on from what is read next"), gaps


async def test_a_first_run_from_the_beginning_says_which_moved_files_it_does_not_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Long-run review 2026-12-05: a file PMTA's move-to put away 10 s before the first start was never counted (17,014
    deliveries), nothing said; oneshot counted it. tail.start_position applies to what `paths` match: said, once."""
    logs, archive = tmp_path / "logs", tmp_path / "archive"
    logs.mkdir()
    archive.mkdir()
    AcctWriter(logs).write(3)
    (archive / "acct-0000.csv").write_text(ACCT_HEADER + "\n")
    cfg = write_config(tmp_path, [{"name": "acct", "paths": [str(logs / "acct-*.csv")],
                                   "moved_to": [str(archive / "acct-*.csv")]}],
                       tail={"start_position": "beginning"})
    d = Daemon(load_config(cfg))
    with caplog.at_level(logging.INFO, logger="watchtower.daemon"):
        task = asyncio.create_task(d.serve())
        await asyncio.wait_for(d.started.wait(), 20)
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0
    said = [r.getMessage() for r in caplog.records if "already in `moved_to`" in r.getMessage()]
    assert said == [f"first run: 1 files already in `moved_to` (e.g. {archive / 'acct-0000.csv'}) are not read: "
                    "tail.start_position applies to the files `paths` match; `watchtower oneshot` counts them "
                    "(a backfill)"]


async def test_reading_yields_to_a_metrics_render_but_never_starves(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The /metrics render's worker thread shares the GIL with reading and folding: a scrape of a daemon taking 20k
    records/s took 144 ms (p50) where the render alone takes ~40. Reading stops between chunks while a page is
    formatted, at most RENDER_YIELD at a time: with renders back to back (here one that never ends) every record
    is still read."""
    import exporter.daemon as daemon_mod
    import exporter.exposition as exposition

    monkeypatch.setattr(daemon_mod, "RENDER_YIELD", 0.05)
    w, _cfg, d, task = await _serving_after(tmp_path, 10)
    assert d._should_stop_reading() is False
    monkeypatch.setattr(exposition, "_RENDERING", 1)  # a render in progress, for good
    assert d._should_stop_reading() is True
    assert await d._yield_to_render() is False  # the wait ran out: the next chunks are read whatever renders run
    w.write(25)
    await _run_until(d, 35)
    monkeypatch.setattr(exposition, "_RENDERING", 0)
    assert await d._yield_to_render() is True
    d.should_exit.set()
    assert await asyncio.wait_for(task, 60) == 0
