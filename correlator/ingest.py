"""Linking records into timelines and writing them, inside the caller's transaction.

A timeline is one recipient of one message. A record joins a timeline by, in order:
1. Message-Id + rcpt (any `header_Message-Id` column),
2. jobId + rcpt; when jobId is empty, d/b/t/r records use sender + timeQueued + rcpt instead
   (timeQueued is the same on every attempt of one message),
3. for report records (f, rb, rs) that matched neither: Message-Id alone when the message has
   exactly one recipient timeline and the report has no rcpt, else rcpt + orig with a timeline
   that began at most `fallback_window` before the report.
A record carrying two keys that point at two timelines merges them (lower id wins), so the result
does not depend on the order files are read. tq records are queue-level and are stored apart.
Keys 1 and 2 are looked up in the slice of the record's timeQueued day and in the no-day slice
(see store.py): a d/b/t/r with the same ids but queued on another day is another message.

Writes are appends plus one summary UPDATE per touched timeline per batch, all via executemany.
Links found or created are kept in a bounded int-keyed cache, misses are probed in bulk with one
VALUES join per batch. A write sequence number in corr_meta reveals a rolled-back transaction, which
drops every cache (they may name rows that no longer exist).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import blake2b as b2b

import polars as pl

from correlator import store
from correlator.keys import MID_STRIP, RcptHasher, job_hash, queued_hash
from exporter.records import Columns, RecordBatch, col
from exporter.timeparse import parse_pmta_time

IspOf = Callable[[str, str], str]

R, T, D, B, RS, RB, F, TQ = (store.TYPE_CODES[k] for k in ("r", "t", "d", "b", "rs", "rb", "f", "tq"))
REPORTS = frozenset((F, RB, RS))
DELIVERY = frozenset((T, D, B))
QUEUED_KEY_TYPES = frozenset((R, T, D, B))
_FLOW_COLUMN = {D: 0, B: 1, T: 2, F: 3, RB: 4}  # index into the corr_flows counters
_PROBE_CHUNK = 300  # VALUES rows per probe statement
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


# An accumulator is a list: what one write adds to one timeline. Slots 0..20 are the corr_timelines
# INSERT columns in order (so a new timeline inserts `acc[:21]`); an existing one is updated by SQL
# that merges these values into the stored row. Lists: a row-rate object, and cheaper than a class.
(A_ID, A_MID_H, A_MID, A_JOB_H, A_JOB, A_RCPT_H, A_RCPT, A_RDOM, A_ORIG, A_SENDER, A_VMTA, A_POOL, A_QUEUE,
 A_ISP, A_T0, A_TLAST, A_TQ, A_TDONE, A_FLAGS, A_ATT, A_QDAY, A_NEW, A_KEYS) = range(23)


def _acc(tl: int, new: bool, qday: int = store.NO_DAY, rcpt_h: int | None = None, rcpt: str | None = None,
         rdom: str | None = None) -> list:
    return [tl, None, None, None, None, rcpt_h, rcpt, rdom, None, None, None, None, None, None,
            math.inf, -math.inf, None, None, 0, 0, qday, new, False]


@dataclass
class _Pending:
    """Rows of the current batch waiting for one executemany each."""

    accs: dict[int, list] = field(default_factory=dict)
    events: list[tuple] = field(default_factory=list)
    queue_events: list[tuple] = field(default_factory=list)
    merges: list[tuple[int, int]] = field(default_factory=list)
    flows: dict[tuple[int, str, str, str], list[int]] = field(default_factory=dict)
    report_flows: list[tuple[int, int, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.accs or self.events or self.queue_events or self.merges or self.flows
                    or self.report_flows)


_INSERT_TL = (
    "INSERT INTO corr_timelines (id, mid_h, message_id, job_h, job_id, rcpt_h, rcpt, rcpt_domain, orig, sender,"
    " vmta, vmta_pool, queue, isp, t0, t_last, t_queued, t_done, flags, attempts, qday)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_UPDATE_TL = (
    "UPDATE corr_timelines SET orig=coalesce(orig, ?), sender=coalesce(sender, ?),"
    " vmta=coalesce(?, vmta), vmta_pool=coalesce(?, vmta_pool), queue=coalesce(?, queue), isp=coalesce(?, isp),"
    " t_last=max(t_last, ?), t_queued=coalesce(min(t_queued, ?), t_queued, ?),"
    " t_done=coalesce(min(t_done, ?), t_done, ?), flags=flags | ?, attempts=attempts + ? WHERE id=?"
)
_UPDATE_T0 = "UPDATE corr_timelines SET t0=? WHERE id=? AND t0>?"
_UPDATE_MID = "UPDATE corr_timelines SET mid_h=?, message_id=? WHERE id=? AND mid_h IS NULL"
_UPDATE_JOB = "UPDATE corr_timelines SET job_h=?, job_id=? WHERE id=? AND job_h IS NULL"
_INSERT_EV = "INSERT OR IGNORE INTO corr_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_QE = "INSERT OR IGNORE INTO corr_queue_events VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_MERGE = (
    "UPDATE corr_timelines AS w SET mid_h=coalesce(w.mid_h, l.mid_h), message_id=coalesce(w.message_id, l.message_id),"
    " job_h=coalesce(w.job_h, l.job_h), job_id=coalesce(w.job_id, l.job_id), rcpt_h=coalesce(w.rcpt_h, l.rcpt_h),"
    " rcpt=coalesce(w.rcpt, l.rcpt), rcpt_domain=coalesce(w.rcpt_domain, l.rcpt_domain),"
    " orig=coalesce(w.orig, l.orig), sender=coalesce(w.sender, l.sender),"
    " vmta=CASE WHEN l.t_last > w.t_last THEN coalesce(l.vmta, w.vmta) ELSE coalesce(w.vmta, l.vmta) END,"
    " vmta_pool=CASE WHEN l.t_last > w.t_last THEN coalesce(l.vmta_pool, w.vmta_pool)"
    " ELSE coalesce(w.vmta_pool, l.vmta_pool) END,"
    " queue=coalesce(w.queue, l.queue), isp=coalesce(w.isp, l.isp),"
    " t0=min(w.t0, l.t0), t_last=max(w.t_last, l.t_last),"
    " t_queued=coalesce(min(w.t_queued, l.t_queued), w.t_queued, l.t_queued),"
    " t_done=coalesce(min(w.t_done, l.t_done), w.t_done, l.t_done),"
    " flags=w.flags | l.flags, attempts=w.attempts + l.attempts FROM corr_timelines AS l WHERE w.id=? AND l.id=?"
)
_FLOW_UPSERT = (
    "INSERT INTO corr_flows (bucket, sender, vmta, isp, delivered, bounced, deferred, complained, remote_bounced)"
    " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (bucket, sender, vmta, isp) DO UPDATE SET"
    " delivered=delivered+excluded.delivered, bounced=bounced+excluded.bounced,"
    " deferred=deferred+excluded.deferred, complained=complained+excluded.complained,"
    " remote_bounced=remote_bounced+excluded.remote_bounced"
)


class Ingestor:
    """Turns RecordBatches into corr_* rows on the writer thread (never commits)."""

    def __init__(
        self,
        hasher: RcptHasher,
        isp_of: IspOf,
        fallback_window: float,
        clock: Callable[[], float] = time.time,
        cache_limit: int = 250_000,
    ) -> None:
        self._hasher = hasher
        self._isp_of = isp_of
        self._window = fallback_window
        self._clock = clock
        self._cache_limit = cache_limit
        self._link: dict[int, int] = {}
        self._alias: dict[int, int] = {}
        self._files: dict[str, list[int]] = {}
        self._isp_cache: dict[tuple[str, str], str] = {}
        self._job_hashes: dict[str, int] = {}
        self._days: set[int] = set()
        self._mixes: dict[int, int] = {}
        self._days_loaded = False
        self._times: dict[str, float | None] = {}
        self._next_tl = 0
        self._seq: int | None = None

    # --- cache lifecycle ---------------------------------------------------------------------

    def forget(self) -> None:
        """Drop link caches (after pruning deleted timelines or a rollback)."""
        self._link.clear()
        self._alias.clear()
        self._days_loaded = False

    def _sync(self, conn: sqlite3.Connection) -> int:
        seq = int(conn.execute("SELECT value FROM corr_meta WHERE key='write_seq'").fetchone()[0])
        if seq != self._seq:
            self.forget()
            self._files.clear()
            self._next_tl = 0
        self._seq = None  # unknown until this write returns; a raise leaves it so
        if len(self._link) > self._cache_limit:
            self.forget()
        if not self._days_loaded:
            self._days = {r[0] for r in conn.execute("SELECT day FROM corr_days")}
            self._days_loaded = True
        top = conn.execute("SELECT max(id) FROM corr_timelines").fetchone()[0] or 0
        self._next_tl = max(self._next_tl, top + 1)
        if len(self._isp_cache) > 50_000:
            self._isp_cache.clear()
        return seq

    def _find(self, tl: int | None) -> int | None:
        alias = self._alias
        if tl is None or tl not in alias:
            return tl
        root = tl
        while root in alias:
            root = alias[root]
        while tl != root:
            alias[tl], tl = root, alias[tl]
        return root

    # --- entry point ---------------------------------------------------------------------------

    def write(self, conn: sqlite3.Connection, batches: list[RecordBatch]) -> int:
        """Store the batches; returns rows stored (replayed lines are skipped)."""
        seq = self._sync(conn)
        stored = 0
        for batch in batches:
            if len(batch):
                stored += self._batch(conn, batch)
        conn.execute("UPDATE corr_meta SET value=? WHERE key='write_seq'", (str(seq + 1),))
        self._seq = seq + 1
        return stored

    def _file(self, conn: sqlite3.Connection, key: str, path: str) -> list[int]:
        rec = self._files.get(key)
        if rec is None:
            row = conn.execute("SELECT num, max_line FROM corr_files WHERE key=?", (key,)).fetchone()
            if row is None:
                num = conn.execute("INSERT INTO corr_files (key, path) VALUES (?, ?)", (key, path)).lastrowid
                row = (num, 0)
            rec = self._files[key] = [row[0], row[1]]
        return rec

    def _fresh_rows(self, conn: sqlite3.Connection, batch: RecordBatch) -> tuple[int, list[tuple[int, tuple]]]:
        """(file number, [(line, fields)]) minus lines already stored for this file."""
        rec = self._file(conn, getattr(batch, "file_id", None) or batch.path, batch.path)
        num, max_line = rec
        fields = batch_fields(batch)
        lines = batch.line_numbers
        if len(lines) != len(fields):  # no line numbers: continue after the last stored line
            lines = list(range(max_line + 1, max_line + 1 + len(fields)))
        pairs = list(zip(lines, fields, strict=True))
        if pairs and min(lines) <= max_line:
            lo, hi = store.event_id(num, min(lines)), store.event_id(num, max(lines))
            seen = {r[0] for r in conn.execute(
                "SELECT id FROM corr_events WHERE id BETWEEN ?1 AND ?2"
                " UNION ALL SELECT id FROM corr_queue_events WHERE id BETWEEN ?1 AND ?2", (lo, hi))}
            base = num << store.LINE_BITS
            pairs = [p for p in pairs if (base | p[0]) not in seen]
        if lines:
            rec[1] = max(max_line, max(lines))
            conn.execute("UPDATE corr_files SET max_line=? WHERE num=?", (rec[1], num))
        return num, pairs

    # --- one batch -----------------------------------------------------------------------------

    def _batch(self, conn: sqlite3.Connection, batch: RecordBatch) -> int:
        num, pairs = self._fresh_rows(conn, batch)
        if not pairs:
            return 0
        recs, probe_m, probe_j = self._parse(pairs, num << store.LINE_BITS)
        self._probe(conn, "mid_h", probe_m)
        self._probe(conn, "job_h", probe_j)
        pending = _Pending()
        self._link_all(conn, recs, pending)
        self._flush(conn, pending)
        return len(recs)

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

    def _probe(self, conn: sqlite3.Connection, column: str, wanted: dict[int, tuple[int, int, int | None]]) -> None:
        """Fill the link cache for `wanted` keys with one VALUES join per chunk (newest timeline wins).

        A key with a day is looked up in that day's slice and the no-day slice; one without (a
        report) in every slice: each (day, hash, rcpt) row of the VALUES list is one index seek.
        """
        if not wanted:
            return
        link = self._link
        days = self._days
        every = sorted(days)
        items = list(wanted.items())
        params: list[int] = []
        rows = 0

        def run() -> None:
            marks = ",".join(["(?,?,?,?)"] * rows)
            sql = (f"SELECT v.column4, t.id FROM (VALUES {marks}) AS v JOIN corr_timelines AS t"
                   f" ON t.qday = v.column1 AND t.{column} = v.column2 AND t.rcpt_h = v.column3 ORDER BY t.id")
            for pos, tl in conn.execute(sql, params):
                link[items[pos][0]] = tl

        for pos, (_key, (h, rh, qd)) in enumerate(items):
            slices = every if qd is None else ((qd, store.NO_DAY) if qd in days else (store.NO_DAY,))
            for day in slices:
                params += (day, h, rh, pos)
                rows += 1
            if rows >= _PROBE_CHUNK:
                run()
                params, rows = [], 0
        if rows:
            run()

    def _add_day(self, conn: sqlite3.Connection, day: int) -> None:
        conn.execute("INSERT OR IGNORE INTO corr_days VALUES (?)", (day,))
        self._days.add(day)

    def _link_all(self, conn: sqlite3.Connection, recs: list[tuple], p: _Pending) -> None:
        """Pass 2, in file order: find or create each record's timeline and accumulate its changes."""
        link, alias, find = self._link, self._alias, self._find
        accs, events, flows = p.accs, p.events, p.flows
        flag = store.FLAG
        bucket_s = store.FLOW_BUCKET
        redact = self._hasher.hashed
        isp_cache = self._isp_cache
        days = self._days
        mixes = self._mixes
        for eid, code, t, tq, f, rcpt_l, rh, rstore, orig_l, mid, mh, job, jh, mk, jk, qd in recs:
            if code == TQ:
                p.queue_events.append((eid, t, f[14].strip(), f[11], f[12], f[5], f[6], f[7], f[8], f[9], f[10]))
                continue
            smix = 0 if qd is None else mixes[qd]
            a = b = None
            if mk is not None:
                a = link.get(mk)
                if a is None and qd is not None:
                    a = link.get(mk ^ smix ^ NO_DAY_MIX)
            if jk is not None:
                b = link.get(jk)
                if b is None and qd is not None:
                    b = link.get(jk ^ smix ^ NO_DAY_MIX)
            if alias:
                a, b = find(a), find(b)
            if a is not None and b is not None and a != b:
                tl: int | None = a if a < b else b
                loser = b if a < b else a
                alias[loser] = tl
                p.merges.append((tl, loser))
            else:
                tl = a if a is not None else b
            if tl is None and code in REPORTS:
                tl = self._report_link(conn, p, mh, rh, orig_l, t)
            rdom = rcpt_l.rpartition("@")[2]
            if tl is None:
                tl = self._next_tl
                self._next_tl += 1
                qday = store.NO_DAY if qd is None else qd
                if qday not in days:
                    self._add_day(conn, qday)
                acc = accs[tl] = _acc(tl, True, qday, rh, rstore, rdom or None)
            else:
                acc = accs.get(tl)
                if acc is None:
                    acc = accs[tl] = _acc(tl, False)
            if mk is not None:
                link[mk] = tl
                if smix:
                    link[mk ^ smix] = tl  # the bare key, which reports look up
                elif acc[A_NEW] and acc[A_QDAY] == store.NO_DAY:
                    link[mk ^ NO_DAY_MIX] = tl  # the no-day slice, where dated records look second
            if jk is not None:
                link[jk] = tl
                if smix:
                    link[jk ^ smix] = tl
                elif acc[A_NEW] and acc[A_QDAY] == store.NO_DAY:
                    link[jk ^ NO_DAY_MIX] = tl
            if t < acc[A_T0]:
                acc[A_T0] = t
            if t > acc[A_TLAST]:
                acc[A_TLAST] = t
            acc[A_FLAGS] |= flag[code]
            if mh is not None and acc[A_MID_H] is None:
                acc[A_MID_H], acc[A_MID], acc[A_KEYS] = mh, mid, True
            if jh is not None and acc[A_JOB_H] is None:
                acc[A_JOB_H], acc[A_JOB], acc[A_KEYS] = jh, job or None, True
            sender = orig_l.rpartition("@")[2]
            if orig_l and acc[A_ORIG] is None:
                acc[A_ORIG], acc[A_SENDER] = orig_l, sender
            vmta = f[11]
            isp = ""
            if code in DELIVERY or code == R:
                if tq is not None:
                    if tq < acc[A_T0]:
                        acc[A_T0] = tq
                    if acc[A_TQ] is None or tq < acc[A_TQ]:
                        acc[A_TQ] = tq
                if code != R:
                    acc[A_ATT] += 1
                    if code != T and (acc[A_TDONE] is None or t < acc[A_TDONE]):
                        acc[A_TDONE] = t
                    queue = f[14] or (f"{rdom}/{vmta}" if vmta and rdom else "")
                    if queue:
                        acc[A_QUEUE] = queue
                    if vmta:
                        acc[A_VMTA] = vmta
                    if f[12]:
                        acc[A_POOL] = f[12]
                    if rcpt_l:
                        isp = isp_cache.get((rdom, f[19])) or self._isp(rcpt_l, f[19])
                        acc[A_ISP] = isp
            if acc[A_NEW] and acc[A_ISP] is None and rcpt_l:
                acc[A_ISP] = self._isp(rcpt_l, "")
            extra = None
            if code in REPORTS:
                ex = {k: v for k, v in (("feedback_type", f[16]), ("user_agent", f[17]), ("reporting_mta", f[18]))
                      if v}
                extra = json.dumps(ex, separators=(",", ":")) if ex else None
            diag = self._redact(f[7], rcpt_l) if redact else f[7]
            events.append((eid, tl, code, t, f[5], f[6], diag, f[8], f[9], vmta, f[12], f[10], extra))
            column = _FLOW_COLUMN.get(code)
            if column is not None:
                bucket = int(t // bucket_s) * bucket_s
                if code in REPORTS:
                    p.report_flows.append((bucket, tl, column, sender))
                else:
                    key = (bucket, sender, vmta, isp)
                    counts = flows.get(key)
                    if counts is None:
                        counts = flows[key] = [0, 0, 0, 0, 0]
                    counts[column] += 1

    def _report_link(
        self, conn: sqlite3.Connection, p: _Pending, mh: int | None, rh: int | None, orig_l: str, t: float
    ) -> int | None:
        """f/rb/rs that matched no key: the only recipient of its Message-Id, else rcpt + orig in the window."""
        if p:
            self._flush(conn, p)  # the probes below must see this batch's rows
        if mh is not None and rh is None:
            ids = conn.execute(f"SELECT id FROM corr_timelines WHERE {store.DAYS} AND mid_h=? LIMIT 2",
                               (mh,)).fetchall()
            if len(ids) == 1:
                return self._find(ids[0][0])
        if rh is not None:
            return self._fallback(conn, rh, orig_l, t)
        return None

    def _fallback(self, conn: sqlite3.Connection, rh: int, orig_l: str, t: float) -> int | None:
        """Latest timeline of this rcpt + orig (rcpt alone if the report has no orig) begun within the window."""
        delivered = store.FLAG[D] | store.FLAG[B] | store.FLAG[T]
        row = conn.execute(
            f"SELECT id FROM corr_timelines WHERE {store.DAYS} AND rcpt_h=?1 AND t0 BETWEEN ?2 AND ?3"
            " AND (?4 = '' OR orig = ?4)"
            f" ORDER BY (flags & {delivered}) != 0 DESC, t0 DESC LIMIT 1",
            (rh, t - self._window, t, orig_l),
        ).fetchone()
        return self._find(row[0]) if row else None

    def _isp(self, rcpt_l: str, dsn_mta: str) -> str:
        key = (rcpt_l.rpartition("@")[2], dsn_mta)
        isp = self._isp_cache.get(key)
        if isp is None:
            isp = self._isp_cache[key] = self._isp_of(rcpt_l, dsn_mta) or ""
        return isp

    def _redact(self, diag: str, rcpt_l: str | None) -> str:
        """With hashed recipients the SMTP reply must not keep the address either."""
        if not self._hasher.hashed or not diag or not rcpt_l:
            return diag
        low = diag.lower()
        if rcpt_l not in low:
            return diag
        out, start = [], 0
        while (i := low.find(rcpt_l, start)) >= 0:
            out += (diag[start:i], "<rcpt>")
            start = i + len(rcpt_l)
        out.append(diag[start:])
        return "".join(out)

    # --- flush ---------------------------------------------------------------------------------

    def _flush(self, conn: sqlite3.Connection, p: _Pending) -> None:
        find = self._find
        inserts, updates, t0s, mids, jobs = [], [], [], [], []
        for acc in p.accs.values():
            if acc[A_NEW]:
                inserts.append(acc[:21])
                continue
            tl = acc[A_ID]
            updates.append((acc[A_ORIG], acc[A_SENDER], acc[A_VMTA], acc[A_POOL], acc[A_QUEUE], acc[A_ISP],
                            acc[A_TLAST], acc[A_TQ], acc[A_TQ], acc[A_TDONE], acc[A_TDONE], acc[A_FLAGS],
                            acc[A_ATT], tl))
            t0s.append((acc[A_T0], tl, acc[A_T0]))
            if acc[A_KEYS]:
                if acc[A_MID_H] is not None:
                    mids.append((acc[A_MID_H], acc[A_MID], tl))
                if acc[A_JOB_H] is not None:
                    jobs.append((acc[A_JOB_H], acc[A_JOB], tl))
        if inserts:
            conn.executemany(_INSERT_TL, inserts)
        if updates:
            conn.executemany(_UPDATE_TL, updates)
            conn.executemany(_UPDATE_T0, t0s)
        if mids:
            conn.executemany(_UPDATE_MID, mids)
        if jobs:
            conn.executemany(_UPDATE_JOB, jobs)
        if p.events:
            if self._alias:
                conn.executemany(_INSERT_EV, [(e[0], find(e[1]), *e[2:]) for e in p.events])
            else:
                conn.executemany(_INSERT_EV, p.events)
        if p.queue_events:
            conn.executemany(_INSERT_QE, p.queue_events)
        for winner, loser in p.merges:
            conn.execute("UPDATE corr_events SET tl=? WHERE tl=?", (winner, loser))
            conn.execute(_MERGE, (winner, loser))
            conn.execute("DELETE FROM corr_timelines WHERE id=?", (loser,))
        if p.report_flows:
            self._report_flows(conn, p)
        if p.flows:
            conn.executemany(_FLOW_UPSERT, [(*k, *v) for k, v in p.flows.items()])
        # cleared in place: the pass-2 loop holds references to these containers
        p.accs.clear()
        p.events.clear()
        p.queue_events.clear()
        p.merges.clear()
        p.flows.clear()
        p.report_flows.clear()

    def _report_flows(self, conn: sqlite3.Connection, p: _Pending) -> None:
        """f/rb count under the vmta and isp of the delivery they report on (read after the flush)."""
        ids = sorted({self._find(tl) for _, tl, _, _ in p.report_flows})
        info: dict[int, tuple[str, str, str]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            sql = f"SELECT id, vmta, isp, sender FROM corr_timelines WHERE id IN ({','.join('?' * len(chunk))})"
            for tl, vmta, isp, sender in conn.execute(sql, chunk):
                info[tl] = (vmta or "", isp or "", sender or "")
        for bucket, tl, column, sender in p.report_flows:
            vmta, isp, tl_sender = info.get(self._find(tl), ("", "", ""))
            key = (bucket, sender or tl_sender, vmta, isp)
            counts = p.flows.get(key)
            if counts is None:
                counts = p.flows[key] = [0, 0, 0, 0, 0]
            counts[column] += 1
