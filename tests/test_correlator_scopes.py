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

from correlator import genfilter, scopes, store
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
    """Rewrite a store as schema version 1 left it: no scope or t_attempt column, no corr_scopes, no legacy flags."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("""
        BEGIN;
        ALTER TABLE corr_timelines DROP COLUMN scope;
        ALTER TABLE corr_timelines DROP COLUMN t_attempt;
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
    assert h.conn.execute("SELECT value FROM corr_meta WHERE key='schema_version'").fetchone() == (str(store.SCHEMA_VERSION),)
    assert h.conn.execute("SELECT count(*) FROM corr_timelines WHERE scope IS NOT NULL").fetchone() == (0,)
    # an old timeline is still joined by any record of its day (the rule it was written under), probed in the
    # slices of the day, 11 legacy ones (ids 1-40, generations 0-10), and the undated one: for each key, the
    # undated and the two newest (3), then 8 older ones newest first, which reach its own (id 8, generation 2)
    assert _seeks(h, f"d,{T0 + 7200},{T0 + 3600},n@s.example,u7@gmail.com,v1,J7,<x7@s>") == 2 * (3 + 8)
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
    day = 86400
    h = Harness(tmp_path, clock=lambda: T0 + 5 * day)  # no record ahead of the clock (those are read as logged now)
    h.commit(batch("/l/a.csv", HEAD + _messages(12)))
    h.commit(batch("/l/b.csv", HEAD + f"d,{T0 + 5 * day},{T0 + 5 * day},n@s.example,late@gmail.com,v1,J,<z@s>\n"))
    # bucket T0: ids 1-10 in generations 0-2; bucket T0 + 10: ids 11-12 in generations 2-3; the late one
    assert h.conn.execute("SELECT count(*) FROM corr_scopes").fetchone() == (3 + 2 + 1,)
    store.prune(h.conn, T0 + 3 * day, 10**12, budget_s=5)
    kept = h.conn.execute("SELECT bucket, slice FROM corr_scopes").fetchall()
    assert kept == [((T0 + 5 * day) // store.SCOPE_BUCKET, h.conn.execute("SELECT qday FROM corr_timelines")
                     .fetchone()[0])]
    h.close()


def _with_orphan_reports(n: int) -> tuple[str, str]:
    """n dated messages (acct), and an FBL report after every 10th naming a message never seen (an undated timeline)."""
    acct = _messages(n)
    fbl = "type,timeLogged,orig,rcpt,jobId,header_Message-Id\n" + "\n".join(
        f"f,{T0 + i},n@s.example,gone{i}@gmail.com,G{i},<g{i}@s>" for i in range(0, n, 10))
    return acct, fbl


def test_undated_timelines_fill_slices_of_their_own_so_probes_seek_few(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    acct, fbl = _with_orphan_reports(300)
    for i in range(0, 300, 10):  # in file order, a report between every 10 messages: they spread over the ids
        head, *reports = fbl.splitlines()
        h.commit(batch("/l/acct.csv", HEAD + "\n".join(acct.splitlines()[i:i + 10]), first_line=2 + i),
                 batch("/l/fbl.csv", head + "\n" + reports[i // 10], first_line=2 + i // 10))
    undated = [v for (v,) in h.conn.execute("SELECT day FROM corr_days") if store.day_of_slice(v) == store.NO_DAY]
    assert h.conn.execute("SELECT count(*) FROM corr_timelines WHERE scope IS NULL").fetchone() == (30,)
    # 30 undated timelines, 4 per slice: 8 slices (and the legacy -1), not one per generation they were created in
    assert len(undated) == 8 + 1
    # message 120 is id 121 + 12 reports before it = 133; its bucket (messages 120-129, ids 133-142 and the
    # report at 143? no: the report after 120 is created after those 10) spans generations 33-35: 3 slices
    bucket = [v for (v,) in h.conn.execute(
        "SELECT DISTINCT qday FROM corr_timelines WHERE scope >= ? AND scope < ?", (T0 + 120, T0 + 130))]
    assert len(bucket) == 3
    assert _seeks(h, f"t,{T0 + 999},{T0 + 120},n@s.example,u120@gmail.com,v1,J120,<x120@s>") == 2 * (3 + 9)
    h.close()


@pytest.mark.parametrize("cached", [True, False], ids=["link-cache", "probe"])
def test_the_newest_timeline_of_a_key_wins_when_an_older_undated_one_holds_it_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    fbl = "type,timeLogged,orig,rcpt,jobId,header_Message-Id\n"
    h.commit(batch("/l/fbl.csv", fbl + f"f,{T0},n@s.example,z@gmail.com,K,<u@s>"))  # id 1, undated: a report of job K
    h.commit(batch("/l/a.csv", HEAD + _messages(20)))  # ids 2-21
    h.commit(batch("/l/b.csv", HEAD + f"d,{T0 + 500},{T0 + 400},n@s.example,z@gmail.com,v1,K,"))  # id 22, job K only
    h.commit(batch("/l/c.csv", HEAD + _messages(40, step=3)))  # ids 23-62: id 22's generation is no longer recent
    # (the send queued after the report never joins the report's timeline: docs/api.md, a report read first)
    assert h.conn.execute("SELECT id FROM corr_timelines WHERE job_id = 'K' ORDER BY id").fetchall() == [(1,), (22,)]
    text = f"d,{T0 + 950},{T0 + 400},n@s.example,z@gmail.com,v1,K,"  # job K queued at id 22's time
    if cached:
        h.commit(batch("/l/e.csv", HEAD + text))
    else:
        _seeks(h, text)
    # both timelines hold job K; the one of this scope, id 22, is joined either way (found in an older generation
    # than the undated id 1 is sought in)
    assert h.conn.execute("SELECT id, attempts FROM corr_timelines WHERE job_id = 'K' ORDER BY id").fetchall() == [
        (1, 0), (22, 2)]
    h.close()


def test_probes_seek_the_key_index_whatever_the_planner_would_guess(tmp_path: Path) -> None:
    """With the scope test the key index no longer covers a probe; SQLite then preferred, on a big store, an
    automatic index built over the whole table for each probe (0.2 s instead of 2 ms). Statistics that make
    the key index look useless reproduce that choice here: the probes must seek the key index anyway."""
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD + _messages(50)))
    h.conn.executescript("""
        ANALYZE sqlite_schema;
        DELETE FROM sqlite_stat1;
        INSERT INTO sqlite_stat1 VALUES
            ('corr_timelines', NULL, '50000000'),
            ('corr_timelines', 'corr_tl_mid', '50000000 5000000 5000000 5000000'),
            ('corr_timelines', 'corr_tl_job', '50000000 5000000 5000000 5000000'),
            ('corr_timelines', 'corr_tl_rcpt', '50000000 5000000 5000000 5000000');
    """)
    h.close()
    h = Harness(tmp_path)  # a new connection reads the statistics
    probes: list[str] = []
    h.conn.set_trace_callback(lambda sql: probes.append(sql) if "(VALUES" in sql else None)
    text = "\n".join(f"t,{T0 + 999},{T0 + i},n@s.example,u{i}@gmail.com,v1,J{i},<x{i}@s>" for i in range(30))
    fbl = "type,timeLogged,orig,rcpt,jobId,header_Message-Id\n" + "\n".join(
        f"f,{T0 + 999},n@s.example,u{i}@gmail.com,,<x{i}@s>" for i in range(30))
    ing = h.sink.ingestor
    ing.forget()
    ing._filter.valid = False  # noqa: SLF001 - every miss is probed
    h.commit(batch("/l/t.csv", HEAD + text), batch("/l/fbl.csv", fbl))
    h.conn.set_trace_callback(None)
    assert {sql.split(" ON ")[1].split(" = ")[1] for sql in probes} >= {"v.column1 AND t.mid_h", "v.column1 AND t.job_h"}
    for sql in probes:  # the trace shows the statement with its values: plan it as it ran
        plan = " ".join(row[3] for row in h.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "AUTOMATIC" not in plan and "USING INDEX corr_tl_" in plan, plan
    assert [r[2] for r in _timelines(h)] == [2] * 30 + [1] * 20
    h.close()


def test_a_timequeued_that_is_no_time_makes_an_undated_record_not_a_dead_correlator(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    odd = ["nan", "inf", "-inf", "1e308", "-5"]
    h.commit(batch("/l/acct.csv", HEAD + "\n".join(
        f"d,{T0 + 60},{q},n@s.example,u{i}@gmail.com,v1,J{i},<x{i}@s>" for i, q in enumerate(odd))))
    assert h.conn.execute("SELECT count(*), count(scope), count(t_queued) FROM corr_timelines").fetchone() == (5, 0, 0)
    h.close()


def test_pruning_drops_the_empty_slices_of_finished_generations_whatever_their_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the size cap at a high rate, today's oldest generations empty long before today passes the retention
    cutoff. Listed, every report and every lookup without a day would still seek each of them (tens of thousands
    a day at 20k records/s)."""
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    rows = [f"d,{T0 + (100 if i < 20 else 20000) + i},{T0 + i},n@s.example,u{i}@gmail.com,v1,J{i},<x{i}@s>"
            for i in range(40)]  # one day; the first 20 delivered before the cutoff below, the rest after
    h.commit(batch("/l/acct.csv", HEAD + "\n".join(rows)))
    assert store.prune(h.conn, T0 + 10000, 10**12, budget_s=5).deleted == 20
    listed = {v for (v,) in h.conn.execute("SELECT day FROM corr_days")}
    kept = {v for (v,) in h.conn.execute("SELECT DISTINCT qday FROM corr_timelines")}
    assert listed == kept | {store.NO_DAY}  # generations 0-4 (ids 1-19) emptied and dropped; 5 (ids 20-23) kept
    assert len(kept) == 6
    assert {s for (s,) in h.conn.execute("SELECT slice FROM corr_scopes")} == kept
    h.sink.ingestor.forget()  # what is left is still found, and the next message lands in the newest generation
    h.commit(batch("/l/more.csv", HEAD + f"d,{T0 + 20100},{T0 + 25},n@s.example,u25@gmail.com,v1,J25,<x25@s>\n"
                   f"d,{T0 + 20100},{T0 + 50},n@s.example,new@gmail.com,v1,J50,<x50@s>"))
    assert h.conn.execute("SELECT id, attempts FROM corr_timelines WHERE rcpt LIKE 'u25@%'").fetchone() == (26, 2)
    assert h.conn.execute("SELECT id FROM corr_timelines WHERE rcpt = 'new@gmail.com'").fetchone() == (41,)
    h.close()


FBL_HEAD = "type,timeLogged,orig,rcpt,header_Message-Id\n"


def _report_seeks(h: Harness, i: int, at: int = T0 + 7200) -> int:
    """Index seeks of a complaint about message i (no timeQueued: no scope), the link cache dropped."""
    ing = h.sink.ingestor
    ing.forget()
    before = ing.probe_seeks
    h.commit(batch(f"/l/fbl-{i}-{before}.csv", FBL_HEAD + f"f,{at},n@s.example,u{i}@gmail.com,<x{i}@s>\n"))
    return ing.probe_seeks - before


def _reported(h: Harness) -> list[int]:
    """The timeline of each stored complaint, in file order."""
    return [tl for (tl,) in h.conn.execute("SELECT tl FROM corr_events WHERE type = ? ORDER BY id",
                                           (store.TYPE_CODES["f"],))]


def test_a_late_report_seeks_only_the_generations_whose_filter_may_hold_its_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report has no timeQueued, so its key may be in any slice of the store: hundreds in a full one, and linking
    a complaint 10 minutes late at 20k records/s sought ~180 of them, in the write transaction (the correlator fell
    minutes behind). The filter of each finished generation rules out those without its Message-Id and recipient."""
    monkeypatch.setattr(store, "GEN_BITS", 2)  # 300 messages: ids 1-300 in generations 0-75 (id >> 2), 76 slices
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD + _messages(300)))
    # the undated slice and the generation being filled (75: no filter yet), then the message's own
    assert [_report_seeks(h, i) for i in (280, 200, 3)] == [3, 3, 3]
    assert _reported(h) == [281, 201, 4]
    h.close()


def test_without_filters_a_late_report_seeks_back_from_the_newest_generation_and_stops_at_its_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written before generation filters: its message is most often among the newer ones, so the older
    generations are sought newest first, a few more at a time, and no further back than the newest with its key."""
    monkeypatch.setattr(store, "GEN_BITS", 2)  # 300 messages: ids 1-300 in generations 0-75 (id >> 2), 76 slices
    monkeypatch.setattr(genfilter, "BUILD_PER_WRITE", 0)
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD + _messages(300)))
    h.conn.execute("DELETE FROM corr_gen_filters")
    h.sink.ingestor.pruned(0)  # as after a start: the writer reads the stored filters again
    # message 280 (id 281, generation 70): first the undated slice and generations 74-75 (3 seeks), then
    # 73-66 (8): found there, so generations 65-0 are not sought
    assert _report_seeks(h, 280) == 3 + 8
    # message 200 (id 201, generation 50): 3, then 73-66 (8), 65-50 (16)
    assert _report_seeks(h, 200) == 3 + 8 + 16
    # message 3 (id 4, generation 1): every slice, as before (3, then 8 + 16 + 32 + the last 18 of 74)
    assert _report_seeks(h, 3) == 3 + 74
    assert _reported(h) == [281, 201, 4]
    h.close()


def test_a_late_report_joins_the_newest_timeline_of_its_key_however_far_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same Message-Id sent to the same recipient twice a day apart is two timelines (two timeQueued); a
    report without timeQueued, after both, joins the newer one, found in its own generation before the older one's.
    (A report read two hours after the first send joins the first: the second was queued after it.)"""
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    again = f"d,{T0 + 86400 + 30},{T0 + 86400},n@s.example,u5@gmail.com,v1,J5,<x5@s>"
    h.commit(batch("/l/acct.csv", HEAD + _messages(100) + "\n" + again + "\n" + _messages(100, 1)
                   .replace(f"{T0}", f"{T0 + 2 * 86400}").replace("u", "w").replace("<x", "<y")))
    assert h.conn.execute("SELECT id FROM corr_timelines WHERE rcpt = 'u5@gmail.com' ORDER BY id").fetchall() == [
        (6,), (101,)]
    _report_seeks(h, 5, at=T0 + 3 * 86400)
    _report_seeks(h, 5)
    assert _reported(h) == [101, 6]
    h.close()


def test_the_scopes_held_in_memory_are_bounded_and_a_dropped_bucket_is_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a year of timeQueued is ~3M buckets: held whole, over a gigabyte, and read whole again at every cache drop
    monkeypatch.setattr(store, "GEN_BITS", 2)
    monkeypatch.setattr(scopes, "LIMIT", 16)
    h = Harness(tmp_path)
    h.commit(batch("/l/acct.csv", HEAD + _messages(300, step=10)))  # 300 buckets, one message each
    assert h.conn.execute("SELECT count(DISTINCT bucket) FROM corr_scopes").fetchone() == (300,)
    ing = h.sink.ingestor
    assert len(ing._scopes) <= 16  # noqa: SLF001
    # a retry of message 5 (id 6, generation 1), whose bucket left memory long ago: read again, one seek in its slice
    # and one in the undated slice for each of its 2 keys, as if it had never left
    assert _seeks(h, f"t,{T0 + 9999},{T0 + 50},n@s.example,u5@gmail.com,v1,J5,<x5@s>") == 2 * 2
    assert _timelines(h)[5] == (6, "u5@gmail.com", 2)
    assert len(ing._scopes) <= 16  # noqa: SLF001
    # new messages spread over more buckets than the cache holds still register every bucket they are queued in
    h.commit(batch("/l/acct3.csv", HEAD + "\n".join(
        f"d,{T0 + 9999},{T0 + 5000 + 10 * i},n@s.example,w{i}@gmail.com,v1,K{i},<w{i}@s>" for i in range(40))))
    assert h.conn.execute("SELECT count(DISTINCT bucket) FROM corr_scopes").fetchone() == (340,)
    assert _seeks(h, f"t,{T0 + 9999},{T0 + 5000 + 10 * 3},n@s.example,w3@gmail.com,v1,K3,<w3@s>") == 2 * 2
    assert _timelines(h)[303] == (304, "w3@gmail.com", 2)
    h.close()
