"""The commit queue: what was read reaches the state database in order, in slices sized by time.

The event loop enqueues one `Commit` per checkpoint interval (offsets + changed counter values + the
rows read since the previous one). One task drains the queue on the state writer thread: each
commit's rows go in slices of about SLICE_SECONDS each (sinks skip lines they already hold, so a slice
replayed after a crash is harmless), then its checkpoint in one short transaction. A failed write is
retried, in order, with backoff, until it succeeds: nothing read is dropped and the queue never
reorders, so the stored counters always match the stored offsets. While it fails the backlog grows
only up to the daemon's limit (reading pauses) and health reports the error.

Commits that hold no rows in memory (only offsets, counters and spans of files to read again, see
exporter/spans.py) are merged into the last queued one, so however far the sinks fall behind the
queue holds at most a few commits: memory stays flat.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable

from exporter.state import Commit, StateStore

log = logging.getLogger("watchtower.state")

SLICE_SECONDS = 0.25
"""Target duration of one row-slice transaction: short enough for a prompt shutdown and checkpoint."""
MIN_SLICE_ROWS, MAX_SLICE_ROWS = 256, 50_000
MIN_SPAN_BYTES, MAX_SPAN_BYTES = 64 * 1024, 16 * 1024 * 1024
RETRY_FIRST, RETRY_MAX = 0.5, 10.0
REPEAT_LOG_EVERY = 60.0


def describe(exc: BaseException) -> str:
    """One line for the log: the database's own words, not a traceback."""
    if isinstance(exc, sqlite3.Error):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class CommitQueue:
    """Ordered, retried, time-sliced commits; one instance per daemon."""

    def __init__(self, store: StateStore, on_committed: Callable[[float], None] | None = None,
                 on_error: Callable[[], None] | None = None) -> None:
        self.store = store
        self.items: deque[Commit] = deque()
        self.backlog_rows = 0
        """Rows queued but not yet written (the daemon pauses reading above its limit)."""
        self.error: str | None = None
        """The last failure while commits are failing; None once one succeeds."""
        self.failures = 0
        self.oldest_since: float | None = None
        self.slice_rows = 2_000
        self.span_bytes_per_slice = 1024 * 1024
        self._on_committed = on_committed
        self._on_error = on_error
        self._wake = asyncio.Event()
        self._closing = False
        self._abort = False
        self._last_error_log = 0.0
        self._task: asyncio.Task[None] | None = None

    # --- producer side (event loop) --------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="state-writer")

    def put(self, commit: Commit) -> None:
        if len(self.items) >= 2 and not commit.batches:  # the tail is not in progress (the head is)
            self.items[-1].absorb(commit)
            self._wake.set()
            return
        if not self.items:
            self.oldest_since = time.monotonic()
        self.items.append(commit)
        self.backlog_rows += commit.rows
        self._wake.set()

    @property
    def span_bytes(self) -> int:
        """Bytes the sinks still need that are not in memory (read again from the files)."""
        return sum(c.span_bytes for c in self.items)

    @property
    def stuck_for(self) -> float:
        """Seconds since the queue last made progress (a slice or a checkpoint) while it held work (0 when empty)."""
        return time.monotonic() - self.oldest_since if self.items and self.oldest_since else 0.0

    async def drain(self, timeout: float) -> bool:
        """Stop accepting work, write what is queued within `timeout`; True if everything was written.

        Past the deadline the slice in flight completes and the rest is dropped: it was never
        checkpointed, so the next start reads it again (the sinks skip what they already hold).
        """
        self._closing = True
        self._wake.set()
        if self._task is None:
            return not self.items
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._abort = True
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, SLICE_SECONDS * 8)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        return not self.items

    # --- the writer task -------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._abort:
            if not self.items:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            head = self.items[0]
            try:
                await self._write(head)
            except asyncio.CancelledError:
                raise
            except _Aborted:
                return
            except Exception as exc:  # noqa: BLE001 - any failure is retried; the daemon must not die
                self._failed(exc)
                try:
                    await asyncio.wait_for(self._abort_requested(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            self.items.popleft()
            self.oldest_since = time.monotonic() if self.items else None
            self._succeeded()

    async def _abort_requested(self) -> None:
        while not self._abort:
            self._wake.clear()
            await self._wake.wait()

    async def _write(self, c: Commit) -> None:
        if self.store.sinks:
            total = c.rows
            while c.rows_done < total:
                if self._abort:
                    raise _Aborted
                started = time.monotonic()
                n = await self.store.write_slice(c, self.slice_rows)
                elapsed = max(time.monotonic() - started, 1e-3)
                c.rows_done += n
                self.backlog_rows -= n
                self.oldest_since = time.monotonic()
                rate = n / elapsed
                self.slice_rows = int(min(MAX_SLICE_ROWS, max(MIN_SLICE_ROWS, rate * SLICE_SECONDS)))
            while c.spans:
                if self._abort:
                    raise _Aborted
                started = time.monotonic()
                _rows, nbytes = await self.store.write_span(c, self.span_bytes_per_slice)
                elapsed = max(time.monotonic() - started, 1e-3)
                self.oldest_since = time.monotonic()
                rate = nbytes / elapsed
                self.span_bytes_per_slice = int(min(MAX_SPAN_BYTES, max(MIN_SPAN_BYTES, rate * SLICE_SECONDS)))
        else:
            self.backlog_rows -= c.rows - c.rows_done
            c.rows_done = c.rows
            c.spans = []
        if self._abort:
            raise _Aborted
        await self.store.write_checkpoint(c)
        c.batches = []

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        text = describe(exc)
        now = time.monotonic()
        if self.error is None or now - self._last_error_log >= REPEAT_LOG_EVERY or text != self.error:
            how = "failed" if self.error is None else f"still failing ({self.failures} attempts)"
            log.error("commit to %s %s: %s; nothing is lost: reading pauses once %d rows wait, and the "
                      "commit is retried", self.store.path, how, text, self.backlog_rows)
            if not isinstance(exc, sqlite3.Error | OSError):
                log.debug("commit failure detail", exc_info=exc)
            self._last_error_log = now
        self.error = text
        if self._on_error is not None:
            self._on_error()

    def _succeeded(self) -> None:
        if self.error is not None:
            log.warning("commits to %s resumed after %d failed attempts", self.store.path, self.failures)
        self.error = None
        self.failures = 0
        if self._on_committed is not None:
            self._on_committed(time.time())


class _Aborted(Exception):
    """The shutdown deadline passed: stop between slices."""
