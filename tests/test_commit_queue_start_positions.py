"""What a queued checkpoint carries to the state database besides the offsets (the tailing review of 2026-12-06).

`CommitQueue.put` (exporter/writer.py) built the checkpoint it queues from the daemon's commit without
`started_at_end` and `start_pending`: the correlator's own process then read from byte 0 every file id the tailer
took up past its start (an older copy restored over a file: 160 events stored for 100 records; a directory a first
start at `end` could list only later), and the pending directories were never saved.
"""

from __future__ import annotations

from pathlib import Path

from exporter.state import Commit, StateStore
from exporter.writer import CommitQueue


async def test_a_queued_checkpoint_keeps_where_new_files_start_and_the_pending_directories(tmp_path: Path) -> None:
    queue = CommitQueue(StateStore(tmp_path / "watchtower.db", []))
    queue.put(Commit(started_at_end={"f1"}, start_pending=[("acct", "/var/log/pmta")]))
    queue.put(Commit(started_at_end={"f2"}))
    assert queue.checkpoint is not None
    assert queue.checkpoint.started_at_end == {"f1", "f2"}
    assert queue.checkpoint.start_pending == [("acct", "/var/log/pmta")]
