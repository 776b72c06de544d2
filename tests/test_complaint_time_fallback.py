"""An empty `timeLogged` falls back to `arrivalDate` per record, in CSV as in JSON.

An f record's time column is UNCERTAIN (pmta-formats.md §1.2): a report may carry `arrivalDate` (its ARF
Arrival-Date) and no `timeLogged`. A JSON record names its own fields, so the fallback was per record; a CSV file's
was chosen once per header (only when the header had no `timeLogged` column). In a combined file (d,b,f,rb in one,
header the union of their columns, pmta-formats.md §1.2) `timeLogged` exists for the d rows, so an f row with it
empty was timed when read by the correlator and left out of `watchtower_last_record_timestamp_seconds`, while its
JSON twin was timed by its arrivalDate (review D). The same records must give the same metrics and timelines in
both forms, on every parser path.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter import jsonrecords
from exporter.aggregate import FIELDS, RecordAggregator
from exporter.metrics import SelfMetrics
from exporter.parser import FileParser
from exporter.records import RecordBatch
from tests.test_correlator_support import Harness

HEADER = ("type,timeLogged,timeQueued,orig,rcpt,vmta,feedbackType,arrivalDate,header_Message-Id,jobId,dsnStatus,"
          "dsnDiag")
RECORDS: list[dict[str, str]] = [
    {"type": "d", "timeLogged": "2024-05-01 10:00:00+0000", "timeQueued": "2024-05-01 09:59:00+0000",
     "orig": "a@s.example", "rcpt": "u1@yahoo.com", "vmta": "v1", "header_Message-Id": "<m1@s.example>",
     "jobId": "J1", "dsnStatus": "2.0.0 (success)", "dsnDiag": "smtp;250 ok"},
    # any type with timeLogged empty and arrivalDate set is timed by it, as a JSON record of any type is
    {"type": "t", "timeLogged": "", "timeQueued": "2024-05-01 09:00:00+0000", "orig": "a@s.example",
     "rcpt": "u2@yahoo.com", "vmta": "v1", "arrivalDate": "2024-05-01 09:30:00+0000",
     "header_Message-Id": "<m2@s.example>", "jobId": "J1", "dsnStatus": "4.0.0 (other)", "dsnDiag": "smtp;421 later"},
    {"type": "f", "timeLogged": "", "orig": "a@s.example", "rcpt": "u1@yahoo.com", "feedbackType": "abuse",
     "arrivalDate": "Fri, 03 May 2024 10:00:00 +0000", "header_Message-Id": "<m1@s.example>", "jobId": "J1"},
    # both: timeLogged wins
    {"type": "f", "timeLogged": "2024-05-02 08:00:00+0000", "orig": "a@s.example", "rcpt": "u1@yahoo.com",
     "feedbackType": "abuse", "arrivalDate": "Sat, 04 May 2024 11:00:00 +0000", "header_Message-Id": "<m1@s.example>",
     "jobId": "J1"},
]


def _csv_field(value: str) -> str:
    return f'"{value}"' if "," in value else value


CSV = (HEADER + "\n" + "".join(",".join(_csv_field(r.get(name, "")) for name in HEADER.split(",")) + "\n"
                               for r in RECORDS)).encode()
JSON = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S%z").timestamp()


NEWEST = _epoch("2024-05-03 10:00:00+0000")
"""The first f record's arrivalDate: the newest record time of the file."""


def _parsed(form: str, path: str, monkeypatch: pytest.MonkeyPatch) -> RecordBatch:
    """The records in `form`, read on one of the parser's paths."""
    if form == "json-schema":
        monkeypatch.setattr(jsonrecords, "SCHEMA_READ_MIN_BYTES", 0)
    kind = "json" if form.startswith("json") else "csv"
    data = JSON if kind == "json" else CSV
    fields = FIELDS if path == "projected" else None
    p = FileParser("acct", f"/x/acct.{kind}", None, fast=path != "exact", fields=fields)
    batch, n = p.parse(data)
    assert batch is not None and p.errors == {} and len(batch) == len(RECORDS), (form, path, n, p.errors)
    return batch


FORMS = [("csv", "fast"), ("csv", "exact"), ("csv", "projected"), ("json", "fast"), ("json-schema", "fast"),
         ("json", "exact"), ("json", "projected")]


def _metrics(batch: RecordBatch) -> dict[str, Any]:
    return aggregated(batch, "yahoo.com")


def aggregated(batch: RecordBatch, domain: str) -> dict[str, Any]:
    """The batch's counters, histograms, newest record time and bad_timestamp count, `domain`'s ISP named after it
    (tests/test_time_floor.py reads the same)."""
    reg = CollectorRegistry()
    isp = domain.partition(".")[0]
    agg = RecordAggregator(lambda dom, mta: isp if dom == domain else "other",
                           lambda isp, st, diag, cat: "other", buckets=[60.0, 3600.0], self_metrics=SelfMetrics(reg))
    agg.apply(batch)
    agg.flush()
    return {
        "counters": agg.counters, "histograms": agg.histograms,
        "newest": reg.get_sample_value("watchtower_last_record_timestamp_seconds", {"source": "acct"}),
        "bad_timestamp": reg.get_sample_value("watchtower_parse_errors_total",
                                              {"source": "acct", "reason": "bad_timestamp"}),
    }


@pytest.mark.parametrize(("form", "path"), FORMS)
def test_a_record_without_time_logged_is_timed_by_its_arrival_date_in_the_metrics(form: str, path: str,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    got = _metrics(_parsed(form, path, monkeypatch))
    assert got["newest"] == NEWEST
    assert got["bad_timestamp"] in (None, 0.0)
    # the t row: queued 09:00, timed by its arrivalDate 09:30, so its deferral age is observed (1800 s)
    (ages,) = got["histograms"]["pmta_deferral_age_seconds"].values()
    assert ages == [0.0, 1.0, 0.0, 1800.0]
    (delays,) = got["histograms"]["pmta_delivery_delay_seconds"].values()
    assert delays == [1.0, 0.0, 0.0, 60.0]
    assert sum(got["counters"]["pmta_complaints_total"].values()) == 2


def test_the_csv_and_json_forms_give_the_same_metrics(monkeypatch: pytest.MonkeyPatch):
    results = [_metrics(_parsed(form, path, monkeypatch)) for form, path in FORMS]
    assert all(r == results[0] for r in results[1:]), results


NOW = datetime(2024, 5, 6, tzinfo=UTC).timestamp()


def _timelines(batch: RecordBatch, tmp: Path) -> list[list[tuple]]:
    h = Harness(tmp, clock=lambda: NOW)
    try:
        h.commit(batch)
        with h.reader() as r:
            ids = [i for (i,) in r.conn.execute("SELECT id FROM corr_timelines").fetchall()]
            out = [[(e["time"], e["kind"], e["record_type"], e.get("attempt"), e.get("dsn_status"), e.get("vmta"))
                    for e in r.by_id(i)["events"]] for i in ids]  # not the source: a CSV file's line 1 is its header
    finally:
        h.close()
    return sorted(out)


@pytest.mark.parametrize(("form", "path"), [f for f in FORMS if f[1] != "projected"])
def test_a_record_without_time_logged_is_timed_by_its_arrival_date_in_its_timeline(
        form: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    events = [e for timeline in _timelines(_parsed(form, path, monkeypatch), tmp_path) for e in timeline]
    assert sorted((e[0], e[1], e[2]) for e in events if e[2] in ("t", "f")) == [
        ("2024-05-01T09:30:00Z", "deferred", "t"),
        ("2024-05-02T08:00:00Z", "complaint", "f"),
        ("2024-05-03T10:00:00Z", "complaint", "f"),
    ]


def test_the_csv_and_json_forms_give_the_same_timelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    results = []
    for n, (form, path) in enumerate(f for f in FORMS if f[1] != "projected"):
        (tmp_path / str(n)).mkdir()
        results.append(_timelines(_parsed(form, path, monkeypatch), tmp_path / str(n)))
    assert all(r == results[0] for r in results[1:]), results
