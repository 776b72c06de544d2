"""Complete lines of one file -> header-mapped CSV rows, every unusable line counted by reason.

One `FileParser` per followed file keeps that file's header (`Columns`) and line number. It takes
chunks of bytes that end on a newline (the file stream guarantees that) and returns a
`RecordBatch` of valid rows. Each physical line is one record: PMTA joins multi-line SMTP replies,
so a line whose quotes do not balance is a `bad_quoting` error rather than the start of a field
that swallows the lines after it. The fast path is one `csv.reader` over the whole chunk; only a
chunk holding a malformed line is re-read line by line to pin the error to its line.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterable

from exporter.config import RECORD_TYPES
from exporter.records import Columns, RecordBatch, is_header

log = logging.getLogger("watchtower.parser")

_KNOWN = frozenset(RECORD_TYPES)


class _Fallback(Exception):
    """The chunk holds a malformed line: re-read it line by line."""


class ErrorLog:
    """Logs bad lines with file and line number, at most `burst` per `interval` seconds per source."""

    def __init__(self, burst: int = 10, interval: float = 60.0) -> None:
        self.burst = burst
        self.interval = interval
        self._window: dict[str, tuple[float, int, int]] = {}

    def report(self, source: str, path: str, line: int, reason: str, sample: str) -> None:
        now = time.monotonic()
        start, shown, suppressed = self._window.get(source, (now, 0, 0))
        if now - start >= self.interval:
            if suppressed:
                log.warning("source %s: %d more bad lines not logged in the last %.0fs", source, suppressed,
                            now - start)
            start, shown, suppressed = now, 0, 0
        if shown < self.burst:
            log.warning("%s:%d: %s (source %s): %.120r", path, line, reason, source, sample)
            shown += 1
        else:
            suppressed += 1
        self._window[source] = (start, shown, suppressed)


class FileParser:
    """Parsing state of one file: its header and how many lines have been consumed."""

    __slots__ = ("source", "path", "allowed", "columns", "line_no", "errors", "skipped", "read", "error_log")

    def __init__(
        self,
        source: str,
        path: str,
        allowed: frozenset[str] | None,
        columns: Columns | None = None,
        line_no: int = 0,
        error_log: ErrorLog | None = None,
    ) -> None:
        self.source = source
        self.path = path
        self.allowed = allowed if allowed is not None else _KNOWN
        self.columns = columns
        self.line_no = line_no
        self.error_log = error_log or ErrorLog()
        # Per-chunk tallies, drained by the caller into the self-metrics after each chunk.
        self.errors: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.read: dict[str, int] = {}

    def reset(self) -> None:
        """The file was truncated or replaced: forget its header and start at line 0."""
        self.columns = None
        self.line_no = 0

    def _error(self, reason: str, line: int, sample: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.error_log.report(self.source, self.path, line, reason, sample)

    def parse(self, data: bytes) -> tuple[RecordBatch | None, int]:
        """Rows of the complete lines in `data`; returns (batch or None, number of lines consumed)."""
        try:
            lines: list[str | None] = data.decode("utf-8").split("\n")  # type: ignore[assignment]
        except UnicodeDecodeError:
            lines = []
            for raw in data.split(b"\n"):
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    lines.append(None)
        if lines and lines[-1] == "":
            lines.pop()  # the empty tail after the final newline
        base = self.line_no
        start_columns = self.columns
        batch_rows: list[list[str]] = []
        numbers: list[int] = []
        try:
            if None in lines:
                raise _Fallback
            self._parse_rows(csv.reader(lines, strict=True), base, batch_rows, numbers, len(lines))  # type: ignore[arg-type]
        except (_Fallback, csv.Error):
            batch_rows.clear()
            numbers.clear()
            self.columns = start_columns
            self.errors.clear()
            self.skipped.clear()
            self.read.clear()
            self._parse_each(lines, base, batch_rows, numbers)
        self.line_no = base + len(lines)
        if not batch_rows or self.columns is None:
            return None, len(lines)
        return RecordBatch(self.source, self.path, self.columns, batch_rows, numbers), len(lines)

    def _parse_rows(
        self, rows: Iterable[list[str]], base: int, out: list[list[str]], numbers: list[int], expected: int
    ) -> None:
        """The hot loop: one csv.reader over the chunk, a line-count check instead of per-line parsing."""
        reader = rows
        columns = self.columns
        ncols = len(columns.names) if columns is not None else -1
        allowed = self.allowed
        read = self.read
        n = 0
        for row in reader:
            n += 1
            if reader.line_num != n:  # type: ignore[attr-defined]
                raise _Fallback  # a quoted field ran across a line end
            if len(row) == ncols:
                t = row[0]
                if t in allowed:
                    out.append(row)
                    numbers.append(base + n)
                    read[t] = read.get(t, 0) + 1
                    continue
            columns = self._odd_row(row, base + n, ",".join(row))
            ncols = len(columns.names) if columns is not None else -1
        if n != expected:
            raise _Fallback

    def _odd_row(self, row: list[str], line: int, sample: str) -> Columns | None:
        """Everything that is not a valid, wanted record: headers, skips and errors."""
        if not row:
            return self.columns  # blank line
        if is_header(row):
            self.columns = Columns.from_header(row)
            return self.columns
        if self.columns is None:
            self._error("missing_header", line, sample)
            return None
        t = row[0]
        if t not in _KNOWN:
            self._error("unknown_type", line, sample)
        elif len(row) < len(self.columns.names):
            self._error("short_row", line, sample)
        elif len(row) > len(self.columns.names):
            self._error("long_row", line, sample)
        else:  # a known type this source does not feed
            self.skipped[t] = self.skipped.get(t, 0) + 1
        return self.columns

    def _parse_each(
        self, lines: list[str | None], base: int, out: list[list[str]], numbers: list[int]
    ) -> None:
        """Slow path for a chunk with a malformed line: each line parsed alone, errors pinned to it."""
        allowed = self.allowed
        for i, line in enumerate(lines, start=1):
            if line is None:
                self._error("invalid_utf8", base + i, "<undecodable bytes>")
                continue
            try:
                parsed = list(csv.reader([line], strict=True))
            except csv.Error:
                self._error("bad_quoting", base + i, line)
                continue
            row = parsed[0] if parsed else []
            cols = self.columns
            if cols is not None and len(row) == len(cols.names) and row[0] in allowed:
                out.append(row)
                numbers.append(base + i)
                self.read[row[0]] = self.read.get(row[0], 0) + 1
            else:
                self._odd_row(row, base + i, line)
