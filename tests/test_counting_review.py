"""Review 2026-12-06 (a reference counter of its own against `watchtower oneshot`): two counts that went wrong.

- `pmta_delivered_bytes_total` summed a chunk's sizes as Int64, which wraps past 2**63: two d rows of
  9223372036854775807 and 1 bytes printed -9.223372036854776e+18, a counter going backwards.
- A time `float()` reads but PMTA never writes (`1.76722561e9`, `+1767225610`) was taken as a time: no
  bad_timestamp, and a delay observed.
Real files, the real command: `python -m exporter oneshot`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.timeparse import parse_pmta_time

REPO = Path(__file__).resolve().parent.parent


def _oneshot(tmp_path: Path, body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "acct-1.csv").write_text("type,timeLogged,timeQueued,vmta,dlvSize\n" + body)
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"sources": [{"name": "acct", "paths": [str(logs / "acct-*.csv")]}],
                                      "state_dir": str(tmp_path / "state"), "correlator": {"enabled": False}}))
    proc = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(proc.stdout) for s in fam.samples}


def test_delivered_bytes_past_2_63_do_not_wrap(tmp_path: Path) -> None:
    got = _oneshot(tmp_path, "d,1767225610,1767225600,v1,9223372036854775807\nd,1767225610,1767225600,v1,1\n")
    key = ("pmta_delivered_bytes_total", (("isp", "other"), ("vmta", "v1"), ("vmta_pool", "none")))
    assert got[key] == 2.0**63


def test_times_float_reads_and_pmta_never_writes_are_bad_timestamps(tmp_path: Path) -> None:
    assert [parse_pmta_time(v) for v in ("1.76722561e9", "+1767225610", "1767225610.5", "1767225610")] == [
        None, None, 1767225610.5, 1767225610.0]
    got = _oneshot(tmp_path, "d,1.76722561e9,1.7672256e9,v1,10\nd,+1767225610,+1767225600,v1,10\n"
                             "d,1767225610.5,1767225600.25,v1,10\n")
    errors = {dict(labels)["reason"]: v for (name, labels), v in got.items()
              if name == "watchtower_parse_errors_total" and v}
    assert errors == {"bad_timestamp": 2.0}
    observed = sum(v for (name, _), v in got.items() if name == "pmta_delivery_delay_seconds_count")
    assert observed == 1.0  # only the row PMTA could have written
