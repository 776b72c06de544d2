"""`tail.start_position: end` over logs the daemon's user cannot read yet at its first start.

The likeliest first-install mistake (the user not in PMTA's log group): the first start committed byte 0 for
every file it could not read, and once the group was fixed, PMTA's whole retention (8 days by default) was
counted at once, as if `start_position` were `beginning`. A file that cannot be read at the first start is
read from where it ended then, its lines counted when it can be opened (line numbers stay true).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from exporter.config import SourceConfig, TailConfig
from exporter.state import StateStore
from exporter.tailer import Tailer
from tests.conftest import AcctWriter
from tests.test_oneshot import SETPRIV
from tests.test_tailer import drain

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")


def _first_start_without_read_access(tmp_path: Path, pattern: str, correlator: bool) -> str:
    """Run the daemon's first start without the capabilities that let root read anything; stop it once it has
    committed its start positions. Returns its log."""
    config = tmp_path / "w.yml"
    config.write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [pattern]}], "state_dir": str(tmp_path / "state"),
        "listen": "127.0.0.1:0", "tail": {"start_position": "end"}, "correlator": {"enabled": correlator}}))
    err = tmp_path / "first.log"
    with err.open("w") as f:
        proc = subprocess.Popen([*SETPRIV, sys.executable, "-m", "exporter", "run", "--config", str(config)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=f)
    try:
        deadline = time.monotonic() + 60
        while "first run: start positions" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return err.read_text()


async def _resumed(tmp_path: Path, pattern: str) -> tuple[Tailer, list[tuple[str, str]]]:
    """A tailer resuming from the committed checkpoints (now with read access), and the directories the store
    holds pending."""
    store = StateStore(tmp_path / "state" / "watchtower.db")
    loaded = await store.open()
    await store.close()
    tailer = Tailer([SourceConfig(name="acct", paths=[pattern])],
                    TailConfig(rescan_interval=0, start_position="end"), None, loaded.checkpoints,
                    first_run=loaded.first_run, start_pending=loaded.start_pending)
    return tailer, loaded.start_pending


@pytest.mark.parametrize("correlator", [False, True])
@pytest.mark.parametrize("shut", ["file", "directory", "subdirectory"])
async def test_logs_unreadable_at_the_first_start_are_read_from_where_they_ended_then(
        tmp_path: Path, shut: str, correlator: bool) -> None:
    """`subdirectory`: a glob with a wildcard in its directory part (`logs/*/acct-*.csv`), whose glob() skips a
    directory it cannot list without a word."""
    logs = tmp_path / "logs"
    logs.mkdir()
    where = logs / "sub" if shut == "subdirectory" else logs
    where.mkdir(exist_ok=True)
    pattern = str(logs / "*" / "acct-*.csv") if shut == "subdirectory" else str(logs / "acct-*.csv")
    w = AcctWriter(where)
    w.write(20)  # history: lines 2-21
    (w.path if shut == "file" else where).chmod(0o000)
    try:
        log = _first_start_without_read_access(tmp_path, pattern, correlator)
    finally:
        w.path.chmod(0o644)
        where.chmod(0o755)
    assert "Traceback" not in log
    said = [ln for ln in log.splitlines() if "tail.start_position: end still applies" in ln]
    assert len(said) == 1, log
    if shut == "file":
        assert f"{w.path}: cannot be read (permission denied; source acct)" in said[0]
        assert f"its current end ({os.path.getsize(w.path)} bytes)" in said[0]
    else:
        assert f"{where}: cannot be listed at the first start (source acct)" in said[0]
    w.write(3)  # lines 22-24: written after the first start (a directory's: before it could be listed)
    tailer, pending = await _resumed(tmp_path, pattern)
    assert pending == ([] if shut == "file" else [("acct", str(where))])
    assert await drain(tailer) == ([22, 23, 24] if shut == "file" else [])
    assert tailer.start_pending == set()
    # started at its end by this (restarted) daemon: the correlator's own process starts there too, not at byte 0
    assert len(tailer.started_at_end) == (0 if shut == "file" else 1)
    w.write(2)
    assert await drain(tailer) == [25, 26]  # line numbers stay true
    await tailer.close()


def test_a_span_from_an_uncounted_position_counts_the_lines_before_it(tmp_path: Path) -> None:
    """With the correlator in its own process, the first start's sink position of such a file is the checkpoint's
    (its end then, lines uncounted): the correlator's re-read counts them too, so its records are named by their
    true lines (the same names the daemon's own reading gives them)."""
    from exporter.linecount import UNCOUNTED
    from exporter.spans import read_span, span_at

    w = AcctWriter(tmp_path)
    w.write(20)
    start = os.path.getsize(w.path)
    w.write(3)
    st = os.stat(w.path)
    span = span_at("f1", "acct", str(w.path), st.st_dev, st.st_ino, (start, UNCOUNTED, ""), st.st_size, None)
    batch, consumed, line_no, columns = read_span(span, 1 << 20)
    assert batch is not None and list(batch.line_numbers) == [22, 23, 24]
    assert consumed == st.st_size - start and line_no == 24
    assert columns is not None and [batch.rows[i][columns.rcpt] for i in range(3)] == [
        r.split(",")[columns.rcpt] for r in w.path.read_text().splitlines()[21:24]]


@pytest.mark.parametrize("started_at_end", [False, True])
def test_the_correlator_process_starts_a_file_started_at_its_end_there_too(tmp_path: Path,
                                                                          started_at_end: bool) -> None:
    """A file of a directory listed at last is followed from its end: with the correlator in its own process, the
    sink position of a new file was byte 0 whatever its checkpoint said, so its timelines took in its history."""
    from exporter.filestream import Checkpoint
    from exporter.state import Commit

    store = StateStore(tmp_path / "watchtower.db", [], sinks_elsewhere=True)
    store._open()
    cp = Checkpoint("f1", "acct", "/x/a.csv", 1, 2, b"", 100, 3, "type,rcpt")
    store._write_checkpoint(Commit(checkpoints=[cp], started_at_end={"f1"} if started_at_end else set()))
    row = store._conn.execute("SELECT sink_offset, sink_line, sink_header FROM wt_checkpoints").fetchone()
    store._close()
    assert row == ((100, 3, "type,rcpt") if started_at_end else (0, 0, ""))


async def test_a_directory_that_stays_unlistable_is_counted_once_and_stays_pending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`logs/*/acct-*.csv` over a `lost+found` no one may list: at a first start at `end` it is pending; each scan
    after looked at every directory again and counted its error again (read_errors_total rose every scan, and the
    alert on it never resolved). It is counted once, looked at alone while it stays pending."""
    from prometheus_client import CollectorRegistry

    from exporter.metrics import SelfMetrics

    logs = tmp_path / "logs"
    (logs / "a").mkdir(parents=True)
    shut = logs / "lost+found"
    shut.mkdir()
    real_scandir = os.scandir
    looked: list[str] = []

    def scandir(path):  # type: ignore[no-untyped-def]
        looked.append(str(path))
        if str(path) == str(shut):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("exporter.tailer.os.scandir", scandir)
    w = AcctWriter(logs / "a")
    w.write(5)
    reg = CollectorRegistry()
    tailer = Tailer([SourceConfig(name="acct", paths=[str(logs / "*" / "acct-*.csv")])],
                    TailConfig(rescan_interval=0, start_position="end"), SelfMetrics(reg), first_run=True)
    assert await drain(tailer) == []
    for _ in range(4):
        looked.clear()
        tailer.scan()
        # glob() itself lists each directory once; nothing else looks at a directory that is not pending
        assert looked.count(str(logs / "a")) == 1 and looked.count(str(shut)) == 2, looked
    assert tailer.start_pending == {("acct", str(shut))}
    assert reg.get_sample_value("watchtower_read_errors_total", {"source": "acct", "reason": "scan"}) == 1
    await tailer.close()
