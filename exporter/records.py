"""The one record shape that crosses every boundary: a batch of CSV rows plus their column map.

PMTA lets operators reorder fields, drop them and add `header_*` ones, so every file carries its
own header line. `Columns` resolves the positions of the fields we use once per header; a
`RecordBatch` is the rows of one read of one file, each row a plain `list[str]` of exactly
`len(columns.names)` fields. No per-record objects: the metrics path and the correlator index
rows by the positions in `Columns` (-1 means the file has no such column).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import polars as pl

# Fields the exporter and correlator read; anything else is carried but ignored.
KNOWN_FIELDS: tuple[str, ...] = (
    "type",
    "timeLogged",
    "timeQueued",
    "orig",
    "rcpt",
    "dsnAction",
    "dsnStatus",
    "dsnDiag",
    "dsnMta",
    "bounceCat",
    "dlvSourceIp",
    "dlvSize",
    "vmta",
    "vmtaPool",
    "jobId",
    "envId",
    "queue",
    "feedbackType",
    "reportingMta",
    "userAgent",
    "srcMta",
    "dlvDestinationIp",
    "timeFirstAttempt",
)


PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                 "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
"""The characters Python's `str.strip()` removes, so polars strips a field as Python does (its own `strip_chars()`
leaves \x1c-\x1f)."""


def address_domain(address: str) -> str:
    """The domain of an address as logged, bare or as an SMTP path writes it (`<news@s.ex>`, `news@s.ex >`: s.ex),
    lowercase; '' without an `@`. The metrics' sender label and the correlator's sender domain alike (the polars
    form of it: exporter.aggregate's `od`)."""
    return address[address.rfind("@") + 1 :].rstrip(PY_WHITESPACE + ">").strip().lower() if "@" in address else ""


@dataclass(frozen=True, slots=True)
class Columns:
    """Column positions of one header line, resolved once per file (or per header change)."""

    names: tuple[str, ...]
    index: dict[str, int]
    type: int
    timeLogged: int
    timeQueued: int
    orig: int
    rcpt: int
    dsnAction: int
    dsnStatus: int
    dsnDiag: int
    dsnMta: int
    bounceCat: int
    dlvSourceIp: int
    dlvSize: int
    vmta: int
    vmtaPool: int
    jobId: int
    envId: int
    queue: int
    feedbackType: int
    reportingMta: int
    userAgent: int
    srcMta: int
    dlvDestinationIp: int
    timeFirstAttempt: int
    message_id: int
    """`header_Message-Id` (any case); -1 when absent."""
    arrivalDate: int
    """`arrivalDate` (any case); -1 when absent. An f record's time column is UNCERTAIN (pmta-formats.md §1.2): a
    record whose timeLogged is empty is timed by its arrivalDate, per record (`logged`, `logged_expr`), as a JSON
    record is (exporter.jsonrecords). A header without timeLogged reads arrivalDate as timeLogged too."""
    duplicates: tuple[str, ...] = ()
    """Names the header gives more than one column (any case): the first such column is the one read."""

    @classmethod
    def from_header(cls, names: list[str] | tuple[str, ...]) -> Columns:
        names = tuple(n.strip() for n in names)
        index: dict[str, int] = {}
        lower: dict[str, int] = {}
        duplicates: list[str] = []
        for i, name in enumerate(names):
            index.setdefault(name, i)
            if lower.setdefault(name.lower(), i) != i and name:
                duplicates.append(name)
        resolved = {f: index.get(f, lower.get(f.lower(), -1)) for f in KNOWN_FIELDS}
        arrival = index.get("arrivalDate", lower.get("arrivaldate", -1))
        if resolved["timeLogged"] < 0:  # an f record's time column is UNCERTAIN (pmta-formats.md §1.2): `arrivalDate`
            resolved["timeLogged"] = arrival  # without it a report had no time to match in
        message_id = lower.get("header_message-id", lower.get("header_message-id:", -1))
        return cls(names=names, index=index, message_id=message_id, arrivalDate=arrival,
                   duplicates=tuple(duplicates), **resolved)

    @classmethod
    def of_header_line(cls, header_line: str) -> Columns | None:
        """The columns a checkpoint's (or a span's) saved `header_line` names; None when none is saved."""
        return cls.from_header(header_line.split(",")) if header_line else None

    def get(self, row: list[str], name: str) -> str:
        """Value of any column by name ('' when the file has no such column); not for hot loops."""
        i = self.index.get(name)
        if i is None:
            i = next((j for j, n in enumerate(self.names) if n.lower() == name.lower()), -1)
        return row[i] if 0 <= i < len(row) else ""

    def logged(self, row: list[str]) -> str:
        """The row's timeLogged; its arrivalDate where timeLogged is empty (per record, as a JSON record's:
        `arrivalDate`). '' when the file has neither column."""
        value = row[self.timeLogged] if self.timeLogged >= 0 else ""
        if not value and self.arrivalDate >= 0:
            value = row[self.arrivalDate]
        return value

    def logged_expr(self) -> pl.Expr:
        """`logged` of every row of a batch's frame, as a String expression ('' for none). A frame holds an empty
        field as null, or (a quoted `""`) as ''."""
        logged = pl.col(col(self.timeLogged)).fill_null("") if self.timeLogged >= 0 else pl.lit("", pl.String)
        if self.arrivalDate < 0 or self.arrivalDate == self.timeLogged:
            return logged
        return pl.when(logged == "").then(pl.col(col(self.arrivalDate)).fill_null("")).otherwise(logged)

    @property
    def min_fields(self) -> int:
        """Fields a row needs to be a record: the type and the first time column (PMTA leaves trailing empty
        fields out, so a shorter row is read with them empty). Fewer is garbage: a `short_row`."""
        times = [i for i in (self.timeLogged, self.timeQueued) if i >= 0]
        return max(2, min(times) + 1) if times else 2

    @property
    def header_line(self) -> str:
        return ",".join(self.names)


def shown(path: str) -> str:
    """`path` as text a log line, a JSON document or an SQLite TEXT column can carry.

    A file name need not be UTF-8 (the filesystem holds bytes); Python then names it with surrogate escapes
    ('\\udcff'), which no UTF-8 encoder accepts. Its undecodable bytes are shown as `\\xff` instead. For display
    only: the file is opened, and its checkpoint stored, by its real name (exporter.state.path_to_db)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


MAX_LINE_BYTES = 16 * 1024 * 1024
"""A physical line longer than this (newline excluded) is not PMTA output: one `long_row` error, never parsed."""


def overlong_line(data: bytes, start: int = 0, limit: int = MAX_LINE_BYTES) -> tuple[int, int] | None:
    """The first line of `data` from `start` (a line start) longer than `limit`: (its start, the end of its
    newline or of `data`), or None.

    Such a line holds a multiple of `limit`, so only the lines at those few offsets are measured: a C scan
    around each, no per-line work (a chunk of 16 MiB has one or two of them)."""
    size = len(data)
    if size - start <= limit:
        return None
    p = -(-start // limit) * limit
    while p < size:
        if data[p] != 10:  # not a newline: inside a line
            a = data.rfind(b"\n", start, p) + 1 or start
            b = data.find(b"\n", p)
            end = size if b < 0 else b
            if end - a > limit:
                return a, (size if b < 0 else b + 1)
            if b < 0:
                return None
        p += limit
    return None


HEADER_PADDING = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                  "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
"""What pads a header's `type` (`is_header`): Python's whitespace, exactly what `str.strip()` strips (the separators
\\x1c-\\x1f included, which Rust's `char::is_whitespace` leaves). The fast path strips this same set
(exporter.parser), so a padded header is a header on both paths."""


def is_header(row: list[str]) -> bool:
    """PMTA's header always starts with the `type` column, which cannot be disabled."""
    return bool(row) and row[0].strip(HEADER_PADDING).lower() == "type"


def col(i: int) -> str:
    """Name of the frame column holding CSV field number `i` (frames name fields by position)."""
    return f"c{i}"


LINE = "__line"
"""Frame column with each row's 1-based line number in its file."""


class RecordBatch:
    """Valid rows from one read of one file, in file order.

    Built either from a polars frame (the fast path: columns `c0..cN` as strings, empty fields
    null, plus `__line`) or from Python rows (the exact fallback path). Each form is derived from
    the other on first use, so the aggregator reads the frame and the correlator the rows.
    """

    __slots__ = ("source", "path", "columns", "file_id", "repaired", "origin", "origin_end", "span", "_rows",
                 "_lines", "_frame")

    def __init__(
        self,
        source: str,
        path: str,
        columns: Columns,
        rows: list[list[str]] | None = None,
        line_numbers: list[int] | None = None,
        file_id: str = "",
        frame: pl.DataFrame | None = None,
    ) -> None:
        self.source = source
        self.path = path
        self.columns = columns
        self.file_id = file_id
        """Stable id of the file (kept across renames and restarts); (file_id, line number) names a record."""
        self.repaired = 0
        """Rows whose invalid UTF-8 bytes were replaced by U+FFFD (counted once, by the aggregator)."""
        self.origin: RecordBatch | None = None
        """For a `slice()`: the batch it was cut from (sinks track what they saw by that batch)."""
        self.origin_end = 0
        """For a `slice()`: where it ends in `origin` (== len(origin) for the last slice)."""
        self.span: Any = None
        """The exporter.spans.Span of bytes this batch was parsed from (set by FileStream)."""
        self._rows = rows
        self._lines = line_numbers
        self._frame = frame
        if rows is None and frame is None:
            self._rows, self._lines = [], []

    @property
    def rows(self) -> list[list[str]]:
        """Each row a list of exactly len(columns.names) strings ('' for empty fields)."""
        if self._rows is None:
            assert self._frame is not None
            n = len(self.columns.names)
            have = set(self._frame.columns)  # a projected batch (FileParser.fields) lacks the unread columns
            fields = self._frame.select([pl.col(col(i)).fill_null("") if col(i) in have else pl.lit("").alias(col(i))
                                         for i in range(n)])
            self._rows = [list(r) for r in fields.iter_rows()]
        return self._rows

    @property
    def line_numbers(self) -> list[int]:
        """1-based line number of each row in its file (parallel to `rows`)."""
        if self._lines is None:
            assert self._frame is not None
            self._lines = self._frame.get_column(LINE).to_list()
        return self._lines

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            n = len(self.columns.names)
            schema = {col(i): pl.String for i in range(n)}
            rows = self.rows
            frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
            frame = frame.with_columns([pl.col(col(i)).replace("", None) for i in range(n)])
            self._frame = frame.with_columns(pl.Series(LINE, self.line_numbers, dtype=pl.Int64))
        return self._frame

    def slice(self, start: int, stop: int) -> RecordBatch:
        """Rows [start, stop) as a batch of the same file (the state writer commits big batches in slices)."""
        if self._frame is not None:
            part = RecordBatch(self.source, self.path, self.columns, file_id=self.file_id,
                               frame=self._frame.slice(start, stop - start))
        else:
            part = RecordBatch(self.source, self.path, self.columns, self.rows[start:stop],
                               self.line_numbers[start:stop], file_id=self.file_id)
        origin = self.origin if self.origin is not None else self
        part.origin = origin
        part.origin_end = (self.origin_end - len(self) if self.origin is not None else 0) + stop
        return part

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        assert self._frame is not None
        return self._frame.height
