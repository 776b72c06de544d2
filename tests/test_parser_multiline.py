"""Records the parser used to lose: a quoted field holding a line break (RFC 4180), on both paths and across chunk
ends, bounded by MAX_RECORD_SPAN; and rows PMTA wrote without their trailing empty fields."""

from __future__ import annotations

import pytest

from exporter.parser import MAX_RECORD_SPAN, FileParser

HEADER = b"type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,dsnMta,bounceCat,vmta,queue,vmtaPool\n"
MULTI = (
    b"t,2024-01-01 10:00:14+0000,2024-01-01 09:59:00+0000,a@sender.com,u3@gmail.com,4.2.2 (x),"
    b'"smtp;452-4.2.2 over quota\n452 4.2.2 the recipient - gsmtp",gmail-smtp-in.l.google.com (64.233.161.27),,'
    b"vmta1,gmail.com/vmta1,pool1\n"
    b"d,2024-01-01 10:00:15+0000,2024-01-01 09:59:00+0000,a@sender.com,u4@gmail.com,2.0.0 (success),"
    b'"smtp;250 ok ""quoted"", fine",gmail-smtp-in.l.google.com (64.233.161.27),success,vmta1,gmail.com/vmta1,'
    b"pool1\n"
)
DIAG = "smtp;452-4.2.2 over quota\n452 4.2.2 the recipient - gsmtp"
PLAIN = b"d,2024-01-01 10:00:16+0000,,a@sender.com,u5@gmail.com,2.0.0 (success),ok,mx,success,vmta1,q,pool1\n"

BOUNCE_HEADER = b"type,timeQueued,bounceCat,vmta,orig,rcpt,srcMta,dlvSourceIp,jobId,dsnStatus,dsnMta,dsnDiag\n"
BOUNCES = (  # pmta-formats.md section 4: PMTA leaves the empty trailing fields out
    b"b,2016-05-29 01:10:51+0200,bad-domain,vmta-mymta04,mailwizz@example.com,XXX@domain.com,"
    b"sourcemta.domain.com (0.0.0.0),1.1.1.1,,5.1.2 (bad destination system: no such domain),\n"
    b"b,2016-05-29 01:10:23+0200,bad-mailbox,vmta-mymta03,mailwizz@example.com,YYY@anotherdomain.com,"
    b"sourcemta.domain.com (0.0.0.0),1.1.1.1,,5.1.1 (bad destination mailbox address),mx1.destindomain.com (2.2.2.2)\n"
)


def rows_of(parser: FileParser, data: bytes, final: bool = True) -> tuple[list[list[str]], list[int], int]:
    batch, n = parser.parse(data) if final else parser.parse(data, final=False)
    if batch is None:
        return [], [], n
    return [[x or "" for x in r] for r in batch.rows], list(batch.line_numbers), n


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("fast", [True, False])
def test_a_quoted_line_break_keeps_the_record(fast: bool, crlf: bool) -> None:
    data = HEADER + MULTI + PLAIN
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    p = FileParser("s", "/f.csv", None, fast=fast)
    rows, lines, n = rows_of(p, data)
    assert n == 5 and p.line_no == 5  # physical lines: the record's second line is counted, not parsed alone
    assert lines == [2, 4, 5]  # a record is numbered by its first line
    assert [r[0] for r in rows] == ["t", "d", "d"]
    assert rows[0][6] == DIAG  # the same text from a CRLF file
    assert rows[1][6] == 'smtp;250 ok "quoted", fine'
    assert p.errors == {} and p.read == {"t": 1, "d": 2} and p.held == 0


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("fast", [True, False])
def test_a_chunk_ending_inside_a_quoted_field_leaves_the_record_for_the_next(fast: bool, crlf: bool) -> None:
    """Cut after every line: the open record is held back (bytes exact) and read whole with the next chunk."""
    data = HEADER + PLAIN + MULTI + PLAIN
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    whole = rows_of(FileParser("s", "/f.csv", None, fast=fast), data)
    cuts = [i + 1 for i, c in enumerate(data) if c == ord("\n")]
    for cut in cuts:
        p = FileParser("s", "/f.csv", None, fast=fast)
        rows1, lines1, n1 = rows_of(p, data[:cut], final=False)
        consumed = cut - p.held
        assert data[:consumed].count(b"\n") == n1 == p.line_no
        rows2, lines2, n2 = rows_of(p, data[consumed:], final=False)
        assert p.held == 0 and p.errors == {}
        assert (rows1 + rows2, lines1 + lines2, n1 + n2) == whole, cut


def test_an_open_quote_at_the_end_is_held_only_while_more_may_come() -> None:
    data = HEADER + PLAIN + b'd,2024-01-01 10:00:16+0000,,a@x,u@y,2.0.0,"smtp;250 never closed\n'
    p = FileParser("s", "/f.csv", None)
    rows, lines, n = rows_of(p, data, final=False)
    assert (lines, n, p.errors) == ([2], 2, {})
    assert p.held == len(data) - len(HEADER + PLAIN)
    p = FileParser("s", "/f.csv", None)
    rows, lines, n = rows_of(p, data, final=True)  # the file's end: the quote will never close
    assert (lines, n, p.errors, p.held) == ([2], 3, {"bad_quoting": 1}, 0)


@pytest.mark.parametrize("fast", [True, False])
def test_a_quote_that_never_closes_costs_one_line_past_the_bound(fast: bool) -> None:
    open_line = b'd,2024-01-01 10:00:16+0000,,a@x,u@y,2.0.0,"smtp;250 never closed\n'
    filler = PLAIN * (MAX_RECORD_SPAN // len(PLAIN) + 2)  # no quote: nothing closes it
    data = HEADER + open_line + filler
    p = FileParser("s", "/f.csv", None, fast=fast)
    rows, lines, n = rows_of(p, data, final=False)
    count = filler.count(b"\n")
    assert p.held == 0 and n == count + 2
    assert p.errors == {"bad_quoting": 1}
    assert lines == list(range(3, count + 3))  # reading resumed at the next line: every later record counted
    assert p.read == {"d": count}


def test_a_stray_closing_quote_within_the_bound_still_ends_the_record_as_csv_reads_it() -> None:
    """Within the bound the record is what RFC 4180 says; the lines after it are records again."""
    data = HEADER + b'd,2024-01-01 10:00:16+0000,,a@x,u@y,2.0.0,"open\n' + b'still",mx,,v,q,p\n' + PLAIN
    for fast in (True, False):
        p = FileParser("s", "/f.csv", None, fast=fast)
        rows, lines, n = rows_of(p, data)
        assert (lines, n, p.errors) == ([2, 4], 4, {})
        assert rows[0][6] == "open\nstill"


@pytest.mark.parametrize("fields", [None, frozenset({"type", "vmta", "bounceCat", "dsnStatus"})])
@pytest.mark.parametrize("fast", [True, False])
def test_missing_trailing_fields_are_read_empty(fast: bool, fields: frozenset[str] | None) -> None:
    data = BOUNCE_HEADER + BOUNCES + b"b\n" + b"b,2016-05-29 01:10:23+0200,x,v3\n"
    p = FileParser("s", "/f.csv", None, fast=fast, fields=fields)
    rows, lines, n = rows_of(p, data)
    assert n == 5 and lines == [2, 3, 5]
    assert [(r[2], r[3], r[9], r[10], r[11]) for r in rows] == [
        ("bad-domain", "vmta-mymta04", "5.1.2 (bad destination system: no such domain)", "", ""),
        ("bad-mailbox", "vmta-mymta03", "5.1.1 (bad destination mailbox address)", "mx1.destindomain.com (2.2.2.2)",
         ""),
        ("x", "v3", "", "", ""),
    ]
    assert p.errors == {"short_row": 1}  # `b` alone: not even its time field
    assert p.read == {"b": 3}


@pytest.mark.parametrize("fast", [True, False])
def test_a_short_row_reaches_at_least_the_first_time_column(fast: bool) -> None:
    data = b"type,orig,timeLogged,vmta\nd,a@x,2024-01-01 10:00:16+0000\nd,a@x\nzz,a@x,t\nd,a,t,v,extra\n"
    p = FileParser("s", "/f.csv", None, fast=fast)
    rows, lines, n = rows_of(p, data)
    assert n == 5 and lines == [2]
    assert rows == [["d", "a@x", "2024-01-01 10:00:16+0000", ""]]
    assert p.errors == {"short_row": 1, "unknown_type": 1, "long_row": 1}


def test_a_padded_row_of_a_type_the_source_does_not_feed_is_skipped() -> None:
    for fast in (True, False):
        p = FileParser("s", "/f.csv", frozenset({"d"}), fast=fast)
        rows, lines, n = rows_of(p, BOUNCE_HEADER + BOUNCES)
        assert (rows, n, p.errors, p.skipped) == ([], 3, {}, {"b": 2})
