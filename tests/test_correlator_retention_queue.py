"""Retention keeps the queue events (tq, `queue_deferred`) a kept timeline shows, and only those of timelines gone.

A timeline shows the tq records of its queue logged from its first event to its final d/b (or on, while pending):
timeline.py. Retention keeps a timeline while its latest event is recent, so the queue events it shows stay with it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from correlator import store
from exporter.config import CorrelatorConfig
from exporter.records import RecordBatch
from tests.test_correlator_support import Harness, batch

NOW = 1714780800.0  # 2024-05-04T00:00:00Z
H = 3600.0
DIAG_HEAD = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,dsnDiag,vmta,queue,header_Message-Id\n"


def _tq(t: float, queue: str = "gmail.com/vmta1") -> str:
    return f"tq,{t},,,,4.0.0 (other),smtp;421 later,{queue.split('/')[1]},{queue},\n"


def _kinds(h: Harness, mid: str) -> list[str]:
    """The event kinds of the message's one timeline, as GET /api/v1/messages/{mid} lists them."""
    async def get() -> list[str]:
        async with h.client() as c:
            r = await c.get(f"/api/v1/messages/{mid}")
            assert r.status_code == 200, r.text
            (tl,) = r.json()["recipients"]
            return [ev["kind"] for ev in tl["events"]]
    return asyncio.run(get())


def _queue_times(h: Harness) -> list[float]:
    """Times of the stored queue events, in hours from now."""
    return [round((r[0] - NOW) / H, 3) for r in h.conn.execute("SELECT t FROM corr_queue_events ORDER BY t")]


def _repro(tmp_path: Path, *before: RecordBatch) -> Harness:
    """The reported case: retention 1h; t at -3h, tq at -2.9h and -2.2h (its queue), t at -2.5h, d at -2h, complaint
    at -10 min: the timeline is kept (its latest event is 10 min old) and shows both tq. `before`: stored first."""
    h = Harness(tmp_path, CorrelatorConfig(retention="1h"), clock=lambda: NOW)
    if before:
        h.commit(*before, maintain=False)
    q = NOW - 3 * H
    rcpt = "news@shop,bob@gmail.com"
    diag = (f"t,{NOW - 3 * H},{q},{rcpt},4.7.0 (x),smtp;421 slow,vmta1,gmail.com/vmta1,<r1@shop>\n"
            + _tq(NOW - 2.9 * H) + _tq(NOW - 2.2 * H)
            + f"t,{NOW - 2.5 * H},{q},{rcpt},4.7.0 (x),smtp;421 slow,vmta1,gmail.com/vmta1,<r1@shop>\n")
    acct = (f"d,{NOW - 2 * H},{q},{rcpt},2.0.0 (success),smtp;250 ok,vmta1,gmail.com/vmta1,<r1@shop>\n")
    fbl = f"type,timeLogged,orig,rcpt,header_Message-Id\nf,{NOW - 600},news@shop,bob@gmail.com,<r1@shop>\n"
    h.commit(batch("/l/diag.csv", DIAG_HEAD + diag), batch("/l/acct.csv", DIAG_HEAD + acct),
             batch("/l/fbl.csv", fbl), maintain=False)
    return h


SHOWN = ["queued", "deferred", "queue_deferred", "deferred", "queue_deferred", "delivered", "complaint"]


def test_a_kept_timeline_keeps_the_queue_events_it_shows(tmp_path: Path) -> None:
    h = _repro(tmp_path)
    assert _kinds(h, "r1@shop") == SHOWN
    assert h.sink.maintain(h.conn) is False
    assert _kinds(h, "r1@shop") == SHOWN  # nothing of the kept timeline is cut
    assert _queue_times(h) == [-2.9, -2.2]
    h.close()


def test_queue_events_no_kept_timeline_shows_go(tmp_path: Path) -> None:
    h = _repro(tmp_path)
    # before the timeline's first event, after its final d, in another queue: no kept timeline shows them
    h.commit(batch("/l/diag2.csv", DIAG_HEAD + _tq(NOW - 3.5 * H) + _tq(NOW - 1.5 * H) + _tq(NOW - 2.5 * H, "yahoo.com/vmta1")
                   + _tq(NOW - 0.5 * H)), maintain=False)
    assert len(_queue_times(h)) == 6
    h.sink.maintain(h.conn)
    # the two it shows stay, and the one within retention
    assert _queue_times(h) == [-2.9, -2.2, -0.5]
    assert _kinds(h, "r1@shop") == SHOWN
    h.close()


def test_a_pending_kept_timeline_keeps_its_queue_events_up_to_now(tmp_path: Path) -> None:
    h = Harness(tmp_path, CorrelatorConfig(retention="1h"), clock=lambda: NOW)
    q = NOW - 3 * H
    rows = "".join(f"t,{NOW - a * H},{q},news@shop,carol@gmail.com,4.7.0 (x),smtp;421 slow,vmta1,gmail.com/vmta1,<p1@shop>\n"
                   for a in (3, 0.2))
    h.commit(batch("/l/diag.csv", DIAG_HEAD + rows + _tq(NOW - 2 * H) + _tq(NOW - 4 * H) + _tq(NOW - 2 * H, "x.com/vmta1")))
    assert _queue_times(h) == [-2]  # the first event's tq stays; before it, or of another queue, it goes
    assert _kinds(h, "p1@shop") == ["queued", "deferred", "queue_deferred", "deferred"]
    h.close()


def test_queue_events_go_with_the_last_timeline_that_shows_them(tmp_path: Path) -> None:
    h = _repro(tmp_path)
    h.sink.maintain(h.conn)
    assert len(_queue_times(h)) == 2
    assert store.prune(h.conn, NOW, 10**12).deleted == 1  # the complaint is past a later cutoff: the timeline goes
    assert _queue_times(h) == []
    h.close()


def test_over_the_size_cap_a_kept_timeline_keeps_its_queue_events(tmp_path: Path) -> None:
    # the cap prunes whole timelines, earliest stored first, whatever their age: here one stored before r1's
    h = _repro(tmp_path, batch("/l/acct0.csv", DIAG_HEAD + f"d,{NOW - 0.1 * H},{NOW - 0.2 * H},news@shop,n@gmail.com,"
                                                           "2.0.0 (success),smtp;250 ok,vmta1,gmail.com/vmta1,\n"))
    assert store.prune(h.conn, NOW - H, store.used_bytes(h.conn) - 1, batch=1, budget_s=0) == store.Pruned(1, True)
    assert h.conn.execute("SELECT count(*) FROM corr_timelines WHERE rcpt = 'n@gmail.com'").fetchone()[0] == 0
    assert _kinds(h, "r1@shop") == SHOWN
    assert _queue_times(h) == [-2.9, -2.2]
    h.close()


def test_many_kept_timelines_hold_back_what_they_may_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # past the first QUEUE_HOLDERS kept timelines that began before the cutoff (oldest first), queue events from the
    # next one's first event on wait for a later prune: never one that a kept timeline shows
    monkeypatch.setattr(store, "QUEUE_HOLDERS", 1)
    h = Harness(tmp_path, CorrelatorConfig(retention="1h"), clock=lambda: NOW)
    rows = "".join(
        f"t,{NOW - a * H},{NOW - a * H},news@shop,{who}@gmail.com,4.7.0 (x),smtp;421 slow,vmta1,gmail.com/vmta1,\n"
        f"t,{NOW - 0.1 * H},{NOW - a * H},news@shop,{who}@gmail.com,4.7.0 (x),smtp;421 slow,vmta1,gmail.com/vmta1,\n"
        for who, a in (("a", 5), ("b", 3)))
    tqs = _tq(NOW - 6 * H) + _tq(NOW - 4 * H) + _tq(NOW - 4 * H, "x.com/vmta1") + _tq(NOW - 2 * H, "x.com/vmta1")
    h.commit(batch("/l/diag.csv", DIAG_HEAD + rows + tqs))
    # -6h: before every timeline; -4h of x.com: no timeline of x.com among those read; -4h of gmail.com: a shows it;
    # -2h of x.com: after b's first event, b not read: kept for now
    assert _queue_times(h) == [-4, -2]
    h.close()
