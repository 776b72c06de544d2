"""Byte ranges of accounting files that the sinks still need, read again from disk when their turn comes.

A slow sink (the correlator) must never hold the metrics back, and the rows it has not stored yet
must not pile up in memory. So once `tail.max_pending_rows` rows wait for the state writer, the
daemon keeps reading and counting, but for the sinks it keeps only *where* each batch came from: a
`Span` (file, first byte, end byte, lines consumed before it, header in force). Contiguous spans of
one file are merged, so the memory they take is a few dozen bytes per followed file whatever the
backlog. The state writer reads each span again (`read_span`, in pieces of a bounded size), parses it
with the same parser and stores the rows: the same records, with the same line numbers, as the
batches the daemon would have kept. A file removed or replaced before its span was read again (another
file at its inode too: its first bytes must match the fingerprint) is reported, and its remaining lines
skipped (their counters were already counted).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, NamedTuple

from exporter.fingerprint import fingerprint_len, head_matches, read_head
from exporter.linecount import UNCOUNTED, count_lines, whole_lines_end
from exporter.parser import ErrorLog, FileParser, overlong_unpadded
from exporter.records import MAX_LINE_BYTES, Columns, RecordBatch, shown
from exporter.safeopen import open_regular

log = logging.getLogger("watchtower.state")


class _Ahead(NamedTuple):
    """One stretch of a piece `read_span` parsed ahead: where it starts (offset, lines before it, header in force),
    and what `read_span` returns for it (its batch, bytes, and the lines and header after it)."""

    start: int
    line_no: int
    columns: Columns | None
    batch: RecordBatch | None
    size: int
    line_no_after: int
    columns_after: Columns | None


@dataclass(slots=True)
class Span:
    """Bytes [start, end) of one file, not yet stored by the sinks; `start` advances as pieces are stored."""

    file_id: str
    source: str
    path: str
    dev: int
    ino: int
    start: int
    end: int
    line_no: int
    """Lines of the file before `start` (the parser numbers the next line line_no + 1)."""
    columns: Columns | None
    """The header in force at `start` (None before the file's header line)."""
    allowed: frozenset[str] | None
    live: Any = None
    """The tailer's checkpoint of the file: its `path` follows a rename made after the span was taken."""
    fingerprint: bytes = b""
    """The file's first bytes as a digest (exporter.fingerprint): (dev, inode) alone also names a file that took a
    deleted file's inode. Empty: not known (the identity alone decides)."""
    rekeyed_to: tuple[str, int, int] | None = None
    """(path, dev, inode) of the checkpoint the span last followed (exporter.state `_rekeyed`): not followed twice."""
    ahead: list[_Ahead] | None = field(default=None, compare=False, repr=False)
    """The stretches `read_span` parsed past the one it returned (a piece holding headers that change the columns):
    returned by the next calls, while the span starts where each of them does, instead of reading the piece again."""

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.start)


def span_at(file_id: str, source: str, path: str, dev: int, ino: int, position: tuple[int, int, str], end: int,
            allowed: frozenset[str] | None, live: Any = None, fingerprint: bytes = b"") -> Span:
    """The span from a stored sink position (offset, lines before it, header line there) to `end`."""
    offset, line_no, header = position
    columns = Columns.of_header_line(header)
    return Span(file_id, source, path, dev, ino, offset, end, line_no, columns, allowed, live, fingerprint)


def span_of(batch: RecordBatch) -> Span | None:
    """The span a batch was parsed from (set by FileStream), or None for batches built elsewhere."""
    return getattr(batch, "span", None)


REPORT_TYPES = frozenset(("f", "rb", "rs"))
"""Records about a delivery made before them (a complaint, a remote bounce or status)."""


def reports_only(allowed: frozenset[str] | None) -> bool:
    """Whether a source with these record types (None: all) keeps reports and nothing else."""
    return allowed is not None and bool(allowed) and allowed <= REPORT_TYPES


def deliveries_first(spans: list[Span]) -> list[Span]:
    """`spans` with those of reports-only sources after the others, each group in its own order: ranges stored one
    after the other (the correlator process, a thread worker resuming after a restart) must not store a report
    before the delivery it is about, read ahead of it (it would stay a timeline of its own)."""
    return sorted(spans, key=lambda span: reports_only(span.allowed))


def append_span(spans: list[Span], span: Span) -> None:
    """Add `span`, merged into the last span of the same file when it continues it. A reports-only span is not
    merged past a span of another kind (spans are stored in list order: its reports would come before the deliveries
    read ahead of them); a delivery span may be (its deliveries then come before reports read after them)."""
    report = reports_only(span.allowed)
    for i in range(len(spans) - 1, -1, -1):
        last = spans[i]
        if report and last.file_id != span.file_id and not reports_only(last.allowed):
            break
        if last.file_id == span.file_id:
            if last.end == span.start and last.dev == span.dev and last.ino == span.ino:
                last.end = span.end
                last.path = span.path
                last.live = span.live
                if fingerprint_len(span.fingerprint) > fingerprint_len(last.fingerprint):  # of more of the head
                    last.fingerprint = span.fingerprint
                return
            break
    spans.append(Span(span.file_id, span.source, span.path, span.dev, span.ino, span.start, span.end,
                      span.line_no, span.columns, span.allowed, span.live, span.fingerprint))


class SpanGone(Exception):
    """The file of a span was removed, replaced or truncated before it could be read again."""


class _Silent(ErrorLog):
    """Bad lines were logged and counted when first read; a second read of them says nothing."""

    def report(self, source: str, path: str, line: int, reason: str, sample: str) -> None:
        return None


_QUIET = _Silent()


NUL_LOOKBACK = 1 << 30
"""Bytes of a NUL run `_before_nuls` reads back at most (a sparse hole: ~0.2 s a GiB); past it, the run is taken for
the inside of an overlong line (the rest of that line skipped)."""


def _before_nuls(fd: int, end: int) -> bytes:
    """The byte before the NUL run that ends at `end` (inclusive): b"" at the file's start, b"x" past NUL_LOOKBACK."""
    pos, block = end + 1, 1 << 20
    while pos > 0 and end + 1 - pos < NUL_LOOKBACK:
        start = max(0, pos - block)
        data = os.pread(fd, pos - start, start)
        rest = data.rstrip(b"\0")
        if rest:
            return rest[-1:]
        pos = start
    return b"" if pos == 0 else b"x"


def inside_a_line(fd: int, offset: int) -> bool:
    """Does `offset` fall inside a line of the file? After a newline (or at the start) it does not; after a run of
    NULs, the byte before the run says: a newline (or the start) there, the run began a line (skipped as padding,
    what follows is read as a line); anything else, the run is inside a line (an overlong one, skipped whole)."""
    if offset <= 0:
        return False
    last = os.pread(fd, 1, offset - 1)
    if last == b"\0":
        last = _before_nuls(fd, offset - 1)
    return last not in (b"\n", b"")


def _overlong_at(fd: int, span: Span) -> tuple[int, int] | None:
    """(bytes, lines) to skip at the span's start: the rest of a line over MAX_LINE_BYTES when the start falls inside
    one (a checkpoint taken while the tailer skipped it) or starts one; None when a line of usual length starts."""
    start, end = span.start, span.end
    inside = inside_a_line(fd, start)
    pos, size, nuls = start, 1 << 12, 0  # a usual line ends in the first block: 4 KiB read, not 1 MiB
    while pos < end:
        block = os.pread(fd, min(size, end - pos), pos)
        size = 1 << 20
        if not block:
            break
        nl = block.find(b"\n")
        if nl >= 0:
            nuls += block.count(b"\0", 0, nl)
            pos += nl
            break
        nuls += block.count(b"\0")
        pos += len(block)
        if not inside and pos - start - nuls > MAX_LINE_BYTES:
            inside = True
    if not inside and pos - start - nuls <= MAX_LINE_BYTES:  # NULs are padding the parser drops, not line
        return None
    return (min(pos + 1, end) - start, 1 if pos < end else 0)


def read_span(span: Span, max_bytes: int) -> tuple[RecordBatch | None, int, int, Columns | None]:
    """Parse up to `max_bytes` (whole lines) from the span's start.

    Returns (batch or None, bytes consumed, line_no after them, header after them); the caller moves
    the span on only once the batch is stored. Raises SpanGone when the file is not the one read.
    """
    ahead, span.ahead = span.ahead, None
    if span.live is not None:
        span.path = span.live.path
    try:
        fd = open_regular(span.path)  # a FIFO swapped in at the path: SpanGone, not a wait for a writer
    except OSError as exc:
        raise SpanGone(f"{shown(span.path)}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        moved = (st.st_dev, st.st_ino) != (span.dev, span.ino)
        if moved and not span.fingerprint:
            raise SpanGone(f"{shown(span.path)}: replaced by another file")
        if st.st_size < span.end:
            raise SpanGone(f"{shown(span.path)}: truncated to {st.st_size} bytes")
        if span.fingerprint and not head_matches(span.fingerprint, read_head(fd)):
            raise SpanGone(f"{shown(span.path)}: " + ("replaced by another file" if moved else
                                                     "its inode now holds another file (its first bytes differ)"))
        # Another inode with the same first bytes and at least the span's bytes: the same file under a new identity
        # (restored, copied; the tailer re-keys its checkpoint at the first scan, exporter.tailer._new_identity)
        if span.line_no == UNCOUNTED:  # started at its end by a first start that could not read it (linecount)
            # At the end of its complete lines, as the tailer starts there at its first open (FileStream
            # `_count_lines_before`): the line being written when the first start looked is read whole by both (the
            # position committed then fell inside it, and this process skipped it as the rest of a line)
            span.start = whole_lines_end(fd, span.start)
            span.line_no, header = count_lines(fd, span.start)
            span.columns = Columns.of_header_line(header)
        got = ahead[0] if ahead else None
        if got is not None and got[:3] == (span.start, span.line_no, span.columns) and got.start + got.size <= span.end:
            # the next stretch of the piece the last call parsed: its bytes checked as still the file's, not read again
            span.ahead = ahead[1:] or None
            return got.batch, got.size, got.line_no_after, got.columns_after
        skip = _overlong_at(fd, span)
        if skip:  # the tailer skipped these bytes unparsed (one long_row error): so do the sinks
            return None, skip[0], span.line_no + skip[1], span.columns
        want = min(span.remaining, max(max_bytes, 1))
        data = os.pread(fd, want, span.start)
    finally:
        os.close(fd)
    if len(data) < want:
        raise SpanGone(f"{shown(span.path)}: shorter than expected")
    if want < span.remaining:
        cut = data.rfind(b"\n")
        if cut < 0:  # one line longer than max_bytes (not over MAX_LINE_BYTES: _overlong_at): read it whole
            return read_span(span, max_bytes * 4)
        data = data[: cut + 1]
    found = overlong_unpadded(data)
    if found is not None:  # the lines before it; it is skipped at the next call
        data = data[: found[0]]
    consumed = len(data)
    if not data.endswith(b"\n"):  # oneshot's unterminated last line
        data += b"\n"
    parser = FileParser(span.source, shown(span.path), span.allowed, span.columns, span.line_no, _QUIET)
    # Inside the span a record whose quoted field runs on past this piece is left for the next piece, as the tailer
    # left it for its next chunk. At the span's end (where the tailer's records ended) or an overlong line (which
    # the tailer's record could not run into either), an open record is final: one bad_quoting error, as it was.
    final = want >= span.remaining or found is not None
    segments = parser.parse_all(data, final=final)
    if len(segments) > 1:  # headers that change the columns: each stretch a batch of its own, as the tailer's
        # The first is returned; the next ones wait in `span.ahead` for the next calls (not read and parsed again
        # with a whole piece each), but the last, which the piece's end cut: read again, whole, from its header.
        stretches: list[_Ahead] = []
        start = span.start
        for seg, after in pairwise(segments):  # ends before the last (its bytes may hold a newline added above)
            if seg.batch is not None:
                seg.batch.file_id = span.file_id
            stretches.append(_Ahead(start, seg.line_no, seg.columns, seg.batch, seg.size, after.line_no,
                                    after.columns))
            start += seg.size
        span.ahead = stretches[1:] or None
        first = stretches[0]
        return first.batch, first.size, first.line_no_after, first.columns_after
    batch = segments[0].batch
    if parser.held:  # a record still open: read again, whole, with the next piece
        consumed = min(consumed, len(data) - parser.held)  # (a newline added above is no byte of the file)
        if consumed == 0:  # one record longer than the piece (within MAX_RECORD_SPAN): read it whole
            return read_span(span, max_bytes * 4)
    if batch is not None:
        batch.file_id = span.file_id
    return batch, consumed, parser.line_no, parser.columns
