"""A dashboard linter over grafana/dashboards/*.json, in the spirit of grafana/dashboard-linter.

Checks: the seven fixed uids, provisioning form (a `datasource` variable, no `__inputs`, no
leftover `current`, not editable), `job`/`instance` matchers on every selector, `$__rate_interval`
in every rate/irate/increase (or `$__range` in an increase: a total over the time range), counters only
inside them, every metric in exporter/metrics.py or rules/recording.yaml, titles/descriptions/units, and,
with promtool installed, that every query
parses as PromQL. Also: the JSON is what grafana/build.py generates, and the provisioning YAML;
drill-down links, NaN-free quantiles, and `promtool test rules` of a few panel queries on synthetic series.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.metrics import METRICS

REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
EXPECTED_UIDS = {
    "watchtower-overview", "watchtower-vmta", "watchtower-cluster", "watchtower-flows", "watchtower-forensics",
    "watchtower-incidents", "watchtower-warroom",
}
INFINITY = "yesoreyeram-infinity-datasource"
INFINITY_ALLOWED = {"watchtower-flows", "watchtower-forensics", "watchtower-vmta", "watchtower-incidents"}
CORE_PANELS = {
    "row", "timeseries", "stat", "gauge", "bargauge", "table", "status-history", "state-timeline", "heatmap",
    "nodeGraph", "text",
}
NEEDS_UNIT = {"timeseries", "stat", "gauge", "bargauge", "status-history", "state-timeline"}
VALID_UNITS = {"short", "none", "percent", "percentunit", "s", "ms", "bytes", "decbytes", "Bps", "cps", "ops",
               "reqps", "dateTimeAsIso", "dateTimeFromNow"}
BUILTIN_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}  # Prometheus' own series
ALERT_SERIES = {"ALERTS", "ALERTS_FOR_STATE"}  # cluster-level alerts have no instance label
STATIC_RULES = {"isp:pmta_isp_display_name:info"}  # constants (vector(1)): no job, no instance
GRAFANA_VARS = {"__rate_interval", "__interval", "__range", "__from", "__to", "__data", "__url_time_range",
                "__all_variables", "__dashboard", "__org", "__user", "__field", "__series", "__value"}
VAR_REF = re.compile(r"\$\{(\w+)(?:[:.][^}]*)?\}|\$(\w+)")


# --- loading ------------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        yield panel
        stack[0:0] = panel.get("panels", [])


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def prom_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) for every Prometheus target of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"{panel.get('title')!r}/{target.get('refId')}", target["expr"]


def variable_query(var: dict[str, Any]) -> str:
    query = var.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def recording_rules() -> dict[str, list[str]]:
    """Recording rule name -> its expressions (a name may be recorded by several rules)."""
    path = REPO / "rules" / "recording.yaml"
    if not path.exists():
        return {}
    rules: dict[str, list[str]] = {}
    for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                rules.setdefault(rule["record"], []).append(rule["expr"])
    return rules


RULES = recording_rules()
HISTOGRAMS = {m.name for m in METRICS if m.kind == "histogram"}
KNOWN = ({m.name for m in METRICS} | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
         | set(RULES) | BUILTIN_SERIES)


# --- PromQL scanning ------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "Inf", "NaN"}


def _skeleton(expr: str) -> str:
    """The expression with strings emptied, `${var}` made `$var`, and label matchers/ranges kept as markers."""
    s = _STRING.sub('""', re.sub(r"\$\{(\w+)(?::\w+)?\}", r"$\1", expr))
    s = re.sub(r"\{[^}]*\}", "{}", s)
    return re.sub(r"\[[^\]]*\]", "[]", s)


_NAME_REGEX = re.compile(r'__name__\s*=~\s*"([\w:]*)\(([\w:|]+)\)([\w:]*)"')
"""`{__name__=~"prefix_(a|b)_suffix", ...}`: the one form of metric-name regex the dashboards may use."""


def metric_names(expr: str) -> list[str]:
    s = _GROUPING.sub(" ", _skeleton(expr))
    names = re.findall(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\b(?!\s*\()", s)
    names += [pre + alt + post for pre, alts, post in _NAME_REGEX.findall(expr) for alt in alts.split("|")]
    return [n for n in names if n not in _KEYWORDS]


def _call_args(expr: str, open_paren: int) -> str:
    depth = 0
    for i in range(open_paren, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        if depth == 0:
            return expr[open_paren + 1:i]
    return expr[open_paren + 1:]


def rules_without_instance() -> set[str]:
    """Recording rules whose series carry no `instance` (cluster-wide levels): no instance matcher needed."""
    dropped: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, exprs in RULES.items():
            if name in dropped:
                continue
            for expr in exprs:
                refs = metric_names(expr)
                by_lists = re.findall(r"\bby\s*\(([^)]*)\)", expr)
                if (not refs or re.search(r"\bwithout\s*\([^)]*\binstance\b", expr)
                        or any("instance" not in b for b in by_lists) or any(r in dropped for r in refs)):
                    dropped.add(name)
                    changed = True
                    break
    return dropped


NO_INSTANCE = rules_without_instance() | ALERT_SERIES


def lint_expr(expr: str) -> list[str]:
    """dashboard-linter's PromQL rules, as problems found in one query."""
    problems = []
    flat = re.sub(r"\$\{(\w+)(?::\w+)?\}", r"$\1", expr)
    skeleton = _skeleton(expr)
    names = metric_names(expr)
    if not names:
        problems.append("no metric selected")
    for name in sorted(set(names)):
        if name not in KNOWN:
            problems.append(f"unknown metric {name} (not in exporter/metrics.py nor rules/recording.yaml)")
        if not re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", skeleton):
            continue  # named by a __name__ regex
        bare = len(re.findall(rf"(?<![\w:]){re.escape(name)}(?![\w:])", skeleton))
        braced = len(re.findall(rf"(?<![\w:]){re.escape(name)}\s*\{{", skeleton))
        if bare != braced:
            problems.append(f"{name} selected without label matchers")
    for m in re.finditer(r"(?<![\w:])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}", flat):
        name, matchers = m.groups()
        if name is None:
            if "__name__" not in matchers:
                continue  # `{...}` of a by/on list or a string, not a selector
            name = "{__name__=~...}"
        if name in STATIC_RULES:
            continue
        if not re.search(r'\bjob\s*=~\s*"\$job"', matchers):
            problems.append(f'{name}: no job=~"$job" matcher')
        if name not in NO_INSTANCE and not re.search(r'\binstance\s*=~\s*"\$instance"', matchers):
            problems.append(f'{name}: no instance=~"$instance" matcher')
    masked = _STRING.sub(lambda s: '"' + "x" * (len(s.group()) - 2) + '"', flat)  # same offsets as flat
    for m in re.finditer(r"\b(rate|irate|increase)\s*\(", masked):
        args = _call_args(flat, m.end() - 1).replace(" ", "")
        # a total over the dashboard's range (a table's counts) is increase(...[$__range]); a rate never is
        if "[$__rate_interval]" not in args and not (m.group(1) == "increase" and args.endswith("[$__range]")):
            problems.append(f"{m.group(1)}() without [$__rate_interval]: {args}")
    for m in re.finditer(r"(?<![\w:])([A-Za-z_:][\w:]*_total)(?![\w:])", skeleton):
        if not re.search(r"\b(rate|irate|increase)\s*\(\s*$", skeleton[:m.start()]):
            problems.append(f"counter {m.group(1)} outside rate()/irate()/increase()")
    return problems


# --- the generated JSON ----------------------------------------------------------------------------


def _build_module() -> Any:
    """grafana/build.py under a private name (PyPA's `build` may be installed), dashlib beside it."""
    spec = importlib.util.spec_from_file_location("watchtower_grafana_build", GRAFANA / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(GRAFANA))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(GRAFANA))
    return module


def test_dashboards_md_names_every_alert_the_incidents_table_headlines():
    """docs/dashboards.md's Active incidents entry lists each alert that gets a headline verb (grafana/build.py)."""
    build = _build_module()
    text = (GRAFANA.parent / "docs" / "dashboards.md").read_text(encoding="utf-8")
    entry = text[text.index("**Active incidents**"):text.index("**Alert headlines (Alertmanager)**")]
    assert [a for a in build.WHAT if f"`{a}`" not in entry] == []


def test_scaling_md_names_every_api_route_the_dashboards_read():
    """A hub must serve what the dashboards read: docs/scaling.md's Grafana paragraph names each route."""
    text = (GRAFANA.parent / "docs" / "scaling.md").read_text(encoding="utf-8")
    para = text[text.index("**Grafana.**"):].split("\n\n")[0]
    read = {m for p in DASHBOARDS for m in re.findall(r"/api/v1/[a-z]+", p.read_text(encoding="utf-8"))}
    assert read and sorted(r for r in read if f"`{r}`" not in para) == []


def test_the_dashboards_exist_with_fixed_uids():
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    assert {p.stem for p in DASHBOARDS} == EXPECTED_UIDS  # file name = uid


def test_committed_json_is_what_build_py_generates():
    build = _build_module()
    assert set(build.DASHBOARDS) == {p.name for p in DASHBOARDS}
    for path in DASHBOARDS:
        assert path.read_text(encoding="utf-8") == build.render(path.name), (
            f"{path.name} is stale: run `python grafana/build.py`")
    # and rendering twice gives the same bytes
    assert all(build.render(p.name) == build.render(p.name) for p in DASHBOARDS)


# --- per-dashboard lint ------------------------------------------------------------------------------

ids = [p.stem for p in DASHBOARDS]


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_provisioning_form(path: Path):
    d = load(path)
    assert "__inputs" not in d and "__requires" not in d, "export-for-sharing form breaks file provisioning"
    assert d["editable"] is False
    assert d["id"] is None
    assert d["schemaVersion"] >= 39
    assert d["title"].startswith("PMTA Watchtower / ")
    assert d["description"]
    assert "pmta-watchtower" in d["tags"]
    assert "${DS_" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_templating(path: Path):
    d = load(path)
    v = variables(d)
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert v[name]["type"] == "query", name
    for name, var in v.items():
        assert "current" not in var, f"{name}: leftover `current` value"
        assert not var.get("options"), f"{name}: leftover options"
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
    uses_infinity = any(p.get("datasource", {}).get("type") == INFINITY for p in panels(d))
    if uses_infinity:
        assert v["infinity"]["type"] == "datasource" and v["infinity"]["query"] == INFINITY


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_variable_queries(path: Path):
    problems = []
    for name, var in variables(load(path)).items():
        if var["type"] != "query":
            continue
        query = variable_query(var)
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert m, f"{name}: expected label_values(selector, label), got {query}"
        selector, label = m.groups()
        if name in ("cluster", "job"):  # the cluster/job/instance variables cannot filter on themselves
            metric, _, inner = selector.partition("{")
            selector = metric + "{" + ", ".join(m for m in (inner.rstrip("}"), 'cluster=~"$cluster"', 'job=~"$job"',
                                                            'instance=~"$instance"') if m) + "}"
        elif name == "instance":
            selector = selector.replace("}", ', instance=~"$instance"}')
        # label_values() reads label values, not samples: a counter needs no rate() there
        problems += [f"variable {name}: {p}" for p in lint_expr(selector) if not p.startswith("counter ")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_every_variable_used_exists(path: Path):
    d = load(path)
    defined = set(variables(d))
    text = json.dumps(d["panels"]) + json.dumps([variable_query(v) for v in variables(d).values()])
    used = {a or b for a, b in VAR_REF.findall(text)}
    used = {u for u in used if not u.isdigit()}  # $1 in label_replace is a regex group, not a variable
    assert used - defined - GRAFANA_VARS == set()


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_panels_have_title_description_unit(path: Path):
    d = load(path)
    problems = []
    seen_ids = set()
    for p in panels(d):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        assert p["type"] in CORE_PANELS, f"{where}: {p['type']} is not a core panel"
        assert p.get("id") not in seen_ids, f"{where}: duplicate id"
        seen_ids.add(p.get("id"))
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{where}: wider than the grid"
        if p["type"] == "row":
            assert p.get("title"), where
            continue
        if not p.get("title"):
            problems.append(f"{where}: no title")
        if not p.get("description"):
            problems.append(f"{where}: no description")
        if p["type"] in NEEDS_UNIT:
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if unit not in VALID_UNITS:
                problems.append(f"{where}: unit {unit!r}")
        if p["type"] == "heatmap" and p["options"]["yAxis"].get("unit") not in VALID_UNITS:
            problems.append(f"{where}: heatmap y axis unit")
        for override in p.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "unit" and prop["value"] not in VALID_UNITS:
                    problems.append(f"{where}: column unit {prop['value']!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_every_query_uses_the_datasource_variable(path: Path):
    d = load(path)
    problems = []
    for p in panels(d):
        targets = p.get("targets", [])
        if not targets:
            assert p["type"] in ("row", "text"), f"{p['title']!r} has no queries"
            continue
        ds = p.get("datasource", {})
        allowed = [{"type": "prometheus", "uid": "${datasource}"}]
        if d["uid"] in INFINITY_ALLOWED:
            allowed.append({"type": INFINITY, "uid": "${infinity}"})
        if d["uid"] == "watchtower-incidents":
            allowed.append({"type": INFINITY, "uid": "${alertmanager}"})
        if ds not in allowed:
            problems.append(f"{p['title']!r}: panel datasource {ds}")
        for t in targets:
            if t.get("datasource") != ds:
                problems.append(f"{p['title']!r}/{t.get('refId')}: target datasource {t.get('datasource')}")
            if ds.get("type") == "prometheus" and not t.get("expr"):
                problems.append(f"{p['title']!r}/{t.get('refId')}: no expr")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_promql_follows_the_linter_rules(path: Path):
    problems = [f"{where}: {problem}" for where, expr in prom_exprs(load(path)) for problem in lint_expr(expr)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_links_point_at_provisioned_dashboards(path: Path):
    for uid in re.findall(r"/d/([\w-]+)", json.dumps(load(path)["panels"])):
        assert uid in EXPECTED_UIDS, uid


# --- the linter catches what it should -------------------------------------------------------------

GOOD = 'sum by (isp) (rate(pmta_delivered_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))'


@pytest.mark.parametrize(("expr", "problem"), [
    ('sum(rate(pmta_delivered_total{instance=~"$instance"}[$__rate_interval]))', "no job"),
    ('sum(rate(pmta_delivered_total{job=~"$job"}[$__rate_interval]))', "no instance"),
    ('sum(rate(pmta_delivered_total{job=~"$job", instance=~"$instance"}[5m]))', "$__rate_interval"),
    ('sum(pmta_delivered_total{job=~"$job", instance=~"$instance"})', "outside rate"),
    ('sum(pmta_queue_recipient{job=~"$job", instance=~"$instance"})', "unknown metric"),
    ("sum(pmta_queue_recipients)", "without label matchers"),
    ('histogram_quantile(0.9, sum by (le) (rate(pmta_delivery_delay_seconds_bucket{job=~"$job"}[5m])))', "5m"),
    ('count({__name__=~"pmta_(delivered|bounced)_total", instance=~"$instance"})', "no job"),
    ('count({__name__=~"pmta_(delivered|bouncd)_total", job=~"$job", instance=~"$instance"})', "unknown metric"),
    ('sum(rate(pmta_delivered_total{job=~"$job", instance=~"$instance"}[$__range]))', "$__rate_interval"),
    ('sum(increase(pmta_delivered_total{job=~"$job", instance=~"$instance"}[1h]))', "$__rate_interval"),
])
def test_linter_catches(expr: str, problem: str):
    assert lint_expr(GOOD) == []
    assert any(problem in p for p in lint_expr(expr)), lint_expr(expr)


def test_linter_accepts_totals_over_the_dashboard_range():
    """increase(...[$__range]) is a total over the time range (a table's counts), not a rate: allowed."""
    assert lint_expr('sum(increase(pmta_delivered_total{job=~"$job", instance=~"$instance"}[$__range]))') == []


def test_linter_accepts_cluster_rules_without_instance():
    assert "isp:pmta_complaints:ratio_rate1d" in RULES, sorted(RULES)  # a cluster-wide rule (no instance label)
    assert "isp:pmta_complaints:ratio_rate1d" in NO_INSTANCE
    assert lint_expr('isp:pmta_complaints:ratio_rate1d{job=~"$job"}') == []
    # a per-host rule keeps the instance matcher rule
    assert "vmta_isp:pmta_attempts:rate10m" in RULES and "vmta_isp:pmta_attempts:rate10m" not in NO_INSTANCE
    assert lint_expr('vmta_isp:pmta_attempts:rate10m{job=~"$job"}') == [
        'vmta_isp:pmta_attempts:rate10m: no instance=~"$instance" matcher']


# --- promtool -----------------------------------------------------------------------------------------


def substitute(expr: str) -> str:
    """Template variables -> values PromQL accepts: ranges become 5m, every other variable a regex."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return VAR_REF.sub(".*", expr)


def promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:query:{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")


@needs_promtool
@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_promql_parses(path: Path, tmp_path: Path):
    d = load(path)
    exprs = [substitute(e) for _, e in prom_exprs(d)]
    for var in variables(d).values():
        if var["type"] == "query":  # label_values(sel, l) is Grafana's; check its selector as `group by (l) (sel)`
            sel, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable_query(var)).groups()  # type: ignore[union-attr]
            exprs.append(substitute(f"group by ({label}) ({sel})"))
    assert all("$" not in e for e in exprs)
    result = promtool_check(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rejects_broken_promql(tmp_path: Path):
    assert promtool_check([substitute(GOOD)], tmp_path).returncode == 0
    assert promtool_check([substitute(GOOD.replace("))", ")"))], tmp_path).returncode != 0


# --- specific dashboards -------------------------------------------------------------------------------


def by_uid(uid: str) -> dict[str, Any]:
    return load(GRAFANA / "dashboards" / f"{uid}.json")


def test_status_board_variables_match_alert_links():
    v = variables(by_uid("watchtower-vmta"))
    for name in ("vmta_pool", "vmta", "isp"):
        assert v[name]["multi"] and v[name]["includeAll"], name
    links = []
    for path in sorted((REPO / "rules" / "alerts").glob("*.yaml")):
        links += re.findall(r"^\s*dashboard_url:\s*(.+?)\s*$", path.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(links) >= 20
    for link in links:
        m = re.match(r"/d/([\w-]+)/[\w-]*\?(.*)", link)
        assert m, link
        uid, query = m.groups()
        assert uid in EXPECTED_UIDS, link
        names = set(re.findall(r"var-(\w+)=", query))
        assert names <= set(variables(by_uid(uid))), link
        assert {"job", "cluster"} <= names, link  # on the alert's own job and site (docs/alerts.md)


def test_status_board_has_status_history_table_and_drilldown_rows():
    d = by_uid("watchtower-vmta")
    kinds = [p["type"] for p in panels(d)]
    assert kinds.count("status-history") >= 2 and "table" in kinds
    rows = [p for p in panels(d) if p["type"] == "row" and p.get("repeat") == "vmta"]
    assert rows and rows[0]["collapsed"] and rows[0]["panels"]


def test_flow_graph_reads_nodes_and_edges_from_the_api():
    graph = next(p for p in panels(by_uid("watchtower-flows")) if p["type"] == "nodeGraph")
    formats = {t["format"]: t for t in graph["targets"]}
    assert set(formats) == {"node-graph-nodes", "node-graph-edges"}
    assert formats["node-graph-nodes"]["root_selector"] == "nodes"
    assert formats["node-graph-edges"]["root_selector"] == "edges"
    assert all(t["url"].startswith("/api/v1/flows?since=") for t in graph["targets"])


def test_forensics_calls_the_message_api():
    d = by_uid("watchtower-forensics")
    assert variables(d)["message_id"]["type"] == "textbox"
    urls = [t["url"] for p in panels(d) for t in p.get("targets", []) if "url" in t]
    # /api/v1/lookup answers an empty text box with 200 and an empty list: no error on first open
    assert any(u.startswith("/api/v1/lookup?message_id=${message_id") for u in urls)
    assert not [u for u in urls if u.startswith(("/api/v1/messages/", "/api/v1/timeline?"))]
    texts = " ".join(p["options"]["content"] for p in panels(d) if p["type"] == "text")
    for route in ("/api/v1/messages/", "/api/v1/timeline?job_id=", "/api/v1/search?"):
        assert route in texts, route


def test_only_the_api_dashboards_need_a_plugin():
    for path in DASHBOARDS:
        d = load(path)
        plugin_panels = [p["title"] for p in panels(d) if p.get("datasource", {}).get("type") == INFINITY]
        assert not plugin_panels or d["uid"] in INFINITY_ALLOWED, plugin_panels


# --- provisioning and docs ---------------------------------------------------------------------------------


def test_dashboard_provider():
    conf = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "watchtower.yml").read_text(encoding="utf-8"))
    assert conf["apiVersion"] == 1
    (provider,) = conf["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "PMTA Watchtower"
    assert provider["disableDeletion"] is True
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"].startswith("/")


def test_datasource_provisioning():
    conf = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "watchtower.yml").read_text(encoding="utf-8"))
    assert conf["apiVersion"] == 1
    types = {ds["type"]: ds for ds in conf["datasources"]}
    assert types["prometheus"]["url"].startswith("http")
    assert types[INFINITY]["url"].startswith("http")
    assert sum(ds.get("isDefault", False) for ds in conf["datasources"]) == 1


def test_infinity_datasources_reach_only_what_the_dashboards_read():
    """Any viewer (anonymous in docker/) can send an Infinity data source a query of their own, GET or POST, and
    `allowedHosts` is a plain prefix of the whole request URL (Infinity's CanAllowURL): Alertmanager's is scoped to
    /api/v2/alerts, else a viewer could POST /api/v2/silences and mute every alert; Watchtower's to /api/v1/ (a
    bare `http://host:port` also lets `http://host:port@elsewhere/` by). Every dashboard query stays inside."""
    conf = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "watchtower.yml").read_text(encoding="utf-8"))
    infinity = {ds["uid"]: ds for ds in conf["datasources"] if ds["type"] == INFINITY}
    am, wt = infinity["alertmanager-api"], infinity["watchtower-api"]
    assert "alertmanager" in am["name"].lower() and "alertmanager" not in wt["name"].lower()  # the variables' regexes
    assert am["url"] == "http://alertmanager:9093/api/v2/alerts"
    assert am["jsonData"]["allowedHosts"] == [am["url"]]
    assert wt["jsonData"]["allowedHosts"] == [wt["url"] + "/api/v1/"]
    for ds in infinity.values():
        assert not ds["jsonData"].get("allowDangerousHTTPMethods"), ds["name"]
        for allowed in ds["jsonData"]["allowedHosts"]:
            assert re.fullmatch(r"https?://[^/@]+/.+", allowed), allowed  # a path: no `host:port@elsewhere`
    base = {"${alertmanager}": am["url"], "${infinity}": wt["url"]}
    targets = [t for path in DASHBOARDS for p in panels(load(path)) for t in p.get("targets", [])
               if t.get("datasource", {}).get("type") == INFINITY]
    assert {t["datasource"]["uid"] for t in targets} == set(base)
    for t in targets:
        assert t["url_options"]["method"] == "GET", t["url"]
        sent = base[t["datasource"]["uid"]] + t["url"]  # Infinity appends the query URL to the data source's
        allowed = infinity["alertmanager-api" if t["datasource"]["uid"] == "${alertmanager}" else "watchtower-api"]
        assert any(sent.startswith(a) for a in allowed["jsonData"]["allowedHosts"]), sent
        assert ".." not in t["url"] and "@" not in t["url"].split("?")[0], t["url"]


def test_docs_describe_every_dashboard():
    doc = (REPO / "docs" / "dashboards.md").read_text(encoding="utf-8")
    for path in DASHBOARDS:
        d = load(path)
        assert d["uid"] in doc and d["title"] in doc, d["uid"]
    assert INFINITY in doc


# --- issue 11: defects that once shipped ----------------------------------------------------------------


def test_job_variable_all_means_the_watchtower_jobs_not_every_target():
    for path in DASHBOARDS:
        job = variables(load(path))["job"]
        assert job["includeAll"] and job["allValue"] is None, path.name  # `.+` showed every `up` of Prometheus


def test_ratio_bar_gauges_have_a_max():
    for path in DASHBOARDS:
        for p in panels(load(path)):
            if p["type"] == "bargauge" and p["fieldConfig"]["defaults"]["unit"] == "percentunit":
                assert "max" in p["fieldConfig"]["defaults"], p["title"]


def test_complaint_ratios_use_the_daily_rules():
    """Gmail's and Yahoo's limits are per day: a complaint ratio over $__rate_interval turns red on one complaint."""
    seen = 0
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                if "complaints" in expr and "ratio" in (p["title"] + expr).lower():
                    assert "rate(pmta_complaints_total" not in expr and "rate1d" in expr, p["title"]
                    seen += 1
    assert seen >= 4


def test_status_board_judges_each_vmta_by_its_worst_isp():
    d = by_uid("watchtower-vmta")
    by_title = {p["title"]: p for p in panels(d)}
    for title in ("VMTAs throttled over 30% at an ISP", "VMTAs below 50% success at an ISP",
                  "Throttled share by VMTA (worst ISP)", "Success ratio by VMTA (worst ISP)"):
        expr = by_title[title]["targets"][0]["expr"]
        # per VMTA x ISP cell as the alert: over all its pools (an ISP throttles the IP) and per pool (a pool's
        # sender domain has its own reputation), the worse kept ...
        assert "sum by (cluster, instance, vmta, isp)" in expr, title
        assert "sum by (cluster, instance, vmta, vmta_pool, isp)" in expr, title
        assert re.search(r"\b(min|max) by \(cluster, instance, vmta, isp\)", expr), title
        assert "* 600 >= 50" in expr, title  # ... each with the alert's >= 50 attempts in 10 minutes
        assert re.search(r"\b(min|max) by \(cluster, instance, vmta\)", expr), title  # ... then the worst cell


def test_alert_links_reach_the_replies_panel():
    d = by_uid("watchtower-vmta")
    urls = [t["url"] for p in panels(d) for t in p.get("targets", []) if "url" in t]
    assert "/api/v1/replies?vmta=${vmta:csv}&pool=${vmta_pool:csv}&isp=${isp:csv}&since=${__from:date:seconds}" \
        "&until=${__to:date:seconds}&limit=10&host=${instance:csv}" in urls
    # the hub asks only the Instance filter's hosts (an alert link names its host): VMTA names repeat across hosts
    assert all(u.endswith("&host=${instance:csv}") for u in urls if "/api/v1/replies" in u)
    # every replies panel follows the pool filter, as the Prometheus panels beside it do
    assert all("&pool=${vmta_pool:csv}&" in u for u in urls if "/api/v1/replies" in u) and len(urls) == 2
    top = [p for p in d["panels"] if p["type"] == "table" and p["title"].startswith("Why")]
    assert top, "the replies table must be outside the collapsed rows, where an alert link lands"


def test_breakdown_legends_list_only_what_happened():
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                if re.search(r"sum by \([^)]*\b(class|reason|category|feedback_type)\b", expr) \
                        and p["type"] == "timeseries" and "ratio" not in expr:
                    assert expr.rstrip().endswith("> 0"), p["title"]


def test_incidents_and_war_room():
    inc = by_uid("watchtower-incidents")
    exprs = " ".join(e for _, e in prom_exprs(inc))
    assert "ALERTS_FOR_STATE" in exprs and 'ALERTS{alertstate="firing"' in exprs
    assert any(a.get("expr", "").startswith("ALERTS{") for a in inc["annotations"]["list"])
    headline = next(p for p in panels(inc) if p["title"] == "Alert headlines (Alertmanager)")
    # relative to the Alertmanager data source's URL, which is /api/v2/alerts itself (test_datasource_provisioning)
    assert headline["targets"][0]["url"] == "?active=true&silenced=false&inhibited=false"
    war = by_uid("watchtower-warroom")
    grid = next(p for p in panels(war) if p["title"] == "VMTA × ISP")
    assert grid["transformations"][0]["id"] == "groupingToMatrix"
    assert grid["transformations"][0]["options"] | {} == {
        "columnField": "isp", "rowField": "vmta", "valueField": "Value", "emptyValue": "null"}


# --- audit: defects of the dashboard-author's kind ----------------------------------------------------


def data_links(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, url) of every data link (field defaults and overrides) of every panel."""
    for p in panels(dashboard):
        fc = p.get("fieldConfig", {})
        links = list(fc.get("defaults", {}).get("links", []))
        for override in fc.get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "links":
                    links += prop["value"]
        for link in links:
            yield p["title"], link["url"]


KEPT_VARS = ("datasource", "infinity", "cluster", "job", "instance")
"""A drill-down keeps the data sources and hosts the operator picked, unless it sets them itself."""


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_drilldown_links_keep_time_data_sources_and_hosts(path: Path):
    d = load(path)
    problems = []
    for title, url in data_links(d):
        m = re.match(r"/d/([\w-]+)/[\w-]*\?(.*)", url)
        if not m:
            continue
        target = variables(by_uid(m.group(1)))
        query = m.group(2)
        if "${__url_time_range}" not in query:
            problems.append(f"{title!r}: {url} drops the time range")
        for name in KEPT_VARS:
            if name in target and name in variables(d) and f"${{{name}:queryparam}}" not in query \
                    and f"var-{name}=" not in query:
                problems.append(f"{title!r}: link to {m.group(1)} drops ${name}")
        for name in re.findall(r"var-(\w+)=", query) + re.findall(r"\$\{(\w+):queryparam\}", query):
            if name not in target:
                problems.append(f"{title!r}: {m.group(1)} has no variable {name}")
    assert not problems, "\n".join(problems)


CELL_ALERTS = re.compile(r'\bALERTS(?:_FOR_STATE)?\{[^}]*vmta!=""[^}]*\}')


def test_incident_cell_panels_follow_the_isp_filter():
    """The incidents page has an ISP variable: every per-cell alert selector (the incident rows, the
    affected cells) must carry it, or the table keeps listing every ISP's incidents."""
    d = by_uid("watchtower-incidents")
    assert "isp" in variables(d)
    checked = 0
    for where, expr in prom_exprs(d):
        if where.startswith("'Other alerts firing'/"):  # leaves out every cell alert, of whatever ISP
            continue
        for m in CELL_ALERTS.finditer(expr):
            checked += 1
            assert 'isp=~"$isp"' in m.group(), f"{where}: {m.group()}"
    assert checked >= 5


def test_docs_quote_the_root_selectors_the_dashboards_use():
    """docs/dashboards.md's example GJSON root selectors are ones the Infinity targets really use."""
    doc = (REPO / "docs" / "dashboards.md").read_text(encoding="utf-8")
    used = {t["root_selector"] for p in DASHBOARDS for q in panels(load(p)) for t in q.get("targets", [])
            if "root_selector" in t}
    quoted = set(re.findall(r"`([\w.#]*#[\w.#]*\|@\w+)`", doc))
    assert quoted, "no GJSON example left in docs/dashboards.md"
    assert quoted - used == set()


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_quantiles_leave_out_idle_windows(path: Path):
    """histogram_quantile of buckets that saw nothing is NaN, which legends and tooltips print: filter it."""
    problems = []
    for where, expr in prom_exprs(load(path)):
        for m in re.finditer(r"\bhistogram_quantile\s*\(", expr):
            rest = expr[m.end() - 1:]
            after = rest[len(_call_args(rest, 0)) + 2:]
            if not re.match(r"\s*(>=?\s*0\b|and\b)", after):
                problems.append(f"{where}: {expr[m.start():m.start() + 80]}...")
    assert not problems, "\n".join(problems)


# --- promtool unit tests of panel queries on synthetic series ------------------------------------------


def promtool_expect(tmp_path: Path, series: dict[str, str], exprs: list[tuple[str, list[dict[str, Any]]]],
                    eval_time: str = "40m", interval: str = "1m", every: str = "1m") -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of panel queries (variables as on first open: All) over `series` (one sample per
    `interval`), with the shipped recording rules loaded (evaluated `every`: a coarser step for days of series),
    against the samples each query should give."""
    test = {"rule_files": [str(REPO / "rules" / "recording.yaml")], "evaluation_interval": every, "tests": [{
        "interval": interval,
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "promql_expr_test": [{"expr": substitute(e), "eval_time": eval_time, "exp_samples": exp} for e, exp in exprs],
    }]}
    path = tmp_path / "panel-tests.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False), encoding="utf-8")
    return subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def panel_expr(uid: str, title: str, ref: str = "A") -> str:
    (expr,) = [e for where, e in prom_exprs(by_uid(uid)) if where == f"{title!r}/{ref}"]
    return expr


def delivered(vmta: str, values: str, isp: str = "gmail") -> tuple[str, str]:
    return (f'pmta_delivered_total{{job="watchtower", instance="pmta-01:9469", vmta="{vmta}", vmta_pool="pool-a", '
            f'isp="{isp}"}}', values)


@needs_promtool
def test_vmta_count_leaves_out_idle_vmtas(tmp_path: Path):
    """"VMTAs with delivery attempts in the last 10 minutes": a VMTA whose counters stand still is not one."""
    series = dict([delivered("vmta-01", "0+100x40"), delivered("vmta-02", "0+100x40"),
                   delivered("vmta-03", "0+100x10 1000+0x30")])  # vmta-03 idle for the last 30 minutes
    result = promtool_expect(tmp_path, series, [(panel_expr("watchtower-vmta", "VMTAs"),
                                                 [{"labels": "{}", "value": 2}])])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_flows_variables_list_senders_that_deliver_nothing(tmp_path: Path):
    """A sending domain whose mail all bounces or defers (a DMARC failure, a blocklisting) is the one to pick."""
    labels = 'job="watchtower", instance="pmta-01:9469"'
    series = {f'pmta_sender_delivered_total{{{labels}, sender="good.example", isp="gmail"}}': "0+10x40",
              f'pmta_sender_bounced_total{{{labels}, sender="bad.example", isp="yahoo", class="auth_failure"}}':
                  "0+10x40",
              f'pmta_sender_deferred_total{{{labels}, sender="slow.example", isp="microsoft", class="throttled"}}':
                  "0+10x40"}
    v = variables(by_uid("watchtower-flows"))
    exprs = []
    for name, expected in (("sender", ["good.example", "bad.example", "slow.example"]),
                           ("isp", ["gmail", "yahoo", "microsoft"])):
        sel, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable_query(v[name])).groups()  # type: ignore[union-attr]
        assert label == name
        exprs.append((f"group by ({label}) ({sel})", [{"labels": f'{{{label}="{x}"}}', "value": 1} for x in expected]))
    result = promtool_expect(tmp_path, series, exprs)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_queue_panels_ride_out_a_missed_poll(tmp_path: Path):
    """A poll that misses its deadline leaves a VMTA's pmta_queue_* absent for a scrape (docs/metrics.md):
    the panels read the last value of the last 5 minutes, as the queue alerts do, so a board neither
    drops the queue nor turns a red cell green for one scrape."""
    queue = 'pmta_queue_recipients{job="watchtower", instance="pmta-01:9469", vmta="vmta-01", isp="gmail"}'
    series = dict([delivered("vmta-01", "0+100x40")])
    series[queue] = "250000x39 stale"  # the poll at 40m missed vmta-01
    result = promtool_expect(tmp_path, series, [
        (panel_expr("watchtower-vmta", "Queued recipients"), [{"labels": "{}", "value": 250000}]),
        (panel_expr("watchtower-warroom", "Cells at CRIT"), [{"labels": "{}", "value": 1}]),
        (panel_expr("watchtower-overview", "Queued recipients by ISP"), [{"labels": '{isp="gmail"}', "value": 250000}]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_outcomes_panel_plots_every_record_counter():
    """"Every record type Watchtower counts": one series per accounting-record counter (bytes aside)."""
    panel = next(p for p in panels(by_uid("watchtower-overview")) if p["title"] == "Outcomes per second")
    plotted = {n for t in panel["targets"] for n in metric_names(t["expr"])}
    counters = {m.name for m in METRICS if m.group == "records" and m.kind == "counter"
                and not m.name.startswith("pmta_sender_") and "_bytes" not in m.name}
    assert len(counters) >= 6 and counters - plotted == set()


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_panels_do_not_overlap(path: Path):
    """Grafana pushes an overlapping panel down, so the layout differs from the generator's (rows' children too)."""
    flat = [q for p in load(path)["panels"] for q in (p, *p.get("panels", []))]
    clashes = []
    for i, a in enumerate(flat):
        for b in flat[i + 1:]:
            pa, pb = a["gridPos"], b["gridPos"]
            if (pa["x"] < pb["x"] + pb["w"] and pb["x"] < pa["x"] + pa["w"]
                    and pa["y"] < pb["y"] + pb["h"] and pb["y"] < pa["y"] + pa["h"]):
                clashes.append(f"{a['title']!r} / {b['title']!r}")
    assert clashes == []


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_multi_value_variables_are_matched_as_regexes(path: Path):
    """A multi-value or All selection interpolates to `(a|b)` or `.*`: `=` or `!=` would match nothing."""
    d = load(path)
    multi = {n for n, v in variables(d).items() if v.get("multi") or v.get("includeAll")}
    texts = [e for _, e in prom_exprs(d)] + [variable_query(v) for v in variables(d).values()]
    texts += [a.get("expr", "") for a in d["annotations"]["list"]]
    bad = [m.group() for t in texts for m in re.finditer(r'\w+\s*!?=\s*"\$\{?(\w+)[^"]*"', t) if m.group(1) in multi]
    assert bad == []


def test_a_cluster_rule_is_folded_over_jobs_so_two_jobs_never_share_a_legend():
    """Cluster-wide rules keep `job`: with two jobs selected, a bare selector drew two series under one legend
    ("pool-a / gmail" twice, audit 2026-12). Each plotted one is aggregated by its legend's labels (or names job)."""
    bare = []
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for t in p.get("targets", []):
                expr, legend = t.get("expr", ""), t.get("legendFormat", "")
                if re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+\{[^}]*\}", expr.strip()) and "{{job}}" not in legend \
                        and t.get("format") != "table":
                    bare.append((path.name, p["title"], expr))
    assert bare == []


QUEUE_SERIES = [  # v1 attempts in pool-a, v2 in pool-c, v9 none at all yet (a new VMTA, a queue held back)
    ('pmta_queue_recipients{job="w", instance="h1", vmta="v1", isp="gmail"}', "100x10"),
    ('pmta_queue_recipients{job="w", instance="h1", vmta="v2", isp="gmail"}', "70x10"),
    ('pmta_queue_recipients{job="w", instance="h1", vmta="v9", isp="gmail"}', "500x10"),
    ('vmta_isp:pmta_attempts:rate10m{job="w", instance="h1", vmta="v1", vmta_pool="pool-a", isp="gmail"}', "5x10"),
    ('vmta_isp:pmta_attempts:rate10m{job="w", instance="h1", vmta="v2", vmta_pool="pool-c", isp="gmail"}', "0x10"),
]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH (apt-get install prometheus)")
@pytest.mark.parametrize(("pools", "expected"), [
    (".*", {"pool-a": 100, "pool-c": 70, "none": 500}),
    ("pool-a", {"pool-a": 100}),
    ("(pool-b|none)", {"none": 500}),  # v2's queue stays pool-c's: it has an attempts series (at 0)
    ("pool-b", {}),
])
def test_a_queue_without_any_attempt_yet_counts_under_pool_none(tmp_path: Path, pools: str, expected: dict):
    """The cluster board's "Queued recipients by pool" joins the queue gauges to the pool of each VMTA's attempts:
    a VMTA with a queue and no attempt yet dropped out (audit 2026-12). The panel's own query, its variables
    filled in as Grafana does, evaluated by the real promtool over series written here."""
    (target,) = next(p for p in panels(by_uid("watchtower-cluster"))
                     if p["title"] == "Queued recipients by pool")["targets"]
    expr = (target["expr"].replace("$cluster", ".*").replace("$job", "w").replace("$instance", ".+")
            .replace("$isp", ".*").replace("$vmta_pool", pools))
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": s, "values": v} for s, v in QUEUE_SERIES],
        "promql_expr_test": [{"expr": expr, "eval_time": "5m", "exp_samples": [
            {"labels": f'{{vmta_pool="{k}"}}', "value": v} for k, v in expected.items()]}]}]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(test, width=100_000))
    run = subprocess.run(["promtool", "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


SHARED_VMTA_SERIES = [  # v1 sends 100 attempts/s through p1 and 1/s through p2; v2 sends only through p2
    ('pmta_queue_recipients{job="w", instance="h1", vmta="v1", isp="gmail"}', "60000x10"),
    ('pmta_queue_recipients{job="w", instance="h1", vmta="v2", isp="gmail"}', "100x10"),
    ('vmta_isp:pmta_attempts:rate10m{job="w", instance="h1", vmta="v1", vmta_pool="p1", isp="gmail"}', "100x10"),
    ('vmta_isp:pmta_attempts:rate10m{job="w", instance="h1", vmta="v1", vmta_pool="p2", isp="gmail"}', "1x10"),
    ('vmta_isp:pmta_attempts:rate10m{job="w", instance="h1", vmta="v2", vmta_pool="p2", isp="gmail"}', "50x10"),
]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH (apt-get install prometheus)")
@pytest.mark.parametrize(("pools", "expected"), [
    (".*", {"p1": 60000, "p2": 100}),
    ("p2", {"p2": 100}),  # not v1's 60k: p2 carries 1% of v1's attempts
    ("p1", {"p1": 60000}),
])
def test_a_pool_filter_charges_a_pool_only_the_queues_of_the_vmtas_it_carries_most(tmp_path: Path, pools: str,
                                                                                    expected: dict):
    """Each VMTA's queue goes to its busiest pool over all pools, then the pool filter applies: picked among the
    selected pools only, selecting p2 charged it v1's whole 60k queue for 1 attempt in 101 (review 2026-12)."""
    (target,) = next(p for p in panels(by_uid("watchtower-cluster"))
                     if p["title"] == "Queued recipients by pool")["targets"]
    expr = (target["expr"].replace("$cluster", ".*").replace("$job", "w").replace("$instance", ".+")
            .replace("$isp", ".*").replace("$vmta_pool", pools))
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": s, "values": v} for s, v in SHARED_VMTA_SERIES],
        "promql_expr_test": [{"expr": expr, "eval_time": "5m", "exp_samples": [
            {"labels": f'{{vmta_pool="{k}"}}', "value": v} for k, v in expected.items()]}]}]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(test, width=100_000))
    run = subprocess.run(["promtool", "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# --- audit 2026-12 (dashboards against the alerts): a colour means what the alert with that threshold means ---


def alert_rule(name: str, severity: str) -> dict[str, Any]:
    (rule,) = [r for path in sorted((REPO / "rules" / "alerts").glob("*.yaml"))
               for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for r in g["rules"]
               if r.get("alert") == name and r["labels"]["severity"] == severity]
    return rule


def fires(name: str, severity: str) -> str:
    """How many series the alert's condition (without its `for`) selects: panel tests put it beside the panels."""
    return f"count({alert_rule(name, severity)['expr']}) or vector(0)"


def cell(metric: str, vmta: str, values: str, isp: str = "gmail", pool: str = "pool-a",
         **labels: str) -> tuple[str, str]:
    """A per-VMTA x ISP record counter of the host pmta-01:9469 (labels: class, feedback_type, ...)."""
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return (f'{metric}{{job="watchtower", instance="pmta-01:9469", vmta="{vmta}", vmta_pool="{pool}", '
            f'isp="{isp}"{extra}}}', values)


ONE = [{"labels": "{}", "value": 1}]
NONE = [{"labels": "{}", "value": 0}]


@needs_promtool
@pytest.mark.parametrize(("isp", "trouble", "blocked"), [
    ("microsoft", cell("pmta_deferred_total", "vmta-02", "0+1x40", "microsoft", **{"class": "blocklisted"}), True),
    ("microsoft", cell("pmta_bounced_total", "vmta-02", "0+6x40", "microsoft", category="policy-related",
                       **{"class": "policy"}), True),  # 6% of 100 attempts a minute bounced for policy
    ("other", cell("pmta_deferred_total", "vmta-02", "0+0.5x40", "other", **{"class": "blocklisted"}), False),
    ("other", cell("pmta_deferred_total", "vmta-02", "0+2x40", "other", **{"class": "blocklisted"}), True),
    ("yahoo", cell("pmta_deferred_total", "vmta-02", "1x30 2x10", "yahoo", **{"class": "blocklisted"}), False),
    ("yahoo", cell("pmta_deferred_total", "vmta-02", "0x30 12x10", "yahoo", **{"class": "blocklisted"}), True),
    ("other", cell("pmta_deferred_total", "vmta-02", "0x30 12x10", "other", **{"class": "blocklisted"}), False),
    ("other", cell("pmta_deferred_total", "vmta-02", "0x30 120x10", "other", **{"class": "blocklisted"}), True),
], ids=["blocklisted", "policy-bounces", "other-below-10", "other-a-share", "one-among-thousands",
        "ten-among-thousands", "other-ten-among-thousands", "other-a-hundred-among-thousands"])
def test_a_block_turns_the_cell_red_wherever_the_cell_level_shows(tmp_path: Path, isp: str, trouble: tuple[str, str],
                                                                  blocked: bool):
    """PmtaIspBlock is critical on blocklisted responses that are >= 1% of the attempts or >= 10 in 15 minutes (from
    `other`: >= 10 and >= 1%, or >= 100: review 2026-12-07), or > 5% of attempts bounced for reputation or policy; success stays near 95%, nothing is throttled
    or queued. The war room, the incidents counter and the status board's level history used to stay green (audit
    2026-12); one blocklisted deferral among thousands of deliveries pages nobody and turns no cell red."""
    per_minute = 1000 if isp == "yahoo" or "0x30" in trouble[1] else 94
    series = dict([cell("pmta_delivered_total", "vmta-02", f"0+{per_minute}x40", isp), trouble])
    level = 3 if blocked else 1 if "bounced" in trouble[0] else 0
    count = ONE if blocked else NONE
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaIspBlock", "critical"), count),
        (panel_expr("watchtower-warroom", "Cells at CRIT"), count),
        (panel_expr("watchtower-warroom", "VMTAs with a red cell"), count),
        (panel_expr("watchtower-warroom", "ISPs with a red cell"), count),
        (panel_expr("watchtower-warroom", "VMTA × ISP"), [{"labels": f'{{vmta="vmta-02", isp="{isp}"}}', "value": level},
                                                          {"labels": '{vmta="vmta-02", isp=" worst"}', "value": level}]),
        (panel_expr("watchtower-incidents", "VMTA × ISP cells in the red"), count),
        (panel_expr("watchtower-vmta", "Level by VMTA (worst ISP)"),
         [{"labels": '{instance="pmta-01:9469", vmta="vmta-02"}', "value": level}]),
        (panel_expr("watchtower-vmta", "VMTA board", "K"),  # the board's sort key: a block tops it
         [{"labels": '{instance="pmta-01:9469", vmta="vmta-02", vmta_pool="pool-a"}', "value": level}]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_vmta_in_two_pools_is_judged_as_the_alert_judges_it(tmp_path: Path):
    """PmtaIspThrottling judges each (instance, vmta, isp) two ways, and fires when either meets the condition: the
    VMTA over all its pools (an ISP throttles the IP) and each pool on its own (a pool's sender domain has its own
    reputation; review 2026-12). vmta-01 sends 40 attempts in 10 minutes through each of pool-a and pool-b, all
    throttled: under the floor of 50 in each pool, 80 together, it fires. vmta-02's 100 attempts in pool-a are 50%
    throttled beside 2000 deliveries in pool-b: 2.4% of the IP's attempts, but pool-a on its own fires. vmta-03's
    10 attempts in pool-a, all throttled, beside 2000 deliveries in pool-b: neither judgement has the attempts, no
    alert. Every board shows the cell as the alert judges it, the worse of the two values."""
    series = dict([cell("pmta_deferred_total", "vmta-01", "0+4x40", "yahoo", **{"class": "throttled"}),
                   cell("pmta_deferred_total", "vmta-01", "0+4x40", "yahoo", pool="pool-b", **{"class": "throttled"}),
                   cell("pmta_delivered_total", "vmta-02", "0+5x40", "yahoo"),
                   cell("pmta_deferred_total", "vmta-02", "0+5x40", "yahoo", **{"class": "throttled"}),
                   cell("pmta_delivered_total", "vmta-02", "0+200x40", "yahoo", pool="pool-b"),
                   cell("pmta_deferred_total", "vmta-03", "0+1x40", "yahoo", **{"class": "throttled"}),
                   cell("pmta_delivered_total", "vmta-03", "0+200x40", "yahoo", pool="pool-b")])
    host = 'instance="pmta-01:9469"'
    v1, v2, v3 = (f'{{{host}, vmta="vmta-0{n}"}}' for n in (1, 2, 3))
    two = [{"labels": "{}", "value": 2}]
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaIspThrottling", "warning"), two),
        (f'count({alert_rule("PmtaIspThrottling", "warning")["expr"]}) by (vmta_pool)', two),  # no pool label
        (panel_expr("watchtower-vmta", "VMTAs throttled over 30% at an ISP"), two),
        (panel_expr("watchtower-vmta", "VMTAs below 50% success at an ISP"), ONE),
        (panel_expr("watchtower-vmta", "Throttled share by VMTA (worst ISP)"),  # v3: 10 of 2010 over both pools
         [{"labels": v1, "value": 1}, {"labels": v2, "value": 0.5}, {"labels": v3, "value": 10 / 2010}]),
        (panel_expr("watchtower-vmta", "Success ratio by VMTA (worst ISP)"),
         [{"labels": v1, "value": 0}, {"labels": v2, "value": 0.5}, {"labels": v3, "value": 2000 / 2010}]),
        (panel_expr("watchtower-vmta", "Level by VMTA (worst ISP)"),
         [{"labels": v1, "value": 3}, {"labels": v2, "value": 2}, {"labels": v3, "value": 0}]),
        (panel_expr("watchtower-vmta", "VMTA board", "E"),  # the worst cell of the VMTA on each of its pool rows
         [{"labels": f'{{{host}, vmta="vmta-0{n}", vmta_pool="pool-{p}"}}', "value": v}
          for n, v in ((1, 1), (2, 0.5), (3, 10 / 2010)) for p in "ab"]),
        (panel_expr("watchtower-warroom", "VMTA × ISP"),
         [{"labels": f'{{vmta="vmta-0{n}", isp="{i}"}}', "value": v}
          for n, v in ((1, 3), (2, 2), (3, 0)) for i in ("yahoo", " worst")]),
        (panel_expr("watchtower-warroom", "Cells at HIGH or worse"), two),
        (panel_expr("watchtower-warroom", "Worst cells", "C"),
         [{"labels": f'{{{host}, vmta="vmta-0{n}", isp="yahoo"}}', "value": v}
          for n, v in ((1, 1), (2, 0.5), (3, 10 / 2010))]),
        (panel_expr("watchtower-warroom", "Worst cells", "E"),  # the attempts over all the VMTA's pools
         [{"labels": f'{{{host}, vmta="vmta-0{n}", isp="yahoo"}}', "value": v}
          for n, v in ((1, 80), (2, 2100), (3, 2010))]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_pool_bounced_for_policy_on_its_own_turns_the_cell_red(tmp_path: Path):
    """PmtaIspBlock's ratio branch judges the VMTA over all its pools and each pool on its own (review 2026-12):
    vmta-02's pool-a has 60 attempts in 15 minutes, a quarter bounced for policy, beside pool-b's 3000 deliveries
    (0.5% over both pools): it fires, and the cell is red with pool-a's share. vmta-03's pool-a has 7 or 8, all
    bounced, beside the same deliveries: no judgement has the attempts, no alert, no red."""
    series = dict([cell("pmta_delivered_total", "vmta-02", "0+3x40", "microsoft"),
                   cell("pmta_bounced_total", "vmta-02", "0+1x40", "microsoft", category="policy-related",
                        **{"class": "policy"}),
                   cell("pmta_delivered_total", "vmta-02", "0+200x40", "microsoft", pool="pool-b"),
                   cell("pmta_bounced_total", "vmta-03", "0+0.5x40", "microsoft", category="policy-related",
                        **{"class": "policy"}),
                   cell("pmta_delivered_total", "vmta-03", "0+200x40", "microsoft", pool="pool-b")])
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaIspBlock", "critical"), ONE),
        (panel_expr("watchtower-warroom", "Cells at CRIT"), ONE),
        (panel_expr("watchtower-incidents", "VMTA × ISP cells in the red"), ONE),
        (panel_expr("watchtower-warroom", "VMTA × ISP"),
         [{"labels": f'{{vmta="vmta-0{n}", isp="{i}"}}', "value": v}
          for n, v in ((2, 3), (3, 0)) for i in ("microsoft", " worst")]),
        (panel_expr("watchtower-warroom", "Worst cells", "G"),  # pool-a's share, not the 0.5% over both pools
         [{"labels": '{instance="pmta-01:9469", vmta="vmta-02", isp="microsoft"}', "value": 0.25},
          {"labels": '{instance="pmta-01:9469", vmta="vmta-03", isp="microsoft"}', "value": 7.5 / 3007.5}]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_daily_complaint_stat_is_red_when_the_complaint_alert_fires(tmp_path: Path):
    """Yahoo at 0.5% of 100k a day pages; Gmail's 1M deliveries a day (no per-message FBL, left out by the
    alert) diluted the all-ISP stat to 0.05%, green (audit 2026-12). The stat shows the worst judged ISP."""
    series = {
        'pmta_delivered_total{job="watchtower", instance="h1", vmta="v", vmta_pool="a", isp="yahoo"}': "0+700x300",
        'pmta_complaints_total{job="watchtower", instance="h1", vmta="v", vmta_pool="a", isp="yahoo", '
        'feedback_type="abuse"}': "0+3.5x300",
        'pmta_delivered_total{job="watchtower", instance="h1", vmta="v", vmta_pool="a", isp="gmail"}': "0+7000x300",
        'watchtower_build_info{job="watchtower", instance="h1"}': "1x300",
    }
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaComplaintRate", "critical"), ONE),
        (panel_expr("watchtower-overview", "Complaint ratio (1 day, worst ISP)"), [{"labels": "{}", "value": 0.005}]),
    ], eval_time="2d", interval="10m", every="10m")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_daily_complaint_stat_judges_the_isps_the_alert_judges():
    expr = panel_expr("watchtower-overview", "Complaint ratio (1 day, worst ISP)")
    alert = alert_rule("PmtaComplaintRate", "warning")["expr"]
    (isps,) = re.findall(r'isp!~"[^"]+"', alert)
    assert isps in expr and "* 86400 >= 1000" in alert and "* 86400 >= 1000" in expr


@needs_promtool
def test_the_pool_hard_bounce_alert_lands_on_its_ratio(tmp_path: Path):
    """PmtaHardBounceRate links to the cluster dashboard, which had no panel of the ratio it judges."""
    series = dict([cell("pmta_delivered_total", "vmta-01", "0+97x40"),
                   cell("pmta_bounced_total", "vmta-01", "0+3x40", category="bad-mailbox",
                        **{"class": "user_unknown"})])
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaHardBounceRate", "warning"), ONE),
        (fires("PmtaHardBounceRate", "critical"), NONE),
        (panel_expr("watchtower-cluster", "Hard-bounce ratio by pool (1 hour)"),
         [{"labels": '{vmta_pool="pool-a"}', "value": 0.03}]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def thresholds_of(panel: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """(field, [(colour, value), ...]) of a panel's default thresholds and of each override that sets some."""
    fc = panel.get("fieldConfig", {})
    steps = fc.get("defaults", {}).get("thresholds", {}).get("steps")
    if steps and panel["type"] != "table":
        yield "", [(s["color"], s["value"]) for s in steps]
    for o in fc.get("overrides", []):
        names = [p["value"] for p in o["properties"] if p["id"] == "displayName"]
        for p in o["properties"]:
            if p["id"] == "thresholds":
                yield (names or [o["matcher"]["options"]])[0], [(s["color"], s["value"]) for s in p["value"]["steps"]]


def test_hard_bounce_colours_are_the_alerts_and_only_on_hard_bounce_ratios():
    """2% / 5% are PmtaHardBounceRate's thresholds on hard bounces / outcomes over 1 hour; the bounce share (all
    bounces / attempts over 10 minutes) is another quantity and must not wear them (audit 2026-12)."""
    warn = re.search(r"> (0\.\d+)", alert_rule("PmtaHardBounceRate", "warning")["expr"]).group(1)  # type: ignore[union-attr]
    crit = re.search(r"> (0\.\d+)", alert_rule("PmtaHardBounceRate", "critical")["expr"]).group(1)  # type: ignore[union-attr]
    hard = {"Hard-bounce ratio by pool (1 hour)": "watchtower-cluster",
            "Hard-bounce ratio by sender (1 hour)": "watchtower-flows"}
    for title, uid in hard.items():
        (panel,) = [p for p in panels(by_uid(uid)) if p["title"] == title]
        assert dict(thresholds_of(panel))[""] == [("green", None), ("yellow", float(warn)), ("red", float(crit))]
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for field, steps in thresholds_of(p):
                if "bounce share" in f"{p['title']} {field}".lower():
                    assert [v for _, v in steps if v] == [], (p["title"], field)


ALERT_SHOWS = {  # (alert, severity or None for both) -> the series its dashboard_url's dashboard must plot
    ("PmtaIspThrottling", None): {"vmta_isp:pmta_deferred_by_class:rate10m", "pmta_queue_recipients"},
    ("PmtaIspBlock", None): {"instance_vmta_isp:pmta_blocklisted:increase15m",
                             "instance_vmta_isp:pmta_bounced_reputation_policy:ratio_rate15m",
                             "vmta_isp:pmta_bounced_reputation_policy:ratio_rate15m"},
    ("PmtaComplaintRate", None): {"isp:pmta_complaints:ratio_rate1d"},
    ("PmtaHardBounceRate", None): {"vmta_pool:pmta_hard_bounced:ratio_rate1h"},
    ("PmtaSenderHardBounceRate", None): {"sender:pmta_sender_hard_bounced:ratio_rate1h"},
    ("PmtaQueueBacklog", None): {"pmta_queue_recipients"},
    ("PmtaQueueOldMessages", None): {"instance_vmta_pool_isp:pmta_deferrals_older_than_4h:ratio_increase30m"},
    ("PmtaSuccessRateDrop", None): {"instance_vmta_isp:pmta_success:ratio_rate1h", "vmta_isp:pmta_success:ratio_rate1h"},
    ("PmtaDeliveryStalled", "warning"): {"pmta_queue_recipients", "vmta_isp:pmta_delivered:rate10m"},
    ("PmtaDeliveryStalled", "critical"): {"pmta_status_queue_recipients", "watchtower_pmta_api_up"},
}


def test_alert_links_land_on_a_dashboard_that_plots_what_the_alert_judges():
    """The critical PmtaDeliveryStalled (a whole host) linked to the cluster dashboard, which shows neither the
    host queue nor whether PMTA's API answers; PmtaHardBounceRate's had no hard-bounce panel (audit 2026-12)."""
    plotted = {uid: {n for _, e in prom_exprs(by_uid(uid)) for n in metric_names(e)} for uid in EXPECTED_UIDS}
    checked = []
    for path in sorted((REPO / "rules" / "alerts").glob("*.yaml")):
        for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for r in g["rules"]:
                want = ALERT_SHOWS.get((r["alert"], None)) or ALERT_SHOWS.get((r["alert"], r["labels"]["severity"]))
                if want:
                    uid = re.match(r"/d/([\w-]+)/", r["annotations"]["dashboard_url"]).group(1)  # type: ignore[union-attr]
                    checked.append((r["alert"], r["labels"]["severity"], uid, sorted(want - plotted[uid])))
    assert len(checked) >= 12 and [c for c in checked if c[3]] == []


@needs_promtool
def test_warnings_firing_leaves_out_the_warnings_alertmanager_inhibits(tmp_path: Path):
    """A critical alert mutes its warning twin (same alert and object, job included: alertmanager.yml), and the
    incident tables leave it out: the counter counted it (audit 2026-12)."""
    def alert(name: str, severity: str, **labels: str) -> tuple[str, str]:
        extra = "".join(f', {k}="{v}"' for k, v in labels.items())
        return f'ALERTS{{alertname="{name}", alertstate="firing", severity="{severity}"{extra}}}', "1x40"

    throttling = {"job": "watchtower", "instance": "pmta-01:9469", "vmta": "vmta-03", "vmta_pool": "pool-a",
                  "isp": "gmail"}
    series = dict([alert("PmtaIspThrottling", "warning", **throttling),
                   alert("PmtaIspThrottling", "critical", **throttling),
                   # another cluster's critical is no twin of this cluster's warning
                   alert("PmtaComplaintRate", "warning", job="watchtower", isp="yahoo"),
                   alert("PmtaComplaintRate", "critical", job="watchtower-eu", isp="yahoo")])
    result = promtool_expect(tmp_path, series, [
        (panel_expr("watchtower-incidents", "Warnings firing"), ONE),
        (panel_expr("watchtower-incidents", "Critical alerts firing"), [{"labels": "{}", "value": 2}]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_sender_table_gives_totals_over_the_dashboard_range(tmp_path: Path):
    """Next to a 1-day ratio, a per-second rate over $__rate_interval (the last minute or so) read as a total;
    the table now counts over $__range (here 5 minutes: 10 a minute is 50), and says so (audit 2026-12)."""
    labels = 'job="watchtower", instance="pmta-01:9469", sender="a.example", isp="gmail"'
    series = {f"pmta_sender_delivered_total{{{labels}}}": "0+10x40",
              f'pmta_sender_bounced_total{{{labels}, class="user_unknown"}}': "0+2x40",
              f'pmta_sender_deferred_total{{{labels}, class="throttled"}}': "0+4x40",
              f'pmta_sender_complaints_total{{{labels}, feedback_type="abuse"}}': "0+1x40"}
    row = '{sender="a.example", isp="gmail"}'
    result = promtool_expect(tmp_path, series, [
        (panel_expr("watchtower-flows", "Sender × ISP", ref), [{"labels": row, "value": v}])
        for ref, v in (("A", 50), ("B", 10), ("C", 20), ("D", 5))])
    assert result.returncode == 0, result.stdout + result.stderr
    (table_panel,) = [p for p in panels(by_uid("watchtower-flows")) if p["title"] == "Sender × ISP"]
    for t in table_panel["targets"][:4]:
        assert "[$__range]" in t["expr"] and "rate(" not in t["expr"], t["expr"]
    names = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
             for o in table_panel["fieldConfig"]["overrides"]}
    assert [(names[f"Value #{r}"]["displayName"], names[f"Value #{r}"]["unit"]) for r in "ABCD"] == [
        ("Delivered", "short"), ("Bounced", "short"), ("Deferred", "short"), ("Complaints", "short")]
    assert "$__range" in table_panel["description"] or "time range" in table_panel["description"]


@needs_promtool
def test_the_old_message_share_is_plotted_where_and_as_the_alert_judges_it(tmp_path: Path):
    """PmtaQueueOldMessages fired and no panel showed its share (a panel may not use a fixed [30m] range): the cluster
    dashboard plots its recorded share on the alert's line, only where the alert judges it (its floor of old
    deferrals), so a line above the threshold means the alert's condition holds."""
    expr = alert_rule("PmtaQueueOldMessages", "warning")["expr"]
    share = float(re.search(r"ratio_increase30m >= (0\.\d+)", expr).group(1))  # type: ignore[union-attr]
    floor = int(re.search(r":increase30m >= (\d+)", expr).group(1))  # type: ignore[union-attr]
    title = "Share of deferrals older than 4h by pool × ISP (30 minutes)"
    (panel,) = [p for p in panels(by_uid("watchtower-cluster")) if p["title"] == title]
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    assert [v for _, v in dict(thresholds_of(panel))[""] if v] == [share]
    query = panel_expr("watchtower-cluster", title)
    assert query.count("instance_vmta_pool_isp:pmta_deferrals_older_than_4h:increase30m{") == 1, query
    assert query.endswith(f" >= {floor}))"), query

    def ages(pool: str, isp: str, total: str, young: str) -> dict[str, str]:
        labels = f'job="watchtower", instance="pmta-01:9469", vmta_pool="{pool}", isp="{isp}"'
        return {f'pmta_deferral_age_seconds_bucket{{{labels}, le="14400.0"}}': young,
                f'pmta_deferral_age_seconds_bucket{{{labels}, le="+Inf"}}': total}

    # pool-a -> Gmail: 1 of 20 deferrals a minute older than 4h, 30 of 600 in 30m (5%): the alert's condition.
    # pool-b -> Yahoo: a quarter of 1 a minute, 7.5 in 30m (25%, but under the floor): no line, no alert.
    series = {**ages("pool-a", "gmail", "0+20x40", "0+19x40"), **ages("pool-b", "yahoo", "0+1x40", "0+0.75x40")}
    shown = ('instance_vmta_pool_isp:pmta_deferrals_older_than_4h:ratio_increase30m{job="watchtower", '
             'instance="pmta-01:9469", vmta_pool="pool-a", isp="gmail"}')
    result = promtool_expect(tmp_path, series, [(query, [{"labels": shown, "value": 0.05}]),
                                                (fires("PmtaQueueOldMessages", "warning"), ONE)])
    assert result.returncode == 0, result.stdout + result.stderr


def queue_scale_of_the_alerts() -> list[tuple[str, float | None]]:
    """Yellow where the critical PmtaIspThrottling needs a queue, orange and red at PmtaQueueBacklog's two levels."""
    throttle = re.search(r"\) > (\d+)\)", alert_rule("PmtaIspThrottling", "critical")["expr"]).group(1)  # type: ignore[union-attr]
    warn = re.search(r"> (\d+)", alert_rule("PmtaQueueBacklog", "warning")["expr"]).group(1)  # type: ignore[union-attr]
    crit = re.search(r"> (\d+)", alert_rule("PmtaQueueBacklog", "critical")["expr"]).group(1)  # type: ignore[union-attr]
    return [("green", None), ("yellow", int(throttle)), ("orange", int(warn)), ("red", int(crit))]


def test_queues_are_coloured_on_one_scale_from_the_alerts_and_only_per_vmta_x_isp():
    """50k was red on some boards, 200k on others, and the cluster board held pool x ISP sums to the per-VMTA x ISP
    limits (audit 2026-12): one scale, defined once in the generator, on per-VMTA x ISP queues only."""
    scale = queue_scale_of_the_alerts()
    levels = {v for _, v in scale if v}
    coloured = []
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for field, steps in thresholds_of(p):
                if levels & {v for _, v in steps}:
                    coloured.append((path.stem, p["title"], field))
                    assert steps == scale, (path.stem, p["title"], field, steps)
    assert ("watchtower-cluster", "Pool × ISP board", "Largest VMTA × ISP queue") in coloured
    assert ("watchtower-vmta", "VMTA board", "Largest ISP queue") in coloured
    assert ("watchtower-cluster", "Pool × ISP board", "Queued recipients") not in coloured
    assert ("watchtower-vmta", "VMTA board", "Queued recipients") not in coloured
    assert len(coloured) >= 5
    source = "\n".join((GRAFANA / n).read_text(encoding="utf-8") for n in ("build.py", "dashlib.py"))
    assert sorted(re.findall(r"\b(?:10_?000|50_?000|200_?000)\b", source)) == ["10_000", "200_000", "50_000"]


@needs_promtool
def test_the_pool_board_colours_the_largest_vmta_queue_not_the_pool_sum(tmp_path: Path):
    """Two VMTAs of pool-a with 40k each for Gmail: 80k in the pool, no backlog alert (50k per VMTA x ISP)."""
    queue = 'pmta_queue_recipients{{job="watchtower", instance="pmta-01:9469", vmta="{}", isp="gmail"}}'
    series = dict([cell("pmta_delivered_total", "vmta-01", "0+100x40"), cell("pmta_delivered_total", "vmta-02",
                                                                                "0+100x40")])
    series |= {queue.format("vmta-01"): "40000x40", queue.format("vmta-02"): "40000x40"}
    row = '{vmta_pool="pool-a", isp="gmail"}'
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaQueueBacklog", "warning"), NONE),
        (panel_expr("watchtower-cluster", "Pool × ISP board", "G"), [{"labels": row, "value": 80000}]),
        (panel_expr("watchtower-cluster", "Pool × ISP board", "H"), [{"labels": row, "value": 40000}]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_war_room_levels_claim_no_alert_threshold_they_do_not_have():
    """Success < 80% read "ALERT" though no alert has that threshold (audit 2026-12)."""
    war = by_uid("watchtower-warroom")
    texts = json.dumps([p.get("fieldConfig", {}) for p in panels(war)])
    (help_text,) = [p["options"]["content"] for p in panels(war) if p["type"] == "text"]
    assert "ALERT" not in texts and "ALERT" not in help_text and "ALERT" not in json.dumps(
        [p["title"] + p.get("description", "") for p in panels(war)])
    success = help_text[help_text.index("**success**"):help_text.index("**throttled share**")]
    assert "dashboard-only" in success
    # each threshold the legend ties to an alert (`> 30% = PmtaIspThrottling`) is one of that alert's
    claims = re.findall(r"([<>]) (\d+)(%|k)? = `(Pmta\w+)`", help_text)
    assert len(claims) >= 3, help_text
    for op, num, suffix, alert in claims:
        value = int(num) * {"%": 0.01, "k": 1000, "": 1}[suffix]
        exprs = [r["expr"] for sev in ("warning", "critical") for r in alert_rules_named(alert, sev)]
        found = [float(v) for e in exprs for v in re.findall(rf"{op} (\d+(?:\.\d+)?)\b", e)]
        assert any(abs(v - value) < 1e-9 for v in found), (op, num, suffix, alert, found)


def alert_rules_named(name: str, severity: str) -> list[dict[str, Any]]:
    return [r for path in sorted((REPO / "rules" / "alerts").glob("*.yaml"))
            for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for r in g["rules"]
            if r.get("alert") == name and r["labels"]["severity"] == severity]


def test_panels_say_which_filters_they_ignore():
    """The flow graph reads /api/v1/flows, which takes only the time range; the sender hard-bounce rule has no isp."""
    flows = {p["title"]: p.get("description", "") for p in panels(by_uid("watchtower-flows"))}
    graph = flows["Sender → VMTA → ISP"]
    assert "does not follow the Sender, ISP and Instance filters" in graph, graph
    assert "does not follow the ISP filter" in flows["Hard-bounce ratio by sender (1 hour)"]


@needs_promtool
def test_queue_panels_read_0_when_nothing_is_queued(tmp_path: Path):
    """A healthy host with empty queues: the status board's queue counters and the cluster's queues by pool read 0,
    not "No data" (they were `> 0` or had no zero fallback)."""
    gauge = 'pmta_queue_{}{{job="watchtower", instance="pmta-01:9469", vmta="vmta-01", isp="gmail"}}'
    series = dict([cell("pmta_delivered_total", "vmta-01", "0+100x40")])
    series['watchtower_pmta_api_up{job="watchtower", instance="pmta-01:9469"}'] = "1x40"
    empty = promtool_expect(tmp_path, series, [
        (panel_expr("watchtower-vmta", title), NONE)
        for title in ("Queued recipients", "Queues in backoff", "Paused queues")])
    assert empty.returncode == 0, empty.stdout + empty.stderr
    series |= {gauge.format(g): "0x40" for g in ("recipients", "backoff", "connections", "paused")}
    idle = promtool_expect(tmp_path, series, [
        (panel_expr("watchtower-cluster", title), [{"labels": '{vmta_pool="pool-a"}', "value": 0}])
        for title in ("Queued recipients by pool", "Queues in backoff by pool", "Open connections by pool")])
    assert idle.returncode == 0, idle.stdout + idle.stderr


def firing_alert(name: str, severity: str, **labels: str) -> tuple[str, str]:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return f'ALERTS{{alertname="{name}", alertstate="firing", severity="{severity}"{extra}}}', "1x40"


@needs_promtool
def test_warnings_firing_and_incident_rows_leave_out_every_warning_alertmanager_inhibits(tmp_path: Path):
    """Only the critical-twin inhibition was modelled: a host-wide stall (critical) mutes its per-VMTA stall
    warnings, a block mutes the throttling of its VMTA x ISP, WatchtowerDown everything of its host, ... and the
    counter and the incident rows counted them (review 2026-12)."""
    host = {"job": "watchtower", "instance": "pmta-01:9469"}
    series = dict([
        firing_alert("PmtaDeliveryStalled", "critical", **host),
        firing_alert("PmtaDeliveryStalled", "warning", **host, vmta="vmta-01", isp="gmail"),
        firing_alert("PmtaDeliveryStalled", "warning", **host, vmta="vmta-02", isp="yahoo"),
        firing_alert("PmtaIspBlock", "critical", **host, vmta="vmta-03", vmta_pool="a", isp="gmail"),
        firing_alert("PmtaIspThrottling", "warning", **host, vmta="vmta-03", vmta_pool="a", isp="gmail"),
        # another host: WatchtowerDown mutes its warnings; a throttling on another ISP than the block stays
        firing_alert("WatchtowerDown", "critical", job="watchtower", instance="pmta-02:9469"),
        firing_alert("PmtaQueueBacklog", "warning", job="watchtower", instance="pmta-02:9469", vmta="vmta-09",
                     isp="gmail"),
        firing_alert("PmtaIspThrottling", "warning", **host, vmta="vmta-03", vmta_pool="a", isp="yahoo"),
    ])
    rows = f"count({_build_module().incident_rows()})"
    result = promtool_expect(tmp_path, series, [
        (panel_expr("watchtower-incidents", "Warnings firing"), ONE),
        (panel_expr("watchtower-incidents", "Critical alerts firing"), [{"labels": "{}", "value": 3}]),
        (rows, [{"labels": "{}", "value": 2}]),  # the block and the yahoo throttling
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboards_mirror_every_inhibition_of_alertmanager_yml():
    """The muted warnings are derived from alertmanager/alertmanager.yml, so a new inhibit rule needs no edit."""
    build = _build_module()
    config = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8"))
    expr = panel_expr("watchtower-incidents", "Warnings firing")
    assert len(build.INHIBITIONS) == len(config["inhibit_rules"]) >= 8
    for rule in config["inhibit_rules"]:
        assert f"on ({', '.join(rule['equal'])})" in expr, rule


@needs_promtool
def test_vmta_queue_stats_read_no_data_while_a_selected_host_is_not_read(tmp_path: Path):
    """pmta-02's PMTA API is down (its queue gauges went stale), pmta-01 has nothing queued: the stats read 0 and
    green, hiding pmta-02's 90k. Now "No data" while any selected host's API is down (review 2026-12)."""
    series = {'watchtower_pmta_api_up{job="watchtower", instance="pmta-01:9469"}': "1x40",
              'watchtower_pmta_api_up{job="watchtower", instance="pmta-02:9469"}': "1x20 0x20",
              'pmta_queue_recipients{job="watchtower", instance="pmta-02:9469", vmta="vmta-09", isp="gmail"}': "90000x20"}
    series.update(dict([cell("pmta_delivered_total", "vmta-01", "0+10x40")]))
    result = promtool_expect(tmp_path, series, [
        (fires("WatchtowerPmtaApiDown", "warning"), ONE),
        *[(panel_expr("watchtower-vmta", t), []) for t in ("Queued recipients", "Queues in backoff", "Paused queues")],
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_stats_without_a_graph_are_instant_queries():
    """A stat with graphMode none shows one number: a range query fetched a whole range of points for it."""
    checked = []
    for path in DASHBOARDS:
        for p in panels(load(path)):
            if p["type"] == "stat" and p["options"]["graphMode"] == "none":
                for t in p.get("targets", []):
                    if "expr" in t:
                        checked.append((path.stem, p["title"], t["instant"], t["range"]))
    assert ("watchtower-incidents", "VMTA × ISP cells in the red", True, False) in checked
    assert len([c for c in checked if c[0] == "watchtower-warroom"]) == 4
    assert [c for c in checked if c[2:] != (True, False)] == []


@needs_promtool
def test_a_queue_on_a_vmta_without_attempts_shows_in_the_cell_levels(tmp_path: Path):
    """300k queued for Gmail on a VMTA with no record counter yet: PmtaQueueBacklog fires, but the cells joined the
    queue on attempts and dropped it (review 2026-12)."""
    series = {'pmta_queue_recipients{job="watchtower", instance="pmta-01:9469", vmta="vmta-new", isp="gmail"}':
              "300000x40", 'watchtower_pmta_api_up{job="watchtower", instance="pmta-01:9469"}': "1x40"}
    series.update(dict([cell("pmta_delivered_total", "vmta-01", "0+100x40")]))
    level = '{instance="pmta-01:9469", vmta="vmta-new"}'
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaQueueBacklog", "critical"), ONE),
        (panel_expr("watchtower-incidents", "VMTA × ISP cells in the red"), ONE),
        (panel_expr("watchtower-warroom", "Cells at CRIT"), ONE),
        (panel_expr("watchtower-vmta", "Level by VMTA (worst ISP)"),
         [{"labels": level, "value": 3}, {"labels": '{instance="pmta-01:9469", vmta="vmta-01"}', "value": 0}]),
        # a pool filter that leaves out `none` leaves it out, as the pool-joined queue panels do
        (panel_expr("watchtower-warroom", "Cells at CRIT").replace('"$vmta_pool"', '"pool-a"'),
         NONE),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_hard_bounce_panels_leave_out_what_the_alert_does_not_judge(tmp_path: Path):
    """10 outcomes an hour, half hard-bounced: the panel drew 50% in red while PmtaHardBounceRate, which needs
    >= 500 outcomes in the hour, stayed silent (review 2026-12). The sender panel has the same floor."""
    sender = 'job="watchtower", instance="pmta-01:9469", sender="tiny.example", isp="gmail"'
    series = dict([cell("pmta_delivered_total", "vmta-01", "0+0.1x80", pool="pool-tiny"),
                   cell("pmta_bounced_total", "vmta-01", "0+0.1x80", pool="pool-tiny", category="bad-mailbox",
                        **{"class": "user_unknown"}),
                   cell("pmta_delivered_total", "vmta-02", "0+97x80", pool="pool-big"),
                   cell("pmta_bounced_total", "vmta-02", "0+3x80", pool="pool-big", category="bad-mailbox",
                        **{"class": "user_unknown"})])
    series |= {f"pmta_sender_delivered_total{{{sender}}}": "0+0.1x80",
               f'pmta_sender_bounced_total{{{sender}, class="user_unknown"}}': "0+0.1x80"}
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaHardBounceRate", "warning"), ONE),
        (panel_expr("watchtower-cluster", "Hard-bounce ratio by pool (1 hour)"),
         [{"labels": '{vmta_pool="pool-big"}', "value": 0.03}]),
        (fires("PmtaSenderHardBounceRate", "warning"), NONE),
        (panel_expr("watchtower-flows", "Hard-bounce ratio by sender (1 hour)"), []),
    ], eval_time="70m")
    assert result.returncode == 0, result.stdout + result.stderr
    for name, uid, title in (("PmtaHardBounceRate", "watchtower-cluster", "Hard-bounce ratio by pool (1 hour)"),
                             ("PmtaSenderHardBounceRate", "watchtower-flows", "Hard-bounce ratio by sender (1 hour)")):
        (floor,) = re.findall(r"\* 3600 >= (\d+)", alert_rule(name, "warning")["expr"])
        assert f"* 3600 >= {floor}" in panel_expr(uid, title), (uid, title)


@needs_promtool
def test_queues_by_pool_read_0_for_a_pool_without_queue_series(tmp_path: Path):
    """pool-b delivers but none of its VMTAs has a queue series: it was missing, the docs said 0 (review 2026-12)."""
    series = dict([cell("pmta_delivered_total", "vmta-01", "0+10x40"),
                   cell("pmta_delivered_total", "vmta-02", "0+10x40", pool="pool-b")])
    series['pmta_queue_recipients{job="watchtower", instance="pmta-01:9469", vmta="vmta-01", isp="gmail"}'] = "7x40"
    series['watchtower_pmta_api_up{job="watchtower", instance="pmta-01:9469"}'] = "1x40"
    result = promtool_expect(tmp_path, series, [
        (panel_expr("watchtower-cluster", title),
         [{"labels": '{vmta_pool="pool-a"}', "value": v}, {"labels": '{vmta_pool="pool-b"}', "value": 0}])
        for title, v in (("Queued recipients by pool", 7), ("Queues in backoff by pool", 0),
                         ("Open connections by pool", 0))])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alerts_not_about_one_cell_are_listed_beside_the_incidents(tmp_path: Path):
    """Active incidents lists VMTA x ISP alerts only: a sender's critical hard-bounce page and a pool's warning
    fired with nothing on the landing page to say what they were (review 2026-12-04). They are listed, with how
    long they have held and their runbook anchor; a warning Alertmanager inhibits (its critical twin fires) and
    the cell alerts are not."""
    job = 'job="watchtower", alertstate="firing"'
    alerts = {
        ("PmtaSenderHardBounceRate", "critical", 'sender="em.fitclub.example"'): 600,
        ("PmtaHardBounceRate", "warning", 'vmta_pool="pool-b"'): 1200,
        ("PmtaHardBounceRate", "warning", 'vmta_pool="pool-c"'): 300,  # muted: its critical twin fires
        ("PmtaHardBounceRate", "critical", 'vmta_pool="pool-c"'): 120,
        ("PmtaIspBlock", "critical", 'instance="pmta-01:9469", vmta="vmta-06", isp="microsoft"'): 900,
    }
    series = {}
    for (name, severity, labels), held in alerts.items():
        series[f'ALERTS{{alertname="{name}", severity="{severity}", {job}, {labels}}}'] = "1x40"
        since = 2400 - held  # eval at 40m
        series[f'ALERTS_FOR_STATE{{alertname="{name}", severity="{severity}", job="watchtower", {labels}}}'] = \
            f"{since}x40"
    rows = [("PmtaSenderHardBounceRate", "critical", 'sender="em.fitclub.example"', 600),
            ("PmtaHardBounceRate", "warning", 'vmta_pool="pool-b"', 1200),
            ("PmtaHardBounceRate", "critical", 'vmta_pool="pool-c"', 120)]
    result = promtool_expect(tmp_path, series, [(panel_expr("watchtower-incidents", "Other alerts firing"), [
        {"labels": f'{{alertname="{name}", severity="{severity}", {labels}, runbook="{name.lower()}"}}',
         "value": held} for name, severity, labels, held in rows])])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_complaint_ratios_are_coloured_only_where_the_complaint_alerts_judge_them(tmp_path: Path):
    """A provider with 100 deliveries a day and 1 complaint (1%) turned red with nothing firing, and so did Gmail
    (no per-message feedback loop, left out by the alert): the panels show the ratio where PmtaComplaintRate and
    PmtaSenderComplaintRate judge it, so red means the alert's red (review 2026-12-04)."""
    def counter(metric: str, isp: str, values: str, sender: str = "", **labels: str) -> tuple[str, str]:
        extra = "".join(f', {k}="{v}"' for k, v in labels.items())
        who = f'sender="{sender}"' if sender else 'vmta="v", vmta_pool="a"'
        return f'{metric}{{job="watchtower", instance="h1", {who}, isp="{isp}"{extra}}}', values

    series = dict([
        counter("pmta_delivered_total", "yahoo", "0+700x300"),  # ~100k a day
        counter("pmta_complaints_total", "yahoo", "0+3.5x300", feedback_type="abuse"),  # 0.5%: pages
        counter("pmta_delivered_total", "comcast", "0+0.7x300"),  # ~100 a day
        counter("pmta_complaints_total", "comcast", "0+0.007x300", feedback_type="abuse"),  # 1%: too few to judge
        counter("pmta_delivered_total", "gmail", "0+700x300"),
        counter("pmta_complaints_total", "gmail", "0+7x300", feedback_type="abuse"),  # Gmail: not judged
        counter("pmta_sender_delivered_total", "yahoo", "0+700x300", sender="news.example"),
        counter("pmta_sender_complaints_total", "yahoo", "0+3.5x300", sender="news.example", feedback_type="abuse"),
        counter("pmta_sender_delivered_total", "comcast", "0+0.7x300", sender="news.example"),
        counter("pmta_sender_complaints_total", "comcast", "0+0.007x300", sender="news.example",
                feedback_type="abuse"),
    ])
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaComplaintRate", "critical"), ONE),
        (fires("PmtaSenderComplaintRate", "warning"), ONE),
        (panel_expr("watchtower-overview", "Complaint ratio by ISP (1 day)"),
         [{"labels": '{isp="yahoo"}', "value": 0.005}]),
        (panel_expr("watchtower-flows", "Sender × ISP", "E"),
         [{"labels": '{sender="news.example", isp="yahoo"}', "value": 0.005}]),
        (panel_expr("watchtower-flows", "Complaint ratio by sender × ISP (1 day)"),
         [{"labels": '{sender="news.example", isp="yahoo"}', "value": 0.005}]),
    ], eval_time="2d", interval="10m", every="10m")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_no_queue_gauge_is_selected_by_a_label_it_does_not_carry(path: Path):
    """pmta_queue_* carry {vmta, isp} only: a `vmta_pool` matcher on them selects nothing (the status board's
    drill-down queue panels went empty whenever a pool was selected; review 2026-12-04). Per pool they are joined
    (queue_by_pool)."""
    bad = [(where, m.group()) for where, expr in prom_exprs(json.loads(path.read_text()))
           for m in re.finditer(r"pmta_queue_\w+\{[^}]*vmta_pool[^}]*\}", expr)]
    assert bad == []


WEEK = 1008
"""A week of 10-minute steps."""
WEEK_KEPT = (25, 940)
"""Of `week_then`'s steps, those before the first and from the second carry samples: the rules read a week-ago hour
(steps 6-12 for an evaluation at step 1020) and the judged hour (steps 954-1020), with a margin before each."""


def week_then(before: int, after: int | None = None) -> str:
    """A counter sampled every 10 minutes for a week and two hours: `before` more a step for the week, then (after
    one unchanged step) `after` more a step; `after` None: `before` throughout. The values are those of
    `0+{before}x1008 {before * 1008}+{after}x12`, but only where the rules read them (WEEK_KEPT): promtool still
    evaluates the recording rules at each of the week's steps, over nothing in between (~6 -> ~1 s a test)."""
    if after is None:
        values = [before * k for k in range(WEEK + 13)]
    else:
        values = [before * k for k in range(WEEK + 1)] + [before * WEEK + after * k for k in range(13)]
    head, tail = WEEK_KEPT
    return " ".join([*map(str, values[:head]), f"_x{tail - head}", *map(str, values[tail:])])


@needs_promtool
@pytest.mark.parametrize("target", [{}, {"cluster": "eu"}, {"cluster": "eu", "env": "prod"}],
                         ids=["one-site", "cluster", "cluster-and-env"])
def test_the_week_ago_panel_shows_the_drop_the_alert_judges(tmp_path: Path, target: dict[str, str]):
    """The panel took the worst ratio now and the worst a week ago separately and showed no drop (review 2026-12-04);
    it shows each judgement's ratio to its own week-ago hour, the worst kept, as PmtaSuccessRateDrop judges: the VMTA
    over all its pools, and each pool on its own, each with 500 attempts in both hours (review 2026-12). vmta-01 at
    Yahoo: pool A 90% -> 40%, pool B 80% -> 20%, together 85% -> 30%: it fires, and the panel reads B's 0.25.
    vmta-02 at Gmail: pool A 90% -> 40%, pool B 32% -> 30%, together 61% -> 35% (0.57, above half), but pool A on
    its own dropped: it fires, the panel reads 0.4 / 0.9. vmta-03 at Apple: pool A's 300 attempts an hour 90% ->
    40%, beside pool B's 600 clean ones: together 96.7% -> 80%, no alert, as the panel says. vmta-04 at Microsoft:
    two pools of 300 attempts an hour, 90% -> 30%: only the judgement over both pools has the attempts; it fires.
    With a target label beyond job and instance (a site's `cluster` external label, an `env`), the over-all-pools
    judgement divided a rule's series by a `sum by (job, instance, vmta, isp)` that dropped it: no match, no line,
    while the alert (`sum without (vmta_pool)`) fired (review 2026-12)."""
    cells = [
        cell("pmta_delivered_total", "vmta-01", week_then(90, 40), "yahoo"),
        cell("pmta_deferred_total", "vmta-01", week_then(10, 60), "yahoo", **{"class": "throttled"}),
        cell("pmta_delivered_total", "vmta-01", week_then(80, 20), "yahoo", pool="pool-b"),
        cell("pmta_deferred_total", "vmta-01", week_then(20, 80), "yahoo", pool="pool-b", **{"class": "throttled"}),
        cell("pmta_delivered_total", "vmta-02", week_then(90, 40), "gmail"),
        cell("pmta_deferred_total", "vmta-02", week_then(10, 60), "gmail", **{"class": "throttled"}),
        cell("pmta_delivered_total", "vmta-02", week_then(32, 30), "gmail", pool="pool-b"),
        cell("pmta_deferred_total", "vmta-02", week_then(68, 70), "gmail", pool="pool-b", **{"class": "throttled"}),
        cell("pmta_delivered_total", "vmta-03", week_then(45, 20), "apple"),
        cell("pmta_deferred_total", "vmta-03", week_then(5, 30), "apple", **{"class": "throttled"}),
        cell("pmta_delivered_total", "vmta-03", week_then(100), "apple", pool="pool-b"),
    ] + [  # vmta-04 at Microsoft: 300 attempts an hour in each of two pools, 90% -> 30%: judged over both pools only
        c for pool in ("pool-a", "pool-b") for c in (
            cell("pmta_delivered_total", "vmta-04", week_then(45, 15), "microsoft", pool=pool),
            cell("pmta_deferred_total", "vmta-04", week_then(5, 35), "microsoft", pool=pool, **{"class": "throttled"}))
    ]
    extra = "".join(f', {k}="{v}"' for k, v in target.items())
    series = {name[:-1] + extra + "}": values for name, values in cells}
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaSuccessRateDrop", "warning"), [{"labels": "{}", "value": 3}]),
        (panel_expr("watchtower-vmta", "Success ratio against the same hour a week ago: $vmta"),
         [{"labels": '{isp="yahoo"}', "value": 0.2 / 0.8},
          {"labels": '{isp="microsoft"}', "value": 0.3333333333333333},  # 0.3 / 0.9, over both pools only
          {"labels": '{isp="gmail"}', "value": 0.4444444444444444},  # 0.4 / 0.9
          {"labels": '{isp="apple"}', "value": (120 / 150) / (145 / 150)}]),
    ], eval_time=f"{(WEEK + 12) * 10}m", interval="10m", every="10m")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_all_values_in_api_urls_reach_the_api_as_all(path: Path) -> None:
    """Grafana puts a variable's custom All value into a URL as it is, whatever the format (`:csv`): the API must
    read it, query-string decoded, as "every value". `.+` arrived as `. ` (a `+` is a space) and the hub refused
    it as an unknown host: the status board's replies panels failed whenever Instance was All, the default."""
    from urllib.parse import parse_qsl

    from correlator.replies import ANY, filter_values

    d = load(path)
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    problems = []
    for p in panels(d):
        for t in p.get("targets", []):
            url = t.get("url")
            if not url or "?" not in url:
                continue
            for key, raw in parse_qsl(url.split("?", 1)[1], keep_blank_values=True):
                m = re.fullmatch(r"\$\{(\w+)(?::\w+)?\}", raw)
                var = variables.get(m.group(1)) if m else None
                if var is None or not var.get("includeAll") or var.get("allValue") is None:
                    continue
                query = url.split("?", 1)[1].replace(raw, var["allValue"])
                sent = dict(parse_qsl(query, keep_blank_values=True))[key]
                if filter_values(key, sent) is not None:
                    problems.append(f"{p['title']!r}: {key}={var['allValue']} arrives as {sent!r}, not All ({ANY})")
    assert not problems


# --- review 2026-12 (multi-site): two sites that name a host alike are two hosts --------------------------

SITES = ("eu", "us")


@needs_promtool
def test_two_sites_with_the_same_host_name_are_never_summed_into_one_cell(tmp_path: Path):
    """docs/scaling.md: each site's Prometheus has `external_labels: {cluster: ...}`; federated (or through
    Thanos/Mimir), both sites' pmta-01:9469 / vmta-03 / gmail are two cells. The boards grouped and joined without
    `cluster`: 30k queued at each site read 60k, HIGH (PmtaQueueBacklog's colour) in the war room, while the alert,
    per cluster, fired for neither (review 2026-12). Each cell keeps its `cluster`; a pick in the Cluster variable
    shows that site alone; totals over the sites still add up."""
    series = {}
    for site in SITES:
        host = f'cluster="{site}", job="watchtower", instance="pmta-01:9469"'
        series[f'pmta_queue_recipients{{{host}, vmta="vmta-03", isp="gmail"}}'] = "30000x40"
        series[f"watchtower_pmta_api_up{{{host}}}"] = "1x40"
        series[f'pmta_delivered_total{{{host}, vmta="vmta-03", vmta_pool="pool-a", isp="gmail"}}'] = "0+100x40"
    per_site = [{"labels": f'{{cluster="{s}", instance="pmta-01:9469", vmta="vmta-03"}}', "value": 1} for s in SITES]
    result = promtool_expect(tmp_path, series, [
        (fires("PmtaQueueBacklog", "warning"), NONE),
        (panel_expr("watchtower-warroom", "VMTA × ISP"), [{"labels": '{vmta="vmta-03", isp="gmail"}', "value": 1},
                                                          {"labels": '{vmta="vmta-03", isp=" worst"}', "value": 1}]),
        (panel_expr("watchtower-warroom", "Cells at HIGH or worse"), NONE),
        (panel_expr("watchtower-warroom", "Worst cells", "D"),
         [{"labels": f'{{cluster="{s}", instance="pmta-01:9469", vmta="vmta-03", isp="gmail"}}', "value": 30000}
          for s in SITES]),
        (panel_expr("watchtower-vmta", "Level by VMTA (worst ISP)"), per_site),
        (panel_expr("watchtower-vmta", "VMTA board", "H"),  # the largest VMTA x ISP queue, per site
         [{"labels": f'{{cluster="{s}", instance="pmta-01:9469", vmta="vmta-03", vmta_pool="pool-a"}}',
           "value": 30000} for s in SITES]),
        (panel_expr("watchtower-cluster", "Pool × ISP board", "H"),
         [{"labels": '{vmta_pool="pool-a", isp="gmail"}', "value": 30000}]),
        (panel_expr("watchtower-vmta", "Queued recipients"), [{"labels": "{}", "value": 60000}]),  # both sites
        (panel_expr("watchtower-vmta", "Queued recipients").replace("$cluster", "eu"),
         [{"labels": "{}", "value": 30000}]),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_every_selector_and_every_host_grouping_keeps_the_cluster(path: Path):
    """Every selector filters on `cluster=~"$cluster"` and every `by`/`on` list that keeps a host (`instance`) keeps
    its `cluster` too: two sites may both have a pmta-01:9469 (review 2026-12)."""
    d = load(path)
    texts = [(w, e) for w, e in prom_exprs(d)] + [("annotation", a["expr"]) for a in d["annotations"]["list"]
                                                 if "expr" in a]
    problems = []
    for where, expr in texts:
        flat = re.sub(r"\$\{(\w+)(?::\w+)?\}", r"$\1", expr)
        for m in re.finditer(r"(?<![\w:])([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}", flat):
            name, matchers = m.groups()
            if (name or "__name__" in matchers) and name not in STATIC_RULES \
                    and not re.search(r'\bcluster\s*=~\s*"\$cluster"', matchers):
                problems.append(f"{where}: {name or matchers} without the cluster matcher")
        for m in re.finditer(r"\b(by|on)\s*\(([^)]*)\)", _STRING.sub('""', expr)):
            labels = {x.strip() for x in m.group(2).split(",")}
            if "instance" in labels and "cluster" not in labels:
                problems.append(f"{where}: {m.group()} keeps the host, not its cluster")
    assert not problems, "\n".join(sorted(set(problems))[:20])


@pytest.mark.parametrize("path", DASHBOARDS, ids=ids)
def test_the_cluster_variable_is_all_even_where_no_series_has_a_cluster(path: Path):
    """One site without external labels: label_values(..., cluster) finds nothing, and All must still match every
    series (a `=~".*"` matcher matches an absent label), so single-site boards show what they showed before."""
    v = variables(load(path))
    assert "cluster" in v
    c = v["cluster"]
    assert c["type"] == "query" and variable_query(c) == "label_values(watchtower_build_info, cluster)"
    assert c["includeAll"] and c["multi"] and c["allValue"] == ".*"  # no allValue: All of nothing is `()`
    names = [n for n, x in v.items() if x["type"] == "query"]
    assert names[0] == "cluster"  # the job and instance lists follow the site picked
    assert all('cluster=~"$cluster"' in variable_query(v[n]) for n in names[1:]), names
