"""One Bloom filter per finished generation of timelines, so a search without a timeQueued seeks only the
generations that may hold its key.

A report (f, rb, rs) carries no timeQueued, so its delivery may be in any generation of the store: ~480 of
them in a full 20 GiB store, one index seek each, and at 20k records/s a complaint 10 minutes late is ~180
generations deep. Searched newest first within a budget, most such complaints were counted with vmta
`unknown` and linking them held the correlator back (bench/README.md, twelfth round). Each generation's
filter holds the Message-Id hash and the recipient hash of its timelines (2 keys, ~8 bits each, ~5 hash
positions: ~2% false positives), so a search seeks the few generations that may hold its key.

The writer (the correlator's ingestor) builds a generation's filter from the store once the generation is
finished (no id of it is given out again) and stores it in `corr_gen_filters`, in its write transaction; a
key added later to a timeline of a finished generation (a Message-Id learnt later, a merge) is added to that
generation's filter in the same transaction. So a reader's snapshot holds filters that cover the timelines
it sees, and the daemon's attribution (another process) reads them from the store. A filter may only ever
hold too much (pruned timelines, rolled-back keys: a useless seek), never too little. Generations without a
filter (the newest, being filled; or not built yet after an upgrade) are always searched.
"""

from __future__ import annotations

import array
import sqlite3
import sys
from collections.abc import Iterable

import polars as pl

from correlator import store

HASHES = 5
"""Bit positions per key: ~2% false positives at 8 bits per key."""
BITS_PER_TIMELINE = 16
"""Two keys per timeline (Message-Id hash, recipient hash), 8 bits each: 128 KiB per generation of 2**16
timelines, ~60 MiB for the ~480 generations of a full 20 GiB store."""
MIN_BYTES = 256
"""Smallest filter (tests use tiny generations): a filter's size is a power of two, read from its blob."""
BUILD_PER_WRITE = 4
"""Filters of older finished generations a write builds at most, besides those it finished itself (each: one range
read of up to 2**16 timelines, ~0.1 s): a store written before filters gets them a few per write, newest first,
while the rest are searched as before."""
_BUILD_CHUNK = 8_192
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def filter_bytes() -> int:
    """Size of a new generation's filter (GEN_BITS is read at call time)."""
    return max(MIN_BYTES, (BITS_PER_TIMELINE << store.GEN_BITS) // 8)


def probes(key: int, nbytes: int) -> tuple[tuple[int, int], ...]:
    """(byte, mask) of each of the key's HASHES bit positions in a filter of `nbytes` (double hashing over the two
    halves of the key, which is already a uniform hash); `_positions` computes the same column-wise."""
    k = key & _U64
    h1, h2 = k & _U32, (k >> 32) | 1
    mask = nbytes * 8 - 1
    out = []
    for i in range(HASHES):
        pos = (h1 + i * h2) & mask
        out.append((pos >> 3, 1 << (pos & 7)))
    return tuple(out)


def _positions(keys: pl.Series, nbytes: int) -> pl.DataFrame:
    """(byte, bit) of every key's bit positions, as `probes` computes them."""
    k = keys.drop_nulls().cast(pl.Int64).reinterpret(signed=False).alias("k")
    frame = pl.DataFrame(k).select((pl.col("k") & _U32).alias("h1"), ((pl.col("k") // (1 << 32)) | 1).alias("h2"))
    mask = nbytes * 8 - 1
    pos = pl.concat([frame.select(((pl.col("h1") + i * pl.col("h2")) & mask).alias("p")) for i in range(HASHES)])
    return pos.select((pl.col("p") // 8).cast(pl.Int64).alias("byte"),
                      pl.lit(2, dtype=pl.Int64).pow(pl.col("p") & 7).cast(pl.UInt8).alias("bit"))


def build(keys: pl.Series, nbytes: int) -> bytes:
    """A filter of `nbytes` holding these keys (nulls ignored), column-wise: the reference that `build_from` (what the
    writer uses) and `add` are tested against."""
    return _packed(_positions(keys, nbytes), nbytes)


def _packed(positions: pl.DataFrame, nbytes: int) -> bytes:
    bits = positions.group_by("byte").agg(pl.col("bit").bitwise_or())
    out = pl.zeros(nbytes, dtype=pl.UInt8, eager=True).scatter(bits.get_column("byte"), bits.get_column("bit"))
    return bytes(out.to_list())


def build_from(cursor: sqlite3.Cursor, nbytes: int) -> bytes:
    """A filter of `nbytes` holding every key of the cursor's rows (any number of integer columns, nulls ignored),
    column-wise a chunk of rows at a time: each chunk's bit positions are set in a map of one byte per bit, packed
    at the end. A generation of 65,536 timelines takes ~0.1 s of CPU read from the store (~0.06 s of it SQLite
    handing over the rows); the Python loop over each key's positions it replaces took ~0.25 s, 5.8% of the
    correlator's time at 20k records/s (bench/README.md, sixteenth round). The peak is one chunk's positions
    (~3 MB) and the map."""
    nbits = nbytes * 8
    marked = pl.zeros(nbits, dtype=pl.UInt8, eager=True)
    while chunk := cursor.fetchmany(_BUILD_CHUNK * 4):
        keys = pl.Series("k", [key for row in chunk for key in row], dtype=pl.Int64)
        marked.scatter(_bit_positions(keys, nbits), 1)
    return _pack(marked)


def _bit_positions(keys: pl.Series, nbits: int) -> pl.Series:
    """Every key's HASHES bit positions, as `probes` computes them (nulls dropped)."""
    k = keys.drop_nulls().reinterpret(signed=False)
    h1, h2 = k & _U32, (k // (1 << 32)) | 1
    mask = nbits - 1
    return pl.concat([(h1 + i * h2) & mask for i in range(HASHES)])


def _pack(marked: pl.Series) -> bytes:
    """One byte per bit (0 or 1) -> the filter's bytes (bit j of byte i is position 8 * i + j), via 64-bit words."""
    octets = sum(marked.gather_every(8, offset=j).cast(pl.UInt64) * (1 << j) for j in range(8))
    words = sum(octets.gather_every(8, offset=j) * (1 << (8 * j)) for j in range(8))
    packed = array.array("Q", words.to_list())
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def add(bits: bytearray, keys: Iterable[int]) -> bool:
    """Set these keys' bits (a few keys: the later additions of one write); True if a bit changed."""
    changed = False
    nbytes = len(bits)
    for key in keys:
        for i, m in probes(key, nbytes):
            if not bits[i] & m:
                bits[i] |= m
                changed = True
    return changed


def may_hold(bits: bytes | bytearray, marks: tuple[tuple[int, int], ...]) -> bool:
    return all(bits[i] & m for i, m in marks)


def keep(slices: list[int], ruled_out: set[int]) -> list[int]:
    """The slices minus those of dated generations in `ruled_out` (undated slices are numbered apart: kept)."""
    if not ruled_out:
        return slices
    gen = store.dated_generation  # 0 for an undated slice: never ruled out
    return [v for v in slices if gen(v) not in ruled_out]


class GenerationFilters:
    """The filters of a store's finished generations, as of one snapshot: gen -> bits (readers and the writer)."""

    def __init__(self) -> None:
        self.bits: dict[int, bytes | bytearray] = {}
        """gen -> its filter; changed only through `_put` and `clear` (they drop `_groups`)."""
        self._versions: dict[int, int] = {}
        self._groups: dict[int, list[tuple[int, bytes | bytearray]]] | None = None
        """The filters by size (one, unless GEN_BITS changed), for `_ruled_out`; None: to be rebuilt."""

    def clear(self) -> None:
        self.bits.clear()
        self._versions.clear()
        self._groups = None

    def _put(self, gen: int, bits: bytes | bytearray, version: int) -> None:
        self.bits[gen], self._versions[gen] = bits, version
        self._groups = None

    def refresh(self, conn: sqlite3.Connection) -> None:
        """Take the filters added, rewritten or dropped since the last refresh (one small read when none changed;
        no table yet: an older writer, no filter)."""
        try:
            stored = dict(conn.execute("SELECT gen, version FROM corr_gen_filters").fetchall())
        except sqlite3.OperationalError:
            stored = {}
        for gen in [g for g in self._versions if g not in stored]:
            del self._versions[gen], self.bits[gen]
            self._groups = None
        changed = [g for g, v in stored.items() if self._versions.get(g) != v]
        for i in range(0, len(changed), 500):
            chunk = changed[i : i + 500]
            rows = conn.execute(f"SELECT gen, version, bits FROM corr_gen_filters WHERE gen IN"
                                f" ({','.join('?' * len(chunk))})", chunk)
            for gen, version, bits in rows:
                self._put(gen, bytes(bits), version)

    def ruled_out(self, *keys: int | None) -> set[int]:
        """Generations whose filter proves that a timeline holding all these keys (None: not asked) is not there.

        One pass over the filters of each size, the probes unrolled (~0.3 us per generation, ~0.15 ms at the ~480
        of a full store, where a loop over the probes took 0.7 ms): a key of two ruled out at its first probes
        costs about what one does."""
        wanted = [k for k in keys if k is not None]
        if not wanted:
            return set()
        groups = self._groups
        if groups is None:
            groups = self._groups = {}
            for gen, bits in self.bits.items():
                groups.setdefault(len(bits), []).append((gen, bits))
        out: set[int] = set()
        for size, members in groups.items():
            (i0, m0), (i1, m1), (i2, m2), (i3, m3), (i4, m4) = probes(wanted[0], size)
            if len(wanted) == 1:
                out.update([g for g, b in members
                            if not (b[i0] & m0 and b[i1] & m1 and b[i2] & m2 and b[i3] & m3 and b[i4] & m4)])
                continue
            (j0, n0), (j1, n1), (j2, n2), (j3, n3), (j4, n4) = probes(wanted[1], size)
            out.update([g for g, b in members
                        if not (b[i0] & m0 and b[j0] & n0 and b[i1] & m1 and b[j1] & n1 and b[i2] & m2
                                and b[j2] & n2 and b[i3] & m3 and b[j3] & n3 and b[i4] & m4 and b[j4] & n4)])
        for key in wanted[2:]:
            out |= self.ruled_out(key)
        return out


class FilterWriter(GenerationFilters):
    """The writer's filters: built as generations finish, extended with keys added to their timelines later."""

    def __init__(self) -> None:
        super().__init__()
        self._loaded = False
        self._dirty: set[int] = set()
        self.built = 0
        """Filters built from the store (for tests and the log)."""

    def forget(self) -> None:
        """A rollback or pruning: read the stored filters again at the start of the next write (until then, none)."""
        self._loaded = False
        self.clear()

    def load(self, conn: sqlite3.Connection) -> None:
        """At the start of a write: the stored filters, unless they are in memory already."""
        if not self._loaded:
            self.clear()
            self.refresh(conn)
            for gen, bits in list(self.bits.items()):
                self._put(gen, bytearray(bits), self._versions[gen])
            self._loaded = True

    def finish_write(self, conn: sqlite3.Connection, first_tl: int, next_tl: int, keyed: Iterable[int],
                     slices: Iterable[int]) -> bool:
        """In the write's transaction: add the keys of `keyed` timelines (created or given a key by the write) that
        belong to finished generations with a filter, then build the missing filters of finished generations
        (`first_tl`, `next_tl`: the writer's next timeline id when the write began and now). True if a stored
        filter changed."""
        self.load(conn)
        generation_of = store.generation_of
        late = sorted({tl for tl in keyed if generation_of(tl) in self.bits})
        for i in range(0, len(late), 500):
            chunk = late[i : i + 500]
            rows = conn.execute(f"SELECT id, mid_h, rcpt_h FROM corr_timelines WHERE id IN"
                                f" ({','.join('?' * len(chunk))})", chunk)
            for tl, mid_h, rcpt_h in rows:
                gen = generation_of(tl)
                bits = self.bits[gen]
                assert isinstance(bits, bytearray)
                if add(bits, (k for k in (mid_h, rcpt_h) if k is not None)):
                    self._dirty.add(gen)
        changed = bool(self._dirty)
        for gen in sorted(self._dirty):
            conn.execute("UPDATE corr_gen_filters SET version = version + 1, bits = ? WHERE gen = ?",
                         (bytes(self.bits[gen]), gen))
        self._dirty.clear()
        return self._build_missing(conn, generation_of(first_tl), generation_of(next_tl), slices) or changed

    def _build_missing(self, conn: sqlite3.Connection, since: int, open_gen: int, slices: Iterable[int]) -> bool:
        """Filters of the dated generations of `slices` below `open_gen` (finished: the writer's next id is past
        them) that have none, newest first: every one from `since` (the write finished them), and BUILD_PER_WRITE
        older ones at most."""
        gens = {g for v in slices if (g := store.dated_generation(v))}
        missing = sorted((g for g in gens if g < open_gen and g not in self.bits), reverse=True)
        fresh = [g for g in missing if g >= since]  # finished by this write: all of them (a backfill finishes many)
        todo = fresh + [g for g in missing if g < since][:BUILD_PER_WRITE]
        nbytes = filter_bytes()
        for gen in todo:
            lo, hi = (gen - 1) << store.GEN_BITS, gen << store.GEN_BITS
            bits = build_from(conn.execute("SELECT mid_h, rcpt_h FROM corr_timelines WHERE id >= ? AND id < ?",
                                           (lo, hi)), nbytes)
            conn.execute("INSERT OR REPLACE INTO corr_gen_filters VALUES (?, coalesce((SELECT version + 1 FROM"
                         " corr_gen_filters WHERE gen = ?), 1), ?)", (gen, gen, bits))
            self._put(gen, bytearray(bits), -1)  # only readers compare versions
            self.built += 1
        return bool(todo)
