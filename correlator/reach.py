"""Which rows a report can reach: all that a oneshot's throwaway store must hold.

`watchtower oneshot` with the correlator stores timelines for one reader only, vmta attribution of
f/rb records (exporter/daemon.py `_oneshot`), and deletes the store at exit. Attribution looks a
report up by its Message-Id (with its rcpt, then alone), its jobId + rcpt, or its rcpt + orig, so
every timeline it can find has the report's rcpt or the report's Message-Id. A timeline is one
recipient of one message (every link key holds the rcpt), so storing every row whose recipient is
a report's recipient, or a recipient of a report's Message-Id, stores every reachable timeline
whole; on PMTA logs that is well under 1% of the rows (the 250k benchmark corpus: 999 of 249,129).

`scan` reads the files before the pass, three columns with polars' streaming reader (the pass's own
parser where polars refuses a file): the report sources' files for the reports' keys, then every file
for the recipients of their Message-Ids (~0.15 s for the 250k corpus). Keys are normalised as
attribution and linking normalise them (Python's strip/lower, not polars', which differ on some
Unicode). What the scan saw is checked in the pass: a report whose keys, or a row with a report's
Message-Id whose recipient, the scan did not see (a file that changed meanwhile, a malformed line read
otherwise) makes `Reach.keep` set `missed`, and the caller runs the pass again storing every row.
Beyond KEY_LIMIT keys (reports about most deliveries) the filter would save little and hold much: every
row is stored. Timeline ids differ from a full store's; attribution answers with none of them where it could
pick among several (a Message-Id alone names a delivery only when its message went to one recipient).
"""

from __future__ import annotations

import csv
import glob
import logging
import os
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, BinaryIO

import polars as pl

from correlator import store
from correlator.keys import MID_STRIP
from correlator.prepare import _PY_ASCII_SPACE, REPORTS, batch_frame, map_distinct, normalised_rcpts
from exporter.config import RECORD_TYPES
from exporter.parser import ErrorLog, FileParser
from exporter.records import MAX_LINE_BYTES, Columns, RecordBatch, col, is_header
from exporter.safeopen import open_regular_file
from exporter.spans import REPORT_TYPES  # the record types (a source's `records`) attribution looks up

log = logging.getLogger(__name__)

KEY_LIMIT = 100_000
"""Report keys (recipients and Message-Ids) past which `scan` gives up and every row is stored: the sets live
in memory for the whole pass (~100 bytes a key)."""
SCAN_ROWS = 16_384
"""Rows whose keys are added to the sets between two looks at KEY_LIMIT: the sets never hold much more than it (a
complaint about every delivery of 1M lines held 456k of each before the look, and the oneshot peaked at 372 MB)."""
STREAM_ROWS = KEY_LIMIT + 1
"""Rows of one file polars' streaming reader hands over at most; the rest of a file with more is read on with the
pass's parser, a chunk at a time."""
STREAM_BYTES = 48 * 1024 * 1024
"""Files larger than this are scanned with the pass's parser, a READ_BYTES chunk at a time, not by polars' streaming
reader: that held about twice a file's size while it read it (the scan of four 104 MB files peaked at 293 MB, the
correlator's oneshot at 291-303 MB over its 300 MB target; parsed: 186 MB, ~1 s more on 1M rows). Smaller files,
the usual PMTA rotation (the 250k corpus: 26 MB each), keep the faster reader."""
READ_BYTES = 16 * 1024 * 1024
_FIELDS = frozenset({"type", "rcpt", "message_id"})
_ALL_TYPES = frozenset(RECORD_TYPES)


class Reach:
    """The recipients and Message-Ids of a set of files' reports, and the filter of a pass's rows."""

    def __init__(self, rcpts: set[str], mids: set[str]) -> None:
        self.report_rcpts = frozenset(rcpts)
        self.mids = frozenset(mids)
        self.rcpts = set(rcpts)
        """The reports' recipients plus every recipient of a row with one of their Message-Ids (`add_mid_rows`)."""
        self.missed = False
        """A row the scan did not foresee came through `keep` (a file changed): the pass must be run again in full."""
        self.kept = 0
        self.dropped = 0
        self._mid_series = _series(self.mids)
        self._series: tuple[pl.Series, pl.Series] | None = None
        """`rcpts` and `report_rcpts` as polars Series, built at the first `keep` (each batch's tests use them)."""

    def add_mid_rows(self, frame: pl.DataFrame) -> None:
        """Recipients of the rows (a batch_frame) that carry one of the reports' Message-Ids (a row without one
        links by no key that holds the recipient: it is kept for its Message-Id alone)."""
        if not self.mids:
            return
        hit = frame.filter(pl.col("message_id").str.strip_chars(MID_STRIP).is_in(self._mid_series))
        self.rcpts.update(r for r in normalised_rcpts(hit.get_column("rcpt")).to_list() if r)
        self._series = None

    def keep(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of a pass's frame (batch_frame columns) that a report can reach, and every report row."""
        if not frame.height:
            return frame
        if self._series is None:
            self._series = (_series(self.rcpts), _series(self.report_rcpts))
        rcpts, report_rcpts = self._series
        code = map_distinct(frame.get_column("type"), lambda t: store.type_code(t) or 0, pl.Int64)
        rcpt = normalised_rcpts(frame.get_column("rcpt"))
        mid = frame.get_column("message_id").str.strip_chars(MID_STRIP)
        is_report = code.is_in(list(REPORTS))
        mid_hit = mid.is_in(self._mid_series)
        rcpt_hit = rcpt.is_in(rcpts)
        foreseen_report = (rcpt.is_in(report_rcpts) | (rcpt == "")) & (mid_hit | (mid == ""))
        unforeseen_mid = mid_hit & ~rcpt_hit & (rcpt != "") & ~is_report  # a recipient add_mid_rows did not see
        if (is_report & ~foreseen_report).any() or unforeseen_mid.any():
            self.missed = True
        out = frame.filter(is_report | rcpt_hit | mid_hit)
        self.kept += out.height
        self.dropped += frame.height - out.height
        return out


def _series(values: frozenset[str] | set[str]) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String)


def scan(sources: Iterable[Any]) -> Reach | None:
    """The Reach of these sources' files, or None when they hold too many report keys (`KEY_LIMIT`) or cannot be
    read (the pass then stores every row, and reports the read error itself). Reports are looked for in the files
    of the sources that feed a report type (the pass skips them elsewhere), Message-Ids in every file."""
    feeding = [s for s in sources if s.records is None or REPORT_TYPES & set(s.records)]
    is_report = pl.col("type").str.strip_chars(_PY_ASCII_SPACE).str.to_lowercase().is_in(list(_REPORT_NAMES))
    rcpts: set[str] = set()
    mids: set[str] = set()
    checked: set[str] = set()  # files whose lines `_check_lines` measured: once per scan, not once per look
    try:
        for reports in _matching(source_files(feeding), is_report, checked):
            code = map_distinct(reports.get_column("type"), lambda t: store.type_code(t) or 0, pl.Int64)
            reports = reports.filter(code.is_in(list(REPORTS)))
            rcpts.update(r for r in normalised_rcpts(reports.get_column("rcpt")).to_list() if r)
            mids.update(m for m in reports.get_column("message_id").str.strip_chars(MID_STRIP).to_list() if m)
            if len(rcpts) + len(mids) > KEY_LIMIT:
                log.info("oneshot stores every row: the reports hold more than %d keys", KEY_LIMIT)
                return None
        reach = Reach(rcpts, mids)
        if mids:
            has_mid = pl.col("message_id").str.strip_chars(MID_STRIP).is_in(_series(mids))
            for rows in _matching(source_files(sources), has_mid, checked):
                reach.add_mid_rows(rows)
                if len(reach.rcpts) + len(mids) > KEY_LIMIT:
                    log.info("oneshot stores every row: the reports reach more than %d keys", KEY_LIMIT)
                    return None
    except LineTooLong as exc:
        log.info("oneshot stores every row: %s holds a line over %d bytes", exc.path, MAX_LINE_BYTES)
        return None
    except Exception as exc:  # noqa: BLE001 - an unreadable file (the pass reports it) or worse: store every row
        log.info("oneshot stores every row: the first read of the files failed (%s)", type(exc).__name__)
        return None
    return reach


class LineTooLong(Exception):
    """A file holds a line over MAX_LINE_BYTES: polars' reader would hold it whole, several times over (1.8 GB for a
    200 MB line), where the pass skips it in pieces. The scan gives up: the pass stores every row."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _check_lines(path: str) -> None:
    """LineTooLong if a line of `path` is over MAX_LINE_BYTES, found by reading it in blocks of that size: a line
    inside a block is shorter, so only the bytes run on from one block's last newline into the next are counted."""
    run = 0
    with open_regular_file(path) as f:
        while block := f.read(MAX_LINE_BYTES):
            first = block.find(b"\n")
            if first < 0:
                run += len(block)
            else:
                run += first
                if run <= MAX_LINE_BYTES:
                    run = len(block) - block.rfind(b"\n") - 1
            if run > MAX_LINE_BYTES:
                raise LineTooLong(path)


_REPORT_NAMES = frozenset(name for name in (*store.TYPE_CODES, *store.ALIASES) if store.type_code(name) in REPORTS)


def _matching(paths: list[str], wanted: pl.Expr, checked: set[str]) -> Iterator[pl.DataFrame]:
    """type, rcpt and message_id of the rows of each file that `wanted` selects, SCAN_ROWS rows at a time. polars'
    streaming reader first (it may read a malformed file otherwise than the pass: a row it misses makes
    `Reach.keep` see the unforeseen, and the pass runs again in full), at most STREAM_ROWS rows of a file; where it
    refuses a file, or the file has more, the pass's own parser (the rows polars gave come again: keys are sets).
    A file with a line over MAX_LINE_BYTES ends the scan (LineTooLong): measured once per scan (`checked`)."""
    limit = STREAM_ROWS
    for path in paths:
        if path not in checked:
            _check_lines(path)
            checked.add(path)
        try:
            frame = _streamed(path, wanted, limit) if os.path.getsize(path) <= STREAM_BYTES else None
        except (pl.exceptions.PolarsError, ValueError, csv.Error, UnicodeDecodeError):
            frame = None
        frames: Iterable[pl.DataFrame] = () if frame is None else (frame,)
        if frame is None or frame.height >= limit:
            frames = chain(frames, (f.filter(wanted) for f in _parsed(path)))
        for f in frames:
            yield from f.iter_slices(SCAN_ROWS)


def _streamed(path: str, wanted: pl.Expr, limit: int) -> pl.DataFrame | None:
    """The first `limit` rows `wanted` selects, read by polars in bounded memory; None for a file without a header
    line."""
    with open_regular_file(path) as f:
        return _streamed_from(f, path, wanted, limit)


def _streamed_from(f: BinaryIO, path: str, wanted: pl.Expr, limit: int) -> pl.DataFrame | None:
    """`_streamed` of the regular file `f` is open on: polars reads it by its descriptor's name (/proc/self/fd/N on
    Linux: the file opened, not what `path` names by then, which may be a FIFO swapped in since)."""
    head = f.readline(MAX_LINE_BYTES + 1)
    row = next(csv.reader([head.decode("utf-8", "replace").rstrip("\r\n")]), [])
    if not is_header(row):
        return None
    c = Columns.from_header(row)
    schema = {col(i): pl.String for i in range(len(c.names))}
    picks = {"type": c.type, "rcpt": c.rcpt, "message_id": c.message_id}
    lazy = pl.scan_csv(_by_descriptor(f.fileno(), path), has_header=False, skip_rows=1, schema=schema, quote_char='"',
                       encoding="utf8-lossy", truncate_ragged_lines=True)
    return lazy.select(*(pl.col(col(i)).fill_null("").alias(name) if i >= 0 else pl.lit("", dtype=pl.String).alias(name)
                         for name, i in picks.items())).filter(wanted).head(limit).collect(engine="streaming")


def _by_descriptor(fd: int, path: str) -> str:
    """A name that opens the file `fd` is open on (Linux's /proc/self/fd), else `path` (checked as a regular file just
    before: a race left open where there is no /proc)."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else path


class _Quiet(ErrorLog):
    """Bad lines are the pass's to report (once), not the scan's."""

    def report(self, source: str, path: str, line: int, reason: str, sample: str) -> None:
        return None


def source_files(sources: Iterable[Any]) -> list[str]:
    """Every regular file the sources' globs match now (what a oneshot pass reads, at least), each once."""
    found: list[str] = []
    for source in sources:
        for pattern in source.paths:
            found.extend(p for p in sorted(glob.glob(pattern)) if os.path.isfile(p))
    return list(dict.fromkeys(found))


def _parsed(path: str) -> Iterator[pl.DataFrame]:
    """batch_frame of every record of the file, read as the pass reads it (any record type)."""
    parser = FileParser("reach", path, _ALL_TYPES, error_log=_Quiet(), fields=_FIELDS)
    for batch in _batches(parser, path):
        yield batch_frame(batch)


def _batches(parser: FileParser, path: str) -> Iterator[RecordBatch]:
    """Complete lines a chunk at a time; a last line without its newline is read too (more keys, never fewer)."""
    with open_regular_file(path) as f:
        rest = b""
        while True:
            data = f.read(READ_BYTES)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if len(rest) > MAX_LINE_BYTES:  # grown since `_check_lines`: not joined on without end
                raise LineTooLong(path)
            if cut:  # a record whose quoted field runs on past the cut is held for the next read, as the pass holds it
                batch, _ = parser.parse(data[:cut], final=False)
                rest = data[cut - parser.held:]
                if batch is not None:
                    yield batch
        if rest:
            batch, _ = parser.parse(rest + b"\n")
            if batch is not None:
                yield batch
