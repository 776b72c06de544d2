"""The commit queue: checkpoints reach the state database at once, the sinks' rows in slices after them.

The event loop hands over one `Commit` per checkpoint interval (offsets + changed counter values + the
rows read since the previous one). One task writes on the state writer thread, checkpoint first: the
offsets and counters in one short transaction, with each file's sink position (exporter/backlog.py),
so the metrics' durability never waits for the correlator. Then the rows, in slices of about
SLICE_SECONDS each (sinks skip lines they already hold, so a slice replayed after a crash is
harmless). A checkpoint not yet written absorbs the next one, so however far the sinks fall behind
the queue holds one checkpoint and the backlog (bounded rows in memory, then spans of files).
A failed write is retried, in order, with backoff, until it succeeds: nothing read is dropped. While
writes fail, the backlog grows only up to the daemon's limit (reading pauses) and health reports it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.backlog import RowBacklog
from exporter.filestream import Checkpoint
from exporter.spans import Span
from exporter.state import Commit, StateStore

log = logging.getLogger("watchtower.state")

SLICE_SECONDS = 0.25
"""Target duration of one row-slice transaction: short enough for a prompt shutdown and checkpoint."""
MIN_SLICE_ROWS, MAX_SLICE_ROWS = 256, 10_000
MIN_SPAN_BYTES, MAX_SPAN_BYTES = 64 * 1024, 4 * 1024 * 1024
BATCH_SECONDS = 1.0
"""Slices written back to back on the writer thread per call (a waiting checkpoint or a stop ends it sooner)."""
"""A slice grows at most 2x from one to the next: rows the sinks already hold (a restart) are skipped
fast, and a size learnt on them must not become a multi-second slice of new rows."""
RETRY_FIRST, RETRY_MAX = 0.5, 10.0
SPAN_WAIT_PAUSE = 0.2
"""Seconds between two looks for a span's file while it waits for the daemon's reconciled commit (or a checkpoint
to write: it wakes the writer at once)."""
REPEAT_LOG_EVERY = 60.0


def describe(exc: BaseException) -> str:
    """One line for the log: the database's own words, not a traceback."""
    if isinstance(exc, sqlite3.Error):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _damage(exc: BaseException) -> bool:
    """SQLite says the file is no database, or a damaged one (SQLITE_NOTADB, SQLITE_CORRUPT): no retry mends that."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None \
        and code & 0xFF in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


class CommitQueue:
    """Prompt checkpoints, then ordered, retried, time-sliced row writes; one instance per daemon."""

    def __init__(self, store: StateStore, on_committed: Callable[[float], None] | None = None,
                 on_error: Callable[[], None] | None = None, on_progress: Callable[[], None] | None = None) -> None:
        self.store = store
        self.feeds_sinks = bool(store.sinks) and not store.sinks_elsewhere
        """This queue stores the sinks' rows. Not when they write in a process of their own: that process reads
        the files itself, and a second writer of the same rows, with its own link cache, split timelines."""
        self.checkpoint: Commit | None = None
        """The checkpoint waiting to be written (later ones merge into it)."""
        self.backlog = RowBacklog()
        self.errors: dict[str, str] = {}
        """The last failure of each kind of write ("checkpoint", "rows") while it fails."""
        self.failures = 0
        self.oldest_since: float | None = None
        self.sizes = SliceSizes()
        self._on_committed = on_committed
        self._on_error = on_error
        self._on_progress = on_progress
        self._wake = asyncio.Event()
        self._closing = False
        self._abort = False
        self._last_error_log = 0.0
        self._task: asyncio.Task[None] | None = None

    # --- producer side (event loop) --------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="state-writer")

    def add_backlog(self, spans: list[Span]) -> None:
        """Spans the sinks must read again before anything new (a restart behind its checkpoints)."""
        if spans and self.feeds_sinks:
            self.backlog.add([], spans)
            self._wake.set()

    def put(self, commit: Commit) -> None:
        if not self.pending:
            self.oldest_since = time.monotonic()
        # The checkpoint first, then its rows: a slice the writer thread takes meanwhile finds the checkpoints
        # of new files it must register (`_pending_checkpoints`); the checkpoint itself is written later, on
        # this loop, once the rows are in the backlog, so its sink positions see them.
        marks = Commit(checkpoints=commit.checkpoints, series=commit.series, forget_before=commit.forget_before,
                       reconciled=commit.reconciled, moved_since=commit.moved_since,
                       start_pending=commit.start_pending, started_at_end=commit.started_at_end)
        if self.checkpoint is None:
            self.checkpoint = marks
        else:
            self.checkpoint.absorb(marks)
        if self.feeds_sinks:
            self.backlog.add(commit.batches, commit.spans)
        self._wake.set()

    @property
    def pending(self) -> bool:
        return self.checkpoint is not None or bool(self.backlog)

    @property
    def backlog_rows(self) -> int:
        """Rows held in memory for the sinks, not yet written (the daemon spills past its limit)."""
        return self.backlog.rows

    @property
    def span_bytes(self) -> int:
        """Bytes the sinks still need that are not in memory (read again from the files)."""
        return self.backlog.span_bytes

    @property
    def error(self) -> str | None:
        """The current failure, None while every kind of write succeeds."""
        return next(iter(self.errors.values()), None)

    @property
    def stuck_for(self) -> float:
        """Seconds since the queue last made progress while it held work (0 when idle)."""
        return time.monotonic() - self.oldest_since if self.pending and self.oldest_since else 0.0

    async def drain(self, timeout: float) -> bool:
        """Stop accepting work; write the checkpoint and the rows held in memory within `timeout`.

        True if both were written. Spans are not read again now: the sink positions committed already
        say where the next start resumes them, so reading them here would only delay the stop. Past the
        deadline the slice in flight completes and the rest stays in the files, positioned likewise.
        """
        self._closing = True
        self._wake.set()
        if self._task is None:
            return not self._closing_work
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._abort = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), SLICE_SECONDS)
            except TimeoutError:  # a slow slice: SQLite stops it, the transaction rolls back (positions hold)
                self.store.interrupt()
                try:
                    await asyncio.wait_for(self._task, SLICE_SECONDS * 4)
                except TimeoutError:
                    self._task.cancel()
                    await asyncio.gather(self._task, return_exceptions=True)
        return not self._closing_work

    @property
    def _closing_work(self) -> bool:
        """What a stop still writes: the checkpoint and the rows in memory (not the spans)."""
        return self.checkpoint is not None or self.backlog.rows > 0

    # --- the writer task -------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._abort:
            if self._closing and not self._closing_work:
                return
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            kind = "checkpoint" if self.checkpoint is not None else "rows"
            try:
                if kind == "checkpoint":
                    await self._write_checkpoint()
                else:
                    await self._write_slice()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is retried; the daemon must not die
                if self._abort:  # interrupted at the shutdown deadline: nothing to report or retry
                    return
                self._failed(kind, exc)
                try:
                    await asyncio.wait_for(self._abort_requested(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            self.oldest_since = time.monotonic()
            self._succeeded(kind)

    async def _abort_requested(self) -> None:
        while not self._abort:
            self._wake.clear()
            await self._wake.wait()

    async def _write_checkpoint(self) -> None:
        c, self.checkpoint = self.checkpoint, None
        assert c is not None
        try:
            await self.store.write_checkpoint(c, self.backlog if self.store.sinks else None)
        except BaseException:
            if self.checkpoint is not None:  # a later one arrived meanwhile: it still supersedes ours
                c.absorb(self.checkpoint)
            self.checkpoint = c
            raise

    async def _write_slice(self) -> None:
        await self.store.on_writer(self._slices)
        if self.store.span_waits:  # its file not found yet: the checkpoint that re-keys it is to come
            self.store.span_waits = False
            if self.checkpoint is None and not self._closing:  # a stop does not wait for it (nor drops it)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), SPAN_WAIT_PAUSE)
                except TimeoutError:
                    pass

    def _slices(self) -> None:
        """Writer thread: slices back to back for up to BATCH_SECONDS, or until a checkpoint waits or a stop
        is requested (the loop does not wait for the event loop between them: a busy poll would otherwise
        leave the writer idle)."""
        write_slices(self.store, self.backlog, self._pending_checkpoints, self.sizes, BATCH_SECONDS,
                     lambda: self.checkpoint is None and not self._abort)

    def _pending_checkpoints(self) -> list[Checkpoint]:
        """The checkpoint not written yet (asked after a slice is taken: `put` sets it before adding rows)."""
        c = self.checkpoint
        return c.checkpoints if c is not None else []

    def _failed(self, kind: str, exc: BaseException) -> None:
        self.failures += 1
        text = describe(exc)
        now = time.monotonic()
        if self.error is None or now - self._last_error_log >= REPEAT_LOG_EVERY or text != self.errors.get(kind):
            how = "failed" if self.error is None else f"still failing ({self.failures} attempts)"
            what = "checkpoint" if kind == "checkpoint" else "write of the correlator's rows"
            held = f" ({self.backlog_rows} rows wait in memory)" if self.backlog_rows else ""
            # whether reading pauses is the daemon's decision (tail.max_pending_rows), logged by it when it does
            if _damage(exc):
                log.error("%s to %s %s: %s; the database file is damaged (changed outside the daemon, or a failing "
                          "disk): what it held may be lost and retries cannot mend it; stop the daemon and see "
                          "docs/runbooks.md#correlator-store-damaged%s", what, self.store.path, how, text, held)
            else:
                log.error("%s to %s %s: %s; nothing is lost: it is retried until it succeeds%s",
                          what, self.store.path, how, text, held)
            if not isinstance(exc, sqlite3.Error | OSError):
                log.debug("commit failure detail", exc_info=exc)
            self._last_error_log = now
        self.errors[kind] = text
        if self._on_error is not None:
            self._on_error()

    def _succeeded(self, kind: str) -> None:
        if self.errors.pop(kind, None) is not None and not self.errors:
            log.warning("commits to %s resumed after %d failed attempts", self.store.path, self.failures)
            self.failures = 0
        if kind == "checkpoint" and self._on_committed is not None:
            self._on_committed(time.time())
        if self._on_progress is not None:
            self._on_progress()


def _next_size(current: int, fits: float, low: int, high: int) -> int:
    """The size that fits SLICE_SECONDS at the rate just measured, at most twice the current one."""
    return int(min(high, current * 2, max(low, fits)))


@dataclass(slots=True)
class SliceSizes:
    """Rows (in memory) per slice, and span bytes per slice of each source, learnt from the rate of the last slice
    of that kind.

    Span bytes are learnt per source because a source's lines cost what its record types cost: a file of
    complaints (each searched for its delivery deep in the store) was ~20x slower per byte than a file of
    deliveries, and with one size for all, a 16 MiB piece of it sized on the delivery file's rate held the write
    lock for 13 s while the daemon's checkpoint waited (bench/README.md, fifteenth round)."""

    rows: int = 2_000
    span_bytes: int = 1024 * 1024
    """The first span size of a source (until one of its slices is measured)."""
    seconds: float = SLICE_SECONDS
    max_span_bytes: int = MAX_SPAN_BYTES
    by_source: dict[str, int] = field(default_factory=dict)
    """source -> span bytes learnt from its last slice."""

    def span_bytes_for(self, source: str | None) -> int:
        return self.by_source.get(source, self.span_bytes) if source is not None else self.span_bytes

    def learn(self, rows: int, nbytes: int, elapsed: float, source: str | None = None) -> None:
        elapsed = max(elapsed, 1e-3)
        if rows and not nbytes:
            self.rows = _next_size(self.rows, rows / elapsed * self.seconds, MIN_SLICE_ROWS, MAX_SLICE_ROWS)
        elif nbytes and source is not None:
            self.by_source[source] = _next_size(self.span_bytes_for(source), nbytes / elapsed * self.seconds,
                                                MIN_SPAN_BYTES, self.max_span_bytes)


def write_slices(store: StateStore, backlog: RowBacklog, pending: Callable[[], list[Checkpoint]] | list[Checkpoint],
                 sizes: SliceSizes, seconds: float, go_on: Callable[[], bool]) -> None:
    """On the writer thread: slices of `backlog` back to back for up to `seconds`, while `go_on()`; each slice
    is its own transaction (StateStore._write_backlog) and teaches `sizes` the rate it ran at."""
    deadline = time.monotonic() + seconds
    while backlog and go_on() and time.monotonic() < deadline:
        started = time.monotonic()
        span = None if backlog.rows > 0 else backlog.head_span()  # the slice is a piece of it (StateStore)
        source = span.source if span is not None else None
        rows, nbytes = store.write_backlog_now(backlog, pending, sizes.rows, sizes.span_bytes_for(source))
        if not rows and not nbytes:
            return
        sizes.learn(rows, nbytes, time.monotonic() - started, source)
