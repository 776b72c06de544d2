"""Lines before an offset, and the header line, of a file started at its end (`tail.start_position: end`).

A checkpoint's `line_no` keeps line numbers true (error messages, the correlator's record names). A file its
first start could not read (the daemon's user not yet in PMTA's log group) still starts where it ended then, its
lines `UNCOUNTED` until it can be opened: counted there, by the stream that reads it or the span that re-reads it.
"""

from __future__ import annotations

import os

from exporter import jsonrecords
from exporter.parser import BOM, header_columns

UNCOUNTED = -1
"""A checkpoint's (or a span's) `line_no` when the lines before its offset are not counted yet."""
BLOCK = 1 << 20
COUNT_SAID_BYTES = 1 << 30
"""A file at least this big whose lines are counted at a first start at `end` is said first (~0.4 s a GB)."""


def line_text(line_no: int) -> str:
    """`line N` as a log line names where reading stands; `line unknown` before the lines are counted."""
    return "line unknown" if line_no == UNCOUNTED else f"line {line_no}"


def next_line_text(line_no: int) -> str:
    """`line N+1`: the line after `line_no` lines (where reading goes on), `line unknown` before they are counted."""
    return line_text(line_no + 1 if line_no != UNCOUNTED else UNCOUNTED)


def header_of(first: bytes) -> str:
    """The checkpoint's header text for a file whose first line is `first` (with its newline), as the parser takes
    it from byte 0: a JSON file's columns, or the CSV header (an editor's BOM dropped, quoted names unquoted, CRLF);
    '' when it is no header (the parser then counts the lines as it would at byte 0)."""
    first = first.removeprefix(BOM)
    if jsonrecords.opens_json(first):
        return jsonrecords.COLUMNS.header_line
    columns = header_columns(first.removesuffix(b"\n"))
    return columns.header_line if columns is not None else ""


def count_lines(fd: int, upto: int) -> tuple[int, str]:
    """Newlines in the first `upto` bytes of the open file `fd` and its header line (`header_of` its first line;
    '' when that line does not end within the first block: no PMTA header is that long). Read in blocks, never
    held whole."""
    lines = 0
    header = ""
    offset = 0
    while offset < upto:
        block = os.pread(fd, min(upto - offset, BLOCK), offset)
        if not block:
            break
        if offset == 0 and (nl := block.find(b"\n")) >= 0:
            header = header_of(block[: nl + 1])
        lines += block.count(b"\n")
        offset += len(block)
    return lines, header
