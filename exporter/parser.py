"""Complete lines of one file -> header-mapped CSV rows, every unusable line counted by reason.

One `FileParser` per followed file keeps that file's header (`Columns`) and line number. It takes
chunks of bytes that end on a newline (the file stream guarantees that) and returns a
`RecordBatch` of valid rows. A record is one line, or (RFC 4180) several when a quoted field holds a
line break. A record may only run on to a further line while it is at most MAX_RECORD_SPAN long, so a
quote that never closes costs its own line (one `bad_quoting` error) and reading resumes at the next
line, rather than swallowing the lines after it. A record still open where a chunk ends is not
consumed (`FileParser.held`): the file stream keeps its bytes and hands them in again with the rest.

PMTA writes a new header line when its fields change. Each header's stretch of the file is read with that header's
columns alone (a layout without `rcpt` takes its domain from `queue`, one without `orig` has no sender), so a header
that changes the columns after rows of the same chunk starts a new batch: `parse_all` returns one `Segment` per
stretch (its rows, lines, bytes and where it starts), `parse` ends its read before that header, as if the chunk had
ended there. The same bytes give the same batches wherever the chunks end. A file's form, CSV or PMTA's JSON, is
decided once, by its first non-blank line (`FileParser.decided`), and kept in its checkpointed header.

Fast path: polars parses the whole chunk with a sentinel field appended to every line, so a
valid row has the sentinel exactly after its last column and a short row has it earlier; long
rows and bad quoting make polars refuse the chunk, and a row count that differs from the line
count reveals a quoted newline, and an odd number of quotes on the last line a field still open. polars also reads
some lines csv.reader refuses or reads otherwise, which a scan finds first: a quote that neither opens nor closes a
field as RFC 4180 has it (a closing quote followed by anything but a comma or the line's end, `"a"b"c"`: polars reads
`abc`, csv.reader counts `bad_quoting`; a quote inside an unquoted field: `_QUOTED_FIELDS`) and a CR that ends no
line ending an unquoted field (polars drops it, csv.reader keeps it). Both paths take a header's padding to be the
same characters (`records.HEADER_PADDING`). Any such chunk takes the exact path instead: one `csv.reader` over the
chunk, and record by record where one is malformed,
so every error is counted once against its own (first) line.

Invalid UTF-8 (remote MXs answer in latin-1: `Empf\xe4nger unbekannt`) does not cost the record:
undecodable bytes become U+FFFD, the record is used, and `repaired` counts such records. Only the
bad lines are located (by decoding); the chunk stays on the fast path, read with polars' lossy
decoder, which substitutes exactly as Python's `errors="replace"` does.
"""

from __future__ import annotations

import bisect
import csv
import io
import logging
import re
import time
from collections.abc import Iterable
from typing import NamedTuple

import polars as pl

from exporter import jsonrecords
from exporter.config import RECORD_TYPES
from exporter.records import (
    HEADER_PADDING,
    LINE,
    MAX_LINE_BYTES,
    Columns,
    RecordBatch,
    col,
    is_header,
    overlong_line,
)
from exporter.redact import Clipped

log = logging.getLogger("watchtower.parser")

csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))  # a field may be as long as a line (the polars path
# reads one of any length; csv.reader's default, 131,072 characters, made the same line bad_quoting on the exact path)

_KNOWN = frozenset(RECORD_TYPES)
_KNOWN_LIST = list(RECORD_TYPES)
SENTINEL = "\x01"
_SCHEMAS: dict[int, dict[str, type[pl.DataType]]] = {}


def _schema(n: int) -> dict[str, type[pl.DataType]]:
    """n CSV columns plus the sentinel column, all strings (cached per width)."""
    schema = _SCHEMAS.get(n)
    if schema is None:
        schema = _SCHEMAS[n] = {col(i): pl.String for i in range(n + 1)}
    return schema


_SENTINEL_EOL = ("," + SENTINEL + "\n").encode()
_SENTINEL_BYTE = SENTINEL.encode()


_UTF8_BLOCK = 1 << 16


def invalid_utf8_lines(data: bytes) -> list[int]:
    """0-based indexes of the lines of `data` holding invalid UTF-8 (usually none: one C-speed scan).

    A chunk that is not all ASCII is checked in blocks of whole lines: only the blocks that hold a
    non-ASCII byte are decoded (one latin-1 byte in 16 MiB costs one 64 KiB decode, not 16 MiB)."""
    if data.isascii():  # word-at-a-time, no allocation: PMTA logs are nearly always plain ASCII
        return []
    bad: list[int] = []
    start = base = counted = 0  # lines before `counted` (counted once each, not again per bad block)
    size = len(data)
    while start < size:
        end = data.find(b"\n", min(start + _UTF8_BLOCK, size) - 1) + 1 or size  # a block ends on a line end
        block = data[start:end]
        if not block.isascii():
            found = _invalid_lines(block)
            if found:
                base += data.count(b"\n", counted, start)
                counted = start
                bad.extend(base + i for i in found)
        start = end
    return bad


def _invalid_lines(data: bytes) -> list[int]:
    """invalid_utf8_lines of one block: decode, and after each error resume at the next line."""
    try:
        data.decode("utf-8")
        return []
    except UnicodeDecodeError as exc:
        pos = exc.start
    bad: list[int] = []
    while True:
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        bad.append(data.count(b"\n", 0, start))
        try:
            data[end:].decode("utf-8")
            return bad
        except UnicodeDecodeError as exc:
            pos = end + exc.start


MAX_RECORD_SPAN = 64 * 1024
"""Characters a record may hold once a quoted field carries it past its first line: a quote that never closes
must not swallow the rest of the file (one `bad_quoting` error for its line instead; docs/reliability.md)."""


def _record_feed(lines: list[str], start: int, ended: list[bool]) -> Iterable[str]:
    """`lines` from `start`, each with its newline, for one csv record: it may run on to a further line only
    while the record stays within MAX_RECORD_SPAN. `ended[0]` is set once the chunk's last line was given."""
    size = 0
    for j in range(start, len(lines)):
        size += len(lines[j]) + 1
        if j > start and size > MAX_RECORD_SPAN:
            return
        yield lines[j] + "\n"
    ended[0] = True


def _span(lines: list[str], start: int, end: int) -> int:
    """Characters of lines [start, end) with their newlines: the size of a record carried across lines."""
    return sum(len(line) for line in lines[start:end]) + end - start


_LONE_CR = re.compile(b"\r(?!\n)")
BOM = b"\xef\xbb\xbf"
_NUL = b"\0"
_NUL_RUN = re.compile(b"\0+")


def overlong_unpadded(data: bytes, start: int = 0) -> tuple[int, int] | None:
    """`records.overlong_line`, less the lines long only by their NULs: padding the parser drops (one nul_padding
    error a run, the record after it read), not a line to skip whole as long_row."""
    found = overlong_line(data, start)
    while found is not None and found[1] - found[0] - data.count(_NUL, found[0], found[1]) <= MAX_LINE_BYTES:
        found = overlong_line(data, found[1])
    return found


def _lf_lines(data: bytes) -> bytes:
    """`data` with CRLF line ends as LF. Removing every CR is a one-byte scan (~20x faster than replacing
    the two-byte CRLF) and the same thing when no CR stands alone, which one regex scan tells."""
    if _LONE_CR.search(data) is None:
        return data.replace(b"\r", b"")
    return data.replace(b"\r\n", b"\n")


_QUOTED_FIELDS = re.compile(rb'(?:[^"]*+(?<![^,\n"])"[^"]*+"(?![^,\n"]))*+[^"]*+')
"""The chunk's quotes read in order, each pair one quoted field: an opening quote at a field's start (after a comma,
a line end or the chunk's start, or right after a closing quote: a doubled quote inside the field), its closing quote
followed by a comma, a line end, the chunk's end or another quote. Chunks start at a record's start, outside any
quotes, so this is how csv.reader (strict, RFC 4180) reads them, and where it matches the whole chunk polars reads
every field alike. Where it stops short, the chunk holds a quote the two read otherwise: a closing quote followed by
something else (`"a"b"c"`, `""x""`, `"p,"a"b2"`, `"a" `: csv.reader counts `bad_quoting`, polars read `abc`), a quote
inside an unquoted field (` ",a,"`: a character to csv.reader, the start of a quoted stretch to polars), or a quote
left open at the chunk's end. One C scan from the chunk's start, linear in its length: every repeat is possessive and
each pair consumes its two quotes, so nothing is read twice."""
_QUOTE = b'"'
_CR_FIELD_END = b"\r,"
"""A CR ending an unquoted field that is no line end: csv.reader keeps it in the field, polars drops it."""

_LONE_CR_TEXT = re.compile("\r(?!\n)")
_CR_STAND_IN = "\ue000"
"""Stands for a CR not followed by LF while csv.reader reads a chunk (a private-use character PMTA does not write)."""


def quoting_read_alike(body: bytes) -> bool:
    """Whether csv.reader and polars read every quote of `body` (whole lines from a record's start, LF line ends)
    alike: each one opens or closes a quoted field, or escapes a quote inside one (`_QUOTED_FIELDS`)."""
    found = _QUOTED_FIELDS.match(body)
    return found is not None and found.end() == len(body)


def header_columns(line: bytes) -> Columns | None:
    """The columns of a CSV header line (without its newline; a CR before it is dropped), or None when the line is
    no header."""
    try:
        row = next(csv.reader([line.decode("utf-8", "replace").removesuffix("\r")], strict=True))
    except (csv.Error, StopIteration):
        return None
    return Columns.from_header(row) if is_header(row) else None


class _Fallback(Exception):
    """The chunk holds a malformed line: re-read it line by line."""


class _SegmentEnd(Exception):
    """A header changes the columns after rows of this read, which ends before it (`FileParser.parse`)."""


NO_HEADER = Columns.from_header(["{csv}"])
"""What `FileParser.columns` says for a CSV file before its header: its first non-blank line was no header and no
JSON, so it is CSV for good. A checkpoint keeps it as its header text (as jsonrecords.JSON_MARK a JSON file's), so a
restart does not decide the form again. Never the columns of a batch."""

_NOT_BLANK = re.compile(b"[^" + jsonrecords.BLANK + b"]")
"""The first byte of a line that is not blank (`jsonrecords.BLANK`: the data has no NULs by then)."""


class Segment(NamedTuple):
    """One header's stretch of a chunk (`FileParser.parse_all`): what a chunk holding just those lines would give."""

    batch: RecordBatch | None
    lines: int
    """Lines it consumed."""
    size: int
    """Bytes it consumed, of the data as given (a BOM and NULs included)."""
    line_no: int
    """Lines of the file before it."""
    columns: Columns | None
    """The header in force before it (`FileParser.columns` there): its first line may be the header it reads by."""


_HEADER_LIKE = re.compile(rb"(?i)[^,\n]*type")
"""A line that may be a header: its first field holds `type` in any case (`is_header` unquotes and strips it)."""
_NEXT_HEADER_LIKE = re.compile(rb"(?i)\n[^,\n]*type")
_BLOCK = 1 << 16
_STEP = 256


def _line_starts(data: bytes, lines: list[int]) -> list[int]:
    """Where each of `lines` (0-based, ascending, none past the last newline) starts in `data`. A line far ahead is
    reached by counting the newlines of stretches of bytes, each twice the last while the line lies past it, halved
    while it lies inside (down to a few hundred bytes, then walked line by line): each target costs about the bytes
    from the last one, not a whole block (a chunk with a header change every few rows has thousands of targets)."""
    starts: list[int] = []
    pos = seen = 0
    size = len(data)
    for target in lines:
        step = _STEP
        while target - seen > 16:
            end = min(pos + step, size)
            k = data.count(b"\n", pos, end)
            if seen + k < target:
                seen, pos = seen + k, end
                step = min(step * 2, _BLOCK)
            elif step > _STEP:
                step //= 2
            else:
                break
        while seen < target:
            pos = data.index(b"\n", pos) + 1
            seen += 1
        starts.append(pos)
    return starts


class ErrorLog:
    """Logs bad lines with file and line number, at most `burst` per `interval` seconds per source; the lines past
    the burst are summed up in one line once the window has passed (`expire`, every poll) or at a stop (`flush`)."""

    def __init__(self, burst: int = 10, interval: float = 60.0) -> None:
        self.burst = burst
        self.interval = interval
        self._window: dict[str, tuple[float, int, int]] = {}

    def report(self, source: str, path: str, line: int, reason: str, sample: str) -> None:
        now = time.monotonic()
        start, shown, suppressed = self._window.get(source, (now, 0, 0))
        if now - start >= self.interval:
            self._say(source, suppressed)
            start, shown, suppressed = now, 0, 0
        if shown < self.burst:
            # Cut to 120 characters (at a field boundary) only once formatted: with hashing on, the log's
            # RedactFilter redacts the whole line first, since a cut could leave half a local part and no `@`, and
            # a reply's bare copy of the rcpt's local part (`<ivan.bare>... User unknown`) shown before the cut is
            # redacted even when the rcpt column comes after it (Clipped.redacted reads the uncut sample).
            log.warning("%s:%d: %s (source %s): %r", path, line, reason, source, Clipped(sample, 120, ","))
            shown += 1
        else:
            suppressed += 1
        self._window[source] = (start, shown, suppressed)

    def _say(self, source: str, suppressed: int, within: bool = True) -> None:
        if suppressed:
            log.warning("source %s: %d more bad lines not logged%s", source, suppressed,
                        f" in the {self.interval:.0f}s after the first of them" if within else "")

    def expire(self) -> None:
        """Sum up the windows that have passed: their unlogged lines said when their window ends, not at the next bad
        line (hours later, or never) with the time since then as their span."""
        now = time.monotonic()
        for source, (start, _shown, suppressed) in list(self._window.items()):
            if now - start >= self.interval:
                self._say(source, suppressed)
                del self._window[source]

    def flush(self) -> None:
        """Say how many bad lines went unlogged in the current windows (at a stop: a oneshot ends long before
        its window would, and those lines must not vanish unsaid)."""
        for source, (start, shown, suppressed) in sorted(self._window.items()):
            if suppressed:
                self._say(source, suppressed, within=False)
                self._window[source] = (start, shown, 0)

    def not_logged(self, source: str, n: int) -> None:
        """`n` more bad lines of `source` past a burst, counted without being offered one by one (a chunk's bad
        times: exporter.aggregate looks up only the first few)."""
        start, shown, suppressed = self._window.get(source, (time.monotonic(), 0, 0))
        self._window[source] = (start, shown, suppressed + n)


def _records_holding(lines: list[int], numbers: list[int], rows: list[list[str]]) -> int:
    """How many of `rows` (first lines `numbers`, ascending) hold one of `lines`: a quoted field's line breaks
    carry a record onto the lines after its first, and invalid UTF-8 there repairs that record too (once)."""
    hit: set[int] = set()
    for line in lines:
        k = bisect.bisect_right(numbers, line) - 1
        if k >= 0 and line <= numbers[k] + sum(field.count("\n") for field in rows[k]):
            hit.add(k)
    return len(hit)


class FileParser:
    """Parsing state of one file: its header and how many lines have been consumed."""

    __slots__ = ("source", "path", "allowed", "_columns", "decided", "line_no", "errors", "skipped", "read",
                 "error_log", "fast", "repaired", "fields", "_held", "held", "_held_lines", "_rows_out", "_whole",
                 "_bounds", "_earlier")

    def __init__(
        self,
        source: str,
        path: str,
        allowed: frozenset[str] | None,
        columns: Columns | None = None,
        line_no: int = 0,
        error_log: ErrorLog | None = None,
        fast: bool = True,
        fields: frozenset[str] | None = None,
    ) -> None:
        self.fast = fast
        """Use the polars path where it can judge a chunk exactly (tests compare both paths)."""
        self.fields = fields
        """KNOWN_FIELDS the consumer reads, or None for every column. With a set (metrics only, no
        correlator), the fast path materialises just those columns of valid rows: a batch's other
        columns are absent from its frame and read as '' (RecordBatch.rows). Counting is unchanged."""
        self._held: list[tuple[int, str, str]] | None = None
        """Bad lines of a csv pass over a chunk, logged only if the pass is kept (see `_parse_exact`)."""
        self._rows_out: list[list[str]] | None = None
        """The rows the exact path is gathering (a header change marks where the earlier ones end)."""
        self._whole = True
        """The read goes on past a header that changes the columns (`parse_all`), or ends before it (`parse`)."""
        self._bounds: list[tuple[int, int, Columns]] = []
        """Each header that changed the columns after rows of this read: (rows gathered before it, its line, the
        columns those rows were read with)."""
        self._earlier: list[RecordBatch | None] = []
        """The batches of the stretches before the last one of the read (the exact path's, with `_bounds`)."""
        self.source = source
        self.path = path
        self.allowed = allowed if allowed is not None else _KNOWN
        self._columns: Columns | None = None
        """The header in force (jsonrecords.COLUMNS in a JSON file); None before it."""
        self.decided = False
        """The file's form is decided: its first non-blank line was read (CSV or JSON, for good)."""
        self.columns = columns
        self.line_no = line_no
        self.error_log = error_log or ErrorLog()
        # Per-chunk tallies, drained by the caller into the self-metrics after each chunk.
        self.errors: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.read: dict[str, int] = {}
        self.repaired = 0
        """Records of the last `parse()` that held invalid UTF-8 (also set on the batch it returned)."""
        self.held = 0
        """Trailing bytes the last `parse()` left unconsumed: a record whose quoted field is still open where the
        chunk ends (only when not `final`). The caller hands them in again, followed by the file's next bytes."""
        self._held_lines = 0

    @property
    def columns(self) -> Columns | None:
        """The header in force (None before the file's first non-blank line; NO_HEADER in a CSV file before its
        header): what a checkpoint keeps as its header text, and a new parser is given back."""
        if self._columns is None and self.decided:
            return NO_HEADER
        return self._columns

    @columns.setter
    def columns(self, columns: Columns | None) -> None:
        if columns is not None and columns.names == NO_HEADER.names:
            self._columns, self.decided = None, True
        else:
            self._columns, self.decided = columns, columns is not None

    def reset(self) -> None:
        """The file was truncated or replaced: forget its header (and form) and start at line 0."""
        self.columns = None
        self.line_no = 0

    def _error(self, reason: str, line: int, sample: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        if _CR_STAND_IN in sample:  # the exact path's stand-in for a lone CR: the line as the file has it
            sample = sample.replace(_CR_STAND_IN, "\r")
        if self._held is not None:  # a pass that may be given up: logged once it is kept (`_parse_exact`)
            self._held.append((line, reason, sample))
        else:
            self.error_log.report(self.source, self.path, line, reason, sample)

    def parse(self, data: bytes, final: bool = True) -> tuple[RecordBatch | None, int]:
        """Rows of the complete lines in `data`; returns (batch or None, number of lines consumed).

        Not `final` (more of the file may follow): a record still open at the end is left unconsumed, its
        bytes counted in `held`. `final` (the file's end, or a caller that cannot hand bytes back): it is
        one `bad_quoting` error and the lines after its first are read as records. A header that changes the
        columns after rows of this read ends it, whatever `final`: that header and the lines after it are left
        unconsumed (`held`), to be read by the next call, with the header's columns (`parse_all` reads on)."""
        first = self._parse_chunk(data, final, whole=False)[0]
        return first.batch, first.lines

    def parse_all(self, data: bytes, final: bool = True) -> list[Segment]:
        """`parse`, reading on past each header that changes the columns: one Segment per header's stretch, in file
        order, each what a chunk of just its lines would give (its batch read with its own header's columns), so
        their lines, bytes and rows are the same wherever the chunks end. `held` as for `parse`, after the last."""
        return self._parse_chunk(data, final, whole=True)

    def _parse_chunk(self, data: bytes, final: bool, whole: bool) -> list[Segment]:
        self.repaired = 0
        self.held = self._held_lines = 0
        self._whole = whole
        self._bounds.clear()
        self._earlier.clear()
        original = data
        start, columns = self.line_no, self.columns
        if self.line_no == 0 and data.startswith(BOM):  # an editor's UTF-8 BOM would hide the header
            data = data[len(BOM) :]
        runs: list[tuple[int, int]] = []
        if _NUL in data:  # memchr: a crash's NUL padding (rare), skipped
            data, runs = self._drop_nuls(data)
        blank = 0
        if not self.decided:  # the file's first lines: blank ones until its first line decides its form
            data, blank = self._decide(data)
        cut = False
        fast: tuple[RecordBatch | None, int] | None = None
        if not data:
            fast = (None, 0)
        elif jsonrecords.is_json(self._columns):
            fast = self._parse_json(data)
        else:
            if not whole and _HEADER_LIKE.match(data) and (stop := self._next_header(data)) is not None:
                # A read of one stretch (`parse`) that starts with a header, as the one after a header ended the last
                # does: only the lines before the next header that changes the columns are parsed, not the whole
                # chunk again for each of its stretches. A record still open there (a quoted field holding such a
                # line) is held, read whole next time.
                head = data[:stop]  # a short one by csv.reader: polars costs ~1 ms a call
                fast = self._parse_exact(head, final=False) if len(head) < _BLOCK else self._parse_csv(head, False)
                cut = fast[1] > 0
                if not cut:  # nothing read (a record open from the first line on): the whole chunk, as ever
                    fast, self._held_lines = None, 0
            if fast is None:
                fast = self._parse_csv(data, final)
        used = blank + fast[1]
        # `held` in bytes of `data` as given (BOM and NULs included): the lines from a header that ended the read
        # found from the start, the few of a record still open at the end counted back from the end
        if cut or self._held_lines > 64:
            self.held = len(original) - _line_starts(original, [used])[0]
        elif self._held_lines:
            pos = len(original) - 1 if original.endswith(b"\n") else len(original)
            for _ in range(self._held_lines):
                pos = original.rfind(b"\n", 0, pos)
            self.held = len(original) - (pos + 1)
        nuls = 0
        for line, size in runs:  # after the parse: the exact path's fallback resets the tallies it made itself
            if line - start <= used:  # a run in held lines is counted when they are read again
                nuls += 1
                self.error_log.report(self.source, self.path, line, "nul_padding", f"<{size} NUL bytes>")
        if nuls:
            self.errors["nul_padding"] = self.errors.get("nul_padding", 0) + nuls
        bounds = self._bounds
        if not bounds:
            if fast[0] is not None:
                fast[0].repaired = self.repaired
            return [Segment(fast[0], used, len(original) - self.held, start, columns)]
        # Header changes (exact path): a segment per stretch, each starting at its header's line
        firsts = [line - start - 1 for _rows, line, _cols in bounds]
        offsets = [0, *_line_starts(original, firsts), len(original) - self.held]
        firsts = [0, *firsts, used]
        befores = [columns, *(cols for _rows, _line, cols in bounds)]
        batches = [*self._earlier, fast[0]]
        bounds.clear()
        self._earlier.clear()
        return [Segment(batches[k], firsts[k + 1] - firsts[k], offsets[k + 1] - offsets[k], start + firsts[k],
                        befores[k]) for k in range(len(batches))]

    def _next_header(self, data: bytes) -> int | None:
        """Where the first line after the first of `data` that is a header of other columns than those in force
        above it starts, judging each line alone (a cheap scan for `type` first); None without one."""
        nl = data.find(b"\n")
        first = header_columns(data[:nl]) if nl >= 0 else None
        names = first.names if first is not None else self._columns.names if self._columns is not None else None
        pos = 0
        while (found := _NEXT_HEADER_LIKE.search(data, pos)) is not None:
            start = found.start() + 1
            pos = data.find(b"\n", start)
            columns = header_columns(data[start : pos if pos >= 0 else len(data)])
            if columns is not None:
                if names is not None and columns.names != names:
                    return start
                names = columns.names
            if pos < 0:
                return None
        return None

    def _parse_csv(self, data: bytes, final: bool) -> tuple[RecordBatch | None, int]:
        """A CSV chunk: the polars path where it can judge it, else the exact path."""
        fast = self._parse_frame(data) if self.fast else None
        return fast if fast is not None else self._parse_exact(data, final)

    def _decide(self, data: bytes) -> tuple[bytes, int]:
        """Blank lines before the file's first line that is not: consumed as blank lines (in either form; the count
        returned with the data after them). That line decides the form for good: JSON when it opens an object or an
        array (`jsonrecords.opens_json`), else CSV (a first line that is no header is then `missing_header`)."""
        found = _NOT_BLANK.search(data)
        if found is None:  # blank lines only: the form is still open
            n = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
            self.line_no += n
            return b"", n
        first = data.rfind(b"\n", 0, found.start()) + 1
        n = data.count(b"\n", 0, first)
        self.line_no += n
        self.decided = True
        if jsonrecords.opens_json(data[found.start()]):
            self._columns = jsonrecords.COLUMNS  # PMTA's JSON form: every record names its fields
        return (data[first:] if first else data), n

    def _drop_nuls(self, data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
        """`data` without its NUL bytes (a file padded after a crash, a record often glued after the run), and
        the runs as (line, length): each one `nul_padding` error, logged on its line once its line is consumed."""
        line, pos = self.line_no + 1, 0
        runs: list[tuple[int, int]] = []
        for m in _NUL_RUN.finditer(data):
            line += data.count(b"\n", pos, m.start())
            pos = m.start()
            runs.append((line, m.end() - m.start()))
        return data.replace(_NUL, b""), runs

    def _parse_frame(self, data: bytes) -> tuple[RecordBatch | None, int] | None:
        """The polars path; None when the chunk needs the exact path."""
        columns = self._columns
        head_lines = first_row = 0
        if data.startswith(b"type"):  # a file's first chunk: its header line
            nl = data.find(b"\n")
            first_row = nl + 1
            columns = header_columns(data[:nl])
            if columns is None:
                return None
            head_lines = 1  # skipped by the reader (skip_lines): the chunk is not copied to drop it
            if nl + 1 == len(data):
                self._columns = columns
                self.line_no += head_lines
                return None, head_lines
        if columns is None or len(columns.names) < 2:
            return None
        if data.startswith(BOM, first_row):  # polars would drop a BOM opening what it reads: only
            return None  # the file's first line may carry one (dropped in `parse`); the exact path counts the line
        if not data.endswith(b"\n") or data.count(b'"', data.rfind(b"\n", 0, len(data) - 1) + 1) & 1:
            # No final newline to count by, or the last line opens a quote it does not close (a record the next
            # chunk completes): exact path. A quote open on an earlier line joins lines, which the row count tells
            # below; counting only the last line keeps the scan of a whole 16 MiB chunk (~10 ms) off this path.
            return None
        n = len(columns.names)
        bad_utf8 = [i - head_lines for i in invalid_utf8_lines(data) if i >= head_lines]
        body = _lf_lines(data) if b"\r" in data else data  # memchr first: CRLF files are the rare case
        if _QUOTE in body and not quoting_read_alike(body):
            return None  # a quote polars reads otherwise than csv.reader (e.g. one csv.reader counts bad_quoting)
        if b"\r" in body and _CR_FIELD_END in body:  # a CR left (one that ends no line) ends a field: polars drops it
            return None
        if _SENTINEL_BYTE in body:  # a field that is the sentinel reads as the line's end (`,\x01`: a blank line, which
            return None  # the exact path counts unknown_type); PMTA writes no control characters
        marked = body.replace(b"\n", _SENTINEL_EOL)
        nlines = (len(marked) - len(body)) // (len(_SENTINEL_EOL) - 1) - head_lines  # each newline grew: no count
        if nlines <= 0:
            return None
        # Projected, polars ignores fields past the schema: a long row is then caught only because the
        # sentinel is missing from its place, which holds as no field of the chunk is the sentinel (above).
        keep = self._projection(columns)
        try:
            frame = self._read(marked, n, keep, bad_utf8, head_lines)
        except Exception:  # noqa: BLE001 - polars raises several types; the exact path explains
            return None
        if frame.height != nlines:
            return None
        t = pl.col("c0")
        valid = pl.col(col(n)) == SENTINEL
        blank = t.is_null() & (pl.col("c1") == SENTINEL)
        known = t.is_in(_KNOWN_LIST).fill_null(False)
        start = self.line_no + head_lines + 1
        frame = frame.with_columns(pl.int_range(start, start + nlines, dtype=pl.Int64).alias(LINE))
        usable = known & valid.fill_null(False)
        # One pass over two columns decides everything; the wide frame is filtered only when needed.
        header, bad, unusable, types = frame.select(
            # a header in any case or padding (records.is_header); known types are lowercase: only others are looked at
            (t.filter(~known).str.strip_chars(HEADER_PADDING).str.to_lowercase() == "type").any().alias("h"),
            (~blank.fill_null(False) & ~usable).any().alias("b"),
            (~usable).any().alias("u"), t.filter(usable).value_counts().implode().alias("v"),
        ).row(0)
        if header:
            return None  # a header line mid-chunk: the exact path reads each header's stretch by its own columns
        if bad and keep is not None:  # bad lines are logged whole: read the chunk again with every column
            try:
                frame = self._read(marked, n, None, bad_utf8, head_lines).with_columns(
                    pl.int_range(start, start + nlines, dtype=pl.Int64).alias(LINE))
            except Exception:  # noqa: BLE001 - e.g. a long row, which only the unprojected read refuses
                return None
        if bad and (padded := self._pad_frame(frame, n, columns, known)) is not None:
            frame = padded
            bad, unusable, types = frame.select(
                (~blank.fill_null(False) & ~usable).any().alias("b"), (~usable).any().alias("u"),
                t.filter(usable).value_counts().implode().alias("v"),
            ).row(0)
        self._columns = columns
        self.line_no += head_lines + nlines
        if bad:
            self._count_bad(frame, n, known, valid, blank)
        good = self._tally(types, frame.filter(usable) if unusable else frame)
        return self._frame_batch(good.drop(col(n)), columns, start, bad_utf8, head_lines + nlines)

    def _frame_batch(self, good: pl.DataFrame, columns: Columns, start: int, bad_utf8: list[int],
                     consumed: int) -> tuple[RecordBatch | None, int]:
        """The batch of a chunk's usable rows (None without any; `start`: the line of its first row), those whose
        line held invalid UTF-8 counted as repaired. The CSV and the JSON polars paths end here."""
        if bad_utf8 and good.height:
            self.repaired += good.filter(pl.col(LINE).is_in([start + i for i in bad_utf8])).height
        if not good.height:
            return None, consumed
        return RecordBatch(self.source, self.path, columns, frame=good), consumed

    def _tally(self, types: list[dict[str, object]], good: pl.DataFrame) -> pl.DataFrame:
        """Count a chunk's usable rows by type (`types`: their value counts) as read, or as skipped when this source
        does not feed that type; returns the rows it feeds."""
        counts = {x["c0"]: x["count"] for x in types}
        allowed = self.allowed
        if allowed is not _KNOWN and not counts.keys() <= allowed:
            for typ, cnt in counts.items():
                if typ not in allowed:
                    self.skipped[typ] = self.skipped.get(typ, 0) + cnt
            counts = {typ: cnt for typ, cnt in counts.items() if typ in allowed}
            good = good.filter(pl.col("c0").is_in(list(allowed)))
        for typ, cnt in counts.items():
            self.read[typ] = self.read.get(typ, 0) + cnt
        return good

    @staticmethod
    def _pad_frame(frame: pl.DataFrame, n: int, columns: Columns, known: pl.Expr) -> pl.DataFrame | None:
        """`frame` with the rows PMTA wrote without their trailing empty fields made whole (see `_pad`), or None when
        it has none. Such a row has its sentinel early, at or after `min_fields`; it becomes null (''), and the
        sentinel goes to its place. Only for chunks with bad rows: the ordinary chunk pays nothing."""
        lo = columns.min_fields
        if lo >= n:
            return None
        early = [pl.col(col(j)) == SENTINEL for j in range(lo, n)]
        short = (known & pl.col(col(n)).is_null() & pl.any_horizontal(early)).fill_null(False)
        if not frame.select(short.any()).item():
            return None
        return frame.with_columns(
            [pl.when(short & mark).then(None).otherwise(pl.col(col(j))).alias(col(j))
             for j, mark in zip(range(lo, n), early, strict=True)]
            + [pl.when(short).then(pl.lit(SENTINEL)).otherwise(pl.col(col(n))).alias(col(n))])

    def _projection(self, columns: Columns) -> list[int] | None:
        """Column indexes to materialise (type, the blank-line probe, the wanted fields, the sentinel)."""
        if self.fields is None:
            return None
        n = len(columns.names)
        keep = {0, 1, n} | {getattr(columns, f) for f in self.fields}
        keep.discard(-1)
        return sorted(keep) if len(keep) < n + 1 else None

    @staticmethod
    def _read(marked: bytes, n: int, keep: list[int] | None, bad_utf8: list[int], skip: int = 0) -> pl.DataFrame:
        """polars' CSV reader over sentinel-marked lines (bytes, not a BytesIO: read without a copy), after
        `skip` physical lines (the header, which was parsed alone)."""
        return pl.read_csv(marked, has_header=False, schema=_schema(n), columns=keep, quote_char='"',
                           raise_if_empty=False, encoding="utf8-lossy" if bad_utf8 else "utf8", skip_lines=skip)

    def _count_bad(self, frame: pl.DataFrame, n: int, known: pl.Expr, valid: pl.Expr, blank: pl.Expr) -> None:
        """Unknown types and short rows found by the fast path (rare): counted and logged per line."""
        bad = frame.filter(~blank.fill_null(False) & ~(known & valid.fill_null(False)))
        for row in bad.iter_rows():
            fields = [x or "" for x in row[:n + 1]]
            if SENTINEL in fields:
                fields = fields[: fields.index(SENTINEL)]
            reason = "short_row" if row[0] in _KNOWN else "unknown_type"
            self._error(reason, row[-1], ",".join(fields))

    def _parse_exact(self, data: bytes, final: bool = True) -> tuple[RecordBatch | None, int]:
        """The exact path: csv.reader over the chunk, record by record where one is malformed."""
        bad_utf8 = invalid_utf8_lines(data)
        text = data.decode("utf-8", "replace") if bad_utf8 else data.decode("utf-8")
        lone_cr = False
        if "\r" in text:  # a quoted line break then reads the same in CRLF and LF files (as on the polars path)
            text = text.replace("\r\n", "\n")
            if "\r" in text:  # one inside a field: csv.reader would end the line there, polars does not
                text, lone = _LONE_CR_TEXT.subn(_CR_STAND_IN, text)
                lone_cr = lone > 0
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the empty tail after the final newline
        base = self.line_no
        start_columns = self._columns
        batch_rows: list[list[str]] = []
        numbers: list[int] = []
        held: list[tuple[int, str, str]] = []
        self._held = held
        self._rows_out = batch_rows
        bounds = self._bounds
        try:
            used = self._parse_rows(csv.reader(io.StringIO(text, newline="\n"), strict=True), base, batch_rows,
                                    numbers, lines, final)
        except (_Fallback, csv.Error):
            held.clear()  # counted again, and logged, by the record-by-record pass
            batch_rows.clear()
            numbers.clear()
            bounds.clear()
            self._columns = start_columns
            self.errors.clear()
            self.skipped.clear()
            self.read.clear()
            self._held = None
            used = self._parse_each(lines, base, batch_rows, numbers, final)
        finally:
            self._held = None
            self._rows_out = None
        for line, reason, sample in held:
            self.error_log.report(self.source, self.path, line, reason, sample)
        self.line_no = base + used
        self._held_lines = len(lines) - used
        if lone_cr:
            for row in batch_rows:
                for k, value in enumerate(row):
                    if _CR_STAND_IN in value:
                        row[k] = value.replace(_CR_STAND_IN, "\r")
        bad_lines = [base + i + 1 for i in bad_utf8]  # ascending, as bad_utf8
        if not bounds:
            return self._exact_batch(batch_rows, numbers, self._columns, bad_lines), used
        # A batch per header's stretch (`_parse_chunk` makes them segments): each row read by the header above it.
        cuts = [0, *(rows for rows, _line, _cols in bounds), len(batch_rows)]
        layouts = [*(cols for _rows, _line, cols in bounds), self._columns]
        batches = [self._exact_batch(batch_rows[cuts[k] : cuts[k + 1]], numbers[cuts[k] : cuts[k + 1]], layouts[k],
                                     bad_lines) for k in range(len(layouts))]
        self._earlier[:] = batches[:-1]
        return batches[-1], used

    def _exact_batch(self, rows: list[list[str]], numbers: list[int], columns: Columns | None,
                     bad_lines: list[int]) -> RecordBatch | None:
        """The batch of rows the exact path read by `columns` (None without any), its repaired records counted:
        those holding one of the chunk's `bad_lines` (ascending line numbers of invalid UTF-8). Only the bad lines
        within the rows' own lines are looked at (a chunk of many header stretches costs each its own, not all)."""
        if not rows or columns is None:
            return None
        batch = RecordBatch(self.source, self.path, columns, rows, numbers)
        if bad_lines:
            last = numbers[-1] + sum(field.count("\n") for field in rows[-1])  # a quoted field's breaks carry it on
            mine = bad_lines[bisect.bisect_left(bad_lines, numbers[0]) : bisect.bisect_right(bad_lines, last)]
            if mine:
                batch.repaired = _records_holding(mine, numbers, rows)
                self.repaired += batch.repaired
        return batch

    def _parse_json(self, data: bytes) -> tuple[RecordBatch | None, int]:
        """A chunk of a JSON accounting file (exporter/jsonrecords.py): one record per line, each line that is not
        a usable record one error (`bad_json`, or `unknown_type` for an object without a known type). A read field
        holding an object or an array makes the record `bad_json` whatever its type, logged by that field."""
        bad_utf8 = invalid_utf8_lines(data)
        if self.fast and data.endswith(b"\n"):
            fast = self._json_frame(data, bad_utf8)
            if fast is not None:
                return fast
        text = data.decode("utf-8", "replace") if bad_utf8 else data.decode("utf-8")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the empty tail after the final newline
        base = self.line_no
        allowed, read, skipped = self.allowed, self.read, self.skipped
        rows: list[list[str]] = []
        numbers: list[int] = []
        fixed: set[int] = set()  # lines whose record held a lone surrogate escape (repaired like invalid UTF-8)
        for i, line in enumerate(lines):
            record = jsonrecords.object_text(line)
            if not record:
                continue  # blank, or an array's framing
            row = jsonrecords.to_row(record)
            if row is None or isinstance(row, str):  # no object, or a field holding an object or array: no record
                self._error("bad_json", base + i + 1, line if row is None else row)
                continue
            # Only an escape can hold a surrogate or NUL; repaired before the type is judged (`"d\\u0000"` is `d`).
            repaired = "\\u" in record and jsonrecords.repair(row)
            t = row[0]
            if t in allowed:
                if repaired:
                    fixed.add(base + i + 1)
                rows.append(row)
                numbers.append(base + i + 1)
                read[t] = read.get(t, 0) + 1
            elif t in _KNOWN:
                skipped[t] = skipped.get(t, 0) + 1
            else:
                self._error("unknown_type", base + i + 1, line)
        self.line_no = base + len(lines)
        if (bad_utf8 or fixed) and rows:
            first = set(numbers)
            self.repaired += len({base + i + 1 for i in bad_utf8 if base + i + 1 in first} | fixed)
        if not rows:
            return None, len(lines)
        return RecordBatch(self.source, self.path, jsonrecords.COLUMNS, rows, numbers), len(lines)

    def _json_frame(self, data: bytes, bad_utf8: list[int]) -> tuple[RecordBatch | None, int] | None:
        """The polars path of a JSON chunk whose lines are all records of known types; None for the Python path.
        Invalid UTF-8 becomes U+FFFD first, as Python's decoder makes it (`repaired` counts those records)."""
        nlines = data.count(b"\n")
        if bad_utf8:
            data = data.decode("utf-8", "replace").encode()
        frame = jsonrecords.frame_of(data, nlines)
        if frame is None:
            return None
        t = pl.col("c0")
        unknown, types = frame.select((~t.is_in(_KNOWN_LIST)).fill_null(True).any().alias("u"),
                                      t.value_counts().implode().alias("v")).row(0)
        if unknown:  # each such line is an error of its own: the Python path names them
            return None
        start = self.line_no + 1
        self.line_no += nlines
        good = self._tally(types, frame.with_columns(pl.int_range(start, start + nlines, dtype=pl.Int64).alias(LINE)))
        return self._frame_batch(good, jsonrecords.COLUMNS, start, bad_utf8, nlines)

    def _parse_rows(
        self, reader: Iterable[list[str]], base: int, out: list[list[str]], numbers: list[int], lines: list[str],
        final: bool,
    ) -> int:
        """The hot loop: one csv.reader over the chunk; returns the lines consumed (all, all but an open record at
        the end, or those before a header that ends the read). Anything irregular raises for the record-by-record
        pass."""
        columns = self._columns
        ncols = len(columns.names) if columns is not None else -1
        allowed = self.allowed
        read = self.read
        n = 0
        try:
            for row in reader:
                end = reader.line_num  # type: ignore[attr-defined]
                if end != n + 1 and _span(lines, n, end) > MAX_RECORD_SPAN:
                    raise _Fallback  # a quote carried the record too far: _parse_each cuts it back to its line
                line, n = base + n + 1, end
                if len(row) == ncols:
                    t = row[0]
                    if t in allowed:
                        out.append(row)
                        numbers.append(line)
                        read[t] = read.get(t, 0) + 1
                        continue
                elif columns is not None and self._pad(row, columns):
                    if row[0] in allowed:
                        out.append(row)
                        numbers.append(line)
                        read[row[0]] = read.get(row[0], 0) + 1
                    else:
                        self.skipped[row[0]] = self.skipped.get(row[0], 0) + 1
                    continue
                columns = self._odd_row(row, line, ",".join(row))
                ncols = len(columns.names) if columns is not None else -1
        except csv.Error as exc:
            # The last record's quote is still open where the chunk ends: kept for the next chunk if it may yet close.
            if final or str(exc) != "unexpected end of data" or _span(lines, n, len(lines)) > MAX_RECORD_SPAN:
                raise
            return n
        except _SegmentEnd:
            return line - base - 1  # the header's line and those after it: the next read's
        if n != len(lines):
            raise _Fallback
        return n

    @staticmethod
    def _pad(row: list[str], columns: Columns) -> bool:
        """Fill in the trailing empty fields PMTA leaves out (docs/reliability.md): True if `row` now has every column.

        A known type with at least the type and first time column counts; anything shorter is a `short_row`."""
        if not columns.min_fields <= len(row) < len(columns.names) or row[0] not in _KNOWN:
            return False
        row.extend([""] * (len(columns.names) - len(row)))
        return True

    def _odd_row(self, row: list[str], line: int, sample: str) -> Columns | None:
        """Everything that is not a valid, wanted record: headers, skips and errors."""
        current = self._columns
        if not row:
            return current  # blank line
        if is_header(row):
            columns = Columns.from_header(row)
            rows, bounds = self._rows_out, self._bounds
            if (rows and current is not None and columns.names != current.names
                    and len(rows) > (bounds[-1][0] if bounds else 0)):
                # rows of this read are in the columns in force: the new header's stretch is a batch of its own
                if not self._whole:
                    raise _SegmentEnd
                bounds.append((len(rows), line, current))
            self._columns = columns
            return columns
        if current is None:
            self._error("missing_header", line, sample)
            return None
        t = row[0]
        if t not in _KNOWN:
            self._error("unknown_type", line, sample)
        elif len(row) < len(current.names):
            self._error("short_row", line, sample)
        elif len(row) > len(current.names):
            self._error("long_row", line, sample)
        else:  # a known type this source does not feed
            self.skipped[t] = self.skipped.get(t, 0) + 1
        return current

    def _parse_each(self, lines: list[str], base: int, out: list[list[str]], numbers: list[int],
                    final: bool = True) -> int:
        """Slow path for a chunk with a malformed record: each record parsed alone, errors pinned to its first line.

        A record that cannot be read (bad quoting, or a quote open past MAX_RECORD_SPAN or at the file's end) is one
        `bad_quoting` error for its first line (`missing_header` before the file's header: a line without a header,
        however quoted), and reading resumes at the next line. Returns the lines consumed."""
        allowed = self.allowed
        i, total = 0, len(lines)
        while i < total:
            ended = [False]
            reader = csv.reader(_record_feed(lines, i, ended), strict=True)
            try:
                row = next(reader, [])
            except csv.Error:
                if ended[0] and not final:  # still open at the chunk's end: read again with the rest
                    return i
                self._error("bad_quoting" if self._columns is not None else "missing_header", base + i + 1, lines[i])
                i += 1
                continue
            used = max(reader.line_num, 1)
            sample = lines[i] if used == 1 else "\n".join(lines[i : i + used])
            line = base + i + 1
            i += used
            cols = self._columns
            if cols is not None and row and (len(row) == len(cols.names) or self._pad(row, cols)):
                if row[0] in allowed:
                    out.append(row)
                    numbers.append(line)
                    self.read[row[0]] = self.read.get(row[0], 0) + 1
                    continue
            try:
                self._odd_row(row, line, sample)
            except _SegmentEnd:
                return line - base - 1  # the header's line and those after it: the next read's
        return total
