"""JSON accounting files (pmta-formats.md §1.3, §4): one object per record, read like the CSV form.

PMTA writes `<acct-file>` as CSV or JSON. A JSON file has no header line: every record names its fields. The
parser recognises the form by the file's first record, maps the fields by name (any case, as in a CSV header),
and counts every line it cannot use, by reason and line, as it does for CSV. The reference is UNCERTAIN about
the framing, so both one object per line and a JSON array with one object per line are read.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter import jsonrecords
from exporter.parser import FileParser
from exporter.records import Columns
from simulator import SimConfig, Simulator
from simulator.config import FileSpec

SAMPLES = Path(__file__).parent / "testdata" / "pmta_samples"


def parse(data: bytes, parser: FileParser | None = None, allowed: frozenset[str] | None = None):
    p = parser or FileParser("acct", "/x/acct.json", allowed)
    batch, n = p.parse(data)
    return p, batch, n


def record(**fields: object) -> str:
    return json.dumps(fields)


def test_the_reference_json_record_reads_as_its_csv_twin():
    """The one real JSON `t` record and the CSV line rebuilt from it give the same values by field."""
    p_json, b_json, n_json = parse((SAMPLES / "diag-t-2023.json").read_bytes())
    p_csv, b_csv, _ = parse((SAMPLES / "diag-t-2023-from-json.csv").read_bytes())
    assert n_json == 1 and p_json.errors == {} and p_json.read == {"t": 1}
    assert b_json is not None and b_csv is not None
    for field in ("type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnAction", "dsnStatus", "dsnDiag", "dsnMta",
                  "bounceCat", "dlvSourceIp", "dlvDestinationIp", "dlvSize", "vmta", "vmtaPool", "jobId", "envId",
                  "queue", "srcMta"):
        assert b_json.columns.get(b_json.rows[0], field) == b_csv.columns.get(b_csv.rows[0], field), field


def test_fields_by_name_any_case_values_of_any_json_type():
    data = "\n".join([
        record(type="d", timeLogged="2026-11-25 12:00:00+0000", RCPT="a@x.com", vmta="v1",
               **{"header_Message-Id": "<m1@x>"}),
        record(vmta="v2", type="b", timeLogged=1764072000, dlvSize=1234, jobId=None, queue=12.5, envId=True),
    ]).encode() + b"\n"
    p, batch, n = parse(data)
    assert (n, p.errors, p.read) == (2, {}, {"d": 1, "b": 1})
    assert batch is not None and batch.line_numbers == [1, 2]
    c = batch.columns
    first, second = batch.rows
    assert [c.get(first, f) for f in ("type", "rcpt", "vmta", "header_Message-Id")] == ["d", "a@x.com", "v1", "<m1@x>"]
    assert first[c.message_id] == "<m1@x>"
    assert [c.get(second, f) for f in ("timeLogged", "dlvSize", "jobId", "queue", "envId")] == [
        "1764072000", "1234", "", "12.5", "true"]  # an object or array: bad_json (tests/test_json_field_types.py)
    assert all(len(row) == len(c.names) for row in batch.rows)


def test_every_unusable_line_is_counted_once_against_its_line(caplog: pytest.LogCaptureFixture):
    lines = [
        record(type="d", timeLogged="2026-11-25 12:00:00+0000", vmta="v1"),  # 1 ok
        '{"type": "d", "vmta": ',  # 2 cut short
        "",  # 3 blank: ignored
        '["d", "v1"]',  # 4 not an object
        record(type="zz", vmta="v1"),  # 5 unknown type
        record(vmta="v1"),  # 6 no type at all
        "d,2026-11-25 12:00:00+0000,v1",  # 7 a CSV line in a JSON file
        record(type="t", timeLogged="2026-11-25 12:00:01+0000", vmta="v2"),  # 8 ok
    ]
    with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
        p, batch, n = parse(("\n".join(lines) + "\n").encode())
    assert n == 8
    assert batch is not None and batch.line_numbers == [1, 8]
    assert p.errors == {"bad_json": 3, "unknown_type": 2}
    assert p.read == {"d": 1, "t": 1}
    logged = sorted(r.getMessage().split(": ")[0] + ": " + r.getMessage().split(": ")[1] for r in caplog.records)
    assert logged == ["/x/acct.json:2: bad_json (source acct)", "/x/acct.json:4: bad_json (source acct)",
                      "/x/acct.json:5: unknown_type (source acct)", "/x/acct.json:6: unknown_type (source acct)",
                      "/x/acct.json:7: bad_json (source acct)"]


def test_a_json_array_one_object_per_line_is_read_too():
    data = ("[\n" + record(type="d", vmta="v1") + ",\n" + record(type="b", vmta="v2") + "]\n").encode()
    p, batch, n = parse(data)
    assert (n, p.errors, p.read) == (3, {}, {"d": 1, "b": 1})
    assert batch is not None and batch.line_numbers == [2, 3]
    data = ("[" + record(type="d", vmta="v1") + ",\n" + record(type="b", vmta="v2") + "\n]\n").encode()
    p, batch, n = parse(data)
    assert (n, p.errors, p.read) == (3, {}, {"d": 1, "b": 1})
    assert batch is not None and batch.line_numbers == [1, 2]


def test_the_form_is_kept_across_chunks_and_a_restart_from_the_checkpointed_header():
    first = (record(type="d", vmta="v1") + "\n").encode()
    second = (record(type="b", vmta="v2") + "\r\n").encode()  # CRLF too
    p, _, _ = parse(b"\xef\xbb\xbf" + first)  # an editor's BOM
    assert p.columns is not None and p.errors == {}
    _, batch, _ = parse(second, parser=p)
    assert batch is not None and batch.line_numbers == [2] and p.errors == {}
    # A restart rebuilds the columns from the checkpoint's header text (exporter/filestream.py).
    restored = FileParser("acct", "/x/acct.json", None, columns=Columns.from_header(p.columns.header_line.split(",")),
                          line_no=2)
    _, batch, _ = parse(second, parser=restored)
    assert batch is not None and batch.line_numbers == [3] and restored.errors == {} and restored.read == {"b": 1}
    assert batch.columns.get(batch.rows[0], "vmta") == "v2"


def test_a_csv_file_is_not_taken_for_json_by_a_brace_on_a_later_line():
    p, batch, _ = parse(b"type,vmta\nd,v1\n{\"type\": \"d\"}\n")
    assert batch is not None and batch.line_numbers == [2]
    assert p.errors == {"unknown_type": 1}


def test_invalid_utf8_in_a_json_record_is_repaired_not_lost():
    data = b'{"type": "d", "vmta": "v1", "dsnDiag": "Empf\xe4nger unbekannt"}\n'
    p, batch, _ = parse(data)
    assert batch is not None and p.errors == {} and batch.repaired == 1
    assert batch.columns.get(batch.rows[0], "dsnDiag") == "Empf\ufffdnger unbekannt"


def _simulated(root: Path, fmt: str) -> Path:
    files = [FileSpec(name="acct", records=["d", "b"], format=fmt), FileSpec(name="diag", records=["t", "tq"], format=fmt),
             FileSpec(name="fbl", records=["f"], format=fmt), FileSpec(name="bounce", records=["rb"], format=fmt)]
    cfg = SimConfig(rate=8, fbl_delay=(60, 300), rb_delay=(60, 300), complaint_rate=0.02, remote_bounce_scale=20,
                    files=files)
    Simulator("gmail-throttle", root / "logs", config=cfg, seed=7, start="2026-11-25T10:00:00Z").generate(20)
    suffix = "json" if fmt == "json" else "csv"
    sources = [{"name": n, "paths": [str(root / "logs" / f"{n}-*.{suffix}")]} for n in ("acct", "diag", "fbl", "bounce")]
    config = root / "watchtower.yml"
    config.write_text(json.dumps({"sources": sources, "state_dir": str(root / "state"), "log_level": "warning",
                                  "correlator": {"enabled": False}}))
    return config


def _samples(page: str) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in page.splitlines() if not line.startswith("#")}


@pytest.mark.parametrize("correlator", [False, True], ids=["metrics-only", "correlator"])
def test_a_oneshot_over_json_files_equals_one_over_the_same_traffic_as_csv(tmp_path: Path, correlator: bool):
    """Every series is the same but the input's size: a JSON file has no header line and longer records."""
    pages, files = {}, {}
    for fmt in ("csv", "json"):
        config = _simulated(tmp_path / fmt, fmt)
        if correlator:
            doc = json.loads(config.read_text())
            doc["correlator"] = {"enabled": True}
            config.write_text(json.dumps(doc))
        files[fmt] = sorted(p.name.split("-")[0] for p in (tmp_path / fmt / "logs").glob(f"*.{fmt}"))
        run = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(config)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""
        pages[fmt] = _samples(run.stdout)
    assert files["json"] == files["csv"] and len(files["csv"]) >= 4
    csv_page, json_page = pages["csv"], pages["json"]
    assert any(k.startswith("pmta_delivered_total{") for k in csv_page)
    assert any(k.startswith("pmta_complaints_total{") for k in csv_page)
    for source in ("acct", "diag", "fbl", "bounce"):  # one header line per CSV file
        key = f'watchtower_lines_read_total{{source="{source}"}}'
        assert float(csv_page.pop(key)) == float(json_page.pop(key)) + files["csv"].count(source)
        for name in ("watchtower_read_bytes_total", "watchtower_bytes_read_total"):  # and its deprecated old name
            key = f'{name}{{source="{source}"}}'
            assert float(json_page.pop(key)) > float(csv_page.pop(key))
    assert json_page == csv_page


def test_a_field_named_twice_in_a_record_is_read_from_its_first_occurrence():
    """As a CSV header naming a column twice (the first is read), on both paths."""
    data = b'{"type": "d", "vmta": "first", "vmta": "second", "RCPT": "folded@x", "rcpt": "exact@x"}\n'
    for fast in (True, False):
        p = FileParser("acct", "/x/acct.json", None, fast=fast)
        batch, _ = p.parse(data)
        assert batch is not None and p.errors == {}
        assert batch.columns.get(batch.rows[0], "vmta") == "first"
        assert batch.columns.get(batch.rows[0], "rcpt") == "exact@x"  # the exact name over another case


def test_a_report_timed_by_arrival_date_has_its_time_on_every_path():
    """The f record's time column is UNCERTAIN (pmta-formats.md §1.2: `timeLogged` seen, `arrivalDate` not ruled out).
    A CSV header naming `arrivalDate` and no `timeLogged` reads it as the record's time; a JSON record did not: no
    `watchtower_last_record_timestamp_seconds`, its timeline event timed when read (review 2026-12-05). A record
    with both keeps its `timeLogged`; `ArrivalDate` in another case counts too. Read through `Columns.logged`, as a
    CSV row's (the row keeps its fields as written)."""
    lines = [record(type="f", arrivalDate="2026-11-25 12:00:00+0000", rcpt="a@x.com"),
             record(type="f", ArrivalDate="2026-11-25 12:01:00+0000", rcpt="b@x.com"),
             record(type="f", arrivalDate="2026-11-25 12:02:00+0000", timeLogged="2026-11-25 12:03:00+0000"),
             record(type="d", timeLogged="2026-11-25 12:04:00+0000", rcpt="c@x.com")]
    for fast, schema_read_from in ((True, 0), (True, jsonrecords.SCHEMA_READ_MIN_BYTES), (False, 0)):
        default, jsonrecords.SCHEMA_READ_MIN_BYTES = jsonrecords.SCHEMA_READ_MIN_BYTES, schema_read_from
        try:
            p = FileParser("fbl", "/x/fbl.json", None, fast=fast)
            batch, n = p.parse(("\n".join(lines) + "\n").encode())
        finally:
            jsonrecords.SCHEMA_READ_MIN_BYTES = default
        assert batch is not None and (n, p.errors) == (4, {}), fast
        assert [batch.columns.logged(row) for row in batch.rows] == [
            "2026-11-25 12:00:00+0000", "2026-11-25 12:01:00+0000", "2026-11-25 12:03:00+0000",
            "2026-11-25 12:04:00+0000"], (fast, schema_read_from)
        # the fields as written (which column timed a report: correlator.prepare.arrival_timed), as a CSV row's
        assert [batch.columns.get(row, "timeLogged") for row in batch.rows] == [
            "", "", "2026-11-25 12:03:00+0000", "2026-11-25 12:04:00+0000"], (fast, schema_read_from)


def test_an_ordinary_json_chunk_takes_the_polars_path(monkeypatch: pytest.MonkeyPatch):
    taken = []
    real = jsonrecords.frame_of
    monkeypatch.setattr(jsonrecords, "frame_of", lambda *a: taken.append(1) or real(*a))
    slow = []
    monkeypatch.setattr(jsonrecords, "to_row", lambda *a: slow.append(1) or None)
    lines = [record(type="d", timeLogged="2026-11-25 12:00:00+0000", vmta=f"v{i}", rcpt=f"u{i}@x", dlvSize="")
             for i in range(50)]
    p, batch, n = parse(("\n".join(lines) + "\n").encode())
    assert taken == [1] and slow == []
    assert n == 50 and batch is not None and len(batch) == 50 and p.read == {"d": 50}
    assert batch.line_numbers[:2] == [1, 2] and batch.columns.get(batch.rows[3], "vmta") == "v3"
    assert batch.columns.get(batch.rows[0], "dlvSize") == ""


_KEYS = ["type", "timeLogged", "timeQueued", "rcpt", "vmta", "vmtaPool", "dsnDiag", "dlvSize", "jobId",
         "header_Message-Id", "header_x-job", "dlvTlsCipher"]
_VALUES = st.one_of(st.text(max_size=12), st.integers(-10**20, 10**20), st.none(), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2))
_TYPES = st.sampled_from(["d", "b", "t", "tq", "f", "rb", "zz", "", "D"])


@st.composite
def _json_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["record"] * 8 + ["blank", "broken", "array", "framing", "csv", "twice", "cased",
                                                  "latin1", "spaced"]))
    if kind == "latin1":  # a byte that is no UTF-8 (a remote MX's reply in latin-1): `\udce4` is written as 0xe4
        return '{"type": "' + draw(_TYPES) + '", "dsnDiag": "Empf\udce4nger unbekannt"}'
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\r"]))
    if kind == "broken":
        return '{"type": "d", "vmta": '
    if kind == "array":
        return '["d", "v1"]'
    if kind == "framing":
        return draw(st.sampled_from(["[", "]", "],"]))
    if kind == "csv":
        return "d,2026-11-25 12:00:00+0000,v1"
    fields = {"type": draw(_TYPES)}
    for key in draw(st.lists(st.sampled_from(_KEYS[1:]), max_size=6, unique=True)):
        fields[key] = draw(st.one_of(st.text(max_size=12), _VALUES)) if kind != "record" else draw(st.text(max_size=12))
    if kind == "spaced":  # JSON's whitespace (space, tab, CR, LF: LF ends the line here) on either side of `:` and `,`
        fields["dlvSize"] = draw(_VALUES)
        space = st.text(alphabet=" \t\r", max_size=2)
        text = json.dumps(fields, separators=(draw(space) + "," + draw(space), draw(space) + ":" + draw(space)))
    else:
        text = json.dumps(fields, ensure_ascii=draw(st.booleans()))
    if kind == "twice":
        text = text[:-1] + ', "vmta": "again"}'
    if kind == "cased":
        text = text.replace('"vmta"', '"VMTA"').replace('"rcpt"', '"Rcpt"')
    return text


@settings(max_examples=300, deadline=None)
@example(['{"type": "d", "timeLogged": ""}', '{"type": "d", "timeLogged": 0.0}'], False, None)  # polars: "0"
@example(['{"type": "d", "R\\u0063pt": "a@x.com", "vmta": "v1"}'], False, None)  # a name in another case, escaped
@example(['{"type": "d", "vmta": "RCPT", "rcpt": "a@x.com"}'], False, None)  # a value that is a name in another case
@example(['{"type": "d", "vmta": "v1"}', '{"type": "d", "VMTA": "v2"}'], True, None)  # one cased name in the chunk
@example(['{"type": "d", "dlvSize"\r: 0.0}', '{"type": "d", "dlvSize": "7"}'], False, None)  # CR before `:`: "0"
@given(st.lists(_json_line(), min_size=1, max_size=12), st.booleans(), st.sampled_from([None, frozenset({"d", "t"})]))
def test_the_polars_path_reads_every_chunk_as_the_python_path_does(lines: list[str], crlf: bool,
                                                                   allowed: frozenset[str] | None):
    data = ("\r\n" if crlf else "\n").join(lines).encode("utf-8", "surrogateescape") + (b"\r\n" if crlf else b"\n")
    if not data.lstrip().startswith((b"{", b"[")):
        data = b'{"type": "d"}\n' + data  # the file's first record tells its form
    got = []
    default = jsonrecords.SCHEMA_READ_MIN_BYTES
    for fast, schema_read_from in ((True, 0), (True, default), (False, default)):  # polars by schema, inferred; Python
        jsonrecords.SCHEMA_READ_MIN_BYTES = schema_read_from
        try:
            p = FileParser("acct", "/x/acct.json", allowed, fast=fast)
            batch, n = p.parse(data)
        finally:
            jsonrecords.SCHEMA_READ_MIN_BYTES = default
        got.append((n, p.errors, p.read, p.skipped, p.repaired,
                    None if batch is None else (batch.rows, batch.line_numbers)))
    assert got[0] == got[2] and got[1] == got[2]
