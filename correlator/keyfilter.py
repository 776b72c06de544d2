"""A fixed-size Bloom filter of the link keys stored in corr_timelines, so linking probes only keys that may exist.

The link cache (linking.py) is bounded, and once it has been dropped a miss could be a timeline
the cache forgot, so every miss was probed with SQL. In a backfill almost every miss is a new
message. This filter remembers every bare link key (Message-Id or jobId hash XOR recipient hash)
ever written, in 32 MiB whatever the input size: "not in the filter" proves "not in the store",
so only possible hits are probed. It may only ever hold too much (a rolled-back write, a pruned
timeline: a useless probe), never too little, so it stays valid across rollbacks and pruning;
it is trusted only when built from an empty store or loaded from the store (see ingest.py).
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


def _positions(keys: pl.Series) -> tuple[pl.Series, pl.Series]:
    """The two bit positions of each key, taken from independent bits of the (already random) hash."""
    k = keys.cast(pl.Int64).reinterpret(signed=False)
    return (k & _MASK).cast(pl.Int64), ((k // (1 << 32)) & _MASK).cast(pl.Int64)


class KeyFilter:
    """Bloom filter of 64-bit link keys; `valid` says whether it covers every key in the store."""

    def __init__(self) -> None:
        self._bits = pl.repeat(False, 1 << _LOG2_BITS, dtype=pl.Boolean, eager=True)
        self.valid = False

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

    def load(self, conn: sqlite3.Connection, limit: int) -> bool:
        """Fill from the store's timelines (at most `limit` of them); valid if it could."""
        if conn.execute("SELECT count(*) > ? FROM corr_timelines", (limit,)).fetchone()[0]:
            return False
        cursor = conn.execute(
            "SELECT mid_h, job_h, rcpt_h FROM corr_timelines WHERE rcpt_h IS NOT NULL"
            " AND (mid_h IS NOT NULL OR job_h IS NOT NULL)")
        while rows := cursor.fetchmany(_LOAD_CHUNK):  # a chunk at a time: start-up memory stays flat
            frame = pl.DataFrame(rows, schema={"m": pl.Int64, "j": pl.Int64, "r": pl.Int64}, orient="row")
            self.add(frame.select(pl.col("m").xor(pl.col("r"))).to_series())
            self.add(frame.select(pl.col("j").xor(pl.col("r"))).to_series())
        self.valid = True
        return True
