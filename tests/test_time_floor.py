"""A record time before 2000 is not believed, as one more than a day ahead of the clock is not.

A PMTA host whose clock was not set yet (before NTP) stamps records at or near 1970; an 8-digit value such as
`20160529` reads as an epoch in August 1970. Such a time was believed: it could become
`watchtower_last_record_timestamp_seconds`, and the correlator timed the record's timeline by it, so retention
pruned that timeline at once, silently, while the metrics counted the record. Now such a time is treated exactly as
a time too far ahead (`exporter.timeparse.MAX_FUTURE`): the record counts as any record (delays observed when its
timeQueued comes from the same clock), the last-record gauge ignores it, and the correlator times the record by when
it read it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.parser import FileParser
from exporter.timeparse import EARLIEST_BELIEVED, parse_pmta_time
from tests.test_complaint_time_fallback import aggregated
from tests.test_correlator_support import Harness

HEADER = "type,timeLogged,timeQueued,orig,rcpt,vmta,jobId,dsnStatus,dsnDiag,feedbackType"


def _rows(t: str, q: str, n: int = 0) -> list[str]:
    return [f"d,{t},{q},a@s.example,u{n}@gmail.com,v1,J{n},2.0.0 (success),smtp;250 ok,",
            f"t,{t},{q},a@s.example,w{n}@gmail.com,v1,J{n},4.0.0 (other),smtp;421 later,",
            f"f,{t},,a@s.example,u{n}@gmail.com,,J{n},,,abuse"]


EARLY = [*_rows("1970-01-01 00:10:00+0000", "1970-01-01 00:09:00+0000", 1), *_rows("20160529", "20160469", 2)]
"""A clock not set yet (both times from it, 60 s apart); an 8-digit date read as an epoch (1970-08-23)."""
AHEAD = [*_rows("2100-01-01 00:10:00+0000", "2100-01-01 00:09:00+0000", 1),
         *_rows("4102488600", "4102488540", 2)]
"""The same records from a clock decades ahead."""


def _metrics(lines: list[str], fast: bool) -> dict[str, Any]:
    parser = FileParser("acct", "/x/acct.csv", None, fast=fast)
    batch, _ = parser.parse(("\n".join([HEADER, *lines]) + "\n").encode())
    assert batch is not None and parser.errors == {}
    return aggregated(batch, "gmail.com")


def test_the_floor_is_2000():
    assert EARLIEST_BELIEVED == datetime(2000, 1, 1, tzinfo=UTC).timestamp() == 946_684_800.0
    assert parse_pmta_time("20160529") == 20160529.0  # still a time (no bad_timestamp): only not believed


@pytest.mark.parametrize("fast", [True, False])
def test_a_time_before_2000_counts_in_the_metrics_as_one_far_ahead(fast: bool):
    early, ahead = _metrics(EARLY, fast), _metrics(AHEAD, fast)
    assert early == ahead
    assert early["newest"] is None  # neither time is believed as the newest record's
    assert early["bad_timestamp"] is None
    assert sum(early["counters"]["pmta_delivered_total"].values()) == 2
    assert sum(early["counters"]["pmta_complaints_total"].values()) == 2
    (delays,) = early["histograms"]["pmta_delivery_delay_seconds"].values()
    assert delays == [2.0, 0.0, 0.0, 120.0]  # both from the one clock: observed, as far-ahead ones are


@pytest.mark.parametrize("fast", [True, False])
def test_a_time_before_2000_does_not_hide_the_believable_ones(fast: bool):
    real = _rows("2024-05-01 10:00:00+0000", "2024-05-01 09:59:00+0000", 3)
    for lines in ([*real, *EARLY], [*EARLY, *real]):
        assert _metrics(lines, fast)["newest"] == datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("kind", ["d", "f"])
def test_the_floor_is_believed_the_second_before_it_is_not(fast: bool, kind: str):
    def newest(t: int) -> float | None:
        rows = _rows(str(t), str(t - 60))
        return _metrics([next(r for r in rows if r.startswith(kind + ","))], fast)["newest"]

    assert newest(946_684_800) == 946_684_800.0
    assert newest(946_684_799) is None


NOW = datetime(2024, 5, 6, tzinfo=UTC).timestamp()
NOW_ISO = "2024-05-06T00:00:00Z"


def _timelines(lines: list[str], tmp: Path, fast: bool) -> list[list[tuple]]:
    parser = FileParser("acct", "/x/acct.csv", None, fast=fast)
    batch, _ = parser.parse(("\n".join([HEADER, *lines]) + "\n").encode())
    h = Harness(tmp, clock=lambda: NOW)
    try:
        h.commit(batch)  # and the retention run after it, which deleted a timeline timed in 1970 at once
        with h.reader() as r:
            ids = [i for (i,) in r.conn.execute("SELECT id FROM corr_timelines").fetchall()]
            out = [[(e["time"], e["kind"], e["record_type"], e.get("dsn_status"), e.get("source"))
                    for e in r.by_id(i)["events"]] for i in ids]
    finally:
        h.close()
    return sorted(out)


@pytest.mark.parametrize("fast", [True, False])
def test_the_correlator_times_a_record_before_2000_when_it_read_it(tmp_path: Path, fast: bool):
    (tmp_path / "early").mkdir()
    (tmp_path / "ahead").mkdir()
    early = _timelines(EARLY, tmp_path / "early", fast)
    assert early == _timelines(AHEAD, tmp_path / "ahead", fast)
    events = [e for timeline in early for e in timeline]
    assert len(events) == len(EARLY)  # every record kept, none pruned; no `queued` event from a 1970 timeQueued
    assert {e[0] for e in events} == {NOW_ISO}
