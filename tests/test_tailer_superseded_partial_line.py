"""A file still in the globs that ends in an unterminated line, once PMTA writes a newer file of its source.

PMTA killed mid-write leaves its file ending in half a record; after the restart it writes a new file of the same
source, and the old one stays where it is, matched by the glob. Only a file that had left the globs had its last
line read as its final record, so this one kept `watchtower_behind_bytes` above 0 for ever (WatchtowerTailerStalled
paged, and its host-wide inhibition muted the delivery alerts), its record never counted. Written before a newer
file of the source was (PMTA writes its newest file only) and quiet for `tail.rescan_interval`, its last line is now
its final record, as a gone file's: counted once, the offset at its end, nothing counted again after a restart. The
newest file's unterminated line is never taken early (PMTA's buffered writes split lines: the rest comes later).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig
from exporter.filestream import Checkpoint
from exporter.metrics import SelfMetrics
from exporter.spans import read_span
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER, AcctWriter, d_line, total, write_config
from tests.test_tailer_replacement import frozen_clock

RESCAN = 1.0
CUT = d_line(3)[: d_line(3).index('"PIPELINING') + 5]
"""Half a record, as PMTA killed mid-write leaves it: cut inside a quoted field (one bad_quoting line)."""


def _records(first: int, n: int) -> str:
    return "".join(d_line(i) + "\n" for i in range(first, first + n))


def _write(path: Path, text: str, age: float = 0.0) -> None:
    """`text` as the file's bytes, last written `age` seconds ago (PMTA killed a while before it started anew)."""
    path.write_text(text)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))


def _killed_then_restarted(tmp_path: Path, new_records: int) -> tuple[Path, Path]:
    """(old, new): an older file ending in half a line, last written a minute ago (PMTA killed mid-write), and the
    file PMTA writes since it restarted, holding `new_records` whole records."""
    old, new = tmp_path / "acct-2024-05-01-0001.csv", tmp_path / "acct-2024-05-01-0002.csv"
    _write(old, ACCT_HEADER + "\n" + _records(0, 3) + CUT, age=60)
    _write(new, ACCT_HEADER + "\n" + _records(10, new_records))
    return old, new


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _tailer(directory: Path, checkpoints: list[Checkpoint] | None = None,
            **tail: object) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "acct-*.csv")])
    config = TailConfig(**{"rescan_interval": RESCAN, "start_position": "beginning", **tail})  # type: ignore[arg-type]
    return Tailer([src], config, SelfMetrics(reg), checkpoints=checkpoints or (), first_run=False), reg


def _counts(reg: CollectorRegistry) -> dict[str, float]:
    """The non-zero read counters and the lag, by name (parse errors by reason)."""
    out: dict[str, float] = {}
    for metric in reg.collect():
        for s in metric.samples:
            if s.name == "watchtower_parse_errors_total" and s.value:
                out[f"error:{s.labels['reason']}"] = s.value
            elif s.name in ("watchtower_records_read_total", "watchtower_lines_read_total") and s.value:
                out[s.name.removeprefix("watchtower_").removesuffix("_total")] = s.value
            elif s.name == "watchtower_behind_bytes":
                out["behind"] = s.value
    return out


async def _poll(tailer: Tailer, clock: list[float], seconds: float = 0.0, times: int = 1,
                rcpts: list[str] | None = None) -> None:
    for _ in range(times):
        clock[0] += seconds

        def keep(_stream, batch) -> None:  # type: ignore[no-untyped-def]
            if rcpts is not None:
                rcpts.extend(r[batch.columns.rcpt] for r in batch.rows)

        await tailer.poll(keep, force_scan=True)


def _offset(tailer: Tailer, path: Path) -> int:
    (stream,) = [s for s in tailer.streams.values() if s.cp.path == str(path)]
    return stream.cp.offset


async def test_the_half_line_of_a_file_pmta_left_for_a_newer_one_is_read_once_as_its_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = frozen_clock(monkeypatch)
    old, new = tmp_path / "acct-2024-05-01-0001.csv", tmp_path / "acct-2024-05-01-0002.csv"
    _write(old, ACCT_HEADER + "\n" + _records(0, 3) + CUT, age=60)  # PMTA killed mid-write a minute ago
    tailer, reg = _tailer(tmp_path, idle_close_after=3 * RESCAN)
    await _poll(tailer, clock)
    await _poll(tailer, clock, RESCAN, times=3)  # quiet, but still the newest file: the rest may come
    assert _counts(reg) == {"records_read": 3, "lines_read": 4, "behind": len(CUT)}
    _write(new, ACCT_HEADER + "\n" + _records(10, 2))  # PMTA restarted: its new file
    await _poll(tailer, clock)
    assert _counts(reg) == {"records_read": 5, "lines_read": 8, "error:bad_quoting": 1, "behind": 0}
    assert _offset(tailer, old) == old.stat().st_size
    await _poll(tailer, clock, RESCAN, times=4)  # counted once; idle, closed
    (stream,) = [s for s in tailer.streams.values() if s.cp.path == str(old)]
    assert stream.file is None
    opens = reg.get_sample_value("watchtower_file_opens_total", {"source": "acct"})
    os.utime(old, (time.time() - 30, time.time() - 30))  # touched (a backup tool): opened again at its end, which
    await _poll(tailer, clock, RESCAN)  # falls inside its last line: not read as a last line once more
    assert reg.get_sample_value("watchtower_file_opens_total", {"source": "acct"}) == opens + 1
    _append(new, _records(12, 1))
    await _poll(tailer, clock, RESCAN, times=2)
    assert _counts(reg) == {"records_read": 6, "lines_read": 9, "error:bad_quoting": 1, "behind": 0}
    await tailer.close()


async def test_it_is_taken_only_once_the_file_has_been_quiet_for_the_rescan_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = frozen_clock(monkeypatch)
    old, new = _killed_then_restarted(tmp_path, 2)
    tailer, reg = _tailer(tmp_path)
    await _poll(tailer, clock)  # its half line just read: a writer may still be at it
    assert _counts(reg) == {"records_read": 5, "lines_read": 7, "behind": len(CUT)}
    await _poll(tailer, clock, RESCAN)
    assert _counts(reg) == {"records_read": 5, "lines_read": 8, "error:bad_quoting": 1, "behind": 0}
    await tailer.close()


async def test_a_last_record_without_its_newline_is_counted_and_its_span_reads_it_as_the_tailer_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # PMTA killed between a record and its newline: a good record, counted; the correlator reads the same range again
    # (exporter.spans.read_span) and must find the same record in it, as for a file that left the globs
    clock = frozen_clock(monkeypatch)
    old, new = tmp_path / "acct-2024-05-01-0001.csv", tmp_path / "acct-2024-05-01-0002.csv"
    _write(old, ACCT_HEADER + "\n" + _records(0, 2) + d_line(2), age=60)
    _write(new, ACCT_HEADER + "\n" + _records(10, 1))
    tailer, reg = _tailer(tmp_path)
    spans = []

    def keep(_stream, batch) -> None:  # type: ignore[no-untyped-def]
        spans.append((batch.span, [r[batch.columns.rcpt] for r in batch.rows]))

    await tailer.poll(keep, force_scan=True)
    clock[0] += RESCAN
    await tailer.poll(keep, force_scan=True)
    assert _counts(reg) == {"records_read": 4, "lines_read": 6, "behind": 0}
    last, rcpts = spans[-1]
    assert rcpts == ["u2@gmail.com"]
    assert (last.path, last.end) == (str(old), old.stat().st_size)
    batch, consumed, _line_no, _columns = read_span(last, 1 << 20)
    assert batch is not None and [r[batch.columns.rcpt] for r in batch.rows] == rcpts
    assert consumed == last.end - last.start
    await tailer.close()


async def test_the_newest_file_keeps_its_half_line_until_the_rest_comes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = frozen_clock(monkeypatch)
    old, new = tmp_path / "acct-2024-05-01-0001.csv", tmp_path / "acct-2024-05-01-0002.csv"
    _write(old, ACCT_HEADER + "\n" + _records(0, 3), age=60)  # an older file of the source, whole
    line = d_line(20) + "\n"
    _write(new, ACCT_HEADER + "\n" + _records(10, 2) + line[:70])  # PMTA's buffered write split a line
    tailer, reg = _tailer(tmp_path)
    rcpts: list[str] = []
    await _poll(tailer, clock, rcpts=rcpts)
    await _poll(tailer, clock, RESCAN, times=5, rcpts=rcpts)  # quiet for long: still the newest, not taken
    assert _counts(reg) == {"records_read": 5, "lines_read": 7, "behind": 70}
    _append(new, line[70:])
    await _poll(tailer, clock, rcpts=rcpts)
    assert _counts(reg) == {"records_read": 6, "lines_read": 8, "behind": 0}
    assert rcpts[-1] == "u20@gmail.com" and len(rcpts) == len(set(rcpts)) == 6
    assert _offset(tailer, new) == new.stat().st_size
    await tailer.close()


async def test_a_restart_neither_counts_it_again_nor_loses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = frozen_clock(monkeypatch)
    old, new = _killed_then_restarted(tmp_path, 2)
    # stopped before its half line was taken: the next start takes it, once
    tailer, reg = _tailer(tmp_path)
    await _poll(tailer, clock)
    saved = tailer.take_checkpoints()
    await tailer.close()
    assert _counts(reg) == {"records_read": 5, "lines_read": 7, "behind": len(CUT)}
    tailer, reg = _tailer(tmp_path, saved)
    await _poll(tailer, clock)
    await _poll(tailer, clock, RESCAN, times=3)
    assert _counts(reg) == {"lines_read": 1, "error:bad_quoting": 1, "behind": 0}
    saved = tailer.take_checkpoints()
    assert {Path(cp.path).name: (cp.offset, cp.gone_since) for cp in saved}["acct-2024-05-01-0001.csv"] == \
        (old.stat().st_size, None)
    await tailer.close()
    # stopped after: nothing of it counted again (its checkpoint at its end, inside no line of its own)
    tailer, reg = _tailer(tmp_path, saved)
    await _poll(tailer, clock)
    await _poll(tailer, clock, RESCAN, times=3)
    _append(new, _records(12, 1))
    await _poll(tailer, clock, RESCAN, times=2)
    assert _counts(reg) == {"records_read": 1, "lines_read": 1, "behind": 0}
    await tailer.close()


async def test_a_file_closed_to_keep_the_descriptor_cap_gets_its_half_line_read_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tail.max_open_files: 1 and the new file written at every poll: the old one is closed for it each time (its only
    # unread bytes a line without its newline, the last resort) and opened again the next. Read again, its half line
    # is no growth: it still becomes quiet, and is read as its last record
    clock = frozen_clock(monkeypatch)
    old, new = _killed_then_restarted(tmp_path, 1)
    tailer, reg = _tailer(tmp_path, max_open_files=1)
    for i in range(8):
        _append(new, _records(100 + i, 1))
        await _poll(tailer, clock, RESCAN / 2)
    assert _counts(reg) == {"records_read": 12, "lines_read": 15, "error:bad_quoting": 1, "behind": 0}
    assert _offset(tailer, old) == old.stat().st_size
    await tailer.close()


@pytest.mark.integration
def test_a_running_daemon_reads_it_once_and_its_lag_returns_to_zero(tmp_path: Path, watchtower_factory) -> None:
    cfg = write_config(tmp_path, correlator={"enabled": True})
    writer = AcctWriter(tmp_path / "logs")
    wt = watchtower_factory(cfg).start()
    writer.write(10)
    _append(writer.path, CUT)  # PMTA killed mid-write
    then = time.time() - 5
    os.utime(writer.path, (then, then))
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 10
                and total(s, "watchtower_behind_bytes", source="acct") == len(CUT))
    samples = wt.settle()  # the newest file of its source: its half line waits
    assert total(samples, "watchtower_behind_bytes", source="acct") == len(CUT)
    assert total(samples, "watchtower_parse_errors_total") == 0
    writer.rotate()  # PMTA restarted: a new file, the old one still matched by the glob
    writer.write(5)

    def done(s) -> bool:  # type: ignore[no-untyped-def]
        return total(s, "pmta_delivered_total") == 15 and total(s, "watchtower_behind_bytes", source="acct") == 0

    wt.wait_for(done)
    samples = wt.settle()
    assert total(samples, "watchtower_parse_errors_total", source="acct", reason="bad_quoting") == 1
    assert total(samples, "watchtower_parse_errors_total") == 1
    assert total(samples, "pmta_delivered_total") == 15
    assert total(samples, "watchtower_lines_read_total", source="acct") == 10 + 2 + 1 + 5
    assert total(samples, "watchtower_behind_bytes", source="acct") == 0
    wt.committed()
    assert wt.stop() == 0
    wt.start()  # nothing of it counted again
    writer.write(2)
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 17)
    samples = wt.settle()
    assert total(samples, "pmta_delivered_total") == 17  # (kept across restarts; watchtower_* are this run's)
    assert total(samples, "watchtower_parse_errors_total") == 0
    assert total(samples, "watchtower_lines_read_total", source="acct") == 2
    assert total(samples, "watchtower_behind_bytes", source="acct") == 0
    wt.committed()
    assert wt.stop() == 0
    with sqlite3.connect(tmp_path / "state" / "watchtower.db") as db:  # the correlator's reading of the same spans
        assert db.execute("SELECT count(*) FROM corr_events").fetchone()[0] == 17
