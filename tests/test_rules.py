"""Prometheus rules: `promtool check rules` / `promtool test rules`, and the conventions promtool
cannot check (severity, annotations, runbook anchors, test coverage, metric and label names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.metrics import LABEL_VALUES, SPECS

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
RECORDING = RULES / "recording.yaml"
ALERT_FILES = sorted((RULES / "alerts").glob("*.yaml"))
TEST_FILES = sorted((RULES / "tests").glob("*_test.yaml"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
ALERTS_DOC = REPO / "docs" / "alerts.md"

RUNBOOK_BASE = "https://github.com/pmta-watchtower/pmta-watchtower/blob/main/docs/runbooks.md#"
DASHBOARD_UIDS = {
    "watchtower-overview",
    "watchtower-vmta",
    "watchtower-cluster",
    "watchtower-flows",
    "watchtower-forensics",
    "watchtower-incidents",
    "watchtower-warroom",
}
SEVERITIES = {"critical", "warning", "info"}
NOISE_CLASSES = {"mailbox_full", "recipient_rate", "transient_remote"}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not on PATH. Install it (Debian/Ubuntu: `apt-get install prometheus`; CI installs "
    "it) to run `promtool check rules` and `promtool test rules` on rules/.",
)


# --- loading ----------------------------------------------------------------------------------
@cache
def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def groups(path: Path) -> list[dict[str, Any]]:
    return load(path)["groups"]


def alert_rules() -> list[tuple[Path, str, dict[str, Any]]]:
    return [(f, g["name"], r) for f in ALERT_FILES for g in groups(f) for r in g["rules"]]


def alert_names() -> set[str]:
    return {r["alert"] for _, _, r in alert_rules()}


def recording_names() -> set[str]:
    return {r["record"] for g in groups(RECORDING) for r in g["rules"]}


def rule_id(rule: dict[str, Any]) -> str:
    return f"{rule['alert']}[{rule['labels']['severity']}]"


def all_promql() -> list[tuple[str, str]]:
    """(where, text) for every expression and every annotation (templates run queries too)."""
    out = [(f"{g['name']}/{r['record']}", r["expr"]) for g in groups(RECORDING) for r in g["rules"]]
    for _, gname, r in alert_rules():
        out.append((f"{gname}/{rule_id(r)}", r["expr"]))
        out += [(f"{gname}/{rule_id(r)}.{k}", v) for k, v in r.get("annotations", {}).items()]
    return out


def closed_set(label: str) -> set[str]:
    """Label values documented in exporter.metrics.LABEL_VALUES, e.g. the 18 response classes."""
    text = LABEL_VALUES[label].split(":", 1)[1]
    text = re.split(r"[;(]", text)[0]
    return {v.strip(" .`") for v in text.split(",") if v.strip(" .`")}


# --- promtool ---------------------------------------------------------------------------------
def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)


@needs_promtool
def test_promtool_check_rules() -> None:
    files = [str(RECORDING.relative_to(REPO))] + [str(f.relative_to(REPO)) for f in ALERT_FILES]
    proc = run(str(PROMTOOL), "check", "rules", "--lint=all", "--lint-fatal", *files)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda f: f.stem)
def test_promtool_test_rules(test_file: Path) -> None:
    """One promtool run a file (success_rate_drop_test.yaml alone takes ~12 s): the workers share them."""
    proc = run(str(PROMTOOL), "test", "rules", str(test_file.relative_to(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 1, proc.stdout


# --- rule files -------------------------------------------------------------------------------
def test_rule_files_exist() -> None:
    assert RECORDING.is_file()
    assert {f.stem for f in ALERT_FILES} >= {"isp", "reputation", "queue", "watchtower"}
    assert TEST_FILES


def test_groups_are_small_and_named() -> None:
    for path in [RECORDING, *ALERT_FILES]:
        for g in groups(path):
            assert len(g["rules"]) <= 20, f"{path.name}: group {g['name']} has {len(g['rules'])} rules"
            assert len(g["name"]) <= 40, g["name"]
    for path in ALERT_FILES:
        assert len(groups(path)) == 1, f"{path.name}: one group per area"
        assert all("alert" in r for r in groups(path)[0]["rules"]), path.name
    assert all("record" in r for g in groups(RECORDING) for r in g["rules"])


def test_group_intervals_stay_inside_the_lookback() -> None:
    """A group evaluated every 5m leaves its series at Prometheus' 5-minute lookback edge: an
    instant query just before the next evaluation (or after one late evaluation) finds nothing.
    Every group runs at least twice per lookback window."""
    lookback = 300
    for path in [RECORDING, *ALERT_FILES]:
        for g in groups(path):
            m = re.fullmatch(r"(\d+)([smh])", g.get("interval", "1m"))
            assert m, g["name"]
            seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
            assert seconds <= lookback / 2, f"{g['name']}: interval {g['interval']} at the lookback edge"


def test_group_names_are_unique() -> None:
    names = [g["name"] for path in [RECORDING, *ALERT_FILES] for g in groups(path)]
    assert len(names) == len(set(names)), names


def test_recording_rules_are_named_level_metric_operations() -> None:
    for name in recording_names():
        assert re.fullmatch(r"[a-z_]+:[a-z][a-z0-9_]*:[a-z0-9_]+", name), name


def test_every_recording_rule_has_a_comment_above() -> None:
    lines = RECORDING.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- record:"):
            assert lines[i - 1].strip().startswith("#"), f"recording.yaml:{i + 1}: no comment above {line.strip()}"


def test_recording_rules_aggregate_without_instance_above_vmta_level() -> None:
    """vmta_isp, instance_vmta_isp, instance_vmta_pool_isp and instance keep `instance` (a VMTA is host-local; the
    ISP alerts judge a VMTA over its pools; instance is the host; PmtaQueueOldMessages judges each host's pool x
    ISP); every other level is cluster-wide, so a rule reading raw metrics or vmta_isp series must aggregate
    `without (instance, ...)`."""
    for g in groups(RECORDING):
        for r in g["rules"]:
            name, expr = r["record"], r["expr"]
            if name.startswith(("vmta_isp:", "instance_vmta_isp:", "instance_vmta_pool_isp:", "instance:")):
                assert not re.search(r"without \([^)]*\binstance\b", expr), name
                continue
            reads_host_level = re.search(r"(?<![:\w])pmta_\w+", expr) or re.search(r"(?<![\w])vmta_isp:", expr)
            if reads_host_level:
                assert re.search(r"without \(instance\b", expr), f"{name}: must aggregate without (instance, ...)"


def test_quantiles_are_taken_only_over_buckets_with_observations() -> None:
    """histogram_quantile over bucket rates that are all 0 (an idle VMTA, pool or ISP) records NaN.
    Each quantile rule keeps only the buckets whose +Inf rate is above 0, so idle means absent
    (rules/tests/edge_cases_test.yaml checks the result)."""
    for g in groups(RECORDING):
        for r in g["rules"]:
            m = re.search(r"histogram_quantile\(\s*[0-9.]+,\s*(\S+)\s+(.*)\)\s*$", r["expr"], flags=re.S)
            if "histogram_quantile" not in r["expr"]:
                continue
            assert m, r["record"]
            buckets, rest = m.group(1), " ".join(m.group(2).split())
            assert rest == f'and ignoring (le) ({buckets}{{le="+Inf"}} > 0)', f"{r['record']}: {rest}"


# --- alerts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", [r for _, _, r in alert_rules()], ids=rule_id)
def test_alert_conventions(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"(Pmta|Watchtower)[A-Z][A-Za-z]+", name), name
    assert len(name) <= 40
    assert rule["labels"]["severity"] in SEVERITIES
    assert "for" in rule, f"{name}: no `for`"

    ann = rule["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"}, name
    assert "{{" not in ann["summary"] and ann["summary"][0].isupper() and ann["summary"].endswith("."), name
    assert "{{" in ann["description"], f"{name}: description must carry the numbers (templated)"

    assert ann["runbook_url"] == RUNBOOK_BASE + name.lower(), name
    uid = re.fullmatch(r"/d/([a-z-]+)/[a-z-]+\?var-.+", ann["dashboard_url"])
    assert uid and uid.group(1) in DASHBOARD_UIDS, ann["dashboard_url"]


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_runbook_anchor_exists_for_every_alert() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    for _, _, rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: docs/runbooks.md has no section #{anchor}"


def test_noise_classes_never_feed_throttling_or_block_alerts() -> None:
    """Per-recipient 4xx (mailbox full, per-mailbox rate) and remote hiccups must not page."""
    recorded = {r["record"]: r["expr"] for g in groups(RECORDING) for r in g["rules"]}
    for _, _, rule in alert_rules():
        if rule["alert"] not in {"PmtaIspThrottling", "PmtaIspBlock"}:
            continue
        exprs = [rule["expr"]] + [e for n, e in recorded.items() if n in rule["expr"]]
        selectors = []
        for expr in exprs:
            assert not NOISE_CLASSES & set(re.findall(r"[a-z_]+", expr)), expr
            selectors += re.findall(r'class\s*(=~|=|!=|!~)\s*"([^"]*)"', expr)
        # Only allow-lists of classes: a new class can never leak into these alerts.
        assert selectors and all(op in ("=", "=~") for op, _ in selectors), (rule["alert"], selectors)



ISP_JUDGEMENTS = {  # alert -> thresholds written once per judgement (the VMTA over its pools, each pool)
    "PmtaIspThrottling": ("> 0.30", "* 600 >= 50"),
    "PmtaIspBlock": ("> 0.05", "* 900 >= 50"),
    "PmtaSuccessRateDrop": ("group_left () 0.5 * (", "* 3600 >= 500"),
}


@pytest.mark.parametrize("rule", [r for _, _, r in alert_rules() if r["alert"] in ISP_JUDGEMENTS], ids=rule_id)
def test_isp_alerts_judge_the_vmta_over_its_pools_and_each_pool_on_its_own(rule: dict[str, Any]) -> None:
    """One alert per (instance, vmta, isp), fired when the VMTA over all its pools (instance_vmta_isp:*: ISPs
    throttle the IP) or any one of its pools on its own (vmta_isp:*: a pool's sender domain has its own reputation)
    meets the condition (review 2026-12): both levels are read, folded with `max`/`min without (vmta_pool)` (one
    alert, no pool label, the worse value), and every threshold and floor is written for both judgements."""
    expr = " ".join(rule["expr"].split())
    fold = "min" if rule["alert"] == "PmtaSuccessRateDrop" else "max"
    assert f"{fold} without (vmta_pool) (" in expr, rule["alert"]
    assert "instance_vmta_isp:" in expr and re.search(r"(?<![\w])vmta_isp:", expr), rule["alert"]
    for fragment in ISP_JUDGEMENTS[rule["alert"]]:
        n = expr.count(fragment)
        assert n >= 2 and n % 2 == 0, (rule["alert"], fragment, n)
    assert "vmta_pool" not in rule["labels"]


# --- tests cover every alert ------------------------------------------------------------------
def alert_test_cases() -> list[tuple[Path, dict[str, Any]]]:
    return [(f, case) for f in TEST_FILES for t in load(f)["tests"] for case in t.get("alert_rule_test", [])]


def test_every_alert_rule_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for _, case in alert_test_cases():
        if not case["exp_alerts"]:
            silent.add(case["alertname"])
        for exp in case["exp_alerts"]:
            firing.add(f"{case['alertname']}[{exp['exp_labels']['severity']}]")
            assert set(exp.get("exp_annotations", {})) == {"summary", "description", "runbook_url", "dashboard_url"}, (
                case
            )
    rules = {rule_id(r) for _, _, r in alert_rules()}
    assert rules <= firing, f"alert rules never seen firing in rules/tests: {sorted(rules - firing)}"
    assert alert_names() <= silent, f"alerts without a not-yet-firing case: {sorted(alert_names() - silent)}"
    assert firing <= rules, "tests expect alerts that do not exist"


def test_each_alert_is_checked_one_minute_before_it_fires() -> None:
    """For every alert name: some test has exp_alerts=[] at T-1m (or T-1m maps to the previous
    evaluation) and the alert firing at T, in the same test group."""
    for_by_name = {r["alert"]: r["for"] for _, _, r in alert_rules()}

    def minutes(d: str) -> int:
        m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", d)
        assert m, d
        return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)

    checked = set()
    for f in TEST_FILES:
        for t in load(f)["tests"]:
            cases = t.get("alert_rule_test", [])
            for c in cases:
                if c["exp_alerts"]:
                    continue
                before = minutes(c["eval_time"])
                if any(
                    o["alertname"] == c["alertname"] and o["exp_alerts"] and minutes(o["eval_time"]) == before + 1
                    for o in cases
                ):
                    checked.add(c["alertname"])
    assert set(for_by_name) <= checked, sorted(set(for_by_name) - checked)


def test_promtool_test_files_order_all_their_groups() -> None:
    """promtool evaluates groups in random order unless group_eval_order lists them all; the
    recording groups must come before the alert groups that read them."""
    for f in TEST_FILES:
        spec = load(f)
        loaded = [g["name"] for rf in spec["rule_files"] for g in groups((f.parent / rf).resolve())]
        assert spec.get("group_eval_order") == loaded, f"{f.name}: group_eval_order must be {loaded}"
        assert spec["rule_files"][0] == "../recording.yaml", f.name


# --- names used in expressions exist ------------------------------------------------------------
def test_every_metric_in_rules_exists_in_the_metric_table() -> None:
    recorded = recording_names()
    known = set(SPECS) | {"up"}
    for name, spec in SPECS.items():
        if spec.kind == "histogram":
            known |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    for where, text in all_promql():
        for metric in re.findall(r"(?<![:\w])((?:pmta|watchtower)_[a-z0-9_]+)(?![:\w])", text):
            assert metric in known, f"{where}: unknown metric {metric}"
        for rec in re.findall(r"\b([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b", text):
            assert rec in recorded, f"{where}: unknown recording rule {rec}"


def test_management_api_gauges_are_read_through_last_over_time() -> None:
    """pmta_queue_* and pmta_status_* are absent (not stale) for a scrape after a poll that failed or
    missed its deadline (docs/metrics.md). Read raw, one such poll restarts the `for` of every alert
    that uses them and resolves the firing ones; rules/tests/edge_cases_test.yaml shows the effect.
    Every use, in expressions and in annotation queries, goes through last_over_time(...[5m]); the host's queue
    of the critical PmtaDeliveryStalled through [6h]: the last one PMTA reported, which a dead PMTA stops reporting.
    Four recording rules read it raw on purpose: the host's queue (one value per host, whatever pods served it),
    what PMTA finished, the recipients of its paused queues and when the counters began, as of its last report, must
    stop there (their other reads go through last_over_time as everywhere); the host's queue is then read through
    last_over_time(...[6h]).
    The 6h window reads that per-host value, not each pod's gauge: a replaced pod's last report stayed in it for 6h,
    added to the new pod's (rules/tests/queue_test.yaml, review 2026-12-07)."""
    as_of_report = ("/instance:pmta_finished_at_queue_report:total",
                    "/instance:pmta_queue_paused_recipients_at_queue_report:sum",
                    "/instance:pmta_counters_start_at_queue_report:max",
                    "/instance:pmta_counters_start_at_queue_report:min")
    host_queue = "instance:pmta_status_queue_recipients_at_queue_report:sum"
    # where the recorded host queue has no sample in 6h (the hours after the rules are first loaded), the raw
    # gauges stand in for it: the only other read of a gauge through [6h]
    stand_in = ("(last_over_time(" + host_queue + "[6h]) or sum by (cluster, job, instance) (last_over_time("
                'pmta_status_queue_recipients{type!~"bounceProcessor|feedbackLoopProcessor|gmImprinter"}[6h])))')
    for where, text in all_promql():
        if where.endswith("/" + host_queue):
            assert re.fullmatch(r"\s*max by \(cluster, job, instance\) \(\s*sum without \(type\) \(pmta_status_queue_recipients"
                                r"\{[^}]*\}\)\s*\)\s*", text), text
            continue
        if host_queue in text:
            assert text.count(host_queue) == text.count(stand_in), where
            text = text.replace(stand_in, "HOST_QUEUE")
        if where.endswith(as_of_report):
            gate = re.search(r"and on \(cluster, job, instance\)\s+pmta_status_queue_recipients\s*$", text)
            assert gate, text
            text = text[: gate.start()]
        for m in re.finditer(r"(?<![:\w])pmta_(?:queue|status)_[a-z_]+", text):
            assert text[: m.start()].endswith("last_over_time("), f"{where}: {m.group(0)} read raw"
            assert re.match(r"(?:\{[^}]*\})?\[5m\]", text[m.end() :]), f"{where}: {m.group(0)}: window"


def test_per_host_joins_and_queries_keep_sites_apart() -> None:
    """Two sites (docs/scaling.md: one job, an external `cluster` label each, rules in a central ruler) may
    share instance names (the compose stack's `watchtower:9469`). Every vector match that names `instance`
    also names `cluster` and `job`, and so does every per-host query of a description: the joins named
    `instance` only, and one site's deliveries hid the other's stalled VMTA (rules/tests/edge_cases_test.yaml,
    review 2026-12-05). A label absent on both sides (one site, no `cluster`) still matches."""
    for where, text in all_promql():
        for keys in re.findall(r"\b(?:on|ignoring)\s*\(([^)]*)\)", text):
            names = {k.strip() for k in keys.split(",")}
            if "instance" in names:
                assert {"cluster", "job"} <= names, f"{where}: on ({keys})"
        for selector in re.findall(r"\{([^{}]*instance=%q[^{}]*)\}", text):
            assert selector.startswith("cluster=%q,job=%q,instance=%q"), f"{where}: {{{selector}}}"


def test_cluster_wide_queries_in_annotations_select_the_alerts_job() -> None:
    """Cluster-wide levels keep `job` (one job per PMTA cluster). A description that queries such a
    series for the alert's sender/pool/ISP without `job=%q` mixes in the other clusters' numbers
    (rules/tests/edge_cases_test.yaml: auth failures in two jobs)."""
    for _, _, rule in alert_rules():
        for m in re.finditer(r"\b((?:sender|sender_isp|isp|vmta_pool|vmta_pool_isp):[a-z0-9_]+:[a-z0-9_]+)\{([^}]*)\}",
                             rule["annotations"]["description"]):
            if m.group(1) == "isp:pmta_isp_display_name:info":
                continue
            assert "job=%q" in m.group(2), f"{rule_id(rule)}: {m.group(0)} without job=%q"


def test_cluster_wide_dashboard_links_select_the_alerts_job() -> None:
    """An alert without `instance` (per ISP, pool or sender) is about one cluster (`job`); its dashboard
    link must select that job, or the dashboards' `job` variable (default: All) mixes every cluster."""
    for _, _, rule in alert_rules():
        url = rule["annotations"]["dashboard_url"]
        if "var-instance=" not in url:
            assert "var-job={{ $labels.job | urlquery }}" in url, f"{rule_id(rule)}: {url}"


def test_delivery_stalled_leaves_out_exactly_the_tailer_stalled_condition() -> None:
    """PmtaDeliveryStalled leaves out hosts where WatchtowerTailerStalled's condition holds, with a
    copy of that condition (see queue.yaml); the copies must not drift from the original."""

    def flat(text: str) -> str:
        return re.sub(r"[\s()]+", "", text)

    by_name = {rule_id(r): r["expr"] for _, _, r in alert_rules()}
    tailer = flat(by_name["WatchtowerTailerStalled[critical]"])
    withheld = "unless on (cluster, job, instance) (max_over_time(watchtower_counters_withheld[3m]) == 1)"
    for rid in ("PmtaDeliveryStalled[warning]", "PmtaDeliveryStalled[critical]"):
        assert "unless on (cluster, job, instance)" in by_name[rid], rid
        assert flat(by_name[rid].rsplit("unless on (cluster, job, instance)", 1)[1]) == tailer, rid
        assert withheld in by_name[rid], rid  # nor while its counters are withheld (rules/tests/queue_test.yaml)


def test_label_values_in_selectors_are_documented() -> None:
    allowed = {"class": closed_set("class"), "isp": closed_set("isp"), "feedback_type": closed_set("feedback_type")}
    assert "throttled" in allowed["class"] and "gmail" in allowed["isp"] and "abuse" in allowed["feedback_type"]
    for where, text in all_promql():
        for label, _, values in re.findall(r'\b(class|isp|feedback_type)\s*(=~|!~|=|!=)\s*"([^"%]*)"', text):
            for value in values.split("|"):
                assert value in allowed[label], f"{where}: {label}={value!r} is not a documented value"


def test_auth_failures_count_operators_the_same_way_in_expression_and_description() -> None:
    """PmtaAuthFailures counts operators, not ISPs (gmail and google_workspace are Google's servers, one policy):
    the expression and the description's provider list map the ISPs with the same label_replace calls, naming
    ISPs of the shipped table only (rules/tests/reputation_test.yaml: Google alone does not page)."""
    rule = next(r for _, _, r in alert_rules() if r["alert"] == "PmtaAuthFailures")
    in_expr = re.findall(r'"operator", "([^"]+)", "isp", "([^"]+)"', rule["expr"])
    in_description = re.findall(r'\\"operator\\", \\"([^"\\]+)\\", \\"isp\\", \\"([^"\\]+)\\"',
                                rule["annotations"]["description"])
    assert in_expr and in_expr == in_description, (in_expr, in_description)
    merged = {op: isps.split("|") for op, isps in in_expr if op != "$1"}
    assert merged == {"google": ["gmail", "google_workspace"], "microsoft": ["microsoft", "office365"]}
    assert {isp for isps in merged.values() for isp in isps} <= closed_set("isp")
    assert ("$1", "(.*)") in in_expr  # every other ISP is its own operator


def test_isp_display_names_cover_the_shipped_isp_table() -> None:
    named = {
        r["labels"]["isp"]
        for g in groups(RECORDING)
        for r in g["rules"]
        if r["record"] == "isp:pmta_isp_display_name:info"
    }
    assert named == closed_set("isp")


# --- docs ---------------------------------------------------------------------------------------
def test_docs_alerts_lists_every_alert_and_its_parameters() -> None:
    """docs/alerts.md's parameter table: each row's expression fragment appears in the rules it
    names, so the documented defaults cannot drift from the YAML."""
    doc = ALERTS_DOC.read_text()
    for name in alert_names():
        assert f"`{name}`" in doc, f"docs/alerts.md does not mention {name}"
    section = doc.split("\n## Parameters\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*`([a-z_]+)`\s*\|\s*`([^`]+)`\s*\|\s*([^|]+)\|", section, flags=re.M)
    assert len(rows) >= 20, "parameter table not found in docs/alerts.md"
    by_name: dict[str, list[dict[str, Any]]] = {}
    for _, _, r in alert_rules():
        by_name.setdefault(r["alert"], []).append(r)
    recorded = {r["record"]: r["expr"] for g in groups(RECORDING) for r in g["rules"]}

    def with_rules_read(expr: str) -> str:
        """The expression and those of the recording rules it reads, transitively (a window or an `le` regex may
        live in the rule an alert reads: PmtaQueueOldMessages)."""
        seen: set[str] = set()
        todo = [expr]
        while todo:
            text = todo.pop()
            for name in re.findall(r"\b([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b", text):
                if name in recorded and name not in seen:
                    seen.add(name)
                    todo.append(recorded[name])
        return "\n".join([expr, *(recorded[n] for n in sorted(seen))])

    for param, fragment, used_by in rows:
        fragment = fragment.replace("\\|", "|")  # pipes are escaped inside Markdown tables
        targets = re.findall(r"`((?:Pmta|Watchtower)[A-Za-z]+)`", used_by)
        assert targets, f"parameter {param}: no alert named"
        for target in targets:
            texts = [with_rules_read(r["expr"]) + f"\nfor: {r['for']}" for r in by_name[target]]
            assert any(fragment in t for t in texts), f"{param}: `{fragment}` not in {target}"
