"""Generation filters (correlator/genfilter.py): a search without a timeQueued seeks only the generations whose
filter may hold its keys, and a filter never lacks a key of a timeline of its generation, whatever wrote it when."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlator import genfilter, store
from correlator.genfilter import GenerationFilters
from tests.test_correlator_support import Harness, batch

HEAD = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id\n"
FBL_HEAD = "type,timeLogged,orig,rcpt,header_Message-Id\n"
T0 = 1714550400


def _fillers(start: int, n: int) -> str:
    """n other delivered messages (one timeline each): they fill generations."""
    return "\n".join(f"d,{T0 + 30},{T0 + i},n@s.example,f{i}@gmail.com,vf,JF{i},<f{i}@s>"
                     for i in range(start, start + n))


def _uncovered(h: Harness) -> list[int]:
    """Timelines of dated generations whose generation's filter (as stored, and in the writer's memory) rules out
    their Message-Id or recipient hash: must be none."""
    stored = GenerationFilters()
    stored.refresh(h.conn)
    writer = h.sink.ingestor._gen_filters  # noqa: SLF001 - the filters linking uses
    bad = []
    for tl, qday, mid_h, rcpt_h in h.conn.execute("SELECT id, qday, mid_h, rcpt_h FROM corr_timelines"):
        if store.day_of_slice(qday) == store.NO_DAY or not store.generation_of_slice(qday):
            continue
        gen = (tl >> store.GEN_BITS) + 1
        for filters in (stored, writer):
            if gen in filters.ruled_out(mid_h) | filters.ruled_out(rcpt_h) | filters.ruled_out(mid_h, rcpt_h):
                bad.append(tl)
    return bad


def _vmta(h: Harness, rcpt: str, mid: str, orig: str = "n@s.example") -> list[tuple[str, str] | None]:
    """The vmta a complaint about <mid> to rcpt is attributed (the store's answer: the memory index is empty)."""
    h.sink.recent.committed()
    fbl = batch(f"/l/fbl-{random.random()}.csv", FBL_HEAD + f"f,{T0 + 7200},{orig},{rcpt},<{mid}>\n")
    return [None if hit is None else (hit[0], hit[1]) for hit in h.sink.lookup_vmta(fbl.columns, fbl.rows)]


@settings(max_examples=50, deadline=None)  # a 128 KiB filter takes a few ms to build
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=300),
       st.sampled_from([256, 1024, 1 << 17]))
def test_a_filter_holds_every_key_it_was_built_or_extended_with(keys: list[int], nbytes: int) -> None:
    built = genfilter.build(pl.Series(keys + [None], dtype=pl.Int64), nbytes)
    assert len(built) == nbytes
    assert all(genfilter.may_hold(built, genfilter.probes(k, nbytes)) for k in keys)
    extended = bytearray(nbytes)
    assert genfilter.add(extended, keys)
    assert bytes(extended) == built  # the writer's later additions set the bits a build sets
    assert not genfilter.add(extended, keys[:1])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=3, max_size=40), st.randoms())
def test_generations_are_ruled_out_for_two_keys_as_for_either(keys: list[int], rnd: random.Random) -> None:
    """`ruled_out(a, b)` checks both keys' probes in one pass: it must be the union of the two single-key answers."""
    filters = GenerationFilters()
    held: dict[int, set[int]] = {}
    for gen in range(1, 30):  # filters of a few random keys each, two sizes
        held[gen] = {k for k in keys if rnd.random() < 0.5}
        filters._put(gen, genfilter.build(pl.Series(sorted(held[gen]), dtype=pl.Int64), 256 if gen % 3 else 1024), 1)
    a, b, c = keys[0], keys[1], keys[2]
    assert filters.ruled_out(a, b) == filters.ruled_out(a) | filters.ruled_out(b)
    assert filters.ruled_out(a, None, b, c) == filters.ruled_out(a) | filters.ruled_out(b) | filters.ruled_out(c)
    assert filters.ruled_out(None) == set()
    assert not filters.ruled_out(a, b) & {gen for gen, ks in held.items() if {a, b} <= ks}  # never too little


def test_false_positives_are_about_two_percent_at_the_size_of_a_full_generation() -> None:
    rng = random.Random(7)
    nbytes = genfilter.BITS_PER_TIMELINE * 65_536 // 8
    keys = [rng.getrandbits(64) - 2**63 for _ in range(2 * 65_536)]
    built = genfilter.build(pl.Series(keys, dtype=pl.Int64), nbytes)
    other = [rng.getrandbits(64) - 2**63 for _ in range(20_000)]
    rate = sum(genfilter.may_hold(built, genfilter.probes(k, nbytes)) for k in other) / len(other)
    assert 0.01 < rate < 0.035


def test_a_key_given_later_to_a_timeline_of_a_finished_generation_is_added_to_its_filter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Message-Id learnt after the timeline's generation was finished (a record that adds it), and one a merge
    moves onto the older timeline: both are in that generation's filter, in memory and in the store, so a late
    complaint by Message-Id is still found (before: its generation was ruled out, vmta unknown)."""
    monkeypatch.setattr(store, "GEN_BITS", 2)  # 4 timelines per generation
    h = Harness(tmp_path)
    h.commit(batch("/l/a.csv", HEAD + "\n".join([
        f"t,{T0 + 10},{T0},n@s.example,a@gmail.com,va,JA,",  # id 1: jobId, no Message-Id
        f"t,{T0 + 10},{T0},n@s.example,b@gmail.com,vb,JB,",  # id 2: jobId, no Message-Id
        _fillers(0, 10)])))  # ids 3-12: generations 1-3 finished
    assert h.conn.execute("SELECT gen FROM corr_gen_filters ORDER BY gen").fetchall() == [(1,), (2,), (3,)]
    # a report from another sender: not found by rcpt + orig, only by its Message-Id
    assert _vmta(h, "a@gmail.com", "ma@s", "x@other.example") == [None]
    h.commit(batch("/l/b.csv", HEAD + "\n".join([
        f"d,{T0 + 20},{T0},n@s.example,a@gmail.com,va2,JA,<ma@s>",  # JA learns its Message-Id
        f"t,{T0 + 20},{T0},n@s.example,b@gmail.com,vb2,,<mb@s>",  # id 13: Message-Id, no jobId: another timeline
        _fillers(10, 6)])))
    assert h.conn.execute("SELECT count(*) FROM corr_timelines WHERE rcpt = 'b@gmail.com'").fetchone() == (2,)
    h.commit(batch("/l/c.csv", HEAD + f"d,{T0 + 30},{T0},n@s.example,b@gmail.com,vb3,JB,<mb@s>\n"))  # both: merge
    assert h.conn.execute("SELECT id, message_id FROM corr_timelines WHERE rcpt = 'b@gmail.com'").fetchall() == [
        (2, "mb@s")]
    assert _uncovered(h) == []
    assert _vmta(h, "a@gmail.com", "ma@s", "x@other.example") == [("va2", "")]
    assert _vmta(h, "b@gmail.com", "mb@s", "x@other.example") == [("vb3", "")]
    assert h.conn.execute("SELECT version FROM corr_gen_filters WHERE gen = 1").fetchone()[0] > 1  # rewritten
    h.close()


def test_after_a_restart_into_a_finished_generation_a_later_key_still_reaches_its_filter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Merges deleted the newest timelines, so a restart gives out ids of a generation that already has a filter
    (ids 7, 8 of generation 2 here): the new timelines go into that filter, and a Message-Id a record of that write
    gives an older timeline still reaches its own generation's filter."""
    monkeypatch.setattr(store, "GEN_BITS", 2)  # 4 timelines per generation: ids 1-3, 4-7, 8-11
    h = Harness(tmp_path)
    h.commit(batch("/l/a.csv", HEAD + "\n".join([
        f"t,{T0 + 10},{T0},n@s.example,a@gmail.com,va,JA,",  # id 1: jobId, no Message-Id
        f"t,{T0 + 10},{T0},n@s.example,b@gmail.com,vb,JB,",  # id 2
        f"t,{T0 + 10},{T0},n@s.example,c@gmail.com,vc,JC,",  # id 3
        _fillers(0, 3)])))  # ids 4-6
    h.commit(batch("/l/b.csv", HEAD + "\n".join([
        f"t,{T0 + 20},{T0},n@s.example,b@gmail.com,vb2,,<mb@s>",  # id 7: Message-Id alone, another timeline
        f"t,{T0 + 20},{T0},n@s.example,c@gmail.com,vc2,,<mc@s>"])))  # id 8: generation 2 finished
    h.commit(batch("/l/c.csv", HEAD + "\n".join([
        f"d,{T0 + 30},{T0},n@s.example,b@gmail.com,vb3,JB,<mb@s>",  # merges 7 into 2
        f"d,{T0 + 30},{T0},n@s.example,c@gmail.com,vc3,JC,<mc@s>"])))  # merges 8 into 3
    assert h.conn.execute("SELECT max(id) FROM corr_timelines").fetchone() == (6,)
    assert h.conn.execute("SELECT gen FROM corr_gen_filters ORDER BY gen").fetchall() == [(1,), (2,)]
    h.close()
    again = Harness(tmp_path)  # a restart: the next id is 7, in generation 2, which has a filter
    again.commit(batch("/l/d.csv", HEAD + "\n".join([
        f"d,{T0 + 40},{T0},n@s.example,a@gmail.com,va2,JA,<ma@s>",  # id 1 (generation 1) learns its Message-Id
        _fillers(10, 2)])))  # ids 7-8 again
    assert _uncovered(again) == []
    assert _vmta(again, "a@gmail.com", "ma@s", "x@other.example") == [("va2", "")]
    again.close()


def test_a_store_written_before_filters_gets_them_a_few_per_write_newest_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    h.commit(batch("/l/a.csv", HEAD + _fillers(0, 40)))  # ids 1-40: generations 1-10 finished, 11 being filled
    h.conn.execute("DELETE FROM corr_gen_filters")
    h.sink.ingestor.pruned(0)  # as after a restart on that store
    att = h.sink.attributor
    assert _vmta(h, "f2@gmail.com", "f2@s")[0][0] == "vf"  # found without filters
    unfiltered = att.seeks
    h.commit(batch("/l/b.csv", HEAD + _fillers(40, 1)))  # a write that finishes no generation
    assert h.conn.execute("SELECT gen FROM corr_gen_filters ORDER BY gen").fetchall() == [(7,), (8,), (9,), (10,)]
    h.commit(batch("/l/c.csv", HEAD + _fillers(41, 1)))
    h.commit(batch("/l/d.csv", HEAD + _fillers(42, 1)))  # id 43 fills generation 11: finished, built at once
    assert h.conn.execute("SELECT count(*) FROM corr_gen_filters").fetchone() == (11,)
    assert _uncovered(h) == []
    before = att.seeks
    assert _vmta(h, "f2@gmail.com", "f2@s")[0][0] == "vf"
    assert (unfiltered, att.seeks - before) == (1 + 8 + 3, 1 + 1)  # the undated slice, generation 1
    h.close()


def test_pruning_drops_the_filters_of_the_generations_it_empties_and_a_restart_reads_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    h.commit(batch("/l/a.csv", HEAD + _fillers(0, 40)))
    assert h.conn.execute("SELECT count(*) FROM corr_gen_filters").fetchone() == (10,)
    store.prune(h.conn, 0.0, 0, batch=10, budget_s=0.0)  # over the cap: the 10 lowest ids (generations 1-3)
    h.sink.ingestor.pruned(10)
    assert h.conn.execute("SELECT min(gen), count(*) FROM corr_gen_filters").fetchone() == (3, 8)  # 3 keeps id 11
    h.close()
    again = Harness(tmp_path)  # a restart: the writer and the attribution read the stored filters
    again.commit(batch("/l/b.csv", HEAD + _fillers(40, 1)))
    assert _uncovered(again) == []
    before = again.sink.attributor.seeks
    assert _vmta(again, "f30@gmail.com", "f30@s")[0][0] == "vf"
    assert again.sink.attributor.seeks - before == 3
    again.close()


def test_a_rolled_back_write_leaves_no_filter_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids of a rolled-back write are given out again, to other messages: a filter built from the rolled-back
    timelines must not rule them out."""
    monkeypatch.setattr(store, "GEN_BITS", 2)
    h = Harness(tmp_path)
    h.commit(batch("/l/a.csv", HEAD + _fillers(0, 3)))
    h.conn.execute("BEGIN IMMEDIATE")
    h.sink.write(h.conn, [batch("/l/x.csv", HEAD + _fillers(100, 12))])  # finishes generations 1-3 in memory
    h.conn.execute("ROLLBACK")
    h.commit(batch("/l/b.csv", HEAD + _fillers(200, 12)))  # ids 4-15 again, other messages
    assert _uncovered(h) == []
    assert _vmta(h, "f205@gmail.com", "f205@s")[0][0] == "vf"
    assert _vmta(h, "f105@gmail.com", "f105@s") == [None]
    h.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_no_filter_ever_lacks_a_key_of_its_generation(tmp_path_factory: pytest.TempPathFactory,
                                                     data: st.DataObject) -> None:
    """Random messages (with or without a jobId or Message-Id), records that add a Message-Id later or merge two
    timelines, cut into random writes: every stored timeline's keys pass its generation's filter."""
    mp = pytest.MonkeyPatch()
    mp.setattr(store, "GEN_BITS", 2)
    try:
        h = Harness(tmp_path_factory.mktemp("gf"))
        lines = []
        for i in range(data.draw(st.integers(4, 30), label="messages")):
            kinds = data.draw(st.lists(st.sampled_from(["both", "job", "mid"]), min_size=1, max_size=3),
                              label=f"records of message {i}")
            for n, kind in enumerate(kinds):  # a jobId alone, a Message-Id alone, both: may be two timelines, merged
                job, mid = (f"J{i}" if kind != "mid" else ""), (f"<m{i}@s>" if kind != "job" else "")
                lines.append(f"t,{T0 + 10 + n},{T0 + i},n@s.example,r{i}@gmail.com,v{i},{job},{mid}")
        data.draw(st.randoms(use_true_random=False), label="order").shuffle(lines)
        cuts = sorted(data.draw(st.sets(st.integers(1, len(lines) - 1), max_size=5), label="cuts")) + [len(lines)]
        start = 0
        for n, cut in enumerate(cuts):
            h.commit(batch(f"/l/w{n}.csv", HEAD + "\n".join(lines[start:cut])))
            start = cut
        assert _uncovered(h) == []
        h.close()
    finally:
        mp.undo()


def test_a_filter_read_from_the_store_in_chunks_is_the_one_built_at_once() -> None:
    """A generation's filter is built from its rows a chunk at a time (the peak memory of a oneshot), nulls included:
    the same bits as the reference, whatever the size (the smallest filter saturates)."""
    import sqlite3

    rng = random.Random(3)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (m INTEGER, r INTEGER)")
    rows = [(rng.getrandbits(64) - 2**63, None if i % 5 == 0 else rng.getrandbits(64) - 2**63) for i in range(70_000)]
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)  # three chunks of the column-wise build
    keys = pl.Series([k for row in rows for k in row], dtype=pl.Int64)
    for nbytes in (1 << 15, 256):
        at_once = genfilter.build(keys, nbytes)
        assert genfilter.build_from(conn.execute("SELECT m, r FROM t"), nbytes) == at_once
    few = genfilter.build_from(conn.execute("SELECT m, r FROM t WHERE rowid <= 3"), 1 << 15)
    assert sum(bin(b).count("1") for b in few) == len({p for row in rows[:3] for k in row if k is not None
                                                      for p in genfilter.probes(k, 1 << 15)})
    assert genfilter.build_from(conn.execute("SELECT m, r FROM t WHERE 0"), 256) == bytes(256)
