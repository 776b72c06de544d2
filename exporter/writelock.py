"""Taking the state database's write lock as soon as it is free, when the other process holds it.

The daemon (checkpoints) and its correlator process (timelines, pruning) write to the same file. SQLite's
busy handler sleeps longer the longer it has waited (1, 2, 5, ... then 100 ms at a time), so a writer that
has waited through another's transaction misses a lock left free for less than 100 ms: the correlator had
to wait 100 ms after each prune batch for the daemon's checkpoint commit to get in (~7% of its time while
pruning a 5 GB store), and itself slept up to 100 ms when the daemon held the lock for a few
(bench/README.md, tenth round). A writer here asks again every POLL_S instead.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

POLL_S = 0.002
"""Seconds between two attempts at the write lock."""
BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for the lock before `database is locked` (the connections' busy_timeout)."""


def is_busy(exc: sqlite3.Error) -> bool:
    """The lock is held by another connection (SQLITE_BUSY and its extended codes)."""
    return (exc.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY


def begin_immediate(conn: sqlite3.Connection, timeout_ms: int = BUSY_TIMEOUT_MS,
                    given_up: Callable[[], bool] | None = None) -> None:
    """BEGIN IMMEDIATE, asked every POLL_S for up to `timeout_ms` or until `given_up()` (a stop at its deadline:
    the wait ends like an interrupted statement); the connection's busy_timeout is `timeout_ms` again afterwards
    (statements inside the transaction keep SQLite's own waiting)."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                if given_up is not None and given_up():
                    raise sqlite3.OperationalError("interrupted while waiting for the write lock") from exc
            time.sleep(POLL_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")


LONG_HOLD_S = 5.0
"""A write transaction that holds the lock longer than this is logged: other writers wait for it (the daemon's
checkpoint gives up after `state.CHECKPOINT_LOCK_WAIT_MS` and is retried)."""
HOLD_LOG_EVERY_S = 60.0
"""At most one such line per this many seconds; the next one says how many long holds there were meanwhile."""


class HoldWatch:
    """Times this connection's write transactions, BEGIN to COMMIT, and logs the long ones, so an operator (and the
    benchmark) sees which writer starved the other, for how long and with how much work (a slice's rows)."""

    def __init__(self, what: str, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.log = logger
        self.clock = clock
        self.longest = 0.0
        """The longest hold so far, seconds."""
        self._since = 0.0
        self._unlogged = 0
        self._next_log = 0.0

    def begun(self) -> None:
        self._since = self.clock()

    def ended(self, work: Callable[[], str]) -> float:
        """The transaction begun last has ended (committed or rolled back); returns how long it held the lock.
        `work()` says what it did (asked only for a line to log)."""
        now = self.clock()
        held = now - self._since
        self.longest = max(self.longest, held)
        if held >= LONG_HOLD_S:
            self._unlogged += 1
            if now >= self._next_log:
                more = f" ({self._unlogged - 1} more over {LONG_HOLD_S:g} s since the last such line)" \
                    if self._unlogged > 1 else ""
                self.log.warning("%s held the state database's write lock for %.1f s (%s); other writers "
                                 "(the daemon's checkpoints) waited meanwhile%s", self.what, held, work(), more)
                self._unlogged = 0
                self._next_log = now + HOLD_LOG_EVERY_S
        return held
