"""A fixed-size Bloom filter of the link keys stored in corr_timelines, so linking probes only keys that may exist.

The link cache (linking.py) is bounded, and once it has been dropped a miss could be a timeline
the cache forgot, so every miss was probed with SQL. In a backfill almost every miss is a new
message. This filter remembers every bare link key (Message-Id or jobId hash XOR recipient hash)
ever written, in 32 MiB whatever the input size: "not in the filter" proves "not in the store",
so only possible hits are probed. It may only ever hold too much (a rolled-back write, a pruned
timeline: a useless probe), never too little, so it stays valid across rollbacks and pruning (once
pruning has deleted as many timelines as the store holds, `FilterUpkeep` rebuilds it from the store);
it is trusted only when built from an empty store or loaded from the store (`FilterUpkeep`), which after
a restart takes a step per write on a large store. Meanwhile a write may give a timeline already read
a key (an UPDATE, a merge): that key is named by the write's own records, which are added as well.
Vectorised in polars: a batch's keys are added or tested in a few column operations.
"""

from __future__ import annotations

import logging
import sqlite3

import polars as pl

_LOG2_BITS = 28
"""256 Mi bits = 32 MiB (a bit-packed Boolean series), 2 bits per key: ~0.5% false positives at 10 M keys
(5 M timelines), ~2% at 20 M, ~7% at 40 M. A false positive costs one index seek per generation of its day
(linking.py), and those grow with the store: with 8 MiB (~7% at 10 M keys) a live correlator at 20k
records/s fell behind after ~3 minutes (bench/README.md, seventh round)."""
_MASK = (1 << _LOG2_BITS) - 1
_LOAD_CHUNK = 50_000
_LOAD_SCHEMA = {"id": pl.Int64, "m": pl.Int64, "j": pl.Int64, "r": pl.Int64}
FILTER_LOAD_LIMIT = 2_000_000
"""Timelines whose keys the first write after a start reads into the key filter (~2 µs each)."""
FILTER_LOAD_STEP = 200_000
"""Then this many per write (~0.4 s), until the filter covers the whole store (meanwhile every miss is probed)."""
FILTER_REBUILD_MIN_DEAD = 2_500_000
"""Timelines pruned since the key filter was built, at least, before it is rebuilt without their keys. Below ~10 M
keys in all, its false positives stay under ~0.5% (the filter's size, above): not worth reading the store again."""
FILTER_REBUILD_STEP = 50_000
"""Stored timelines a rebuild reads per write (~0.1 s): the filter in use serves until the new one is complete."""

log = logging.getLogger(__name__)


def _positions(keys: pl.Series) -> tuple[pl.Series, pl.Series]:
    """The two bit positions of each key, taken from independent bits of the (already random) hash."""
    k = keys.cast(pl.Int64).reinterpret(signed=False)
    return (k & _MASK).cast(pl.Int64), ((k // (1 << 32)) & _MASK).cast(pl.Int64)


class KeyFilter:
    """Bloom filter of 64-bit link keys; `valid` says whether it covers every key in the store."""

    def __init__(self) -> None:
        self._bits = pl.repeat(False, 1 << _LOG2_BITS, dtype=pl.Boolean, eager=True)
        self.valid = False
        self._loaded_to = 0
        """Highest timeline id whose keys `load` has added."""
        self._load_top: int | None = None
        """Highest timeline id `load` must still reach (None: not loading)."""

    def add(self, keys: pl.Series) -> None:
        """Remember these keys (nulls ignored)."""
        keys = keys.drop_nulls()
        if len(keys):
            for pos in _positions(keys):
                self._bits = self._bits.scatter(pos, True)

    def may_contain(self, keys: pl.Series) -> pl.Series:
        """Per key: False when it was certainly never added (null -> False)."""
        p1, p2 = _positions(keys.fill_null(0))
        return self._bits.gather(p1) & self._bits.gather(p2) & keys.is_not_null()

    @property
    def loading(self) -> bool:
        """Stored timelines remain whose keys `load` has not read yet."""
        return self._load_top is not None

    def begin_load(self, top: int) -> None:
        """The store holds timelines up to id `top` (a restart): not valid until `load` has read all their keys."""
        self.valid = False
        self._loaded_to, self._load_top = 0, top

    def load(self, conn: sqlite3.Connection, rows: int) -> bool:
        """Add the keys of up to `rows` more stored timelines, in id order (a rowid range: a few µs each);
        valid once every timeline up to `top` is in. Called once at start with a large step, then a step per
        write, so a store of any size is covered after a while instead of never (keys written meanwhile are
        added by the writes themselves)."""
        if self._load_top is None:
            return self.valid
        cursor = conn.execute(
            "SELECT id, mid_h, job_h, rcpt_h FROM corr_timelines WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (self._loaded_to, self._load_top, rows))
        read = 0
        while chunk := cursor.fetchmany(_LOAD_CHUNK):  # a chunk at a time: memory stays flat
            frame = pl.DataFrame(chunk, schema=_LOAD_SCHEMA, orient="row")
            self.add(frame.select(pl.col("m").xor(pl.col("r"))).to_series())  # null (no key) -> ignored
            self.add(frame.select(pl.col("j").xor(pl.col("r"))).to_series())
            self._loaded_to = chunk[-1][0]
            read += len(chunk)
        if read < rows or self._loaded_to >= self._load_top:
            self._load_top = None
            self.valid = True
        return self.valid


class FilterUpkeep:
    """Mixin of Ingestor: keeps its key filter in step with the store, a bounded step per write."""

    _filter: KeyFilter
    _next_filter: KeyFilter | None
    _dead: int
    _synced: bool

    def _keep_filter(self, conn: sqlite3.Connection, top: int) -> None:
        """At the first write of a process, trust the filter at once (an empty store) or start loading it from the
        store (a restart: FILTER_LOAD_LIMIT timelines now); then a step per write until it is loaded, and once it
        is, see whether pruning has made it worth rebuilding. `top`: the highest timeline id stored."""
        if not self._synced:
            self._synced = True
            if top == 0:
                self._filter.valid = True
            else:  # a restart: the filter must hold every stored key before it can rule a probe out
                self._filter.begin_load(top)
                self._filter.load(conn, FILTER_LOAD_LIMIT)
        elif self._filter.loading:
            self._filter.load(conn, FILTER_LOAD_STEP)
        else:
            self._rebuild_filter(conn, top)

    def _rebuild_filter(self, conn: sqlite3.Connection, top: int) -> None:
        """Keys are never taken out of the filter, so under pruning it fills with the keys of deleted timelines:
        at 20k records/s half its bits are set after ~45 min (a quarter of all misses probed), nearly all after
        a few hours, and with every miss probed the correlator falls behind (bench/README.md, ninth round).
        Once as many timelines were pruned as the store holds now (ids grow: min..max bounds the count), a new
        filter is loaded from the store a step per write, while the one in use serves and both take every key
        written; then it replaces it."""
        nxt = self._next_filter
        if nxt is None:
            if self._dead < FILTER_REBUILD_MIN_DEAD:
                return
            low = conn.execute("SELECT min(id) FROM corr_timelines").fetchone()[0] or 0
            if self._dead < top - low + 1:
                return
            nxt = self._next_filter = KeyFilter()
            nxt.begin_load(top)
            self._dead = 0  # timelines pruned from now on count against the new filter
        if nxt.load(conn, FILTER_REBUILD_STEP):
            self._filter, self._next_filter = nxt, None
            log.info("correlator key filter rebuilt from the store: the keys of pruned timelines are out")
