"""A copy of a file read before put back where it was read: its records are not counted a second time.

Review of the tailing path (2026-12-06): an older copy of a file restored over it in place (`cp backup file`: the
same inode, cut back under the read offset, its first bytes those read before) was read again from byte 0, while the
daemon ran and across a restart (true 100 records, 160 counted); a copy moved over the file while the daemon ran
(`cp backup tmp && mv tmp file`: a new inode) was read whole (200 counted for 100). A restore while the daemon was
down under a new inode was already recognised (Tailer._new_identity); these take the same rule: a file whose first
bytes still hold the first record read before holds, up to where reading stopped, only records read before. It goes
on from there (its end, when shorter) as a new file id. A file cut below the bytes its fingerprint covers
(copytruncate, `: > file`), or whose first record is another (PMTA's next file), is read from byte 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.metrics import SelfMetrics
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER
from tests.test_tailer_replacement import (
    drain,
    frozen_clock,
    ids_of,
    lines_of,
    parse_errors,
    records,
    tailer_for,
    truncations,
)


def _restore_in_place(path: Path, data: bytes) -> None:
    """What `cp backup file` (shutil.copyfile) does to an existing file: emptied and rewritten, the same inode."""
    ino = path.stat().st_ino
    with path.open("r+b") as f:
        f.truncate(0)
        f.write(data)
    assert path.stat().st_ino == ino


def _copy_moved_over(path: Path, data: bytes) -> None:
    """`cp backup tmp && mv tmp file`: a new inode at the path, the old one unlinked."""
    tmp = path.with_name(".restore.tmp")
    tmp.write_bytes(data)
    os.rename(tmp, path)


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def _sixty_then_forty(path: Path) -> bytes:
    """The file with 60 records, copied (returned), then 40 more appended to it."""
    path.write_text(ACCT_HEADER + "\n" + records(0, 60))
    backup = path.read_bytes()
    _append(path, records(60, 40))
    return backup


@pytest.mark.parametrize("descriptor", ["open", "closed while idle"])
async def test_an_older_copy_restored_in_place_is_not_read_again(tmp_path: Path, descriptor: str,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch):
    clock = frozen_clock(monkeypatch)
    path = tmp_path / "acct-0001.csv"
    backup = _sixty_then_forty(path)
    tailer, reg = tailer_for(tmp_path, idle_close_after=5)
    first = await drain(tailer)
    assert lines_of(first) == list(range(2, 102))
    if descriptor != "open":
        clock[0] += 10
    await drain(tailer)
    assert all((s.file is None) == (descriptor != "open") for s in tailer.streams.values())
    _restore_in_place(path, backup)
    with caplog.at_level(logging.WARNING, logger="watchtower.tailer"):
        assert await drain(tailer) == []
    _append(path, records(200, 3))  # the writer goes on after the restored bytes
    rows = await drain(tailer)
    assert lines_of(rows) == [62, 63, 64]
    assert not ids_of(rows) & ids_of(first)  # a new file id: (file id, line) never names a record read before
    assert truncations(reg) == 1
    said = [r.getMessage() for r in caplog.records if "acct-0001.csv" in r.getMessage()]
    assert len(said) == 1 and "not counted again" in said[0], said
    live = [cp for cp in tailer.take_checkpoints() if cp.gone_since is None]
    assert [(cp.offset, cp.line_no) for cp in live] == [(path.stat().st_size, 64)]
    await tailer.close()


async def test_an_older_copy_restored_in_place_while_the_daemon_was_down_is_not_read_again(tmp_path: Path):
    path = tmp_path / "acct-0001.csv"
    backup = _sixty_then_forty(path)
    tailer, _ = tailer_for(tmp_path)
    first = await drain(tailer)
    assert len(first) == 100
    saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]
    await tailer.close()
    _restore_in_place(path, backup)
    reg = CollectorRegistry()
    again = Tailer(tailer.sources, tailer.tail, SelfMetrics(reg), saved, first_run=False)
    assert await drain(again) == []
    _append(path, records(200, 3))
    rows = await drain(again)
    assert lines_of(rows) == [62, 63, 64]
    assert not ids_of(rows) & ids_of(first)
    assert truncations(reg) == 1
    assert {cp.file_id: cp.gone_since is not None for cp in again.take_checkpoints()}[first[0][0]] is True
    await again.close()


@pytest.mark.parametrize("when", ["while running", "while the daemon was down"])
async def test_a_file_cut_below_what_its_fingerprint_covers_is_read_from_its_start(tmp_path: Path, when: str):
    """copytruncate and `: > file` leave fewer bytes than the fingerprint covers: the file cannot be told from a new
    one, and what it holds now is read (the rule for a truncation is unchanged)."""
    path = tmp_path / "acct-0001.csv"
    path.write_text(ACCT_HEADER + "\n" + records(0, 20))
    tailer, reg = tailer_for(tmp_path)
    assert len(await drain(tailer)) == 20
    short = (ACCT_HEADER + "\n" + records(0, 1)).encode()
    if when == "while running":
        _restore_in_place(path, short)
        assert lines_of(await drain(tailer)) == [2]
    else:
        saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]
        await tailer.close()
        _restore_in_place(path, short)
        reg = CollectorRegistry()
        tailer = Tailer(tailer.sources, tailer.tail, SelfMetrics(reg), saved, first_run=False)
        assert lines_of(await drain(tailer)) == [2]
    assert truncations(reg) == 1
    await tailer.close()


@pytest.mark.parametrize("copy", ["whole", "older"])
async def test_a_copy_moved_over_the_file_while_running_is_not_read_again(tmp_path: Path, copy: str,
                                                                          caplog: pytest.LogCaptureFixture):
    path = tmp_path / "acct-0001.csv"
    backup = _sixty_then_forty(path)
    tailer, reg = tailer_for(tmp_path)
    first = await drain(tailer)
    assert len(first) == 100
    with caplog.at_level(logging.WARNING, logger="watchtower.tailer"):
        _copy_moved_over(path, path.read_bytes() if copy == "whole" else backup)
        assert await drain(tailer) == []
        assert await drain(tailer) == []
    _append(path, records(200, 3))
    rows = await drain(tailer)
    assert lines_of(rows) == ([102, 103, 104] if copy == "whole" else [62, 63, 64])
    assert not ids_of(rows) & ids_of(first)
    said = [r.getMessage() for r in caplog.records if "acct-0001.csv" in r.getMessage()]
    assert any("not counted again" in m for m in said), said
    assert truncations(reg) == 0
    await tailer.close()


async def test_records_the_copy_shares_with_an_unread_end_of_the_file_are_read_once(tmp_path: Path):
    """PMTA appended to the file, and it was copied over itself before the tailer read those records: they are read
    once, from the file's own inode (drained through its descriptor), and the copy goes on after them."""
    path = tmp_path / "acct-0001.csv"
    path.write_text(ACCT_HEADER + "\n" + records(0, 60))
    tailer, reg = tailer_for(tmp_path)
    first = await drain(tailer)
    assert len(first) == 60
    _append(path, records(60, 10))  # not read yet
    _copy_moved_over(path, path.read_bytes())
    rows = await drain(tailer)
    rows += await drain(tailer)
    assert lines_of(rows) == list(range(62, 72))
    _append(path, records(200, 2))
    after = await drain(tailer)
    assert lines_of(after) == [72, 73] and not ids_of(after) & ids_of(first)
    assert parse_errors(reg) == {}
    await tailer.close()


async def test_a_new_file_at_the_path_is_read_whole_after_a_rename_rotation(tmp_path: Path):
    """PMTA's (or logrotate's `create`) rotation: the file renamed out of the globs, a new one with its own header and
    first record at its name. Its first record is not the one read before: read from byte 0."""
    path = tmp_path / "acct-0001.csv"
    path.write_text(ACCT_HEADER + "\n" + records(0, 60))
    tailer, reg = tailer_for(tmp_path)
    assert len(await drain(tailer)) == 60
    path.rename(tmp_path / "acct-0001.csv.1")
    path.write_text(ACCT_HEADER + "\n" + records(100, 50))
    rows = await drain(tailer)
    rows += await drain(tailer)
    assert lines_of(rows) == list(range(2, 52))
    assert truncations(reg) == 0
    await tailer.close()


async def test_the_commit_naming_a_copy_taken_up_at_its_end_says_the_correlator_starts_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The reviewer's run with the correlator process: metrics right, 160 events stored for 100 records. The commit that
    first named the new file id was taken while its lines were counted (off the event loop), before the tailer heard
    it starts at the copy's end: the correlator's process read the copy from byte 0 under the new id."""
    import exporter.filestream

    path = tmp_path / "acct-0001.csv"
    backup = _sixty_then_forty(path)
    tailer, _ = tailer_for(tmp_path)
    (old_id,) = ids_of(await drain(tailer))
    tailer.take_checkpoints()
    committed: list[tuple[set[str], set[str]]] = []
    real = exporter.filestream.count_lines

    def count_lines(fd: int, upto: int) -> tuple[int, str]:  # a commit comes while the lines are counted
        committed.append(({cp.file_id for cp in tailer.take_checkpoints()}, set(tailer.started_at_end)))
        return real(fd, upto)

    monkeypatch.setattr(exporter.filestream, "count_lines", count_lines)
    _restore_in_place(path, backup)
    await drain(tailer)
    ((named, started),) = committed
    assert named - {old_id} and named - {old_id} <= started
    await tailer.close()


@pytest.mark.parametrize("how", ["moved over it while running", "a new inode while the daemon was down",
                                 "in place while the daemon was down"])
async def test_the_correlator_process_starts_a_copy_where_the_tailer_takes_it_up(tmp_path: Path, how: str):
    """A new file id taken up past byte 0 is in `started_at_end`: else the correlator's own process reads it from
    byte 0, storing the records it holds a second time (as for every new file)."""
    path = tmp_path / "acct-0001.csv"
    backup = _sixty_then_forty(path)
    tailer, _ = tailer_for(tmp_path)
    (old_id,) = ids_of(await drain(tailer))
    if how == "moved over it while running":
        _copy_moved_over(path, backup)
        await drain(tailer)
        await drain(tailer)
    else:
        saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]
        await tailer.close()
        (_copy_moved_over if "new inode" in how else _restore_in_place)(path, backup)
        tailer = Tailer(tailer.sources, tailer.tail, SelfMetrics(CollectorRegistry()), saved, first_run=False)
        await drain(tailer)
    live = [cp for cp in tailer.take_checkpoints() if cp.gone_since is None]
    assert [cp.offset for cp in live] == [len(backup)] and live[0].file_id != old_id
    assert tailer.started_at_end == {live[0].file_id}
    await tailer.close()


async def test_a_copy_of_a_file_deleted_earlier_in_the_run_is_not_read_again(tmp_path: Path):
    """The file deleted (read to its end, retired), later a backup of it put back at its name: the records it holds
    were counted when the file was read."""
    path = tmp_path / "acct-0001.csv"
    backup = _sixty_then_forty(path)
    tailer, _ = tailer_for(tmp_path)
    first = await drain(tailer)
    path.unlink()
    assert await drain(tailer) == [] and tailer.streams == {}
    _copy_moved_over(path, backup)
    assert await drain(tailer) == []
    _append(path, records(200, 2))
    rows = await drain(tailer)
    assert lines_of(rows) == [62, 63] and not ids_of(rows) & ids_of(first)
    await tailer.close()
