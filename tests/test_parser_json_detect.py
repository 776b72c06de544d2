"""A file's form (CSV or JSON) is decided once, by its first non-blank line, wherever the reads end.

A file whose first non-blank line opens a JSON object or array is JSON; any other first line makes it CSV, for good:
a JSON line after it is a CSV line without a header (`missing_header`, not `bad_quoting`), in one chunk, in chunks
of any size, under the daemon's tailer as the file grows, and after a restart from the checkpoint. Blank lines before
that first line are blank in either form.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.parser import FileParser
from exporter.records import Columns
from tests.test_parser_layout_segments import CHUNKS, Outcome, read_appends, read_whole

REC = (b'{"type":"d","timeLogged":"2026-01-01 12:00:00+0000","orig":"a@x.example","rcpt":"b@gmail.com",'
       b'"vmta":"v1"}\n')
NAME = "acct-1.json"


def counted(outcome: Outcome, prefix: str) -> dict[str, float]:
    out = {}
    for line in outcome.page:
        name, _, value = line.rpartition(" ")
        if name.startswith(prefix) and float(value):
            out[name] = float(value)
    return out


def errors(outcome: Outcome) -> dict[str, float]:
    return {name.split('reason="')[1].split('"')[0]: v
            for name, v in counted(outcome, "watchtower_parse_errors_total").items()}


def delivered(outcome: Outcome) -> float:
    return sum(counted(outcome, "pmta_delivered_total").values())


@pytest.mark.parametrize("lead", [b"", b"\n"])
def test_json_lines_after_a_first_line_that_is_no_json_are_lines_without_a_header(tmp_path: Path,
                                                                                  lead: bytes) -> None:
    data = lead + b"x\n" + REC * 3
    outcomes = [read_whole(tmp_path / str(chunk), data, chunk, name=NAME) for chunk in CHUNKS]
    outcomes.append(read_appends(tmp_path / "grown", [lead + b"x\n" + REC, REC, REC], name=NAME))
    outcomes.append(read_appends(tmp_path / "restarted", [lead + b"x\n", REC, REC + REC], name=NAME, restart=True))
    for outcome in outcomes:
        assert errors(outcome) == {"missing_header": 4.0}
        assert delivered(outcome) == 0
        assert outcome.records == []
    first = outcomes[0].page
    assert all(outcome.page == first for outcome in outcomes[:-1])  # the restarted run sums its tailers' pages


@pytest.mark.parametrize("lead", [b"", b"\n", b"\n\n", b" \n\t\r\n", b"\r\n"])
def test_blank_lines_before_the_first_json_record_leave_the_file_json(tmp_path: Path, lead: bytes) -> None:
    data = lead + REC * 3
    outcomes = [read_whole(tmp_path / str(chunk), data, chunk, name=NAME) for chunk in CHUNKS]
    outcomes.append(read_appends(tmp_path / "grown", [lead, REC, REC, REC], name=NAME))
    outcomes.append(read_appends(tmp_path / "restarted", [lead, REC, REC + REC], name=NAME, restart=True))
    nlines = lead.count(b"\n")
    for outcome in outcomes:
        assert errors(outcome) == {}
        assert delivered(outcome) == 3
        assert [line for _names, line, _row in outcome.records] == [nlines + 1, nlines + 2, nlines + 3]
        assert outcome.checkpoint[:2] == (len(data), nlines + 3)
    assert all(outcome.page == outcomes[0].page for outcome in outcomes[:-1])


@pytest.mark.parametrize("lead", [b"\n", b" \n", b"\t\r\n"])
def test_blank_lines_before_a_csv_header_are_blank_lines(tmp_path: Path, lead: bytes) -> None:
    data = lead + b"type,timeLogged,vmta,rcpt\nd,2026-01-01 12:00:00+0000,v1,u@gmail.com\n"
    outcomes = [read_whole(tmp_path / str(chunk), data, chunk) for chunk in CHUNKS]
    outcomes.append(read_appends(tmp_path / "grown", [lead, data[len(lead):]]))
    for outcome in outcomes:
        assert errors(outcome) == {}
        assert delivered(outcome) == 1
    assert all(outcome.page == outcomes[0].page for outcome in outcomes)


def test_lines_before_any_header_are_missing_header_whatever_their_quoting(tmp_path: Path) -> None:
    """A JSON record or a quote that never closes before the header: a line without a header, however read."""
    data = b'x,"y\n' + REC + b"type,timeLogged,vmta\nd,2026-01-01 12:00:00+0000,v1\n"
    outcomes = [read_whole(tmp_path / str(chunk), data, chunk) for chunk in CHUNKS]
    for outcome in outcomes:
        assert errors(outcome) == {"missing_header": 2.0}
        assert delivered(outcome) == 1
    assert all(outcome.page == outcomes[0].page for outcome in outcomes)


def test_the_parser_keeps_the_decision_across_chunks_and_in_its_checkpointed_header() -> None:
    p = FileParser("acct", "/x/acct.json", None)
    assert p.parse(b"\n")[0] is None and p.columns is None and p.errors == {}  # blank only: not decided yet
    assert p.parse(b"x\n")[0] is None and p.errors == {"missing_header": 1}
    p.errors.clear()
    assert p.parse(REC)[0] is None and p.errors == {"missing_header": 1}
    # A restart rebuilds the parser from the checkpoint's header text (exporter/filestream.py): still CSV.
    assert p.columns is not None
    restored = FileParser("acct", "/x/acct.json", None, columns=Columns.of_header_line(p.columns.header_line),
                          line_no=p.line_no)
    assert restored.parse(REC)[0] is None and restored.errors == {"missing_header": 1}
    assert restored.line_no == 4
    # ... and a header that comes later is read as ever.
    batch, n = restored.parse(b"type,vmta\nd,v1\n")
    assert n == 2 and batch is not None and batch.line_numbers == [6] and batch.columns.names == ("type", "vmta")


def test_a_file_of_blank_lines_stays_undecided_through_a_restart() -> None:
    p = FileParser("acct", "/x/acct.json", None)
    p.parse(b"\n \n")
    assert p.columns is None and p.line_no == 2 and p.errors == {}
    restored = FileParser("acct", "/x/acct.json", None, columns=None, line_no=p.line_no)
    batch, n = restored.parse(REC)
    assert n == 1 and batch is not None and batch.line_numbers == [3] and restored.errors == {}
