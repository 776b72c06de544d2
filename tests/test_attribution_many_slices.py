"""The metrics' attribution of a report finds the send linking joins it to in a store with many day slices per
generation.

A generation holds 2**GEN_BITS timelines, and each day its timelines were queued on is a slice of its own: at a low
rate one generation spans months (a daily job of a few thousand recipients: 366 slices in one generation after a
year). The store search went through the slices in steps of 8, 16, ... and stopped at the first step with a send
queued and delivered before the report, taken as the newest because its ids were above the step's generation; but
the slices of one generation were listed oldest day first, and every id of the generation is above that bound: the
first step (the 8 oldest days) always answered. A complaint about day 300's digest was counted under day 7's VMTA,
whatever day it was about, while linking joined it to day 300's send. The slices are now searched newest first
(generation, then day), and a search stops when no slice left may hold a later send.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from correlator import attribution, store
from exporter.config import CorrelatorConfig
from tests.test_correlator_support import NOW, Harness, batch, vp

ACCT = "type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,jobId,header_Message-Id\n"
FBL = "type,timeLogged,orig,rcpt,feedbackType,jobId,header_Message-Id\n"
DAY = 86400
DAYS = 365
START = NOW - DAYS * DAY
ABOUT = (100, 200, 300, 301, 362, 363)
"""The days of the sends the complaints are about (the last send is day 364's)."""


def ts(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S+0000")


def queued(day: int) -> float:
    return START + day * DAY + 5 * 3600


def _store(tmp: Path, order: list[int], others: int = 2, mid: str = "") -> Harness:
    """A daily digest (job DIGEST) to seed@gmail.com for a year, day d's on VMTA v<d> (Message-Id <mid> every day if
    given, else its own), with `others` messages a day to other recipients; the days written in `order`, 50 a
    commit, the link cache and the in-memory index dropped after: the reports are answered by the store."""
    h = Harness(tmp, config=CorrelatorConfig(retention=400.0 * DAY))
    for start in range(0, len(order), 50):
        rows = []
        for day in order[start:start + 50]:
            q = queued(day)
            rows.append(f"d,{ts(q + 60)},{ts(q)},n@s.example,seed@gmail.com,v{day},p,DIGEST,<{mid or f'dg{day}'}@s>")
            rows += [f"d,{ts(q + 60 + k)},{ts(q + k)},n@s.example,u{k}@gmail.com,w,p,J{day},<x{day}-{k}@s>"
                     for k in range(others)]
        h.commit(batch(f"/l/acct-{start}.csv", ACCT + "\n".join(rows) + "\n"), maintain=False)
    h.sink.ingestor.forget()
    h.sink.recent.committed()  # (as the next write does): the in-memory index lets go of the committed rows
    assert len(h.sink.recent) == 0
    h.sink.attributor.timer = lambda: 0.0  # no search cut by a loaded machine's pause
    return h


def _complaints(name: str, job: str = "DIGEST", mid: str = "") -> Any:
    """A complaint about each day of ABOUT, two hours after its send was queued (a resend is queued the next day)."""
    return batch(f"/l/{name}.csv", FBL + "".join(
        f"f,{ts(queued(day) + 7200)},n@s.example,seed@gmail.com,abuse,{job},{mid and f'<{mid}@s>'}\n"
        for day in ABOUT))


def _linked(h: Harness, reports: Any) -> list[str]:
    """The VMTA of the timeline linking joins each report to."""
    h.commit(reports, maintain=False)
    return [vmta for (vmta,) in h.conn.execute(
        "SELECT t.vmta FROM corr_events AS e JOIN corr_timelines AS t ON t.id = e.tl WHERE e.type = ? ORDER BY e.id",
        (store.TYPE_CODES["f"],))]


WANT = [(f"v{day}", "p") for day in ABOUT]


@pytest.mark.parametrize("written", ["in-order", "reversed", "shuffled"])
@pytest.mark.parametrize("key", ["job", "mid"])
def test_a_report_is_counted_under_the_send_it_is_about_in_a_generation_of_many_days(
        tmp_path: Path, written: str, key: str) -> None:
    """One generation of 365 day slices: by jobId + rcpt, and by Message-Id + rcpt (the
    same Message-Id every day: the batch's first-step statement, then the searches it did not settle). The send
    linking joins, whatever order the days were written in."""
    order = list(range(DAYS))
    if written == "reversed":
        order.reverse()
    elif written == "shuffled":
        random.Random(7).shuffle(order)
    h = _store(tmp_path, order, mid="digest" if key == "mid" else "")
    dated = [v for (v,) in h.conn.execute("SELECT day FROM corr_days") if store.dated_generation(v)]
    assert (len(dated), {store.dated_generation(v) for v in dated}) == (DAYS, {1})
    reports = _complaints("fbl", *(("DIGEST", "") if key == "job" else ("", "digest")))
    assert vp(h.sink.lookup_vmta(reports.columns, reports.rows)) == WANT
    assert h.sink.attributor.skipped == 0
    assert _linked(h, reports) == [vmta for vmta, _pool in WANT]
    h.close()


def test_a_report_about_a_recent_send_seeks_the_newest_days_only(tmp_path: Path) -> None:
    """Newest day first: a complaint about yesterday's digest is settled by the first step (the undated slice and the
    8 newest days), one about an older send seeks back to the step holding its day and no further (steps of 8, 16,
    32, then 64 days); so a burst of recent complaints stays within the seek budget, as before."""
    assert (attribution.FIRST_STEP, attribution.MAX_STEP) == (8, 64)
    h = _store(tmp_path, list(range(DAYS)), others=0)
    att = h.sink.attributor
    for day, seeks in ((363, 1 + 8), (362, 1 + 8), (300, 1 + 8 + 16 + 32 + 64), (100, 1 + 8 + 16 + 32 + 64 * 4)):
        reports = batch("/l/one.csv", FBL + f"f,{ts(queued(day) + 7200)},n@s.example,seed@gmail.com,abuse,DIGEST,\n")
        before = att.seeks
        assert vp(h.sink.lookup_vmta(reports.columns, reports.rows)) == [(f"v{day}", "p")]
        assert att.seeks - before == seeks, day
    h.close()


@pytest.mark.parametrize("key", ["job", "mid"])
def test_a_report_is_counted_under_the_send_it_is_about_across_generations_of_many_days(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """Generations of 64 timelines (3 a day: ~21 days each, 18 generations): the search goes from generation to
    generation, newest first, and within one from day to day (a step of the search may end inside a generation)."""
    monkeypatch.setattr(store, "GEN_BITS", 6)
    h = _store(tmp_path, list(range(DAYS)), others=2, mid="digest" if key == "mid" else "")
    dated = [v for (v,) in h.conn.execute("SELECT day FROM corr_days") if store.dated_generation(v)]
    assert len({store.dated_generation(v) for v in dated}) == 18 and len(dated) > DAYS
    reports = _complaints("fbl", *(("DIGEST", "") if key == "job" else ("", "digest")))
    assert vp(h.sink.lookup_vmta(reports.columns, reports.rows)) == WANT
    assert _linked(h, reports) == [vmta for vmta, _pool in WANT]
    h.close()
