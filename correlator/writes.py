"""Stage 3 of a write: what one segment of a batch adds to its timelines, as a few executemany calls.

Linking (linking.py) decides a timeline per row; everything else is an aggregation per timeline
over the segment's rows, done in polars: new timelines are INSERTed whole, touched ones get one
summary UPDATE each, events and queue events are appended (`INSERT OR IGNORE` on the
`file << 32 | line` id: a replayed line is a no-op), merges move events to the winner. Flow
counters are summed over the whole write and upserted once at its end (Flows).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain

import polars as pl

from correlator.prepare import _EVENT_FIELDS, DELIVERY, QUEUED_KEY_TYPES, RB, B, D, F, Prepared, T
from exporter.metrics import PLACEHOLDER_NONE


@dataclass
class Segment:
    """The rows [start, ...) of a batch not flushed yet, and what linking did to them."""

    start: int = 0
    new: dict[int, int] = field(default_factory=dict)
    """Timelines created in this segment -> their qday."""
    merges: list[tuple[int, int]] = field(default_factory=list)
    keys_from: int = -1
    """The row from which `mids` and `rcpts` were collected (the segment's start when they are current)."""
    keys_upto: int = 0
    mids: set[int] = field(default_factory=set)
    """Message-Id and recipient keys of rows [keys_from, keys_upto): a report whose keys none of them holds needs
    no flush before its store probes (linking.Linker._report_link)."""
    rcpts: set[int] = field(default_factory=set)


_INSERT_TL = (
    "INSERT INTO corr_timelines (id, mid_h, message_id, job_h, job_id, rcpt_h, rcpt, rcpt_domain, orig, sender,"
    " vmta, vmta_pool, queue, isp, t0, t_last, t_queued, t_done, flags, attempts, qday, scope, t_attempt)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_LATER = "(?{n} IS NOT NULL AND (t_attempt IS NULL OR ?{n} >= t_attempt))"
"""The segment's latest attempt naming this field (its time is ?n) is not older than the stored latest attempt: its
value replaces the stored one. The time of the attempt that named it, not of the segment's latest attempt: one
without a pool, read with an older one on pool-a, must not put pool-a over the pool of a newer stored attempt."""
_LATEST_FIELDS = ("vmta", "vmta_pool", "queue", "isp")
_UPDATE_TL = (
    "UPDATE corr_timelines SET orig=coalesce(orig, ?2), sender=coalesce(sender, ?3),"
    + ", ".join(f"{col}=CASE WHEN {_LATER.format(n=n + 10)} THEN coalesce(?{n}, {col}) ELSE coalesce({col}, ?{n}) END"
                for n, col in enumerate(_LATEST_FIELDS, start=4))
    + ", t_attempt=coalesce(max(t_attempt, ?1), t_attempt, ?1),"
    " t_last=max(t_last, ?8), t_queued=coalesce(min(t_queued, ?9), t_queued, ?9),"
    " t_done=coalesce(min(t_done, ?10), t_done, ?10), flags=flags | ?11, attempts=attempts + ?12 WHERE id=?13"
)
_UPDATE_T0 = "UPDATE corr_timelines SET t0=? WHERE id=? AND t0>?"
KEYED_EVERY = (1 << 63) - 1
"""`Writer._keyed_from` when the generation being filled already has a filter: every id is below it."""
_UPDATE_MID = "UPDATE corr_timelines SET mid_h=?, message_id=? WHERE id=? AND mid_h IS NULL"
_UPDATE_JOB = "UPDATE corr_timelines SET job_h=?, job_id=? WHERE id=? AND job_h IS NULL"
_INSERT_EV = "INSERT OR IGNORE INTO corr_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_QE = "INSERT OR IGNORE INTO corr_queue_events VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_LOSER_LATER = ("CASE WHEN l.attempts = 0 THEN 0 WHEN w.attempts = 0 THEN 1"
                " ELSE coalesce(l.t_attempt, l.t_last) > coalesce(w.t_attempt, w.t_last) END")
"""The merged-away timeline holds the later attempt: a side without any has nothing to say (its ISP is a guess from
the recipient domain), and t_last stands in for a timeline written before t_attempt."""
_MERGE = (
    "UPDATE corr_timelines AS w SET mid_h=coalesce(w.mid_h, l.mid_h), message_id=coalesce(w.message_id, l.message_id),"
    " job_h=coalesce(w.job_h, l.job_h), job_id=coalesce(w.job_id, l.job_id), rcpt_h=coalesce(w.rcpt_h, l.rcpt_h),"
    " rcpt=coalesce(w.rcpt, l.rcpt), rcpt_domain=coalesce(w.rcpt_domain, l.rcpt_domain),"
    " orig=coalesce(w.orig, l.orig), sender=coalesce(w.sender, l.sender),"
    + "".join(f" {col}=CASE WHEN {_LOSER_LATER} THEN coalesce(l.{col}, w.{col}) ELSE coalesce(w.{col}, l.{col}) END,"
              for col in _LATEST_FIELDS)
    + " t_attempt=coalesce(max(w.t_attempt, l.t_attempt), w.t_attempt, l.t_attempt),"
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
_FLOW_KEY = ("bucket", "sender", "vmta", "isp")
_FLOW_COUNTS = ("delivered", "bounced", "deferred", "complained", "remote_bounced")
_FLOW_CODES = (D, B, T, F, RB)  # in _FLOW_COUNTS order
_FLOW_SCHEMA = {"bucket": pl.Int64, "sender": pl.String, "vmta": pl.String, "isp": pl.String,
                **{name: pl.Int64 for name in _FLOW_COUNTS}}

_code = pl.col("code")
_DELIV = _code.is_in(list(DELIVERY))


def _latest(name: str, present: str, alias: str) -> list[pl.Expr]:
    """`name` of the group's latest attempt whose `present` is not empty: the one with the highest time (the
    rows of one write come from several files, in no time order), as `alias`, and that time as `t_<alias>`
    (_LATER). arg_max: a sort per group cost 3x as much."""
    rows = _DELIV & (pl.col(present) != "")
    return [pl.col(name).filter(rows).get(pl.col("t").filter(rows).arg_max()).alias(alias),
            pl.col("t").filter(rows).max().alias(f"t_{alias}")]


_AGGS = [
    pl.col("t").min().alias("tmin"),
    pl.col("t").max().alias("t_last"),
    pl.col("tq").filter(_code.is_in(list(QUEUED_KEY_TYPES))).min().alias("t_queued"),
    pl.col("mh").drop_nulls().first().alias("mid_h"),
    pl.col("mid").filter(pl.col("mh").is_not_null()).first().alias("message_id"),
    pl.col("jh").drop_nulls().first().alias("job_h"),
    pl.col("job").filter(pl.col("jh").is_not_null()).first().alias("job_id"),
    pl.col("orig_s").filter(pl.col("orig_l") != "").first().alias("orig"),
    pl.col("sender").filter((pl.col("orig_l") != "") & (pl.col("sender") != PLACEHOLDER_NONE)).first().alias("sender"),
    *_latest("vmta", "vmta", "vmta"),
    *_latest("vmtaPool", "vmtaPool", "vmta_pool"),
    *_latest("qname", "qname", "queue"),
    *_latest("isp", "rcpt_l", "isp"),
    pl.col("t").filter(_DELIV).max().alias("t_attempt"),
    pl.col("t").filter(_code.is_in([D, B])).min().alias("t_done"),
    _DELIV.sum().cast(pl.Int64).alias("attempts"),
    pl.col("flag").bitwise_or().alias("flags"),
    pl.col("qs").first().alias("scope"),  # of a new timeline: its first row's, the one that created it
    pl.col("rh").first().alias("rcpt_h"),
    pl.col("rstore").first().alias("rcpt"),
    pl.col("rdom").first().alias("rcpt_domain"),
    pl.col("rcpt_l").filter(pl.col("rcpt_l") != "").first().alias("rcpt_any"),
]


_CHUNK = 2048


def _rows(frame: pl.DataFrame, *names: str) -> Iterator[tuple]:
    """Rows of these columns as tuples for executemany, from one Python list per column (cheaper than
    frame.rows()), a chunk at a time: only _CHUNK rows exist as Python objects at once. Chained in C:
    no Python frame resumes per row (a generator's `yield from` cost ~4% of a write)."""
    return chain.from_iterable(
        zip(*(part.get_column(name).to_list() for name in names), strict=True)
        for part in frame.iter_slices(_CHUNK))


class Writer:
    """Mixin of Ingestor: stage 3."""

    keep_history: bool
    """False: timelines only (no events, queue events or flows): see Ingestor.keep_history."""

    _keyed_tls: list[int]
    """Timelines of generations finished before this write that it gave a key (their generation's filter must hold
    it: genfilter.py); those of generations the write finishes are read whole when their filter is built."""
    _keyed_from: int
    """The first id of the generation being filled when the write began: `_keyed_tls` holds the ids below it
    (KEYED_EVERY: a restart gave out ids of a finished generation again, so every new timeline too)."""

    def _flush(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment) -> None:
        """Store rows [seg.start, len(tls)) of `p`, linked to `tls`, then start a new segment there."""
        start, stop = seg.start, len(tls)
        if stop > start:
            self._flush_rows(conn, p, tls, seg, start, stop)
        elif seg.merges:  # decided by the row being linked, which reads the store before it is stored itself
            self._merge_all(conn, seg)
        seg.start = stop
        seg.new.clear()
        seg.merges.clear()

    def _flush_rows(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, start: int,
                    stop: int) -> None:
        rows = p.frame.slice(start, stop - start).with_columns(pl.Series("tl", tls[start:stop], dtype=pl.Int64))
        acc = rows.group_by("tl", maintain_order=True).agg(_AGGS).with_columns(
            pl.min_horizontal("tmin", "t_queued").alias("t0"),
            pl.when(pl.col("job_id") == "").then(None).otherwise(pl.col("job_id")).alias("job_id"),
            pl.when(pl.col("rcpt_domain") == "").then(None).otherwise(pl.col("rcpt_domain")).alias("rcpt_domain"),
        )
        is_new = pl.col("tl").is_in(list(seg.new))
        new = acc.filter(is_new)
        old = acc.filter(~is_new)
        if new.height:
            self._insert_new(conn, new, seg.new)
            if self._keyed_from == KEYED_EVERY:  # ids given out again in a generation with a filter (Ingestor.write)
                self._keyed_tls.extend(seg.new)
        if old.height:
            conn.executemany(_UPDATE_TL, _rows(
                old, "t_attempt", "orig", "sender", *_LATEST_FIELDS, "t_last", "t_queued", "t_done", "flags",
                "attempts", "tl", *(f"t_{name}" for name in _LATEST_FIELDS)))
            conn.executemany(_UPDATE_T0, _rows(old, "t0", "tl", "t0"))
            mids = old.filter(pl.col("mid_h").is_not_null())
            if mids.height:
                conn.executemany(_UPDATE_MID, _rows(mids, "mid_h", "message_id", "tl"))
                self._keyed_tls.extend(mids.filter(pl.col("tl") < self._keyed_from).get_column("tl").to_list())
            jobs = old.filter(pl.col("job_h").is_not_null())
            if jobs.height:
                conn.executemany(_UPDATE_JOB, _rows(jobs, "job_h", "job_id", "tl"))
        if seg.merges:  # a row linked before a merge in this segment names the loser
            find = self._find
            rows = rows.with_columns(pl.Series("tl", [find(tl) for tl in tls[start:stop]], dtype=pl.Int64))
        history = self.keep_history
        if history:
            conn.executemany(_INSERT_EV, _rows(rows, "eid", "tl", "code", "t", *_EVENT_FIELDS, "extra"))
        self._merge_all(conn, seg)
        if history:
            self._flows_of(conn, rows)

    def _merge_all(self, conn: sqlite3.Connection, seg: Segment) -> None:
        """The segment's merges: each loser's events and summary go to its winner, and the loser is deleted."""
        history = self.keep_history
        for winner, loser in seg.merges:
            if history:
                conn.execute("UPDATE corr_events SET tl=? WHERE tl=?", (winner, loser))
            conn.execute(_MERGE, (winner, loser))
            conn.execute("DELETE FROM corr_timelines WHERE id=?", (loser,))
            if winner < self._keyed_from:
                self._keyed_tls.append(winner)

    def _insert_new(self, conn: sqlite3.Connection, new: pl.DataFrame, qdays: dict[int, int]) -> None:
        fallback = new.filter(pl.col("isp").is_null() & pl.col("rcpt_any").is_not_null())
        if fallback.height:  # a new timeline no delivery classified: the ISP of its recipient domain
            isp = self._isp
            vals = [isp(r, "") for r in fallback.get_column("rcpt_any").to_list()]
            new = new.update(pl.DataFrame({"tl": fallback.get_column("tl"), "isp": pl.Series(vals, dtype=pl.String)}),
                             on="tl", how="left")
        new = new.with_columns(pl.col("tl").replace_strict(list(qdays), list(qdays.values()), default=None,
                                                           return_dtype=pl.Int64).alias("qday"))
        conn.executemany(_INSERT_TL, _rows(
            new, "tl", "mid_h", "message_id", "job_h", "job_id", "rcpt_h", "rcpt", "rcpt_domain", "orig", "sender",
            "vmta", "vmta_pool", "queue", "isp", "t0", "t_last", "t_queued", "t_done", "flags", "attempts", "qday",
            "scope", "t_attempt"))

    def _flows_of(self, conn: sqlite3.Connection, rows: pl.DataFrame) -> None:
        """Flow counts of a segment: d/b/t by their own row, f/rb under the vmta and isp of their timeline."""
        counts = [(pl.col("code") == code).sum().cast(pl.Int64).alias(name)
                  for code, name in zip(_FLOW_CODES, _FLOW_COUNTS, strict=True)]
        direct = rows.filter(pl.col("code").is_in([D, B, T]))
        if direct.height:
            self._flow_parts.append(direct.with_columns(pl.col("isp").fill_null("")).group_by(_FLOW_KEY).agg(counts))
        reports = rows.filter(pl.col("code").is_in([F, RB]))
        if reports.height:  # read after the flush: the timeline's vmta and isp as this segment left them
            find = self._find
            ids = [find(tl) for tl in reports.get_column("tl").to_list()]
            info: dict[int, tuple[str, str, str]] = {}
            uniq = sorted(set(ids))
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                sql = f"SELECT id, vmta, isp, sender FROM corr_timelines WHERE id IN ({','.join('?' * len(chunk))})"
                for tl, vmta, isp, sender in conn.execute(sql, chunk):
                    info[tl] = (vmta or "", isp or "", sender or "")
            keyed = []
            for tl, sender in zip(ids, reports.get_column("sender").to_list(), strict=True):
                vmta, isp, tl_sender = info.get(tl, ("", "", ""))
                keyed.append((tl_sender if sender in ("", PLACEHOLDER_NONE) else sender, vmta, isp))
            senders, vmtas, isps = zip(*keyed, strict=True)
            part = reports.select("bucket", "code").with_columns(
                pl.Series("sender", senders, dtype=pl.String), pl.Series("vmta", vmtas, dtype=pl.String),
                pl.Series("isp", isps, dtype=pl.String))
            self._flow_parts.append(part.group_by(_FLOW_KEY).agg(counts))

    def _write_flows(self, conn: sqlite3.Connection) -> None:
        """The write's flow counts, summed over all its batches, as one upsert per (bucket, sender, vmta, isp)."""
        parts = self._flow_parts
        if not parts:
            return
        total = pl.concat([p.select(*_FLOW_SCHEMA).cast(_FLOW_SCHEMA) for p in parts]).group_by(_FLOW_KEY).agg(
            pl.col(name).sum() for name in _FLOW_COUNTS)
        parts.clear()
        conn.executemany(_FLOW_UPSERT, _rows(total.sort(_FLOW_KEY), *_FLOW_KEY, *_FLOW_COUNTS))

