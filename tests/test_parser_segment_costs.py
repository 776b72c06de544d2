"""A header that changes the columns every few rows costs each stretch its own work, not the whole chunk's.

Each header's stretch is a batch of its own (exporter.parser `parse_all`). What is done per stretch must be about
the stretch: its records repaired from invalid UTF-8 are looked for among the bad lines within it (all the chunk's
bad lines for every stretch took 62 s for 5,000 header pairs), where each stretch starts is found from where the
last one did, and the correlator's re-read of a span (exporter.spans `read_span`) parses a piece once, handing its
stretches on one per call, not reading and parsing a whole piece again for each (98.8 s for a 7.8 MB file). Counted
here by the work done (lines looked at, bytes scanned, pieces parsed), not timed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import exporter.parser as parser_mod
import exporter.spans as spans_mod
from exporter.parser import FileParser, _line_starts
from exporter.spans import SpanGone, read_span, span_at
from tests.test_parser_layout_segments import read_whole

HEADERS = [b"type,timeLogged,orig,rcpt,vmta\n", b"type,timeLogged,rcpt,vmta,orig\n"]
LATIN1 = b"d,2026-01-01 12:00:00+0000,a@b.example,\xe9@gmail.com,v1\n"
PLAIN = b"d,2026-01-01 12:00:00+0000,a@b.example,u%d@gmail.com,v1\n"


def stretches(n: int, row: bytes = LATIN1, rows: int = 3) -> bytes:
    return b"".join(HEADERS[k % 2] + b"".join(row.replace(b"%d", b"%d" % j) for j in range(rows)) for k in range(n))


def counting_records_holding(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of bad lines each call of `_records_holding` is given."""
    given: list[int] = []
    real = parser_mod._records_holding

    def counted(lines: list[int], numbers: list[int], rows: list[list[str]]) -> int:
        given.append(len(lines))
        return real(lines, numbers, rows)

    monkeypatch.setattr(parser_mod, "_records_holding", counted)
    return given


@pytest.mark.parametrize("fast", [True, False])
def test_each_stretch_looks_only_at_its_own_bad_lines(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    given = counting_records_holding(monkeypatch)
    n = 400
    parser = FileParser("acct", "/x", None, fast=fast)
    segments = parser.parse_all(stretches(n))
    assert len(segments) == n
    assert sum(given) <= 3 * n  # each bad line looked at once (all of them per stretch: 3 * n * n)
    assert [seg.batch.repaired for seg in segments] == [3] * n  # type: ignore[union-attr]
    assert parser.repaired == 3 * n


def test_repaired_records_are_counted_exactly_at_the_stretches_edges() -> None:
    """Invalid UTF-8 on a quoted field's second line repairs its record, in the stretch the record starts in; bad
    lines in headers and before the first row repair nothing; a stretch without any counts none."""
    data = (b"type,timeLogged,orig,rcpt,vmta\xe9\n"  # a bad header: no record
            b"d,2026-01-01 12:00:00+0000,a@b.example,\"u@gmail.com\n\xe9\",v1\n"  # lines 2-3: one record
            b"d,2026-01-01 12:00:00+0000,a@b.example,u@gmail.com,v\xe9\n"
            b"type,timeLogged,rcpt,vmta,orig\n"
            b"d,2026-01-01 12:00:00+0000,u@gmail.com,v1,a@b.example\n"
            b"type,timeLogged,orig,rcpt,vmta\n"
            b"d,2026-01-01 12:00:00+0000,a@b.example,\"u@gmail.com\n\xe9\n\xe9\",v1\n"  # lines 8-10: one record
            b"d,2026-01-01 12:00:00+0000,a@b.example,u@gmail.com,v1\n")
    parser = FileParser("acct", "/x", None)
    segments = parser.parse_all(data)
    assert [seg.batch.repaired for seg in segments] == [2, 0, 1]  # type: ignore[union-attr]
    assert [list(seg.batch.line_numbers) for seg in segments] == [[2, 4], [6], [8, 11]]  # type: ignore[union-attr]
    assert parser.repaired == 3
    lines = data.splitlines(keepends=True)  # the same as each stretch read alone
    alone = FileParser("acct", "/x", None)
    assert [[seg.batch.repaired for seg in alone.parse_all(b"".join(lines[a:b]))]  # type: ignore[union-attr]
            for a, b in [(0, 4), (4, 6), (6, len(lines))]] == [[2], [0], [1]]


class _Scanned(bytes):
    """Bytes that count what `count` scans and how many lines `index` walks (`_line_starts`' only reads)."""

    scanned = 0
    walked = 0

    def count(self, sub, start=None, end=None):  # type: ignore[no-untyped-def,override]
        _Scanned.scanned += (len(self) if end is None else end) - (start or 0)
        return super().count(sub, start, end)

    def index(self, sub, start=None, end=None):  # type: ignore[no-untyped-def,override]
        _Scanned.walked += 1
        return super().index(sub, start, end)


def _naive_starts(data: bytes, lines: list[int]) -> list[int]:
    starts = [0] + [i + 1 for i, c in enumerate(data) if c == 10]
    return [starts[t] for t in lines]


def test_line_starts_costs_about_the_bytes_between_its_targets() -> None:
    data = stretches(20000, PLAIN)  # 1.6 MB, a header every 4 lines: 20,000 targets
    targets = list(range(4, 80000, 4))
    _Scanned.scanned = _Scanned.walked = 0
    assert _line_starts(_Scanned(data), targets) == _naive_starts(data, targets)
    assert _Scanned.scanned <= 4 * len(data)  # a 64 KiB block counted per target: ~800 times the data
    assert _Scanned.walked <= 20 * len(targets)
    blank = b"\n" * (1 << 20)
    targets = list(range(0, 1 << 20, 65))
    _Scanned.scanned = _Scanned.walked = 0
    assert _line_starts(_Scanned(blank), targets) == targets
    assert _Scanned.scanned <= 8 * len(blank) and _Scanned.walked <= 300 * len(targets)


def test_line_starts_finds_every_target() -> None:
    rng = random.Random(7)
    for _ in range(300):
        data = b"\n".join(b"x" * rng.choice([0, 0, 1, 5, 80, 300, 5000, 70000]) for _ in range(rng.randint(1, 60)))
        data += b"\n" + (b"tail" if rng.random() < 0.3 else b"")
        nlines = data.count(b"\n")
        targets = sorted(rng.sample(range(nlines + 1), rng.randint(0, min(nlines + 1, 25))))
        assert _line_starts(data, targets) == _naive_starts(data, targets)


def _records(path: Path, piece: int) -> tuple[list[tuple[tuple[str, ...], int, tuple[str, ...]]], int, str, int]:
    st = os.stat(path)
    span = span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (0, 0, ""), st.st_size, None)
    records = []
    calls = 0
    while span.remaining:
        batch, consumed, line_no, columns = read_span(span, piece)
        calls += 1
        assert consumed > 0
        if batch is not None:
            assert batch.file_id == "f1"
            records.extend((batch.columns.names, line, tuple(row))
                           for line, row in zip(batch.line_numbers, batch.rows, strict=True))
        span.start += consumed
        span.line_no, span.columns = line_no, columns
    return records, span.line_no, span.columns.header_line if span.columns is not None else "", calls


def counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes each parse of `read_span`'s parser is given."""
    sizes: list[int] = []

    class Counted(FileParser):
        __slots__ = ()

        def parse(self, data: bytes, final: bool = True):  # type: ignore[no-untyped-def]
            sizes.append(len(data))
            return super().parse(data, final)

        def parse_all(self, data: bytes, final: bool = True):  # type: ignore[no-untyped-def]
            sizes.append(len(data))
            return super().parse_all(data, final)

    monkeypatch.setattr(spans_mod, "FileParser", Counted)
    return sizes


@pytest.mark.parametrize("piece", [64, 1000, 1 << 20])
def test_a_span_re_read_parses_each_piece_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int) -> None:
    """One batch per stretch, as the tailer's, with the same lines and header after them; the bytes parsed are about
    the file's (a piece per stretch: n times a piece)."""
    data = stretches(300, PLAIN) + stretches(3, LATIN1)
    tailer = read_whole(tmp_path / "t", data, 1 << 20)
    sizes = counting_parses(monkeypatch)
    records, line_no, header, calls = _records(tmp_path / "t" / "acct-1.csv", piece)
    assert records == tailer.records
    assert (line_no, header) == tailer.checkpoint[1:]
    if piece >= 1000:  # longer than a stretch
        assert calls == 303  # a batch per stretch
    assert sum(sizes) <= 2 * len(data) + 2 * piece + 200 * len(sizes)  # each piece parsed about once (a piece per
    # stretch: 303 times a piece)


def test_stretches_parsed_ahead_are_used_only_where_the_span_stands(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller that does not move the span on by what was returned (a store that failed and is retried), or a
    span that was cut short, reads from the file again; a file truncated meanwhile is gone even so."""
    data = stretches(50, PLAIN)
    path = tmp_path / "acct-1.csv"
    path.write_bytes(data)
    st = os.stat(path)
    span = span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (0, 0, ""), st.st_size, None)
    first = read_span(span, 1 << 20)
    assert span.ahead  # the next stretches, parsed with the first
    again = read_span(span, 1 << 20)  # retried at the same place: read again, the same
    assert again[1:] == first[1:] and again[0] is not None and first[0] is not None
    assert list(again[0].rows) == list(first[0].rows)
    sizes = counting_parses(monkeypatch)
    span.start += first[1]
    span.line_no, span.columns = first[2], first[3]
    second = read_span(span, 1 << 20)
    assert sizes == []  # parsed ahead
    assert second[0] is not None and list(second[0].line_numbers) == [6, 7, 8]
    span.start += second[1]
    span.line_no, span.columns = second[2], second[3]
    span.end = span.start + 10  # cut short: the stretch parsed ahead ends past it
    third = read_span(span, 1 << 20)
    assert sizes != [] and third[1] <= 10
    span.end = st.st_size
    span.start, span.line_no, span.columns = 0, 0, None
    batch, consumed, line_no, columns = read_span(span, 1 << 20)
    assert span.ahead
    span.start += consumed
    span.line_no, span.columns = line_no, columns
    os.truncate(path, 100)
    with pytest.raises(SpanGone):
        read_span(span, 1 << 20)
    assert span.ahead is None
