"""A file the correlator process has not read yet keeps its descriptor open while it idles (`correlator.worker:
process`): the daemon holds a file deleted or renamed away until the process has read it (docs/reliability.md), and
that held only while the descriptor was still open. One closed by `tail.idle_close_after` before the file went left
nothing to hold: "cannot be read again for the correlator; their timelines are incomplete"
(watchtower_commit_backlog_lost_bytes_total +146684 in the review). Within `tail.max_open_files`: a new file still
gets a descriptor (the old one is closed then, as before, and its loss counted honestly).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import time
import types
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig, load_config
from exporter.daemon import Daemon
from exporter.metrics import SelfMetrics
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER, AcctWriter, d_line, write_config

_next = [os.getpid() % 500]


def loopback_port() -> int:
    """A free loopback port in 40000-40999 (this file's block)."""
    for _ in range(1000):
        port = 40000 + _next[0] % 1000
        _next[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 40000-40999")


def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The tailer's and the streams' monotonic clock, moved only by the test (`clock[0] += s`)."""
    import exporter.filestream
    import exporter.tailer

    clock = [1000.0]
    fake = types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    monkeypatch.setattr(exporter.filestream, "time", fake)
    monkeypatch.setattr(exporter.tailer, "time", fake)
    return clock


def held_tailer(directory: Path, **tail: object) -> tuple[Tailer, CollectorRegistry]:
    """A tailer as the daemon with the correlator in its own process runs it (hold_drained)."""
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "acct-*.csv")])
    t = Tailer([src], TailConfig(**{"rescan_interval": 0, "idle_close_after": 5, **tail}), SelfMetrics(reg),
               first_run=False)
    t.hold_drained = True
    return t, reg


async def drain(tailer: Tailer) -> int:
    rows = 0

    def take(stream, batch) -> None:  # type: ignore[no-untyped-def]
        nonlocal rows
        rows += len(batch)

    more = await tailer.poll(take, force_scan=True)
    while more:
        more = await tailer.poll(take)
    return rows


def write_file(path: Path, records: int) -> bytes:
    data = (ACCT_HEADER + "\n" + "".join(d_line(n) + "\n" for n in range(records))).encode()
    path.write_bytes(data)
    return data


async def test_an_idle_file_the_correlator_has_not_read_keeps_its_descriptor_through_its_deletion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = frozen_clock(monkeypatch)
    t, reg = held_tailer(tmp_path)
    path = tmp_path / "acct-0001.csv"
    data = write_file(path, 500)
    assert await drain(t) == 500
    (stream,) = t.streams.values()
    file_id = stream.cp.file_id
    t.release_held({file_id: (len(data), 0)})  # committed; the correlator process has read none of it (stopped)
    clock[0] += 10  # past idle_close_after
    assert await drain(t) == 0
    assert stream.file is not None  # still needed: not closed for idling
    path.unlink()
    assert await drain(t) == 0
    assert t.streams == {}  # drained and retired...
    assert file_id in t.held  # ...and held for the correlator process, which reads it through /proc/<pid>/fd
    fd = t.held[file_id][0]
    assert os.pread(fd, len(data) + 1, 0) == data
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "lost"}) == 0
    t.release_held({file_id: (len(data), len(data))})  # read to its end: let go
    assert t.held == {}
    await t.close()


async def test_a_file_never_committed_is_needed_and_one_read_by_the_correlator_is_closed_when_idle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = frozen_clock(monkeypatch)
    t, _reg = held_tailer(tmp_path)
    path = tmp_path / "acct-0001.csv"
    data = write_file(path, 20)
    assert await drain(t) == 20
    (stream,) = t.streams.values()
    clock[0] += 10
    assert await drain(t) == 0
    assert stream.file is not None  # not in the database yet: the correlator process starts it at byte 0
    t.release_held({stream.cp.file_id: (len(data), len(data))})  # the correlator process has read it all
    assert await drain(t) == 0
    assert stream.file is None  # idle, and needed by nobody: closed as before
    await t.close()


async def test_the_descriptor_budget_still_lets_a_new_file_in(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """tail.max_open_files: 1. The file the correlator still needs gives its descriptor to a new file (as before the
    fix: its deletion then leaves nothing held, and the correlator process counts the loss)."""
    clock = frozen_clock(monkeypatch)
    t, _reg = held_tailer(tmp_path, max_open_files=1)
    first = tmp_path / "acct-0001.csv"
    data = write_file(first, 20)
    assert await drain(t) == 20
    (stream,) = t.streams.values()
    t.release_held({stream.cp.file_id: (len(data), 0)})
    clock[0] += 10
    assert await drain(t) == 0
    assert stream.file is not None
    write_file(tmp_path / "acct-0002.csv", 30)
    assert await drain(t) == 30  # not kept waiting behind the file the correlator needs
    assert stream.file is None
    assert sum(s.file is not None for s in t.streams.values()) == 1
    await t.close()


# --- the review's repro, with the real correlator process ---------------------------------------------------------
def _query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def _events(db: Path) -> int:
    rows = _query(db, "SELECT count(*) FROM corr_events")
    return int(rows[0][0]) if rows else 0


async def _until(check, seconds: float = 30) -> None:  # noqa: ANN001 - a predicate
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_a_file_deleted_after_its_descriptor_idled_while_the_correlator_process_was_stopped_is_not_lost(
        tmp_path: Path) -> None:
    """SIGSTOP the correlator child, a new file of 500 records read by the daemon, idle past idle_close_after, then
    deleted, then SIGCONT: every timeline is stored, nothing counted lost."""
    logs = tmp_path / "logs"
    logs.mkdir()
    w = AcctWriter(logs)
    w.write(100)
    cfg = load_config(write_config(tmp_path, listen=f"127.0.0.1:{loopback_port()}", tail={"idle_close_after": 1},
                                   correlator={"enabled": True, "worker": "process"}))
    db = tmp_path / "state" / "watchtower.db"
    labels = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        await _until(lambda: _events(db) == 100)
        assert _events(db) == 100
        child = d.follower.process.pid
        os.kill(child, signal.SIGSTOP)
        try:
            w.rotate()
            w.write(500)
            path = w.path
            await _until(lambda: d.registry.get_sample_value("pmta_delivered_total", labels) == 600)
            assert d.registry.get_sample_value("pmta_delivered_total", labels) == 600
            await asyncio.sleep(2.5)  # past idle_close_after (1 s), the file quiet
            path.unlink()
            assert d.tailer is not None
            await _until(lambda: len(d.tailer.streams) == 1)
            assert len(d.tailer.streams) == 1  # the deleted file retired
            assert _events(db) == 100
        finally:
            os.kill(child, signal.SIGCONT)
        await _until(lambda: _events(db) >= 600)
        await asyncio.sleep(0.5)
        assert _events(db) == 600
        assert len(_query(db, "SELECT rcpt FROM corr_timelines")) == 600
        assert (d.registry.get_sample_value("watchtower_commit_backlog_lost_bytes_total") or 0) == 0
        assert d.health()["ok"] is True, d.health()["problems"]
        await _until(lambda: not d.tailer.held)  # read by the correlator: let go
        assert d.tailer.held == {}
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0


async def test_descriptors_held_for_a_stopped_correlator_count_in_max_open_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The correlator process reading nothing (stopped), files rotated and deleted past tail.max_open_files: a file it
    needs is not idle-closed, so each deleted one left a held descriptor, and held ones were not counted (11 -> 41
    descriptors in 40 rotations with max_open_files 16). Open and held together stay within the cap: the oldest held
    is let go (said), the correlator process then counting what it had not read as lost."""
    import logging

    clock = frozen_clock(monkeypatch)
    cap = 4
    t, _reg = held_tailer(tmp_path, max_open_files=cap)
    kept: list[Path] = []
    deleted: list[Path] = []
    with caplog.at_level(logging.WARNING, logger="watchtower"):
        for n in range(12):
            path = tmp_path / f"acct-{n:04d}.csv"
            path.write_text(ACCT_HEADER + "\n" + "".join(d_line(100 * n + i) + "\n" for i in range(10)))
            kept.append(path)
            assert await drain(t) == 10  # every new file gets a descriptor
            t.release_held({})  # the process has read none of them: it needs every file
            clock[0] += 10  # past idle_close_after: needed, so not closed for idling
            while len(kept) > 2:
                deleted.append(kept.pop(0))
                deleted[-1].unlink()
            assert await drain(t) == 0
            open_now = sum(s.file is not None for s in t.streams.values())
            assert open_now + len(t.held) <= cap, (n, open_now, len(t.held))
            fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}")]
            assert sum(str(tmp_path) in target for target in fds) <= cap
    assert len(t.held) == cap - 2  # the two files kept open, the rest of the budget held for the process
    said = [r.getMessage() for r in caplog.records if "to keep tail.max_open_files" in r.getMessage()]
    let_go = [m.split(":")[0] for m in said]
    assert let_go == [str(p) for p in deleted[: len(let_go)]]  # the oldest let go first, each said once
    assert len(let_go) == len(deleted) - len(t.held)
    for fd, _offset, _since, path in t.held.values():  # the ones still held: the newest deleted
        assert path in {str(p) for p in deleted[-len(t.held):]}
        assert os.fstat(fd).st_nlink == 0
    await t.close()
