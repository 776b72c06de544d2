"""At a start, the daemon's memory of recent deliveries filled from what the correlator process has yet to store.

A complaint or remote bounce carries no VMTA: the metrics take it from its delivery, found in the daemon's memory
of the deliveries it read lately (`correlator.attribution.RecentDeliveries`) or in the correlator's store. After a
restart that memory is empty, and when the correlator process was behind (its writes failing on a full disk, or a
backlog under load) the store lacks the deliveries too: every report read after the start about them was counted
under vmta="unknown" for good, nothing saying so. So before reading on, the daemon reads the newest part of each
range the correlator process will store again (its `Span`s) and shows their rows to that memory, as it shows the
rows it reads itself. Bounded by WARM_BYTES: the memory keeps its newest rows only anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Protocol

from exporter.records import Columns, RecordBatch, shown
from exporter.safeopen import open_regular, open_regular_file
from exporter.spans import Span, SpanGone, read_span, reports_only

log = logging.getLogger("watchtower.daemon")

WARM_BYTES = 32 * 1024**2
"""Bytes of the correlator's backlog read at a start, the newest of each range: some 130,000 acct rows, more than
the 100,000 rows the memory of deliveries keeps."""
PIECE_BYTES = 4 * 1024**2
"""Bytes parsed at a time."""
HEADER_SCAN_BYTES = 8 * 1024**2
"""How far before a cut a header line written mid-file is looked for (PMTA's header always starts with `type`)."""
_HEADER_LINE = re.compile(rb"\n(?:\xef\xbb\xbf)?([Tt][Yy][Pp][Ee],[^\r\n]*)")


class Observer(Protocol):
    def observe(self, batch: RecordBatch) -> None: ...

    def release(self, batch: RecordBatch) -> None: ...


def warm(spans: list[Span], sink: Observer, budget: int = WARM_BYTES) -> int:
    """Show the rows of the newest `budget` bytes of the delivery ranges in `spans` to `sink` (observed, then
    released: kept as its memory keeps what the daemon reads); returns the rows shown. `spans` are not changed."""
    ranges = [s for s in spans if not reports_only(s.allowed) and s.remaining]
    pieces: dict[int, Span] = {}
    by_size = sorted(range(len(ranges)), key=lambda k: ranges[k].remaining)  # the budget is shared smallest first
    for n, k in enumerate(by_size):
        piece = _tail(ranges[k], budget // (len(ranges) - n))
        if piece is not None:
            budget -= piece.remaining
            pieces[k] = piece
    # shown in the order they were read: the memory answers a key with the newest row it was shown
    return sum(_show(pieces[k], sink) for k in sorted(pieces))


def _tail(span: Span, max_bytes: int) -> Span | None:
    """A copy of `span` holding its last `max_bytes` at most, from the start of a line. None when it cannot be read
    (the correlator process says what became of the file when its turn comes)."""
    piece = dataclasses.replace(span, path=span.live.path if span.live is not None else span.path)
    if span.remaining <= max_bytes:
        return piece
    start = span.end - max_bytes
    try:
        fd = open_regular(piece.path)  # a FIFO swapped in at the path: refused (OSError), not waited on
        try:
            window = os.pread(fd, 64 * 1024, start - 1)
        finally:
            os.close(fd)
    except OSError:
        return None
    nl = window.find(b"\n")
    if nl < 0:
        return None
    piece.start = start + nl  # the first byte after that newline (the window starts one byte before `start`)
    try:
        header = _header_before(piece.path, span.start, piece.start)
    except OSError:
        return None
    if header is not None:
        piece.columns = Columns.from_header(header.split(","))
    elif piece.columns is None:
        return None  # (a JSON file has no header and needs none: its range is read whole or not at all)
    return piece


def _header_before(path: str, start: int, cut: int) -> str | None:
    """The last header line in [start, cut) of the file, looked for in the HEADER_SCAN_BYTES before `cut`: the
    header in force where the piece begins, when the range starts before the file's header line (no columns) or
    PMTA wrote a new one inside it. None when there is none there (the range's own header is in force)."""
    lo = max(start, cut - HEADER_SCAN_BYTES)
    with open_regular_file(path) as f:
        f.seek(lo - 1 if lo else 0)
        data = (b"" if lo else b"\n") + f.read(cut - lo + (1 if lo else 0))  # a line start before each match
    last = None
    for match in _HEADER_LINE.finditer(data):
        last = match
    return last.group(1).decode("utf-8", "replace") if last is not None else None


def _show(piece: Span, sink: Observer) -> int:
    """Parse the piece and show its batches to the sink; the rows shown."""
    rows = 0
    try:
        while piece.remaining > 0:
            batch, consumed, line_no, columns = read_span(piece, PIECE_BYTES)
            if batch is not None and len(batch):
                sink.observe(batch)
                sink.release(batch)
                rows += len(batch)
            if consumed <= 0:
                break
            piece.start += consumed
            piece.line_no, piece.columns = line_no, columns
    except (SpanGone, OSError) as exc:
        log.debug("%s: not read for the memory of recent deliveries: %s", shown(piece.path), exc)
    return rows
