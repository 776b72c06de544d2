"""Whether the daemon has told the state database where each file of its last stop is now.

At a restart the correlator (its own process, or the daemon's writer thread) resumes from the sink positions of the
last stop: spans of files named by path and (device, inode). A file copied or moved while the daemon was down is
found under its new identity by the daemon's first scans (exporter.tailer: `_new_identity`, `_take_copy`), which
re-key its checkpoint. A span read before that commit names a file that is nowhere, and its records were given up
for the timelines although they were still there. So the daemon commits as soon as its tailer has decided every
checkpoint of the last stop (`Tailer.reconciled`; not at the next checkpoint tick, which may come after the wait
below), marked with a token of its run (wt_meta `reconciled`), and a
span whose file is not found waits for that mark, at most `RECONCILE_WAIT` seconds from the reader's start (a file
that cannot be decided, unreadable for good, must not hold the timelines back for ever).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time

log = logging.getLogger("watchtower.state")

RECONCILE_WAIT = 60.0
"""Seconds from the reader's start a span whose file is not found may wait for the daemon's reconciled commit."""
META_KEY = "reconciled"


def new_run_token() -> str:
    """A token naming one run of the daemon (a restarted correlator process keeps its daemon's)."""
    return secrets.token_hex(8)


def mark_reconciled(conn: sqlite3.Connection, run: str) -> None:
    """In the daemon's checkpoint transaction: every checkpoint of the last stop is decided, and written."""
    conn.execute("INSERT OR REPLACE INTO wt_meta VALUES (?, ?)", (META_KEY, run))


class Reconciliation:
    """A reader's wait for its daemon's reconciled commit (`pending` asks the database, until it is there)."""

    __slots__ = ("run", "_deadline", "_done", "_said", "_wait")

    def __init__(self, run: str, wait: float = RECONCILE_WAIT) -> None:
        self.run = run
        self._wait = wait
        self._deadline = time.monotonic() + wait
        self._done = False
        self._said = False

    def pending(self, conn: sqlite3.Connection, what: str) -> bool:
        """Must a span whose file is not found (`what` says why) wait: has the daemon's run not marked its reconciled
        commit yet? The first wait is logged (a wait that lasts points at a file the daemon cannot decide)."""
        if self._done:
            return False
        row = conn.execute("SELECT value FROM wt_meta WHERE key = ?", (META_KEY,)).fetchone()
        if row is not None and row[0] == self.run:
            self._done = True
            return False
        if time.monotonic() < self._deadline:
            if not self._said:
                log.info("%s: waiting (%.0f s at most) for the daemon's first scans to find where the files of its "
                         "last stop are now, before the correlator gives up a range of it", what, self._wait)
                self._said = True
            return True
        log.warning("the daemon has not found every file of its last stop in %.0f s (one unreadable?): spans of "
                    "files not found are given up from now on", self._wait)
        self._done = True
        return False
