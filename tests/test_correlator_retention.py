"""Retention by age and by size, pruned in bounded batches by maintain()."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from correlator import store
from exporter.config import CorrelatorConfig
from tests.test_correlator_support import Harness, batch

DAY = 86400.0
T0 = 1714521600.0  # 2024-05-01T00:00:00Z


def _acct(name: str, start: float, n: int, prefix: str) -> object:
    rows = "\n".join(f"d,{start + i},{start + i},s@shop.example,{prefix}{i}@gmail.com,v1,J-{prefix}" for i in range(n))
    return batch(f"/l/{name}.csv", "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId\n" + rows)


def _counts(h: Harness) -> tuple[int, int, int, int]:
    q = h.conn.execute
    return (q("SELECT count(*) FROM corr_timelines").fetchone()[0], q("SELECT count(*) FROM corr_events").fetchone()[0],
            q("SELECT count(*) FROM corr_queue_events").fetchone()[0], q("SELECT count(*) FROM corr_flows").fetchone()[0])


def test_age_retention_keeps_recent_and_late_reported_timelines(tmp_path: Path) -> None:
    clock = [T0 + DAY]
    h = Harness(tmp_path, CorrelatorConfig(retention="7d"), clock=lambda: clock[0])
    h.commit(_acct("old", T0, 30, "old"))
    h.commit(batch("/l/diag.csv", f"type,timeLogged,queue,vmta\ntq,{T0 + 5},gmail.com/v1,v1\n"))
    # the clock moves with the records (one more than a day ahead of it is not believed); no retention runs yet
    clock[0] = T0 + 9 * DAY
    h.commit(_acct("new", T0 + 9 * DAY, 5, "new"), maintain=False)
    # a complaint 6 days after the delivery keeps old0's timeline alive
    h.commit(batch("/l/fbl.csv", f"type,timeLogged,orig,rcpt\nf,{T0 + 6 * DAY},s@shop.example,old0@gmail.com\n"),
             maintain=False)
    assert _counts(h) == (35, 36, 1, 3)
    clock[0] = T0 + 10 * DAY  # cutoff: day 3
    h.sink.maintain(h.conn)
    assert _counts(h) == (6, 7, 0, 2)  # old0 (last event day 6) + 5 new; the tq and the day-0 bucket are gone
    rcpts = {r[0] for r in h.conn.execute("SELECT rcpt FROM corr_timelines")}
    assert rcpts == {"old0@gmail.com"} | {f"new{i}@gmail.com" for i in range(5)}
    assert h.sink.timelines_pruned == 29
    # late records of the same deliveries (same timeQueued): old0 is still there, old1 was pruned and
    # comes back as a new timeline (nothing may link to a deleted id)
    rows = "\n".join(f"rs,{T0 + 10 * DAY},{T0 + i},s@shop.example,old{i}@gmail.com,v1,J-old" for i in range(2))
    h.commit(batch("/l/late.csv", "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId\n" + rows))
    orphans = h.conn.execute("SELECT count(*) FROM corr_events WHERE tl NOT IN (SELECT id FROM corr_timelines)")
    assert orphans.fetchone()[0] == 0
    assert _counts(h)[0] == 7  # old0 existed, old1 is new
    h.close()


def test_prune_works_in_bounded_batches(tmp_path: Path) -> None:
    h = Harness(tmp_path, clock=lambda: T0)
    h.commit(_acct("a", T0, 50, "a"))
    cutoff = T0 + DAY
    # a zero budget still does one batch per call, in its own short transaction
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=0).deleted == 20
    assert not h.conn.in_transaction
    assert _counts(h)[:2] == (30, 30)
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=0) == store.Pruned(20, more=True)
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=5) == store.Pruned(10, more=False)
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=5) == store.Pruned(0, more=False)
    h.close()


def test_size_cap_prunes_the_earliest_stored_first(tmp_path: Path) -> None:
    h = Harness(tmp_path, clock=lambda: T0)
    h.commit(_acct("b", T0 + 100, 40, "b"))  # stored first, though queued later than the a's
    h.commit(_acct("a", T0, 40, "a"))
    used = store.used_bytes(h.conn)
    # within retention, but over the cap: the earliest stored go (whole pages of every index at once),
    # one batch per call with a zero budget, and the call says whether the store is still over the cap
    assert store.prune(h.conn, 0.0, used - 1, batch=10, budget_s=0) == store.Pruned(10, more=True)
    kept = {r[0] for r in h.conn.execute("SELECT rcpt FROM corr_timelines")}
    assert kept == {f"b{i}@gmail.com" for i in range(10, 40)} | {f"a{i}@gmail.com" for i in range(40)}
    assert store.prune(h.conn, 0.0, 10**12, batch=10, budget_s=0) == store.Pruned(0, more=False)  # under the cap
    h.close()


def test_over_the_cap_pruning_goes_on_until_under_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, clock=lambda: T0)
    h.commit(_acct("a", T0, 2000, "a"))
    cap = store.used_bytes(h.conn) // 2
    calls, deleted = 0, 0
    while True:
        calls += 1
        pruned = store.prune(h.conn, 0.0, cap, batch=100, budget_s=0)
        deleted += pruned.deleted
        if not pruned.more:
            break
    assert store.used_bytes(h.conn) <= cap
    assert calls > 2  # one batch per call: the caller was told to come back
    assert deleted == 2000 - _counts(h)[0]
    assert store.prune(h.conn, 0.0, cap, batch=100, budget_s=0) == store.Pruned(0, more=False)
    h.close()


def test_another_writer_gets_the_lock_between_prune_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The correlator process prunes while the daemon commits checkpoints to the same file: each pause between
    two batches leaves the write lock free (a writer that cannot wait at all gets it)."""
    h = Harness(tmp_path, clock=lambda: T0)
    h.commit(_acct("a", T0, 50, "a"))
    other = sqlite3.connect(h.db, isolation_level=None, timeout=0)
    took: list[bool] = []

    def pause(seconds: float) -> None:
        assert seconds == 0.25
        other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if a prune transaction is still open
        other.execute("INSERT OR REPLACE INTO checkpoints VALUES ('daemon', ?)", (len(took),))
        other.execute("COMMIT")
        took.append(True)

    monkeypatch.setattr(store.time, "sleep", pause)
    assert store.prune(h.conn, T0 + DAY, 10**12, batch=10, budget_s=5, pause_s=0.25) == store.Pruned(50, more=False)
    assert len(took) == 5  # after each batch that deleted something; none after the last, empty one
    assert store.prune(h.conn, T0 + DAY, 10**12, batch=10, budget_s=5) == store.Pruned(0, more=False)
    assert len(took) == 5  # no pause asked, none taken
    other.close()
    h.close()


def test_maintain_says_when_pruning_has_more_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, clock=lambda: T0)
    h.commit(_acct("a", T0, 3000, "a"))
    h.sink.config = h.sink.config.model_copy(update={"max_db_size": store.used_bytes(h.conn) // 10})
    monkeypatch.setattr(store, "PRUNE_BATCH", 100)
    monkeypatch.setattr(store, "PRUNE_BUDGET_S", 0.0)
    runs = 1
    assert h.sink.maintain(h.conn) is True
    while h.sink.maintain(h.conn):
        runs += 1
    assert runs > 10
    assert store.used_bytes(h.conn) <= h.sink.config.max_db_size
    assert h.sink.maintain(h.conn) is False
    h.close()


def test_maintain_inside_an_open_transaction_uses_it(tmp_path: Path) -> None:
    clock = [T0]
    h = Harness(tmp_path, clock=lambda: clock[0])
    h.commit(_acct("a", T0, 5, "a"))
    clock[0] = T0 + 30 * DAY
    h.conn.execute("BEGIN IMMEDIATE")
    h.sink.maintain(h.conn)
    assert h.conn.in_transaction
    h.conn.execute("ROLLBACK")
    assert _counts(h)[0] == 5
    h.close()


def test_a_prune_that_fails_after_a_committed_batch_leaves_no_link_to_a_deleted_timeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune commits batch by batch; the write lock refused to a later batch (the correlator process retries)
    left the link caches naming the timelines already deleted, and a late bounce was stored as an event of a
    timeline that no longer exists. The caches are dropped whatever the prune's end."""
    clock = [T0 + DAY]
    h = Harness(tmp_path, CorrelatorConfig(retention="7d"), clock=lambda: clock[0])
    h.commit(batch("/l/acct.csv", "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId\n"
                   f"d,{T0 + 600},{T0},a@s.example,zed@gmail.com,v1,J7\n"))
    clock[0] = T0 + 10 * DAY
    real, calls = store.begin_immediate, [0]

    def locked_after_the_first(conn, *args, **kw):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] >= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(conn, *args, **kw)

    monkeypatch.setattr(store, "begin_immediate", locked_after_the_first)
    with pytest.raises(sqlite3.OperationalError):
        h.sink.maintain(h.conn)
    monkeypatch.undo()
    assert _counts(h)[0] == 0  # the first batch deleted it, and was committed
    h.commit(batch("/l/bounce.csv", "type,timeLogged,orig,rcpt,jobId\n"
                   f"rb,{T0 + 10 * DAY},a@s.example,zed@gmail.com,J7\n"))
    orphans = h.conn.execute("SELECT count(*) FROM corr_events WHERE tl NOT IN (SELECT id FROM corr_timelines)")
    assert orphans.fetchone()[0] == 0 and _counts(h)[:2] == (1, 1)
    h.close()


def test_a_forward_step_of_the_system_clock_prunes_nothing_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The cutoff came from time.time(): a clock stepped a day ahead for seconds (a VM resumed, a bad NTP source)
    deleted every timeline older than 6 days of a 7-day retention at once, for good, without a word (review
    2026-12-05). Retention's clock follows a forward step at twice real time and logs it."""
    import time

    from correlator import wallclock

    now = time.time()
    h = Harness(tmp_path, CorrelatorConfig(retention="7d"), clock=time.time)
    h.commit(_acct("older", now - 6.5 * DAY, 5, "older"), maintain=False)
    h.commit(_acct("fresh", now - 60, 5, "fresh"), maintain=False)
    h.sink.maintain(h.conn)
    assert _counts(h)[0] == 10
    real = time.time
    monkeypatch.setattr(wallclock.time, "time", lambda: real() + DAY)  # a day ahead, for the two runs below
    with caplog.at_level("WARNING", logger="watchtower.correlator"):
        h.sink.maintain(h.conn)
        h.sink.maintain(h.conn)
    assert _counts(h)[0] == 10
    assert [r.getMessage().split(" ahead")[0] for r in caplog.records] == ["the system clock jumped 86400 s"]
    h.close()


def test_retention_clock_follows_back_at_once_and_forward_at_twice_real_time() -> None:
    from correlator.wallclock import SteadyWallClock

    wall, mono = [1000.0], [0.0]
    clock = SteadyWallClock(lambda: wall[0], lambda: mono[0])

    def tick(seconds: float, step: float = 0.0) -> float:
        mono[0] += seconds
        wall[0] += seconds + step
        return clock()

    assert tick(10) == 1010.0  # running true
    assert tick(1, step=0.001) == wall[0] == 1011.001  # a slew is followed as it is
    assert tick(10, step=DAY) == pytest.approx(1031.001)  # stepped a day ahead: 2x the 10 s that passed
    assert tick(0, step=-DAY) == wall[0] == pytest.approx(1021.001)  # corrected at once: followed back, no harm done
    assert tick(10, step=-3600) == wall[0]  # a step back: followed at once (pruning waits)
    start = wall[0]
    assert tick(100, step=1000) == pytest.approx(start + 200)  # a real correction is caught up with at 2x ...
    for _ in range(8):
        assert tick(100) < wall[0]
    assert tick(100) == wall[0]  # ... in as long as the step was
