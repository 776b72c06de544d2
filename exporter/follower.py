"""The correlator in a process of its own (`correlator.worker: process`), following the checkpoints.

In the daemon's own process the correlator shares the interpreter lock and polars' thread pool with
the event loop that reads and counts; measured at 20k records/s appended it then stores ~18k rows/s,
against ~30k rows/s when nothing else runs. Here it runs alone and keeps up (`bench/bench_daemon.py
--worker process`: timeline lag 2-4 s over 150 s at 20k records/s). It needs nothing from the daemon but
the state database: every checkpoint the daemon commits says, per file, how far the metrics have read
(`offset`) and how far the correlator has stored (`sink_offset`, exporter/backlog.py). This process
reads each range between the two from its file again (exporter/spans.py), stores its rows and moves
the position on in the same transaction, so a kill of either process at any moment loses and repeats
nothing. One follower at a time (a lock file in `state_dir`); it exits when its parent is gone; the
daemon restarts it if it dies.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import logging
import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from exporter import gcpolicy
from exporter.fingerprint import head_matches, read_head, shares_first_record
from exporter.instancelock import way_out
from exporter.records import shown

log = logging.getLogger("watchtower.follower")

FAILURE_LOG_EVERY = 60.0
"""A write failure that goes on is logged again this often (with how many attempts failed), as the daemon's own.
A damaged store is said once (no retry mends it: `_damaged`)."""
IDLE_WAIT = 0.2
"""Seconds between two looks at the checkpoints when the correlator has caught up."""
BATCH_SECONDS = 2.0
FOLLOWER_SLICE_SECONDS, FOLLOWER_MAX_SPAN_BYTES = 1.0, 16 * 1024 * 1024
"""Bigger slices than the daemon's writer (fewer commits rewriting the same index pages): a stop here
only rolls the slice in flight back, and the positions committed say where to resume."""
LOCK_FILE = "correlator.lock"
ERROR_BYTES = 300
BLOCKED_AT_SPAWN = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
"""Signals the child starts with blocked (a mask survives exec) until its own handling is in place (`main`): its
first second goes to imports, when their default action would end it with a traceback from the middle of an import.
A terminal's ^C (SIGINT) and a `kill` of the job (SIGTERM) reach the whole process group, the daemon's reload
forwards SIGHUP. Blocked, a SIGINT is dropped when the child ignores it (the daemon decides); a SIGTERM or SIGHUP
is acted on then."""
LOCK_WAIT_SAY_AFTER = 5.0
"""Seconds a correlator process waits for its lock (a predecessor left by a killed daemon exits within IDLE_WAIT
once it sees its parent gone) before it says so (one WARNING naming the lock file and its holder)."""
LOCK_WAIT_SAY_EVERY = 60.0
"""A wait for the lock that goes on is said again this often (with how long so far)."""
FOLLOWER_CACHE_BYTES = 64 * 1024**2
"""SQLite page cache of the follower (the daemon's writer has 16 MiB): the newest generation of each key index
(correlator/store.py) and the pages the summary updates touch stay in memory."""


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def lock_holder(path: Path) -> int | None:
    """The pid holding the flock on `path` (/proc/locks: Linux), None when it cannot be known (no /proc/locks, the
    holder in another pid namespace, no lock held by now)."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            table = f.read()
    except OSError:
        return None
    here = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 08:01:56789 0 EOF"; a waiter's has "->" after "1:"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == here:
            try:
                pid = int(fields[4])
            except ValueError:
                continue
            return pid if pid > 0 else None
    return None


def process_state(pid: int) -> tuple[str, str] | None:
    """Process `pid`'s name and state letter (R, S, D, T, ...) as /proc says them; None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split("(", 1)[1].rsplit(")", 1)[0], stat.rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _held_by(pid: int | None) -> str:
    """The lock's holder as a log line names it, with what /proc says of it when that helps."""
    if pid is None:
        return "held by a process whose pid cannot be known here (no /proc/locks entry visible)"
    seen = process_state(pid)
    if seen is None:
        return f"held by pid {pid}"
    name, state = seen
    if state in ("T", "t"):
        return (f"held by pid {pid} ({name}), which is stopped (SIGSTOP, or a debugger): a correlator process of an "
                f"earlier daemon exits by itself once continued (`kill -CONT {pid}`)")
    return f"held by pid {pid} ({name})"


def _starts_as(path: str, fingerprint: bytes) -> bool:
    """Does the file at `path` start with the bytes `fingerprint` was taken of? (No fingerprint: cannot tell, yes.)"""
    if not fingerprint:
        return True
    try:
        return head_matches(fingerprint, read_head(path))
    except OSError:
        return False


def locate(key: tuple[int, int], patterns: list[str], parent: int, fingerprint: bytes = b"") -> str | None:
    """A path to the file `key` (device, inode) now: a match of its source's globs (renamed within them), else the
    descriptor the daemon `parent` holds open for it (renamed out of the globs or deleted; the tailer keeps it
    until this process has read the file: Tailer.hold_drained), by its name when that still names it. A file in that
    inode whose first bytes are not the file's (`fingerprint`) is another one: ext4 hands a freed inode to the next
    new file. Last, a glob match under another inode that starts with the file's first record: its copy."""
    matches = [path for pattern in patterns for path in sorted(glob.glob(pattern))]
    for path in matches:
        if _identity(path) == key and _starts_as(path, fingerprint):
            return path
    fd_dir = f"/proc/{parent}/fd"  # Linux; elsewhere a file renamed away cannot be read again
    try:
        names = os.listdir(fd_dir)
    except OSError:
        names = []
    for name in names:
        held = f"{fd_dir}/{name}"
        if _identity(held) != key or not _starts_as(held, fingerprint):
            continue
        try:
            target = os.readlink(held)
        except OSError:
            target = ""
        return target if target.startswith("/") and _identity(target) == key else held
    # A copy (`cp` + `mv`, a move to another disk: another inode) that starts with the file's first record: a file
    # the daemon had read to its end and retired, the correlator still behind on it, is not looked for by the
    # daemon's scans again (its checkpoint is gone for the metrics), so nothing re-keys it
    if fingerprint:
        for path in matches:
            try:
                if shares_first_record(fingerprint, read_head(path)):
                    return path
            except OSError:
                continue
    return None


class Where:
    """Where a span's file is now (`Span.live`: read_span takes its `path`): the path recorded while it names the
    file (its inode, or a copy of it there: its first bytes), else wherever `locate` finds it by its identity, as the
    tailer follows it."""

    __slots__ = ("key", "patterns", "parent", "fingerprint", "_path")

    def __init__(self, path: str, key: tuple[int, int], patterns: list[str], parent: int,
                 fingerprint: bytes = b"") -> None:
        self._path = path
        self.key = key
        self.patterns = patterns
        self.parent = parent
        self.fingerprint = fingerprint

    def follow(self, path: str, key: tuple[int, int], fingerprint: bytes) -> None:
        """The file's checkpoint has a new identity (the tailer re-keyed it): follow that one."""
        self._path, self.key, self.fingerprint = path, key, fingerprint

    @property
    def path(self) -> str:
        # By its identity first; else the recorded path stays, and read_span takes what it holds only if its first
        # bytes are the file's (a copy there: `cp` + `mv`)
        if _identity(self._path) != self.key:
            found = locate(self.key, self.patterns, self.parent, self.fingerprint)
            if found is not None:
                log.info("%s: read again as %s (renamed)", shown(self._path), shown(found))
                self._path = found
                self.key = _identity(found) or self.key  # a copy: followed by its own identity from now on
        return self._path


class Handle:
    """The daemon's side of a follower: its process, and what it reports (shared memory, no I/O)."""

    def __init__(self, config: Any, run: str | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        # Without locks: only the child writes them (a lock would not make `+= 1` atomic anyway), and a lock is a
        # POSIX semaphore that a killed daemon leaves to Python's resource tracker, which then prints a warning
        # about "leaked semaphore objects" into the journal. At worst a read meets a half-written error text.
        self.failures = ctx.Value("q", 0, lock=False)
        """Failed writes so far (the daemon adds them to watchtower_checkpoint_errors_total)."""
        self.error = ctx.Array("c", ERROR_BYTES, lock=False)
        """The current failure, empty while writes succeed (the daemon's /healthz shows it)."""
        self.bytes_lost = ctx.Value("q", 0, lock=False)
        """Bytes counted in the metrics this process could not read again (its files gone): the daemon adds them to
        watchtower_commit_backlog_lost_bytes_total, as it does its own thread's."""
        self.progress = ctx.Value("q", 0, lock=False)
        """Moves on each time the process stored something (its backlog shrank) or found nothing to store: the
        daemon's progress watchdog (correlator.stall_timeout) reads it. Not while it waits for its lock, is stopped
        or hangs."""
        self.lock_wait = ctx.Value("q", 0, lock=False)
        """While the process waits for its lock: the holder's pid, -1 if it cannot be known; 0 otherwise."""
        self.process = ctx.Process(target=main, name="watchtower-correlator", daemon=True,
                                   args=(config.model_dump(mode="json"), os.getpid(), self.failures, self.error, run,
                                         self.bytes_lost, self.progress, self.lock_wait))
        _spawn(self.process)

    @property
    def failing(self) -> str | None:
        text = self.error.value.decode("utf-8", "replace")
        return text or None


def _spawn(process: Any) -> None:
    """Start `process` with BLOCKED_AT_SPAWN blocked in it; this thread's own mask as before."""
    from multiprocessing import resource_tracker

    before = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_AT_SPAWN)
    try:
        # Else started by the first spawn: it too keeps SIGHUP blocked (a hangup of the terminal is no end of it),
        # and ignores SIGINT and SIGTERM, which it unblocks in this thread as it starts: blocked again for ours.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_AT_SPAWN)
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def start(config: Any, run: str | None = None) -> Handle:
    """Spawn the follower for this daemon's configuration and run (a fresh interpreter: nothing inherited)."""
    return Handle(config, run)


def main(config_data: dict[str, Any], parent: int, failures: Any = None, error: Any = None,
         run: str | None = None, bytes_lost: Any = None, progress: Any = None, lock_wait: Any = None) -> None:
    """Entry point of the child process."""
    from correlator.keys import KeyFileError
    from exporter import logsetup
    from exporter.config import config_from_dict

    config = config_from_dict(config_data)
    logsetup.setup(config.log_level, config.log_format, redact_addresses=config.correlator.hash_recipients)
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_a: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides; a terminal's ^C reaches it too
    follower = Follower(config, parent, stop, failures, error, run, bytes_lost, progress, lock_wait)
    signal.signal(signal.SIGHUP, lambda *_a: follower.reload_requested.append(True))  # sent by the daemon's SIGHUP
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED_AT_SPAWN)  # one sent since the spawn arrives now (or is dropped)
    try:
        follower.run()
    except LockRefused as exc:  # a state file this user cannot use: said as the daemon says it of its own
        log.critical("correlator process: %s", exc)
        raise SystemExit(1) from None
    except KeyFileError as exc:  # changed since the daemon's start: a setup error, named as check-config names it
        log.critical("correlator process: %s", exc)
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001 - one line for the operator; the daemon restarts this process
        log.critical("correlator process stopped by an internal error: %s: %s", type(exc).__name__, exc)
        log.debug("internal error", exc_info=exc)
        raise SystemExit(1) from None


class LockRefused(Exception):
    """The follower lock cannot be opened by this user (a correlator.lock left by a start as root)."""


class Follower:
    """Reads what the checkpoints say the correlator lacks, slice by slice, until told to stop."""

    def __init__(self, config: Any, parent: int, stop: list[bool], failures: Any = None, error: Any = None,
                 run: str | None = None, bytes_lost: Any = None, progress: Any = None, lock_wait: Any = None) -> None:
        self.bytes_lost = bytes_lost
        self.progress = progress
        """Shared with the daemon (Handle.progress): moved on by `_advanced`."""
        self.lock_wait = lock_wait
        """Shared with the daemon (Handle.lock_wait): the lock's holder while `_lock` waits."""
        self._left = 0
        """Rows and bytes the backlog held at the last look (`_advanced`)."""
        self.daemon_run = run
        """The daemon's run token (exporter/reconciled.py): a span whose file is not found waits for its mark."""
        self.failures = failures
        self.error = error
        self.config = config
        self.parent = parent
        self.stop = stop
        self.db_path = Path(config.state_dir) / "watchtower.db"
        self.allowed = {s.label: frozenset(s.records) if s.records else None for s in config.sources}
        self.patterns = {s.label: list(s.paths) + list(s.moved_to) for s in config.sources}
        self.reload_requested: list[bool] = []
        """Set by SIGHUP (the daemon forwards its own): load the classification tables again between slices."""

    def _report(self, text: str | None) -> bool:
        """Share the current failure with the daemon; True when it is new (worth a log line)."""
        if self.error is None:
            return text is not None
        old = self.error.value
        new = (text or "").encode("utf-8", "replace")[: ERROR_BYTES - 1]
        if text is not None:
            self.failures.value += 1
        if new != old:
            self.error.value = new
            return text is not None
        return False

    def _damaged(self, exc: BaseException) -> bool:
        """SQLite says the store's file is damaged (correlator/store.py `as_damage`): the API's 503 says the same."""
        from correlator.store import as_damage

        return isinstance(exc, sqlite3.Error) and as_damage(self.db_path, exc) is not None

    def _reload(self, sink: Any) -> None:
        """SIGHUP: the tables the daemon has just loaded, here too; a broken one keeps the current tables
        (the daemon's log says why, as it refuses the same file)."""
        from exporter.classify import load_classifiers, table_problem

        self.reload_requested.clear()
        try:
            isp, replies = load_classifiers(self.config)
        except Exception as exc:  # noqa: BLE001 - a bad table must not stop the correlator
            log.warning("correlator process: classification tables not reloaded (%s); keeping the current ones",
                        table_problem(exc))
            return
        if sink is not None:
            sink.reload_classifiers(isp.classify_rcpt, replies.classify)
        log.info("correlator process: classification tables reloaded")

    def _located(self, spans: list[Any]) -> list[Any]:
        """Each span's file followed by its identity, not its recorded path (a rename since is no loss)."""
        for span in spans:
            if span.live is None:
                span.live = Where(span.path, (span.dev, span.ino), self.patterns.get(span.source, []), self.parent,
                                  span.fingerprint)
        return spans

    def _running(self) -> bool:
        return not self.stop and os.getppid() == self.parent

    def _advanced(self, backlog: Any) -> None:
        """Tell the daemon's watchdog this process goes on when `backlog` shrank since the last look (rows stored,
        positions moved) or is empty (nothing to store)."""
        left = backlog.rows + backlog.span_bytes if backlog else 0
        if (left == 0 or left < self._left) and self.progress is not None:
            self.progress.value += 1
        self._left = left

    def _working(self) -> None:
        """Tell the watchdog the loop goes round though the backlog did not shrink: a pruning pass done, a wait for
        the daemon's reconciled commit (neither is a stall; with a small correlator.stall_timeout they tripped it)."""
        if self.progress is not None:
            self.progress.value += 1

    def _going(self, backlog: Any) -> bool:
        """`write_slices`' go_on: asked before each slice, so a backlog worked through says it advances slice by
        slice."""
        self._advanced(backlog)
        return self._running()

    def _lock(self) -> Any:
        """The follower lock: a follower left by a killed daemon exits within IDLE_WAIT; wait for it. A wait past
        LOCK_WAIT_SAY_AFTER is said (the holder's pid, from /proc/locks), then every LOCK_WAIT_SAY_EVERY; the holder
        is shared with the daemon meanwhile (its stall problem names it)."""
        from exporter.state import private_file

        path = self.db_path.with_name(LOCK_FILE)
        try:
            private_file(path)  # 0600 like the database next to it (and an older 0644 one tightened)
            f = open(path, "a")  # noqa: SIM115 - held for the process lifetime
        except PermissionError as exc:  # e.g. left by a start as root: the way out, as for the other state files
            raise LockRefused(f"{path}: cannot open the correlator's lock file: {(exc.strerror or str(exc)).lower()}: "
                              f"{way_out(path)}") from None
        started = time.monotonic()
        say_at = started + LOCK_WAIT_SAY_AFTER
        said = False
        try:
            while self._running():
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if said:
                        log.info("correlator process: took its lock %s after waiting %.0fs", path,
                                 time.monotonic() - started)
                    return f
                except BlockingIOError:
                    pass
                now = time.monotonic()
                if now >= say_at or (self.lock_wait is not None and self.lock_wait.value == 0):
                    holder = lock_holder(path)
                    if self.lock_wait is not None:
                        self.lock_wait.value = holder if holder is not None else -1
                if now >= say_at:
                    log.warning("correlator process: waiting for its lock %s for %.0fs, %s; no timeline is stored "
                                "until it is free (the counters go on; nothing is lost: it resumes from its "
                                "positions)", path, now - started, _held_by(holder))
                    said = True
                    say_at = now + LOCK_WAIT_SAY_EVERY
                time.sleep(IDLE_WAIT)
            f.close()
            return None
        finally:
            if self.lock_wait is not None:
                self.lock_wait.value = 0

    def run(self) -> None:
        from correlator.sink import CorrelatorSink
        from correlator.store import PRUNE_PAUSE_S, raise_cache
        from exporter.backlog import RowBacklog
        from exporter.classify import load_classifiers
        from exporter.daemon import _correlator
        from exporter.maintenance import MaintainSchedule
        from exporter.state import StateStore
        from exporter.writer import SliceSizes, write_slices

        lock = self._lock()
        if lock is None:
            return
        isp, replies = load_classifiers(self.config)
        sink = _correlator(self.config, self.db_path, isp, replies)
        if isinstance(sink, CorrelatorSink):  # the daemon commits checkpoints to the same file meanwhile
            sink.prune_pause = PRUNE_PAUSE_S
            sink.says_store_warnings = False  # the daemon said them, setting the same store up before this process
        store = StateStore(self.db_path, [sink] if sink is not None else [], reports_readers=False,  # the daemon does
                           run=self.daemon_run)
        store._open(check=False)  # noqa: SLF001 - this process has no event loop: the writer calls directly
        if store._conn is not None:  # noqa: SLF001 - its own process: a page cache the daemon's RSS need not carry
            raise_cache(store._conn, FOLLOWER_CACHE_BYTES)  # noqa: SLF001
        log.info("correlator process following %s", self.db_path)
        gcpolicy.settle()  # this process is the correlator's alone: set up, its hot loop next
        backlog = RowBacklog()
        sizes = SliceSizes(seconds=FOLLOWER_SLICE_SECONDS, max_span_bytes=FOLLOWER_MAX_SPAN_BYTES)
        maintain = MaintainSchedule()
        delay = 0.5
        failed = 0
        logged_at = -FAILURE_LOG_EVERY
        damage_said = False
        try:
            while self._running():
                if self.reload_requested:
                    self._reload(sink)
                try:
                    if not backlog:
                        backlog.add([], self._located(store.behind_spans(self.allowed)))
                    self._advanced(backlog)  # nothing to store is no stall
                    if not backlog:
                        time.sleep(IDLE_WAIT)
                    write_slices(store, backlog, [], sizes, BATCH_SECONDS, functools.partial(self._going, backlog))
                    self._advanced(backlog)
                    if self.bytes_lost is not None and store.bytes_lost != self.bytes_lost.value:
                        self.bytes_lost.value = store.bytes_lost
                    if store.span_waits:  # a span's file not found yet: the daemon's reconciled commit is to come
                        store.span_waits = False
                        self._working()  # a wait for the daemon (up to RECONCILE_WAIT), not a stall of its own
                        time.sleep(IDLE_WAIT)
                    if maintain.due():
                        maintain.ran(store._maintain())  # noqa: SLF001
                        self._working()  # a pruning pass done: the loop goes round
                    delay = 0.5
                    self._report(None)
                    if failed:
                        log.warning("correlator process: writes to %s resumed after %d failed attempts", self.db_path,
                                    failed)
                        failed = 0
                        damage_said = False
                except (sqlite3.Error, OSError) as exc:  # disk full, locked too long: retried, never fatal
                    text = f"{type(exc).__name__}: {exc}"
                    failed += 1
                    now = time.monotonic()
                    self._report(text)
                    if self._damaged(exc):  # retried too (the file may be restored), but said once: no retry mends it
                        if not damage_said:
                            log.error("correlator process: write to %s failed: %s; the database file is damaged "
                                      "(changed outside the daemon, or a failing disk): what it held may be lost and "
                                      "retries cannot mend it; stop the daemon and see "
                                      "docs/runbooks.md#correlator-store-damaged (said once: its writes are retried "
                                      "meanwhile)", self.db_path, text)
                            damage_said = True
                            logged_at = now  # another error (locked, disk full) meeting it is said a minute on
                    elif failed == 1:
                        log.error("correlator process: write to %s failed: %s; retried until it succeeds",
                                  self.db_path, text)
                        logged_at = now
                    elif now - logged_at >= FAILURE_LOG_EVERY:  # alternating errors too: once a minute
                        log.error("correlator process: write to %s failed again (%d attempts so far): %s",
                                  self.db_path, failed, text)
                        logged_at = now
                    backlog = RowBacklog()  # positions in the database say where to resume
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            store._close()  # noqa: SLF001
            lock.close()
