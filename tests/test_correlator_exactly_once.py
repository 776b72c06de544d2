"""Exactly-once: rows written inside the caller's transaction survive or vanish with it, and replays are no-ops."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from exporter.records import RecordBatch
from tests.test_correlator_support import ACCT_0, CORPUS, DIAG_0, Harness, brief, generated

CHUNKS = generated(300)
TOTAL = sum(len(b) for chunk in CHUNKS for b in chunk)


def _stored(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM corr_events UNION ALL SELECT id FROM corr_queue_events")]


def _checkpoints(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT path, line FROM checkpoints"))


def _after(b: RecordBatch, done: dict[str, int]) -> RecordBatch | None:
    """The part of a batch past the committed checkpoint of its file (what a restarted tailer re-reads)."""
    keep = [i for i, line in enumerate(b.line_numbers) if line > done.get(b.path, 0)]
    if not keep:
        return None
    return RecordBatch(b.source, b.path, b.columns, [b.rows[i] for i in keep], [b.line_numbers[i] for i in keep])


def _replay(h: Harness, chunks: list[list[RecordBatch]]) -> None:
    done = _checkpoints(h.conn)
    for chunk in chunks:
        rest = [x for x in (_after(b, done) for b in chunk) if x is not None]
        if rest:
            h.commit(*rest)


def _assert_exactly_once(h: Harness) -> None:
    ids = _stored(h.conn)
    assert len(ids) == TOTAL
    assert len(set(ids)) == TOTAL
    orphans = h.conn.execute("SELECT count(*) FROM corr_events WHERE tl NOT IN (SELECT id FROM corr_timelines)")
    assert orphans.fetchone()[0] == 0


def _all_timelines(h: Harness) -> dict[str, list]:
    with h.reader() as r:
        ids = [x[0] for x in r.conn.execute("SELECT id FROM corr_timelines")]
        out = {}
        for tl in ids:
            item = r.by_id(tl)
            assert item is not None
            out[item["rcpt"] or f"?{item['message_id']}"] = [item["outcome"], item["attempts"], brief(item["events"])]
    return out


def _reference(tmp_path: Path) -> dict[str, list]:
    ref = Harness(tmp_path / "ref")
    for chunk in CHUNKS:
        ref.commit(*chunk)
    _assert_exactly_once(ref)
    out = _all_timelines(ref)
    flows = ref.conn.execute("SELECT * FROM corr_flows ORDER BY 1, 2, 3, 4").fetchall()
    ref.close()
    return {"timelines": out, "flows": flows}


def test_rollback_of_an_open_transaction_then_replay_from_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    expected = _reference(tmp_path)
    h = Harness(tmp_path)
    half = len(CHUNKS) // 2
    for chunk in CHUNKS[:half]:
        h.commit(*chunk)
    # the writer dies between write() and COMMIT: SQLite rolls the transaction back
    for b in CHUNKS[half]:
        h.sink.observe(b)
    h.conn.execute("BEGIN IMMEDIATE")
    h.sink.write(h.conn, CHUNKS[half])
    h.conn.execute("ROLLBACK")
    # the same sink keeps going (its caches named rows that no longer exist): replay from the checkpoints
    _replay(h, CHUNKS[half:])
    _assert_exactly_once(h)
    assert _all_timelines(h) == expected["timelines"]
    assert h.conn.execute("SELECT * FROM corr_flows ORDER BY 1, 2, 3, 4").fetchall() == expected["flows"]
    h.close()


CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from tests.test_correlator_exactly_once import CHUNKS
    from tests.test_correlator_support import Harness
    h = Harness(Path(sys.argv[1]))
    stop = int(sys.argv[2])
    for n, chunk in enumerate(CHUNKS):
        if n == stop:
            for b in chunk:
                h.sink.observe(b)
            h.conn.execute("BEGIN IMMEDIATE")
            h.sink.write(h.conn, chunk)
            os.kill(os.getpid(), signal.SIGKILL)
        h.commit(*chunk)
""")


def test_kill_9_between_write_and_commit_then_restart_and_replay(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    expected = _reference(tmp_path)
    stop = len(CHUNKS) * 2 // 3
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(stop)], cwd=repo, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    h = Harness(tmp_path)  # a new process: fresh sink, same DB
    assert len(_stored(h.conn)) == sum(len(b) for chunk in CHUNKS[:stop] for b in chunk)
    _replay(h, CHUNKS)
    _assert_exactly_once(h)
    assert _all_timelines(h) == expected["timelines"]
    h.close()


def test_replaying_committed_rows_changes_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    for b in CORPUS:
        h.commit(b)
    before = (h.conn.execute("SELECT * FROM corr_timelines ORDER BY id").fetchall(),
              h.conn.execute("SELECT count(*) FROM corr_events").fetchone(),
              h.conn.execute("SELECT * FROM corr_flows ORDER BY 1, 2, 3, 4").fetchall())
    h.commit(ACCT_0, DIAG_0)  # a checkpoint that lagged: the same lines again
    h.sink.ingestor.forget()
    h.sink.ingestor._files.clear()  # as after a restart
    h.commit(DIAG_0)
    after = (h.conn.execute("SELECT * FROM corr_timelines ORDER BY id").fetchall(),
             h.conn.execute("SELECT count(*) FROM corr_events").fetchone(),
             h.conn.execute("SELECT * FROM corr_flows ORDER BY 1, 2, 3, 4").fetchall())
    assert after == before
    h.close()


def test_event_key_is_file_id_and_line(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    b1 = RecordBatch("s", "/l/acct.csv", ACCT_0.columns, ACCT_0.rows, ACCT_0.line_numbers, file_id="F1")
    h.commit(b1)
    # same file renamed (move-to): same id, lines already stored -> skipped
    h.commit(RecordBatch("s", "/archive/acct.csv", ACCT_0.columns, ACCT_0.rows, ACCT_0.line_numbers, file_id="F1"))
    assert len(_stored(h.conn)) == 2
    # a new file reusing the path: another id, so its line 2 is a new record
    h.commit(RecordBatch("s", "/l/acct.csv", ACCT_0.columns, ACCT_0.rows[:1], [2], file_id="F2"))
    assert len(_stored(h.conn)) == 3
    h.close()


def test_a_backfill_without_probes_stores_what_probing_stores(tmp_path: Path) -> None:
    """Into an empty store the link cache is complete and probes are skipped; the result must not change."""
    stores = []
    counts: list[int] = []
    for name, complete in (("skip", True), ("probe", False)):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name)
        if not complete:
            h.sink.ingestor._synced = True  # never enter the complete mode: probe every miss
        probes: list[int] = []
        real = h.sink.ingestor._probe
        h.sink.ingestor._probe = lambda conn, column, wanted, real=real, probes=probes: (  # type: ignore[method-assign]
            probes.append(len(wanted)), real(conn, column, wanted))
        for b in CORPUS:
            h.commit(b)
        for chunk in CHUNKS:
            h.commit(*chunk)
        stores.append((_all_timelines(h), h.conn.execute("SELECT * FROM corr_flows ORDER BY 1, 2, 3, 4").fetchall(),
                       h.conn.execute("SELECT id, tl FROM corr_events ORDER BY id").fetchall()))
        counts.append(sum(probes))
        h.close()
    assert stores[0] == stores[1]
    assert counts[1] > 0 and counts[0] < counts[1] / 2, counts
