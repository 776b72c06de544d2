"""`watchtower_behind_bytes` (and /healthz `bytes_behind`) say the bytes written to followed files but not yet read.

Two ways it lied: while reading was paused (commits failing with the backlog full) it stayed at what the last read
saw, however much PMTA appended meanwhile (879 kB unread for 60 s, the gauge at 0: the lag alerts could not fire
during the outage); and a file the daemon refuses to read by design (compressed, lines ending in a lone CR) counted
its whole size as unread for ever (a false WatchtowerTailerStalled), and its removal as records lost.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import socket
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import SourceConfig, TailConfig, load_config
from exporter.daemon import Daemon
from exporter.metrics import SelfMetrics
from exporter.tailer import Tailer
from tests.conftest import ACCT_HEADER, AcctWriter, d_line, write_config
from tests.test_reliability import THREAD_WORKER, FailingSink

_next = [os.getpid() % 500]


def loopback_port() -> int:
    """A free loopback port in 39000-39999 (this file's block)."""
    for _ in range(1000):
        port = 39000 + _next[0] % 1000
        _next[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 39000-39999")


def tailer_for(directory: Path) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "acct-*.csv")])
    return Tailer([src], TailConfig(rescan_interval=0, poll_interval=0.05), SelfMetrics(reg), first_run=False), reg


async def drain(tailer: Tailer) -> int:
    rows = 0

    def take(stream, batch) -> None:  # type: ignore[no-untyped-def]
        nonlocal rows
        rows += len(batch)

    more = await tailer.poll(take, force_scan=True)
    while more:
        more = await tailer.poll(take)
    return rows


def behind(reg: CollectorRegistry) -> float | None:
    return reg.get_sample_value("watchtower_behind_bytes", {"source": "acct"})


def lost(reg: CollectorRegistry) -> float:
    return reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "lost"}) or 0.0


# --- while reading is paused ----------------------------------------------------------------------------------
async def test_bytes_appended_while_reading_is_paused_count_as_behind(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits failing (a full state disk) with `tail.max_pending_rows` waiting: reading pauses. The gauge and
    /healthz then went on saying what the last read saw (0 when it had read to the end) whatever PMTA appended: it
    follows the files' sizes (an fstat each, nothing read) at the polls' cadence."""
    import exporter.daemon as daemon_mod

    monkeypatch.setattr("exporter.writer.RETRY_MAX", 0.05)
    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    cfg = load_config(write_config(tmp_path, listen=f"127.0.0.1:{loopback_port()}",
                                   tail={"max_pending_rows": 1000, "chunk_bytes": 64 * 1024},
                                   correlator=THREAD_WORKER))
    sink = FailingSink()
    sink.maintain_fails = False
    monkeypatch.setattr(daemon_mod, "_correlator", lambda *a: sink)
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        sink.failing = True
        w.write(5000)
        assert d.tailer is not None
        deadline = time.monotonic() + 20
        while not d.paused and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert d.paused and d.health()["reading_paused"] is True
        await asyncio.sleep(0.5)  # paused for good: nothing is read any more
        (stream,) = d.tailer.streams.values()
        offset = stream.cp.offset
        size = w.path.stat().st_size
        assert 0 < offset < size
        assert d.registry.get_sample_value("watchtower_behind_bytes", {"source": "acct"}) == size - offset

        w.write(2000)  # PMTA goes on writing during the outage
        appended = w.path.stat().st_size - size
        await asyncio.sleep(1.0)  # 20 poll intervals
        assert d.paused and stream.cp.offset == offset  # still paused: looked at, not read
        assert d.registry.get_sample_value("watchtower_behind_bytes", {"source": "acct"}) \
            == size - offset + appended
        assert d.health()["bytes_behind"] == size - offset + appended

        sink.failing = False  # the disk freed: everything read, and the gauge back to 0
        deadline = time.monotonic() + 30
        while (len(sink.rows) < 7000 or d.registry.get_sample_value("watchtower_behind_bytes", {"source": "acct"})
               != 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(sink.rows) == 7000
        assert d.registry.get_sample_value("watchtower_behind_bytes", {"source": "acct"}) == 0
        assert d.health()["bytes_behind"] == 0
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0


async def test_a_paused_look_sees_an_idle_closed_file_grow(tmp_path: Path) -> None:
    """A file whose descriptor was closed (idle) is looked at by its path (while the path still names it)."""
    t, reg = tailer_for(tmp_path)
    path = tmp_path / "acct-0001.csv"
    path.write_text(ACCT_HEADER + "\n" + "".join(d_line(n) + "\n" for n in range(10)))
    assert await drain(t) == 10
    (stream,) = t.streams.values()
    await stream.close()  # as idle_close_after does
    before = path.stat().st_size
    with path.open("a") as f:
        f.write("".join(d_line(n) + "\n" for n in range(10, 30)))
    t.look_while_paused()
    assert behind(reg) == path.stat().st_size - before
    assert stream.cp.offset == before  # nothing read
    await t.close()


# --- files refused by design -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gzip", "lone_cr"])
async def test_a_file_refused_by_design_is_not_behind_and_its_removal_loses_nothing(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A followed file that turns out compressed (gzip appended to an empty file), or whose lines end in a lone CR,
    is named once and not read: its bytes are owed to nobody. They kept watchtower_behind_bytes at its size for ever
    (a false critical WatchtowerTailerStalled), and deleting it counted read_errors_total{reason="lost"} with "never
    read, their records lost"."""
    t, reg = tailer_for(tmp_path)
    path = tmp_path / "acct-0001.csv"
    with caplog.at_level(logging.INFO, logger="watchtower"):
        if kind == "gzip":
            path.write_bytes(b"")  # followed while empty: gzip writes nothing until its buffer fills
            assert await drain(t) == 0
            path.write_bytes(gzip.compress((ACCT_HEADER + "\n" + d_line(0) + "\n").encode() * 50))
        else:
            path.write_bytes(("\r".join([ACCT_HEADER, d_line(0), d_line(1)]) + "\r").encode())
        assert await drain(t) == 0
        assert await drain(t) == 0
        assert path.stat().st_size > 0
        assert behind(reg) == 0
        assert sum(s.behind for s in t.streams.values()) == 0
        path.unlink()
        assert await drain(t) == 0
        assert t.streams == {}  # retired
        assert behind(reg) == 0
        assert lost(reg) == 0
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()]
    assert len(said) == 1 and "not read" in said[0], said  # its refusal, once; no loss
    assert not any("never read" in r.getMessage() for r in caplog.records)
    await t.close()


@pytest.mark.parametrize("how", ["same_size", "truncated_first"])
async def test_a_lone_cr_file_converted_in_place_is_read_once(tmp_path: Path, how: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The log's advice for a lone-CR file is to convert it: done in place (same inode: `tr` into a copy, then `cat`
    back; or emptied first, seen empty by a poll), it stayed unread for good and at 0 behind, until a restart. It is
    read from byte 0 as a truncated file is (the same log line, watchtower_truncations_total), each record once."""
    t, reg = tailer_for(tmp_path)
    path = tmp_path / "acct-0001.csv"
    lines = [ACCT_HEADER] + [d_line(n) for n in range(100)]
    path.write_bytes(("\r".join(lines) + "\r").encode())
    ino = path.stat().st_ino
    with caplog.at_level(logging.INFO, logger="watchtower"):
        assert await drain(t) == 0
        assert await drain(t) == 0  # refused, looked at: unchanged
        (stream,) = t.streams.values()
        assert stream.refused is not None and behind(reg) == 0
        with path.open("r+b") as f:
            f.truncate(0)
            if how == "truncated_first":
                f.flush()
                assert await drain(t) == 0  # a poll between the two: seen empty
                assert stream.refused is None and behind(reg) == 0
            f.write(("\n".join(lines) + "\n").encode())  # the same size as before when it was not seen empty
        assert path.stat().st_ino == ino
        assert await drain(t) == 100
        assert await drain(t) == 0  # exactly once
        assert behind(reg) == 0
        with path.open("a") as f:
            f.write(d_line(100) + "\n")
        assert await drain(t) == 1  # followed on as any file
    assert reg.get_sample_value("watchtower_truncations_total", {"source": "acct"}) == 1
    said = [r.getMessage() for r in caplog.records if "reading it from the start as a new file" in r.getMessage()]
    assert len(said) == 1, said
    assert lost(reg) == 0
    (cp,) = [c for c in t.take_checkpoints() if c.gone_since is None]
    assert cp.offset == path.stat().st_size
    await t.close()


async def test_a_refused_file_that_only_grows_stays_refused(tmp_path: Path) -> None:
    """The look at a refused file reads its first bytes only when it changed, and a file that grew with the same
    first bytes (gzip going on writing) is still not read, said once."""
    t, reg = tailer_for(tmp_path)
    path = tmp_path / "acct-0001.csv"
    path.write_bytes(("\r".join([ACCT_HEADER, d_line(0), d_line(1)]) + "\r").encode())
    assert await drain(t) == 0
    with path.open("ab") as f:
        f.write((d_line(2) + "\r").encode())
    assert await drain(t) == 0
    (stream,) = t.streams.values()
    assert stream.refused is not None and behind(reg) == 0
    assert (reg.get_sample_value("watchtower_truncations_total", {"source": "acct"}) or 0) == 0
    await t.close()


async def test_a_paused_look_counts_a_file_truncated_below_its_offset_whole(tmp_path: Path) -> None:
    """Truncated and refilled below the read position while reading is paused: all of it is to be read again from
    byte 0 (the gauge clamped size - offset to 0)."""
    t, reg = tailer_for(tmp_path)
    path = tmp_path / "acct-0001.csv"
    path.write_text(ACCT_HEADER + "\n" + "".join(d_line(n) + "\n" for n in range(50)))
    assert await drain(t) == 50
    with path.open("r+b") as f:
        f.truncate(0)
        f.write((ACCT_HEADER + "\n" + "".join(d_line(n) + "\n" for n in range(100, 105))).encode())
    t.look_while_paused()
    assert behind(reg) == path.stat().st_size
    assert await drain(t) == 5  # reading resumed: the new bytes from byte 0
    assert behind(reg) == 0
    await t.close()


# --- at every scrape -----------------------------------------------------------------------------------------
async def test_the_gauge_on_a_scrape_is_what_healthz_says_at_that_moment(tmp_path: Path) -> None:
    """The gauge was set at the end of each read pass only, while /healthz reads the files' sizes when asked: a
    scrape during a long pass (a 93 MB append, read 8 chunks a pass) showed 0 bytes behind with 55 MB unread, then
    one pass late (review 2026-12-07). Each /metrics render now sets it from the same sizes /healthz reads. Here no
    pass runs between the look at the file and the scrape (the next poll is a minute away)."""
    import httpx

    w = AcctWriter(tmp_path / "logs" if (tmp_path / "logs").mkdir() is None else tmp_path)
    w.write(100)
    port = loopback_port()
    cfg = load_config(write_config(tmp_path, listen=f"127.0.0.1:{port}",
                                   tail={"poll_interval": 60, "rescan_interval": 60}))
    d = Daemon(cfg)
    task = asyncio.create_task(d.serve())
    try:
        await asyncio.wait_for(d.started.wait(), 20)
        assert d.tailer is not None
        deadline = time.monotonic() + 20
        while d.registry.get_sample_value("pmta_delivered_total", {"vmta": "vmta-1", "vmta_pool": "pool-a",
                                                                   "isp": "gmail"}) != 100:
            assert time.monotonic() < deadline, "the first pass did not read the file"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # that pass over: the main loop waits out its minute
        (stream,) = d.tailer.streams.values()
        before = w.path.stat().st_size
        w.write(50)
        stream.look()  # its size seen (as a pass's first stat sees it), nothing read
        appended = w.path.stat().st_size - before
        assert d.health()["bytes_behind"] == appended
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            page = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert f'watchtower_behind_bytes{{source="acct"}} {float(appended)}' in page.splitlines()
        assert d.health()["bytes_behind"] == appended  # nothing read meanwhile: the gauge was not set by a pass
    finally:
        d.should_exit.set()
        assert await asyncio.wait_for(task, 20) == 0
