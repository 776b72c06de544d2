"""One followed file: bytes -> complete lines -> parser, with the offset that makes restarts exact.

A file is known by (device, inode) plus a fingerprint of its first bytes, never by its name, so a
file PMTA moves away keeps its place and a reused inode is not mistaken for the old file. Only
newline-terminated lines are handed on; a partial last line waits for the rest, and so does a
record whose quoted field runs on past the last line read (the parser leaves it unconsumed). `offset`
is the byte just after the last complete record consumed: the value a checkpoint stores and a restart
resumes from. A file that gets shorter than `offset` (truncated), or whose first bytes changed (rewritten),
is followed as a new file, under a new id, from byte 0, with the header it had until it writes one again; one cut
back to an older copy of itself (its first bytes, through its first record, unchanged) holds only records read
before, and is followed as a new file from its end.
"""

from __future__ import annotations

import csv
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from exporter import jsonrecords
from exporter.fingerprint import (
    compression_of,
    fingerprint_len,
    fingerprint_of,
    head_matches,
    read_head,
    shares_first_record,
    whole_identity,
)
from exporter.linecount import COUNT_SAID_BYTES, UNCOUNTED, count_lines, whole_lines_end
from exporter.metrics import SelfMetrics
from exporter.parser import NO_HEADER, ErrorLog, FileParser, Segment, overlong_unpadded
from exporter.records import MAX_LINE_BYTES, Columns, RecordBatch, is_header, shown
from exporter.safeopen import open_regular, open_regular_file
from exporter.spans import Span, inside_a_line

if TYPE_CHECKING:
    from aiofiles.threadpool.binary import AsyncBufferedReader

log = logging.getLogger("watchtower.tailer")

MAX_PENDING_LINE = MAX_LINE_BYTES
"""A 'line' longer than this is not PMTA output: it is skipped to its newline as one error (not held in memory)."""
LONG_SAMPLE_BYTES = 256
"""How much of an overlong line its error log shows."""


@dataclass(slots=True)
class Checkpoint:
    """What the state database remembers about one file."""

    file_id: str
    source: str
    path: str
    dev: int
    ino: int
    fingerprint: bytes
    offset: int
    line_no: int
    header: str
    gone_since: float | None = None
    records: str | None = None
    """The record types the source reading it keeps (`b,d`; `*`: every type): what the bytes before `offset` were read
    for, compared when a config edit gives the file to another source. None: not known (an older database)."""
    first_header: str = ""
    """The header in force at byte 0 of this file id: '' but for a file truncated or rewritten in place, whose writer
    goes on appending records without writing its header again (`header_kept`). Where the correlator's own process
    starts reading a new file id (exporter.state); not stored: that process's position is, once written."""


def records_text(allowed: frozenset[str] | None) -> str:
    return "*" if allowed is None else ",".join(sorted(allowed))


def records_of(text: str) -> frozenset[str] | None:
    return None if text == "*" else frozenset(t for t in text.split(",") if t)


def new_file_id() -> str:
    return secrets.token_hex(8)


def _lines_and_last_byte(fd: int, upto: int) -> tuple[tuple[int, str], bytes]:
    """(newlines and header in the first `upto` bytes, the byte before `upto`: b"" at 0): `FileStream._check_lines`."""
    return count_lines(fd, upto), os.pread(fd, 1, upto - 1) if upto else b""


def same_file(cp: Checkpoint, st: os.stat_result, head: bytes) -> bool:
    """Is the file at (dev, ino) whose first bytes are `head` the one the checkpoint describes?"""
    if (cp.dev, cp.ino) != (st.st_dev, st.st_ino) or st.st_size < cp.offset:
        return False
    return head_matches(cp.fingerprint, head)


@dataclass(frozen=True, slots=True)
class Replaced:
    """Why the bytes at a followed identity are no longer the file read before (`why_replaced`)."""

    why: str
    older_copy: bool = False
    """Cut back to bytes that still start as they did, through the first record read: an older copy of the file
    restored over it in place (`cp backup file`), holding only records read before."""
    new_file: bool = False
    """A new file that took the inode of one deleted while no descriptor of it was open: no truncation."""


def why_replaced(size_before: int, size: int, fingerprint: bytes,
                 read_head_of: Callable[[int], bytes]) -> Replaced | None:
    """Why a file at the same identity is no longer the one read before, or None while it is: shorter than
    `size_before`, cut back to an older copy of itself (its first bytes, `read_head_of(n)`, still hold those of
    `fingerprint` through a first record) or truncated (copytruncate, `: > file`: fewer bytes than the fingerprint
    covers, or others); or first bytes that no longer match `fingerprint` (rewritten in place). A file without a
    fingerprint yet, or whose head cannot be read, is taken as the same (truncated, when shorter)."""
    if size < size_before:
        if _starts_as_before(size, fingerprint, read_head_of):
            return Replaced(f"cut back from {size_before} to {size} bytes, its first bytes unchanged", older_copy=True)
        return Replaced(f"truncated from {size_before} to {size} bytes")
    if not fingerprint:
        return None
    try:
        head = read_head_of(fingerprint_len(fingerprint))
    except OSError:
        return None
    return None if head_matches(fingerprint, head) else Replaced("rewritten (its first bytes changed)")


def _starts_as_before(size: int, fingerprint: bytes, read_head_of: Callable[[int], bytes]) -> bool:
    """Does a file of `size` bytes still hold every byte `fingerprint` covers, through the start of a first record
    (fingerprint.shares_first_record: a header alone is every file's)? Not after copytruncate or `: > file`."""
    covered = fingerprint_len(fingerprint)
    if not fingerprint or size < covered:
        return False
    try:
        return shares_first_record(fingerprint, read_head_of(covered))
    except OSError:
        return False


def header_kept(header: str) -> str:
    """The header text a file truncated or rewritten in place goes on with until it writes a header line again: a
    writer whose file logrotate's copytruncate emptied appends records without one (PMTA writes its header when it
    opens a file), and each was a missing_header error. '' for a file without a CSV header (none yet, or in PMTA's
    JSON form, whose records name their fields: its form is decided anew)."""
    return "" if header in (NO_HEADER.header_line, jsonrecords.COLUMNS.header_line) else header


OnBatch = Callable[["FileStream", RecordBatch], None]


MAX_HEADER_SCAN = 64 * 1024
"""Bytes of a file's start searched for its header line's end (a PMTA header is a few hundred bytes)."""


def lone_cr_header(data: bytes) -> bool:
    """Do a file's first bytes hold a header line ended by a CR alone (no LF after it)? Such a file is no CSV PMTA
    wrote: every line ends so (`tr '\\n' '\\r'`, old Mac tools)."""
    cr = data.find(b"\r", 0, MAX_HEADER_SCAN)
    if cr < 0 or data[cr + 1 : cr + 2] == b"\n" or b"\n" in data[:cr] or cr + 1 == len(data):
        return False
    return is_header(next(csv.reader([data[:cr].decode("utf-8", "replace")]), []))


def warn_compressed(path: str, compression: str, source: str, what: str) -> None:
    """Once per file: a glob that also matches rotated files logrotate compressed (their bytes are no CSV)."""
    log.warning("%s: compressed (%s; source %s): %s; narrow the glob to the files PMTA writes (e.g. %s-*.csv)",
                shown(path), compression, source, what, source)


def __getattr__(name: str) -> Any:
    """`exporter.filestream.aiofiles`, imported on first use: blocking reads (oneshot) never load it
    (nor asyncio, which it imports)."""
    if name == "aiofiles":
        import aiofiles

        return aiofiles
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_BLOCKING: ContextVar[bool] = ContextVar("watchtower_blocking_reads", default=False)


@contextmanager
def blocking_reads() -> Iterator[None]:
    """FileStreams created inside (in this thread/context) read with plain blocking calls.

    For a process with nothing else to serve (the metrics-only oneshot): their coroutines then never
    suspend, so the Tailer's `poll()` can be driven to completion without an event loop (no asyncio,
    no aiofiles, no executor thread per read), and a read returns the file's bytes without a hop
    through a thread pool. The reads themselves are the same (`chunk_bytes` at a time): the same
    chunks, so the same output, as the event loop's reads would give."""
    token = _BLOCKING.set(True)
    try:
        yield
    finally:
        _BLOCKING.reset(token)


class FileStream:
    """Reads one file from `offset` onwards and hands each chunk's valid rows to `on_batch`."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        allowed: frozenset[str] | None,
        metrics: SelfMetrics | None,
        error_log: ErrorLog,
        chunk_bytes: int,
        fields: frozenset[str] | None = None,
    ) -> None:
        self.cp = checkpoint
        checkpoint.records = records_text(allowed)
        columns = Columns.of_header_line(checkpoint.header)
        self.parser = FileParser(checkpoint.source, shown(checkpoint.path), allowed, columns, checkpoint.line_no,
                                 error_log, fields=fields)
        self.metrics = metrics
        self.chunk_bytes = chunk_bytes
        self.blocking = _BLOCKING.get()
        """Plain blocking file calls instead of aiofiles (`blocking_reads`)."""
        self.file: AsyncBufferedReader | Any | None = None
        self.pending = b""
        self._warned_header: tuple[str, ...] | None = None
        self.skipping = False
        """Inside a line over MAX_LINE_BYTES (its error counted): bytes are consumed up to its newline, unparsed."""
        self.nul_run = 0
        """NUL bytes of the run being skipped (a run that outgrew MAX_PENDING_LINE at a line start: a crash's padding, a
        sparse hole): counted into the offset as they are read, never held; one nul_padding error when it ends."""
        self.size = 0
        """Its size when the last read began (what the check for a file rewritten in place compares with)."""
        self.mtime_ns = 0
        """Its mtime when the last read began: a rewrite in place at the same size moves it (`_replaced_in_place`)."""
        self.seen_size = 0
        """Its size at the last look: a read's, or `look()`'s while reading is paused (what `behind` counts from; a
        file `look()` found below the read position, truncated, counts all of its size: offset + size)."""
        self._refused_look: tuple[int, int] = (0, 0)
        """(size, mtime in ns) of a refused file at its last look (`refusal_lifted`): its first bytes are read again
        only when they change."""
        self.unopened_size = 0
        """Its size by stat while it cannot be opened (permissions): counted behind, though never read yet (`size` is
        what reads saw, which the check for a file rewritten in place compares with)."""
        self.last_growth = time.monotonic()
        """When a read last got bytes past `read_to` (monotonic)."""
        self.read_to = 0
        """The furthest byte of the file a read has reached: bytes read again below it (its unterminated last line,
        dropped when its descriptor was closed to keep tail.max_open_files, read anew when it is opened again) are no
        growth, and do not keep a file that stopped growing from becoming quiet (Tailer._settled)."""
        self.resumed_inside_line = False
        """`skipping` since it was opened inside a line (`_mid_line`): at the end of a file, the rest of an overlong
        line, or a last line without its newline that an earlier run read as the file's last record (counted then),
        not to be ended as one again (Tailer._ends_unterminated)."""
        self.gone = False
        self.retries = True
        """A failed open is tried again later (the daemon); False in a oneshot, whose read error is final."""
        self.read_error: str | None = None
        """Why the last open or read failed (None once a read succeeds: an open alone may precede an EIO)."""
        self.committed_offset = -1  # offset last handed to the state database
        self.refused: str | None = None
        """Why it is not read, by design (its first bytes a compression format's, its lines ended by a lone CR), said
        once when found; None while it is read. Its bytes are owed to nobody: none is behind, and its removal loses
        nothing. Until the file leaves the globs, or is rewritten in place (`refusal_lifted`: read from byte 0)."""
        self.superseded: list[Checkpoint] = []
        """Checkpoints of the bytes this identity held before it was truncated or rewritten (_start_over), or cut back
        to an older copy (_go_on_after_copy), for the tailer to retire."""
        self.started_mid_file: list[str] = []
        """Ids this stream took up at an older copy's end, not at byte 0 (`_go_on_after_copy`): the correlator's own
        process starts there too (the tailer hands them on in `Tailer.started_at_end`)."""
        self.copy_note: str | None = None
        """Why reading goes on at `cp.offset` under a new id (its bytes before it are a copy of bytes read before),
        said with the line reached once the lines before it are counted (`_count_lines_before`)."""
        self.head_unchecked = False
        """Opened since the last read: its first bytes are looked at whatever its size (a new file of the same size
        may have taken its inode while no descriptor of it was open)."""
        self.closed_look: tuple[int, int] | None = None
        """(mtime, ctime) in ns when its descriptor was last closed (`changed_since_closed`)."""
        self._whole_fingerprint: bytes | None = None
        """`cp.fingerprint` once it covers every byte that identifies the file (`_cover_what_was_read`); b"" while it
        does not (the file was shorter); None before it was looked at."""
        self.renamed_while_closed: str | None = None
        """The path it had when a scan found its inode under another name while no descriptor of it was open (set
        by the tailer): first bytes changed then are a new file in the inode of one deleted, no truncation."""
        self.lines_unchecked: str | None = None
        """The path its checkpoint had when a start resumed it with a fingerprint that cannot tell its file from
        another of its source (its header alone: an older version's of a long header's first 1,024 bytes, a header
        line over MAX_FINGERPRINT_BYTES; exporter.tailer `_weak_fingerprint`): its lines before the offset are counted
        at its first open, off the event loop, and a file whose lines are not those read there is read from byte 0 as
        a new file (`_check_lines`). None: nothing to check."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.cp.dev, self.cp.ino)

    @property
    def behind(self) -> int:
        """Bytes written to the file but not yet read (0 for a file refused by design: never to be read)."""
        if self.refused is not None:
            return 0
        return max(0, max(self.seen_size, self.unopened_size) - self.cp.offset)

    def look(self) -> None:
        """Its size now, nothing read (while reading is paused: the lag gauges must not freeze): by its descriptor,
        else by its path while the path still names the file."""
        if self.refused is not None:
            return
        try:
            if self.file is not None:
                size = os.fstat(self.file.fileno()).st_size
            else:
                st = os.stat(self.cp.path)
                if (st.st_dev, st.st_ino) != self.key:
                    return
                size = st.st_size
        except (OSError, ValueError):
            return
        # below the read position: truncated (and maybe refilled) meanwhile, all of it to be read from byte 0
        self.seen_size = self.cp.offset + size if size < self.cp.offset else size

    def refusal_lifted(self) -> bool:
        """A file refused by design, looked at each poll (a stat; its first bytes read only when its size or mtime
        changed): rewritten in place, as the log's advice (convert it) leads to (shorter than when refused, or its
        first bytes changed), it is read from byte 0 as a truncated file is (`_start_over`: same log line, counted in
        watchtower_truncations_total). True then; False while it stays refused."""
        if self.refused is None:
            return True
        try:
            st = os.stat(self.cp.path)
            if (st.st_dev, st.st_ino) != self.key or (st.st_size, st.st_mtime_ns) == self._refused_look:
                return False
            self._refused_look = (st.st_size, st.st_mtime_ns)
        except OSError:
            return False
        path = self.cp.path
        found = why_replaced(self.size, st.st_size, self.cp.fingerprint, lambda n: read_head(path, n))
        if found is None:
            return False
        self.refused = None
        self._refused_look = (0, 0)
        self._start_over(found.why)  # (none of it was read: an older copy of it too is read from byte 0)
        self.size = self.seen_size = st.st_size
        return True

    def changed_since_closed(self, st: os.stat_result) -> bool:
        """Was the file written (or its inode given to a new file) since its descriptor was closed? A closed file was
        read again only when its size moved: a new file of exactly its size in its inode was not read until it grew."""
        return self.closed_look is not None and (st.st_mtime_ns, st.st_ctime_ns) != self.closed_look

    async def open(self) -> bool:
        """Open (or reopen) at the checkpoint offset; False if the file cannot be read now."""
        if self.file is not None:
            return True
        src = self.cp.source
        try:
            f = await self._open_file()
        except PermissionError:
            self._read_error("permission", "permission denied")
            self._size_unopened()
            return False
        except FileNotFoundError:
            self._read_error("not_found", "vanished before it could be opened")
            return False
        except OSError as exc:
            self._read_error("io", exc.strerror or str(exc))
            self._size_unopened()
            return False
        self.unopened_size = 0
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) != self.key:  # replaced between stat and open
            await self._close_file(f)
            return False
        if self.cp.line_no == UNCOUNTED and not await self._count_lines_before(f, st.st_size):
            await self._close_file(f)
            return False
        if self.lines_unchecked is not None and not await self._check_lines(f, st.st_size):
            await self._close_file(f)
            return False
        self.file = f
        self.head_unchecked = True
        await self._seek(self.cp.offset)
        self.pending = b""
        self.skipping = self.resumed_inside_line = self._mid_line(f)
        if self.metrics:
            self.metrics.file_opens.labels(src).inc()
        return True

    async def _count_lines_before(self, f: Any, size: int) -> bool:
        """A file the first start could not read starts where it ended then, a copy of a file read before where that
        reading ended (`copy_note`): the lines before that offset (and its header) are counted at its first open, so
        line numbers stay true. False when the read fails (retried). In a worker thread (a file of gigabytes took
        seconds, every scrape waiting on the event loop meanwhile)."""
        upto = min(self.cp.offset, size)
        if self.copy_note is None and self.cp.offset <= size:  # a start at its end: at the end of its complete lines
            try:  # (the line being written then, half a header or half a record, is read whole once complete)
                upto = self.cp.offset = whole_lines_end(f.fileno(), upto)
            except OSError as exc:
                self._read_error("io", exc.strerror or str(exc))
                return False
        if upto >= COUNT_SAID_BYTES:
            log.info("%s: counting its lines to read on from byte %d (%.1f GB)", shown(self.cp.path), upto,
                     upto / 1e9)
        try:
            if self.blocking:
                lines, header = count_lines(f.fileno(), upto)
            else:
                import asyncio  # the daemon's: a blocking (oneshot) stream never gets here with an event loop

                lines, header = await asyncio.to_thread(count_lines, f.fileno(), upto)
        except OSError as exc:
            self._read_error("io", exc.strerror or str(exc))
            return False
        self.cp.line_no, self.cp.header = lines, header
        self.parser.line_no = lines
        self.parser.columns = Columns.of_header_line(header)
        if self.copy_note is not None:
            log.warning("%s: %s; its first record is the one read before: the records it holds up to byte %d are "
                        "taken as read before and not counted again (any written to it after the cut and before "
                        "this look among them); reading goes on from there (line %d) as a new file",
                        shown(self.cp.path), self.copy_note, upto, lines)
            self.copy_note = None
        else:
            log.info("%s: readable now; reading on from byte %d, where it ended at the first start (line %d)",
                     shown(self.cp.path), self.cp.offset, lines)
        return True

    async def _check_lines(self, f: Any, size: int) -> bool:
        """A checkpoint resumed with a fingerprint of its header alone (`lines_unchecked`): are the lines before its
        offset the ones read there? Its header line alone, which every file of the source starts with, could not
        tell a new file in a deleted file's inode (ext4 reuses one at once) from the file read, and the new file was
        resumed at the old one's offset, its first records never read. Counted once, at its first open, in a worker
        thread (inside the tailer's scan, on the event loop, each start counted every such file, an idle one at every
        start for ever). The same count: the file read, its fingerprint taken again through its first record and
        saved with the next commit (`committed_offset`), never counted again. Another count: a new
        file, read from byte 0 (`_start_over`: in place it cannot be told from a file rewritten in place, and counts
        as one). An older version's oneshot read a last line without its newline: counted, its newline not there
        (whatever came after it since). The same count and a newline before the offset cannot tell a new file from
        the file read (docs/reliability.md). False when the count fails (retried)."""
        read_at, offset = self.lines_unchecked, self.cp.offset
        if size < offset:  # shorter than where reading stopped: truncated, as the read that follows finds
            self.lines_unchecked = None
            return True
        if offset >= COUNT_SAID_BYTES:
            log.info("%s: counting its lines to byte %d to tell whether it is the file read before (%.1f GB)",
                     shown(self.cp.path), offset, offset / 1e9)
        try:
            if self.blocking:
                (count, _header), last = _lines_and_last_byte(f.fileno(), offset)
            else:
                import asyncio  # the daemon's: a blocking (oneshot) stream never gets here with an event loop

                (count, _header), last = await asyncio.to_thread(_lines_and_last_byte, f.fileno(), offset)
        except OSError as exc:
            self._read_error("io", exc.strerror or str(exc))
            return False
        self.lines_unchecked = None
        if count == self.cp.line_no or (count + 1 == self.cp.line_no and last not in (b"\n", b"")):
            if count != self.cp.line_no:  # the line read without its newline is counted when its rest (its newline)
                self.cp.line_no = self.parser.line_no = count  # is skipped: the lines after it keep their numbers
            log.info("%s: its %d lines before byte %d are those read there: the file read before, resumed",
                     shown(self.cp.path), self.cp.line_no, offset)
            try:
                head = read_head(f.fileno())
            except OSError:
                return True  # taken again at its first read (`_cover_what_was_read`)
            if head_matches(self.cp.fingerprint, head):
                self._take_fingerprint(head)
                self.committed_offset = -1  # saved with the next commit, though its offset did not move
            return True
        why = (f"its first bytes (its header alone) cannot tell it from another file of source {self.cp.source}, and "
               f"its {count} lines before byte {offset} are not the {self.cp.line_no} read there: a new file in the "
               "inode of the one read before (or rewritten in place)")
        self._start_over(why, new_file=read_at != self.cp.path)  # (a new file of another name: no truncation)
        return True

    def _mid_line(self, f: Any) -> bool:
        """Does the offset fall inside a line? Only the skip of an overlong line stops anywhere but after a newline (or
        after a run of NULs at a line start), so a restart (or a reopen) there goes on skipping it rather than parse
        its rest as a line (spans.inside_a_line)."""
        try:
            return inside_a_line(f.fileno(), self.cp.offset)
        except OSError:
            return False

    def _size_unopened(self) -> None:
        try:
            self.unopened_size = os.stat(self.cp.path).st_size
        except OSError:
            pass

    def _read_error(self, reason: str, text: str) -> None:
        first, self.read_error = self.read_error is None, text
        if first:  # once per failure streak (retried every poll: not a line per poll); its recovery is logged too
            log.warning("%s: cannot read (source %s): %s; %s", shown(self.cp.path), self.cp.source, text,
                        "will retry" if self.retries else "not read")
        if self.metrics:
            self.metrics.read_errors.labels(self.cp.source, reason).inc()

    async def close(self) -> None:
        if self.file is not None:
            try:
                st = os.fstat(self.file.fileno())
                self.closed_look = (st.st_mtime_ns, st.st_ctime_ns)
            except (OSError, ValueError):
                self.closed_look = None
            await self._close_file(self.file)
            self.file = None
            self.pending = b""

    # The only calls that differ between the two modes: everything else is shared.
    async def _open_file(self) -> Any:
        """Opened non-blocking and fstat'ed (safeopen): a FIFO swapped in since the stat is refused, not waited on."""
        if self.blocking:
            return open_regular_file(self.cp.path, buffering=0)
        import aiofiles  # the daemon's event loop only (blocking_reads: not imported at all)

        return await aiofiles.open(self.cp.path, "rb", opener=open_regular)

    async def _close_file(self, f: Any) -> None:
        if self.blocking:
            f.close()
        else:
            await f.close()

    async def _seek(self, offset: int) -> None:
        assert self.file is not None
        if self.blocking:
            self.file.seek(offset)
        else:
            await self.file.seek(offset)

    async def _read_bytes(self, size: int) -> bytes:
        assert self.file is not None
        if self.blocking:
            return self.file.read(size)  # type: ignore[no-any-return]
        return await self.file.read(size)  # type: ignore[no-any-return]

    def _replaced_in_place(self, f: Any, st: os.stat_result) -> Replaced | None:
        """Why the bytes at this identity are no longer the checkpoint's file, or None while they are: shorter than
        the offset (copytruncate, `: > file`, an older copy restored over it), or first bytes that changed since the
        size or the mtime did or since it was opened (emptied and refilled past the offset between two polls, other
        records written over it at its size, a new file that took a closed file's inode: of the same size too).
        First bytes changed while no descriptor held it and a scan found it under another name: the file was deleted
        and a new one took its inode."""
        size = st.st_size
        if size >= self.cp.offset and size == self.size and st.st_mtime_ns == self.mtime_ns and not self.head_unchecked:
            return None
        fd = f.fileno()  # a head it cannot read: the read that follows reports it
        found = why_replaced(self.cp.offset, size, self.cp.fingerprint, lambda n: os.pread(fd, n, 0))
        if found is not None and not found.older_copy and self.renamed_while_closed is not None:
            return Replaced(f"a new file in the inode {shown(self.renamed_while_closed)} had (deleted while no "
                            "descriptor of it was open: the filesystem reused its inode)", new_file=True)
        return found

    def _start_over(self, why: str, new_file: bool = False) -> None:
        """Follow the file as a new one from byte 0, under a new id: the old checkpoint is retired as gone
        (`superseded`), so (file id, line) of a new line never names a record of the old bytes (the correlator's
        key), and a restart never resumes the old file's position in it. Truncated or rewritten in place, it keeps
        its header until it writes one (`header_kept`); a `new_file` in a deleted one's inode does not."""
        log.log(logging.INFO if new_file else logging.WARNING, "%s: %s; reading it from the start as a new file",
                shown(self.cp.path), why)
        header = "" if new_file else header_kept(self.cp.header)
        self._supersede(counted=not new_file)
        self.cp = replace(self.cp, file_id=new_file_id(), offset=0, line_no=0, header=header, fingerprint=b"",
                          gone_since=None, first_header=header)
        self.parser.columns = Columns.of_header_line(header)

    def _supersede(self, counted: bool) -> None:
        """Retire the checkpoint of the bytes read so far (`superseded`, gone), counted in
        watchtower_truncations_total when the file was cut or rewritten in place; the parser starts afresh."""
        if self.metrics and counted:
            self.metrics.truncations.labels(self.cp.source).inc()
        self.superseded.append(replace(self.cp, gone_since=time.time()))
        self.parser.reset()
        self.pending = b""
        self.skipping = self.resumed_inside_line = False
        self.nul_run = 0
        self.read_to = 0
        self.committed_offset = -1

    async def _go_on_after_copy(self, f: Any, size: int, why: str) -> bool:
        """Cut back in place to an older copy of itself (`Replaced.older_copy`: `cp backup file`): every record it
        holds was read before. Followed as a new file from its end (the old checkpoint retired, as `_start_over`
        does, and counted as a truncation), its lines counted up to there off the event loop. False when that count
        fails: closed, it is counted at its next open (`open`: UNCOUNTED)."""
        self._supersede(counted=True)
        self.cp = replace(self.cp, file_id=new_file_id(), offset=size, line_no=UNCOUNTED, header="",
                          gone_since=None, first_header="")
        self.started_mid_file.append(self.cp.file_id)
        self.copy_note = why
        if not await self._count_lines_before(f, size):
            await self.close()
            return False
        await self._seek(size)
        self.skipping = self.resumed_inside_line = self._mid_line(f)
        return True

    async def read(self, on_batch: OnBatch, max_chunks: int, final: bool = False,
                   should_stop: Callable[[], bool] | None = None) -> bool:
        """Read up to `max_chunks` chunks (fewer once `should_stop()`); True if the file may hold more now."""
        if self.refused is not None or (self.file is None and not await self.open()):
            return False
        f = self.file
        assert f is not None
        try:
            st = os.fstat(f.fileno())
        except OSError as exc:
            self._read_error("io", exc.strerror or str(exc))
            await self.close()
            return False
        size = st.st_size
        found = self._replaced_in_place(f, st)
        self.head_unchecked, self.renamed_while_closed, self.mtime_ns = False, None, st.st_mtime_ns
        if found is not None and found.older_copy:
            if not await self._go_on_after_copy(f, size, found.why):
                return False
        elif found is not None:
            self._start_over(found.why, found.new_file)
            await self._seek(0)
        self.size = self.seen_size = size
        self._cover_what_was_read(f, 0, size)  # (an idle file resumed from an older version's short one too)
        for _ in range(max_chunks):
            if should_stop is not None and should_stop():
                return True
            try:
                data = await self._read_bytes(self.chunk_bytes)
            except OSError as exc:
                self._read_error("io", exc.strerror or str(exc))
                await self.close()
                return False
            if self.read_error is not None:  # recovered: a read succeeded (an open alone may precede an EIO)
                log.info("%s: readable again (source %s)", shown(self.cp.path), self.cp.source)
                self.read_error = None
            if data:
                self._cover_what_was_read(f, len(data))
            # the file's first bytes, judged until there are enough of them: a first read of one byte of a gzip file
            # matched no magic, went to `pending`, and the rest was parsed as CSV (oneshot skipped the file)
            if self.cp.offset == 0 and len(self.pending) < MAX_HEADER_SCAN:
                head = self.pending + data if self.pending else data
                if (kind := compression_of(head)) is not None:
                    self._stop_compressed(kind)
                    await self.close()
                    return False
                if lone_cr_header(head):
                    self._stop_lone_cr()
                    await self.close()
                    return False
            if not data:
                if final and self.nul_run:  # oneshot: a file ending in a run (as a line of NULs alone would read)
                    self._end_nul_run()
                    self._consume(b"\n", 0, on_batch, final=True)
                elif final and self.skipping:  # oneshot: the unterminated last line is complete
                    self._skip(0, True)
                elif final and self.pending:
                    self._consume(self.pending + (b"" if self.pending.endswith(b"\n") else b"\n"), len(self.pending),
                                  on_batch, final=True)
                    self.pending = b""
                return False
            reached = self.cp.offset + len(self.pending) + len(data)  # (where the last read stopped: offset + pending)
            if reached > self.read_to:
                self.read_to = reached
                self.last_growth = time.monotonic()
            if self.nul_run and not (data := self._skip_nul_run(data)):
                continue
            if self.skipping:
                nl = data.find(b"\n")
                self._skip(len(data) if nl < 0 else nl + 1, nl >= 0)
                if nl < 0:
                    continue
                data = data[nl + 1 :]  # once per overlong line
            cut = data.rfind(b"\n")
            if cut < 0:
                self.pending += data
                if len(self.pending) > MAX_PENDING_LINE:
                    self._drop_overlong(on_batch)
                continue
            pending, self.pending = self.pending, data[cut + 1 :]
            # The complete lines in one copy (the pending head and this read's lines joined), not two
            lines = data if cut + 1 == len(data) and not pending else b"".join((pending, memoryview(data)[: cut + 1]))
            del data
            nbytes = len(lines)
            if nbytes > MAX_PENDING_LINE and (found := overlong_unpadded(lines)) is not None:
                self._consume_around(lines, found, on_batch)
                del lines
                continue
            parsed = self._parse(lines, nbytes)
            del lines  # freed before the batch is folded: the next read reuses the memory
            self._deliver(parsed, on_batch)
        return True

    def _take_fingerprint(self, head: bytes) -> None:
        """Fingerprint the file by its first bytes `head`, noting whether they cover all that identifies it."""
        self.cp.fingerprint = fingerprint_of(head)
        self._whole_fingerprint = self.cp.fingerprint if whole_identity(head) else b""

    def _cover_what_was_read(self, f: Any, nread: int, size: int = 0) -> None:
        """Keep the fingerprint over every byte read (up to the bytes that identify the file, `identity_bytes`: through
        the start of its first record whatever its header's length) before the checkpoint passes them. Taken from the
        size seen before a read, it missed records PMTA appended between that size check and the read: a checkpoint
        saved past them with a fingerprint of the header alone matches every file of the source, and after a restart
        took a new file in its freed inode for its own (randomized restart seed 448). Called before a read with the
        size seen (nread 0) and after it with the bytes read. A fingerprint an older version took of a long header's
        first 1,024 bytes is taken again at the first read."""
        fingerprint = self.cp.fingerprint
        if fingerprint and fingerprint == self._whole_fingerprint:
            return
        if max(size, self.cp.offset + len(self.pending) + nread) > fingerprint_len(fingerprint) \
                or self._whole_fingerprint is None:
            try:
                head = read_head(f.fileno())
            except OSError:
                return  # the next read says what failed; this one is refreshed then
            self._take_fingerprint(head)

    def _stop_compressed(self, kind: str) -> None:
        """Bytes that came after the file was followed (gzip writes nothing until its buffer fills) are compressed:
        not read while this stream lasts (until the file leaves the globs)."""
        self.refused = f"compressed ({kind})"
        warn_compressed(self.cp.path, kind, self.cp.source, "not read")

    def _skip_nul_run(self, data: bytes) -> bytes:
        """The bytes after the NUL run `data` starts with (the run counted into the offset: read, never held)."""
        rest = data.lstrip(b"\0")
        n = len(data) - len(rest)
        if n:
            self.nul_run += n
            self.cp.offset += n
            if self.metrics:
                self.metrics.bytes_read.labels(self.cp.source).inc(n)
        if rest:
            self._end_nul_run()
        return rest

    def _end_nul_run(self) -> None:
        """One nul_padding error for the run, with its size, on the line it starts (what follows it is read there)."""
        self.parser._error("nul_padding", self.parser.line_no + 1, f"<{self.nul_run} NUL bytes>")
        self._drain_tallies()
        self.nul_run = 0

    def _drop_overlong(self, on_batch: OnBatch) -> None:
        """The pending line has grown past MAX_LINE_BYTES without a newline: one error, then skip to its end. A line
        that starts with NULs is a run of padding (a crash, a sparse hole), skipped as the bytes come (`nul_run`)."""
        if self.pending[:1] == b"\0":
            self.pending = self._skip_nul_run(self.pending)
            if len(self.pending) <= MAX_PENDING_LINE:
                return
        held = self.pending.rfind(b"\n") + 1
        if held:  # lines of a record left open: it cannot run on into this line (past MAX_RECORD_SPAN), read them now
            lines, self.pending = self.pending[:held], self.pending[held:]
            self._consume(lines, held, on_batch, final=True)
        self._long_row(self.pending[:LONG_SAMPLE_BYTES])
        pending, self.pending = self.pending, b""
        self.skipping, self.resumed_inside_line = True, False
        self._skip(len(pending), False)

    def _stop_lone_cr(self) -> None:
        """Lines ending in CR alone: the whole file would be one header line (its records uncounted), or a line
        waited on for ever. Not read while this stream lasts, said once."""
        self.refused = "its lines end in a lone CR"
        log.warning("%s: its lines end in a lone CR (old Mac line endings), not LF as PMTA writes them (source %s): "
                    "not read; convert it (tr '\\r' '\\n')", shown(self.cp.path), self.cp.source)

    def _long_row(self, head: bytes) -> None:
        """Count and log (with its file and line) the overlong line that starts the next line."""
        sample = head.decode("utf-8", "replace") + f"... <line over {MAX_LINE_BYTES >> 20} MiB, skipped>"
        self.parser._error("long_row", self.parser.line_no + 1, sample)
        self._drain_tallies()

    def _skip(self, n: int, ended: bool) -> None:
        """`n` bytes of an overlong line consumed unparsed; `ended`: its newline among them (one line read)."""
        self.cp.offset += n
        if ended:
            self.skipping = False
            self.parser.line_no += 1
            self.cp.line_no = self.parser.line_no
        if self.metrics:
            src = self.cp.source
            self.metrics.bytes_read.labels(src).inc(n)
            if ended:
                self.metrics.lines_read.labels(src).inc()

    def _consume_around(self, lines: bytes, found: tuple[int, int] | None, on_batch: OnBatch) -> None:
        """Complete lines holding lines over MAX_LINE_BYTES (rare): the others parsed, each of those skipped. A line
        long only by its NULs (padding: the parser drops them, one nul_padding error a run) is no overlong line."""
        pos = 0
        while found is not None:
            start, end = found
            if start > pos:  # final: a record open here would run on into the overlong line (past MAX_RECORD_SPAN)
                self._consume(lines[pos:start], start - pos, on_batch, final=True)
            self._long_row(lines[start : start + LONG_SAMPLE_BYTES])
            self._skip(end - start, True)
            pos = end
            found = overlong_unpadded(lines, pos)
        if pos < len(lines):
            self._consume(lines[pos:], len(lines) - pos, on_batch)

    def _consume(self, data: bytes, nbytes: int, on_batch: OnBatch, final: bool = False) -> None:
        self._deliver(self._parse(data, nbytes, final), on_batch)

    def _parse(self, data: bytes, nbytes: int, final: bool = False) -> list[Segment]:
        """The segments of complete lines (`nbytes` of the file): one per header's stretch, each with its batch,
        lines and bytes, and where it starts (line number, header). A record still open at their end goes back in
        front of `pending`: read again, whole, with the bytes that complete it (so an offset never falls inside a
        record)."""
        segments = self.parser.parse_all(data, final)
        held = self.parser.held
        if held:
            self.pending = bytes(data[len(data) - held :]) + self.pending
        if nbytes != len(data):  # a newline added to the file's unterminated last line is no byte of the file
            last = segments[-1]
            segments[-1] = last._replace(size=last.size + nbytes - len(data))
        return segments

    def _deliver(self, segments: list[Segment], on_batch: OnBatch) -> None:
        """Account for each segment's bytes and lines and hand its batch (with its Span) on, in file order: the
        checkpoint moves segment by segment, as it would had each been read alone."""
        for k, seg in enumerate(segments):
            after = segments[k + 1] if k + 1 < len(segments) else None  # where it ends: where the next starts
            line_no = after.line_no if after is not None else self.parser.line_no
            columns = after.columns if after is not None else self.parser.columns
            start = self.cp.offset
            self.cp.offset += seg.size
            self.cp.line_no = line_no
            if columns is not None:
                if columns is not seg.columns and columns.duplicates:
                    self._warn_duplicates(columns)
                self.cp.header = columns.header_line
            if self.metrics:
                src = self.cp.source
                self.metrics.lines_read.labels(src).inc(seg.lines)
                self.metrics.bytes_read.labels(src).inc(seg.size)
            self._drain_tallies()
            batch = seg.batch
            if batch is not None:
                cp = self.cp
                batch.file_id = cp.file_id
                batch.span = Span(cp.file_id, cp.source, cp.path, cp.dev, cp.ino, start, cp.offset, seg.line_no,
                                  seg.columns, self.parser.allowed, cp, cp.fingerprint)
                on_batch(self, batch)

    def _warn_duplicates(self, columns: Columns) -> None:
        """Once per file and header: a column named twice is read from its first place only (say which)."""
        if columns.names == self._warned_header:
            return
        self._warned_header = columns.names
        for name in dict.fromkeys(columns.duplicates):
            log.warning("%s: the header names column %r more than once (source %s); only the first is read",
                        shown(self.cp.path), name, self.cp.source)

    def _drain_tallies(self) -> None:
        p = self.parser
        m = self.metrics
        if m is not None:
            src = self.cp.source
            for reason, n in p.errors.items():
                m.parse_errors.labels(src, reason).inc(n)
            for t, n in p.skipped.items():
                m.records_skipped.labels(src, t).inc(n)
            for t, n in p.read.items():
                m.records_read.labels(src, t).inc(n)
        p.errors.clear()
        p.skipped.clear()
        p.read.clear()
