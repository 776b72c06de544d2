"""Property: the polars fast path and the exact csv path agree on every chunk.

Same valid rows, same line numbers, same per-type read/skip counts and the same error counts by
reason, whatever mix of valid, short, long, unknown-type, blank, CRLF, quoted and malformed lines
a chunk holds. (The fast path declines chunks it cannot judge exactly; then both are the exact path.)
"""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.parser import FileParser

FIELDS = ["type", "rcpt", "dsnDiag", "vmta"]
TYPES = ["d", "b", "t", "tq", "f", "rb", "rs", "r"]

field_text = st.text(alphabet="ab,\" @;", min_size=0, max_size=6)


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


line = st.one_of(
    st.builds(lambda t, v: _csv_line([t, *v]), st.sampled_from(TYPES), st.lists(field_text, min_size=3, max_size=3)),
    st.builds(lambda t, v: _csv_line([t, *v]), st.sampled_from(TYPES), st.lists(field_text, min_size=0, max_size=2)),
    st.builds(lambda t, v: _csv_line([t, *v]), st.sampled_from(TYPES), st.lists(field_text, min_size=4, max_size=5)),
    st.builds(lambda v: _csv_line(["zz", *v]), st.lists(field_text, min_size=3, max_size=3)),
    st.just(""),
    st.just('d,"open,quote,x'),
    st.just("d,a@x,Empf\udce4nger,v"),  # an invalid UTF-8 byte (surrogateescape below)
    st.just("t,\udcff,\"451 \udcff\",v"),
    st.just("type,rcpt,dsnDiag,vmta"),
    st.just("d,a@x,\"lone\rcr\",v"),  # a CR that ends no line: CRLF files must not lose it
    st.just("t,a@x,crlf,v\r"),  # with a LF eol, one CRLF line in a LF file
)


def outcome(parser: FileParser, data: bytes):
    batch, n = parser.parse(data)
    rows = [list(r) for r in batch.rows] if batch else []
    lines = list(batch.line_numbers) if batch else []
    repaired = batch.repaired if batch else 0
    return rows, lines, n, dict(parser.errors), dict(parser.read), dict(parser.skipped), parser.line_no, repaired


@settings(max_examples=300, deadline=None)
@given(st.lists(line, min_size=1, max_size=30), st.booleans(), st.booleans())
def test_fast_and_exact_paths_agree(lines: list[str], crlf: bool, restricted: bool):
    eol = "\r\n" if crlf else "\n"
    data = ("type,rcpt,dsnDiag,vmta" + eol + eol.join(lines) + eol).encode("utf-8", "surrogateescape")
    allowed = frozenset({"d", "t"}) if restricted else None
    fast = FileParser("s", "/f.csv", allowed)
    exact = FileParser("s", "/f.csv", allowed, fast=False)
    got, want = outcome(fast, data), outcome(exact, data)
    # The exact path keeps '' where polars has no value: compare the rows as the aggregator sees them.
    assert got == want


def test_fast_path_judges_short_unknown_and_blank_lines_itself():
    data = b"type,rcpt,dsnDiag,vmta\nd,a@x,ok,v1\nd\n\nzz,1,2,3\r\nt,\"q,1\",\"say \"\"x\"\"\",v2\n"
    p = FileParser("s", "/f.csv", None)
    result = p._parse_frame(data)
    assert result is not None, "the fast path declined a chunk it can judge"
    batch, n = result
    assert n == 6 and batch is not None
    assert batch.rows == [["d", "a@x", "ok", "v1"], ["t", "q,1", 'say "x"', "v2"]]
    assert batch.line_numbers == [2, 6]
    assert p.errors == {"short_row": 1, "unknown_type": 1}
