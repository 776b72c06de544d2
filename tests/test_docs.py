"""The public surface stays documented: generated references in step, every metric, key and command named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.cli import _parser
from exporter.docgen import targets
from exporter.metrics import METRICS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted(targets(ROOT)), ids=lambda p: p.name)
def test_generated_reference_is_in_step(path: Path):
    body = targets(ROOT)[path]
    assert path.read_text(encoding="utf-8").endswith(body), f"{path} is stale: run `python -m exporter.docgen`"


@pytest.mark.parametrize("metric", [m.name for m in METRICS])
def test_every_metric_is_in_the_metrics_reference(metric: str):
    assert f"`{metric}`" in (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")


def test_metric_names_follow_prometheus_conventions():
    for m in METRICS:
        assert re.fullmatch(r"(pmta|watchtower)_[a-z0-9_]+", m.name), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert not any(x in m.labels for x in ("rcpt", "domain", "message_id", "job_id", "jobId")), m.name


def test_every_cli_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"watchtower {name}" in readme, name
