"""A JSON accounting record whose read field holds an object or an array is no PMTA record: one parse error.

PMTA's JSON form carries the CSV form's fields by name (pmta-formats.md §1.3, §4); the one real sample has strings
only, and whether numeric or flag fields may come as JSON numbers or booleans is UNCERTAIN, so every scalar is
read as the CSV form would carry it (`1234` -> "1234", `true` -> "true", `null` -> ""). An object or an array is
no value of any PMTA field: before, such a record was read silently, its value written as JSON text into labels
(`vmta="[\\"a\\"]"`) and timeline keys (message-id `{"x":1}`). Now the record is one `bad_json` error naming its
file, line and field, counted in no pmta_* metric and stored as no timeline, on the polars and the Python path and
on the correlator's re-read of a span (exporter/spans.py uses the same FileParser).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter import jsonrecords
from exporter.parser import FileParser
from exporter.spans import read_span, span_at
from tests.conftest import RECORD_DAY, REPO, Watchtower, total, write_config

TIME = f"{RECORD_DAY} 10:00:00+0000"
QUEUED = f"{RECORD_DAY} 09:59:00+0000"


def _d(rcpt: object, **extra: object) -> str:
    fields = {"type": "d", "timeLogged": TIME, "timeQueued": QUEUED, "orig": "news@shop.example", "rcpt": rcpt,
              "vmta": "v1", "vmtaPool": "p", "queue": "gmail.com/v1", "dsnAction": "relayed",
              "dsnStatus": "2.0.0 (success)", "dlvSize": "1234", **extra}
    return json.dumps(fields, separators=(",", ":"))


REVIEWER = ('{"type":"d","timeLogged":"' + TIME + '","timeQueued":"' + QUEUED + '","orig":"news@shop.example",'
            '"rcpt":123,"vmta":["a"],"header_Message-Id":{"x":1},"jobId":true,"vmtaPool":"p",'
            '"queue":"gmail.com/v1","dsnAction":"relayed","dsnStatus":"2.0.0 (success)"}')
LINES = [
    _d("u1@gmail.com", jobId="J1", **{"header_Message-Id": "<m1@x>"}),  # 1 ok
    REVIEWER,  # 2 bad: vmta is an array (and header_Message-Id an object)
    _d("u3@gmail.com", jobId=42, dlvSize=1234, envId=True, **{"header_Message-Id": None}),  # 3 ok: scalars
    _d("u4@gmail.com", jobId="J4", **{"x-extra": {"a": [1]}, "header_Message-Id": "<m4@x>"}),  # 4 ok: unread field
    _d("u5@gmail.com", jobId="J5", VMTA={"name": "v9"}),  # 5 bad: a read name in another case
    json.dumps({"type": "b", "timeLogged": TIME, "rcpt": "u6@gmail.com", "vmta": "v1", "queue": ["gmail.com/v1"]}),
    _d("u7@gmail.com", jobId="J7", **{"header_Message-Id": "<m7@x>"}),  # 7 ok
]
BAD = {2: "vmta [\"a\"]", 5: "VMTA {\"name\":\"v9\"}", 6: "queue [\"gmail.com/v1\"]"}
DATA = ("\n".join(LINES) + "\n").encode()


def _oneshot(tmp: Path, correlator: bool) -> tuple[subprocess.CompletedProcess[str], dict[str, float]]:
    cfg = write_config(tmp, [{"name": "acct", "paths": [str(tmp / "logs" / "acct-*.json")]}],
                       correlator={"enabled": correlator}, log_level="warning")
    (tmp / "logs" / "acct-1.json").write_bytes(DATA)
    run = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(cfg)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in run.stdout.splitlines() if line and not line.startswith("#")}
    return run, samples


@pytest.mark.parametrize("correlator", [False, True], ids=["metrics-only", "correlator"])
def test_an_object_or_array_value_is_one_bad_json_error_naming_file_line_and_field(tmp_path: Path, correlator: bool):
    """Before: no error, and `pmta_delivered_total{isp="other",vmta="[\\"a\\"]",...}` on the page."""
    run, samples = _oneshot(tmp_path, correlator)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    delivered = {k: v for k, v in samples.items() if k.startswith("pmta_delivered_total{") and v}
    assert delivered == {'pmta_delivered_total{isp="gmail",vmta="v1",vmta_pool="p"}': 4.0}
    assert sum(v for k, v in samples.items() if k.startswith("pmta_bounced_total{")) == 0
    assert samples['watchtower_parse_errors_total{reason="bad_json",source="acct"}'] == 3.0
    assert sum(v for k, v in samples.items() if k.startswith("watchtower_parse_errors_total{")) == 3.0
    assert not any(s in run.stdout for s in ('[\\"a\\"]', '\\"name\\"', '\\"gmail.com/v1\\"', 'vmta="v9"'))
    path = tmp_path / "logs" / "acct-1.json"
    logged = [line for line in run.stderr.splitlines() if "bad_json" in line]
    for number, sample in BAD.items():
        want = f"{path}:{number}: bad_json (source acct): {sample!r}"
        assert sum(want in line for line in logged) == 1, (want, run.stderr)
    assert len(logged) == 3, run.stderr


def test_the_daemon_and_its_correlator_process_store_no_timeline_of_a_bad_record(
        tmp_path: Path, watchtower_factory: Callable[[Path], Watchtower]):
    """The correlator's own process reads the file again (exporter/follower.py -> exporter/spans.py `read_span`, the
    same FileParser). Before: timelines with rcpt `123`, Message-Id `{"x":1}`, job `true`, vmta `["a"]`."""
    cfg = write_config(tmp_path, [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.json")]}],
                       correlator={"enabled": True}, log_level="warning")
    (tmp_path / "logs" / "acct-1.json").write_bytes(DATA)
    wt = watchtower_factory(cfg).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") >= 4 and total(s, "watchtower_parse_errors_total") >= 3)
    wt.committed()
    samples = wt.settle()
    assert total(samples, "pmta_delivered_total") == 4 == total(samples, "pmta_delivered_total", vmta="v1")
    assert total(samples, "watchtower_parse_errors_total") == 3
    assert total(samples, "watchtower_parse_errors_total", reason="bad_json") == 3
    db = sqlite3.connect(f"file:{tmp_path / 'state' / 'watchtower.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT rcpt, job_id, message_id, vmta FROM corr_timelines ORDER BY rcpt").fetchall()
    finally:
        db.close()
    assert rows == [("u1@gmail.com", "J1", "m1@x", "v1"), ("u3@gmail.com", "42", None, "v1"),  # ids without <>
                    ("u4@gmail.com", "J4", "m4@x", "v1"), ("u7@gmail.com", "J7", "m7@x", "v1")]
    assert wt.stop() == 0
    log = wt.log.read_text()
    assert "Traceback" not in log
    assert [line.count(f"acct-1.json:{n}: bad_json") for n in BAD for line in log.splitlines()
            if f"acct-1.json:{n}: bad_json" in line] == [1, 1, 1], log


def _parse(data: bytes, fast: bool, schema_read_from: int, allowed: frozenset[str] | None = None):
    default, jsonrecords.SCHEMA_READ_MIN_BYTES = jsonrecords.SCHEMA_READ_MIN_BYTES, schema_read_from
    try:
        p = FileParser("acct", "/x/acct.json", allowed, fast=fast)
        batch, n = p.parse(data)
    finally:
        jsonrecords.SCHEMA_READ_MIN_BYTES = default
    return n, p.errors, p.read, p.skipped, None if batch is None else (batch.rows, batch.line_numbers)


PATHS = [(True, 0), (True, jsonrecords.SCHEMA_READ_MIN_BYTES), (False, 0)]
"""polars by schema, polars by inference, Python."""


def test_every_path_counts_each_bad_record_once_and_logs_its_field(caplog: pytest.LogCaptureFixture):
    got = []
    for fast, schema_read_from in PATHS:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
            got.append(_parse(DATA, fast, schema_read_from))
        assert sorted(r.getMessage() for r in caplog.records) == sorted(
            f"/x/acct.json:{n}: bad_json (source acct): {s!r}" for n, s in BAD.items())
    assert got[0] == got[1] == got[2]
    n, errors, read, _, (rows, numbers) = got[0]
    assert (n, errors, read, numbers) == (7, {"bad_json": 3}, {"d": 4}, [1, 3, 4, 7])
    c = jsonrecords.COLUMNS
    assert [(r[c.rcpt], r[c.vmta], r[c.jobId], r[c.message_id]) for r in rows] == [
        ("u1@gmail.com", "v1", "J1", "<m1@x>"), ("u3@gmail.com", "v1", "42", ""), ("u4@gmail.com", "v1", "J4", "<m4@x>"),
        ("u7@gmail.com", "v1", "J7", "<m7@x>")]


@pytest.mark.parametrize("name", jsonrecords.COLUMNS.names[:-1])
@pytest.mark.parametrize("value", [[], {}, ["a"], {"x": 1}, [[1]], {"type": "d"}], ids=repr)
def test_an_object_or_array_in_any_read_field_is_bad_json(name: str, value: object):
    """Every field the exporter or the correlator reads, `header_Message-Id` and `arrivalDate` included; the type
    field too (before: an unknown_type); in the name's own case or another."""
    for key in (name, name.upper()):
        fields: dict[str, object] = {"type": "d", "timeLogged": TIME, "rcpt": "u1@gmail.com", "vmta": "v1"}
        fields[key] = value
        data = (json.dumps(fields) + "\n" + json.dumps({"type": "d", "vmta": "v2"}) + "\n").encode()
        got = [_parse(data, fast, schema_read_from) for fast, schema_read_from in PATHS]
        assert got[0] == got[1] == got[2], key
        n, errors, read, _, batch = got[0]
        assert (n, errors, read) == (2, {"bad_json": 1}, {"d": 1}), key
        assert batch is not None and batch[1] == [2]
        assert jsonrecords.to_row(json.dumps(fields)) == f"{key} {json.dumps(value, separators=(',', ':'))}"


def test_a_record_of_a_type_the_source_skips_is_bad_json_too():
    """The line is no PMTA record whatever its type, as a line that is no JSON object is (and a CSV short_row)."""
    data = (json.dumps({"type": "b", "vmta": ["v1"]}) + "\n" + json.dumps({"type": "d", "vmta": "v1"}) + "\n").encode()
    got = [_parse(data, fast, schema_read_from, frozenset({"d"})) for fast, schema_read_from in PATHS]
    assert got[0] == got[1] == got[2]
    assert got[0][:4] == (2, {"bad_json": 1}, {"d": 1}, {})


def test_scalars_read_as_the_csv_form_carries_them():
    """Numbers and booleans where PMTA may write them (dlvSize, jobId, an epoch time), null as an empty field; a
    boolean in a text field is odd but scalar, and read as its text (as the CSV form would carry `true`)."""
    record = {"type": "d", "timeLogged": 1764072000, "timeQueued": None, "rcpt": 123, "dlvSize": 1234,
              "jobId": 42, "envId": True, "vmtaPool": False, "queue": 1234.0, "orig": -5, "dsnDiag": 10**20,
              "bounceCat": 1.5, "vmta": "v1", "srcMta": 1e3}
    data = (json.dumps(record) + "\n").encode()
    got = [_parse(data, fast, schema_read_from) for fast, schema_read_from in PATHS]
    assert got[0] == got[1] == got[2]
    n, errors, read, _, (rows, _) = got[0]
    assert (n, errors, read) == (1, {}, {"d": 1})
    c = jsonrecords.COLUMNS
    assert {name: rows[0][c.index[name]] for name in record} == {
        "type": "d", "timeLogged": "1764072000", "timeQueued": "", "rcpt": "123", "dlvSize": "1234", "jobId": "42",
        "envId": "true", "vmtaPool": "false", "queue": "1234.0", "orig": "-5", "dsnDiag": "100000000000000000000",
        "bounceCat": "1.5", "vmta": "v1", "srcMta": "1000.0"}


def test_a_field_named_twice_is_judged_by_its_first_occurrence():
    """The second occurrence of a name is not read (as a CSV header's second column of a name), so not judged."""
    assert jsonrecords.to_row('{"type": "d", "vmta": "v1", "vmta": ["a"]}') is not None
    assert isinstance(jsonrecords.to_row('{"type": "d", "vmta": "v1", "vmta": ["a"]}'), list)
    assert jsonrecords.to_row('{"type": "d", "vmta": ["a"], "vmta": "v1"}') == 'vmta ["a"]'


def test_a_long_value_is_logged_clipped(caplog: pytest.LogCaptureFixture):
    data = (json.dumps({"type": "d", "vmta": "v1", "dsnDiag": {"k": "x" * 100_000}}) + "\n").encode()
    with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
        got = [_parse(data, fast, schema_read_from) for fast, schema_read_from in PATHS]
    assert got[0] == got[1] == got[2] and got[0][1] == {"bad_json": 1}
    assert all(len(r.getMessage()) < 300 and "dsnDiag {" in r.getMessage() for r in caplog.records)
    caplog.clear()
    data = b'{"type": "d", "vmta": ["v\\ud800\\u0000"]}\n'  # a lone surrogate: no UTF-8 log carries it decoded
    with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
        got = [_parse(data, fast, schema_read_from) for fast, schema_read_from in PATHS]
    assert got[0] == got[1] == got[2] and got[0][1] == {"bad_json": 1}
    shown = 'vmta ["v\ufffd\\u0000"]'  # the surrogate as U+FFFD (no UTF-8 carries it), NUL as JSON escapes it
    assert [r.getMessage() for r in caplog.records] == [f"/x/acct.json:1: bad_json (source acct): {shown!r}"] * 3


def test_the_correlators_reread_of_a_span_reads_as_the_tailer_did(tmp_path: Path):
    """exporter/spans.py parses a span again with the same FileParser: the bad records are no rows there either."""
    path = tmp_path / "acct-1.json"
    path.write_bytes(DATA)
    st = os.stat(path)
    span = span_at("f1", "acct", str(path), st.st_dev, st.st_ino, (0, 0, ""), st.st_size, None)
    batch, consumed, line_no, _ = read_span(span, 1 << 20)
    assert (consumed, line_no) == (len(DATA), 7)
    assert batch is not None and batch.line_numbers == [1, 3, 4, 7]
    p = FileParser("acct", str(path), None)
    want, _ = p.parse(DATA)
    assert want is not None and batch.rows == want.rows and p.errors == {"bad_json": 3}
