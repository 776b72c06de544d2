"""A live file renamed (logrotate/mv) while the correlator's own process (`correlator.worker: process`) is behind:
the process reads it to its end as the tailer does, by its identity (device, inode) and not its old path. Renamed
within the glob it is found under its new name; renamed out of the glob, or deleted, through the descriptor the
daemon holds open for it until the correlator has read it all."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

from exporter.config import load_config
from exporter.daemon import Daemon
from tests.conftest import ACCT_HEADER, AcctWriter, write_config

LABELS = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}


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


def _delivered(d: Daemon) -> float:
    return d.registry.get_sample_value("pmta_delivered_total", LABELS) or 0


async def _until(check, tries: int = 400) -> None:  # noqa: ANN001 - a predicate
    """Polls every 50 ms until `check()` holds (the caller asserts what it expects either way)."""
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.05)


def _new_live(live: Path) -> None:
    with open(live, "a", encoding="utf-8") as f:
        f.write(ACCT_HEADER + "\n")


async def test_files_renamed_while_the_correlator_process_is_behind_are_read_to_their_end(tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "acct.csv"
    w = AcctWriter(logs, base="unfollowed")  # its own rotated files are outside the glob: only `path=` writes count
    cfg = load_config(write_config(tmp_path, sources=[{"name": "acct", "paths": [str(logs / "acct*.csv")]}],
                                   correlator={"enabled": True, "worker": "process"}))
    db = tmp_path / "state" / "watchtower.db"
    _new_live(live)
    w.write(100, path=live)

    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        await _until(lambda: _events(db) == 100 and _delivered(d) == 100)
        assert _events(db) == 100
        child = d.follower.process.pid
        os.kill(child, signal.SIGSTOP)  # the correlator is behind from here on, for as long as the test says
        try:
            sizes = 0
            w.write(100, path=live)
            await _until(lambda: _delivered(d) == 200)
            sizes += live.stat().st_size
            live.rename(logs / "acct-0001.csv")  # logrotate-style, the new name still in the glob
            _new_live(live)
            w.write(100, path=live)
            await _until(lambda: _delivered(d) == 300)
            sizes += live.stat().st_size
            live.rename(logs / "acct.csv.1")  # out of the glob: only the daemon's descriptor follows it
            _new_live(live)
            w.write(100, path=live)
            await _until(lambda: _delivered(d) == 400)
            sizes += live.stat().st_size
            live.rename(logs / "acct.csv.2")
            _new_live(live)
            w.write(50, path=live)
            await _until(lambda: _delivered(d) == 450)
            (logs / "acct.csv.2").unlink()  # deleted while the correlator has not read it: the descriptor only
            sizes += live.stat().st_size
            assert _delivered(d) == 450
            await _until(lambda: not any(s.gone for s in d.tailer.streams.values())
                         and _query(db, "SELECT sum(offset) FROM wt_checkpoints")[0][0] == sizes)
            assert _query(db, "SELECT sum(offset) FROM wt_checkpoints")[0][0] == sizes  # all read and committed
            assert _events(db) == 100
            assert len(d.tailer.held) == 2  # acct.csv.1 and the deleted acct.csv.2, kept for the correlator
        finally:
            os.kill(child, signal.SIGCONT)
        await _until(lambda: _events(db) >= 450 and _query(db, "SELECT count(*) FROM wt_checkpoints WHERE"
                                                               " sink_offset IS NOT NULL AND sink_offset < offset"
                                                           )[0][0] == 0)
        assert _events(db) == 450
        assert _delivered(d) == 450
        rcpts = {r[0] for r in _query(db, "SELECT rcpt FROM corr_timelines")}
        assert len(_query(db, "SELECT rcpt FROM corr_timelines")) == 450
        assert rcpts == {f"u{n}@gmail.com" for n in range(450)}
        assert d.health()["ok"] is True, d.health()["problems"]
        await _until(lambda: not d.tailer.held)  # read to their end by the correlator: the descriptors are closed
        assert d.tailer.held == {}
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0

    w.write(10, path=live)  # while stopped; then the same again after a restart, nothing twice
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        await _until(lambda: _events(db) >= 460 and _delivered(d) >= 460)
        await asyncio.sleep(0.5)  # anything read twice would show by now
        assert _delivered(d) == 460
        assert _events(db) == 460
        assert len(_query(db, "SELECT rcpt FROM corr_timelines")) == 460
        assert {r[0] for r in _query(db, "SELECT rcpt FROM corr_timelines")} == {f"u{n}@gmail.com" for n in range(460)}
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0
