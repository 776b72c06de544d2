"""Record batches -> the `pmta_*` counter and histogram series, held as plain dicts.

This is the hot path. Each batch is tallied into chunk-local dicts keyed by label tuples, then
merged into the global series once per distinct key, so the per-row work is a few dict lookups
(label normalisation, ISP, sender and reply class are all cached). The series are served by a
custom collector (client_python's pattern for state the exporter owns), which also lets the
daemon persist exactly the series that changed alongside each checkpoint.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.metrics import (
    PLACEHOLDER_NONE,
    PLACEHOLDER_OTHER,
    PLACEHOLDER_OVERFLOW,
    PLACEHOLDER_UNKNOWN,
    SPECS,
    SelfMetrics,
)
from exporter.records import Columns, RecordBatch
from exporter.timeparse import parse_pmta_time

BOUNCE_CATEGORIES = frozenset({
    "bad-configuration", "bad-connection", "bad-domain", "bad-mailbox", "content-related", "inactive-mailbox",
    "invalid-sender", "message-expired", "no-answer-from-host", "other", "policy-related", "protocol-errors",
    "quota-issues", "relaying-issues", "routing-errors", "spam-related", "virus-related",
})
FEEDBACK_TYPES = frozenset({"abuse", "auth-failure", "fraud", "not-spam", "other", "virus"})
DSN_ACTIONS = frozenset({"delivered", "relayed", "failed", "delayed", "expanded"})

COUNTERS = tuple(name for name, spec in SPECS.items() if spec.group == "records" and spec.kind == "counter")
HISTOGRAMS = tuple(name for name, spec in SPECS.items() if spec.group == "records" and spec.kind == "histogram")

Key = tuple[str, ...]
Lookup = Callable[[Columns, list[list[str]]], list[tuple[str, str] | None]]

_CACHE_LIMIT = 100_000


def _domain(address: str) -> str:
    return address[address.rfind("@") + 1 :].lower() if "@" in address else ""


class _Capped:
    """Admits label values up to a cap; later values map to `overflow` (bounded cardinality)."""

    def __init__(self, label: str, cap: int, on_overflow: Callable[[str], None]) -> None:
        self.label = label
        self.cap = cap
        self.admitted: set[str] = set()
        self.on_overflow = on_overflow

    def __call__(self, value: str) -> str:
        if value in self.admitted:
            return value
        if len(self.admitted) < self.cap:
            self.admitted.add(value)
            return value
        self.on_overflow(self.label)
        return PLACEHOLDER_OVERFLOW


class RecordAggregator(Collector):
    """Holds every `pmta_*` record series; `apply()` folds a batch in, `collect()` serves it."""

    def __init__(
        self,
        isp_of: Callable[[str, str], str],
        class_of: Callable[[str, str, str, str], str],
        buckets: list[float],
        max_vmtas: int = 2000,
        max_pools: int = 200,
        senders: list[str] | None = None,
        max_senders: int = 20,
        self_metrics: SelfMetrics | None = None,
        lookup_vmta: Lookup | None = None,
    ) -> None:
        self.isp_of = isp_of
        self.class_of = class_of
        self.bounds = list(buckets)
        self.self_metrics = self_metrics
        self.lookup_vmta = lookup_vmta
        self.counters: dict[str, dict[Key, float]] = {name: {} for name in COUNTERS}
        # Histogram series: labels -> [count per bucket (len(bounds)+1, last is +Inf), sum]
        self.histograms: dict[str, dict[Key, list[float]]] = {name: {} for name in HISTOGRAMS}
        self.dirty: set[tuple[str, Key]] = set()
        self.overflows: dict[str, int] = {}
        self._vmta = _Capped("vmta", max_vmtas, self._overflow)
        self._pool = _Capped("vmta_pool", max_pools, self._overflow)
        self._sender_fixed = frozenset(s.lower() for s in senders or [])
        self._sender_auto = _Capped("sender", 0 if self._sender_fixed else max_senders, self._overflow)
        self._labels_cache: dict[tuple[str, str], tuple[str, str]] = {}
        self._sender_cache: dict[str, str] = {}
        self._isp_cache: dict[tuple[str, str], str] = {}

    # --- label normalisation (cached) -----------------------------------------------------
    def _overflow(self, label: str) -> None:
        self.overflows[label] = self.overflows.get(label, 0) + 1

    def _vmta_pool(self, vmta: str, pool: str) -> tuple[str, str]:
        key = (vmta, pool)
        hit = self._labels_cache.get(key)
        if hit is None:
            v = vmta.strip()
            p = pool.strip()
            hit = (self._vmta(v) if v else PLACEHOLDER_NONE, self._pool(p) if p else PLACEHOLDER_NONE)
            if PLACEHOLDER_OVERFLOW in hit:
                return hit  # not cached, so the overflow count stays exact per record
            if len(self._labels_cache) >= _CACHE_LIMIT:
                self._labels_cache.clear()
            self._labels_cache[key] = hit
        return hit

    def _sender(self, orig: str) -> str:
        hit = self._sender_cache.get(orig)
        if hit is None:
            dom = _domain(orig)
            if self._sender_fixed:
                hit = dom if dom in self._sender_fixed else PLACEHOLDER_OTHER
            elif not dom:
                hit = PLACEHOLDER_NONE
            else:
                hit = self._sender_auto(dom)
                if hit == PLACEHOLDER_OVERFLOW:
                    hit = PLACEHOLDER_OTHER
            if len(self._sender_cache) >= _CACHE_LIMIT:
                self._sender_cache.clear()
            self._sender_cache[orig] = hit
        return hit

    def _isp(self, domain: str, mta: str) -> str:
        key = (domain, mta)
        hit = self._isp_cache.get(key)
        if hit is None:
            hit = self.isp_of(domain, mta)
            if len(self._isp_cache) >= _CACHE_LIMIT:
                self._isp_cache.clear()
            self._isp_cache[key] = hit
        return hit

    # --- the hot path ----------------------------------------------------------------------
    def apply(self, batch: RecordBatch) -> None:
        """Fold one batch into the series. Rows are already validated by the parser."""
        c = batch.columns
        ti, tl, tq_, orig_i, rcpt_i = c.type, c.timeLogged, c.timeQueued, c.orig, c.rcpt
        vm_i, pool_i, mta_i, diag_i, st_i = c.vmta, c.vmtaPool, c.dsnMta, c.dsnDiag, c.dsnStatus
        cat_i, size_i, queue_i = c.bounceCat, c.dlvSize, c.queue
        bounds = self.bounds
        nb = len(bounds)
        vmta_pool = self._vmta_pool
        isp_of = self._isp
        sender_of = self._sender
        class_of = self.class_of
        when = parse_pmta_time

        delivered: dict[Key, int] = {}
        dbytes: dict[Key, int] = {}
        delay_n: dict[tuple[Key, int], int] = {}
        delay_sum: dict[Key, float] = {}
        bounced: dict[Key, int] = {}
        deferred: dict[Key, int] = {}
        age_n: dict[tuple[Key, int], int] = {}
        age_sum: dict[Key, float] = {}
        s_deliv: dict[Key, int] = {}
        s_bounce: dict[Key, int] = {}
        s_defer: dict[Key, int] = {}
        received: dict[Key, int] = {}
        late: list[list[str]] = []
        bad_ts = 0
        newest = 0.0
        for row in batch.rows:
            t = row[ti]
            vmta = row[vm_i] if vm_i >= 0 else ""
            pool = row[pool_i] if pool_i >= 0 else ""
            mta = row[mta_i] if mta_i >= 0 else ""
            if t == "d":
                rcpt = row[rcpt_i] if rcpt_i >= 0 else ""
                v, p = vmta_pool(vmta, pool)
                isp = isp_of(rcpt[rcpt.rfind("@") + 1 :].lower(), mta)
                key = (v, p, isp)
                delivered[key] = delivered.get(key, 0) + 1
                if size_i >= 0:
                    size = row[size_i]
                    if size.isdigit():
                        dbytes[key] = dbytes.get(key, 0) + int(size)
                a = when(row[tl]) if tl >= 0 else None
                b = when(row[tq_]) if tq_ >= 0 else None
                if a is not None and b is not None:
                    delay = a - b
                    if delay < 0:
                        delay = 0.0
                    hk = (key, bisect_left(bounds, delay, 0, nb))
                    delay_n[hk] = delay_n.get(hk, 0) + 1
                    delay_sum[key] = delay_sum.get(key, 0.0) + delay
                    if a > newest:
                        newest = a
                elif tl >= 0 and tq_ >= 0:
                    bad_ts += 1
                if orig_i >= 0:
                    sk = (sender_of(row[orig_i]), isp)
                    s_deliv[sk] = s_deliv.get(sk, 0) + 1
            elif t == "t" or t == "tq" or t == "b":
                v, p = vmta_pool(vmta, pool)
                if t == "tq" or rcpt_i < 0:
                    queue = row[queue_i] if queue_i >= 0 else ""
                    dom = queue[: queue.find("/")].lower() if "/" in queue else queue.lower()
                    if not vmta and "/" in queue:
                        v, p = vmta_pool(queue[queue.find("/") + 1 :], pool)
                else:
                    rcpt = row[rcpt_i]
                    dom = rcpt[rcpt.rfind("@") + 1 :].lower()
                isp = isp_of(dom, mta)
                cat = row[cat_i] if cat_i >= 0 else ""
                cls = class_of(isp, row[st_i] if st_i >= 0 else "", row[diag_i] if diag_i >= 0 else "", cat)
                if t == "b":
                    if not cat or cat == "success":
                        cat = PLACEHOLDER_NONE
                    elif cat not in BOUNCE_CATEGORIES:
                        cat = PLACEHOLDER_UNKNOWN
                    key = (v, p, isp, cat, cls)
                    bounced[key] = bounced.get(key, 0) + 1
                    if orig_i >= 0:
                        sk = (sender_of(row[orig_i]), isp, cls)
                        s_bounce[sk] = s_bounce.get(sk, 0) + 1
                else:
                    key = (v, p, isp, cls)
                    deferred[key] = deferred.get(key, 0) + 1
                    if t == "t":
                        if orig_i >= 0:
                            sk = (sender_of(row[orig_i]), isp, cls)
                            s_defer[sk] = s_defer.get(sk, 0) + 1
                        a = when(row[tl]) if tl >= 0 else None
                        b = when(row[tq_]) if tq_ >= 0 else None
                        if a is not None and b is not None:
                            age = a - b if a > b else 0.0
                            ak = (p, isp)
                            hk = (ak, bisect_left(bounds, age, 0, nb))
                            age_n[hk] = age_n.get(hk, 0) + 1
                            age_sum[ak] = age_sum.get(ak, 0.0) + age
                        elif tl >= 0 and tq_ >= 0:
                            bad_ts += 1
            elif t == "r":
                key = vmta_pool(vmta, pool)
                received[key] = received.get(key, 0) + 1
            else:  # f, rb, rs: may need their vmta from the correlated delivery
                late.append(row)
        merge = self._merge
        merge("pmta_delivered_total", delivered)
        merge("pmta_delivered_bytes_total", dbytes)
        merge("pmta_bounced_total", bounced)
        merge("pmta_deferred_total", deferred)
        merge("pmta_received_total", received)
        merge("pmta_sender_delivered_total", s_deliv)
        merge("pmta_sender_bounced_total", s_bounce)
        merge("pmta_sender_deferred_total", s_defer)
        self._merge_hist("pmta_delivery_delay_seconds", delay_n, delay_sum)
        self._merge_hist("pmta_deferral_age_seconds", age_n, age_sum)
        if late:
            self._apply_late(batch, late)
        if self.self_metrics is not None:
            if bad_ts:
                self.self_metrics.parse_errors.labels(batch.source, "bad_timestamp").inc(bad_ts)
            if newest:
                self.self_metrics.last_record_ts.labels(batch.source).set(newest)
            if self.overflows:
                for label, n in self.overflows.items():
                    self.self_metrics.label_overflow.labels(label).inc(n)
                self.overflows.clear()

    def _apply_late(self, batch: RecordBatch, rows: list[list[str]]) -> None:
        """f, rb and rs records: rare, so clarity over speed; vmta/pool attributed when missing."""
        c = batch.columns
        need = [r for r in rows if c.vmta < 0 or not r[c.vmta]]
        found: dict[int, tuple[str, str] | None] = {}
        if need and self.lookup_vmta is not None:
            for row, hit in zip(need, self.lookup_vmta(c, need), strict=True):
                found[id(row)] = hit
        complaints: dict[Key, int] = {}
        s_compl: dict[Key, int] = {}
        rbounced: dict[Key, int] = {}
        rstatus: dict[Key, int] = {}
        for row in rows:
            t = row[c.type]
            if id(row) in found or c.vmta < 0 or not row[c.vmta]:
                hit = found.get(id(row))
                v, p = self._vmta_pool(*hit) if hit else (PLACEHOLDER_UNKNOWN, PLACEHOLDER_UNKNOWN)
            else:
                v, p = self._vmta_pool(row[c.vmta], row[c.vmtaPool] if c.vmtaPool >= 0 else "")
            rcpt = row[c.rcpt] if c.rcpt >= 0 else ""
            mta = row[c.dsnMta] if c.dsnMta >= 0 else ""
            if t == "f" and not mta and c.reportingMta >= 0:
                mta = row[c.reportingMta]
            isp = self._isp(_domain(rcpt), mta)
            if t == "f":
                ft = (row[c.feedbackType] if c.feedbackType >= 0 else "").strip().lower()
                ft = ft if ft in FEEDBACK_TYPES else (PLACEHOLDER_UNKNOWN if not ft else PLACEHOLDER_OTHER)
                key = (v, p, isp, ft)
                complaints[key] = complaints.get(key, 0) + 1
                if c.orig >= 0:
                    sk = (self._sender(row[c.orig]), isp)
                    s_compl[sk] = s_compl.get(sk, 0) + 1
            elif t == "rb":
                cat = row[c.bounceCat] if c.bounceCat >= 0 else ""
                cls = self.class_of(isp, row[c.dsnStatus] if c.dsnStatus >= 0 else "",
                                    row[c.dsnDiag] if c.dsnDiag >= 0 else "", cat)
                cat = PLACEHOLDER_NONE if not cat or cat == "success" else (
                    cat if cat in BOUNCE_CATEGORIES else PLACEHOLDER_UNKNOWN)
                key = (v, p, isp, cat, cls)
                rbounced[key] = rbounced.get(key, 0) + 1
            else:
                action = (row[c.dsnAction] if c.dsnAction >= 0 else "").strip().lower()
                key = (v, p, isp, action if action in DSN_ACTIONS else PLACEHOLDER_UNKNOWN)
                rstatus[key] = rstatus.get(key, 0) + 1
        self._merge("pmta_complaints_total", complaints)
        self._merge("pmta_sender_complaints_total", s_compl)
        self._merge("pmta_remote_bounced_total", rbounced)
        self._merge("pmta_remote_status_total", rstatus)

    def _merge(self, name: str, local: dict[Key, int]) -> None:
        if not local:
            return
        series = self.counters[name]
        dirty = self.dirty
        for key, n in local.items():
            series[key] = series.get(key, 0) + n
            dirty.add((name, key))

    def _merge_hist(self, name: str, counts: dict[tuple[Key, int], int], sums: dict[Key, float]) -> None:
        if not sums:
            return
        series = self.histograms[name]
        width = len(self.bounds) + 1
        for (key, idx), n in counts.items():
            h = series.get(key)
            if h is None:
                h = series[key] = [0.0] * (width + 1)
            h[idx] += n
        for key, s in sums.items():
            series[key][width] += s
            self.dirty.add((name, key))

    # --- persistence ---------------------------------------------------------------------------
    def take_dirty(self) -> list[tuple[str, Key, Any]]:
        """Current values of the series changed since the last call (for the state database)."""
        out: list[tuple[str, Key, Any]] = []
        for name, key in self.dirty:
            if name in self.counters:
                out.append((name, key, self.counters[name][key]))
            else:
                out.append((name, key, list(self.histograms[name][key])))
        self.dirty.clear()
        return out

    def restore(self, name: str, key: Key, value: Any) -> None:
        """Reload one persisted series (startup), re-admitting its label values first."""
        spec = SPECS.get(name)
        if spec is None:
            return
        labels = dict(zip(spec.labels, key, strict=False))
        for label, capped in (("vmta", self._vmta), ("vmta_pool", self._pool)):
            val = labels.get(label)
            if val and val not in (PLACEHOLDER_NONE, PLACEHOLDER_UNKNOWN, PLACEHOLDER_OVERFLOW):
                capped.admitted.add(val)
        sender = labels.get("sender")
        if sender and sender not in (PLACEHOLDER_NONE, PLACEHOLDER_OTHER):
            self._sender_auto.admitted.add(sender)
        if name in self.counters:
            self.counters[name][key] = float(value)
        elif name in self.histograms:
            width = len(self.bounds) + 2
            if isinstance(value, list) and len(value) == width:
                self.histograms[name][key] = [float(x) for x in value]

    # --- exposition ----------------------------------------------------------------------------
    def series_counts(self) -> dict[str, int]:
        out = {name: len(s) for name, s in self.counters.items()}
        out.update({name: len(s) for name, s in self.histograms.items()})
        return out

    def collect(self) -> Iterator[Metric]:
        for name, series in self.counters.items():
            spec = SPECS[name]
            fam = CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=list(spec.labels))
            for key, value in series.items():
                fam.add_metric(list(key), value)
            yield fam
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for name, series in self.histograms.items():
            spec = SPECS[name]
            fam = HistogramMetricFamily(name, spec.help, labels=list(spec.labels))
            width = len(les)
            for key, h in series.items():
                acc = 0.0
                buckets = []
                for i in range(width):
                    acc += h[i]
                    buckets.append((les[i], acc))
                fam.add_metric(list(key), buckets, sum_value=h[width])
            yield fam
