"""FileParser: header mapping, RFC 4180 quoting, CRLF, and every bad-line reason counted exactly."""

from __future__ import annotations

import random

import pytest

from exporter import parser as parser_module
from exporter.parser import FileParser, invalid_utf8_lines

HEADER = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,vmtaPool\n"


def parse(text: str | bytes, allowed: frozenset[str] | None = None, parser: FileParser | None = None):
    p = parser or FileParser("acct", "/x/acct-2026-11-25-0000.csv", allowed)
    data = text.encode() if isinstance(text, str) else text
    batch, n = p.parse(data)
    return p, batch, n


def test_rows_are_mapped_by_header_name_and_quotes_unescaped():
    p, batch, n = parse(
        "type,vmta,rcpt\n"  # reordered columns (type always leads): parse by name
        'd,vmta-1,"a,b@x.com"\n'
        'b,vmta-2,"say ""hi""@y.com"\r\n'
    )
    assert n == 3
    assert batch is not None
    assert batch.columns.type == 0 and batch.columns.vmta == 1 and batch.columns.rcpt == 2
    assert batch.rows == [["d", "vmta-1", "a,b@x.com"], ["b", "vmta-2", 'say "hi"@y.com']]
    assert batch.line_numbers == [2, 3]
    assert p.read == {"d": 1, "b": 1}
    assert p.errors == {}


def test_every_bad_line_reason_is_counted_once_with_its_line():
    text = (
        HEADER
        + "d,1,2,o@a,r@b,2.0.0,ok,v,p\n"  # line 2 ok
        + "d\n"  # 3 short_row (was `d,1,2`, now a record: PMTA leaves trailing empty fields out)
        + "d,1,2,o@a,r@b,2.0.0,ok,v,p,extra\n"  # 4 long_row
        + "zz,1,2,o@a,r@b,2.0.0,ok,v,p\n"  # 5 unknown_type
        + 'd,1,2,"o@a,r@b,2.0.0,ok,v,p\n'  # 6 bad_quoting (unbalanced)
        + "t,1,2,o@a,r@b,4.0.0,later,v,p\n"  # 7 ok
        + "\n"  # 8 blank: ignored
    )
    data = text.encode() + b"d,1,2,o@a,\xff\xfe@b,2.0.0,ok,v,p\n"  # 9 invalid UTF-8: repaired, not lost
    p, batch, n = parse(data)
    assert n == 9
    assert batch is not None
    assert batch.line_numbers == [2, 7, 9]
    assert [r[0] for r in batch.rows] == ["d", "t", "d"]
    assert batch.rows[2][4] == "\ufffd\ufffd@b"
    assert p.errors == {"short_row": 1, "long_row": 1, "unknown_type": 1, "bad_quoting": 1}
    assert p.read == {"d": 2, "t": 1}
    assert batch.repaired == 1


def test_rows_before_any_header_are_missing_header_errors():
    p, batch, n = parse("d,1,2\nb,3,4\n")
    assert batch is None and n == 2
    assert p.errors == {"missing_header": 2}


def test_header_state_and_line_numbers_continue_across_chunks():
    p, batch, _ = parse(HEADER + "d,1,2,o@a,r@b,2.0.0,ok,v,p\n")
    p.errors.clear()
    p.read.clear()
    _, batch2, n = parse("t,1,2,o@a,r@b,4.0.0,x,v,p\n", parser=p)
    assert n == 1 and batch2 is not None
    assert batch2.line_numbers == [3]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("second", [
    "type,vmta,vmtaPool,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag",  # reordered, same count
    "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,vmtaPool,dlvTlsProtocol",  # a field added
    "type,vmta",  # fields dropped
])
def test_a_header_mid_chunk_maps_each_row_by_the_header_above_it(fast: bool, second: str) -> None:
    """PMTA rewrites the header when its <acct-file> fields change. The rows before the new header in the same
    chunk must keep their own mapping (they were read as the new one: a time as vmta, or a crash on the count), and
    those after it are read by the new header's columns alone, as if the chunk had ended before it."""
    values = {"type": "d", "timeLogged": "1", "timeQueued": "2", "orig": "o@a", "rcpt": "r@b", "dsnStatus": "2.0.0",
              "dsnDiag": "ok", "vmta": "vm-9", "vmtaPool": "p-9", "dlvTlsProtocol": "TLSv1.3"}
    after = ",".join(values[name] for name in second.split(","))
    data = (HEADER + "d,1,2,o@a,r@b,2.0.0,ok,v,p\n" * 3 + second + "\n" + after + "\n").encode()
    p, batch, n = parse(data, parser=FileParser("acct", "/x/acct-2026-11-25-0000.csv", None, fast=fast))
    assert n == 4 and p.held == len(second) + len(after) + 2 and batch is not None  # `parse` ends before it
    p = FileParser("acct", "/x/acct-2026-11-25-0000.csv", None, fast=fast)
    segments = p.parse_all(data)
    assert [s.lines for s in segments] == [4, 2] and p.errors == {} and p.held == 0
    first, then = (s.batch for s in segments)
    assert first is not None and then is not None
    c = first.columns
    assert c.names == tuple(HEADER.strip().split(","))
    assert [(row[c.vmta], row[c.vmtaPool]) for row in first.rows] == [("v", "p")] * 3
    c = then.columns
    assert c.names == tuple(second.split(","))
    assert [(row[c.vmta], row[c.vmtaPool] if c.vmtaPool >= 0 else "") for row in then.rows] == [
        ("vm-9", "p-9" if "vmtaPool" in second else "")]
    assert first.frame.height == 3 and then.frame.height == 1  # the frames the aggregator builds
    assert p.columns is not None and p.columns.names == tuple(second.split(","))  # the next chunk reads the new one


def test_types_not_fed_by_the_source_are_skipped_not_errors():
    p, batch, _ = parse(HEADER + "d,1,2,o@a,r@b,2.0.0,ok,v,p\nb,1,2,o@a,r@b,5.1.1,no,v,p\n",
                        allowed=frozenset({"b"}))
    assert batch is not None and [r[0] for r in batch.rows] == ["b"]
    assert p.skipped == {"d": 1} and p.errors == {}


LATIN1 = b"b,1,2,o@a,r@b,5.1.1,smtp;550 5.1.1 Empf\xe4nger unbekannt,v,p\n"
SHORT_REPLY = b"t,1,2,o@a,s@b,4.0.0,451 \xff,v,p\n"


def test_invalid_utf8_in_free_text_keeps_the_record_with_replacement_characters():
    """#8 defect 2: a latin-1 reply from a remote MX must not cost the record."""
    for fast in (True, False):
        p = FileParser("acct", "/x/a.csv", None, fast=fast)
        good = b"d,1,2,o@a,r@b,2.0.0,ok,v,p\n" * 50
        batch, n = p.parse(HEADER.encode() + good + LATIN1 + good + SHORT_REPLY)
        assert n == 103 and batch is not None
        assert len(batch.rows) == 102
        assert p.errors == {}
        assert p.read == {"d": 100, "b": 1, "t": 1}
        assert batch.repaired == 2
        by_line = dict(zip(batch.line_numbers, batch.rows, strict=True))
        assert by_line[52][6] == "smtp;550 5.1.1 Empf\ufffdnger unbekannt"
        assert by_line[103][6] == "451 \ufffd"


def test_only_the_bad_line_leaves_the_fast_path(monkeypatch):
    """One bad byte must not send the whole chunk to the csv fallback."""
    p = FileParser("acct", "/x/a.csv", None)
    monkeypatch.setattr(FileParser, "_parse_exact", lambda self, data: (_ for _ in ()).throw(AssertionError("fell")))
    batch, n = p.parse(HEADER.encode() + b"d,1,2,o@a,r@b,2.0.0,ok,v,p\n" * 1000 + LATIN1)
    assert n == 1002 and batch is not None and len(batch) == 1001 and batch.repaired == 1


def test_a_repaired_record_of_a_skipped_type_is_not_counted_as_repaired():
    p = FileParser("acct", "/x/a.csv", frozenset({"d"}))
    batch, _n = p.parse(HEADER.encode() + b"d,1,2,o@a,r@b,2.0.0,ok,v,p\n" + LATIN1)
    assert batch is not None and batch.repaired == 0 and p.skipped == {"b": 1}


@pytest.mark.parametrize("crlf", [False, True])
def test_invalid_utf8_on_a_continuation_line_counts_its_record_as_repaired(crlf: bool) -> None:
    """A quoted reply spanning lines: the bad byte on its second or third line is that record's repair, once;
    one in a bad record after it (not used) is nobody's."""
    rows = (
        b"d,1,2,o@a,r@b,2.0.0,ok,v,p\n"
        b'b,1,2,o@a,r@b,5.1.1,"550 first line\nsecond \xe4 line\nthird \xff line",v,p\n'  # lines 3-5
        b"d,1,2,o@a,r@b,2.0.0,ok,v,p\n"  # line 6
        b'd,1,2,o@a,r@b,2.0.0,"ok\n \xe4 again",v,p\n'  # lines 7-8
        b"x,1,2,o@a,r@b,5.1.1,\xe4 unknown,v,p\n"  # line 9: unknown_type, not repaired
    )
    data = HEADER.encode() + rows
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    for fast in (True, False):
        p = FileParser("acct", "/x/a.csv", None, fast=fast)
        batch, n = p.parse(data)
        assert n == 9 and batch is not None
        assert batch.line_numbers == [2, 3, 6, 7]
        assert p.errors == {"unknown_type": 1}
        assert batch.repaired == 2, (fast, crlf)


def _invalid_lines_one_by_one(data: bytes) -> list[int]:
    bad = []
    for i, line in enumerate(data.split(b"\n")):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    return bad


@pytest.mark.parametrize("block", [1, 5, 64, 1 << 16])
def test_invalid_utf8_lines_are_found_whatever_the_block_size(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Only blocks holding a non-ASCII byte are decoded: every bad line is still found, with its index,
    including several in one block, one at a block's edge, multi-byte UTF-8 and a last line without \\n."""
    monkeypatch.setattr(parser_module, "_UTF8_BLOCK", block)
    rng = random.Random(block)
    pieces = [b"d,ok,v", b"d,Empf\xe4nger,v", b"d,\xc3\xa4 fine,v", b"d,\xe2\x82,v", b"", b"t,\xff\xfe,x"]
    for _ in range(200):
        lines = [rng.choice(pieces) * rng.randint(1, 3) for _ in range(rng.randint(1, 40))]
        data = b"\n".join(lines) + rng.choice([b"\n", b""])
        assert invalid_utf8_lines(data) == _invalid_lines_one_by_one(data)


def test_a_crlf_chunk_and_a_chunk_with_a_lone_cr_keep_their_bytes() -> None:
    """CRLF ends are dropped by removing every CR only when no CR stands alone (the fast one-byte path)."""
    crlf = (HEADER + "d,1,2,o@a,r@b,2.0.0,ok,v,p\n" * 3).replace("\n", "\r\n").encode()
    lone = crlf.replace(b"ok,v,p\r\nd,1", b'"o\rk",v,p\r\nd,1', 1)
    for data, diag in ((crlf, "ok"), (lone, "o\rk")):
        p = FileParser("acct", "/x/a.csv", None)
        batch, n = p.parse(data)
        assert n == 4 and batch is not None and p.errors == {}
        assert [r[6] for r in batch.rows] == [diag, "ok", "ok"]
        assert [r[8] for r in batch.rows] == ["p", "p", "p"]  # no CR left at the end of a line


@pytest.mark.parametrize("fast", [True, False])
def test_each_bad_line_is_logged_once_even_when_the_chunk_is_parsed_again(fast, caplog):
    """A chunk the csv pass gives up on (bad quoting) is parsed again line by line: the bad lines before that
    point were counted once but logged twice (a 3 MB random file logged lines 2-5 twice)."""
    p = FileParser("acct", "/x/a.csv", None, fast=fast)
    good = b"d,1,2,o@a,r@b,2.0.0,ok,v,p\n"
    data = HEADER.encode() + good + b"zz,1\n" + b"qq,2\n" + good + b'd,1,2,"o"x@a,r@b,2.0.0,ok,v,p\n' + good
    with caplog.at_level("WARNING", logger="watchtower.parser"):
        batch, n = p.parse(data)
    assert n == 7 and batch is not None and len(batch) == 3
    assert p.errors == {"unknown_type": 2, "bad_quoting": 1}
    logged = [(r.args[1], r.args[2]) for r in caplog.records if r.name == "watchtower.parser"]
    assert logged == [(3, "unknown_type"), (4, "unknown_type"), (6, "bad_quoting")]


@pytest.mark.parametrize("spelling", ["Type", "TYPE", " type"])
def test_a_header_spelt_otherwise_mid_file_is_a_header_on_both_paths(spelling: str) -> None:
    good = "d,1,2,o@a,r@b,2.0.0,ok,v,p\n" * 40
    data = HEADER + good + spelling + ",vmta,vmtaPool,TIMELOGGED,timeQueued,orig,rcpt,dsnStatus,dsnDiag\n" + \
        "d,vm-9,p-9,1,2,o@a,r@b,2.0.0,ok\n"
    for fast in (True, False):
        p = FileParser("acct", "/x/acct-2026-11-25-0000.csv", None, fast=fast)
        segments = p.parse_all(data.encode())
        assert ([s.lines for s in segments], p.errors) == ([41, 2], {}), fast
        batches = [s.batch for s in segments]
        assert [len(b) if b is not None else 0 for b in batches] == [40, 1], fast
        for batch in batches:  # names in another case are the same field: every row keeps its type, vmta and time
            assert batch is not None
            c = batch.columns
            assert len(c.names) == 9 and batch.frame.height == len(batch), (fast, c.names)
            assert {(row[c.type], row[c.vmta], row[c.timeLogged]) for row in batch.rows} <= {
                ("d", "v", "1"), ("d", "vm-9", "1")}, fast
        assert {(row[c.type], row[c.vmta]) for row in batch.rows} == {("d", "vm-9")}  # the new header's row


@pytest.mark.parametrize("neighbour", ["d,1,2,o@a,r@b,2.0.0,ok,v2,p\n",  # the fast path takes the chunk
                                       'd,1,2,o@a,r@b,2.0.0,ok,"v2"x,p\n'])  # a bad quote: the exact path does
def test_a_lone_cr_inside_a_field_gets_the_same_verdict_on_both_paths(neighbour: str) -> None:
    """A CR not followed by LF in an unquoted reply text: the fast path kept the record; the exact path (csv.reader,
    which ends a line at a lone CR) made it a bad_quoting error. Which path a chunk takes must not decide."""
    data = HEADER + "d,1,2,o@a,r@b,2.0.0,smtp;250 ok\rmore,v1,p\n" + neighbour
    for fast in (True, False):
        p, batch, n = parse(data, parser=FileParser("acct", "/x/acct-2026-11-25-0000.csv", None, fast=fast))
        assert n == 3 and batch is not None, fast
        assert batch.rows[0][6] == "smtp;250 ok\rmore" and batch.rows[0][7] == "v1", fast
        assert p.errors == ({} if "x," not in neighbour else {"bad_quoting": 1}), (fast, p.errors)


@pytest.mark.parametrize("fast", [True, False])
def test_a_field_longer_than_the_csv_modules_default_limit_is_read_on_both_paths(fast: bool) -> None:
    """csv.reader refuses a field over 131,072 characters (its default field_size_limit): the exact path called
    such a line bad_quoting while the polars path read it, so a chunk that also held a quoted line break (exact
    path) counted it otherwise. A field may be as long as a line (MAX_LINE_BYTES)."""
    head = b"type,rcpt,vmta,dsnDiag\n"
    big = b"d,b@gmail.com,v1," + b"x" * 140_000 + b"\n"
    multi = b'd,c@gmail.com,v2,"multi\nline"\n'
    for body in (big, big + multi):
        p = FileParser("s", "/f", None, fast=fast)
        batch, consumed = p.parse(head + body)
        assert batch is not None and len(batch.rows) == body.count(b"\nd,") + 1, (fast, p.errors)
        assert (dict(p.errors), dict(p.read)) == ({}, {"d": len(batch.rows)})


@pytest.mark.parametrize("fast", [True, False])
def test_a_bom_opening_a_line_past_the_first_counts_the_same_wherever_the_chunk_starts(fast: bool) -> None:
    """polars drops a BOM that opens what it reads, so the fast path read a BOM line that began a chunk and called
    the same line unknown_type in the middle of one (oneshot and daemon disagreed). Only the file's first line may
    carry a BOM (an editor's); elsewhere the line is counted as it stands, wherever the chunk boundary falls."""
    head = b"type,timeLogged,rcpt,vmta\n"
    good = b"d,1704067210,x@gmail.com,v1\n"
    bommed = b"\xef\xbb\xbfd,1704067211,y@gmail.com,v1\n"
    whole = FileParser("s", "/f", None, fast=fast)
    whole.parse(head + good + bommed)
    split = FileParser("s", "/f", None, fast=fast)
    split.parse(head + good)
    split.parse(bommed)
    right_after_header = FileParser("s", "/f", None, fast=fast)
    right_after_header.parse(head + bommed)
    for p in (whole, split):
        assert (p.read, p.errors) == ({"d": 1}, {"unknown_type": 1}), (fast, p.read, p.errors)
    assert (right_after_header.read, right_after_header.errors) == ({}, {"unknown_type": 1})


def test_lines_left_unlogged_are_summed_up_when_their_minute_ends_with_that_minute(monkeypatch, caplog) -> None:
    """50 bad lines in one second, burst 2: the 48 others were said only at the next bad line, hours later, as "not
    logged in the last 10800s". They are said once the window has passed (the tailer asks every poll), with its
    own span."""
    import logging

    clock = [1000.0]
    monkeypatch.setattr(parser_module.time, "monotonic", lambda: clock[0])
    log = parser_module.ErrorLog(burst=2, interval=60)
    with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
        for i in range(50):
            clock[0] += 0.01
            log.report("acct", "/l/acct.csv", i + 2, "short_row", "x")
        clock[0] += 30
        log.expire()  # the window is still open
        assert len(caplog.records) == 2
        clock[0] += 31
        log.expire()
        log.expire()  # said once
        clock[0] += 3 * 3600
        log.report("acct", "/l/acct.csv", 999, "short_row", "y")
    said = [r.getMessage() for r in caplog.records]
    assert said[2:] == ["source acct: 48 more bad lines not logged in the 60s after the first of them",
                        said[3]] and said[3].startswith("/l/acct.csv:999: short_row"), said
