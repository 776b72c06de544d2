"""Key-index generations (store.slice_of): however many slices a day is cut into, the same timelines.

The key indexes lead with a slice (day + generation of the timeline id) so random-key inserts stay
in a cached part of each index. These tests cut generations down to 4 timelines, so a small corpus
spreads over dozens of slices, and check that what is stored and what lookups answer do not change:
probes fan out over a day's generations, reports and API lookups over every slice.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from correlator import store
from correlator.keys import message_hash
from tests.test_correlator_support import CORPUS, Harness, batch, generated

CHUNKS = generated(240)
_FBL_HEAD = "type,timeLogged,orig,rcpt,jobId,header_Message-Id\n"
_ACCT_HEAD = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id\n"
ORPHANS = [  # reports read before their message (undated timelines), which the acct records then join
    [batch(f"/l/fbl-orphans-{k}.csv", _FBL_HEAD + "\n".join(
        f"f,{1714560000 + i},n@s.example,o{i}@gmail.com,OJ{i},<o{i}@s>" for i in range(6 * k, 6 * k + 6)))]
    for k in range(3)] + [
    [batch("/l/acct-orphans.csv", _ACCT_HEAD + "\n".join(
        f"d,{1714560100 + i},{1714560050 + i % 2},n@s.example,o{i}@gmail.com,v1,OJ{i},<o{i}@s>" for i in range(18)))]]
WRITES = [[b] for b in CORPUS] + [list(c) for c in CHUNKS[:20]] + ORPHANS + [list(c) for c in CHUNKS[20:]]
_HALF = len(WRITES) // 2
TL_COLUMNS = ("id, mid_h, message_id, job_h, job_id, rcpt_h, rcpt, rcpt_domain, orig, sender, vmta, vmta_pool, queue,"
              " isp, t0, t_last, t_queued, t_done, flags, attempts")


def _snapshot(conn: sqlite3.Connection) -> tuple[list, ...]:
    """Everything stored but the slice column."""
    return (conn.execute(f"SELECT {TL_COLUMNS} FROM corr_timelines ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM corr_events ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM corr_queue_events ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM corr_flows ORDER BY 1, 2, 3, 4").fetchall())


def _lookups(h: Harness) -> list:
    """What the API's key lookups answer for every Message-Id and recipient stored."""
    out = []
    with h.reader() as r:
        for mid_h, rcpt_h, job_h in r.conn.execute("SELECT mid_h, rcpt_h, job_h FROM corr_timelines ORDER BY id"):
            if mid_h is not None:
                out.append([t["id"] for t in r.by_message(mid_h, 10)[0]])
                out.append([t["id"] for t in r.by_message_rcpt(mid_h, rcpt_h)[0]])
            if job_h is not None:
                out.append([t["id"] for t in r.by_job_rcpt(job_h, rcpt_h)[0]])
            items, _cursor, _limited = r.search(rcpt_h=rcpt_h, job_h=None, vmta=None, outcome=None, since=None,
                                                until=None, limit=5, after=None)
            out.append([t["id"] for t in items])
    return out


def _run(tmp: Path, writes: list[list], restart_at: int | None = None, cache_limit: int | None = None) -> Harness:
    h = Harness(tmp)
    for i, write in enumerate(writes):
        if i == restart_at:  # a new process: fresh caches, the key filter loaded from the store
            h.close()
            h = Harness(tmp)
        if cache_limit is not None:
            h.sink.ingestor.cache_limit = cache_limit
        h.commit(*write)
    return h


@pytest.fixture(scope="module")
def one_generation(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[list, ...], list, list[int]]:
    """WRITES stored in one run with the real GEN_BITS: what is stored, what lookups answer, its slices.
    The tests below compare against it and none changes it; WRITES and their record times are fixed, so it is
    the same store each time it is built (built once per module instead of once per test)."""
    one = _run(tmp_path_factory.mktemp("one"), WRITES)
    try:
        return _snapshot(one.conn), _lookups(one), [v for (v,) in one.conn.execute("SELECT day FROM corr_days")]
    finally:
        one.close()


@pytest.mark.parametrize(("restart_at", "cache_limit"), [(None, None), (_HALF, None), (None, 30), (_HALF, 30)],
                         ids=["one-run", "restart", "cache-dropped", "restart-and-cache-dropped"])
def test_tiny_generations_store_and_answer_what_one_generation_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart_at: int | None, cache_limit: int | None,
        one_generation: tuple[tuple[list, ...], list, list[int]]) -> None:
    expected, expected_lookups, one_slices = one_generation
    assert {max(v, 0) >> store.DAY_BITS for v in one_slices} == {0, 1}  # the legacy -1, then generation 1 only

    monkeypatch.setattr(store, "GEN_BITS", 2)  # 4 timelines per generation
    (tmp_path / "tiny").mkdir()
    tiny = _run(tmp_path / "tiny", WRITES, restart_at, cache_limit)
    assert _snapshot(tiny.conn) == expected
    assert _lookups(tiny) == expected_lookups
    slices = [v for (v,) in tiny.conn.execute("SELECT day FROM corr_days")]
    n_timelines = len(expected[0])
    assert len(slices) > n_timelines // 4  # the test did spread the keys over one slice per generation at least
    # every dated timeline sits in the slice of its day and its generation; the undated ones fill slices of
    # their own, 4 each in id order; and every slice is listed
    undated = 0
    for tl, value in tiny.conn.execute("SELECT id, qday FROM corr_timelines ORDER BY id"):
        if store.day_of_slice(value) == store.NO_DAY:
            assert value == store.undated_slice(undated // 4 + 1)
            undated += 1
        else:
            assert value >> store.DAY_BITS == (tl >> 2) + 1
        assert value in slices
    assert undated > 4  # the corpus has undated timelines enough for two undated slices
    tiny.close()


def test_a_store_with_one_slice_per_day_keeps_linking_and_adds_generations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_generation: tuple[tuple[list, ...], list, list[int]]
) -> None:
    """A store written before generations (qday = the day itself) is read and extended as it is."""
    expected, expected_lookups, _slices = one_generation

    (tmp_path / "old").mkdir()
    old = _run(tmp_path / "old", WRITES[:_HALF])
    with old.conn:  # rewrite it as the earlier layout stored it
        rows = old.conn.execute("SELECT id, qday FROM corr_timelines").fetchall()
        old.conn.executemany("UPDATE corr_timelines SET qday=? WHERE id=?",
                             [(store.day_of_slice(v), tl) for tl, v in rows])
        old.conn.execute("UPDATE corr_timelines SET scope = NULL")  # nor scopes, which came later
        old.conn.execute("DELETE FROM corr_scopes")
        old.conn.execute("DELETE FROM corr_days")
        old.conn.execute("INSERT INTO corr_days (day) SELECT DISTINCT qday FROM corr_timelines")  # legacy slices
        old.conn.execute("INSERT OR IGNORE INTO corr_days (day) VALUES (-1)")
    legacy = old.conn.execute("SELECT max(id) FROM corr_timelines").fetchone()[0]
    old.close()
    monkeypatch.setattr(store, "GEN_BITS", 2)
    again = _run(tmp_path / "old", WRITES[_HALF:])
    assert _snapshot(again.conn) == expected
    assert _lookups(again) == expected_lookups
    values = dict(again.conn.execute("SELECT id, qday FROM corr_timelines").fetchall())
    assert all(values[tl] < 1 << store.DAY_BITS for tl in values if tl <= legacy)
    assert all(values[tl] >> store.DAY_BITS == (tl >> 2) + 1 for tl in values
               if tl > legacy and store.day_of_slice(values[tl]) != store.NO_DAY)
    again.close()


def test_reports_find_their_message_in_any_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An f with only a Message-Id, and one with only rcpt + orig, link to a timeline many generations back."""
    monkeypatch.setattr(store, "GEN_BITS", 1)
    h = Harness(tmp_path)
    rows = "\n".join(f"d,{1714550400 + i},{1714550400 + i},n@s.example,u{i}@gmail.com,v1,J{i},<x{i}@s>"
                     for i in range(40))
    h.commit(batch("/l/acct.csv", "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id\n" + rows))
    h.sink.ingestor.forget()  # nothing in the link cache: the reports must find them in the store
    h.commit(batch("/l/fbl.csv", "type,timeLogged,orig,rcpt,header_Message-Id\n"
                   "f,1714560000,n@s.example,,<x3@s>\n"
                   "f,1714560000,n@s.example,u5@gmail.com,\n"))
    assert h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 40
    linked = h.conn.execute("SELECT t.rcpt FROM corr_events e JOIN corr_timelines t ON t.id = e.tl"
                            " WHERE e.type = ? ORDER BY e.id", (store.TYPE_CODES["f"],)).fetchall()
    assert linked == [("u3@gmail.com",), ("u5@gmail.com",)]
    with h.reader() as r:
        assert [t["rcpt"] for t in r.by_message(message_hash("x39@s"), 5)[0]] == ["u39@gmail.com"]
    h.close()


def test_pruning_drops_the_slices_it_empties_and_keeps_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    day = 86400
    t0 = 1714521600  # 2024-05-01
    h = Harness(tmp_path, clock=lambda: t0 + 5 * day)  # no record ahead of the clock (those are read as logged now)
    old = "\n".join(f"d,{t0 + i},{t0 + i},s@x,o{i}@gmail.com,v1,J" for i in range(10))
    undated = "\n".join(f"d,{t0 + i},,s@x,n{i}@gmail.com,v1,J" for i in range(6))
    new = "\n".join(f"d,{t0 + 5 * day + i},{t0 + 5 * day + i},s@x,m{i}@gmail.com,v1,J" for i in range(3))
    head = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId\n"
    h.commit(batch("/l/a.csv", head + old))
    h.commit(batch("/l/b.csv", head + undated))
    h.commit(batch("/l/c.csv", head + new))
    before = {v for (v,) in h.conn.execute("SELECT day FROM corr_days")}
    # legacy -1; ids 1-10 (day 0): 3 generations; ids 11-16 (no day): 2 undated slices of 4; day 5
    assert len(before) == 1 + 3 + 2 + 1
    store.prune(h.conn, t0 + 3 * day, 10**12, budget_s=5)
    after = {v for (v,) in h.conn.execute("SELECT day FROM corr_days")}
    kept = {v for (v,) in h.conn.execute("SELECT DISTINCT qday FROM corr_timelines")}
    assert after == kept | {-1}
    assert [store.day_of_slice(v) for v in kept] == [19844 + 5]  # only day 5's slice has timelines left
    h.close()
