"""A timeline's vmta, pool, queue and ISP are those of its latest attempt, whatever order the files are read in.

PMTA writes a message's deferrals to the diag file and its delivery to the acct file; the tailer may read either
first (they rotate apart), and one commit may hold both in any order. An operator who sees "delivered on vmta-B"
in PMTA's acct file must see vmta-B on the timeline, not the vmta of an earlier deferral read later.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.test_correlator_support import Harness, batch

DEFER = batch("/l/diag-0.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,queue,jobId,dsnStatus,dsnMta
t,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,vmta-a,pool-a,gmail.com/vmta-a,J7,\
4.7.28 (rate),gmail-smtp-in.l.google.com
""")
DELIVER = batch("/l/acct-0.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,queue,jobId,dsnStatus,dsnMta
d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,vmta-b,pool-b,gmail.com/vmta-b,J7,\
2.0.0 (ok),gmail-smtp-in.l.google.com
""")
LATEST = ("vmta-b", "pool-b", "gmail.com/vmta-b")

ORDERS = {
    "defer-then-deliver": [(DEFER,), (DELIVER,)],
    "deliver-then-defer": [(DELIVER,), (DEFER,)],
    "one-commit-acct-first": [(DELIVER, DEFER)],
    "one-commit-diag-first": [(DEFER, DELIVER)],
}


def _summary(h: Harness) -> list[tuple]:
    return h.conn.execute("SELECT vmta, vmta_pool, queue, attempts FROM corr_timelines").fetchall()


@pytest.mark.parametrize("order", list(ORDERS))
def test_vmta_pool_and_queue_are_the_latest_attempts(tmp_path: Path, order: str) -> None:
    h = Harness(tmp_path)
    for commit in ORDERS[order]:
        h.commit(*commit)
    assert _summary(h) == [(*LATEST, 2)]
    with h.reader() as r:
        item = r.by_id(h.conn.execute("SELECT id FROM corr_timelines").fetchone()[0])
    assert item is not None
    assert (item["vmta"], item["vmta_pool"]) == LATEST[:2]
    h.close()


def test_a_later_attempt_read_in_the_next_commit_still_wins_after_the_caches_are_dropped(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.commit(DELIVER)
    h.sink.ingestor.forget()
    h.commit(DEFER)
    assert _summary(h) == [(*LATEST, 2)]
    h.close()


def test_a_merge_keeps_the_vmta_of_the_latest_attempt_not_of_the_latest_record(tmp_path: Path) -> None:
    """The winner's last record is a complaint days later; the loser holds the later attempt: its vmta wins."""
    h = Harness(tmp_path)
    h.commit(DEFER)  # timeline 1: known by job J7
    h.commit(batch("/l/fbl-0.csv", """
type,timeLogged,orig,rcpt,jobId
f,2024-05-03 09:00:00+0000,a@s.example,zed@gmail.com,J7
"""))
    h.commit(batch("/l/acct-1.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,queue,dsnStatus,header_Message-Id
d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,b@s.example,zed@gmail.com,vmta-b,pool-b,gmail.com/vmta-b,\
2.0.0 (ok),<mz@s.example>
"""))  # timeline 3: known by Message-Id (and another sender, so no sender + timeQueued link)
    # the complaint waits apart (timeline 2): the only send of J7 read is a deferral, never delivered so far
    assert h.conn.execute("SELECT count(*) FROM corr_timelines").fetchone()[0] == 3
    h.commit(batch("/l/recv-0.csv", """
type,timeLogged,timeQueued,orig,rcpt,jobId,header_Message-Id
r,2024-05-01 10:00:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,J7,<mz@s.example>
"""))  # names both: the two merge, and take in the complaint (their delivery came before it)
    assert _summary(h) == [(*LATEST, 2)]
    h.close()


def test_a_store_written_before_attempt_times_learns_them_from_the_next_attempt(tmp_path: Path) -> None:
    """Schema 2 kept no attempt time: its timelines take the next attempt read (the old rule), then order by time."""
    h = Harness(tmp_path)
    h.commit(DEFER)
    h.close()
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    conn.executescript("""
        BEGIN;
        ALTER TABLE corr_timelines DROP COLUMN t_attempt;
        UPDATE corr_meta SET value = '2' WHERE key = 'schema_version';
        COMMIT;
    """)
    conn.close()
    h = Harness(tmp_path)
    assert h.conn.execute("SELECT vmta, t_attempt FROM corr_timelines").fetchall() == [("vmta-a", None)]
    h.commit(DELIVER)
    assert _summary(h) == [(*LATEST, 2)]
    h.commit(batch("/l/diag-1.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,queue,jobId,dsnStatus
t,2024-05-01 10:10:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,vmta-c,pool-c,gmail.com/vmta-c,J7,4.0.0
"""))  # an older deferral read last
    assert _summary(h) == [(*LATEST, 3)]
    h.close()


def _mx_isp(rcpt: str, dsn_mta: str) -> str:
    return "google" if "google" in dsn_mta else "other"


@pytest.mark.parametrize("order", ["fbl-acct-recv", "acct-recv-fbl", "acct-fbl-recv"])
def test_a_merge_takes_the_isp_of_the_side_with_an_attempt_not_a_complaint_only_timelines_guess(
        tmp_path: Path, order: str) -> None:
    """A complaint-only timeline has no attempt: its ISP is a guess from the recipient domain, and its latest
    record (the complaint, hours after the delivery) says nothing about which attempt is latest."""
    fbl = batch("/l/fbl-0.csv", "type,timeLogged,orig,rcpt,jobId,header_Message-Id\n"
                "f,2024-05-01 12:00:00+0000,other@s.example,zed@gmail.com,,<m@s>")
    head = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,dsnStatus,dsnMta,header_Message-Id\n"
    acct = batch("/l/acct-0.csv", head + "d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,a@s.example,"
                 "zed@gmail.com,v1,J1,2.0.0,gmail-smtp-in.l.google.com,")
    recv = batch("/l/recv-0.csv", head + "r,2024-05-01 10:00:00+0000,2024-05-01 10:00:00+0000,a@s.example,"
                 "zed@gmail.com,,J1,,,<m@s>")
    h = Harness(tmp_path, isp_of=_mx_isp)
    for name in order.split("-"):
        h.commit({"fbl": fbl, "acct": acct, "recv": recv}[name])
    assert h.conn.execute("SELECT vmta, isp, attempts FROM corr_timelines").fetchall() == [("v1", "google", 1)]
    h.close()


def test_a_field_the_latest_attempt_lacks_comes_from_the_latest_attempt_that_has_it_stored_or_not(
        tmp_path: Path) -> None:
    """Stored: the 10:20 delivery on pool-b. The next commit holds an older deferral (10:05, pool-a) and a later
    attempt without a pool (10:25): the pool stays pool-b, the vmta and queue become the 10:25 attempt's."""
    later_without_pool = batch("/l/diag-1.csv", """
type,timeLogged,timeQueued,orig,rcpt,vmta,vmtaPool,queue,jobId,dsnStatus,dsnMta
t,2024-05-01 10:25:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,vmta-c,,gmail.com/vmta-c,J7,\
4.7.28 (rate),gmail-smtp-in.l.google.com
""")
    for drop_cache in (False, True):
        (tmp_path / str(drop_cache)).mkdir()
        h = Harness(tmp_path / str(drop_cache))
        h.commit(DELIVER)
        if drop_cache:
            h.sink.ingestor.forget()
        h.commit(DEFER, later_without_pool)
        assert _summary(h) == [("vmta-c", "pool-b", "gmail.com/vmta-c", 3)], drop_cache
        h.close()
