"""Stage 2 of a write, link: find or create each record's timeline, in file order.

The rules (Message-Id + rcpt, then jobId + rcpt or sender + timeQueued + rcpt, then the report
fallbacks) are described in ingest.py. Links found or created are kept in a bounded int-keyed
cache; misses the key filter cannot rule out are probed in bulk with one VALUES join per group; a
record whose two keys name two timelines merges them (lower id wins). This is the only per-row
Python loop of a write: it decides a timeline id per row, and writes.py aggregates the rest.
"""

from __future__ import annotations

import sqlite3

from correlator import store
from correlator.prepare import NO_DAY_MIX, REPORTS, B, D, Prepared, T, _slice_mix
from correlator.writes import Segment

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

        A key with a day is looked up in that day's slices and the no-day ones; one without (a report)
        in every slice: each (slice, hash, rcpt) row of the VALUES list is one index seek. The two
        newest generations are tried first, and only the keys not found there in the older ones: a
        record mostly belongs to a recent message, and every id of an older generation is lower, so
        the newest timeline still wins.
        """
        if not wanted:
            return
        gen = store.generation_of_slice
        cut = max(map(gen, self._days)) - 1
        recent = {d: [v for v in vs if gen(v) >= cut] for d, vs in self._day_slices.items()}
        older = {d: [v for v in vs if gen(v) < cut] for d, vs in self._day_slices.items()}
        left = self._probe_in(conn, column, wanted, recent)
        if left and any(older.values()):
            self._probe_in(conn, column, left, older)

    def _probe_in(self, conn: sqlite3.Connection, column: str, wanted: dict[int, tuple[int, int, int | None]],
                  by_day: dict[int, list[int]]) -> dict[int, tuple[int, int, int | None]]:
        """Probe `wanted` in these slices (day -> its slices); returns the keys not found."""
        link = self._link
        every = sorted(v for vs in by_day.values() for v in vs)
        undated = by_day.get(store.NO_DAY, [])
        items = list(wanted.items())
        found: set[int] = set()
        params: list[int] = []
        rows = 0

        def run() -> None:
            marks = ",".join(["(?,?,?,?)"] * rows)
            sql = (f"SELECT v.column4, t.id FROM (VALUES {marks}) AS v JOIN corr_timelines AS t"
                   f" ON t.qday = v.column1 AND t.{column} = v.column2 AND t.rcpt_h = v.column3 ORDER BY t.id")
            for pos, tl in conn.execute(sql, params):
                link[items[pos][0]] = tl
                found.add(pos)

        for pos, (_key, (h, rh, qd)) in enumerate(items):
            for value in every if qd is None else by_day.get(qd, []) + undated:
                params += (value, h, rh, pos)
                rows += 1
            if rows >= _PROBE_CHUNK:
                run()
                params, rows = [], 0
        if rows:
            run()
        return {key: item for pos, (key, item) in enumerate(items) if pos not in found}

    def _mirror(self, bare: int, tl: int) -> None:
        """A key the record adds to an existing timeline is stored under *that timeline's* day slice:
        put it there in the cache too, as a probe would find it (newest timeline wins), so the cache
        stays complete. Unknown slice (not created by this cache): leave the complete mode."""
        value = self._tl_qday.get(tl)
        if value is None:
            self._complete = False
            return
        qday = store.day_of_slice(value)
        key = bare ^ (NO_DAY_MIX if qday == store.NO_DAY else (self._mixes.get(qday) or _slice_mix(qday, self._mixes)))
        have = self._link.get(key)
        if have is None or have < tl:
            self._link[key] = tl

    def _add_slice(self, conn: sqlite3.Connection, value: int) -> None:
        conn.execute("INSERT OR IGNORE INTO corr_days VALUES (?)", (value,))
        self._note_slice(value)

    def _note_slice(self, value: int) -> None:
        if value not in self._days:
            self._days.add(value)
            self._day_slices.setdefault(store.day_of_slice(value), []).append(value)

    def _link_all(self, conn: sqlite3.Connection, p: Prepared) -> None:
        """In file order: find or create each row's timeline (merging two when a row names both), then flush.

        Only the decisions are made here, one row at a time; what the rows add to their timelines is
        aggregated per timeline by writes.py.
        """
        link, alias, find = self._link, self._alias, self._find
        slice_of, day_of_slice = store.slice_of, store.day_of_slice
        days = self._days
        reports = REPORTS
        no_day = store.NO_DAY
        tls: list[int] = []
        seg = Segment()
        new = seg.new
        for i, (code, mk, mkn, jk, jkn, smix, qd) in enumerate(
                zip(p.code, p.mk, p.mkn, p.jk, p.jkn, p.smix, p.qd, strict=True)):
            a = b = None
            if mk is not None:
                a = link.get(mk)
                if a is None and mkn is not None:
                    a = link.get(mkn)
            if jk is not None:
                b = link.get(jk)
                if b is None and jkn is not None:
                    b = link.get(jkn)
            if alias:
                a, b = find(a), find(b)
            if a is not None and b is not None and a != b:
                tl: int | None = a if a < b else b
                loser = b if a < b else a
                alias[loser] = tl
                seg.merges.append((tl, loser))
                self._complete = False  # the winner now holds keys in slices the cache does not name
            else:
                tl = a if a is not None else b
            if tl is None and code in reports:
                tl = self._report_link(conn, p, tls, seg, i)
            if self._complete and tl is not None:
                if mk is not None and a is None:
                    self._mirror(mk ^ smix, tl)
                if jk is not None and b is None:
                    self._mirror(jk ^ smix, tl)
            if tl is None:
                tl = self._next_tl
                self._next_tl += 1
                value = slice_of(no_day if qd is None else qd, tl)
                if value not in days:
                    self._add_slice(conn, value)
                new[tl] = value
                if self._complete:
                    self._tl_qday[tl] = value
            if mk is not None:
                link[mk] = tl
                if smix:
                    link[mk ^ smix] = tl  # the bare key, which reports look up
                elif tl in new and day_of_slice(new[tl]) == no_day:
                    link[mk ^ NO_DAY_MIX] = tl  # the no-day slice, where dated records look second
            if jk is not None:
                link[jk] = tl
                if smix:
                    link[jk ^ smix] = tl
                elif tl in new and day_of_slice(new[tl]) == no_day:
                    link[jk ^ NO_DAY_MIX] = tl
            tls.append(tl)
        self._flush(conn, p, tls, seg)

    def _report_link(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, i: int) -> int | None:
        """f/rb/rs that matched no key: the only recipient of its Message-Id, else rcpt + orig in the window."""
        self._flush(conn, p, tls, seg)  # the probes below must see this batch's rows
        mh, rh = p.mh[i], p.rh[i]
        if mh is not None and rh is None:
            ids = conn.execute(f"SELECT id FROM corr_timelines WHERE {store.DAYS} AND mid_h=? LIMIT 2",
                               (mh,)).fetchall()
            if len(ids) == 1:
                return self._find(ids[0][0])
        if rh is not None:
            return self._fallback(conn, rh, p.orig_l[i], p.t[i])
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
