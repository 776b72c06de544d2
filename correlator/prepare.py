"""Stage 1 of a write, prepare: each fresh row's type, times, hashed link keys and cache keys, column-wise.

The batches' polars frames are read a column at a time (never as Python rows). Whatever must match
the Python semantics exactly (time parsing, strip/lower, the stored 64-bit hashes) is computed in
Python once per *distinct* value and mapped back (recipients and Message-Ids, nearly unique, through
a per-row memo); the per-row work left in Python is the linking loop (linking.py).
Link keys are 64-bit hashes (keys.py) XORed with the mix of the record's timeQueued (its scope),
so one int-keyed dict answers "which timeline" for both scopes, its own and the undated one
(see linking.py). All cache keys are signed 64-bit values, so polars computes them with the same
XOR as Python.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import blake2b as b2b
from typing import Any

import polars as pl

from correlator import store
from correlator.keys import MID_STRIP, mid_key, norm_rcpt
from exporter.metrics import PLACEHOLDER_NONE
from exporter.records import LINE, Columns, RecordBatch, address_domain, col
from exporter.redact import key_without_recipient, without_addresses
from exporter.redact import redact as redact_local_parts
from exporter.timeparse import EARLIEST_BELIEVED, MAX_FUTURE, MAX_QUEUE_AGE, parse_pmta_time

R, T, D, B, RS, RB, F, TQ = (store.TYPE_CODES[k] for k in ("r", "t", "d", "b", "rs", "rb", "f", "tq"))
REPORTS = frozenset((F, RB, RS))
DELIVERY = frozenset((T, D, B))
QUEUED_KEY_TYPES = frozenset((R, T, D, B))
_MIX = 0x9E3779B97F4A7C15
_U64 = 0xFFFFFFFFFFFFFFFF
ARRIVAL_SLACK = 900.0
"""Seconds after a report's time a send may have been logged delivered (or bounced) and still count as sent before the
report, when (and only when) that time is the report's arrivalDate (its timeLogged empty or absent: `ARRIVAL`). An
ARF Arrival-Date is when the ISP received the message: within the SMTP transaction at whose end (end of DATA, the 250
reply, then the log line) PMTA logs its `d` record, so usually seconds before that record's timeLogged, give or take
the two hosts' clocks. Cut exactly there, a complaint about a message's only recipient (or about its send, by key or by
rcpt + orig) found none and was a timeline of its own, its metrics' vmta `unknown`. A report timed by its timeLogged
(PMTA's clock, written after the delivery it reports on) keeps the exact cut."""
ARRIVAL = "arrival"
"""batch_frame's Boolean column: the row's time (its `timeLogged` as read) is its arrivalDate (`arrival_timed`)."""


def arrival_timed(c: Columns, row: list[str]) -> bool:
    """Is the row timed by its arrivalDate: one set, and no timeLogged of its own (the field empty, in CSV or JSON, or
    absent from the header: `Columns.from_header` reads arrivalDate as timeLogged then)? Which column timed it, never
    whether the two texts are equal: a report with both, equal (the simulator writes them so), keeps the exact cut."""
    if c.arrivalDate < 0 or not row[c.arrivalDate]:
        return False
    return c.timeLogged < 0 or c.timeLogged == c.arrivalDate or not row[c.timeLogged]


def _arrival_timed_expr(c: Columns, have: set[str]) -> pl.Expr:
    """`arrival_timed` of every row of a batch's frame (of columns `have`)."""
    if c.arrivalDate < 0 or col(c.arrivalDate) not in have:
        return pl.lit(False)
    arrival = pl.col(col(c.arrivalDate)).fill_null("") != ""
    if c.timeLogged < 0 or c.timeLogged == c.arrivalDate:
        return arrival
    if col(c.timeLogged) not in have:
        return pl.lit(False)
    return arrival & (pl.col(col(c.timeLogged)).fill_null("") == "")


def _cut() -> pl.Expr:
    """`cut`: the time a send must have been queued and delivered (or bounced) by for a report of the row to be about
    it: its time `t`, ARRIVAL_SLACK later when that is its arrivalDate (read as is: believed, `_believed`)."""
    t = pl.col("t")
    return pl.when(pl.col(ARRIVAL) & (t == pl.col("t_raw"))).then(t + ARRIVAL_SLACK).otherwise(t).alias("cut")


def report_times(c: Columns, rows: list[list[str]], now: float) -> tuple[list[float], list[float]]:
    """(time, cut) of each row as the correlator's prepare reads them (`_believed`, `_cut`): attribution's, so a
    report is looked up at the time its timeline has it."""
    def parse(value: str) -> float | None:
        return parse_pmta_time(value) if value else None

    queued = [parse(r[c.timeQueued]) if c.timeQueued >= 0 else None for r in rows]
    frame = pl.DataFrame([pl.Series("t_raw", [parse(c.logged(r)) for r in rows], dtype=pl.Float64),
                          pl.Series("tq", queued, dtype=pl.Float64),
                          pl.Series(ARRIVAL, [arrival_timed(c, r) for r in rows], dtype=pl.Boolean)])
    frame = frame.with_columns(*_believed(now)).with_columns(_cut())
    return frame.get_column("t").to_list(), frame.get_column("cut").to_list()


def _believed(now: float) -> list[pl.Expr]:
    """`tq` (timeQueued) and `t` (the event's time) without the times the metrics count as bad_timestamp or do not
    believe (exporter.timeparse): more than MAX_FUTURE ahead of `now` or before EARLIEST_BELIEVED, or a timeQueued more
    than MAX_QUEUE_AGE from its timeLogged (a placeholder such as 0). A record without a believable timeLogged is timed
    by its timeQueued when it had none (or none readable), and by `now`, the time it was read, when it had one too far
    ahead or too far back: its timeQueued, from the same clock, may be off as well."""
    logged, queued = pl.col("t_raw"), pl.col("tq")
    ahead = now + MAX_FUTURE
    near = ((logged - queued).abs() <= MAX_QUEUE_AGE).fill_null(True)
    believed_queued = pl.when(queued.is_between(EARLIEST_BELIEVED, ahead) & near).then(queued)
    read_now = pl.lit(now, dtype=pl.Float64)
    event = (pl.when(logged.is_between(EARLIEST_BELIEVED, ahead)).then(logged)
             .when(logged.is_null()).then(pl.coalesce(believed_queued, read_now))
             .otherwise(read_now))
    return [believed_queued.alias("tq"), event.alias("t")]


def _reception_queued() -> pl.Expr:
    """`tq` with an r record's timeLogged where it has no timeQueued: PMTA's r field list is UNCERTAIN and the
    simulator writes none. A reception is logged when its message is queued, so its d/b/t records carry that time as
    timeQueued (the simulator writes both from one clock reading): the r joins its own send. Undated, it joined any
    send of its jobId (a job sent again a day later got both receptions) and, without jobId or Message-Id, none at
    all (sender + timeQueued needs the time): a `pending` timeline for ever next to the delivered one."""
    untimed = (pl.col("code") == R) & pl.col("tq").is_null()
    return pl.when(untimed).then(pl.col("t_raw")).otherwise(pl.col("tq")).alias("tq")


def _signed(value: int) -> int:
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


def scope_mix(scope: float) -> int:
    """A signed 64-bit value XORed into a cache key to make it specific to one timeQueued (never 0 and never
    NO_DAY_MIX: a bijection of the float's bits, which are not those of a NaN)."""
    return _signed((struct.unpack("<q", struct.pack("<d", scope))[0] + 2) * _MIX)


NO_DAY_MIX = _signed(_MIX)
"""The mix of the undated scope, where dated records look second."""
DAY = store.DAY

# Fields the correlator reads, by Columns attribute name.
_FIELDS = (
    "type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnAction", "dsnStatus", "dsnDiag", "dsnMta",
    "bounceCat", "dlvSourceIp", "vmta", "vmtaPool", "jobId", "queue", "message_id", "feedbackType",
    "userAgent", "reportingMta",
)
_ADDRESS_FREE = ("dsnAction", "dsnStatus", "dsnMta", "bounceCat", "feedbackType", "userAgent", "reportingMta")
"""Stored with hashed recipients without any address (exporter/redact.py): a remote bounce's action, status, MTA or
category field (the remote DSN's text), an FBL report's fields. The sender (`orig_s`), the Message-Id and the jobId
lose only the recipient's address (`key_without_recipient`): they are keys that pages link by and the report fallback
compares, so every other character stays; the reply (dsnDiag) has its own rule (linking.reply_without_addresses)."""
_QUEUE_ADDRESS_FREE = ("dsnAction", "dsnStatus", "dsnMta", "bounceCat")
"""A queue event's (`tq`) fields stored without any address, besides its reply."""
_EVENT_FIELDS = ("dsnAction", "dsnStatus", "dsnDiag", "dsnMta", "bounceCat", "vmta", "vmtaPool", "dlvSourceIp")
"""The corr_events columns after (id, tl, type, t), in table order."""


def batch_frame(batch: RecordBatch) -> pl.DataFrame:
    """The batch as a frame with one String column per `_FIELDS` name ('' for empty or absent), ARRIVAL, plus LINE.

    A frame batch is projected (no Python rows are built); a row batch (the exact fallback path)
    is converted for the fields read only. LINE may be missing when a row batch has no line numbers.
    """
    c = batch.columns
    frame = batch._frame if batch._rows is None else None  # noqa: SLF001 - the columnar form, when it is the source
    if frame is None:
        rows = batch.rows
        data: dict[str, list] = {}
        for name in _FIELDS:
            pos = getattr(c, name)
            data[name] = [r[pos] for r in rows] if pos >= 0 else [""] * len(rows)
        data["timeLogged"] = [c.logged(r) for r in rows]  # an empty one: the record's arrivalDate (Columns.logged)
        out = pl.DataFrame(data, schema={name: pl.String for name in _FIELDS}).with_columns(
            pl.Series(ARRIVAL, [arrival_timed(c, r) for r in rows], dtype=pl.Boolean))
        lines = batch.line_numbers
        if len(lines) == len(rows):
            out = out.with_columns(pl.Series(LINE, lines, dtype=pl.Int64))
        return out
    have = set(frame.columns)
    exprs = []
    for name in _FIELDS:
        pos = getattr(c, name)
        if name == "timeLogged" and pos >= 0 and col(pos) in have and col(c.arrivalDate) in have:
            exprs.append(c.logged_expr().alias(name))  # an empty one: the record's arrivalDate (Columns.logged)
        elif pos >= 0 and col(pos) in have:
            exprs.append(pl.col(col(pos)).fill_null("").alias(name))
        else:
            exprs.append(pl.lit("", dtype=pl.String).alias(name))
    return frame.select(*exprs, _arrival_timed_expr(c, have).alias(ARRIVAL), pl.col(LINE).cast(pl.Int64))


def mx_host(dsn_mta: str) -> str:
    """dsnMta without its `(ip)`: all the ISP classifier reads of it, so the ISP cache is keyed by host."""
    return dsn_mta.partition("(")[0].strip().lower() or dsn_mta


def _mx_host_expr(mta: pl.Expr) -> pl.Expr:
    host = mta.str.splitn("(", 2).struct.field("field_0").str.strip_chars().str.to_lowercase()
    return pl.when(host == "").then(mta).otherwise(host)


def map_distinct(series: pl.Series, fn: Callable[[str], object], dtype: pl.DataType | type[pl.DataType]) -> pl.Series:
    """`fn` applied once per distinct value of a String series (no nulls), mapped back to every row."""
    uniq = series.unique()
    values = pl.Series([fn(v) for v in uniq.to_list()], dtype=dtype)
    return series.replace_strict(uniq, values, return_dtype=dtype)


_PY_ASCII_SPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
"""What str.strip() takes off an ASCII string (str.isspace): polars' own strip differs (no \\x1c-\\x1f)."""


def _as_python(values: pl.Series, fn: Callable[[str], str], also: Callable[[pl.Series], pl.Series] | None = None,
               ) -> pl.Series:
    """`fn` (a strip and a lowercase, as Python does them) of every value: column-wise for ASCII values, where polars
    gives the same result, in Python for the rest (Python and polars lowercase and strip some other characters
    differently: U+A7CB is lowercased by polars' newer Unicode tables only, so a report keyed by Python missed its
    delivery keyed column-wise) and for the values `also` picks from the column-wise result."""
    out = values.str.strip_chars(_PY_ASCII_SPACE).str.to_lowercase()
    other = values.str.len_bytes() != values.str.len_chars()
    if also is not None:
        other = other | also(out)
    if other.any():
        idx = other.arg_true()
        out = out.scatter(idx, map_distinct(values.gather(idx), fn, pl.String))
    return out


def normalised_rcpts(rcpt: pl.Series) -> pl.Series:
    """norm_rcpt of every value (a recipient in angle brackets taken by Python too)."""
    return _as_python(rcpt, norm_rcpt, lambda out: out.str.starts_with("<") & out.str.ends_with(">"))


def _mid_keys(memo: dict[str, Any], secret: bytes = b"", as_written: bool = False) -> None:
    """Fill memo[value] = (Message-Id without <> and blanks, its hash or None) for each distinct value. `secret`,
    `as_written`: the store's LinkKeys (b"": unkeyed, blake2b without a key; the id as written or by `mid_key`)."""
    from_bytes = int.from_bytes
    for value in memo:
        mid = value.strip(MID_STRIP) if value else ""
        key = "m\0" + (mid if as_written else mid_key(mid))  # LinkKeys.message_hash, inline
        memo[value] = (mid, from_bytes(b2b(key.encode("utf-8", "surrogateescape"), digest_size=8, key=secret).digest(),
                                       "big", signed=True) if mid else None)


@dataclass
class Prepared:
    """A group's fresh rows after stage 1: `frame` holds the non-tq rows in file order (what writes.py
    aggregates); the lists are the columns the linking loop reads, as Python values."""

    frame: pl.DataFrame
    queue_events: list[tuple] = field(default_factory=list)
    code: list[int] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    cut: list[float] = field(default_factory=list)
    """The time a send must have been queued and delivered by for the row, a report, to be about it: `t`, or
    ARRIVAL_SLACK later when `t` is the report's arrivalDate (`_cut`)."""
    qd: list[int | None] = field(default_factory=list)
    """UTC day of the row's timeQueued (None: undated), the day of the slice a timeline it creates goes to."""
    qs: list[float | None] = field(default_factory=list)
    """The row's scope: its timeQueued when dated (the only timelines its keys join), else None."""
    rh: list[int | None] = field(default_factory=list)
    mh: list[int | None] = field(default_factory=list)
    orig_l: list[str] = field(default_factory=list)
    orig_s: list[str] = field(default_factory=list)
    """The sender as stored (without the recipient's address when recipients are hashed): what the report fallback
    compares, beside the sender as logged."""
    mk: list[int | None] = field(default_factory=list)
    mkn: list[int | None] = field(default_factory=list)
    jk: list[int | None] = field(default_factory=list)
    jkn: list[int | None] = field(default_factory=list)
    smix: list[int] = field(default_factory=list)
    stored: int = 0
    bare_m: pl.Series | None = None
    """Message-Id hash ^ recipient hash (the key without its day slice), for the key filter."""
    bare_j: pl.Series | None = None


class Preparer:
    """Mixin of Ingestor: stage 1 (uses its hasher, link cache and small string caches)."""

    def _code_of(self, ty: str) -> int | None:
        return store.type_code(ty)

    def _rcpt_keys(self, memo: dict[str, Any]) -> None:
        """Fill memo[rcpt] = (lowercase, hash, stored text, domain) for each distinct recipient (the hot loop:
        the plain hash is inlined)."""
        hasher = self._hasher
        plain = not hasher.hashed
        from_bytes = int.from_bytes
        for rcpt in memo:
            rcpt_l = norm_rcpt(rcpt)
            if not rcpt_l:
                memo[rcpt] = (rcpt_l, None, None, "")
            elif plain:
                rh = from_bytes(b2b(("r\0" + rcpt_l).encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                                "big", signed=True)
                memo[rcpt] = (rcpt_l, rh, rcpt_l, rcpt_domain(rcpt_l))
            else:
                rh, rstore = hasher(rcpt_l)
                memo[rcpt] = (rcpt_l, rh, rstore, rcpt_domain(rcpt_l))

    def _job_key(self, job: str) -> tuple[str, int | None]:
        """(stripped jobId, its hash or None when empty)."""
        job = job.strip()
        if not job:
            return job, None
        links = self._hasher.links  # the store's scheme (set at setup), with its own memo
        jobs = links.jobs
        jh = jobs.get(job)
        if jh is None:
            if len(jobs) > 10_000:
                jobs.clear()
            jh = jobs[job] = links.job_hash(job)
        return job, jh

    def _prepare(self, df: pl.DataFrame) -> Prepared:
        """Fields, times and link keys of every fresh row (`df`: batch_frame columns plus `eid`)."""
        mixes = self._mixes
        times = self._times
        if len(times) > 20_000:
            times.clear()

        def parse(value: str) -> float | None:
            t = times.get(value)
            if t is None and value not in times:
                t = times[value] = parse_pmta_time(value)
            return t

        now = self._clock()
        df = df.with_columns(
            map_distinct(df.get_column("type"), self._code_of, pl.Int64).alias("code"),
        ).filter(pl.col("code").is_not_null())
        stored = df.height
        tq = map_distinct(df.get_column("timeQueued"), lambda v: parse(v) if v else None, pl.Float64)
        tl = map_distinct(df.get_column("timeLogged"), parse, pl.Float64)
        df = df.with_columns(tq.alias("tq"), tl.alias("t_raw")).with_columns(_reception_queued()) \
            .with_columns(*_believed(now)).with_columns(_cut())
        is_tq = pl.col("code") == TQ
        qev = df.filter(is_tq)
        queue_events: list[tuple] = []
        if qev.height:
            if self._hasher.hashed:  # a queue's reply names no recipient to compare with: every address goes
                redact = self._redact
                qev = qev.with_columns(map_distinct(qev.get_column("dsnDiag"), lambda d: redact(d, None), pl.String),
                                       *(map_distinct(qev.get_column(n), without_addresses, pl.String)
                                         for n in _QUEUE_ADDRESS_FREE))
            queue_events = list(zip(
                qev.get_column("eid").to_list(), qev.get_column("t").to_list(),
                map_distinct(qev.get_column("queue"), str.strip, pl.String).to_list(),
                *(qev.get_column(n).to_list() for n in ("vmta", "vmtaPool", "dsnAction", "dsnStatus", "dsnDiag",
                                                           "dsnMta", "bounceCat", "dlvSourceIp")), strict=True))
            df = df.filter(~is_tq)
        if not df.height:
            return Prepared(df, queue_events, stored=stored)

        # recipients and Message-Ids are nearly unique per group: a dict of the distinct values beats a polars mapping
        rcpts = df.get_column("rcpt").to_list()
        rmemo = dict.fromkeys(rcpts)
        self._rcpt_keys(rmemo)
        rcpt_l, rh, rstore, rdom = zip(*map(rmemo.__getitem__, rcpts), strict=True)
        mids = df.get_column("message_id").to_list()
        mmemo = dict.fromkeys(mids)
        _mid_keys(mmemo, self._hasher.links.key, self._hasher.links.as_written)
        mid, mh = zip(*map(mmemo.__getitem__, mids), strict=True)
        queued = pl.col("code").is_in(list(QUEUED_KEY_TYPES)) & pl.col("tq").is_not_null()
        df = df.with_columns(
            pl.Series("rcpt_l", rcpt_l, dtype=pl.String), pl.Series("rh", rh, dtype=pl.Int64),
            pl.Series("rstore", rstore, dtype=pl.String), pl.Series("rdom", rdom, dtype=pl.String),
            pl.Series("mid", mid, dtype=pl.String), pl.Series("mh", mh, dtype=pl.Int64),
            *_mapped_many(df.get_column("jobId"), self._job_key, {"job": pl.String, "jh": pl.Int64}),
            *_mapped_many(df.get_column("orig"), _orig_key, {"orig_l": pl.String, "sender": pl.String}),
            pl.when(queued).then(_mapped_number(df.get_column("tq"), lambda v: int(v // DAY))).alias("qd"),
            pl.when(queued).then(pl.col("tq")).alias("qs"),
        )
        if len(mixes) > 20_000:
            mixes.clear()

        def mix_of(scope: float) -> int:
            mix = mixes.get(scope)
            if mix is None:
                mix = mixes[scope] = scope_mix(scope)
            return mix

        df = df.with_columns(_mapped_number(df.get_column("qs"), mix_of).fill_null(0).alias("smix"))
        need_q = df.select(pl.col("jh").is_null() & (pl.col("job") == "") & queued).to_series()
        if need_q.any():  # no jobId: sender + timeQueued identify the message
            sub = df.filter(need_q)
            memo: dict[tuple[str, float], int] = {}
            queued_hash = self._hasher.links.queued_hash
            qh = []
            for o, q in zip(sub.get_column("orig_l").to_list(), sub.get_column("tq").to_list(), strict=True):
                h = memo.get((o, q))
                if h is None:
                    h = memo[(o, q)] = queued_hash(o, q)
                qh.append(h)
            idx = need_q.arg_true()
            jh_full = df.get_column("jh").scatter(idx, pl.Series(qh, dtype=pl.Int64))
            df = df.with_columns(jh_full.alias("jh"))
        df = self._derived(df)
        has_day = pl.col("qd").is_not_null()
        bare_m = pl.col("mh").xor(pl.col("rh"))
        bare_j = pl.col("jh").xor(pl.col("rh"))
        keys = df.select(
            bare_m.alias("bm"), bare_j.alias("bj"),
            bare_m.xor(pl.col("smix")).alias("mk"),
            pl.when(has_day).then(bare_m.xor(pl.lit(NO_DAY_MIX, dtype=pl.Int64))).alias("mkn"),
            bare_j.xor(pl.col("smix")).alias("jk"),
            pl.when(has_day).then(bare_j.xor(pl.lit(NO_DAY_MIX, dtype=pl.Int64))).alias("jkn"),
        )
        return Prepared(
            df, queue_events,
            code=df.get_column("code").to_list(), t=df.get_column("t").to_list(), cut=df.get_column("cut").to_list(),
            qd=df.get_column("qd").to_list(),
            qs=df.get_column("qs").to_list(),
            rh=df.get_column("rh").to_list(), mh=df.get_column("mh").to_list(),
            orig_l=df.get_column("orig_l").to_list(), orig_s=df.get_column("orig_s").to_list(),
            mk=keys.get_column("mk").to_list(), mkn=keys.get_column("mkn").to_list(),
            jk=keys.get_column("jk").to_list(), jkn=keys.get_column("jkn").to_list(),
            smix=df.get_column("smix").to_list(), stored=stored,
            bare_m=keys.get_column("bm"), bare_j=keys.get_column("bj"),
        )

    def _derived(self, df: pl.DataFrame) -> pl.DataFrame:
        """Per-row values linking does not decide: ISP, queue name, flag bit, flow bucket, report extra, diag."""
        deliv = pl.col("code").is_in(list(DELIVERY))
        want = deliv & (pl.col("rcpt_l") != "")
        key = pl.concat_str(["rdom", "host"], separator="\0")
        df = df.with_columns(_mx_host_expr(pl.col("dsnMta")).alias("host"))
        pairs = df.filter(want).select(key.alias("key"), "rcpt_l", "rdom", "host").unique(
            subset=["key"], keep="first", maintain_order=True)
        isp_cache = self._isp_cache
        isps = [isp_cache.get((rdom, host)) or self._isp(rcpt_l, host)
                for _k, rcpt_l, rdom, host in pairs.iter_rows()]
        vmta, rdom = pl.col("vmta"), pl.col("rdom")
        df = df.with_columns(
            pl.when(want).then(key.replace_strict(pairs.get_column("key"), pl.Series(isps, dtype=pl.String),
                                                  default=None, return_dtype=pl.String)).alias("isp"),
            pl.when(pl.col("queue") != "").then(pl.col("queue"))
            .when((vmta != "") & (rdom != "")).then(pl.concat_str([rdom, pl.lit("/"), vmta]))
            .otherwise(pl.lit("")).alias("qname"),
            pl.col("code").replace_strict(store.FLAG, return_dtype=pl.Int64).alias("flag"),
            _mapped_number(df.get_column("t"), lambda v: int(v // store.FLOW_BUCKET) * store.FLOW_BUCKET)
            .alias("bucket"),
        )
        if self._hasher.hashed:  # the keys are hashed: what is stored of the texts keeps no address of the recipient
            rcpts = df.get_column("rcpt_l").to_list()

            def keyed(name: str, alias: str, kind: str) -> pl.Series:
                """Without the row's recipient (exporter.redact.key_without_recipient); a row without one (an
                anonymised report): a sender and a jobId without any local part, a Message-Id as logged (the key
                pages link by; no recipient's hash stands beside it)."""
                bare = redact_local_parts if kind != "message_id" else str
                return pl.Series(alias, [key_without_recipient(v, r, kind) if r else bare(v) if v else v
                                         for v, r in zip(df.get_column(name).to_list(), rcpts, strict=True)],
                                 dtype=pl.String)

            df = df.with_columns(
                *(map_distinct(df.get_column(name), without_addresses, pl.String) for name in _ADDRESS_FREE),
                keyed("mid", "mid", "message_id"), keyed("job", "job", "job_id"), keyed("orig_l", "orig_s", "sender"))
        else:
            df = df.with_columns(pl.col("orig_l").alias("orig_s"))
        extra = pl.Series("extra", [None] * df.height, dtype=pl.String)
        is_report = df.get_column("code").is_in(list(REPORTS))
        if is_report.any():
            sub = df.filter(is_report)
            vals = []
            for fbt, ua, rmta in sub.select("feedbackType", "userAgent", "reportingMta").iter_rows():
                ex = {k: v for k, v in (("feedback_type", fbt), ("user_agent", ua), ("reporting_mta", rmta)) if v}
                vals.append(json.dumps(ex, separators=(",", ":")) if ex else None)
            extra = extra.scatter(is_report.arg_true(), pl.Series(vals, dtype=pl.String))
        df = df.with_columns(extra)
        if self._hasher.hashed:  # the SMTP reply must not keep the address either
            redact = self._redact
            diag = [redact(d, r) for d, r in zip(df.get_column("dsnDiag").to_list(), df.get_column("rcpt_l").to_list(),
                                               strict=True)]
            df = df.with_columns(pl.Series("dsnDiag", diag, dtype=pl.String))
        return df

    def _probes(
        self, p: Prepared
    ) -> tuple[dict[int, tuple[int, int, float | None]], dict[int, tuple[int, int, float | None]]]:
        """Keys of `p` the link cache does not know, in either scope: (key -> (hash, rcpt hash, scope))."""
        link = self._link
        probe_m: dict[int, tuple[int, int, float | None]] = {}
        probe_j: dict[int, tuple[int, int, float | None]] = {}
        rows_m: list[int] | range = range(len(p.mk))
        rows_j: list[int] | range = rows_m
        if self._filter.valid and p.bare_m is not None and p.bare_j is not None:  # only keys the store may hold
            rows_m = self._filter.may_contain(p.bare_m).arg_true().to_list()
            rows_j = self._filter.may_contain(p.bare_j).arg_true().to_list()
        mks, mkns = p.mk, p.mkn
        for i in rows_m:
            mk, mkn = mks[i], mkns[i]
            if mk is not None and mk not in link and (mkn is None or mkn not in link):
                probe_m[mk] = (p.mh[i], p.rh[i], p.qs[i])
        jks, jkns = p.jk, p.jkn
        jh = None
        for i in rows_j:
            jk, jkn = jks[i], jkns[i]
            if jk is not None and jk not in link and (jkn is None or jkn not in link):
                if jh is None:
                    jh = p.frame.get_column("jh").to_list()
                probe_j[jk] = (jh[i], p.rh[i], p.qs[i])
        return probe_m, probe_j


def rcpt_domain(rcpt_l: str) -> str:
    """The domain of a recipient address, '' when it has no `@`: a recipient logged without one (`bob`, a bad
    line's field) is all local part, so neither its domain nor a queue name (`domain/vmta`) is made of it."""
    _local, at, domain = rcpt_l.rpartition("@")
    return domain if at else ""


def _orig_key(orig: str) -> tuple[str, str]:
    """(lowercase sender address, its domain): '' for the null sender (`<>`, logged empty), `none` for a sender
    logged without a domain, as the metrics label it (taken whole, it was shown as a flow's sender domain; as '', it
    joined the null sender's). Angle brackets are dropped as from a recipient (`norm_rcpt`: `<news@s.ex>` is
    news@s.ex, `<>` the null sender)."""
    orig_l = norm_rcpt(orig)
    domain = address_domain(orig_l)  # as the metrics' sender label (`y@t.ex>`: t.ex)
    return orig_l, domain if domain or not orig_l else PLACEHOLDER_NONE


def _mapped_many(
    series: pl.Series, fn: Callable[[str], tuple], schema: dict[str, type[pl.DataType]]
) -> list[pl.Series]:
    """`fn` (returning one value per schema column) once per distinct value, mapped back: one Series per column."""
    uniq = series.unique()
    out = [fn(v) for v in uniq.to_list()]
    small = pl.DataFrame([uniq.alias("k"), *(pl.Series(name, [o[i] for o in out], dtype=dtype)
                                             for i, (name, dtype) in enumerate(schema.items()))])
    joined = series.alias("k").to_frame().join(small, on="k", how="left", maintain_order="left", nulls_equal=True)
    return [joined.get_column(name) for name in schema]


def _mapped_number(series: pl.Series, fn: Callable[[Any], int]) -> pl.Series:
    """`fn` once per distinct non-null number, mapped back (nulls stay null), as Int64."""
    uniq = series.drop_nulls().unique()
    if not len(uniq):
        return pl.Series(series.name, [None] * len(series), dtype=pl.Int64)
    values = pl.Series([fn(v) for v in uniq.to_list()], dtype=pl.Int64)
    return series.replace_strict(uniq, values, default=None, return_dtype=pl.Int64)
