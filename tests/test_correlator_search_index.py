"""Search by vmta / outcome alone reads an index in (t0, id) keyset order (security: no full scans per page)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from correlator import store
from tests.test_correlator_support import Harness, batch


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    lines = "\n".join(
        f"{'d' if i % 4 else 'b'},{1714550400 + i * 60},,s@shop.example,p{i}@gmail.com,2.0.0,"
        f"{'vA' if i % 3 else 'vB'},JP"
        for i in range(40))
    harness.commit(batch("/l/acct-many.csv", "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId\n" + lines))
    yield harness
    harness.close()


def _plans(h: Harness, **filters: object) -> tuple[list[str], list[str]]:
    """The rcpts of every page of a search (cursor followed), and the query plan of each statement it ran."""
    statements: list[str] = []
    found: list[str] = []
    args = {"rcpt_h": None, "job_h": None, "vmta": None, "outcome": None, "since": None, "until": None} | filters
    with h.reader() as r:
        r.conn.set_trace_callback(statements.append)
        after = None
        while True:
            items, after, _limited = r.search(**args, limit=4, after=after)  # type: ignore[arg-type]
            found += [i["rcpt"] for i in items]
            if after is None:
                break
        r.conn.set_trace_callback(None)
        plans = [" | ".join(row[3] for row in r.conn.execute("EXPLAIN QUERY PLAN " + sql))
                 for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    return found, plans


@pytest.mark.parametrize(("filters", "index", "expected"), [
    ({"vmta": "vB"}, "corr_tl_vmta", [f"p{i}@gmail.com" for i in range(39, -1, -1) if i % 3 == 0]),
    ({"outcome": store.OUTCOMES.index("bounced")}, "corr_tl_outcome",
     [f"p{i}@gmail.com" for i in range(39, -1, -1) if i % 4 == 0]),
    ({"vmta": "vB", "outcome": store.OUTCOMES.index("bounced")}, "corr_tl_vmta",
     [f"p{i}@gmail.com" for i in range(39, -1, -1) if i % 12 == 0]),
])
def test_vmta_and_outcome_search_use_an_index_in_keyset_order(h: Harness, filters: dict, index: str,
                                                              expected: list[str]) -> None:
    found, plans = _plans(h, **filters)
    assert found == expected  # every match, newest first, across pages of 4
    assert plans
    for plan in plans:
        assert re.search(rf"SEARCH corr_timelines USING (COVERING )?INDEX {index} \((vmta|outcome)=\?", plan), plan
        assert "SCAN corr_timelines" not in plan, plan
        inner = plan.split(" | SCAN (subquery")[0]  # a second filter re-sorts only the rows it kept
        assert "TEMP B-TREE" not in inner, plan  # rows come in (t0, id) order from the index itself


def test_a_store_created_without_the_search_indexes_gets_them_at_setup(h: Harness) -> None:
    for index in ("corr_tl_vmta", "corr_tl_outcome", "corr_tl_job_t0"):
        h.conn.execute(f"DROP INDEX {index}")
    h.sink.setup(h.conn)
    names = {r[0] for r in h.conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"corr_tl_vmta", "corr_tl_outcome", "corr_tl_job_t0"} <= names


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, [f"p{i}@gmail.com" for i in range(39, -1, -1)]),
    ({"vmta": "vB"}, [f"p{i}@gmail.com" for i in range(39, -1, -1) if i % 3 == 0]),
    ({"outcome": store.OUTCOMES.index("bounced")}, [f"p{i}@gmail.com" for i in range(39, -1, -1) if i % 4 == 0]),
])
def test_a_job_search_reads_the_jobs_rows_in_keyset_order(h: Harness, filters: dict, expected: list[str]) -> None:
    """A page of a job (with or without a second filter) read the whole job and sorted it, every page: seconds for a
    600k-recipient job, a 503 past the time budget for a larger one."""
    from correlator.keys import job_hash

    found, plans = _plans(h, job_h=job_hash("JP"), **filters)
    assert found == expected
    assert plans
    for plan in plans:
        assert re.search(r"SEARCH corr_timelines USING (COVERING )?INDEX corr_tl_job_t0 \(job_h=\?", plan), plan
        inner = plan.split(" | SCAN (subquery")[0]
        assert "TEMP B-TREE" not in inner, plan


def _statements(h: Harness, call: str, *args: object) -> tuple[object, list[str]]:
    """What `Reader.<call>(*args)` answered, and the query plan of each SELECT it ran."""
    statements: list[str] = []
    with h.reader() as r:
        r.conn.set_trace_callback(statements.append)
        answer = getattr(r, call)(*args)
        r.conn.set_trace_callback(None)
        plans = [" | ".join(row[3] for row in r.conn.execute("EXPLAIN QUERY PLAN " + sql))
                 for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    return answer, plans


def test_a_job_and_recipient_lookup_seeks_the_pair_not_the_whole_job(h: Harness) -> None:
    """With no statistics (no ANALYZE) the planner took corr_tl_job_t0 for its (t0) order and walked the whole
    job testing rcpt_h row by row: 4 s for one recipient of a 10M-recipient job, over both API slots."""
    from correlator.keys import job_hash

    rcpt_h = h.sink.hasher("p7@gmail.com")[0]
    (items, older), plans = _statements(h, "by_job_rcpt", job_hash("JP"), rcpt_h)
    assert [i["rcpt"] for i in items] == ["p7@gmail.com"] and older == 0  # type: ignore[index]
    timelines = [p for p in plans if p.startswith("SEARCH corr_timelines") or p.startswith("SCAN corr_timelines")]
    assert len(timelines) == 2  # the count and the rows; the events are read by timeline id
    for plan in timelines:
        assert re.search(r"USING (COVERING )?INDEX corr_tl_job \(qday=\? AND job_h=\? AND rcpt_h=\?\)", plan), plan


def test_a_search_by_job_and_recipient_seeks_the_pair_not_the_whole_job(h: Harness) -> None:
    from correlator.keys import job_hash

    rcpt_h = h.sink.hasher("p8@gmail.com")[0]
    for filters, expected in (({}, ["p8@gmail.com"]), ({"outcome": store.OUTCOMES.index("delivered")}, []),
                              ({"outcome": store.OUTCOMES.index("bounced")}, ["p8@gmail.com"]),
                              ({"vmta": "vA"}, ["p8@gmail.com"]), ({"vmta": "vB"}, [])):
        found, plans = _plans(h, job_h=job_hash("JP"), rcpt_h=rcpt_h, **filters)
        assert found == expected
        assert plans
        for plan in plans:
            assert "corr_tl_job_t0" not in plan, plan
            assert re.search(r"USING (COVERING )?INDEX corr_tl_(job|rcpt) \(qday=\? AND (job_h=\? AND )?rcpt_h=\?",
                             plan), plan
