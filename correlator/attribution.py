"""vmta / pool attribution of f and rb records from the delivery they report on.

FBL and remote-bounce records carry no vmta, so the metrics would say `unknown`. The delivery is
found by Message-Id, then jobId + rcpt, then rcpt + orig within the fallback window: first among
rows observed but perhaps not yet committed (a small bounded in-memory index, so attribution works
inside one commit interval and in oneshot runs), then in the store through a read connection.

Entries leave the in-memory index once the write that stored them is known to be committed (the
next write or maintain call), so there is no gap where a row is in neither place.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import polars as pl

from correlator.keys import MID_STRIP, RcptHasher, job_hash, message_hash, norm_message_id
from correlator.prepare import map_distinct
from correlator.store import DAYS, ReadPool, StoreNotReady
from exporter.records import Columns, RecordBatch, col
from exporter.timeparse import parse_pmta_time

log = logging.getLogger(__name__)

_DELIVERY_TYPES = frozenset(("d", "b", "t", "delivery", "bounce", "transient"))
Key = tuple[str, str, str]


class RecentDeliveries:
    """Bounded index of observed d/b/t rows: link key -> (vmta, pool, time), newest observation first.

    `observe` only queues the batch (it runs for every batch on the event loop); batches are keyed
    when a lookup needs them, which happens only for f/rb rows, and dropped unkeyed once committed:
    most batches are never keyed at all. A keyed batch is one small frame of hashed keys (computed
    column-wise by `_delivery_keys`): keying costs no Python per row, and `find` answers all the keys
    of one report batch with one filter over the frames, newest first.
    """

    def __init__(self, limit: int = 100_000, max_batches: int = 5_000) -> None:
        self._limit = limit
        self._max_batches = max_batches
        self._lock = threading.Lock()
        self._queued: dict[int, RecordBatch] = {}  # seq -> batch observed, not keyed yet
        self._keyed: dict[int, tuple[pl.DataFrame, list[tuple[str, str]]]] = {}
        """seq -> (its keys (h, vp, t, seq) in row order, its (vmta, pool) pairs, which vp indexes), oldest first."""
        self._size = 0  # keys held in _keyed
        self._table: pl.DataFrame | None = None
        """The _keyed frames in one (h, vp, t, seq) frame, oldest first: None once a batch left it."""
        self._fresh: list[pl.DataFrame] = []  # keyed since _table was built
        self._seq_of: dict[int, tuple[RecordBatch, int]] = {}  # id(batch) -> (batch, seq)
        self._written: list[int] = []
        self._seq = 0

    def __len__(self) -> int:
        return self._size

    def observe(self, batch: RecordBatch) -> None:
        c = batch.columns
        if c.type < 0 or (c.vmta < 0 and c.vmtaPool < 0) or not len(batch):  # never batch.rows: event loop
            return
        narrow = _narrow(batch)
        with self._lock:
            self._seq += 1
            self._queued[self._seq] = narrow
            self._seq_of[id(batch)] = (batch, self._seq)
            if len(self._seq_of) > self._max_batches:
                for bid in list(_take(self._seq_of, len(self._seq_of) - self._max_batches)):
                    _b, seq = self._seq_of.pop(bid)
                    self._queued.pop(seq, None)
            if len(self._queued) > self._max_batches:  # released batches are bounded here (oldest first)
                for seq in list(_take(self._queued, len(self._queued) - self._max_batches)):
                    del self._queued[seq]

    def release(self, batch: RecordBatch) -> None:
        """The batch will not be written as such (the sink is behind: its rows come again from its file).

        The full batch is let go; its narrow copy (or its keys) stays, bounded by `max_batches` and
        `limit`, oldest first: an f/rb record arriving before the store has the delivery still finds it.
        """
        with self._lock:
            entry = self._seq_of.get(id(batch))
            if entry is not None and entry[0] is batch:
                del self._seq_of[id(batch)]

    def written(self, batches: list[RecordBatch]) -> None:
        """These batches are in the open transaction; forget them once it has committed."""
        with self._lock:
            for part in batches:
                batch: RecordBatch | None = part
                if part.origin is not None:  # a slice: its batch is done once its last slice is written
                    batch = part.origin if part.origin_end >= len(part.origin) else None
                if batch is None:
                    continue
                entry = self._seq_of.pop(id(batch), None)
                if entry is not None and entry[0] is batch:
                    self._written.append(entry[1])

    def committed(self) -> None:
        """The transaction that stored the last `written` batches has committed: the store answers for them."""
        with self._lock:
            for seq in self._written:
                self._queued.pop(seq, None)
                self._drop(seq)
            self._written.clear()

    def find(self, keys: list[Key]) -> list[tuple[str, str, float] | None]:
        """(vmta, pool, time) of the newest observed delivery row with each key, or None."""
        if not keys:
            return []
        hashes = key_hashes(keys)
        with self._lock:
            if self._queued:
                self._key_queued()
            if not self._size:
                return [None] * len(keys)
            hits = self._all_keys().filter(pl.col("h").is_in(hashes.implode())).unique("h", keep="last")
            found: dict[int, tuple[str, str, float]] = {}
            keyed = self._keyed
            for h, vp, t, seq in hits.iter_rows():
                vmta, pool = keyed[seq][1][vp]
                found[h] = (vmta, pool, t)
        return [found.get(h) for h in hashes.to_list()]

    def _all_keys(self) -> pl.DataFrame:
        """Every keyed batch in one frame, in observation order: extended while batches only arrive
        (a report poll costs the new batches, not all of them), rebuilt once one has left."""
        if self._table is None:
            self._table = pl.concat([frame for frame, _pairs in self._keyed.values()], rechunk=True)
        elif self._fresh:
            self._table = pl.concat([self._table, *self._fresh], rechunk=True)
        self._fresh.clear()
        return self._table

    def _key_queued(self) -> None:
        """Key the queued batches, then drop the oldest keyed batches past `limit` keys.

        Batches of one column layout are keyed together, one polars pass per layout (a poll delivers
        one small batch per file: keyed one by one, 3,000 of them took ~7 s), then split by batch."""
        keyed = _keys_by_batch(list(self._queued.items()))
        self._queued.clear()
        for seq in sorted(keyed):  # oldest first: eviction order, and the newest wins in _all_keys
            keys, pairs = keyed[seq]
            self._keyed[seq] = (keys, pairs)
            self._size += keys.height
            if self._table is not None:
                self._fresh.append(keys)
        while self._size > self._limit and len(self._keyed) > 1:
            self._drop(next(iter(self._keyed)))
        if self._size > self._limit:  # one batch alone holds more: its newest rows
            seq, (frame, pairs) = next(iter(self._keyed.items()))
            self._keyed[seq] = (frame.tail(self._limit), pairs)
            self._size = self._limit
            self._table = None

    def _drop(self, seq: int) -> None:
        entry = self._keyed.pop(seq, None)
        if entry is not None:
            self._size -= entry[0].height
            self._table = None
            self._fresh.clear()


PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                 "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
"""The characters Python's `str.strip()` removes, so polars strips delivery fields as the lookup side does."""
_HASH_SEED = 0x57A7
_SEP = "\0"


def key_hashes(keys: list[Key]) -> pl.Series:
    """The index's hash of each key: polars' hash of its parts joined by NUL, as `_delivery_keys` computes it."""
    return pl.Series([_SEP.join(key) for key in keys], dtype=pl.String).hash(_HASH_SEED)


def _narrow(batch: RecordBatch) -> RecordBatch:
    """The batch with only the columns attribution reads (a zero-copy projection of its frame).

    Queued batches wait here until their commit is known, one slice longer than the commit queue
    holds them: the other 15-20 columns need not wait with them.
    """
    frame = batch._frame if batch._rows is None else None  # noqa: SLF001 - the columnar form, when it is the source
    if frame is None:
        return batch
    c = batch.columns
    keep = [col(i) for i in sorted({c.type, c.vmta, c.vmtaPool, c.rcpt, c.orig, c.message_id, c.jobId,
                                    c.timeLogged}) if i >= 0]
    return RecordBatch(batch.source, batch.path, c, frame=frame.select(keep), file_id=batch.file_id)


_FIELDS = ("vmta", "pool", "rcpt", "orig", "mid", "job", "tl")
_SEQ = "seq"


def _keys_by_batch(queued: list[tuple[int, RecordBatch]]) -> dict[int, tuple[pl.DataFrame, list[tuple[str, str]]]]:
    """seq -> (keys (h, vp, t, seq), (vmta, pool) pairs) of each batch that has keys; batches of one
    layout go through `_delivery_keys` together (their pairs list is shared)."""
    layouts: dict[tuple[int, ...], list[tuple[int, RecordBatch]]] = {}
    frames: list[pl.DataFrame] = []
    for seq, batch in queued:
        if batch._rows is None:  # noqa: SLF001 - the columnar form, when it is the source
            layouts.setdefault(_layout(batch.columns), []).append((seq, batch))
        else:
            frames.append(_rows_frame(batch, seq))
    for members in layouts.values():
        frames.append(_frames_frame(members))
    out: dict[int, tuple[pl.DataFrame, list[tuple[str, str]]]] = {}
    for frame in frames:
        keys, pairs = _delivery_keys(frame)
        for (seq,), part in keys.partition_by(_SEQ, as_dict=True, maintain_order=True).items():
            out[int(seq)] = (part, pairs)
    return out


def _layout(c: Columns) -> tuple[int, ...]:
    return c.type, c.vmta, c.vmtaPool, c.rcpt, c.orig, c.message_id, c.jobId, c.timeLogged


def _frames_frame(members: list[tuple[int, RecordBatch]]) -> pl.DataFrame:
    """(vmta, pool, rcpt, orig, mid, job, tl, seq) of the d/b/t rows of frame batches sharing one layout,
    as Strings ('' for empty or absent): read column-wise, filtered in polars, never via `rows`."""
    c = members[0][1].columns
    used = [col(i) for i in sorted(set(_layout(c))) if i >= 0]
    frame = pl.concat([batch._frame.select(used).with_columns(pl.lit(seq, dtype=pl.Int64).alias(_SEQ))  # noqa: SLF001
                       for seq, batch in members])
    idx = _layout(c)[1:]
    return frame.filter(pl.col(col(c.type)).is_in(list(_DELIVERY_TYPES))).select(
        *(pl.col(col(i)).fill_null("").alias(name) if i >= 0 else pl.lit("", dtype=pl.String).alias(name)
          for name, i in zip(_FIELDS, idx, strict=True)), _SEQ)


def _rows_frame(batch: RecordBatch, seq: int) -> pl.DataFrame:
    """`_frames_frame` of one row batch (the parser's exact fallback path)."""
    c = batch.columns
    rows = [row for row in batch.rows if row[c.type] in _DELIVERY_TYPES]
    data: dict[str, list[Any]] = {name: [row[i] for row in rows] if i >= 0 else [""] * len(rows)
                                  for name, i in zip(_FIELDS, _layout(c)[1:], strict=True)}
    data[_SEQ] = [seq] * len(rows)
    return pl.DataFrame(data, schema={**dict.fromkeys(_FIELDS, pl.String), _SEQ: pl.Int64})


def _delivery_keys(df: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """The link keys of the delivery rows (`_frames_frame`) that name a vmta or pool, in row order:
    (h, vp, t, seq), where vp indexes the returned list of distinct (vmta, pool) pairs.

    Per row: Message-Id + rcpt and Message-Id alone (with a Message-Id), jobId + rcpt (with both),
    rcpt + orig (with a rcpt). Fields are normalised as `Attributor._fields` normalises a report's
    (`str.strip()`'s characters, `str.lower()`'s mapping), then hashed (`key_hashes`), all column-wise.
    """
    df = df.filter((pl.col("vmta") != "") | (pl.col("pool") != ""))
    if not df.height:
        return pl.DataFrame(schema={"h": pl.UInt64, "vp": pl.UInt32, "t": pl.Float64, _SEQ: pl.Int64}), []
    rcpt = pl.col("rcpt").str.strip_chars(PY_WHITESPACE).str.to_lowercase()
    orig = pl.col("orig").str.strip_chars(PY_WHITESPACE).str.to_lowercase()
    mid = pl.col("mid").str.strip_chars(PY_WHITESPACE).str.strip_chars(MID_STRIP)
    job = pl.col("job").str.strip_chars(PY_WHITESPACE)
    pairs = df.select("vmta", "pool").unique(maintain_order=True).with_row_index("vp")
    df = df.join(pairs, on=["vmta", "pool"], how="left", maintain_order="left").with_columns(
        rcpt.alias("rcpt"), orig.alias("orig"), mid.alias("mid"), job.alias("job"),
        map_distinct(df.get_column("tl"), lambda v: parse_pmta_time(v) or 0.0, pl.Float64).alias("t"))
    has_mid, has_rcpt = pl.col("mid") != "", pl.col("rcpt") != ""

    def key(kind: str, a: str, b: str | None, when: pl.Expr) -> pl.Expr:
        parts = [pl.lit(kind), pl.col(a), pl.col(b) if b else pl.lit("")]
        return pl.when(when).then(pl.concat_str(parts, separator=_SEP).hash(_HASH_SEED))

    keys = pl.concat_list(
        key("m", "mid", "rcpt", has_mid), key("m", "mid", None, has_mid & has_rcpt),
        key("j", "job", "rcpt", has_rcpt & (pl.col("job") != "")), key("r", "rcpt", "orig", has_rcpt),
    ).alias("h")
    out = df.select(keys, "vp", "t", _SEQ).explode("h").drop_nulls("h")
    return out, list(zip(pairs.get_column("vmta").to_list(), pairs.get_column("pool").to_list(), strict=True))


def _take(d: dict, n: int):  # type: ignore[no-untyped-def]
    it = iter(d)
    for _ in range(n):
        yield next(it)


class Attributor:
    """Answers `lookup_vmta` from the in-memory index, then the store."""

    def __init__(
        self, recent: RecentDeliveries, pool: ReadPool, hasher: RcptHasher, window: float,
        clock: Callable[[], float],
    ) -> None:
        self._recent = recent
        self._pool = pool
        self._hasher = hasher
        self._window = window
        self._clock = clock

    def lookup(self, columns: Columns, rows: list[list[str]]) -> list[tuple[str, str] | None]:
        if not rows:
            return []
        reports = [self._fields(columns, row) for row in rows]
        keys: list[Key] = []
        for rcpt, orig, mid, job, _t in reports:  # every key a report may need, asked of memory at once
            keys += (("m", mid, rcpt), ("m", mid, ""), ("j", job, rcpt), ("r", rcpt, orig))
        hits = self._recent.find(keys)
        pairs = [(report, hits[4 * i : 4 * i + 4]) for i, report in enumerate(reports)]
        try:
            with self._pool.connection() as conn:
                return [self._one(report, recent, conn) for report, recent in pairs]
        except (StoreNotReady, sqlite3.Error) as exc:
            log.debug("correlator store not readable for attribution: %s", exc)
            return [self._one(report, recent, None) for report, recent in pairs]

    def _fields(self, c: Columns, row: list[str]) -> tuple[str, str, str, str, float]:
        """(rcpt, orig, Message-Id, jobId, time) of a report, normalised as `_delivery_keys` normalises deliveries."""
        def val(i: int) -> str:
            return row[i].strip() if i >= 0 else ""

        t = parse_pmta_time(val(c.timeLogged)) or self._clock()
        return val(c.rcpt).lower(), val(c.orig).lower(), norm_message_id(val(c.message_id)), val(c.jobId), t

    def _one(self, report: tuple[str, str, str, str, float], recent: list[tuple[str, str, float] | None],
             conn: sqlite3.Connection | None) -> tuple[str, str] | None:
        """Message-Id, then jobId + rcpt, then rcpt + orig in the window; each in memory (`recent`: the
        hits of this report's four keys, as `lookup` asked them) first, then in the store."""
        rcpt, orig, mid, job, t = report
        mid_rcpt, mid_alone, job_rcpt, rcpt_orig = recent
        rh = self._hasher(rcpt)[0] if rcpt else None
        q = f"SELECT vmta, vmta_pool FROM corr_timelines WHERE {DAYS} AND "
        has_vmta = " AND (vmta IS NOT NULL OR vmta_pool IS NOT NULL)"
        if mid:
            hit = mid_rcpt if mid_rcpt is not None or not rcpt else mid_alone
            if hit is not None:
                return hit[0], hit[1]
            if conn is not None:
                mh = message_hash(mid)
                row_ = None
                if rh is not None:
                    row_ = conn.execute(q + "mid_h=? AND rcpt_h=?" + has_vmta + " ORDER BY id DESC LIMIT 1",
                                        (mh, rh)).fetchone()
                if row_ is None:
                    row_ = conn.execute(q + "mid_h=?" + has_vmta + " LIMIT 1", (mh,)).fetchone()
                if row_ is not None:
                    return row_[0] or "", row_[1] or ""
        if job and rcpt:
            if job_rcpt is not None:
                return job_rcpt[0], job_rcpt[1]
            if conn is not None:
                row_ = conn.execute(q + "job_h=? AND rcpt_h=?" + has_vmta + " ORDER BY id DESC LIMIT 1",
                                    (job_hash(job), rh)).fetchone()
                if row_ is not None:
                    return row_[0] or "", row_[1] or ""
        if rcpt:
            lo = t - self._window
            if rcpt_orig is not None and lo <= rcpt_orig[2] <= t:
                return rcpt_orig[0], rcpt_orig[1]
            if conn is not None:
                row_ = conn.execute(
                    q + "rcpt_h=?1 AND t0 BETWEEN ?2 AND ?3 AND (?4 = '' OR orig = ?4)" + has_vmta
                    + " ORDER BY t0 DESC LIMIT 1", (rh, lo, t, orig)).fetchone()
                if row_ is not None:
                    return row_[0] or "", row_[1] or ""
        return None
