"""Every panel of every dashboard, on live data: the Gmail-throttle incident as Grafana would show it.

The session's Gmail-throttle stack (tests/e2e/conftest.py: simulator -> `watchtower run` with the
correlator -> Prometheus with the shipped rules -> Alertmanager) runs until the critical page is out;
then every panel target, variable query and annotation of every dashboard runs as Grafana would
send it (tests/e2e/grafana.py), once on first open (All everywhere) and once for the status board
as the alert's link opens it. A target that errors fails the test; a panel with no data fails it
unless ALLOWED_EMPTY says why this scenario leaves it empty.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import Pipeline
from tests.e2e.grafana import DASHBOARDS, Grafana, Result, merge_table

pytestmark = pytest.mark.live

REPO_DASH = {p.stem: p for p in DASHBOARDS}
# (dashboard uid, panel title) -> why the Gmail-throttle scenario leaves it empty (after ~45 simulated minutes).
ALLOWED_EMPTY = {
    ("watchtower-overview", "Remote bounces by class"):
        "rb records come 5-60 simulated minutes after a delivery, from a few office365/long-tail recipients only",
    ("watchtower-overview", "Complaints by feedback type"):
        "f records arrive 30 min-12 h after the delivery (fbl_delay) at 0.04%: none yet",
    ("watchtower-overview", "Parse errors per second"): "the simulator writes only valid lines",
    ("watchtower-cluster", "Share of deferrals older than 4h by pool × ISP (30 minutes)"):
        "a message is deferred for 4 h only after 4 simulated hours; the run is ~45 minutes",
    ("watchtower-overview", "Errors per second"): "no read, PMTA API or checkpoint error happens",
    ("watchtower-overview", "Label overflow per second"): "8 VMTAs, 2 pools, 4 senders: far below every cap",
    ("watchtower-forensics", "Parse errors by reason"): "the simulator writes only valid lines",
    ("watchtower-forensics", "Skipped records by source and type"):
        "each source's `records` list matches what the simulator writes to that file",
    ("watchtower-forensics", "Read errors by reason"): "no file is unreadable",
    ("watchtower-forensics", "Recipients of message $message_id"): "the Message-Id text box is empty on first open",
    ("watchtower-forensics", "Events of message $message_id"): "the Message-Id text box is empty on first open",
    ("watchtower-forensics", "Timeline of $rcpt in job $job_id"): "the job id and recipient boxes are empty",
    ("watchtower-forensics", "Latest $outcome timelines"):
        "first open selects outcome=bounced; bounces are rare (0.6% of recipients) but may show up",
    ("watchtower-flows", "Bounces by sender and class"): "bounces are rare early in the run; may show up",
    ("watchtower-flows", "Complaint ratio by sender × ISP (1 day)"):
        "the daily rule needs deliveries to an FBL provider per sender x ISP; may show up",
    ("watchtower-flows", "Hard-bounce ratio by sender (1 hour)"): "hard bounces are rare early in the run",
    ("watchtower-flows", "Auth failures by sender × ISP (15 minutes)"): "no authentication failure in this scenario",
    ("watchtower-vmta", "Bounces by ISP and class: $vmta"): "a single VMTA's bounces are rare early in the run",
    ("watchtower-vmta", "Success ratio against the same hour a week ago: $vmta"):
        "the scenario's traffic starts minutes before; a week ago there was none to compare with",
    ("watchtower-incidents", "Other alerts firing"):
        "every alert of this scenario is about one VMTA x ISP; a pool's or sender's may show up",
}
ALLOWED_EMPTY |= {(uid, "variable: cluster"): "one site: no series has a `cluster` label (All, `.*`, reads them all)"
                  for uid in REPO_DASH}
MUST_LIGHT = {  # panels this incident must light up, whatever else is allowed
    ("watchtower-incidents", "Active incidents"), ("watchtower-incidents", "Alert headlines (Alertmanager)"),
    ("watchtower-incidents", "annotation: Firing alerts"), ("watchtower-warroom", "VMTA × ISP"),
    ("watchtower-vmta", "Why: top replies for $vmta × $isp"), ("watchtower-overview", "Exporter up"),
    ("watchtower-overview", "Complaints per second"),
}


def link_vars(dashboard_url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(dashboard_url)
    uid = re.match(r"/d/([\w-]+)/", parts.path).group(1)  # type: ignore[union-attr]
    return uid, {k.removeprefix("var-"): v for k, v in parse_qs(parts.query).items() if k.startswith("var-")}


@pytest.fixture(scope="module")
def live(gmail_throttle: Pipeline) -> dict[str, list[Result]]:
    """dashboard (or `uid@alert-link`) -> the result of every target, run once for all the checks."""
    stack, wt = gmail_throttle.stack, gmail_throttle.wt
    # The Watchtower base URL ends in `/`, as it may in a provisioned Infinity data source: the
    # queries then ask for `//api/v1/...` (Infinity concatenates), which must still answer.
    sources = {"infinity": wt.url + "/", "alertmanager": stack.am_url + "/api/v2/alerts"}  # (as provisioned)
    g = Grafana(stack.prom_url, sources, scrape_interval=1.0,
                now=gmail_throttle.critical_at, record_time=gmail_throttle.record_time)
    try:
        out = {uid: g.run(path) for uid, path in REPO_DASH.items()}
        assert gmail_throttle.critical is not None
        uid, link = link_vars(gmail_throttle.critical["annotations"]["dashboard_url"])
        out[f"{uid}@alert-link"] = g.run(REPO_DASH[uid], link=link)
        # the forensics lookups with the keys of a timeline the search panel listed, as an operator types them
        listed = [t for r in out["watchtower-forensics"] if r.panel == "Latest $outcome timelines"
                  for t in r.frames or [] if t.get("message_id") and t.get("job_id")]
        if not listed:  # no bounce yet: deferred timelines are plentiful in this scenario
            listed = [t for r in g.run(REPO_DASH["watchtower-forensics"], link={"outcome": ["deferred"]})
                      if r.panel == "Latest $outcome timelines" for t in r.frames or []
                      if t.get("message_id") and t.get("job_id")]
        tl = listed[0]
        out["watchtower-forensics@typed-keys"] = g.run(REPO_DASH["watchtower-forensics"], link={
            "message_id": [tl["message_id"]], "job_id": [tl["job_id"]], "rcpt": [tl["rcpt"]]})
    finally:
        g.close()
    report = []
    for name, results in out.items():
        for title, status in panel_status(results).items():
            report.append(f"{name:36} {status:6} {title}")
    print("\n".join(report))
    Path("/tmp/watchtower-panels-live.txt").write_text("\n".join(report))
    return out


def panel_status(results: list[Result]) -> dict[str, str]:
    """Per panel: error if a target errored, data if any target returned data, else empty."""
    by_panel: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_panel[r.panel].append(r)
    status = {}
    for title, rs in by_panel.items():
        if any(r.status == "error" for r in rs):
            status[title] = "error"
        else:
            status[title] = "data" if any(r.status == "data" for r in rs) else "empty"
    return status


def test_every_target_and_variable_query_runs_without_error(live: dict[str, list[Result]]) -> None:
    errors = [f"{r.dashboard} / {r.panel} / {r.ref}: {r.detail} <- {r.query[:300]}"
              for results in live.values() for r in results if r.status == "error"]
    assert errors == []
    assert set(live) >= set(REPO_DASH) and sum(len(v) for v in live.values()) > 150
    variables = {(r.dashboard, r.panel): r.series for rs in live.values() for r in rs if r.kind == "variable"}
    # One site, no `cluster` external label: every cluster list is empty, and its All (`.*`) reads every series, so
    # the panels below have their data ...
    clusters = {k: v for k, v in variables.items() if k[1] == "variable: cluster"}
    assert clusters and not any(clusters.values()), clusters
    # ... and every job, instance, pool, vmta, isp, sender list is filled
    assert all(v for k, v in variables.items() if k not in clusters), variables


def test_panels_the_incident_should_light_up_have_data(live: dict[str, list[Result]]) -> None:
    empty = []
    for name, results in live.items():
        uid = name.split("@")[0]
        for title, status in panel_status(results).items():
            if status == "empty" and ((uid, title) in MUST_LIGHT or (uid, title) not in ALLOWED_EMPTY):
                empty.append(f"{name} / {title}")
    assert empty == []


def _rows(live: dict[str, list[Result]], name: str, title: str) -> list[Result]:
    rs = [r for r in live[name] if r.panel == title]
    assert rs, title
    return rs


def test_incidents_dashboard_shows_the_gmail_throttle(live: dict[str, list[Result]]) -> None:
    rows = merge_table(_rows(live, "watchtower-incidents", "Active incidents"),
                       ["severity", "headline", "alertname", "instance", "vmta", "isp", "runbook"])
    print(json.dumps(rows, indent=1))
    # one row per incident: the warning twin of the critical alert is left out, as Alertmanager does
    assert [(r["severity"], r["headline"], r["alertname"], r["runbook"]) for r in rows] == [
        ("critical", "Gmail is throttling vmta-03", "PmtaIspThrottling", "pmtaispthrottling")]
    row = rows[0]
    assert row["Value #A"] > 0  # active for
    assert 0 <= row["Value #B"] < 0.7  # success
    assert row["Value #C"] > 0.3  # throttled share above the alert threshold
    assert row["Value #D"] > 10_000  # queued: the critical condition
    assert row.get("Value #E", 0) >= 0  # time to drain (absent when not draining at all)
    (am,) = _rows(live, "watchtower-incidents", "Alert headlines (Alertmanager)")
    heads = [a["annotations"]["description"] for a in am.frames
             if a["labels"]["alertname"] == "PmtaIspThrottling"]
    print("\n".join(heads))
    assert len(heads) == 1 and heads[0].startswith("Gmail is throttling vmta-03: ")  # the warning is inhibited


def test_exporter_up_shows_only_the_watchtower_targets(live: dict[str, list[Result]]) -> None:
    (up,) = _rows(live, "watchtower-overview", "Exporter up")
    assert [s["metric"]["job"] for s in up.frames] == ["watchtower"]  # not the `prometheus` job beside it


def test_absent_counters_read_0(live: dict[str, list[Result]]) -> None:
    (complaints,) = _rows(live, "watchtower-overview", "Complaints per second")
    assert complaints.status == "data" and complaints.frames[0]["values"]


def test_a_single_isp_problem_turns_the_vmta_red(live: dict[str, list[Result]]) -> None:
    def last(title: str, name: str = "watchtower-vmta") -> float:
        (r,) = _rows(live, name, title)
        return float(r.frames[0]["values"][-1][1])

    assert last("VMTAs throttled over 30% at an ISP") == 1
    (hist,) = _rows(live, "watchtower-vmta", "Throttled share by VMTA (worst ISP)")
    worst = {s["metric"]["vmta"]: float(s["values"][-1][1]) for s in hist.frames}
    assert worst["vmta-03"] > 0.3 and all(v < 0.3 for k, v in worst.items() if k != "vmta-03")
    (grid,) = _rows(live, "watchtower-warroom", "VMTA × ISP")
    cells = {(s["metric"]["vmta"], s["metric"]["isp"]): float(s["value"][1]) for s in grid.frames}
    assert cells[("vmta-03", "gmail")] == 3 and cells[("vmta-03", " worst")] == 3
    # Small cells may flicker to ALERT (a 10-minute window of ~50 attempts); none other is CRIT.
    others = {k: v for k, v in cells.items() if k[0] != "vmta-03" and v >= 3}
    assert others == {}, _rows(live, "watchtower-warroom", "Worst cells")[0].frames


def test_the_vmta_board_puts_the_worst_vmta_first_by_the_war_rooms_level(live: dict[str, list[Result]]) -> None:
    """The board sorted by throttled share alone, so a blocked VMTA (bounces, no throttling) sank to the bottom
    of 200 rows. It sorts by the level of the VMTA's worst cell, block included, on every row."""
    board = json.loads(REPO_DASH["watchtower-vmta"].read_text())
    (panel,) = [p for p in board["panels"] if p.get("title") == "VMTA board"]
    names = {o["matcher"]["options"]: {q["id"]: q["value"] for q in o["properties"]}
             for o in panel["fieldConfig"]["overrides"]}
    assert panel["options"]["sortBy"] == [{"desc": True, "displayName": names["Value #K"]["displayName"]}]
    rows = merge_table(_rows(live, "watchtower-vmta", "VMTA board"), ["instance", "vmta", "vmta_pool"])
    assert rows and all("Value #K" in r for r in rows), rows
    (grid,) = _rows(live, "watchtower-warroom", "VMTA × ISP")
    worst = {s["metric"]["vmta"]: float(s["value"][1]) for s in grid.frames if s["metric"]["isp"] == " worst"}
    assert {r["vmta"]: r["Value #K"] for r in rows} == {v: worst[v] for v in {r["vmta"] for r in rows}}
    top = max(rows, key=lambda r: r["Value #K"])
    assert (top["vmta"], top["Value #K"]) == ("vmta-03", 3)


def test_the_alert_link_shows_the_replies_behind_it(live: dict[str, list[Result]]) -> None:
    (replies,) = _rows(live, "watchtower-vmta@alert-link", "Why: top replies for $vmta × $isp")
    assert "vmta=vmta-03&pool=.*&isp=gmail&" in replies.query  # the link leaves the pool at All
    top = replies.frames[0]
    assert (top["vmta"], top["isp"], top["response_class"]) == ("vmta-03", "gmail", "throttled")
    assert "4.7.28" in top["reply"] and "<ip>" in top["reply"] and top["count"] > 100


def test_forensics_lookups_find_what_the_search_listed(live: dict[str, list[Result]]) -> None:
    status = panel_status(live["watchtower-forensics@typed-keys"])
    for title in ("Recipients of message $message_id", "Events of message $message_id",
                  "Timeline of $rcpt in job $job_id"):
        assert status[title] == "data", title


# --- audit: what an operator does next -------------------------------------------------------------------


@pytest.fixture(scope="module")
def filtered(gmail_throttle: Pipeline, live: dict[str, list[Result]]) -> dict[str, list[Result]]:
    """The incidents page filtered on the incident's ISP, and on another ISP that has traffic and no alert."""
    stack, wt = gmail_throttle.stack, gmail_throttle.wt
    isps = next(r.frames for r in live["watchtower-incidents"] if r.panel == "variable: isp")
    alerted = {s["metric"].get("isp") for s in stack.query('max_over_time(ALERTS{vmta!="", isp!=""}[3h])')}
    other = next(i for i in isps if i not in alerted)
    sources = {"infinity": wt.url + "/", "alertmanager": stack.am_url + "/api/v2/alerts"}  # (as provisioned)
    g = Grafana(stack.prom_url, sources, scrape_interval=1.0,
                now=gmail_throttle.critical_at, record_time=gmail_throttle.record_time)
    try:
        return {isp: g.run(REPO_DASH["watchtower-incidents"], link={"isp": [isp]}) for isp in ("gmail", other)}
    finally:
        g.close()


def test_incidents_follow_the_isp_filter(filtered: dict[str, list[Result]]) -> None:
    cells = ("Active incidents", "Success ratio of affected cells", "Throttled share of affected cells",
             "Queued recipients of affected cells")
    for isp, results in filtered.items():
        status = panel_status(results)
        for title in cells:
            assert status[title] == ("data" if isp == "gmail" else "empty"), (isp, title)
        rows = merge_table(_rows({isp: results}, isp, "Active incidents"), ["alertname", "vmta", "isp"])
        assert {r["isp"] for r in rows} <= {isp}, rows


def test_worst_cells_lists_only_the_worst_cells(live: dict[str, list[Result]]) -> None:
    """Grafana's merge is an outer join: every column must stay on the rows the Level column ranked."""
    results = _rows(live, "watchtower-warroom", "Worst cells")
    rows = merge_table(results, ["instance", "vmta", "isp"])
    ranked = next(r for r in results if r.ref == "A")
    assert 0 < len(rows) <= 25 and len(rows) == len(ranked.frames)
    assert all("Value #A" in r for r in rows), [r for r in rows if "Value #A" not in r][:3]


def test_affected_cells_are_shown_before_their_alert_fired(gmail_throttle: Pipeline,
                                                           live: dict[str, list[Result]]) -> None:
    """The point of "over time" is the lead-up: the cell is picked over the whole range, not step by step."""
    first_firing = min(float(s["value"][1]) for s in gmail_throttle.stack.query(
        'min_over_time(timestamp(ALERTS{alertstate="firing", vmta="vmta-03", isp="gmail"})[1h:1s])'))
    for title in ("Success ratio of affected cells", "Throttled share of affected cells"):
        (r,) = _rows(live, "watchtower-incidents", title)
        (series,) = [s for s in r.frames if (s["metric"]["vmta"], s["metric"]["isp"]) == ("vmta-03", "gmail")]
        assert float(series["values"][0][0]) < first_firing, title


def test_no_panel_plots_nan(live: dict[str, list[Result]]) -> None:
    """NaN (a quantile of an idle window, 0/0) reads "NaN" in legends and tooltips: a panel leaves it out."""
    nan = set()
    for name, results in live.items():
        for r in results:
            if r.kind not in ("prometheus", "annotation") or not r.frames:
                continue
            for s in r.frames:
                samples = [s["value"]] if "value" in s else s.get("values", [])
                if any(v[1] == "NaN" for v in samples):
                    nan.add(f"{name} / {r.panel} / {r.ref} {s['metric']}")
    assert sorted(nan) == []


def test_legends_name_labels_the_series_carry(live: dict[str, list[Result]]) -> None:
    """A `{{label}}` the query aggregated away prints as nothing: every series must carry what its legend names."""
    legends = {}
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        stack = list(dash["panels"])
        while stack:
            p = stack.pop()
            stack += p.get("panels", [])
            for t in p.get("targets", []):
                if t.get("format") == "time_series" and "{{" in t.get("legendFormat", ""):
                    legends[(dash["uid"], p["title"], t["refId"])] = re.findall(r"\{\{\s*(\w+)\s*\}\}",
                                                                                 t["legendFormat"])
    missing, checked = [], 0
    for name, results in live.items():
        for r in results:
            want = legends.get((name.split("@")[0], r.panel, r.ref))
            for s in (r.frames or []) if want else []:
                checked += 1
                if [x for x in want if not s["metric"].get(x)]:
                    missing.append(f"{name} / {r.panel} / {r.ref}: {want} <- {s['metric']}")
    assert checked > 100 and missing == []
