"""The polars fast path reads every chunk as the exact path (Python's csv, strict: RFC 4180) reads it.

A differential fuzzer found three kinds of line the two paths read differently, so the same bytes counted differently
depending on where the chunks ended (a chunk with another bad line in it takes the exact path):

* quoting RFC 4180 does not allow: a closing quote followed by something other than a comma or the line's end
  (`"a"b"c"`, `""x""`, `"p,"a"b2"`): polars read such a field leniently (`abc`), the exact path counts the line
  `bad_quoting`;
* a header padded with the separators `\\x1c`-`\\x1f`: Python's `str.strip()` strips them, polars' did not, so the line
  was a header on one path and an `unknown_type` on the other;
* a lone CR ending an unquoted field (`u@gmail.com\\r,v`): polars dropped it, the exact path keeps it (csv semantics).

Each is read here through both paths, and through the daemon's tailer at several read sizes.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.aggregate import FIELDS
from exporter.parser import FileParser
from exporter.records import HEADER_PADDING, Columns, is_header
from tests.test_parser_layout_segments import read_whole

HEAD = b"type,timeLogged,rcpt,vmta\n"

# (name, the hostile line, what the exact path counts for it)
HOSTILE = [
    ("inner_quote", b'd,1,u@gmail.com,"a"b"c"', {"bad_quoting": 1}),
    ("doubled_outer", b'd,1,u@gmail.com,""x""', {"bad_quoting": 1}),
    ("comma_then_quote", b'd,1,"p,"a"b2",v', {"bad_quoting": 1}),
    ("quote_then_space", b'd,1,"u@gmail.com" ,v', {"bad_quoting": 1}),
    ("quote_then_cr", b'd,1,"u@gmail.com"\r,v', {"bad_quoting": 1}),
    ("quoted_comma_field_closed_early", b'd,1,"p,"a",q"', {"bad_quoting": 1}),
    ("padded_header", b"\x1ftype,vmta,timeLogged,rcpt", {}),
    ("padded_header_tail", b"type\x1e,vmta,timeLogged,rcpt", {}),
    ("lone_cr_field_end", b"d,1,u@gmail.com\r,v", {}),
    ("lone_cr_empty_field", b"d,1,\r,v", {}),
]
VALID = [b"d,1,x@example.org,v1", b'b,2,"y@yahoo.com",v2', b'd,3,z@gmail.com,"p,q ""r"""']


def outcome(parser: FileParser, data: bytes, whole: bool = False):
    """Everything a read hands on: rows (as the aggregator sees them), their lines, the lines consumed, the tallies."""
    if whole:
        segments = parser.parse_all(data)
        batches = [s.batch for s in segments]
        used = sum(s.lines for s in segments)
    else:
        batch, used = parser.parse(data)
        batches = [batch]
    rows = [(b.columns.names, list(r)) for b in batches if b is not None for r in b.rows]
    lines = [n for b in batches if b is not None for n in b.line_numbers]
    return rows, lines, used, dict(parser.errors), dict(parser.read), dict(parser.skipped), parser.line_no


def both(data: bytes, columns: Columns | None = None, whole: bool = False):
    fast = FileParser("s", "/f.csv", None, columns=columns)
    exact = FileParser("s", "/f.csv", None, columns=columns, fast=False)
    return outcome(fast, data, whole), outcome(exact, data, whole)


@pytest.mark.parametrize(("name", "line", "errors"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("whole", [False, True])
def test_both_paths_read_a_hostile_line_alike(name: str, line: bytes, errors: dict, where: str, whole: bool) -> None:
    body = {"first": [line, *VALID], "middle": [VALID[0], line, *VALID[1:]], "last": [*VALID, line]}[where]
    data = b"\n".join(body) + b"\n"
    # with the header in the chunk, and (the tailer's later chunks) without it, the header already in force
    for chunk, columns in ((HEAD + data, None), (data, Columns.from_header(HEAD.decode().strip().split(",")))):
        got, want = both(chunk, columns, whole)
        assert got == want
        assert want[3] == errors


def test_malformed_quoting_is_bad_quoting_on_both_paths() -> None:
    data = b'type,timeLogged,vmta\nd,1,"a"b"c"\nd,1,ok\n'
    got, want = both(data)
    assert got == want
    assert got[0] == [(("type", "timeLogged", "vmta"), ["d", "1", "ok"])]
    assert got[3] == {"bad_quoting": 1}


def test_a_header_padded_with_separator_characters_is_a_header_on_both_paths() -> None:
    columns = Columns.from_header(["type", "timeLogged", "vmta"])
    data = b"d,1,v1\n\x1ftype,vmta,timeLogged\nd,v2,2\n"
    got, want = both(data, columns, whole=True)
    assert got == want
    assert got[3] == {}
    assert [row for _names, row in got[0]] == [["d", "1", "v1"], ["d", "v2", "2"]]


def test_a_lone_cr_ending_a_field_is_kept_on_both_paths() -> None:
    """Python's csv keeps a CR that ends no line inside its field (the exact path's reading, and the fast path's)."""
    data = b"type,timeLogged,rcpt,vmta\nd,1,u@gmail.com\r,v\nd,1,a@b.c,w\n"
    got, want = both(data)
    assert got == want
    assert got[0][0][1] == ["d", "1", "u@gmail.com\r", "v"]


def test_header_padding_is_python_s_whitespace() -> None:
    """One explicit set for both paths: what `str.strip()` strips (Python's whitespace, \\x1c-\\x1f included)."""
    assert set(HEADER_PADDING) == {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}
    assert is_header(["\x1f type\x1c"]) and is_header(["\u3000TYPE\x85"])
    assert not is_header(["\ufefftype"])


# --- the reviewer's files, read by the daemon's tailer at several read sizes ------------------------------------

FILLER = 120


def _file(head: bytes, line: bytes, filler: bytes) -> bytes:
    """The hostile line, filler rows, and a quoted line break at the end: one oneshot read of the whole file takes the
    exact path (the line break), small reads take the fast path for every chunk without it."""
    return head + line + b"\n" + filler * FILLER + filler.replace(b"filler", b'"multi\nline"')


REVIEWER = {
    "acct-q": (_file(b"type,timeLogged,vmta\n", b'd,1,"a"b"c"', b"d,1,filler\n"), {"bad_quoting": 1}),
    "acct-us": (_file(b"type,timeLogged,vmta\n", b"\x1ftype,vmta,timeLogged\nd,v2,1", b"d,1,filler\n"), {}),
    "acct-cr": (_file(b"type,timeLogged,rcpt,vmta\n", b"d,1,u@gmail.com\r,v", b"d,1,x@example.org,filler\n"), {}),
}


@pytest.mark.parametrize("name", sorted(REVIEWER))
def test_the_reviewer_s_files_count_alike_at_every_read_size(tmp_path: Path, name: str) -> None:
    data, errors = REVIEWER[name]
    pages = {chunk: read_whole(tmp_path / str(chunk), data, chunk, fields=FIELDS).page
             for chunk in (64, 1024, 1 << 24)}
    assert pages[64] == pages[1 << 24]
    assert pages[1024] == pages[1 << 24]
    page = pages[1 << 24]
    for reason, n in errors.items():
        assert f'watchtower_parse_errors_total{{reason="{reason}",source="acct"}} {float(n)}' in page
    assert not any('vmta="abc"' in line for line in page)
    assert 'watchtower_parse_errors_total{reason="unknown_type",source="acct"} 0.0' in page


# --- a property over random mixes of hostile fragments and valid rows --------------------------------------------

def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


fragment = st.sampled_from(['"a"b"c"', '""x""', '"p,"a"b2"', '"p,"a",q"', '"a" ', '"a"\r', 'a"b', 'a""b', 'a"b"c',
                            ' "a"', '"a""b"', '""', '"""a"""', "u@gmail.com\r", "\r", "a\rb", "\x1ftype", "type\x1e",
                            " TYPE ", "\x1ctype", "x", "", 'a"b,c"d', '"x\ny"', '"', "\u00a0type", ' ",a,"', ' """'])
hostile_line = st.builds(lambda t, parts: ",".join([t, *parts]),
                         st.sampled_from(["d", "b", "t", "zz", "\x1ftype", "type"]),
                         st.lists(fragment, min_size=1, max_size=4))
valid_line = st.builds(lambda t, v: _csv_line([t, *v]), st.sampled_from(["d", "b", "t", "rb"]),
                       st.lists(st.text(alphabet='ab," \r', max_size=5), min_size=3, max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(hostile_line, valid_line), min_size=1, max_size=12), st.booleans(), st.booleans())
def test_random_hostile_mixes_read_alike_on_both_paths(lines: list[str], crlf: bool, whole: bool) -> None:
    eol = "\r\n" if crlf else "\n"
    data = ("type,timeLogged,rcpt,vmta" + eol + eol.join(lines) + eol).encode()
    got, want = both(data, whole=whole)
    assert got == want



# --- a quote opening no field: a review's shapes (the fast path read them as polars does) ------------------------

# A quote after a space (` ",a,"`): csv.reader reads it as a character of an unquoted field and the commas after it as
# separators; polars read the commas as inside a quoted stretch. The next quote then joined lines on one path only.
QUOTE_AFTER_SPACE = b'b,",", ",a,"\nd,1,u@x.org,v\nb,",d",\n\xef\xbb\xbf\r"\xef\xbb\xbfb\rb"\nd,1,u@x.org,v\n'
# Quotes after spaces, the last one left open: csv.reader counts its line bad_quoting and reads the lines after it.
QUOTES_AFTER_SPACES = b',"a", """,b  ,"\n' + b"d,1,u@x.org,v\n" * 3


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize(("body", "errors", "delivered"), [
    (QUOTE_AFTER_SPACE, {"long_row": 1, "unknown_type": 1}, 1),
    (QUOTES_AFTER_SPACES, {"bad_quoting": 1}, 3),
    (b'd,1, "u@x.org,v\n' + b"d,2,w@x.org,v\n", {}, 2),
], ids=["quote_after_space", "quotes_after_spaces", "quote_after_space_comma"])
def test_a_quote_that_opens_no_field_is_read_alike(body: bytes, errors: dict, delivered: int, whole: bool) -> None:
    got, want = both(HEAD + body, whole=whole)
    assert got == want
    assert want[3] == errors
    assert want[4].get("d", 0) == delivered


@pytest.mark.parametrize(("head", "unit", "tail", "alike"), [
    (b'a,"', b'"",', b'"\n', True),  # "" escapes inside one quoted field, closed at the end
    (b"a,", b'"",', b"\n", True),  # empty quoted fields
    (b',"', b'a""', b'"\n', True),  # escaped quotes in one field
    (b',"', b"a,", b'"x\n', False),  # the closing quote is followed by x
    (b'a,"', b'"",', b'"x\n', False),
    (b"a, ", b'"x",', b"\n", False),  # quotes after a space open no field
    (b',"', b'a",', b"\n", False),  # a quote after the comma that follows a closed field opens one never closed
])
def test_the_quote_scan_answers_long_hostile_text_as_short(head: bytes, unit: bytes, tail: bytes, alike: bool) -> None:
    """The scan reads the chunk's quotes in order, each opening or closing a field (or escaping a quote): on 100,000
    repeats of quote runs and commas it answers what it answers for 3 (a pattern that read each start's field to the
    end again would take minutes here; see tests/test_reply_regex_bounds.py)."""
    from exporter.parser import quoting_read_alike

    for n in (3, 100_000):
        assert quoting_read_alike(head + unit * n + tail) == alike


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("line", [b",\x01", b"d,1,\x01,v", b"\x01,1,u@x.org,v"])
def test_a_field_holding_the_fast_paths_sentinel_is_read_alike(line: bytes, whole: bool) -> None:
    """The fast path marks each line's end with a field of its own (`parser.SENTINEL`, \\x01): a line holding one
    as a field (`,\\x01`) read as a blank line there, `unknown_type` on the exact path (review)."""
    ok = b"d,1,u@x.org,v\n"
    got, want = both(HEAD + ok + line + b"\n" + ok, whole=whole)
    assert got == want
    assert want[4] == {"d": 2 + (line == b"d,1,\x01,v")}
