"""Small builders for the Grafana JSON that `grafana/build.py` writes: PromQL, targets, panels, layout.

Plain dicts in, plain dicts out (no Grafana SDK), so the committed JSON is exactly what this
file says and regenerating it is byte-for-byte deterministic. Every query goes through `sel()`,
which puts the `cluster`/`job`/`instance` matchers in; every counter goes through `rate()`, which uses
`$__rate_interval`. tests/test_dashboards.py lints the output, not this file.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

PROMETHEUS: Json = {"type": "prometheus", "uid": "${datasource}"}
INFINITY: Json = {"type": "yesoreyeram-infinity-datasource", "uid": "${infinity}"}
ALERTMANAGER: Json = {"type": "yesoreyeram-infinity-datasource", "uid": "${alertmanager}"}
"""An Infinity data source whose URL is Alertmanager's (its /api/v2/alerts carries the annotations)."""
TAG = "pmta-watchtower"

# --- PromQL ---------------------------------------------------------------------------------

SITE = 'cluster=~"$cluster"'
"""The site (docs/scaling.md: each Prometheus has `external_labels: {cluster: ...}`), seen where they meet (federation,
Thanos, Mimir). Where no series has a `cluster` label (one site), the variable is All = `.*`, which matches the absent
label: the panels read as without it. Two sites may both name a host pmta-01:9469: every grouping that keeps a host
keeps its `cluster` too (HOST, CELL, POOL_CELL), as the alerts do (`on (cluster, job, instance, ...)`)."""
JOB = 'job=~"$job"'
INSTANCE = 'instance=~"$instance"'
VMTA = 'vmta=~"$vmta"'
POOL = 'vmta_pool=~"$vmta_pool"'
ISP = 'isp=~"$isp"'
SENDER = 'sender=~"$sender"'
THROTTLED = 'class=~"throttled|reputation"'
HOST = "cluster, job, instance"
"""One Watchtower (one PMTA host) of one site, as the alerts join them."""
CELL = "cluster, instance, vmta, isp"
"""A VMTA x ISP cell of the war room and the incidents (a VMTA lives on one host), and what the VMTA x ISP
alerts judge (their labels): one alert per cell, no `vmta_pool` (rules/alerts/isp.yaml). A pool filter picks the
cells of the VMTAs with attempts in the selected pools (in_pools), whose values stay those of all their pools, as
the alert's."""
POOL_CELL = "cluster, instance, vmta, vmta_pool, isp"
"""One pool's share of a CELL. The VMTA x ISP alerts judge a cell two ways and fire when either judgement meets the
condition: the VMTA over all its pools (ISPs throttle and block the IP: two pools under the volume gate each add
up), and each of its pools on its own (a pool usually carries one sender domain, whose reputation ISPs judge too:
one pool throttled beside another's clean deliveries). The cell shows the worse of the two (worse())."""


POLLED = ("pmta_queue_", "pmta_status_")
POLL_GAP = "5m"
"""A poll of PMTA's API that fails or misses its deadline leaves its pmta_queue_*/pmta_status_* series
absent (stale) for a scrape (docs/metrics.md); the queue alerts read them through
last_over_time(...[5m]), and so do the panels: one missed poll neither drops a queue from a sum nor
turns a red war-room cell green. A queue gone from a complete poll (emptied, or beyond a top-N listing) is
served as 0 for 10 minutes (exporter.queues.VANISHED_AS_ZERO), so the window never counts it at its last value."""


def sel(metric: str, *matchers: str) -> str:
    """`metric{cluster=~"$cluster", job=~"$job", instance=~"$instance", ...}`: every per-host series is selected so
    (the PMTA API gauges as their last value of the last POLL_GAP)."""
    selector = metric + "{" + ", ".join((SITE, JOB, INSTANCE, *matchers)) + "}"
    return f"last_over_time({selector}[{POLL_GAP}])" if metric.startswith(POLLED) else selector


def sel_cluster(metric: str, *matchers: str) -> str:
    """For cluster-wide recording rules, which are summed `without (instance)` (they keep `cluster` and `job`): no
    instance matcher."""
    return metric + "{" + ", ".join((SITE, JOB, *matchers)) + "}"


def rate(metric: str, *matchers: str) -> str:
    return f"rate({sel(metric, *matchers)}[$__rate_interval])"


def total(metric: str, *matchers: str) -> str:
    """How many over the dashboard's time range (a table's counts next to a 1-day ratio): increase over $__range."""
    return f"increase({sel(metric, *matchers)}[$__range])"


def sum_by(by: str, expr: str) -> str:
    return f"sum by ({by}) ({expr})" if by else f"sum({expr})"


def worst_job(by: str, expr: str) -> str:
    """A cluster-wide ratio rule (it keeps `job`) folded over the selected jobs: the worst one per `by`, so two
    jobs never draw two series under one legend (a ratio cannot be summed)."""
    return f"max by ({by}) ({expr})"


def ratio(num: str, den: str) -> str:
    """num / den, 0 (not absent) where den has traffic but num has no series, absent where den is 0.

    Both sides must already be aggregated to the same labels: numerators and denominators are
    summed first and divided last, never averaged (as in rules/recording.yaml).
    """
    return f"({num} or 0 * {den}) / ({den} > 0)"


def rule_ratio(by: str, num_rule: str, den_rule: str, num_matchers: tuple[str, ...], matchers: tuple[str, ...]) -> str:
    """Ratio of two `vmta_isp:` recording rules (they keep `instance`), re-aggregated by `by`."""
    num = sum_by(by, sel(num_rule, *matchers, *num_matchers))
    den = sum_by(by, sel(den_rule, *matchers))
    return ratio(num, den)


def success_ratio(by: str, *matchers: str) -> str:
    return rule_ratio(by, "vmta_isp:pmta_delivered:rate10m", "vmta_isp:pmta_attempts:rate10m", (), matchers)


def deferral_ratio(by: str, *matchers: str) -> str:
    return rule_ratio(by, "vmta_isp:pmta_deferred:rate10m", "vmta_isp:pmta_attempts:rate10m", (), matchers)


def throttled_ratio(by: str, *matchers: str) -> str:
    return rule_ratio(
        by, "vmta_isp:pmta_deferred_by_class:rate10m", "vmta_isp:pmta_attempts:rate10m", (THROTTLED,), matchers
    )


def bounce_share(by: str, *matchers: str) -> str:
    return rule_ratio(by, "vmta_isp:pmta_bounced:rate10m", "vmta_isp:pmta_attempts:rate10m", (), matchers)


def complaint_ratio(by: str, *matchers: str) -> str:
    """FBL complaints / delivered over the rate interval (user complaints only, as the daily rule)."""
    num = sum_by(by, rate("pmta_complaints_total", *matchers, 'feedback_type!~"not-spam|auth-failure"'))
    den = sum_by(by, rate("pmta_delivered_total", *matchers))
    return ratio(num, den)


def pool_of_vmta(*matchers: str) -> str:
    """One series of value 1 per (cluster, job, instance, vmta) carrying the VMTA's busiest `vmta_pool`.

    Queue gauges only have {vmta, isp}; multiplying them by this with `group_left (vmta_pool)`
    attributes a VMTA's queue to one pool (a VMTA in several pools is not counted twice). The busiest pool is
    picked over all pools, then the pool filter applied: picked among the selected pools only, a pool that
    carries 1 attempt of a VMTA's 100 would be charged its whole queue.
    """
    pool_matchers = tuple(m for m in matchers if m == POOL)
    others = tuple(m for m in matchers if m != POOL)
    attempts = sum_by(f"{HOST}, vmta, vmta_pool", sel("vmta_isp:pmta_attempts:rate10m", *others))
    busiest = f"topk by ({HOST}, vmta) (1, {attempts})"
    if pool_matchers:
        busiest = (f"({busiest} and on ({HOST}, vmta, vmta_pool) "
                   f"{sel('vmta_isp:pmta_attempts:rate10m', *matchers)})")
    return f"group by ({HOST}, vmta, vmta_pool) ({busiest})"


def unattributed(queue: str, pool_matchers: tuple[str, ...]) -> str:
    """One series of value 1 per (cluster, job, instance, vmta) of `queue` that has no attempts series at all (a new
    VMTA, a queue PMTA holds back before its first attempt), with `vmta_pool="none"`: without it such a queue dropped
    out of every pool-joined panel. Kept only when `none` passes the pool filter, as a record without a pool."""
    others = tuple(m for m in pool_matchers if m != POOL)
    standin = (f"label_replace(group by ({HOST}, vmta) ({queue}) unless on ({HOST}, vmta) "
               f'{sel(ATTEMPTS_RULE, *others)}, "vmta_pool", "none", "", "")')
    if POOL not in pool_matchers:
        return standin
    regex = POOL.split("=~", 1)[1]  # a label_replace regex is anchored, as a =~ matcher is
    return (f'group without (kept) (label_replace({standin}, "kept", "1", "vmta_pool", {regex}) '
            'and on (kept) label_replace(vector(1), "kept", "1", "", ""))')


def queue_by_pool(metric: str, by: str, queue_matchers: tuple[str, ...], pool_matchers: tuple[str, ...],
                  agg: str = "sum") -> str:
    """A queue gauge by `by` (pool labels included), summed, or with agg="max" the largest VMTA x ISP queue (the
    quantity the queue alerts judge)."""
    queue = sel(metric, *queue_matchers)
    if agg != "sum":
        queue = f"sum by ({HOST}, vmta, isp) ({queue})"
    pools = f"{pool_of_vmta(*pool_matchers)} or on ({HOST}, vmta) {unattributed(queue, pool_matchers)}"
    joined = f"{queue} * on ({HOST}, vmta) group_left (vmta_pool) ({pools})"
    return f"{agg} by ({by}) ({joined})" if by else f"{agg}({joined})"


def queue_or_zero(expr: str) -> str:
    """`expr`, or 0 while a selected host's PMTA API is read but no queue matches (everything delivered): a
    queue counter that reads "No data" on a healthy system looks broken. No host read, or a selected host whose
    API is down (its queue gauges are gone, a 0 would hide them): still "No data"."""
    up = sel("watchtower_pmta_api_up")
    return f"({expr}) or on () (0 * count({up} == 1) unless on () ({up} == 0))"


ATTEMPTS_RULE = "vmta_isp:pmta_attempts:rate10m"
MIN_ATTEMPTS = 50
"""The throttling alert's floor: a VMTA x ISP cell with fewer attempts in 10 minutes is not judged."""


def busy(by: str, *matchers: str) -> str:
    """Cells (grouped `by`) with at least MIN_ATTEMPTS attempts in the last 10 minutes, as the alert."""
    return f"({sum_by(by, sel(ATTEMPTS_RULE, *matchers))} * 600 >= {MIN_ATTEMPTS})"


def gated(expr: str, by: str, *matchers: str) -> str:
    """`expr` (aggregated `by`) only where the cell has enough attempts to be judged."""
    return f"({expr} and on ({by}) {busy(by, *matchers)})"


def levels(expr: str, op: str, cuts: tuple[float, ...]) -> str:
    """0..len(cuts): how many thresholds `expr` is past (`op` is `<` for success, `>` otherwise)."""
    return "(" + " + ".join(f"({expr} {op} bool {c})" for c in cuts) + ")"


# The cell levels, 0 ok, 1 warn, 2 HIGH, 3 CRIT: the one place their thresholds are written.
SUCCESS_LEVELS = (0.95, 0.8, 0.5)
"""Success below: dashboard-only levels (no alert judges the 10-minute success ratio; PmtaSuccessRateDrop
compares the hour with last week's)."""
THROTTLE_LEVELS = (0.1, 0.3, 0.5)
"""Throttled share above: 30% is PmtaIspThrottling's threshold (rules/alerts/isp.yaml); 10% and 50% are the
dashboards' own."""
QUEUE_LEVELS = (10_000, 50_000, 200_000)
"""Recipients queued for one VMTA x ISP above: 10k is where PmtaIspThrottling turns critical, 50k and 200k are
PmtaQueueBacklog's warning and critical (rules/alerts/isp.yaml, queue.yaml). The only queue scale of the
dashboards, and only for per-VMTA x ISP queues (a pool's or a host's sum is another quantity)."""
BLOCK_REJECT_RATIO = 0.05
BLOCK_MIN_ATTEMPTS = 50
BLOCK_OTHER_MIN = 10
BLOCK_OTHER_MANY = 100
BLOCK_BLOCKLISTED_SHARE = 0.01
BLOCK_BLOCKLISTED_MIN = 10
"""PmtaIspBlock's condition (rules/alerts/isp.yaml): blocklisted responses in 15 minutes from a named provider that
are >= BLOCK_BLOCKLISTED_SHARE of the VMTA's attempts or >= BLOCK_BLOCKLISTED_MIN (from `other`, every small domain
together, >= BLOCK_OTHER_MIN that are also >= BLOCK_BLOCKLISTED_SHARE, or >= BLOCK_OTHER_MANY), or >
BLOCK_REJECT_RATIO of >= BLOCK_MIN_ATTEMPTS attempts in 15 minutes bounced for reputation or policy."""


def over_pools(matchers: tuple[str, ...]) -> tuple[str, ...]:
    """`matchers` without the pool filter: a CELL is judged on all the VMTA's pools, as the alerts judge it."""
    return tuple(m for m in matchers if m != POOL)


def worse(agg: str, whole: str, per_pool: str) -> str:
    """Per CELL, the worse (`agg`: min or max) of `whole` (per CELL: the VMTA over all its pools) and `per_pool`
    (per POOL_CELL: each pool on its own), each where its own gate passes: what the alerts judge."""
    return f"{agg} by ({CELL}) ({whole} or {per_pool})"


def in_pools(expr: str, *matchers: str) -> str:
    """`expr` (per CELL) only for the cells with attempts in the selected pools, when `matchers` filter pools."""
    if POOL not in matchers:
        return expr
    return f"({expr} and on ({CELL}) {sel(ATTEMPTS_RULE, *matchers)})"


def rejected(level: str, *matchers: str) -> str:
    """PmtaIspBlock's ratio branch at `level` ("instance_vmta_isp": the VMTA over all its pools; "vmta_isp": each
    pool): the share bounced for reputation or policy where it is past the threshold, of enough attempts."""
    return (f"(({sel(f'{level}:pmta_bounced_reputation_policy:ratio_rate15m', *matchers)} > {BLOCK_REJECT_RATIO})"
            f" and ({sel(f'{level}:pmta_attempts:rate15m', *matchers)} * 900 >= {BLOCK_MIN_ATTEMPTS}))")


def blocked(*matchers: str) -> str:
    """1 per CELL where PmtaIspBlock's condition holds now (its `for` aside), from the rules it reads: blocklisted
    responses over all the VMTA's pools (a share of its attempts or many), or the share bounced for reputation or
    policy over all its pools or in one of its pools on its own."""
    every = over_pools(matchers)
    listed = "instance_vmta_isp:pmta_blocklisted:increase15m"
    named, other = sel(listed, *every, 'isp!="other"'), sel(listed, *every, 'isp="other"')
    attempts = sel("instance_vmta_isp:pmta_attempts:rate15m", *every)
    cond = (f"(({named} > 0) and ({named} / ({attempts} * 900) >= {BLOCK_BLOCKLISTED_SHARE}))"
            f" or ({named} >= {BLOCK_BLOCKLISTED_MIN})"
            f" or (({other} >= {BLOCK_OTHER_MIN}) and ({other} / ({attempts} * 900) >= {BLOCK_BLOCKLISTED_SHARE}))"
            f" or ({other} >= {BLOCK_OTHER_MANY})"
            f" or {rejected('instance_vmta_isp', *every)} or {rejected('vmta_isp', *every)}")
    return in_pools(f"group by ({CELL}) ({cond})", *matchers)


def judged_rejected(*matchers: str) -> str:
    """The share of attempts bounced for reputation or policy in 15 minutes per CELL: over all the VMTA's pools, or
    a pool's own share where it is higher and that pool has enough attempts for PmtaIspBlock to judge it."""
    every = over_pools(matchers)
    whole = sel("instance_vmta_isp:pmta_bounced_reputation_policy:ratio_rate15m", *every)
    pools = (f"({sel('vmta_isp:pmta_bounced_reputation_policy:ratio_rate15m', *every)} and "
             f"({sel('vmta_isp:pmta_attempts:rate15m', *every)} * 900 >= {BLOCK_MIN_ATTEMPTS}))")
    return in_pools(worse("max", whole, pools), *matchers)


def judged_success(*matchers: str) -> str:
    """The success share per CELL, the worse of the VMTA over all its pools and of each of its pools on its own,
    each with enough attempts to judge (as the alerts judge a cell)."""
    every = over_pools(matchers)
    whole = gated(success_ratio(CELL, *every), CELL, *every)
    pools = gated(success_ratio(POOL_CELL, *every), POOL_CELL, *every)
    return in_pools(worse("min", whole, pools), *matchers)


def judged_throttled(*matchers: str) -> str:
    """The throttled share per CELL, the worse of the VMTA over all its pools and of each of its pools on its own,
    each with enough attempts to judge (as PmtaIspThrottling judges a cell)."""
    every = over_pools(matchers)
    whole = gated(throttled_ratio(CELL, *every), CELL, *every)
    pools = gated(throttled_ratio(POOL_CELL, *every), POOL_CELL, *every)
    return in_pools(worse("max", whole, pools), *matchers)


def worst_level(*matchers: str) -> str:
    """Per CELL: the worst of its signals, as 0 ok, 1 warn, 2 HIGH, 3 CRIT. Success and throttled share are
    judged as the alerts judge them, the worse of the VMTA over all its pools and of each pool on its own
    (SUCCESS_LEVELS, THROTTLE_LEVELS; >= MIN_ATTEMPTS attempts in 10 minutes, per judgement), a block (PmtaIspBlock's
    condition) is CRIT, and the queue (QUEUE_LEVELS) has no pool (a VMTA without any attempts series counts as pool
    `none`, as in queue_by_pool)."""
    succ = levels(judged_success(*matchers), "<", SUCCESS_LEVELS)
    thr = levels(judged_throttled(*matchers), ">", THROTTLE_LEVELS)
    blk = f"(3 * {blocked(*matchers)})"
    # Queue gauges have no vmta_pool: keep the cells of VMTAs active in the selected pools (at any ISP), even
    # a cell with no attempt at all (a stalled queue is the worst case), and those of VMTAs with no attempts
    # series at all (pool `none`, as unattributed(): a new VMTA's backlog still pages).
    pool_matchers = tuple(m for m in matchers if m != ISP)
    queue_sel = sel("pmta_queue_recipients", *[m for m in matchers if "vmta_pool" not in m])
    vmtas = (f"group by (cluster, instance, vmta) ({sel(ATTEMPTS_RULE, *pool_matchers)})"
             f" or group by (cluster, instance, vmta) ({unattributed(queue_sel, pool_matchers)})")
    que = levels(f"({sum_by(CELL, queue_sel)} and on (cluster, instance, vmta) ({vmtas}))", ">", QUEUE_LEVELS)
    parts = [f'label_replace({e}, "signal", "{n}", "", "")' for n, e in (
        ("success", succ), ("throttled", thr), ("blocked", blk), ("queue", que))]
    return f"max by ({CELL}) ({' or '.join(parts)})"


def or_zero(expr: str) -> str:
    """`expr`, or 0 while Watchtower is scraped but the counter has no series yet (no event so far).

    A counter series appears with its first event, so "no complaint yet" would read "No data";
    with no Watchtower target selected at all the panel still says "No data".
    """
    return f"({expr}) or on () (0 * count({sel('watchtower_build_info')}))"


def nonzero(expr: str) -> str:
    """Only the points above 0: a breakdown by class or reason keeps the series that happened, so a
    legend lists the 3 classes seen, not the 18 that could be."""
    return f"({expr}) > 0"


def quantile(q: float, bucket_expr: str, by: str = "") -> str:
    """`histogram_quantile` of summed buckets; `>= 0` drops the NaN of a window with no observation (a
    legend would read "NaN"), as the recording rules do."""
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({bucket_expr})) >= 0"


# --- targets ----------------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> Json:
    return {
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
    }


def table_query(expr: str) -> Json:
    return prom(expr, instant=True, fmt="table")


def infinity(url: str, root_selector: str, fmt: str = "table", columns: tuple[tuple[str, str, str], ...] = (),
             datasource: Json = INFINITY) -> Json:
    """A GET on an HTTP API (Watchtower's, or Alertmanager's alerts) through the Infinity data source (URL relative
    to its base URL). The method is pinned to GET: the dashboards never write.

    `columns` are (selector, title, type) triples; none means every field. Root selectors are
    GJSON, which the Infinity backend parser tries first in every version (then JSONata).
    """
    return {
        "columns": [{"selector": sel, "text": title, "type": kind} for sel, title, kind in columns],
        "datasource": datasource,
        "filters": [],
        "format": fmt,
        "parser": "backend",
        "root_selector": root_selector,
        "source": "url",
        "type": "json",
        "url": url,
        "url_options": {"data": "", "method": "GET"},
    }


# --- field config -------------------------------------------------------------------------------


def steps(*pairs: tuple[str, float | None]) -> Json:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


GREEN = steps(("green", None))
LEVELS = steps(("green", None), ("yellow", 1), ("orange", 2), ("red", 3))
LEVEL_TEXT = [{"type": "value", "options": {
    "0": {"text": "ok", "index": 0}, "1": {"text": "warn", "index": 1}, "2": {"text": "HIGH", "index": 2},
    "3": {"text": "CRIT", "index": 3}}}]
"""The cell levels' names: HIGH is no alert's name (success below 80% pages nobody)."""
SUCCESS = steps(("red", None), *zip(("orange", "yellow", "green"), sorted(SUCCESS_LEVELS), strict=True))
THROTTLE = steps(("green", None), *zip(("yellow", "orange", "red"), THROTTLE_LEVELS, strict=True))
QUEUE = steps(("green", None), *zip(("yellow", "orange", "red"), QUEUE_LEVELS, strict=True))
DEFERRAL = steps(("green", None), ("yellow", 0.2), ("orange", 0.4), ("red", 0.6))
HARD_BOUNCE = steps(("green", None), ("yellow", 0.02), ("red", 0.05))
"""PmtaHardBounceRate's and PmtaSenderHardBounceRate's 2% / 5%, for their hourly hard-bounce ratios only (the
10-minute bounce share of attempts is another quantity: no alert judges it, and it has no colour)."""
COMPLAINT = steps(("green", None), ("yellow", 0.001), ("red", 0.003))
UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red", "index": 0},
                                          "1": {"text": "UP", "color": "green", "index": 1}}}]


def _targets(targets: list[Json]) -> list[Json]:
    return [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]


def _base(kind: str, title: str, description: str, targets: list[Json], datasource: Json = PROMETHEUS) -> Json:
    panel: Json = {"type": kind, "title": title, "description": description}
    if targets:
        panel["datasource"] = datasource
        panel["targets"] = _targets(targets)
    return panel


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    *,
    stack: bool = False,
    bars: bool = False,
    ratio_axis: bool = False,
    thresholds: Json | None = None,
    legend: str = "table",
) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "fillOpacity": 60 if stack or bars else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stack else "none"},
            "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
        },
        "min": 0,
        "thresholds": thresholds or GREEN,
    }
    if ratio_axis:
        defaults["max"] = 1
    panel = _base("timeseries", title, description, targets)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        "legend": {
            "calcs": ["mean", "max", "lastNotNull"] if legend == "table" else [],
            "displayMode": legend,
            "placement": "bottom",
            "showLegend": True,
            "sortBy": "Max",
            "sortDesc": True,
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    *,
    thresholds: Json | None = None,
    mappings: list[Json] | None = None,
    color_mode: str = "value",
    graph: bool = True,
) -> Json:
    """A single number; `graph` False: no sparkline, so its Prometheus queries are instant (one point, not a
    range of them)."""
    if not graph:
        targets = [{**t, "instant": True, "range": False} if "expr" in t else t for t in targets]
    panel = _base("stat", title, description, targets)
    panel["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "color": {"mode": "thresholds"},
            "mappings": mappings or [],
            "thresholds": thresholds or GREEN,
        },
        "overrides": [],
    }
    panel["options"] = {
        "colorMode": color_mode,
        "graphMode": "area" if graph else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "auto",
    }
    return panel


def bargauge(
    title: str, description: str, targets: list[Json], unit: str, *, thresholds: Json | None = None,
    max_: float | None = None,
) -> Json:
    """Horizontal bars; ratios need `max_` (else Grafana scales the longest bar to full width)."""
    panel = _base("bargauge", title, description, targets)
    defaults: Json = {"unit": unit, "color": {"mode": "thresholds"}, "min": 0, "thresholds": thresholds or GREEN}
    if max_ is not None:
        defaults["max"] = max_
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        "displayMode": "gradient",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
    }
    return panel


def status_history(title: str, description: str, targets: list[Json], unit: str, thresholds: Json,
                   *, max_: float = 1, mappings: list[Json] | None = None) -> Json:
    """One row per series, one cell per interval, coloured by thresholds (Grafana core panel)."""
    panel = _base("status-history", title, description, targets)
    panel["interval"] = "1m"
    panel["maxDataPoints"] = 120
    panel["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "color": {"mode": "thresholds"},
            "custom": {"fillOpacity": 80, "lineWidth": 0},
            "min": 0,
            "max": max_,
            "mappings": mappings or [],
            "thresholds": thresholds,
        },
        "overrides": [],
    }
    panel["options"] = {
        "colWidth": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "rowHeight": 0.9,
        "showValue": "never",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel


def column(ref: str, name: str, unit: str, thresholds: Json | None = None, decimals: int | None = None) -> Json:
    """Table override for the `Value #<ref>` column of a merged instant query: name, unit, cell colour."""
    props: list[Json] = [{"id": "displayName", "value": name}, {"id": "unit", "value": unit}]
    if decimals is not None:
        props.append({"id": "decimals", "value": decimals})
    if thresholds:
        props += [
            {"id": "color", "value": {"mode": "thresholds"}},
            {"id": "thresholds", "value": thresholds},
            {"id": "custom.cellOptions", "value": {"mode": "basic", "type": "color-background"}},
        ]
    return {"matcher": {"id": "byName", "options": f"Value #{ref}"}, "properties": props}


def level_column(ref: str, name: str) -> Json:
    """A column of cell levels (0-3): coloured and named as the war room's cells (LEVELS, LEVEL_TEXT)."""
    out = column(ref, name, "none", LEVELS, 0)
    out["properties"].append({"id": "mappings", "value": LEVEL_TEXT})
    return out


def link_column(field: str, title: str, url: str) -> Json:
    return {"matcher": {"id": "byName", "options": field}, "properties": [{"id": "links", "value": [
        {"title": title, "url": url}]}]}


def table(
    title: str,
    description: str,
    targets: list[Json],
    keys: list[str],
    columns: list[Json],
    *,
    sort_by: str | None = None,
    sort_desc: bool = True,
    datasource: Json = PROMETHEUS,
    hidden: tuple[str, ...] = (),
) -> Json:
    """Instant queries merged into one row per `keys` tuple, one column per query."""
    panel = _base("table", title, description, targets, datasource)
    order = {k: i for i, k in enumerate(keys)}
    order.update({f"Value #{t['refId']}": len(keys) + i for i, t in enumerate(panel.get("targets", []))})
    # Hidden columns stay in the frame (custom.hidden), so data links can still use their values.
    hide = [{"matcher": {"id": "byName", "options": h}, "properties": [{"id": "custom.hidden", "value": True}]}
            for h in hidden]
    panel["fieldConfig"] = {"defaults": {"unit": "short", "custom": {"align": "auto", "filterable": True}},
                            "overrides": columns + hide}
    panel["options"] = {
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""},
        "showHeader": True,
        "sortBy": [{"desc": sort_desc, "displayName": sort_by}] if sort_by else [],
    }
    if datasource["type"] == "prometheus":
        panel["transformations"] = [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "indexByName": order,
                                           "renameByName": {}}},
        ]
    return panel


def matrix(title: str, description: str, target: Json, row: str, col: str, mappings: list[Json], thresholds: Json,
           link: Json, sort_by: str) -> Json:
    """One instant query pivoted into a grid: a row per `row` label value, a column per `col` value.

    Grafana's core *Grouping to matrix* transformation; cells are coloured by `thresholds` and
    their text comes from `mappings`. `link` applies to every cell (`${__field.name}` is the column).
    """
    panel = _base("table", title, description, [target])
    panel["fieldConfig"] = {
        "defaults": {
            "unit": "none", "decimals": 0, "mappings": mappings, "thresholds": thresholds,
            "color": {"mode": "thresholds"}, "links": [link],
            "custom": {"align": "center", "cellOptions": {"type": "color-background", "mode": "basic"},
                       "filterable": False, "width": 70},
        },
        "overrides": [{"matcher": {"id": "byName", "options": f"{row}\\{col}"},
                       "properties": [{"id": "custom.width", "value": 160},
                                      {"id": "custom.cellOptions", "value": {"type": "auto"}},
                                      {"id": "links", "value": []}]},
                      {"matcher": {"id": "byName", "options": sort_by},
                       "properties": [{"id": "links", "value": []}, {"id": "custom.width", "value": 80}]}],
    }
    panel["options"] = {"cellHeight": "sm", "showHeader": True, "footer": {"show": False, "reducer": ["sum"],
                                                                            "countRows": False, "fields": ""},
                        "sortBy": [{"desc": True, "displayName": sort_by}]}
    panel["transformations"] = [{"id": "groupingToMatrix", "options": {
        "columnField": col, "rowField": row, "valueField": "Value", "emptyValue": "null"}}]
    return panel


def heatmap(title: str, description: str, targets: list[Json], unit: str) -> Json:
    panel = _base("heatmap", title, description, targets)
    panel["maxDataPoints"] = 60
    panel["fieldConfig"] = {"defaults": {"unit": "cps", "custom": {"hideFrom": {"legend": False, "tooltip": False,
                                                                                  "viz": False}}},
                            "overrides": []}
    panel["options"] = {
        "calculate": False,
        "cellGap": 1,
        "cellValues": {"unit": "cps"},
        "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False, "scale": "exponential",
                  "scheme": "Oranges", "steps": 64},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "show": True, "yHistogram": False},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
    }
    return panel


def node_graph(title: str, description: str, targets: list[Json], arcs: list[tuple[str, str]]) -> Json:
    panel = _base("nodeGraph", title, description, targets, INFINITY)
    panel["fieldConfig"] = {"defaults": {"unit": "short"}, "overrides": [
        {"matcher": {"id": "byName", "options": field},
         "properties": [{"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}]} for field, color in arcs]}
    panel["options"] = {"edges": {"mainStatUnit": "short", "secondaryStatUnit": "short"},
                        "nodes": {"arcs": [{"color": color, "field": field} for field, color in arcs],
                                  "mainStatUnit": "short", "secondaryStatUnit": "short"}}
    return panel


def text(title: str, description: str, markdown: str) -> Json:
    return {"type": "text", "title": title, "description": description,
            "options": {"code": {"language": "plaintext", "showLineNumbers": False, "showMiniMap": False},
                        "content": markdown, "mode": "markdown"}}


# --- variables ----------------------------------------------------------------------------------


def datasource_var(name: str = "datasource", plugin: str = "prometheus", label: str = "Data source",
                   regex: str = "") -> Json:
    """A data source picker; `regex` filters instance names (two variables of one plugin type)."""
    return {"hide": 0, "includeAll": False, "label": label, "multi": False, "name": name, "options": [],
            "query": plugin, "refresh": 1, "regex": regex, "skipUrlSync": False, "type": "datasource"}


def query_var(name: str, label: str, query: str, *, all_value: str | None = ".*", description: str = "") -> Json:
    """A multi-value Prometheus label_values() variable with an All option, refreshed on time range change.

    `all_value` None: All means the values found (Grafana sends `(v1|v2|...)`), never "anything".
    """
    return {
        "allValue": all_value,
        "datasource": PROMETHEUS,
        "definition": query,
        "description": description,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }


def textbox_var(name: str, label: str, description: str) -> Json:
    return {"description": description, "hide": 0, "label": label, "name": name, "options": [], "query": "",
            "skipUrlSync": False, "type": "textbox"}


def custom_var(name: str, label: str, values: list[str], description: str) -> Json:
    """A fixed list of values; the first one is selected when the dashboard loads."""
    return {"description": description, "hide": 0, "includeAll": False, "label": label, "multi": False,
            "name": name, "options": [], "query": ",".join(values), "skipUrlSync": False, "type": "custom"}


def job_instance_vars() -> list[Json]:
    """cluster, job and instance, each list narrowed by the ones before it."""
    return [
        # allValue `.*`, not the values found: with one site no series has a `cluster` label, the list is empty, and
        # All of an empty list would be `()`, which matches nothing; `.*` matches the absent label (every series).
        query_var("cluster", "Cluster", "label_values(watchtower_build_info, cluster)", all_value=".*",
                  description="Site: the `cluster` external label of its Prometheus (docs/scaling.md), seen through "
                              "federation, Thanos or Mimir. Empty with one site: All then reads every series."),
        # No allValue: All = the jobs that scrape a Watchtower (`.+` would be every target of a
        # shared Prometheus, e.g. in the `up` panel).
        query_var("job", "Job", f"label_values(watchtower_build_info{{{SITE}}}, job)", all_value=None,
                  description="Prometheus job(s) scraping Watchtower."),
        query_var("instance", "Instance", f"label_values(watchtower_build_info{{{SITE}, {JOB}}}, instance)",
                  # `.*`, not `.+`: Grafana puts a custom All value into the replies panels' API URLs as it is, and
                  # a query string reads `+` as a space (the hub refused `host=. `); every series has an instance
                  all_value=".*", description="Watchtower instances, one per PMTA host."),
    ]


# --- layout -------------------------------------------------------------------------------------


class Grid:
    """Flows panels left to right on Grafana's 24-column grid; rows start a new line.

    Panels after a collapsed row go inside that row (Grafana's JSON for collapsed rows), so
    their queries only run when the row is opened.
    """

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self._into: list[Json] = self.panels
        self._x = self._y = self._line_h = 0
        self._id = 0

    def _next_id(self) -> int:
        self._id += 1
        return self._id

    def _newline(self) -> None:
        self._y += self._line_h
        self._x = self._line_h = 0

    def row(self, title: str, *, collapsed: bool = False, repeat: str | None = None) -> None:
        self._newline()
        row: Json = {"type": "row", "title": title, "collapsed": collapsed, "id": self._next_id(),
                     "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y}, "panels": []}
        if repeat:
            row["repeat"] = repeat
        self.panels.append(row)
        self._into = row["panels"] if collapsed else self.panels
        self._y += 1

    def add(self, panel: Json, w: int, h: int) -> None:
        if self._x + w > 24:
            self._newline()
        placed = {"id": self._next_id(), "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y}, **panel}
        self._into.append(placed)
        self._x += w
        self._line_h = max(self._line_h, h)


def alert_annotation(matchers: str = "") -> Json:
    """Firing Prometheus alerts as annotation regions (start to end) on every time series panel."""
    extra = f", {matchers}" if matchers else ""
    return {
        "datasource": PROMETHEUS,
        "enable": True,
        "expr": f'ALERTS{{alertstate="firing", {SITE}, {JOB}{extra}}}',
        "hide": False,
        "iconColor": "red",
        "name": "Firing alerts",
        "step": "1m",
        "tagKeys": "severity,vmta,isp",
        "textFormat": "{{alertname}} {{severity}}: {{vmta}}{{vmta_pool}}{{sender}} {{isp}} {{instance}}",
        "titleFormat": "{{alertname}}",
        "useValueForTime": False,
    }


def dashboard(uid: str, title: str, description: str, variables: list[Json], grid: Grid,
              *, refresh: str = "1m", time_from: str = "now-6h", annotations: list[Json] | None = None) -> Json:
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }, *(annotations or [])]},
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"asDropdown": True, "icon": "external link", "includeVars": True, "keepTime": True,
                   "tags": [TAG], "targetBlank": False, "title": "Watchtower dashboards", "type": "dashboards"}],
        "panels": grid.panels,
        "refresh": refresh,
        "schemaVersion": 39,
        "tags": [TAG, "pmta"],
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
