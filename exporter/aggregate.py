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

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import polars as pl
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.labelcap import LabelCap
from exporter.metrics import (
    PLACEHOLDER_NONE,
    PLACEHOLDER_OTHER,
    PLACEHOLDER_OVERFLOW,
    PLACEHOLDER_UNKNOWN,
    SPECS,
    SelfMetrics,
    sample_names,
)
from exporter.parser import ErrorLog
from exporter.records import LINE, PY_WHITESPACE, Columns, RecordBatch, address_domain, col
from exporter.timeparse import EARLIEST_BELIEVED, LATEST, MAX_FUTURE, MAX_QUEUE_AGE, parse_pmta_time

if TYPE_CHECKING:
    from exporter.config import Config

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
Lookup = Callable[[Columns, list[list[str]], bool], Sequence[tuple[str, ...] | None]]
"""(columns, rows, resume) -> (vmta, pool[, isp]) or None per row: exporter.sinks.RecordSink.lookup_vmta (its
`Delivery`); the isp, when given and not '', labels a report whose own fields name no provider."""
LATE_SLICE_ROWS = 4_096
"""f/rb/rs/r rows folded (as Python lists) at a time. A 4 MiB chunk of an FBL file holds ~25k reports: built at once,
their rows and lookup keys took ~30 MB more of a oneshot's peak (bench/README.md, twentieth round)."""

_CACHE_LIMIT = 100_000
SMALL_GROUPS = 4096
"""Failure groups up to which a chunk is merged by a Python loop; above, labelled and summed in polars."""
SMALL_DELIVERED = 512
"""Delivery groups up to which a small chunk's are merged by a Python loop too (a daemon poll then costs
one polars round, not two); above, labelled in polars and merged every few chunks (_defer_delivered)."""
FIELDS = frozenset({
    "type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnAction", "dsnStatus", "dsnDiag", "dsnMta", "bounceCat",
    "dlvSize", "vmta", "vmtaPool", "queue", "feedbackType", "reportingMta", "arrivalDate",
})
"""Every record field the aggregator reads (a metrics-only reader parses just these: FileParser.fields). arrivalDate
times a record whose timeLogged is empty (Columns.logged)."""
SEP = "\x1f"
PIPELINE_DEPTH = 2
"""Batches a pipelined aggregator (oneshot) holds before `apply` waits: one grouped, one folded."""
ENGINE = "in-memory"
"""polars engine of every plan here: 'auto' picks the streaming engine, whose start-up costs ~4 ms per
plan set; a poll's batch of a few hundred rows then cost ~13 ms to fold instead of ~8 (bench_ingest)."""
_MAIN = frozenset({"d", "t", "tq", "b"})
_LATE = frozenset({"f", "rb", "rs", "r"})


_GSMTP_ID = r"(^| )[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*\.\d+ - gsmtp$"
# Python's str `\s` also matches \x1c-\x1f (str.isspace); Rust's does not: listed so both agree.
_LOCAL_PART = r"[^\s\x1c-\x1f<>()\[\]\"',;:]+@"


def reply_key(diag: pl.Expr) -> pl.Expr:
    """The reply as the reply classifier keys it (ReplyClassifier.classify): no Gmail id, no local parts."""
    return diag.str.replace(_GSMTP_ID, " - gsmtp").str.replace_all(_LOCAL_PART, "*@", literal=False)


def mx_host(mta: pl.Expr) -> pl.Expr:
    """dsnMta without its `(ip)` part, which is all the ISP classifier reads of it ('' stays '')."""
    # head(find) rather than split_exact: one string column built instead of a two-field struct (~35% less)
    host = pl.coalesce(mta.str.head(mta.str.find("(", literal=True)), mta).str.strip_chars()
    return pl.when(host == "").then(mta).otherwise(host.str.to_lowercase())


_DERIVED: dict[tuple[tuple[str, ...], bool, frozenset[str]], list[pl.Expr]] = {}


def _derive(c: Columns, has_times: bool, types: frozenset[str]) -> list[pl.Expr]:
    """The columns the group-bys read, from one chunk's d/t/tq/b rows (keys reduced, times parsed).

    Built once per header layout and set of record types present: a branch no row of the chunk takes
    is left out instead of being computed for every row and thrown away (an acct file's d and b rows
    never read the queue name, a diag file's t and tq rows never read dlvSize)."""
    key = (c.names, has_times, types)
    found = _DERIVED.get(key)
    if found is None:
        if len(_DERIVED) >= 256:
            _DERIVED.clear()
        found = _DERIVED[key] = _derive_exprs(c, has_times, types)
    return found


def _when(cond: pl.Expr, always: bool, never: bool, value: pl.Expr, dtype: type[pl.DataType]) -> pl.Expr:
    """`pl.when(cond).then(value)` (null otherwise), without the per-row test when every or no row passes."""
    if always:
        return value
    if never:
        return pl.lit(None, dtype=dtype)
    return pl.when(cond).then(value)


def pmta_epoch(e: pl.Expr) -> pl.Expr:
    """A PMTA time column as Unix seconds, null where Python's parser must decide (exporter.timeparse, the one
    authority: a value read here is read the same there; `_group` hands every other non-empty value to it).

    Read here: PMTA's own two forms in ASCII digits only, `2016-05-29 01:10:51+0200` padded and epoch seconds (a
    fraction after 9 or 10 digits). Anything else is Python's: chrono also takes unpadded fields with a space before
    the offset (`2016-5-29 01:10:51 +0200`), which Python reads as no time; `float` takes `1e3`, `+5` or `inf`; and
    `20160529.010203` is a basic ISO time to Python, a number to the cast."""
    pmta = (r"^(?:[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{4}"
            r"|[0-9]+|[0-9]{9,10}\.[0-9]+)$")
    iso = e.str.to_datetime("%Y-%m-%d %H:%M:%S%z", strict=False, time_unit="ms").dt.epoch("ms") / 1000.0
    t = pl.when(e.str.contains(pmta)).then(pl.coalesce(iso, e.cast(pl.Float64, strict=False)))
    return pl.when((t >= 0.0) & (t < LATEST)).then(t)  # as parse_pmta_time: else no time (digits are never NaN)


def _derive_exprs(c: Columns, has_times: bool, types: frozenset[str]) -> list[pl.Expr]:

    def field(i: int) -> pl.Expr:
        return pl.col(col(i)).fill_null("") if i >= 0 else pl.lit("")

    rcpt, queue, vmta, orig = field(c.rcpt), field(c.queue), field(c.vmta), field(c.orig)
    t = pl.col("c0")
    # tq rows (and files without rcpt) take the domain, and a missing vmta, from the queue name
    queue_vmta = (vmta == "") & queue.str.contains("/", literal=True)
    from_queue = queue.str.splitn("/", 2).struct.field("field_1")
    queue_dom = queue.str.split_exact("/", 1).struct.field("field_0")
    rcpt_dom = rcpt.str.split("@").list.last()
    if c.rcpt >= 0 and "tq" not in types:  # the domain from rcpt; a row without vmta keeps its queue name (one
        # select, no per-row split: `_vmta_pool` takes the vmta part of each distinct queue name)
        vraw, dom = (pl.when(queue_vmta).then(queue).otherwise(vmta) if c.queue >= 0 else vmta), rcpt_dom
    elif c.rcpt < 0 or types <= {"tq"}:  # every row does
        vraw, dom = pl.when(queue_vmta).then(from_queue).otherwise(vmta), queue_dom
    else:
        use_queue = t == "tq"
        own = pl.when(queue_vmta).then(queue).otherwise(vmta)
        vraw = pl.when(use_queue & queue_vmta).then(from_queue).otherwise(own)
        dom = pl.when(use_queue).then(queue_dom).otherwise(rcpt_dom)
    dom = dom.str.to_lowercase()
    timed = (t == "d") | (t == "t")
    all_timed, none_timed = types <= {"d", "t"}, not types & {"d", "t"}
    failure = t != "d"
    all_failures, no_failures = "d" not in types, types == {"d"}
    diag = _when(failure, all_failures, no_failures, field(c.dsnDiag), pl.String)
    out = [
        t.alias("t"), vraw.alias("v"), field(c.vmtaPool).alias("p"), dom.alias("dom"),
        mx_host(field(c.dsnMta)).alias("host"),
        pl.when(orig.str.contains("@", literal=True))
        .then(orig.str.split("@").list.last().str.strip_chars_end(PY_WHITESPACE + ">")  # as records.address_domain
              .str.strip_chars(PY_WHITESPACE).str.to_lowercase())
        .otherwise(pl.lit("")).alias("od"),
        _when(failure, all_failures, no_failures, field(c.dsnStatus), pl.String).alias("st"), diag.alias("diag"),
        (pl.lit(None, dtype=pl.String) if no_failures else reply_key(diag)).alias("ck"),
        _when(failure, all_failures, no_failures, field(c.bounceCat), pl.String).alias("cat"),
        *_sizes(field(c.dlvSize) if c.dlvSize >= 0 else None, t == "d", types == {"d"}, all_failures),
    ]
    if has_times:
        logged = c.logged_expr()  # timeLogged, or where it is empty arrivalDate: per row, as a JSON record's
        out += [logged.alias("tl"), field(c.timeQueued).alias("tq"),
                pmta_epoch(logged).alias("a"),  # every type's: the newest record time, its bad_timestamp
                _when(timed, all_timed, none_timed, pmta_epoch(field(c.timeQueued)), pl.Float64).alias("b")]
    return out




def _sizes(size: pl.Expr | None, is_d: pl.Expr, all_d: bool, no_d: bool) -> list[pl.Expr]:
    """A d row's dlvSize as `sz` (Int64: its bytes where polars reads them, ASCII digits only; null otherwise) and
    `size` (its text where polars does not read it and it is not empty: `whole_size` decides those, the rare rows;
    null otherwise). The hot path is one regex test and one cast per row, as before."""
    if size is None or no_d:
        return [pl.lit(None, dtype=pl.Int64).alias("sz"), pl.lit(None, dtype=pl.String).alias("size")]
    sz = pl.when(size.str.contains(r"^[0-9]+$")).then(size.cast(pl.Int64, strict=False))
    odd = pl.when(sz.is_null() & (size != "")).then(size)
    return [_when(is_d, all_d, no_d, sz, pl.Int64).alias("sz"), _when(is_d, all_d, no_d, odd, pl.String).alias("size")]


MAX_SIZE = 2**63 - 1
"""The largest dlvSize read (Int64, as polars reads the common spelling); a larger number is no message's size."""


def whole_size(text: str) -> int | None:
    """A dlvSize polars does not read (`_sizes`) as bytes, or None (a `bad_size`): a whole number in ASCII digits,
    with blanks (space, tab) around it and a fraction of zeros only (`1234.0`: JSON's number, a script's float), is that
    number; a sign, a thousands separator, an exponent or any other fraction is no size."""
    s = text.strip(" \t")
    head, dot, frac = s.partition(".")
    if not head or len(head) > 19 or not (head.isascii() and head.isdigit()) or (dot and (not frac or frac.strip("0"))):
        return None
    n = int(head)
    return n if n <= MAX_SIZE else None


def _too_far() -> pl.Expr:
    return ((pl.col("a") - pl.col("b")).abs() > MAX_QUEUE_AGE).fill_null(False)


def _unreadable_time(timed: pl.Expr) -> pl.Expr:
    """A time field that holds something no PMTA time reads as, or a timeQueued too far off to be one
    (`MAX_QUEUE_AGE`); timeQueued is read on `timed` rows (d, t) only. Empty is no error (PMTA leaves a time empty
    where it does not apply, e.g. timeQueued of some records: no delay is observed then, and nothing is wrong)."""
    return ((pl.col("a").is_null() & (pl.col("tl") != ""))
            | (timed & ((pl.col("b").is_null() & (pl.col("tq") != "")) | _too_far())))


@lru_cache(maxsize=16)
def _group_exprs(bounds: tuple[float, ...]) -> dict[str, Any]:
    """The expressions of `_group_plans`, built once per bucket layout (building them per chunk cost
    ~1.5 ms of a daemon poll's ~8)."""
    ok = pl.col("a").is_not_null() & pl.col("b").is_not_null() & ~_too_far()
    delay = (pl.col("a") - pl.col("b")).clip(lower_bound=0.0)
    idx = pl.sum_horizontal([(delay > bound).cast(pl.Int32) for bound in bounds])
    width = len(bounds) + 1
    is_t = pl.col("t") == "t"
    timed = pl.col("t").is_in(["d", "t"])
    return {
        "with": {"ok": ok, "idx": pl.when(ok).then(idx), "delay": pl.when(ok).then(delay)},
        "hist": [*[(pl.col("idx") == i).sum().alias(f"b{i}") for i in range(width)],
                 pl.col("delay").sum().alias("s"), pl.col("ok").sum().alias("nok")],
        "tmask": {"tidx": pl.when(is_t).then(pl.col("idx")), "tdelay": pl.when(is_t).then(pl.col("delay")),
                  "tok": is_t & pl.col("ok")},
        "thist": [*[(pl.col("tidx") == i).sum().alias(f"b{i}") for i in range(width)],
                  pl.col("tdelay").sum().alias("s"), pl.col("tok").sum().alias("nok")],
        "sizes": [pl.len().alias("n"), pl.col("sz").is_not_null().sum().alias("nbytes"),
                  pl.col("sz").cast(pl.Float64).sum().alias("bytes")],  # (an Int64 sum wraps past 2**63)
        "failed": [pl.len().alias("n"), pl.col("diag").first()],
        "s_failed": [pl.len(), pl.col("diag").first()],
        "is_d": pl.col("t") == "d", "not_d": pl.col("t") != "d", "not_tq": pl.col("t") != "tq",
        "times": {"bad": _unreadable_time(timed).sum(), "neg": (timed & ok & (pl.col("a") < pl.col("b"))).sum()},
        "timed": timed,
    }


_TIME_ERRORS = ErrorLog()
"""Logs rows with bad times (file:line, rate-limited per source as the tailer's parse errors)."""


def _line_numbers(batch: RecordBatch) -> list[int] | None:
    """The batch's line numbers, or None for one built without them (a test's rows)."""
    try:
        return batch.line_numbers
    except (AssertionError, AttributeError, pl.exceptions.ColumnNotFoundError):
        return None


def _rows(frame: pl.DataFrame) -> Iterator[tuple[Any, ...]]:
    """frame.iter_rows(), from one list per column (~30% faster on a chunk's few thousand groups)."""
    return zip(*(column.to_list() for column in frame.get_columns()), strict=True)


ClassKey = tuple[str, str, str, str]
"""(provider, dsnStatus, reply key, bounceCat): what a reply class depends on."""


def _undecided(failures: pl.DataFrame, isp_of: Callable[[str, str], str | None],
               decided: dict[ClassKey, str]) -> dict[ClassKey, str]:
    """The class keys of failure groups not in `decided`, each with the first reply text that has it
    (groups whose provider `isp_of` cannot tell, None, are left out)."""
    todo: dict[ClassKey, str] = {}
    for dom, host, st, ck, cat, diag in _rows(failures.select("dom", "host", "st", "ck", "cat", "diag")):
        isp = isp_of(dom, host)
        if isp is not None and (key := (isp, st, ck, cat)) not in decided and key not in todo:
            todo[key] = diag
    return todo


def _requests(todo: dict[ClassKey, str]) -> list[tuple[str, str, str, str]]:
    """`classify_many`'s (provider, dsnStatus, reply text, bounceCat) for each key of `_undecided`."""
    return [(isp, st, diag, cat) for (isp, st, _ck, cat), diag in todo.items()]


def _has_times(c: Columns) -> bool:
    """Whether a layout's times are read (newest record time, bad_timestamp, delays): with timeLogged, whether or not
    timeQueued is logged too (PMTA's guide's own acct example has none; without it no delay is observed)."""
    return c.timeLogged >= 0


def _group_plans(lz: pl.LazyFrame, bounds: tuple[float, ...], has_orig: bool,
                 has_times: bool) -> dict[str, pl.LazyFrame]:
    """Every aggregate of one chunk, to run in one collect_all (polars shares the common input)."""
    x = _group_exprs(bounds)
    hist: list[pl.Expr] = []
    if has_times:
        lz = lz.with_columns(**x["with"])
        hist = x["hist"]
    d = lz.filter(x["is_d"])
    rest = lz.filter(x["not_d"])
    if has_times:  # deferral ages count t rows only: masked once, not filtered per group and bucket
        rest = rest.with_columns(**x["tmask"])
    plans: dict[str, pl.LazyFrame] = {
        "delivered": d.group_by(["v", "p", "dom", "host"], maintain_order=True).agg(*x["sizes"], *hist),
        "failures": rest.group_by(["t", "v", "p", "dom", "host", "st", "ck", "cat"], maintain_order=True).agg(
            *x["failed"], *(x["thist"] if has_times else [])),
    }
    if has_orig:
        plans["s_delivered"] = d.group_by(["od", "dom", "host"], maintain_order=True).len()
        plans["s_failures"] = rest.filter(x["not_tq"]).group_by(
            ["t", "od", "dom", "host", "st", "ck", "cat"], maintain_order=True
        ).agg(*x["s_failed"])
    if has_times:  # the newest believable time: one broken clock in the chunk must not hide the others
        believable = pl.col("a").is_between(EARLIEST_BELIEVED, time.time() + MAX_FUTURE)
        plans["times"] = lz.select(**x["times"], newest=pl.col("a").filter(believable).max())
    return plans


def _collect(plans: dict[str, pl.LazyFrame]) -> dict[str, pl.DataFrame]:
    return dict(zip(plans, pl.collect_all(list(plans.values()), engine=ENGINE), strict=True)) if plans else {}


@dataclass(slots=True)
class _Grouped:
    """One chunk's d/t/tq/b rows grouped on raw keys, before any label is decided (`_group`)."""

    has_orig: bool
    has_times: bool
    keys: dict[str, pl.DataFrame]
    """The distinct (vmta, pool), (domain, MX host) and sender domains, in first-seen order."""
    res: dict[str, pl.DataFrame]
    """Every aggregate of `_group_plans`."""
    bad_times: list[tuple[int, str, str | None, bool]] = field(default_factory=list)
    """(line, timeLogged, timeQueued) of the first bad-time rows, to log (looked up only when there are some)."""
    bad_sizes: int = 0
    """d rows whose dlvSize is no size (`whole_size`)."""
    bad_size_rows: list[tuple[int, str]] = field(default_factory=list)
    """(line, dlvSize) of the first of them, to log."""


def _group(c: Columns, derived: pl.DataFrame, bounds: tuple[float, ...]) -> _Grouped:
    """The stateless half of folding the d/t/tq/b rows: group in polars on reduced raw keys.

    Keys are reduced before grouping the way the classifiers reduce them (dsnMta to its host,
    replies without Gmail ids or address local parts), so a chunk has a few thousand groups
    however unique its rows are. No label or series is read: safe on any thread, in any order.
    """
    has_orig = c.orig >= 0
    has_times = _has_times(c)
    lz = derived.lazy()
    timed = pl.col("t").is_in(["d", "t"])
    first: dict[str, pl.LazyFrame] = {
        "vp": lz.group_by(["v", "p"], maintain_order=True).len(),
        "ik": lz.select("dom", "host").unique(maintain_order=True),
    }
    if has_orig:
        first["od"] = lz.group_by("od", maintain_order=True).len()
    if has_times:
        first["tl"] = lz.filter(pl.col("a").is_null() & (pl.col("tl") != "")).select(pl.col("tl").unique())
        first["tq"] = lz.filter(timed & pl.col("b").is_null() & (pl.col("tq") != "")).select(pl.col("tq").unique())
    sized = derived.get_column("size").null_count() < derived.height  # a dlvSize polars did not read (rare)
    if sized:
        first["size"] = lz.filter(pl.col("size").is_not_null()).group_by("size", maintain_order=True).len()
    # The group-bys need no label, only the times: run them with the key scans (one polars round),
    # again below only in the rare chunk whose times or sizes need Python's parser.
    group = _group_plans(lz, bounds, has_orig, has_times)
    got = _collect({**first, **group})
    res = {name: got.pop(name) for name in group}
    read: dict[str, pl.Expr] = {}
    if has_times:
        odd = {x: parse_pmta_time(x) for x in got.pop("tl").to_series().to_list() + got.pop("tq").to_series().to_list()}
        if odd:  # other ISO spellings some PMTA versions write: Python's parser, distinct values only
            read["a"] = pl.coalesce("a", pl.col("tl").replace_strict(odd, default=None, return_dtype=pl.Float64))
            read["b"] = pl.coalesce("b", pl.col("tq").replace_strict(odd, default=None, return_dtype=pl.Float64))
    bad_sizes, unread = 0, []
    if sized:  # `1234.0`, ` 1234`: whole_size, distinct values only; the others are bad_size
        sizes = {}
        for text, n in _rows(got.pop("size")):
            if (size := whole_size(text)) is None:
                bad_sizes += n
                unread.append(text)
            else:
                sizes[text] = size
        if sizes:
            read["sz"] = pl.coalesce("sz", pl.col("size").replace_strict(sizes, default=None, return_dtype=pl.Int64))
    if read:
        lz = lz.with_columns(**read)
        res = _collect(_group_plans(lz, bounds, has_orig, has_times))
    bad_times: list[tuple[int, str, str | None, bool]] = []
    if has_times and LINE in derived.columns and res["times"].item(0, "bad"):  # rare: the rows to log, found now
        bad = _unreadable_time(timed)
        bad_times = list(lz.filter(bad).select(LINE, "tl", "tq", (timed & _too_far()).alias("far"))
                         .head(_TIME_ERRORS.burst)
                         .collect().iter_rows())
    bad_size_rows: list[tuple[int, str]] = []
    if bad_sizes and LINE in derived.columns:
        bad_size_rows = list(lz.filter(pl.col("size").is_in(unread)).select(LINE, "size").head(_TIME_ERRORS.burst)
                             .collect().iter_rows())
    return _Grouped(has_orig, has_times, got, res, bad_times, bad_sizes, bad_size_rows)


@dataclass(slots=True)
class _Prepared:
    """What folding one batch needs, taken from it by the stateless first step (`_prepare`): the worker
    holds this, not the batch, so a chunk's parsed frame is freed as soon as its keys are derived."""

    source: str
    repaired: int
    derived: pl.DataFrame | None  # the d/t/tq/b rows' derived columns (_derive)
    late: RecordBatch | None  # the f/rb/rs/r rows
    grouped: _Grouped | None = None  # `derived` grouped (then `derived` is dropped): `_prepare(bounds=...)`
    path: str = ""  # the batch's file, to log bad times with


def _prepare(batch: RecordBatch, bounds: tuple[float, ...] | None = None,
             class_keys: Future[pl.DataFrame | None] | None = None) -> _Prepared:
    """The stateless part of folding a batch (no series read): safe on any thread. With `bounds`, the
    derived rows are grouped too (`_group`): all that is left to the fold is labelling and merging.
    `class_keys` is given the failure rows' distinct class keys (`_class_keys`) as soon as they are derived, so the
    reply classes are decided while the rows are grouped; it is always resolved (None when there are none)."""
    try:
        return _prepare_batch(batch, bounds, class_keys)
    finally:
        if class_keys is not None and not class_keys.done():
            class_keys.set_result(None)


def _class_keys(derived: pl.DataFrame) -> pl.DataFrame:
    """(dom, host, st, ck, cat, diag) of the first failure row of each distinct (dom, host, st, ck, cat): what the
    reply classifier is asked ahead of the fold (`RecordAggregator._warm`)."""
    return (derived.lazy().filter(pl.col("t") != "d")
            .unique(subset=["dom", "host", "st", "ck", "cat"], keep="first", maintain_order=True)
            .select("dom", "host", "st", "ck", "cat", "diag").collect(engine=ENGINE))


def _prepare_batch(batch: RecordBatch, bounds: tuple[float, ...] | None,
                   class_keys: Future[pl.DataFrame | None] | None) -> _Prepared:
    frame = batch.frame
    types = set(frame.get_column("c0").unique().to_list())
    c = batch.columns
    derived = late = None
    if types & _MAIN:
        main = frame.lazy() if types <= _MAIN else frame.lazy().filter(pl.col("c0").is_in(list(_MAIN)))
        exprs = _derive(c, _has_times(c), frozenset(types & _MAIN))
        if (_has_times(c) or c.dlvSize >= 0) and LINE in frame.columns:  # to log bad times and sizes by line (a
            # column carried, no work per row)
            exprs = [*exprs, pl.col(LINE)]
        derived = main.select(exprs).collect(engine=ENGINE)
        if class_keys is not None and (types & _MAIN) != {"d"}:
            class_keys.set_result(_class_keys(derived))
    if types & _LATE:
        late = RecordBatch(batch.source, batch.path, c, frame=frame.filter(pl.col("c0").is_in(list(_LATE))))
    if bounds is not None and derived is not None:
        return _Prepared(batch.source, batch.repaired, None, late, _group(c, derived, bounds), path=batch.path)
    return _Prepared(batch.source, batch.repaired, derived, late, path=batch.path)


class _LabelFrames:
    """One chunk's label decisions as small frames, joined onto its groups (raw key -> label)."""

    __slots__ = ("vp", "isp", "_senders")

    def __init__(self, vp: dict[tuple[str, str], tuple[str, str]], isp: dict[tuple[str, str], str],
                 senders: dict[str, str] | None) -> None:
        s = pl.String
        self.vp = pl.LazyFrame({"v": [k[0] for k in vp], "p": [k[1] for k in vp], "vl": [x[0] for x in vp.values()],
                                "pl": [x[1] for x in vp.values()]}, schema={"v": s, "p": s, "vl": s, "pl": s})
        self.isp = pl.LazyFrame({"dom": [k[0] for k in isp], "host": [k[1] for k in isp], "il": list(isp.values())},
                                schema={"dom": s, "host": s, "il": s})
        self._senders = senders or {}

    @property
    def sender(self) -> pl.LazyFrame:
        return pl.LazyFrame({"od": list(self._senders), "sl": list(self._senders.values())},
                            schema={"od": pl.String, "sl": pl.String})

    def with_vp(self, lz: pl.LazyFrame) -> pl.LazyFrame:
        return lz.join(self.vp, on=["v", "p"], how="left", maintain_order="left")

    def with_isp(self, lz: pl.LazyFrame) -> pl.LazyFrame:
        return lz.join(self.isp, on=["dom", "host"], how="left", maintain_order="left")

    def with_sender(self, lz: pl.LazyFrame) -> pl.LazyFrame:
        return lz.join(self.sender, on="od", how="left", maintain_order="left")


def failure_series(typ: str, vmta: str, pool: str, isp: str, cat: str | None, cls: str) -> tuple[str, Key]:
    """(metric, label key) a bounce (`b`) or deferral (`t`/`tq`) group is counted in."""
    if typ == "b":
        catl = PLACEHOLDER_NONE if not cat or cat == "success" else (
            cat if cat in BOUNCE_CATEGORIES else PLACEHOLDER_UNKNOWN)
        return "pmta_bounced_total", (vmta, pool, isp, catl, cls)
    return "pmta_deferred_total", (vmta, pool, isp, cls)


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
        """A histogram's list is replaced on every change, never mutated: snapshots (/metrics, checkpoints) share it."""
        self._series_of: dict[str, dict[Key, Any]] = {**self.counters, **self.histograms}
        self.dirty: set[tuple[str, Key]] = set()
        self.overflows: dict[str, int] = {}
        self.vmta_cap = LabelCap("vmta", max_vmtas)
        """Shared with the queue gauges (`QueuePoller`): a VMTA is named in both or in neither."""
        self._deferring: set[str] = set()
        self._deferring_lock = threading.Lock()
        self._pool = LabelCap("vmta_pool", max_pools)
        self._sender_fixed = frozenset(s.lower() for s in senders or [])
        self._sender_auto = LabelCap("sender", 0 if self._sender_fixed else max_senders)
        self._labels_cache: dict[tuple[str, str], tuple[str, str]] = {}
        self._sender_cache: dict[str, str] = {}
        self._isp_cache: dict[tuple[str, str], str] = {}
        self._class_cache: dict[tuple[str, str, str, str], str] = {}
        self._newest_ts: dict[str, float] = {}
        self._delivered: list[pl.DataFrame] = []
        self._worker: ThreadPoolExecutor | None = None
        self._stage: ThreadPoolExecutor | None = None
        self._warmer: ThreadPoolExecutor | None = None
        self._in_flight: deque[Future[None]] = deque()
        self._derive_here = False
        self.withheld = False
        """The record families are left off /metrics (their series still count): after an unclean stop the restored
        values are lower than those last shown, until the daemon has read that far again (exporter/daemon.py)."""

    @classmethod
    def for_config(cls, config: Config, isp_of: Callable[[str, str], str],
                   class_of: Callable[[str, str, str, str], str], self_metrics: SelfMetrics | None,
                   lookup_vmta: Lookup | None = None) -> RecordAggregator:
        """The aggregator `config` describes (buckets and label caps), as the daemon's Pipeline builds it."""
        return cls(isp_of=isp_of, class_of=class_of, buckets=config.metrics.delay_buckets,
                   max_vmtas=config.labels.max_vmtas, max_pools=config.labels.max_pools,
                   senders=config.labels.senders, max_senders=config.labels.max_senders,
                   self_metrics=self_metrics, lookup_vmta=lookup_vmta)

    # --- label normalisation (cached) -----------------------------------------------------
    def _overflow(self, label: str) -> None:
        self.overflows[label] = self.overflows.get(label, 0) + 1

    def _vmta_pool(self, vmta: str, pool: str) -> tuple[str, str]:
        key = (vmta, pool)
        hit = self._labels_cache.get(key)
        if hit is None:
            v = vmta.strip()
            if "/" in v:  # a queue name (domain/vmta) of a row without vmta: its vmta part; {default} is none
                v = v.split("/", 1)[1]
            if v == "{default}":
                v = ""
            p = pool.strip()
            hit = (self.vmta_cap(v) if v else PLACEHOLDER_NONE, self._pool(p) if p else PLACEHOLDER_NONE)
            if len(self._labels_cache) >= _CACHE_LIMIT:
                self._labels_cache.clear()
            self._labels_cache[key] = hit
        return hit

    def _sender(self, orig: str) -> str:
        return self._sender_for_domain(address_domain(orig))

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
    # --- background folding ----------------------------------------------------------------
    def run_in_background(self, derive_here: bool = False, pipelined: bool = False) -> bool:
        """Fold each batch on a worker thread while the caller reads and parses the next one.

        Parsing and the polars parts of folding release the GIL, so on two cores chunk N+1 is parsed
        while chunk N is aggregated. Batches are folded one at a time in arrival order (the same
        series, labels and cap admissions as inline); every reader of the series (flush, take_dirty,
        collect, the exposition snapshot, restore) first waits for the batches in flight. Not with a
        correlator: its vmta lookups belong to the event loop. Returns whether it was switched on.

        `derive_here` (a backfill with nothing else to serve): each batch's keys and times are derived
        on the caller's thread (`apply`) while the worker still folds the previous one; the daemon
        keeps its event loop free. `pipelined` (oneshot): a pipeline of four threads instead: the caller
        parses a chunk while a second thread derives and groups the one before (`_prepare` with the
        bounds: all the per-row work, polars, no state), a third decides the reply classes of that one's
        failure keys as soon as they are derived, while it is grouped (`_warmed`: the classifier, Python), and the
        worker labels and merges the oldest.
        """
        if self.lookup_vmta is None and self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="watchtower-aggregate")
            self._derive_here = derive_here
            if pipelined:
                self._stage = ThreadPoolExecutor(1, thread_name_prefix="watchtower-group")
                self._warmer = ThreadPoolExecutor(1, thread_name_prefix="watchtower-classify")
        return self._worker is not None

    def _warmed(self, class_keys: Future[pl.DataFrame | None], job: Future[_Prepared]) -> _Prepared:
        """The grouping thread's result once its reply classes are decided (`_warm`): a fourth stage, as
        the classifier is Python (it holds the GIL) while grouping is polars (it releases it). The keys come
        before the groups (`_prepare`'s `class_keys`): the classes are decided while the chunk is grouped."""
        keys = class_keys.result()
        if keys is not None:
            self._warm(keys)
        return job.result()

    def _warm(self, failures: pl.DataFrame) -> None:
        """Decide the reply classes of a chunk's new failure keys ahead of its fold (another thread).

        The classifier caches its answers, which depend on (provider, status, reply, bounceCat) only, so
        the fold then finds them decided: its own calls, in file order, stay the only ones that choose
        which reply text decides a key. Skipped where the provider depends on what earlier records
        taught the ISP classifier (no dsnMta), which only the fold may ask, and for keys the fold has
        already decided (a read of its cache: a stale one only warms a key twice).
        """
        known = getattr(getattr(self.isp_of, "__self__", None), "known", None)
        many = getattr(getattr(self.class_of, "__self__", None), "classify_many", None)
        if known is None or many is None or not failures.height:
            return
        todo = _undecided(failures, known, self._class_cache)  # a read only: a stale cache warms a key twice
        if todo:
            many(_requests(todo))

    def wait(self) -> None:
        """Until the batches in flight (if any) are folded in; re-raises what folding them raised."""
        while self._in_flight:
            self._in_flight.popleft().result()

    def close(self) -> None:
        """Fold what is in flight and stop the worker threads (if any)."""
        try:
            self.wait()
        finally:
            _TIME_ERRORS.flush()
            for pool in (self._stage, self._warmer, self._worker):
                if pool is not None:
                    pool.shutdown()
            self._worker = self._stage = self._warmer = None

    def reset_caches(self) -> None:
        """Forget cached classification answers (the daemon swaps the tables on SIGHUP)."""
        self.wait()
        for cache in (self._labels_cache, self._sender_cache, self._isp_cache, self._class_cache):
            cache.clear()

    def apply(self, batch: RecordBatch) -> None:
        """Fold one batch into the series (on the worker thread once `run_in_background()` was called)."""
        if self._worker is None:
            self._apply(batch.columns, batch)
            return
        job: _Prepared | RecordBatch | Future[_Prepared] = batch
        if self._stage is not None and self._warmer is not None:  # stateless steps on their own threads
            keys: Future[pl.DataFrame | None] = Future()
            job = self._warmer.submit(self._warmed, keys, self._stage.submit(_prepare, batch, tuple(self.bounds), keys))
            while len(self._in_flight) >= PIPELINE_DEPTH:  # bounded read-ahead: memory of a few chunks
                self._in_flight.popleft().result()
        else:
            if self._derive_here:
                job = _prepare(batch)  # the stateless step (no series read), here
            self.wait()
        self._in_flight.append(self._worker.submit(self._apply, batch.columns, job))

    def _apply(self, c: Columns, job: _Prepared | RecordBatch | Future[_Prepared]) -> None:
        """Fold one batch into the series: columnar for d/t/tq/b, per row for the rare rest."""
        if isinstance(job, Future):
            job = job.result()  # the stateless step, on the other thread (run_in_background(pipelined=True))
        if isinstance(job, RecordBatch):
            job = _prepare(job)
        grouped = job.grouped
        if grouped is None and job.derived is not None:
            grouped = _group(c, job.derived, tuple(self.bounds))
        if grouped is not None:
            self._apply_main(job.source, grouped, job.path)
        if job.late is not None:
            self._apply_late_in_slices(job.late)
        if job.repaired and self.self_metrics is not None:
            self.self_metrics.records_repaired.labels(job.source, "invalid_utf8").inc(job.repaired)
        _TIME_ERRORS.expire()  # bad times left unlogged in a window that has passed: said now
        if self.self_metrics is not None and self.overflows:
            for label, n in self.overflows.items():
                self.self_metrics.label_overflow.labels(label).inc(n)
            self.overflows.clear()

    def _apply_main(self, source: str, g: _Grouped, path: str = "") -> None:
        """d/t/tq/b rows, grouped first (`_group`), then labelled group by group in Python.

        Labels (caps, ISP, sender, class) are decided once per distinct key, in first-seen order,
        exactly as a row-by-row pass would.
        """
        has_orig, has_times, got, res = g.has_orig, g.has_times, g.keys, g.res
        # Labels of every distinct key, in first-seen order (caps admit values in that order).
        vp = {}
        nv = np_ = 0
        for v, p, n in _rows(got["vp"]):
            vp[(v, p)] = labels = self._vmta_pool(v, p)
            nv += n if labels[0] == PLACEHOLDER_OVERFLOW else 0
            np_ += n if labels[1] == PLACEHOLDER_OVERFLOW else 0
        isp = {(d, h): self._isp(d, h) for d, h in _rows(got["ik"])}
        senders: dict[str, str] = {}
        ns = 0
        if has_orig:
            for od, n in _rows(got["od"]):
                senders[od] = sender = self._sender_for_domain(od)
                ns += n if sender == PLACEHOLDER_OTHER else 0
        for label, n in (("vmta", nv), ("vmta_pool", np_), ("sender", ns if self._sender_auto.cap else 0)):
            if n:
                self.overflows[label] = self.overflows.get(label, 0) + n
        labels = _LabelFrames(vp, isp, senders if has_orig else None)
        groups = res["failures"].height + (res["s_failures"].height if has_orig else 0)
        if groups <= SMALL_GROUPS:  # a small chunk (the daemon's polls): fewer polars plans, a short loop
            if res["delivered"].height <= SMALL_DELIVERED:  # no second polars round at all
                self._merge_deferred()  # series keep their first-seen order
                self._merge_delivered_rows(res["delivered"], vp, isp, has_times)
            else:
                done = _collect(self._delivered_plan(res["delivered"], labels, has_times))
                self._defer_delivered(done.get("delivered"))
            self._classify_rows(res["failures"], isp)
            self._merge_failure_rows(res["failures"], vp, isp, has_times)
            if has_orig:
                self._merge_sender_rows(res, senders, isp)
        else:
            classes = self._class_frame(res["failures"], labels)
            done = _collect({**self._delivered_plan(res["delivered"], labels, has_times),
                             **self._failure_plans(res["failures"], labels, classes, has_times),
                             **(self._sender_plans(res, labels, classes) if has_orig else {})})
            self._defer_delivered(done.get("delivered"))
            self._merge_failures(done)
            self._merge_senders(done)
        self._bad_sizes(source, g.bad_sizes, path, g.bad_size_rows)
        if has_times:
            bad, neg, newest = res["times"].row(0)
            self._bad_times(source, bad, path, g.bad_times)
            if neg and self.self_metrics is not None:
                self.self_metrics.negative_delays.labels(source).inc(neg)
            if newest is not None:
                self._newest(source, float(newest))

    def _classify_rows(self, failures: pl.DataFrame, isp: dict) -> None:
        """Reply classes of a small chunk's new keys, decided in one batch before the merge loop reads them."""
        many = getattr(getattr(self.class_of, "__self__", None), "classify_many", None)
        if many is None or not failures.height:
            return
        cache = self._class_cache
        todo = _undecided(failures, lambda dom, host: isp[(dom, host)], cache)
        if todo:
            found = many(_requests(todo))
            for key, cls in zip(todo, found, strict=True):
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[key] = cls

    def _merge_failure_rows(self, grouped: pl.DataFrame, vp: dict, isp: dict, has_times: bool) -> None:
        """_merge_failures for a small chunk: one loop over its groups (the same sums, in the same order)."""
        bounced = self.counters["pmta_bounced_total"]
        deferred = self.counters["pmta_deferred_total"]
        ages = self.histograms["pmta_deferral_age_seconds"]
        dirty = self.dirty
        width = len(self.bounds) + 2
        deferring: set[str] = set()
        for row in _rows(grouped):
            typ, v, p, dom, host, st, ck, cat, n, diag = row[:10]
            vl, pl_ = vp[(v, p)]
            i = isp[(dom, host)]
            cls = self._class(i, st, ck, cat, diag)
            name, key = failure_series(typ, vl, pl_, i, cat, cls)
            series = bounced if typ == "b" else deferred
            series[key] = series.get(key, 0) + n
            dirty.add((name, key))
            if typ != "b":
                deferring.add(vl)
            if has_times and typ == "t" and row[10 + width]:
                self._add_hist(ages, "pmta_deferral_age_seconds", (pl_, i), row[10:10 + width])
        self._note_deferring(deferring)

    def _merge_sender_rows(self, res: dict[str, pl.DataFrame], senders: dict[str, str], isp: dict) -> None:
        """_merge_senders for a small chunk: loops over its groups."""
        local: dict[Key, int] = {}
        for od, dom, host, n in _rows(res["s_delivered"]):
            key = (senders[od], isp[(dom, host)])
            local[key] = local.get(key, 0) + n
        self._merge("pmta_sender_delivered_total", local)
        bounced: dict[Key, int] = {}
        deferred: dict[Key, int] = {}
        for typ, od, dom, host, st, ck, cat, n, diag in _rows(res["s_failures"]):
            i = isp[(dom, host)]
            key = (senders[od], i, self._class(i, st, ck, cat, diag))
            target = bounced if typ == "b" else deferred
            target[key] = target.get(key, 0) + n
        self._merge("pmta_sender_bounced_total", bounced)
        self._merge("pmta_sender_deferred_total", deferred)

    def _class_frame(self, failures: pl.DataFrame, labels: _LabelFrames) -> pl.LazyFrame:
        """(il, st, ck, cat) -> cls for this chunk's failure groups; new keys decided in one batch.

        Replies carrying queue ids are distinct per message: thousands of new keys per chunk, which the
        classifier's batch entry point (`classify_many`) decides far faster than one call each. Each key
        is decided on the first raw reply of its first group, as a group-by-group pass would.
        """
        s = pl.String
        if not failures.height:
            return pl.LazyFrame(schema={"il": s, "st": s, "ck": s, "cat": s, "cls": s})
        keys = labels.with_isp(failures.lazy().select("dom", "host", "st", "ck", "cat", "diag")).unique(
            subset=["il", "st", "ck", "cat"], keep="first", maintain_order=True).select(
            "il", "st", "ck", "cat", "diag").collect(engine=ENGINE)
        cache = self._class_cache
        rows = list(_rows(keys))  # (il, st, ck, cat, diag), as selected
        many = getattr(getattr(self.class_of, "__self__", None), "classify_many", None)
        todo = [(i, st, diag, cat) for i, st, ck, cat, diag in rows if (i, st, ck, cat) not in cache]
        decided: dict[tuple[str, str, str, str], str] = {}
        if todo and many is not None:
            found = many(todo)
            for (i, st, ck, cat, _diag), cls in zip((r for r in rows if r[:4] not in cache), found, strict=True):
                decided[(i, st, ck, cat)] = cls
            for key, cls in decided.items():
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[key] = cls
        out = [decided.get(r[:4]) or self._class(*r) for r in rows]
        return keys.lazy().select("il", "st", "ck", "cat").with_columns(pl.Series("cls", out, dtype=s))

    def _note_deferring(self, vmtas: set[str]) -> None:
        """VMTAs a t/tq record named: they have recipients queued (`take_deferring_vmtas`)."""
        vmtas.discard(PLACEHOLDER_NONE)
        vmtas.discard(PLACEHOLDER_OVERFLOW)
        if vmtas:
            with self._deferring_lock:
                self._deferring |= vmtas

    def take_deferring_vmtas(self) -> set[str]:
        """The VMTAs deferred since the last call (the queue poller's, another thread's). PMTA's queue and VMTA
        lists are top N: a VMTA with a small backlog is in neither, and is asked for by name only if we say so."""
        with self._deferring_lock:
            taken, self._deferring = self._deferring, set()
        return taken

    def _class(self, isp: str, st: str, ck: str, cat: str, diag: str) -> str:
        """Reply class of a group: keyed by the reduced text, decided on one raw text of the group."""
        key = (isp, st, ck, cat)
        cls = self._class_cache.get(key)
        if cls is None:
            if len(self._class_cache) >= _CACHE_LIMIT:
                self._class_cache.clear()
            cls = self._class_cache[key] = self.class_of(isp, st, diag, cat)
        return cls

    def _newest(self, source: str, ts: float) -> None:
        """watchtower_last_record_timestamp_seconds: never backwards, never ahead of now. A record up to a day ahead
        (a PMTA host's clock off) counts as logged now: held ahead, the gauge looked fresh that long after tailing
        stopped; one further ahead, or before EARLIEST_BELIEVED (a clock not set yet), is not believed at all. What
        it holds once the clock stepped back behind it was read while the clock was ahead: the next record replaces it
        (it held the gauge ahead until records passed it)."""
        now = time.time()
        if self.self_metrics is None or not EARLIEST_BELIEVED <= ts <= now + MAX_FUTURE:
            return
        held = self._newest_ts.get(source, -1.0)
        value = max(held if held <= now else -1.0, min(ts, now))  # a time ahead of now was read before a step back
        if value == held:
            return
        self._newest_ts[source] = value
        self.self_metrics.last_record_ts.labels(source).set(value)

    def _bad_times(self, source: str, n: int, path: str = "",
                   rows: list[tuple[int, str, str | None, bool]] | None = None) -> None:
        """Count `n` rows with bad times; log them by file and line as the parser logs its errors (`rows`: the
        first of them, as many as a burst logs; the others only counted as not logged). A row's timeQueued is None
        where it is not read (f, rb, rs, r)."""
        said = [(line, f"timeQueued {tq} is more than {MAX_QUEUE_AGE / 86_400:.0f} days from timeLogged {tl}" if far
                 else f"timeLogged {tl}" if tq is None else f"timeLogged {tl}, timeQueued {tq}")
                for line, tl, tq, far in rows or []]
        self._parse_errors(source, "bad_timestamp", n, path, said)

    def _bad_sizes(self, source: str, n: int, path: str = "", rows: list[tuple[int, str]] | None = None) -> None:
        """Count `n` d rows whose dlvSize is no size (their deliveries counted, their bytes not); log the first."""
        self._parse_errors(source, "bad_size", n, path, [(line, f"dlvSize {size}") for line, size in rows or []])

    def _parse_errors(self, source: str, reason: str, n: int, path: str, said: list[tuple[int, str]]) -> None:
        """Count `n` records with a field no PMTA record holds (`reason`); log `said`, the first of them by line and
        what is wrong, as the parser logs its errors (rate-limited per source); the others only counted as not
        logged."""
        if not n:
            return
        if self.self_metrics is not None:
            self.self_metrics.parse_errors.labels(source, reason).inc(n)
        for line, text in said:
            _TIME_ERRORS.report(source, path, line, reason, text)
        if n > len(said):
            _TIME_ERRORS.not_logged(source, n - len(said))

    def _delivered_plan(self, grouped: pl.DataFrame, labels: _LabelFrames, has_times: bool) -> dict[str, pl.LazyFrame]:
        """This chunk's d groups with their labels (vmta, pool, isp) instead of raw keys."""
        if not grouped.height:
            return {}
        width = len(self.bounds) + 1
        hist = ([pl.col(f"b{i}") for i in range(width)] + [pl.col("s"), pl.col("nok")] if has_times
                else [pl.lit(0).alias(f"b{i}") for i in range(width)] + [pl.lit(0).alias("s"), pl.lit(0).alias("nok")])
        return {"delivered": labels.with_isp(labels.with_vp(grouped.lazy())).select(
            "vl", "pl", "il", *[e.cast(pl.Float64) for e in [pl.col("n"), pl.col("nbytes"), pl.col("bytes"), *hist]])}

    def _defer_delivered(self, labelled: pl.DataFrame | None) -> None:
        """Keep this chunk's labelled d groups: they are summed and merged into the series in one go when
        the series are next read (exposition, checkpoint) or every few chunks, instead of a Python loop
        over thousands of (vmta, pool, domain, MX) groups per chunk."""
        if labelled is None:
            return
        self._delivered.append(labelled)
        if len(self._delivered) >= 32:
            self._merge_deferred()

    def flush(self) -> None:
        """Merge the deferred d groups into the series (call before reading them)."""
        self.wait()
        self._merge_deferred()

    def _merge_deferred(self) -> None:
        if not self._delivered:
            return
        frames, self._delivered = self._delivered, []
        merged = pl.concat(frames).group_by(["vl", "pl", "il"], maintain_order=True).sum()
        self._merge_delivered(merged)

    def _merge_delivered(self, grouped: pl.DataFrame) -> None:
        width = len(self.bounds) + 2
        for row in _rows(grouped):
            v, p, i, n, nbytes, total = row[:6]
            self._add_delivered((v, p, i), int(n), nbytes, total, row[6:6 + width] if row[6 + width] else None)

    def _merge_delivered_rows(self, grouped: pl.DataFrame, vp: dict, isp: dict, has_times: bool) -> None:
        """_merge_delivered for a small chunk's raw d groups, labelled here (the same sums, in the same order)."""
        width = len(self.bounds) + 2
        for row in _rows(grouped):
            v, p, dom, host, n, nbytes, total = row[:7]
            vl, pl_ = vp[(v, p)]
            hist = row[7:7 + width] if has_times and row[7 + width] else None
            self._add_delivered((vl, pl_, isp[(dom, host)]), int(n), nbytes, float(total), hist)

    def _add_delivered(self, key: Key, n: int, nbytes: Any, total: Any, hist: tuple | None) -> None:
        """One labelled group of d records: delivered count, bytes (when any record had a size), delay histogram."""
        delivered = self.counters["pmta_delivered_total"]
        delivered[key] = delivered.get(key, 0) + n
        self.dirty.add(("pmta_delivered_total", key))
        if nbytes:
            dbytes = self.counters["pmta_delivered_bytes_total"]
            dbytes[key] = dbytes.get(key, 0) + total
            self.dirty.add(("pmta_delivered_bytes_total", key))
        if hist is not None:
            self._add_hist(self.histograms["pmta_delivery_delay_seconds"], "pmta_delivery_delay_seconds", key, hist)

    def _add_hist(self, series: dict[Key, list[float]], name: str, key: Key, values: tuple) -> None:
        h = series.get(key)  # replaced, never mutated: the /metrics renderer holds snapshots of these lists
        if h is None:
            series[key] = [float(x or 0) for x in values]
        else:
            series[key] = [a + (b or 0) for a, b in zip(h, values, strict=True)]
        self.dirty.add((name, key))

    def _failure_plans(self, grouped: pl.DataFrame, labels: _LabelFrames, classes: pl.LazyFrame,
                       has_times: bool) -> dict[str, pl.LazyFrame]:
        """The b/t/tq groups labelled and summed per label set (first-seen order, as a group-by-group pass
        would add them), so Python merges a few hundred rows, not one per distinct reply."""
        if not grouped.height:
            return {}
        lz = labels.with_isp(labels.with_vp(grouped.lazy())).join(
            classes, on=["il", "st", "ck", "cat"], how="left", maintain_order="left")
        plans = {"f_counts": lz.group_by(["t", "vl", "pl", "il", "cat", "cls"], maintain_order=True).agg(
            pl.col("n").sum())}
        if has_times:
            plans["f_ages"] = lz.filter((pl.col("t") == "t") & (pl.col("nok") > 0)).group_by(
                ["pl", "il"], maintain_order=True).agg(*[pl.col(f"b{i}").sum() for i in range(len(self.bounds) + 1)],
                                                       pl.col("s").sum())
        return plans

    def _merge_failures(self, done: dict[str, pl.DataFrame]) -> None:
        """b -> pmta_bounced_total; t and tq -> pmta_deferred_total; t ages -> pmta_deferral_age_seconds."""
        counts = done.get("f_counts")
        if counts is None:
            return
        bounced = self.counters["pmta_bounced_total"]
        deferred = self.counters["pmta_deferred_total"]
        dirty = self.dirty
        deferring: set[str] = set()
        for typ, vl, pl_, i, cat, cls, n in _rows(counts):
            name, key = failure_series(typ, vl, pl_, i, cat, cls)
            series = bounced if typ == "b" else deferred
            series[key] = series.get(key, 0) + n
            dirty.add((name, key))
            if typ != "b":
                deferring.add(vl)
        self._note_deferring(deferring)
        ages = done.get("f_ages")
        if ages is not None:
            series = self.histograms["pmta_deferral_age_seconds"]
            for pl_, i, *values in _rows(ages):
                self._add_hist(series, "pmta_deferral_age_seconds", (pl_, i), tuple(values))

    def _sender_plans(self, res: dict[str, pl.DataFrame], labels: _LabelFrames,
                      classes: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
        plans = {"s_delivered": labels.with_isp(labels.with_sender(res["s_delivered"].lazy())).group_by(
            ["sl", "il"], maintain_order=True).agg(pl.col("len").sum())}
        if res["s_failures"].height:
            plans["s_failures"] = labels.with_isp(labels.with_sender(res["s_failures"].lazy())).join(
                classes, on=["il", "st", "ck", "cat"], how="left", maintain_order="left").group_by(
                ["t", "sl", "il", "cls"], maintain_order=True).agg(pl.col("len").sum())
        return plans

    def _merge_senders(self, done: dict[str, pl.DataFrame]) -> None:
        if "s_delivered" not in done:
            return
        self._merge("pmta_sender_delivered_total", {(sl, i): n for sl, i, n in _rows(done["s_delivered"])})
        bounced: dict[Key, int] = {}
        deferred: dict[Key, int] = {}
        for typ, sl, i, cls, n in _rows(done["s_failures"]) if "s_failures" in done else ():
            target = bounced if typ == "b" else deferred
            target[(sl, i, cls)] = target.get((sl, i, cls), 0) + n
        self._merge("pmta_sender_bounced_total", bounced)
        self._merge("pmta_sender_deferred_total", deferred)

    def _apply_late_in_slices(self, late: RecordBatch) -> None:
        """The late rows LATE_SLICE_ROWS at a time, each slice's Python rows dropped before the next is built; their
        vmta lookups share one budget (the batch's)."""
        looked_up = False
        for start in range(0, len(late), LATE_SLICE_ROWS):
            part = late.slice(start, min(start + LATE_SLICE_ROWS, len(late))) if len(late) > LATE_SLICE_ROWS else late
            looked_up = self._apply_late(part, part.rows, looked_up) or looked_up

    def _apply_late(self, batch: RecordBatch, rows: list[list[str]], resume: bool = False) -> bool:
        """f, rb, rs and r records: rare, so clarity over speed; vmta/pool attributed when missing (not r), and the
        isp of a report whose own fields resolve to no provider (`other`: no recipient domain, as an FBL whose
        recipient Hotmail anonymised, or one no table lists; a dsnMta or reporting MTA no table lists either) taken
        from the delivery it was matched to, if any (else its own `other`, as without a correlator). True when the
        lookup was asked (`resume`: it was already, for an earlier slice of the same batch)."""
        c = batch.columns

        def missing(row: list[str]) -> bool:  # r (a reception) has no delivery to attribute: `none` if empty
            return (c.vmta < 0 or not row[c.vmta]) and row[c.type] != "r"

        own = {id(row): self._own_isp(c, row) for row in rows if row[c.type] != "r"}  # in file order (it learns)
        need = [r for r in rows if missing(r) or own.get(id(r)) == PLACEHOLDER_OTHER]
        asked = bool(need) and self.lookup_vmta is not None
        hits = self.lookup_vmta(c, need, resume) if asked else [None] * len(need)
        found = {id(row): hit for row, hit in zip(need, hits, strict=True)}
        complaints: dict[Key, int] = {}
        s_compl: dict[Key, int] = {}
        rbounced: dict[Key, int] = {}
        rstatus: dict[Key, int] = {}
        received: dict[Key, int] = {}
        newest, believable = -1.0, time.time() + MAX_FUTURE
        bad_times: list[int] = []  # rows whose timeLogged is no time (empty is none: PMTA leaves some so)
        for k, row in enumerate(rows):
            t = row[c.type]
            if c.timeLogged >= 0:
                text = c.logged(row)  # timeLogged, or where it is empty arrivalDate (as `_derive_exprs`)
                logged = parse_pmta_time(text)
                if logged is None:
                    if text:
                        bad_times.append(k)
                elif newest < logged <= believable and logged >= EARLIEST_BELIEVED:
                    newest = logged
            hit = found.get(id(row))
            if missing(row):
                v, p = self._vmta_pool(hit[0], hit[1]) if hit else (PLACEHOLDER_UNKNOWN, PLACEHOLDER_UNKNOWN)
            else:
                v, p = self._vmta_pool(row[c.vmta] if c.vmta >= 0 else "", row[c.vmtaPool] if c.vmtaPool >= 0 else "")
            if v == PLACEHOLDER_OVERFLOW:
                self._overflow("vmta")
            if p == PLACEHOLDER_OVERFLOW:
                self._overflow("vmta_pool")
            isp = own.get(id(row), PLACEHOLDER_NONE)
            if isp == PLACEHOLDER_OTHER and hit is not None and len(hit) > 2 and hit[2]:
                isp = hit[2]  # the matched delivery's provider: its MX was known when it was delivered
            if t == "f":
                ft = (row[c.feedbackType] if c.feedbackType >= 0 else "").strip().lower()
                ft = ft if ft in FEEDBACK_TYPES else (PLACEHOLDER_UNKNOWN if not ft else PLACEHOLDER_OTHER)
                key = (v, p, isp, ft)
                complaints[key] = complaints.get(key, 0) + 1
                if c.orig >= 0:
                    sender = self._sender(row[c.orig])
                    if sender == PLACEHOLDER_OTHER and self._sender_auto.cap:
                        self._overflow("sender")
                    sk = (sender, isp, ft)
                    s_compl[sk] = s_compl.get(sk, 0) + 1
            elif t == "rb":
                cat = row[c.bounceCat] if c.bounceCat >= 0 else ""
                cls = self.class_of(isp, row[c.dsnStatus] if c.dsnStatus >= 0 else "",
                                    row[c.dsnDiag] if c.dsnDiag >= 0 else "", cat)
                cat = PLACEHOLDER_NONE if not cat or cat == "success" else (
                    cat if cat in BOUNCE_CATEGORIES else PLACEHOLDER_UNKNOWN)
                key = (v, p, isp, cat, cls)
                rbounced[key] = rbounced.get(key, 0) + 1
            elif t == "rs":
                action = (row[c.dsnAction] if c.dsnAction >= 0 else "").strip().lower()
                key = (v, p, isp, action if action in DSN_ACTIONS else PLACEHOLDER_UNKNOWN)
                rstatus[key] = rstatus.get(key, 0) + 1
            else:  # r: a reception, counted under the vmta/pool it was received for
                received[(v, p)] = received.get((v, p), 0) + 1
        self._merge("pmta_complaints_total", complaints)
        self._merge("pmta_sender_complaints_total", s_compl)
        self._merge("pmta_remote_bounced_total", rbounced)
        self._merge("pmta_remote_status_total", rstatus)
        self._merge("pmta_received_total", received)
        if newest >= 0.0:  # an fbl or bounce source has no d/t rows: its newest record is one of these
            self._newest(batch.source, newest)
        if bad_times:  # counted and logged as the d/b/t/tq rows' (`_group`): the records themselves count
            lines = _line_numbers(batch)
            shown = [] if lines is None else [(lines[k], c.logged(rows[k]), None, False)
                                              for k in bad_times[:_TIME_ERRORS.burst]]
            self._bad_times(batch.source, len(bad_times), batch.path, shown)
        return asked

    def _own_isp(self, c: Columns, row: list[str]) -> str:
        """The provider a report's own fields give, the first that is not `other`: its recipient domain (the table,
        or the MX a delivery taught), its dsnMta, for an FBL its reporting MTA (`dns; hotmail.com`, where Hotmail
        hid the recipient). A report's dsnMta is the host that reported (rb: the recipient's internal server), not
        the domain's MX: it comes after what deliveries taught."""
        dom = address_domain(row[c.rcpt] if c.rcpt >= 0 else "")
        mta = row[c.dsnMta] if c.dsnMta >= 0 else ""
        reporter = row[c.reportingMta] if c.reportingMta >= 0 and row[c.type] == "f" else ""
        isp = self._isp(dom, "") if dom else PLACEHOLDER_OTHER
        if isp == PLACEHOLDER_OTHER and mta:
            isp = self._untaught(dom, mta)
        if isp == PLACEHOLDER_OTHER and reporter:
            isp = self._reporter(reporter)
        return isp

    def _untaught(self, dom: str, mta: str) -> str:
        """`_isp(dom, mta)` without teaching the classifier (`IspClassifier.known`, when the callable is one's): a
        report's dsnMta is no MX, so it must not make the classifier forget the MX a delivery taught it."""
        known = getattr(getattr(self.isp_of, "__self__", None), "known", None)
        found = known(dom, mta) if known is not None else None
        return found if found is not None else self._isp(dom, mta)

    def _reporter(self, reporting_mta: str) -> str:
        """`IspClassifier.classify_reporter` when the isp callable is one's (it also reads the domain table),
        else the callable with the reporter as the MTA."""
        reporter = getattr(getattr(self.isp_of, "__self__", None), "classify_reporter", None)
        return reporter(reporting_mta) if reporter is not None else self._isp("", reporting_mta)

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
        self.flush()
        series_of = self._series_of  # histogram lists are never mutated: no copy (the event loop runs this)
        out = [(name, key, series_of[name][key]) for name, key in self.dirty]
        self.dirty.clear()
        return out

    def restore(self, name: str, key: Key, value: Any) -> None:
        """Reload one persisted series (startup), re-admitting its label values first."""
        self.wait()
        spec = SPECS.get(name)
        if spec is None or len(key) > len(spec.labels):  # a label this version no longer has: not restorable
            return
        if len(key) < len(spec.labels):  # stored before the metric gained a label (appended last): `unknown`
            key = (*key, *[PLACEHOLDER_UNKNOWN] * (len(spec.labels) - len(key)))
        labels = dict(zip(spec.labels, key, strict=True))
        for label, capped in (("vmta", self.vmta_cap), ("vmta_pool", self._pool)):
            val = labels.get(label)
            if val and val not in (PLACEHOLDER_NONE, PLACEHOLDER_UNKNOWN, PLACEHOLDER_OVERFLOW):
                capped.readmit(val)
        sender = labels.get("sender")
        if sender and sender not in (PLACEHOLDER_NONE, PLACEHOLDER_OTHER):
            self._sender_auto.readmit(sender)
        if name in self.counters:
            self.counters[name][key] = float(value)
        elif name in self.histograms:
            width = len(self.bounds) + 2
            if isinstance(value, list) and len(value) == width:
                self.histograms[name][key] = [float(x) for x in value]

    # --- exposition ----------------------------------------------------------------------------
    def series_counts(self) -> dict[str, int]:
        self.flush()
        out = {name: len(s) for name, s in self.counters.items()}
        out.update({name: len(s) for name, s in self.histograms.items()})
        return out

    def exposition_snapshot(self, names: frozenset[str] | None = None
                            ) -> tuple[list[tuple[str, dict[Key, Any]]], list[Metric]]:
        """Copies of every family (with `names`: of those holding one of these samples) for exporter.exposition
        (event loop; values are never mutated in place)."""
        self.flush()
        if self.withheld:
            return [], [self._series_gauge(), self._withheld_gauge()]
        families = [(name, dict(series)) for name, series in self.counters.items() if names is None or name in names]
        families += [(name, dict(series)) for name, series in self.histograms.items()
                     if names is None or not names.isdisjoint(sample_names(name, "histogram"))]
        return families, [self._series_gauge(), self._withheld_gauge()]

    def _withheld_gauge(self) -> Metric:
        spec = SPECS["watchtower_counters_withheld"]
        return GaugeMetricFamily(spec.name, spec.help, value=1 if self.withheld else 0)

    def _series_gauge(self) -> Metric:
        spec = SPECS["watchtower_metric_series"]
        counts = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        for name, n in self.series_counts().items():
            counts.add_metric([name], n)
        return counts

    def collect(self) -> Iterator[Metric]:
        self.flush()
        if self.withheld:
            yield self._series_gauge()
            yield self._withheld_gauge()
            return
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
        yield self._series_gauge()
        yield self._withheld_gauge()
