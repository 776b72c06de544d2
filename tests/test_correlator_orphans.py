"""A file whose rows were stored under an id no checkpoint kept (kill -9 between the row slices and the
checkpoint) is read again under a new id at the next start: its lines are not stored twice."""

from __future__ import annotations

from pathlib import Path

from correlator import CorrelatorSink
from tests.test_correlator_support import NOW, Harness, batch, class_of, isp_of

HEADER = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId\n"


def _rows(n: int, vmta: str = "v1", start: int = 0) -> str:
    return HEADER + "\n".join(
        f"d,2024-05-01 10:{i % 60:02d}:00+0000,2024-05-01 10:00:00+0000,s@shop.example,u{start + i}@gmail.com,"
        f"2.0.0,{vmta},J{start + i}" for i in range(n))


def _restart(h: Harness) -> None:
    """A new process on the same state DB (fresh caches; the writer connection is reused)."""
    h.sink.close()
    h.sink = CorrelatorSink(h.config, h.db, isp_of=isp_of, class_of=class_of, clock=lambda: NOW)
    h.sink.setup(h.conn)


def _events(h: Harness) -> int:
    return h.conn.execute("SELECT count(*) FROM corr_events").fetchone()[0]


def _state_table(h: Harness, *checkpointed: str) -> None:
    h.conn.execute("CREATE TABLE IF NOT EXISTS wt_checkpoints (file_id TEXT PRIMARY KEY, path TEXT)")
    h.conn.executemany("INSERT OR IGNORE INTO wt_checkpoints VALUES (?, ?)", [(k, "/l/acct.csv") for k in checkpointed])


def test_the_same_file_under_a_new_id_is_not_stored_twice(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _state_table(h)
    h.commit(batch("/l/acct.csv", _rows(30), file_id="first-id"))  # rows stored, then killed: no checkpoint
    _restart(h)
    h.commit(batch("/l/acct.csv", _rows(30) + "\n" + _rows(5, start=30).split("\n", 1)[1], file_id="second-id"))
    assert _events(h) == 35
    assert h.conn.execute("SELECT key FROM corr_files").fetchall() == [("second-id",)]
    h.close()


def test_another_file_at_that_path_or_a_checkpointed_id_is_its_own_file(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _state_table(h, "kept-id")
    h.commit(batch("/l/acct.csv", _rows(10), file_id="orphan-id"))
    h.commit(batch("/l/acct.csv", _rows(10, start=100), file_id="kept-id"))
    _restart(h)
    h.commit(batch("/l/acct.csv", _rows(10, vmta="v2", start=200), file_id="new-id"))  # rotated while down
    assert _events(h) == 30
    assert sorted(r[0] for r in h.conn.execute("SELECT key FROM corr_files")) == ["kept-id", "new-id", "orphan-id"]
    h.close()


def test_a_key_written_by_this_process_is_never_adopted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    _state_table(h)
    h.commit(batch("/l/acct.csv", _rows(10), file_id="a"))  # not checkpointed yet, but ours
    h.commit(batch("/l/acct.csv", _rows(10), file_id="b"))  # the same rows under another live id
    assert _events(h) == 20
    h.close()
