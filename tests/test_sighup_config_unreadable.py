"""SIGHUP's check of a config file that is gone, or that is a pipe.

Review 2026-12-06: the config file deleted, then SIGHUP: one INFO line, "is no regular file: not checked again",
where a restart would fail (exit 2). A file that cannot be read at the signal is the ERROR a file that no longer
loads is; only a pipe, FIFO or terminal (read once at the start: a read would wait on it) is not checked, at that
signal, said at INFO.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from exporter.daemon import Daemon


def _hup_check(config_path: Path, caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(level, message) of what the daemon's SIGHUP config check logs for `config_path` (its thread joined)."""
    daemon = object.__new__(Daemon)  # the check needs only these of a running daemon
    daemon.config_path, daemon.web_config_path = config_path, None
    daemon._config_check = threading.Lock()
    daemon._config_checking = daemon._config_check_again = False
    with caplog.at_level(logging.INFO, logger="watchtower.daemon"):
        daemon.check_config_file()
        for thread in threading.enumerate():
            if thread.name == "sighup-config-check":
                thread.join(30)
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "watchtower.daemon"]


def test_a_deleted_config_file_is_an_error_at_sighup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "watchtower.yml"
    said = _hup_check(path, caplog)
    assert said == [("ERROR", f"SIGHUP: {path} cannot be read now (No such file or directory): still running as "
                              "started; a restart would fail until it can be")]


def test_a_dangling_link_as_config_is_an_error_at_sighup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "watchtower.yml"
    path.symlink_to(tmp_path / "removed.yml")
    (level, text), = _hup_check(path, caplog)
    assert level == "ERROR" and "cannot be read now" in text and "a restart would fail" in text


def test_a_fifo_as_config_is_not_read_at_sighup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "watchtower.yml"
    os.mkfifo(path)
    said = _hup_check(path, caplog)
    assert said == [("INFO", f"SIGHUP: {path} is a pipe or FIFO, not a regular file (read once, at the start): not "
                             "checked at this signal (only the classification tables are reloaded)")]
