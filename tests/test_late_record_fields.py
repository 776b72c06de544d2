"""Fields no PMTA record holds are parse errors wherever a record type is read (docs/reliability.md): a timeLogged of
an f, rb, rs or r record (or an f record's `arrivalDate`) that is no time is a `bad_timestamp`, as the columnar
d/b/t/tq path counts it; a d record's dlvSize that is no whole number is a `bad_size`. Both are logged by file and
line, rate-limited like the other parse errors, and the record itself still counts (without its time, its bytes).

An ARF report's Arrival-Date is an RFC 5322 date (`Fri, 24 Feb 2023 10:00:00 +0000`): read as a time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.aggregate import RecordAggregator
from exporter.metrics import PARSE_ERROR_REASONS, SelfMetrics
from exporter.parser import FileParser
from exporter.timeparse import parse_pmta_time
from tests.conftest import REPO, write_config

LATE_HEADER = "type,timeLogged,timeQueued,orig,rcpt,dsnAction,dsnStatus,dsnDiag,bounceCat,dlvSize,vmta,feedbackType"
GOOD = "2024-06-12 08:00:00+0000"
EPOCH_GOOD = 1718179200.0  # GOOD
LATE_ROWS = [  # (fields by LATE_HEADER's names, whether its time is bad)
    ({"type": "f", "timeLogged": "garbage", "orig": "a@s.com", "rcpt": "u1@gmail.com", "vmta": "v1",
      "feedbackType": "abuse"}, True),
    ({"type": "rb", "timeLogged": "12/06/2024 08:00", "orig": "a@s.com", "rcpt": "u2@gmail.com",
      "dsnAction": "failed", "dsnStatus": "5.1.1", "dsnDiag": "smtp;550 5.1.1 no such user", "bounceCat": "bad-mailbox",
      "vmta": "v1"}, True),
    ({"type": "rs", "timeLogged": "never", "orig": "a@s.com", "rcpt": "u3@gmail.com", "dsnAction": "delivered",
      "dsnStatus": "2.0.0", "vmta": "v1"}, True),
    ({"type": "r", "timeLogged": "1e999", "vmta": "v1"}, True),  # float() reads it: infinite, no time
    ({"type": "f", "timeLogged": "", "orig": "a@s.com", "rcpt": "u4@gmail.com", "vmta": "v1",
      "feedbackType": "abuse"}, False),  # empty: PMTA leaves it so, no error
    ({"type": "f", "timeLogged": GOOD, "orig": "a@s.com", "rcpt": "u5@gmail.com", "vmta": "v1",
      "feedbackType": "abuse"}, False),
    ({"type": "rb", "timeLogged": "1718179100", "orig": "a@s.com", "rcpt": "u6@gmail.com", "dsnAction": "failed",
      "dsnStatus": "5.1.1", "bounceCat": "bad-mailbox", "vmta": "v1"}, False),
    ({"type": "d", "timeLogged": GOOD, "timeQueued": "2024-06-12 07:59:00+0000", "orig": "a@s.com",
      "rcpt": "u7@gmail.com", "dlvSize": "10", "vmta": "v1"}, False),
    ({"type": "d", "timeLogged": "not-a-time", "timeQueued": "2024-06-12 07:59:00+0000", "orig": "a@s.com",
      "rcpt": "u8@gmail.com", "dlvSize": "10", "vmta": "v1"}, True),  # the columnar path's, counted alike
]


def _csv_line(fields: dict[str, str], header: str = LATE_HEADER) -> str:
    def quoted(v: str) -> str:
        return f'"{v}"' if any(ch in v for ch in ',"') else v
    return ",".join(quoted(fields.get(name, "")) for name in header.split(","))


def _json_line(fields: dict[str, object]) -> str:
    return json.dumps({k: v for k, v in fields.items() if v != ""})


def _write(tmp_path: Path, form: str, lines: list[str], header: str | None) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    path = logs / f"acct-1.{form}"
    path.write_text("".join(f"{line}\n" for line in ([header] if header and form == "csv" else []) + lines))
    return path


def _oneshot(tmp_path: Path, form: str) -> subprocess.CompletedProcess[str]:
    cfg = write_config(tmp_path, [{"name": "acct", "paths": [str(tmp_path / "logs" / f"acct-*.{form}")]}])
    proc = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(cfg)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def _sample(out: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", out, re.M)
    return None if m is None else float(m.group(1))


def _series(out: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith(name + "{"))


def _logged(stderr: str, reason: str) -> list[str]:
    return [line for line in stderr.splitlines() if f": {reason} (source acct)" in line]


def _logged_lines(stderr: str, path: Path, reason: str) -> list[int]:
    return sorted(int(m.group(1)) for line in _logged(stderr, reason)
                  if (m := re.search(rf"{re.escape(str(path))}:(\d+): {reason} \(source acct\)", line)))


# --- 1. timeLogged of f, rb, rs and r records --------------------------------------------------------------------


@pytest.mark.parametrize("form", ["csv", "json"])
def test_a_late_record_whose_time_logged_is_no_time_is_a_logged_bad_timestamp(tmp_path: Path, form: str) -> None:
    """The f/rb/rs/r path dropped such a time silently; the d/b path counted and logged it. Now both do, exactly."""
    lines = [_csv_line(f) if form == "csv" else _json_line(f) for f, _bad in LATE_ROWS]
    path = _write(tmp_path, form, lines, LATE_HEADER)
    proc = _oneshot(tmp_path, form)
    out = proc.stdout
    first = 2 if form == "csv" else 1  # the header line
    bad_lines = [first + i for i, (_f, bad) in enumerate(LATE_ROWS) if bad]
    assert _sample(out, "watchtower_parse_errors_total", reason="bad_timestamp", source="acct") == len(bad_lines) == 5
    assert _logged_lines(proc.stderr, path, "bad_timestamp") == bad_lines, proc.stderr
    said = " ".join(_logged(proc.stderr, "bad_timestamp"))
    for value in ("garbage", "12/06/2024 08:00", "never", "1e999", "not-a-time"):
        assert f"timeLogged {value}" in said
    # every record still counts, as a d or b record with a bad time does
    assert _series(out, "pmta_complaints_total") == 3
    assert _series(out, "pmta_remote_bounced_total") == 2
    assert _series(out, "pmta_remote_status_total") == 1
    assert _series(out, "pmta_received_total") == 1
    assert _series(out, "pmta_delivered_total") == 2
    assert _sample(out, "watchtower_last_record_timestamp_seconds", source="acct") == EPOCH_GOOD
    assert _sample(out, "watchtower_parse_errors_total", reason="bad_size", source="acct") == 0


def test_bad_late_times_are_rate_limited_like_the_other_parse_errors(tmp_path: Path) -> None:
    rows = [_csv_line({"type": "f", "timeLogged": f"never{i}", "rcpt": f"u{i}@gmail.com", "feedbackType": "abuse"})
            for i in range(500)]
    path = _write(tmp_path, "csv", rows, LATE_HEADER)
    proc = _oneshot(tmp_path, "csv")
    assert _sample(proc.stdout, "watchtower_parse_errors_total", reason="bad_timestamp", source="acct") == 500
    assert _logged_lines(proc.stderr, path, "bad_timestamp") == list(range(2, 12))  # ErrorLog's burst
    assert "source acct: 490 more bad lines not logged" in proc.stderr
    assert _series(proc.stdout, "pmta_complaints_total") == 500


def test_bad_late_times_count_in_every_slice_of_a_large_batch(tmp_path: Path) -> None:
    """More f rows than one late slice (LATE_SLICE_ROWS) in one batch: each slice's bad times are counted."""
    from exporter.aggregate import LATE_SLICE_ROWS

    n = LATE_SLICE_ROWS * 2 + 10
    rows = [f"f,{'bad' if i % 7 == 0 else '' if i % 7 == 1 else GOOD},,a@s.com,u{i}@gmail.com,,,,,,v1,abuse"
            for i in range(n)]
    reg = CollectorRegistry()
    agg = RecordAggregator(lambda d, m: "gmail", lambda *a: "other", buckets=[1.0], self_metrics=SelfMetrics(reg))
    batch, _ = FileParser("acct", "/x/a.csv", None).parse(("\n".join([LATE_HEADER, *rows]) + "\n").encode())
    agg.apply(batch)
    assert reg.get_sample_value("watchtower_parse_errors_total",
                                {"source": "acct", "reason": "bad_timestamp"}) == len(range(0, n, 7))
    assert sum(agg.counters["pmta_complaints_total"].values()) == n


# --- an f record timed by an RFC 5322 Arrival-Date ---------------------------------------------------------------

ARF_HEADER = "type,arrivalDate,orig,rcpt,feedbackType,reportingMta"
ARF_ROWS = [  # (arrivalDate, its Unix time or None for a bad one)
    ("Fri, 24 Feb 2023 10:00:00 +0000", 1677232800.0),
    ("Thu, 8 Mar 2005 14:00:00 EDT", 1110304800.0),  # RFC 5965's own example: an obsolete zone name
    ("24 Feb 2023 09:00:00 -0100", 1677232800.0),  # no day name; another offset
    ("Fri, 24 Feb 2023 10:00:00 +0000 (UTC)", 1677232800.0),  # a comment after the zone
    ("Fri, 24 Feb 2023", None),  # a date without a time is no record time
    ("Fri, 31 Feb 2023 10:00:00 +0000", None),
    ("", None),  # empty: no time, no error
]


@pytest.mark.parametrize("form", ["csv", "json"])
def test_an_fbl_file_timed_by_an_rfc5322_arrival_date_gets_its_times(tmp_path: Path, form: str) -> None:
    rows = [{"type": "f", "arrivalDate": date, "orig": "a@s.com", "rcpt": f"u{i}@gmail.com", "feedbackType": "abuse"}
            for i, (date, _t) in enumerate(ARF_ROWS)]
    lines = [_csv_line(r, ARF_HEADER) if form == "csv" else _json_line(r) for r in rows]
    path = _write(tmp_path, form, lines, ARF_HEADER)
    proc = _oneshot(tmp_path, form)
    out = proc.stdout
    first = 2 if form == "csv" else 1
    assert _sample(out, "watchtower_last_record_timestamp_seconds", source="acct") == 1677232800.0
    assert _sample(out, "watchtower_parse_errors_total", reason="bad_timestamp", source="acct") == 2
    assert _logged_lines(proc.stderr, path, "bad_timestamp") == [first + 4, first + 5]
    assert _series(out, "pmta_complaints_total") == len(ARF_ROWS)


@pytest.mark.parametrize(("text", "want"), [
    *[(date, t) for date, t in ARF_ROWS if date],
    ("Fri, 24 Feb 2023 10:00 +0000", 1677232800.0),  # seconds are optional in RFC 5322
    ("fri, 24 feb 2023 10:00:00 gmt", 1677232800.0),  # names in any case
    ("Fri,  24  Feb  2023  10:00:00  +0000", 1677232800.0),  # folding white space
    ("Fri, 24 Feb 2023 10:00:00 -0000", 1677232800.0),  # RFC 5322: UTC, no zone known
    ("Sat, 31 Dec 2016 23:59:60 +0000", 1483228800.0),  # a leap second: the next second, as the ISO form's
    ("Fri, 24 Feb 2023 10:00:00 +0200(CEST)", 1677225600.0),  # a comment glued to the zone: read as UTC before
    ("Fri, 24 Feb 2023 10:00:00 -0500(EST)", 1677250800.0),
    ("Fri, 24 Feb 2023 10:00:00 +0200 (CEST)", 1677225600.0),
    ("Fri, 24 Feb 2023 10:00:00 +0099", None),  # no zone has 99 minutes
    ("Fri, 24 Feb 2023 10:00:00 +2400", None),
    ("Fri, 24 Feb 2023 10:00:00", None),  # RFC 5322 requires the zone
    ("Fri, 24 Feb 2023 10:00:00 XYZ", None),  # a zone no RFC names
    ("Fri, 24 Feb 23 10:00:00 +0000", None),  # a two-digit year: which century is a guess
    ("Fri, 24 Foo 2023 10:00:00 +0000", None),
    ("Fri, 24 Feb 2023 25:00:00 +0000", None),
    ("Feb 24 2023 10:00:00 +0000", None),
    ("Fri, 24 Feb 2023 10:00:00 +0000 (" + "x" * 200 + ")", None),  # longer than any date: not parsed
    ("Fri, 24 Feb 1969 10:00:00 +0000", None),  # before 1970: no PMTA time, as for the other forms
])
def test_parse_pmta_time_reads_an_rfc5322_date(text: str, want: float | None) -> None:
    assert parse_pmta_time(text) == want


def test_the_pmta_forms_are_read_as_before() -> None:
    assert parse_pmta_time(GOOD) == EPOCH_GOOD
    assert parse_pmta_time("1718179200") == EPOCH_GOOD
    assert parse_pmta_time("garbage") is None


@pytest.mark.parametrize("text", ["9999-12-31 23:59:60+0000", "9999-12-31 23:59:60 +0000", "9999-12-31T23:59:60",
                                  "Fri, 31 Dec 9999 23:59:60 +0000", "1 Jan 0000 00:00:00 +0000",
                                  "1 Jan 0069 00:00:00 +0000"])
def test_a_leap_second_past_year_9999_or_a_year_before_1000_is_no_time_not_an_error(text: str) -> None:
    """The second after 9999-12-31 23:59:59 raised OverflowError out of the parser (and a fold with it); email.utils
    reads a year `0069` as 2069."""
    assert parse_pmta_time(text) is None


# --- 2. dlvSize ------------------------------------------------------------------------------------------------------

SIZE_HEADER = "type,timeLogged,timeQueued,rcpt,dlvSize,vmta"
SIZES = [  # (the dlvSize as the CSV form writes it, its bytes or None for a bad_size)
    ("1000", 1000), ("abc", None), ("-5", None), ("1234.0", 1234), (" 1234", 1234), ("1,234", None), ("", 0),
    ("1234 ", 1234), ("12.5", None), ("1e3", None), ("00", 0), ("\t77\t", 77), ("1234.00", 1234),
    ("+5", None), ("99999999999999999999999", None), ("0x10", None),
]
SIZE_JSON = [  # (the value of "dlvSize" in a JSON record, its bytes or None)
    (1234, 1234), (1234.0, 1234), ("1234.0", 1234), ("abc", None), (-5, None), ("1,234", None), (None, 0),
    (" 1234 ", 1234), (1.5, None), (True, None), ("", 0),
]


def _size_rows(values: list[object]) -> list[dict[str, object]]:
    return [{"type": "d", "timeLogged": GOOD, "timeQueued": "2024-06-12 07:59:00+0000", "rcpt": f"u{i}@gmail.com",
             "dlvSize": v, "vmta": "v1"} for i, v in enumerate(values)]


@pytest.mark.parametrize("form", ["csv", "json"])
def test_a_dlv_size_that_is_no_whole_number_is_a_logged_bad_size(tmp_path: Path, form: str) -> None:
    """Such a size added 0 bytes silently (only `^[0-9]+$` was read). A whole number with a `.0` fraction or blanks
    around it is that number; any other non-empty value is a `bad_size` naming the field; the delivery counts."""
    cases = SIZES if form == "csv" else SIZE_JSON
    rows = _size_rows([v for v, _n in cases])
    if form == "csv":
        lines = [_csv_line({k: str(v) for k, v in r.items()}, SIZE_HEADER) for r in rows]
    else:
        lines = [json.dumps({k: v for k, v in r.items() if v is not None}) for r in rows]
    path = _write(tmp_path, form, lines, SIZE_HEADER)
    proc = _oneshot(tmp_path, form)
    out = proc.stdout
    first = 2 if form == "csv" else 1
    bad_lines = [first + i for i, (_v, n) in enumerate(cases) if n is None]
    labels = {"isp": "gmail", "vmta": "v1", "vmta_pool": "none"}
    assert _sample(out, "pmta_delivered_total", **labels) == len(cases)
    assert _sample(out, "pmta_delivered_bytes_total", **labels) == sum(n for _v, n in cases if n)
    assert _sample(out, "watchtower_parse_errors_total", reason="bad_size", source="acct") == len(bad_lines)
    assert _sample(out, "watchtower_parse_errors_total", reason="bad_timestamp", source="acct") == 0
    assert _logged_lines(proc.stderr, path, "bad_size") == bad_lines, proc.stderr
    assert all("dlvSize" in line for line in _logged(proc.stderr, "bad_size"))
    assert "dlvSize abc" in " ".join(_logged(proc.stderr, "bad_size"))
    assert _series(out, "pmta_delivery_delay_seconds_count") == len(cases)  # its delay is still observed


def test_bad_sizes_are_rate_limited_like_the_other_parse_errors(tmp_path: Path) -> None:
    rows = [_csv_line({"type": "d", "timeLogged": GOOD, "rcpt": f"u{i}@gmail.com", "dlvSize": f"x{i}", "vmta": "v1"},
                      SIZE_HEADER) for i in range(500)]
    path = _write(tmp_path, "csv", rows, SIZE_HEADER)
    proc = _oneshot(tmp_path, "csv")
    assert _sample(proc.stdout, "watchtower_parse_errors_total", reason="bad_size", source="acct") == 500
    assert _logged_lines(proc.stderr, path, "bad_size") == list(range(2, 12))
    assert "source acct: 490 more bad lines not logged" in proc.stderr
    assert _series(proc.stdout, "pmta_delivered_total") == 500
    assert "pmta_delivered_bytes_total{" not in proc.stdout  # no record had a size


def test_bad_sizes_are_logged_by_line_in_a_layout_without_times(tmp_path: Path) -> None:
    """The line numbers were carried only for a layout with timeLogged: without one, bad sizes were counted and only
    said as "3 more bad lines not logged"."""
    header = "type,rcpt,dlvSize,vmta"
    rows = [_csv_line({"type": "d", "rcpt": f"u{i}@gmail.com", "dlvSize": v, "vmta": "v1"}, header)
            for i, v in enumerate(["10", "abc", "1,234", "12.5", "20"])]
    path = _write(tmp_path, "csv", rows, header)
    proc = _oneshot(tmp_path, "csv")
    assert _sample(proc.stdout, "watchtower_parse_errors_total", reason="bad_size", source="acct") == 3
    assert _sample(proc.stdout, "pmta_delivered_bytes_total", isp="gmail", vmta="v1", vmta_pool="none") == 30
    assert _logged_lines(proc.stderr, path, "bad_size") == [3, 4, 5], proc.stderr
    assert "not logged" not in proc.stderr


MODES = ["inline", "background", "derive_here", "pipelined"]


def _aggregator(mode: str, reg: CollectorRegistry) -> RecordAggregator:
    agg = RecordAggregator(lambda d, m: d.split(".")[0], lambda *a: "other", buckets=[1.0, 60.0],
                           self_metrics=SelfMetrics(reg))
    if mode != "inline":
        agg.run_in_background(derive_here=mode == "derive_here", pipelined=mode == "pipelined")
    return agg


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("domains", [3, 3000], ids=["few-groups", "many-groups"])
def test_sizes_are_exact_on_every_folding_path(mode: str, domains: int) -> None:
    """A chunk small enough to merge in Python and one labelled in polars (SMALL_DELIVERED groups), every mode."""
    rows, want_bytes, want_bad = [], 0, 0
    for i in range(6000):
        size, n = SIZES[i % len(SIZES)]
        t = GOOD if i % 5 else "bad-time"
        rows.append(_csv_line({"type": "d", "timeLogged": t, "rcpt": f"u{i}@d{i % domains}.com", "dlvSize": size,
                               "vmta": "v1"}, SIZE_HEADER))
        want_bytes += n or 0
        want_bad += n is None
    reg = CollectorRegistry()
    agg = _aggregator(mode, reg)
    for start in range(0, len(rows), 2000):
        batch, _ = FileParser("acct", "/x/a.csv", None).parse(
            ("\n".join([SIZE_HEADER, *rows[start:start + 2000]]) + "\n").encode())
        agg.apply(batch)
    agg.close()
    agg.flush()  # the delivered groups of a large chunk are merged when the series are read
    assert sum(agg.counters["pmta_delivered_total"].values()) == len(rows)
    assert sum(agg.counters["pmta_delivered_bytes_total"].values()) == want_bytes
    get = reg.get_sample_value
    assert get("watchtower_parse_errors_total", {"source": "acct", "reason": "bad_size"}) == want_bad
    assert get("watchtower_parse_errors_total", {"source": "acct", "reason": "bad_timestamp"}) == len(rows) // 5


def test_bad_size_is_a_listed_parse_error_reason() -> None:
    assert "bad_size" in PARSE_ERROR_REASONS
    reg = CollectorRegistry()
    SelfMetrics(reg).init_source("acct")
    assert reg.get_sample_value("watchtower_parse_errors_total", {"source": "acct", "reason": "bad_size"}) == 0
