"""The recipient-key interlock of the correlator store holds through every start (review 4, defect A).

A store keyed with an HMAC key refused another key, but one start with `hash_recipients: false` passed
check-config, re-marked the store `plain` and wrote clear-text recipients beside the hashed ones; after it another
key passed check-config and `run` too: the store held rows of the first key (found by nobody) and clear-text rows.
Now a start that changes how the recipients of a store holding timelines are keyed is refused (check-config and
`run`, exit 2, one line), except turning hashing on over a plain store, which docs/security.md describes (older
timelines keep their address and are served redacted). A store holding no timeline takes any keying.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, AcctWriter


def _config(tmp_path: Path, name: str = "w.yml", **correlator: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
        "state_dir": str(tmp_path / "state"), "listen": "127.0.0.1:0",
        "tail": {"start_position": "beginning", "poll_interval": 0.05, "rescan_interval": 0.05,
                 "checkpoint_interval": 0.1},
        "correlator": {"enabled": True, "worker": "thread", **correlator}}))
    return path


def _watchtower(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _run(cfg: Path, log: Path, until: Callable[[], bool] = lambda: True) -> int | None:
    """`watchtower run`: its exit code when it ends by itself; None when it started (listening, and `until` held
    within 60 s), stopped then with SIGTERM (exit 0)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(cfg)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            rc = proc.poll()
            if rc is not None:
                return rc
            if "listening on" in log.read_text(errors="replace") and until():
                break
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "watchtower.db"


def _rows(tmp_path: Path) -> tuple[int, int]:
    """(timelines stored, of them with the recipient in clear)."""
    try:
        conn = sqlite3.connect(f"file:{_db(tmp_path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0, 0
    try:
        return conn.execute("SELECT count(*), count(*) FILTER (WHERE rcpt NOT LIKE 'hmac-sha256:%') "
                            "FROM corr_timelines").fetchone()
    except sqlite3.Error:
        return 0, 0
    finally:
        conn.close()


def _mark(tmp_path: Path) -> str:
    conn = sqlite3.connect(f"file:{_db(tmp_path)}?mode=ro", uri=True)
    try:
        return str(conn.execute("SELECT value FROM corr_meta WHERE key = 'rcpt_mode'").fetchone()[0])
    finally:
        conn.close()


def _store(tmp_path: Path, cfg: Path, writer: AcctWriter, n: int) -> None:
    """Write `n` more records and run `cfg` until the store holds a timeline for every record written."""
    writer.write(n)
    assert _run(cfg, tmp_path / "store.log", until=lambda: _rows(tmp_path)[0] >= writer.n) is None


def _problem_lines(stderr: str) -> list[str]:
    return [ln.strip() for ln in stderr.splitlines() if ln.startswith("  ")]


def _hashed_store(tmp_path: Path) -> tuple[AcctWriter, str]:
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    _store(tmp_path, _config(tmp_path, "hashed.yml", hash_recipients=True), writer, 20)
    mark = _mark(tmp_path)
    assert mark.startswith("hmac:") and _rows(tmp_path) == (20, 0)
    return writer, mark


def _refused_for_turning_hashing_off(text: str, tmp_path: Path, mark: str) -> str:
    """The one refusal line of a start with hashing off over a hashed store; what it says checked."""
    (line,) = [ln for ln in text.splitlines() if "correlator.hash_recipients" in ln]
    assert f"correlator store {_db(tmp_path)}" in line and mark in line, line
    assert "hash_recipients: true" in line and "state_dir" in line, line  # the way back, and the way out
    return line


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_turning_hashing_off_over_a_hashed_store_is_refused(tmp_path: Path, command: str) -> None:
    _writer, mark = _hashed_store(tmp_path)
    off = _config(tmp_path, "off.yml", hash_recipients=False)
    if command == "check-config":
        proc = _watchtower("check-config", str(off))
        assert proc.returncode == 2, proc.stderr
        (line,) = _problem_lines(proc.stderr)
        assert line.startswith("correlator.hash_recipients: "), line
        _refused_for_turning_hashing_off(line, tmp_path, mark)
    else:
        log = tmp_path / "off.log"
        assert _run(off, log) == 2, log.read_text()[-3000:]
        _refused_for_turning_hashing_off(log.read_text(), tmp_path, mark)
        assert "Traceback" not in log.read_text()
    assert _mark(tmp_path) == mark and _rows(tmp_path) == (20, 0)  # the store as it was


def test_another_key_is_refused_whatever_start_came_between(tmp_path: Path) -> None:
    """The review's sequence: a hashed store, a start with hashing off (which re-marked it `plain`), then a start
    with another key file, which check-config and `run` then took. The start with hashing off is refused, so the
    mark keeps the first key, and the other key is refused by both, naming the key file."""
    writer, mark = _hashed_store(tmp_path)
    writer.write(10)  # read by whichever start is let in next
    log = tmp_path / "off.log"
    assert _run(_config(tmp_path, "off.yml", hash_recipients=False), log) == 2, log.read_text()[-3000:]
    assert _mark(tmp_path) == mark and _rows(tmp_path) == (20, 0)

    other_key = tmp_path / "other.key"
    other_key.write_text("0123456789abcdef" * 4 + "\n")
    other_key.chmod(0o600)
    other = _config(tmp_path, "other.yml", hash_recipients=True, hmac_key_file=str(other_key))
    proc = _watchtower("check-config", str(other))
    assert proc.returncode == 2, proc.stderr
    (line,) = _problem_lines(proc.stderr)
    assert line.startswith(f"correlator.hmac_key_file: {other_key}: the HMAC key file holds another key") \
        and mark in line, line
    assert _run(other, tmp_path / "other.log") == 2
    assert _mark(tmp_path) == mark and _rows(tmp_path) == (20, 0)

    _store(tmp_path, _config(tmp_path, "hashed.yml", hash_recipients=True), writer, 0)  # the first key: let in,
    # and the 10 records written meanwhile are stored hashed
    assert _rows(tmp_path) == (30, 0) and _mark(tmp_path) == mark


def test_hashing_turned_on_over_a_plain_store_is_let_in_and_not_turned_off_again(tmp_path: Path) -> None:
    """docs/security.md: turning hash_recipients on does not rewrite what is stored, the older timelines are served
    redacted and no longer found by `rcpt=` (a WARNING at start). Let in, as documented; from then on the store
    holds hashed recipients, and hashing off is refused as for a store hashed from the start."""
    (tmp_path / "logs").mkdir()
    writer = AcctWriter(tmp_path / "logs")
    _store(tmp_path, _config(tmp_path, "plain.yml", hash_recipients=False), writer, 10)
    assert _mark(tmp_path) == "plain" and _rows(tmp_path) == (10, 10)

    on = _config(tmp_path, "on.yml", hash_recipients=True)
    proc = _watchtower("check-config", str(on))
    assert proc.returncode == 0, proc.stderr
    _store(tmp_path, on, writer, 10)
    said = (tmp_path / "store.log").read_text()
    assert "WARNING" in said and "stored as plain but are now keyed as hmac:" in said, said[-3000:]
    mark = _mark(tmp_path)
    assert mark.startswith("hmac:") and _rows(tmp_path) == (20, 10)

    proc = _watchtower("check-config", str(_config(tmp_path, "off.yml", hash_recipients=False)))
    assert proc.returncode == 2, proc.stderr
    (line,) = _problem_lines(proc.stderr)
    _refused_for_turning_hashing_off(line, tmp_path, mark)


def test_a_store_without_timelines_takes_any_keying(tmp_path: Path) -> None:
    """(Kept as it was.) Nothing keyed yet: hashing on, then off, is no change of what is stored. Re-marked."""
    (tmp_path / "logs").mkdir()
    assert _run(_config(tmp_path, "hashed.yml", hash_recipients=True), tmp_path / "a.log") is None
    assert _mark(tmp_path).startswith("hmac:") and _rows(tmp_path) == (0, 0)
    off = _config(tmp_path, "off.yml", hash_recipients=False)
    proc = _watchtower("check-config", str(off))
    assert proc.returncode == 0, proc.stderr
    assert _run(off, tmp_path / "b.log") is None
    assert _mark(tmp_path) == "plain"


def test_the_store_refuses_hashing_off_when_embedded_too(tmp_path: Path) -> None:
    """correlator.store.migrate is the backstop of every start (the daemon's, the correlator process's, an
    embedding's): it refuses hashing off over hashed timelines as check-config does, the mark unchanged."""
    from exporter.config import CorrelatorConfig
    from exporter.state import StateRefused
    from tests.test_correlator_support import ACCT_0, Harness

    key = tmp_path / "hmac.key"
    h = Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=key))
    h.commit(ACCT_0)
    mark = h.sink.hasher.fingerprint()
    h.close()
    with pytest.raises(StateRefused) as refused:
        Harness(tmp_path, CorrelatorConfig())
    said = str(refused.value)
    assert said.startswith("correlator.hash_recipients: ") and mark in said and str(tmp_path / "state.db") in said
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("SELECT value FROM corr_meta WHERE key='rcpt_mode'").fetchone()[0] == mark
    conn.close()
    Harness(tmp_path, CorrelatorConfig(hash_recipients=True, hmac_key_file=key)).close()  # its key: let in
