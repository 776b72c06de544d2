"""/metrics rendering: the record series from cached lines, off the event loop, gzip when asked.

The reference deployment serves ~47k series; prometheus_client builds a Sample object per series
and formats every label set on every scrape (~0.8 s, on the event loop, stalling the tailer).
Here the aggregator's series are copied on the loop (plain dict copies, a few ms: its values are
never mutated in place) and rendered in a worker thread, where each series' line is cached with
the value it was rendered for: a scrape re-formats only the series that changed since the last
one. Everything else in the registry (self metrics, queue gauges, process metrics: a few hundred
series) is collected on the loop and formatted by prometheus_client, so the output is exactly
what `generate_latest` would write (tests compare them).

Formats: Prometheus text 0.0.4 unless the client accepts only OpenMetrics (Prometheus itself
accepts text/plain, so it gets the fast text). `Accept-Encoding: gzip` is honoured (level 1:
a 4.6 MB page compresses ~10x in a few tens of ms, in the worker thread).

`/metrics?name[]=pmta_delivered_total&name[]=...` renders only the samples of those names, each
under its family's HELP/TYPE and families left without samples omitted (what prometheus_client's
`restricted_registry` gives): a check or a dashboard probe that reads a few families costs the
daemon what those families cost, not the whole page.
"""

from __future__ import annotations

import gzip
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from exporter.metrics import SPECS, sample_names

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
"""The text format rendered here, named whatever prometheus-client is installed (0.22+ labels its default 1.0.0)."""
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
GZIP_LEVEL = 1
MAX_NAMES = 64
"""`name[]` parameters one /metrics request may carry (each is one set lookup per family)."""
Key = tuple[str, ...]
Names = frozenset[str] | None
"""Sample names a /metrics request asked for (`name[]`); None: all of them."""


_ESCAPED: dict[str, str] = {}


def _escape(value: str) -> str:
    """A label value as the text format writes it (memoised: a few hundred distinct values, 60k uses)."""
    done = _ESCAPED.get(value)
    if done is None:
        done = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        if len(_ESCAPED) >= 65_536:
            _ESCAPED.clear()
        _ESCAPED[value] = done
    return done


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    """`{a="x",b="y"}` with names sorted, as prometheus_client writes them ('' when empty)."""
    items = sorted(pairs)
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}" if items else ""


def _num(value: float) -> str:
    """floatToGoString, with its common case (finite, below 1e6) inlined."""
    v = float(value)
    return repr(v) if -1e300 < v < 1e6 else floatToGoString(v)


class _Collected:
    """A registry-like wrapper so prometheus_client's encoders format already-collected metrics."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def _restricted(metrics: list[Metric], names: frozenset[str]) -> list[Metric]:
    """These metrics with only the samples named in `names`, those left without any dropped."""
    out = []
    for metric in metrics:
        samples = [sample for sample in metric.samples if sample.name in names]
        if samples:
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = samples
            out.append(kept)
    return out


def _sample_name(line: str) -> str:
    end = line.find("{")
    return line[:end] if end >= 0 else line.split(" ", 1)[0]


class _Family:
    """Cached sample lines of one record family: key -> (value rendered, lines), and key -> the lines' label
    prefixes (escaped and sorted once per series: a value that changed costs only its numbers)."""

    __slots__ = ("name", "kind", "labels", "lines", "prefixes", "headers", "_order", "_fmt", "_cut")

    def __init__(self, name: str, kind: str, labels: tuple[str, ...], help_text: str, bounds: list[float]) -> None:
        self.name = name
        self.kind = kind
        self.labels = labels
        self.lines: dict[Key, tuple[Any, str]] = {}
        self.prefixes: dict[Key, Any] = {}
        # `name{a="%s",b="%s"} `: label names sorted once per family, not per line
        self._order = sorted(range(len(labels)), key=labels.__getitem__)
        body = ",".join(f'{labels[i]}="%s"' for i in self._order)
        self._fmt = f"{name}{{{body}}} " if labels else f"{name} "
        self._cut = sum(1 for k in labels if k < "le")  # where a bucket's `le` sorts among the label names
        base = name.removesuffix("_total")
        empty: Metric = (CounterMetricFamily(base, help_text, labels=list(labels)) if kind == "counter"
                         else HistogramMetricFamily(name, help_text, labels=list(labels)))
        om = generate_openmetrics(_Collected([empty])).decode()
        self.headers = {False: generate_latest(_Collected([empty])).decode(), True: om.removesuffix("# EOF\n")}

    def render(self, series: dict[Key, Any], les: list[str], out: list[str]) -> None:
        cache, prefixes = self.lines, self.prefixes
        fresh: dict[Key, tuple[Any, str]] = {}
        counter = self.kind == "counter"
        for key, value in series.items():
            hit = cache.get(key)
            if hit is None or hit[0] is not value and hit[0] != value:
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = prefixes[key] = self._prefix(key, les)
                hit = (value, f"{prefix}{_num(value)}\n" if counter else _histogram(prefix, value))
            fresh[key] = hit
            out.append(hit[1])
        self.lines = fresh  # series that went away (never, for counters) drop out of the caches
        if len(prefixes) > len(fresh):
            self.prefixes = {key: prefixes[key] for key in fresh}

    def _prefix(self, key: Key, les: list[str]) -> Any:
        """A counter's `name{labels} `; a histogram's (one `name_bucket{..le="x"..} ` per bound, `name_count{..} `,
        `name_sum{..} `), label names sorted as prometheus_client writes them."""
        full = len(key) == len(self.labels)
        if self.kind == "counter":
            if full:
                return self._fmt % tuple([_escape(key[i]) for i in self._order])
            return f"{self.name}{_labels(zip(self.labels, key, strict=False))} "
        if full:  # the label names' sorted order and where `le` goes among them are the family's, known once
            pairs, cut = [f'{self.labels[i]}="{_escape(key[i])}"' for i in self._order], self._cut
        else:
            items = sorted(zip(self.labels, key, strict=False))
            pairs, cut = [f'{k}="{_escape(v)}"' for k, v in items], sum(1 for k, _ in items if k < "le")
        start = f'{self.name}_bucket{{{"".join(p + "," for p in pairs[:cut])}le="'
        end = '"' + "".join("," + p for p in pairs[cut:]) + "} "
        plain = "{" + ",".join(pairs) + "}" if pairs else ""
        return [f"{start}{le}{end}" for le in les], f"{self.name}_count{plain} ", f"{self.name}_sum{plain} "


def _histogram(prefix: Any, value: Any) -> str:
    """The lines of a histogram series from its cached prefixes: the bucket counts summed as `acc += n` from 0.0
    (prometheus_client's floats), then the count and the sum (the value's last item)."""
    buckets, count, total = prefix
    acc = 0.0
    lines = []
    for pre, n in zip(buckets, value, strict=False):
        acc += n
        lines.append(f"{pre}{repr(acc) if -1e300 < acc < 1e6 else _num(acc)}\n")
    lines.append(f"{count}{_num(acc)}\n{total}{_num(value[len(buckets)])}\n")
    return "".join(lines)


class Renderer:
    """Renders one registry; the aggregator's series from cached lines. One instance per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    # --- on the event loop -------------------------------------------------------------------
    def snapshot(self, names: Names = None) -> list[tuple[str, Any]]:
        """What to render, in registration order: ("fast", copies of series) or ("metrics", [Metric]); with
        `names`, only the families holding one of those samples are copied (and only those samples rendered)."""
        parts: list[tuple[str, Any]] = []
        for collector in self._collectors():
            fast = getattr(collector, "exposition_snapshot", None)
            if fast is not None:
                families, extra = fast(names)
                parts.append(("fast", (families, [floatToGoString(b) for b in collector.bounds] + ["+Inf"], names)))
                parts.append(("metrics", list(extra) if names is None else _restricted(list(extra), names)))
            else:
                metrics = list(collector.collect())
                parts.append(("metrics", metrics if names is None else _restricted(metrics, names)))
        return parts

    def _collectors(self) -> list[Any]:
        names = getattr(self.registry, "_collector_to_names", None)
        lock = getattr(self.registry, "_lock", None)
        if names is None or lock is None:  # not a CollectorRegistry: collect it as one
            return [self.registry]
        with lock:
            return list(names)

    # --- in a worker thread ------------------------------------------------------------------
    def render(self, parts: list[tuple[str, Any]], openmetrics: bool) -> bytes:
        with self._lock:
            out: list[str] = []
            for kind, payload in parts:
                if kind == "metrics":
                    if payload:
                        text = (generate_openmetrics if openmetrics else generate_latest)(_Collected(payload))
                        out.append(text.decode().removesuffix("# EOF\n") if openmetrics else text.decode())
                    continue
                families, les, names = payload
                for name, series in families:
                    fam = self._family(name, les)
                    if names is None:  # the whole page: every family under its HELP/TYPE, even without series
                        out.append(fam.headers[openmetrics])
                        fam.render(series, les, out)
                        continue
                    lines: list[str] = []
                    fam.render(series, les, lines)
                    if not all(n in names for n in sample_names(name, fam.kind)):  # some of a histogram's samples
                        lines = [line for line in "".join(lines).splitlines(keepends=True)
                                 if _sample_name(line) in names]
                    if lines:  # as prometheus_client's restricted registry: no samples, no family
                        out.append(fam.headers[openmetrics])
                        out.extend(lines)
            if openmetrics:
                out.append("# EOF\n")
            return "".join(out).encode()

    def _family(self, name: str, les: list[str]) -> _Family:
        fam = self._families.get(name)
        if fam is None:
            spec = SPECS[name]
            fam = self._families[name] = _Family(name, spec.kind, spec.labels, spec.help, les)
        return fam


_RENDERERS: weakref.WeakKeyDictionary[Any, Renderer] = weakref.WeakKeyDictionary()


def renderer_for(registry: CollectorRegistry) -> Renderer:
    found = _RENDERERS.get(registry)
    if found is None:
        found = _RENDERERS[registry] = Renderer(registry)
    return found


def wants_openmetrics(accept: str) -> bool:
    """OpenMetrics only for a client that does not accept the text format (Prometheus does, as client_golang's
    handlers answer it by default) but accepts OpenMetrics 1.0.0, the version this page writes.

    `Accept` is read as media ranges with their weights (RFC 9110 §12.5.1): text's weight is that of its most
    specific range (`text/plain`, else `text/*`, else `*/*`), q=0 meaning not acceptable. Linear in the header,
    which the listener bounds (MAX_REQUEST_HEAD)."""
    openmetrics = 0.0
    for part in accept.lower().split(","):
        media, *params = part.split(";")
        if media.strip() == "application/openmetrics-text" and _param(params, "version") in (None, "1.0.0"):
            openmetrics = max(openmetrics, _qvalue(params))
    return openmetrics > 0 and bool(accept.strip()) and media_weights(accept, "text/plain")[0] == 0


def media_weights(accept: str, *types: str) -> list[float]:
    """The weight `Accept` gives each of `types` (lowercase `type/subtype`), RFC 9110 §12.5.1: that of the most
    specific range naming it (`text/plain`, else `text/*`, else `*/*`; the highest if a range is repeated), 0 when
    none does or q=0; media types are case-insensitive. No header (or a blank one) accepts every type at 1. Linear
    in the header, which the listener bounds (MAX_REQUEST_HEAD)."""
    if not accept.strip():
        return [1.0] * len(types)
    ranges: dict[str, float] = {}
    for part in accept.lower().split(","):
        media, *params = part.split(";")
        media = media.strip()
        ranges[media] = max(ranges.get(media, 0.0), _qvalue(params))
    weights = []
    for wanted in types:
        family = wanted.partition("/")[0] + "/*"
        weights.append(next((ranges[m] for m in (wanted, family, "*/*") if m in ranges), 0.0))
    return weights


def _param(params: list[str], wanted: str) -> str | None:
    """The value of one media-range parameter (lowercase), or None when absent."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == wanted:
            return value.strip().strip('"')
    return None


def wants_gzip(accept_encoding: str) -> bool:
    """Whether `Accept-Encoding` makes gzip acceptable (RFC 9110 §12.5.3); the listener's only gzip test.

    gzip's own q-value decides (x-gzip is gzip, §8.4.1.3), else `*`'s; q=0 means "not acceptable", so
    `gzip;q=0` gets identity. Linear in the header, which the listener bounds (MAX_REQUEST_HEAD).
    """
    named: float | None = None
    star: float | None = None
    for part in accept_encoding.lower().split(","):
        coding, *params = part.split(";")
        coding, q = coding.strip(), _qvalue(params)
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            star = q if star is None else max(star, q)
    chosen = named if named is not None else star
    return chosen is not None and chosen > 0


def _qvalue(params: list[str]) -> float:
    """The `q` of one Accept-Encoding entry: 1 when absent; 0 when not a number in [0, 1] (identity is the
    safe answer to a weight we cannot read)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


_RENDERING = 0
"""/metrics renders in their worker thread now: counted on the event loop, the only thread that changes it."""


def rendering() -> bool:
    """Is a /metrics page being formatted? The daemon's reading yields to it (exporter.daemon `_yield_to_render`):
    the worker thread shares the GIL with tailing and aggregation, and a scrape of a daemon taking 20k records/s
    took 144 ms (p50) where the render alone takes ~40."""
    return _RENDERING > 0


def render_sync(registry: CollectorRegistry, openmetrics: bool = False, names: Names = None) -> bytes:
    """The whole exposition (or the samples `names`) now, on this thread (oneshot; tests)."""
    r = renderer_for(registry)
    return r.render(r.snapshot(names), openmetrics)


async def render_metrics(
    registry: CollectorRegistry, accept: str, accept_encoding: str, names: Names = None
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a /metrics response: snapshot on the loop, format and gzip in a thread."""
    import asyncio  # the listener's only: a oneshot renders without an event loop (no asyncio import)

    r = renderer_for(registry)
    om = wants_openmetrics(accept)
    parts = r.snapshot(names)
    gz = wants_gzip(accept_encoding)

    def work() -> bytes:
        body = r.render(parts, om)
        return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0) if gz else body

    global _RENDERING
    _RENDERING += 1
    try:
        body = await asyncio.to_thread(work)
    finally:
        _RENDERING -= 1
    headers = {"content-type": CONTENT_TYPE_OPENMETRICS if om else CONTENT_TYPE_TEXT, "vary": "Accept, Accept-Encoding"}
    if gz:
        headers["content-encoding"] = "gzip"
    return body, headers
