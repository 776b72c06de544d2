"""Stage 2 of a write, link: find or create each record's timeline, in file order, and accumulate.

The rules (Message-Id + rcpt, then jobId + rcpt or sender + timeQueued + rcpt, then the report
fallbacks) are described in ingest.py. Links found or created are kept in a bounded int-keyed
cache; misses are probed in bulk with one VALUES join per batch; a record whose two keys name two
timelines merges them (lower id wins). What one write adds to one timeline is an accumulator
(below), turned into INSERTs and UPDATEs by writes.py.
"""

from __future__ import annotations

import json
import sqlite3

from correlator import store
from correlator.prepare import DELIVERY, NO_DAY_MIX, RB, REPORTS, TQ, B, D, F, R, T, _slice_mix
from correlator.writes import (
    A_ATT,
    A_FLAGS,
    A_ISP,
    A_JOB,
    A_JOB_H,
    A_KEYS,
    A_MID,
    A_MID_H,
    A_NEW,
    A_ORIG,
    A_POOL,
    A_QDAY,
    A_QUEUE,
    A_SENDER,
    A_T0,
    A_TDONE,
    A_TLAST,
    A_TQ,
    A_VMTA,
    _acc,
    _Pending,
)

_FLOW_COLUMN = {D: 0, B: 1, T: 2, F: 3, RB: 4}  # index into the corr_flows counters
_PROBE_CHUNK = 300  # VALUES rows per probe statement

class Linker:
    """Mixin of Ingestor: stage 2 (owns the use of the link cache, aliases and day slices)."""

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

    def _mirror(self, bare: int, tl: int) -> None:
        """A key the record adds to an existing timeline is stored under *that timeline's* day slice:
        put it there in the cache too, as a probe would find it (newest timeline wins), so the cache
        stays complete. Unknown slice (not created by this cache): leave the complete mode."""
        qday = self._tl_qday.get(tl)
        if qday is None:
            self._complete = False
            return
        key = bare ^ (NO_DAY_MIX if qday == store.NO_DAY else (self._mixes.get(qday) or _slice_mix(qday, self._mixes)))
        have = self._link.get(key)
        if have is None or have < tl:
            self._link[key] = tl

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
                self._complete = False  # the winner now holds keys in slices the cache does not name
            else:
                tl = a if a is not None else b
            if tl is None and code in REPORTS:
                tl = self._report_link(conn, p, mh, rh, orig_l, t)
            if self._complete and tl is not None:
                if mk is not None and a is None:
                    self._mirror(mk ^ smix, tl)
                if jk is not None and b is None:
                    self._mirror(jk ^ smix, tl)
            rdom = rcpt_l.rpartition("@")[2]
            if tl is None:
                tl = self._next_tl
                self._next_tl += 1
                qday = store.NO_DAY if qd is None else qd
                if qday not in days:
                    self._add_day(conn, qday)
                acc = accs[tl] = _acc(tl, True, qday, rh, rstore, rdom or None)
                if self._complete:
                    self._tl_qday[tl] = qday
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
