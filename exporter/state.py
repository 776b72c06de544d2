"""The state database: checkpoints, counter values and correlator rows.

One SQLite file (WAL) in `state_dir`, private to the daemon's user (dir 0700, files 0600), written by
one dedicated thread. Two kinds of transaction:

* row slices: the sinks' rows (the correlator's events) for part of what was read, each slice small
  enough to commit in a fraction of a second. Rows the daemon did not keep in memory (a slow sink,
  see exporter/spans.py) are read again from their files, a bounded piece per slice. Sinks are
  idempotent per (file, line), so a slice written again after a crash is skipped, never stored twice.
* checkpoints: the file offsets and the current values of the metric series that changed, in one
  transaction, written only after every row slice read before them.

After a crash (kill -9 included) the daemon reloads offsets and counters from the same instant, so
`/metrics` totals continue exactly: nothing read before the last checkpoint is lost, nothing after
it is counted twice, and the correlator skips the lines it already holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.filestream import Checkpoint
from exporter.records import RecordBatch
from exporter.sinks import RecordSink
from exporter.spans import Span, SpanGone, append_span, read_span

log = logging.getLogger("watchtower.state")

SEP = "\x1f"
SCHEMA_VERSION = "1"
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
FULL_CHECK_BYTES = 512 * 1024**2
"""Up to this size `PRAGMA quick_check` covers the whole database at start (about a second per 512 MiB)."""
WAY_OUT = ("stop the daemon, move the file aside (keep it for inspection) and start again: counters restart "
           "at 0 and existing files are read according to tail.start_position")


class StateError(Exception):
    """The state database cannot be used as it is; the message names the file and the way out."""


@dataclass(slots=True)
class Commit:
    """One checkpoint: offsets + series values, and the rows read since the previous one."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    series: list[tuple[str, tuple[str, ...], Any]] = field(default_factory=list)
    batches: list[RecordBatch] = field(default_factory=list)
    forget_before: float = 0.0
    rows_done: int = 0
    """Rows of `batches` already written by committed slices (a retry resumes after them)."""
    spans: list[Span] = field(default_factory=list)
    """Bytes read after `batches` whose rows the sinks still need, read again from the files."""

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def span_bytes(self) -> int:
        return sum(s.remaining for s in self.spans)

    def absorb(self, later: Commit) -> None:
        """Take a later commit that holds no in-memory rows into this one (not yet started).

        Its offsets and counter values supersede ours, its spans follow ours: writing the merged commit
        stores exactly what writing both would, so a backlog of them costs no memory per interval.
        """
        assert not later.batches
        cps = {cp.file_id: cp for cp in self.checkpoints}
        cps.update((cp.file_id, cp) for cp in later.checkpoints)
        self.checkpoints = list(cps.values())
        series = {(m, k): v for m, k, v in self.series}
        series.update(((m, k), v) for m, k, v in later.series)
        self.series = [(m, k, v) for (m, k), v in series.items()]
        for span in later.spans:
            append_span(self.spans, span)
        self.forget_before = max(self.forget_before, later.forget_before)


@dataclass(slots=True)
class Loaded:
    first_run: bool
    checkpoints: list[Checkpoint]
    series: list[tuple[str, tuple[str, ...], Any]]


def private_dir(path: Path) -> None:
    """Create the state directory 0700; tighten an existing one of ours that is open to others.

    Called before anything else writes there (the correlator's HMAC key included).
    """
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir honours the umask
        return
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        if st.st_uid == os.geteuid():
            os.chmod(path, 0o700)
            log.warning("state_dir %s was accessible to other users (mode %o); set to 0700: it holds "
                        "recipient data", path, mode)
        else:
            log.warning("state_dir %s is accessible to other users (mode %o) and not ours to change; it "
                        "holds recipient data: chmod 700 it", path, mode)


def _private_file(path: Path) -> bool:
    """Create the database file 0600 if absent (SQLite gives -wal/-shm the same mode); True if created."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("%s was readable by other users (mode %o); set to 0600", path, mode)
        return False
    os.close(fd)
    return True


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """ROLLBACK if a transaction is still open: SQLite may have rolled back already (disk full)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the original error is the one worth reporting
            log.debug("rollback after a failed commit: %s", exc)


def take_slice(batches: list[RecordBatch], skip: int, limit: int) -> tuple[list[RecordBatch], int]:
    """Up to `limit` rows after the first `skip` rows of `batches`, splitting a batch where needed."""
    out: list[RecordBatch] = []
    taken = 0
    seen = 0
    for batch in batches:
        n = len(batch)
        if seen + n <= skip:
            seen += n
            continue
        start = max(0, skip - seen)
        stop = min(n, start + (limit - taken))
        out.append(batch if (start, stop) == (0, n) else batch.slice(start, stop))
        taken += stop - start
        seen += n
        if taken >= limit:
            break
    return out, taken


class StateStore:
    """Owns the write connection; every call runs on its single writer thread."""

    def __init__(self, path: Path, sinks: list[RecordSink] | None = None) -> None:
        self.path = path
        self.sinks = sinks or []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watchtower-state")
        self._conn: sqlite3.Connection | None = None
        self._registered: set[str] = set()
        """File ids that have a row in wt_checkpoints (writer thread only)."""
        self.bytes_lost = 0
        """Bytes of spans whose file was gone before the sinks could read them again."""

    # --- writer-thread functions -----------------------------------------------------------------
    def _open(self) -> Loaded:
        try:
            return self._open_checked()
        except StateError:
            self._close()
            raise
        except sqlite3.DatabaseError as exc:
            self._close()
            raise StateError(f"{self.path}: not a usable SQLite database ({exc}); {WAY_OUT}") from exc
        except OSError as exc:
            self._close()
            raise StateError(f"{self.path}: cannot open the state database: {exc.strerror or exc}") from exc

    def _create(self) -> None:
        """Schema and marker written to a temporary file renamed into place: never a half-made database."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        _private_file(tmp)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(
                f"BEGIN IMMEDIATE;{SCHEMA}INSERT INTO wt_meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
                f"INSERT INTO wt_meta VALUES ('created', '{time.time()}');COMMIT;"
            )
        finally:
            conn.close()
        os.replace(tmp, self.path)

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        """Refuse a damaged database at start rather than fail every commit while claiming to resume.

        The whole file is checked up to FULL_CHECK_BYTES; above that only the tables that hold offsets and
        counters (a large correlator store would delay the start by minutes; its damage shows as commit errors).
        """
        size = self.path.stat().st_size
        tables = [None] if size <= FULL_CHECK_BYTES else ["wt_meta", "wt_checkpoints", "wt_series"]
        for table in tables:
            sql = "PRAGMA quick_check(5)" if table is None else f"PRAGMA quick_check({table})"
            try:
                check = [r[0] for r in conn.execute(sql)]
            except sqlite3.OperationalError as exc:
                if table is not None and "no such table" in str(exc):
                    continue
                raise
            if check != ["ok"]:
                raise StateError(f"{self.path}: the state database is damaged ({'; '.join(check)}); {WAY_OUT}")

    def _open_checked(self) -> Loaded:
        private_dir(self.path.parent)
        if not self.path.exists():
            self._create()
        elif self.path.stat().st_size == 0:
            raise StateError(f"{self.path}: the state database is an empty file (emptied or truncated outside "
                             f"the daemon); {WAY_OUT}")
        _private_file(self.path)  # tighten the mode of a database made by an older version
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn = conn
        conn.execute("PRAGMA busy_timeout=5000")
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise StateError(f"{self.path}: cannot switch the state database to WAL mode")
        conn.execute("PRAGMA synchronous=NORMAL")
        self._quick_check(conn)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta: dict[str, str] = {}
        if "wt_meta" in tables:
            meta = dict(conn.execute("SELECT key, value FROM wt_meta").fetchall())
        if "schema_version" not in meta and "initialized" not in meta:
            what = f"tables ({', '.join(sorted(tables)[:4])})" if tables else "no tables"
            raise StateError(f"{self.path}: has {what} but no watchtower marker: not this daemon's state, or "
                             f"its content was lost (a deleted -wal file?); {WAY_OUT}")
        conn.executescript(SCHEMA)  # tables added by later versions
        conn.execute("INSERT OR IGNORE INTO wt_meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        for sink in self.sinks:
            sink.setup(conn)
        first_run = "initialized" not in meta
        cps = [
            Checkpoint(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8], r[9])
            for r in conn.execute(
                "SELECT file_id, source, path, dev, ino, fingerprint, offset, line_no, header, gone_since"
                " FROM wt_checkpoints"
            )
        ]
        self._registered = {cp.file_id for cp in cps}
        series = [
            (m, tuple(labels.split(SEP)) if labels else (), json.loads(value))
            for m, labels, value in conn.execute("SELECT metric, labels, value FROM wt_series")
        ]
        return Loaded(first_run, cps, series)

    def _write_rows(self, batches: list[RecordBatch], new_files: list[Checkpoint] | None = None) -> None:
        """One row slice, in its own transaction (sinks skip lines they already hold)."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if new_files:
                now = time.time()
                conn.executemany(
                    "INSERT OR IGNORE INTO wt_checkpoints VALUES (?,?,?,?,?,?,0,0,'',NULL,?)",
                    [(cp.file_id, cp.source, cp.path, cp.dev, cp.ino, cp.fingerprint, now) for cp in new_files],
                )
            for sink in self.sinks:
                sink.write(conn, batches)
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise
        if new_files:
            self._registered.update(cp.file_id for cp in new_files)

    def _write_slice(self, c: Commit, limit: int) -> int:
        """The next `limit` rows of `c` after those already written; returns how many were written."""
        part, n = take_slice(c.batches, c.rows_done, limit)
        if n:
            self._write_rows(part, self._unregistered(c, part))
        return n

    def _write_span(self, c: Commit, max_bytes: int) -> tuple[int, int]:
        """Read again the next piece (about `max_bytes`) of `c`'s first span and store its rows.

        Returns (rows stored, bytes done). The span moves on only once its rows are committed, so a
        failed slice is retried from the same byte. A file gone or replaced meanwhile: its remaining
        bytes are skipped with a warning (the metrics counted them when they were first read).
        """
        while c.spans:
            span = c.spans[0]
            if span.remaining <= 0:
                c.spans.pop(0)
                continue
            try:
                batch, consumed, line_no, columns = read_span(span, max_bytes)
            except SpanGone as exc:
                lost = span.remaining
                log.warning("%s: its last %d bytes (from line %d) were counted in the metrics but cannot be read "
                            "again for the correlator; their timelines are incomplete", exc, lost, span.line_no + 1)
                self.bytes_lost += lost
                c.spans.pop(0)
                return 0, lost
            if batch is not None and len(batch):
                self._write_rows([batch], self._unregistered(c, [batch]))
            span.start += consumed
            span.line_no, span.columns = line_no, columns
            if span.remaining <= 0:
                c.spans.pop(0)
            return (len(batch) if batch is not None else 0), consumed
        return 0, 0

    def _unregistered(self, c: Commit, part: list[RecordBatch]) -> list[Checkpoint]:
        """Checkpoints of files in `part` that the database does not know yet.

        A file found since the last checkpoint has a fresh random id. Its rows may be stored (slices)
        before the checkpoint that names it; were the process killed in between, the next start would
        not know the id, read the file again under a new one, and the sinks would store its lines
        twice. So the slice that first stores a file's rows also stores the file, at offset 0: the next
        start resumes it under the same id from its beginning, and the sinks skip what they hold.
        """
        ids = {b.file_id for b in part} - self._registered
        return [cp for cp in c.checkpoints if cp.file_id in ids]

    def _write_checkpoint(self, c: Commit) -> None:
        conn = self._conn
        assert conn is not None
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
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
            rollback_quietly(conn)
            raise
        self._registered.update(cp.file_id for cp in c.checkpoints)

    def _commit(self, c: Commit) -> None:
        """Rows and checkpoint of `c` at once (oneshot and tests; the daemon goes through CommitQueue)."""
        if c.batches and self.sinks:
            self._write_rows(c.batches)
        while c.spans and self.sinks:
            self._write_span(c, 16 * 1024 * 1024)
        self._write_checkpoint(c)

    def _maintain(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            for sink in self.sinks:
                sink.maintain(conn)
        except BaseException:
            rollback_quietly(conn)
            raise

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- event-loop API ------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> Loaded:
        return await self._run(self._open)  # type: ignore[no-any-return]

    async def write_rows(self, batches: list[RecordBatch]) -> None:
        await self._run(self._write_rows, batches)

    async def write_slice(self, c: Commit, limit: int) -> int:
        return await self._run(self._write_slice, c, limit)  # type: ignore[no-any-return]

    async def write_span(self, c: Commit, max_bytes: int) -> tuple[int, int]:
        return await self._run(self._write_span, c, max_bytes)  # type: ignore[no-any-return]

    async def write_checkpoint(self, c: Commit) -> None:
        await self._run(self._write_checkpoint, c)

    async def commit(self, c: Commit) -> None:
        await self._run(self._commit, c)

    async def maintain(self) -> None:
        await self._run(self._maintain)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)
