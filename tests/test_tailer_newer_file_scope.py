"""Which newer file supersedes an older one ending in half a line: only a later file of its own rotation series.

An older file still in the globs has its unterminated last line read as its final record once a newer file of its
source is written and it has been quiet for `tail.rescan_interval` (PMTA killed mid-write, then restarted on a new
file: the old one is finished). As first written (5e94f8c), ANY other followed file of the source last written after
it counted as newer. One source whose glob covers the files of two `<acct-file>` blocks of one PMTA (`*.csv` over
acct-*.csv and diag-*.csv, both written at once) then had the current acct file's line, split by PMTA's buffered
writes, read as a record once acct had been quiet for the rescan interval (a delivery counted with its fields
empty), and the rest, when written, read as a bad line (`unknown_type`). Now only a file of the same series (same
directory, same base name and extension once PMTA's `-YYYY-MM-DD-NNNN` suffix, or a bare `-NNNN`, is taken off)
that sorts later in it supersedes; a name without such a suffix never supersedes nor is superseded: its half line
waits for its rest, as before 5e94f8c.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig
from exporter.metrics import SelfMetrics
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER, d_line
from tests.test_tailer_replacement import frozen_clock

RESCAN = 1.0
SPLIT = 70
"""Where PMTA's buffered write split the current file's line: its first 70 bytes written, the rest later."""


def _line(n: int, form: str) -> str:
    """Record `n` as a line of the file's form (csv, or PMTA's JSON form: one object per line, no header line)."""
    text = d_line(n)
    if form == "csv":
        return text + "\n"
    return json.dumps(dict(zip(ACCT_HEADER.split(","), next(csv.reader([text])), strict=True))) + "\n"


def _cut(form: str) -> str:
    """Half a record, as PMTA killed mid-write leaves it: inside a quoted field of a CSV line (one bad_quoting line),
    inside a JSON object."""
    line = _line(3, form)
    return line[: line.index('"PIPELINING') + 5] if form == "csv" else line[:SPLIT]


def _form(path: Path) -> str:
    return "json" if path.name.endswith(".json") else "csv"


def _file(path: Path, numbers: list[int], tail: str = "", age: float = 0.0) -> None:
    """The file holding records `numbers`, then `tail` (bytes of a line without its newline), last written `age`
    seconds ago."""
    form = _form(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((ACCT_HEADER + "\n" if form == "csv" else "") + "".join(_line(n, form) for n in numbers) + tail)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _tailer(paths: list[Path]) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="pmta", paths=[str(p) for p in paths])
    config = TailConfig(rescan_interval=RESCAN, start_position="beginning")
    return Tailer([src], config, SelfMetrics(reg), checkpoints=(), first_run=False), reg


def _counts(reg: CollectorRegistry) -> dict[str, float]:
    """The non-zero read counters and the lag, by name (parse errors by reason)."""
    out: dict[str, float] = {}
    for metric in reg.collect():
        for s in metric.samples:
            if s.name == "watchtower_parse_errors_total" and s.value:
                out[f"error:{s.labels['reason']}"] = s.value
            elif s.name == "watchtower_records_read_total" and s.value:
                out["records"] = s.value
            elif s.name == "watchtower_behind_bytes":
                out["behind"] = s.value
    return out


class _Run:
    """A tailer over `paths`, polled explicitly with a frozen monotonic clock, keeping every recipient read."""

    def __init__(self, paths: list[Path], clock: list[float]) -> None:
        self.tailer, self.reg = _tailer(paths)
        self.clock = clock
        self.rcpts: list[str] = []

    async def poll(self, seconds: float = 0.0, times: int = 1) -> None:
        for _ in range(times):
            self.clock[0] += seconds

            def keep(_stream, batch) -> None:  # type: ignore[no-untyped-def]
                self.rcpts.extend(r[batch.columns.rcpt] for r in batch.rows)

            await self.tailer.poll(keep, force_scan=True)

    def offset(self, path: Path) -> int:
        (stream,) = [s for s in self.tailer.streams.values() if s.cp.path == str(path)]
        return stream.cp.offset


async def test_the_acct_files_split_line_waits_while_the_diag_file_of_the_same_glob_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the reviewer's reproduction: one source `*.csv` over the files of two <acct-file> blocks of one PMTA
    clock = frozen_clock(monkeypatch)
    acct, diag = tmp_path / "acct-2024-05-01-0000.csv", tmp_path / "diag-2024-05-01-0000.csv"
    line = _line(20, "csv")
    _file(acct, [10], line[:SPLIT], age=5)  # PMTA's buffered write split a line; acct quiet for 5 s
    _file(diag, [30])  # the diag file: written after it
    run = _Run([tmp_path / "*.csv"], clock)
    await run.poll()
    await run.poll(RESCAN, times=3)  # a quiet spell of 3 s on the acct file: PMTA's buffer not full yet
    assert _counts(run.reg) == {"records": 2, "behind": SPLIT}
    _append(acct, line[SPLIT:])  # PMTA flushes the rest of the line
    await run.poll(RESCAN, times=2)
    assert _counts(run.reg) == {"records": 3, "behind": 0}
    assert run.rcpts == ["u10@gmail.com", "u30@gmail.com", "u20@gmail.com"]
    await run.tailer.close()


# (the split file, the other file written after it, the source's globs relative to tmp_path): files that are no
# later member of the split file's rotation series
NOT_ITS_SERIES = {
    "other base, same dir": ("acct-2024-05-01-0000.csv", "diag-2024-05-01-0000.csv", ["*.csv"]),
    "other base, later number": ("acct-2024-05-01-0000.csv", "diag-2024-05-01-0007.csv", ["*.csv"]),
    "other base, later date": ("acct-2024-05-01-0003.csv", "diag-2024-05-02-0000.csv", ["*.csv"]),
    "base sharing a prefix": ("acct-2024-05-01-0000.csv", "acct-tg-2024-05-01-0001.csv", ["acct-*.csv"]),
    "same base, JSON form": ("acct-2024-05-01-0000.csv", "acct-2024-05-01-0001.json", ["acct-*"]),
    "same base, CSV form": ("acct-2024-05-01-0000.json", "acct-2024-05-01-0001.csv", ["acct-*"]),
    "same base, other extension": ("acct-2024-05-01-0000.csv", "acct-2024-05-01-0001.txt", ["acct-*"]),
    "same base, no extension": ("acct-2024-05-01-0000.csv", "acct-2024-05-01-0001", ["acct-*"]),
    "same base, other directory": ("a/acct-2024-05-01-0000.csv", "b/acct-2024-05-01-0001.csv",
                                   ["a/acct-*.csv", "b/acct-*.csv"]),
    "dated and undated names": ("acct-2024-05-01-0000.csv", "acct-0001.csv", ["acct-*.csv"]),
    "earlier in the series": ("acct-2024-05-01-0001.csv", "acct-2024-05-01-0000.csv", ["acct-*.csv"]),
    "earlier date": ("acct-2024-05-02-0000.csv", "acct-2024-05-01-0004.csv", ["acct-*.csv"]),
    "no suffix: the split file": ("pmta-a.csv", "pmta-b.csv", ["*.csv"]),
    "no suffix: the other file": ("acct-2024-05-01-0000.csv", "acct.csv", ["acct*.csv"]),
    "no suffix: a word, not a number": ("acct-current.csv", "acct-next.csv", ["acct-*.csv"]),
    "no suffix: too short a number": ("acct-1.csv", "acct-2.csv", ["acct-*.csv"]),
    # a number without PMTA's date part is no rotation suffix: such names are written at the same time
    "no date: bare numbers": ("acct-0001.csv", "acct-0002.csv", ["acct-*.csv"]),
    "no date: two hosts numbered": ("pmta-1001.csv", "pmta-1002.csv", ["*.csv"]),
    "no date: a year in the name": ("acct-host-2025.csv", "acct-host-2026.csv", ["acct-host-*.csv"]),
}


@pytest.mark.parametrize(("split", "other", "globs"), NOT_ITS_SERIES.values(), ids=NOT_ITS_SERIES.keys())
async def test_a_file_of_another_series_written_later_leaves_the_split_line_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: str, other: str, globs: list[str]) -> None:
    clock = frozen_clock(monkeypatch)
    current, written = tmp_path / split, tmp_path / other
    line = _line(20, _form(current))
    _file(current, [10], line[:SPLIT], age=5)
    _file(written, [30])
    run = _Run([tmp_path / g for g in globs], clock)
    await run.poll()
    for n in range(3):  # the other file written on at every poll, the split one quiet for long
        await run.poll(RESCAN)
        _append(written, _line(31 + n, _form(written)))
    await run.poll(RESCAN)
    assert _counts(run.reg) == {"records": 5, "behind": SPLIT}
    _append(current, line[SPLIT:])
    await run.poll(RESCAN, times=2)
    assert _counts(run.reg) == {"records": 6, "behind": 0}
    assert sorted(run.rcpts) == sorted(f"u{n}@gmail.com" for n in (10, 20, 30, 31, 32, 33))
    assert run.offset(current) == current.stat().st_size
    await run.tailer.close()


# (the older file ending in half a line, the later file of its series PMTA writes now, the globs): as 5e94f8c meant
ITS_SERIES = {
    "next number": ("acct-2024-05-01-0000.csv", "acct-2024-05-01-0001.csv", ["acct-*.csv"]),
    "next day": ("acct-2024-05-01-0007.csv", "acct-2024-05-02-0000.csv", ["acct-*.csv"]),
    "next month": ("acct-2024-05-31-0002.csv", "acct-2024-06-01-0000.csv", ["acct-*.csv"]),
    "past 9999": ("acct-2024-05-01-9999.csv", "acct-2024-05-01-10000.csv", ["acct-*.csv"]),
    "JSON form": ("acct-2024-05-01-0000.json", "acct-2024-05-01-0001.json", ["acct-*.json"]),
    "no extension": ("acct-2024-05-01-0000", "acct-2024-05-01-0001", ["acct-*"]),
    "two extensions": ("acct-2024-05-01-0000.acct.csv", "acct-2024-05-01-0001.acct.csv", ["acct-*"]),
    "base with a dash": ("acct-tg-2024-05-01-0000.csv", "acct-tg-2024-05-01-0001.csv", ["acct-tg-*.csv"]),
    "in a glob over two bases": ("acct-2024-05-01-0000.csv", "acct-2024-05-01-0001.csv", ["*.csv"]),
}


@pytest.mark.parametrize(("older", "newer", "globs"), ITS_SERIES.values(), ids=ITS_SERIES.keys())
async def test_a_later_file_of_its_series_supersedes_the_older_files_half_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, older: str, newer: str, globs: list[str]) -> None:
    clock = frozen_clock(monkeypatch)
    old, new = tmp_path / older, tmp_path / newer
    form = _form(old)
    cut = _cut(form)  # PMTA killed mid-write a minute ago
    _file(old, [0, 1, 2], cut, age=60)
    diag = tmp_path / "diag-2024-05-01-0009.csv"  # another base written all the while: changes nothing either way
    _file(diag, [40])
    run = _Run([tmp_path / g for g in globs], clock)
    await run.poll()
    await run.poll(RESCAN, times=3)  # quiet, but no later file of its series: the rest may come
    written = 4 if "*.csv" in globs else 3
    assert _counts(run.reg) == {"records": written, "behind": len(cut)}
    _file(new, [10, 11])  # PMTA restarted: its new file
    await run.poll(RESCAN)
    error = "error:bad_json" if form == "json" else "error:bad_quoting"
    assert _counts(run.reg) == {"records": written + 2, error: 1, "behind": 0}
    assert run.offset(old) == old.stat().st_size
    await run.poll(RESCAN, times=2)
    assert _counts(run.reg) == {"records": written + 2, error: 1, "behind": 0}
    await run.tailer.close()


async def test_two_bases_in_one_directory_each_superseded_by_its_own_series_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = frozen_clock(monkeypatch)
    acct0, diag0 = tmp_path / "acct-2024-05-01-0000.csv", tmp_path / "diag-2024-05-01-0000.csv"
    acct1, diag1 = tmp_path / "acct-2024-05-01-0001.csv", tmp_path / "diag-2024-05-01-0001.csv"
    cut = _cut("csv")
    _file(acct0, [0], cut, age=60)
    _file(diag0, [1], cut, age=60)
    run = _Run([tmp_path / "*.csv"], clock)
    await run.poll()
    _file(diag1, [2])  # the diag series moves on: its older file's half line is taken, acct's waits
    await run.poll(RESCAN, times=2)
    assert _counts(run.reg) == {"records": 3, "error:bad_quoting": 1, "behind": len(cut)}
    assert run.offset(diag0) == diag0.stat().st_size and run.offset(acct0) < acct0.stat().st_size
    _file(acct1, [4])  # and now the acct series
    await run.poll(RESCAN, times=2)
    assert _counts(run.reg) == {"records": 4, "error:bad_quoting": 2, "behind": 0}
    assert run.offset(acct0) == acct0.stat().st_size
    await run.tailer.close()


async def test_the_newest_of_a_series_keeps_its_half_line_when_an_older_file_of_it_is_touched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the order is the series', not the files' modification times: an older file touched (a backup tool, a chmod
    # that bumps nothing but an editor, `touch`) after the newest one's last write does not supersede it
    clock = frozen_clock(monkeypatch)
    old, new = tmp_path / "acct-2024-05-01-0000.csv", tmp_path / "acct-2024-05-01-0001.csv"
    line = _line(20, "csv")
    _file(old, [0, 1], age=60)
    _file(new, [10], line[:SPLIT], age=5)
    run = _Run([tmp_path / "acct-*.csv"], clock)
    await run.poll()
    os.utime(old)  # now
    await run.poll(RESCAN, times=3)
    assert _counts(run.reg) == {"records": 3, "behind": SPLIT}
    _append(new, line[SPLIT:])
    await run.poll(RESCAN, times=2)
    assert _counts(run.reg) == {"records": 4, "behind": 0}
    assert run.rcpts[-1] == "u20@gmail.com"
    await run.tailer.close()


async def test_a_later_file_of_the_series_with_the_same_modification_time_supersedes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # file times coarser than the two writes (1-2 s on some file systems): the series says which is newer
    clock = frozen_clock(monkeypatch)
    old, new = tmp_path / "acct-2024-05-01-0000.csv", tmp_path / "acct-2024-05-01-0001.csv"
    cut = _cut("csv")
    _file(old, [0], cut)
    _file(new, [10])
    then = time.time() - 2
    for path in (old, new):
        os.utime(path, (then, then))
    run = _Run([tmp_path / "acct-*.csv"], clock)
    await run.poll()
    assert _counts(run.reg) == {"records": 2, "behind": len(cut)}
    await run.poll(RESCAN)
    assert _counts(run.reg) == {"records": 2, "error:bad_quoting": 1, "behind": 0}
    await run.tailer.close()
