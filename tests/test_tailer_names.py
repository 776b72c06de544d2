"""File names that are not UTF-8: a glob may match them (the filesystem holds bytes), and the daemon must follow
and checkpoint them like any other file. Python names them with surrogate escapes ('\\udcff'), which SQLite's
UTF-8 text, JSON and log lines cannot carry as they are."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

import pytest

from exporter.config import load_config
from exporter.daemon import Daemon
from tests.conftest import ACCT_HEADER, AcctWriter, write_config

LABELS = {"vmta": "vmta-1", "vmta_pool": "pool-a", "isp": "gmail"}


def _odd_file(logs: Path, raw: bytes, w: AcctWriter, rows: int) -> Path:
    """A file named with bytes that are not UTF-8, holding `rows` records (counted in `w`)."""
    path = Path(os.fsdecode(os.fsencode(str(logs)) + b"/" + raw))
    path.write_text(ACCT_HEADER + "\n", encoding="utf-8")
    w.write(rows, path=path)
    return path


def _events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM corr_events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


async def _until(d: Daemon, db: Path, n: int, events: bool) -> None:
    """Polls until `n` deliveries are counted, committed (and stored, with the correlator); the caller asserts."""
    for _ in range(600):
        await asyncio.sleep(0.05)
        h = d.health()
        if (d.registry.get_sample_value("pmta_delivered_total", LABELS) == n and h["commit_backlog_bytes"] == 0
                and h["commit_backlog_rows"] == 0 and h["last_commit"] and (not events or _events(db) == n)):
            return


@pytest.mark.parametrize("worker", [None, "thread", "process"])
async def test_files_with_non_utf8_names_are_followed_checkpointed_and_resumed(tmp_path: Path, worker: str | None):
    logs = tmp_path / "logs"
    logs.mkdir()
    w = AcctWriter(logs)
    w.write(50)
    odd = _odd_file(logs, b"acct-\xff.csv", w, 30)  # present at start
    corr = {"enabled": False} if worker is None else {"enabled": True, "worker": worker}
    cfg = load_config(write_config(tmp_path, correlator=corr))
    db = tmp_path / "state" / "watchtower.db"

    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    await _until(d, db, 80, worker is not None)
    assert d.registry.get_sample_value("pmta_delivered_total", LABELS) == 80
    _odd_file(logs, b"acct-\xfe\x80-2.csv", w, 20)  # appears while the daemon runs
    w.write(5, path=odd)
    await _until(d, db, 105, worker is not None)
    health = d.health()
    json.dumps(health)  # what /healthz serializes
    assert health["ok"] is True, health["problems"]
    assert health["files_followed"] == 3
    d.should_exit.set()
    assert await asyncio.wait_for(task, 30) == 0
    conn = sqlite3.connect(db)
    stored = [row[0] for row in conn.execute("SELECT path FROM wt_checkpoints")]
    conn.close()
    assert len(stored) == 3

    w.write(7, path=odd)  # while stopped
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    await asyncio.wait_for(d.started.wait(), 20)
    await _until(d, db, 112, worker is not None)
    await asyncio.sleep(0.3)  # a few more passes: nothing read twice
    assert d.registry.get_sample_value("pmta_delivered_total", LABELS) == 112 == w.total
    if worker is not None:
        assert _events(db) == 112
    assert d.health()["ok"] is True
    d.should_exit.set()
    assert await asyncio.wait_for(task, 30) == 0
