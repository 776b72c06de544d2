"""Audit of PMTA's JSON accounting form (exporter/jsonrecords.py) with hostile and odd-but-plausible input.

The CSV form is the reference behaviour: a JSON file must count as its CSV twin does, every bad line must be one
error logged with its file and line, and nothing may stop a oneshot or the daemon. Each test below failed before
its fix (see the audit report): real files, real `watchtower oneshot`/`run` processes or FileParser calls.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.parser import FileParser
from tests.conftest import RECORD_DAY, REPO, Watchtower, total, write_config

TIME = f"{RECORD_DAY} 12:00:00+0000"


def _record(vmta: str, rcpt: str = "u1@gmail.com", **extra: str) -> str:
    """One `d` record as JSON text; `vmta` is spliced in raw, so it may hold JSON escapes."""
    fields = {"type": "d", "timeLogged": TIME, "rcpt": rcpt, "queue": "gmail.com/v1", "vmtaPool": "p", **extra}
    return json.dumps(fields)[:-1] + f', "vmta": "{vmta}"}}'


def _oneshot(tmp: Path, files: dict[str, bytes], correlator: bool) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`watchtower oneshot` over `files` (one source): the process and its non-comment samples by series."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp, [{"name": "acct", "paths": [str(tmp / "logs" / "acct-*")]}],
                       correlator={"enabled": correlator}, log_level="warning")
    for name, data in files.items():
        (tmp / "logs" / name).write_bytes(data)
    run = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(cfg)], capture_output=True,
                         text=True, errors="backslashreplace", cwd=REPO, timeout=120)
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in run.stdout.splitlines() if line and not line.startswith("#")}
    return run, samples


def _delivered(samples: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith("pmta_delivered_total{") and v}


def _both_paths(data: bytes) -> list[tuple]:
    """(lines, errors, read, repaired, rows) of `data` on the polars path and on the Python path."""
    got = []
    for fast in (True, False):
        p = FileParser("acct", "/x/acct.json", None, fast=fast)
        batch, n = p.parse(data)
        got.append((n, p.errors, p.read, p.repaired, None if batch is None else batch.rows))
    return got


# 1. A lone surrogate escape (`\ud800`): valid JSON syntax, but no UTF-8 can carry the character it decodes to.


@pytest.mark.parametrize("correlator", [False, True], ids=["metrics-only", "correlator"])
def test_a_lone_surrogate_escape_does_not_stop_a_oneshot(tmp_path: Path, correlator: bool):
    """Before: `UnicodeEncodeError ... surrogates not allowed`, exit 1, nothing printed (the blank line sends the
    chunk down the Python path, which kept the surrogate)."""
    data = (_record("v\\ud800") + "\n\n" + _record("v1", "u2@gmail.com") + "\n").encode()
    run, samples = _oneshot(tmp_path, {"acct-1.json": data}, correlator)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "CRITICAL" not in run.stderr
    assert _delivered(samples) == {'pmta_delivered_total{isp="gmail",vmta="v\ufffd",vmta_pool="p"}': 1.0,
                                   'pmta_delivered_total{isp="gmail",vmta="v1",vmta_pool="p"}': 1.0}
    assert samples['watchtower_records_repaired_total{reason="invalid_utf8",source="acct"}'] == 1.0
    assert samples['watchtower_parse_errors_total{reason="bad_json",source="acct"}'] == 0.0


def test_a_lone_surrogate_reads_as_u_fffd_on_both_paths():
    """Before: polars read `"v\\ud800"` as "v\\x00" (silently), Python as "v\\ud800" (fatal later)."""
    for text in ("v\\ud800", "v\\udc00x", "v\\ude00\\ud83d"):
        got = _both_paths((_record(text) + "\n").encode())
        assert got[0] == got[1], text
        n, errors, read, repaired, rows = got[0]
        assert (n, errors, read, repaired) == (1, {}, {"d": 1}, 1)
        assert rows is not None and "\ufffd" in rows[0][_vmta_index()]
        assert all(not any(0xD800 <= ord(c) <= 0xDFFF for c in v) for v in rows[0])
    pair = _both_paths((_record("v\\ud83d\\ude00") + "\n").encode())  # a valid pair is one character, not a repair
    assert pair[0] == pair[1] and pair[0][3] == 0 and pair[0][4][0][_vmta_index()] == "v\U0001F600"


def _vmta_index() -> int:
    from exporter.jsonrecords import COLUMNS

    return COLUMNS.vmta


def test_the_daemon_survives_a_lone_surrogate_appended_while_it_runs(
        tmp_path: Path, watchtower_factory: Callable[[Path], Watchtower]):
    """Before: `stopped by an internal error: UnicodeEncodeError`, the daemon exited 1."""
    cfg = write_config(tmp_path, [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.json")]}],
                       log_level="warning")
    path = tmp_path / "logs" / "acct-1.json"
    path.write_text(_record("v1") + "\n")
    wt = watchtower_factory(cfg).start()
    wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 1)
    with open(path, "a", encoding="utf-8") as f:
        f.write(_record("v\\ud800", "u2@gmail.com") + "\n\n" + _record("v1", "u3@gmail.com") + "\n")
    samples = wt.wait_for(lambda s: total(s, "pmta_delivered_total") == 3)
    samples = wt.settle()
    assert total(samples, "pmta_delivered_total") == 3
    assert total(samples, "pmta_delivered_total", vmta="v\ufffd") == 1
    assert total(samples, "watchtower_records_repaired_total") == 1
    assert wt.proc is not None and wt.proc.poll() is None
    assert wt.stop() == 0
    assert "Traceback" not in wt.log.read_text() and "internal error" not in wt.log.read_text()


# 2. An escaped NUL (`\u0000`): the CSV form never carries NUL into a value (the bytes are dropped).


def test_an_escaped_nul_reaches_no_label_as_in_the_csv_twin(tmp_path: Path):
    """Before: the JSON file exposed `vmta="v\\x00x"` (a raw NUL on the /metrics page), the CSV twin `vmta="vx"`."""
    run, samples = _oneshot(tmp_path / "json", {"acct-1.json": (_record("v\\u0000x") + "\n").encode()}, False)
    assert run.returncode == 0 and "\x00" not in run.stdout
    csv_twin = b"type,timeLogged,rcpt,queue,vmtaPool,vmta\nd," + TIME.encode() + b",u1@gmail.com,gmail.com/v1,p,v\0x\n"
    run_csv, samples_csv = _oneshot(tmp_path / "csv", {"acct-1.csv": csv_twin}, False)
    assert run_csv.returncode == 0
    assert _delivered(samples) == _delivered(samples_csv) == {
        'pmta_delivered_total{isp="gmail",vmta="vx",vmta_pool="p"}': 1.0}
    got = _both_paths((_record("v\\u0000x") + "\n").encode())
    assert got[0] == got[1] and got[0][:4] == (1, {}, {"d": 1}, 0)
    got = _both_paths(b'{"type": "d\\u0000", "vmta": "v1"}\n')  # CSV: `d\0` is a `d` record, not unknown_type
    assert got[0] == got[1] and got[0][:4] == (1, {}, {"d": 1}, 0)


# 3. A raw control character (a tab in a remote reply) inside a string: JSON wants it escaped; CSV carries it.


def test_a_raw_tab_in_a_value_costs_no_record(caplog: pytest.LogCaptureFixture):
    """Before: `bad_json` and the record lost, where the CSV twin reads it (as invalid UTF-8 is repaired)."""
    data = (json.dumps({"type": "d", "vmta": "v1", "dsnDiag": "smtp;550\tno such user"}) + "\n"
            + json.dumps({"type": "d", "vmta": "v2"}) + "\n").encode().replace(b"\\t", b"\t")
    assert b"\t" in data
    with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
        got = _both_paths(data)
    assert got[0] == got[1]
    n, errors, read, _, rows = got[0]
    assert (n, errors, read) == (2, {}, {"d": 2}) and caplog.records == []
    from exporter.jsonrecords import COLUMNS

    assert rows is not None and rows[0][COLUMNS.dsnDiag] == "smtp;550\tno such user"


# 4. Array framing: an empty array on one line, and the comma-first style.


def test_array_framing_alone_is_no_error_and_comma_first_lines_are_records(caplog: pytest.LogCaptureFixture):
    """Before: `[]` (a file closed with no record) was one `bad_json`; so was each `,{...}` line, its record lost."""
    with caplog.at_level(logging.WARNING, logger="watchtower.parser"):
        assert _both_paths(b"[]\n")[0][:4] == (1, {}, {}, 0)
        data = b'[{"type": "d", "vmta": "v1"}\n,{"type": "b", "vmta": "v2"}\n, {"type": "t", "vmta": "v3"}\n]\n'
        got = _both_paths(data)
    assert got[0] == got[1]
    assert got[0][:4] == (4, {}, {"d": 1, "b": 1, "t": 1}, 0)
    assert caplog.records == []


@pytest.mark.parametrize("correlator", [False, True], ids=["metrics-only", "correlator"])
def test_comma_first_framing_counts_as_the_csv_twin_through_the_cli(tmp_path: Path, correlator: bool):
    rows = [("u1@gmail.com", "v1"), ("u2@gmail.com", "v2"), ("u3@gmail.com", "v1")]
    lines = [_record(v, r) for r, v in rows]
    data = ("[" + lines[0] + "\n" + "".join("," + line + "\n" for line in lines[1:]) + "]\n").encode()
    run, samples = _oneshot(tmp_path / "json", {"acct-1.json": data}, correlator)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    csv_twin = "type,timeLogged,rcpt,queue,vmtaPool,vmta\n" + "".join(
        f"d,{TIME},{r},gmail.com/v1,p,{v}\n" for r, v in rows)
    run_csv, samples_csv = _oneshot(tmp_path / "csv", {"acct-1.csv": csv_twin.encode()}, correlator)
    assert run_csv.returncode == 0
    assert _delivered(samples) == _delivered(samples_csv)
    assert sum(_delivered(samples).values()) == 3
    assert samples['watchtower_parse_errors_total{reason="bad_json",source="acct"}'] == 0.0
