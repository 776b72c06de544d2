"""The descriptors the tailer may hold: `tail.max_open_files`, and the process's open-file limit.

A file with unread bytes is not closed to make room for another: after a delete its descriptor is the only way to
its rest (closed, it was retired "drained" at the byte it had reached, the records after it lost, silently). A file
deleted before it could be opened at all is said (WARNING, `watchtower_read_errors_total{reason="lost"}`). Under an
open-file limit below what the config asks, the tailer holds fewer files (a warning says so) rather than fail every
open past it, starve the listener and spin.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from exporter import fdlimit
from tests.client import HTTP
from tests.conftest import ACCT_HEADER, REPO, Watchtower, d_line, total, write_config
from tests.test_tailer import tailer_for


def _write(path: Path, first: int, count: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(ACCT_HEADER + "\n" + "".join(d_line(first + i) + "\n" for i in range(count)))


def _open_paths(tailer) -> set[str]:  # type: ignore[no-untyped-def]
    return {os.path.basename(s.cp.path) for s in tailer.streams.values() if s.file is not None}


async def test_a_file_with_unread_bytes_keeps_its_descriptor_so_a_delete_loses_none_of_its_records(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    per_file = 2_000  # ~0.6 MB: a pass reads 8 chunks of 64 KiB, so each file takes two passes
    for i in range(6):
        _write(tmp_path / f"acct-{i}.csv", i * per_file, per_file)
    tailer, reg = tailer_for(tmp_path, tail={"max_open_files": 2, "chunk_bytes": 65536, "start_position": "beginning"})
    seen: list[str] = []

    def keep(_stream: object, batch) -> None:  # type: ignore[no-untyped-def]
        seen.extend(r[batch.columns.rcpt] for r in batch.rows)

    await tailer.poll(keep, force_scan=True)
    # the first two files were opened and half read; no other was opened by closing one of them
    assert _open_paths(tailer) == {"acct-0.csv", "acct-1.csv"}
    assert 0 < len(seen) < 2 * per_file
    sizes = {i: (tmp_path / f"acct-{i}.csv").stat().st_size for i in range(6)}
    for i in range(6):  # PMTA's delete-after (or a move-to without moved_to) takes every file
        os.unlink(tmp_path / f"acct-{i}.csv")
    caplog.set_level(logging.INFO, logger="watchtower.tailer")
    more = await tailer.poll(keep, force_scan=True)
    while more:
        more = await tailer.poll(keep)
    await tailer.poll(keep, force_scan=True)
    # every record of the two open files, once; the four never opened are said lost, with their size
    assert sorted(seen, key=lambda r: int(r[1:].split("@")[0])) == [f"u{n}@gmail.com" for n in range(2 * per_file)]
    lost = sorted(r.getMessage() for r in caplog.records if "never read" in r.getMessage())
    assert lost == [f"{tmp_path}/acct-{i}.csv: gone before it was read to its end (source acct): {sizes[i]} bytes from byte 0"
                    f" (line 1) never read, their records lost; no descriptor of it was open (tail.max_open_files: 2)"
                    for i in range(2, 6)]
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "lost"}) == 4
    await tailer.close()


async def test_files_written_now_share_the_descriptors_when_they_are_more_than_max_open_files(
        tmp_path: Path) -> None:
    # a file PMTA is writing is not at risk from delete-after: it may be closed with bytes unread, so that two
    # growing files under max_open_files: 1 are both read (neither waits for the other to stop growing)
    paths = [tmp_path / "acct-a.csv", tmp_path / "acct-b.csv"]
    for p in paths:
        _write(p, 0, 0)
    tailer, _ = tailer_for(tmp_path, tail={"max_open_files": 1, "start_position": "beginning"})
    seen: dict[str, int] = {}

    def keep(stream, batch) -> None:  # type: ignore[no-untyped-def]
        name = os.path.basename(stream.cp.path)
        seen[name] = seen.get(name, 0) + len(batch)

    for round_ in range(5):
        for p in paths:
            with open(p, "a", encoding="utf-8") as f:
                f.write("".join(d_line(round_ * 10 + i) + "\n" for i in range(3)))
        for _ in range(3):
            await tailer.poll(keep, force_scan=True)
            assert len(_open_paths(tailer)) <= 1
    assert seen == {"acct-a.csv": 15, "acct-b.csv": 15}
    await tailer.close()


def test_the_tailers_share_is_what_the_open_file_limit_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fdlimit, "soft_limit", lambda: 64)
    assert fdlimit.files_cap(128) == (64 - fdlimit.BASE_FDS) // 2
    monkeypatch.setattr(fdlimit, "soft_limit", lambda: 65536)
    assert fdlimit.files_cap(128) == 128
    monkeypatch.setattr(fdlimit, "soft_limit", lambda: None)  # unlimited
    assert fdlimit.files_cap(128) == 128


def _many_files(logs: Path, files: int, per_file: int) -> None:
    logs.mkdir(exist_ok=True)
    for i in range(files):
        _write(logs / f"acct-{i:04d}.csv", i * per_file, per_file)


def _limit(n: int):  # type: ignore[no-untyped-def]
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


@pytest.mark.fault
def test_under_a_low_open_file_limit_run_reads_every_file_and_answers_scrapes(tmp_path: Path) -> None:
    _many_files(tmp_path / "logs", 300, 5)
    config = write_config(tmp_path)
    wt = Watchtower(config)
    log = open(wt.log, "ab")  # noqa: SIM115 - closed below
    wt.proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, cwd=REPO, preexec_fn=_limit(64))
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:  # the listener answers while 300 files wait for the tailer's 16 descriptors
            try:
                if HTTP.get(wt.url + "/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, wt.log.read_text()[-2000:]
                time.sleep(0.1)
        samples = wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 1500, timeout=60)
        assert total(samples, "pmta_delivered_total") == 1500
        assert total(samples, "watchtower_read_errors_total") == 0
    finally:
        wt.stop()
    text = wt.log.read_text()
    assert "tail.max_open_files is 128, but the open-file limit is 64" in text
    assert "Too many open files" not in text


@pytest.mark.fault
def test_under_a_low_open_file_limit_oneshot_reads_every_file(tmp_path: Path) -> None:
    _many_files(tmp_path / "logs", 300, 5)
    config = write_config(tmp_path)
    done = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=_limit(64))
    assert done.returncode == 0, done.stderr[-2000:]
    delivered = sum(float(line.rsplit(" ", 1)[1]) for line in done.stdout.splitlines()
                    if line.startswith("pmta_delivered_total{"))
    assert delivered == 1500
    assert "tail.max_open_files is 128, but the open-file limit is 64" in done.stderr


async def test_a_symlink_to_a_missing_file_is_said_and_a_source_matching_only_such_links_has_no_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a link into a file system not mounted: the glob lists it, stat() finds nothing; it was silent (oneshot exit 0
    # with no word, no "no file matches", no read error)
    (tmp_path / "acct-1.csv").symlink_to("/nonexistent/mnt/acct-1.csv")
    tailer, reg = tailer_for(tmp_path, first_run=False)
    with caplog.at_level("WARNING", logger="watchtower.tailer"):
        await tailer.poll(lambda _s, _b: None, force_scan=True)
        await tailer.poll(lambda _s, _b: None, force_scan=True)
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{tmp_path}/acct-1.csv: a symbolic link to a missing file (source acct): No such file or "
                    "directory; files already followed are kept",
                    f"source acct: no file matches {tmp_path}/acct-*.csv (yet); check the paths and PMTA's "
                    "<acct-file> blocks"]
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "not_found"}) == 2
    assert tailer.sources_without_files() == ["acct"]
    assert tailer.unreadable() == [f"{tmp_path}/acct-1.csv"]
    await tailer.close()


HEAD5 = "type,timeLogged,rcpt,vmta,dsnDiag\n"


def _recs(first: int, n: int) -> str:
    return "".join(f"d,2024-06-12 08:00:01+0000,u{i}@gmail.com,v1,ok\n" for i in range(first, first + n))


async def test_files_ending_in_a_crash_tail_of_nuls_do_not_hold_the_descriptors_for_good(tmp_path: Path) -> None:
    # a crash tail: a record cut short, then over 16 MiB of NULs (the usual shape: delayed allocation), never
    # written again. Its trailing NULs were never counted read, so the file never looked read to its end: it kept
    # its descriptor for good, and under max_open_files: 2 no new file was ever read (review of 2026-12-05)
    for name in ("acct-a.csv", "acct-b.csv"):
        with open(tmp_path / name, "wb") as f:
            f.write((HEAD5 + _recs(0, 3)).encode() + b"d,2024-06-12 08:00:01+0000,u9@gm")
            f.truncate(f.tell() + 17 * (1 << 20))
    tailer, reg = tailer_for(tmp_path, tail={"max_open_files": 2, "start_position": "beginning",
                                             "chunk_bytes": 1 << 20, "idle_close_after": 0.01})
    seen: list[tuple[str, str]] = []

    def keep(stream, batch) -> None:  # type: ignore[no-untyped-def]
        seen.extend((os.path.basename(stream.cp.path), r[batch.columns.rcpt]) for r in batch.rows)

    for _ in range(6):
        await tailer.poll(keep, force_scan=True)
    assert reg.get_sample_value("watchtower_behind_bytes", {"source": "acct"}) == 0
    (tmp_path / "acct-c.csv").write_text(HEAD5 + _recs(100, 5))  # PMTA's new current file
    for _ in range(4):
        await tailer.poll(keep, force_scan=True)
    assert [r for name, r in seen if name == "acct-c.csv"] == [f"u{i}@gmail.com" for i in range(100, 105)]
    await tailer.close()


async def test_a_file_ending_in_an_unterminated_record_is_closed_only_when_nothing_else_can_be(
        tmp_path: Path) -> None:
    # PMTA crashed mid-record: the tail waits for a newline that never comes. It is closed for another file only
    # when every other open file has bytes unread (the last resort); with room enough it keeps its descriptor, so a
    # delete-after still lets its last record be read as the file's last
    (tmp_path / "acct-a.csv").write_text((HEAD5 + _recs(0, 4))[:-1])
    (tmp_path / "acct-b.csv").write_text(HEAD5 + _recs(10, 3))
    tailer, reg = tailer_for(tmp_path, tail={"max_open_files": 2, "start_position": "beginning"})
    seen: list[str] = []
    for _ in range(3):
        await tailer.poll(lambda _s, b: seen.extend(r[b.columns.rcpt] for r in b.rows), force_scan=True)
    os.unlink(tmp_path / "acct-a.csv")
    for _ in range(3):
        await tailer.poll(lambda _s, b: seen.extend(r[b.columns.rcpt] for r in b.rows), force_scan=True)
    assert sorted(seen) == sorted([f"u{i}@gmail.com" for i in (*range(4), 10, 11, 12)])
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "lost"}) == 0
    await tailer.close()
    # and under max_open_files: 1 the current file is still read (the tail gives way, as the last resort)
    (tmp_path / "acct-a.csv").write_text((HEAD5 + _recs(0, 4))[:-1])
    tailer, _ = tailer_for(tmp_path, tail={"max_open_files": 1, "start_position": "beginning"})
    seen.clear()
    for _ in range(4):
        await tailer.poll(lambda _s, b: seen.extend(r[b.columns.rcpt] for r in b.rows), force_scan=True)
    assert sorted(seen) == sorted([f"u{i}@gmail.com" for i in (0, 1, 2, 10, 11, 12)])
    await tailer.close()


async def test_the_sizes_seen_are_forgotten_with_the_files(tmp_path: Path) -> None:
    tailer, _ = tailer_for(tmp_path, tail={"start_position": "beginning"})
    previous = None
    for i in range(40):  # each file rotated away (deleted) while open, as PMTA's delete-after does
        path = tmp_path / f"acct-{i:03d}.csv"
        path.write_text(HEAD5 + _recs(i * 10, 2))
        await tailer.poll(lambda _s, _b: None, force_scan=True)
        if previous is not None:
            os.unlink(previous)
        previous = path
    await tailer.poll(lambda _s, _b: None, force_scan=True)
    assert len(tailer._seen_size) <= len(tailer.streams) == 1  # noqa: SLF001 - 40 before: one per file ever seen
    await tailer.close()
