"""Copies the state database's WAL into the database on a thread of its own.

In WAL mode SQLite appends each commit to the `-wal` file, and by default the commit that takes the WAL
past 1000 pages also copies every page in it into the database and fsyncs both before it returns
(an automatic checkpoint). On the correlator's write path that copy was ~1 s of 8 (bench/README.md):
time in which the writer stored nothing. Here a thread with its own connection runs a PASSIVE
checkpoint after each commit instead, while the writer goes on with its next slice (SQLite lets one
checkpoint and one writer run at once; both release the interpreter lock while they work).

The writers keep an automatic checkpoint, at a higher threshold (WAL_CAP_PAGES): should this thread
fall behind or fail (a full disk), the WAL stays bounded because a commit copies it again, as before.
A throwaway store (oneshot's, deleted at exit) runs no thread: there the copy only delayed the exit.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger("watchtower.state")

THREAD_NAME = "watchtower-wal"
WAL_CAP_PAGES = 4096
"""Automatic checkpoint threshold of the writers (64 MiB at 16 KiB pages): the WAL's bound when the thread
cannot keep up. Below it the thread does every copy."""
IDLE_SECONDS = 1.0
"""A checkpoint also runs this often without a commit poking it (another process may have written)."""
STUCK_SECONDS = 30.0
"""A WAL past WAL_CAP_PAGES that no checkpoint could copy whole for this long is held by a reader (a `sqlite3`
shell or a backup left inside a transaction keeps an old snapshot): reported, as it grows until the reader ends."""


def wal_size_limit(page_bytes: int) -> int:
    """Bytes the WAL file is cut back to when it starts over (`journal_size_limit`): a burst, or a reader that held
    it, leaves no file of hundreds of MiB behind."""
    return WAL_CAP_PAGES * page_bytes


class WalCheckpointer:
    """One thread per writing process; `poke()` after each commit, `stop()` before closing the writer."""

    def __init__(self, path: Path, reports_readers: bool = True) -> None:
        self.path = path
        self.reports_readers = reports_readers
        self._wake = threading.Event()
        self._stopping = False
        self._conn: sqlite3.Connection | None = None
        self._failing = False
        self._stuck_since: float | None = None
        self.problem: str | None = None
        """Why the WAL cannot be copied whole (a reader holds an old snapshot), while that lasts; for /healthz."""
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_NAME}-{path.name}", daemon=True)

    @staticmethod
    def configure_writer(conn: sqlite3.Connection) -> None:
        """Leave the copying to the thread up to WAL_CAP_PAGES (set on each writing connection), and cut the file
        back to `wal_size_limit()` when it starts over."""
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CAP_PAGES}")
        page_bytes = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA journal_size_limit={wal_size_limit(page_bytes)}")

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """A commit happened: copy what it added (any thread; never waits)."""
        self._wake.set()

    def stop(self) -> None:
        """Interrupt the copy under way, if any, and end the thread: a stop never waits for a copy of up to
        WAL_CAP_PAGES and its fsync. The writer's close copies what is left."""
        self._stopping = True
        self._wake.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.interrupt()
            except sqlite3.ProgrammingError:  # the thread closed it meanwhile
                pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._report(exc)
            return
        try:  # from here on the connection is closed however the thread ends (stop() may interrupt any statement)
            try:
                self._conn.execute("PRAGMA synchronous=NORMAL")  # as the writers: fsync at each copy, not each commit
            except sqlite3.Error as exc:
                if not self._stopping:
                    self._report(exc)
                return
            while not self._stopping:
                self._wake.wait(IDLE_SECONDS)
                self._wake.clear()
                if self._stopping:
                    break
                try:
                    self._checkpoint()
                except sqlite3.Error as exc:
                    if self._stopping:  # interrupted by stop()
                        break
                    self._report(exc)
                except Exception as exc:  # noqa: BLE001 - a bug or MemoryError: one line, never a thread traceback
                    log.error("%s: the WAL copy thread stopped (%s: %s); commits copy the WAL themselves once it "
                              "holds %d pages", self.path, type(exc).__name__, exc, WAL_CAP_PAGES)
                    log.debug("traceback", exc_info=exc)
                    break
                else:
                    if self._failing and self.problem is None:
                        self._failing = False
                        log.info("%s: the WAL is copied into the database again", self.path)
        finally:
            self._conn.close()

    def _checkpoint(self) -> None:
        """PASSIVE: copy what no reader still needs, without waiting for any lock (a busy one is tried next time)."""
        assert self._conn is not None
        row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        frames, copied = (row[1], row[2]) if row else (0, 0)
        self._note_progress(frames, copied)

    def _note_progress(self, frames: int, copied: int) -> None:
        """A WAL past WAL_CAP_PAGES left partly uncopied for STUCK_SECONDS: one WARNING (and `problem`); an INFO when
        a checkpoint copies it whole again. Our own short reads only delay a copy by a moment."""
        now = time.monotonic()
        if not self.reports_readers:
            return
        if frames > WAL_CAP_PAGES and copied < frames:
            if self._stuck_since is None:
                self._stuck_since = now
            elif now - self._stuck_since >= STUCK_SECONDS and self.problem is None:
                try:
                    size = f"{os.stat(f'{self.path}-wal').st_size / 2**20:.0f} MiB"
                except OSError:
                    size = f"{frames} pages"
                held = now - self._stuck_since
                self.problem = (f"the WAL holds {size} that no checkpoint could copy for {held:.0f}s: a reader keeps "
                                "an old snapshot open (a sqlite3 shell or a backup inside a transaction?); it grows "
                                "until that reader ends")
                log.warning("%s: %s", self.path, self.problem)
            return
        self._stuck_since = None
        if self.problem is not None:
            self.problem = None
            self._failing = False  # a whole copy: a failure reported before is over too (one INFO for both)
            log.info("%s: the WAL is copied into the database again", self.path)

    def _report(self, exc: sqlite3.Error) -> None:
        """One WARNING when copies start failing (the recovery is one INFO). Said by the process that reports
        readers (the daemon) only: both processes copy the one WAL, and both said each failure."""
        if not self.reports_readers:
            log.debug("%s: WAL copy failed: %s", self.path, exc)
            return
        if not self._failing:
            self._failing = True
            log.warning("%s: cannot copy the WAL into the database (%s); commits go on, and copy it themselves "
                        "once it holds %d pages", self.path, exc, WAL_CAP_PAGES)
        else:
            log.debug("%s: WAL copy failed again: %s", self.path, exc)
