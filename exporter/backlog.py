"""What the sinks (the correlator) still have to store, in read order, and where each file stands.

The metrics' checkpoints (offsets + counter values) are committed as soon as they are taken; the
sinks follow at their own pace. So for every file the state database also records the sinks'
*position*: the first byte whose rows they may not hold yet (NULL when they hold everything up to the
checkpoint). The backlog is what lies between the two: batches still in memory (at most
`tail.max_pending_rows` rows), then spans of files to read again (exporter/spans.py). Its first
pending item per file is that file's position; a restart turns each position that is behind its
checkpoint into a span, so the sinks resume exactly where they stopped, by themselves.

The event loop adds to the backlog; the state writer thread takes slices from its head and moves it
on once a slice is committed. A lock keeps the two apart (neither holds it during I/O).
"""

from __future__ import annotations

import threading

from exporter.records import RecordBatch
from exporter.spans import Span, append_span, span_of

Position = tuple[int, int, str]
"""(byte offset, lines before it, header line in force there) of one file."""


def take_slice(batches: list[RecordBatch], skip: int, limit: int) -> tuple[list[RecordBatch], int]:
    """Up to `limit` rows after the first `skip` rows of `batches`, splitting a batch where needed."""
    out: list[RecordBatch] = []
    taken = 0
    seen = 0
    for batch in batches:
        n = len(batch)
        if seen + n <= skip:
            seen += n
            continue
        start = max(0, skip - seen)
        stop = min(n, start + (limit - taken))
        out.append(batch if (start, stop) == (0, n) else batch.slice(start, stop))
        taken += stop - start
        seen += n
        if taken >= limit:
            break
    return out, taken


def _position(span: Span) -> Position:
    return span.start, span.line_no, span.columns.header_line if span.columns is not None else ""


class RowBacklog:
    """Batches in memory (head partly written: `done` rows), then spans; in the order they were read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches: list[RecordBatch] = []
        self.done = 0
        """Rows of `batches` (from the first) already stored."""
        self.spans: list[Span] = []
        self.rows = 0
        """Rows in memory not yet stored."""

    # --- event loop ------------------------------------------------------------------------------
    def add(self, batches: list[RecordBatch], spans: list[Span]) -> None:
        with self._lock:
            if self.spans:  # never a batch after a span: that order is the order of the file
                for b in batches:
                    s = span_of(b)
                    if s is not None:
                        append_span(self.spans, s)
                batches = []
            for b in batches:
                self.batches.append(b)
                self.rows += len(b)
            for s in spans:
                append_span(self.spans, s)

    @property
    def span_bytes(self) -> int:
        with self._lock:
            return sum(s.remaining for s in self.spans)

    def __bool__(self) -> bool:
        return self.rows > 0 or bool(self.spans)

    # --- writer thread ---------------------------------------------------------------------------
    def positions(self, skip_rows: int = 0) -> dict[str, Position]:
        """Each file's first pending byte, `skip_rows` more rows of the batches being taken as stored.

        A file absent from the result has nothing pending. A batch without a known span (built
        outside a FileStream: tests, tools) gives byte 0: its file is read again from the start.
        """
        out: dict[str, Position] = {}
        with self._lock:
            skip = self.done + skip_rows
            for b in self.batches:
                n = len(b)
                if skip >= n:
                    skip -= n
                    continue
                skip = 0
                if b.file_id not in out:
                    s = span_of(b)
                    out[b.file_id] = _position(s) if s is not None else (0, 0, "")
            for s in self.spans:
                if s.file_id not in out and s.remaining > 0:
                    out[s.file_id] = _position(s)
        return out

    def take_rows(self, limit: int) -> tuple[list[RecordBatch], int]:
        """Up to `limit` rows from the head of the in-memory batches (not yet moved on)."""
        with self._lock:
            return take_slice(list(self.batches), self.done, limit)

    def rows_stored(self, n: int) -> None:
        """`n` rows from the head are committed: move on, and let go of batches fully stored."""
        with self._lock:
            self.done += n
            self.rows -= n
            while self.batches and self.done >= len(self.batches[0]):
                self.done -= len(self.batches.pop(0))

    def positions_after(self, span: Span) -> Position | None:
        """The position of `span`'s file once `span` (the head) is fully stored: its next span, if any."""
        with self._lock:
            for s in self.spans:
                if s is not span and s.file_id == span.file_id and s.remaining > 0:
                    return _position(s)
        return None

    def head_span(self) -> Span | None:
        with self._lock:
            while self.spans and self.spans[0].remaining <= 0:
                self.spans.pop(0)
            return self.spans[0] if self.spans else None

    def span_stored(self, span: Span, consumed: int, line_no: int, columns: object) -> None:
        with self._lock:
            span.start += consumed
            span.line_no = line_no
            span.columns = columns  # type: ignore[assignment]
            if span.remaining <= 0 and self.spans and self.spans[0] is span:
                self.spans.pop(0)

    def drop_span(self, span: Span) -> None:
        with self._lock:
            if self.spans and self.spans[0] is span:
                self.spans.pop(0)
