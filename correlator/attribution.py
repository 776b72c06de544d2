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
from itertools import repeat

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
    """Bounded index of observed d/b/t rows: link key -> (vmta, pool, time, batch sequence).

    `observe` only queues the batch (it runs for every batch on the event loop); batches are
    indexed when a lookup needs them, which happens only for f/rb rows, and dropped unindexed
    once committed: most batches are never indexed at all.
    """

    def __init__(self, limit: int = 100_000, max_batches: int = 5_000) -> None:
        self._limit = limit
        self._max_batches = max_batches
        self._lock = threading.Lock()
        self._index: dict[int, tuple[tuple[str, str], float, int]] = {}
        """key_hash -> ((vmta, pool), time, batch sequence)."""
        self._queued: dict[int, RecordBatch] = {}  # seq -> batch observed, not indexed yet
        self._keys: dict[int, list[int]] = {}  # seq -> keys (hashed) of an indexed batch
        self._seq_of: dict[int, tuple[RecordBatch, int]] = {}  # id(batch) -> (batch, seq)
        self._written: list[int] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._index)

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

        The full batch is let go; its narrow copy (or its indexed keys) stays, bounded by `max_batches`
        and `limit`, oldest first: an f/rb record arriving before the store has the delivery still finds it.
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
        """The transaction that stored the last `written` batches has committed."""
        with self._lock:
            index = self._index
            for seq in self._written:
                self._queued.pop(seq, None)
                for key in self._keys.pop(seq, ()):
                    hit = index.get(key)
                    if hit is not None and hit[2] == seq:
                        del index[key]
            self._written.clear()

    def get(self, key: Key) -> tuple[str, str, float] | None:
        with self._lock:
            if self._queued:
                self._index_queued()
            hit = self._index.get(key_hash(key))
        return None if hit is None else (*hit[0], hit[1])

    def _index_queued(self) -> None:
        """Index the queued batches one at a time, evicting as it goes (memory: the index, not the backlog).

        Keys are stored as a 64-bit hash of their text (`key_hash`: computed column-wise for a whole
        batch) and (vmta, pool) pairs are shared: a collision could only mislabel one complaint's vmta.
        A key seen again moves to the end: eviction is oldest first.
        """
        index = self._index
        shared: dict[tuple[str, str], tuple[str, str]] = {}
        for seq, batch in self._queued.items():
            keys, pairs = _delivery_keys(batch)
            hashes = keys.get_column("h").to_list()
            pair_of = [shared.setdefault(p, p) for p in pairs]
            pop = index.pop
            for h in hashes:
                pop(h, None)
            index.update(zip(hashes, zip(map(pair_of.__getitem__, keys.get_column("vp").to_list()),
                                         keys.get_column("t").to_list(), repeat(seq)), strict=True))
            self._keys[seq] = hashes
            excess = len(index) - self._limit
            if excess > 0:
                for h in list(_take(index, excess)):
                    del index[h]
                oldest = index[next(iter(index))][2]  # key lists of older batches name only evicted entries
                for old in [s for s in self._keys if s < oldest]:
                    del self._keys[old]
        self._queued.clear()


PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                 "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
"""The characters Python's `str.strip()` removes, so polars strips delivery fields as the lookup side does."""
_HASH_SEED = 0x57A7
_SEP = "\0"


def key_hash(key: Key) -> int:
    """The index's hash of one key: polars' hash of its parts joined by NUL, as `_delivery_keys` computes it."""
    return int(pl.Series((_SEP.join(key),), dtype=pl.String).hash(_HASH_SEED)[0])


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


def _delivery_frame(batch: RecordBatch) -> pl.DataFrame:
    """(vmta, pool, rcpt, orig, mid, job, tl) of the batch's d/b/t rows, as Strings ('' for empty or absent).

    Read column-wise from the frame when the batch has one (filtered in polars first), never via `rows`.
    """
    c = batch.columns
    idx = (c.vmta, c.vmtaPool, c.rcpt, c.orig, c.message_id, c.jobId, c.timeLogged)
    frame = batch._frame if batch._rows is None else None  # noqa: SLF001 - the columnar form, when it is the source
    if frame is None:
        rows = [row for row in batch.rows if row[c.type] in _DELIVERY_TYPES]
        return pl.DataFrame({name: [row[i] for row in rows] if i >= 0 else [""] * len(rows)
                             for name, i in zip(_FIELDS, idx, strict=True)}, schema=dict.fromkeys(_FIELDS, pl.String))
    sub = frame.filter(pl.col(col(c.type)).is_in(list(_DELIVERY_TYPES)))
    return sub.select(*(pl.col(col(i)).fill_null("").alias(name) if i >= 0 else pl.lit("", dtype=pl.String).alias(name)
                        for name, i in zip(_FIELDS, idx, strict=True)))


def _delivery_keys(batch: RecordBatch) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """The link keys of the batch's d/b/t rows that name a vmta or pool, in row order: (h, vp, t), where
    vp indexes the returned list of distinct (vmta, pool) pairs.

    Per row: Message-Id + rcpt and Message-Id alone (with a Message-Id), jobId + rcpt (with both),
    rcpt + orig (with a rcpt). Fields are normalised as `Attributor._one` normalises a report's
    (`str.strip()`'s characters, `str.lower()`'s mapping), then hashed (`key_hash`), all column-wise.
    """
    df = _delivery_frame(batch).filter((pl.col("vmta") != "") | (pl.col("pool") != ""))
    if not df.height:
        return pl.DataFrame(schema={"h": pl.UInt64, "vp": pl.UInt32, "t": pl.Float64}), []
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
    out = df.select(keys, "vp", "t").explode("h").drop_nulls("h")
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
        try:
            with self._pool.connection() as conn:
                return [self._one(columns, row, conn) for row in rows]
        except (StoreNotReady, sqlite3.Error) as exc:
            log.debug("correlator store not readable for attribution: %s", exc)
            return [self._one(columns, row, None) for row in rows]

    def _one(self, c: Columns, row: list[str], conn: sqlite3.Connection | None) -> tuple[str, str] | None:
        def val(i: int) -> str:
            return row[i].strip() if i >= 0 else ""

        rcpt = val(c.rcpt).lower()
        orig = val(c.orig).lower()
        mid = norm_message_id(val(c.message_id))
        job = val(c.jobId)
        t = parse_pmta_time(val(c.timeLogged)) or self._clock()
        recent = self._recent
        rh = self._hasher(rcpt)[0] if rcpt else None
        q = f"SELECT vmta, vmta_pool FROM corr_timelines WHERE {DAYS} AND "
        has_vmta = " AND (vmta IS NOT NULL OR vmta_pool IS NOT NULL)"
        if mid:
            hit = recent.get(("m", mid, rcpt))
            if hit is None and rcpt:
                hit = recent.get(("m", mid, ""))
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
            hit = recent.get(("j", job, rcpt))
            if hit is not None:
                return hit[0], hit[1]
            if conn is not None:
                row_ = conn.execute(q + "job_h=? AND rcpt_h=?" + has_vmta + " ORDER BY id DESC LIMIT 1",
                                    (job_hash(job), rh)).fetchone()
                if row_ is not None:
                    return row_[0] or "", row_[1] or ""
        if rcpt:
            lo = t - self._window
            hit = recent.get(("r", rcpt, orig))
            if hit is not None and lo <= hit[2] <= t:
                return hit[0], hit[1]
            if conn is not None:
                row_ = conn.execute(
                    q + "rcpt_h=?1 AND t0 BETWEEN ?2 AND ?3 AND (?4 = '' OR orig = ?4)" + has_vmta
                    + " ORDER BY t0 DESC LIMIT 1", (rh, lo, t, orig)).fetchone()
                if row_ is not None:
                    return row_[0] or "", row_[1] or ""
        return None
