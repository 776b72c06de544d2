"""Records -> timelines, inside the caller's transaction: the stages and their order.

A timeline is one recipient of one message. A record joins a timeline by, in order:
1. Message-Id + rcpt (any `header_Message-Id` column),
2. jobId + rcpt; when jobId is empty, d/b/t/r records use sender + timeQueued + rcpt instead
   (timeQueued is the same on every attempt of one message),
3. for report records (f, rb, rs) that matched neither: Message-Id alone when the message has
   exactly one recipient timeline and the report has no rcpt, else rcpt + orig with a timeline
   that began at most `fallback_window` before the report.
A report matched by key 1 or 2 joins the latest send of that key queued and delivered before it
(never a resend queued after it, nor a send with deferrals only); a record whose Message-Id is set
never joins a timeline holding another one (linking.py; docs/api.md states the rules whole).
A record carrying two keys that point at two timelines merges them (lower id wins), so the result
does not depend on the order files are read. tq records are queue-level and are stored apart.
Keys 1 and 2 of a d/b/t/r record join only a timeline of the same timeQueued (its scope: every
attempt of one delivery carries it) or an undated one (started by a record without timeQueued):
the same ids queued at another time are another message; an undated timeline started by a report
is joined only by the delivery of a send queued and delivered before that report. Timelines stored
before scopes (schema version 1) keep the rule they were written under: any timeQueued of their day.

Writes are appends plus one summary UPDATE per touched timeline per group, all via executemany.
Links found or created are kept in a bounded int-keyed cache; a miss is probed (one VALUES join
per group) only if the key filter (keyfilter.py: every key ever stored, 32 MiB) says the store may
hold it, so a backfill past the cache limit does not probe its new messages. A write sequence
number in corr_meta reveals a rolled-back transaction, which drops the caches (they may name rows
that no longer exist; the filter may only hold too much, so it stays), or a write by another writer,
which also reloads the filter (that writer's keys are not in it).

The stages of a write, one module each (this one orders them and owns the state they share):
0. fresh.py: the lines of each batch not stored yet, each with its event id;
1. prepare.py, per group of consecutive batches (see `write`): column-wise types, times, hashed
   keys, once per distinct value;
2. linking.py: one bulk probe of the keys the key filter cannot rule out (keyfilter.py, which also
   keeps the filter in step with the store), then the per-row decisions: which timeline;
3. writes.py: per-timeline aggregation in polars, executemany; flow counters summed over the whole
   write.
The timeline summaries are materialised as they are written rather than derived from events when
read: with the indexes the API's searches need, a derived model's write costs as much and a
filtered search page ~100-1000x more (bench/bench_write_models.py, bench/README.md).
Each write is self-contained (no state assumes one transaction per checkpoint): it may be called
with small slices, several times before the commit that stores the covering checkpoints.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl

from correlator import store
from correlator.fresh import FreshRows
from correlator.genfilter import FilterWriter
from correlator.keyfilter import FilterUpkeep, KeyFilter
from correlator.keys import RcptHasher
from correlator.linking import Linker
from correlator.prepare import REPORTS, Preparer, batch_frame
from correlator.scopes import ScopeCache
from correlator.writes import _INSERT_QE, KEYED_EVERY, Writer
from exporter.records import LINE, RecordBatch

if TYPE_CHECKING:
    from correlator.reach import Reach

log = logging.getLogger(__name__)

IspOf = Callable[[str, str], str]
GROUP_ROWS = 4_096
"""Rows prepared and linked together at most (bounds the memory of one group's columns)."""
SPLIT_ROWS = 8_192
"""A batch of more rows is prepared and linked in parts of this many: the Python lists of one part's columns exist at
once. A 4 MiB chunk of an FBL file is ~25k reports; whole, their lists took ~30 MB of a oneshot's peak (a complaint
about every delivery of 1M lines: 319 -> 288 MB; bench/README.md, twentieth round)."""

class Ingestor(FreshRows, Preparer, Linker, Writer, FilterUpkeep):
    """Turns RecordBatches into corr_* rows on the writer thread (never commits)."""

    def __init__(
        self,
        hasher: RcptHasher,
        isp_of: IspOf,
        fallback_window: float,
        clock: Callable[[], float] = time.time,
        cache_limit: int = 150_000,
        keep_history: bool = True,
    ) -> None:
        self._hasher = hasher
        self._isp_of = isp_of
        self._next_isp_of: IspOf | None = None
        """A reloaded ISP table (SIGHUP), taken by the writer at the start of its next write."""
        self._window = fallback_window
        self._clock = clock
        self.cache_limit = cache_limit
        """Link-cache entries (keys) past which the cache is dropped, checked per group. Each holds ~250 bytes."""
        self.keep_history = keep_history
        """False: store timelines only (their link keys, vmta, times), not their events, queue events or flows.
        oneshot's store is deleted at exit and read by attribution alone, which reads timelines only."""
        self.reach: Reach | None = None
        """Store only the rows a report can reach (oneshot: correlator/reach.py); None: every row."""
        self._link: dict[int, int] = {}
        self._alias: dict[int, int] = {}
        self._files: dict[str, list[int]] = {}
        self._isp_cache: dict[tuple[str, str], str] = {}
        self._days: set[int] = set()
        """Every slice in corr_days (store.slice_of: a day and a generation)."""
        self._day_slices: dict[int, list[int]] = {}
        """Day -> its slices (NO_DAY -> the undated ones, where every dated key is probed too)."""
        self._legacy: dict[int, list[int]] = {}
        """Day -> its slices listed before scopes (they may hold unscoped dated timelines: probed for the whole day)."""
        self._scopes = ScopeCache()
        """SCOPE_BUCKET of timeQueued -> the slices where timelines queued in it were created (corr_scopes, read as
        probes need it: scopes.py)."""
        self._undated: tuple[int, int] = (store.undated_slice(1), 0)
        """The undated slice new undated timelines go to, and how many it holds (see Linker._undated_slice)."""
        self._mixes: dict[float, int] = {}
        self._days_loaded = False
        self._times: dict[str, float | None] = {}
        self._next_tl = 0
        self._flow_parts: list[pl.DataFrame] = []
        self._stored = 0
        self._gen_filters = FilterWriter()
        """A Bloom filter per finished generation (genfilter.py): a probe without a scope seeks fewer generations."""
        self._keyed_tls: list[int] = []
        self._keyed_from = 0
        self._search_changed = False
        """This write listed a slice (store.SEARCH_SEQ is bumped at its end)."""
        self._filter = KeyFilter()
        """Every link key ever stored (Bloom filter): a miss outside it needs no probe (keyfilter.py)."""
        self._next_filter: KeyFilter | None = None
        """A filter being rebuilt from the store, without the keys pruning deleted (see `_rebuild_filter`)."""
        self._dead = 0
        """Timelines pruned since the filter in use was built: their keys are still in it."""
        self._seq: int | None = None
        """write_seq as this writer's last write left it (None: unknown, the write raised)."""
        self._seen: int | None = None
        """write_seq as the last write found it: a rolled-back write leaves it so, another writer moves it on."""
        self._synced = False
        self._tl_mix: dict[int, int] = {}
        """Scope mix of each timeline created while the cache is complete (where its added keys are found)."""
        self.probe_seeks = 0
        """Index seeks the probes have cost (one per key per slice): what the store's size costs linking."""
        self._complete = False
        """The link cache holds every key of every stored timeline (slice for slice), so misses need no probe.

        True from an empty store until anything could make the store know a key the cache does not:
        a forget() (rollback, pruning, cache limit), a merge, a key added to an existing timeline.
        """

    # --- cache lifecycle ---------------------------------------------------------------------

    def pruned(self, timelines: int) -> None:
        """Pruning deleted these timelines: drop the caches, and count their keys as dead in the filter."""
        self._dead += timelines
        self.forget()
        self._gen_filters.forget()  # pruning dropped the filters of the generations it emptied

    def forget(self) -> None:
        """Drop link caches (after pruning deleted timelines or a rollback)."""
        self._link.clear()
        self._alias.clear()
        self._days_loaded = False
        self._complete = False
        self._tl_mix.clear()

    def _sync(self, conn: sqlite3.Connection) -> int:
        seq = int(conn.execute("SELECT value FROM corr_meta WHERE key='write_seq'").fetchone()[0])
        if seq != self._seq:
            self.forget()
            self._gen_filters.forget()  # a rolled-back write may have built filters that are not stored
            self._files.clear()
            self._next_tl = 0
            expected = self._seq if self._seq is not None else self._seen
            if expected is not None and seq > expected:
                self._written_elsewhere(seq, expected)
        self._seq = None  # unknown until this write returns; a raise leaves it so
        self._seen = seq
        if not self._days_loaded:
            self._days, self._day_slices, self._legacy = set(), {}, {}
            self._scopes.clear()
            for value, legacy in conn.execute("SELECT day, legacy FROM corr_days"):
                self._note_slice(value, legacy=bool(legacy))
            self._days_loaded = True
            newest = max(self._day_slices.get(store.NO_DAY, []), key=store.generation_of_slice, default=store.NO_DAY)
            if newest == store.NO_DAY:  # the legacy -1 only: start the first generation
                self._undated = (store.undated_slice(1), 0)
            else:  # go on filling the newest (an index range count: at most 2**GEN_BITS entries)
                fill = conn.execute("SELECT count(*) FROM corr_timelines WHERE qday = ?", (newest,)).fetchone()[0]
                self._undated = (newest, fill)
        self._gen_filters.load(conn)
        top = conn.execute("SELECT max(id) FROM corr_timelines").fetchone()[0] or 0
        self._next_tl = max(self._next_tl, top + 1)
        if not self._synced:  # the first write of this process
            self._complete = top == 0  # a backfill into an empty store: every link key will be in the cache
        self._keep_filter(conn, top)
        if len(self._isp_cache) > 50_000:
            self._isp_cache.clear()
        return seq

    def _written_elsewhere(self, seq: int, expected: int) -> None:
        """Another writer stored rows since this one's last write (nothing else bumps write_seq). Its keys are not
        in this key filter, which would then rule their probes out: the filter is loaded from the store again, as
        at a start. One writer per store is the design (the correlator process, or the daemon's writer thread)."""
        log.warning("the correlator's store was written by another writer since this one's last write (write_seq %d,"
                    " expected %d): reloading its key filter; only one daemon may use a state_dir", seq, expected)
        self._synced = False
        self._next_filter = None

    def reload_isp(self, isp_of: IspOf) -> None:
        """Use this ISP table from the next write on (any thread: the writer swaps it in itself)."""
        self._next_isp_of = isp_of

    # --- entry point ---------------------------------------------------------------------------

    def write(self, conn: sqlite3.Connection, batches: list[RecordBatch]) -> int:
        """Store the batches; returns rows stored (replayed lines are skipped).

        Consecutive batches are prepared, linked and flushed as one group (the fixed cost of the
        column-wise stages is paid per group, not per batch). A group ends where per-batch
        processing could have seen something different: before a batch that may replay lines
        (its replay check must see the rows before it stored) and after a batch with f/rb
        records (their flows take the vmta and isp of their timeline as of the end of the batch);
        and after GROUP_ROWS rows.
        """
        if self._next_isp_of is not None:  # on the writer's thread, between writes: no batch sees both tables
            self._isp_of, self._next_isp_of = self._next_isp_of, None
            self._isp_cache.clear()
        seq = self._sync(conn)
        first_tl = self._next_tl
        open_gen = store.generation_of(first_tl)
        self._keyed_from = KEYED_EVERY if open_gen in self._gen_filters.bits else (open_gen - 1) << store.GEN_BITS
        self._flow_parts.clear()
        self._keyed_tls.clear()
        self._search_changed = False
        self._stored = 0
        group: list[pl.DataFrame] = []
        for batch in batches:
            if not len(batch):
                continue
            rec = self._file(conn, getattr(batch, "file_id", None) or batch.path, batch.path)
            frame = batch_frame(batch)
            if LINE not in frame.columns:  # no line numbers: continue after the last stored line
                frame = frame.with_columns(pl.int_range(rec[1] + 1, rec[1] + 1 + frame.height, dtype=pl.Int64)
                                           .alias(LINE))
            if group and frame.get_column(LINE).min() <= rec[1]:
                self._group(conn, group)
            frame = self._fresh_rows(conn, rec, frame)
            if self.reach is not None:
                frame = self.reach.keep(frame)
            for part in frame.iter_slices(SPLIT_ROWS):  # (none for an empty frame)
                group.append(part)
                if self._has_reports(part) or sum(f.height for f in group) >= GROUP_ROWS:
                    self._group(conn, group)
        if group:
            self._group(conn, group)
        self._write_flows(conn)
        if self._gen_filters.finish_write(conn, first_tl, self._next_tl, self._keyed_tls, self._days) \
                or self._search_changed:
            store.bump_search_seq(conn)
        self._keyed_tls.clear()
        self._search_changed = False
        conn.execute("UPDATE corr_meta SET value=? WHERE key='write_seq'", (str(seq + 1),))
        self._seq = seq + 1
        return self._stored

    def _has_reports(self, frame: pl.DataFrame) -> bool:
        return any(self._code_of(ty) in REPORTS for ty in frame.get_column("type").unique().to_list())

    # --- one group of batches ------------------------------------------------------------------

    def _group(self, conn: sqlite3.Connection, frames: list[pl.DataFrame]) -> None:
        """Prepare, probe, link and flush these fresh rows (in this order: the batches' order); empties `frames`."""
        if len(self._link) > self.cache_limit:  # per group: one write may carry a whole backfill
            self.forget()
            self._days_loaded = True  # the day list is still right: nothing was pruned
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
        frames.clear()
        prepared = self._prepare(frame)
        self._stored += prepared.stored
        if prepared.queue_events and self.keep_history:
            conn.executemany(_INSERT_QE, prepared.queue_events)
        if prepared.frame.height:
            if not self._complete:  # else a key the cache lacks is in no stored timeline either: nothing to probe
                probe_m, probe_j = self._probes(prepared)
                self._probe(conn, "mid_h", probe_m)
                self._probe(conn, "job_h", probe_j)
            if prepared.bare_m is not None and prepared.bare_j is not None:
                for kf in (self._filter, self._next_filter):
                    if kf is not None:
                        kf.add(prepared.bare_m)
                        kf.add(prepared.bare_j)
            self._link_all(conn, prepared)
