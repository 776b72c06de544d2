"""Record batches -> the `pmta_*` counter and histogram series, held as plain dicts.

This is the hot path. d/t/tq/b rows (nearly all of them) are aggregated column-wise with polars:
one pass derives the fields, the Python classifiers (labels, ISP, sender, reply class) run only
on each chunk's distinct values, and every group-by runs in one `collect_all`; Python then merges
one row per label set. The rare f/rb/rs/r rows go row by row, with vmta/pool attributed from the
correlator when missing. The series are served by a custom collector (client_python's pattern
for state the exporter owns), which also lets the daemon persist exactly the series that changed
alongside each checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
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
from exporter.records import Columns, RecordBatch, col
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
SEP = "\x1f"
_MAIN = frozenset({"d", "t", "tq", "b"})
_LATE = frozenset({"f", "rb", "rs", "r"})


def _domain(address: str) -> str:
    return address[address.rfind("@") + 1 :].lower() if "@" in address else ""


class _Capped:
    """Admits label values up to a cap; later values map to `overflow` (bounded cardinality)."""

    def __init__(self, label: str, cap: int) -> None:
        self.label = label
        self.cap = cap
        self.admitted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.admitted:
            return value
        if len(self.admitted) < self.cap:
            self.admitted.add(value)
            return value
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
        self._vmta = _Capped("vmta", max_vmtas)
        self._pool = _Capped("vmta_pool", max_pools)
        self._sender_fixed = frozenset(s.lower() for s in senders or [])
        self._sender_auto = _Capped("sender", 0 if self._sender_fixed else max_senders)
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
            if len(self._labels_cache) >= _CACHE_LIMIT:
                self._labels_cache.clear()
            self._labels_cache[key] = hit
        return hit

    def _sender(self, orig: str) -> str:
        return self._sender_for_domain(_domain(orig))

    def _sender_for_domain(self, dom: str) -> str:
        hit = self._sender_cache.get(dom)
        if hit is None:
            if self._sender_fixed:
                hit = dom if dom in self._sender_fixed else PLACEHOLDER_OTHER
            elif not dom:
                hit = PLACEHOLDER_NONE
            else:
                hit = self._sender_auto(dom)
                if hit == PLACEHOLDER_OVERFLOW:
                    hit = PLACEHOLDER_OTHER  # counted per record by the callers
            if len(self._sender_cache) >= _CACHE_LIMIT:
                self._sender_cache.clear()
            self._sender_cache[dom] = hit
        return hit

    def _isp(self, domain: str, mta: str) -> str:
        if not mta:  # never cached here: the classifier may learn this domain's MX from a later record
            return self.isp_of(domain, mta)
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
        """Fold one batch into the series: columnar for d/t/tq/b, per row for the rare rest."""
        c = batch.columns
        frame = batch.frame
        types = set(frame.get_column("c0").unique().to_list())
        if types & _MAIN:
            self._apply_main(batch.source, c, frame)
        if types & _LATE:
            sub = RecordBatch(batch.source, batch.path, c, frame=frame.filter(pl.col("c0").is_in(list(_LATE))))
            self._apply_late(sub, sub.rows)
        if self.self_metrics is not None and self.overflows:
            for label, n in self.overflows.items():
                self.self_metrics.label_overflow.labels(label).inc(n)
            self.overflows.clear()

    def _apply_main(self, source: str, c: Columns, frame: pl.DataFrame) -> None:
        """d/t/tq/b rows: three polars passes (derive; distinct values; every group-by at once).

        Python only touches distinct values (labels, ISP, sender, reply class) and group results.
        """

        def field(i: int) -> pl.Expr:
            return pl.col(col(i)).fill_null("") if i >= 0 else pl.lit("")

        def epoch(e: pl.Expr) -> pl.Expr:
            iso = e.str.to_datetime("%Y-%m-%d %H:%M:%S%z", strict=False, time_unit="ms").dt.epoch("ms") / 1000.0
            return pl.coalesce(iso, e.cast(pl.Float64, strict=False))

        has_orig = c.orig >= 0
        has_times = c.timeLogged >= 0 and c.timeQueued >= 0
        rcpt, queue, vmta, orig = field(c.rcpt), field(c.queue), field(c.vmta), field(c.orig)
        t = pl.col("c0")
        use_queue = (t == "tq") | pl.lit(c.rcpt < 0)
        vraw = (pl.when(use_queue & (vmta == "") & queue.str.contains("/", literal=True))
                .then(queue.str.splitn("/", 2).struct.field("field_1")).otherwise(vmta))
        dom = (pl.when(use_queue).then(queue.str.splitn("/", 2).struct.field("field_0"))
               .otherwise(rcpt.str.split("@").list.last()).str.to_lowercase())
        timed = (t == "d") | (t == "t")
        # Pass 1: the columns everything else reads.
        df = frame.lazy().filter(t.is_in(list(_MAIN))).select(
            t=t,
            vp=pl.concat_str([vraw, field(c.vmtaPool)], separator=SEP),
            ik=pl.concat_str([dom, field(c.dsnMta)], separator=SEP),
            odom=pl.when(orig.str.contains("@", literal=True))
            .then(orig.str.split("@").list.last().str.to_lowercase()).otherwise(pl.lit("")),
            ck=pl.concat_str([field(c.dsnStatus), field(c.dsnDiag), field(c.bounceCat)], separator=SEP),
            cat=field(c.bounceCat),
            size=field(c.dlvSize),
            tl=field(c.timeLogged),
            tq=field(c.timeQueued),
            a=pl.when(timed).then(epoch(field(c.timeLogged))) if has_times else pl.lit(None, pl.Float64),
            b=pl.when(timed).then(epoch(field(c.timeQueued))) if has_times else pl.lit(None, pl.Float64),
        ).collect()
        # Pass 2: distinct values, mapped by the Python classifiers (first-seen order keeps caps stable).
        lz = df.lazy()
        rest_keys = pl.concat_str([pl.col("ik"), pl.col("ck")], separator=SEP)
        plans = [lz.select(pl.col("vp").unique(maintain_order=True)),
                 lz.select(pl.col("ik").unique(maintain_order=True)),
                 lz.select(pl.col("odom").unique(maintain_order=True)),
                 lz.filter(pl.col("t") != "d").select(rest_keys.unique(maintain_order=True).alias("k"))]
        if has_times:
            timed = pl.col("t").is_in(["d", "t"])
            plans += [lz.filter(timed & pl.col("a").is_null() & (pl.col("tl") != "")).select(pl.col("tl").unique()),
                      lz.filter(timed & pl.col("b").is_null() & (pl.col("tq") != "")).select(pl.col("tq").unique())]
        uniq = [f.to_series().to_list() for f in pl.collect_all(plans)]
        vp = {k: self._vmta_pool(*k.split(SEP, 1)) for k in uniq[0]}
        isp = {k: self._isp(*k.split(SEP, 1)) for k in uniq[1]}
        senders = {k: self._sender_for_domain(k) for k in uniq[2]}
        classes = {}
        for k in uniq[3]:
            d_, mta, status, rest_ = k.split(SEP, 3)
            diag, cat = rest_.rsplit(SEP, 1)
            classes[k] = self.class_of(isp[d_ + SEP + mta], status, diag, cat)
        lab = lz.with_columns(
            v=pl.col("vp").replace_strict({k: x[0] for k, x in vp.items()}, return_dtype=pl.String),
            p=pl.col("vp").replace_strict({k: x[1] for k, x in vp.items()}, return_dtype=pl.String),
            isp=pl.col("ik").replace_strict(isp, return_dtype=pl.String),
            sender=pl.col("odom").replace_strict(senders, return_dtype=pl.String),
        )
        odd = {v: parse_pmta_time(v) for v in (uniq[4] + uniq[5] if has_times else [])}
        if odd:  # other ISO spellings some PMTA versions write: Python's parser, distinct values only
            lab = lab.with_columns(
                a=pl.coalesce(pl.col("a"), pl.col("tl").replace_strict(odd, default=None, return_dtype=pl.Float64)),
                b=pl.coalesce(pl.col("b"), pl.col("tq").replace_strict(odd, default=None, return_dtype=pl.Float64)),
            )
        # Pass 3: the labelled rows, materialised once; pass 4: every aggregate in one collect_all.
        lab = lab.with_columns(
            cls=pl.when(pl.col("t") != "d").then(rest_keys.replace_strict(classes, default="", return_dtype=pl.String)),
        ).collect().lazy()
        rest = lab.filter(pl.col("t") != "d").with_columns(
            catl=pl.when((pl.col("cat") == "") | (pl.col("cat") == "success")).then(pl.lit(PLACEHOLDER_NONE))
            .when(pl.col("cat").is_in(list(BOUNCE_CATEGORIES))).then(pl.col("cat"))
            .otherwise(pl.lit(PLACEHOLDER_UNKNOWN)),
        )
        d = lab.filter(pl.col("t") == "d")
        size_ok = pl.col("size").str.contains(r"^[0-9]+$")
        ok = pl.col("a").is_not_null() & pl.col("b").is_not_null()
        out: dict[str, pl.LazyFrame] = {
            "overflow": lab.select(
                v=(pl.col("v") == PLACEHOLDER_OVERFLOW).sum(), p=(pl.col("p") == PLACEHOLDER_OVERFLOW).sum(),
                s=(pl.col("sender") == PLACEHOLDER_OTHER).sum(),
                bad=(pl.col("t").is_in(["d", "t"]) & ~ok).sum()),
            "failures": rest.group_by(["t", "v", "p", "isp", "cls", "catl"]).len(),
            "delivered": d.group_by(["v", "p", "isp"]).agg(
                n=pl.len(), nbytes=size_ok.sum(),
                bytes=pl.when(size_ok).then(pl.col("size").cast(pl.Int64, strict=False)).otherwise(0).sum()),
        }
        if has_orig:
            out["s_delivered"] = d.group_by(["sender", "isp"]).len()
            out["s_failures"] = rest.filter(pl.col("t") != "tq").group_by(["t", "sender", "isp", "cls"]).len()
        if has_times:
            out["delay"] = self._histogram_plan(d.filter(ok), ["v", "p", "isp"])
            out["newest"] = d.filter(ok).select(pl.col("a").max())
            out["age"] = self._histogram_plan(rest.filter((pl.col("t") == "t") & ok), ["p", "isp"])
        res = dict(zip(out, pl.collect_all(list(out.values())), strict=True))

        nv, np_, ns, bad = res["overflow"].row(0)
        for label, n in (("vmta", nv), ("vmta_pool", np_), ("sender", ns if self._sender_auto.cap else 0)):
            if n:
                self.overflows[label] = self.overflows.get(label, 0) + n
        if has_times:
            self._bad_times(source, bad)
        self._merge_failures(res["failures"])
        self._merge_delivered(res["delivered"])
        if has_orig:
            self._merge("pmta_sender_delivered_total", {(s, i): n for s, i, n in res["s_delivered"].iter_rows()})
            for typ, name in (("b", "pmta_sender_bounced_total"), ("t", "pmta_sender_deferred_total")):
                self._merge(name, {(s, i, k): n for x, s, i, k, n in res["s_failures"].iter_rows() if x == typ})
        if has_times:
            self._merge_histogram("pmta_delivery_delay_seconds", res["delay"], 3)
            self._merge_histogram("pmta_deferral_age_seconds", res["age"], 2)
            top = res["newest"].item()
            if top is not None and self.self_metrics is not None:
                self.self_metrics.last_record_ts.labels(source).set(float(top))

    def _histogram_plan(self, lf: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
        """Per label set: a count per bucket (le semantics: bisect_left) and the sum of max(a - b, 0)."""
        delay = (pl.col("a") - pl.col("b")).clip(lower_bound=0.0)
        idx = pl.sum_horizontal([(delay > bound).cast(pl.Int32) for bound in self.bounds])
        width = len(self.bounds) + 1
        return lf.with_columns(delay=delay, idx=idx).group_by(keys).agg(
            *[(pl.col("idx") == i).sum().alias(f"b{i}") for i in range(width)], s=pl.col("delay").sum())

    def _bad_times(self, source: str, n: int) -> None:
        if n and self.self_metrics is not None:
            self.self_metrics.parse_errors.labels(source, "bad_timestamp").inc(n)

    def _merge_failures(self, grouped: pl.DataFrame) -> None:
        """b -> pmta_bounced_total; t and tq -> pmta_deferred_total."""
        bounced = self.counters["pmta_bounced_total"]
        deferred = self.counters["pmta_deferred_total"]
        dirty = self.dirty
        for typ, v, p, isp, cls, catl, n in grouped.iter_rows():
            if typ == "b":
                key, name, series = (v, p, isp, catl, cls), "pmta_bounced_total", bounced
            else:
                key, name, series = (v, p, isp, cls), "pmta_deferred_total", deferred
            series[key] = series.get(key, 0) + n
            dirty.add((name, key))

    def _merge_delivered(self, grouped: pl.DataFrame) -> None:
        delivered = self.counters["pmta_delivered_total"]
        dbytes = self.counters["pmta_delivered_bytes_total"]
        dirty = self.dirty
        for v, p, isp, n, nbytes, total in grouped.iter_rows():
            key = (v, p, isp)
            delivered[key] = delivered.get(key, 0) + n
            dirty.add(("pmta_delivered_total", key))
            if nbytes:
                dbytes[key] = dbytes.get(key, 0) + total
                dirty.add(("pmta_delivered_bytes_total", key))

    def _merge_histogram(self, name: str, grouped: pl.DataFrame, nk: int) -> None:
        series = self.histograms[name]
        dirty = self.dirty
        for row in grouped.iter_rows():
            key = tuple(row[:nk])
            h = series.get(key)
            series[key] = list(row[nk:]) if h is None else [x + y for x, y in zip(h, row[nk:], strict=True)]
            dirty.add((name, key))

    def _apply_late(self, batch: RecordBatch, rows: list[list[str]]) -> None:
        """f, rb and rs records: rare, so clarity over speed; vmta/pool attributed when missing."""
        c = batch.columns

        def missing(row: list[str]) -> bool:
            return c.vmta < 0 or not row[c.vmta]

        need = [r for r in rows if missing(r)]
        hits = self.lookup_vmta(c, need) if need and self.lookup_vmta is not None else [None] * len(need)
        found = {id(row): hit for row, hit in zip(need, hits, strict=True)}
        complaints: dict[Key, int] = {}
        s_compl: dict[Key, int] = {}
        rbounced: dict[Key, int] = {}
        rstatus: dict[Key, int] = {}
        for row in rows:
            t = row[c.type]
            if missing(row):
                hit = found[id(row)]
                v, p = self._vmta_pool(*hit) if hit else (PLACEHOLDER_UNKNOWN, PLACEHOLDER_UNKNOWN)
            else:
                v, p = self._vmta_pool(row[c.vmta], row[c.vmtaPool] if c.vmtaPool >= 0 else "")
            if v == PLACEHOLDER_OVERFLOW:
                self._overflow("vmta")
            if p == PLACEHOLDER_OVERFLOW:
                self._overflow("vmta_pool")
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
                    sender = self._sender(row[c.orig])
                    if sender == PLACEHOLDER_OTHER and self._sender_auto.cap:
                        self._overflow("sender")
                    sk = (sender, isp)
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
        spec = SPECS["watchtower_metric_series"]
        counts = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        for name, n in self.series_counts().items():
            counts.add_metric([name], n)
        yield counts
