"""Tailer behaviours best shown in-process: start position, permission errors, identity by inode."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import aiofiles
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig
from exporter.filestream import Checkpoint, records_text
from exporter.metrics import SelfMetrics
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER, AcctWriter


def tailer_for(directory: Path, **kw) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "acct-*.csv")])
    return Tailer([src], TailConfig(rescan_interval=0, **kw.pop("tail", {})), SelfMetrics(reg), **kw), reg


async def drain(tailer: Tailer) -> list[int]:
    """Line numbers of every row read until the files are exhausted."""
    lines: list[int] = []
    more = await tailer.poll(lambda stream, batch: lines.extend(batch.line_numbers), force_scan=True)
    while more:
        more = await tailer.poll(lambda stream, batch: lines.extend(batch.line_numbers))
    return lines


async def test_start_at_end_skips_existing_records_on_the_first_run_only(tmp_path: Path):
    w = AcctWriter(tmp_path)
    w.write(50)
    tailer, _ = tailer_for(tmp_path, tail={"start_position": "end"}, first_run=True)
    assert await drain(tailer) == []  # existing lines are history
    w.write(3)
    assert await drain(tailer) == [52, 53, 54]  # header is line 1: line numbers stay true
    w.rotate()
    w.write(2)  # a file that appears later is read from byte 0
    assert await drain(tailer) == [2, 3]
    await tailer.close()


async def test_a_big_file_counted_to_start_at_its_end_is_said_first(tmp_path: Path, caplog, monkeypatch):
    """A first start at `end` reads a file whole to count its lines: over a 50 GB sparse file the daemon did not
    listen for 21 s, without a word. A file of COUNT_SAID_BYTES or more is said before."""
    import exporter.tailer as tailer_mod

    w = AcctWriter(tmp_path)
    w.write(10)
    monkeypatch.setattr(tailer_mod, "COUNT_SAID_BYTES", w.path.stat().st_size)
    tailer, _ = tailer_for(tmp_path, tail={"start_position": "end"}, first_run=True)
    with caplog.at_level("INFO", logger="watchtower.tailer"):
        assert await drain(tailer) == []
    said = [r.getMessage() for r in caplog.records if "counting its lines" in r.getMessage()]
    assert said == [f"{w.path}: counting its lines to start at its end (0.0 GB; tail.start_position: end)"]
    await tailer.close()


@pytest.mark.parametrize("form", ["json", "bom", "quoted", "crlf"])
async def test_start_at_end_reads_the_columns_of_any_header_form(tmp_path: Path, form: str):
    """On a first start at `end`, the existing first line gives the columns of what is appended. It was split on
    commas as it stood: a JSON file's records were all `bad_quoting` (kept in the checkpoint: lost until rotation),
    a BOM hid the `type` column (no complaint was ever counted), a quoted name kept its quotes."""
    head = {"json": "", "bom": "\ufefftype,timeLogged,rcpt,vmta\n", "quoted": '"type",timeLogged,"rcpt",vmta\n',
            "crlf": "type,timeLogged,rcpt,vmta\r\n"}[form]
    row = ('{{"type":"{t}","timeLogged":"2024-05-01 10:00:0{i}+0000","rcpt":"u{i}@gmail.com","vmta":"v1"}}\n'
           if form == "json" else "{t},2024-05-01 10:00:0{i}+0000,u{i}@gmail.com,v1\n")
    eol = "\r\n" if form == "crlf" else "\n"
    path = tmp_path / "acct-1.csv"
    path.write_bytes((head + row.format(t="d", i=0).replace("\n", eol)).encode())
    tailer, reg = tailer_for(tmp_path, tail={"start_position": "end"}, first_run=True)
    read: list[tuple[str, str]] = []

    def keep(_stream: object, batch) -> None:  # type: ignore[no-untyped-def]
        read.extend((r[batch.columns.type], r[batch.columns.rcpt]) for r in batch.rows)

    assert await drain(tailer) == []
    with path.open("ab") as f:
        f.write((row.format(t="d", i=1) + row.format(t="f", i=2)).replace("\n", eol).encode())
    more = await tailer.poll(keep, force_scan=True)
    while more:
        more = await tailer.poll(keep)
    assert read == [("d", "u1@gmail.com"), ("f", "u2@gmail.com")]
    assert reg.get_sample_value("watchtower_parse_errors_total", {"source": "acct", "reason": "bad_quoting"}) in (
        None, 0.0)
    await tailer.close()


async def test_not_the_first_run_reads_unknown_files_from_the_start(tmp_path: Path):
    w = AcctWriter(tmp_path)
    w.write(5)
    tailer, _ = tailer_for(tmp_path, tail={"start_position": "end"}, first_run=False)
    assert await drain(tailer) == [2, 3, 4, 5, 6]
    await tailer.close()


async def test_permission_denied_is_reported_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    w = AcctWriter(tmp_path)
    w.write(4)
    real_open = aiofiles.open
    denied = {"on": True}

    def fake_open(path, *a, **k):  # type: ignore[no-untyped-def]
        if denied["on"]:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("exporter.filestream.aiofiles.open", fake_open)
    tailer, reg = tailer_for(tmp_path, first_run=False)
    assert await drain(tailer) == []
    assert await drain(tailer) == []
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "permission"}) == 2
    denied["on"] = False  # the operator fixes the group or mode
    assert await drain(tailer) == [2, 3, 4, 5]
    assert reg.get_sample_value("watchtower_records_read_total", {"source": "acct", "type": "d"}) == 4
    await tailer.close()


async def test_a_renamed_file_keeps_its_offset(tmp_path: Path):
    w = AcctWriter(tmp_path)
    w.write(3)
    tailer, reg = tailer_for(tmp_path, first_run=False)
    assert await drain(tailer) == [2, 3, 4]
    w.path.rename(tmp_path / "acct-2026-11-25-0099.csv")  # same inode, new name still in the glob
    w.path = tmp_path / "acct-2026-11-25-0099.csv"
    w.write(1)
    assert await drain(tailer) == [5]
    assert reg.get_sample_value("watchtower_file_opens_total", {"source": "acct"}) == 1
    await tailer.close()


async def test_a_match_that_is_not_a_regular_file_is_named_once_and_not_followed(tmp_path: Path, caplog):
    """A FIFO or a link to a device matched by a source's glob is never opened (a FIFO's open would wait for a
    writer, /dev/zero never ends); the operator is told once which path and why, directories stay quiet."""
    import os

    w = AcctWriter(tmp_path)
    w.write(3)
    os.mkfifo(tmp_path / "acct-pipe.csv")
    (tmp_path / "acct-zero.csv").symlink_to("/dev/zero")
    (tmp_path / "acct-old.csv").mkdir()
    tailer, reg = tailer_for(tmp_path, first_run=False)
    with caplog.at_level("WARNING", logger="watchtower.tailer"):
        assert await drain(tailer) == [2, 3, 4]
        assert await drain(tailer) == []
    named = sorted(r.getMessage() for r in caplog.records if "not a regular file" in r.getMessage())
    assert named == [f"{tmp_path / 'acct-pipe.csv'}: not a regular file (a FIFO; source acct): not followed",
                     f"{tmp_path / 'acct-zero.csv'}: not a regular file (a character device; source acct): not followed"]
    assert reg.get_sample_value("watchtower_files_followed", {"source": "acct"}) == 1
    await tailer.close()


async def test_a_compressed_match_is_named_once_and_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A glob such as `acct-*` that also matches rotated files compressed by logrotate: their bytes are not CSV (read
    as text they gave a screenful of binary parse errors). Each is named once, with the compression, and skipped."""
    import bz2
    import gzip

    w = AcctWriter(tmp_path)
    w.write(3)
    body = w.path.read_bytes()
    (tmp_path / "acct-2026-11-24-0000.csv.gz").write_bytes(gzip.compress(body))
    (tmp_path / "acct-2026-11-23-0000.csv.bz2").write_bytes(bz2.compress(body))
    src = SourceConfig(name="acct", paths=[str(tmp_path / "acct-*")])
    reg = CollectorRegistry()
    tailer = Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(reg), first_run=False)
    with caplog.at_level("WARNING", logger="watchtower.tailer"):
        assert await drain(tailer) == [2, 3, 4]
        assert await drain(tailer) == []
    named = sorted(r.getMessage() for r in caplog.records if tmp_path.name in r.getMessage())
    assert named == [f"{tmp_path / 'acct-2026-11-23-0000.csv.bz2'}: compressed (bzip2; source acct): not followed; "
                     "narrow the glob to the files PMTA writes (e.g. acct-*.csv)",
                     f"{tmp_path / 'acct-2026-11-24-0000.csv.gz'}: compressed (gzip; source acct): not followed; "
                     "narrow the glob to the files PMTA writes (e.g. acct-*.csv)"]
    assert reg.get_sample_value("watchtower_files_followed", {"source": "acct"}) == 1
    assert [m.name for m in reg.collect() if m.name == "watchtower_parse_errors"
            and any(s.value for s in m.samples if s.name.endswith("_total"))] == []
    await tailer.close()


async def read_then_stop(directory: Path) -> tuple[AcctWriter, list[Checkpoint]]:
    """A file of 3 records read by a tailer that then stops: its writer and the checkpoints the stop leaves."""
    w = AcctWriter(directory)
    w.write(3)
    first, _ = tailer_for(directory, first_run=False)
    assert await drain(first) == [2, 3, 4]
    checkpoints = first.take_checkpoints()
    await first.close()
    return w, checkpoints


async def test_a_file_missed_by_a_scan_that_could_not_list_its_directory_is_not_taken_for_one_moved_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """At a start, a source whose directory cannot be listed matches nothing; its files are not declared moved or
    gone, and once it can be listed they are followed where they are, each line read once."""
    w, checkpoints = await read_then_stop(tmp_path)
    w.write(2)
    listable = {"on": False}
    real_glob = glob.glob
    monkeypatch.setattr(Tailer, "_root_listable", lambda self, source, pattern: listable["on"])
    monkeypatch.setattr("exporter.tailer.glob.glob", lambda p: real_glob(p) if listable["on"] else [])
    tailer, _ = tailer_for(tmp_path, first_run=False, checkpoints=checkpoints)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == []
        listable["on"] = True
        assert await drain(tailer) == [5, 6]
        w.write(1)
        assert await drain(tailer) == [7]
    assert not [r for r in caplog.records if "while the daemon was down" in r.getMessage()]
    assert len(tailer.streams) == 1 and not next(iter(tailer.streams.values())).gone
    await tailer.close()


async def test_a_file_replaced_in_its_inode_while_the_daemon_is_down_is_reported_once_and_never_read_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """The file being read at the stop was deleted and its inode went to a new file (ext4 and tmpfs reuse a freed
    inode at once): reported gone, with the line reading stopped at; its checkpoint is kept as gone, so that the
    next start follows the new file from where it was, not from byte 0 again."""
    w, checkpoints = await read_then_stop(tmp_path)
    w.write(2)  # lines 5-6, written while the daemon is down, then the file is replaced in its inode
    w.path.write_text(ACCT_HEADER + "\n" + w.line(1, "vmta-9") + "\n")
    second, reg = tailer_for(tmp_path, first_run=False, checkpoints=checkpoints)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(second) == [2]
    gone = [r for r in caplog.records if "while the daemon was down" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.WARNING
    assert "any records after line 4 (byte " in gone[0].getMessage()
    assert ": truncated to " in gone[0].getMessage()  # rewritten in place: not "deleted, or moved"
    assert reg.get_sample_value("watchtower_truncations_total", {"source": "acct"}) == 1
    saved = {cp.file_id: cp for cp in checkpoints + second.take_checkpoints()}  # what the state database holds
    await second.close()
    assert sorted(cp.gone_since is None for cp in saved.values()) == [False, True]
    caplog.clear()
    for order in (list(saved.values()), list(saved.values())[::-1]):  # whatever order the database lists them in
        third, _ = tailer_for(tmp_path, first_run=False, checkpoints=order)
        with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
            assert await drain(third) == []
        await third.close()
    assert not [r for r in caplog.records if "while the daemon was down" in r.getMessage()]


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(24, "Too many open files")])
async def test_a_file_whose_head_cannot_be_read_at_a_start_is_decided_when_it_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: OSError):
    """A failed read of a followed file's first bytes at a start (EACCES while an operator fixes modes, EMFILE) was
    taken for a different file: the checkpoint reported gone, the file read again from byte 0 (its lines counted
    twice). It is left for the next scan, which can tell, with the failure counted and logged once."""
    import exporter.tailer as tailer_module

    w, checkpoints = await read_then_stop(tmp_path)
    w.write(2)
    real = tailer_module.read_head
    fail = {"n": 2}

    def read_head(path, *args):  # type: ignore[no-untyped-def]
        if fail["n"]:
            fail["n"] -= 1
            raise error
        return real(path, *args)

    monkeypatch.setattr(tailer_module, "read_head", read_head)
    tailer, reg = tailer_for(tmp_path, first_run=False, checkpoints=checkpoints)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == []
        assert await drain(tailer) == []
        assert await drain(tailer) == [5, 6]
    assert not [r for r in caplog.records if "while the daemon was down" in r.getMessage()
                or "inode reused" in r.getMessage()]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and str(w.path) in said[0] and error.strerror in said[0], said
    reason = "permission" if isinstance(error, PermissionError) else "io"
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": reason}) == 2
    assert [cp.file_id for cp in tailer.take_checkpoints()] == [checkpoints[0].file_id]
    await tailer.close()


async def test_a_file_moved_where_moved_to_cannot_be_listed_at_a_start_is_found_once_it_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """glob() says nothing when it cannot list a directory (EMFILE, EACCES, NFS): the moved file was declared gone
    at once, its last lines never read. Now the failure is counted and the file looked for again at the next scan."""
    import os

    archive = tmp_path / "archive"
    archive.mkdir()

    def archived(checkpoints: list[Checkpoint] | None = None) -> tuple[Tailer, CollectorRegistry]:
        reg = CollectorRegistry()
        src = SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")], moved_to=[str(archive / "acct-*.csv")])
        return Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(reg), first_run=False,
                      checkpoints=checkpoints or []), reg

    w = AcctWriter(tmp_path)
    w.write(3)
    first, _ = archived()
    assert await drain(first) == [2, 3, 4]
    checkpoints = first.take_checkpoints()
    await first.close()
    w.write(2)
    old = w.path
    w.rotate()
    old.rename(archive / old.name)
    real, listable = os.scandir, {"on": False}

    def scandir(path="."):  # type: ignore[no-untyped-def]
        if not listable["on"] and os.fspath(path).rstrip("/") == str(archive):
            raise OSError(24, "Too many open files")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    tailer, reg = archived(checkpoints)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == []  # the new file has its header only
        listable["on"] = True
        assert await drain(tailer) == [5, 6]
    assert not [r for r in caplog.records if "while the daemon was down (deleted" in r.getMessage()]
    assert any(f"moved to {archive / old.name} while the daemon was down" in r.getMessage() for r in caplog.records)
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "scan"}) == 1
    await tailer.close()


@pytest.mark.parametrize("where", ["moved", "deleted"])
async def test_a_stop_while_a_file_that_left_the_globs_is_drained_leaves_its_rest_to_the_next_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str):
    """A file the daemon was behind on left the globs (PMTA's move-to, delete-after) and the daemon stopped before
    reading it to its end: its checkpoint was saved as gone, so the next start neither read the rest nor said so.
    Now it is saved as being read: the next start finds it in `moved_to` and reads the rest, or says what was lost."""
    import os

    archive = tmp_path / "archive"
    archive.mkdir()

    def archived(checkpoints: list[Checkpoint] | None = None) -> Tailer:
        src = SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")], moved_to=[str(archive / "acct-*.csv")])
        return Tailer([src], TailConfig(rescan_interval=0, chunk_bytes=65536), SelfMetrics(CollectorRegistry()),
                      first_run=False, checkpoints=checkpoints or [])

    w = AcctWriter(tmp_path)
    w.write(3)
    first = archived()
    assert await drain(first) == [2, 3, 4]
    w.write(5000)  # a burst the daemon is behind on
    if where == "moved":
        os.rename(w.path, archive / w.path.name)
    else:
        os.unlink(w.path)
    lines: list[int] = []
    await first.poll(lambda stream, batch: lines.extend(batch.line_numbers), force_scan=True)  # one pass: not all
    assert lines and lines[0] == 5 and lines[-1] < 5004
    checkpoints = first.take_checkpoints()
    await first.close()  # stopped mid-drain
    second = archived(checkpoints)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        rest = await drain(second)
    said = [r for r in caplog.records if "while the daemon was down" in r.getMessage()]
    if where == "moved":
        assert rest == list(range(lines[-1] + 1, 5005))
        assert len(said) == 1 and said[0].levelno == logging.INFO and "moved to" in said[0].getMessage()
    else:
        assert rest == []
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        assert f"any records after line {lines[-1]} (byte " in said[0].getMessage()
    await second.close()


async def test_a_file_found_in_a_moved_to_directory_under_the_globs_directory_is_retired_once_drained(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """`paths: [.../pmta/*.csv]` with `moved_to: [.../pmta/archive/*.csv]`: fnmatch lets `*` match `/`, so the moved
    file still 'matched the globs' by its path and was never retired (followed for ever, and reported as moved again
    at every start). Globs match one path component per component, as glob() lists them."""
    import os

    archive = tmp_path / "archive"
    archive.mkdir()

    def archived(checkpoints: list[Checkpoint] | None = None) -> Tailer:
        src = SourceConfig(name="acct", paths=[str(tmp_path / "*.csv")], moved_to=[str(archive / "*.csv")])
        return Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), first_run=False,
                      checkpoints=checkpoints or [])

    w = AcctWriter(tmp_path)
    w.write(3)
    first = archived()
    assert await drain(first) == [2, 3, 4]
    checkpoints = first.take_checkpoints()
    await first.close()
    w.write(2)
    os.rename(w.path, archive / w.path.name)
    second = archived(checkpoints)
    assert await drain(second) == [5, 6]
    assert await drain(second) == []
    assert second.streams == {}  # drained and retired
    saved = second.take_checkpoints()
    await second.close()
    assert [cp.gone_since is not None for cp in saved] == [True]
    caplog.clear()
    third = archived(saved)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(third) == []
    assert not [r for r in caplog.records if "while the daemon was down" in r.getMessage()]
    await third.close()


async def test_a_file_of_a_renamed_source_resumes_where_it_was_under_its_new_name(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Its checkpoint names a source no longer configured (renamed, or its derived name changed with its first glob):
    the file resumes at its offset for the new name, under the same file id. Reading it again from the start counted
    every record twice (the pmta_* counters carry no source label), and the correlator stored them twice."""
    import dataclasses

    w, checkpoints = await read_then_stop(tmp_path)
    renamed = [dataclasses.replace(cp, source="old") for cp in checkpoints]
    w.write(2)
    tailer, _ = tailer_for(tmp_path, first_run=False, checkpoints=renamed)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == [5, 6]
    said = [r.getMessage() for r in caplog.records]
    assert any("source old is no longer configured; resuming for source acct at byte" in m for m in said), said
    assert not [m for m in said if "were not read" in m or "inode reused" in m]
    saved = tailer.take_checkpoints()
    await tailer.close()
    assert [(cp.file_id, cp.source, cp.gone_since) for cp in saved] == [(checkpoints[0].file_id, "acct", None)]


async def test_a_file_a_config_edit_gave_to_another_configured_source_is_read_for_it_from_the_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """The source that read it is still configured (the glob moved to another source, whose record types may differ):
    the file is read from the start for the new one, logged as such; not "any records after line N were not read"."""
    import dataclasses

    _w, checkpoints = await read_then_stop(tmp_path)
    moved = [dataclasses.replace(cp, source="diag", records="t") for cp in checkpoints]  # as diag read it
    sources = [SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")]),
               SourceConfig(name="diag", paths=[str(tmp_path / "diag-*.csv")], records=["t"])]
    tailer = Tailer(sources, TailConfig(rescan_interval=0), None, checkpoints=moved, first_run=False)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == [2, 3, 4]
    said = [r.getMessage() for r in caplog.records]
    assert any("now matched by source acct, not diag; reading it from the start for acct" in m for m in said), said
    assert not [m for m in said if "were not read" in m or "inode reused" in m]
    saved = tailer.take_checkpoints()
    await tailer.close()
    assert sorted((cp.source, cp.gone_since is None) for cp in saved) == [("acct", True), ("diag", False)]


@pytest.mark.parametrize(("old_records", "new_records"), [(None, None), (["d", "b"], ["d"]), (None, ["b"])])
async def test_a_file_given_to_a_source_that_keeps_no_type_more_resumes_where_it_was(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, old_records: list[str] | None,
        new_records: list[str] | None):
    """A glob moved to another configured source, or a source renamed while a new one took its old name: the new
    source keeps no record type the old one did not, so reading the file again from the start only counted its
    records twice (every pmta_* counter, and the correlator's timelines: `attempts 2`, review 2026-12-05). It
    resumes where reading stopped, under the same file id."""
    import dataclasses

    w, checkpoints = await read_then_stop(tmp_path)
    given = [dataclasses.replace(cp, source="diag", records=records_text(frozenset(old_records) if old_records
                                                                         else None)) for cp in checkpoints]
    w.write(2)
    sources = [SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")], records=new_records),
               SourceConfig(name="diag", paths=[str(tmp_path / "diag-*.csv")], records=old_records)]
    tailer = Tailer(sources, TailConfig(rescan_interval=0), None, checkpoints=given, first_run=False)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == ([5, 6] if new_records is None or "d" in new_records else [])  # (d lines)
    said = [r.getMessage() for r in caplog.records]
    assert any("now matched by source acct, not diag, which kept every record type acct keeps; resuming at byte"
               in m for m in said), said
    assert not [m for m in said if "reading it from the start" in m or "were not read" in m]
    saved = tailer.take_checkpoints()
    await tailer.close()
    assert [(cp.file_id, cp.source, cp.gone_since) for cp in saved] == [(checkpoints[0].file_id, "acct", None)]


async def test_a_file_of_a_renamed_source_moved_away_while_the_daemon_was_down_is_read_to_its_end(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Both at once while it was down: the source renamed, its file moved by PMTA's move-to. The configured source
    whose globs matched the file where it was read adopts it, and finds it among its moved_to globs."""
    import dataclasses
    import os

    archive = tmp_path / "archive"
    archive.mkdir()
    w, checkpoints = await read_then_stop(tmp_path)
    w.write(4)
    renamed = [dataclasses.replace(cp, source="old") for cp in checkpoints]
    os.rename(w.path, archive / w.path.name)
    w.rotate()
    src = SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")], moved_to=[str(archive / "acct-*.csv")])
    tailer = Tailer([src], TailConfig(rescan_interval=0), None, checkpoints=renamed, first_run=False)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == [5, 6, 7, 8]
        assert await drain(tailer) == []
    said = [r.getMessage() for r in caplog.records]
    assert any("source old is no longer configured; resuming for source acct" in m for m in said), said
    saved = {cp.file_id: (cp.source, cp.gone_since is not None) for cp in tailer.take_checkpoints()}
    assert saved[checkpoints[0].file_id] == ("acct", True)  # read to its end, then retired
    await tailer.close()


async def test_a_checkpoint_of_a_source_no_longer_configured_whose_file_no_glob_matches_is_reported_and_retired(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    import dataclasses

    _w, checkpoints = await read_then_stop(tmp_path)
    gone = [dataclasses.replace(cp, source="old", path=str(tmp_path / "elsewhere" / "acct-1.csv"))
            for cp in checkpoints]
    src = SourceConfig(name="diag", paths=[str(tmp_path / "diag-*.csv")])
    tailer = Tailer([src], TailConfig(rescan_interval=0), None, checkpoints=gone, first_run=False)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == []
        assert await drain(tailer) == []
    said = [r.getMessage() for r in caplog.records if "elsewhere" in r.getMessage()]
    assert said == [f"{tmp_path / 'elsewhere' / 'acct-1.csv'}: was being read for source old, which is no longer "
                    "configured, and no configured source's globs match it; any records after line 4 (byte "
                    f"{checkpoints[0].offset}) were not read"]
    assert [(cp.source, cp.gone_since is not None) for cp in tailer.take_checkpoints()] == [("old", True)]
    await tailer.close()


@pytest.mark.parametrize(("read_with", "kept"), [(None, "*"), (["d", "b"], "b,d")])
async def test_a_renamed_source_whose_old_name_a_new_source_took_resumes_where_it_was(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, read_with: list[str] | None, kept: str):
    """Review 2026-12-05: `acct` renamed `pmta-acct` (same glob, same records) and a new source named `acct` for the
    FBL files: the old name's *current* record types (f) were compared with the new source's, so every acct file was
    read again from the start and every delivery counted twice, said at INFO. A checkpoint keeps the record types it
    was read for (`records`), and they are what is compared."""
    w = AcctWriter(tmp_path)
    w.write(4)
    first = Tailer([SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")], records=read_with)],
                   TailConfig(rescan_interval=0), None)
    await drain(first)
    checkpoints = first.take_checkpoints()
    await first.close()
    assert [cp.records for cp in checkpoints] == [kept]
    w.write(2)
    sources = [SourceConfig(name="pmta-acct", paths=[str(tmp_path / "acct-*.csv")], records=read_with),
               SourceConfig(name="acct", paths=[str(tmp_path / "fbl-*.csv")], records=["f"])]
    tailer = Tailer(sources, TailConfig(rescan_interval=0), None, checkpoints=checkpoints, first_run=False)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == [6, 7]
    said = [r.getMessage() for r in caplog.records]
    assert any("now matched by source pmta-acct, not acct, which kept every record type pmta-acct keeps; resuming "
               "at byte" in m for m in said), said
    assert not [m for m in said if "reading it from the start" in m]
    saved = tailer.take_checkpoints()
    await tailer.close()
    assert [(cp.file_id, cp.source, cp.records) for cp in saved] == [(checkpoints[0].file_id, "pmta-acct", kept)]


async def test_a_source_renamed_with_more_record_types_resumes_as_a_widened_one_does(tmp_path: Path,
                                                                                     caplog: pytest.LogCaptureFixture):
    """Review 2026-12-05: `acct` (records [d]) renamed `pmta-acct` with [d, b]: once checkpoints kept their types, the
    file was read again from the start and every delivery counted twice. A source no longer configured is a rename:
    it resumes (the widened types count from there on, as without a rename)."""
    w = AcctWriter(tmp_path)
    w.write(4)
    first = Tailer([SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")], records=["d"])],
                   TailConfig(rescan_interval=0), None)
    await drain(first)
    checkpoints = first.take_checkpoints()
    await first.close()
    w.write(2)
    tailer = Tailer([SourceConfig(name="pmta-acct", paths=[str(tmp_path / "acct-*.csv")], records=["d", "b"])],
                    TailConfig(rescan_interval=0), None, checkpoints=checkpoints, first_run=False)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == [6, 7]
    assert any("source acct is no longer configured; resuming for source pmta-acct" in r.getMessage()
               for r in caplog.records)
    await tailer.close()


async def test_an_earlier_builds_checkpoint_whose_source_name_went_to_other_files_resumes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Review of upgrades 2026-12-05: a checkpoint written before checkpoints kept their record types, then `acct`
    renamed `deliveries` and `bounce` renamed `acct` at the upgrade: the name's new types (rb, rs) were compared,
    no overlap, and the file was read again from the start, every delivery counted twice, said at INFO."""
    import dataclasses

    w = AcctWriter(tmp_path)
    w.write(4)
    first = Tailer([SourceConfig(name="acct", paths=[str(tmp_path / "acct-*.csv")], records=["d", "b"])],
                   TailConfig(rescan_interval=0), None)
    await drain(first)
    earlier = [dataclasses.replace(cp, records=None) for cp in first.take_checkpoints()]  # as an earlier build saved
    await first.close()
    w.write(2)
    sources = [SourceConfig(name="deliveries", paths=[str(tmp_path / "acct-*.csv")], records=["d", "b"]),
               SourceConfig(name="acct", paths=[str(tmp_path / "bounce-*.csv")], records=["rb", "rs"])]
    tailer = Tailer(sources, TailConfig(rescan_interval=0), None, checkpoints=earlier, first_run=False)
    with caplog.at_level(logging.INFO, logger="watchtower.tailer"):
        assert await drain(tailer) == [6, 7]
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "now matched by source" in r.getMessage()]
    assert len(said) == 1 and said[0][0] == logging.WARNING, said
    assert "whose name now stands for other files" in said[0][1] and "resuming at byte" in said[0][1]
    await tailer.close()
