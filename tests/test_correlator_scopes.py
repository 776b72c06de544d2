"""Link scopes: a dated record joins only timelines of its own timeQueued, and a probe seeks only where they are.

Every attempt of one delivery carries the same timeQueued, so the scope of a dated timeline is the
timeQueued of the record that created it. A probe for a dated key therefore seeks only the slices
where timelines of that timeQueued's 10 s bucket were created (`corr_scopes`), plus the undated
slices and the slices of a store written before scopes: its cost no longer grows with the number of
generations a day holds (a full store has hundreds).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from correlator import store
from tests.test_correlator_support import Harness, batch

HEAD = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id\n"
T0 = 1714550400  # 2024-05-01 08:00:00 UTC


def _messages(n: int, step: int = 1) -> str:
    """n delivered messages, the i-th queued at T0 + i * step (one timeline each)."""
    return "\n".join(f"d,{T0 + i * step + 30},{T0 + i * step},n@s.example,u{i}@gmail.com,v1,J{i},<x{i}@s>"
                     for i in range(n))


def _timelines(h: Harness) -> list[tuple]:
    return h.conn.execute("SELECT id, rcpt, attempts FROM corr_timelines ORDER BY id").fetchall()


def test_a_job_sent_again_to_the_same_recipient_the_same_day_is_another_message(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD +
                   f"t,{T0 + 60},{T0},n@s.example,zoe@gmail.com,v1,J5,<m5@s>\n"
                   f"d,{T0 + 120},{T0},n@s.example,zoe@gmail.com,v1,J5,<m5@s>\n"
                   f"d,{T0 + 4 * 3600 + 60},{T0 + 4 * 3600},n@s.example,zoe@gmail.com,v1,J5,<m5@s>\n"))
    # the deferral and the delivery queued at T0 are one message; the resend queued 4 h later is another
    assert _timelines(h) == [(1, "zoe@gmail.com", 2), (2, "zoe@gmail.com", 1)]
    h.sink.ingestor.forget()  # and so after the link cache is gone: the probes answer the same
    h.commit(batch("/l/acct2.csv", HEAD +
                   f"d,{T0 + 4 * 3600 + 90},{T0 + 4 * 3600},n@s.example,zoe@gmail.com,v1,J5,<m5@s>\n"
                   f"d,{T0 + 2 * 3600 + 60},{T0 + 2 * 3600},n@s.example,zoe@gmail.com,v1,J5,<m5@s>\n"))
    assert _timelines(h) == [(1, "zoe@gmail.com", 2), (2, "zoe@gmail.com", 2), (3, "zoe@gmail.com", 1)]
    h.close()


def _seeks(h: Harness, text: str) -> int:
    """Index seeks the probes of one write of `text` cost, the link cache dropped and the key filter off."""
    ing = h.sink.ingestor
    ing.forget()
    ing._filter.valid = False  # noqa: SLF001 - every miss is probed, as with a key filter's false positive
    before = ing.probe_seeks
    h.commit(batch(f"/l/more-{before}.csv", HEAD + text))
    return ing.probe_seeks - before


def test_a_probe_seeks_the_slices_of_its_timequeued_not_every_generation_of_its_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)  # 4 timelines per generation: 300 messages (ids 1-300), 76 slices in one day
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD + _messages(300)))
    slices = {v for (v,) in h.conn.execute("SELECT day FROM corr_days")}
    assert len(slices) == 76 + 1  # and the legacy undated one
    # a retry of message 120 (queued at T0 + 120): its 10 s bucket holds messages 120-129, ids 121-130,
    # in the slices of generations 30, 31 and 32; plus the one undated slice: 4 seeks for each of its 2 keys
    assert _seeks(h, f"t,{T0 + 999},{T0 + 120},n@s.example,u120@gmail.com,v1,J120,<x120@s>") == 2 * 4
    assert _timelines(h)[120] == (121, "u120@gmail.com", 2)
    # a new message queued where no timeline was: the undated slice only
    assert _seeks(h, f"d,{T0 + 999},{T0 + 900},n@s.example,new@gmail.com,v1,J9,<x9@s>") == 2 * 1
    assert len(_timelines(h)) == 301
    h.close()


def test_the_scopes_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD + _messages(300)))
    h.close()
    h = Harness(tmp_path)  # a new process: nothing cached
    assert _seeks(h, f"t,{T0 + 999},{T0 + 120},n@s.example,u120@gmail.com,v1,J120,<x120@s>") == 2 * 4
    assert _timelines(h)[120] == (121, "u120@gmail.com", 2)
    h.close()


def _as_written_before_scopes(db: Path) -> None:
    """Rewrite a store as schema version 1 left it: no scope column, no corr_scopes, no legacy flags."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("""
        BEGIN;
        ALTER TABLE corr_timelines DROP COLUMN scope;
        DROP TABLE corr_scopes;
        CREATE TABLE days_v1 (day INTEGER PRIMARY KEY) WITHOUT ROWID;
        INSERT INTO days_v1 SELECT day FROM corr_days;
        DROP TABLE corr_days;
        ALTER TABLE days_v1 RENAME TO corr_days;
        UPDATE corr_meta SET value = '1' WHERE key = 'schema_version';
        COMMIT;
    """)
    conn.close()


def test_a_store_written_before_scopes_keeps_joining_by_day_and_scopes_what_comes_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD + _messages(40)))
    h.close()
    _as_written_before_scopes(tmp_path / "state.db")
    h = Harness(tmp_path)
    assert h.conn.execute("SELECT value FROM corr_meta WHERE key='schema_version'").fetchone() == ("2",)
    assert h.conn.execute("SELECT count(*) FROM corr_timelines WHERE scope IS NOT NULL").fetchone() == (0,)
    # an old timeline is still joined by any record of its day (the rule it was written under), probed
    # in every slice of the day: 11 legacy ones (ids 1-40, generations 0-10) and the undated one, for each key
    assert _seeks(h, f"d,{T0 + 7200},{T0 + 3600},n@s.example,u7@gmail.com,v1,J7,<x7@s>") == 2 * 12
    # a new timeline is scoped: the same job resent later that day is another message
    h.commit(batch("/l/new.csv", HEAD +
                   f"d,{T0 + 100},{T0 + 100},n@s.example,amy@gmail.com,v1,J100,<y@s>\n"
                   f"d,{T0 + 900},{T0 + 800},n@s.example,amy@gmail.com,v1,J100,<y@s>\n"))
    rows = _timelines(h)
    assert rows[7] == (8, "u7@gmail.com", 2)
    assert rows[40:] == [(41, "amy@gmail.com", 1), (42, "amy@gmail.com", 1)]
    h.close()


def test_pruning_drops_the_scopes_of_the_slices_it_empties(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    day = 86400
    h.commit(batch("/l/a.csv", HEAD + _messages(12)))
    h.commit(batch("/l/b.csv", HEAD + f"d,{T0 + 5 * day},{T0 + 5 * day},n@s.example,late@gmail.com,v1,J,<z@s>\n"))
    # bucket T0: ids 1-10 in generations 0-2; bucket T0 + 10: ids 11-12 in generations 2-3; the late one
    assert h.conn.execute("SELECT count(*) FROM corr_scopes").fetchone() == (3 + 2 + 1,)
    store.prune(h.conn, T0 + 3 * day, 10**12, budget_s=5)
    kept = h.conn.execute("SELECT bucket, slice FROM corr_scopes").fetchall()
    assert kept == [((T0 + 5 * day) // store.SCOPE_BUCKET, h.conn.execute("SELECT qday FROM corr_timelines")
                     .fetchone()[0])]
    h.close()
