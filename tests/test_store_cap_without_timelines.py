"""The size cap sheds the store's oldest data of every kind, and the writer's slice list follows every prune.

Review 2026-12-06 (reproduced): a store over `correlator.max_db_size` whose bulk was queue events (`tq`) within
retention lost every timeline and kept the queue events: over the cap only timelines were deleted, queue events and
flows only before the oldest timeline kept, which with none left fell back to the retention cutoff. The cap was never
reached, and each new timeline was deleted within seconds, without a word.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from correlator import store
from exporter.config import CorrelatorConfig
from tests.test_correlator_support import Harness, batch

NOW = 1714780800.0  # 2024-05-04T00:00:00Z
H = 3600.0
DIAG_HEAD = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,queue,header_Message-Id\n"
ACCT_HEAD = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,header_Message-Id\n"
QUEUES = ("gmail.com/vmta1", "yahoo.com/vmta1", "outlook.com/vmta2", "gmx.de/vmta2")
TQ = 6000
"""Queue events of the last 3 hours, 1.8 s apart (the reviewer's: 400,000)."""
DELIVERED = 120
"""Deliveries 50 minutes ago (the reviewer's: ~12,000)."""


def _tq_time(i: int) -> float:
    return NOW - 3 * H + i * 1.8


def _diag() -> str:
    return DIAG_HEAD + "".join(
        f"tq,{_tq_time(i)},,,,4.7.0 (other),smtp;421 4.7.0 [TS01] try again later {i:06d},"
        f"{QUEUES[i % 4].split('/')[1]},{QUEUES[i % 4]},\n" for i in range(TQ))


def _acct(n: int, at: float, prefix: str) -> str:
    return ACCT_HEAD + "".join(
        f"d,{at + i * 0.5},{at - 60 + i * 0.5},news@shop.example,{prefix}{i}@gmail.com,vmta1,J-{prefix},<{prefix}{i}@shop>\n"
        for i in range(n))


def _counts(h: Harness) -> tuple[int, int, int]:
    q = h.conn.execute
    return (q("SELECT count(*) FROM corr_timelines").fetchone()[0], q("SELECT count(*) FROM corr_events").fetchone()[0],
            q("SELECT count(*) FROM corr_queue_events").fetchone()[0])


def _kept_tq(h: Harness) -> list[int]:
    """The index (in _diag) of each stored queue event, oldest first."""
    return [round((t - _tq_time(0)) / 1.8) for (t,) in h.conn.execute("SELECT t FROM corr_queue_events ORDER BY t")]


def _reproduction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Harness, int]:
    """The reviewer's store, scaled down: queue events of 3 hours, then deliveries of 50 minutes ago; retention 7 d.
    The cap: half of what it holds, reachable by the queue events older than every timeline alone. One batch per
    maintenance run (the daemon's: 20,000 timelines or 100,000 queue events)."""
    monkeypatch.setattr(store, "PRUNE_BATCH", 200)
    monkeypatch.setattr(store, "PRUNE_BUDGET_S", 0.0)
    h = Harness(tmp_path, CorrelatorConfig(retention="7d"), clock=lambda: NOW)
    h.commit(batch("/l/diag.csv", _diag()), maintain=False)
    h.commit(batch("/l/acct.csv", _acct(DELIVERED, NOW - 50 * 60, "r")), maintain=False)
    assert _counts(h) == (DELIVERED, DELIVERED, TQ)
    cap = store.used_bytes(h.conn) // 2
    h.sink.config = h.sink.config.model_copy(update={"max_db_size": cap})
    return h, cap


def _maintain_until_done(h: Harness, most: int = 200) -> int:
    runs = 1
    while h.sink.maintain(h.conn):
        runs += 1
        assert runs < most
    return runs


def _found(h: Harness, mid: str) -> int:
    async def get() -> int:
        async with h.client() as c:
            return (await c.get(f"/api/v1/messages/{mid}")).status_code
    return asyncio.run(get())


def test_over_the_cap_the_oldest_queue_events_go_before_newer_timelines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h, cap = _reproduction(tmp_path, monkeypatch)
    before = store.used_bytes(h.conn)
    runs = _maintain_until_done(h)
    assert store.used_bytes(h.conn) <= cap < before
    assert runs > 2  # a bounded batch per run, the caller told to come back
    tl, ev, qe = _counts(h)
    assert (tl, ev) == (DELIVERED, DELIVERED)  # every timeline kept: older data made room
    kept = _kept_tq(h)
    assert kept == list(range(TQ - qe, TQ))  # the oldest went, every newer one is kept
    assert 0 < qe < TQ
    first_t0 = h.conn.execute("SELECT min(t0) FROM corr_timelines").fetchone()[0]
    assert _tq_time(kept[0]) < first_t0  # no newer data went than needed: queue events older than them are left
    assert _found(h, "r0@shop") == 200
    assert h.sink.maintain(h.conn) is False and _counts(h) == (tl, ev, qe)  # under the cap: nothing more goes
    h.close()


def test_fresh_timelines_stay_in_a_store_kept_at_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's 5 fresh deliveries were findable for ~5 s, then deleted for good (minutes old, 7 d retention)."""
    h, cap = _reproduction(tmp_path, monkeypatch)
    _maintain_until_done(h)
    for n in range(3):  # the store grows again past the cap with every write; older queue events make room
        h.commit(batch(f"/l/acct-{n}.csv", _acct(5, NOW - 60, f"fresh{n}-")), maintain=False)
        _maintain_until_done(h)
        assert store.used_bytes(h.conn) <= cap
    assert _counts(h)[:2] == (DELIVERED + 15, DELIVERED + 15)
    assert all(_found(h, f"fresh{n}-{i}@shop") == 200 for n in range(3) for i in range(5))
    h.close()


def test_over_the_cap_with_no_timeline_a_prune_sheds_the_oldest_queue_events(tmp_path: Path) -> None:
    """The store after the reviewer's run: 0 timelines, 400,000 queue events within retention, over the cap."""
    h = Harness(tmp_path, CorrelatorConfig(retention="7d"), clock=lambda: NOW)
    h.commit(batch("/l/diag.csv", _diag()), maintain=False)
    used = store.used_bytes(h.conn)
    # within retention, over the cap: one batch (5 queue events per timeline of a batch), the oldest, and more to do
    assert store.prune(h.conn, NOW - 7 * 24 * H, used // 2, batch=100, budget_s=0) == store.Pruned(0, more=True)
    assert _kept_tq(h) == list(range(500, TQ))
    assert store.used_bytes(h.conn) < used
    while store.prune(h.conn, NOW - 7 * 24 * H, used // 2, batch=100, budget_s=0).more:
        pass
    assert store.used_bytes(h.conn) <= used // 2
    assert _kept_tq(h) == list(range(TQ - _counts(h)[2], TQ))
    h.close()


def test_over_the_cap_every_kind_goes_oldest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old timelines, then queue events, then new timelines: each batch deletes only data older than all it keeps."""
    monkeypatch.setattr(store, "PRUNE_BATCH", 40)
    monkeypatch.setattr(store, "PRUNE_BUDGET_S", 0.0)
    h = Harness(tmp_path, CorrelatorConfig(retention="7d"), clock=lambda: NOW)
    h.commit(batch("/l/old.csv", _acct(100, NOW - 4 * H, "old")), maintain=False)  # t0 -4h, before every tq
    h.commit(batch("/l/diag.csv", _diag()), maintain=False)
    h.commit(batch("/l/new.csv", _acct(100, NOW - 10 * 60, "new")), maintain=False)  # after every tq
    h.sink.config = h.sink.config.model_copy(update={"max_db_size": store.used_bytes(h.conn) // 3})
    times = "SELECT t0 FROM corr_timelines UNION ALL SELECT t FROM corr_queue_events"
    kept_before = sorted(t for (t,) in h.conn.execute(times))
    while True:
        more = h.sink.maintain(h.conn)
        kept = sorted(t for (t,) in h.conn.execute(times))
        gone = len(kept_before) - len(kept)
        assert kept == kept_before[gone:]  # what went is the oldest, whatever its kind
        kept_before = kept
        if not more:
            break
    assert store.used_bytes(h.conn) <= h.sink.config.max_db_size
    tl = h.conn.execute("SELECT count(*), min(rcpt) FROM corr_timelines WHERE rcpt LIKE 'new%'").fetchone()
    assert tl == (100, "new0@gmail.com")  # the new timelines are all kept, the old ones all gone
    assert h.conn.execute("SELECT count(*) FROM corr_timelines WHERE rcpt LIKE 'old%'").fetchone() == (0,)
    assert _counts(h)[2] > 0
    h.close()


def test_a_cap_the_correlator_cannot_reach_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Over the cap with nothing of its own left to delete (the rest of the file is not the correlator's): one WARNING
    naming the store and the sizes, and a problem the daemon can show, instead of silence."""
    monkeypatch.setattr(store, "PRUNE_BUDGET_S", 5.0)
    h = Harness(tmp_path, CorrelatorConfig(retention="7d"), clock=lambda: NOW)
    h.conn.execute("CREATE TABLE ballast (b BLOB)")
    h.conn.execute("INSERT INTO ballast VALUES (zeroblob(4 * 1024 * 1024))")
    h.commit(batch("/l/diag.csv", _diag()), batch("/l/acct.csv", _acct(20, NOW - 600, "r")), maintain=False)
    cap = 4 * 1024 * 1024  # below the ballast alone
    h.sink.config = h.sink.config.model_copy(update={"max_db_size": cap})
    assert h.sink.store_problem is None
    with caplog.at_level(logging.WARNING, logger="watchtower.correlator"):
        results = [h.sink.maintain(h.conn) for _ in range(4)]
    assert results[-1] is False  # no busy loop over what cannot be deleted
    assert _counts(h) == (0, 0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    used = store.used_bytes(h.conn)
    assert str(h.db) in warnings[0] and f"{used / 1024**2:.1f} MiB" in warnings[0] and "4.0 MiB" in warnings[0]
    assert h.sink.store_problem is not None and str(h.db) in h.sink.store_problem
    h.conn.execute("DROP TABLE ballast")
    assert h.sink.maintain(h.conn) is False
    assert h.sink.store_problem is None  # under the cap again: the problem is gone
    h.close()


def test_a_slice_unlisted_by_a_prune_that_deleted_nothing_is_listed_again_when_a_timeline_lands_there(
        tmp_path: Path) -> None:
    """The reviewer's lead, reproduced: a prune that deleted no timeline unlisted an emptied slice (its day passed the
    cutoff), the writer was not told and kept it in its slice list, so a later timeline of that day was stored in a
    slice missing from corr_days: a lookup without a scope did not find it."""
    day = 86400.0
    t0 = 1714521600.0  # 2024-05-01T00:00:00Z
    clock = [t0 + 12 * H]
    h = Harness(tmp_path, CorrelatorConfig(retention="1d"), clock=lambda: clock[0])
    h.commit(batch("/l/a.csv", ACCT_HEAD + f"d,{t0 + 10 * H},{t0 + 10 * H},s@shop,a@gmail.com,v1,JA,<a@shop>\n"),
             maintain=False)
    (slice_a,) = [v for (v,) in h.conn.execute("SELECT qday FROM corr_timelines")]
    clock[0] = t0 + day + 12 * H  # cutoff t0 + 12h: a goes; its slice stays listed (its day is the cutoff's)
    h.sink.maintain(h.conn)
    assert h.sink.timelines_pruned == 1
    assert (slice_a,) in h.conn.execute("SELECT day FROM corr_days").fetchall()
    h.commit(batch("/l/b.csv", ACCT_HEAD + f"d,{t0 + day + 11 * H},{t0 + day + 11 * H},s@shop,b@gmail.com,v1,JB,"
                                           "<b@shop>\n"), maintain=False)  # the writer reads the slice list again
    clock[0] = t0 + 2 * day + H  # cutoff t0 + 1d + 1h: nothing to delete, the empty slice of day 0 is unlisted
    h.sink.maintain(h.conn)
    assert h.sink.timelines_pruned == 1
    assert (slice_a,) not in h.conn.execute("SELECT day FROM corr_days").fetchall()
    # a delivery queued on day 0, 26 h before: a new timeline in the same slice
    h.commit(batch("/l/c.csv", ACCT_HEAD + f"d,{t0 + 2 * day + H},{t0 + 23 * H},s@shop,c@gmail.com,v1,JC,<c@shop>\n"),
             maintain=False)
    (slice_c,) = h.conn.execute("SELECT qday FROM corr_timelines WHERE rcpt = 'c@gmail.com'").fetchone()
    assert slice_c == slice_a
    assert (slice_c,) in h.conn.execute("SELECT day FROM corr_days").fetchall()
    assert _found(h, "c@shop") == 200
    h.close()
