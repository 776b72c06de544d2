"""Linking rules that must hold the same whether a key is answered by the link cache or by the store.

The cache is an optimisation: a daemon that restarts (or drops its caches after a prune) must link every later
record exactly as the one that kept running would. Each test here reads the same records twice, once with the
caches kept and once with them dropped before the record under test, and expects one answer, the documented one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from correlator.keys import message_hash
from exporter.records import RecordBatch
from tests.test_correlator_support import Harness, batch

HEAD = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,dsnStatus,header_Message-Id\n"


def _timelines(h: Harness) -> list[tuple]:
    """(message_id, job_id, vmta, type codes of its records, sorted) per timeline, in id order."""
    rows = h.conn.execute(
        "SELECT t.message_id, t.job_id, t.vmta, group_concat(e.type, '') FROM corr_timelines AS t"
        " LEFT JOIN (SELECT tl, type FROM corr_events ORDER BY id) AS e ON e.tl = t.id GROUP BY t.id ORDER BY t.id"
    ).fetchall()
    return [(mid, job, vmta, "".join(sorted(kinds or ""))) for mid, job, vmta, kinds in rows]


@pytest.fixture(params=["cached", "restarted"])
def restart(request: pytest.FixtureRequest):  # noqa: ANN201
    """Either keep the caches or drop them, as a restart does, before the record under test."""
    def maybe(h: Harness) -> None:
        if request.param == "restarted":
            h.sink.ingestor.forget()
    return maybe


def _delivery(path: str, mid: str) -> RecordBatch:
    return batch(path, HEAD + f"d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,v1,,"
                              f"2.0.0,{mid}")


def _complaint(path: str, time: str, mid: str) -> RecordBatch:
    return batch(path, f"type,timeLogged,orig,rcpt,header_Message-Id\nf,{time},a@s.example,zed@gmail.com,{mid}")


def test_a_complaint_naming_another_message_id_does_not_fall_back_on_rcpt_and_sender(
        tmp_path: Path, restart) -> None:  # noqa: ANN001
    """The rcpt + sender fallback is for reports whose keys the acct file does not log. A report whose Message-Id
    differs from the one logged for the delivery is about another message: it must not join that delivery (and
    its Message-Id must not lead the next report of that message there either)."""
    h = Harness(tmp_path)
    h.commit(_delivery("/l/acct-0.csv", "<m1@s>"))
    restart(h)
    h.commit(_complaint("/l/fbl-0.csv", "2024-05-01 12:00:00+0000", "<m2@s>"))
    restart(h)
    h.commit(_complaint("/l/fbl-1.csv", "2024-05-01 13:00:00+0000", "<m2@s>"))
    assert _timelines(h) == [("m1@s", None, "v1", "3"), ("m2@s", None, None, "77")]  # type codes: d 3, f 7
    h.close()


def test_a_complaint_still_falls_back_when_the_acct_file_logs_no_message_id(tmp_path: Path, restart) -> None:  # noqa: ANN001
    h = Harness(tmp_path)
    h.commit(_delivery("/l/acct-0.csv", ""))
    restart(h)
    h.commit(_complaint("/l/fbl-0.csv", "2024-05-01 12:00:00+0000", "<m2@s>"))  # the Message-Id is learned from it
    assert _timelines(h) == [("m2@s", None, "v1", "37")]
    h.close()


def test_a_report_joins_the_newest_send_of_its_message_id_also_after_the_older_one_was_touched_last(
        tmp_path: Path, restart) -> None:  # noqa: ANN001
    """Two sends of one Message-Id to one recipient (queued apart) are two timelines; a report, which carries no
    timeQueued, joins the newest, as a lookup in the store picks it, however recently the older one was touched."""
    h = Harness(tmp_path)
    h.commit(batch("/l/acct-0.csv", HEAD
                   + "d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,v1,J1,2.0.0,<m@s>\n"
                   + "d,2024-05-02 10:20:00+0000,2024-05-02 10:00:00+0000,a@s.example,zed@gmail.com,v2,J2,2.0.0,<m@s>"))
    h.commit(batch("/l/diag-0.csv", HEAD
                   + "t,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,v1,J1,4.0.0,<m@s>"))
    restart(h)
    h.commit(batch("/l/fbl-0.csv", """
type,timeLogged,orig,rcpt,header_Message-Id
f,2024-05-03 12:00:00+0000,a@s.example,zed@gmail.com,<m@s>
"""))
    with h.reader() as r:
        items, total = r.by_message(message_hash("m@s"), 10)
    assert total == 2
    assert sorted((i["job_id"], i["outcome"]) for i in items) == [("J1", "delivered"), ("J2", "complained")]
    h.close()


@pytest.mark.parametrize("reread", ["apart", "with-the-first-send", "both-sends-in-one-commit"])
def test_a_complaint_read_before_its_delivery_is_joined_by_its_send_not_by_a_resend_after_it_cached_or_not(
        tmp_path: Path, restart, reread: str) -> None:  # noqa: ANN001
    """Read first, the complaint waits in a timeline without timeQueued, which every send of its Message-Id to that
    recipient joined, a resend queued the next day too (the complaint was then the resend's). It is joined by the
    send queued and delivered before it, as it joins that one read last; the resend is another timeline. What must
    hold too is that a restart, at any point, gives the same timelines."""
    h = Harness(tmp_path)
    fbl = _complaint("/l/fbl-0.csv", "2024-05-01 12:00:00+0000", "<m@s>")
    first = batch("/l/acct-0.csv", HEAD
                  + "d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,v1,,2.0.0,<m@s>")
    resend = batch("/l/acct-1.csv", HEAD
                   + "d,2024-05-02 10:20:00+0000,2024-05-02 10:00:00+0000,a@s.example,zed@gmail.com,v2,,2.0.0,<m@s>")
    commits = {"apart": [(fbl,), (first,), (resend,)], "with-the-first-send": [(fbl, first), (resend,)],
               "both-sends-in-one-commit": [(fbl,), (first, resend)]}[reread]
    for commit in commits:
        h.commit(*commit)
        restart(h)
    assert _timelines(h) == [("m@s", None, "v1", "37"), ("m@s", None, "v2", "3")]
    h.close()


def test_a_report_naming_two_sends_by_its_two_keys_joins_the_one_holding_both_and_merges_neither(
        tmp_path: Path, restart) -> None:  # noqa: ANN001
    """Send 1 (job J1) and send 2 (no job), queued a day apart, share a Message-Id: two timelines. A complaint
    naming the Message-Id and J1 finds send 2 by the first (the newest of that Message-Id) and send 1 by the
    second; they are two messages, not one to merge, and only send 1 holds both keys."""
    h = Harness(tmp_path)
    h.commit(batch("/l/acct-0.csv", HEAD
                   + "d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,v1,J1,2.0.0,<m@s>\n"
                   + "d,2024-05-02 10:20:00+0000,2024-05-02 10:00:00+0000,a@s.example,zed@gmail.com,v2,,2.0.0,<m@s>"))
    restart(h)
    h.commit(batch("/l/fbl-0.csv", """
type,timeLogged,orig,rcpt,jobId,header_Message-Id
f,2024-05-03 12:00:00+0000,a@s.example,zed@gmail.com,J1,<m@s>
"""))
    assert _timelines(h) == [("m@s", "J1", "v1", "37"), ("m@s", None, "v2", "3")]
    h.close()


@pytest.mark.parametrize("report", ["jobId", "jobId,header_Message-Id"])
def test_a_report_with_a_job_falls_back_on_a_delivery_logged_without_one(tmp_path: Path, restart, report: str) -> None:
    """The acct file logs no jobId (its timeline's job key is sender + timeQueued): a complaint naming a job is
    still that delivery's, by rcpt + sender, as the fallback is for keys the acct file does not log."""
    h = Harness(tmp_path)
    h.commit(batch("/l/acct-0.csv", "type,timeLogged,timeQueued,orig,rcpt,vmta,dsnStatus\n"
                   "d,2024-05-01 10:20:00+0000,2024-05-01 10:00:00+0000,a@s.example,zed@gmail.com,v1,2.0.0"))
    restart(h)
    values = {"jobId": "J9", "header_Message-Id": "<m@s>"}
    h.commit(batch("/l/fbl-0.csv", f"type,timeLogged,orig,rcpt,{report}\nf,2024-05-01 12:00:00+0000,a@s.example,"
                   "zed@gmail.com," + ",".join(values[k] for k in report.split(","))))
    assert [(vmta, kinds) for _m, _j, vmta, kinds in _timelines(h)] == [("v1", "37")]
    h.close()
