"""The write path's shortcuts change nothing stored: the key filter, grouped batches, a restart mid-stream."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from correlator.keyfilter import KeyFilter
from exporter.records import RecordBatch
from tests.test_correlator_support import ACCT_0, ACCT_1, BOUNCE, CORPUS, DIAG_0, DIAG_1, FBL, RECV, Harness, generated

CHUNKS = generated(300)


def _snapshot(conn: sqlite3.Connection) -> tuple[list, list, list, list]:
    return (conn.execute("SELECT * FROM corr_timelines ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM corr_events ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM corr_queue_events ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM corr_flows ORDER BY 1, 2, 3, 4").fetchall())


def _stored_in_one_run(directory: Path, writes: list[list[RecordBatch]]) -> tuple[list, list, list, list]:
    """What one process without a restart stores for these writes (the reference a restart must match)."""
    directory.mkdir()
    h = Harness(directory)
    for write in writes:
        h.commit(*write)
    stored = _snapshot(h.conn)
    h.close()
    return stored


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[list[RecordBatch]]], tuple[list, ...]]:
    """`_stored_in_one_run`, built once per module for each sequence of writes: several tests compare against the
    same reference (the same module-level batches in the same order, the Harness clock fixed at NOW, so the same
    store), and none changes it. Only for references built before a test patches anything."""
    cache: dict[tuple[tuple[int, ...], ...], tuple[list[list[RecordBatch]], tuple[list, ...]]] = {}

    def stored(writes: list[list[RecordBatch]]) -> tuple[list, ...]:
        key = tuple(tuple(id(b) for b in write) for write in writes)
        if key not in cache:  # the writes are kept with the result: the ids in the key stay theirs
            cache[key] = (writes, _stored_in_one_run(tmp_path_factory.mktemp("one") / "store", writes))
        return cache[key][1]

    return stored


def _counting_probes(h: Harness) -> list[int]:
    """Record how many keys each probe asks the store for."""
    probes: list[int] = []
    real = h.sink.ingestor._probe
    h.sink.ingestor._probe = lambda conn, column, wanted: (  # type: ignore[method-assign]
        probes.append(len(wanted)), real(conn, column, wanted))
    return probes


def test_key_filter_keeps_every_key_and_rules_out_almost_every_other() -> None:
    rnd = random.Random(7)
    keys = [rnd.getrandbits(64) - (1 << 63) for _ in range(20_000)]
    others = [rnd.getrandbits(64) - (1 << 63) for _ in range(20_000)]
    f = KeyFilter()
    for i in range(0, len(keys), 3000):
        f.add(pl.Series(keys[i : i + 3000], dtype=pl.Int64))
    f.add(pl.Series([None, None], dtype=pl.Int64))
    assert f.may_contain(pl.Series(keys, dtype=pl.Int64)).all()
    assert f.may_contain(pl.Series([None, keys[0]], dtype=pl.Int64)).to_list() == [False, True]
    assert f.may_contain(pl.Series(others, dtype=pl.Int64)).sum() < 20  # ~0 at this load


_SPLIT_CORPUS = ([[DIAG_0], [DIAG_1, RECV]], [[ACCT_0], [ACCT_1], [BOUNCE], [FBL]])  # t/r before, d/b/rb/f after
_HALF = len(CHUNKS) // 2


@pytest.mark.parametrize(("before", "after", "hits"), [
    (*_SPLIT_CORPUS, True),  # every delivery links to a timeline stored before the restart
    (CHUNKS[:_HALF], CHUNKS[_HALF:], False),  # almost every message is new after the restart
])
def test_a_restart_loads_the_key_filter_and_probes_only_keys_the_store_may_hold(
        tmp_path: Path, before: list[list[RecordBatch]], after: list[list[RecordBatch]], hits: bool, one_run) -> None:
    expected = one_run([*before, *after])

    results, counts = [], []
    for name, use_filter in (("filtered", True), ("probing", False)):
        (tmp_path / name).mkdir()
        first = Harness(tmp_path / name)
        for write in before:
            first.commit(*write)
        first.close()
        second = Harness(tmp_path / name)  # a new process: fresh caches, the filter loaded from the store
        if not use_filter:
            second.sink.ingestor._synced = True  # skip the start-up sync: no filter, every miss is probed
        probes = _counting_probes(second)
        for write in after:
            second.commit(*write)
        assert second.sink.ingestor._filter.valid is use_filter
        results.append(_snapshot(second.conn))
        counts.append(sum(probes))
        second.close()
    assert results[0] == results[1] == expected
    if hits:
        assert counts[0] > 0, counts  # the keys stored before the restart pass the filter and are probed
    else:
        assert counts[0] < counts[1] / 3, counts


def test_a_backfill_past_the_cache_limit_probes_only_possible_hits(tmp_path: Path) -> None:
    results, counts = [], []
    for name, use_filter in (("filtered", True), ("probing", False)):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name)
        h.sink.ingestor.cache_limit = 40  # dropped every few writes, as a long backfill does
        probes = _counting_probes(h)
        for chunk in CHUNKS:
            h.commit(*chunk)
            if not use_filter:
                h.sink.ingestor._filter.valid = False
        results.append(_snapshot(h.conn))
        counts.append(sum(probes))
        h.close()
    assert results[0] == results[1]
    assert counts[0] < counts[1] / 3, counts


def test_batches_grouped_in_one_write_store_what_one_write_per_batch_stores(tmp_path: Path) -> None:
    """Grouping ends before a possible replay and after f/rb batches, so per-batch results hold exactly."""
    batches = [b for chunk in CHUNKS for b in chunk]
    runs = {
        "per batch": [[b] for b in batches],
        "per chunk": [list(chunk) for chunk in CHUNKS],
        "all at once": [batches],
        "with replays": [[*chunk, chunk[0]] for chunk in CHUNKS],  # a batch twice in one write
    }
    snaps = {}
    for name, writes in runs.items():
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name)
        for write in writes:
            h.commit(*write)
        snaps[name] = _snapshot(h.conn)
        h.close()
    first = snaps["per batch"]
    for name, snap in snaps.items():
        assert snap == first, name


def test_a_group_mixing_row_and_frame_batches_and_files_without_line_numbers(tmp_path: Path) -> None:
    """Row batches (exact fallback path), frame batches and a batch without line numbers share one group."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    for x in CORPUS:
        a.commit(x)
    mixed: list[RecordBatch] = []
    for i, x in enumerate(CORPUS):
        if i % 2:
            frame = x.frame  # the columnar form, as the parser builds it
            mixed.append(RecordBatch(x.source, x.path, x.columns, frame=frame, file_id=x.file_id))
        else:
            mixed.append(x)
    b.commit(*mixed)
    assert _snapshot(a.conn) == _snapshot(b.conn)
    a.close()
    b.close()


@pytest.mark.parametrize(("before", "after"), [_SPLIT_CORPUS, (CHUNKS[:_HALF], CHUNKS[_HALF:])])
def test_a_restart_on_a_store_too_big_to_load_at_once_loads_the_key_filter_a_step_per_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: list[list[RecordBatch]],
        after: list[list[RecordBatch]], one_run) -> None:
    """Past FILTER_LOAD_LIMIT the filter used to stay invalid for the process's life: every miss was then
    probed in every generation of its day (live at 20k records/s: 45 s behind a minute after a restart)."""
    from correlator import keyfilter

    expected = one_run([*before, *after])

    (tmp_path / "two").mkdir()
    first = Harness(tmp_path / "two")
    for write in before:
        first.commit(*write)
    stored = first.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0]
    first.close()
    monkeypatch.setattr(keyfilter, "FILTER_LOAD_LIMIT", stored // 4)  # at start: a quarter of the store
    monkeypatch.setattr(keyfilter, "FILTER_LOAD_STEP", stored // 4 + 1)  # then a quarter per write
    second = Harness(tmp_path / "two")
    kf = second.sink.ingestor._filter
    validity = []
    for write in after:
        second.commit(*write)
        validity.append(kf.valid)
    assert validity[:3] == [False, False, False]
    assert validity[3:] == [True] * (len(after) - 3)
    assert _snapshot(second.conn) == expected
    second.close()



def _bare_keys(conn: sqlite3.Connection) -> dict[int, list[int]]:
    """Each timeline's link keys as the key filter holds them (Message-Id or jobId hash XOR recipient hash)."""
    return {tl: [k ^ r for k in (m, j) if k is not None and r is not None]
            for tl, m, j, r in conn.execute("SELECT id, mid_h, job_h, rcpt_h FROM corr_timelines")}


def test_pruning_rebuilds_the_key_filter_without_the_keys_of_the_timelines_it_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The filter can only be added to: a daemon that prunes under its size cap kept every key it ever stored
    until a restart, and at 20k records/s it filled up within hours (every miss probed: the correlator fell
    behind). Rebuilt from the store once as many timelines were pruned as it holds, a step per write."""
    from correlator import keyfilter, store

    monkeypatch.setattr(keyfilter, "FILTER_REBUILD_STEP", 40)
    outcomes = []
    for name, min_dead in (("rebuilt", 10), ("kept", 10**9)):
        monkeypatch.setattr(keyfilter, "FILTER_REBUILD_MIN_DEAD", min_dead)
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name)
        for write in CHUNKS[:_HALF]:
            h.commit(*write)
        before = _bare_keys(h.conn)
        h.sink.config = h.sink.config.model_copy(update={"max_db_size": 1})  # over the cap: one batch per run
        with monkeypatch.context() as m:
            m.setattr(store, "PRUNE_BATCH", 100)
            m.setattr(store, "PRUNE_BUDGET_S", 0.0)
            assert h.sink.maintain(h.conn) is True
        h.sink.config = h.sink.config.model_copy(update={"max_db_size": 10**12})
        kept = _bare_keys(h.conn)
        live = {k for keys in kept.values() for k in keys}
        dead = [k for tl, keys in before.items() if tl not in kept for k in keys if k not in live]
        assert len(before) - len(kept) == 100 and len(kept) > 50 and len(dead) > 50
        for write in CHUNKS[_HALF:]:
            h.commit(*write)
        ing = h.sink.ingestor
        now = [k for keys in _bare_keys(h.conn).values() for k in keys]
        assert ing._filter.may_contain(pl.Series(now, dtype=pl.Int64)).all()  # never too little
        outcomes.append((_snapshot(h.conn), ing._filter.may_contain(pl.Series(dead, dtype=pl.Int64)).sum(),
                         len(dead), ing._next_filter))
        h.close()
    (rebuilt, rebuilt_dead, n_dead, building), (kept_snap, kept_dead, _n, _b) = outcomes
    assert building is None  # the rebuild finished within the writes
    assert rebuilt_dead == 0  # ~0 false positives in 32 MiB at this load: every pruned key is gone
    assert kept_dead == n_dead
    assert rebuilt == kept_snap  # what is stored does not depend on the filter


SEARCH_INDEXES = {"corr_tl_t0", "corr_tl_vmta", "corr_tl_outcome"}


def test_a_store_without_history_links_the_same_timelines_and_keeps_nothing_else(tmp_path: Path) -> None:
    """oneshot's throwaway store (history=False): its output reads the timelines' link keys and vmta only
    (attribution), so events, queue events, flows and the API's search indexes are not written. Every
    timeline is exactly the one the full store holds, including merges, replayed lines and rotations."""
    batches = [*CORPUS, *(b for chunk in CHUNKS for b in chunk)]
    writes = {"per batch": [[b] for b in batches], "all at once": [batches],
              "with replays": [[b, b] for b in batches] + [batches[:5]]}
    (tmp_path / "full").mkdir()
    full = Harness(tmp_path / "full")
    for b in batches:
        full.commit(b)
    timelines, events, queue_events, flows = _snapshot(full.conn)
    full.close()
    assert len(timelines) > 300 and len(events) > len(timelines) and queue_events and flows
    for name, run in writes.items():
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name, history=False)
        for write in run:
            h.commit(*write)
        assert _snapshot(h.conn) == (timelines, [], [], []), name
        indexes = {r[0] for r in h.conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert not indexes & SEARCH_INDEXES and {"corr_tl_mid", "corr_tl_job", "corr_tl_rcpt"} <= indexes, name
        h.close()
    (tmp_path / "again").mkdir()
    h = Harness(tmp_path / "again")  # a store with history keeps its search indexes
    assert SEARCH_INDEXES <= {r[0] for r in h.conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    h.close()


@pytest.mark.parametrize("split", [3, 10])
def test_a_batch_stored_in_parts_stores_what_it_stores_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             split: int, one_run) -> None:
    """A batch of more than SPLIT_ROWS rows is prepared and linked in parts (their Python lists bounded): the same
    timelines, events, queue events and flows as one part, merges and replays included."""
    import correlator.ingest as ingest

    writes = [[*chunk, chunk[0]] for chunk in CHUNKS]  # a batch twice in one write: its replay is skipped
    whole = one_run(writes)
    monkeypatch.setattr(ingest, "SPLIT_ROWS", split)
    heights: list[int] = []
    real = ingest.Ingestor._group
    monkeypatch.setattr(ingest.Ingestor, "_group", lambda self, conn, group: heights.extend(f.height for f in group)
                        or real(self, conn, group))
    parts = _stored_in_one_run(tmp_path / "parts", writes)
    assert max(heights) == split
    assert parts == whole
    assert len(whole[0]) == 300 and max(len(b) for chunk in CHUNKS for b in chunk) > 2 * split  # cut in three or more


@pytest.mark.parametrize("writes", [
    [[DIAG_0], [ACCT_0], [DIAG_1, RECV], [ACCT_1], [BOUNCE], [FBL]],
    CHUNKS,
], ids=["corpus", "generated"])
def test_a_write_by_another_writer_reloads_the_key_filter(tmp_path: Path, writes: list[list[RecordBatch]],
                                                          caplog: pytest.LogCaptureFixture, one_run) -> None:
    """The key filter says "not stored" only for keys no write stored; a second writer of the same store (two
    processes at a restart did) stores keys this one's filter never saw, and its records then made new timelines
    instead of joining. The write sequence number shows a write by someone else: the filter is loaded again."""
    expected = one_run(writes)
    (tmp_path / "two").mkdir()
    first, second = Harness(tmp_path / "two"), Harness(tmp_path / "two")
    with caplog.at_level("WARNING", logger="correlator.ingest"):
        for n, write in enumerate(writes):
            (first if n % 2 else second).commit(*write)
    assert _snapshot(first.conn) == expected
    said = [r.getMessage() for r in caplog.records if "written by another writer" in r.getMessage()]
    assert len(said) == len(writes) - 2  # each write after the other's first, except the very first of each
    assert said[0].startswith("the correlator's store was written by another writer since this one's last write"
                              " (write_seq 2, expected 1): reloading its key filter")
    first.close()
    second.close()


def test_a_run_of_reports_about_deliveries_not_stored_is_stored_in_one_piece(tmp_path: Path) -> None:
    """Reports that match no key (their deliveries pruned, or never read) were each preceded by a flush of the rows
    before them, so that the store probes saw them: a run of them was stored one row at a time (~3 ms each), and the
    correlator stalled ~100 s holding the write lock (store-size review 2026-12-05). Only rows carrying the report's
    Message-Id or recipient call for that flush; a delivery of the same batch is still found."""
    from tests.test_correlator_support import batch

    head = "type,timeLogged,orig,rcpt,feedbackType,reportingMta,header_Message-Id\n"
    reports = batch("/var/log/pmta/fbl-2024-05-04-0000.csv", head + "".join(
        f"f,2024-05-04 08:{n // 60:02d}:{n % 60:02d}+0000,news@shop.example,u{n}@yahoo.com,abuse,fbl.example,"
        f"<gone{n}@shop.example>\n" for n in range(300)))
    h = Harness(tmp_path)
    flushes: list[int] = []
    real = h.sink.ingestor._flush_rows
    h.sink.ingestor._flush_rows = lambda conn, p, tls, seg, start, stop: (  # type: ignore[method-assign]
        flushes.append(stop - start), real(conn, p, tls, seg, start, stop))
    h.commit(reports)
    assert flushes == [300]  # one piece, not 299 pieces of one row and a last one
    assert h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 300
    h.commit(ACCT_0, FBL)  # a report after its delivery in one batch still joins it (the probe sees the row)
    from correlator import store

    (flags,) = [f for (f,) in h.conn.execute("SELECT flags FROM corr_timelines WHERE message_id = 'm1@shop.example'")]
    assert flags & store.FLAG[store.TYPE_CODES["d"]] and flags & store.FLAG[store.TYPE_CODES["f"]]  # alice's delivery and its complaint: one timeline
    h.close()
