"""Lines before an offset, and the header line, of a file started at its end (`tail.start_position: end`).

A checkpoint's `line_no` keeps line numbers true (error messages, the correlator's record names). A file its
first start could not read (the daemon's user not yet in PMTA's log group) still starts where it ended then, its
lines `UNCOUNTED` until it can be opened: counted there, by the stream that reads it or the span that re-reads it.
"""

from __future__ import annotations

import os
import re

from exporter import jsonrecords
from exporter.parser import BOM, NO_HEADER, header_columns
from exporter.records import MAX_LINE_BYTES

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


_NOT_BLANK = re.compile(b"[^" + jsonrecords.BLANK + b"\0]")
"""A byte that makes a line not blank to the parser (which drops NULs first, then skips `jsonrecords.BLANK`)."""


class _Form:
    """The header text FileParser keeps for a file once it has read the file's first bytes, fed here in order: its
    form is decided by the first line that is not blank (spaces, tabs, CRs; NULs are dropped) nor over
    MAX_LINE_BYTES (the file stream skips such a line unparsed): the JSON columns when that line opens an object or
    an array, else the CSV header it is, else parser.NO_HEADER (a CSV file before its header). Undecided (None)
    until that line has ended: blank lines only, or no complete line."""

    __slots__ = ("header", "_first", "_line", "_text", "_json", "_skipping")

    def __init__(self) -> None:
        self.header: str | None = None
        self._first = True
        self._line = bytearray()
        """The line so far, NULs dropped (its blank lead kept, as the parser reads it); first, the bytes that may yet
        be a BOM."""
        self._text = False
        """`_line` holds a byte that is not blank."""
        self._json = False
        self._skipping = False
        """Inside an overlong line, up to its newline."""

    def feed(self, block: bytes) -> None:
        if self._first:  # an editor's BOM at byte 0 is dropped by the parser (its bytes may come in two blocks)
            block = bytes(self._line) + block
            self._line.clear()
            if BOM.startswith(block):  # all of it may yet be a BOM
                self._line += block
                return
            self._first = False
            block = block.removeprefix(BOM)
        pos, size = 0, len(block)
        while self.header is None and pos < size:
            if self._skipping:
                nl = block.find(b"\n", pos)
                if nl < 0:
                    return
                self._skipping, pos = False, nl + 1
                continue
            if not self._text:  # blank so far: straight to the first byte that is not (past any blank lines)
                found = _NOT_BLANK.search(block, pos)
                at = size if found is None else found.start()
                nl = block.rfind(b"\n", pos, at)
                if nl >= 0:  # blank lines ended before it: its line starts after them
                    self._line.clear()
                    pos = nl + 1
                self._line += block[pos:at].replace(b"\0", b"")
                if found is None:
                    return
                self._text, self._json, pos = True, jsonrecords.opens_json(block[at]), at
            nl = block.find(b"\n", pos)
            self._line += block[pos : size if nl < 0 else nl].replace(b"\0", b"")
            if len(self._line) > MAX_LINE_BYTES:  # skipped unparsed, as the file stream does: the next line decides
                self._line.clear()
                self._text, self._skipping = False, nl < 0
                pos = size if nl < 0 else nl + 1
                continue
            if nl < 0:
                return
            if self._json:
                self.header = jsonrecords.COLUMNS.header_line
            else:
                columns = header_columns(bytes(self._line))
                self.header = (columns if columns is not None else NO_HEADER).header_line
            self._line = bytearray()


def header_of(head: bytes) -> str:
    """The checkpoint's header text for a file whose first bytes are `head` (from byte 0), as FileParser keeps it
    once it has read their complete lines: a JSON file's columns, the CSV header (an editor's BOM dropped, quoted
    names unquoted, CRLF), or NO_HEADER's text when the first line that is not blank is neither (a CSV file without
    its header yet: its rows are missing_header); '' while undecided (blank lines only: the parser decides later)."""
    form = _Form()
    form.feed(head)
    return form.header or ""


def count_lines(fd: int, upto: int) -> tuple[int, str]:
    """Newlines in the first `upto` bytes of the open file `fd` and its header line (`header_of` those bytes: the
    form is decided by the first line that is not blank, wherever it ends within them). Read in blocks, never held
    whole."""
    lines = 0
    form = _Form()
    offset = 0
    while offset < upto:
        block = os.pread(fd, min(upto - offset, BLOCK), offset)
        if not block:
            break
        if form.header is None:
            form.feed(block)
        lines += block.count(b"\n")
        offset += len(block)
    return lines, form.header or ""


def whole_lines_end(fd: int, upto: int) -> int:
    """Where the complete lines in the first `upto` bytes of the open file `fd` end: just after the last newline
    among them, 0 when there is none (a file holding part of its first line: its header being written). A start at
    a file's end (`tail.start_position: end`) starts there, so the line being written when it looked (half a header:
    every record after it was a missing_header error; half a record) is read whole once complete, not skipped as the
    rest of a line. A line over MAX_LINE_BYTES is not looked through: `upto` stays (that line is skipped anyway)."""
    pos, block_size = upto, 1 << 12  # a usual line ends in the last 4 KiB
    while pos > 0 and upto - pos < MAX_LINE_BYTES:
        size = min(block_size, pos, MAX_LINE_BYTES - (upto - pos))
        block_size = BLOCK
        block = os.pread(fd, size, pos - size)
        if len(block) < size:  # shorter than it was: what is there is looked at by the reads that follow
            return upto
        nl = block.rfind(b"\n")
        if nl >= 0:
            return pos - size + nl + 1
        pos -= size
    return 0 if pos <= 0 else upto
