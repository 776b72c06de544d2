"""Stage 1 of a write, prepare: each fresh row's fields, times, hashed link keys and cache keys.

Fields are read column-wise from the batch's polars frame (never as full Python rows); the link
keys are 64-bit hashes (keys.py) XORed with the slice mix of the record's timeQueued day, so one
int-keyed dict answers "which timeline" for both slices (see linking.py). Keys the link cache
does not know are collected for one bulk probe per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2b as b2b

import polars as pl

from correlator import store
from correlator.keys import MID_STRIP, job_hash, queued_hash
from exporter.records import Columns, RecordBatch, col
from exporter.timeparse import parse_pmta_time

R, T, D, B, RS, RB, F, TQ = (store.TYPE_CODES[k] for k in ("r", "t", "d", "b", "rs", "rb", "f", "tq"))
REPORTS = frozenset((F, RB, RS))
DELIVERY = frozenset((T, D, B))
QUEUED_KEY_TYPES = frozenset((R, T, D, B))
_MIX = 0x9E3779B97F4A7C15


def _slice_mix(day: int, cache: dict[int, int]) -> int:
    """A 64-bit value XORed into a cache key to make it specific to one day slice (never 0)."""
    mix = cache[day] = ((day + 2) * _MIX) & 0xFFFFFFFFFFFFFFFF
    return mix


NO_DAY_MIX = _slice_mix(-1, {})
DAY = store.DAY

# Fields pulled out of every row, in this order, by a getter compiled per header.
_FIELDS = (
    "type", "timeLogged", "timeQueued", "orig", "rcpt", "dsnAction", "dsnStatus", "dsnDiag", "dsnMta",
    "bounceCat", "dlvSourceIp", "vmta", "vmtaPool", "jobId", "queue", "message_id", "feedbackType",
    "userAgent", "reportingMta",
)


def row_getter(columns: Columns) -> Callable[[list[str]], tuple[str, ...]]:
    """A compiled `row -> tuple` for this header: one tuple per row, '' for absent columns."""
    parts = []
    for name in _FIELDS:
        pos = getattr(columns, name)
        parts.append(f"r[{pos}]" if pos >= 0 else "''")
    return eval(f"lambda r: ({', '.join(parts)},)")  # noqa: S307 - positions are ints we formatted


class _Getters:
    """Compiled getters by Columns identity (a few headers per daemon)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Columns, Callable[[list[str]], tuple[str, ...]]]] = {}

    def __call__(self, columns: Columns) -> Callable[[list[str]], tuple[str, ...]]:
        hit = self._by_id.get(id(columns))
        if hit is not None and hit[0] is columns:
            return hit[1]
        if len(self._by_id) > 256:
            self._by_id.clear()
        getter = row_getter(columns)
        self._by_id[id(columns)] = (columns, getter)
        return getter


_GETTERS = _Getters()


def batch_fields(batch: RecordBatch) -> list[tuple[str, ...]]:
    """One `_FIELDS` tuple per row ('' for empty or absent fields), read column-wise from the frame.

    The polars frame is never turned into full Python rows (24+ strings each): only the columns
    the correlator reads are converted, each in one call.
    """
    frame = batch._frame if batch._rows is None else None  # noqa: SLF001 - the columnar form, when it is the source
    if frame is None:
        get = _GETTERS(batch.columns)
        return [(*f, mx_host(f[8])) for f in map(get, batch.rows)]
    n = frame.height
    c = batch.columns
    blank = [""] * n
    columns = []
    for name in _FIELDS:
        pos = getattr(c, name)
        columns.append(frame.get_column(col(pos)).fill_null("").to_list() if pos >= 0 else blank)
    if c.dsnMta >= 0:
        columns.append(frame.select(_mx_host_expr(pl.col(col(c.dsnMta)).fill_null(""))).to_series().to_list())
    else:
        columns.append(blank)
    return list(zip(*columns, strict=True))


def mx_host(dsn_mta: str) -> str:
    """dsnMta without its `(ip)`: all the ISP classifier reads of it, so the ISP cache is keyed by host."""
    return dsn_mta.partition("(")[0].strip().lower() or dsn_mta


def _mx_host_expr(mta: pl.Expr) -> pl.Expr:
    host = mta.str.splitn("(", 2).struct.field("field_0").str.strip_chars().str.to_lowercase()
    return pl.when(host == "").then(mta).otherwise(host)


class Preparer:
    """Mixin of Ingestor: stage 1 (uses its hasher, link cache and small string caches)."""

    def _parse(
        self, pairs: list[tuple[int, tuple]], base: int
    ) -> tuple[list[tuple], dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
        """Pass 1: fields, times and link keys per row, plus the keys the cache does not know."""
        hasher = self._hasher
        plain = not hasher.hashed
        from_bytes = int.from_bytes
        enc, err = "utf-8", "surrogateescape"
        link = self._link
        codes = store.TYPE_CODES
        jobs = self._job_hashes
        mixes = self._mixes
        times = self._times
        if len(times) > 20_000:
            times.clear()
        recs = []
        probe_m: dict[int, tuple[int, int]] = {}
        probe_j: dict[int, tuple[int, int]] = {}
        now = self._clock()
        for line, f in pairs:
            code = codes.get(f[0])
            if code is None:
                ty = f[0].strip().lower()
                code = codes.get(store.ALIASES.get(ty, ty))
                if code is None:
                    continue
            t = times.get(f[1])
            if t is None:
                t = times[f[1]] = parse_pmta_time(f[1])
            tq = None
            if f[2]:
                tq = times.get(f[2])
                if tq is None:
                    tq = times[f[2]] = parse_pmta_time(f[2])
            if t is None:
                t = tq if tq is not None else now
            if code == TQ:
                recs.append((base | line, code, t, tq, f, "", None, None, "", "", None, "", None, None, None, None))
                continue
            # the index slice of this record's timeline: every record of one delivery shares timeQueued
            qd = int(tq // DAY) if tq is not None and code in QUEUED_KEY_TYPES else None
            rcpt_l = f[4].strip().lower()
            if not rcpt_l:
                rh = rstore = None
            elif plain:  # inlined RcptHasher/h64: this loop runs once per record
                rh = from_bytes(b2b(("r\0" + rcpt_l).encode(enc, err), digest_size=8).digest(), "big", signed=True)
                rstore = rcpt_l
            else:
                rh, rstore = hasher(rcpt_l)
            orig_l = f[3].strip().lower()
            mid = f[15].strip(MID_STRIP) if f[15] else ""
            mh = None
            if mid:
                mh = from_bytes(b2b(("m\0" + mid).encode(enc, err), digest_size=8).digest(), "big", signed=True)
            job = f[13].strip()
            if job:
                jh = jobs.get(job)
                if jh is None:
                    if len(jobs) > 10_000:
                        jobs.clear()
                    jh = jobs[job] = job_hash(job)
            elif tq is not None and code in QUEUED_KEY_TYPES:
                jh = queued_hash(orig_l, tq)
            else:
                jh = None
            # Cache keys: XOR of independent 64-bit hashes (mh and jh never collide). A record with a
            # day looks in its day's slice (key ^ slice mix), then the no-day slice; a report in any
            # slice (the bare key, set for every timeline that has the ids).
            mk = jk = None
            if rh is not None:
                smix = 0 if qd is None else mixes.get(qd) or _slice_mix(qd, mixes)
                if mh is not None:
                    mk = mh ^ rh ^ smix
                    if mk not in link and (qd is None or mk ^ smix ^ NO_DAY_MIX not in link):
                        probe_m[mk] = (mh, rh, qd)
                if jh is not None:
                    jk = jh ^ rh ^ smix
                    if jk not in link and (qd is None or jk ^ smix ^ NO_DAY_MIX not in link):
                        probe_j[jk] = (jh, rh, qd)
            recs.append((base | line, code, t, tq, f, rcpt_l, rh, rstore, orig_l, mid, mh, job, jh, mk, jk, qd))
        return recs, probe_m, probe_j
