"""FileParser(fields=...): a metrics-only reader materialises fewer columns, and counts exactly the same.

Same line numbers, read/skip counts, error counts by reason and repaired records as the exact path;
the rows carry the requested fields (the others read as ''), and a bad line is still logged whole.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.aggregate import FIELDS
from exporter.parser import FileParser
from tests.test_parser_paths import line, outcome

HEADER = "type,rcpt,dsnDiag,vmta"
DROPPED = 2  # dsnDiag: neither requested nor the blank-line probe (column 1)
# The parser's own sentinel as a field: a long row ending in it must still be a long row.
odd_line = line | st.sampled_from(["d,a@x,ok,v,\x01", "t,\x01,x,v", "d,a,b,c,d,e", "d,\x01"])


@settings(max_examples=200, deadline=None)
@given(st.lists(odd_line, min_size=1, max_size=30), st.booleans(), st.booleans())
def test_projected_fast_path_counts_as_the_exact_path(lines: list[str], crlf: bool, restricted: bool) -> None:
    eol = "\r\n" if crlf else "\n"
    data = (HEADER + eol + eol.join(lines) + eol).encode("utf-8", "surrogateescape")
    allowed = frozenset({"d", "t"}) if restricted else None
    projected = FileParser("s", "/f.csv", allowed, fields=frozenset({"type", "vmta"}))
    exact = FileParser("s", "/f.csv", allowed, fast=False)
    got, want = outcome(projected, data), outcome(exact, data)
    want_rows = [[v if i != DROPPED or projected.fields is None else "" for i, v in enumerate(r)] for r in want[0]]
    if got[0] != want[0]:  # the projection was used: the unread column is ''
        assert got[0] == want_rows
    assert got[1:] == want[1:]


def test_projection_keeps_what_the_aggregator_reads_and_drops_the_rest() -> None:
    header = "type,timeLogged,orcpt,rcpt,dsnDiag,dlvEsmtpAvailable,vmta,header_Message-Id,jobId"
    data = (header + "\nd,t1,rfc822;a@x,a@x,ok,PIPELINING,v1,<m@x>,j1\n").encode()
    parser = FileParser("s", "/f.csv", None, fields=FIELDS)
    batch, n = parser.parse(data)
    assert n == 2 and batch is not None
    assert batch.frame.columns == ["c0", "c1", "c3", "c4", "c6", "__line"]
    assert batch.rows == [["d", "t1", "", "a@x", "ok", "", "v1", "", ""]]
    assert FileParser("s", "/f.csv", None).parse(data)[0].rows == [  # type: ignore[union-attr]
        ["d", "t1", "rfc822;a@x", "a@x", "ok", "PIPELINING", "v1", "<m@x>", "j1"]]


def test_a_bad_line_is_logged_whole_when_projected(caplog: pytest.LogCaptureFixture) -> None:
    data = b"type,rcpt,dsnDiag,vmta\nd,a@x,ok,v1\nd\nzz,1,secret-diag,3\n"  # `d`: short_row (a 3-field row is read)
    parser = FileParser("s", "/f.csv", None, fields=frozenset({"type", "vmta"}))
    with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
        batch, n = parser.parse(data)
    assert n == 4 and batch is not None and len(batch) == 1
    assert parser.errors == {"short_row": 1, "unknown_type": 1}
    assert "short_row" in caplog.text and "zz,1,secret-diag,3" in caplog.text


def test_a_long_row_ending_in_the_sentinel_is_a_long_row() -> None:
    data = b"type,rcpt,dsnDiag,vmta\nd,a@x,ok,v1\nd,a@x,ok,v1,\x01\n"
    parser = FileParser("s", "/f.csv", None, fields=frozenset({"type", "vmta"}))
    batch, n = parser.parse(data)
    assert n == 3 and batch is not None and batch.line_numbers == [2]
    assert parser.errors == {"long_row": 1}
