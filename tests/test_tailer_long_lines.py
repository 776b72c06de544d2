"""A physical line over MAX_LINE_BYTES is not PMTA output: it is one `long_row` parse error, skipped up to its
newline without being parsed, whatever the read size, with the correlator on or off, across a restart, and its
bytes count as read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig
from exporter.metrics import SelfMetrics
from exporter.records import MAX_LINE_BYTES
from exporter.spans import read_span, span_at
from exporter.tailer import Tailer
from tests.conftest import oneshot_nonzero

HEADER = "type,timeLogged,rcpt,vmta,dsnDiag"


def rec(i: int, diag: str = "ok") -> str:
    return f"d,2024-06-12 08:00:01+0000,u{i}@gmail.com,v1,{diag}"


def long_file(path: Path, long_bytes: int = MAX_LINE_BYTES + (8 << 20)) -> Path:
    """Header, record 0, record 1 with a dsnDiag far over the limit, records 2..6."""
    path.write_text("\n".join([HEADER, rec(0), rec(1, "A" * long_bytes)] + [rec(i) for i in range(2, 7)]) + "\n")
    return path


def tailer(directory: Path, oneshot: bool, chunk: int, checkpoints: list | None = None
           ) -> tuple[Tailer, CollectorRegistry, list[int]]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "*.csv")])
    t = Tailer([src], TailConfig(rescan_interval=0, start_position="beginning", chunk_bytes=chunk),
               SelfMetrics(reg), checkpoints or (), oneshot=oneshot, first_run=not checkpoints)
    return t, reg, []


async def drain(t: Tailer, lines: list[int]) -> None:
    def on_batch(_stream, batch) -> None:  # type: ignore[no-untyped-def]
        assert all(len(r[4]) < 100 for r in batch.rows)  # the long line is never parsed
        lines.extend(batch.line_numbers)

    more = await t.poll(on_batch, force_scan=True)
    while more:
        more = await t.poll(on_batch)


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, {"source": "acct", **labels}) or 0.0


@pytest.mark.parametrize("chunk", [1 << 20, 4 << 20, 16 << 20, 64 << 20])
async def test_an_overlong_line_is_one_long_row_error_at_any_read_size(tmp_path: Path, chunk: int,
                                                                       caplog: pytest.LogCaptureFixture):
    path = long_file(tmp_path / "long.csv")
    t, reg, lines = tailer(tmp_path, True, chunk)
    with caplog.at_level(logging.WARNING, "watchtower.parser"):
        await drain(t, lines)
    assert lines == [2, 4, 5, 6, 7, 8]
    assert value(reg, "watchtower_records_read_total", type="d") == 6
    errors = {s.labels["reason"]: s.value for m in reg.collect() for s in m.samples
              if s.name == "watchtower_parse_errors_total" and s.value}
    assert errors == {"long_row": 1}
    assert value(reg, "watchtower_read_bytes_total") == path.stat().st_size
    assert value(reg, "watchtower_lines_read_total") == 8
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"{path}:3: long_row"]
    await t.close()


async def test_an_overlong_line_without_a_newline_is_one_error_and_its_bytes_are_read(tmp_path: Path):
    path = tmp_path / "nonl.csv"
    path.write_bytes(b"B" * (3 * MAX_LINE_BYTES + 5))
    t, reg, lines = tailer(tmp_path, True, 4 << 20)
    await drain(t, lines)
    assert lines == []
    assert value(reg, "watchtower_parse_errors_total", reason="long_row") == 1
    assert value(reg, "watchtower_read_bytes_total") == path.stat().st_size
    await t.close()


async def test_a_restart_in_the_middle_of_an_overlong_line_skips_its_rest(tmp_path: Path):
    path = tmp_path / "grow.csv"
    path.write_text(f"{HEADER}\n{rec(0)}\n{rec(1, 'A' * (MAX_LINE_BYTES + 100))}")  # no newline yet
    t, reg, lines = tailer(tmp_path, False, 4 << 20)
    await drain(t, lines)
    assert lines == [2]
    assert value(reg, "watchtower_parse_errors_total", reason="long_row") == 1
    cps = t.take_checkpoints()
    assert cps[0].offset == path.stat().st_size  # its bytes are consumed, not held
    await t.close()
    with open(path, "a") as f:
        f.write("A" * 1000 + "\n" + "\n".join(rec(i) for i in range(2, 7)) + "\n")
    t, reg, lines = tailer(tmp_path, False, 4 << 20, cps)  # a restart from that checkpoint
    await drain(t, lines)
    assert lines == [4, 5, 6, 7, 8]
    errors = {s.labels["reason"]: s.value for m in reg.collect() for s in m.samples
              if s.name == "watchtower_parse_errors_total" and s.value}
    assert errors == {}  # counted before the restart; its rest is not a line of its own
    assert value(reg, "watchtower_records_read_total", type="d") == 5
    assert cps[0].line_no == 8 and cps[0].offset == path.stat().st_size
    await t.close()


@pytest.mark.parametrize("start", ["before", "inside"])
def test_reading_a_span_again_skips_an_overlong_line(tmp_path: Path, start: str):
    """The correlator reads committed ranges again (a slow sink, its own process): the same rows, never the long
    line, from a position before it or inside it."""
    path = long_file(tmp_path / "long.csv")
    st = os.stat(path)
    if start == "before":
        pos = (0, 0, "")
    else:
        head = len(f"{HEADER}\n{rec(0)}\n")
        pos = (head + 1000, 2, HEADER)
    span = span_at("f1", "acct", str(path), st.st_dev, st.st_ino, pos, st.st_size, None)
    lines: list[int] = []
    while span.remaining:
        batch, consumed, line_no, columns = read_span(span, 1 << 20)
        assert consumed > 0
        if batch is not None:
            assert all(len(r[4]) < 100 for r in batch.rows)
            lines.extend(batch.line_numbers)
        span.start += consumed
        span.line_no, span.columns = line_no, columns
    assert lines == ([2] if start == "before" else []) + [4, 5, 6, 7, 8]
    assert span.line_no == 8


def _oneshot(tmp_path: Path, correlator: bool) -> dict[str, float]:
    return oneshot_nonzero(tmp_path, correlator, ("watchtower_parse_errors_total", "watchtower_read_bytes_total",
                                                  "watchtower_lines_read_total", "watchtower_records_read_total"))


def test_oneshot_counts_an_overlong_line_the_same_with_the_correlator_on_and_off(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    path = long_file(tmp_path / "logs" / "long.csv")
    off, on = _oneshot(tmp_path, False), _oneshot(tmp_path, True)
    assert off == on
    assert off == {'watchtower_read_bytes_total{source="acct"}': float(path.stat().st_size),
                   'watchtower_lines_read_total{source="acct"}': 8.0,
                   'watchtower_parse_errors_total{reason="long_row",source="acct"}': 1.0,
                   'watchtower_records_read_total{source="acct",type="d"}': 6.0}


def test_the_oneshot_reach_scan_gives_an_overlong_line_up_instead_of_holding_it(tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture):
    """The correlator's first read of a oneshot (correlator/reach.py) handed a 200 MB line to polars' streaming reader
    whole, and its own fallback joined the line's pieces read after read: 1.8 GB resident for one bad line. A file
    with a line over the pass's limit is not scanned: the pass stores every row (its memory is bounded by slices)."""
    from correlator import reach

    (tmp_path / "logs").mkdir()
    long_file(tmp_path / "logs" / "long.csv")
    (tmp_path / "logs" / "ok.csv").write_text("\n".join([HEADER, rec(10)]) + "\n")
    src = SourceConfig(name="acct", paths=[str(tmp_path / "logs" / "*.csv")])
    with caplog.at_level(logging.INFO, logger="correlator.reach"):
        assert reach.scan([src]) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"oneshot stores every row: {tmp_path / 'logs' / 'long.csv'} holds a line over {MAX_LINE_BYTES} bytes"]


MEASURED = """
import os, sys
pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "exporter", *sys.argv[1:]], os.environ)
_pid, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status), file=sys.stderr)
"""
"""Runs a watchtower command and prints its peak RSS (KiB) and exit code on stderr: spawned from this small process,
not from the test's, whose own pages a child's peak would count."""


def test_oneshot_memory_stays_bounded_on_an_overlong_line_with_the_correlator_on(tmp_path: Path):
    """Peak memory of the whole process, correlator on (the default): 1.1 GB for a 250 MB line (625 MB for 50 MB)
    before the scan gave such a file up; the pass reads the line in pieces and skips it."""
    import subprocess
    import sys

    from tests.conftest import REPO, write_config

    (tmp_path / "logs").mkdir()
    with (tmp_path / "logs" / "long.csv").open("w") as f:  # a 128 MiB line of one field, written in pieces
        f.write("\n".join([HEADER, rec(0)]) + "\n")
        for _ in range(128):
            f.write("x" * (1 << 20))
        f.write("\n" + "\n".join(rec(i) for i in range(2, 7)) + "\n")
    cfg = write_config(tmp_path, [{"name": "acct", "paths": [str(tmp_path / "logs" / "*.csv")]}],
                       correlator={"enabled": True})
    proc = subprocess.run([sys.executable, "-c", MEASURED, "oneshot", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    peak, code = (int(x) for x in proc.stderr.splitlines()[-1].split())
    assert code == 0, proc.stderr[-2000:]
    assert 'watchtower_parse_errors_total{reason="long_row",source="acct"} 1.0' in proc.stdout
    assert 'watchtower_records_read_total{source="acct",type="d"} 6.0' in proc.stdout
    assert peak < 300 * 1024, peak  # KiB (~150 MB): the 128 MiB line held whole, several times over, is far more


@pytest.mark.parametrize("oneshot", [True, False])
async def test_a_file_whose_lines_end_in_a_lone_cr_is_named_not_read_as_one_header(
        tmp_path: Path, oneshot: bool, caplog: pytest.LogCaptureFixture):
    """Old Mac line endings (CR alone, no LF; `tr '\\n' '\\r'`): a oneshot read the whole file as its header line,
    warned of "columns" named after data values, and the records vanished uncounted; the daemon waited on it for
    ever as a line without its end. One warning names the file and says why it is not read."""
    path = tmp_path / "mac.csv"
    path.write_bytes(("\r".join([HEADER, rec(0), rec(1)]) + "\r").encode())
    t, reg, lines = tailer(tmp_path, oneshot, 1 << 20)
    with caplog.at_level(logging.WARNING, logger="watchtower"):
        await drain(t, lines)
        await drain(t, lines)
    assert lines == []
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{path}: its lines end in a lone CR (old Mac line endings), not LF as PMTA writes them (source "
                    "acct): not read; convert it (tr '\\r' '\\n')"], said
    assert value(reg, "watchtower_lines_read_total") == 0 and value(reg, "watchtower_parse_errors_total",
                                                                     reason="long_row") == 0
    await t.close()
