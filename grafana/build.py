"""Generate grafana/dashboards/*.json, the seven provisioned Watchtower dashboards.

    python grafana/build.py           # rewrite the JSON files
    python grafana/build.py --check   # exit 1 if a committed file differs from what this generates

Edit this file, not the JSON: tests/test_dashboards.py fails when the two drift apart. Ratios,
rates and delay quantiles come from rules/recording.yaml where a rule exists (`vmta_isp:` rules
keep `instance`, so the host filter still works); raw counters go through rate($__rate_interval).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from dashlib import (
    ALERTMANAGER,
    ATTEMPTS_RULE,
    BLOCK_BLOCKLISTED_MIN,
    BLOCK_BLOCKLISTED_SHARE,
    BLOCK_MIN_ATTEMPTS,
    BLOCK_OTHER_MANY,
    BLOCK_OTHER_MIN,
    BLOCK_REJECT_RATIO,
    CELL,
    COMPLAINT,
    DEFERRAL,
    HARD_BOUNCE,
    INFINITY,
    INSTANCE,
    ISP,
    JOB,
    LEVEL_TEXT,
    LEVELS,
    MIN_ATTEMPTS,
    POOL,
    QUEUE,
    QUEUE_LEVELS,
    SENDER,
    SITE,
    SUCCESS,
    SUCCESS_LEVELS,
    THROTTLE,
    THROTTLE_LEVELS,
    UP_DOWN,
    VMTA,
    Grid,
    Json,
    alert_annotation,
    bargauge,
    bounce_share,
    column,
    custom_var,
    dashboard,
    datasource_var,
    deferral_ratio,
    heatmap,
    infinity,
    job_instance_vars,
    judged_rejected,
    judged_success,
    judged_throttled,
    level_column,
    link_column,
    matrix,
    node_graph,
    nonzero,
    or_zero,
    prom,
    quantile,
    query_var,
    queue_by_pool,
    queue_or_zero,
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
    total,
    worst_job,
    worst_level,
)

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
ATTEMPTS = ATTEMPTS_RULE
DELAY_BUCKETS = "vmta_isp:pmta_delivery_delay_seconds_bucket:rate5m"
PER_S = "Per second over $__rate_interval."
RULE_10M = "From the 10-minute recording rules (rules/recording.yaml), the same numbers the alerts use."
CLUSTER = "Cluster-wide recording rule (summed over instances): the Instance filter does not apply."
WORST_JOB = " With several jobs selected, the worst job's ratio."
ATTEMPTS_DEF = "Attempts = delivered + bounced + deferred attempts (d + b + t/tq records)."
QUEUE_SCALE = "yellow > {}k, orange > {}k, red > {}k".format(*(q // 1000 for q in QUEUE_LEVELS))
QUEUE_JOIN = ("Queue gauges carry only {vmta, isp}; each VMTA's queue is attributed to the pool that carried "
              "most of its attempts in the last 10 minutes; a VMTA without any attempt yet, to pool none.")
COMPLAINT_ISPS = 'isp!~"gmail|google_workspace|apple|other"'
"""The ISPs PmtaComplaintRate leaves out (rules/alerts/reputation.yaml): no per-message FBL, or `other`."""
COMPLAINT_MIN_DELIVERED = 1000
JUDGED_COMPLAINTS = ("Coloured only where the complaint alert judges (PmtaComplaintRate, PmtaSenderComplaintRate): an "
                     "ISP with a per-message feedback loop (not Gmail, Google Workspace, Apple or `other`) and at "
                     f"least {COMPLAINT_MIN_DELIVERED} delivered in the day; the others are left out.")


def judged_complaint_ratio(ratio_rule: str, delivered_rule: str, by: str, *matchers: str) -> str:
    """A daily complaint ratio where the complaint alerts judge it (their ISPs, their daily floor): its colours
    then mean what the alert means, never red with nothing firing on a cell of 100 deliveries."""
    return (f"({sel_cluster(ratio_rule, *matchers, COMPLAINT_ISPS)} and on (cluster, job, {by}) "
            f"({sel_cluster(delivered_rule, *matchers)} * 86400 >= {COMPLAINT_MIN_DELIVERED}))")


HARD_BOUNCE_MIN_OUTCOMES = 500
"""PmtaHardBounceRate's and PmtaSenderHardBounceRate's floor (rules/alerts/reputation.yaml): outcomes in 1 hour."""


def judged_hard_bounces(key: str, *matchers: str) -> str:
    """The 1-hour hard-bounce ratio per `key` (vmta_pool or sender, cluster-wide rules keeping `job`) where the
    alert judges it: at least HARD_BOUNCE_MIN_OUTCOMES outcomes in the hour."""
    metric = {"vmta_pool": "pmta", "sender": "pmta_sender"}[key]
    ratio_rule = sel_cluster(f"{key}:{metric}_hard_bounced:ratio_rate1h", *matchers)
    outcomes = sel_cluster(f"{key}:{metric}_outcomes:rate1h", *matchers)
    return f"({ratio_rule} and on (cluster, job, {key}) ({outcomes} * 3600 >= {HARD_BOUNCE_MIN_OUTCOMES}))"


OLD_DEFERRALS_RULE = "instance_vmta_pool_isp:pmta_deferrals_older_than_4h:increase30m"
OLD_SHARE_RULE = "instance_vmta_pool_isp:pmta_deferrals_older_than_4h:ratio_increase30m"
OLD_MESSAGES_MIN = 10
OLD_MESSAGES_SHARE = 0.05
"""PmtaQueueOldMessages (rules/alerts/queue.yaml) per host x pool x ISP: at least OLD_MESSAGES_MIN deferrals of
messages older than 4h in the last 30 minutes, and at least OLD_MESSAGES_SHARE of the deferrals (recorded rules:
the panel needs no fixed [30m] range of its own)."""


def judged_old_share(*matchers: str) -> str:
    """The recorded old-message share where PmtaQueueOldMessages judges it (at least OLD_MESSAGES_MIN old deferrals):
    above its line means the alert's condition holds."""
    return f"({sel(OLD_SHARE_RULE, *matchers)} and ({sel(OLD_DEFERRALS_RULE, *matchers)} >= {OLD_MESSAGES_MIN}))"


PROMETHEUS_VAR = datasource_var()
INFINITY_VAR = datasource_var("infinity", "yesoreyeram-infinity-datasource", "Watchtower API (Infinity)",
                              regex="/^(?!.*[Aa]lertmanager)/")
ALERTMANAGER_VAR = datasource_var("alertmanager", "yesoreyeram-infinity-datasource", "Alertmanager API (Infinity)",
                                  regex="/[Aa]lertmanager/")
ALERTS_QUERY = "?active=true&silenced=false&inhibited=false"
"""The alert headlines' query, relative to the Alertmanager data source's URL, which is Alertmanager's
`/api/v2/alerts` itself (grafana/provisioning/datasources/watchtower.yml): its URL and `allowedHosts` reach that
endpoint only, as any viewer may send the data source a query of their own (GET or POST), and POST
/api/v2/silences would mute every alert."""


def overview() -> Json:
    g = Grid()
    g.row("Delivery outcomes")
    for title, metric, what in (
        ("Delivered", "pmta_delivered_total", "Recipients delivered (d records)."),
        ("Bounced", "pmta_bounced_total", "Recipients bounced by PMTA (b records)."),
        ("Deferred", "pmta_deferred_total", "Deferred delivery attempts (t and tq records)."),
        ("Complaints", "pmta_complaints_total", "Feedback-loop complaints (f records), all feedback types."),
    ):
        g.add(stat(f"{title} per second", f"{what} {PER_S} 0 until the first one.",
                   [prom(or_zero(sum_by("", rate(metric, ISP))))], "cps"), 4, 4)
    g.add(stat("Success ratio", f"Delivered / attempts over 10 minutes. {ATTEMPTS_DEF} {RULE_10M}",
               [prom(success_ratio("", ISP))], "percentunit", thresholds=SUCCESS), 4, 4)
    judged = sel_cluster("isp:pmta_complaints:ratio_rate1d", ISP, COMPLAINT_ISPS)
    enough = f"{sel_cluster('isp:pmta_delivered:rate1d', ISP)} * 86400 >= {COMPLAINT_MIN_DELIVERED}"
    g.add(stat("Complaint ratio (1 day, worst ISP)", "User complaints (FBL, excluding not-spam and auth-failure "
               "reports) / delivered over the last 24 hours at the worst ISP PmtaComplaintRate judges: one with a "
               "per-message feedback loop (not Gmail, Google Workspace, Apple or `other`) and at least "
               f"{COMPLAINT_MIN_DELIVERED} delivered in the day, so it is red when the alert fires (warn 0.1%, "
               "critical 0.3%: Gmail's and Yahoo's daily limits). 0 while no ISP qualifies. "
               f"{CLUSTER}",
               [prom(f"max({judged} and on (cluster, job, isp) ({enough}))"
                     f" or on () (0 * count({sel_cluster('isp:pmta_delivered:rate1d', ISP)}))")], "percentunit",
               thresholds=COMPLAINT), 4, 4)
    outcomes = f"Every record type Watchtower counts, summed over VMTAs and the selected ISPs (r has no ISP). {PER_S}"
    g.add(timeseries("Outcomes per second", outcomes, [
        prom(sum_by("", rate("pmta_delivered_total", ISP)), "delivered (d)"),
        prom(sum_by("", rate("pmta_bounced_total", ISP)), "bounced (b)"),
        prom(sum_by("", rate("pmta_deferred_total", ISP)), "deferred (t, tq)"),
        prom(sum_by("", rate("pmta_remote_bounced_total", ISP)), "remote bounced (rb)"),
        prom(sum_by("", rate("pmta_remote_status_total", ISP)), "remote status (rs)"),
        prom(sum_by("", rate("pmta_complaints_total", ISP)), "complaints (f)"),
        prom(sum_by("", rate("pmta_received_total")), "received (r)"),
    ], "cps"), 12, 8)
    g.add(timeseries("Success ratio by ISP", f"Delivered / attempts per mailbox provider. {RULE_10M}",
                     [prom(success_ratio("isp", ISP), "{{isp}}")], "percentunit", ratio_axis=True), 12, 8)

    g.row("Deferrals, bounces and complaints")
    g.add(timeseries("Deferrals by class", "Deferred attempts per second by response class. throttled, reputation "
                     f"and blocklisted are provider-level signals; mailbox_full and recipient_rate are not. {PER_S}",
                     [prom(nonzero(sum_by("class", rate("pmta_deferred_total", ISP))), "{{class}}")], "cps",
                     stack=True), 12, 8)
    g.add(timeseries("Bounces by category", f"Recipients bounced by PMTA per second, by PMTA bounceCat. {PER_S}",
                     [prom(nonzero(sum_by("category", rate("pmta_bounced_total", ISP))), "{{category}}")], "cps",
                     stack=True), 12, 8)
    g.add(timeseries("Remote bounces by class", "Asynchronous bounces from remote servers (rb records) per second, "
                     f"by response class. {PER_S}",
                     [prom(nonzero(sum_by("class", rate("pmta_remote_bounced_total", ISP))), "{{class}}")], "cps",
                     stack=True),
          12, 8)
    g.add(timeseries("Complaints by feedback type", f"FBL reports per second by ARF Feedback-Type. {PER_S}",
                     [prom(nonzero(sum_by("feedback_type", rate("pmta_complaints_total", ISP))), "{{feedback_type}}")],
                     "cps",
                     stack=True), 12, 8)

    g.row("ISPs")
    g.add(bargauge("Top ISPs by attempts", f"The 10 busiest mailbox providers, attempts per second. {RULE_10M}",
                   [prom(f"topk(10, {sum_by('isp', sel(ATTEMPTS, ISP))})", "{{isp}}", instant=True)], "cps"), 8, 9)
    g.add(bargauge("Throttled share by ISP", "Share of attempts deferred as throttled or reputation, worst 10 "
                   f"providers. The throttling alert fires above 30% per VMTA. {RULE_10M}",
                   [prom(f"topk(10, {throttled_ratio('isp', ISP)})", "{{isp}}", instant=True)], "percentunit",
                   thresholds=THROTTLE, max_=1), 8, 9)
    g.add(bargauge("Complaint ratio by ISP (1 day)", "Daily user complaints / delivered per provider (warn 0.1%, "
                   f"critical 0.3%). {JUDGED_COMPLAINTS} {CLUSTER}{WORST_JOB}",
                   [prom(worst_job("isp", judged_complaint_ratio("isp:pmta_complaints:ratio_rate1d",
                                                                 "isp:pmta_delivered:rate1d", "isp", ISP)),
                         "{{isp}}", instant=True)], "percentunit",
                   thresholds=COMPLAINT, max_=0.005), 8, 9)

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
    g.add(timeseries("Queued recipients", "Recipients queued on the PMTA hosts (/status, by delivery type: all "
                     "providers), the sum of the per-queue gauges of the selected ISPs, and the recipients of the "
                     "queues beyond each VMTA's top-N listing (any ISP). With every ISP selected, a gap between the "
                     "host and the two others means VMTAs not read; with some, the other ISPs' share.", [
                         prom(sum_by("type", sel("pmta_status_queue_recipients")), "host: {{type}}"),
                         prom(sum_by("", sel("pmta_queue_recipients", ISP)), "per-queue gauges"),
                         prom(sum_by("", sel("pmta_queue_unlisted_recipients")), "beyond the VMTAs' top-N listings"),
                     ], "short"), 12, 8)
    g.add(timeseries("Queued recipients by ISP", "Recipients queued per mailbox provider (per-queue gauges).",
                     [prom(sum_by("isp", sel("pmta_queue_recipients", ISP)), "{{isp}}")], "short", stack=True), 12, 8)
    g.add(timeseries("Queues in backoff and paused", "Queues PMTA has put in backoff mode (retrying slowly after "
                     "errors) and queues paused by an operator.", [
                         prom(nonzero(sum_by("isp", sel("pmta_queue_backoff", ISP))), "backoff {{isp}}"),
                         prom(nonzero(sum_by("isp", sel("pmta_queue_paused", ISP))), "paused {{isp}}"),
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
               [prom(f"time() - max by (cluster, instance) ({sel('watchtower_last_record_timestamp_seconds')})",
                     "{{instance}}")], "s",
               thresholds=steps(("green", None), ("yellow", 300), ("red", 900))), 4, 4)
    g.add(stat("Checkpoint age", "Seconds since offsets and counters were last committed to the state database.",
               [prom(f"time() - max by (cluster, instance) ({sel('watchtower_last_checkpoint_timestamp_seconds')})",
                     "{{instance}}")], "s", thresholds=steps(("green", None), ("yellow", 120), ("red", 600))), 4, 4)
    g.add(stat("Files followed", "Accounting files currently followed, per instance.",
               [prom(sum_by("cluster, instance", sel("watchtower_files_followed")), "{{instance}}")], "short"), 4, 4)
    g.add(timeseries("Records read per second by source", f"Valid records read from each configured source. {PER_S}",
                     [prom(sum_by("cluster, instance, source", rate("watchtower_records_read_total")),
                           "{{instance}} {{source}}")], "cps"), 12, 8)
    g.add(timeseries("Parse errors per second", "Lines that could not be used, by source and reason "
                     f"(bad_timestamp and bad_size: records counted without that field). {PER_S}",
                     [prom(nonzero(sum_by("cluster, instance, source, reason", rate("watchtower_parse_errors_total"))),
                           "{{instance}} {{source}} {{reason}}")], "cps"), 12, 8)
    g.add(timeseries("Bytes behind", "Bytes written to followed files but not yet read: the tailing backlog.",
                     [prom(sum_by("cluster, instance, source", sel("watchtower_behind_bytes")),
                           "{{instance}} {{source}}")],
                     "bytes"), 12, 8)
    g.add(timeseries("Errors per second", f"Failed file opens/reads, failed PMTA API requests, failed state "
                     f"commits, and complaints / remote bounces counted with vmta unknown because their store lookup "
                     f"was skipped (the correlator is behind: WatchtowerAttributionSkipped). {PER_S}", [
                         prom(nonzero(sum_by("cluster, instance, reason", rate("watchtower_read_errors_total"))),
                              "read {{reason}} {{instance}}"),
                         prom(nonzero(sum_by("cluster, instance, reason", rate("watchtower_pmta_api_errors_total"))),
                              "api {{reason}} {{instance}}"),
                         prom(nonzero(sum_by("cluster, instance", rate("watchtower_checkpoint_errors_total"))),
                              "checkpoint {{instance}}"),
                         prom(nonzero(sum_by("cluster, instance", rate("watchtower_attribution_skipped_total"))),
                              "attribution skipped {{instance}}"),
                     ], "cps"), 12, 8)
    g.add(timeseries("PMTA API poll duration", "Duration of the last complete poll of PMTA's management API.",
                     [prom(sel("watchtower_pmta_api_poll_duration_seconds"), "{{instance}}")], "s"), 8, 8)
    g.add(timeseries("Label overflow per second", "Records whose vmta, vmta_pool or sender was replaced by "
                     f"overflow/other because a label cap was reached: raise the cap or list the values. {PER_S}",
                     [prom(nonzero(sum_by("cluster, instance, label", rate("watchtower_label_overflow_total"))),
                           "{{instance}} {{label}}")], "cps"), 8, 8)
    g.add(timeseries("Series per record metric", "Series currently held per record metric family (cardinality).",
                     [prom(sum_by("metric", sel("watchtower_metric_series")), "{{metric}}")], "short"), 8, 8)
    return dashboard("watchtower-overview", "PMTA Watchtower / Global health",
                     "Delivery outcomes, deferral classes, ISPs, latency, queues and Watchtower's own health.",
                     [PROMETHEUS_VAR, *job_instance_vars(), isp_var()], g, annotations=[alert_annotation()])


def isp_var(*matchers: str) -> Json:
    selector = ", ".join((SITE, JOB, INSTANCE, *matchers))
    return query_var("isp", "ISP", f"label_values({ATTEMPTS}{{{selector}}}, isp)", description="Mailbox provider.")


def replies_panel(vmta: str, isp: str, title: str) -> Json:
    """The "why" behind a class: /api/v1/replies for the VMTA(s) x ISP(s) over the dashboard range."""
    url = (f"/api/v1/replies?vmta={vmta}&pool=${{vmta_pool:csv}}&isp={isp}&since=${{__from:date:seconds}}"
           "&until=${__to:date:seconds}&limit=10&host=${instance:csv}")  # the hub asks those hosts; a daemon ignores it
    return table(title, "The remote SMTP replies behind the deferrals (t, tq) and bounces (b) of the selected VMTA "
                 "× ISP over the dashboard range (at most the last 24 hours), from Watchtower's correlator "
                 "(GET /api/v1/replies through the Infinity data source): IPs, addresses and message ids are "
                 "replaced by <ip>, <addr>, <id> so one kind of reply is one row. The alerts' dashboard links "
                 "select one VMTA and one ISP, so this is the first thing an alert shows. It follows the pool, VMTA "
                 "and ISP filters (a record's vmtaPool, as for the metrics) and reads the Watchtower the Infinity "
                 "data source variable names. VMTA names repeat across hosts: point it at the cluster hub, which "
                 "asks only the hosts of the Instance filter (an alert's link names its host) and says which hosts "
                 "sent each reply (Hosts); a daemon's own data source answers for its host whatever the filter.",
                 [infinity(url, "replies", columns=REPLY_COLUMNS)], [], [
                     {"matcher": {"id": "byName", "options": "Share"},
                      "properties": [{"id": "unit", "value": "percentunit"}, {"id": "decimals", "value": 1}]},
                     {"matcher": {"id": "byName", "options": "Reply"},
                      "properties": [{"id": "custom.width", "value": 700}]},
                 ], datasource=INFINITY)


REPLY_COLUMNS = (
    ("count", "Count", "number"), ("share", "Share", "number"), ("response_class", "Class", "string"),
    ("reply", "Reply", "string"), ("status", "Status", "string"), ("kind", "Record", "string"),
    ("vmta", "VMTA", "string"), ("isp", "ISP", "string"), ("first_seen", "First", "timestamp"),
    ("last_seen", "Last", "timestamp"), ("hosts", "Hosts", "string"),
)
"""`hosts`: only the hub's answer has it (the hosts whose replies were summed in the row)."""


def vmta_board() -> Json:
    f = (POOL, VMTA, ISP)
    by = "cluster, instance, vmta"
    # A VMTA's standing is its worst ISP, never the sum of all ISPs: cells as the alerts judge them (the VMTA over
    # all its pools, and each pool on its own: the worse kept).
    worst_succ = f"min by ({by}) ({judged_success(*f)})"
    worst_thr = f"max by ({by}) ({judged_throttled(*f)})"
    per_cell = ("Computed per VMTA × ISP as the alerts judge it: over all the VMTA's pools and in each pool on its "
                f"own (each with at least {MIN_ATTEMPTS} attempts in 10 minutes), the worse kept, then the worst "
                "cell, so neither one provider's problem nor one pool's is averaged away; the pool filter picks "
                "the VMTAs.")
    g = Grid()
    g.row("Board")
    g.add(stat("VMTAs", f"VMTAs (per host) with delivery attempts in the last 10 minutes. {RULE_10M}",
               # `> 0`: an idle VMTA's attempt rate is 0, not absent, as long as its counters exist
               [prom(f"count({sum_by(by, sel(ATTEMPTS, *f))} > 0) or vector(0)")], "short", graph=False), 4, 4)
    g.add(stat("VMTAs throttled over 30% at an ISP", "VMTAs where, at one ISP or more, more than 30% of attempts "
               f"were deferred as throttled or reputation: the throttling alert's condition. {per_cell} {RULE_10M}",
               [prom(f"count({worst_thr} > 0.3) or vector(0)")], "short",
               thresholds=steps(("green", None), ("red", 1)), color_mode="background"), 4, 4)
    g.add(stat("VMTAs below 50% success at an ISP", "VMTAs delivering fewer than half of their attempts at one ISP "
               f"or more. {per_cell} {RULE_10M}",
               [prom(f"count({worst_succ} < 0.5) or vector(0)")], "short",
               thresholds=steps(("green", None), ("red", 1)), color_mode="background"), 4, 4)
    empty = " 0 when nothing is queued (while a selected host's PMTA API is read)."
    g.add(stat("Queued recipients", f"Recipients queued for the selected VMTAs and ISPs.{empty} {QUEUE_JOIN}",
               [prom(queue_or_zero(queue_by_pool("pmta_queue_recipients", "", (VMTA, ISP), (POOL, VMTA))))],
               "short"), 4, 4)
    g.add(stat("Queues in backoff", f"Queues of the selected VMTAs and ISPs in PMTA backoff mode.{empty}",
               [prom(queue_or_zero(queue_by_pool("pmta_queue_backoff", "", (VMTA, ISP), (POOL, VMTA))))], "short",
               thresholds=steps(("green", None), ("orange", 1))), 4, 4)
    g.add(stat("Paused queues", f"Queues of the selected VMTAs and ISPs paused by an operator.{empty}",
               [prom(queue_or_zero(queue_by_pool("pmta_queue_paused", "", (VMTA, ISP), (POOL, VMTA))))], "short",
               thresholds=steps(("green", None), ("blue", 1))), 4, 4)
    g.add(status_history("Success ratio by VMTA (worst ISP)", "One row per VMTA, one cell per interval: delivered / "
                         "attempts at the VMTA's worst ISP among the selected ones. Red below 50%, orange below 80%, "
                         f"yellow below 95%. {per_cell} {RULE_10M}",
                         [prom(worst_succ, "{{vmta}} {{instance}}")], "percentunit", SUCCESS), 8, 18)
    g.add(status_history("Throttled share by VMTA (worst ISP)", "One row per VMTA: share of attempts deferred as "
                         "throttled or reputation at the VMTA's worst ISP. Orange from 30% (the alert threshold), "
                         f"red from 50%. {per_cell} {RULE_10M}",
                         [prom(worst_thr, "{{vmta}} {{instance}}")], "percentunit", THROTTLE), 8, 18)
    g.add(status_history("Level by VMTA (worst ISP)", "One row per VMTA: the war room's level of its worst VMTA × "
                         "ISP cell (ok / warn / HIGH / CRIT): success and throttled share as beside, a block "
                         "(PmtaIspBlock's condition: blocklisted responses, or reputation/policy bounces) at CRIT, "
                         f"and the queue. {per_cell} {RULE_10M}",
                         [prom(f"max by ({by}) ({worst_level(*f)})", "{{vmta}} {{instance}}")], "none", LEVELS,
                         max_=3, mappings=LEVEL_TEXT), 8, 18)
    keys = "cluster, instance, vmta, vmta_pool"
    rows = f"group by ({keys}) ({success_ratio(keys, *f)})"

    def on_every_row(per_vmta: str) -> str:
        """A per-VMTA value (no pool: its cells are over all its pools) on every pool row of the VMTA."""
        return f"{per_vmta} * on ({by}) group_right () {rows}"

    drill = ("/d/watchtower-vmta/vmta?${__url_time_range}&${datasource:queryparam}&${infinity:queryparam}"
             "&${cluster:queryparam}&${job:queryparam}&var-instance=${__data.fields.instance}&var-vmta=${__data.fields.vmta}&${isp:queryparam}")
    g.add(table("VMTA board", "Every VMTA with attempts in the last 10 minutes for the selected ISPs, the worst "
                "first: *Level* is the war room's level of the VMTA's worst ISP (ok / warn / HIGH / CRIT, a block "
                "at CRIT whatever its success or throttling: PmtaIspBlock's condition), as in *Level by VMTA* "
                "above; cells are coloured by the same thresholds as the status history. *Worst ISP* columns are "
                "computed per VMTA × ISP as the alerts judge it (over all its pools, and each pool on its own; "
                f"≥ {MIN_ATTEMPTS} attempts in 10 minutes each) and keep the worst, the same on each pool row of the "
                "VMTA; the others are per pool, over all selected ISPs. The bounce share (all bounces / attempts) "
                "has no colour: no alert judges it "
                "(PmtaHardBounceRate judges hard bounces / outcomes per pool over 1 hour, on the cluster board). "
                "Queued recipients are the VMTA's total, uncoloured; the largest ISP queue is coloured on the "
                f"queue alerts' per-VMTA × ISP scale ({QUEUE_SCALE}). Click a VMTA to drill down. {RULE_10M} "
                + QUEUE_JOIN, [
                    table_query(on_every_row(f"min by ({by}) ({judged_success(*f)})")),
                    table_query(success_ratio(keys, *f)),
                    table_query(sum_by(keys, sel("vmta_isp:pmta_delivered:rate10m", *f))),
                    table_query(deferral_ratio(keys, *f)),
                    table_query(on_every_row(f"max by ({by}) ({judged_throttled(*f)})")),
                    table_query(bounce_share(keys, *f)),
                    table_query(queue_by_pool("pmta_queue_recipients", keys, (VMTA, ISP), (POOL, VMTA))),
                    table_query(queue_by_pool("pmta_queue_recipients", keys, (VMTA, ISP), (POOL, VMTA), agg="max")),
                    table_query(queue_by_pool("pmta_queue_backoff", keys, (VMTA, ISP), (POOL, VMTA))),
                    table_query(queue_by_pool("pmta_queue_connections", keys, (VMTA, ISP), (POOL, VMTA))),
                    # on every pool row of the VMTA: the level has no pool (its cells are over all its pools)
                    table_query(on_every_row(f"max by ({by}) ({worst_level(*f)})")),
                ], ["cluster", "instance", "vmta", "vmta_pool"], [
                    level_column("K", "Level (worst ISP)"),
                    column("A", "Success (worst ISP)", "percentunit", SUCCESS, 1),
                    column("B", "Success (all ISPs)", "percentunit", SUCCESS, 1),
                    column("C", "Delivered/s", "cps", None, 2),
                    column("D", "Deferral share", "percentunit", DEFERRAL, 1),
                    column("E", "Throttled (worst ISP)", "percentunit", THROTTLE, 1),
                    column("F", "Bounce share", "percentunit", None, 1),
                    column("G", "Queued recipients", "short", None, 0),
                    column("H", "Largest ISP queue", "short", QUEUE, 0),
                    column("I", "Backoff queues", "short", steps(("green", None), ("orange", 1)), 0),
                    column("J", "Connections", "short", None, 0),
                    link_column("vmta", "Drill down into ${__data.fields.vmta}", drill),
                ], sort_by="Level (worst ISP)"), 24, 14)
    g.add(replies_panel("${vmta:csv}", "${isp:csv}", "Why: top replies for $vmta × $isp"), 24, 10)

    g.row("Drilldown: $vmta", collapsed=True, repeat="vmta")
    d = (POOL, VMTA, ISP)  # the pool too, as the row's replies panel: a VMTA in two pools is two traffics
    g.add(timeseries("Success ratio by ISP: $vmta", f"Delivered / attempts of this VMTA per ISP. {RULE_10M}",
                     [prom(success_ratio("isp", *d), "{{isp}}")], "percentunit", ratio_axis=True,
                     thresholds=SUCCESS), 8, 8)
    g.add(timeseries("Throttled share by ISP: $vmta", "Share of this VMTA's attempts deferred as throttled or "
                     f"reputation, per ISP. {RULE_10M}", [prom(throttled_ratio("isp", *d), "{{isp}}")],
                     "percentunit", ratio_axis=True, thresholds=THROTTLE), 8, 8)
    g.add(timeseries("Delivered per second by ISP: $vmta", f"Recipients delivered by this VMTA. {PER_S}",
                     [prom(sum_by("isp", rate("pmta_delivered_total", *d)), "{{isp}}")], "cps", stack=True), 8, 8)
    g.add(timeseries("Deferrals by ISP and class: $vmta", f"Deferred attempts of this VMTA by response class. {PER_S}",
                     [prom(nonzero(sum_by("isp, class", rate("pmta_deferred_total", *d))), "{{isp}} {{class}}")],
                     "cps", stack=True), 8, 8)
    g.add(timeseries("Bounces by ISP and class: $vmta", f"Recipients bounced by this VMTA by response class. {PER_S}",
                     [prom(nonzero(sum_by("isp, class", rate("pmta_bounced_total", *d))), "{{isp}} {{class}}")],
                     "cps", stack=True), 8, 8)
    g.add(timeseries("Delivery delay p95 by ISP: $vmta", "95th percentile queue-to-delivery time of this VMTA, "
                     "over 5 minutes.", [prom(quantile(0.95, sel(DELAY_BUCKETS, *d), "isp"), "{{isp}}")], "s"), 8, 8)
    dq = (VMTA, ISP)  # queue gauges carry no pool: a VMTA's queues whatever the pool filter
    g.add(timeseries("Queued recipients by ISP: $vmta", "Recipients queued on this VMTA per ISP (PMTA API; queues "
                     "have no pool: the pool filter does not apply).",
                     [prom(sum_by("isp", sel("pmta_queue_recipients", *dq)), "{{isp}}")], "short", stack=True), 8, 8)
    g.add(timeseries("Connections and backoff by ISP: $vmta", "Open outbound connections and queues in backoff "
                     "mode on this VMTA per ISP (PMTA API; the pool filter does not apply).", [
                         prom(sum_by("isp", sel("pmta_queue_connections", *dq)), "{{isp}} connections"),
                         prom(nonzero(sum_by("isp", sel("pmta_queue_backoff", *dq))), "{{isp}} backoff queues"),
                     ], "short"), 8, 8)
    # As PmtaSuccessRateDrop: per VMTA x ISP over all its pools (last week's hour summed from the per-pool rules,
    # success ratio x attempts = delivered, which have the week of history), or per pool on its own, each with its
    # own gates; the worse kept.
    every = (VMTA, ISP)
    hourly = sel("instance_vmta_isp:pmta_success:ratio_rate1h", *every)
    tried = sel("instance_vmta_isp:pmta_attempts:rate1h", *every)
    pool_hourly = sel("vmta_isp:pmta_success:ratio_rate1h", *every)
    pool_tried = sel("vmta_isp:pmta_attempts:rate1h", *every)
    ratio_then, tried_then = f"{pool_hourly} offset 1w", f"{pool_tried} offset 1w"
    # `sum without (vmta_pool)`, as the instance_vmta_isp rules and the alert: every other label stays, so the rule's
    # series match one to one whatever target labels they carry (a site's `cluster`, an `env`); a `sum by` list
    # dropped them and the branch went empty.
    def all_pools(expr: str) -> str:
        return f"sum without (vmta_pool) ({expr})"

    hourly_then = f"{all_pools(f'{ratio_then} * {tried_then}')} / {all_pools(tried_then)}"
    whole = (f"(({hourly} / ({hourly_then} > 0)) and ({tried} * 3600 >= 500)"
             f" and ({all_pools(tried_then)} * 3600 >= 500))")
    pools = (f"(({pool_hourly} / ({ratio_then} > 0)) and ({pool_tried} * 3600 >= 500)"
             f" and (({tried_then}) * 3600 >= 500))")
    judged = f"{whole} or {pools}"
    g.add(timeseries("Success ratio against the same hour a week ago: $vmta", "The 1-hour success ratio of this VMTA "
                     "per ISP divided by the same hour's a week before, where PmtaSuccessRateDrop judges it (at least "
                     "500 attempts in both hours), as the alert: over all the VMTA's pools and each pool on its own "
                     "(the pool filter does not apply), each host on its own, the worst kept: it fires below 0.5 "
                     "(half of last week's) for 15 minutes. No line: too few attempts to judge.",
                     [prom(f"min by (isp) ({judged})", "{{isp}}")], "percentunit",
                     thresholds=steps(("red", None), ("green", 0.5))), 8, 8)
    g.add(timeseries("Deferral share by ISP: $vmta", f"Share of this VMTA's attempts deferred, all classes. {RULE_10M}",
                     [prom(deferral_ratio("isp", *d), "{{isp}}")], "percentunit", ratio_axis=True,
                     thresholds=DEFERRAL), 8, 8)
    g.add(replies_panel("${vmta}", "${isp:csv}", "Why: top replies of $vmta"), 24, 8)
    return dashboard("watchtower-vmta", "PMTA Watchtower / Status board",
                     "Every VMTA at a glance: success and throttling status history, a colour-coded board and "
                     "per-VMTA drilldown rows (one per selected VMTA). Alerts link here with var-vmta and var-isp.",
                     [PROMETHEUS_VAR, INFINITY_VAR, *job_instance_vars(), *pool_vmta_isp_vars(vmta=True)], g,
                     annotations=[alert_annotation('vmta=~"$vmta", isp=~"$isp"')])


def pool_vmta_isp_vars(*, vmta: bool) -> list[Json]:
    base = f"{ATTEMPTS}{{{SITE}, {JOB}, {INSTANCE}"
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
    g.add(table("Pool × ISP board", "One row per pool and ISP, cells coloured by the alert thresholds where an "
                "alert judges that quantity: the bounce share (all bounces / attempts) and the pool's queued "
                "recipients (a sum over its VMTAs) have none, nor the daily complaint ratio (no alert judges it per "
                "pool); the largest VMTA × ISP queue is coloured on the queue "
                f"alerts' scale ({QUEUE_SCALE}). {ATTEMPTS_DEF} {RULE_10M} The complaint ratio is over 1 day "
                f"(cluster-wide rule). {QUEUE_JOIN}", [
                    table_query(sum_by(by, sel(ATTEMPTS, *f))),
                    table_query(success_ratio(by, *f)),
                    table_query(deferral_ratio(by, *f)),
                    table_query(throttled_ratio(by, *f)),
                    table_query(bounce_share(by, *f)),
                    table_query(f"max by ({by}) ({sel_cluster('vmta_pool_isp:pmta_complaints:ratio_rate1d', *f)})"),
                    table_query(queue_by_pool("pmta_queue_recipients", by, (ISP,), (POOL,))),
                    table_query(queue_by_pool("pmta_queue_recipients", by, (ISP,), (POOL,), agg="max")),
                ], ["vmta_pool", "isp"], [
                    column("A", "Attempts/s", "cps", None, 2),
                    column("B", "Success", "percentunit", SUCCESS, 1),
                    column("C", "Deferral share", "percentunit", DEFERRAL, 1),
                    column("D", "Throttled share", "percentunit", THROTTLE, 1),
                    column("E", "Bounce share", "percentunit", None, 2),
                    column("F", "Complaint ratio (1d)", "percentunit", None, 3),
                    column("G", "Queued recipients", "short", None, 0),
                    column("H", "Largest VMTA × ISP queue", "short", QUEUE, 0),
                ], sort_by="Attempts/s"), 24, 12)
    legend = "{{vmta_pool}} / {{isp}}"
    g.add(timeseries("Success ratio by pool × ISP", f"Delivered / attempts. {RULE_10M}",
                     [prom(success_ratio(by, *f), legend)], "percentunit", ratio_axis=True), 12, 9)
    g.add(timeseries("Deferral share by pool × ISP", f"Deferred attempts / attempts, all classes. {RULE_10M}",
                     [prom(deferral_ratio(by, *f), legend)], "percentunit", ratio_axis=True), 12, 9)
    g.add(timeseries("Throttled share by pool × ISP", "Attempts deferred as throttled or reputation / attempts. "
                     + RULE_10M, [prom(throttled_ratio(by, *f), legend)], "percentunit", ratio_axis=True,
                     thresholds=THROTTLE), 12, 9)
    g.add(timeseries("Bounce share by pool × ISP", "Bounced recipients (every class) / attempts over 10 minutes. "
                     "No alert judges this share (no threshold lines): PmtaHardBounceRate judges hard bounces / "
                     f"outcomes over 1 hour, in the next panel. {RULE_10M}",
                     [prom(bounce_share(by, *f), legend)], "percentunit"), 12, 9)
    g.add(timeseries("Hard-bounce ratio by pool (1 hour)", "Hard bounces (user_unknown, mailbox_disabled, "
                     "bad_domain) / outcomes (delivered + bounced) per pool over 1 hour: what PmtaHardBounceRate "
                     "judges, on its thresholds (warn 2%, critical 5%), for the pools it judges: ≥ "
                     f"{HARD_BOUNCE_MIN_OUTCOMES} outcomes in the hour (a smaller pool has no line). Per pool, all "
                     f"ISPs: the ISP filter does not apply. {CLUSTER}{WORST_JOB}",
                     [prom(worst_job("vmta_pool", judged_hard_bounces("vmta_pool", POOL)), "{{vmta_pool}}")],
                     "percentunit", thresholds=HARD_BOUNCE), 12, 9)
    g.add(timeseries("Complaint ratio by pool × ISP (1 day)", "User complaints (FBL) / delivered over the last "
                     "24 hours. No alert judges it per pool (PmtaComplaintRate judges each ISP, over every pool), so "
                     f"it has no thresholds: compare with the ISPs' 0.1% / 0.3% daily limits. {CLUSTER}{WORST_JOB}",
                     [prom(worst_job(by, sel_cluster("vmta_pool_isp:pmta_complaints:ratio_rate1d", *f)), legend)],
                     "percentunit"), 12, 9)
    g.add(timeseries("Delivered per second by pool", f"Recipients delivered per pool. {RULE_10M}",
                     [prom(sum_by("vmta_pool", sel("vmta_isp:pmta_delivered:rate10m", *f)), "{{vmta_pool}}")],
                     "cps", stack=True), 24, 9)

    g.row("Queues by pool")
    # A pool whose VMTAs have no such queue series at all (every queue drained and dropped) reads 0 as long as it
    # has attempts (at any ISP: the pools of the pool variable), not left out.
    active_pools = f"0 * count by (vmta_pool) ({sel(ATTEMPTS, POOL)})"
    for title, metric, what in (
        ("Queued recipients by pool", "pmta_queue_recipients", "Recipients queued"),
        ("Queues in backoff by pool", "pmta_queue_backoff", "Queues in PMTA backoff mode"),
        ("Open connections by pool", "pmta_queue_connections", "Open outbound connections"),
    ):
        g.add(timeseries(title, f"{what} for the selected ISPs, per pool (0, not left out, for a pool with attempts "
                         f"series and no such queue). {QUEUE_JOIN}",
                         [prom(f"({queue_by_pool(metric, 'vmta_pool', (ISP,), (POOL,))}) or on (vmta_pool) "
                               f"({active_pools})", "{{vmta_pool}}")],
                         "short", stack=True), 8, 8)

    g.row("Delivery delay by pool")
    g.add(timeseries("Delivery delay p95 by pool", "95th percentile queue-to-delivery time per pool over 5 minutes, "
                     "from summed histogram buckets.",
                     [prom(quantile(0.95, sel(DELAY_BUCKETS, *f), "vmta_pool"), "{{vmta_pool}}")], "s"), 12, 8)
    g.add(timeseries("Deferral age p99 by pool", "99th percentile age of messages at each deferral, per pool: how "
                     "long the oldest deferred mail has waited. It cannot read above the largest finite bound of "
                     "metrics.delay_buckets (6h by default): mail retried for days reads 6h. PmtaQueueOldMessages "
                     "judges another quantity: the share of 30 minutes' deferrals for mail older than 4 hours, in "
                     f"the next panel (docs/runbooks.md). {PER_S}",
                     [prom(quantile(0.99, rate("pmta_deferral_age_seconds_bucket", *f), "vmta_pool"),
                           "{{vmta_pool}}")], "s"), 12, 8)
    g.add(timeseries("Share of deferrals older than 4h by pool × ISP (30 minutes)", "Deferrals of messages older "
                     "than 4 hours / all deferrals, over the last 30 minutes, per host × pool × ISP: the share "
                     f"PmtaQueueOldMessages judges, from its recording rule ({OLD_SHARE_RULE}). The alert (warning) "
                     f"fires when it is ≥ {OLD_MESSAGES_SHARE:.0%} (the dashed line) with ≥ {OLD_MESSAGES_MIN} such "
                     "deferrals, for 5 minutes; a series shows only while there are that many (below, the alert does "
                     "not judge the share). 4 hours is the smallest bound of metrics.delay_buckets ≥ 14400 s "
                     "(docs/alerts.md).",
                     [prom(judged_old_share(*f), "{{vmta_pool}} / {{isp}} on {{instance}}")], "percentunit",
                     thresholds=steps(("green", None), ("orange", OLD_MESSAGES_SHARE))), 24, 8)
    hm = heatmap("Delivery delay: $vmta_pool", "Distribution of queue-to-delivery time of this pool (recipients per "
                 "second per delay bucket, 5-minute rates); one heatmap per selected pool.",
                 [prom(sum_by("le", sel(DELAY_BUCKETS, 'vmta_pool=~"$vmta_pool"', ISP)), "{{le}}", fmt="heatmap")],
                 "s")
    hm.update({"repeat": "vmta_pool", "repeatDirection": "h", "maxPerRow": 3})
    g.add(hm, 8, 9)
    return dashboard("watchtower-cluster", "PMTA Watchtower / Cluster by pool",
                     "Success, deferral, bounce and complaint ratios per VMTA pool × ISP, queues by pool and "
                     "delivery-delay heatmaps per pool.", [PROMETHEUS_VAR, *job_instance_vars(),
                                                           *pool_vmta_isp_vars(vmta=False)], g,
                     annotations=[alert_annotation()])


FLOWS_HELP = """\
The graph is drawn by Grafana's core **Node graph** panel from Watchtower's own HTTP endpoint
`GET /api/v1/flows?since=&until=` (nodes and edges in Node graph field names; edge thickness ∝
recipients; arcs split delivered / bounced / deferred), read through the **Infinity** data source plugin
(`yesoreyeram-infinity-datasource`), the only plugin these dashboards use. Pick the Watchtower
host in the *Watchtower API* variable: provision one Infinity data source per host, with its
URL set to `http://<host>:9469`. Everything below the graph is plain Prometheus."""


SENDER_COUNTERS = '__name__=~"pmta_sender_(delivered|bounced|deferred|complaints)_total"'


def flows() -> Json:
    f = (SENDER, ISP)
    by = "sender, isp"
    g = Grid()
    g.add(text("About this dashboard", "How the flow graph is fed and what it needs.", FLOWS_HELP), 24, 4)
    url = "/api/v1/flows?since=${__from:date:seconds}&until=${__to:date:seconds}"
    g.add(node_graph("Sender → VMTA → ISP", "Mail flow over the dashboard time range from the correlator: sending "
                     "domains, VMTAs and ISPs as nodes (main stat: recipients delivered + bounced; second: deferrals), "
                     "edges as thick as their volume. Needs the Infinity data source pointed at a Watchtower host "
                     "with the correlator enabled. It does not follow the Sender, ISP and Instance filters: "
                     "/api/v1/flows takes only the time range, and answers for the one Watchtower host of the "
                     "selected Infinity data source (every sender, VMTA and ISP of that host).",
                     [infinity(url, "nodes", "node-graph-nodes"), infinity(url, "edges", "node-graph-edges")],
                     [("arc__delivered", "green"), ("arc__bounced", "red"), ("arc__deferred", "orange")]), 24, 20)

    g.row("Senders × ISPs (Prometheus)")
    sender_complaints = judged_complaint_ratio("sender_isp:pmta_sender_complaints:ratio_rate1d",
                                               "sender_isp:pmta_sender_delivered:rate1d", "sender, isp", *f)
    g.add(table("Sender × ISP", "One row per sending domain and ISP. Delivered, bounced, deferred and complaints "
                "are totals over the dashboard's time range (increase over $__range; complaints of every feedback "
                "type); the daily complaint ratio (last 24 hours, user complaints; blank where "
                "PmtaSenderComplaintRate does not judge it: no per-message feedback loop, or under "
                f"{COMPLAINT_MIN_DELIVERED} delivered in the day) and the 15-minute auth failures "
                "come from cluster-wide recording rules (not filtered by Instance).", [
                    table_query(sum_by(by, total("pmta_sender_delivered_total", *f))),
                    table_query(sum_by(by, total("pmta_sender_bounced_total", *f))),
                    table_query(sum_by(by, total("pmta_sender_deferred_total", *f))),
                    table_query(sum_by(by, total("pmta_sender_complaints_total", *f))),
                    table_query(f"max by ({by}) ({sender_complaints})"),
                    table_query(sum_by(by, sel_cluster("sender_isp:pmta_sender_auth_failures:increase15m", *f))),
                ], ["sender", "isp"], [
                    column("A", "Delivered", "short", None, 0),
                    column("B", "Bounced", "short", None, 0),
                    column("C", "Deferred", "short", None, 0),
                    column("D", "Complaints", "short", None, 0),
                    column("E", "Complaint ratio (1d)", "percentunit", COMPLAINT, 3),
                    column("F", "Auth failures (15m)", "short", steps(("green", None), ("red", 1)), 0),
                ], sort_by="Delivered"), 24, 12)
    g.add(timeseries("Delivered per second by sender", f"Recipients delivered per sending domain. {PER_S}",
                     [prom(sum_by("sender", rate("pmta_sender_delivered_total", *f)), "{{sender}}")], "cps",
                     stack=True), 12, 8)
    g.add(timeseries("Deferrals by sender and class", f"Recipient deferrals per sending domain and class. {PER_S}",
                     [prom(nonzero(sum_by("sender, class", rate("pmta_sender_deferred_total", *f))),
                           "{{sender}} {{class}}")],
                     "cps", stack=True), 12, 8)
    g.add(timeseries("Bounces by sender and class", f"Recipients bounced per sending domain and class. {PER_S}",
                     [prom(nonzero(sum_by("sender, class", rate("pmta_sender_bounced_total", *f))),
                           "{{sender}} {{class}}")],
                     "cps", stack=True), 12, 8)
    g.add(timeseries("Complaint ratio by sender × ISP (1 day)", "Daily user complaints / delivered (warn 0.1%, "
                     f"critical 0.3%, Gmail and Yahoo's limits). {JUDGED_COMPLAINTS} {CLUSTER}{WORST_JOB}",
                     [prom(worst_job("sender, isp", sender_complaints), "{{sender}} / {{isp}}")],
                     "percentunit", thresholds=COMPLAINT), 12, 8)
    g.add(timeseries("Hard-bounce ratio by sender (1 hour)", "user_unknown + mailbox_disabled + bad_domain bounces / "
                     "outcomes per sending domain over 1 hour, what PmtaSenderHardBounceRate judges (warn 2%, "
                     f"critical 5%), for the domains it judges: ≥ {HARD_BOUNCE_MIN_OUTCOMES} outcomes in the hour (a "
                     "smaller one has no line). Per sending domain over every ISP: it "
                     f"does not follow the ISP filter. {CLUSTER}{WORST_JOB}",
                     [prom(worst_job("sender", judged_hard_bounces("sender", SENDER)), "{{sender}}")],
                     "percentunit", thresholds=HARD_BOUNCE), 12, 8)
    g.add(timeseries("Auth failures by sender × ISP (15 minutes)", "SPF/DKIM/DMARC/PTR failures (deferrals and "
                     f"bounces classed auth_failure) per sending domain and ISP. {CLUSTER}",
                     [prom(sum_by("sender, isp", sel_cluster("sender_isp:pmta_sender_auth_failures:increase15m", *f)),
                           "{{sender}} / {{isp}}")],
                     "short", bars=True), 12, 8)
    return dashboard("watchtower-flows", "PMTA Watchtower / Flows sender → VMTA → ISP",
                     "Who sends what through which VMTA to which ISP: a Node graph from Watchtower's /api/v1/flows "
                     "(Infinity data source) and Prometheus panels per sending domain × ISP.", [
                         PROMETHEUS_VAR, INFINITY_VAR, *job_instance_vars(),
                         # Every sender counter, not only delivered: a domain whose mail all bounces or
                         # defers (DMARC failures, a blocklisting) is the one to pick.
                         query_var("sender", "Sender",
                                   f"label_values({{{SENDER_COUNTERS}, {SITE}, {JOB}, {INSTANCE}}}, sender)",
                                   description="Sending domain (MAIL FROM)."),
                         query_var("isp", "ISP", f"label_values({{{SENDER_COUNTERS}, {SITE}, {JOB}, {INSTANCE}, "
                                   f"{SENDER}}}, isp)", description="Mailbox provider."),
                     ], g)


FORENSICS_HELP = """\
Watchtower keeps a per-recipient timeline (acct, transient, bounce and FBL records correlated by
message, job and recipient) in its SQLite store and serves it on the same port as `/metrics`.
Add `format=text` (or `Accept: text/plain`) for a terminal rendering instead of JSON:

```sh
# every recipient's timeline of one message (header Message-Id)
curl -s 'http://pmta-01:9469/api/v1/messages/<message_id>?format=text'
# a message with more recipients than one answer holds (limit, at most 1000): pass next_cursor back
curl -s 'http://pmta-01:9469/api/v1/messages/<message_id>?limit=1000&cursor=<next_cursor>' | jq .
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
    # /api/v1/lookup answers an empty or unknown key with an empty list (200): the panels read "No
    # data" until a key is entered, where /api/v1/messages and /timeline answer 400/404 (a panel error).
    message = "/api/v1/lookup?message_id=${message_id:percentencode}"
    g.add(table("Recipients of message $message_id", "GET /api/v1/lookup?message_id= through the Infinity data "
                "source: one row per recipient with its current outcome. Enter a Message-Id above.",
                [infinity(message, "timelines", columns=RECIPIENT_COLUMNS)], [], [], datasource=INFINITY), 24, 8)
    g.add(table("Events of message $message_id", "Every correlated event (queued, deferrals, delivery, bounces, "
                "remote bounces, complaints) of every recipient of the message, oldest first per recipient.",
                [infinity(message, f"timelines.{EVENTS}", columns=EVENT_COLUMNS)], [], [], datasource=INFINITY),
          24, 10)
    g.add(table("Timeline of $rcpt in job $job_id", "GET /api/v1/lookup?job_id=&rcpt= through the Infinity data "
                "source: every event for one recipient of one job. Enter a job id and a recipient above.",
                [infinity("/api/v1/lookup?job_id=${job_id:percentencode}&rcpt=${rcpt:percentencode}",
                          f"timelines.{EVENTS}", columns=EVENT_COLUMNS)], [], [], datasource=INFINITY), 24, 10)
    g.add(table("Latest $outcome timelines", "GET /api/v1/search?outcome=$outcome over the dashboard time range "
                "(newest first, at most 100): pick the outcome above, then look a recipient up in the panels above.",
                [infinity("/api/v1/search?outcome=${outcome}&since=${__from:date:seconds}&until=${__to:date:seconds}"
                          "&limit=100", "items", columns=RECIPIENT_COLUMNS)], [], [], datasource=INFINITY), 24, 10)

    g.row("Input quality")
    g.add(stat("Parse error ratio", "Lines that could not be used, and records counted without a time or a "
               f"size they held (bad_timestamp, bad_size), / lines read. {PER_S}",
               [prom(ratio(sum_by("", rate("watchtower_parse_errors_total")),
                           sum_by("", rate("watchtower_lines_read_total"))))], "percentunit",
               thresholds=steps(("green", None), ("yellow", 0.001), ("red", 0.01))), 6, 4)
    g.add(stat("Skipped records per second", "Valid records of a type their source does not feed (its `records` "
               f"list): usually a config mismatch with PMTA's <acct-file> blocks. {PER_S}",
               [prom(or_zero(sum_by("", rate("watchtower_records_skipped_total"))))], "cps"), 6, 4)
    g.add(stat("Read errors per second", f"Failed opens or reads of accounting files. {PER_S}",
               [prom(or_zero(sum_by("", rate("watchtower_read_errors_total"))))], "cps",
               thresholds=steps(("green", None), ("red", 0.001))), 6, 4)
    g.add(stat("Truncations per second", f"Files found shorter than the read offset (copytruncate). {PER_S}",
               [prom(or_zero(sum_by("", rate("watchtower_truncations_total"))))], "cps"), 6, 4)
    g.add(timeseries("Parse errors by reason", f"Unusable lines per source and reason. {PER_S}",
                     [prom(nonzero(sum_by("cluster, instance, source, reason", rate("watchtower_parse_errors_total"))),
                           "{{instance}} {{source}} {{reason}}")], "cps"), 12, 8)
    g.add(timeseries("Skipped records by source and type", f"Records a source read but does not count. {PER_S}",
                     [prom(nonzero(sum_by("cluster, instance, source, type", rate("watchtower_records_skipped_total"))),
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
        prom(nonzero(sum_by("source", rate("watchtower_rotations_total"))), "rotations {{source}}"),
        prom(nonzero(sum_by("source", rate("watchtower_truncations_total"))), "truncations {{source}}"),
    ], "cps"), 12, 8)
    g.add(timeseries("Read errors by reason", f"Failed opens or reads per source and reason. {PER_S}",
                     [prom(nonzero(sum_by("cluster, instance, source, reason", rate("watchtower_read_errors_total"))),
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


# --- incidents -------------------------------------------------------------------------------------

WHAT = {"PmtaIspThrottling": "is throttling", "PmtaIspBlock": "is blocking",
        "PmtaSuccessRateDrop": "halved the success rate of", "PmtaQueueBacklog": "has a backlog on",
        "PmtaDeliveryStalled": "receives nothing from"}
"""Headline verb per alert about one VMTA x ISP; another such alert reads "<ISP> <alertname> <vmta>"."""
INCIDENT_KEYS = "alertname, severity, cluster, instance, vmta, isp"
AM_MATCHER = re.compile(r'^\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


def _inhibitions() -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """(source matchers, target matchers, equal labels) of every inhibit rule of alertmanager/alertmanager.yml,
    the matchers as PromQL label matchers: the dashboards leave out what Alertmanager mutes, read from the file so
    the two stay in step."""
    config = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    rules = []
    for rule in config.get("inhibit_rules", []):
        unknown = set(rule) - {"source_matchers", "target_matchers", "equal"}
        if unknown:
            raise ValueError(f"{ALERTMANAGER_YML.name}: inhibit rule with {sorted(unknown)}: only *_matchers and equal "
                             "are mirrored")
        sides = []
        for key in ("source_matchers", "target_matchers"):
            side = []
            for m in rule.get(key, []):
                found = AM_MATCHER.match(m)
                if not found:
                    raise ValueError(f"{ALERTMANAGER_YML.name}: matcher {m!r} not understood")
                name, op, value = found.groups()
                side.append(f'{name}{op}"{value}"')
            sides.append(tuple(side))
        rules.append((sides[0], sides[1], ", ".join(rule.get("equal", []))))
    return rules


ALERTMANAGER_YML = Path(__file__).resolve().parent.parent / "alertmanager" / "alertmanager.yml"
INHIBITIONS = _inhibitions()
"""Alertmanager's inhibit rules. A label missing on both sides counts as equal in Alertmanager, as in `on (...)`."""
DISPLAY_NAMES = 'isp:pmta_isp_display_name:info{isp!=""}'


def firing_cells(*matchers: str) -> str:
    """Firing alerts about one VMTA x ISP cell (labels instance, vmta, isp)."""
    return sel("ALERTS", 'alertstate="firing"', 'vmta!=""', 'isp!=""', *matchers)


def firing(*matchers: str) -> str:
    return f'ALERTS{{alertstate="firing", {SITE}, {JOB}{"".join(", " + m for m in matchers)}}}'


def without_inhibited(alerts: str) -> str:
    """`alerts` (raw ALERTS series) less those an inhibit rule of Alertmanager mutes (INHIBITIONS: a firing source
    alike on the rule's `equal` labels): what Alertmanager notifies. The incident rows and the warning counter
    both go through it (on their warnings)."""
    muted = " or ".join(f"({firing(*target)} and on ({equal}) {firing(*source)})"
                        for source, target, equal in INHIBITIONS)
    return f"({alerts} unless ({muted}))" if muted else alerts


def incident_rows() -> str:
    """One series per incident (a firing VMTA x ISP alert; a warning Alertmanager inhibits is left out: its
    critical twin, a host-wide stall, a block ... fires), value 1, labelled for the table: `headline` ("Gmail is
    throttling vmta-03": the ISP's display name, a verb per alert, the VMTA) and `runbook`."""
    critical = firing_cells('severity="critical"', ISP)
    warning = without_inhibited(firing_cells('severity="warning"', ISP))
    rows = f"max by ({INCIDENT_KEYS}) ({critical} or {warning})"
    # The display-name rule is a constant per ISP, without job or instance (rules/recording.yaml).
    named = (f"({rows} * on (isp) group_left (provider) max by (isp, provider) ({DISPLAY_NAMES}))"
             f' or on ({INCIDENT_KEYS}) label_replace({rows}, "provider", "$1", "isp", "(.*)")')
    expr = f'label_replace(label_replace({named}, "what", "$1", "alertname", "(.*)"), "runbook", "$1", ' \
           '"alertname", "(.*)")'
    for alert, verb in WHAT.items():
        expr = f'label_replace({expr}, "what", "{verb}", "alertname", "{alert}")'
        expr = f'label_replace({expr}, "runbook", "{alert.lower()}", "alertname", "{alert}")'
    return f'label_join({expr}, "headline", " ", "provider", "what", "vmta")'


OTHER_KEYS = "alertname, severity, cluster, instance, vmta_pool, sender, isp, vmta, source"
"""The labels an alert that is not about one VMTA x ISP may carry (pool, sender, ISP, host, source)."""
RULES_DIR = Path(__file__).resolve().parent.parent / "rules" / "alerts"


def _alert_names() -> list[str]:
    """Every alert of rules/alerts/*.yaml: its runbook anchor is its name in lower case (docs/runbooks.md)."""
    return sorted({r["alert"] for path in RULES_DIR.glob("*.yaml")
                   for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
                   for r in g["rules"] if "alert" in r})


def with_runbook(expr: str) -> str:
    """`expr` with a `runbook` label: its alert's runbook anchor (Grafana links cannot lower-case a value)."""
    out = expr
    for alert in _alert_names():
        out = f'label_replace({out}, "runbook", "{alert.lower()}", "alertname", "{alert}")'
    return out


def other_alert_rows() -> str:
    """One series per firing alert that is not about one VMTA x ISP (a pool, a sender, an ISP, a host, a source),
    as Alertmanager notifies them: every critical, the warnings no inhibit rule mutes; value 1."""
    cells = firing('vmta!=""', 'isp!=""')
    critical, warning = firing('severity="critical"'), without_inhibited(firing('severity="warning"'))
    alerts = f"({critical} or {warning})"
    return with_runbook(f"max by ({OTHER_KEYS}) ({alerts} unless {cells})")


def per_incident(cell_expr: str, on: str = CELL) -> str:
    """A per-cell value (aggregated by `on`) on every incident row of that cell."""
    return f"{cell_expr} * on ({on}) group_right () {incident_rows()}"


def incidents() -> Json:
    cell = CELL
    queue = sum_by(cell, sel("pmta_queue_recipients"))
    delivered = sum_by(cell, sel("vmta_isp:pmta_delivered:rate10m"))
    g = Grid()
    g.add(text("How to read this page", "What the panels come from.", INCIDENTS_HELP), 24, 3)
    for title, sev, color, query, muted in (
        ("Critical alerts firing", "critical", "red", firing('severity="critical"'), ""),
        ("Warnings firing", "warning", "orange", without_inhibited(firing('severity="warning"')),
         " A warning Alertmanager inhibits is left out, as in the tables below: every inhibit rule of "
         "alertmanager/alertmanager.yml is mirrored (its critical twin, a host-wide stall muting its per-VMTA "
         "stalls, a block muting the throttling of its VMTA × ISP, WatchtowerDown muting its host, ...)."),
    ):
        g.add(stat(title, f"Prometheus alerts with severity={sev} firing now (the ALERTS series), over every "
                   f"Watchtower alert (hosts, pools, senders, ISPs). The Instance and ISP filters do not apply.{muted}",
                   [prom(f"count({query}) or vector(0)")], "short",
                   thresholds=steps(("green", None), (color, 1)), color_mode="background", graph=False), 6, 4)
    g.add(stat("Pending alerts", "Alert conditions that hold but have not lasted their `for` duration yet: the "
               "next incidents, unless they clear.",
               [prom(f'count(ALERTS{{alertstate="pending", {SITE}, {JOB}}}) or vector(0)')], "short",
               thresholds=steps(("green", None), ("yellow", 1)), graph=False), 6, 4)
    g.add(stat("VMTA × ISP cells in the red", "Cells of the war room at level CRIT: a block (PmtaIspBlock's "
               f"condition: blocklisted responses, ≥ {_pct(BLOCK_BLOCKLISTED_SHARE)} of the attempts or ≥ "
               f"{BLOCK_BLOCKLISTED_MIN}, or reputation/policy bounces), success below 50% or throttled "
               f"share above 50% (≥ {MIN_ATTEMPTS} attempts in 10 minutes, over all the VMTA's pools or in one "
               "pool on its own), or over "
               f"{QUEUE_LEVELS[-1] // 1000}k recipients queued.",
               [prom(f"count({worst_level(ISP)} >= 3) or vector(0)")], "short",
               thresholds=steps(("green", None), ("red", 1)), color_mode="background", graph=False), 6, 4)
    link = ("/d/watchtower-vmta/vmta?${__url_time_range}&${datasource:queryparam}&${infinity:queryparam}"
            "&${cluster:queryparam}&${job:queryparam}&var-instance=${__data.fields.instance}&var-vmta=${__data.fields.vmta}&var-isp=${__data.fields.isp}")
    runbook = "https://github.com/pmta-watchtower/pmta-watchtower/blob/main/docs/runbooks.md#${__data.fields.runbook}"
    g.add(table("Active incidents", "One row per firing alert about a VMTA × ISP (PmtaIspThrottling, PmtaIspBlock, "
                "PmtaSuccessRateDrop, PmtaQueueBacklog, PmtaDeliveryStalled; a warning Alertmanager inhibits "
                "is left out: every inhibit rule of alertmanager/alertmanager.yml, e.g. its critical twin, a "
                "host-wide stall or a block firing), from the ALERTS and ALERTS_FOR_STATE series of the "
                "Prometheus data source: the headline (ISP display name, what, VMTA), severity, how long the "
                "condition has held, and that cell's success, throttled share, queue and time to drain (queue / "
                "delivered per second over 10 minutes; empty = not draining). Click the headline for the status "
                "board on that VMTA × ISP (with the top replies), the alert name for its runbook.", [
                    table_query(per_incident(f"(time() - max by ({INCIDENT_KEYS}) "
                                             f"({sel('ALERTS_FOR_STATE', ISP)}))", INCIDENT_KEYS)),
                    table_query(per_incident(success_ratio(cell))),
                    table_query(per_incident(throttled_ratio(cell))),
                    table_query(per_incident(queue)),
                    table_query(per_incident(f"({queue} / ({delivered} > 0))")),
                ], ["severity", "headline", "alertname", "cluster", "instance", "vmta", "isp"], [
                    column("A", "Active for", "s", None, 0),
                    column("B", "Success", "percentunit", SUCCESS, 1),
                    column("C", "Throttled", "percentunit", THROTTLE, 1),
                    column("D", "Queued", "short", QUEUE, 0),
                    column("E", "Time to drain", "s", steps(("green", None), ("yellow", 3600), ("red", 14400)), 0),
                    link_column("headline", "Status board: ${__data.fields.vmta} × ${__data.fields.isp}", link),
                    link_column("alertname", "Runbook: ${__data.fields.alertname}", runbook),
                    {"matcher": {"id": "byName", "options": "severity"}, "properties": [
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "mappings", "value": [{"type": "value", "options": {
                            "critical": {"color": "red", "index": 0}, "warning": {"color": "orange", "index": 1}}}]}]},
                ], sort_by="severity", sort_desc=False, hidden=("provider", "what", "runbook")), 24, 8)
    g.add(table("Other alerts firing", "One row per firing alert that is not about one VMTA × ISP (so not in Active "
                "incidents): a pool's hard bounces or complaints, a sender's, an ISP's, a host's delivery stall, "
                "Watchtower's own health; every critical, and each warning no inhibit rule of "
                "alertmanager/alertmanager.yml mutes (as the counters above), from the ALERTS and ALERTS_FOR_STATE "
                "series of the Prometheus data source, whatever the Instance and ISP filters. Its labels say what it "
                "is about; the alert name links to its runbook. Alert headlines below has its description.", [
                    table_query(f"(time() - max by ({OTHER_KEYS}) (ALERTS_FOR_STATE{{{SITE}, {JOB}}})) "
                                f"* on ({OTHER_KEYS}) group_right () {other_alert_rows()}"),
                ], ["severity", "alertname", "cluster", "instance", "vmta_pool", "sender", "isp", "vmta", "source"], [
                    column("A", "Active for", "s", None, 0),
                    link_column("alertname", "Runbook: ${__data.fields.alertname}", runbook),
                    {"matcher": {"id": "byName", "options": "severity"}, "properties": [
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                        {"id": "mappings", "value": [{"type": "value", "options": {
                            "critical": {"color": "red", "index": 0}, "warning": {"color": "orange", "index": 1}}}]}]},
                ], sort_by="severity", sort_desc=False, hidden=("runbook",)), 24, 6)
    g.add(table("Alert headlines (Alertmanager)", "Every active alert as Alertmanager holds it (silenced and "
                "inhibited ones left out, so a critical hides its warning twin): the description is the headline "
                "the alert sent, with its links. Read through the Infinity data source from Alertmanager's "
                "GET /api/v2/alerts (the data source's URL: this query adds only its parameters); pick the "
                "Alertmanager API in the variable above.",
                [infinity(ALERTS_QUERY, "", columns=ALERT_COLUMNS, datasource=ALERTMANAGER)],
                [], [
                    {"matcher": {"id": "byName", "options": "Headline"},
                     "properties": [{"id": "custom.width", "value": 900},
                                    {"id": "links", "value": [{"title": "Dashboard",
                                                               "url": "${__data.fields.Dashboard}"}]}]},
                    {"matcher": {"id": "byName", "options": "Runbook"},
                     "properties": [{"id": "links", "value": [{"title": "Runbook", "url": "${__value.raw}",
                                                               "targetBlank": True}]}]},
                    {"matcher": {"id": "byName", "options": "Since"},
                     "properties": [{"id": "unit", "value": "dateTimeFromNow"}]},
                ], sort_by="Severity", sort_desc=False, datasource=ALERTMANAGER), 24, 8)

    g.row("Affected VMTA × ISP cells over time")
    # `@ end()`: the cells are picked once, over the whole range, so each graph shows its cells' lead-up to
    # the alert too (without it, each step only knows the alerts up to that step).
    recent = f"max_over_time({firing_cells(ISP)}[$__range] @ end())"
    only = f" and on ({cell}) {recent}"
    legend = "{{vmta}} × {{isp}}"
    about = ("Only the VMTA × ISP cells (of the selected ISPs) with a firing alert in the dashboard range, over the "
             "whole range (the lead-up too); the red regions are the alerts' start and end (annotations).")
    g.add(timeseries("Success ratio of affected cells", f"Delivered / attempts. {about} {RULE_10M}",
                     [prom(f"({success_ratio(cell)}){only}", legend)], "percentunit", ratio_axis=True,
                     thresholds=SUCCESS), 12, 8)
    g.add(timeseries("Throttled share of affected cells", f"Throttled + reputation deferrals / attempts. {about}",
                     [prom(f"({throttled_ratio(cell)}){only}", legend)], "percentunit", ratio_axis=True,
                     thresholds=THROTTLE), 12, 8)
    g.add(timeseries("Queued recipients of affected cells", f"Recipients queued (PMTA API), with the queue "
                     f"alerts' levels ({QUEUE_SCALE}). {about}",
                     [prom(f"({queue}){only}", legend)], "short", thresholds=QUEUE), 12, 8)
    g.add(timeseries("Time to drain of affected cells", "Queued recipients / delivered per second over 10 "
                     f"minutes: how long the queue takes to empty at the current pace. {about}",
                     [prom(f"({queue} / ({delivered} > 0)){only}", legend)], "s"), 12, 8)
    return dashboard("watchtower-incidents", "PMTA Watchtower / Incidents",
                     "The landing page: what is firing now, with its headline, age and links; per incident the "
                     "affected VMTA × ISP's success, throttled share, queue and time to drain; alert start and "
                     "end marked on every graph.",
                     [PROMETHEUS_VAR, INFINITY_VAR, ALERTMANAGER_VAR, *job_instance_vars(), isp_var()], g,
                     refresh="30s", time_from="now-3h", annotations=[alert_annotation()])


INCIDENTS_HELP = """\
**Active incidents** is built from Prometheus alone (the `ALERTS` and `ALERTS_FOR_STATE` series, joined
with the recording rules); **Alert headlines** shows each alert's own description from Alertmanager
(Infinity data source). Open a headline for the status board on that VMTA × ISP and the SMTP replies
behind it; the [war room](/d/watchtower-warroom/war-room) shows every VMTA × ISP at once."""

ALERT_COLUMNS = (
    ("labels.severity", "Severity", "string"), ("annotations.description", "Headline", "string"),
    ("startsAt", "Since", "timestamp"), ("labels.alertname", "Alert", "string"), ("labels.vmta", "VMTA", "string"),
    ("labels.isp", "ISP", "string"), ("labels.instance", "Host", "string"),
    ("annotations.dashboard_url", "Dashboard", "string"), ("annotations.runbook_url", "Runbook", "string"),
)


# --- war room --------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{x * 100:g}%"


def _k(n: int) -> str:
    return f"{n // 1000}k"


_S, _T, _Q = ([_pct(x) for x in SUCCESS_LEVELS], [_pct(x) for x in THROTTLE_LEVELS], [_k(n) for n in QUEUE_LEVELS])
WAR_ROOM_HELP = f"""\
One row per VMTA, one column per ISP; a cell is the worst of four signals of that VMTA × ISP, as
**ok**, **warn**, **HIGH** or **CRIT** (green, yellow, orange, red): **success** (warn < {_S[0]},
HIGH < {_S[1]}, CRIT < {_S[2]}: dashboard-only levels, no alert judges the 10-minute success ratio),
**throttled share** (warn > {_T[0]}, HIGH > {_T[1]} = `PmtaIspThrottling`, CRIT > {_T[2]}), both judged
as the alerts judge them, over all the VMTA's pools and in each pool on its own (≥ {MIN_ATTEMPTS} attempts
in 10 minutes each), the worse kept; a **block**, always CRIT (`PmtaIspBlock`'s condition: a
blocklisted responses in 15 minutes, ≥ {_pct(BLOCK_BLOCKLISTED_SHARE)} of the attempts or ≥ {BLOCK_BLOCKLISTED_MIN}
(from `other`: ≥ {BLOCK_OTHER_MIN} and ≥ {_pct(BLOCK_BLOCKLISTED_SHARE)}, or ≥ {BLOCK_OTHER_MANY}), or reputation/policy
bounces > {_pct(BLOCK_REJECT_RATIO)} = `PmtaIspBlock` of ≥ {BLOCK_MIN_ATTEMPTS} attempts, over all the pools or in one);
and **queued recipients** (warn > {_Q[0]}, where a throttled cell's alert turns critical,
HIGH > {_Q[1]} = `PmtaQueueBacklog`, CRIT > {_Q[2]} = `PmtaQueueBacklog` critical). The `worst` column
sorts the worst VMTAs to the top. Click a cell for the status board on that VMTA × ISP."""


def warroom() -> Json:
    cell = CELL
    f = (POOL, ISP)
    level = worst_level(*f)
    grid_expr = (f"max by (vmta, isp) ({level})"
                 f' or label_replace(max by (vmta) ({level}), "isp", " worst", "", "")')
    g = Grid()
    g.add(text("Reading the grid", "What a cell means.", WAR_ROOM_HELP), 24, 6)
    for title, expr, what in (
        ("Cells at CRIT", f"count({level} >= 3)", "VMTA × ISP cells at level CRIT (red), blocks included."),
        ("Cells at HIGH or worse", f"count({level} >= 2)", "VMTA × ISP cells at level HIGH or CRIT (orange or red): "
         "see the legend above for which of those levels are an alert's threshold."),
        ("VMTAs with a red cell", f"count(count by (cluster, instance, vmta) ({level} >= 3))",
         "VMTAs with at least one ISP at CRIT: a single-ISP problem counts."),
        ("ISPs with a red cell", f"count(count by (isp) ({level} >= 3))", "ISPs at CRIT on at least one VMTA."),
    ):
        g.add(stat(title, f"{what} {RULE_10M}", [prom(f"{expr} or vector(0)")], "short",
                   thresholds=steps(("green", None), ("red", 1)), color_mode="background", graph=False), 6, 4)
    link = {"title": "Status board: ${__data.fields[0]} × ${__field.name}", "url":
            "/d/watchtower-vmta/vmta?${__url_time_range}&${datasource:queryparam}&${cluster:queryparam}&${job:queryparam}"
            "&${instance:queryparam}&var-vmta=${__data.fields[0]}&var-isp=${__field.name}"}
    g.add(matrix("VMTA × ISP", "Rows VMTAs, columns ISPs, cell = worst of success, throttled share (over all the "
                 "VMTA's pools or in one pool, the worse), block and queue (ok / warn / HIGH / CRIT; the legend "
                 "above says which levels are an alert's; empty = no traffic). Sorted by the ` worst` column. A "
                 f"VMTA on several hosts shows its worst host; filter Instance for one. {RULE_10M}",
                 prom(grid_expr, instant=True, fmt="table"), "vmta", "isp", LEVEL_TEXT, LEVELS, link, " worst"),
          24, 26)
    # Grafana's merge is an outer join: every column keeps only the 25 cells the Level column ranked, or
    # the table lists every cell with traffic (and queues of VMTAs outside the selected pools).
    worst = f"topk(25, {level})"

    def of_worst(expr: str) -> str:
        return f"({expr}) and on ({cell}) {worst}"

    g.add(table("Worst cells", "The 25 worst VMTA × ISP cells with their numbers (the grid's cells, with "
                "the values behind the colour), as the alerts judge them: success and throttled share, the worse of "
                f"the VMTA over all its pools and of each pool on its own (≥ {MIN_ATTEMPTS} attempts in 10 minutes "
                "each); queued recipients and attempts over all its pools; the block signals (blocklisted responses "
                "in 15 minutes over all its pools, the share of attempts bounced for reputation or policy in 15 "
                f"minutes over all its pools, or a pool's own when higher and of ≥ {BLOCK_MIN_ATTEMPTS} attempts). "
                f"{RULE_10M}", [
                    table_query(worst),
                    table_query(of_worst(f"min by ({cell}) ({judged_success(*f)})")),
                    table_query(of_worst(f"max by ({cell}) ({judged_throttled(*f)})")),
                    table_query(of_worst(sum_by(cell, sel("pmta_queue_recipients", ISP)))),
                    table_query(of_worst(f"{sum_by(cell, sel(ATTEMPTS, ISP))} * 600")),
                    table_query(of_worst(sum_by(cell, sel("instance_vmta_isp:pmta_blocklisted:increase15m", ISP)))),
                    table_query(of_worst(judged_rejected(*f))),
                ], ["cluster", "instance", "vmta", "isp"], [
                    column("A", "Level", "none", LEVELS, 0),
                    column("B", "Success", "percentunit", SUCCESS, 1),
                    column("C", "Throttled", "percentunit", THROTTLE, 1),
                    column("D", "Queued", "short", QUEUE, 0),
                    column("E", "Attempts (10m)", "short", None, 0),
                    column("F", "Blocklisted (15m)", "short", None, 0),
                    column("G", "Rep./policy bounced (15m)", "percentunit", None, 1),
                    {"matcher": {"id": "byName", "options": "Value #A"},
                     "properties": [{"id": "mappings", "value": LEVEL_TEXT}]},
                ], sort_by="Level"), 24, 10)
    return dashboard("watchtower-warroom", "PMTA Watchtower / War room",
                     "Every VMTA × ISP at once: a grid coloured by the alert thresholds, readable for 200 VMTAs × "
                     "12 ISPs, and the worst cells with their numbers.",
                     [PROMETHEUS_VAR, *job_instance_vars(), *pool_vmta_isp_vars(vmta=False)], g, refresh="30s",
                     time_from="now-1h", annotations=[alert_annotation()])


DASHBOARDS: dict[str, Callable[[], Json]] = {
    "watchtower-incidents.json": incidents,
    "watchtower-warroom.json": warroom,
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
