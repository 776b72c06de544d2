"""The public surface stays documented: generated references in step, every metric, key and command named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.cli import _parser
from exporter.docgen import targets
from exporter.metrics import METRICS
from exporter.metrics import RENAMED as TABLE_RENAMED

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


RENAMED = {  # new name -> the old one, still served with the same values until a later release removes it
    "watchtower_read_bytes_total": "watchtower_bytes_read_total",
    "watchtower_behind_bytes": "watchtower_bytes_behind",
    "watchtower_commit_backlog_lost_bytes_total": "watchtower_commit_backlog_bytes_lost_total",
}
UNITS = ("bytes", "seconds")


def test_a_unit_is_the_last_word_of_a_metric_name():
    """https://prometheus.io/docs/practices/naming/: the unit ends the name, before `_total` on a counter
    (`node_disk_read_bytes_total`); only a deprecated alias keeps an old name."""
    wrong = []
    for m in METRICS:
        if m.deprecated_for is not None:
            continue
        base = m.name.removesuffix("_total")
        wrong += [m.name for unit in UNITS if f"_{unit}_" in m.name and not base.endswith(f"_{unit}")]
    assert wrong == []


def test_renamed_metrics_keep_their_old_names_as_deprecated_aliases():
    specs = {m.name: m for m in METRICS}
    for new, old in RENAMED.items():
        assert specs[new].deprecated_for is None and specs[old].deprecated_for == new
        assert (specs[old].kind, specs[old].labels, specs[old].group) == (specs[new].kind, specs[new].labels,
                                                                           specs[new].group)
        assert specs[old].help.startswith(f"Deprecated: use {new}. "), specs[old].help
    assert {m.deprecated_for for m in METRICS} - {None} == set(TABLE_RENAMED)  # each rename made its alias
    for m in METRICS:  # an alias names a metric of the table that is itself current
        if m.deprecated_for is not None:
            assert m.deprecated_for in specs and specs[m.deprecated_for].deprecated_for is None, m.name
            assert m.group == "self", m.name  # served by SelfMetrics from its target's values (exporter/metrics.py)


def test_the_metrics_reference_marks_deprecated_names():
    rows = {line.split("`")[1]: line for line in (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
            .splitlines() if re.match(r"\| `\w+` \| (counter|gauge|histogram) \|", line)}  # the metric tables
    for new, old in RENAMED.items():
        assert f"deprecated: use `{new}`; removed in a later release" in rows[old], rows[old]
        assert "deprecated" not in rows[new].lower(), rows[new]
    renamed = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8").split("## Renamed metrics")[1]
    assert all(f"| `{old}` | `{new}` |" in renamed for new, old in RENAMED.items())


def test_deprecated_metric_names_are_used_nowhere_but_in_the_reference():
    """Rules, their tests, dashboards and the docs read the current names (the old ones go away)."""
    old = [m.name for m in METRICS if m.deprecated_for is not None]
    files = [*ROOT.glob("rules/**/*.yaml"), *ROOT.glob("grafana/**/*.json"), ROOT / "grafana" / "build.py",
             *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    found = [f"{f.relative_to(ROOT)}: {name}" for f in files if f.name != "metrics.md"
             for name in old if re.search(rf"\b{name}\b", f.read_text(encoding="utf-8"))]
    assert len(files) > 10 and found == []


def test_every_cli_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert f"watchtower {name}" in readme, name


def _openapi(tmp_path: Path) -> tuple[dict, dict]:
    """The daemon's and the hub's OpenAPI documents."""
    from fastapi import FastAPI

    from correlator import CorrelatorSink
    from exporter.config import CorrelatorConfig
    from hub.api import Hub, build_hub_routes

    sink = CorrelatorSink(CorrelatorConfig(), tmp_path / "absent.db", isp_of=lambda r, m: "", class_of=lambda *a: "",
                          clock=lambda: 0.0)
    daemon, hub = FastAPI(), FastAPI()
    daemon.include_router(sink.asgi_routes())
    hub.include_router(build_hub_routes(Hub(None, None)))  # type: ignore[arg-type]  # only the routes are read
    sink.close()
    return daemon.openapi(), hub.openapi()


def _api_paths(tmp_path: Path) -> tuple[set[str], set[str]]:
    """The /api/v1 paths in the daemon's and the hub's OpenAPI documents."""
    daemon, hub = _openapi(tmp_path)
    return ({p for p in daemon["paths"] if p.startswith("/api/v1/")},
            {p for p in hub["paths"] if p.startswith("/api/v1/")})


def test_every_api_route_is_in_the_api_reference_table(tmp_path: Path):
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    table = text[:text.index("Common rules:")]
    daemon, hub = _api_paths(tmp_path)
    assert daemon and hub <= daemon, hub - daemon  # the hub serves the daemon's routes
    for path in daemon:
        assert f"`GET {path}`" in table, f"{path} is missing from the route table of docs/api.md"
        assert f"## `GET {path}`" in text, f"{path} has no section in docs/api.md"


def test_every_query_parameter_is_in_its_routes_section(tmp_path: Path):
    """A parameter added to a route (replies' `pool`) is part of the public interface: its section names it."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    daemon, _hub = _openapi(tmp_path)
    missing = []
    for path, item in daemon["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        start = text.index(f"## `GET {path}`")
        section = text[start:text.find("\n## ", start + 1)]
        missing += [f"{path}: {p['name']}" for p in item["get"].get("parameters", [])
                    if p["in"] == "query" and f"`{p['name']}`" not in section]
    assert not missing, missing


def test_every_hub_route_says_how_it_is_merged(tmp_path: Path):
    text = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `GET /api/v1/")]
    _, hub = _api_paths(tmp_path)
    for path in hub:  # the table writes `{id}` for path parameters
        stem = re.sub(r"\{[^}]*\}", "{", path)
        assert any(re.sub(r"\{[^}]*\}", "{", r.split("`")[1]).startswith("GET " + stem) for r in rows), path


def _federated_selectors() -> list[tuple[str, dict[str, str]]]:
    """(name regex, other matchers) of each match[] selector of docs/scaling.md's federation recipe."""
    text = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    (recipe,) = re.findall(r"/federate\?([^`\s]+)", text)
    selectors = []
    for sel in re.findall(r"match\[\]=\{([^}]*)\}", recipe):
        matchers = dict(re.findall(r'(\w+)=~"([^"]*)"', sel))
        selectors.append((matchers.pop("__name__"), matchers))
    return selectors


def test_the_federation_recipe_takes_every_recorded_series_the_dashboards_read():
    """The recipe federated `vmta_isp:.*|isp:.*|sender.*:.*` only: the dashboards read other levels too
    (vmta_pool:*, instance_vmta_pool_isp:*, ...) and went empty on the global Prometheus (review 2026-12). Its
    selectors must take every recording rule of rules/recording.yaml, hence every one the dashboards read, the
    alerts' state the Incidents dashboard reads, the one raw series the dashboards' variables list (without it every
    variable was empty, hence every panel: review 2026-12-05), and no other raw series (the rules are evaluated where
    those are)."""
    import yaml

    selectors = _federated_selectors()

    def federated(name: str, **labels: str) -> bool:
        return any(re.fullmatch(regex, name) and all(re.fullmatch(v, labels.get(k, "")) for k, v in rest.items())
                   for regex, rest in selectors)

    recorded = {r["record"] for g in yaml.safe_load((ROOT / "rules" / "recording.yaml").read_text())["groups"]
                for r in g["rules"]}
    dashboards = " ".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "grafana" / "dashboards")
                                                                         .glob("*.json")))
    read = set(re.findall(r"\b[a-z][a-z_]*:[a-z0-9_]+:[a-z0-9_]+\b", dashboards))  # not ${__from:date:seconds}
    assert read and read <= recorded, read - recorded
    assert {"vmta_pool:pmta_hard_bounced:ratio_rate1h", "instance_vmta_pool_isp:pmta_deferrals_older_than_4h:"
            "ratio_increase30m", "sender_isp:pmta_sender_complaints:ratio_rate1d"} <= read
    assert [n for n in sorted(recorded) if not federated(n)] == []
    assert "ALERTS{" in dashboards and "ALERTS_FOR_STATE{" in dashboards
    assert federated("ALERTS", alertname="PmtaIspThrottling") and federated("ALERTS_FOR_STATE", alertname="WatchtowerDown")
    assert not federated("ALERTS", alertname="NodeDown")  # another team's alerts stay home
    listed = set(re.findall(r"label_values\(([\w:]+)", dashboards))  # the job/instance variables' series
    assert "watchtower_build_info" in listed and [n for n in sorted(listed) if not federated(n)] == []
    raw = [m.name for m in METRICS if m.name not in listed] + ["up", "instance:node_cpu:rate5m"]
    assert [n for n in raw if federated(n)] == []


async def test_the_text_example_of_the_api_reference_is_what_the_api_answers(tmp_path: Path) -> None:
    """docs/api.md's `format=text` example, against its own corpus with the shipped classification tables: it showed
    `[other]` on success lines, which carry no class (review 2026-12-05)."""
    from exporter.classify import IspClassifier, ReplyClassifier
    from tests.test_correlator_support import CORPUS, Harness

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    command = "$ curl -s 'http://localhost:9469/api/v1/messages/m1@shop.example?format=text'\n"
    shown = text.split(command, 1)[1].split("\n\n", 1)[0].splitlines()
    harness = Harness(tmp_path, isp_of=IspClassifier.load().classify_rcpt, class_of=ReplyClassifier.load().classify)
    try:
        for b in CORPUS:
            harness.commit(b)
        async with harness.client() as client:
            answer = await client.get("/api/v1/messages/m1@shop.example", params={"format": "text"})
    finally:
        harness.close()
    assert answer.status_code == 200
    assert answer.text.splitlines() == shown
