"""Simulated files and real PMTA lines (tests/testdata/pmta_samples) pass the same header-based checks."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from exporter.records import Columns
from simulator import SimConfig, Simulator
from simulator.config import FileSpec

SAMPLES = Path(__file__).parent / "testdata" / "pmta_samples"
BOUNCE_CATS = {"bad-configuration", "bad-connection", "bad-domain", "bad-mailbox", "content-related",
               "inactive-mailbox", "invalid-sender", "message-expired", "no-answer-from-host", "other",
               "policy-related", "protocol-errors", "quota-issues", "relaying-issues", "routing-errors",
               "spam-related", "virus-related", "success", ""}
IP = r"\d{1,3}(?:\.\d{1,3}){3}"
CHECKS: dict[str, re.Pattern[str]] = {
    "type": re.compile(r"^(d|b|t|tq|f|rb|rs|r)$"),
    "timeLogged": re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}|\d{9,11})$"),
    "timeQueued": re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}|\d{9,11}|)$"),
    "orig": re.compile(r"^([^@\s,]+@[^@\s,]+|)$"),
    "rcpt": re.compile(r"^([^@\s,]+@[^@\s,]+|)$"),
    "dsnAction": re.compile(r"^(relayed|delivered|failed|delayed|expanded|)$"),
    "dsnStatus": re.compile(r"^([245]\.\d{1,3}\.\d{1,3} \([^()]+\)|)$"),
    # an SMTP reply, or PMTA's own connection / DNS failure text (pmta-formats.md §4.1; no `smtp;`, UNCERTAIN)
    "dsnDiag": re.compile(rf"^(smtp;[2-5]\d\d[ -].+|E[A-Z]+ (in connection to|connecting to) [\w.-]+ \({IP}\)"
                          r"|StatusDns\w+ resolving [\w.-]+|)$"),
    "dsnMta": re.compile(rf"^([\w.-]+ \({IP}\)|)$"),
    "srcMta": re.compile(rf"^([\w.-]+ \({IP}\)|)$"),
    "dlvSourceIp": re.compile(rf"^({IP}|)$"),
    "dlvDestinationIp": re.compile(rf"^({IP}|)$"),
    "dlvEsmtpAvailable": re.compile(r"^([A-Z0-9]+(,[A-Z0-9]+)*|)$"),
    "dlvSize": re.compile(r"^(\d+|)$"),
    "queue": re.compile(r"^([^/\s]+/[^/\s]+|)$"),
}


def parse(path: Path) -> tuple[Columns, list[dict[str, str]], int]:
    """Header-name-based parse: (columns, rows as name -> value, rows shorter than the header)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols = Columns.from_header(header)
        out, short = [], 0
        for row in reader:
            short += len(row) < len(header)
            assert len(row) <= len(header), f"{path.name}: long row {row}"
            out.append({name: row[i] if i < len(row) else "" for i, name in enumerate(header)})
    return cols, out, short


def check(path: Path) -> tuple[Columns, list[dict[str, str]], int]:
    cols, recs, short = parse(path)
    assert cols.type == 0, "type is always the first column"
    assert recs, path.name
    for rec in recs:
        for name, pattern in CHECKS.items():
            if name in rec:
                assert pattern.match(rec[name]), f"{path.name}: {name}={rec[name]!r}"
        if "bounceCat" in rec:
            assert rec["bounceCat"] in BOUNCE_CATS, rec["bounceCat"]
    return cols, recs, short


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.csv")), ids=lambda p: p.name)
def test_real_samples_pass_the_checks(path: Path) -> None:
    _, recs, short = check(path)
    assert short == (2 if "short-rows" in path.name else 0)


@pytest.mark.parametrize("scenario", ["yahoo-tss04-pool", "connection-failures"])
def test_simulated_files_pass_the_same_checks(tmp_path: Path, scenario: str) -> None:
    files = [*SimConfig().files, FileSpec(name="recv", records=["r"])]
    cfg = SimConfig(rate=6, fbl_delay=(60, 300), rb_delay=(60, 300), complaint_rate=0.01, remote_bounce_scale=20,
                    files=files)
    Simulator(scenario, tmp_path, config=cfg).generate(40)
    seen: set[str] = set()
    for path in sorted(tmp_path.glob("*.csv")):
        cols, recs, short = check(path)
        assert short == 0
        assert cols.message_id >= 0 and cols.timeLogged >= 0 and cols.rcpt >= 0
        seen |= {r["type"] for r in recs}
    assert seen == {"d", "b", "t", "tq", "f", "rb", "rs", "r"}


def test_simulated_header_matches_the_modern_sample_order(tmp_path: Path) -> None:
    Simulator("baseline", tmp_path).generate(1)
    sim_header = parse(next(tmp_path.glob("acct-*.csv")))[0].names
    real_header = parse(SAMPLES / "diag-t-2023-from-json.csv")[0].names
    shared = [n for n in real_header if n in sim_header]
    assert shared == [n for n in sim_header if n in real_header]
    assert shared == list(real_header[:23])  # the PMTA 4.5/5.x default columns, same order
