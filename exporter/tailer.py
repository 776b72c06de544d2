"""Globs -> the set of followed files: new files from byte 0, rotated-away files drained, then retired.

PMTA rotates by starting new files (`acct-YYYY-MM-DD-NNNN.csv`), and `move-to` / `delete-after`
move or delete old ones. So the tailer re-evaluates the globs periodically, follows every
matching file by (device, inode), reads files that appear after start from byte 0, and keeps
reading a file that left the globs (renamed or deleted) through its open descriptor until EOF
before retiring it. Checkpoints of retired files are kept for a while so a file that comes
back is not read twice.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import glob
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable

from exporter import fdlimit
from exporter.config import SourceConfig, TailConfig
from exporter.filestream import (
    Checkpoint,
    FileStream,
    OnBatch,
    header_kept,
    new_file_id,
    records_of,
    same_file,
    warn_compressed,
)
from exporter.fingerprint import (
    compression_of,
    fingerprint_len,
    fingerprint_of,
    head_matches,
    read_head,
    shares_first_record,
)
from exporter.linecount import (
    COUNT_SAID_BYTES,
    UNCOUNTED,
    count_lines,
    line_text,
    next_line_text,
    whole_lines_end,
)
from exporter.metrics import SelfMetrics
from exporter.movedto import MovedToWatch
from exporter.parser import ErrorLog
from exporter.records import shown
from exporter.safeopen import open_regular_file

log = logging.getLogger("watchtower.tailer")

MAX_CHUNKS_PER_PASS = 8
"""Chunks read from one file before moving to the next, so one busy file cannot starve the rest."""


def _open_size(stream: FileStream) -> int:
    """Size of an open file (by its descriptor); 0 when fstat fails (the next read says why)."""
    try:
        return os.fstat(stream.file.fileno()).st_size  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):
        return 0


_ROTATION_NAME = re.compile(r"(?P<base>.+?)-(?P<date>\d{4}-\d{2}-\d{2})-(?P<number>\d{4,})(?P<ext>\..*)?", re.S)
"""A file name PMTA's rotation gave: `<base>-YYYY-MM-DD-NNNN<ext>` (e.g. `acct-2018-03-14-0000.csv`; a new date at
midnight, a higher NNNN within a day). `ext` is all from the first dot on (`.csv`, `.json`, none). A number without
the date part is no such name (`pmta-1001.csv` and `pmta-1002.csv` of two hosts, `acct-host-2025.csv`: written at
the same time, the later name supersedes nothing)."""


@functools.lru_cache(maxsize=4096)
def _rotation_series(path: str) -> tuple[tuple[str, str, str], tuple[str, int]] | None:
    """The rotation series a file belongs to, and where it sorts in it, by its name: (directory, base name,
    extension), (date, number); None for a name without such a suffix (`acct.csv`, `pmta-a.csv`, `acct-0001.csv`),
    which belongs to no series. One PMTA `<acct-file>` writes one series; two blocks (acct.csv and diag.csv, or acct.csv
    and acct.json) or two PMTA instances (two directories) write two, all of them at once."""
    directory, name = os.path.split(path)
    m = _ROTATION_NAME.fullmatch(name)
    if m is None:
        return None
    return (os.path.normpath(directory), m["base"], m["ext"] or ""), (m["date"], int(m["number"]))


def _kind(mode: int) -> str:
    """What a file that is not regular is, for the operator."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


HEAD_UNREADABLE = "cannot read its first bytes (is it the file read before?)"


def _io_reason(exc: OSError) -> str:
    """The `reason` label of watchtower_read_errors_total for a failed read."""
    return "permission" if isinstance(exc, PermissionError) else "io"


def glob_matches(path: str, pattern: str) -> bool:
    """Would glob(pattern) list `path`? Component by component, as glob() walks: fnmatch alone lets `*` match `/`
    (`/var/log/pmta/*.csv` would take in `/var/log/pmta/archive/x.csv`)."""
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted, strict=True))


def _adopt(cp: Checkpoint, path: str, source: str, how: str = "gone") -> None:
    """A checkpoint of a source no longer configured (`gone`: renamed), of one that kept every record type `source`
    keeps (`keeps`: its glob given to `source`), or of an earlier build whose source's name now stands for other
    files (`reassigned`), goes on under `source` where reading stopped: read again, its records were counted twice."""
    if how == "reassigned":
        log.warning("%s: now matched by source %s, not %s, whose name now stands for other files (renamed, its "
                    "name given to another source) and an earlier build did not record which record types it was "
                    "read for: resuming at byte %d (%s); types %s keeps that %s did not count from there on",
                    shown(path), source, cp.source, cp.offset, line_text(cp.line_no), source, cp.source)
    elif how == "keeps":
        log.info("%s: now matched by source %s, not %s, which kept every record type %s keeps; resuming at byte %d "
                 "(%s)", shown(path), source, cp.source, source, cp.offset, line_text(cp.line_no))
    else:
        log.info("%s: source %s is no longer configured; resuming for source %s at byte %d (%s)",
                 shown(path), cp.source, source, cp.offset, line_text(cp.line_no))
    cp.source = source


def _keeps_nothing_more(new: frozenset[str] | None, old: frozenset[str] | None) -> bool:
    """Does a source keeping record types `new` keep none that one keeping `old` did not (None: every type)?"""
    return old is None or (new is not None and new <= old)


def _shared_types(old: frozenset[str] | None, new: frozenset[str] | None) -> str:
    """The record types two sources' `records` filters both keep, for a log line ('' when none; None keeps all)."""
    if old is None and new is None:
        return "every type"
    both = (old or new or frozenset()) if old is None or new is None else old & new
    return ", ".join(sorted(both))


def _short_fingerprint_elsewhere(cp: Checkpoint, path: str, head: bytes) -> bool:
    """Is this a checkpoint saved past the bytes its fingerprint covers, met under another name? Older versions saved
    such a fingerprint (of the header alone) when PMTA appended between a stream's size check and its read: it fits
    every file of the source, and a new file in its freed inode is likelier than a rename within the globs (PMTA
    does not rename its files). Not resumed: the inode's file is read as new, the checkpoint's own file looked for as
    a copy (`_displaced`)."""
    return os.path.basename(cp.path) != os.path.basename(path) \
        and _weak_fingerprint(cp, head)


def _weak_fingerprint(cp: Checkpoint, head: bytes) -> bool:
    """Does the checkpoint's fingerprint, saved past the bytes it covers, fail to tell its file from the others of its
    source? It holds no start of a first record: the header alone, which every file of the source starts with (an
    older version's of a header of ~1,000 bytes or more, its first 1,024 bytes; a header line longer than
    MAX_FINGERPRINT_BYTES). A file starting with `head` then matches it whatever its records."""
    return fingerprint_len(cp.fingerprint) < cp.offset and not shares_first_record(cp.fingerprint, head)


def _lines_to_check(cp: Checkpoint, head: bytes) -> bool:
    """A checkpoint whose fingerprint cannot tell its file from another of its source (`_weak_fingerprint`: one an
    older version took of a long header's first 1,024 bytes; a header line longer than MAX_FINGERPRINT_BYTES), about
    to resume in the file at its identity: a new file of the source in a deleted file's inode (ext4 reuses one at
    once) resumed at the old file's offset, its first records skipped and nothing said. Its lines before the offset
    decide, counted at the file's first open (FileStream._check_lines), off the event loop: an idle file is never
    counted (nothing of it is read), one read takes a fingerprint through its first record then."""
    return bool(cp.fingerprint) and cp.line_no != UNCOUNTED and _weak_fingerprint(cp, head)


def static_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard (`/var/log/pmta/acct-*.csv` -> `/var/log/pmta`)."""
    parts = pattern.split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = os.sep.join(fixed)
    return root or (os.sep if pattern.startswith(os.sep) else ".")


def _a_copy(head: bytes, name: str, by_len: dict[int, set[bytes]], by_name: dict[str, list[bytes]]) -> bool:
    """Is a file named `name` starting with `head` a copy of a file read before (`Tailer._read_before_index`)? It
    starts with the first record one started with, or it has one's name and first bytes: a fingerprint of a header
    alone, or of a header too long to leave room for a record, tells no more, and PMTA never reuses a file name."""
    for covered, fingerprints in by_len.items():
        if len(head) < covered:
            continue
        for fingerprint in (fingerprint_of(head[:covered]), head[:covered]):  # (raw: an older version's)
            if fingerprint in fingerprints and shares_first_record(fingerprint, head):
                return True
    return any(head_matches(fingerprint, head) for fingerprint in by_name.get(name, ()))


def _list_error(directory: str) -> OSError | None:
    """Why listing `directory` fails now (permissions, I/O), or None: one that is gone, or no directory, lists
    nothing and waits for nothing (a legitimately empty match; a file a wildcard matched)."""
    try:
        with os.scandir(directory):
            return None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return exc


def _whole_lines_end(path: str, upto: int) -> int:
    """Where the complete lines of a file's first `upto` bytes end (linecount.whole_lines_end): a start at its end
    starts there, the line being written then (half a header, half a record) read whole once complete."""
    with open_regular_file(path) as f:
        return whole_lines_end(f.fileno(), upto)


def _count_lines(path: str, upto: int) -> tuple[int, str]:
    """Newlines in the first `upto` bytes and the header line (for starting at the end of a file). Read whole, so a
    big file is said first: a first start at `end` over a 50 GB file (a sparse one) took 21 s before it listened."""
    if upto >= COUNT_SAID_BYTES:
        log.info("%s: counting its lines to start at its end (%.1f GB; tail.start_position: end)", shown(path),
                 upto / 1e9)
    with open_regular_file(path) as f:  # a FIFO swapped in since the stat: refused (an OSError), not waited on
        return count_lines(f.fileno(), upto)


class Tailer:
    """Every followed file of every source; `poll()` does one pass of discovery and reading."""

    def __init__(
        self,
        sources: list[SourceConfig],
        tail: TailConfig,
        metrics: SelfMetrics | None,
        checkpoints: Iterable[Checkpoint] = (),
        first_run: bool = True,
        oneshot: bool = False,
        fields: frozenset[str] | None = None,
        moved_since: float | dict[str, float] | None = None,
        start_pending: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.sources = sources
        self.fields = fields
        """Record fields the consumers read (None: all); see FileParser.fields."""
        self.tail = tail
        self.metrics = metrics
        self.oneshot = oneshot
        self.start_at_end = first_run and tail.start_position == "end" and not oneshot
        self.start_pending: set[tuple[str, str]] = set(start_pending) if tail.start_position == "end" \
            and not oneshot else set()
        """(source, directory) pairs a first start at `end` could not list: the files found there when it can be
        are followed from their ends then (saved with the checkpoints until then)."""
        self._unlisted: set[tuple[str, str]] = set()
        self._ending: dict[str, list[str]] = {}
        self.started_at_end: set[str] = set()
        """Ids of files followed from their ends after the first scan (a pending directory listed at last): the
        correlator's own process starts there too (exporter.state `Commit.started_at_end`); taken by each commit."""
        self.error_log = ErrorLog()
        self.streams: dict[tuple[int, int], FileStream] = {}
        self.known: dict[tuple[int, int], Checkpoint] = {}
        checkpoints = list(checkpoints)
        self._loaded = checkpoints
        """Every checkpoint of the last stop, two of one identity included (`known` keeps one): a file a copy in
        `moved_to` shares its first record with was read (`_moved_while_down`; a few hundred bytes a checkpoint)."""
        for c in checkpoints:  # two for one identity (an inode reused): the file followed, not the one gone
            old = self.known.get((c.dev, c.ino))
            if old is None or c.gone_since is None or old.gone_since is not None:
                self.known[(c.dev, c.ino)] = c
        self._newest_at_start: dict[str, str] = {}
        """Per source, the file name that sorts last among the checkpoints of the last stop (PMTA's current file)."""
        for c in self.known.values():
            self._newest_at_start[c.source] = max(self._newest_at_start.get(c.source, ""), os.path.basename(c.path))
        self.retired: list[Checkpoint] = []
        self._last_scan = float("-inf")
        self._scanned_once = False
        self._matched_now: dict[tuple[int, int], tuple[str, str, os.stat_result]] = {}
        self._displaced: dict[tuple[int, int], Checkpoint] = {}
        """Checkpoints whose inode holds another file at the first scan (`_follow`, `_new_identity`), keyed by it:
        looked for at their own path under another inode (`_new_identity`), then as a copy at their path or in
        `moved_to` (`_copy_or_gone`, at the scan's end and, while undecided, the next ones), else reported gone."""
        last_gone: dict[str, float] = {}  # per source, the last file the last run saw leave (before its stop)
        for c in checkpoints:
            if c.gone_since is not None:
                last_gone[c.source] = max(last_gone.get(c.source, c.gone_since), c.gone_since)
        self.moved_to = MovedToWatch(sources, moved_since, time.time(), tail.forget_after, last_gone)
        """When to look in the `moved_to` directories and which files there are new to a look (`_moved_while_down`);
        `moved_since`: where a restart takes up the last run's looks (`moved_to.since`, saved with the checkpoints)."""
        self._read_before: set[tuple[int, int]] = set()
        """Copies found at the first scan shorter than where their checkpoint's reading stopped (older backups): their
        records were read before (`_take_copy`), not read again as files nothing names (`_moved_while_down`)."""
        self._looked_for: set[tuple[int, int]] = set()
        """Files that left the globs with no descriptor open, looked for once where they went (see
        _unread_where_it_went)."""
        """The identities the scan in progress matched (a checkpoint whose inode is among them is no new identity's)."""
        self._left_while_down: set[tuple[int, int]] = set()
        """Checkpoints of files read at the last stop that the first scan did not match (_find_left_while_down)."""
        self._allowed = {s.label: frozenset(s.records) if s.records else None for s in sources}
        self._order = {s.label: i for i, s in enumerate(sources)}
        self._incomplete: set[str] = set()
        self._empty_sources: set[str] = set()
        self._warned_empty: set[str] = set()
        self._reported: set[str] = set()
        self._failed_paths: set[str] = set()
        """Paths a look failed on since the last scan began (`unreadable`: a path that recovered, or went, drops out
        at the next scan; `_reported` remembers what was logged, until its stat succeeds again)."""
        self._undecided: dict[tuple[int, int], str] = {}
        """Glob matches with a checkpoint whose first bytes could not be read: whether each is the checkpoint's file or
        a new one in its inode is decided at a scan that can read them (-> path, logged once)."""
        self._compressed: set[tuple[int, int]] = set()
        """Matches whose first bytes are a compression format's (logrotate's `compress`), named once each."""
        self._not_regular: set[str] = set()
        """Matches that are not regular files (FIFOs, devices), named once each."""
        self.max_open = fdlimit.files_cap(tail.max_open_files)
        """`tail.max_open_files`, lowered to what the process's open-file limit leaves (exporter/fdlimit.py)."""
        self._copies: dict[tuple[int, int], int] = {}
        """Glob matches found while the daemon runs to be copies of a file read at their path that is still read to its
        end (`_copy_checkpoint`), with their size when first found: followed once that file is retired."""
        self._seen_size: dict[tuple[int, int], int] = {}
        """The size of each followed file at the last stat: the bytes a file that went before it was read to its
        end took with it (`_retire_and_idle` says them)."""
        self.hold_drained = False
        """Keep a descriptor of each file drained after it left the globs (renamed out, deleted) until `release_held`
        says the correlator's own process has read it too (exporter/follower.py finds it in /proc/<pid>/fd)."""
        self.held: dict[str, tuple[int, int, float, str]] = {}
        """file_id -> (descriptor, offset drained to, when, path) of the files kept open for the correlator process;
        counted in tail.max_open_files (`_make_room`)."""
        self._sink_files: dict[str, tuple[int, int]] = {}
        """file_id -> (committed offset, sink position) as of the last `release_held` (hold_drained): which files the
        correlator process has still to read (`_correlator_needs`)."""
        self._last_look = float("-inf")
        """When `look_while_paused` last looked at the files' sizes (monotonic)."""
        if metrics:
            for s in sources:
                metrics.init_source(s.label, self._allowed[s.label])

    # --- discovery -------------------------------------------------------------------------------
    def _matches(self) -> dict[tuple[int, int], tuple[str, str, os.stat_result]]:
        found: dict[tuple[int, int], tuple[str, str, os.stat_result]] = {}
        self._incomplete = set()
        self._unlisted = set()
        self._empty_sources = set()
        for source in self.sources:
            matched = False
            for pattern in source.paths:
                if not self._root_listable(source.label, pattern):
                    self._incomplete.add(source.label)
                    self._unlisted.add((source.label, static_root(pattern)))
                elif self.start_at_end and not self._scanned_once:  # later, only the pending ones are looked at
                    self._unlisted.update((source.label, d) for d in self._unlistable_subdirectories(source.label,
                                                                                                   pattern))
                for path in sorted(glob.glob(pattern)):
                    st = self._stat(source.label, path)
                    matched = matched or st is not None or os.path.exists(path)  # not removed since, nor dangling
                    if st is None:
                        continue
                    found.setdefault((st.st_dev, st.st_ino), (source.label, path, st))
            if not matched and source.label not in self._incomplete:
                self._empty_sources.add(source.label)
        self._report_empty_sources()
        return found

    def _root_listable(self, source: str, pattern: str) -> bool:
        """Can the fixed directory part of a glob be listed? glob() says nothing when it cannot (EMFILE...)."""
        root = static_root(pattern)
        exc = _list_error(root)
        if exc is not None:
            self._count_error(source, "scan", root, exc)
        return exc is None

    def _decide_pending_starts(self) -> None:
        """A first start at `end` that could not list a source's directory (the daemon's user not yet in PMTA's
        log group): its files would all be new once it can be, and read whole, PMTA's whole retention counted at
        once. Such a directory stays pending (saved with the checkpoints) until a scan lists it: the files found
        there then start at their ends (`_starts_at_end`)."""
        if self.start_at_end and not self._scanned_once:
            for source, root in sorted(self._unlisted - self.start_pending):
                log.warning("%s: cannot be listed at the first start (source %s): tail.start_position: end still "
                            "applies: the files found there once it can be are read from their ends then (records "
                            "written there before that are not read)", shown(root), source)
            self.start_pending |= self._unlisted
        for source, root in sorted(self.start_pending - self._unlisted):
            if source in self._allowed and _list_error(root) is not None:  # (a source no longer configured: forgotten)
                continue  # one a wildcard matched: looked at alone, its error counted once (at the first start)
            self.start_pending.discard((source, root))
            if source not in self._allowed:
                continue
            self._ending.setdefault(source, []).append(root.rstrip(os.sep) + os.sep)
            if self._scanned_once or not self.start_at_end:
                log.info("%s: can be listed now (source %s): its files start at their ends, as tail.start_position: "
                         "end decided at the first start", shown(root), source)

    def _starts_at_end(self, source: str, path: str) -> bool:
        """Is a file followed for the first time in a directory listed at last (`_decide_pending_starts`)?"""
        return any(path.startswith(root) for root in self._ending.get(source, ()))

    def _stat(self, source: str, path: str) -> os.stat_result | None:
        """stat() a glob match; any error on one path is counted and reported, never fatal."""
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:  # removed since the glob listed it, or a symlink to nothing (said, counted)
            if os.path.islink(path):
                self._count_error(source, "not_found", path, exc, "a symbolic link to a missing file")
            return None
        except PermissionError as exc:
            self._count_error(source, "permission", path, exc)
            return None
        except OSError as exc:  # ELOOP, ESTALE, EIO, ENAMETOOLONG, ...
            self._count_error(source, "stat", path, exc)
            return None
        if not stat.S_ISREG(st.st_mode):  # a FIFO's open() waits for a writer, /dev/zero never ends
            if not stat.S_ISDIR(st.st_mode) and path not in self._not_regular:
                self._not_regular.add(path)
                log.warning("%s: not a regular file (%s; source %s): not followed", shown(path), _kind(st.st_mode),
                            source)
            return None
        self._reported.discard(path)
        return st

    def _count_error(self, source: str, reason: str, path: str, exc: OSError, what: str = "",
                     log_it: bool | None = None) -> None:
        """Count a failed look at `path`; log it once per path until it recovers (no log flood every rescan), or
        as `log_it` says when the caller keeps its own once-ness."""
        if self.metrics:
            self.metrics.read_errors.labels(source, reason).inc()
        self._failed_paths.add(path)
        if log_it is None:
            log_it = path not in self._reported
            self._reported.add(path)
        if log_it:
            what = what or ("cannot list directory" if reason == "scan" else "cannot stat")
            log.warning("%s: %s (source %s): %s; %s", shown(path), what, source,
                        exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc)),
                        "not read" if self.oneshot else "files already followed are kept")

    def _report_empty_sources(self) -> None:
        for source in self.sources:
            label = source.label
            if label in self._empty_sources and label not in self._warned_empty:
                self._warned_empty.add(label)
                log.warning("source %s: no file matches %s (yet); check the paths and PMTA's <acct-file> blocks",
                            label, ", ".join(source.paths))
            elif label not in self._empty_sources:
                self._warned_empty.discard(label)

    def allowed_records(self, source: str) -> frozenset[str] | None:
        """The record types a source keeps (None: every type)."""
        return self._allowed.get(source)

    def _reassigned(self, cp: Checkpoint, path: str) -> bool:
        """A checkpoint of an earlier build (no record types kept) whose source's name is configured for files it
        does not match, neither at its path nor at `path`: the name was given to another source after a rename
        (review of upgrades, 2026-12-05: that source's types were compared, no overlap, and the file was read again
        from the start, every record counted twice, said at INFO). It was read under the old definition: it resumes,
        as for a name configured no more."""
        if cp.records is not None:
            return False
        named = next((s for s in self.sources if s.label == cp.source), None)
        if named is None:
            return False
        patterns = [*named.paths, *named.moved_to]
        return not any(glob_matches(p, pattern) for p in {cp.path, path} for pattern in patterns)

    def _read_for(self, cp: Checkpoint) -> frozenset[str] | None:
        """The record types the bytes before a checkpoint's offset were read for, when its source's name is still
        configured: as it recorded them, or (a checkpoint of an older database) those that source keeps now. The
        name alone misled: a renamed source's old name taken by a new one for other files gave the new one's types,
        and the file was read again from the start, every record counted twice. (A source no longer configured is
        a rename: its files resume, new types included, as a source whose types widen without a rename does.)"""
        if cp.records is not None:
            return records_of(cp.records)
        return self._allowed.get(cp.source)

    def unreadable(self) -> list[str]:
        """Paths that could not be listed, stat'ed or opened at the last look (a oneshot exits 1 over them; /healthz
        names them). A oneshot's also holds the files the globs match that are not regular (a FIFO, a device: not
        read, said once), or a backfill would look complete without them."""
        failed = self._failed_paths | set(self._undecided.values()) \
            | {s.cp.path for s in self.streams.values() if s.read_error is not None}
        if self.oneshot:
            failed |= self._not_regular
        return sorted(failed)

    def sources_without_files(self) -> list[str]:
        """Sources whose globs matched nothing at the last scan (shown by /healthz)."""
        return sorted(self._empty_sources)

    def _still_there(self, stream: FileStream) -> bool:
        """A followed file missing from a scan has left only if its path no longer names it."""
        try:
            st = os.stat(stream.cp.path)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: keep following rather than call it rotated
        if (st.st_dev, st.st_ino) != stream.key:
            return False
        source = next((s for s in self.sources if s.label == stream.cp.source), None)
        return source is not None and any(glob_matches(stream.cp.path, p) for p in source.paths)

    def scan(self) -> None:
        """Re-evaluate the globs: follow new files, notice files that left."""
        started = time.time()
        self._failed_paths = set()
        found = self._matches()
        self._matched_now = found
        self._decide_pending_starts()
        for key, (source, path, st) in found.items():
            self._seen_size[key] = st.st_size
            stream = self.streams.get(key)
            if stream is not None and stream.cp.source != source and stream.file is None:
                # Its inode holds a file another source's globs match: the stream's file was deleted (no descriptor
                # held it) and the inode handed to a new file, not renamed across the sources' globs. Followed as
                # that source's new file; else it was read from the start for the old source, then again for its own
                del self.streams[key]
                log.info("%s: gone (deleted; its inode now holds %s, source %s)", shown(stream.cp.path), shown(path),
                         source)
                self._replaced(stream.cp)
                self.known.pop(key, None)
                self._follow(key, source, path, st)
                continue
            if stream is not None:
                if stream.file is None and stream.cp.path != path and stream.renamed_while_closed is None:
                    stream.renamed_while_closed = stream.cp.path  # (its first bytes changed: a new file in its inode)
                stream.cp.path = path
                stream.parser.path = shown(path)
                stream.gone = False
                stream.cp.gone_since = None
                continue
            self._follow(key, source, path, st)
        for key in [k for k in self._seen_size if k not in self.streams]:  # not followed (compressed, replaced)
            del self._seen_size[key]
        for key in [k for k in self._undecided if k not in found]:  # left the globs: decided as any file that left
            del self._undecided[key]
        for key in [k for k in self._copies if k not in found]:
            del self._copies[key]
        for key, stream in self.streams.items():
            if key not in found and not stream.gone:
                if stream.cp.source in self._incomplete or self._still_there(stream):
                    continue  # a failed or partial scan is not a rotation
                stream.gone = True  # drained, then retired (and only then saved as gone: a stop before the end leaves
                # its checkpoint live, and the next start looks for the file to read the rest, or says it cannot)
        for key, cp in list(self._displaced.items()):  # their inode holds another file, no glob match is them
            if self._copy_or_gone(key, cp):
                del self._displaced[key]
        self._ending = {}
        if not self._scanned_once:
            self._left_while_down = {key for key, cp in self.known.items()
                                     if key not in self.streams and cp.gone_since is None}
        if self._left_while_down:
            self._find_left_while_down()
        if not self.oneshot:
            self.moved_to.look()
        if self.moved_to.pending:
            self._moved_while_down(started)
        self._scanned_once = True
        self._last_scan = time.monotonic()

    @property
    def reconciled(self) -> bool:
        """Has a scan decided every checkpoint of the last stop (followed where its file is now, re-keyed to a copy,
        or said gone)? Until then a checkpoint may still get a new identity: the correlator waits for it before it
        calls a file gone (exporter/reconciled.py)."""
        return self._scanned_once and not (self._displaced or self._left_while_down or self._undecided)

    def _find_left_while_down(self) -> None:
        """Files that were being read when the daemon stopped (checkpoints not marked gone) and that the first scan
        no longer matched: moved (PMTA's `move-to`), renamed or deleted while it was down. One found by its identity
        among its source's `moved_to` globs or in the directory it was read in is read from where reading stopped to
        its end, then retired like a file that left the globs while the daemon ran; one found nowhere is reported
        once, marked gone and forgotten after `tail.forget_after`. A source whose globs could not be listed is
        looked at again at the next scan (it may still be there)."""
        sources = {s.label: s for s in self.sources}
        moved: dict[str, dict[tuple[int, int], str] | None] = {}  # per source: the moved_to matches by identity, listed
        # once (None: a moved_to directory could not be listed)
        now = time.time()
        # files whose records were read first: one that held only its header gives way to them (`_unclaimed`)
        for key in sorted(self._left_while_down, key=lambda k: (self.known[k].line_no <= 1, self.known[k].path)):
            if key not in self._left_while_down:  # displaced meanwhile by a file whose copy took its inode
                continue
            cp = self.known[key]
            source = sources.get(cp.source)
            if key in self.streams:  # matched again once its source's directory could be listed: followed as it was
                self._left_while_down.discard(key)
                continue
            if key in self._undecided:  # matched by the globs, its first bytes unreadable for now: not gone
                continue
            if source is None:
                source = self._adopter(cp, now)
                if source is None:
                    self._left_while_down.discard(key)
                    continue
            if cp.source in self._incomplete:
                continue
            try:
                os.stat(cp.path)
            except FileNotFoundError:
                pass
            except OSError:
                continue  # cannot tell (a directory without search permission, I/O): looked at again next scan
            if cp.source not in moved:
                moved[cp.source] = self._identities(cp.source, source.moved_to)
            listed = moved[cp.source]
            try:
                found = self._locate(cp, listed or {})
            except OSError as exc:  # a candidate whose first bytes cannot be read: decided at a later scan
                self._count_error(cp.source, _io_reason(exc), exc.filename or cp.path, exc, HEAD_UNREADABLE)
                continue
            if found is None and listed is None:
                continue  # it may be in the moved_to directory that could not be listed: looked for at the next scan
            self._left_while_down.discard(key)
            cp.gone_since = now
            copy = self._copy_of(cp, listed or {}) if found is None else None
            if copy is not None:
                found = self._take_copy(key, cp, *copy)
                if found is None:
                    continue
                key = (cp.dev, cp.ino)
            if found is None:
                self._report_gone(cp)
                self.retired.append(cp)
                continue
            self._read_on_where_it_is(key, cp, found[0])

    def _read_on_where_it_is(self, key: tuple[int, int], cp: Checkpoint, path: str) -> None:
        """Follow a file found outside the globs at a start from where reading stopped: the next scan finds it
        outside the globs and marks it gone, and it is drained, then retired (and held for the correlator process)."""
        if path == cp.path:  # found there at the last start too (a stop came before it was read to its end)
            log.info("%s: still outside the globs; reading it to its end from byte %d (%s)",
                     shown(path), cp.offset, line_text(cp.line_no))
        else:
            log.info("%s: moved to %s while the daemon was down; reading it to its end from byte %d (%s)",
                     shown(cp.path), shown(path), cp.offset, line_text(cp.line_no))
        cp.path, cp.gone_since = path, None
        self.streams[key] = FileStream(cp, self._allowed[cp.source], self.metrics, self.error_log,
                                       self.tail.chunk_bytes, self.fields)
        self.streams[key].retries = not self.oneshot

    def _copy_or_gone(self, key: tuple[int, int], cp: Checkpoint) -> bool:
        """A checkpoint whose inode the first scan found holding another file (`key`, now that file's) and whose path
        the globs match under no other inode: its file copied (`cp` + `mv`) and moved away by PMTA's move-to while
        the daemon was down is read on where it is; else it is gone. False: undecided (its `moved_to` could not be
        listed, or a candidate read), looked at again at the next scan."""
        holder = self.known.get(key)
        how = f"gone while the daemon was down (deleted: its inode now holds {shown(holder.path)})" \
            if holder is not None and holder is not cp else ""
        if cp.gone_since is None and cp.source in self._allowed:
            moved = self._moved_identities(cp.source)
            try:
                copy = self._copy_of(cp, moved or {})
            except OSError as exc:
                self._count_error(cp.source, _io_reason(exc), exc.filename or cp.path, exc, HEAD_UNREADABLE)
                return False
            if copy is not None:
                if self._take_copy(None, cp, *copy) is not None:
                    self._read_on_where_it_is((cp.dev, cp.ino), cp, copy[0])
                return True
            if moved is None:
                return False
        self._replaced(cp, how)
        return True

    def _copy_of(self, cp: Checkpoint, moved: dict[tuple[int, int], str]) -> tuple[str, os.stat_result] | None:
        """A file that left the globs while the daemon was down, now under another inode: at the path it was read at
        or under its name among its source's `moved_to` matches, a regular file no checkpoint names whose first bytes
        are its (`cp` + `mv` or a backup restored, before or after PMTA's move-to moved it). Found by neither its
        inode nor as a new file (its first bytes are a known file's), it was said gone and its last records lost."""
        name = os.path.basename(cp.path)
        unreadable: OSError | None = None
        for path in [cp.path] + sorted(p for p in moved.values() if os.path.basename(p) == name and p != cp.path):
            try:
                st = os.stat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                head = read_head(path)
            except FileNotFoundError:
                continue
            except OSError as exc:  # may be it: not decided now (as `_locate`)
                exc.filename = exc.filename or path
                unreadable = unreadable or exc
                continue
            if head_matches(cp.fingerprint, head) and self._unclaimed((st.st_dev, st.st_ino), st, head, cp):
                return path, st
        if unreadable is not None:
            raise unreadable
        return None

    def _unclaimed(self, key: tuple[int, int], st: os.stat_result, head: bytes,
                   claimer: Checkpoint | None = None) -> bool:
        """Is the file in this inode one no checkpoint describes (or one `claimer` describes better)? A gone
        checkpoint (kept `tail.forget_after`) whose first bytes it does not hold names a file deleted before: ext4
        gives its inode to the next new file; so may a live one's, to a claimer's copy. A checkpoint of a file that
        held only its header (the bytes every file of the source starts with) gives way to one whose first record the
        file starts with."""
        if key in self.streams or key in self._read_before:
            return False
        cp = self.known.get(key)
        if cp is None or cp is claimer:
            return cp is None
        if not same_file(cp, st, head):
            # Its first bytes are not the checkpoint's: whatever that checkpoint's file became, this is not it. A
            # claimer's copy (its name and first bytes) then takes the inode, and the checkpoint it named is looked
            # for as a copy itself (`_take_copy`); else a live one keeps it (a rewrite in place is decided elsewhere).
            return cp.gone_since is not None or (claimer is not None and not head_matches(cp.fingerprint, head))
        if cp.gone_since is not None:  # a file read before, if its first record says so (a header says nothing:
            return not shares_first_record(cp.fingerprint, head)  # the name decides then, `_a_copy`)
        return not shares_first_record(cp.fingerprint, head) and claimer is not None \
            and shares_first_record(claimer.fingerprint, head)

    def _first_record_of_another(self, cp: Checkpoint, head: bytes) -> bool:
        """Does a file starting with `head` start with the first record another checkpoint of its source read?"""
        return any(other is not cp and other.source == cp.source and shares_first_record(other.fingerprint, head)
                   for other in self.known.values())

    def _take_copy(self, key: tuple[int, int] | None, cp: Checkpoint, path: str,
                   st: os.stat_result) -> tuple[str, os.stat_result] | None:
        """Re-key the checkpoint to its file's copy (as `_new_identity` does for one the globs match): no shorter
        than where reading stopped, it is read on from there (returned: where it is); shorter (an older backup), its
        records were all read before, and the checkpoint is retired (None)."""
        if st.st_size < cp.offset:
            cp.gone_since = cp.gone_since or time.time()
            log.warning("%s: the file read before is at %s under a new identity and shorter than where reading stopped "
                        "(%d of %d bytes: an older backup restored while the daemon was down?); its first bytes match: "
                        "the records it holds were read before and are not counted again", shown(cp.path),
                        shown(path), st.st_size, cp.offset)
            self.retired.append(cp)
            self._read_before.add((st.st_dev, st.st_ino))
            return None
        log.warning("%s: the file read before is at %s under a new identity (device %d inode %d, was %d/%d: copied or "
                    "restored from a backup while the daemon was down?); its first bytes match and it is no shorter "
                    "than where reading stopped", shown(cp.path), shown(path), st.st_dev, st.st_ino, cp.dev, cp.ino)
        if key is not None and self.known.get(key) is cp:
            del self.known[key]
        cp.dev, cp.ino = st.st_dev, st.st_ino
        new_key = (cp.dev, cp.ino)
        other = self.known.get(new_key)
        if other is not None and other.gone_since is None:  # a file that held only its header (`_unclaimed`): its
            self._displaced[new_key] = other  # own file is looked for as a copy, or said gone (`_copy_or_gone`)
            self._left_while_down.discard(new_key)
        self.known[new_key] = cp
        return path, st

    def _moved_while_down(self, scan_started: float) -> None:
        """Files PMTA created and its move-to moved away without the daemon seeing them in the globs: while it was
        down (a downtime longer than its move-interval), or between two scans. In a source's `moved_to`, new to its
        look (exporter/movedto.py) and named by no checkpoint, nothing read them: each is read whole from where it is,
        then retired (the next scan finds it outside the globs), as a file found there by its identity is. Without
        this their records were lost, and nothing said so. A copy of a file read before is not read again."""
        for source in self.sources:
            if source.label not in self.moved_to.pending:
                continue
            listed = self._identities(source.label, source.moved_to)
            if listed is None:  # a directory that could not be listed (counted and logged): looked at next scan
                continue
            index: tuple[dict[int, set[bytes]], dict[str, list[bytes]]] | None = None
            for key, path, st in self.moved_to.new_files(source.label, listed, scan_started):
                if key in self.streams or (key in self.known and self.known[key].gone_since is None):
                    continue
                try:
                    head = read_head(path)
                except OSError as exc:  # counted at each look, named once: dropped unnoticed after forget_after
                    self._count_error(source.label, _io_reason(exc), path, exc,
                                      "cannot read a file created and moved to where `moved_to` looks (read once it "
                                      "can be)")
                    self.moved_to.unread(source.label, path, st)
                    continue
                if compression_of(head) is not None or not self._unclaimed(key, st, head):
                    continue
                if index is None:
                    index = self._read_before_index(source.label)
                if _a_copy(head, os.path.basename(path), *index):
                    continue  # a copy of a file read before (`cp` gives it a new inode and time): not read again
                if self._scanned_once:
                    log.warning("%s: created and moved to where `moved_to` looks between two scans (never in the globs "
                                "when one looked; named by no checkpoint): reading it whole", shown(path))
                else:
                    log.warning("%s: created and moved to where `moved_to` looks while the daemon was down (changed "
                                "since its last checkpoint, named by none): reading it whole", shown(path))
                cp = Checkpoint(new_file_id(), source.label, path, st.st_dev, st.st_ino, fingerprint_of(head), 0, 0,
                                "")
                self.known[key] = cp
                self.streams[key] = FileStream(cp, self._allowed[source.label], self.metrics, self.error_log,
                                               self.tail.chunk_bytes, self.fields)
                self.streams[key].retries = not self.oneshot

    def _read_before_index(self, label: str) -> tuple[dict[int, set[bytes]], dict[str, list[bytes]]]:
        """The fingerprints of a source's files read before (every checkpoint of the last stop, and those made
        since), by the length they cover and by file name: a file in `moved_to` is checked against them in a few
        digests, not one per checkpoint (thousands, with `tail.forget_after`)."""
        by_len: dict[int, set[bytes]] = {}
        by_name: dict[str, list[bytes]] = {}
        for cp in (*self._loaded, *self.known.values(), *self.retired, *self._displaced.values()):
            if cp.source == label and cp.fingerprint:
                by_len.setdefault(fingerprint_len(cp.fingerprint), set()).add(cp.fingerprint)
                by_name.setdefault(os.path.basename(cp.path), []).append(cp.fingerprint)
        return by_len, by_name

    def _adopter(self, cp: Checkpoint, now: float) -> SourceConfig | None:
        """The source that takes over a checkpoint of a source no longer configured (renamed): the one whose globs
        match the path it was read at, as `_follow` does for a file still matched. None (reported, retired as gone)
        when none or several do."""
        matching = [s for s in self.sources if any(glob_matches(cp.path, p) for p in s.paths)]
        if len(matching) == 1:
            _adopt(cp, cp.path, matching[0].label)
            return matching[0]
        if cp.gone_since is None:
            log.warning("%s: was being read for source %s, which is no longer configured, and %s; any records after "
                        "%s (byte %d) were not read", shown(cp.path), cp.source,
                        "several configured sources' globs match it" if matching
                        else "no configured source's globs match it", line_text(cp.line_no), cp.offset)
            cp.gone_since = now
            self.retired.append(cp)
        return None

    def _report_gone(self, cp: Checkpoint, how: str = "") -> None:
        """Log, once, a file that was being read when the daemon stopped and is gone since (deleted, or its inode now
        another file's). PMTA writes only the newest file of a source: that one is a WARNING, an older one (closed,
        most likely read to its end before `delete-after` removed it) is INFO."""
        newest = os.path.basename(cp.path) >= self._newest_at_start.get(cp.source, "")
        how = how or (f"gone while the daemon was down (deleted, or moved where neither the globs nor the `moved_to` "
                      f"globs of source {cp.source} look)")
        log.log(logging.WARNING if newest else logging.INFO,
                "%s: %s; any records after %s (byte %d) were not read", shown(cp.path), how, line_text(cp.line_no),
                cp.offset)

    def _replaced(self, cp: Checkpoint, how: str = "") -> None:
        """A checkpoint whose identity now names another file: its own file is gone. Saved as gone (forgotten after
        `tail.forget_after`), so that a restart never takes it for the new file's; reported when it was being read at
        the last stop."""
        if cp.gone_since is None:
            if not self._scanned_once:
                self._report_gone(cp, how)
            cp.gone_since = time.time()
        self.retired.append(cp)

    def _unlistable_subdirectories(self, source: str, pattern: str) -> list[str]:
        """The directories a wildcard in the glob's directory part matches that cannot be listed (glob() skips them
        without a word), each counted and named once: a start at `end` waits for them (`_decide_pending_starts`)."""
        directory = os.path.dirname(pattern)
        if not glob.has_magic(directory):
            return []
        out = []
        for path in glob.glob(directory):
            exc = _list_error(path)
            if exc is not None:
                self._count_error(source, "scan", path, exc)
                out.append(path)
        return out

    def _name_unlistable_subdirectories(self, source: str, pattern: str) -> None:
        """Count and name (once) each directory a wildcard in the glob's directory part matches that cannot be listed:
        glob() skips it without a word. The rest of the source is looked at as ever (one such directory for good,
        `lost+found` at an archive volume's root, must not stop every look); its own floor stays where the last look
        that listed it left it (exporter/movedto.py), so a file moved there is new to a look once it can be listed."""
        self._unlistable_subdirectories(source, pattern)

    def _identities(self, source: str, patterns: list[str]) -> dict[tuple[int, int], str] | None:
        """(device, inode) -> path of every regular file the globs match; None when a glob's directory could not be
        listed (counted and logged): glob() would have said nothing, and a file there taken for gone."""
        out: dict[tuple[int, int], str] = {}
        complete = True
        for pattern in patterns:
            if not self._root_listable(source, pattern):
                complete = False
                continue
            self._name_unlistable_subdirectories(source, pattern)
            for path in sorted(glob.glob(pattern)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.setdefault((st.st_dev, st.st_ino), path)
        return out if complete else None

    def _locate(self, cp: Checkpoint, moved: dict[tuple[int, int], str]) -> tuple[str, os.stat_result] | None:
        """Where the checkpoint's file is now, by its identity: among `moved` (its source's `moved_to` matches), else
        an entry of the directory it was read in; its first bytes must still be the checkpoint's. Raises the OSError
        of a candidate that could not be read when no other one is the file (it may be: not declared gone). A file
        that held only its header when last read does not take a file another checkpoint's first record names."""
        candidates = [moved[(cp.dev, cp.ino)]] if (cp.dev, cp.ino) in moved else []
        try:
            with os.scandir(os.path.dirname(cp.path) or ".") as entries:
                candidates += sorted(e.path for e in entries if e.inode() == cp.ino)
        except OSError:
            pass
        unreadable: OSError | None = None
        for path in candidates:
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) != (cp.dev, cp.ino) or not stat.S_ISREG(st.st_mode):
                    continue
                head = read_head(path)
                if same_file(cp, st, head) and not _short_fingerprint_elsewhere(cp, path, head) \
                        and (shares_first_record(cp.fingerprint, head) or not self._first_record_of_another(cp, head)):
                    return path, st
            except FileNotFoundError:
                continue
            except OSError as exc:
                exc.filename = exc.filename or path
                unreadable = unreadable or exc
        if unreadable is not None:
            raise unreadable
        return None

    def _follow(self, key: tuple[int, int], source: str, path: str, st: os.stat_result) -> None:
        try:
            head = read_head(path)
        except OSError as exc:
            if key in self.known:  # the checkpoint's file, or a new one in its inode? Not a guess: the next scan
                first = key not in self._undecided  # logged once while it stays undecided (its stat succeeds each scan)
                self._undecided[key] = path
                self._count_error(source, _io_reason(exc), path, exc, HEAD_UNREADABLE, log_it=first)
                return
            head = b""  # a new file, unreadable for now: the stream's open() reports and retries
        self._undecided.pop(key, None)
        fingerprint = fingerprint_of(head)
        cp = self.known.get(key)
        if not self._scanned_once and (cp is None or not same_file(cp, st, head) or (
                cp.path != path and not shares_first_record(cp.fingerprint, head))):
            # (a checkpoint of a file that held only its header, found at another path: its fingerprint is the
            # header every file of the source starts with, so the inode may be another file's copy, which a
            # checkpoint of this path describes better)
            found = self._new_identity(key, source, path, st, head)
            if found is not None:
                cp = found
            elif cp is not None and cp.gone_since is not None and cp.path != path \
                    and not shares_first_record(cp.fingerprint, head):
                # A retired file's inode, taken while the daemon was down by a new file of another name: a fingerprint
                # without a first record matches every file of the source, and the new file resumed at the retired
                # one's offset, its first records never read (randomized restart seed 448). Kept in `_loaded`, the
                # retired checkpoint still tells its copies apart.
                cp = None
        if cp is not None and self._scanned_once and cp.path != path and not shares_first_record(cp.fingerprint, head):
            # While the daemon runs, a checkpoint no stream follows (a file retired: it left the globs or was deleted)
            # whose inode a glob match at another path holds: a new file in the freed inode (ext4 hands it to the
            # next file at once), unless the start of its first record says it is the file come back. A fingerprint
            # of the header and a few bytes of a record (a file retired before this run read it, as taken when it was
            # small) matches every file begun in the same minute: the new file's first records were skipped.
            cp = None
        compression = compression_of(head) if cp is None else None
        if compression is not None:
            if key not in self._compressed:
                self._compressed.add(key)
                warn_compressed(path, compression, source, "not followed")
            return
        # the source that read it is no longer configured (renamed), or keeps every type the new one does (a glob
        # given to another source, a renamed source's old name taken by a new one): nothing left to count again
        # (a checkpoint of a file that held only its header is that file at its own path only: another source's
        # files may start with the same header line)
        read_for = self._read_for(cp) if cp is not None else None
        reassigned = cp is not None and cp.source != source and self._reassigned(cp, path)
        handed = cp is not None and cp.source != source and (cp.source not in self._allowed or reassigned or (
            _keeps_nothing_more(self._allowed[source], read_for)
            and (cp.path == path or shares_first_record(cp.fingerprint, head))))
        note: str | None = None
        unchecked: str | None = None
        if cp is not None and same_file(cp, st, head) and (cp.source == source or handed) \
                and not _short_fingerprint_elsewhere(cp, path, head):
            if _lines_to_check(cp, head):  # its lines before the offset, counted at its first open, say whether it is
                unchecked = cp.path  # the file read (FileStream._check_lines: off the event loop, and once)
            if handed:
                _adopt(cp, path, source, "reassigned" if reassigned else "keeps" if cp.source in self._allowed
                       else "gone")
            elif unchecked is not None:
                log.info("%s: its first bytes (its header alone) cannot tell it from another file of source %s: its "
                         "lines before byte %d are counted at its first read to tell whether it is the file read "
                         "there (%s)", shown(path), source, cp.offset, line_text(cp.line_no))
            else:
                log.info("%s: resuming at byte %d (%s)", shown(path), cp.offset, line_text(cp.line_no))
            cp.path = path
            cp.gone_since = None
        elif (cut := self._cut_back_to_a_copy(key, cp, source, path, st, head)) is not None:
            cp, note = cut
        elif self._scanned_once and (cp is None or not same_file(cp, st, head)) \
                and (copied := self._copied_here(key, source, path, head)) is not None:
            taken = self._copy_checkpoint(key, copied, cp, source, path, st, head)
            if taken is None:
                return  # followed once the file it copies is read to its end
            cp, note = taken
        else:
            kept = ""
            if cp is not None and cp.source != source and same_file(cp, st, head) \
                    and (cp.path == path or shares_first_record(cp.fingerprint, head)):
                # a config edit gave its glob to another configured source (its content is the one read: the same
                # file; other bytes in its inode are a new file, and the old one's loss is said below). Not a file
                # of another name when the checkpoint's file held only its header: every file of both sources may
                # start with that header line, and the inode is then another source's new file (the checkpoint's
                # own file may be a copy elsewhere: `_displaced`)
                both = _shared_types(read_for, self._allowed[source])
                log.log(logging.WARNING if both else logging.INFO,
                        "%s: now matched by source %s, not %s; reading it from the start for %s%s", shown(path),
                        source, cp.source, source,
                        f" (records of types both keep are counted again: {both})" if both else "")
                if cp.gone_since is None:
                    cp.gone_since = time.time()
                self.retired.append(cp)
            elif cp is not None:
                when = "while it was not followed" if self._scanned_once else "while the daemon was down"
                if path == cp.path:
                    # In place: copytruncate or `: > file` (shorter than where reading stopped, or grown back past it
                    # meanwhile), rewritten, or deleted and a file of the same name given its inode: told apart by
                    # nothing but its first bytes. As a running stream does (FileStream._start_over): the header it
                    # had stays in force until it writes one (a writer goes on after a copytruncate without one; a
                    # file that starts with its own header line replaces it). Each record after a copytruncate that
                    # grew back past the offset was a missing_header error.
                    how = (f"truncated to {st.st_size} bytes {when}" if st.st_size < cp.offset else
                           f"truncated or rewritten in place {when} and grown back to {st.st_size} bytes, "
                           f"{'past' if st.st_size > cp.offset else 'as far as'} where reading stopped, its first "
                           "bytes no longer those read (or deleted, and a new file of its name took its inode)")
                    how += ": read from the start as a new file, its header kept until it writes one"
                    if cp.gone_since is not None or self._scanned_once:  # else said by `_replaced`
                        log.warning("%s: %s", shown(path), how)
                    self._replaced(cp, how)
                    kept = header_kept(cp.header)
                    if self.metrics and not self._scanned_once:
                        self.metrics.truncations.labels(source).inc()
                else:
                    log.info("%s: its inode held %s (read to byte %d), whose first bytes it does not start with (or "
                             "they cannot tell: its header alone); a new file: reading it from the start",
                             shown(path), shown(cp.path), cp.offset)
                    if not self._scanned_once and cp.gone_since is None:
                        self._displaced[key] = cp  # its file may be a copy at its path or in moved_to: decided at the
                        # end of this scan (`_new_identity` takes it back if a glob match is it)
                    else:
                        self._replaced(cp, f"gone {when} (deleted: its inode now holds {shown(path)})")
            offset, line_no, header = 0, 0, kept
            first_start = self.start_at_end and not self._scanned_once
            if first_start or self._starts_at_end(source, path):
                offset, line_no = st.st_size, UNCOUNTED  # a pending directory listed at last: its lines are
                # counted at the first open (FileStream.open), off the event loop
            if first_start:
                try:
                    offset = _whole_lines_end(path, st.st_size)
                    line_no, header = _count_lines(path, offset)
                except OSError as exc:  # read from where it ends now once it can be: not its whole history then
                    log.warning("%s: cannot be read (%s; source %s): tail.start_position: end still applies: it "
                                "is read from its current end (%d bytes) once it can be, its lines counted then",
                                shown(path), (exc.strerror or str(exc)).lower(), source, st.st_size)
            cp = self._new_checkpoint(key, source, path, st, fingerprint, offset, line_no, header)
        self.streams[key] = FileStream(cp, self._allowed[source], self.metrics, self.error_log,
                                       self.tail.chunk_bytes, self.fields)
        self.streams[key].retries = not self.oneshot
        self.streams[key].copy_note = note
        self.streams[key].lines_unchecked = unchecked

    def _new_checkpoint(self, key: tuple[int, int], source: str, path: str, st: os.stat_result, fingerprint: bytes,
                        offset: int, line_no: int = UNCOUNTED, header: str = "") -> Checkpoint:
        """A new file id for the file at `key`, read on from `offset` (its lines counted later when UNCOUNTED), known
        from now on; the correlator's process starts there too when it is past byte 0 (`_starts_mid_file`)."""
        cp = Checkpoint(new_file_id(), source, path, st.st_dev, st.st_ino, fingerprint, offset, line_no, header,
                        first_header="" if offset else header)  # at byte 0: a header kept after a truncation
        self._starts_mid_file(cp)
        self.known[key] = cp
        return cp

    def _starts_mid_file(self, cp: Checkpoint) -> None:
        """A new file id read from past byte 0 (a start at `end`, a copy's end): the correlator's own process starts
        there too, not at byte 0 as for any other new file (the first run's own start commit starts it everywhere)."""
        if cp.offset and (self._scanned_once or not self.start_at_end):
            self.started_at_end.add(cp.file_id)

    def _cut_back_to_a_copy(self, key: tuple[int, int], cp: Checkpoint | None, source: str, path: str,
                            st: os.stat_result, head: bytes) -> tuple[Checkpoint, str] | None:
        """A file not followed (at a start: the daemon was down) found at its path in its inode, shorter than where
        reading stopped, its first bytes those read through its first record: an older copy of it restored over it
        in place (`cp backup file`). It was read again from byte 0, each record counted twice, where a copy under a
        new inode was not (`_new_identity`). Now the same: the checkpoint is retired (counted as a truncation), and
        the file goes on from its end as a new file (its lines counted at its first read; the note says it then)."""
        if cp is None or cp.path != path or cp.source != source or (cp.dev, cp.ino) != key \
                or st.st_size >= cp.offset or not shares_first_record(cp.fingerprint, head):
            return None
        cp.gone_since = cp.gone_since or time.time()
        self.retired.append(cp)
        if self.metrics:
            self.metrics.truncations.labels(source).inc()
        fresh = self._new_checkpoint(key, source, path, st, fingerprint_of(head), st.st_size)
        when = "while it was not followed" if self._scanned_once else "while the daemon was down"
        return fresh, (f"cut back in place from {cp.offset} to {st.st_size} bytes {when} (an older copy of it "
                       "restored over it?), its first bytes unchanged")

    def _copied_here(self, key: tuple[int, int], source: str, path: str, head: bytes) -> Checkpoint | None:
        """While the daemon runs, a new inode at `path` that starts as a file read there did, through its first
        record, when that file's inode left the path (`cp backup tmp && mv tmp path`, a backup restored, the file
        moved out of the globs and copied back): the checkpoint of that file (the one still followed, else the one
        read furthest), or None. PMTA's next file starts with a record of its own: not a copy. A copy of a file
        still in the globs under another name is another file (as at a start, `_new_identity`)."""
        best: Checkpoint | None = None
        for old_key, cp in self.known.items():
            if old_key == key or cp.path != path or cp.source != source \
                    or (cp.gone_since is None and old_key in self._matched_now) \
                    or not shares_first_record(cp.fingerprint, head):
                continue
            if best is None or (cp.gone_since is None, cp.offset) > (best.gone_since is None, best.offset):
                best = cp
        return best

    def _copy_checkpoint(self, key: tuple[int, int], copied: Checkpoint, cp: Checkpoint | None, source: str,
                         path: str, st: os.stat_result, head: bytes) -> tuple[Checkpoint, str] | None:
        """The checkpoint of a copy of the file `copied` (`_copied_here`): a new file id that goes on where reading
        the file stopped, or at the copy's end when shorter (an older backup): what it holds up to there was read
        from that file. None while that file is still read (through its descriptor: records PMTA wrote to it
        before the copy was made are read there, once): followed once it is retired, from where its reading ended
        (`_follow_waiting_copies`). `cp`: a checkpoint of another file this inode held, retired."""
        size = self._copies.setdefault(key, st.st_size)  # its size when found: what came after is new
        reading = self.streams.get((copied.dev, copied.ino))
        if reading is not None and reading.cp is copied:
            return None
        del self._copies[key]
        if cp is not None:
            self._replaced(cp)
        offset = min(size, copied.offset)
        taken = self._new_checkpoint(key, source, path, st, fingerprint_of(head), offset)
        return taken, (f"replaced by a copy of the file read there before (device {st.st_dev} inode {st.st_ino}, "
                       f"was {copied.dev}/{copied.ino}: `cp` + `mv` over it, a backup restored?)")

    def _follow_waiting_copies(self) -> None:
        """Copies that waited for the file they copy to be retired (`_copy_checkpoint`) are followed at once, not at
        the next scan: a stop in between saved that file as gone, and the next start took the copy for a new file,
        read whole."""
        for key in [k for k in self._copies if k not in self.streams]:
            match = self._matched_now.get(key)
            if match is None:
                continue
            source, path, _ = match
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == key:
                self._follow(key, source, path, st)

    def _new_identity(self, key: tuple[int, int], source: str, path: str, st: os.stat_result,
                      head: bytes) -> Checkpoint | None:
        """At the first scan, the checkpoint of the file read before at this path when a new inode there holds its
        first bytes: a log directory restored from a backup, copied to another disk, or a file replaced by `cp` + `mv`
        while the daemon was down. Read again from byte 0, each of its records was counted twice.

        No shorter than where reading stopped, it is that file: the checkpoint is re-keyed and read on from where it
        stopped (the same file id: the correlator's record names stay; spans accept the new inode by its first bytes,
        exporter.spans.read_span). Shorter (a backup older than the checkpoint), it holds only records read before:
        followed as a new file from its end, so that none is counted again. Not when the old inode is matched still
        holding the old file (then the path holds a copy: another file)."""
        candidates = [(k, c, False) for k, c in self.known.items()] + [(k, c, True) for k, c in self._displaced.items()]
        for old_key, cp, displaced in candidates:
            if cp.path != path or cp.source != source or cp.gone_since is not None \
                    or not head_matches(cp.fingerprint, head):
                continue
            if not displaced and (old_key in self.streams or old_key == key or self._still_holds(old_key, cp)):
                continue
            del (self._displaced if displaced else self.known)[old_key]
            other = self.known.get(key)
            if other is not None and other is not cp:  # this inode's own checkpoint: its file may have a new
                self._displaced[key] = other  # identity too (two copies that took each other's inodes)
            if st.st_size >= cp.offset:
                log.warning("%s: the file read before has a new identity (device %d inode %d, was %d/%d: restored "
                            "from a backup, copied, or moved to another disk while the daemon was down?); its first "
                            "bytes match and it is no shorter than where reading stopped: resuming at byte %d "
                            "(%s)", shown(path), st.st_dev, st.st_ino, cp.dev, cp.ino, cp.offset, line_text(cp.line_no))
                cp.dev, cp.ino = st.st_dev, st.st_ino
                self.known[key] = cp
                return cp
            try:
                line_no, header = _count_lines(path, st.st_size)
            except OSError:  # decided by the usual rules (a new file, its bytes read)
                (self._displaced if displaced else self.known)[old_key] = cp
                if other is not None and other is not cp:
                    del self._displaced[key]
                return None
            log.warning("%s: the file read before has a new identity and is shorter than where reading stopped (%d "
                        "of %d bytes: restored from an older backup while the daemon was down?); its first bytes "
                        "match: the records it holds were read before and are not counted again, and reading goes on "
                        "from its end (byte %d, line %d) as a new file", shown(path), st.st_size, cp.offset,
                        st.st_size, line_no)
            cp.gone_since = time.time()
            self.retired.append(cp)
            # (the correlator's process read the records it holds under the old id: it starts at the end too)
            fresh = self._new_checkpoint(key, source, path, st, fingerprint_of(head), st.st_size, line_no, header)
            return fresh
        return None

    def _still_holds(self, old_key: tuple[int, int], cp: Checkpoint) -> bool:
        """Is the checkpoint's own inode still its file, matched by this scan or in its source's `moved_to` (PMTA's
        move-to: a file of the same name may follow it there, its first bytes the same header), not an inode a new
        file took? Then the path holds another file, and the old one is read to its end where it is."""
        found = self._matched_now.get(old_key)
        if found is not None:
            old_path = found[1]
        else:
            moved = self._moved_identities(cp.source)
            if moved is None:
                return True  # a moved_to directory could not be listed: cannot tell, not taken for a copy
            if old_key not in moved:
                return False
            old_path = moved[old_key]
        try:
            head = read_head(old_path)
            return same_file(cp, os.stat(old_path), head) and not _short_fingerprint_elsewhere(cp, old_path, head) \
                and (shares_first_record(cp.fingerprint, head) or not self._first_record_of_another(cp, head))
        except OSError:
            return True  # cannot tell: not taken for a copy

    # --- reading ---------------------------------------------------------------------------------
    async def poll(self, on_batch: OnBatch, force_scan: bool = False,
                   should_stop: Callable[[], bool] | None = None) -> bool:
        """One pass over every file; True if some file may have more to read right now.

        `should_stop` is asked between files so a stop request is not held up by a long pass.
        """
        self.error_log.expire()  # the unlogged bad lines of a window that has passed: said now, not at the next one
        if force_scan or time.monotonic() - self._last_scan >= self.tail.rescan_interval:
            self.scan()
        more = cut_short = False
        budget = 1 << 30 if self.oneshot else MAX_CHUNKS_PER_PASS  # oneshot: config order, file by file
        for key in sorted(self.streams, key=lambda k: (self._order.get(self.streams[k].cp.source, 0),
                                                       self.streams[k].cp.path)):
            if should_stop is not None and should_stop():
                more = cut_short = True
                break
            stream = self.streams[key]
            if stream.refused is not None:
                if stream.gone or not stream.refusal_lifted():
                    continue  # not read, by design (said once): retired when it leaves the globs
                self.retired.extend(stream.superseded)  # rewritten in place: read from byte 0 as a new file
                stream.superseded.clear()
                self.known[key] = stream.cp
            if stream.gone and stream.file is None and not self._unread_where_it_went(key, stream):
                continue  # fully read when it was closed; retired below
            if stream.gone or stream.file is not None or stream.copy_note is not None or self._grew(stream):
                if stream.file is None and not await self._make_room():
                    continue  # every descriptor is held by a file with bytes unread: read when one is done
                more |= await stream.read(on_batch, budget, final=self.oneshot, should_stop=should_stop)
                if self._ends_unterminated(stream) and self._settled(stream) \
                        and (stream.gone or self._newer_file_written(stream)):
                    # quiet since before that read (a read that got bytes moved last_growth), and no longer written:
                    # gone from the globs, or PMTA on to a later file of its rotation series (PMTA writes a series'
                    # newest only: killed mid-write, then restarted; never for another series' file, e.g. diag). The
                    # unterminated last line is the file's last record; read(final) takes it at once, unless bytes
                    # came meanwhile
                    more |= await stream.read(on_batch, 1, final=True, should_stop=should_stop)
                if stream.superseded:  # truncated or rewritten: its old checkpoint retired, the new one known
                    self.retired.extend(stream.superseded)
                    stream.superseded.clear()
                    self.known[key] = stream.cp
        if not cut_short:  # files this pass did not reach (a stop, a pause, a /metrics render) are not retired: a
            await self._retire_and_idle()  # gone one never opened was said lost with its bytes unread
        self.update_gauges()
        return more

    def _moved_identities(self, label: str) -> dict[tuple[int, int], str] | None:
        """(device, inode) -> path of the files a source's `moved_to` globs match ({} without any; None when one of
        their directories could not be listed)."""
        source = next((s for s in self.sources if s.label == label), None)
        return self._identities(label, source.moved_to) if source is not None and source.moved_to else {}

    def _unread_where_it_went(self, key: tuple[int, int], stream: FileStream) -> bool:
        """A file that left the globs while no descriptor of it was open: closed when read to its end (idle), or not
        opened yet (a start a moment before PMTA's move-to took it; one closed to keep tail.max_open_files). Looked
        for once where it went, by its identity (its source's `moved_to`, its own directory): with bytes past its
        checkpoint, it is read on there (retired as read to its end, those records were lost, silently)."""
        if key in self._looked_for:
            return False
        self._looked_for.add(key)
        try:
            found = self._locate(stream.cp, self._moved_identities(stream.cp.source) or {})
        except OSError:
            return False
        if found is None or found[1].st_size <= stream.cp.offset:
            return False
        path = found[0]
        log.info("%s: left the globs before it was read to its end: reading it on as %s from byte %d (%s)",
                 shown(stream.cp.path), shown(path), stream.cp.offset, line_text(stream.cp.line_no))
        stream.cp.path = path
        stream.parser.path = shown(path)
        return True

    async def _make_room(self) -> bool:
        """Keep at most `max_open` descriptors (tail.max_open_files, or what the open-file limit leaves): close a file
        read to its end first, else one still being written (it grew since its last read began: PMTA's current file,
        which no delete-after takes), else, as the last resort, one whose only unread bytes are a line without its
        newline (a crash cut a record short: reopened, it is read again); the least recently grown first. False when
        every descriptor is held by a file with whole lines unread that no longer grows (a backlog, a file just
        rotated): such a file is not closed (a delete-after, or a move-to without `moved_to`, would take its rest
        with it) and the new one waits its turn.

        A file that left the globs stays open until drained (after a delete its descriptor is the only
        way to its data); a closed file is reopened at its offset when it grows again. The descriptors held for the
        correlator process (`held`) count too: when the budget is short, the oldest is closed after the files it does
        not need, so the descriptors of log files never pass `max_open`.
        """
        open_streams = [s for s in self.streams.values() if s.file is not None]
        excess = len(open_streams) + len(self.held) + 1 - self.max_open  # (held for the correlator process: counted)
        if excess <= 0:
            return True
        read_out: list[FileStream] = []
        written: list[FileStream] = []
        tails: list[FileStream] = []
        for stream in open_streams:
            if stream.gone:
                continue
            size = _open_size(stream)
            if size <= stream.cp.offset and not stream.pending:
                read_out.append(stream)
            elif size > stream.size:
                written.append(stream)
            elif size <= stream.cp.offset + len(stream.pending):
                tails.append(stream)
        by_growth = [s for group in (read_out, written, tails) for s in sorted(group, key=lambda s: s.last_growth)]
        if len(by_growth) + len(self.held) < excess:
            return False
        # Closed first: files the correlator process does not need (reopened when they grow, nothing lost); then the
        # descriptors held for it of files gone (the oldest first: their unread rest is lost to it, and counted as
        # such by it); then files it needs
        free: list[FileStream] = []
        needed: list[FileStream] = []
        for stream in by_growth:
            (needed if self._correlator_needs(stream) else free).append(stream)
        for stream in free[:excess]:
            await stream.close()
        excess -= min(excess, len(free))
        while excess > 0 and self.held:
            self._let_go_oldest_held()
            excess -= 1
        for stream in needed[:excess]:
            await stream.close()
        return True

    def _grew(self, stream: FileStream) -> bool:
        try:
            st = os.stat(stream.cp.path)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != stream.key:
            return False
        self._seen_size[stream.key] = st.st_size
        return st.st_size != stream.cp.offset or stream.changed_since_closed(st)

    @staticmethod
    def _ends_unterminated(stream: FileStream) -> bool:
        """Does the file end, for now, in a line without its newline: bytes held for the rest of a line, a run of NULs,
        an overlong line being skipped? Not a line this stream was resumed inside (`FileStream.resumed_inside_line`):
        at a file's end, the last line a previous run read as final (counted then) or an overlong one it skipped."""
        resumed = stream.resumed_inside_line and not stream.gone  # (a gone file's: read as ever)
        return bool(stream.pending or stream.nul_run or (stream.skipping and not resumed))

    def _newer_file_written(self, stream: FileStream) -> bool:
        """Has PMTA moved on from this file to a later one of its rotation series (`_rotation_series`): another
        followed file of the stream's source, still in the globs, in the same directory, with the same base name and
        extension, whose name sorts after this one's (a later date, else a higher NNNN)? PMTA writes the newest file
        of a series only, so this one is complete: its unterminated last line (PMTA killed mid-write) is its last
        record, read as a gone file's is. Never for the newest file of its series, whose line a buffered write may
        have split (the rest comes later), nor for a file whose name shows no rotation suffix. Files of other series
        are written at the same time (diag-*.csv beside acct-*.csv under one `*.csv`, acct-*.json beside acct-*.csv,
        a second PMTA's directory): however recently written, they say nothing of this one. The names, not the
        modification times (an older file touched later is no newer) nor the order the tailer read the files in."""
        mine = _rotation_series(stream.cp.path)
        if mine is None:
            return False
        series, place = mine
        for other in self.streams.values():
            if other is stream or other.gone or other.refused is not None or other.cp.source != stream.cp.source:
                continue
            theirs = _rotation_series(other.cp.path)
            if theirs is not None and theirs[0] == series and theirs[1] > place:
                return True
        return False

    def _settled(self, stream: FileStream) -> bool:
        """Has a file that left the globs (or whose series PMTA is on to a later file of) stopped growing? Not for
        `tail.rescan_interval` since its last growth: a writer that still holds it (renamed away by an external
        rotation) gets that long to finish its writes, and then its unterminated last line, if any, is read as its
        last record (poll)."""
        return self.oneshot or time.monotonic() - stream.last_growth >= self.tail.rescan_interval

    async def _retire_and_idle(self) -> None:
        now = time.monotonic()
        for key in list(self.streams):
            stream = self.streams[key]
            if stream.gone:
                if stream.file is not None and (stream.behind > 0 or not self._settled(stream)):
                    continue  # still draining a rotated-away file, or it grew a moment ago
                seen = self._seen_size.pop(key, 0)  # (a file refused by design owes no byte: none lost)
                unread = seen - stream.cp.offset if stream.file is None and stream.refused is None else 0
                self._hold(stream)
                await stream.close()
                del self.streams[key]
                self._looked_for.discard(key)
                stream.cp.gone_since = time.time()
                self.retired.append(stream.cp)
                if self.metrics:
                    self.metrics.rotations.labels(stream.cp.source).inc()
                if unread > 0:
                    self._report_lost(stream.cp, unread)
                elif stream.refused is not None:
                    log.info("%s: retired, not read (%s)", shown(stream.cp.path), stream.refused)
                else:
                    log.info("%s: drained and retired at byte %d", shown(stream.cp.path), stream.cp.offset)
                if self._copies:
                    self._follow_waiting_copies()
            elif stream.file is not None and not stream.pending and stream.behind == 0 \
                    and now - stream.last_growth >= self.tail.idle_close_after and not self._correlator_needs(stream):
                await stream.close()
        cutoff = time.time() - self.tail.forget_after
        for key, cp in list(self.known.items()):
            if key not in self.streams and cp.gone_since is not None and cp.gone_since < cutoff:
                del self.known[key]

    def _correlator_needs(self, stream: FileStream) -> bool:
        """Has the correlator process (hold_drained) still bytes of this file to read? It reads a file deleted or
        renamed away through a descriptor of this process (`_hold`): one closed for idling before the file went left
        none, and the bytes it had not read were lost to the timelines. So a file it needs is not closed for idling
        (only `_make_room` closes it, to keep tail.max_open_files). As the database said at the last `release_held`:
        not there yet (it starts a new file at byte 0), or its sink position short of what was read."""
        if not self.hold_drained or stream.cp.offset == 0:
            return False
        known = self._sink_files.get(stream.cp.file_id)
        return known is None or known[1] < stream.cp.offset

    def _report_lost(self, cp: Checkpoint, unread: int) -> None:
        """A file that went (deleted, or moved where no glob or `moved_to` finds it) while no descriptor of it was open
        and bytes of it were unread: they are lost. Said, and counted (`read_errors_total{reason="lost"}`)."""
        log.warning("%s: gone before it was read to its end (source %s): %d bytes from byte %d (%s) never read, "
                    "their records lost; no descriptor of it was open (tail.max_open_files: %d)", shown(cp.path),
                    cp.source, unread, cp.offset, next_line_text(cp.line_no), self.max_open)
        if self.metrics:
            self.metrics.read_errors.labels(cp.source, "lost").inc()

    def _hold(self, stream: FileStream) -> None:
        """A drained file that left the globs: a descriptor of it kept for the correlator process (hold_drained)."""
        if not self.hold_drained or stream.file is None or stream.cp.file_id in self.held:
            return
        try:
            fd = os.dup(stream.file.fileno())
        except OSError as exc:  # out of descriptors: the correlator process reports what it cannot read
            log.warning("%s: not kept open for the correlator process: %s", shown(stream.cp.path), exc.strerror or exc)
            return
        self.held[stream.cp.file_id] = (fd, stream.cp.offset, time.monotonic(), stream.cp.path)

    def _let_go_oldest_held(self) -> None:
        """Close the oldest descriptor held for the correlator process (to keep tail.max_open_files): the rest of that
        file it has not read is lost to its timelines (it says so, and counts it in
        watchtower_commit_backlog_lost_bytes_total)."""
        file_id = min(self.held, key=lambda f: self.held[f][2])
        fd, offset, _since, path = self.held.pop(file_id)
        os.close(fd)
        log.warning("%s: gone from the globs (%d bytes); the descriptor kept for the correlator process is closed "
                    "before that process read it to its end, to keep tail.max_open_files (%d): what it had not read "
                    "is lost to its timelines", shown(path), offset, self.max_open)

    def release_held(self, sink_files: dict[str, tuple[int, int]]) -> None:
        """Close the descriptors of files the correlator process has read to the end (`sink_files`: file_id ->
        (committed offset, sink position), StateStore.sink_files), or that the database forgot long ago. Kept: a file
        the process has still to read is not closed for idling either (`_correlator_needs`)."""
        self._sink_files = sink_files
        now = time.monotonic()
        for file_id, (fd, offset, since, _path) in list(self.held.items()):
            known = sink_files.get(file_id)
            if (known is not None and known[1] >= offset) or (known is None and now - since > self.tail.forget_after):
                del self.held[file_id]
                os.close(fd)

    def look_while_paused(self) -> None:
        """While reading is paused (the daemon's commits failing with the backlog full), at the polls' cadence: the
        lag gauges from each followed file's size now (an fstat each, a stat of an idle one's path; nothing read), so
        the bytes written meanwhile count as behind and the lag alerts can fire during the outage."""
        now = time.monotonic()
        if now - self._last_look < self.tail.poll_interval:
            return
        self._last_look = now
        for stream in self.streams.values():
            stream.look()
        self.update_gauges()

    def update_gauges(self) -> None:
        """Files followed, open, and bytes behind per source, from the sizes seen last: at the end of each read pass
        or paused look, and before each /metrics snapshot (Daemon._refresh_gauges)."""
        if not self.metrics:
            return
        per_source: dict[str, list[int]] = {s.label: [0, 0] for s in self.sources}
        for stream in self.streams.values():
            acc = per_source.setdefault(stream.cp.source, [0, 0])
            acc[0] += 1
            acc[1] += stream.behind
        for source, (n, behind) in per_source.items():
            self.metrics.files_followed.labels(source).set(n)
            self.metrics.bytes_behind.labels(source).set(behind)
        self.metrics.files_open.set(sum(1 for s in self.streams.values() if s.file is not None))

    def take_checkpoints(self) -> list[Checkpoint]:
        """Checkpoints whose offset changed since the last call, plus retired ones; the ids streams took up past byte
        0 meanwhile join `started_at_end`, which the same commit takes."""
        out = []
        for stream in self.streams.values():
            if stream.started_mid_file:  # (cut back to an older copy, taken up at its end: maybe mid-read, while its
                self.started_at_end.update(stream.started_mid_file)  # lines are counted, its checkpoint taken here)
                stream.started_mid_file.clear()
            if stream.cp.offset != stream.committed_offset or stream.gone:
                stream.committed_offset = stream.cp.offset
                out.append(stream.cp)
        out.extend(self.retired)
        self.retired = []
        return out

    async def close(self) -> None:
        for stream in self.streams.values():
            await stream.close()
        for fd, _offset, _since, _path in self.held.values():
            os.close(fd)
        self.held.clear()
        self.error_log.flush()
