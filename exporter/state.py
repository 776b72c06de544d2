"""The state database: checkpoints, counter values and correlator rows, committed together.

One SQLite file (WAL) in `state_dir`, written by one dedicated thread. Each commit stores, in a
single transaction, the sinks' rows (the correlator's events), the file offsets that cover them
and the current values of the metric series that changed. After a crash (kill -9 included) the
daemon reloads offsets and counters from the same instant, so `/metrics` totals continue exactly:
nothing read before the last commit is lost, nothing after it is counted twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.filestream import Checkpoint
from exporter.records import RecordBatch
from exporter.sinks import RecordSink

log = logging.getLogger("watchtower.state")

SEP = "\x1f"
SCHEMA = """
CREATE TABLE IF NOT EXISTS wt_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wt_checkpoints (
    file_id TEXT PRIMARY KEY, source TEXT NOT NULL, path TEXT NOT NULL, dev INTEGER NOT NULL,
    ino INTEGER NOT NULL, fingerprint BLOB NOT NULL, offset INTEGER NOT NULL, line_no INTEGER NOT NULL,
    header TEXT NOT NULL, gone_since REAL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS wt_series (
    metric TEXT NOT NULL, labels TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (metric, labels)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class Commit:
    checkpoints: list[Checkpoint] = field(default_factory=list)
    series: list[tuple[str, tuple[str, ...], Any]] = field(default_factory=list)
    batches: list[RecordBatch] = field(default_factory=list)
    forget_before: float = 0.0


@dataclass(slots=True)
class Loaded:
    first_run: bool
    checkpoints: list[Checkpoint]
    series: list[tuple[str, tuple[str, ...], Any]]


class StateStore:
    """Owns the write connection; every call runs on its single writer thread."""

    def __init__(self, path: Path, sinks: list[RecordSink] | None = None) -> None:
        self.path = path
        self.sinks = sinks or []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watchtower-state")
        self._conn: sqlite3.Connection | None = None

    # --- writer-thread functions -----------------------------------------------------------------
    def _open(self) -> Loaded:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        for sink in self.sinks:
            sink.setup(conn)
        self._conn = conn
        first_run = conn.execute("SELECT 1 FROM wt_meta WHERE key='initialized'").fetchone() is None
        cps = [
            Checkpoint(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8], r[9])
            for r in conn.execute(
                "SELECT file_id, source, path, dev, ino, fingerprint, offset, line_no, header, gone_since"
                " FROM wt_checkpoints"
            )
        ]
        series = [
            (m, tuple(labels.split(SEP)) if labels else (), json.loads(value))
            for m, labels, value in conn.execute("SELECT metric, labels, value FROM wt_series")
        ]
        return Loaded(first_run, cps, series)

    def _commit(self, c: Commit) -> None:
        conn = self._conn
        assert conn is not None
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if c.batches:
                for sink in self.sinks:
                    sink.write(conn, c.batches)
            conn.executemany(
                "INSERT INTO wt_checkpoints VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(file_id) DO UPDATE SET"
                " path=excluded.path, fingerprint=excluded.fingerprint, offset=excluded.offset,"
                " line_no=excluded.line_no, header=excluded.header, gone_since=excluded.gone_since,"
                " updated=excluded.updated",
                [
                    (cp.file_id, cp.source, cp.path, cp.dev, cp.ino, cp.fingerprint, cp.offset, cp.line_no,
                     cp.header, cp.gone_since, now)
                    for cp in c.checkpoints
                ],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO wt_series VALUES (?,?,?)",
                [(m, SEP.join(k), json.dumps(v)) for m, k, v in c.series],
            )
            if c.forget_before:
                conn.execute("DELETE FROM wt_checkpoints WHERE gone_since IS NOT NULL AND gone_since < ?",
                             (c.forget_before,))
            conn.execute("INSERT OR IGNORE INTO wt_meta VALUES ('initialized', ?)", (str(now),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _maintain(self) -> None:
        conn = self._conn
        assert conn is not None
        for sink in self.sinks:
            sink.maintain(conn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- event-loop API ------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> Loaded:
        return await self._run(self._open)  # type: ignore[no-any-return]

    async def commit(self, c: Commit) -> None:
        await self._run(self._commit, c)

    async def maintain(self) -> None:
        await self._run(self._maintain)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)
