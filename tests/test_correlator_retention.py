"""Retention by age and by size, pruned in bounded batches by maintain()."""

from __future__ import annotations

from pathlib import Path

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
    h.commit(_acct("new", T0 + 9 * DAY, 5, "new"))
    # a complaint 6 days after the delivery keeps old0's timeline alive
    h.commit(batch("/l/fbl.csv", f"type,timeLogged,orig,rcpt\nf,{T0 + 6 * DAY},s@shop.example,old0@gmail.com\n"))
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
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=0) == 20
    assert not h.conn.in_transaction
    assert _counts(h)[:2] == (30, 30)
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=0) == 20
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=5) == 10
    assert store.prune(h.conn, cutoff, 10**12, batch=20, budget_s=5) == 0
    h.close()


def test_size_cap_prunes_oldest_first(tmp_path: Path) -> None:
    h = Harness(tmp_path, clock=lambda: T0)
    h.commit(_acct("a", T0, 40, "a"))
    h.commit(_acct("b", T0 + 100, 40, "b"))
    used = store.used_bytes(h.conn)
    # within retention, but over the cap: the oldest go, one batch per call with a zero budget
    assert store.prune(h.conn, 0.0, used - 1, batch=10, budget_s=0) == 10
    kept = {r[0] for r in h.conn.execute("SELECT rcpt FROM corr_timelines")}
    assert kept == {f"a{i}@gmail.com" for i in range(10, 40)} | {f"b{i}@gmail.com" for i in range(40)}
    assert store.prune(h.conn, 0.0, 10**12, batch=10, budget_s=0) == 0  # under the cap: nothing
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
