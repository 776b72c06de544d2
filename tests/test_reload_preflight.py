"""SIGHUP's check of the config file runs the checks a start runs (review 4, defect B).

The re-check only loaded the file: a `listen` host that no longer resolves, or a TLS certificate file that does
not exist, was one WARNING ("take effect at the next restart"), and the restart then exited 2, which the shipped
unit does not retry. Now such a file is one ERROR naming each problem, "a restart would exit 2", in the words of
`check-config`; the daemon goes on as started. What only this running daemon holds (its state_dir lock, its listen
port, its open store) is no problem.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.client import HTTP
from tests.conftest import REPO, AcctWriter


def _port() -> int:
    """A loopback port free now, in 38000-39999."""
    for _ in range(500):
        port = random.randrange(38000, 40000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 38000-39999")


class Daemon:
    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        (tmp_path / "logs").mkdir(exist_ok=True)
        self.writer = AcctWriter(tmp_path / "logs")
        self.port = _port()
        self.data: dict[str, Any] = {
            "sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
            "state_dir": str(tmp_path / "state"), "listen": f"127.0.0.1:{self.port}",
            "tail": {"start_position": "beginning", "poll_interval": 0.05, "rescan_interval": 0.05,
                     "checkpoint_interval": 0.1},
            "correlator": {"enabled": False}, **overrides}
        self.config = tmp_path / "watchtower.yml"
        self.config.write_text(yaml.safe_dump(self.data))
        self.log = tmp_path / "run.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(self.config)],
                                         cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_for("listening on")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, said: str, count: int = 1, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.text().count(said) < count:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"never said {said!r}: {self.text()[-3000:]}"
            time.sleep(0.05)

    def edit(self, **changes: Any) -> None:
        self.config.write_text(yaml.safe_dump({**self.data, **changes}))

    def hup(self) -> None:
        """SIGHUP, then wait until the tables are reloaded and the config check has had time to say its word."""
        before = self.text().count("classification tables reloaded")
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for("classification tables reloaded", before + 1)

    def sighup_lines(self) -> list[str]:
        return [ln for ln in self.text().splitlines() if "SIGHUP" in ln]

    def answers(self) -> bool:
        return HTTP.get(f"http://127.0.0.1:{self.port}/healthz", timeout=10).status_code in (200, 503)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _would_exit_2(daemon: Daemon, count: int = 1) -> str:
    """The ERROR line of the last SIGHUP's config check (waited for)."""
    daemon.wait_for("a restart would exit 2", count, seconds=30)
    lines = [ln for ln in daemon.sighup_lines() if "a restart would exit 2" in ln]
    assert len(lines) == count and " ERROR " in lines[-1] and str(daemon.config) in lines[-1], lines
    return lines[-1]


@pytest.mark.parametrize("edit", ["listen", "tls"])
def test_a_file_a_restart_would_refuse_is_an_error_at_sighup(tmp_path: Path, edit: str) -> None:
    daemon = Daemon(tmp_path)
    try:
        if edit == "listen":
            daemon.edit(listen=f"nosuchhost.invalid:{daemon.port}")
            want = "listen: host 'nosuchhost.invalid' does not resolve"
        else:
            missing = tmp_path / "nosuch.crt"
            daemon.edit(web={"tls_cert_file": str(missing), "tls_key_file": str(tmp_path / "nosuch.key")})
            want = f"web.tls_cert_file: {missing} does not exist"
        daemon.proc.send_signal(signal.SIGHUP)
        line = _would_exit_2(daemon)
        assert want in line, line
        proc = _check_config(daemon.config)  # what the ERROR foretells: a start refuses the file
        assert proc.returncode == 2 and want in proc.stderr, proc.stderr
        assert not [ln for ln in daemon.sighup_lines() if "take effect at the next restart" in ln]
        assert daemon.proc.poll() is None and daemon.answers()  # running as started, on its port

        daemon.edit()  # the file as started: nothing to say, though this daemon holds the port and the lock
        daemon.hup()
        time.sleep(1.0)
        assert len([ln for ln in daemon.sighup_lines() if " ERROR " in ln]) == 1, daemon.sighup_lines()
        assert daemon.stop() == 0
        assert "Traceback" not in daemon.text()
    finally:
        daemon.kill()


def test_the_file_as_started_is_no_problem_for_the_daemon_running_it(tmp_path: Path) -> None:
    """(Kept as it was.) Its listen port in use, its state_dir locked, its store open and written, its HMAC key,
    the correlator's own process: all this daemon's, none a problem of the file."""
    daemon = Daemon(tmp_path, correlator={"enabled": True, "hash_recipients": True})
    try:
        daemon.writer.write(20)
        daemon.hup()
        daemon.hup()
        time.sleep(1.0)
        errors = [ln for ln in daemon.text().splitlines() if " ERROR " in ln or ("WARNING" in ln and "SIGHUP" in ln)]
        assert not errors, errors
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_hashing_turned_off_over_the_running_hashed_store_is_an_error_at_sighup(tmp_path: Path) -> None:
    """A restart with hash_recipients off would be refused over a store of hashed timelines (defect A): so said at
    SIGHUP, naming the key."""
    daemon = Daemon(tmp_path, correlator={"enabled": True, "worker": "thread", "hash_recipients": True})
    try:
        daemon.writer.write(20)
        db = tmp_path / "state" / "watchtower.db"
        deadline = time.monotonic() + 60
        while True:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                stored = conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            finally:
                conn.close()
            if stored >= 20:
                break
            assert time.monotonic() < deadline, daemon.text()[-3000:]
            time.sleep(0.1)
        daemon.edit(correlator={"enabled": True, "worker": "thread", "hash_recipients": False})
        daemon.proc.send_signal(signal.SIGHUP)
        line = _would_exit_2(daemon)
        assert "correlator.hash_recipients: " in line, line
        assert daemon.answers() and daemon.stop() == 0
    finally:
        daemon.kill()


def _posix_locks(pid: int, path: Path) -> list[str]:
    """The POSIX locks process `pid` holds on `path` (Linux's /proc/locks)."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    locks = [ln.split()[1:] for ln in Path("/proc/locks").read_text().splitlines() if "->" not in ln]
    return sorted(" ".join(lock) for lock in locks if lock[0] == "POSIX" and lock[3:5] == [str(pid), inode])


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="no /proc/locks")
def test_the_check_keeps_the_daemons_locks_on_its_database(tmp_path: Path) -> None:
    """The start's check reads the state database's first bytes with open() and close(): in the daemon, that close
    dropped every POSIX lock the process held on the file, SQLite's shared lock included (found writing this fix),
    which kept the correlator process's last close from checkpointing and deleting the -wal and -shm in use. The
    check at SIGHUP reads the daemon's own database through SQLite only."""
    daemon = Daemon(tmp_path, correlator={"enabled": True, "hash_recipients": True})
    try:
        db = tmp_path / "state" / "watchtower.db"
        held = _posix_locks(daemon.proc.pid, db)
        assert held, Path("/proc/locks").read_text()
        daemon.hup()
        time.sleep(1.0)  # the check, in its thread, is done by then
        assert _posix_locks(daemon.proc.pid, db) == held
        assert not [ln for ln in daemon.sighup_lines() if " ERROR " in ln]
        assert daemon.stop() == 0
    finally:
        daemon.kill()
