"""A run of NUL bytes of any length (a crash's padding, a sparse hole of gigabytes) is skipped as one `nul_padding`
error with its size, and the record after it on the same line is read: in oneshot and in the daemon, at any read
size, in bounded memory, and across a restart inside the run. (A run over MAX_LINE_BYTES was a `long_row` that
swallowed the record after it: 11 of 12 records.)"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig
from exporter.filestream import Checkpoint, blocking_reads
from exporter.metrics import SelfMetrics
from exporter.records import MAX_LINE_BYTES
from exporter.spans import Span, read_span
from exporter.tailer import Tailer

HEADER = "type,timeLogged,rcpt,vmta,dsnDiag\n"
MIB = 1 << 20


def recs(first: int, n: int) -> bytes:
    return "".join(f"d,2024-06-12 08:00:01+0000,u{i}@gmail.com,v1,ok\n" for i in range(first, first + n)).encode()


def padded(path: Path, nuls: int, sparse: bool) -> Path:
    """Header, 3 records, `nuls` NUL bytes (written, or a hole left by truncate), 3 records."""
    with open(path, "wb") as f:
        f.write(HEADER.encode() + recs(0, 3))
        if sparse:
            f.truncate(f.tell() + nuls)
            f.seek(0, os.SEEK_END)
        else:
            for left in range(nuls, 0, -MIB):
                f.write(bytes(min(left, MIB)))
        f.write(recs(3, 3))
    return path


def make_tailer(directory: Path, oneshot: bool, chunk: int, checkpoints: tuple[Checkpoint, ...] = ()
                ) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "*.csv")])
    return Tailer([src], TailConfig(rescan_interval=0, start_position="beginning", chunk_bytes=chunk),
                  SelfMetrics(reg), checkpoints, oneshot=oneshot, first_run=not checkpoints), reg


async def drain(t: Tailer) -> list[str]:
    rows: list[str] = []

    def on_batch(_stream, batch) -> None:  # type: ignore[no-untyped-def]
        rows.extend(r[2] for r in batch.rows)

    more = await t.poll(on_batch, force_scan=True)
    while more:
        more = await t.poll(on_batch)
    return rows


def errors(reg: CollectorRegistry) -> dict[str, float]:
    return {s.labels["reason"]: s.value for m in reg.collect() for s in m.samples
            if s.name == "watchtower_parse_errors_total" and s.value}


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "watchtower.parser"]


ALL = [f"u{i}@gmail.com" for i in range(6)]


@pytest.mark.parametrize(("nuls", "sparse", "chunk"), [
    (1 * MIB, False, 4 * MIB),
    (17 * MIB, False, 1 * MIB),
    (17 * MIB, False, 4 * MIB),
    (17 * MIB, False, 64 * MIB),
    ((256 * MIB) + 5, True, 4 * MIB),  # a hole: never held, whatever its size (see the next test)
])
@pytest.mark.parametrize("oneshot", [True, False])
async def test_a_nul_run_of_any_length_is_one_error_and_the_record_after_it_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, nuls: int, sparse: bool, chunk: int, oneshot: bool) -> None:
    path = padded(tmp_path / "acct.csv", nuls, sparse)
    t, reg = make_tailer(tmp_path, oneshot, chunk)
    with caplog.at_level(logging.WARNING, "watchtower.parser"):
        if oneshot:
            with blocking_reads():
                rows = await drain(t)
        else:
            rows = await drain(t)
    assert rows == ALL
    assert errors(reg) == {"nul_padding": 1}
    assert [m.split(" (")[0] for m in logged(caplog)] == [f"{path}:5: nul_padding"]
    assert logged(caplog)[0].endswith(f"'<{nuls} NUL bytes>'")
    assert reg.get_sample_value("watchtower_read_bytes_total", {"source": "acct"}) == path.stat().st_size
    assert reg.get_sample_value("watchtower_lines_read_total", {"source": "acct"}) == 7
    cp = next(iter(t.take_checkpoints()))
    assert (cp.offset, cp.line_no) == (path.stat().st_size, 7)
    await t.close()


async def test_a_sparse_hole_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    padded(tmp_path / "acct.csv", 1 << 30, True)  # held whole, 1 GiB would show in the peak
    t, _reg = make_tailer(tmp_path, False, 4 * MIB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert await drain(t) == ALL
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 3 * MAX_LINE_BYTES >> 10  # KiB
    await t.close()


@pytest.mark.parametrize("chunk", [1 * MIB, 4 * MIB])
async def test_a_restart_inside_a_run_reads_the_records_after_it(tmp_path: Path, chunk: int) -> None:
    """The daemon stopped while the file ended inside a hole (PMTA had not written past it yet): its checkpoint lies
    in the run; the restart resumes there and reads what PMTA wrote after the run, nothing skipped."""
    path = tmp_path / "acct.csv"
    with open(path, "wb") as f:
        f.write(HEADER.encode() + recs(0, 3))
        f.truncate(f.tell() + 40 * MIB)
    t, _reg = make_tailer(tmp_path, False, chunk)
    assert await drain(t) == ALL[:3]
    saved = [replace(cp) for cp in t.take_checkpoints()]
    assert saved[0].offset > 20 * MIB  # inside the run, its bytes counted: not held
    await t.close()
    with open(path, "ab") as f:
        f.write(bytes(3 * MIB) + recs(3, 3))
    t, reg = make_tailer(tmp_path, False, chunk, tuple(saved))
    assert await drain(t) == ALL[3:]
    assert errors(reg) == {"nul_padding": 1}
    cp = next(iter(t.take_checkpoints()))
    assert (cp.offset, cp.line_no) == (path.stat().st_size, 7)
    await t.close()


async def test_a_restart_just_after_nuls_inside_an_overlong_line_goes_on_skipping_it(tmp_path: Path) -> None:
    """An overlong line whose read stopped on NULs: a restart there goes on skipping the line (the byte before the
    NULs is no newline), not take the NULs for a run's end. (Held back from the offset, the NULs kept the file
    unread for good: its descriptor held, read again at every reopen.)"""
    path = tmp_path / "acct.csv"
    path.write_bytes(HEADER.encode() + recs(0, 1) + b"x" * (MAX_LINE_BYTES + 10) + bytes(2 * MIB))
    t, _reg = make_tailer(tmp_path, False, MIB)
    assert await drain(t) == ALL[:1]
    saved = [replace(cp) for cp in t.take_checkpoints()]
    assert saved[0].offset == path.stat().st_size
    await t.close()
    with open(path, "ab") as f:
        f.write(b"tail of the long line\n" + recs(1, 1))
    t, reg = make_tailer(tmp_path, False, MIB, tuple(saved))
    assert await drain(t) == ALL[1:2]
    assert errors(reg) == {}
    await t.close()


@pytest.mark.parametrize("chunk", [1 * MIB, 64 * MIB])
async def test_the_sinks_read_the_record_after_a_long_run_again(tmp_path: Path, chunk: int) -> None:
    """The state writer reads each batch's span again (read_span): it must find the rows the tailer handed on, the
    record after a run over MAX_LINE_BYTES included (a span starting just after a run, or holding one whole)."""
    padded(tmp_path / "acct.csv", 17 * MIB, False)
    t, _reg = make_tailer(tmp_path, False, chunk)
    spans: list[tuple[Span, list[str]]] = []

    def on_batch(_stream, batch) -> None:  # type: ignore[no-untyped-def]
        spans.append((replace(batch.span), [r[2] for r in batch.rows]))

    more = await t.poll(on_batch, force_scan=True)
    while more:
        more = await t.poll(on_batch)
    await t.close()
    again: list[str] = []
    for span, _rows in spans:
        while span.remaining > 0:
            batch, consumed, span.line_no, span.columns = read_span(span, MIB)
            again += [r[2] for r in batch.rows] if batch is not None else []
            span.start += consumed
    assert again == [row for _span, rows in spans for row in rows] == ALL
