"""Files PMTA's `move-to` puts in a source's `moved_to` directory without the daemon having seen them in the globs.

PMTA may create a file, fill it and move it away between two scans (or while the daemon is down): the next look at
`moved_to` reads it whole, once. Every other file there was read before or is an archive, and must never be read
again: not once its checkpoint is forgotten (`tail.forget_after`), not after a restart. Found by a review of the look
while the daemon runs: each test here failed before its fix.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter import tailer as tailer_module
from exporter.config import SourceConfig, TailConfig
from exporter.metrics import SelfMetrics
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER
from tests.test_tailer_replacement import drain, ids_of, lines_of, records


def setup(tmp_path: Path, moved_glob: str = "*.csv", make_moved: bool = True, **tail: object
          ) -> tuple[Path, Path, SourceConfig, Tailer]:
    logs, moved = tmp_path / "logs", tmp_path / "moved"
    logs.mkdir()
    if make_moved:
        moved.mkdir()
    src = SourceConfig(name="acct", paths=[str(logs / "acct-*.csv")], moved_to=[str(moved / moved_glob)])
    tailer = Tailer([src], TailConfig(**{"rescan_interval": 0, **tail}), SelfMetrics(CollectorRegistry()),
                    first_run=False)
    return logs, moved, src, tailer


def file_of(n: int, first: int) -> str:
    return ACCT_HEADER + "\n" + records(first, n)


def failing_heads(monkeypatch, name: str, error: OSError) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    """The first bytes of files whose path ends in `name` cannot be read (EMFILE, EACCES); returns the undo."""
    real = tailer_module.read_head

    def failing(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(name):
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tailer_module, "read_head", failing)
    return lambda: monkeypatch.setattr(tailer_module, "read_head", real)


def unlistable(monkeypatch, directory: Path) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    """`directory` cannot be listed (permissions; the tests run as root, whom chmod does not stop); returns the
    undo."""
    real = os.scandir

    def denied(path=".", *args):  # type: ignore[no-untyped-def]
        if os.fspath(path) == str(directory):
            raise PermissionError(13, "Permission denied", str(directory))
        return real(path, *args)

    monkeypatch.setattr(os, "scandir", denied)
    return lambda: monkeypatch.setattr(os, "scandir", real)


async def test_a_file_moved_away_after_it_was_read_is_not_read_again_once_its_checkpoint_is_forgotten(
        tmp_path: Path) -> None:
    """A look at moved_to took every file changed since the daemon started and named by no checkpoint: once
    `tail.forget_after` had dropped the checkpoint of a file read and moved there, the next move made the look read
    it whole again (a daemon up longer than 14 days counted every file moved since its start a second time)."""
    logs, moved, _src, tailer = setup(tmp_path, forget_after=1.0)
    assert await drain(tailer) == []
    time.sleep(0.02)
    (logs / "acct-0001.csv").write_text(file_of(3, 0))
    first = await drain(tailer)
    assert lines_of(first) == [2, 3, 4]
    (logs / "acct-0001.csv").rename(moved / "acct-0001.csv")  # PMTA's move-to, once written
    assert await drain(tailer) == [] and await drain(tailer) == []
    tailer.take_checkpoints()  # the daemon's commit
    time.sleep(1.2)
    await drain(tailer)  # the checkpoint is forgotten
    assert not any(cp.path.endswith("acct-0001.csv") for cp in tailer.known.values())
    (moved / "acct-0002.csv").write_text(file_of(2, 100))  # the next file PMTA moves there, never in the globs
    rows = await drain(tailer)
    assert lines_of(rows) == [2, 3] and not ids_of(rows) & ids_of(first)
    await tailer.close()


async def test_a_file_moved_to_moved_to_between_the_last_scan_and_a_stop_is_read_at_the_restart(
        tmp_path: Path) -> None:
    """A restart looked for files changed after the last commit: one created and moved between the last scan and the
    stop's commit was older than that, and lost without a word. The restart looks from the last scan's start."""
    _logs, moved, src, tailer = setup(tmp_path)
    assert await drain(tailer) == []
    time.sleep(0.02)
    (moved / "acct-0002.csv").write_text(file_of(3, 10))  # created and moved after the last scan
    since = tailer.moved_to.since
    saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]
    await tailer.close()
    time.sleep(0.02)  # the stop's commit, later than the file's time
    again = Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), saved, first_run=False,
                   moved_since=since)
    assert lines_of(await drain(again)) == [2, 3, 4]
    await again.close()


async def test_a_second_move_in_the_same_tick_as_the_last_look_is_read(tmp_path: Path) -> None:
    """A directory's time changes once per clock tick (a second on some file systems): a file moved in within the
    tick of the last look left it unchanged, and was never read. A directory changed that recently is looked at
    again at the next scan."""
    _logs, moved, _src, tailer = setup(tmp_path)
    assert await drain(tailer) == []
    time.sleep(0.02)
    (moved / "acct-0001.csv").write_text(file_of(2, 0))
    assert lines_of(await drain(tailer)) == [2, 3]
    then = os.stat(moved).st_mtime_ns
    (moved / "acct-0002.csv").write_text(file_of(3, 10))
    os.utime(moved, ns=(then, then))  # the directory's time as it was at the last look: the same tick
    assert lines_of(await drain(tailer) + await drain(tailer)) == [2, 3, 4]
    assert await drain(tailer) == []
    await tailer.close()


async def test_a_moved_to_directory_created_after_the_start_is_looked_at(tmp_path: Path) -> None:
    """A `moved_to` directory missing at the first look was skipped and nothing noted: created later with a file in
    it, it counted as unchanged and the file was never read."""
    _logs, moved, _src, tailer = setup(tmp_path, make_moved=False)
    assert await drain(tailer) == []
    time.sleep(0.02)
    moved.mkdir()
    (moved / "acct-0001.csv").write_text(file_of(2, 0))
    assert lines_of(await drain(tailer)) == [2, 3]
    assert await drain(tailer) == []
    await tailer.close()


async def test_a_moved_to_glob_with_a_wildcard_directory_looks_in_each_directory_it_matches(tmp_path: Path) -> None:
    """Only the pattern's fixed root was watched: a file moved into an existing dated subdirectory
    (`moved/*/acct-*.csv`) changed a directory nothing looked at."""
    _logs, moved, _src, tailer = setup(tmp_path, moved_glob="*/*.csv")
    (moved / "2026-12-04").mkdir()
    assert await drain(tailer) == []
    time.sleep(0.02)
    (moved / "2026-12-04" / "acct-0001.csv").write_text(file_of(2, 0))
    assert lines_of(await drain(tailer)) == [2, 3]
    time.sleep(0.02)
    (moved / "2026-12-05").mkdir()  # a new day's directory, a file in it
    (moved / "2026-12-05" / "acct-0002.csv").write_text(file_of(3, 10))
    assert lines_of(await drain(tailer)) == [2, 3, 4]
    assert await drain(tailer) == []
    await tailer.close()


async def test_a_look_at_a_moved_to_full_of_archives_opens_only_the_new_file(tmp_path: Path, monkeypatch) -> None:
    """Each look opened every file of the directory to read its first bytes before asking whether it was new: 3,000
    archives, 3,001 opens per move. Files seen at the last look are not opened again."""
    _logs, moved, _src, tailer = setup(tmp_path)
    for i in range(300):
        path = moved / f"acct-old{i:04d}.csv"
        path.write_text(file_of(1, i))
        os.utime(path, (1_700_000_000, 1_700_000_000))
    assert await drain(tailer) == []
    opened: list[str] = []
    real = tailer_module.read_head

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tailer_module, "read_head", counting)
    time.sleep(0.02)
    (moved / "acct-new.csv").write_text(file_of(2, 1000))
    assert lines_of(await drain(tailer)) == [2, 3]
    assert not [name for name in opened if name.startswith("acct-old")], opened[:5]
    await tailer.close()


async def test_where_the_looks_at_moved_to_stopped_is_saved_per_source_with_the_checkpoints(tmp_path: Path) -> None:
    """A restart takes up each source's looks where its last look started (saved with the checkpoints), not at the last
    commit, and not at the oldest of all sources': a source whose directory never changed keeps its old time, which
    would reopen another source's archives whose checkpoints are forgotten."""
    from exporter.state import Commit, StateStore

    logs, moved = tmp_path / "logs", tmp_path / "moved"
    for d in (logs, moved, tmp_path / "fbl-moved"):
        d.mkdir()
    sources = [SourceConfig(name="acct", paths=[str(logs / "acct-*.csv")], moved_to=[str(moved / "*.csv")]),
               SourceConfig(name="fbl", paths=[str(logs / "fbl-*.csv")], moved_to=[str(tmp_path / "fbl-moved/*")])]
    for d in (moved, tmp_path / "fbl-moved"):  # made long ago (a directory changed within a tick is looked at again)
        os.utime(d, (time.time() - 60, time.time() - 60))
    old = time.time() - 86_400 * 20  # the last run's looks, 20 days ago
    tailer = Tailer(sources, TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), first_run=False,
                    moved_since=old)
    before = time.time()
    assert await drain(tailer) == []
    first = tailer.moved_to.since
    assert first["acct"] == first["fbl"] and before <= first["acct"] <= time.time()  # a restart's first scan looks
    assert await drain(tailer) == [] and tailer.moved_to.since == first  # nothing changed: no look
    before = time.time()
    (moved / "acct-0001.csv").write_text(file_of(2, 0))
    assert lines_of(await drain(tailer)) == [2, 3]
    since = tailer.moved_to.since
    assert before <= since["acct"] <= time.time() and since["fbl"] == first["fbl"]  # fbl's directory did not change
    store = StateStore(tmp_path / "state" / "watchtower.db")
    store._open(check=False)
    store._write_checkpoint(Commit(checkpoints=tailer.take_checkpoints(), moved_since=since))
    store._close()
    await tailer.close()
    again = StateStore(tmp_path / "state" / "watchtower.db")
    loaded = again._open(check=False)
    again._close()
    assert loaded.moved_since == since
    assert loaded.moved_since_for(["acct", "diag"]) == {"acct": since["acct"], "diag": min(since.values())}


async def test_a_new_file_that_could_not_be_read_at_a_look_is_still_new_after_a_restart(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """A new file whose first bytes could not be read at the look (EMFILE, EACCES) was looked at again at the next
    scan, but the look's start was saved as where a restart takes up: after a stop it was older than that, and
    lost."""
    import errno

    _logs, moved, src, tailer = setup(tmp_path)
    assert await drain(tailer) == []
    new = moved / "acct-0002.csv"
    new.write_text(file_of(3, 10))
    time.sleep(2.5)  # PMTA closed it longer before the scan than file times can be coarse
    readable_again = failing_heads(monkeypatch, "acct-0002.csv", OSError(errno.EMFILE, "Too many open files"))
    assert await drain(tailer) == []
    since = tailer.moved_to.since
    saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]  # the stop's commit
    await tailer.close()
    readable_again()
    again = Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), saved, first_run=False,
                   moved_since=since)
    assert lines_of(await drain(again) + await drain(again)) == [2, 3, 4]
    await again.close()


async def test_an_archive_missing_from_one_look_is_not_new_at_the_next(tmp_path: Path) -> None:
    """A look's list of files replaced the last one: a directory a wildcard matches, renamed away (or unreadable)
    during one look, then back, made every file in it new again, and one whose checkpoint was forgotten was read
    whole a second time."""
    logs, moved, _src, tailer = setup(tmp_path, moved_glob="*/*.csv", forget_after=1.0)
    day = moved / "2026-12-04"
    day.mkdir()
    assert await drain(tailer) == []
    (logs / "acct-0001.csv").write_text(file_of(3, 0))
    assert lines_of(await drain(tailer)) == [2, 3, 4]
    (logs / "acct-0001.csv").rename(day / "acct-0001.csv")
    assert await drain(tailer) == [] and await drain(tailer) == []
    tailer.take_checkpoints()
    time.sleep(2.2)
    await drain(tailer)  # its checkpoint is forgotten
    assert not tailer.known
    day.rename(moved / ".2026-12-04.tmp")  # away during one look
    (moved / "2026-12-05").mkdir()
    (moved / "2026-12-05" / "acct-0002.csv").write_text(file_of(2, 100))
    assert lines_of(await drain(tailer)) == [2, 3]
    (moved / ".2026-12-04.tmp").rename(day)
    assert await drain(tailer) == [] and await drain(tailer) == []
    await tailer.close()


async def test_an_archive_moved_while_moved_to_could_not_be_listed_is_not_read_again_later(
        tmp_path: Path, monkeypatch) -> None:
    """While a `moved_to` directory cannot be listed (permissions), files read through the globs and moved there
    are not in the last look; once their checkpoints are forgotten, the first look that succeeds read them whole
    again. A file older than `tail.forget_after` is never new to a look: one read before would have a checkpoint."""
    logs, moved, _src, tailer = setup(tmp_path, forget_after=1.0)
    assert await drain(tailer) == []
    (logs / "acct-0001.csv").write_text(file_of(3, 0))
    assert lines_of(await drain(tailer)) == [2, 3, 4]
    listable = Tailer._root_listable

    def denied(self, source, pattern):  # type: ignore[no-untyped-def]
        if str(moved) in pattern:
            self._count_error(source, "scan", pattern, PermissionError(13, "Permission denied"))
            return False
        return listable(self, source, pattern)

    monkeypatch.setattr(Tailer, "_root_listable", denied)
    (logs / "acct-0001.csv").rename(moved / "acct-0001.csv")  # PMTA's move-to; moved_to cannot be listed
    assert await drain(tailer) == [] and await drain(tailer) == []
    tailer.take_checkpoints()
    time.sleep(1.2)
    await drain(tailer)  # its checkpoint is forgotten
    assert not tailer.known
    monkeypatch.setattr(Tailer, "_root_listable", listable)  # permissions fixed
    assert await drain(tailer) == [] and await drain(tailer) == []
    await tailer.close()


async def test_a_moved_to_directory_missing_at_a_restarts_first_look_is_read_from_the_last_runs_look(
        tmp_path: Path) -> None:
    """A `moved_to` missing (or a mount point not mounted yet) at a restart's first look listed as empty, and the look
    moved the source's start up to its own: once the directory was back, the file PMTA had moved there while the
    daemon was down was older than that, and never read, without a word. A directory no look of this run listed is
    looked at from where the last run's looks stopped."""
    _logs, moved, src, tailer = setup(tmp_path)
    assert await drain(tailer) == []
    saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]
    await tailer.close()
    t = time.time()
    since = {"acct": t - 10}  # the last run's last look, 10 s ago
    new = moved / "acct-0002.csv"
    new.write_text(file_of(3, 10))  # moved there while the daemon was down
    os.utime(new, (t - 5, t - 5))
    offline = moved.rename(tmp_path / "moved.offline")  # not mounted yet when the daemon starts
    again = Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), saved, first_run=False,
                   moved_since=since)
    assert await drain(again) == []
    offline.rename(moved)  # mounted
    assert lines_of(await drain(again)) == [2, 3, 4]
    assert await drain(again) == []
    await again.close()


async def test_a_file_moved_after_the_clock_stepped_back_is_read(tmp_path: Path, monkeypatch) -> None:
    """Files' times were compared with the wall clock's time of the last look: after the clock stepped back (a host an
    hour fast, then corrected by NTP), every file created and moved there within the hour was older than the look, and
    never read. The last look's time is taken on the clock as it is now."""
    import types

    from exporter import movedto

    fast = [3600.0]
    monkeypatch.setattr(movedto, "time", types.SimpleNamespace(time=lambda: time.time() + fast[0],
                                                               time_ns=lambda: time.time_ns() + int(fast[0] * 1e9),
                                                               monotonic=time.monotonic))
    monkeypatch.setattr(tailer_module, "time", types.SimpleNamespace(time=lambda: time.time() + fast[0],
                                                                     monotonic=time.monotonic))
    _logs, moved, _src, tailer = setup(tmp_path)
    os.utime(moved, (time.time() - 60, time.time() - 60))
    assert await drain(tailer) == []
    first = moved / "acct-0001.csv"
    first.write_text(file_of(2, 0))
    os.utime(first, (time.time() + fast[0], time.time() + fast[0]))  # written by the fast clock's hour
    assert lines_of(await drain(tailer)) == [2, 3]
    fast[0] = 0.0  # stepped back
    time.sleep(0.02)
    (moved / "acct-0002.csv").write_text(file_of(3, 10))
    assert lines_of(await drain(tailer)) == [2, 3, 4]
    assert await drain(tailer) == []
    await tailer.close()


async def test_a_restart_with_the_clock_behind_the_last_runs_looks_reads_what_was_moved_while_down(
        tmp_path: Path) -> None:
    """The last run's looks were saved an hour ahead of the clock (it was fast, and was set right while the daemon was
    down): taken as is, every file moved there while the daemon was down was older than them, and lost. A saved time
    past the start cannot be trusted: the restart looks at files up to `tail.forget_after` old (named by no
    checkpoint and no copy of one read before, as ever)."""
    _logs, moved, src, tailer = setup(tmp_path)
    (_logs / "acct-0001.csv").write_text(file_of(2, 0))
    assert lines_of(await drain(tailer)) == [2, 3]
    (_logs / "acct-0001.csv").rename(moved / "acct-0001.csv")  # read, then moved: not new
    assert await drain(tailer) == [] and await drain(tailer) == []
    saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]
    await tailer.close()
    (moved / "acct-0002.csv").write_text(file_of(3, 10))  # moved there while the daemon was down
    again = Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), saved, first_run=False,
                   moved_since={"acct": time.time() + 3600})
    assert lines_of(await drain(again)) == [2, 3, 4]
    assert await drain(again) == []
    await again.close()


async def test_a_new_file_in_moved_to_that_cannot_be_read_is_counted_and_named_once(
        tmp_path: Path, monkeypatch, caplog) -> None:
    """A new file whose first bytes could not be read was looked at again at every scan, but nothing said so: no read
    error, no log line, and once `tail.forget_after` passed it was dropped unnoticed. It is counted at each failed look
    and named once, as a file in the globs is."""
    import errno
    import logging

    _logs, moved, _src, tailer = setup(tmp_path)
    assert await drain(tailer) == []
    readable_again = failing_heads(monkeypatch, "acct-0002.csv", PermissionError(errno.EACCES, "Permission denied"))
    time.sleep(0.02)
    (moved / "acct-0002.csv").write_text(file_of(3, 10))
    with caplog.at_level(logging.WARNING, logger="watchtower"):
        assert await drain(tailer) == [] and await drain(tailer) == []
    errors = tailer.metrics.read_errors.labels("acct", "permission")._value.get()
    assert errors == 2
    said = [r.getMessage() for r in caplog.records if "acct-0002.csv" in r.getMessage()]
    assert len(said) == 1 and "Permission denied" in said[0], said
    readable_again()
    assert lines_of(await drain(tailer)) == [2, 3, 4]
    await tailer.close()


def shifted_clock(monkeypatch) -> list[float]:  # type: ignore[no-untyped-def]
    """The looks' clocks (wall and monotonic alike) moved on by `offset[0]` seconds: time passing, without a sleep
    (files written now are that much older to the looks)."""
    import types

    from exporter import movedto

    offset = [0.0]
    clock = types.SimpleNamespace(time=lambda: time.time() + offset[0],
                                  time_ns=lambda: time.time_ns() + int(offset[0] * 1e9),
                                  monotonic=lambda: time.monotonic() + offset[0])
    monkeypatch.setattr(movedto, "time", clock)
    monkeypatch.setattr(tailer_module, "time", clock)
    return offset


async def test_a_moved_to_directory_missing_at_the_last_look_before_a_stop_is_looked_at_from_its_own_last_look(
        tmp_path: Path, monkeypatch) -> None:
    """Only one time per source was saved, the start of its last look: a file moved into a directory that was then
    unmounted, while a later look at the source's other directory moved that time past the file's, was never read
    after the restart that found the directory back. A restart takes up from the earliest floor the last look did
    not reach."""
    offset = shifted_clock(monkeypatch)
    logs, moved, other = tmp_path / "logs", tmp_path / "moved", tmp_path / "moved2"
    for d in (logs, moved, other):
        d.mkdir()
    src = SourceConfig(name="acct", paths=[str(logs / "acct-*.csv")],
                       moved_to=[str(moved / "*.csv"), str(other / "*.csv")])
    tailer = Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), first_run=False)
    assert await drain(tailer) == []
    offset[0] += 1
    (moved / "acct-0002.csv").write_text(file_of(3, 10))  # created and moved there between two scans
    off = moved.rename(tmp_path / "moved.offline")  # unmounted before the next look
    assert await drain(tailer) == []
    offset[0] += 5
    (other / "acct-0100.csv").write_text(ACCT_HEADER + "\n")  # a later look at the source, in its other directory
    assert await drain(tailer) == []
    since = tailer.moved_to.since
    saved = [dataclasses.replace(cp) for cp in tailer.take_checkpoints()]
    await tailer.close()
    off.rename(moved)  # mounted again while the daemon was down
    again = Tailer([src], TailConfig(rescan_interval=0), SelfMetrics(CollectorRegistry()), saved, first_run=False,
                   moved_since=since)
    assert lines_of(await drain(again)) == [2, 3, 4]
    assert await drain(again) == []
    await again.close()


async def test_a_wildcard_directory_that_cannot_be_listed_keeps_its_files_for_the_look_that_can(
        tmp_path: Path, monkeypatch) -> None:
    """glob() skips a directory a wildcard matches that it cannot list (permissions) without a word: the look moved
    its floor past the file moved there, and once listable again the file was never read. It is counted and named,
    and its floor stays where the last look that listed it left it."""
    offset = shifted_clock(monkeypatch)
    _logs, moved, _src, tailer = setup(tmp_path, moved_glob="*/*.csv")
    day = moved / "2026-12-05"
    day.mkdir()
    assert await drain(tailer) == []
    offset[0] += 1
    (day / "acct-0002.csv").write_text(file_of(3, 10))
    listable_again = unlistable(monkeypatch, day)
    assert await drain(tailer) == []
    assert tailer.metrics.read_errors.labels("acct", "scan")._value.get() == 1
    offset[0] += 5
    listable_again()  # permissions fixed
    (moved / "2026-12-06").mkdir()  # the next day's directory: a look
    (moved / "2026-12-06" / "acct-0003.csv").write_text(file_of(2, 20))
    assert sorted(lines_of(await drain(tailer))) == [2, 2, 3, 3, 4]  # both files, whole
    assert await drain(tailer) == []
    await tailer.close()


async def test_a_directory_that_can_never_be_listed_does_not_stop_the_looks(tmp_path: Path, monkeypatch) -> None:
    """`lost+found` (root's, mode 0700) at an archive volume's root, matched by `moved/*/*.csv`: one directory that
    cannot be listed made every look of the source fail, for good, and nothing moved there was read again."""
    _logs, moved, _src, tailer = setup(tmp_path, moved_glob="*/*.csv")
    (moved / "lost+found").mkdir()
    day = moved / "2026-12-05"
    day.mkdir()
    unlistable(monkeypatch, moved / "lost+found")
    assert await drain(tailer) == []
    time.sleep(0.02)
    (day / "acct-0002.csv").write_text(file_of(3, 10))  # created and moved there between two scans
    assert lines_of(await drain(tailer)) == [2, 3, 4]
    assert await drain(tailer) == []
    await tailer.close()



async def test_a_file_moved_there_early_in_a_downtime_longer_than_forget_after_is_read_at_the_restart(
        tmp_path: Path) -> None:
    """Files older than `tail.forget_after` were never new (one read before may have had its checkpoint forgotten):
    after 20 days down with the default 14, what PMTA moved there in the downtime's first 6 days was lost without a
    word. No checkpoint of a file changed after the last run's looks can have been forgotten before this run is
    `tail.forget_after` old (nothing read it before this run): until then those are looked at."""
    _logs, moved, src, tailer = setup(tmp_path)
    await tailer.close()
    day, now = 86_400.0, time.time()
    early = moved / "acct-0002.csv"
    early.write_text(file_of(3, 10))
    os.utime(early, (now - 15 * day, now - 15 * day))  # moved there 5 days into the downtime
    archive = moved / "acct-0001.csv"
    archive.write_text(file_of(2, 0))
    os.utime(archive, (now - 21 * day, now - 21 * day))  # read and moved there before the last look: not new
    late = moved / "acct-0000.csv"  # read, and moved there after the last look, just before the stop: not new
    late.write_text(file_of(2, 50))
    os.utime(late, (now - 19.9 * day, now - 19.9 * day))
    from exporter.filestream import Checkpoint

    retired = Checkpoint("f0", "acct", str(late), 0, 1, b"", late.stat().st_size, 3, ACCT_HEADER,
                         gone_since=now - 19.8 * day)  # forgotten at the first commit (older than forget_after)
    again = Tailer([src], TailConfig(rescan_interval=0, forget_after=14 * day), SelfMetrics(CollectorRegistry()),
                   [retired], first_run=False, moved_since={"acct": now - 20 * day})
    again.known.clear()  # as after that commit: nothing names it
    assert lines_of(await drain(again)) == [2, 3, 4]
    assert await drain(again) == []
    await again.close()


async def test_a_pass_cut_short_retires_no_file_it_did_not_reach(tmp_path: Path) -> None:
    """A pass that stops early (a stop request, a pause, a /metrics render: `should_stop`) used to retire the gone
    files it never reached: one moved to moved_to before it was ever opened was said lost, its bytes unread (seed 23
    of the randomized restart test lost 10 t records that way). Now the next whole pass finds it where it went."""
    logs, moved, _src, tailer = setup(tmp_path)
    assert await drain(tailer) == []
    (logs / "acct-0001.csv").write_text(file_of(3, 0))
    assert await tailer.poll(lambda *_: None, force_scan=True, should_stop=lambda: True) is True  # seen, not read
    os.rename(logs / "acct-0001.csv", moved / "acct-0001.csv")
    assert await tailer.poll(lambda *_: None, force_scan=True, should_stop=lambda: True) is True
    assert tailer.retired == []
    assert lines_of(await drain(tailer)) == [2, 3, 4]
    assert tailer.metrics is not None
    lost = tailer.metrics.read_errors.labels("acct", "lost")._value.get()
    assert lost == 0
