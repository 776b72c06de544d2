"""vmta / pool (and provider) attribution of f, rb and rs records from the delivery they report on.

FBL and remote-bounce records carry no vmta, so the metrics would say `unknown`; an FBL whose recipient the provider
anonymised (Microsoft JMRP) names no provider either, so its `isp` comes from the delivery too (`Delivery.isp`).
The delivery is found by Message-Id + rcpt (by the Message-Id alone for a report without rcpt, and only when the
message has one recipient: never another recipient's delivery, as linking joins it), then jobId + rcpt (by either,
the delivery of the latest send of the key queued and delivered before the report, as linking joins it: not a resend
queued after it, nor a send with deferrals only), then rcpt + orig within the fallback window (rcpt alone for a report
without orig; a delivery first, else a deferral): first among rows observed but perhaps not
yet committed (a small bounded in-memory index, so attribution works inside one commit interval and in oneshot
runs), then in the store through a read connection.

Entries leave the in-memory index once the write that stored them is known to be committed (the
next write or maintain call), so there is no gap where a row is in neither place.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import polars as pl

from correlator import store
from correlator.genfilter import GenerationFilters
from correlator.keys import MID_STRIP, RcptHasher, mid_key, norm_message_id, norm_rcpt
from correlator.prepare import _mx_host_expr, map_distinct, normalised_rcpts, report_times
from correlator.store import ReadPool, StoreNotReady
from exporter.records import PY_WHITESPACE, Columns, RecordBatch, col
from exporter.redact import key_without_recipient
from exporter.sinks import Delivery
from exporter.timeparse import parse_pmta_time

log = logging.getLogger(__name__)

_HAS_VMTA = " AND (vmta IS NOT NULL OR vmta_pool IS NOT NULL)"
_DONE_FLAGS = store.FLAG[store.TYPE_CODES["d"]] | store.FLAG[store.TYPE_CODES["b"]]


def _sent_before(before: str, t: str = "") -> str:
    """SQL: the timeline (`t`: its table's name and a dot) is one a report of cut `before` (an SQL value: its time, or
    ARRIVAL_SLACK later when that is its arrivalDate, `Report`) may be about: queued and delivered (or bounced) at or
    before it, as linking joins (linking._report_fits, by `Prepared.cut`). Not a resend queued
    after the report, nor a send never delivered."""
    return (f" AND {t}flags & {_DONE_FLAGS} != 0 AND {t}t_done <= {before}"
            f" AND coalesce({t}t_queued, {t}t0) <= {before}")


Hit = tuple[int, str, str, str, float | None]
"""(id, vmta, pool, isp, t_queued) of a timeline a store search found."""


def _rank(hit: Hit) -> tuple[float, int]:
    """The later of two sends of a key (`store.send_rank`)."""
    return store.send_rank(hit[4], hit[0])
_DELIVERY_TYPES = frozenset(("d", "b", "t", "delivery", "bounce", "transient"))
Key = tuple[str, str, str]
Place = tuple[str, str]
"""(recipient domain, MX host) of a delivery row: what the ISP classifier reads of it."""
Found = tuple[str, str, float, str, str]
"""(vmta, pool, time, recipient domain, MX host) of the newest observed delivery row with a key."""
IspOf = Callable[[str, str], str]
"""(recipient address, dsnMta) -> provider: the correlator's ISP classifier (correlator.ingest.IspOf)."""


T = TypeVar("T")


class Sole(NamedTuple):
    """What memory holds of the deliveries of one Message-Id (its key alone)."""

    newest: Found
    rcpts: tuple[str, ...]
    """Its recipients (normalised as a report's), at most two: two are enough to say it names no one recipient."""


class RecentDeliveries:
    """Bounded index of observed d/b/t rows: link key -> (vmta, pool, time, rcpt domain, MX host), newest first.

    `observe` only queues the batch (it runs for every batch on the event loop); batches are keyed
    when a lookup needs them, which happens only for f/rb rows, and dropped unkeyed once committed:
    most batches are never keyed at all. A keyed batch is one small frame of hashed keys (computed
    column-wise by `_delivery_keys`): keying costs no Python per row, and `find` answers all the keys
    of one report batch with one filter over the frames, newest first.
    """

    def __init__(self, limit: int | None = 100_000, max_batches: int = 5_000) -> None:
        self.limit = limit
        """Keys held at most (the oldest batches dropped past it); None: every batch until it is committed, where
        the caller bounds what is uncommitted (a oneshot's slices): a batch dropped before the store had it left
        its deliveries in neither place (29% of a mailing's complaints `unknown`)."""
        self._max_batches = max_batches
        self._lock = threading.Lock()
        self._queued: dict[int, RecordBatch] = {}  # seq -> batch observed, not keyed yet
        self._queued_rows: dict[int, int] = {}
        """seq -> rows of that queued batch that give a key (`_keyed_rows`), oldest first."""
        self._queued_total = 0  # their sum
        self._keyed: dict[int, tuple[pl.DataFrame, list[tuple[str, str]], list[Place]]] = {}
        """seq -> (its keys (h, vp, ip, t, who, h2, seq) in row order, its (vmta, pool) pairs, which vp indexes, its
        (rcpt domain, MX host) places, which ip indexes), oldest first."""
        self._size = 0  # keys held in _keyed
        self._table: pl.DataFrame | None = None
        """The _keyed frames in one (h, vp, ip, t, who, h2, seq) frame, oldest first: None once a batch left it."""
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
        rows = _keyed_rows(narrow)
        with self._lock:
            self._seq += 1
            self._queued[self._seq] = narrow
            self._queued_rows[self._seq] = rows
            self._queued_total += rows
            self._seq_of[id(batch)] = (batch, self._seq)
            if len(self._seq_of) > self._max_batches:
                for bid in list(_take(self._seq_of, len(self._seq_of) - self._max_batches)):
                    _b, seq = self._seq_of.pop(bid)
                    self._unqueue(seq)
            if len(self._queued) > self._max_batches:  # released batches are bounded here (oldest first)
                for seq in list(_take(self._queued, len(self._queued) - self._max_batches)):
                    self._unqueue(seq)
            # Between lookups (minutes without a report) batches only queue: keep the newest that hold `limit`
            # rows giving keys. Those give at least `limit` keys, so keying would drop every older batch anyway.
            while len(self._queued) > 1 and self.limit is not None:
                oldest = next(iter(self._queued_rows))
                if self._queued_total - self._queued_rows[oldest] < self.limit:
                    break
                self._unqueue(oldest)

    def _unqueue(self, seq: int) -> None:
        """Forget a queued (not keyed) batch."""
        if self._queued.pop(seq, None) is not None:
            self._queued_total -= self._queued_rows.pop(seq)

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
                self._unqueue(seq)
                self._drop(seq)
            self._written.clear()

    def find(self, keys: list[Key]) -> list[Found | None]:
        """(vmta, pool, time, rcpt domain, MX host) of the newest observed delivery row with each key, or None."""
        return self._answered(keys, self._newest_rows)

    def sent(self, keys: list[Key], times: list[float]) -> list[Found | None]:
        """Of each Message-Id + rcpt or jobId + rcpt key, with the time of the report asking: the delivery (d, b) row of
        the latest send of the key queued and delivered at or before that time (by timeQueued, then the newest
        observed), or None. Not the newest row of the key: a resend queued after the report, or a deferral of a send
        never delivered, is not what the report is about (linking does not join it either)."""
        return self._before(keys, [(t, t) for t in times], sent=True)

    def in_window(self, keys: list[Key], spans: list[tuple[float, float]]) -> list[Found | None]:
        """Of each rcpt + orig (or rcpt alone) key, with a window (lo, hi): the newest observed delivery (d, b) row of
        the key logged in it, else its newest row logged in it (a deferral: the VMTA that would deliver it)."""
        return self._before(keys, spans, sent=False)

    def _before(self, keys: list[Key], spans: list[tuple[float, float]], sent: bool) -> list[Found | None]:
        """`sent` or `in_window`: each key's best row logged in its span (lo, hi), its answer or None."""
        return self._ask(keys, lambda table, hashes: self._best_in_spans(table, hashes, spans, sent))

    def _best_in_spans(self, table: pl.DataFrame, hashes: pl.Series, spans: list[tuple[float, float]],
                       sent: bool) -> list[Found | None]:
        """`_before`'s answer from the key table (one per key, in order: a key asked twice may have two spans)."""
        wanted = pl.DataFrame([pl.Series("i", range(len(hashes)), dtype=pl.Int64), hashes.alias("h"),
                               pl.Series("lo", [lo for lo, _hi in spans], dtype=pl.Float64),
                               pl.Series("hi", [hi for _lo, hi in spans], dtype=pl.Float64)])
        want = hashes.implode()
        if sent:  # only the delivery rows of sends queued by then, the latest send first
            hits = table.filter(pl.col("h").is_in(want) & pl.col(_DONE)).select(*_HIT, _QUEUED, _DONE)
            ok = (pl.col("t") <= pl.col("hi")) & (pl.coalesce(_QUEUED, "t") <= pl.col("hi"))
            rank = [pl.col(_QUEUED).fill_null(float("-inf")), "row"]  # store.send_rank, as polars sorts it
        else:  # a hash is either rows' `h` or rows' `h2` (rcpt + orig, never a row's own key): each part in order
            hits = pl.concat([table.filter(pl.col("h").is_in(want)).select(*_HIT, _QUEUED, _DONE),
                              table.filter(pl.col(_H2).is_in(want)).select(pl.col(_H2).alias("h"), *_HIT[1:],
                                                                           _QUEUED, _DONE)])
            ok = (pl.col("lo") <= pl.col("t")) & (pl.col("t") <= pl.col("hi"))
            rank = [_DONE, "row"]
        best = (hits.with_row_index("row").join(wanted, on="h").filter(ok).sort(rank)
                .group_by("i", maintain_order=True).last())
        found = {i: self._found(vp, ip, t, seq)
                 for i, vp, ip, t, seq in best.select("i", "vp", "ip", "t", _SEQ).iter_rows()}
        return [found.get(i) for i in range(len(hashes))]

    def recipients(self, keys: list[Key], times: list[float]) -> list[Sole | None]:
        """Of each Message-Id-alone key, with the time of the report asking: its newest delivery (d, b) row logged at
        or before that time and the recipients of such rows (at most two), or None.

        A Message-Id names a delivery only as its message's one recipient (a report without rcpt): with `find`'s
        newest row alone, a message sent to two recipients through two VMTAs gave either one. Not a deferral, nor a
        delivery after the report (as linking counts them): one read after the report is not counted, so neither is
        one read before it."""
        return self._ask(keys, lambda table, hashes: self._sole(table, hashes, times))

    def _answered(self, keys: list[Key], answer: Callable[[pl.DataFrame, pl.Series], dict[int, T]]) -> list[T | None]:
        """Each key's answer from the index (`answer`: the key table and the wanted hashes -> hash: answer)."""
        def by_hash(table: pl.DataFrame, hashes: pl.Series) -> list[T | None]:
            found = answer(table, hashes.implode())
            return [found.get(h) for h in hashes.to_list()]
        return self._ask(keys, by_hash)

    def _ask(self, keys: list[Key], answer: Callable[[pl.DataFrame, pl.Series], list[T | None]]) -> list[T | None]:
        """`answer(key table, the keys' hashes)` under the lock, the keys queued since the last question indexed
        first; all None while nothing is indexed."""
        if not keys:
            return []
        hashes = key_hashes(keys)
        with self._lock:
            if self._queued:
                self._key_queued()
            if not self._size:
                return [None] * len(keys)
            return answer(self._all_keys(), hashes)

    def _newest_rows(self, table: pl.DataFrame, wanted: pl.Series) -> dict[int, Found]:
        # a hash is either rows' `h` or rows' `h2` (rcpt + orig, never a row's own key): each part in order
        hits = pl.concat([table.filter(pl.col("h").is_in(wanted)).select(_HIT),
                          table.filter(pl.col(_H2).is_in(wanted)).select(pl.col(_H2).alias("h"), *_HIT[1:])])
        hits = hits.unique("h", keep="last", maintain_order=True)
        return {h: self._found(vp, ip, t, seq) for h, vp, ip, t, seq in hits.iter_rows()}

    def _sole(self, table: pl.DataFrame, hashes: pl.Series, times: list[float]) -> list[Sole | None]:
        """`recipients`' answer from the key table (one per key, in order: a key asked twice may have two times)."""
        wanted = pl.DataFrame([pl.Series("i", range(len(hashes)), dtype=pl.Int64), hashes.alias("h"),
                               pl.Series("hi", times, dtype=pl.Float64)])
        hits = table.filter(pl.col("h").is_in(hashes.implode()) & pl.col(_WHO).is_not_null() & pl.col(_DONE))
        rows = (hits.select(*_HIT, _WHO).with_row_index("row").join(wanted, on="h")
                .filter(pl.col("t") <= pl.col("hi")).sort("row"))
        groups = rows.group_by("i", maintain_order=True).agg(
            pl.col(_WHO).unique(maintain_order=True).head(2), *(pl.col(name).last() for name in _HIT[1:]))
        found = {i: Sole(self._found(vp, ip, t, seq), tuple(who))
                 for i, who, vp, ip, t, seq in groups.select("i", _WHO, *_HIT[1:]).iter_rows()}
        return [found.get(i) for i in range(len(hashes))]

    def _found(self, vp: int, ip: int, t: float, seq: int) -> Found:
        """The answer of a key row: its batch's (vmta, pool) pair and (rcpt domain, MX host) place."""
        _frame, pairs, places = self._keyed[seq]
        vmta, pool = pairs[vp]
        dom, host = places[ip]
        return vmta, pool, t, dom, host

    def _all_keys(self) -> pl.DataFrame:
        """Every keyed batch in one frame, in observation order: extended while batches only arrive
        (a report poll costs the new batches, not all of them), rebuilt once one has left."""
        if self._table is None:
            self._table = pl.concat([entry[0] for entry in self._keyed.values()], rechunk=True)
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
        self._queued_rows.clear()
        self._queued_total = 0
        for seq in sorted(keyed):  # oldest first: eviction order, and the newest wins in _all_keys
            keys, pairs, places = keyed[seq]
            self._keyed[seq] = (keys, pairs, places)
            self._size += keys.height
            if self._table is not None:
                self._fresh.append(keys)
        if self.limit is None:
            return
        while self._size > self.limit and len(self._keyed) > 1:
            self._drop(next(iter(self._keyed)))
        if self._size > self.limit:  # one batch alone holds more: its newest rows
            seq, (frame, pairs, places) = next(iter(self._keyed.items()))
            self._keyed[seq] = (frame.tail(self.limit), pairs, places)
            self._size = self.limit
            self._table = None

    def _drop(self, seq: int) -> None:
        entry = self._keyed.pop(seq, None)
        if entry is not None:
            self._size -= entry[0].height
            self._table = None
            self._fresh.clear()


_HASH_SEED = 0x57A7
_SEP = "\0"


def key_hashes(keys: list[Key]) -> pl.Series:
    """The index's hash of each key: polars' hash of its parts joined by NUL, as `_delivery_keys` computes it."""
    return pl.Series([_SEP.join(key) for key in keys], dtype=pl.String).hash(_HASH_SEED)


def _keyed_rows(batch: RecordBatch) -> int:
    """Rows of the batch that give at least one key: the delivery rows `_delivery_keys` keeps that have a
    Message-Id or rcpt (the same frame and the same normalisation; no hashing). On the event loop, per batch."""
    if batch.columns.type < 0 or not len(batch):
        return 0
    frame = _rows_frame(batch, 0) if batch._rows is not None else _frames_frame([(0, batch)])  # noqa: SLF001
    return int(frame.filter(_NAMES_VMTA).select(((_MID_BARE != "") | (_RCPT_STRIPPED != "")).sum()).item())


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
                                    c.timeLogged, c.arrivalDate, c.dsnMta, c.timeQueued}) if i >= 0]
    return RecordBatch(batch.source, batch.path, c, frame=frame.select(keep), file_id=batch.file_id)


_FIELDS = ("vmta", "pool", "rcpt", "orig", "mid", "job", "tl", "mta", "tq", "kind")
_SEQ = "seq"
_WHO = "who"
"""The recipient of a Message-Id-alone key row (null on the other keys): `RecentDeliveries.recipients` counts them."""
_H2 = "h2"
"""A key row's second key: rcpt + orig on the rcpt-alone row of a delivery with an orig (null on the others)."""
_HIT = ("h", "vp", "ip", "t", _SEQ)
_QUEUED = "q"
"""A key row's delivery's timeQueued (null: none logged)."""
_DONE = "done"
"""A key row's delivery row is a d or b (not a deferral): a report after it may be about its send."""
_DONE_TYPES = ("d", "b", "delivery", "bounce")
_NAMES_VMTA = (pl.col("vmta") != "") | (pl.col("pool") != "")
"""A delivery row of `_frames_frame` that names a vmta or pool: the rows attribution can answer with."""
_RCPT_STRIPPED = pl.col("rcpt").str.strip_chars(PY_WHITESPACE)
_MID_BARE = pl.col("mid").str.strip_chars(PY_WHITESPACE).str.strip_chars(MID_STRIP)
_MID = pl.when(_MID_BARE.str.contains("@", literal=True)).then(pl.concat_str(
    _MID_BARE.str.extract(r"(?s)^(.*@)", 1), _MID_BARE.str.extract(r"@([^@]*)$", 1).str.to_lowercase())
).otherwise(_MID_BARE)
"""rcpt and Message-Id normalised as `Attributor._fields` normalises a report's (the id's domain lower-cased:
keys.mid_key)."""


def _keys_by_batch(queued: list[tuple[int, RecordBatch]],
                   ) -> dict[int, tuple[pl.DataFrame, list[tuple[str, str]], list[Place]]]:
    """seq -> (keys (h, vp, ip, t, who, h2, seq), (vmta, pool) pairs, (rcpt domain, MX host) places) of each batch
    that has keys; batches of one layout go through `_delivery_keys` together (their pairs and places lists are
    shared)."""
    layouts: dict[tuple[int, ...], list[tuple[int, RecordBatch]]] = {}
    frames: list[pl.DataFrame] = []
    for seq, batch in queued:
        if batch._rows is None:  # noqa: SLF001 - the columnar form, when it is the source
            c = batch.columns
            layouts.setdefault((*_layout(c), c.arrivalDate), []).append((seq, batch))
        else:
            frames.append(_rows_frame(batch, seq))
    for members in layouts.values():
        frames.append(_frames_frame(members))
    out: dict[int, tuple[pl.DataFrame, list[tuple[str, str]], list[Place]]] = {}
    for frame in frames:
        keys, pairs, places = _delivery_keys(frame)
        for (seq,), part in keys.partition_by(_SEQ, as_dict=True, maintain_order=True).items():
            out[int(seq)] = (part, pairs, places)
    return out


def _layout(c: Columns) -> tuple[int, ...]:
    """The type column, then the column of each of `_FIELDS` (`kind`: the type again; `tl`: timeLogged, read as
    `Columns.logged`, its arrivalDate where it is empty)."""
    return (c.type, c.vmta, c.vmtaPool, c.rcpt, c.orig, c.message_id, c.jobId, c.timeLogged, c.dsnMta, c.timeQueued,
            c.type)


def _frames_frame(members: list[tuple[int, RecordBatch]]) -> pl.DataFrame:
    """(vmta, pool, rcpt, orig, mid, job, tl, mta, seq) of the d/b/t rows of frame batches sharing one layout,
    as Strings ('' for empty or absent): read column-wise, filtered in polars, never via `rows`."""
    c = members[0][1].columns
    used = [col(i) for i in sorted({*_layout(c), c.arrivalDate}) if i >= 0]
    frame = pl.concat([batch._frame.select(used).with_columns(pl.lit(seq, dtype=pl.Int64).alias(_SEQ))  # noqa: SLF001
                       for seq, batch in members])
    idx = _layout(c)[1:]
    return frame.filter(pl.col(col(c.type)).is_in(list(_DELIVERY_TYPES))).select(
        *(c.logged_expr().alias(name) if name == "tl" and i >= 0
          else pl.col(col(i)).fill_null("").alias(name) if i >= 0 else pl.lit("", dtype=pl.String).alias(name)
          for name, i in zip(_FIELDS, idx, strict=True)), _SEQ)


def _rows_frame(batch: RecordBatch, seq: int) -> pl.DataFrame:
    """`_frames_frame` of one row batch (the parser's exact fallback path)."""
    c = batch.columns
    rows = [row for row in batch.rows if row[c.type] in _DELIVERY_TYPES]
    data: dict[str, list[Any]] = {name: [row[i] for row in rows] if i >= 0 else [""] * len(rows)
                                  for name, i in zip(_FIELDS, _layout(c)[1:], strict=True)}
    data["tl"] = [c.logged(row) for row in rows]  # an empty timeLogged: the row's arrivalDate
    data[_SEQ] = [seq] * len(rows)
    return pl.DataFrame(data, schema={**dict.fromkeys(_FIELDS, pl.String), _SEQ: pl.Int64})


def _delivery_keys(df: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[str, str]], list[Place]]:
    """The link keys of the delivery rows (`_frames_frame`) that name a vmta or pool, in row order:
    (h, vp, ip, t, who, h2, q, done, seq), where vp indexes the returned list of distinct (vmta, pool) pairs and ip the
    returned list of distinct (recipient domain, MX host) places (the provider of a delivery, decided when a report
    finds it).

    Per row: Message-Id + rcpt and Message-Id alone (with a Message-Id; the latter with its recipient in `who`),
    jobId + rcpt (with both), rcpt alone (with a rcpt: the key of a report without orig, which the store matches
    on any orig) with rcpt + orig in `h2` (with an orig too: a second key of the row, not a row of its own, so the
    index holds as many rows for its `limit` as before). `q` is the row's timeQueued (null without one), `done` whether
    it is a d or b: a report is about a send queued and delivered before it (`RecentDeliveries.sent`). Fields are
    normalised as `Attributor._fields` normalises
    a report's (`str.strip()`'s characters, `str.lower()`'s mapping), then hashed (`key_hashes`), column-wise.
    """
    df = df.filter(_NAMES_VMTA)
    if not df.height:
        return pl.DataFrame(schema={"h": pl.UInt64, "vp": pl.UInt32, "ip": pl.UInt32, "t": pl.Float64,
                                    _WHO: pl.String, _H2: pl.UInt64, _QUEUED: pl.Float64, _DONE: pl.Boolean,
                                    _SEQ: pl.Int64}), [], []
    mid = _MID
    job = pl.col("job").str.strip_chars(PY_WHITESPACE)
    pairs = df.select("vmta", "pool").unique(maintain_order=True).with_row_index("vp")
    df = df.with_columns(normalised_rcpts(df.get_column("rcpt")).alias("rcpt"),  # as `_fields` (keys.norm_rcpt)
                         normalised_rcpts(df.get_column("orig")).alias("orig"))  # `<news@s.ex>` as news@s.ex
    df = df.with_columns(pl.col("rcpt").str.extract(r"@([^@]*)$").str.strip_chars().fill_null("").alias("dom"),
                         _mx_host_expr(pl.col("mta")).alias("host"))
    places = df.select("dom", "host").unique(maintain_order=True).with_row_index("ip")
    df = df.join(pairs, on=["vmta", "pool"], how="left", maintain_order="left").join(
        places, on=["dom", "host"], how="left", maintain_order="left").with_columns(
        mid.alias("mid"), job.alias("job"),
        map_distinct(df.get_column("tl"), lambda v: parse_pmta_time(v) or 0.0, pl.Float64).alias("t"),
        map_distinct(df.get_column("tq"), lambda v: parse_pmta_time(v) if v.strip() else None, pl.Float64)
        .alias(_QUEUED), pl.col("kind").str.strip_chars().is_in(list(_DONE_TYPES)).alias(_DONE))
    has_mid, has_rcpt = pl.col("mid") != "", pl.col("rcpt") != ""

    def key(kind: str, a: str, b: str | None, when: pl.Expr) -> pl.Expr:
        parts = [pl.lit(kind), pl.col(a), pl.col(b) if b else pl.lit("")]
        return pl.when(when).then(pl.concat_str(parts, separator=_SEP).hash(_HASH_SEED))

    keys = pl.concat_list(
        key("m", "mid", "rcpt", has_mid), key("m", "mid", None, has_mid & has_rcpt),
        key("j", "job", "rcpt", has_rcpt & (pl.col("job") != "")), key("r", "rcpt", None, has_rcpt),
    ).alias("h")
    with_orig = key("r", "rcpt", "orig", has_rcpt & (pl.col("orig") != "")).alias(_H2)
    out = df.select(keys, "vp", "ip", "t", pl.col("rcpt").alias(_WHO), with_orig, _QUEUED, _DONE, _SEQ).explode("h")
    # each row gave 4 key rows in `keys`' order (nulls kept until drop_nulls): `who` on its 2nd, `h2` on its 4th
    # (lists of them exploded too cost 2.5x the keying, measured)
    pos = pl.int_range(pl.len(), dtype=pl.UInt32) % 4
    out = out.with_columns(pl.when(pos == 1).then(pl.col(_WHO)).alias(_WHO),
                           pl.when(pos == 3).then(pl.col(_H2)).alias(_H2)).drop_nulls("h")
    return (out, list(zip(pairs.get_column("vmta").to_list(), pairs.get_column("pool").to_list(), strict=True)),
            list(zip(places.get_column("dom").to_list(), places.get_column("host").to_list(), strict=True)))


def _take(d: dict, n: int):  # type: ignore[no-untyped-def]
    it = iter(d)
    for _ in range(n):
        yield next(it)


SEEK_BUDGET = 4_000
"""Index seeks the store lookups of one batch of reports may cost (a seek per slice searched per query; ~5-30 us
each at a 20 GiB store with a warm cache). The metrics of a batch wait for its attribution, on the daemon's event
loop: at a full store (~480 slices) a report whose delivery the correlator had not stored yet searched every slice
three or four times, ~10 ms with a warm cache and 0.5-2 s (up to 8 s) with a cold one, and the metrics fell
minutes behind (bench/README.md, eleventh round). Once the budget (or TIME_BUDGET_S) is spent, the batch's reports are
answered from memory only; a search is cut between two of its steps."""
TIME_BUDGET_S = 0.05
"""Seconds the store lookups of one batch may take, whatever the seeks cost (a cold cache, a busy disk), plus
TIME_PER_REPORT_S for each of its reports."""
SEEKS_PER_REPORT = 8
"""Index seeks a batch may cost per report it holds, besides SEEK_BUDGET: a report costs ~3 on a busy daemon, and a
burst of 30,000 complaints had spent the 4,000 on its first ~1,500 (55% `unknown` on a small, idle store). The time
budget, which grows per report too, still bounds the event loop's wait."""
TIME_PER_REPORT_S = 0.001
"""Seconds of store lookups a batch may take per report it holds. With the generation filters a report costs ~0.3-0.5
ms on a busy daemon (~3 seeks), but complaints come in bursts: with 50 ms per batch whatever its size, a batch of a few
hundred spent its budget on its first hundred, and 13-54% of complaints 10 minutes late at 20k records/s were counted
`unknown` (bench/README.md, thirteenth round). The event loop then waits at most ~1 ms more per report."""
PROGRESS_OPS = 1_000
"""SQLite VM instructions between two looks at the clock inside a store search (its progress handler): a step is one
statement over up to MAX_STEP dated slices, and on a store bigger than the page cache each of its seeks may wait for
the disk; with the budget looked at between steps only, the metrics lag p99 was 7.8 s at 20k records/s with
complaints 10 minutes late (bench/README.md, twelfth round). A look costs ~0.1 us against ~10-50 us per seek."""
FIRST_STEP = 8
"""Dated slices the first step of a store search covers (then 16, 32, up to MAX_STEP): newest first (by generation,
then day), as most reports are about a recent delivery. At a high rate a slice is a generation (of one day); at a low
rate one generation holds a slice per day it was filled over (a year: 365)."""
MAX_STEP = 64
"""Dated slices a step covers at most: the budget is looked at between two steps (64 index seeks: ~0.1-0.3 s at worst
on a cold 20 GiB store, measured)."""


class _Step(NamedTuple):
    slices: list[int]
    low: int
    """Lowest timeline id above every id the later steps' slices may hold (those of their newest generation and older):
    a hit at or above it is newer than any later step's. A step may end inside a generation: the rest of it is later."""
    day: int
    """The latest day of the later steps' slices (-1: none): a send queued on a later day than that was queued after
    every send they hold (a dated slice holds the timelines queued on its day), so a hit of a search by report time
    (the latest send queued and delivered before it) queued after it settles the search."""


class Slices(NamedTuple):
    """The store's slices as a search goes through them, read once per batch of reports."""

    anywhere: list[int]
    """The undated slices and plain days: their timelines may have any id, so they are searched first."""
    dated: list[int]
    """The slices of dated generations, newest first: by generation, then day (a generation's ids are not in the order
    of its days: listed oldest day first, the first steps of a search held a long generation's oldest days only)."""
    gens: list[int]
    """The generation of each of `dated`."""


def read_slices(conn: sqlite3.Connection) -> Slices:
    gen, day = store.dated_generation, store.day_of_slice
    values = [v for (v,) in conn.execute("SELECT day FROM corr_days")]
    dated = sorted((v for v in values if gen(v)), key=lambda v: (gen(v), day(v)), reverse=True)
    return Slices([v for v in values if not gen(v)], dated, [gen(v) for v in dated])


def search_steps(slices: Slices, ruled_out: set[int] | frozenset[int] = frozenset()) -> list[_Step]:
    """The slices a search goes through, in steps: the undated slices and plain days first with the newest
    FIRST_STEP dated slices, then older ones, twice as many per step up to MAX_STEP; generations whose filter
    rules the search's keys out (`ruled_out`, see genfilter.py) are left out."""
    gen, day_of = store.generation_of_slice, store.day_of_slice
    dated = ([v for v, g in zip(slices.dated, slices.gens, strict=True) if g not in ruled_out] if ruled_out
             else slices.dated)
    later = [-1] * (len(dated) + 1)  # the latest day of dated[i:]
    for i in range(len(dated) - 1, -1, -1):
        later[i] = max(later[i + 1], day_of(dated[i]))
    steps, start, size = [], 0, FIRST_STEP
    while not steps or start < len(dated):
        stop = min(start + size, len(dated))
        low = gen(dated[stop]) << store.GEN_BITS if stop < len(dated) else 0
        steps.append(_Step((slices.anywhere if not steps else []) + dated[start:stop], low, later[stop]))
        start, size = stop, min(size * 2, MAX_STEP)
    return steps


def _settles(hit: Hit, step: _Step) -> bool:
    """A search by report time that found `hit` (the latest send queued and delivered before the report so far) needs
    no step after `step`: every send they hold was queued on an earlier day (`_Step.day`)."""
    return hit[4] is not None and int(hit[4] // store.DAY) > step.day


Report = tuple[str, str, str, str, float, float]
"""(rcpt, orig, Message-Id, jobId, time, cut) of a report, normalised (`Attributor._fields`): `cut` is the time a send
must have been queued and delivered (or bounced) by for the report to be about it, its time or ARRIVAL_SLACK later when
that is its arrivalDate (prepare.ARRIVAL_SLACK, `Prepared.cut`: as linking cuts)."""


class Recent(NamedTuple):
    """What memory holds of one report's keys (`Attributor._in_memory`)."""

    mid_rcpt: Found | None
    """Of Message-Id + rcpt: the delivery of the latest send queued and delivered before the report."""
    job_rcpt: Found | None
    """Of jobId + rcpt: the same."""
    rcpt_orig: Found | None
    """Of rcpt + orig; of rcpt alone when the report has no orig."""
    sole: Sole | None
    """Of its Message-Id alone, when the report has no rcpt: its recipients delivered (or bounced) before it."""


class _First(NamedTuple):
    """What `_first_steps` found for one report's Message-Id + rcpt search."""

    settled: bool
    """The first step settles the search: `answer` is its result (None: no such timeline)."""
    answer: Delivery | None
    best: Hit | None
    """Not settled: the first step's latest hit, from which the search goes on at its second step."""

_BULK_ROWS = 300
"""VALUES rows (a report and one of its slices each) per statement of `_first_steps`, about: whole reports."""


class Attributor:
    """Answers `lookup_vmta` from the in-memory index, then the store.

    The provider (`Delivery.isp`) of a delivery found in memory is its (rcpt domain, MX host) through `isp_of`, the
    classifier its timeline is stored with; one found in the store is its timeline's `isp` (that of its last delivery
    row with a recipient), '' when it has none."""

    def __init__(
        self, recent: RecentDeliveries, pool: ReadPool, hasher: RcptHasher, window: float,
        clock: Callable[[], float], isp_of: IspOf | None = None,
    ) -> None:
        self.isp_of = isp_of
        """Swapped by CorrelatorSink.reload_classifiers (SIGHUP)."""
        self._isp_memo: dict[Place, str] = {}
        """Providers of the places found by the lookup under way (cleared per call: the classifier caches itself)."""
        self._recent = recent
        self._pool = pool
        self._hasher = hasher
        self._window = window
        self._clock = clock
        self._filters = GenerationFilters()
        """The store's generation filters as of `_seen`."""
        self._slice_list: Slices | None = None
        self._seen: str | None = None
        """The store's SEARCH_SEQ when `_filters` and `_slice_list` were read."""
        self.seek_budget: int | None = SEEK_BUDGET
        """Index seeks per batch; None: no limit, nor TIME_BUDGET_S (oneshot: its output must not depend on what
        was committed when, nor on how fast the disk is)."""
        self.timer: Callable[[], float] = time.monotonic
        self._until: tuple[int, float] | None = None
        """(seeks, timer value) at which the lookups of the batch under way stop (None: no limit)."""
        self._cut = False
        """A store search of the report under way was cut by the budget (before its end)."""
        self.seeks = 0
        """Index seeks the store lookups have cost (one per slice searched per query)."""
        self.skipped = 0
        """Reports not found in memory and not looked up in the store: their batch had spent its budget."""

    def lookup(self, columns: Columns, rows: list[list[str]], resume: bool = False) -> list[Delivery | None]:
        """`resume`: the rows go on with the batch of the previous call (a big batch handed over in slices, so that
        only a slice of its rows exist as Python lists at once): they share its budget, as if passed in one call."""
        if not rows:
            return []
        if not resume:
            self._until = None  # the budget of a batch whose lookups failed is not carried over
        self._isp_memo.clear()
        times, cuts = report_times(columns, rows, self._clock())  # as the correlator times them (prepare)
        reports = [self._fields(columns, row, t, cut) for row, t, cut in zip(rows, times, cuts, strict=True)]
        pairs = list(zip(reports, self._in_memory(reports), strict=True))
        try:
            with self._pool.connection() as conn:
                slices = self._slices(conn)
                self._until = self._budget(len(rows), resume)
                if self._until is not None:  # the clock is looked at inside a statement too: see PROGRESS_OPS
                    deadline, timer = self._until[1], self.timer
                    conn.set_progress_handler(lambda: timer() >= deadline, PROGRESS_OPS)
                try:
                    first = self._first_steps(conn, pairs, slices)
                    out = []
                    for i, (report, recent) in enumerate(pairs):
                        room = self._room()
                        self._cut = False
                        hit = self._one(report, recent, conn if room else None, slices, first.get(i))
                        self.skipped += hit is None and (self._cut or not room)
                        out.append(hit)
                    return out
                finally:
                    conn.set_progress_handler(None, 0)
        except (StoreNotReady, sqlite3.Error) as exc:
            log.debug("correlator store not readable for attribution: %s", exc)
            return [self._one(report, recent, None, Slices([], [], [])) for report, recent in pairs]

    def _in_memory(self, reports: list[Report]) -> list[Recent]:
        """What memory holds of every key of every report, asked at once: Message-Id + rcpt and jobId + rcpt by `sent`
        (the send queued and delivered before the report), rcpt + orig (+ rcpt alone when orig is empty: the same key)
        by `in_window` (a delivery in the fallback window first), a Message-Id of a report without rcpt by
        `recipients` (its recipients delivered before the report)."""
        keyed: list[Key] = []
        times: list[float] = []
        keys: list[Key] = []
        spans: list[tuple[float, float]] = []
        for rcpt, orig, mid, job, t, cut in reports:
            keyed += (("m", mid_key(mid), rcpt), ("j", job, rcpt))  # memory folds the domain's case (`_MID`)
            times += (cut, cut)
            keys.append(("r", rcpt, orig))
            spans.append((t - self._window, cut))
        sent = self._recent.sent(keyed, times)
        hits = self._recent.in_window(keys, spans) if self._window > 0 else [None] * len(keys)
        alone = [i for i, (rcpt, _o, mid, _j, _t, _c) in enumerate(reports) if mid and not rcpt]
        soles = dict(zip(alone, self._recent.recipients([("m", mid_key(reports[i][2]), "") for i in alone],
                                                        [reports[i][5] for i in alone]), strict=True))
        return [Recent(sent[2 * i], sent[2 * i + 1], hits[i], soles.get(i)) for i in range(len(reports))]

    def _slices(self, conn: sqlite3.Connection) -> Slices:
        """The store's slices and generation filters, read again only when its SEARCH_SEQ moved (they change a
        few times a minute; reading them cost ~2.5 ms per batch at a full store)."""
        seq = store.search_seq(conn)
        if seq is None or seq != self._seen or self._slice_list is None:
            self._filters.refresh(conn)
            self._slice_list = read_slices(conn)
            self._seen = seq
        return self._slice_list

    def _fields(self, c: Columns, row: list[str], t: float, cut: float) -> Report:
        """(rcpt, orig, Message-Id, jobId, time, cut) of a report, normalised as `_delivery_keys` normalises deliveries
        (the Message-Id as written: memory keys it by `mid_key`, the store as its scheme says, RcptHasher.links). Its
        time and cut as the correlator's prepare has them (prepare.report_times): its timeLogged, or its arrivalDate
        where that is empty (`Columns.logged`), unless not believed (exporter.timeparse: MAX_FUTURE,
        EARLIEST_BELIEVED). Read from timeLogged alone, a complaint of a combined CSV file (its timeLogged empty) was
        looked up at the time it was read, not at its arrivalDate as its JSON twin and its timeline are."""
        def val(i: int) -> str:
            return row[i].strip() if i >= 0 else ""

        return norm_rcpt(val(c.rcpt)), norm_rcpt(val(c.orig)), norm_message_id(val(c.message_id)), val(c.jobId), t, cut

    def _first_steps(self, conn: sqlite3.Connection, pairs: list[tuple[Report, Recent]],
                     slices: Slices) -> dict[int, _First]:
        """The first step of the Message-Id + rcpt search of every report of the batch that memory did not answer,
        in one statement per ~_BULK_ROWS slices (a VALUES join, as linking probes): report index -> what its first
        step found. With the generation filters the first step usually holds every slice a report's keys may be
        in; one statement per report cost a release and retake of the GIL each, and the daemon's other threads
        made each retake wait (the batch's budget is wall time)."""
        out: dict[int, _First] = {}
        rows: list[int] = []
        plans: dict[int, tuple[_Step, bool]] = {}  # report -> (its first step, whether more steps follow)
        for i, ((rcpt, _orig, mid, _job, _t, cut), recent) in enumerate(pairs):
            if not (mid and rcpt) or recent.mid_rcpt is not None:
                continue
            mh, rh = self._hasher.links.message_hash(mid), self._hasher(rcpt)[0]
            steps = search_steps(slices, self._filters.ruled_out(mh, rh))
            plans[i] = (steps[0], len(steps) > 1)
            for v in steps[0].slices:
                rows += (i, v, mh, rh, cut)
            if len(rows) >= 5 * _BULK_ROWS:  # a statement per chunk of whole reports: a cut loses the rest only
                if not self._settle(conn, rows, plans, out):
                    return out
                rows, plans = [], {}
        if rows:
            self._settle(conn, rows, plans, out)
        return out

    def _settle(self, conn: sqlite3.Connection, rows: list[int | float], plans: dict[int, tuple[_Step, bool]],
                out: dict[int, _First]) -> bool:
        """One statement of `_first_steps` (rows: report, slice, mid_h, rcpt_h, report cut, flat): what it found for
        each of its reports into `out` (the latest send queued and delivered before the report); False when the
        budget ran out (before or inside it)."""
        if not self._room():
            return False
        self.seeks += len(rows) // 5
        values = ",".join(["(?,?,?,?,?)"] * (len(rows) // 5))
        sent = _sent_before("v.column5", "t.")
        sql = (f"SELECT v.column1, t.id, t.vmta, t.vmta_pool, t.isp, t.t_queued FROM (VALUES {values})"
               " AS v JOIN corr_timelines AS t INDEXED BY corr_tl_mid"
               f" ON t.qday = v.column2 AND t.mid_h = v.column3 AND t.rcpt_h = v.column4 WHERE 1{_HAS_VMTA}{sent}")
        found = self._fetch(conn, sql, rows, every_row=True)
        if found is None:
            return False  # the budget ran out inside it
        best: dict[int, Hit] = {}
        top: dict[int, int] = {}
        for i, tl, vmta, pool, isp, queued in found:
            hit = (tl, vmta or "", pool or "", isp or "", queued)
            if i not in best or _rank(hit) > _rank(best[i]):
                best[i] = hit
            top[i] = max(top.get(i, tl), tl)
        for i, (step, more) in plans.items():
            hit = best.get(i)
            if hit is not None and (top[i] >= step.low or not more or _settles(hit, step)):
                out[i] = _First(True, Delivery(*hit[1:4]), None)
            elif hit is None and not more:
                out[i] = _First(True, None, None)
            else:
                out[i] = _First(False, None, hit)
        return True

    def _memory(self, hit: Found) -> Delivery:
        """The answer of a delivery found in memory: its provider decided from its (rcpt domain, MX host)."""
        vmta, pool, _t, dom, host = hit
        isp = self._isp_memo.get((dom, host))
        if isp is None:
            isp = self._isp_memo[(dom, host)] = (self.isp_of(f"@{dom}" if dom else "", host) or ""
                                                 if self.isp_of is not None and (dom or host) else "")
        return Delivery(vmta, pool, isp)

    def _one(self, report: Report, recent: Recent, conn: sqlite3.Connection | None, slices: Slices,
             first: _First | None = None) -> Delivery | None:
        """Message-Id (+ rcpt; alone only without rcpt), then jobId + rcpt, then rcpt + orig in the window; each in
        memory (`recent`: what `_in_memory` found of this report's keys) first, then in the store's `slices`, minus
        the generations whose filter rules the search's keys out (the Message-Id hash, the recipient hash). `first`:
        what `_first_steps` found for its Message-Id + rcpt search (None: it did not search it). By Message-Id + rcpt
        or jobId + rcpt, only the latest send queued and delivered before the report (as linking joins it): by its
        `cut`, as every search of the report's send (in a window from `window` before its time up to its cut)."""
        rcpt, orig, mid, job, t, cut = report
        if first is not None and first.answer is not None:  # (only a report with both keys, not in memory, has one)
            return first.answer  # settled by the batch's statement, whatever budget is left
        rh = self._hasher(rcpt)[0] if rcpt else None
        if mid and rh is None:  # no recipient: nothing but its Message-Id names its delivery
            return self._only_recipient(mid, recent.sole, conn, slices, cut)
        if mid:
            hit = self._by_mid_rcpt(mid, rh, recent.mid_rcpt, conn, slices, first, cut)
            if hit is not None:
                return hit
        if job and rcpt:
            if recent.job_rcpt is not None:
                return self._memory(recent.job_rcpt)
            if conn is not None:
                hit = self._newest(conn, self._steps(slices, rh), "corr_tl_job", "job_h=? AND rcpt_h=?",
                                   (self._hasher.links.job_hash(job), rh), before=cut)
                if hit is not None:
                    return hit
        if rcpt and self._window > 0:  # `fallback_window: 0`: never on rcpt + orig
            lo = t - self._window
            if recent.rcpt_orig is not None and lo <= recent.rcpt_orig[2] <= cut:
                return self._memory(recent.rcpt_orig)
            if conn is not None:
                stored = key_without_recipient(orig, rcpt) if self._hasher.hashed else orig  # as prepare stores it
                return self._latest_in_window(conn, self._steps(slices, rh), rh, lo, cut, orig, stored)
        return None

    def _steps(self, slices: Slices, *keys: int | None) -> list[_Step]:
        """The steps of a search of these keys: without the generations whose filter rules them out."""
        return search_steps(slices, self._filters.ruled_out(*keys))

    def _by_mid_rcpt(self, mid: str, rh: int | None, hit: Found | None, conn: sqlite3.Connection | None,
                     slices: Slices, first: _First | None, t: float) -> Delivery | None:
        """The delivery of (Message-Id, rcpt) a report of time `t` is about: memory's `hit`, else the store from
        the step `first` did not settle. Not the Message-Id alone: the report names its recipient, whose delivery is
        not known (yet); another recipient's is another VMTA's, and linking does not join the report to it either."""
        if hit is not None:
            return self._memory(hit)
        if conn is None:
            return None
        mh = self._hasher.links.message_hash(mid)
        steps = self._steps(slices, mh, rh)
        if first is None:
            return self._newest(conn, steps, "corr_tl_mid", "mid_h=? AND rcpt_h=?", (mh, rh), before=t)
        if not first.settled:  # on from the second step
            return self._newest(conn, steps[1:], "corr_tl_mid", "mid_h=? AND rcpt_h=?", (mh, rh), best=first.best,
                                before=t)
        return None

    def _only_recipient(self, mid: str, sole: Sole | None, conn: sqlite3.Connection | None,
                        slices: Slices, t: float) -> Delivery | None:
        """The delivery of the one recipient of a Message-Id (a report without rcpt: an anonymised FBL) delivered or
        bounced at or before the report's cut `t` (its time, ARRIVAL_SLACK later when that is its arrivalDate), memory's
        and the store's recipients counted together; None when it has none, or two or more (as linking, which joins
        such a report to that only recipient timeline of its Message-Id: a recipient with deferrals only, or delivered
        after the report's cut, is not counted, so a backfill and a live reading agree). Without the store (its budget
        spent, not readable), what memory holds; a search cut by the budget counts what it found."""
        known = {self._hasher(who)[0] for who in sole.rcpts} if sole is not None else set()
        if len(known) > 1 or conn is None:
            return self._memory(sole.newest) if sole is not None and len(known) == 1 else None
        mh = self._hasher.links.message_hash(mid)
        steps = self._steps(slices, mh)
        recipients = known | self._recipients(conn, steps, mh, known, t)
        if len(recipients) != 1:
            return None
        if sole is not None:
            return self._memory(sole.newest)
        return self._newest(conn, steps, "corr_tl_mid", "mid_h=? AND rcpt_h=?", (mh, *recipients), before=t)

    def _recipients(self, conn: sqlite3.Connection, steps: list[_Step], mh: int, known: set[int],
                    t: float) -> set[int]:
        """Recipient hashes of this Message-Id's timelines delivered or bounced at or before `t`,
        searched step by step until a second one (`known`: those memory holds) shows that it names no one delivery.
        Two distinct ones are read, not all: a mailing's Message-Id names every recipient's timeline (grouping them
        all cost seconds per report)."""
        found: set[int] = set()
        for step in self._within_budget(steps):
            marks = ",".join("?" * len(step.slices))
            rows = self._fetch(conn, (
                f"SELECT DISTINCT rcpt_h FROM corr_timelines INDEXED BY corr_tl_mid"
                f" WHERE qday IN ({marks}) AND mid_h=? AND rcpt_h IS NOT NULL{_HAS_VMTA}{_sent_before('?')} LIMIT 2"),
                (*step.slices, mh, t, t), every_row=True)
            if rows is None:  # cut by the budget
                break
            found.update(rh for (rh,) in rows)
            if len(known | found) > 1:
                break
        return found

    def _latest_in_window(self, conn: sqlite3.Connection, steps: list[_Step], rh: int | None, lo: float, t: float,
                          orig: str, stored: str) -> Delivery | None:
        """(vmta, pool, isp) of the timeline of this rcpt (+ orig) begun last in [lo, t], one delivered (or bounced)
        before `t` first, as linking's fallback joins (else one deferred only: the VMTA that would deliver it): by t0,
        not by id, so every step is searched (the budget may cut it: the latest found so far, if any). The sender is
        compared as logged (`orig`) and as stored (`stored`: without the recipient's address when recipients are
        hashed), bare or in angle brackets (a sender kept them before 2026-12-08, `linking._fallback` alike)."""
        best: tuple[int, float, str, str, str] | None = None
        for step in self._within_budget(steps):
            marks = ",".join("?" * len(step.slices))
            row = self._fetch(conn, (
                f"SELECT coalesce(flags & {_DONE_FLAGS} != 0 AND t_done <= ?, 0) AS sent, t0, vmta, vmta_pool, isp"
                f" FROM corr_timelines INDEXED BY corr_tl_rcpt WHERE qday IN ({marks})"
                f" AND rcpt_h=? AND t0 BETWEEN ? AND ? AND (? = '' OR orig IN (?, ?, '<' || ? || '>', '<' || ? || '>'))"
                f"{_HAS_VMTA} ORDER BY sent DESC, t0 DESC LIMIT 1"),
                (t, *step.slices, rh, lo, t, orig, orig, stored, orig, stored))
            if self._cut:
                break
            if row is not None and (best is None or (row[0], row[1]) > (best[0], best[1])):
                best = row
        return None if best is None else Delivery(best[2] or "", best[3] or "", best[4] or "")

    def _within_budget(self, steps: list[_Step]) -> Iterator[_Step]:
        """The steps of a search while the batch's budget lasts, their seeks counted. A search cut before its end
        answers with what it found so far, if anything; a report left without an answer by a cut counts as skipped."""
        for step in steps:
            if not step.slices:
                continue
            if not self._room():
                self._cut = True
                return
            self.seeks += len(step.slices)
            yield step

    def _fetch(self, conn: sqlite3.Connection, sql: str, params: tuple | list, every_row: bool = False) -> Any:
        """The first row of one step's statement (`every_row`: all its rows), or None with the search cut when the
        budget's clock interrupted it (the progress handler, see PROGRESS_OPS)."""
        try:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if every_row else cursor.fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_INTERRUPT or self._until is None:
                raise
            self._cut = True
            return None

    def _budget(self, reports: int, resume: bool) -> tuple[int, float] | None:
        """(seeks, timer value) at which the lookups of `reports` more reports stop; a resumed batch keeps its seek
        limit and its deadline moves by TIME_PER_REPORT_S per report added."""
        if self.seek_budget is None:
            return None
        if resume and self._until is not None:
            return self._until[0] + SEEKS_PER_REPORT * reports, self._until[1] + TIME_PER_REPORT_S * reports
        return (self.seeks + self.seek_budget + SEEKS_PER_REPORT * reports,
                self.timer() + TIME_BUDGET_S + TIME_PER_REPORT_S * reports)

    def _room(self) -> bool:
        """The batch under way may still search the store (its budget of seeks and time is not spent)."""
        until = self._until
        if until is None:
            return True
        return self.seeks < until[0] and self.timer() < until[1]

    def _newest(self, conn: sqlite3.Connection, steps: list[_Step], index: str, where: str, params: tuple,
                best: Hit | None = None, before: float | None = None) -> Delivery | None:
        """(vmta, pool, isp) of the newest timeline (highest id) matching `where`, searched step by step, newest
        first; with `before` (a report's time), of the latest send (`_rank`) queued and delivered at or before it,
        found once no later step may hold a newer timeline (`_Step.low`) or a send queued later (`_settles`).
        The first step's undated slices and plain days may hold an older timeline than a later step: a hit there below
        the step's dated ids lets the search go on. `best`: the latest hit of the steps before `steps`."""
        sent, order = ("", " ORDER BY id DESC LIMIT 1") if before is None else (_sent_before("?"), "")
        newest = -1 if best is None else best[0]
        for step in self._within_budget(steps):
            marks = ",".join("?" * len(step.slices))
            rows = self._fetch(conn, (
                f"SELECT id, vmta, vmta_pool, isp, t_queued FROM corr_timelines INDEXED BY {index}"
                f" WHERE qday IN ({marks}) AND {where}{_HAS_VMTA}{sent}{order}"),
                (*step.slices, *params, *(() if before is None else (before, before))), every_row=True)
            if self._cut:
                break
            for tl, vmta, pool, isp, queued in rows:
                hit = (tl, vmta or "", pool or "", isp or "", queued if before is not None else None)
                if best is None or _rank(hit) > _rank(best):
                    best = hit
                newest = max(newest, tl)
            if best is not None and (newest >= step.low or before is not None and _settles(best, step)):
                break
        return None if best is None else Delivery(*best[1:4])
