"""A file started at its end (`tail.start_position: end`) gets the header its first non-blank line gives, as a read
from its beginning would.

The lines before the start are counted, not parsed (exporter/linecount.py), and the header kept for them is what
the parser keeps once it has read them: blank lines (spaces, tabs, CRs; NULs dropped) decide nothing, the first line
that is not blank decides the form for good: JSON when it opens an object or an array, else CSV, with that line's
columns when it is a header, else parser.NO_HEADER (rows without a header are `missing_header`). Byte 0's line
alone was taken: a blank first line before a header made every appended row `missing_header` (and `{csv}` in the
checkpoint for good), a junk first line before JSON records read the appended records as JSON.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter import jsonrecords
from exporter.config import SourceConfig, TailConfig
from exporter.filestream import blocking_reads
from exporter.linecount import UNCOUNTED, count_lines, header_of
from exporter.metrics import SelfMetrics
from exporter.oneshot import _drive
from exporter.parser import NO_HEADER, FileParser
from exporter.spans import read_span, span_at
from exporter.tailer import Tailer

H = b"type,timeLogged,vmta,rcpt\n"
R = b"d,2026-01-01 12:00:00+0000,v1,u@gmail.com\n"
J = b'{"type":"d","timeLogged":"2026-01-01 12:00:00+0000","vmta":"v1","rcpt":"u@gmail.com"}\n'
JSON = jsonrecords.COLUMNS.header_line

CASES = {  # (the file at the first start, what is appended after it, the checkpoint's header after both)
    "blank_then_csv_header": (b"\n" + H + R, R, H.decode().strip()),
    "spaces_line_then_header": (b"  \n" + H + R, R, H.decode().strip()),
    "blank_lines_and_nuls_then_header": (b"\r\n \t\n\0\0\n" + H + R, R, H.decode().strip()),
    "bom_blank_then_header": (b"\xef\xbb\xbf\n" + H + R, R, H.decode().strip()),
    "csv_header": (H + R, R, H.decode().strip()),
    "blank_then_json": (b"\n" + J, J, JSON),
    "blank_then_json_array": (b" \n[\n" + J.rstrip(b"\n") + b",\n", J, JSON),
    "junk_then_json": (b"junk\n" + J, J, NO_HEADER.header_line),
    "junk_then_csv_rows": (b"junk\n", R, NO_HEADER.header_line),
    "blank_then_junk_then_header": (b"\n junk\n", H + R, H.decode().strip()),
    "blank_lines_only": (b"\n \n", H + R, H.decode().strip()),
}


def _run(tmp_path: Path, initial: bytes, appended: bytes, start: str, monkeypatch: pytest.MonkeyPatch,
         unreadable_first: bool = False) -> tuple[list[tuple[int, tuple[str, ...], tuple[str, ...]]],
                                                   tuple[int, int, str], list[tuple[int, str]]]:
    """The records and bad lines after the file's first start (at `start`), and the checkpoint: `unreadable_first`,
    the first start cannot read it (its lines counted at the first open, FileStream._count_lines_before)."""
    errors: list[tuple[int, str]] = []
    monkeypatch.setattr("exporter.parser.ErrorLog.report",
                        lambda _self, _source, _path, line, reason, _sample: errors.append((line, reason)))
    if unreadable_first:
        def denied(path: str, upto: int) -> tuple[int, str]:
            raise PermissionError(13, "Permission denied", path)

        monkeypatch.setattr("exporter.tailer._count_lines", denied)
    directory = tmp_path / start
    directory.mkdir()
    path = directory / "acct-1.csv"
    path.write_bytes(initial)
    records: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = []

    def on_batch(_stream: object, batch) -> None:  # type: ignore[no-untyped-def]
        records.extend((line, batch.columns.names, tuple(row)) for line, row in zip(batch.line_numbers, batch.rows,
                                                                                    strict=True))

    src = SourceConfig(name="acct", paths=[str(directory / "acct-*")])
    tailer = Tailer([src], TailConfig(rescan_interval=0, start_position=start), SelfMetrics(CollectorRegistry()), (),
                    oneshot=False, first_run=True)
    with blocking_reads():
        _drive(tailer.poll(on_batch, force_scan=True))
        if unreadable_first:
            assert tailer.known and all(cp.line_no == UNCOUNTED for cp in tailer.known.values())
        with open(path, "ab") as f:
            f.write(appended)
        more = _drive(tailer.poll(on_batch, force_scan=True))
        while more:
            more = _drive(tailer.poll(on_batch))
    [cp] = tailer.take_checkpoints()
    with blocking_reads():
        _drive(tailer.close())
    monkeypatch.undo()
    return records, (cp.offset, cp.line_no, cp.header), errors


@pytest.mark.parametrize("case", sorted(CASES))
def test_appended_rows_read_alike_started_at_the_end_or_the_beginning(tmp_path: Path, case: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    initial, appended, header = CASES[case]
    before = initial.count(b"\n")
    at_end, cp_end, errors_end = _run(tmp_path, initial, appended, "end", monkeypatch)
    whole, cp_whole, errors_whole = _run(tmp_path, initial, appended, "beginning", monkeypatch)
    assert at_end == [r for r in whole if r[0] > before]
    assert errors_end == [e for e in errors_whole if e[0] > before]
    assert cp_end == cp_whole
    assert cp_end[2] == header
    if case.startswith(("blank_then_csv", "spaces_line", "blank_lines_and", "bom_blank")):
        assert [r[0] for r in at_end] == [before + 1] and errors_end == []  # the appended row is read, not lost


@pytest.mark.parametrize("case", ["blank_then_csv_header", "junk_then_json", "blank_then_json"])
def test_a_file_unreadable_at_the_first_start_gets_the_same_header_at_its_first_open(
        tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started at its end by a first start that could not read it: its lines (and header) are counted when it is
    first opened, by the same rule."""
    initial, appended, _header = CASES[case]
    before = initial.count(b"\n")
    later, cp_later, errors_later = _run(tmp_path, initial, appended, "end", monkeypatch, unreadable_first=True)
    whole, cp_whole, errors_whole = _run(tmp_path, initial, appended, "beginning", monkeypatch)
    assert later == [r for r in whole if r[0] > before]
    assert errors_later == [e for e in errors_whole if e[0] > before]
    assert cp_later == cp_whole


@pytest.mark.parametrize("case", ["blank_then_csv_header", "junk_then_json", "blank_then_json", "junk_then_csv_rows"])
def test_a_span_from_an_uncounted_position_reads_by_the_same_header(tmp_path: Path, case: str) -> None:
    """The correlator's re-read of a span whose lines before it are uncounted (linecount in exporter.spans)."""
    initial, appended, header = CASES[case]
    path = tmp_path / "acct-1.csv"
    path.write_bytes(initial + appended)
    st = os.stat(path)
    span = span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (len(initial), UNCOUNTED, ""), st.st_size, None)
    batch, consumed, line_no, columns = read_span(span, 1 << 20)
    parser = FileParser("acct", str(path), None)
    parser.parse_all(initial, final=True)
    [tail] = parser.parse_all(appended, final=True)
    assert consumed == len(appended) and line_no == (initial + appended).count(b"\n")
    assert columns is not None and columns.header_line == header == parser.columns.header_line  # type: ignore[union-attr]
    got = [] if batch is None else list(zip(batch.line_numbers, map(tuple, batch.rows), strict=True))
    want = [] if tail.batch is None else list(zip(tail.batch.line_numbers, map(tuple, tail.batch.rows), strict=True))
    assert got == want


HEADS = [b"", b"\n", b"\n\n \t\r\n", b"\0\0\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n", b"  "]
FIRSTS = [H, b'"type",timeLogged,"rcpt"\r\n', b" TYPE ,a\n", J, b"  [\n", b"\t{}\n", b"junk\n", b"d,1,2,3\n",
          b"\xe9\n", b"type"]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("first", FIRSTS)
def test_header_of_is_what_the_parser_keeps_once_it_has_decided(head: bytes, first: bytes) -> None:
    """Whatever lines follow: the header kept is decided by the first line that is not blank (a later header may
    change the parser's columns; the checkpoint then says that one, as the file stream saves it)."""
    data = head + first + b"junk\n" + H
    parser = FileParser("acct", "/x", None)
    kept = ""
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # no complete line: the parser is given none
        parser.parse_all(line, final=True)
        if parser.decided:
            kept = parser.columns.header_line  # type: ignore[union-attr]
            break
    assert header_of(data) == kept
    assert header_of(head + first) == (kept if first.endswith(b"\n") else "")


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
def test_count_lines_decides_across_blocks(tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first line that is not blank may start and end in any block (blank lines before it in earlier ones)."""
    monkeypatch.setattr("exporter.linecount.BLOCK", block)
    cases = [(b"\xef\xbb\xbf\n\n  \n" + H + R, H.decode().strip()), (b"\n\t\n\0" + J, JSON),
             (b"\n \n\r\njunk\n" + H, NO_HEADER.header_line), (b"\n\n", ""), (b"\n" + H[:-1], "")]
    for data, header in cases:
        path = tmp_path / "f"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert count_lines(fd, len(data)) == (data.count(b"\n"), header), data
        finally:
            os.close(fd)


def test_an_overlong_first_line_decides_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line over MAX_LINE_BYTES is skipped unparsed by the file stream (one long_row): the next line decides."""
    monkeypatch.setattr("exporter.linecount.MAX_LINE_BYTES", 100)  # longer than H, shorter than J
    assert header_of(b"x" * 101 + b"\n" + H) == H.decode().strip()
    assert header_of(b"\n{" + b"x" * 100 + b"\n\n" + H) == H.decode().strip()
    assert header_of(b"x" * 100 + b"\n" + H) == NO_HEADER.header_line  # not overlong: it decides
    assert header_of(b"\0" * 400 + b"x" * 100 + b"\n" + H) == NO_HEADER.header_line  # NULs are no bytes of the line
    assert header_of(b"x" * 101) == ""  # an overlong line still open: undecided
