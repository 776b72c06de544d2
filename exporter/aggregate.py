"""Record batches -> the `pmta_*` counter and histogram series, held as plain dicts.

This is the hot path. Each batch is tallied into chunk-local dicts keyed by label tuples, then
merged into the global series once per distinct key, so the per-row work is a few dict lookups
(label normalisation, ISP, sender and reply class are all cached). The series are served by a
custom collector (client_python's pattern for state the exporter owns), which also lets the
daemon persist exactly the series that changed alongside each checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
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
        t = pl.col("c0")
        main = frame.filter(t.is_in(["d", "t", "tq", "b"]))
        if main.height:
            self._apply_main(batch.source, c, main)
        late = frame.filter(t.is_in(["f", "rb", "rs", "r"]))
        if late.height:
            sub = RecordBatch(batch.source, batch.path, c, frame=late)
            self._apply_late(sub, sub.rows)
        if self.self_metrics is not None and self.overflows:
            for label, n in self.overflows.items():
                self.self_metrics.label_overflow.labels(label).inc(n)
            self.overflows.clear()

    def _mapped(self, series: pl.Series, fn: Callable[[str], Any]) -> dict[str, Any]:
        return {value: fn(value) for value in series.unique(maintain_order=True).to_list()}

    def _apply_main(self, source: str, c: Columns, df: pl.DataFrame) -> None:
        def field(i: int) -> pl.Expr:
            return pl.col(col(i)).fill_null("") if i >= 0 else pl.lit("")

        rcpt, queue, vmta = field(c.rcpt), field(c.queue), field(c.vmta)
        t = pl.col("c0")
        use_queue = (t == "tq") | pl.lit(c.rcpt < 0)
        df = df.select(
            t=t,
            vraw=pl.when(use_queue & (vmta == "") & queue.str.contains("/", literal=True))
            .then(queue.str.splitn("/", 2).struct.field("field_1"))
            .otherwise(vmta),
            praw=field(c.vmtaPool),
            dom=pl.when(use_queue)
            .then(queue.str.splitn("/", 2).struct.field("field_0"))
            .otherwise(rcpt.str.split("@").list.last())
            .str.to_lowercase(),
            mta=field(c.dsnMta),
            odom=pl.when(field(c.orig).str.contains("@", literal=True))
            .then(field(c.orig).str.split("@").list.last().str.to_lowercase())
            .otherwise(pl.lit("")),
            status=field(c.dsnStatus),
            diag=field(c.dsnDiag),
            cat=field(c.bounceCat),
            size=field(c.dlvSize),
            tl=field(c.timeLogged),
            tq=field(c.timeQueued),
        )
        # Label values and classifications: Python functions over the distinct values only.
        vp_key = pl.concat_str([pl.col("vraw"), pl.col("praw")], separator=SEP)
        isp_key = pl.concat_str([pl.col("dom"), pl.col("mta")], separator=SEP)
        df = df.with_columns(vp=vp_key, ik=isp_key)
        vp = self._mapped(df.get_column("vp"), lambda k: self._vmta_pool(*k.split(SEP, 1)))
        isp = self._mapped(df.get_column("ik"), lambda k: self._isp(*k.split(SEP, 1)))
        senders = self._mapped(df.get_column("odom"), self._sender_for_domain)
        df = df.with_columns(
            v=pl.col("vp").replace_strict({k: x[0] for k, x in vp.items()}, return_dtype=pl.String),
            p=pl.col("vp").replace_strict({k: x[1] for k, x in vp.items()}, return_dtype=pl.String),
            isp=pl.col("ik").replace_strict(isp, return_dtype=pl.String),
            sender=pl.col("odom").replace_strict(senders, return_dtype=pl.String),
        )
        for label, name, value in (("vmta", "v", PLACEHOLDER_OVERFLOW), ("vmta_pool", "p", PLACEHOLDER_OVERFLOW),
                                   ("sender", "sender", PLACEHOLDER_OTHER if self._sender_auto.cap else None)):
            n = int((df.get_column(name) == value).sum()) if value else 0
            if n:
                self.overflows[label] = self.overflows.get(label, 0) + n
        has_orig = c.orig >= 0
        has_times = c.timeLogged >= 0 and c.timeQueued >= 0
        t = pl.col("t")
        if has_times:  # only d (delay) and t (deferral age) need parsed times
            timed = df.filter((t == "d") | (t == "t"))
            df = pl.concat([self._with_times(timed), df.filter((t != "d") & (t != "t")).with_columns(
                a=pl.lit(None, pl.Float64), b=pl.lit(None, pl.Float64))])
        rest = df.filter(t != "d")
        if rest.height:
            cls_key = pl.concat_str([pl.col("isp"), pl.col("status"), pl.col("diag"), pl.col("cat")], separator=SEP)
            rest = rest.with_columns(ck=cls_key)
            classes = self._mapped(rest.get_column("ck"), lambda k: self.class_of(*k.split(SEP, 3)))
            cat = pl.col("cat")
            rest = rest.with_columns(
                cls=pl.col("ck").replace_strict(classes, return_dtype=pl.String),
                catl=pl.when((cat == "") | (cat == "success")).then(pl.lit(PLACEHOLDER_NONE))
                .when(cat.is_in(list(BOUNCE_CATEGORIES))).then(cat)
                .otherwise(pl.lit(PLACEHOLDER_UNKNOWN)),
            )
            self._merge_failures(rest)
        d = df.filter(t == "d")
        if d.height:
            self._merge_delivered(source, d, has_times)
        if has_orig:
            self._merge_senders(d, rest)
        if has_times and rest.height:
            recip = rest.filter(t == "t")
            if recip.height:
                bad = self._merge_histogram("pmta_deferral_age_seconds", recip, ["p", "isp"])
                self._bad_times(source, bad)

    def _with_times(self, df: pl.DataFrame) -> pl.DataFrame:
        """Columns a/b: timeLogged/timeQueued as Unix seconds (null when empty or unparseable)."""

        def native(e: pl.Expr) -> pl.Expr:
            iso = e.str.to_datetime("%Y-%m-%d %H:%M:%S%z", strict=False, time_unit="ms").dt.epoch("ms") / 1000.0
            return pl.coalesce(iso, e.cast(pl.Float64, strict=False))

        df = df.with_columns(a=native(pl.col("tl")), b=native(pl.col("tq")))
        odd = df.filter((pl.col("a").is_null() & (pl.col("tl") != "")) | (pl.col("b").is_null() & (pl.col("tq") != "")))
        if odd.height:  # other ISO spellings PMTA versions may write: Python's parser, on the distinct values
            times = self._mapped(pl.concat([odd.get_column("tl"), odd.get_column("tq")]), parse_pmta_time)
            df = df.with_columns(
                a=pl.coalesce(pl.col("a"), pl.col("tl").replace_strict(times, default=None, return_dtype=pl.Float64)),
                b=pl.coalesce(pl.col("b"), pl.col("tq").replace_strict(times, default=None, return_dtype=pl.Float64)),
            )
        return df

    def _bad_times(self, source: str, n: int) -> None:
        if n and self.self_metrics is not None:
            self.self_metrics.parse_errors.labels(source, "bad_timestamp").inc(n)

    def _merge_failures(self, rest: pl.DataFrame) -> None:
        """b -> pmta_bounced_total; t and tq -> pmta_deferred_total: one group-by for both."""
        bounced = self.counters["pmta_bounced_total"]
        deferred = self.counters["pmta_deferred_total"]
        dirty = self.dirty
        for typ, v, p, isp, cls, catl, n in rest.group_by(["t", "v", "p", "isp", "cls", "catl"]).len().iter_rows():
            if typ == "b":
                key, name, series = (v, p, isp, catl, cls), "pmta_bounced_total", bounced
            else:
                key, name, series = (v, p, isp, cls), "pmta_deferred_total", deferred
            series[key] = series.get(key, 0) + n
            dirty.add((name, key))

    def _merge_senders(self, d: pl.DataFrame, rest: pl.DataFrame) -> None:
        """pmta_sender_*: d by (sender, isp); b and t by (sender, isp, class); tq has no sender."""
        if d.height:
            self._merge("pmta_sender_delivered_total",
                        {(s, i): n for s, i, n in d.group_by(["sender", "isp"]).len().iter_rows()})
        if rest.height:
            grouped = rest.filter(pl.col("t") != "tq").group_by(["t", "sender", "isp", "cls"]).len()
            for typ in ("b", "t"):
                name = "pmta_sender_bounced_total" if typ == "b" else "pmta_sender_deferred_total"
                self._merge(name, {(s, i, c): n for t, s, i, c, n in grouped.iter_rows() if t == typ})

    def _merge_delivered(self, source: str, d: pl.DataFrame, has_times: bool) -> None:
        """Counts, bytes and the delay histogram of d records in one group-by per label set."""
        size_ok = pl.col("size").str.contains(r"^[0-9]+$")
        grouped = d.group_by(["v", "p", "isp"]).agg(
            n=pl.len(),
            nbytes=size_ok.sum(),
            bytes=pl.when(size_ok).then(pl.col("size").cast(pl.Int64, strict=False)).otherwise(0).sum(),
        )
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
        if has_times:
            self._bad_times(source, self._merge_histogram("pmta_delivery_delay_seconds", d, ["v", "p", "isp"]))
            if self.self_metrics is not None:
                top = d.get_column("a").max()
                if top is not None and d.get_column("b").null_count() < d.height:
                    self.self_metrics.last_record_ts.labels(source).set(float(top))  # type: ignore[arg-type]

    def _merge_histogram(self, name: str, df: pl.DataFrame, keys: list[str]) -> int:
        """Observe max(a - b, 0) per row into one histogram; returns rows with an unusable time."""
        ok = df.filter(pl.col("a").is_not_null() & pl.col("b").is_not_null())
        if ok.height:
            delay = (pl.col("a") - pl.col("b")).clip(lower_bound=0.0)
            idx = pl.sum_horizontal([(delay > bound).cast(pl.Int32) for bound in self.bounds])
            width = len(self.bounds) + 1
            grouped = ok.with_columns(delay=delay, idx=idx).group_by(keys).agg(
                *[(pl.col("idx") == i).sum().alias(f"b{i}") for i in range(width)],
                s=pl.col("delay").sum(),
            )
            series = self.histograms[name]
            nk = len(keys)
            dirty = self.dirty
            for row in grouped.iter_rows():
                key = tuple(row[:nk])
                h = series.get(key)
                series[key] = list(row[nk:]) if h is None else [x + y for x, y in zip(h, row[nk:], strict=True)]
                dirty.add((name, key))
        return df.height - ok.height

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
