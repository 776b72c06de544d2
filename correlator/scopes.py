"""Where the timelines of each timeQueued bucket were created (`corr_scopes`): read as needed, a bounded part kept.

The table grows with the span of timeQueued a store holds (a row per SCOPE_BUCKET per slice: a year of steady
traffic is ~3M rows). Held whole in a dict it cost ~450 bytes a row (a year's store: over a gigabyte), and every
drop of the link caches (rollback, pruning, cache limit) read it whole again. A probe needs only the buckets of the
keys it seeks: those are read in one query per chunk, and the buckets read or written last stay cached, up to LIMIT.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import islice

LIMIT = 50_000
"""Buckets kept (~5.8 days of 10 s buckets, a few MB): past it the oldest half cached is dropped."""
_CHUNK = 500
"""Buckets per read (SQLite's host parameter limit is 32,766; a statement of 500 stays cheap to prepare)."""


class ScopeCache:
    """Bucket -> the slices where timelines queued in it were created, read from the store on a miss."""

    def __init__(self) -> None:
        self._slices: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._slices)

    def clear(self) -> None:
        """Forget everything (a rolled-back write may have added rows that are not stored)."""
        self._slices.clear()

    def read(self, conn: sqlite3.Connection, buckets: Iterable[int]) -> dict[int, list[int]]:
        """The slices of each of these buckets (empty: none created there), cached ones from memory."""
        cached, wanted = self._slices, set(buckets)  # (an iterable read once)
        found = {b: cached[b] for b in wanted if b in cached}
        missing = [b for b in wanted if b not in found]
        if missing:
            self._make_room(len(missing))
            read: dict[int, list[int]] = {b: [] for b in missing}
            for start in range(0, len(missing), _CHUNK):
                part = missing[start:start + _CHUNK]
                marks = ",".join("?" * len(part))
                for bucket, value in conn.execute(
                        f"SELECT bucket, slice FROM corr_scopes WHERE bucket IN ({marks})", part):
                    read[bucket].append(value)
            cached.update(read)
            found.update(read)
        return found

    def add(self, conn: sqlite3.Connection, bucket: int, value: int) -> None:
        """Timelines queued in `bucket` are created in slice `value` too (probes of the bucket will seek it)."""
        slices = self._slices.get(bucket)
        if slices is None:
            slices = self.read(conn, (bucket,))[bucket]
        if value not in slices:
            slices.append(value)
            conn.execute("INSERT OR IGNORE INTO corr_scopes VALUES (?, ?)", (bucket, value))

    def _make_room(self, coming: int) -> None:
        """Drop the oldest half of the cache when `coming` more buckets would take it past LIMIT."""
        cached = self._slices
        if len(cached) + coming <= LIMIT:
            return
        drop = max(len(cached) // 2, len(cached) + coming - LIMIT)
        for bucket in list(islice(cached, drop)):  # a dict iterates in insertion order: the oldest first
            del cached[bucket]
