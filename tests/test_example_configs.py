"""The shipped configs against the PMTA setup docs/pmta-setup.md tells the operator to make.

examples/watchtower.yml and docker/watchtower.yml are run as an operator would: `watchtower check-config`
and `watchtower oneshot` (subprocesses) on files named and filled as PMTA writes them for the <acct-file>
blocks of docs/pmta-setup.md (`<base>-YYYY-MM-DD-NNNN.csv`, pmta-formats.md §1.5). Container and host paths
are mapped into a temporary directory; nothing else of the configs is changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ACCT_HEADER, d_line

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [REPO / "examples" / "watchtower.yml", REPO / "docker" / "watchtower.yml"]
WATCHTOWER = Path(sys.executable).with_name("watchtower")

ALIASES = {"delivery": "d", "bounce": "b", "transient": "t", "transient-queue": "tq", "receipt": "r",
           "feedback-loop": "f", "remote-bounce": "rb", "remote-status": "rs"}


def acct_files() -> dict[str, list[str]]:
    """<acct-file PATH> blocks of docs/pmta-setup.md: path -> the record types PMTA writes there (default d,b)."""
    text = (REPO / "docs" / "pmta-setup.md").read_text(encoding="utf-8")
    out = {}
    for path, body in re.findall(r"<acct-file ([^>]+)>(.*?)</acct-file>", text, flags=re.S):
        records = re.search(r"^\s*records\s+(\S+)", body, flags=re.M)
        types = records.group(1).split(",") if records else ["d", "b"]
        out[path.strip()] = [ALIASES.get(t, t) for t in types]
    return out


def pmta_name(template: str, day: str, seq: int) -> str:
    """The file PMTA writes for the configured name: acct.csv -> acct-2026-12-02-0000.csv."""
    path = Path(template)
    return str(path.with_name(f"{path.stem}-{day}-{seq:04d}{path.suffix}"))


def record(kind: str, n: int) -> str:
    line = d_line(n)
    if kind == "d":
        return line
    fields = line.split(",", 1)[1]
    if kind in ("b", "rb"):
        fields = fields.replace("relayed,2.0.0 (success),smtp;250 2.0.0 OK", "failed,5.1.1 (bad destination "
                                "mailbox address),smtp;550 5.1.1 user unknown").replace(",success,", ",bad-mailbox,")
    elif kind in ("t", "tq"):
        fields = fields.replace("relayed,2.0.0 (success),smtp;250 2.0.0 OK", "delayed,4.7.0 (delivery not "
                                "authorized),smtp;421 4.7.0 try again later").replace(",success,", ",,")
    return f"{kind},{fields}"


def mapped(config: Path, tmp: Path) -> Path:
    text = config.read_text(encoding="utf-8")
    text = text.replace("/var/log/pmta", str(tmp / "logs")).replace("/var/lib/watchtower", str(tmp / "state"))
    out = tmp / config.name
    out.write_text(text, encoding="utf-8")
    return out


def write_pmta_files(tmp: Path) -> dict[str, int]:
    """Two rotated files per <acct-file> block (yesterday's and today's), one record of each type per file;
    returns the records written per type."""
    (tmp / "logs").mkdir()
    written: dict[str, int] = {}
    n = 0
    for template, types in acct_files().items():
        assert template.startswith("/var/log/pmta/"), template
        for day, seq in (("2026-12-02", 3), ("2026-12-03", 0)):
            lines = [ACCT_HEADER]
            for kind in types:
                lines.append(record(kind, n))
                written[kind] = written.get(kind, 0) + 1
                n += 1
            target = Path(pmta_name(template, day, seq).replace("/var/log/pmta", str(tmp / "logs")))
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def test_the_setup_page_configures_the_record_types_watchtower_needs():
    types = {t for ts in acct_files().values() for t in ts}
    assert {"d", "b", "t", "tq", "f", "rb", "rs"} <= types, types


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_check_config_passes_and_every_glob_matches_pmta_file_names(config: Path, tmp_path: Path):
    write_pmta_files(tmp_path)
    out = subprocess.run([str(WATCHTOWER), "check-config", str(mapped(config, tmp_path))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # a glob matching none of PMTA's files is a warning; the store cap against this disk's free space depends on the
    # machine (20 GiB by default), not on the config
    warned = [line for line in out.stderr.splitlines() if "warning" in line and "max_db_size" not in line]
    if config.parent.name == "docker":  # listens on 0.0.0.0 in its container, which compose publishes on the host's
        # loopback only (docker/docker-compose.yml): said as `run` says it, the one warning expected
        assert [line for line in warned if "(not loopback) without basic auth and TLS" in line] == warned[:1], warned
        warned = warned[1:]
    assert warned == [], out.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_every_record_pmta_writes_is_counted_once(config: Path, tmp_path: Path):
    written = write_pmta_files(tmp_path)
    out = subprocess.run([str(WATCHTOWER), "oneshot", "--config", str(mapped(config, tmp_path))],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    read: dict[str, float] = {}
    for family in text_string_to_metric_families(out.stdout):
        for sample in family.samples:
            if sample.name == "watchtower_records_read_total":
                read[sample.labels["type"]] = read.get(sample.labels["type"], 0) + sample.value
            if sample.name == "watchtower_parse_errors_total":
                assert sample.value == 0, sample
    sources = {s["name"]: set(s["records"]) for s in yaml.safe_load(config.read_text())["sources"]}
    fed = [t for types in sources.values() for t in types]
    assert len(fed) == len(set(fed)), f"a record type fed by two sources is counted twice: {sources}"
    assert {t: c for t, c in read.items() if c} == {t: float(c) for t, c in written.items()}, (read, written)
