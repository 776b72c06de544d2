"""A fixed-size Bloom filter of the link keys stored in corr_timelines, so linking probes only keys that may exist.

The link cache (linking.py) is bounded, and once it has been dropped a miss could be a timeline
the cache forgot, so every miss was probed with SQL. In a backfill almost every miss is a new
message. This filter remembers every bare link key (Message-Id or jobId hash XOR recipient hash)
ever written, in 32 MiB whatever the input size: "not in the filter" proves "not in the store",
so only possible hits are probed. It may only ever hold too much (a rolled-back write, a pruned
timeline: a useless probe), never too little, so it stays valid across rollbacks and pruning (once
pruning has deleted as many timelines as the store holds, ingest.py rebuilds it from the store);
it is trusted only when built from an empty store or loaded from the store (see ingest.py), which after
a restart takes a step per write on a large store. Meanwhile a write may give a timeline already read
a key (an UPDATE, a merge): that key is named by the write's own records, which are added as well.
Vectorised in polars: a batch's keys are added or tested in a few column operations.
"""

from __future__ import annotations

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
