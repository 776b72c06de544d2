"""Files as crashes and editors leave them: NUL padding before a record, a UTF-8 BOM before the header, and a
header naming a column twice."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig
from exporter.metrics import PARSE_ERROR_REASONS, SelfMetrics
from exporter.parser import FileParser
from exporter.spans import read_span, span_at
from exporter.tailer import Tailer

NUL_FILE = (b"type,timeLogged,rcpt\nd,2024-06-12 08:00:01+0000,a@gmail.com\n" + b"\0" * 4096
            + b"d,2024-06-12 08:00:01+0000,b@gmail.com\n")


async def read_all(directory: Path) -> tuple[CollectorRegistry, list[list[str]], list[int]]:
    reg = CollectorRegistry()
    t = Tailer([SourceConfig(name="acct", paths=[str(directory / "*.csv")])],
               TailConfig(rescan_interval=0, start_position="beginning"), SelfMetrics(reg), oneshot=True)
    rows: list[list[str]] = []
    lines: list[int] = []

    def on_batch(_stream, batch) -> None:  # type: ignore[no-untyped-def]
        rows.extend(batch.rows)
        lines.extend(batch.line_numbers)

    more = await t.poll(on_batch, force_scan=True)
    while more:
        more = await t.poll(on_batch)
    await t.close()
    return reg, rows, lines


def errors(reg: CollectorRegistry) -> dict[str, float]:
    return {s.labels["reason"]: s.value for m in reg.collect() for s in m.samples
            if s.name == "watchtower_parse_errors_total" and s.value}


async def test_a_nul_run_is_one_error_and_the_record_after_it_is_read(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture):
    path = tmp_path / "acct.csv"
    path.write_bytes(NUL_FILE)
    with caplog.at_level(logging.WARNING, "watchtower.parser"):
        reg, rows, lines = await read_all(tmp_path)
    assert [r[2] for r in rows] == ["a@gmail.com", "b@gmail.com"] and lines == [2, 3]
    assert errors(reg) == {"nul_padding": 1}
    assert "nul_padding" in PARSE_ERROR_REASONS
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and logged[0].startswith(f"{path}:3: nul_padding") and "\\x00" not in logged[0]


@pytest.mark.parametrize("fast", [True, False])
def test_both_parser_paths_and_a_second_read_skip_nul_runs(tmp_path: Path, fast: bool):
    data = NUL_FILE + b"\0\0\0\n" + b"d,2024-06-12 08:00:02+0000,c@gmail.com\n"
    p = FileParser("acct", "f.csv", None, fast=fast)
    batch, n = p.parse(data)
    assert batch is not None and [r[2] for r in batch.rows] == ["a@gmail.com", "b@gmail.com", "c@gmail.com"]
    assert n == 5 and batch.line_numbers == [2, 3, 5] and p.errors == {"nul_padding": 2}
    path = tmp_path / "acct.csv"
    path.write_bytes(data)
    st = os.stat(path)
    got, _consumed, line_no, _cols = read_span(span_at("f", "acct", str(path), st.st_dev, st.st_ino, (0, 0, ""),
                                                       st.st_size, None), 1 << 20)
    assert got is not None and len(got) == 3 and line_no == 5


async def test_a_bom_before_the_header_is_dropped(tmp_path: Path):
    (tmp_path / "acct.csv").write_bytes(b"\xef\xbb\xbftype,timeLogged,rcpt\n" + b"".join(
        f"d,2024-06-12 08:00:01+0000,u{i}@gmail.com\n".encode() for i in range(3)))
    reg, rows, _lines = await read_all(tmp_path)
    assert len(rows) == 3 and errors(reg) == {}
    p = FileParser("acct", "f.csv", None, fast=False)
    batch, _n = p.parse(b"\xef\xbb\xbftype,rcpt\nd,a@b.c\n")
    assert batch is not None and len(batch) == 1 and p.errors == {}


async def test_a_column_named_twice_is_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "acct.csv"
    path.write_text("type,timeLogged,rcpt,vmta,rcpt\n" + "".join(
        f"d,2024-06-12 08:00:01+0000,u{i}@gmail.com,v1,x{i}@gmail.com\n" for i in range(3)))
    with caplog.at_level(logging.WARNING, "watchtower"):
        reg, rows, _lines = await read_all(tmp_path)
    assert len(rows) == 3 and errors(reg) == {}
    dup = [r.getMessage() for r in caplog.records if "rcpt" in r.getMessage()]
    assert len(dup) == 1 and dup[0].startswith(f"{path}: ") and "'rcpt'" in dup[0], dup
