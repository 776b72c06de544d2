"""The correlator process says a damaged store is damaged: no retry helps, see the runbook; once, not per retry.

With random bytes over a middle page of watchtower.db, the API answered the 503 `correlator store damaged ... see
docs/runbooks.md`, while the correlator process logged `write ... failed: DatabaseError: database disk image is
malformed; retried until it succeeds` and retried forever: a promise no retry keeps (review).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from correlator import store
from exporter.config import load_config
from tests.conftest import write_config


def _error(cls: type[sqlite3.Error], message: str, code: int) -> sqlite3.Error:
    exc = cls(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


MALFORMED = ("DatabaseError", "database disk image is malformed", sqlite3.SQLITE_CORRUPT)
INDEX = ("DatabaseError", "database disk image is malformed", 779)  # SQLITE_CORRUPT_INDEX: an extended code
NOT_A_DB = ("DatabaseError", "file is not a database", sqlite3.SQLITE_NOTADB)
FULL = ("OperationalError", "database or disk is full", sqlite3.SQLITE_FULL)


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
         outcomes: list[tuple[str, str, int] | None]) -> tuple[Path, list[tuple[str, str]]]:
    """The follower's loop with each write failing as `outcomes` says (None: it succeeds); its write lines."""
    from exporter import follower as follower_mod
    from exporter.follower import Follower
    from exporter.state import private_dir

    cfg = load_config(write_config(tmp_path, correlator={"enabled": True}))
    stop: list[bool] = []

    def write(*_a: object, **_k: object) -> None:
        outcome = outcomes.pop(0)
        if not outcomes:
            stop.append(True)
        if outcome is not None:
            raise _error(getattr(sqlite3, outcome[0]), outcome[1], outcome[2])

    monkeypatch.setattr("exporter.writer.write_slices", write)
    monkeypatch.setattr(follower_mod, "FAILURE_LOG_EVERY", 0.0)  # a reminder at every retry, were it not damage
    monkeypatch.setattr(follower_mod.time, "sleep", lambda _s: None)
    private_dir(Path(cfg.state_dir))
    with caplog.at_level(logging.INFO, logger="watchtower"):
        Follower(cfg, os.getppid(), stop).run()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "correlator process: write" in r.getMessage()]
    return Path(cfg.state_dir) / "watchtower.db", said


def _damaged(db: Path, text: str) -> tuple[str, str]:
    return ("ERROR", f"correlator process: write to {db} failed: {text}; the database file is damaged (changed "
                     "outside the daemon, or a failing disk): what it held may be lost and retries cannot mend it; "
                     "stop the daemon and see docs/runbooks.md#correlator-store-damaged (said once: its writes are "
                     "retried meanwhile)")


@pytest.mark.parametrize("kind", [MALFORMED, INDEX, NOT_A_DB], ids=["malformed", "corrupt-index", "not-a-db"])
def test_a_damaged_store_is_said_damaged_once_not_retried_until_it_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        kind: tuple[str, str, int]) -> None:
    db, said = _run(tmp_path, monkeypatch, caplog, [kind] * 5 + [None])
    assert said == [_damaged(db, f"{kind[0]}: {kind[1]}"),
                    ("WARNING", f"correlator process: writes to {db} resumed after 5 failed attempts")]
    assert not any("retried until it succeeds" in text for _level, text in said)


def test_damage_after_another_failure_is_said_when_it_is_met(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    db, said = _run(tmp_path, monkeypatch, caplog, [FULL, MALFORMED, MALFORMED, MALFORMED])
    assert said == [
        ("ERROR", f"correlator process: write to {db} failed: OperationalError: database or disk is full; retried "
                  "until it succeeds"),
        _damaged(db, "DatabaseError: database disk image is malformed"),
    ]


def test_as_damage_reads_extended_codes_of_damage() -> None:
    path = Path("/s/watchtower.db")
    assert store.as_damage(path, _error(sqlite3.DatabaseError, "database disk image is malformed", 779)) is not None
    assert store.as_damage(path, _error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR)) is None
    assert store.as_damage(path, _error(sqlite3.OperationalError, "locked", 517)) is None  # SQLITE_BUSY_SNAPSHOT
