"""Alertmanager example: `amtool check-config`, routing (`amtool config routes test`), notification
templates (`amtool template render`: the headline comes first), and the inhibitions against a real
Alertmanager."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.client import HTTP, wait_ready
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
AM_DIR = REPO / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"
TEMPLATES = AM_DIR / "templates" / "watchtower.tmpl"
GLOB = "alertmanager/templates/*.tmpl"
GRAFANA = "https://grafana.example.invalid"

AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool is not on PATH. Install it (Debian/Ubuntu: `apt-get install prometheus-alertmanager`; CI "
    "installs it) to check alertmanager/alertmanager.yml and render its templates.",
)


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AMTOOL), *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def config() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


# --- config -----------------------------------------------------------------------------------
@needs_amtool
def test_amtool_check_config() -> None:
    proc = amtool("check-config", str(CONFIG.relative_to(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "1 templates" in proc.stdout, proc.stdout


# (labels, receivers the alert reaches, in order)
ROUTES = [
    ("alertname=PmtaIspThrottling severity=warning isp=gmail", "webhook,deliverability-slack"),
    ("alertname=PmtaIspThrottling severity=critical isp=gmail", "webhook,deliverability-oncall"),
    ("alertname=PmtaIspBlock severity=critical", "webhook,deliverability-oncall"),
    ("alertname=PmtaComplaintRate severity=warning isp=yahoo", "webhook,deliverability-slack"),
    # Watchtower's own health reaches the team that runs it, critical or not; critical also pages.
    ("alertname=WatchtowerDown severity=critical", "webhook,monitoring-slack,deliverability-oncall"),
    ("alertname=WatchtowerStateCommitsFailing severity=critical", "webhook,monitoring-slack,deliverability-oncall"),
    ("alertname=WatchtowerParseErrors severity=warning", "webhook,monitoring-slack"),
    ("alertname=WatchtowerAttributionSkipped severity=warning", "webhook,monitoring-slack"),
    ("alertname=PmtaQueueBacklog severity=info", "webhook,blackhole"),
    ("alertname=SomethingElse severity=warning", "deliverability-slack"),
]


@needs_amtool
@pytest.mark.parametrize(("labels", "receivers"), ROUTES)
def test_routing(labels: str, receivers: str) -> None:
    proc = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG.relative_to(REPO)}",
        f"--verify.receivers={receivers}",
        *labels.split(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grouping_and_inhibitions() -> None:
    cfg = config()
    # sites (docs/scaling.md) and PMTA clusters scraped as a job each notify apart
    assert cfg["route"]["group_by"] == ["alertname", "cluster", "job", "isp", "vmta_pool"]
    rules = [(r["source_matchers"], r["target_matchers"], r["equal"]) for r in cfg["inhibit_rules"]]
    assert (['alertname = "PmtaIspBlock"'], ['alertname = "PmtaIspThrottling"'],
            ["cluster", "job", "instance", "vmta", "isp"]) in rules
    down = [r for r in rules if r[0] == ['alertname = "WatchtowerDown"']]
    assert len(down) == 1 and down[0][2] == ["cluster", "job", "instance"]
    assert re.search(r'alertname =~ "Pmta\.\+', down[0][1][0])


def test_secrets_are_placeholders_read_from_files() -> None:
    text = CONFIG.read_text()
    cfg = config()
    assert "slack_api_url_file" in cfg["global"] and "smtp_auth_password_file" in cfg["global"]
    assert not re.search(r"^\s*(api_url|auth_password|slack_api_url|smtp_auth_password):", text, flags=re.M)
    assert "hooks.slack.com" not in text
    hosts = re.findall(r"[\w.-]+\.(?:com|net|org|io)\b", text)
    assert hosts == [], hosts
    kinds = {k for r in cfg["receivers"] for k in r if k.endswith("_configs")}
    assert kinds == {"slack_configs", "email_configs", "webhook_configs"}
    assert any(r["name"] == "webhook" for r in cfg["receivers"])


def test_every_template_used_is_defined() -> None:
    defined = set(re.findall(r'{{-?\s*define\s+"([^"]+)"', TEMPLATES.read_text()))
    used = set(re.findall(r'template\s+"([^"]+)"', CONFIG.read_text()))
    used |= set(re.findall(r'template\s+"([^"]+)"', TEMPLATES.read_text()))
    assert used and used <= defined, used - defined


# --- templates --------------------------------------------------------------------------------
def throttling_alerts() -> list[dict[str, Any]]:
    """The alerts exactly as the rule unit test expects Prometheus to send them: one notification
    group (PmtaIspThrottling, gmail, gmail-pool) with the warning and critical alert of vmta-05."""
    spec = yaml.safe_load((REPO / "rules" / "tests" / "isp_test.yaml").read_text())
    case = next(c for t in spec["tests"] if t["name"] == "throttling" for c in t["alert_rule_test"] if c["exp_alerts"])
    out = []
    for exp in case["exp_alerts"]:
        if exp["exp_labels"]["isp"] != "gmail":
            continue
        out.append(
            {
                "status": "firing",
                "labels": {"alertname": case["alertname"], **exp["exp_labels"]},
                "annotations": exp["exp_annotations"],
                "startsAt": "2026-11-25T12:11:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": str(len(out)),
                "generatorURL": "http://prometheus.example.invalid/graph?g0.expr=x",
            }
        )
    assert [a["labels"]["severity"] for a in out] == ["warning", "critical"]
    return out


def notification(alerts: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    return {
        "receiver": "deliverability-oncall",
        "status": status,
        "alerts": alerts,
        "groupLabels": {k: common[k] for k in ("alertname", "cluster", "job", "isp", "vmta_pool") if k in common},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.invalid",
    }


def render(name: str, data: dict[str, Any], tmp_path: Path, kind: str = "text") -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    proc = amtool(
        "template",
        "render",
        f"--template.glob={GLOB}",
        f"--template.type={kind}",
        f'--template.text={{{{ template "{name}" . }}}}',
        f"--template.data={path}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.rstrip("\n")


@pytest.fixture
def firing() -> dict[str, Any]:
    return notification(throttling_alerts())


@pytest.fixture
def headline() -> str:
    text = throttling_alerts()[0]["annotations"]["description"]
    assert text.startswith("Gmail is throttling vmta-05: 41k recipients queued, success rate 12%.")
    return text


@needs_amtool
def test_slack_leads_with_the_headline(firing: dict[str, Any], headline: str, tmp_path: Path) -> None:
    assert render("watchtower.slack.title", firing, tmp_path).startswith(headline)
    text = render("watchtower.slack.text", firing, tmp_path)
    lines = text.splitlines()
    assert lines[0] == f"*{headline}*"
    job = throttling_alerts()[0]["labels"]["job"]
    assert lines[1] == f"WARNING · PmtaIspThrottling · {throttling_alerts()[0]['annotations']['summary']} · job {job}"
    runbook = "https://github.com/pmta-watchtower/pmta-watchtower/blob/main/docs/runbooks.md#pmtaispthrottling"
    dashboard = f"{GRAFANA}/d/watchtower-vmta/vmta?var-job=watchtower&var-instance=pmta-01%3A9469&var-vmta=vmta-05&var-isp=gmail"
    assert lines[2].startswith(f"<{runbook}|Runbook> · <{dashboard}|Dashboard> · <http://prometheus.")
    assert text.count(headline) == 2  # warning and critical
    assert render("watchtower.slack.title_link", firing, tmp_path) == dashboard
    assert render("watchtower.slack.color", firing, tmp_path) == "warning"  # severities differ


@needs_amtool
def test_email_leads_with_the_headline(firing: dict[str, Any], headline: str, tmp_path: Path) -> None:
    subject = render("watchtower.email.subject", firing, tmp_path)
    assert subject.startswith(headline) and subject.endswith("[2 firing, 0 resolved]")
    text = render("watchtower.email.text", firing, tmp_path)
    assert text.splitlines()[0].startswith(headline)
    assert f"Dashboard:  {GRAFANA}/d/watchtower-vmta/vmta?" in text and "Runbook:    https://" in text
    html = render("watchtower.email.html", firing, tmp_path, kind="html")
    body = html.split("<body", 1)[1].split(">", 1)[1].lstrip()
    assert body.startswith("<h2>" + escape(headline, quote=True))
    assert 'href="https://grafana.example.invalid/d/watchtower-vmta/vmta?var-job=watchtower&amp;var-instance=pmta-01%3A9469&amp;' in html


@needs_amtool
def test_resolved_notification(headline: str, tmp_path: Path) -> None:
    alert = throttling_alerts()[1] | {"status": "resolved", "endsAt": "2026-11-25T13:00:00Z"}
    data = notification([alert], status="resolved")
    assert render("watchtower.slack.title", data, tmp_path) == f"{headline} (resolved)"
    assert render("watchtower.slack.color", data, tmp_path) == "good"
    assert render("watchtower.slack.text", data, tmp_path).splitlines() == [
        "*Resolved:*",
        f"~{headline}~ (PmtaIspThrottling)",
    ]
    assert render("watchtower.email.subject", data, tmp_path) == f"{headline} (resolved)"


@needs_amtool
def test_absolute_dashboard_urls_are_kept(firing: dict[str, Any], tmp_path: Path) -> None:
    firing["alerts"][0]["annotations"]["dashboard_url"] = "https://grafana.corp.example.invalid/d/x/y?var-a=b"
    assert (
        render("watchtower.slack.title_link", firing, tmp_path) == "https://grafana.corp.example.invalid/d/x/y?var-a=b"
    )


# --- inhibitions, against the real Alertmanager --------------------------------------------------
@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if ALERTMANAGER is None:
        pytest.skip("prometheus-alertmanager is not on PATH (Debian/Ubuntu: `apt-get install prometheus-alertmanager`)")
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={CONFIG}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", proc, tmp_path / "alertmanager.log", timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def alert(**labels: str) -> dict[str, Any]:
    return {"labels": labels, "annotations": {"summary": "s.", "description": "d"}}


@pytest.mark.integration
def test_inhibitions(alertmanager: str) -> None:
    host = {"job": "watchtower", "instance": "pmta-01:9469"}
    other = {"job": "watchtower", "instance": "pmta-02:9469"}
    third = {"job": "watchtower", "instance": "pmta-03:9469"}
    pair = {"vmta": "vmta-05", "isp": "gmail"}  # the VMTA x ISP alerts carry no pool (rules/alerts/isp.yaml)
    sent = {
        "block": alert(alertname="PmtaIspBlock", severity="critical", **host, **pair),
        "throttled-blocked": alert(alertname="PmtaIspThrottling", severity="warning", **host, **pair),
        "throttled-elsewhere": alert(
            alertname="PmtaIspThrottling",
            severity="warning",
            **host,
            vmta="vmta-06",
            isp="gmail",
        ),
        "down": alert(alertname="WatchtowerDown", severity="critical", **other),
        "backlog-down-host": alert(
            alertname="PmtaQueueBacklog", severity="warning", **other, vmta="vmta-21", isp="yahoo"
        ),
        "lagging-down-host": alert(alertname="WatchtowerTailerLagging", severity="warning", **other, source="acct"),
        "skipped-down-host": alert(alertname="WatchtowerAttributionSkipped", severity="warning", **other),
        "commits-failing": alert(alertname="WatchtowerStateCommitsFailing", severity="critical", **host),
        "skipped-commits-failing": alert(alertname="WatchtowerAttributionSkipped", severity="warning", **host),
        "stalled": alert(alertname="WatchtowerCorrelatorStalled", severity="warning", **third),
        "skipped-stalled": alert(alertname="WatchtowerAttributionSkipped", severity="warning", **third),
        "cluster-wide": alert(alertname="PmtaComplaintRate", severity="warning", job="watchtower", isp="yahoo"),
        "complaint-critical": alert(
            alertname="PmtaComplaintRate", severity="critical", job="watchtower", isp="microsoft"
        ),
        "complaint-warning": alert(
            alertname="PmtaComplaintRate", severity="warning", job="watchtower", isp="microsoft"
        ),
    }
    expect_muted = {"throttled-blocked", "backlog-down-host", "lagging-down-host", "complaint-warning",
                    "skipped-down-host", "skipped-commits-failing", "skipped-stalled"}
    assert settled_muting(alertmanager, sent, lambda muted: muted == expect_muted) == expect_muted


def settled_muting(alertmanager: str, sent: dict[str, dict[str, Any]], done: Callable[[set[str]], bool]) -> set[str]:
    """Post the named alerts, then wait until Alertmanager lists them all and the names of the inhibited ones
    satisfy `done` (at most 15 s); returns those names."""
    HTTP.post(f"{alertmanager}/api/v2/alerts", json=list(sent.values()), timeout=5).raise_for_status()
    names = {json.dumps(a["labels"], sort_keys=True): name for name, a in sent.items()}
    deadline = time.monotonic() + 15
    while True:
        got = HTTP.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        muted = {names[json.dumps(a["labels"], sort_keys=True)] for a in got if a["status"]["inhibitedBy"]}
        if len(got) == len(sent) and done(muted):
            return muted
        assert time.monotonic() < deadline, f"inhibited: {sorted(muted)}"
        time.sleep(0.2)


def shipped_alerts() -> list[tuple[str, str]]:
    """(alertname, severity) of every rule in rules/alerts/."""
    out = []
    for path in sorted((REPO / "rules" / "alerts").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [(r["alert"], r["labels"]["severity"]) for r in group["rules"]]
    return sorted(set(out))


@pytest.mark.integration
def test_watchtower_down_mutes_every_other_alert_of_its_host(alertmanager: str) -> None:
    """A Watchtower that cannot be scraped makes every other alert of its host an artefact: range
    functions (increase over 15m, ...) still see the samples from before the outage, so e.g.
    WatchtowerFilesUnreadable keeps firing for a while. Each shipped alert (per host) is muted;
    the same alert of another host and a cluster-wide one are not."""
    down_host = {"job": "watchtower", "instance": "pmta-01:9469"}
    other = {"job": "watchtower", "instance": "pmta-02:9469"}
    sent = [alert(alertname="WatchtowerDown", severity="critical", **down_host)]
    for name, severity in shipped_alerts():
        if name == "WatchtowerDown":
            continue
        sent.append(alert(alertname=name, severity=severity, **down_host, vmta="vmta-05", isp="gmail", source="acct"))
    sent.append(alert(alertname="WatchtowerFilesUnreadable", severity="warning", **other, source="acct"))
    sent.append(alert(alertname="PmtaComplaintRate", severity="warning", job="watchtower", isp="yahoo"))
    HTTP.post(f"{alertmanager}/api/v2/alerts", json=sent, timeout=5).raise_for_status()
    expect_muted = {
        (a["labels"]["alertname"], a["labels"]["severity"])
        for a in sent
        if a["labels"].get("instance") == down_host["instance"] and a["labels"]["alertname"] != "WatchtowerDown"
    }
    assert ("WatchtowerFilesUnreadable", "warning") in expect_muted
    deadline = time.monotonic() + 15
    while True:
        got = HTTP.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        muted = {
            (a["labels"]["alertname"], a["labels"]["severity"])
            for a in got
            if a["status"]["inhibitedBy"] and a["labels"].get("instance") == down_host["instance"]
        }
        muted_elsewhere = [a["labels"] for a in got if a["status"]["inhibitedBy"]
                           and a["labels"].get("instance") != down_host["instance"]]
        if len(got) == len(sent) and muted == expect_muted:
            break
        assert time.monotonic() < deadline, f"not muted: {sorted(expect_muted - muted)}"
        time.sleep(0.2)
    assert muted_elsewhere == []


def foreign_alert(status: str = "firing") -> dict[str, Any]:
    """An alert from someone else's rules (no severity, no annotations) that the catch-all route
    sends to deliverability-slack."""
    return {
        "status": status,
        "labels": {"alertname": "NodeDiskFull", "instance": "db-01:9100"},
        "annotations": {},
        "startsAt": "2026-11-25T12:11:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-25T13:00:00Z",
        "fingerprint": "f1",
        "generatorURL": "",
    }


@needs_amtool
def test_alerts_without_annotations_or_severity_render_cleanly(tmp_path: Path) -> None:
    """No empty Slack bold (`**`), strike-through (`~~`) or `<strong></strong>`, no dangling
    ` · ` separators and no blank link line: the alert name stands in for a missing description."""
    firing = notification([foreign_alert()])
    text = render("watchtower.slack.text", firing, tmp_path)
    assert text.splitlines() == ["*NodeDiskFull*", "NodeDiskFull"], text
    email = render("watchtower.email.text", firing, tmp_path)
    assert email.splitlines() == ["NodeDiskFull", "", "NodeDiskFull", "  NodeDiskFull"], email
    html = render("watchtower.email.html", firing, tmp_path, kind="html")
    assert "<strong>NodeDiskFull</strong>" in html and "<p> · " not in html and "<p></p>" not in html, html
    resolved = notification([foreign_alert("resolved")], status="resolved")
    assert render("watchtower.slack.text", resolved, tmp_path).splitlines() == [
        "*Resolved:*",
        "~NodeDiskFull~ (NodeDiskFull)",
    ]


@pytest.mark.integration
def test_critical_mutes_its_warning_twin_only_in_the_same_cluster(alertmanager: str) -> None:
    """Cluster-wide alerts (per ISP, pool or sender) carry `job` but no `instance`: one job per PMTA
    cluster. A critical complaint rate at Yahoo in one cluster must not mute the warning of another."""
    sent = {
        "critical-us": alert(alertname="PmtaComplaintRate", severity="critical", job="watchtower", isp="yahoo"),
        "warning-us": alert(alertname="PmtaComplaintRate", severity="warning", job="watchtower", isp="yahoo"),
        "warning-eu": alert(alertname="PmtaComplaintRate", severity="warning", job="watchtower-eu", isp="yahoo"),
        "pool-critical-us": alert(
            alertname="PmtaHardBounceRate", severity="critical", job="watchtower", vmta_pool="gmail-pool"
        ),
        "pool-warning-eu": alert(
            alertname="PmtaHardBounceRate", severity="warning", job="watchtower-eu", vmta_pool="gmail-pool"
        ),
        # docs/scaling.md's shape: one job everywhere, the sites told apart by `external_labels: {cluster: ...}`
        "sender-critical-paris": alert(alertname="PmtaSenderHardBounceRate", severity="critical", job="watchtower",
                                       sender="news.example.com", cluster="paris"),
        "sender-warning-dallas": alert(alertname="PmtaSenderHardBounceRate", severity="warning", job="watchtower",
                                       sender="news.example.com", cluster="dallas"),
    }
    assert "warning-us" in settled_muting(alertmanager, sent, lambda muted: "warning-us" in muted)
    time.sleep(0.5)
    assert settled_muting(alertmanager, sent, lambda muted: True) == {"warning-us"}


@pytest.mark.integration
def test_two_clusters_scraped_as_a_job_each_notify_apart_and_say_which(alertmanager: str, tmp_path: Path) -> None:
    """The cluster-wide alerts keep `job`, not `instance`: two PMTA clusters' hard-bounce alerts of the same pool name
    were one notification whose lines ("Pool pool-x hard-bounced 3%", "... 4%") did not say which cluster."""
    eu = alert(alertname="PmtaHardBounceRate", severity="warning", job="pmta-eu", vmta_pool="pool-x")
    us = alert(alertname="PmtaHardBounceRate", severity="warning", job="pmta-us", vmta_pool="pool-x")
    HTTP.post(f"{alertmanager}/api/v2/alerts", json=[eu, us], timeout=5).raise_for_status()
    deadline = time.monotonic() + 15
    while True:
        groups = [g for g in HTTP.get(f"{alertmanager}/api/v2/alerts/groups", timeout=5).json()
                  if g["receiver"]["name"] == "deliverability-slack"]
        if sum(len(g["alerts"]) for g in groups) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted((g["labels"].get("job"), len(g["alerts"])) for g in groups) == [("pmta-eu", 1), ("pmta-us", 1)]
    text = render("watchtower.slack.text", notification([{**eu, "status": "firing"}]), tmp_path)
    assert text.splitlines()[1] == "WARNING · PmtaHardBounceRate · s. · job pmta-eu"
    paris = {**eu, "labels": {**eu["labels"], "cluster": "paris"}, "status": "firing"}
    assert render("watchtower.slack.text", notification([paris]), tmp_path).splitlines()[1] == (
        "WARNING · PmtaHardBounceRate · s. · cluster paris · job pmta-eu")


@pytest.mark.integration
def test_stalled_tailer_mutes_lagging_of_the_same_source(alertmanager: str) -> None:
    """A source that is not read at all is also far behind: WatchtowerTailerStalled (critical) says it,
    WatchtowerTailerLagging (warning) of the same source is the same problem. Another source stays."""
    host = {"job": "watchtower", "instance": "pmta-01:9469"}
    sent = {
        "stalled": alert(alertname="WatchtowerTailerStalled", severity="critical", **host, source="acct"),
        "lagging-same": alert(alertname="WatchtowerTailerLagging", severity="warning", **host, source="acct"),
        "lagging-other": alert(alertname="WatchtowerTailerLagging", severity="warning", **host, source="fbl"),
    }
    assert settled_muting(alertmanager, sent, lambda muted: muted == {"lagging-same"}) == {"lagging-same"}


@pytest.mark.integration
def test_an_api_down_mutes_the_queue_warnings_of_its_host_not_the_host_stall(alertmanager: str) -> None:
    """Without the management API the per-queue gauges are stale (their warnings muted); the host stall counts the
    queue PMTA last reported and pages for a PMTA that died or hangs: it stays, with the API-down warning."""
    host = {"job": "watchtower", "instance": "pmta-07:9469"}
    sent = {
        "api-down": alert(alertname="WatchtowerPmtaApiDown", severity="warning", **host),
        "host-stall": alert(alertname="PmtaDeliveryStalled", severity="critical", **host),
        "vmta-stall": alert(alertname="PmtaDeliveryStalled", severity="warning", **host, vmta="vmta-01", isp="gmail"),
        "backlog": alert(alertname="PmtaQueueBacklog", severity="warning", **host, vmta="vmta-01", isp="gmail"),
    }
    expect = {"vmta-stall", "backlog"}
    assert settled_muting(alertmanager, sent, lambda muted: muted == expect) == expect


def example_alert(matchers: list[str], labels: dict[str, str]) -> dict[str, Any]:
    """An alert that the matchers of one side of an inhibit rule select: each `=` value, the first
    alternative of each `=~` (the `!=` ones name alerts this picks no other way)."""
    chosen = dict(labels)
    for matcher in matchers:
        name, op, value = re.fullmatch(r'\s*(\w+)\s*(=~|!=|=)\s*"([^"]*)"\s*', matcher).groups()  # type: ignore[union-attr]
        if op == "=":
            chosen[name] = value
        elif op == "=~":
            chosen[name] = value.split("|")[0].replace(".+", "Lag")
    return alert(**chosen)


@pytest.mark.integration
def test_no_inhibition_crosses_sites_that_share_instance_names(alertmanager: str) -> None:
    """docs/scaling.md sends every site's Prometheus to one Alertmanager, each with `external_labels:
    {cluster: ...}`; two sites' targets may well share `instance` (the compose stack's `watchtower:9469`).
    Every inhibit rule is tried with its source in one site and its target in the other, all other labels
    alike: nothing is muted. The same pair within one site is muted (the rule works at all). Its `equal`
    lists named `instance` (and vmta, isp, source) but not `cluster` nor `job`: a WatchtowerDown in one site
    muted every critical page of the other (review 2026-12-05)."""
    shared = {"job": "watchtower", "instance": "watchtower:9469", "vmta": "vmta-05", "isp": "gmail",
              "source": "acct", "vmta_pool": "pool-1", "sender": "news.example.com"}
    sent: dict[str, dict[str, Any]] = {}
    for number, rule in enumerate(config()["inhibit_rules"]):  # each rule in a pair of sites of its own
        sent[f"{number} source"] = example_alert(rule["source_matchers"], {**shared, "cluster": f"{number}-paris"})
        for site in ("paris", "dallas"):
            sent[f"{number} target {site}"] = example_alert(rule["target_matchers"],
                                                            {**shared, "cluster": f"{number}-{site}", "side": "target"})
    same_site = {name for name in sent if name.endswith("target paris")}
    assert len(same_site) == len(config()["inhibit_rules"]) >= 9
    muted = settled_muting(alertmanager, sent, lambda muted: same_site <= muted)  # every source is in
    assert sorted(name for name in muted if name.endswith("dallas")) == []


# --- what a chat or a ticket system is sent (alertmanager review 2026-12-07) -------------------------------------
def many_alerts(count: int) -> list[dict[str, Any]]:
    """`count` throttling warnings of one notification group (one ISP and pool), one VMTA each."""
    base = throttling_alerts()[0]
    return [{**base, "labels": {**base["labels"], "vmta": f"vmta-{i:03d}", "instance": f"pmta-{i % 10:02d}:9469"},
             "annotations": {**base["annotations"], "description": f"Gmail is throttling vmta-{i:03d}."},
             "fingerprint": str(i)} for i in range(count)]


@needs_amtool
def test_a_big_group_lists_its_first_alerts_and_says_how_many_more(tmp_path: Path) -> None:
    """A group of 200 VMTA x ISP alerts made one Slack message of 141k characters (Slack's limit is 40,000) and one
    e-mail as long: each lists the first SHOWN firing alerts and resolved ones, then how many there are in all."""
    data = notification(many_alerts(200))
    text = render("watchtower.slack.text", data, tmp_path)
    assert text.count("Gmail is throttling vmta-") == 20 and "*Gmail is throttling vmta-019.*" in text
    assert text.splitlines()[-1] == "_20 of 200 firing alerts shown: all are in Alertmanager._"
    assert len(text) < 20_000, len(text)  # half what Slack takes, for 20 of the longest descriptions
    mail = render("watchtower.email.text", data, tmp_path)
    assert mail.count("Gmail is throttling vmta-") == 21  # the headline and 20 alerts
    assert "20 of 200 firing alerts shown: all are in Alertmanager." in mail
    resolved = [{**a, "status": "resolved", "endsAt": "2026-11-25T13:00:00Z"} for a in many_alerts(50)]
    text = render("watchtower.slack.text", notification(resolved, status="resolved"), tmp_path)
    assert text.count("~Gmail is throttling vmta-") == 20
    assert text.splitlines()[-1] == "_20 of 50 resolved alerts shown._"
    small = render("watchtower.slack.text", notification(many_alerts(20)), tmp_path)
    assert small.count("Gmail is throttling vmta-") == 20 and "shown" not in small


@needs_amtool
def test_slack_text_escapes_what_slack_reads_as_markup(tmp_path: Path) -> None:
    """Slack reads `&`, `<` and `>` as markup (`<url|text>`): a label or a description holding them is escaped, as
    Slack asks, in the message and its title."""
    data = notification(many_alerts(1))
    alert = data["alerts"][0]
    alert["annotations"]["description"] = "Gmail <throttling> vmta-<05> & co."
    alert["annotations"]["summary"] = "A <b> & c."
    text = render("watchtower.slack.text", data, tmp_path)
    assert text.splitlines()[0] == "*Gmail &lt;throttling&gt; vmta-&lt;05&gt; &amp; co.*"
    assert text.splitlines()[1].startswith("WARNING · PmtaIspThrottling · A &lt;b&gt; &amp; c. · job ")
    assert render("watchtower.slack.title", data, tmp_path) == "Gmail &lt;throttling&gt; vmta-&lt;05&gt; &amp; co."
    alert["labels"]["severity"] = "warn<!here>&"
    alert["annotations"]["runbook_url"] = "https://rb.example.invalid/x?a=1&b=2|pipe>gt"
    alert["annotations"]["dashboard_url"] = "/d/v/vmta?var-vmta=a&var-isp=b|c<d>"
    lines = render("watchtower.slack.text", data, tmp_path).splitlines()
    assert lines[1].startswith("WARN&lt;!HERE&gt;&amp; · PmtaIspThrottling · ")
    assert lines[2] == ("<https://rb.example.invalid/x?a=1&b=2%7Cpipe%3Egt|Runbook> · "
                        f"<{GRAFANA}/d/v/vmta?var-vmta=a&var-isp=b%7Cc%3Cd%3E|Dashboard> · "
                        "<http://prometheus.example.invalid/graph?g0.expr=x|Prometheus>")


def test_no_alert_text_holds_slack_markup() -> None:
    """The Slack message sets each headline in bold (`*...*`) and each resolved one struck through (`~...~`): a `*`
    or `~` in an alert's own words (WatchtowerDown said "its Pmta* alerts") ended the bold early (a code span in
    backquotes, `unknown`, is Slack markup meant as such)."""
    for path in sorted((REPO / "rules" / "alerts").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for key in ("summary", "description"):
                    words = re.sub(r"\{\{.*?\}\}", "", rule.get("annotations", {}).get(key, ""), flags=re.S)
                    assert not re.search(r"[*~]", words), (path.name, rule.get("alert"), key, words)


@needs_amtool
def test_the_email_text_links_the_prometheus_query_as_the_others_do(firing: dict[str, Any], tmp_path: Path) -> None:
    text = render("watchtower.email.text", firing, tmp_path)
    assert text.count("Prometheus: http://prometheus.example.invalid/graph?g0.expr=x") == 2


def test_the_webhook_is_sent_every_alert_of_a_group() -> None:
    """The webhook (automation, ticketing) is documented to get every alert; `max_alerts: 50` cut a group of 200
    VMTA x ISP alerts to 50, saying so only in the payload's `truncatedAlerts`."""
    config = yaml.safe_load(CONFIG.read_text())
    [hook] = [r for r in config["receivers"] if r["name"] == "webhook"]
    assert [c.get("max_alerts", 0) for c in hook["webhook_configs"]] == [0]
