"""`r` (reception) records without timeQueued are timed as queued when they were logged (review 3).

PMTA's r field list is UNCERTAIN (pmta-formats.md §1.2) and the simulator writes r without timeQueued. Undated, an
r joined any send of its jobId (a job sent again, queued a day later, is another message: one timeline got both
sends) and, with neither jobId nor Message-Id, no send at all (sender + timeQueued cannot be keyed without the time:
a `pending` timeline next to the delivered one, for ever). A reception is logged when its message is queued, so its
timeLogged is the timeQueued its d/b/t records carry (the simulator writes both from one clock reading).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from exporter.parser import FileParser
from exporter.records import RecordBatch
from tests import test_correlator_link_rules as link_rules
from tests.test_correlator_support import Harness, batch

R_HEAD = "type,timeLogged,orig,rcpt,srcType,srcMta,rcvSourceIp,rcvSmtpUser,jobId\n"
D_HEAD = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,vmtaPool,jobId\n"
SENDER = "bounces@news.example.com"


def _r(path: str, day: int, job: str) -> RecordBatch:
    return batch(path, R_HEAD + f"r,2024-05-0{day} 17:38:00+0000,{SENDER},u1@yahoo.com,smtp,app (10.0.0.1),10.0.0.1,,"
                                f"{job}\n")


def _d(path: str, day: int, job: str) -> RecordBatch:
    return batch(path, D_HEAD + f"d,2024-05-0{day} 17:39:00+0000,2024-05-0{day} 17:38:00+0000,{SENDER},u1@yahoo.com,"
                                f"2.0.0 (success),vmta1,pool1,{job}\n")


def _timelines(h: Harness) -> list[tuple[str, str]]:
    """(outcome, type names of its records in file order) per timeline, in id order."""
    with h.reader() as r:
        ids = [i for (i,) in r.conn.execute("SELECT id FROM corr_timelines ORDER BY id")]
        found = [r.by_id(i) for i in ids]
    return [(tl["outcome"], "".join(e["record_type"] or "" for e in tl["events"])) for tl in found if tl is not None]


restart = link_rules.restart
"""Keep the link caches, or drop them as a restart does, between two commits (the link rules' fixture)."""


ORDERS = {
    "as written": [("r", 1), ("d", 1), ("r", 2), ("d", 2)],
    "receptions first": [("r", 1), ("r", 2), ("d", 1), ("d", 2)],
    "deliveries first": [("d", 2), ("d", 1), ("r", 2), ("r", 1)],
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("job", ["CAMPAIGN", ""])
def test_each_send_of_a_job_is_a_timeline_of_its_own_with_its_reception(
        tmp_path: Path, restart, order: str, job: str) -> None:  # noqa: ANN001
    """The review's t17 (a jobId sent again the next day) and t18 (no jobId, no Message-Id: sender + timeQueued),
    in any read order, with the caches kept or dropped between reads: two timelines, one reception and one
    delivery each."""
    h = Harness(tmp_path)
    for n, (kind, day) in enumerate(ORDERS[order]):
        make = _r if kind == "r" else _d
        h.commit(make(f"/l/{kind}-{n}.csv", day, job))
        restart(h)
    assert _timelines(h) == [("delivered", "rd"), ("delivered", "rd")]
    h.close()


def test_an_r_with_its_own_time_queued_keeps_it(tmp_path: Path) -> None:
    """Where PMTA writes timeQueued on r (the other way the reference leaves open) it is the one used."""
    h = Harness(tmp_path)
    h.commit(batch("/l/r.csv", "type,timeLogged,timeQueued,orig,rcpt\n"
                   f"r,2024-05-01 17:38:05+0000,2024-05-01 17:38:00+0000,{SENDER},u1@yahoo.com\n"))
    h.commit(_d("/l/d.csv", 1, ""))
    assert _timelines(h) == [("delivered", "rd")]
    h.close()


def test_simulated_receptions_join_their_deliveries(tmp_path: Path) -> None:
    """The simulator's default r fields (no timeQueued, its Message-Id): each r is logged at the second its message
    is queued, and joins the timeline of that message's d/b/t records; an r whose message has none yet is the only
    pending one."""
    from simulator import SimConfig, Simulator
    from simulator.config import FileSpec

    files = [FileSpec(name="acct", records=["d", "b"]), FileSpec(name="diag", records=["t"]),
             FileSpec(name="recv", records=["r"])]
    Simulator("baseline", tmp_path / "logs", config=SimConfig(rate=2, files=files, seed=7)).generate(5)
    h = Harness(tmp_path)
    queued: dict[str, set[tuple[str, str]]] = {"r": set(), "sent": set()}
    for family in ("recv", "acct", "diag"):
        for path in sorted((tmp_path / "logs").glob(f"{family}-*.csv")):
            b, _ = FileParser(family, str(path), None).parse(path.read_bytes())
            assert b is not None
            c = b.columns
            assert (c.timeQueued < 0) == (family == "recv")
            for row in b.rows:  # (Message-Id, when queued): r's timeLogged, d/b/t's timeQueued
                queued["r" if row[c.type] == "r" else "sent"].add(
                    (row[c.message_id], row[c.timeLogged if row[c.type] == "r" else c.timeQueued]))
            h.commit(b)
    received, sent = queued["r"], queued["sent"]
    assert len(received) > 400 and {m for m, _ in sent} <= {m for m, _ in received}
    assert sent <= received  # to the second
    kinds = Counter(outcome == "pending" for outcome, _ in _timelines(h))
    assert kinds == {True: len(received - sent), False: len(sent)}
    h.close()
