"""The state database: checkpoints, counter values and correlator rows.

One SQLite file (WAL) in `state_dir`, private to the daemon's user (dir 0700, files 0600), written by
one dedicated thread. Two kinds of transaction:

* checkpoints: the file offsets and the current values of the metric series that changed, in one
  transaction, written as soon as they are taken, with each file's *sink position*: the first byte
  whose rows the sinks (the correlator) may not hold yet, NULL when they hold everything before the
  offset (exporter/backlog.py).
* row slices: the sinks' rows for part of the backlog, each slice small enough to commit in a
  fraction of a second, with the new sink positions of the files it touched. Rows the daemon did not
  keep in memory (a slow sink, see exporter/spans.py) are read again from their files, a bounded
  piece per slice. Sinks are idempotent per (file, line): a slice written again is a no-op.

After a crash (kill -9 included) the daemon reloads offsets and counters from the same instant, so
`/metrics` totals continue exactly: nothing read before the last checkpoint is lost, nothing after
it is counted twice; and the sinks resume at their own positions (a span from each position to its
checkpoint is read again), skipping the lines they already hold.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.backlog import Position, RowBacklog
from exporter.filestream import Checkpoint
from exporter.linecount import next_line_text
from exporter.reconciled import Reconciliation, mark_reconciled
from exporter.records import RecordBatch
from exporter.sinks import RecordSink
from exporter.spans import Span, SpanGone, deliveries_first, read_span, span_at
from exporter.walcheckpoint import WalCheckpointer
from exporter.writelock import BUSY_TIMEOUT_MS, HoldWatch, begin_immediate

log = logging.getLogger("watchtower.state")
CHECKPOINT_LOCK_WAIT_MS = 60_000
"""How long a checkpoint waits for the write lock (a rows' write: BUSY_TIMEOUT_MS). The correlator's own process
holds it for a slice at a time, and a slice of reports about old deliveries can take seconds; the checkpoint waits on
the state writer thread, never on the event loop, so waiting is cheap and a failure then means the lock is stuck."""

SEP = "\x1f"
SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS wt_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wt_checkpoints (
    file_id TEXT PRIMARY KEY, source TEXT NOT NULL, path TEXT NOT NULL, dev INTEGER NOT NULL,
    ino INTEGER NOT NULL, fingerprint BLOB NOT NULL, offset INTEGER NOT NULL, line_no INTEGER NOT NULL,
    header TEXT NOT NULL, gone_since REAL, updated REAL NOT NULL,
    sink_offset INTEGER, sink_line INTEGER, sink_header TEXT, records TEXT
);
CREATE TABLE IF NOT EXISTS wt_series (
    metric TEXT NOT NULL, labels TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (metric, labels)
) WITHOUT ROWID;
"""
SINK_COLUMNS = (("sink_offset", "INTEGER"), ("sink_line", "INTEGER"), ("sink_header", "TEXT"))
"""Where the sinks stand in each file (NULL: they hold every row before `offset`); added to older databases."""
ADDED_COLUMNS = (*SINK_COLUMNS, ("records", "TEXT"))
"""Columns of wt_checkpoints later than its first version, added to older databases (`records`: Checkpoint.records,
NULL in their rows)."""
PAGE_SIZE = 16384
"""Page size of a new state database: the correlator's random-key index inserts touch fewer, fuller pages
(its write path ~7% faster than with SQLite's 4 KiB default, bench/bench_corr_write.py)."""
FULL_CHECK_BYTES = 512 * 1024**2
"""Up to this size `PRAGMA quick_check` covers the whole database at start (about a second per 512 MiB)."""
WAY_OUT = ("stop the daemon, move the file aside (keep it for inspection) and start again: counters restart "
           "at 0 and existing files are read according to tail.start_position")


NEARLY_FULL_BYTES = 1024**2
"""Free space below which a file system counts as full when SQLite fails: its -shm alone takes 32 KiB, a first
create some 200 KiB, and with a few blocks left it says `disk I/O error`, not `database or disk is full`."""


CORRELATOR_OFF_SINCE = "correlator_off_since"
"""wt_meta key: when the daemon first started with the correlator off (kept until a start with it on)."""


def _full(directory: Path) -> bool:
    """Whether the file system of `directory` has (nearly) no block, or no inode, left for this user. A file system
    that counts no blocks or inodes at all (btrfs and many FUSE mounts report 0 inodes) is not full for it."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    block = getattr(st, "f_frsize", 0)
    return (st.f_blocks > 0 and (st.f_bavail == 0 or 0 < block and st.f_bavail * block < NEARLY_FULL_BYTES)) or (
        st.f_files > 0 and st.f_favail == 0)


def _cause(exc: sqlite3.OperationalError, path: Path) -> str:
    """What to do about an SQLite error that says nothing of the file's content. A full disk can read `disk I/O
    error` (SQLite cannot create the -shm file): the file system is looked at, whatever the words."""
    text = str(exc).lower()
    kept = "the database is kept and resumed from" if path.exists() else "nothing was created: the next start does"
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        unwritable = _unwritable_own_file(path)  # the evidence at hand, before a nearly full disk is blamed
        if unwritable is not None:
            return unwritable
    if _full(path.parent):
        return f"the file system of {path.parent} is full: free space there; {kept}"
    if "full" in text:
        return f"free space on the file system of {path.parent}; {kept}"
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        unwritable = _unwritable_own_file(path)
        if unwritable is not None:
            return unwritable
        return (f"check that the user running watchtower owns {path} and its -wal/-shm files and may write in "
                f"{path.parent} (chown); the database is kept and resumed from")
    return "see the message; if the file itself is damaged, " + WAY_OUT


def _unwritable_own_file(path: Path) -> str | None:
    """The way out when the database or its -wal/-shm is this user's own file without its write bit (mode 0400): a
    chmod, not the chown the other causes of a read-only database need."""
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = candidate.stat()
        except OSError:
            continue
        if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IWUSR:
            return (f"{candidate} is not writable (mode {stat.S_IMODE(st.st_mode):04o}): chmod u+w {candidate}; "
                    "the database is kept and resumed from")
    return None


class StateError(Exception):
    """The state database cannot be used as it is; the message names the file and the way out."""


class StateRefused(StateError):
    """A state database (or directory) no restart can mend: damaged, not SQLite, emptied, another program's or a
    newer schema. `run` exits 2 for it, which the shipped systemd unit does not restart (RestartPreventExitStatus):
    with exit 1 it was restarted every 5 s for ever, the same line each time."""



def _times_by_source(text: str | None) -> dict[str, float]:
    """wt_meta `moved_since`: {source: time}; anything else (none yet, another build's) is no time at all."""
    try:
        value = json.loads(text) if text is not None else {}
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: float(v) for k, v in value.items() if isinstance(k, str) and isinstance(v, int | float)}


def _pairs(text: str | None) -> list[tuple[str, str]]:
    """wt_meta `start_pending`: [[source, directory], ...]; anything else is none."""
    try:
        value = json.loads(text) if text is not None else []
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [(a, b) for item in value if isinstance(item, list) and len(item) == 2
            for a, b in [item] if isinstance(a, str) and isinstance(b, str)]


def path_to_db(path: str) -> str | bytes:
    """A file's path as SQLite can store it without loss: text when it is UTF-8, else its filesystem bytes (a
    BLOB; a name that is not UTF-8 has surrogate escapes no UTF-8 text can carry, and failed every checkpoint)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def path_from_db(value: str | bytes) -> str:
    """The path `path_to_db` stored (the same str: it opens the same file)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def series_json(value: Any, _dumps: Callable[[Any], str] = json.dumps) -> str:
    """A series value (a number, or a histogram's list of numbers) as the JSON `json.dumps` writes, built from
    `repr` (what json writes for a finite number) for the thousands of series a checkpoint carries at high rates:
    ~0.3 us per counter instead of ~2 us, 30-40% less per histogram. NaN and infinities go through json."""
    text = "[" + ", ".join(map(repr, value)) + "]" if value.__class__ is list else repr(value)
    return _dumps(value) if "n" in text else text

@dataclass(slots=True)
class Commit:
    """One checkpoint: offsets + series values, and the rows read since the previous one (in memory, then
    as spans of files to read again)."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    series: list[tuple[str, tuple[str, ...], Any]] = field(default_factory=list)
    batches: list[RecordBatch] = field(default_factory=list)
    forget_before: float = 0.0
    spans: list[Span] = field(default_factory=list)
    moved_since: dict[str, float] | None = None
    """Per source, where the next start takes up the looks at `moved_to` (exporter.movedto `MovedToWatch.since`)."""
    reconciled: str | None = None
    """The daemon's run token once its tailer has decided every checkpoint of the last stop (exporter/reconciled.py):
    written with the checkpoints it is true of."""
    start_pending: list[tuple[str, str]] | None = None
    """(source, directory) pairs whose files start at their ends once listed (exporter.tailer `start_pending`)."""
    started_at_end: set[str] = field(default_factory=set)
    """Ids of new files followed from their ends after a first start: with `sinks_elsewhere`, the sink process
    starts there too (not at byte 0, as for any other new file)."""

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.batches)

    def absorb(self, later: Commit) -> None:
        """Take a later checkpoint (offsets and counter values only) into this one, not yet written:
        its values supersede ours, so writing the merged one stores exactly what writing both would."""
        assert not later.batches and not later.spans
        cps = {cp.file_id: cp for cp in self.checkpoints}
        cps.update((cp.file_id, cp) for cp in later.checkpoints)
        self.checkpoints = list(cps.values())
        series = {(m, k): v for m, k, v in self.series}
        series.update(((m, k), v) for m, k, v in later.series)
        self.series = [(m, k, v) for (m, k), v in series.items()]
        self.forget_before = max(self.forget_before, later.forget_before)
        self.reconciled = later.reconciled or self.reconciled
        self.moved_since = later.moved_since if later.moved_since is not None else self.moved_since
        self.start_pending = later.start_pending if later.start_pending is not None else self.start_pending
        self.started_at_end |= later.started_at_end


@dataclass(slots=True)
class Loaded:
    first_run: bool
    checkpoints: list[Checkpoint]
    series: list[tuple[str, tuple[str, ...], Any]]
    sink_positions: dict[str, Position] = field(default_factory=dict)
    """Files whose rows the sinks hold only up to a byte before the checkpoint: (offset, line, header)."""
    last_commit: float | None = None
    """When the checkpoints were last written (the newest `updated`)."""
    moved_since: dict[str, float] = field(default_factory=dict)
    """Per source, files in its `moved_to` changed after this may be new to the next look there (exporter/movedto.py):
    the start of the last scan that looked at them, as the last commit saved it (a source missing: `last_commit`)."""
    correlator_off_since: float | None = None
    """The correlator is on now and was off from this time (wt_meta): what was read meanwhile has no timelines."""
    start_pending: list[tuple[str, str]] = field(default_factory=list)
    """(source, directory) pairs the first start at `end` could not list (wt_meta `start_pending`)."""
    counters_start: float = 0.0
    """When the database, and the counters it keeps across restarts, were created (wt_meta `created`; 0 when that
    cannot be told): another value after a restart says the counters began again from zero (the database moved
    aside), which the rules read (watchtower_counters_start_timestamp_seconds)."""

    def moved_since_for(self, labels: list[str]) -> dict[str, float] | None:
        """`moved_since` for the sources configured now (None on a first run: nothing to take up)."""
        if self.first_run:
            return None
        # a source without a time of its own (renamed, or a database of an older version): the oldest saved, else
        # the last commit
        fallback = min(self.moved_since.values(), default=self.last_commit if self.last_commit is not None
                       else time.time())
        return {label: self.moved_since.get(label, fallback) for label in labels}


def dangling_link(path: Path) -> str | None:
    """`path` is a symbolic link to nothing (a volume not mounted): said in one line, as mkdir would only say
    `File exists`."""
    if path.is_symlink() and not path.exists():
        return f"{path} is a symbolic link to {os.readlink(path)}, which does not exist (a volume not mounted?)"
    return None


OWN_PREFIXES = ("watchtower", "correlator")
"""Every file the daemon keeps in state_dir starts so (a leading dot aside): the database, its -wal/-shm, their
`.orphaned` copies, the lock files, the correlator's HMAC key."""


def foreign_entries(path: Path) -> list[str]:
    """Entries of a state directory that are not the daemon's (a volume's lost+found aside), sorted."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n for n in names if not n.lstrip(".").startswith(OWN_PREFIXES) and n != "lost+found")


def shared_dir_problem(path: Path, mode: int) -> str | None:
    """`<path> is open to ... not changed. ...` when a state directory open to others (`mode`) holds files that are
    not watchtower's: not ours to make 0700 (check-config says it too, as a config problem)."""
    foreign = foreign_entries(path)
    if not mode & 0o077 or not foreign:
        return None
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return (f"{path} is open to other users (mode {mode:04o}) and holds files that are not watchtower's: {shown}; "
            "not changed. Give state_dir a directory of its own (it holds recipient data: the daemon keeps it 0700)")


def private_dir(path: Path) -> None:
    """Create the state directory 0700; tighten an existing one of ours that is open to others.

    Called before anything else writes there (the correlator's HMAC key included). One open to others that holds
    other files is not ours to change: `state_dir: /var/lib` (the `/watchtower` left off) run as root made the
    shared directory 0700 and cut every other service off from it. Refused, named.
    """
    dangling = dangling_link(path)
    if dangling is not None:
        raise StateError(f"state_dir: {dangling}")  # (a disk not mounted yet: a restart may mend it)
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir honours the umask
        return
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        shared = shared_dir_problem(path, mode)
        if shared is not None:
            raise StateRefused(f"state_dir {shared}")
        if st.st_uid == os.geteuid():
            os.chmod(path, 0o700)
            log.warning("state_dir %s was accessible to other users (mode %04o); set to 0700: it holds "
                        "recipient data", path, mode)
        else:
            log.warning("state_dir %s is accessible to other users (mode %04o) and not ours to change; it "
                        "holds recipient data: chmod 700 it", path, mode)


def private_file(path: Path) -> bool:
    """Create a state file 0600 if absent, tighten an existing one (SQLite gives -wal/-shm the database's mode);
    True if created."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # no chmod of a directory in its place: say what it is
            raise StateRefused(f"{path} is not a regular file; move it aside") from None
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("%s was readable by other users (mode %04o); set to 0600", path, mode)
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


def _rows_in(batches: list[RecordBatch]) -> int:
    return sum(len(b) for b in batches)


def wal_files(db: Path) -> tuple[Path, Path]:
    """A WAL database's write-ahead log and its shared-memory index, beside it."""
    return Path(f"{db}-wal"), Path(f"{db}-shm")


def peek(db: Path) -> sqlite3.Connection | None:
    """A read-only connection that leaves no file behind, or None when the file alone would not say what the
    database holds. A read-only open of a WAL database without its -wal and -shm creates them, owned by whoever
    opens it: `sudo watchtower check-config` left root's files that stopped the daemon's user. Without a -wal (or an
    empty one) the file is all there is (immutable: nothing created or locked); with a -wal and no -shm, or a hot
    rollback journal, only a writer's open sees the database as it is (the writer's own checks judge it)."""
    wal, shm = wal_files(db)
    try:
        wal_bytes = wal.stat().st_size
    except FileNotFoundError:
        wal_bytes = 0
    if Path(f"{db}-journal").exists() or (wal_bytes and not shm.exists()):
        return None
    through_wal = bool(wal_bytes)
    uri = f"file:{urllib.parse.quote(os.fsencode(db))}?mode=ro{'' if through_wal else '&immutable=1'}"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def _tables_and_meta(conn: sqlite3.Connection) -> tuple[set[str], dict[str, str]]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    meta: dict[str, str] = {}
    if "wt_meta" in tables:
        meta = dict(conn.execute("SELECT key, value FROM wt_meta").fetchall())
    return tables, meta


def _created(stored: str | None) -> float:
    """wt_meta `created` as a time; 0 (long before any report) for none or another build's text."""
    try:
        value = float(stored or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def marker_refusal(db: Path, tables: set[str], meta: dict[str, str]) -> str | None:
    """Why a state database is not this build's to open by its content (another program's, content lost, a newer
    schema): `run` refuses it (exit 2) and check-config says so with the same words."""
    if "schema_version" not in meta and "initialized" not in meta:
        what = f"tables ({', '.join(sorted(tables)[:4])})" if tables else "no tables"
        return (f"{db}: has {what} but no watchtower marker: not this daemon's state, or its content was lost (a "
                f"deleted -wal file?); {WAY_OUT}")
    stored = meta.get("schema_version", SCHEMA_VERSION)
    if not stored.isdigit() or int(stored) > int(SCHEMA_VERSION):  # written by a newer version: not ours to change
        return f"{db}: state schema {stored[:40]!r} is not this build's ({SCHEMA_VERSION}): run the version that " \
               f"wrote it, or {WAY_OUT}"
    return None


def content_refusal(db: Path) -> str | None:
    """`marker_refusal` of an existing database file, read without changing anything; None when it cannot be read
    here (damage is for the quick_check to name)."""
    try:
        conn = peek(db)
        if conn is None:
            return None
        try:
            tables, meta = _tables_and_meta(conn)
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return None
    return marker_refusal(db, tables, meta)


def file_replaced(path: Path, identity: tuple[int, int]) -> str | None:
    """How the file at `path` stopped being the one opened as `identity` (device, inode): deleted (`rm -rf
    state/`), or deleted and another created in its place. None while it is, or when that cannot be told (a
    permission or I/O error: looked at again later)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "deleted while the daemon ran"
    except OSError:
        return None
    if (st.st_dev, st.st_ino) != identity:
        return "deleted while the daemon ran (another file is in its place now)"
    return None


class StateStore:
    """Owns the write connection; every call runs on its single writer thread."""

    def __init__(self, path: Path, sinks: list[RecordSink] | None = None, throwaway: bool = False,
                 sinks_elsewhere: bool = False, reports_readers: bool = True, run: str | None = None) -> None:
        self.path = path
        self.reconciliation = Reconciliation(run) if run is not None else None
        """The wait of a span whose file is not found for the daemon's run `run` to have re-keyed it (None: not
        waited for: oneshot, tools)."""
        self.span_waits = False
        """The last slice found its span's file nowhere and waits for the daemon's reconciled commit: the caller
        pauses before the next one (set by `_write_backlog`, cleared by the caller)."""
        self.reports_readers = reports_readers
        """Warn of a reader holding an old snapshot (the WAL thread's `problem`); the correlator process leaves it
        to the daemon, whose thread copies the same WAL: one line for one reader."""
        self.sinks = sinks or []
        self.sinks_elsewhere = sinks_elsewhere
        """The sinks write in another process (exporter/follower.py), which owns the sink positions: checkpoints
        leave them alone, a file new to the database starts its position at byte 0."""
        self.sink_files: dict[str, tuple[int, int]] = {}
        """file_id -> (committed offset, sink position) as of the last `read_sink_files()` (sinks_elsewhere)."""
        self.throwaway = throwaway
        """A database deleted at exit (oneshot): no fsync, a power loss cannot matter to it."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watchtower-state")
        self._conn: sqlite3.Connection | None = None
        self.identity: tuple[int, int] | None = None
        self.wal_identities: dict[Path, tuple[int, int]] = {}
        """The -wal and -shm files as opened (device, inode): one deleted while the daemon runs makes the next opener
        (a restarted correlator process) build a second index of the log beside the one held, and corrupts the
        database (the daemon stops instead); after the database itself is deleted they are its orphans (`_close`)."""
        """(device, inode) of the database file opened: `file_replaced` tells when the path names another."""
        self._wal: WalCheckpointer | None = None
        """Copies the WAL into the database off this writer (started once the database is open)."""
        self._registered: set[str] = set()
        """File ids that have a row in wt_checkpoints (writer thread only)."""
        self.bytes_lost = 0
        """Bytes of spans whose file was gone before the sinks could read them again."""
        self._interrupted = False
        """`interrupt()` was called (the shutdown deadline): a wait for the write lock ends."""
        self.row_holds = HoldWatch("a write of the correlator's rows", log)
        """How long each row slice held the write lock (the long ones are logged)."""

    def _given_up(self) -> bool:
        return self._interrupted

    @property
    def wal_problem(self) -> str | None:
        """Why the WAL cannot be copied into the database (a reader holding an old snapshot), while it lasts."""
        return self._wal.problem if self._wal is not None else None

    # --- writer-thread functions -----------------------------------------------------------------
    def _open(self, check: bool = True) -> Loaded:
        try:
            loaded = self._open_checked(check)
            self._start_wal_checkpointer()
            return loaded
        except StateError:
            self._close()
            raise
        except sqlite3.OperationalError as exc:  # the file may be fine: not "move it aside" (counters restart)
            self._close()
            cause = _cause(exc, self.path)
            if self.throwaway:  # oneshot's store is deleted at exit: nothing is resumed from it
                cause = cause.replace("; the database is kept and resumed from", "")
            raise StateError(f"{self.path}: cannot use the state database: {exc}; {cause}") from exc
        except sqlite3.DatabaseError as exc:
            self._close()
            raise StateRefused(f"{self.path}: not a usable SQLite database ({exc}); {WAY_OUT}") from exc
        except OSError as exc:
            self._close()
            raise StateError(f"{self.path}: cannot open the state database: {exc.strerror or exc}") from exc

    def _start_wal_checkpointer(self) -> None:
        if self._wal is not None or self.throwaway:  # oneshot: a copy of a file deleted at exit only delays the exit
            return
        wal = WalCheckpointer(self.path, reports_readers=self.reports_readers)
        try:
            wal.start()
        except RuntimeError as exc:  # no thread to be had: the commits copy the WAL themselves, at the cap
            log.warning("%s: no thread to copy the WAL (%s); commits copy it themselves", self.path, exc)
            return
        self._wal = wal

    def _create(self) -> None:
        """Schema and marker written to a temporary file renamed into place: never a half-made database. A create
        that fails (a full disk) leaves no temporary file behind, nor do those of earlier failed starts.

        Written with a rollback journal, not WAL (the open switches to WAL after): a WAL commit reaches the file only
        when the close copies it in, and that copy fails without a word on a full disk. The file was then renamed
        into place without its schema, and every later start refused it as malformed."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp*"):  # a restart loop on a full disk piled them
            stale.unlink(missing_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            private_file(tmp)
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before anything is written; fixed from then on
                conn.execute("PRAGMA journal_mode=DELETE")  # the commit is in the file when it returns
                conn.executescript(
                    f"BEGIN IMMEDIATE;{SCHEMA}INSERT INTO wt_meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
                    f"INSERT INTO wt_meta VALUES ('created', '{time.time()}');COMMIT;"
                )
            finally:
                conn.close()
            if Path(f"{tmp}-wal").exists() or Path(f"{tmp}-journal").exists():  # (a commit not whole in the file)
                raise sqlite3.OperationalError(f"{tmp}: the new database could not be completed (its log is left)")
            os.replace(tmp, self.path)
        except BaseException:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
                leftover.unlink(missing_ok=True)
            raise

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
                raise StateRefused(f"{self.path}: the state database is damaged ({'; '.join(check)}); {WAY_OUT}")

    def _check_before_writing(self) -> None:
        """`_quick_check` on a read-only connection, before the writer's opens: a writer's close copies the -wal into
        the file. A -wal beside the file that belongs to another copy of it (a backup restored while a later run's
        -wal stayed) reads as damage, and a writer's check then wrote it into the restored file, which moving the
        -wal aside would have kept whole. Refused untouched, the -wal named."""
        uri = f"file:{urllib.parse.quote(os.fsencode(self.path))}?mode=ro"  # any bytes a path may hold
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._quick_check(conn)
        except sqlite3.OperationalError:
            raise
        except (StateError, sqlite3.DatabaseError) as exc:
            wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
            try:
                wal_bytes = wal.stat().st_size
            except OSError:
                wal_bytes = 0
            if not wal_bytes:
                raise
            detail = str(exc).partition(" (")[2].rpartition(");")[0] if isinstance(exc, StateError) else str(exc)
            raise StateRefused(f"{self.path}: reads as damaged with the {wal.name} beside it ({detail}); that -wal "
                               f"({wal_bytes:,} bytes) may belong to another copy of the database (a backup restored "
                               f"while a later run's -wal stayed): stop the daemon, move {wal.name} and {shm.name} "
                               f"aside and start again; if it is still refused, {WAY_OUT}") from None
        finally:
            conn.close()

    def _open_checked(self, check: bool = True) -> Loaded:
        private_dir(self.path.parent)
        if not self.path.exists():
            self._orphans_aside()
            self._create()
        elif self.path.stat().st_size == 0:
            raise StateRefused(f"{self.path}: the state database is an empty file (emptied or truncated outside "
                               f"the daemon); {WAY_OUT}")
        else:
            refusal = content_refusal(self.path)  # before any change: another program's file is refused as it was
            if refusal:
                raise StateRefused(refusal)
            private_file(self.path)  # tighten the mode of a database made by an older version
            if check and not Path(f"{self.path}-journal").exists():  # a hot rollback journal: only a writer can
                self._check_before_writing()  # roll it back (the store is WAL, but a copy may come from elsewhere)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn = conn
        st = os.stat(self.path)
        self.identity = (st.st_dev, st.st_ino)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise StateError(f"{self.path}: cannot switch the state database to WAL mode")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a read makes the -wal and -shm of a
        # database just switched to WAL (one made by `_create` has none before): their identities are taken next
        self.wal_identities = {}
        for side in wal_files(self.path):
            try:
                sst = os.stat(side)
            except OSError:
                continue
            self.wal_identities[side] = (sst.st_dev, sst.st_ino)
        conn.execute("PRAGMA synchronous=OFF" if self.throwaway else "PRAGMA synchronous=NORMAL")
        WalCheckpointer.configure_writer(conn)
        tables, meta = _tables_and_meta(conn)
        refusal = marker_refusal(self.path, tables, meta)
        if refusal:
            raise StateRefused(refusal)
        conn.executescript(SCHEMA)  # tables added by later versions
        have = {r[1] for r in conn.execute("PRAGMA table_info(wt_checkpoints)")}
        for name, kind in ADDED_COLUMNS:
            if name not in have:  # an older database: its sinks held every row before each offset (NULL sink
                # columns say so); its checkpoints' record types are not known (NULL records)
                conn.execute(f"ALTER TABLE wt_checkpoints ADD COLUMN {name} {kind}")
        if self.sinks_elsewhere:  # NULL (caught up) made explicit: the sink process follows explicit positions
            conn.execute("UPDATE wt_checkpoints SET sink_offset=offset, sink_line=line_no, sink_header=header"
                         " WHERE sink_offset IS NULL")
        conn.execute("INSERT OR IGNORE INTO wt_meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        for sink in self.sinks:
            sink.setup(conn)
        first_run = "initialized" not in meta
        cps = [
            Checkpoint(r[0], r[1], path_from_db(r[2]), r[3], r[4], bytes(r[5]), r[6], r[7], r[8], r[9], r[10])
            for r in conn.execute(
                "SELECT file_id, source, path, dev, ino, fingerprint, offset, line_no, header, gone_since, records"
                " FROM wt_checkpoints"
            )
        ]
        self._registered = {cp.file_id for cp in cps}
        behind = {
            r[0]: (r[1], r[2], r[3] or "")
            for r in conn.execute("SELECT file_id, sink_offset, sink_line, sink_header FROM wt_checkpoints"
                                  " WHERE sink_offset IS NOT NULL AND sink_offset < offset")
        }
        series = [
            (m, tuple(labels.split(SEP)) if labels else (), json.loads(value))
            for m, labels, value in conn.execute("SELECT metric, labels, value FROM wt_series")
        ]
        last = conn.execute("SELECT max(updated) FROM wt_checkpoints").fetchone()[0]
        return Loaded(first_run, cps, series, behind, last_commit=last,
                      moved_since=_times_by_source(meta.get("moved_since")),
                      start_pending=_pairs(meta.get("start_pending")),
                      correlator_off_since=self._note_correlator(conn, meta.get(CORRELATOR_OFF_SINCE)),
                      counters_start=_created(meta.get("created")))

    def _note_correlator(self, conn: sqlite3.Connection, stored: str | None) -> float | None:
        """The daemon's store remembers since when the correlator is off (`correlator.enabled: false`): turned on
        again, it goes on from what is read next, and the records read meanwhile have no timelines; that start says
        so once (returned) instead of leaving a silent hole."""
        if self.throwaway or not self.reports_readers:
            return None
        if self.sinks or self.sinks_elsewhere:
            if stored is None:
                return None
            conn.execute("DELETE FROM wt_meta WHERE key = ?", (CORRELATOR_OFF_SINCE,))
            try:
                return float(stored)
            except ValueError:
                return 0.0
        if stored is None:
            conn.execute("INSERT OR REPLACE INTO wt_meta VALUES (?, ?)", (CORRELATOR_OFF_SINCE, str(time.time())))
        return None

    def _write_rows(self, batches: list[RecordBatch], new_files: list[Checkpoint] | None = None,
                    progress: dict[str, Position | None] | None = None) -> None:
        """One row slice and where it leaves the sinks in each file it touched, in one transaction
        (sinks skip lines they already hold)."""
        conn = self._conn
        assert conn is not None
        begin_immediate(conn, BUSY_TIMEOUT_MS, self._given_up)
        self.row_holds.begun()
        try:
            if new_files:
                now = time.time()
                conn.executemany(
                    "INSERT OR IGNORE INTO wt_checkpoints (file_id, source, path, dev, ino, fingerprint, offset,"
                    " line_no, header, gone_since, updated, records) VALUES (?,?,?,?,?,?,0,0,'',NULL,?,?)",
                    [(cp.file_id, cp.source, path_to_db(cp.path), cp.dev, cp.ino, cp.fingerprint, now, cp.records)
                     for cp in new_files],
                )
            if batches:
                for sink in self.sinks:
                    sink.write(conn, batches)
            if progress:
                conn.executemany(
                    "UPDATE wt_checkpoints SET sink_offset=?, sink_line=?, sink_header=? WHERE file_id=?",
                    [(*(pos or (None, None, None)), file_id) for file_id, pos in progress.items()],
                )
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            self.row_holds.ended(lambda: f"{_rows_in(batches):,} rows, rolled back")
            raise
        self.row_holds.ended(lambda: f"{_rows_in(batches):,} rows")
        self._committed()
        if new_files:
            self._registered.update(cp.file_id for cp in new_files)

    def _write_backlog(self, backlog: RowBacklog, pending: list[Checkpoint] | Callable[[], list[Checkpoint]],
                       limit: int, max_bytes: int) -> tuple[int, int]:
        """Store the next slice of the sinks' backlog: up to `limit` rows in memory, else a piece (about
        `max_bytes`) of its first span, read again from the file; with the files' new positions, in one
        transaction. The backlog moves on only once it is committed (a failure retries the same slice).
        Returns (rows stored, span bytes done)."""
        if backlog.rows > 0:
            part, n = backlog.take_rows(limit)
            after = backlog.positions(skip_rows=n)
            touched = {b.file_id for b in part}
            self._write_rows(part, self._unregistered(touched, pending() if callable(pending) else pending),
                             {f: after.get(f) for f in touched})
            backlog.rows_stored(n)
            return n, 0
        span = backlog.head_span()
        if span is None:
            return 0, 0
        try:
            batch, consumed, line_no, columns = read_span(span, max_bytes)
        except SpanGone as exc:
            # The daemon's mark first: seen, the re-key committed with it is seen by the next read (each statement
            # reads its own snapshot: the other order could miss a re-key committed between the two)
            waiting = self.reconciliation is not None and self.reconciliation.pending(self._conn, str(exc))
            if self._rekeyed(span):  # read again where the tailer found the file since
                return 0, 0
            if waiting:
                self.span_waits = True  # the daemon's first scans may still find it under a new identity or path
                return 0, 0
            lost = span.remaining
            log.warning("%s: its last %d bytes (from %s) were counted in the metrics but cannot be read again for "
                        "the correlator; their timelines are incomplete", exc, lost,
                        next_line_text(span.line_no))
            backlog.drop_span(span)
            self._write_rows([], None, {span.file_id: backlog.positions().get(span.file_id)})
            self.bytes_lost += lost
            return 0, lost
        # the next span of this file if one waits, else the explicit end: never NULL here, as the checkpoint
        # offset may already be past what this span covered
        pos = backlog.positions_after(span) if consumed >= span.remaining else None
        if pos is None:
            pos = (span.start + consumed, line_no, columns.header_line if columns else "")
        rows = [batch] if batch is not None and len(batch) else []
        self._write_rows(rows, self._unregistered({span.file_id}, pending() if callable(pending) else pending),
                         {span.file_id: pos})
        backlog.span_stored(span, consumed, line_no, columns)
        return (len(batch) if rows else 0), consumed

    def _rekeyed(self, span: Span) -> bool:
        """Did the daemon's tailer find the span's file under a new identity or path since the span was taken (a copy
        made while it was down, at its path or in `moved_to`: exporter.tailer `_new_identity`, `_take_copy`; renamed
        out of the globs: `_read_on_where_it_is`)? Then the span follows its checkpoint (the correlator process takes
        spans from the checkpoints it read at its start, which can be before the daemon's first scan), instead of
        calling the file gone. A checkpoint already followed is not followed again (the file is gone from there too)."""
        conn = self._conn
        assert conn is not None
        row = conn.execute("SELECT path, dev, ino, fingerprint FROM wt_checkpoints WHERE file_id = ?",
                           (span.file_id,)).fetchone()
        if row is None:
            return False
        target = (path_from_db(row[0]), row[1], row[2])
        if target == (span.path, span.dev, span.ino) or target == span.rekeyed_to:
            return False
        span.rekeyed_to = target
        span.path, span.dev, span.ino = target
        span.fingerprint = bytes(row[3] or b"") or span.fingerprint
        if hasattr(span.live, "follow"):  # the correlator process's Where (the thread worker's is the checkpoint)
            span.live.follow(span.path, (span.dev, span.ino), span.fingerprint)
        return True

    def _read_sink_files(self) -> None:
        """Each file's committed offset and sink position (`sink_files`; a NULL position is caught up): what
        the sink process has stored, as far as the database knows (daemon.Daemon._sink_process_behind)."""
        conn = self._conn
        assert conn is not None
        self.sink_files = {fid: (offset, offset if sink is None else sink) for fid, offset, sink in conn.execute(
            "SELECT file_id, offset, sink_offset FROM wt_checkpoints")}

    def behind_spans(self, allowed: dict[str, frozenset[str] | None]) -> list[Span]:
        """Each file whose sink position is behind its committed offset, as a span to read (sink process).

        Files of sources that keep reports only (f, rb, rs) come last: the sink process stores each span whole, one
        after the other, and a report stored before the delivery it is about (read earlier by the daemon, in a
        busier file that sorts later by `updated`, or a rotated file registered after the report file) stays a
        timeline of its own, where the thread worker, storing in read order, joins it to that delivery."""
        conn = self._conn
        assert conn is not None
        spans = []
        for file_id, source, path, dev, ino, fingerprint, offset, start, line_no, header in conn.execute(
                "SELECT file_id, source, path, dev, ino, fingerprint, offset, sink_offset, sink_line, sink_header"
                " FROM wt_checkpoints WHERE sink_offset IS NOT NULL AND sink_offset < offset ORDER BY updated, rowid"):
            spans.append(span_at(file_id, source, path_from_db(path), dev, ino, (start, line_no or 0, header or ""),
                                 offset, allowed.get(source), fingerprint=bytes(fingerprint or b"")))
        return deliveries_first(spans)  # `updated` order within each group

    def _unregistered(self, file_ids: set[str], pending: list[Checkpoint]) -> list[Checkpoint]:
        """Checkpoints (from `pending`, not yet committed) of files the database does not know yet.

        A file found since the last checkpoint has a fresh random id. Its rows may be stored (slices)
        before the checkpoint that names it; were the process killed in between, the next start would
        not know the id, read the file again under a new one, and the sinks would store its lines
        twice. So the slice that first stores a file's rows also stores the file, at offset 0: the next
        start resumes it under the same id from its beginning, and the sinks skip what they hold.
        """
        ids = file_ids - self._registered
        return [cp for cp in pending if cp.file_id in ids] if ids else []

    def _write_checkpoint(self, c: Commit, backlog: RowBacklog | None = None, start: bool = False) -> None:
        """Offsets and counter values of `c`, and for each of its files where the sinks stand: the first
        byte of the file still in `backlog`, or NULL (they hold every row before the offset).

        With `sinks_elsewhere` the positions belong to the sink process: a file new to the database gets
        byte 0 (NULL, caught up, for the first run's `start` decision), with the header in force there (one a file
        truncated in place kept: `Checkpoint.first_header`), and existing ones keep theirs.
        """
        conn = self._conn
        assert conn is not None
        now = time.time()
        positions = backlog.positions() if backlog is not None else {}
        blank = (None, None, None)
        keep = self.sinks_elsewhere
        if keep:  # the sink process reads a new file from byte 0, or from the first run's start position
            positions = {cp.file_id: (cp.offset, cp.line_no, cp.header) if start or cp.file_id in c.started_at_end
                         else (0, 0, cp.first_header) for cp in c.checkpoints}
        # rows built before the lock: the correlator process waits for it only while SQLite writes
        offsets = [(cp.file_id, cp.source, path_to_db(cp.path), cp.dev, cp.ino, cp.fingerprint, cp.offset, cp.line_no,
                    cp.header, cp.gone_since, now, cp.records, *positions.get(cp.file_id, blank))
                   for cp in c.checkpoints]
        values = [(m, SEP.join(k), series_json(v)) for m, k, v in c.series]
        begin_immediate(conn, CHECKPOINT_LOCK_WAIT_MS, self._given_up)
        try:
            conn.executemany(
                "INSERT INTO wt_checkpoints (file_id, source, path, dev, ino, fingerprint, offset, line_no, header,"
                " gone_since, updated, records, sink_offset, sink_line, sink_header)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(file_id) DO UPDATE SET"
                " source=excluded.source, path=excluded.path, dev=excluded.dev, ino=excluded.ino,"
                " fingerprint=excluded.fingerprint, offset=excluded.offset,"
                " line_no=excluded.line_no, header=excluded.header, gone_since=excluded.gone_since,"
                " updated=excluded.updated, records=coalesce(excluded.records, records)"
                + ("" if keep else ", sink_offset=excluded.sink_offset, sink_line=excluded.sink_line,"
                   " sink_header=excluded.sink_header"),
                offsets,
            )
            conn.executemany("INSERT OR REPLACE INTO wt_series VALUES (?,?,?)", values)
            if c.forget_before:
                conn.execute("DELETE FROM wt_checkpoints WHERE gone_since IS NOT NULL AND gone_since < ?"
                             " AND (sink_offset IS NULL OR sink_offset >= offset)", (c.forget_before,))
            conn.execute("INSERT OR IGNORE INTO wt_meta VALUES ('initialized', ?)", (str(now),))
            if c.reconciled:
                mark_reconciled(conn, c.reconciled)
            if c.moved_since:
                conn.execute("INSERT OR REPLACE INTO wt_meta VALUES ('moved_since', ?)", (json.dumps(c.moved_since),))
            if c.start_pending is not None:
                conn.execute("INSERT OR REPLACE INTO wt_meta VALUES ('start_pending', ?)",
                             (json.dumps(sorted(c.start_pending)),))
            conn.execute("COMMIT")
            self._committed()
        except BaseException:
            rollback_quietly(conn)
            raise
        self._registered.update(cp.file_id for cp in c.checkpoints)

    def _keep_buckets(self, names: frozenset[str], bounds: tuple[float, ...]) -> list[float] | None:
        """Tie the stored histogram series to the bucket bounds they were counted under (`metrics.delay_buckets`).

        Same bounds (or a database from before they were stored: restored as before): None. Other bounds: the stored
        histograms are deleted and the old bounds returned: their counts are per bucket, so restored under other
        bounds they would read as other delays (five of 10 s stored under 5 and 60 read back as none at or below 15).
        A histogram that starts again from 0 is a counter reset Prometheus handles."""
        conn = self._conn
        assert conn is not None
        wanted = json.dumps([float(b) for b in bounds])
        row = conn.execute("SELECT value FROM wt_meta WHERE key='delay_buckets'").fetchone()
        if row is not None and row[0] == wanted:
            return None
        begin_immediate(conn, CHECKPOINT_LOCK_WAIT_MS, self._given_up)
        try:
            if row is not None:
                conn.execute(f"DELETE FROM wt_series WHERE metric IN ({','.join('?' * len(names))})", sorted(names))
            conn.execute("INSERT OR REPLACE INTO wt_meta VALUES ('delay_buckets', ?)", (wanted,))
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise
        if row is None:
            return None
        try:
            before = json.loads(row[0])
        except ValueError:
            before = []
        return before if isinstance(before, list) else []

    def _commit(self, c: Commit) -> None:
        """Rows and checkpoint of `c` at once (oneshot and tests; the daemon goes through CommitQueue)."""
        if c.batches and self.sinks:
            self._write_rows(c.batches)
        self._write_checkpoint(c)

    def _maintain(self) -> bool:
        """Every sink's housekeeping; True if one of them has more to do."""
        conn = self._conn
        assert conn is not None
        more = False
        try:
            for sink in self.sinks:
                more = bool(sink.maintain(conn)) or more
            self._committed()
            return more
        except BaseException:
            rollback_quietly(conn)
            raise

    def _committed(self) -> None:
        if self._wal is not None:
            self._wal.poke()

    def _close(self) -> None:
        if self._wal is not None:
            self._wal.stop()
            self._wal = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.identity is not None and file_replaced(self.path, self.identity) is not None:
            self._drop_orphans()

    def _orphans_aside(self) -> None:
        """A -wal or -shm without its database (the database deleted while the daemon was stopped, or by an older
        version while it ran): SQLite would apply that log to the database about to be made, and every start would
        be refused as malformed. Moved aside (kept: it is the deleted state's), said once."""
        for side in wal_files(self.path):
            if side.exists():
                aside = side.with_name(f"{side.name}.orphaned")
                n = 0
                while aside.exists():  # an older orphan is kept too
                    n += 1
                    aside = side.with_name(f"{side.name}.orphaned.{n}")
                try:
                    side.replace(aside)
                except OSError as exc:
                    raise StateError(f"{side}: the log of a deleted state database, which would corrupt the new one: "
                                     f"cannot move it aside ({exc.strerror or exc}); remove it") from None
                log.warning("%s: the log of a deleted state database (no %s beside it): moved aside to %s; this start "
                            "is a first run", side, self.path.name, aside.name)

    def _drop_orphans(self) -> None:
        """The database was deleted (or another put in its place) while this store had it open: its -wal and -shm are
        still at their paths, and SQLite would apply that log to the next database there (every later start refused
        as malformed, or a deleted state brought back). Removed, if they are still the ones this store opened."""
        for side, identity in self.wal_identities.items():
            if file_replaced(side, identity) is None:
                try:
                    side.unlink()
                except OSError as exc:
                    log.warning("%s: the log of the deleted state database is left (%s): remove it before the next "
                                "start", side, exc.strerror or exc)

    def interrupt(self) -> None:
        """Stop the statement running on the writer thread, or its wait for the write lock (any thread; used at
        the shutdown deadline)."""
        self._interrupted = True
        if self._conn is not None:
            self._conn.interrupt()

    # --- event-loop API ------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> Loaded:
        return await self._run(self._open)  # type: ignore[no-any-return]

    async def keep_buckets(self, names: frozenset[str], bounds: tuple[float, ...]) -> list[float] | None:
        return await self._run(self._keep_buckets, names, bounds)  # type: ignore[no-any-return]

    async def write_rows(self, batches: list[RecordBatch]) -> None:
        await self._run(self._write_rows, batches)

    async def write_backlog(self, backlog: RowBacklog, pending: list[Checkpoint], limit: int,
                            max_bytes: int) -> tuple[int, int]:
        return await self._run(self._write_backlog, backlog, pending, limit, max_bytes)  # type: ignore[no-any-return]

    write_backlog_now = _write_backlog
    """The same, called on the writer thread itself (exporter.writer runs several slices per call)."""

    async def read_sink_files(self) -> None:
        await self._run(self._read_sink_files)

    async def on_writer(self, fn: Any) -> Any:
        """Run `fn()` on the writer thread (it may call the `*_now` methods)."""
        return await self._run(fn)

    async def write_checkpoint(self, c: Commit, backlog: RowBacklog | None = None, start: bool = False) -> None:
        await self._run(self._write_checkpoint, c, backlog, start)

    async def commit(self, c: Commit) -> None:
        await self._run(self._commit, c)

    async def maintain(self) -> bool:
        return await self._run(self._maintain)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)
