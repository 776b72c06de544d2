"""A record whose quoted field holds a line break is consumed whole or not at all: at any read size, when the file
grows in the middle of it under a running tailer, across a restart from an offset just before it, when the
correlator reads its span again, and in a real oneshot with the correlator on and off (with rows missing their
trailing empty fields, which are records too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig
from exporter.metrics import SelfMetrics
from exporter.spans import read_span, span_at
from exporter.tailer import Tailer
from tests.conftest import oneshot_nonzero
from tests.test_parser_multiline import BOUNCE_HEADER, BOUNCES, DIAG, HEADER, MULTI, PLAIN

DATA = HEADER + PLAIN + MULTI + PLAIN  # records on lines 2, 3 (two lines), 5, 6
LINES = [2, 3, 5, 6]


def tailer(directory: Path, oneshot: bool, chunk: int, checkpoints: list | None = None
           ) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "*.csv")])
    t = Tailer([src], TailConfig(rescan_interval=0, start_position="beginning", chunk_bytes=chunk),
               SelfMetrics(reg), checkpoints or (), oneshot=oneshot, first_run=not checkpoints)
    return t, reg


async def drain(t: Tailer) -> tuple[list[int], list[list[str]]]:
    lines: list[int] = []
    rows: list[list[str]] = []

    def on_batch(_stream, batch) -> None:  # type: ignore[no-untyped-def]
        lines.extend(batch.line_numbers)
        rows.extend([[x or "" for x in r] for r in batch.rows])

    more = await t.poll(on_batch, force_scan=True)
    while more:
        more = await t.poll(on_batch)
    return lines, rows


def counters(reg: CollectorRegistry) -> dict[str, float]:
    return {f"{s.name}{sorted(s.labels.items())}": s.value for m in reg.collect() for s in m.samples
            if s.value and s.name.startswith(("watchtower_parse_errors", "watchtower_lines_read",
                                              "watchtower_read_bytes", "watchtower_records_read"))
            and s.name.endswith("_total")}


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("oneshot", [False, True])
@pytest.mark.parametrize("chunk", [7, 100, 1 << 20])
async def test_a_quoted_line_break_is_read_whole_at_any_read_size(tmp_path: Path, chunk: int, oneshot: bool,
                                                                   crlf: bool) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(DATA.replace(b"\n", b"\r\n") if crlf else DATA)
    t, reg = tailer(tmp_path, oneshot, chunk)
    lines, rows = await drain(t)
    assert lines == LINES
    assert rows[1][6] == DIAG
    assert counters(reg) == {
        "watchtower_read_bytes_total[('source', 'acct')]": float(path.stat().st_size),
        "watchtower_lines_read_total[('source', 'acct')]": 6.0,
        "watchtower_records_read_total[('source', 'acct'), ('type', 'd')]": 3.0,
        "watchtower_records_read_total[('source', 'acct'), ('type', 't')]": 1.0,
    }
    cp = t.take_checkpoints()[0]
    assert (cp.offset, cp.line_no) == (path.stat().st_size, 6)
    await t.close()


@pytest.mark.parametrize("restart", [False, True])
async def test_a_record_written_in_two_parts_is_read_once_it_is_whole(tmp_path: Path, restart: bool) -> None:
    """PMTA's write lands in two parts, the first ending inside the quoted field (after its line break): the tailer
    keeps the offset before the record, whether it goes on running or restarts from its checkpoint."""
    path = tmp_path / "acct.csv"
    split = DATA.index(b"452 4.2.2")
    path.write_bytes(DATA[:split])
    t, reg = tailer(tmp_path, False, 64)
    assert (await drain(t))[0] == [2]
    cps = t.take_checkpoints()
    assert (cps[0].offset, cps[0].line_no) == (len(HEADER + PLAIN), 2)  # just before the record
    first = counters(reg)
    if restart:
        await t.close()
    with open(path, "ab") as f:
        f.write(DATA[split:])
    if restart:
        t, reg = tailer(tmp_path, False, 64, cps)
    lines, rows = await drain(t)
    assert lines == LINES[1:]
    assert rows[0][6] == DIAG
    after = counters(reg)
    total = {k: after.get(k, 0.0) + (first.get(k, 0.0) if restart else 0.0) for k in after.keys() | first.keys()}
    assert total == {
        "watchtower_read_bytes_total[('source', 'acct')]": float(len(DATA)),
        "watchtower_lines_read_total[('source', 'acct')]": 6.0,
        "watchtower_records_read_total[('source', 'acct'), ('type', 'd')]": 3.0,
        "watchtower_records_read_total[('source', 'acct'), ('type', 't')]": 1.0,
    }
    cp = t.take_checkpoints()[0]
    assert (cp.offset, cp.line_no) == (len(DATA), 6)
    await t.close()


@pytest.mark.parametrize("piece", [16, 150, 1 << 20])
def test_reading_a_span_again_gives_the_same_records(tmp_path: Path, piece: int) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(DATA)
    st = os.stat(path)
    span = span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (0, 0, ""), st.st_size, None)
    lines: list[int] = []
    while span.remaining:
        batch, consumed, line_no, columns = read_span(span, piece)
        assert consumed > 0
        if batch is not None:
            lines.extend(batch.line_numbers)
            if 3 in batch.line_numbers:
                assert batch.rows[batch.line_numbers.index(3)][6] == DIAG
        span.start += consumed
        span.line_no, span.columns = line_no, columns
    assert lines == LINES and span.line_no == 6


def _oneshot(tmp_path: Path, correlator: bool) -> dict[str, float]:
    return oneshot_nonzero(tmp_path, correlator, ("watchtower_parse_errors_total", "watchtower_lines_read_total",
                                                  "watchtower_records_read_total", "pmta_deferred_total",
                                                  "pmta_bounced_total", "pmta_delivered_total"), tail={"chunk_bytes": 200})


def test_oneshot_counts_multiline_and_short_records_the_same_with_the_correlator_on_and_off(tmp_path: Path) -> None:
    for d in ("logs", "on", "off"):
        (tmp_path / d).mkdir()
    (tmp_path / "logs" / "acct-lf.csv").write_bytes(HEADER + MULTI)
    (tmp_path / "logs" / "acct-crlf.csv").write_bytes((HEADER + MULTI).replace(b"\n", b"\r\n"))
    (tmp_path / "logs" / "bounce.csv").write_bytes(BOUNCE_HEADER + BOUNCES)
    off, on = _oneshot(tmp_path, False), _oneshot(tmp_path, True)
    assert off == on
    assert not any(k.startswith("watchtower_parse_errors_total") for k in off), off
    assert off['watchtower_lines_read_total{source="acct"}'] == 11.0
    assert off['pmta_deferred_total{class="mailbox_full",isp="gmail",vmta="vmta1",vmta_pool="pool1"}'] == 2.0
    assert off['watchtower_records_read_total{source="acct",type="d"}'] == 2.0
    assert off['watchtower_records_read_total{source="acct",type="b"}'] == 2.0
    bounced = {k: v for k, v in off.items() if k.startswith("pmta_bounced_total")}
    assert len(bounced) == 2 and sum(bounced.values()) == 2.0
    assert any('category="bad-domain"' in k and 'class="bad_domain"' in k and 'vmta="vmta-mymta04"' in k
               for k in bounced), bounced
    assert any('category="bad-mailbox"' in k and 'class="user_unknown"' in k and 'vmta="vmta-mymta03"' in k
               for k in bounced), bounced


OPEN = b'd,2024-01-01 10:00:16+0000,,a@x,u@y,2.0.0,"smtp;250 never closed\n'


@pytest.mark.parametrize("oneshot", [False, True])
async def test_a_quote_open_at_the_end_of_the_file_waits_unless_it_is_a_oneshot(tmp_path: Path, oneshot: bool) -> None:
    path = tmp_path / "acct.csv"
    path.write_bytes(HEADER + PLAIN + OPEN + PLAIN)
    t, reg = tailer(tmp_path, oneshot, 50)
    assert (await drain(t))[0] == ([2, 4] if oneshot else [2])
    cp = t.take_checkpoints()[0]
    errors = {k: v for k, v in counters(reg).items() if "parse_errors" in k}
    if oneshot:  # the file's end: the quote never closes, its line is one error and the line after it a record
        assert (cp.offset, cp.line_no) == (path.stat().st_size, 4)
        assert errors == {"watchtower_parse_errors_total[('reason', 'bad_quoting'), ('source', 'acct')]": 1.0}
    else:  # the daemon: PMTA may still be writing it
        assert (cp.offset, cp.line_no) == (len(HEADER + PLAIN), 2)
        assert errors == {}
    await t.close()


@pytest.mark.parametrize("chunk", [1000, 1 << 20])
async def test_a_quote_that_never_closes_does_not_swallow_the_file(tmp_path: Path, chunk: int) -> None:
    from exporter.parser import MAX_RECORD_SPAN

    count = MAX_RECORD_SPAN // len(PLAIN) + 50
    path = tmp_path / "acct.csv"
    path.write_bytes(HEADER + OPEN + PLAIN * count)
    t, reg = tailer(tmp_path, False, chunk)
    lines, _ = await drain(t)
    assert lines == list(range(3, count + 3))  # every record after the bad line, read by the daemon
    assert counters(reg)["watchtower_parse_errors_total[('reason', 'bad_quoting'), ('source', 'acct')]"] == 1.0
    cp = t.take_checkpoints()[0]
    assert (cp.offset, cp.line_no) == (path.stat().st_size, count + 2)
    await t.close()
