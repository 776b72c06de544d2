"""Generate grafana/dashboards/*.json, the five provisioned Watchtower dashboards.

    python grafana/build.py           # rewrite the JSON files
    python grafana/build.py --check   # exit 1 if a committed file differs from what this generates

Edit this file, not the JSON: tests/test_dashboards.py fails when the two drift apart. Ratios,
rates and delay quantiles come from rules/recording.yaml where a rule exists (`vmta_isp:` rules
keep `instance`, so the host filter still works); raw counters go through rate($__rate_interval).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from dashlib import (
    BOUNCE,
    COMPLAINT,
    DEFERRAL,
    INFINITY,
    INSTANCE,
    ISP,
    JOB,
    POOL,
    SENDER,
    SUCCESS,
    THROTTLE,
    UP_DOWN,
    VMTA,
    Grid,
    Json,
    bargauge,
    bounce_share,
    column,
    complaint_ratio,
    custom_var,
    dashboard,
    datasource_var,
    deferral_ratio,
    heatmap,
    infinity,
    job_instance_vars,
    link_column,
    node_graph,
    prom,
    quantile,
    query_var,
    queue_by_pool,
    rate,
    ratio,
    sel,
    sel_cluster,
    stat,
    status_history,
    steps,
    success_ratio,
    sum_by,
    table,
    table_query,
    text,
    textbox_var,
    throttled_ratio,
    timeseries,
)

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
ATTEMPTS = "vmta_isp:pmta_attempts:rate10m"
DELAY_BUCKETS = "vmta_isp:pmta_delivery_delay_seconds_bucket:rate5m"
PER_S = "Per second over $__rate_interval."
RULE_10M = "From the 10-minute recording rules (rules/recording.yaml), the same numbers the alerts use."
CLUSTER = "Cluster-wide recording rule (summed over instances): the Instance filter does not apply."
ATTEMPTS_DEF = "Attempts = delivered + bounced + deferred attempts (d + b + t/tq records)."
QUEUE_JOIN = ("Queue gauges carry only {vmta, isp}; each VMTA's queue is attributed to the pool that carried "
              "most of its attempts in the last 10 minutes.")
PROMETHEUS_VAR = datasource_var()
INFINITY_VAR = datasource_var("infinity", "yesoreyeram-infinity-datasource", "Watchtower API (Infinity)")


def overview() -> Json:
    g = Grid()
    g.row("Delivery outcomes")
    for title, metric, what in (
        ("Delivered", "pmta_delivered_total", "Recipients delivered (d records)."),
        ("Bounced", "pmta_bounced_total", "Recipients bounced by PMTA (b records)."),
        ("Deferred", "pmta_deferred_total", "Deferred delivery attempts (t and tq records)."),
        ("Complaints", "pmta_complaints_total", "Feedback-loop complaints (f records), all feedback types."),
    ):
        g.add(stat(f"{title} per second", f"{what} {PER_S}", [prom(sum_by("", rate(metric, ISP)))], "cps"), 4, 4)
    g.add(stat("Success ratio", f"Delivered / attempts over 10 minutes. {ATTEMPTS_DEF} {RULE_10M}",
               [prom(success_ratio("", ISP))], "percentunit", thresholds=SUCCESS), 4, 4)
    g.add(stat("Complaint ratio", "User complaints (FBL, excluding not-spam and auth-failure reports) / delivered, "
               f"{PER_S} Gmail and Yahoo act at 0.1% and 0.3% per day: see the daily per-ISP panel below.",
               [prom(complaint_ratio("", ISP))], "percentunit", thresholds=COMPLAINT), 4, 4)
    outcomes = f"Every record type Watchtower counts, summed over VMTAs and the selected ISPs (r has no ISP). {PER_S}"
    g.add(timeseries("Outcomes per second", outcomes, [
        prom(sum_by("", rate("pmta_delivered_total", ISP)), "delivered (d)"),
        prom(sum_by("", rate("pmta_bounced_total", ISP)), "bounced (b)"),
        prom(sum_by("", rate("pmta_deferred_total", ISP)), "deferred (t, tq)"),
        prom(sum_by("", rate("pmta_remote_bounced_total", ISP)), "remote bounced (rb)"),
        prom(sum_by("", rate("pmta_complaints_total", ISP)), "complaints (f)"),
        prom(sum_by("", rate("pmta_received_total")), "received (r)"),
    ], "cps"), 12, 8)
    g.add(timeseries("Success ratio by ISP", f"Delivered / attempts per mailbox provider. {RULE_10M}",
                     [prom(success_ratio("isp", ISP), "{{isp}}")], "percentunit", ratio_axis=True), 12, 8)

    g.row("Deferrals, bounces and complaints")
    g.add(timeseries("Deferrals by class", "Deferred attempts per second by response class. throttled, reputation "
                     f"and blocklisted are provider-level signals; mailbox_full and recipient_rate are not. {PER_S}",
                     [prom(sum_by("class", rate("pmta_deferred_total", ISP)), "{{class}}")], "cps", stack=True), 12, 8)
    g.add(timeseries("Bounces by category", f"Recipients bounced by PMTA per second, by PMTA bounceCat. {PER_S}",
                     [prom(sum_by("category", rate("pmta_bounced_total", ISP)), "{{category}}")], "cps",
                     stack=True), 12, 8)
    g.add(timeseries("Remote bounces by class", "Asynchronous bounces from remote servers (rb records) per second, "
                     f"by response class. {PER_S}",
                     [prom(sum_by("class", rate("pmta_remote_bounced_total", ISP)), "{{class}}")], "cps", stack=True),
          12, 8)
    g.add(timeseries("Complaints by feedback type", f"FBL reports per second by ARF Feedback-Type. {PER_S}",
                     [prom(sum_by("feedback_type", rate("pmta_complaints_total", ISP)), "{{feedback_type}}")], "cps",
                     stack=True), 12, 8)

    g.row("ISPs")
    g.add(bargauge("Top ISPs by attempts", f"The 10 busiest mailbox providers, attempts per second. {RULE_10M}",
                   [prom(f"topk(10, {sum_by('isp', sel(ATTEMPTS, ISP))})", "{{isp}}", instant=True)], "cps"), 8, 9)
    g.add(bargauge("Throttled share by ISP", "Share of attempts deferred as throttled or reputation, worst 10 "
                   f"providers. The throttling alert fires above 30% per VMTA. {RULE_10M}",
                   [prom(f"topk(10, {throttled_ratio('isp', ISP)})", "{{isp}}", instant=True)], "percentunit",
                   thresholds=THROTTLE), 8, 9)
    g.add(bargauge("Complaint ratio by ISP (1 day)", "Daily user complaints / delivered per provider (warn 0.1%, "
                   f"critical 0.3%). {CLUSTER}",
                   [prom(sel_cluster("isp:pmta_complaints:ratio_rate1d", ISP), "{{isp}}", instant=True)], "percentunit",
                   thresholds=COMPLAINT), 8, 9)

    g.row("Latency and queues")
    g.add(timeseries("Delivery delay p50 / p95", "Time from queueing to delivery of delivered recipients, over "
                     "5 minutes, from summed histogram buckets (rules/recording.yaml).", [
                         prom(quantile(0.5, sel(DELAY_BUCKETS, ISP)), "p50"),
                         prom(quantile(0.95, sel(DELAY_BUCKETS, ISP)), "p95"),
                     ], "s"), 12, 8)
    g.add(timeseries("Delivery delay p95 by ISP", "95th percentile queue-to-delivery time per mailbox provider, "
                     "over 5 minutes.", [prom(quantile(0.95, sel(DELAY_BUCKETS, ISP), "isp"), "{{isp}}")], "s"), 12, 8)
    g.add(timeseries("Deferral age p50 / p99", "Age of the message at each deferral: how long deferred mail has "
                     f"already waited (the 'oldest message' signal). {PER_S}", [
                         prom(quantile(0.5, rate("pmta_deferral_age_seconds_bucket", ISP)), "p50"),
                         prom(quantile(0.99, rate("pmta_deferral_age_seconds_bucket", ISP)), "p99"),
                     ], "s"), 12, 8)
    g.add(timeseries("Queued recipients", "Recipients queued on the PMTA hosts (/status, by delivery type) and the "
                     "sum of the per-queue gauges; a gap between them means queues beyond PMTA's top-N list.", [
                         prom(sum_by("type", sel("pmta_status_queue_recipients")), "host: {{type}}"),
                         prom(sum_by("", sel("pmta_queue_recipients", ISP)), "per-queue gauges"),
                     ], "short"), 12, 8)
    g.add(timeseries("Queued recipients by ISP", "Recipients queued per mailbox provider (per-queue gauges).",
                     [prom(sum_by("isp", sel("pmta_queue_recipients", ISP)), "{{isp}}")], "short", stack=True), 12, 8)
    g.add(timeseries("Queues in backoff and paused", "Queues PMTA has put in backoff mode (retrying slowly after "
                     "errors) and queues paused by an operator.", [
                         prom(sum_by("isp", sel("pmta_queue_backoff", ISP)), "backoff {{isp}}"),
                         prom(sum_by("isp", sel("pmta_queue_paused", ISP)), "paused {{isp}}"),
                     ], "short", stack=True), 12, 8)
    g.add(stat("Outbound connections", "Open outbound SMTP connections on the PMTA hosts (/status).",
               [prom(sum_by("", sel("pmta_status_connections", 'direction="out"')))], "short"), 6, 4)
    g.add(stat("Inbound connections", "Open inbound SMTP connections (injection) on the PMTA hosts (/status).",
               [prom(sum_by("", sel("pmta_status_connections", 'direction="in"')))], "short"), 6, 4)
    g.add(stat("Queued domains", "Domains with queued mail on the PMTA hosts (/status).",
               [prom(sum_by("", sel("pmta_status_queue_domains")))], "short"), 6, 4)
    g.add(stat("Spool files", "Spool files in use on the PMTA hosts (/status).",
               [prom(sum_by("", sel("pmta_status_spool_files")))], "short"), 6, 4)

    g.row("Watchtower health")
    g.add(stat("Exporter up", "Prometheus' scrape of each Watchtower instance (the `up` series).",
               [prom(sel("up"), "{{instance}}")], "none", thresholds=steps(("red", None), ("green", 1)),
               mappings=UP_DOWN, color_mode="background", graph=False), 4, 4)
    g.add(stat("PMTA API up", "1 if Watchtower's last poll of PMTA's HTTP management API succeeded.",
               [prom(sel("watchtower_pmta_api_up"), "{{instance}}")], "none",
               thresholds=steps(("red", None), ("green", 1)), mappings=UP_DOWN, color_mode="background",
               graph=False), 4, 4)
    g.add(stat("Queue coverage", "Share of the host's queued recipients (/status) seen in the per-VMTA queue "
               "gauges. Below 100% the VMTA and ISP queue panels undercount.",
               [prom(sel("watchtower_pmta_queue_coverage_ratio"), "{{instance}}")], "percentunit",
               thresholds=steps(("red", None), ("orange", 0.8), ("green", 0.95))), 4, 4)
    g.add(stat("Newest record age", "Seconds since the timeLogged of the newest record read, per instance. "
               "It grows when PMTA stops logging or Watchtower stops tailing.",
               [prom(f"time() - max by (instance) ({sel('watchtower_last_record_timestamp_seconds')})",
                     "{{instance}}")], "s",
               thresholds=steps(("green", None), ("yellow", 300), ("red", 900))), 4, 4)
    g.add(stat("Checkpoint age", "Seconds since offsets and counters were last committed to the state database.",
               [prom(f"time() - max by (instance) ({sel('watchtower_last_checkpoint_timestamp_seconds')})",
                     "{{instance}}")], "s", thresholds=steps(("green", None), ("yellow", 120), ("red", 600))), 4, 4)
    g.add(stat("Files followed", "Accounting files currently followed, per instance.",
               [prom(sum_by("instance", sel("watchtower_files_followed")), "{{instance}}")], "short"), 4, 4)
    g.add(timeseries("Records read per second by source", f"Valid records read from each configured source. {PER_S}",
                     [prom(sum_by("instance, source", rate("watchtower_records_read_total")),
                           "{{instance}} {{source}}")], "cps"), 12, 8)
    g.add(timeseries("Parse errors per second", f"Lines that could not be used, by source and reason. {PER_S}",
                     [prom(sum_by("instance, source, reason", rate("watchtower_parse_errors_total")),
                           "{{instance}} {{source}} {{reason}}")], "cps"), 12, 8)
    g.add(timeseries("Bytes behind", "Bytes written to followed files but not yet read: the tailing backlog.",
                     [prom(sum_by("instance, source", sel("watchtower_bytes_behind")), "{{instance}} {{source}}")],
                     "bytes"), 12, 8)
    g.add(timeseries("Errors per second", f"Failed file opens/reads, failed PMTA API requests and failed state "
                     f"commits. {PER_S}", [
                         prom(sum_by("instance, reason", rate("watchtower_read_errors_total")),
                              "read {{reason}} {{instance}}"),
                         prom(sum_by("instance, reason", rate("watchtower_pmta_api_errors_total")),
                              "api {{reason}} {{instance}}"),
                         prom(sum_by("instance", rate("watchtower_checkpoint_errors_total")),
                              "checkpoint {{instance}}"),
                     ], "cps"), 12, 8)
    g.add(timeseries("PMTA API poll duration", "Duration of the last complete poll of PMTA's management API.",
                     [prom(sel("watchtower_pmta_api_poll_duration_seconds"), "{{instance}}")], "s"), 8, 8)
    g.add(timeseries("Label overflow per second", "Records whose vmta, vmta_pool or sender was replaced by "
                     f"overflow/other because a label cap was reached: raise the cap or list the values. {PER_S}",
                     [prom(sum_by("instance, label", rate("watchtower_label_overflow_total")),
                           "{{instance}} {{label}}")], "cps"), 8, 8)
    g.add(timeseries("Series per record metric", "Series currently held per record metric family (cardinality).",
                     [prom(sum_by("metric", sel("watchtower_metric_series")), "{{metric}}")], "short"), 8, 8)
    return dashboard("watchtower-overview", "PMTA Watchtower / Global health",
                     "Delivery outcomes, deferral classes, ISPs, latency, queues and Watchtower's own health.",
                     [PROMETHEUS_VAR, *job_instance_vars(), isp_var()], g)


def isp_var(*matchers: str) -> Json:
    selector = ", ".join((JOB, INSTANCE, *matchers))
    return query_var("isp", "ISP", f"label_values({ATTEMPTS}{{{selector}}}, isp)", description="Mailbox provider.")


def vmta_board() -> Json:
    f = (POOL, VMTA, ISP)
    by = "instance, vmta"
    g = Grid()
    g.row("Board")
    g.add(stat("VMTAs", f"VMTAs (per host) with delivery attempts in the last 10 minutes. {RULE_10M}",
               [prom(f"count({sum_by(by, sel(ATTEMPTS, *f))})")], "short", graph=False), 4, 4)
    g.add(stat("VMTAs throttled over 30%", "VMTAs where more than 30% of attempts were deferred as throttled or "
               f"reputation (the throttling alert threshold). {RULE_10M}",
               [prom(f"count({throttled_ratio(by, *f)} > 0.3) or vector(0)")], "short",
               thresholds=steps(("green", None), ("red", 1)), color_mode="background"), 4, 4)
    g.add(stat("VMTAs below 50% success", f"VMTAs delivering fewer than half of their attempts. {RULE_10M}",
               [prom(f"count({success_ratio(by, *f)} < 0.5) or vector(0)")], "short",
               thresholds=steps(("green", None), ("red", 1)), color_mode="background"), 4, 4)
    g.add(stat("Queued recipients", f"Recipients queued for the selected VMTAs and ISPs. {QUEUE_JOIN}",
               [prom(queue_by_pool("pmta_queue_recipients", "", (VMTA, ISP), (POOL, VMTA)))], "short"), 4, 4)
    g.add(stat("Queues in backoff", "Queues of the selected VMTAs and ISPs in PMTA backoff mode.",
               [prom(queue_by_pool("pmta_queue_backoff", "", (VMTA, ISP), (POOL, VMTA)))], "short",
               thresholds=steps(("green", None), ("orange", 1))), 4, 4)
    g.add(stat("Paused queues", "Queues of the selected VMTAs and ISPs paused by an operator.",
               [prom(queue_by_pool("pmta_queue_paused", "", (VMTA, ISP), (POOL, VMTA)))], "short",
               thresholds=steps(("green", None), ("blue", 1))), 4, 4)
    g.add(status_history("Success ratio by VMTA", "One row per VMTA, one cell per interval: delivered / attempts "
                         f"for the selected ISPs. Red below 50%, orange below 80%, yellow below 95%. {RULE_10M}",
                         [prom(success_ratio(by, *f), "{{vmta}} {{instance}}")], "percentunit", SUCCESS), 12, 18)
    g.add(status_history("Throttled share by VMTA", "One row per VMTA: share of attempts deferred as throttled or "
                         "reputation for the selected ISPs. Orange from 30% (the alert threshold), red from 50%. "
                         + RULE_10M, [prom(throttled_ratio(by, *f), "{{vmta}} {{instance}}")], "percentunit",
                         THROTTLE), 12, 18)
    keys = "instance, vmta, vmta_pool"
    drill = ("/d/watchtower-vmta/vmta?${__url_time_range}&${datasource:queryparam}&${job:queryparam}"
             "&var-instance=${__data.fields.instance}&var-vmta=${__data.fields.vmta}&${isp:queryparam}")
    g.add(table("VMTA board", "Every VMTA with attempts in the last 10 minutes for the selected ISPs; cells are "
                f"coloured by the same thresholds as the status history. Click a VMTA to drill down. {RULE_10M} "
                + QUEUE_JOIN, [
                    table_query(success_ratio(keys, *f)),
                    table_query(sum_by(keys, sel("vmta_isp:pmta_delivered:rate10m", *f))),
                    table_query(deferral_ratio(keys, *f)),
                    table_query(throttled_ratio(keys, *f)),
                    table_query(bounce_share(keys, *f)),
                    table_query(queue_by_pool("pmta_queue_recipients", keys, (VMTA, ISP), (POOL, VMTA))),
                    table_query(queue_by_pool("pmta_queue_backoff", keys, (VMTA, ISP), (POOL, VMTA))),
                    table_query(queue_by_pool("pmta_queue_connections", keys, (VMTA, ISP), (POOL, VMTA))),
                ], ["instance", "vmta", "vmta_pool"], [
                    column("A", "Success", "percentunit", SUCCESS, 1),
                    column("B", "Delivered/s", "cps", None, 2),
                    column("C", "Deferral share", "percentunit", DEFERRAL, 1),
                    column("D", "Throttled share", "percentunit", THROTTLE, 1),
                    column("E", "Bounce share", "percentunit", BOUNCE, 1),
                    column("F", "Queued recipients", "short", steps(("green", None), ("yellow", 10000),
                                                                    ("red", 50000)), 0),
                    column("G", "Backoff queues", "short", steps(("green", None), ("orange", 1)), 0),
                    column("H", "Connections", "short", None, 0),
                    link_column("vmta", "Drill down into ${__data.fields.vmta}", drill),
                ], sort_by="Throttled share"), 24, 14)

    g.row("Drilldown: $vmta", collapsed=True, repeat="vmta")
    d = (VMTA, ISP)
    g.add(timeseries("Success ratio by ISP: $vmta", f"Delivered / attempts of this VMTA per ISP. {RULE_10M}",
                     [prom(success_ratio("isp", *d), "{{isp}}")], "percentunit", ratio_axis=True,
                     thresholds=SUCCESS), 8, 8)
    g.add(timeseries("Throttled share by ISP: $vmta", "Share of this VMTA's attempts deferred as throttled or "
                     f"reputation, per ISP. {RULE_10M}", [prom(throttled_ratio("isp", *d), "{{isp}}")],
                     "percentunit", ratio_axis=True, thresholds=THROTTLE), 8, 8)
    g.add(timeseries("Delivered per second by ISP: $vmta", f"Recipients delivered by this VMTA. {PER_S}",
                     [prom(sum_by("isp", rate("pmta_delivered_total", *d)), "{{isp}}")], "cps", stack=True), 8, 8)
    g.add(timeseries("Deferrals by ISP and class: $vmta", f"Deferred attempts of this VMTA by response class. {PER_S}",
                     [prom(sum_by("isp, class", rate("pmta_deferred_total", *d)), "{{isp}} {{class}}")], "cps",
                     stack=True), 8, 8)
    g.add(timeseries("Bounces by ISP and class: $vmta", f"Recipients bounced by this VMTA by response class. {PER_S}",
                     [prom(sum_by("isp, class", rate("pmta_bounced_total", *d)), "{{isp}} {{class}}")], "cps",
                     stack=True), 8, 8)
    g.add(timeseries("Delivery delay p95 by ISP: $vmta", "95th percentile queue-to-delivery time of this VMTA, "
                     "over 5 minutes.", [prom(quantile(0.95, sel(DELAY_BUCKETS, *d), "isp"), "{{isp}}")], "s"), 8, 8)
    g.add(timeseries("Queued recipients by ISP: $vmta", "Recipients queued on this VMTA per ISP (PMTA API).",
                     [prom(sum_by("isp", sel("pmta_queue_recipients", *d)), "{{isp}}")], "short", stack=True), 8, 8)
    g.add(timeseries("Connections and backoff by ISP: $vmta", "Open outbound connections and queues in backoff "
                     "mode on this VMTA per ISP (PMTA API).", [
                         prom(sum_by("isp", sel("pmta_queue_connections", *d)), "{{isp}} connections"),
                         prom(sum_by("isp", sel("pmta_queue_backoff", *d)), "{{isp}} backoff queues"),
                     ], "short"), 8, 8)
    g.add(timeseries("Deferral share by ISP: $vmta", f"Share of this VMTA's attempts deferred, all classes. {RULE_10M}",
                     [prom(deferral_ratio("isp", *d), "{{isp}}")], "percentunit", ratio_axis=True,
                     thresholds=DEFERRAL), 8, 8)
    return dashboard("watchtower-vmta", "PMTA Watchtower / Status board",
                     "Every VMTA at a glance: success and throttling status history, a colour-coded board and "
                     "per-VMTA drilldown rows (one per selected VMTA). Alerts link here with var-vmta and var-isp.",
                     [PROMETHEUS_VAR, *job_instance_vars(), *pool_vmta_isp_vars(vmta=True)], g)


def pool_vmta_isp_vars(*, vmta: bool) -> list[Json]:
    base = f"{ATTEMPTS}{{{JOB}, {INSTANCE}"
    out = [query_var("vmta_pool", "VMTA pool", f"label_values({base}}}, vmta_pool)",
                     description="PMTA vmtaPool (`none` when empty).")]
    if not vmta:
        return [*out, isp_var(POOL)]
    return [*out,
            query_var("vmta", "VMTA", f"label_values({base}, {POOL}}}, vmta)",
                      description="PMTA VirtualMTA; one drilldown row per selected VMTA."),
            isp_var(POOL, VMTA)]


def cluster() -> Json:
    f = (POOL, ISP)
    by = "vmta_pool, isp"
    g = Grid()
    g.row("Pool × ISP")
    g.add(table("Pool × ISP board", "One row per pool and ISP, cells coloured by the alert thresholds. "
                f"{ATTEMPTS_DEF} {RULE_10M} The complaint ratio is over $__rate_interval. {QUEUE_JOIN}", [
                    table_query(sum_by(by, sel(ATTEMPTS, *f))),
                    table_query(success_ratio(by, *f)),
                    table_query(deferral_ratio(by, *f)),
                    table_query(throttled_ratio(by, *f)),
                    table_query(bounce_share(by, *f)),
                    table_query(complaint_ratio(by, *f)),
                    table_query(queue_by_pool("pmta_queue_recipients", by, (ISP,), (POOL,))),
                ], ["vmta_pool", "isp"], [
                    column("A", "Attempts/s", "cps", None, 2),
                    column("B", "Success", "percentunit", SUCCESS, 1),
                    column("C", "Deferral share", "percentunit", DEFERRAL, 1),
                    column("D", "Throttled share", "percentunit", THROTTLE, 1),
                    column("E", "Bounce share", "percentunit", BOUNCE, 2),
                    column("F", "Complaint ratio", "percentunit", COMPLAINT, 3),
                    column("G", "Queued recipients", "short", steps(("green", None), ("yellow", 10000),
                                                                    ("red", 50000)), 0),
                ], sort_by="Attempts/s"), 24, 12)
    legend = "{{vmta_pool}} / {{isp}}"
    g.add(timeseries("Success ratio by pool × ISP", f"Delivered / attempts. {RULE_10M}",
                     [prom(success_ratio(by, *f), legend)], "percentunit", ratio_axis=True), 12, 9)
    g.add(timeseries("Deferral share by pool × ISP", f"Deferred attempts / attempts, all classes. {RULE_10M}",
                     [prom(deferral_ratio(by, *f), legend)], "percentunit", ratio_axis=True), 12, 9)
    g.add(timeseries("Throttled share by pool × ISP", "Attempts deferred as throttled or reputation / attempts. "
                     + RULE_10M, [prom(throttled_ratio(by, *f), legend)], "percentunit", ratio_axis=True,
                     thresholds=THROTTLE), 12, 9)
    g.add(timeseries("Bounce share by pool × ISP", f"Bounced recipients / attempts. {RULE_10M}",
                     [prom(bounce_share(by, *f), legend)], "percentunit", thresholds=BOUNCE), 12, 9)
    g.add(timeseries("Complaint ratio by pool × ISP", "User complaints (FBL) / delivered over $__rate_interval; "
                     "the daily view is on the Global health dashboard.",
                     [prom(complaint_ratio(by, *f), legend)], "percentunit", thresholds=COMPLAINT), 12, 9)
    g.add(timeseries("Delivered per second by pool", f"Recipients delivered per pool. {RULE_10M}",
                     [prom(sum_by("vmta_pool", sel("vmta_isp:pmta_delivered:rate10m", *f)), "{{vmta_pool}}")],
                     "cps", stack=True), 12, 9)

    g.row("Queues by pool")
    for title, metric, what in (
        ("Queued recipients by pool", "pmta_queue_recipients", "Recipients queued"),
        ("Queues in backoff by pool", "pmta_queue_backoff", "Queues in PMTA backoff mode"),
        ("Open connections by pool", "pmta_queue_connections", "Open outbound connections"),
    ):
        g.add(timeseries(title, f"{what} for the selected ISPs, per pool. {QUEUE_JOIN}",
                         [prom(queue_by_pool(metric, "vmta_pool", (ISP,), (POOL,)), "{{vmta_pool}}")], "short",
                         stack=True), 8, 8)

    g.row("Delivery delay by pool")
    g.add(timeseries("Delivery delay p95 by pool", "95th percentile queue-to-delivery time per pool over 5 minutes, "
                     "from summed histogram buckets.",
                     [prom(quantile(0.95, sel(DELAY_BUCKETS, *f), "vmta_pool"), "{{vmta_pool}}")], "s"), 12, 8)
    g.add(timeseries("Deferral age p99 by pool", "99th percentile age of messages at each deferral, per pool: how "
                     f"long the oldest deferred mail has waited. {PER_S}",
                     [prom(quantile(0.99, rate("pmta_deferral_age_seconds_bucket", *f), "vmta_pool"),
                           "{{vmta_pool}}")], "s"), 12, 8)
    hm = heatmap("Delivery delay: $vmta_pool", "Distribution of queue-to-delivery time of this pool (recipients per "
                 "second per delay bucket, 5-minute rates); one heatmap per selected pool.",
                 [prom(sum_by("le", sel(DELAY_BUCKETS, 'vmta_pool=~"$vmta_pool"', ISP)), "{{le}}", fmt="heatmap")],
                 "s")
    hm.update({"repeat": "vmta_pool", "repeatDirection": "h", "maxPerRow": 3})
    g.add(hm, 8, 9)
    return dashboard("watchtower-cluster", "PMTA Watchtower / Cluster by pool",
                     "Success, deferral, bounce and complaint ratios per VMTA pool × ISP, queues by pool and "
                     "delivery-delay heatmaps per pool.", [PROMETHEUS_VAR, *job_instance_vars(),
                                                           *pool_vmta_isp_vars(vmta=False)], g)


FLOWS_HELP = """\
The graph is drawn by Grafana's core **Node graph** panel from Watchtower's own HTTP endpoint
`GET /api/v1/flows?since=&until=` (nodes and edges in Node graph field names; edge thickness ∝
recipients; arcs split delivered / bounced / deferred), read through the **Infinity** data source plugin
(`yesoreyeram-infinity-datasource`), the only plugin these dashboards use. Pick the Watchtower
host in the *Watchtower API* variable: provision one Infinity data source per host, with its
URL set to `http://<host>:9469`. Everything below the graph is plain Prometheus."""


def flows() -> Json:
    f = (SENDER, ISP)
    by = "sender, isp"
    g = Grid()
    g.add(text("About this dashboard", "How the flow graph is fed and what it needs.", FLOWS_HELP), 24, 4)
    url = "/api/v1/flows?since=${__from:date:seconds}&until=${__to:date:seconds}"
    g.add(node_graph("Sender → VMTA → ISP", "Mail flow over the dashboard time range from the correlator: sending "
                     "domains, VMTAs and ISPs as nodes (main stat: recipients delivered + bounced; second: deferrals), "
                     "edges as thick as their volume. Needs the Infinity data source pointed at a Watchtower host "
                     "with the correlator enabled.",
                     [infinity(url, "nodes", "node-graph-nodes"), infinity(url, "edges", "node-graph-edges")],
                     [("arc__delivered", "green"), ("arc__bounced", "red"), ("arc__deferred", "orange")]), 24, 20)

    g.row("Senders × ISPs (Prometheus)")
    g.add(table("Sender × ISP", "One row per sending domain and ISP. Rates are per second over $__rate_interval; "
                "the daily complaint ratio and 15-minute auth failures come from cluster-wide recording rules "
                "(not filtered by Instance).", [
                    table_query(sum_by(by, rate("pmta_sender_delivered_total", *f))),
                    table_query(sum_by(by, rate("pmta_sender_bounced_total", *f))),
                    table_query(sum_by(by, rate("pmta_sender_deferred_total", *f))),
                    table_query(sum_by(by, rate("pmta_sender_complaints_total", *f))),
                    table_query(f"max by ({by}) ({sel_cluster('sender_isp:pmta_sender_complaints:ratio_rate1d', *f)})"),
                    table_query(sum_by(by, sel_cluster("sender_isp:pmta_sender_auth_failures:increase15m", *f))),
                ], ["sender", "isp"], [
                    column("A", "Delivered/s", "cps", None, 2),
                    column("B", "Bounced/s", "cps", None, 3),
                    column("C", "Deferred/s", "cps", None, 3),
                    column("D", "Complaints/s", "cps", None, 4),
                    column("E", "Complaint ratio (1d)", "percentunit", COMPLAINT, 3),
                    column("F", "Auth failures (15m)", "short", steps(("green", None), ("red", 1)), 0),
                ], sort_by="Delivered/s"), 24, 12)
    g.add(timeseries("Delivered per second by sender", f"Recipients delivered per sending domain. {PER_S}",
                     [prom(sum_by("sender", rate("pmta_sender_delivered_total", *f)), "{{sender}}")], "cps",
                     stack=True), 12, 8)
    g.add(timeseries("Deferrals by sender and class", f"Recipient deferrals per sending domain and class. {PER_S}",
                     [prom(sum_by("sender, class", rate("pmta_sender_deferred_total", *f)), "{{sender}} {{class}}")],
                     "cps", stack=True), 12, 8)
    g.add(timeseries("Bounces by sender and class", f"Recipients bounced per sending domain and class. {PER_S}",
                     [prom(sum_by("sender, class", rate("pmta_sender_bounced_total", *f)), "{{sender}} {{class}}")],
                     "cps", stack=True), 12, 8)
    g.add(timeseries("Complaint ratio by sender × ISP (1 day)", "Daily user complaints / delivered (warn 0.1%, "
                     f"critical 0.3%, Gmail and Yahoo's limits). {CLUSTER}",
                     [prom(sel_cluster("sender_isp:pmta_sender_complaints:ratio_rate1d", *f), "{{sender}} / {{isp}}")],
                     "percentunit", thresholds=COMPLAINT), 12, 8)
    g.add(timeseries("Hard-bounce ratio by sender (1 hour)", "user_unknown + mailbox_disabled + bad_domain bounces / "
                     f"outcomes per sending domain (warn 2%, critical 5%). {CLUSTER}",
                     [prom(sel_cluster("sender:pmta_sender_hard_bounced:ratio_rate1h", SENDER), "{{sender}}")],
                     "percentunit", thresholds=BOUNCE), 12, 8)
    g.add(timeseries("Auth failures by sender × ISP (15 minutes)", "SPF/DKIM/DMARC/PTR failures (deferrals and "
                     f"bounces classed auth_failure) per sending domain and ISP. {CLUSTER}",
                     [prom(sel_cluster("sender_isp:pmta_sender_auth_failures:increase15m", *f),
                           "{{sender}} / {{isp}}")],
                     "short", bars=True), 12, 8)
    return dashboard("watchtower-flows", "PMTA Watchtower / Flows sender → VMTA → ISP",
                     "Who sends what through which VMTA to which ISP: a Node graph from Watchtower's /api/v1/flows "
                     "(Infinity data source) and Prometheus panels per sending domain × ISP.", [
                         PROMETHEUS_VAR, INFINITY_VAR, *job_instance_vars(),
                         query_var("sender", "Sender",
                                   f"label_values(pmta_sender_delivered_total{{{JOB}, {INSTANCE}}}, sender)",
                                   description="Sending domain (MAIL FROM)."),
                         query_var("isp", "ISP", f"label_values(pmta_sender_delivered_total{{{JOB}, {INSTANCE}, "
                                   f"{SENDER}}}, isp)", description="Mailbox provider."),
                     ], g)


FORENSICS_HELP = """\
Watchtower keeps a per-recipient timeline (acct, transient, bounce and FBL records correlated by
message, job and recipient) in its SQLite store and serves it on the same port as `/metrics`.
Add `format=text` (or `Accept: text/plain`) for a terminal rendering instead of JSON:

```sh
# every recipient's timeline of one message (header Message-Id)
curl -s 'http://pmta-01:9469/api/v1/messages/<message_id>?format=text'
# one recipient of one job (PMTA jobId), or of one message with message_id= instead of job_id=
curl -s 'http://pmta-01:9469/api/v1/timeline?job_id=<job_id>&rcpt=<user@example.com>' | jq .
# find timelines, newest first: by rcpt, job_id, vmta, outcome, since/until (epoch, ISO 8601 or 2h)
curl -s 'http://pmta-01:9469/api/v1/search?rcpt=<user@example.com>&since=7d' | jq .
curl -s 'http://pmta-01:9469/api/v1/search?vmta=vmta-05&outcome=bounced&since=2h&limit=100' | jq .
```

The tables below make the same calls through the Infinity data source: type a message id, or a
job id and recipient, in the variables above. Every parameter and field: `docs/api.md`, or
`/docs` on a running Watchtower."""

RECIPIENT_COLUMNS = (
    ("rcpt", "Recipient", "string"), ("outcome", "Outcome", "string"), ("attempts", "Attempts", "number"),
    ("vmta", "VMTA", "string"), ("vmta_pool", "Pool", "string"), ("isp", "ISP", "string"),
    ("sender_domain", "Sender", "string"), ("job_id", "Job", "string"), ("first_seen", "First seen", "timestamp"),
    ("done_at", "Done", "timestamp"), ("complained", "Complained", "boolean"),
    ("remote_bounced", "Remote bounce", "boolean"),
)
EVENT_COLUMNS = (
    ("time", "Time", "timestamp"), ("kind", "Event", "string"), ("record_type", "Record", "string"),
    ("attempt", "Attempt", "number"), ("vmta", "VMTA", "string"), ("source_ip", "Source IP", "string"),
    ("dsn_status", "Status", "string"), ("response_class", "Class", "string"), ("dsn_diag", "Remote reply", "string"),
    ("dsn_mta", "Remote MTA", "string"), ("feedback_type", "Feedback type", "string"),
    ("source", "Read from", "string"),
)
EVENTS = "#.events|@flatten"  # GJSON: the events of every timeline, in one list


def forensics() -> Json:
    g = Grid()
    g.add(text("Looking up a message", "curl examples for Watchtower's per-message API.", FORENSICS_HELP), 24, 11)
    message = "/api/v1/messages/${message_id:percentencode}"
    g.add(table("Recipients of message $message_id", "GET /api/v1/messages/$message_id through the Infinity data "
                "source: one row per recipient with its current outcome. Enter a Message-Id above.",
                [infinity(message, "recipients", columns=RECIPIENT_COLUMNS)], [], [], datasource=INFINITY), 24, 8)
    g.add(table("Events of message $message_id", "Every correlated event (queued, deferrals, delivery, bounces, "
                "remote bounces, complaints) of every recipient of the message, oldest first per recipient.",
                [infinity(message, f"recipients.{EVENTS}", columns=EVENT_COLUMNS)], [], [], datasource=INFINITY),
          24, 10)
    g.add(table("Timeline of $rcpt in job $job_id", "GET /api/v1/timeline?job_id=&rcpt= through the Infinity data "
                "source: every event for one recipient of one job. Enter a job id and a recipient above.",
                [infinity("/api/v1/timeline?job_id=${job_id:percentencode}&rcpt=${rcpt:percentencode}",
                          f"timelines.{EVENTS}", columns=EVENT_COLUMNS)], [], [], datasource=INFINITY), 24, 10)
    g.add(table("Latest $outcome timelines", "GET /api/v1/search?outcome=$outcome over the dashboard time range "
                "(newest first, at most 100): pick the outcome above, then look a recipient up in the panels above.",
                [infinity("/api/v1/search?outcome=${outcome}&since=${__from:date:seconds}&until=${__to:date:seconds}"
                          "&limit=100", "items", columns=RECIPIENT_COLUMNS)], [], [], datasource=INFINITY), 24, 10)

    g.row("Input quality")
    g.add(stat("Parse error ratio", f"Lines that could not be used / lines read. {PER_S}",
               [prom(ratio(sum_by("", rate("watchtower_parse_errors_total")),
                           sum_by("", rate("watchtower_lines_read_total"))))], "percentunit",
               thresholds=steps(("green", None), ("yellow", 0.001), ("red", 0.01))), 6, 4)
    g.add(stat("Skipped records per second", "Valid records of a type their source does not feed (its `records` "
               f"list): usually a config mismatch with PMTA's <acct-file> blocks. {PER_S}",
               [prom(sum_by("", rate("watchtower_records_skipped_total")))], "cps"), 6, 4)
    g.add(stat("Read errors per second", f"Failed opens or reads of accounting files. {PER_S}",
               [prom(sum_by("", rate("watchtower_read_errors_total")))], "cps",
               thresholds=steps(("green", None), ("red", 0.001))), 6, 4)
    g.add(stat("Truncations per second", f"Files found shorter than the read offset (copytruncate). {PER_S}",
               [prom(sum_by("", rate("watchtower_truncations_total")))], "cps"), 6, 4)
    g.add(timeseries("Parse errors by reason", f"Unusable lines per source and reason. {PER_S}",
                     [prom(sum_by("instance, source, reason", rate("watchtower_parse_errors_total")),
                           "{{instance}} {{source}} {{reason}}")], "cps"), 12, 8)
    g.add(timeseries("Skipped records by source and type", f"Records a source read but does not count. {PER_S}",
                     [prom(sum_by("instance, source, type", rate("watchtower_records_skipped_total")),
                           "{{instance}} {{source}} {{type}}")], "cps"), 12, 8)
    g.add(timeseries("Lines and records read per second", "Complete lines read (headers and bad lines included) "
                     f"against valid records, per source. {PER_S}", [
                         prom(sum_by("source", rate("watchtower_lines_read_total")), "lines {{source}}"),
                         prom(sum_by("source", rate("watchtower_records_read_total")), "records {{source}}"),
                     ], "cps"), 12, 8)
    g.add(timeseries("Records read by type", f"Valid records per record type (d, b, t, tq, f, rb, rs, r). {PER_S}",
                     [prom(sum_by("type", rate("watchtower_records_read_total")), "{{type}}")], "cps",
                     stack=True), 12, 8)
    activity = f"File opens, rotations (files retired after draining) and truncations. {PER_S}"
    g.add(timeseries("File activity", activity, [
        prom(sum_by("source", rate("watchtower_file_opens_total")), "opens {{source}}"),
        prom(sum_by("source", rate("watchtower_rotations_total")), "rotations {{source}}"),
        prom(sum_by("source", rate("watchtower_truncations_total")), "truncations {{source}}"),
    ], "cps"), 12, 8)
    g.add(timeseries("Read errors by reason", f"Failed opens or reads per source and reason. {PER_S}",
                     [prom(sum_by("instance, source, reason", rate("watchtower_read_errors_total")),
                           "{{instance}} {{source}} {{reason}}")], "cps"), 12, 8)
    return dashboard("watchtower-forensics", "PMTA Watchtower / Message forensics",
                     "Per-message timelines from Watchtower's correlator API, and the input-quality counters that "
                     "tell whether the timelines are complete.", [
                         PROMETHEUS_VAR, INFINITY_VAR, *job_instance_vars(),
                         textbox_var("message_id", "Message id", "Message-ID (header) or envId to look up."),
                         textbox_var("job_id", "Job id", "PMTA jobId for the recipient timeline."),
                         textbox_var("rcpt", "Recipient", "Recipient address for the recipient timeline."),
                         custom_var("outcome", "Outcome", ["bounced", "complained", "deferred", "pending", "delivered"],
                                    "Current outcome of the timelines listed by the search panel."),
                     ], g, refresh="")


DASHBOARDS: dict[str, Callable[[], Json]] = {
    "watchtower-overview.json": overview,
    "watchtower-vmta.json": vmta_board,
    "watchtower-cluster.json": cluster,
    "watchtower-flows.json": flows,
    "watchtower-forensics.json": forensics,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in DASHBOARDS:
        path = DASHBOARDS_DIR / name
        content = render(name)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if stale:
        print("out of date, run `python grafana/build.py`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
