"""A glob match that turns into a FIFO between the tailer's stat and its open (a symlink swapped, `mv`) is refused
as "not a regular file", never waited on: the daemon's poll and oneshot both finish, and the regular file that
takes the path next is read in full. (Opened by path without O_NONBLOCK, the open waited for a FIFO writer for
good: no file read again, SIGTERM ignored.)"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import exporter.tailer
from exporter import fingerprint
from exporter.config import SourceConfig, TailConfig
from exporter.filestream import FileStream
from exporter.metrics import SelfMetrics
from exporter.safeopen import NotRegularFile, open_regular, open_regular_file
from exporter.tailer import Tailer
from tests.conftest import REPO, write_config

HEADER = "type,timeLogged,rcpt,vmta,dsnDiag"
WAIT = 10.0


def records(first: int, n: int) -> str:
    return HEADER + "\n" + "".join(f"d,2024-06-12 08:00:01+0000,u{i}@gmail.com,v1,ok\n" for i in range(first, first + n))


def fifo_over(path: Path) -> None:
    """Put a FIFO where `path` is (atomically, as a symlink swap or `mv` would)."""
    tmp = path.with_name(".fifo")
    os.mkfifo(tmp)
    os.replace(tmp, path)


def release(path: Path) -> None:
    """Open the FIFO for writing: an open blocked on it returns (the test fails instead of hanging)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def swap_once(path: Path, original: Callable[..., Any]) -> Callable[..., Any]:
    """`original`, the first call of which finds a FIFO at `path` (the race, made deterministic)."""
    done: list[bool] = []

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(True)
            fifo_over(path)
        return original(*args, **kwargs)

    return hooked


def make_tailer(directory: Path) -> tuple[Tailer, CollectorRegistry]:
    reg = CollectorRegistry()
    src = SourceConfig(name="acct", paths=[str(directory / "*.csv")])
    return Tailer([src], TailConfig(rescan_interval=0, start_position="beginning"), SelfMetrics(reg), (),
                  first_run=True), reg


async def poll_all(t: Tailer, rows: list[str], path: Path) -> None:
    """Poll until the tailer says nothing is left; a poll stuck on a FIFO fails the test (and is released)."""
    def on_batch(_stream: Any, batch: Any) -> None:
        rows.extend(r[2] for r in batch.rows)

    # a blocking open in the loop's own thread (read_head) stops wait_for too: a watchdog thread releases it
    watchdog = threading.Timer(WAIT, release, (path,))
    watchdog.start()
    started = time.monotonic()
    try:
        more = await asyncio.wait_for(t.poll(on_batch, force_scan=True), WAIT)
        while more:
            more = await asyncio.wait_for(t.poll(on_batch), WAIT)
    except TimeoutError:
        release(path)
        more = True
    finally:
        watchdog.cancel()
    if more or time.monotonic() - started >= WAIT:
        pytest.fail(f"the tailer blocked opening {path} (a FIFO swapped in between stat and open)")


@pytest.mark.parametrize("where", ["stream_open", "read_head"])
async def test_a_fifo_swapped_in_before_the_open_is_refused_and_the_next_file_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(records(0, 3))
    if where == "stream_open":
        monkeypatch.setattr(FileStream, "_open_file", swap_once(path, FileStream._open_file))
    else:
        monkeypatch.setattr(exporter.tailer, "read_head", swap_once(path, fingerprint.read_head))
    t, reg = make_tailer(tmp_path)
    rows: list[str] = []
    with caplog.at_level(logging.WARNING):
        await poll_all(t, rows, path)
        await poll_all(t, rows, path)  # the FIFO stays a while: refused at each look, never waited on
    assert rows == []
    assert f"{path}: " in caplog.text and "not a regular file (a FIFO" in caplog.text
    path.unlink()
    path.write_text(records(10, 3))  # the next regular file at the path: read whole
    await poll_all(t, rows, path)
    assert rows == ["u10@gmail.com", "u11@gmail.com", "u12@gmail.com"]
    await t.close()


def test_oneshot_finishes_when_a_fifo_is_swapped_in_before_the_open(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [{"name": "acct", "paths": [str(tmp_path / "logs" / "*.csv")]}])
    (tmp_path / "logs" / "a.csv").write_text(records(0, 2))
    path = tmp_path / "logs" / "x.csv"
    path.write_text(records(10, 3))
    script = textwrap.dedent(f"""
        import os, sys
        from exporter.filestream import FileStream
        from exporter.cli import main
        original, done = FileStream._open_file, []
        async def hooked(self):
            if not done and self.cp.path == {str(path)!r}:
                done.append(1)
                os.mkfifo({str(tmp_path / "fifo")!r})
                os.replace({str(tmp_path / "fifo")!r}, self.cp.path)
            return await original(self)
        FileStream._open_file = hooked
        sys.exit(main(["oneshot", "--config", {str(cfg)!r}]))
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    except subprocess.TimeoutExpired:
        release(path)
        pytest.fail("oneshot blocked opening a FIFO swapped in between stat and open")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{path}: cannot read (source acct): not a regular file (a FIFO)" in proc.stderr
    delivered = [line for line in proc.stdout.splitlines() if line.startswith("pmta_delivered_total")]
    assert sum(float(line.rpartition(" ")[2]) for line in delivered) == 2  # a.csv's records, all of them


def test_open_regular_refuses_what_is_not_a_regular_file_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    for what in (fifo, tmp_path, Path("/dev/null")):
        with pytest.raises(NotRegularFile, match="not a regular file"):
            open_regular(what)
    reg = tmp_path / "r"
    reg.write_bytes(b"abc")
    with open_regular_file(reg) as f:
        assert f.read() == b"abc"
        assert os.get_blocking(f.fileno())  # the reads wait for the disk, not EAGAIN
    assert fingerprint.read_head(str(reg)) == b"abc"
    with pytest.raises(NotRegularFile):
        fingerprint.read_head(str(fifo))
