"""Stage 2 of a write, link: find or create each record's timeline, in file order.

The rules (Message-Id + rcpt, then jobId + rcpt or sender + timeQueued + rcpt, then the report
fallbacks) are described in ingest.py, and what a record may join in docs/api.md ("How timelines are
built"): a record never joins a timeline holding another Message-Id; a report joins the latest send of
its key queued and delivered before it; a timeline started by a report read first is joined by such a
send's delivery only (by any key the send holds). Links found or created are kept in a bounded
int-keyed cache; misses the key filter cannot rule out are probed in bulk with one VALUES join per
group, in the slices where timelines of the key's timeQueued may be (a few, however big the store); a
record whose two keys name two timelines merges them (lower id wins). This is the only per-row Python
loop of a write: it decides a timeline id per row, and writes.py aggregates the rest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from correlator import genfilter, store
from correlator.prepare import NO_DAY_MIX, REPORTS, B, D, Prepared, R, T, rcpt_domain, scope_mix
from correlator.writes import Segment
from exporter.redact import without_address, without_addresses, without_recipient

_PROBE_CHUNK = 300  # VALUES rows per probe statement
_KEY_INDEX = {"mid_h": "corr_tl_mid", "job_h": "corr_tl_job"}
_BACK_FIRST = 8
"""Older generations a probe seeks in its first step back (then 16, 32, ...): a report (no timeQueued) may be in any
of the hundreds of a full store, and is most often about a recent message."""
SENDS = store.FLAG[R] | store.FLAG[T] | store.FLAG[D] | store.FLAG[B]
"""Flags of the records of a send: a timeline without any holds reports only (read before their send)."""
DONE = store.FLAG[D] | store.FLAG[B]
DELIVERED = frozenset((D, B))
_STATE = "SELECT id, t_queued, t0, flags, t_done, mid_h, job_h FROM corr_timelines WHERE id IN ({})"
State = tuple[float | None, float, int, float | None, int | None, int | None]
"""(t_queued, t0, flags, t_done, mid_h, job_h) of a stored timeline: what says whether a record may join it."""


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

    def _probe(self, conn: sqlite3.Connection, column: str,
               wanted: dict[int, tuple[int, int, float | None]]) -> None:
        """Fill the link cache for `wanted` keys with one VALUES join per chunk (newest timeline wins).

        A key of a dated record (its scope: the record's timeQueued) is looked up in the slices where
        timelines queued in its SCOPE_BUCKET were created (`corr_scopes`), its day's slices written before
        scopes, and the undated ones (few: they fill apart, see `_undated_slice`); one without (a report)
        in every slice. Each (slice, hash, rcpt) row of the VALUES list is one index seek, so what a probe
        costs does not grow with the number of generations a day holds. The undated slices and the two
        newest generations are tried first, and the older generations only for keys not found there with
        an id of a recent generation: every id of an older generation is lower, so the newest timeline wins.
        Those are sought newest first, _BACK_FIRST generations, then twice as many, and so on, each step only
        for the keys no step found yet: a late report, which may be in any of the hundreds of generations of a
        full store, costs about as many seeks as its message is generations old, not as the store holds. A dated
        key seeks the undated slices by its recipient (`_probe_undated`, as many seeks): what it finds there holding
        reports only is noted as waiting for a send of that recipient.

        A key without a scope (a report's) names the latest send of it found, by timeQueued (`_rank_to`); a dated
        key found on an undated timeline is cached in its undated form (the key ^ its scope's mix ^ NO_DAY_MIX),
        where a dated record looks second and joins only when it may (`_undated_join`): found under the dated key
        itself, it hid the timeline of the record's own timeQueued, and every send of the key joined it.
        """
        self._keep_caches()
        if not wanted:
            return
        gen = store.generation_of_slice
        cut = max(map(gen, self._days)) - 1
        boundary = max(0, cut - 1) << store.GEN_BITS
        """Lowest id of a recent generation: a key found only below it may have a newer timeline in an older slice."""
        undated = self._day_slices.get(store.NO_DAY, [])
        bucket, day = store.SCOPE_BUCKET, store.DAY
        scopes = self._scopes.read(conn, {int(scope // bucket) for _, _, scope in wanted.values() if scope is not None})
        legacy = self._legacy
        parts: dict[int | None, tuple[list[int], list[int]]] = {}

        def split(scope: float | None) -> tuple[list[int], list[int]]:
            """(first, then) slices a key of this scope may be stored in: the undated slices (a report's key; a
            dated key seeks them by recipient: `_probe_undated`) and plain days (numbered apart from the
            generations, so any id may be in any of them) and the recent dated ones first, then the older dated
            ones, newest first."""
            b = None if scope is None else int(scope // bucket)
            got = parts.get(b)
            if got is None:
                where = ([v for v in self._days if store.day_of_slice(v) != store.NO_DAY] if b is None  # a report
                         else scopes.get(b, []) + legacy.get(b * bucket // day, []))
                got = parts[b] = ((undated if b is None else []) + [v for v in where if gen(v) >= cut or not gen(v)],
                                  sorted((v for v in where if 0 < gen(v) < cut), key=gen, reverse=True))
            return got

        ruled_out = self._gen_filters.ruled_out
        plans: dict[int, tuple[list[int], list[int]]] = {}
        for key, (h, rh, scope) in wanted.items():
            first, then = split(scope)
            if scope is None:  # a report: not in the generations whose filter rules its keys out (genfilter.py)
                out = ruled_out(h if column == "mid_h" else None, rh)
                first, then = genfilter.keep(first, out), genfilter.keep(then, out)
            plans[key] = (first, then)
        self._probe_undated(conn, column, {key: item for key, item in wanted.items() if item[2] is not None}, undated)
        left = self._probe_in(conn, column, wanted, lambda key: plans[key][0], boundary)
        start, size = 0, _BACK_FIRST
        while left:  # the older slices, newest first, in growing steps: a key found in one is sought no further back
            stop = start + size
            left = self._probe_in(conn, column, left, lambda key, a=start, b=stop: plans[key][1][a:b], 1)
            left = {key: item for key, item in left.items() if len(plans[key][1]) > stop}
            start, size = stop, size * 2

    def _probe_in(self, conn: sqlite3.Connection, column: str, wanted: dict[int, tuple[int, int, float | None]],
                  slices_of: Callable[[int], list[int]],
                  boundary: int) -> dict[int, tuple[int, int, float | None]]:
        """Probe `wanted` in the slices `slices_of` gives for each key (a newer timeline than the one
        cached wins; for a key without a scope, the later send: `_rank_to`); returns the keys not found with an id
        of `boundary` or above (a dated key's undated timelines do not count: its own may be in an older slice).

        A dated key joins a timeline of its own scope or an unscoped one (undated, or written before scopes).
        """
        link = self._link
        items = list(wanted.items())
        found: set[int] = set()
        params: list[int | float | None] = []
        rows = 0

        index = _KEY_INDEX[column]
        no_day, day_of_slice, mixes = store.NO_DAY, store.day_of_slice, self._mixes

        def run() -> None:
            marks = ",".join(["(?,?,?,?,?)"] * rows)
            # INDEXED BY: with the scope test the key index no longer covers the query, and SQLite may then
            # build an automatic index over the whole table for each probe (measured: 0.2 s instead of 2 ms)
            sql = (f"SELECT v.column4, t.id, t.qday, t.t_queued FROM (VALUES {marks}) AS v"
                   f" JOIN corr_timelines AS t INDEXED BY {index}"
                   f" ON t.qday = v.column1 AND t.{column} = v.column2 AND t.rcpt_h = v.column3"
                   " AND (v.column5 IS NULL OR t.scope IS NULL OR t.scope = v.column5) ORDER BY t.id")
            for pos, tl, qday, queued in conn.execute(sql, params):
                key, (_h, _rh, scope) = items[pos]
                if scope is None:
                    self._rank_to(key, tl, queued)
                elif day_of_slice(qday) == no_day:
                    key ^= (mixes.get(scope) or scope_mix(scope)) ^ NO_DAY_MIX
                    have = link.get(key)
                    if have is None or have < tl:
                        link[key] = tl
                    continue
                else:
                    have = link.get(key)
                    if have is None or have < tl:
                        link[key] = tl
                if tl >= boundary:
                    found.add(pos)
            self.probe_seeks += rows

        for pos, (key, (h, rh, scope)) in enumerate(items):
            for value in slices_of(key):
                params += (value, h, rh, pos, scope)
                rows += 1
            if rows >= _PROBE_CHUNK:
                run()
                params, rows = [], 0
        if rows:
            run()
        return {key: item for pos, (key, item) in enumerate(items) if pos not in found}

    def _probe_undated(self, conn: sqlite3.Connection, column: str, wanted: dict[int, tuple[int, int, float | None]],
                       undated: list[int]) -> None:
        """Probe dated keys (`wanted`) in the undated slices, by recipient: a timeline there holding the key is cached
        under the key's undated form (where a dated record looks second, `_undated_join`), and every one holding
        reports only, whatever its keys, as a report waiting for its send (`_waiting`): a delivery of that recipient
        may hold the key the report waits under although the delivery's record does not carry it (`_waiting_for`).
        One seek per key and undated slice, as a probe of the key itself costs there."""
        if not wanted or not undated:
            return
        link, mixes, waiting = self._link, self._mixes, self._waiting
        items = list(wanted.items())
        rows = [(value, rh, pos) for pos, (_key, (_h, rh, _scope)) in enumerate(items) for value in undated]
        for start in range(0, len(rows), _PROBE_CHUNK):
            part = rows[start:start + _PROBE_CHUNK]
            marks = ",".join(["(?,?,?)"] * len(part))
            sql = (f"SELECT v.column3, t.id, t.{column}, t.scope, t.flags, t.mid_h FROM (VALUES {marks}) AS v"
                   " JOIN corr_timelines AS t INDEXED BY corr_tl_rcpt ON t.qday = v.column1 AND t.rcpt_h = v.column2")
            for pos, tl, h, scope, flags, mid in conn.execute(sql, [x for row in part for x in row]):
                key, (want, rh, own) = items[pos]
                if not flags & SENDS:
                    waiting.setdefault(rh, {})[tl] = mid
                if h == want and (scope is None or scope == own):
                    key ^= (mixes.get(own) or scope_mix(own)) ^ NO_DAY_MIX
                    have = link.get(key)
                    if have is None or have < tl:
                        link[key] = tl
            self.probe_seeks += len(part)

    def _rank_to(self, key: int, tl: int, queued: float | None) -> None:
        """Let the key without a scope (what reports look up) name `tl`, of this timeQueued, if it is the later send
        of the key: by timeQueued (an undated timeline below any dated one), then by id. Not the one stored last: a
        resend's deferral read before the acct file gave it the lower id, and its report joined the older send."""
        have = self._link.get(key)
        if have is not None:
            theirs = self._ranks.get(key)
            if store.send_rank(queued, tl) < store.send_rank(theirs, self._find(have)):
                return
        self._link[key] = tl
        self._ranks[key] = queued

    def _keep_caches(self) -> None:
        """The caches of this module that go with the link cache: made at the first use, and emptied with it (an empty
        link cache has been dropped by Ingestor.forget, or is a store's first)."""
        if not self._link or getattr(self, "_ranks", None) is None:
            self._ranks: dict[int, float | None] = {}
            """Key without a scope -> the timeQueued of the timeline it names (see `_rank_to`)."""
            self._mids: dict[int, int | None] = {}
            """Timeline -> its Message-Id hash (None: none yet), for those linked since the cache was dropped."""
            self._sent: set[int] = set()
            """Undated timelines known to hold a send (no report waiting there alone)."""
            self._unsure: set[int] = set()
            """Keys without a scope that a dated record of this group cached while other timelines of them may be
            stored that the cache does not know (it is not complete): dropped at the group's end, so a report probes."""
            self._waiting: dict[int, dict[int, int | None]] = {}
            """Recipient hash -> undated timelines holding reports only (read before their send), each with its
            Message-Id hash: those created since the cache was dropped, and those a probe of a dated key of the
            recipient found (`_probe_undated`). A delivery of the recipient looks there by every key its send holds."""

    def _mirror(self, bare: int, tl: int) -> None:
        """A key the record adds to an existing timeline is stored under *that timeline's* scope: put it
        there in the cache too, as a probe would find it (newest timeline wins), so the cache stays complete.
        Unknown scope (a timeline not created by this cache): leave the complete mode."""
        mix = self._tl_mix.get(tl)
        if mix is None:
            self._complete = False
            return
        key = bare ^ mix
        have = self._link.get(key)
        if have is None or have < tl:
            self._link[key] = tl

    def _add_slice(self, conn: sqlite3.Connection, value: int) -> None:
        conn.execute("INSERT OR IGNORE INTO corr_days (day, legacy) VALUES (?, 0)", (value,))
        self._note_slice(value, legacy=False)
        self._search_changed = True

    def _note_slice(self, value: int, legacy: bool) -> None:
        if value not in self._days:
            self._days.add(value)
            day = store.day_of_slice(value)
            self._day_slices.setdefault(day, []).append(value)
            if legacy and day != store.NO_DAY:
                self._legacy.setdefault(day, []).append(value)

    def _undated_slice(self) -> int:
        """The slice of a new undated timeline: undated slices fill one after the other, GEN_BITS timelines each,
        numbered apart from the dated generations. So there are few of them (every dated key is probed in all),
        and inserts still land in the newest one."""
        value, fill = self._undated
        if fill >= 1 << store.GEN_BITS:
            value, fill = store.undated_slice(store.generation_of_slice(value) + 1), 0
        self._undated = (value, fill + 1)
        return value  # listed in corr_days by the caller, as a dated slice is

    def _link_all(self, conn: sqlite3.Connection, p: Prepared) -> None:
        """In file order: find or create each row's timeline (merging two when a row names both), then flush.

        Only the decisions are made here, one row at a time; what the rows add to their timelines is
        aggregated per timeline by writes.py. A row whose Message-Id is set never joins a timeline that holds another
        (`_mid_of`); a report joins only a send queued and delivered before it (`_for_report`); a dated record joins
        an undated timeline only as `_undated_join` says, and its delivery takes in the reports waiting there for it
        (`_waiting_for`).
        """
        self._keep_caches()
        link, alias, find = self._link, self._alias, self._find
        mids = self._mids
        slice_of, day_of_slice = store.slice_of, store.day_of_slice
        days = self._days
        reports = REPORTS
        no_day = store.NO_DAY
        bucket = store.SCOPE_BUCKET
        scoped = (None, None)  # the last (bucket, slice) registered: most creations repeat it
        add_scope = self._scopes.add
        tls: list[int] = []
        seg = Segment()
        new = seg.new
        for i, (code, mk, mkn, jk, jkn, smix, qd, qs, mh) in enumerate(
                zip(p.code, p.mk, p.mkn, p.jk, p.jkn, p.smix, p.qd, p.qs, p.mh, strict=True)):
            a = b = None
            if mk is not None:
                a = link.get(mk)
            if jk is not None:
                b = link.get(jk)
            if alias:
                a, b = find(a), find(b)
            report = qs is None and code in reports
            a0, b0 = a, b  # what the keys named: a report's key keeps naming the latest send
            if qs is not None:  # dated: a timeline of its own timeQueued, else an undated one its keys name, if fit
                if a is None and mkn is not None and (u := link.get(mkn)) is not None:
                    a = self._undated_join(conn, p, tls, seg, i, "mid_h", mk, find(u))
                if b is None and jkn is not None and (u := link.get(jkn)) is not None:
                    b = self._undated_join(conn, p, tls, seg, i, "job_h", jk, find(u))
            if report and (a is not None or b is not None):
                a, b = self._for_report(conn, p, tls, seg, i, a, b)
            elif mh is not None and b is not None and b != a:
                mid_b = self._mid_of(conn, p, tls, seg, b)
                if mid_b is not None and mid_b != mh:  # another message of the job: its key names that one
                    b = None
            if a is not None and b is not None and a != b and qs is None \
                    and (apart := self._two_sends(conn, p, tls, seg, i, a, b)) is not None:
                tl: int | None = apart
                if tl != a:  # the key that named the other send keeps naming it
                    mk = None
                if tl != b:
                    jk = None
            elif a is not None and b is not None and a != b:
                tl = a if a < b else b
                loser = b if a < b else a
                self._merge(seg, tl, loser)
            else:
                tl = a if a is not None else b
            if tl is not None and qs is not None and (mkn is not None or jkn is not None):
                tl = self._waiting_for(conn, p, tls, seg, i, tl)
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
                value = self._undated_slice() if qd is None else slice_of(qd, tl)
                if value not in days:
                    self._add_slice(conn, value)
                if qs is not None and scoped != (qb := int(qs // bucket), value):
                    add_scope(conn, qb, value)  # probes of the bucket will seek this slice
                    scoped = (qb, value)
                new[tl] = value
                mids[tl] = mh
                if self._complete:
                    self._tl_mix[tl] = smix or NO_DAY_MIX
                if qd is None and code in reports and (rh := p.rh[i]) is not None:  # a report waits for its send
                    self._waiting.setdefault(rh, {})[tl] = mh
            elif mh is not None:  # (it joined no timeline holding another)
                mids[tl] = mh
            fresh = tl in new and day_of_slice(new[tl]) == no_day  # (an undated timeline this row created)
            if mk is not None:
                self._keys(mk, smix, tl, qs, a0, report, fresh)
            if jk is not None:
                self._keys(jk, smix, tl, qs, b0, report, fresh)
            tls.append(tl)
        self._flush(conn, p, tls, seg)
        for key in self._unsure:
            link.pop(key, None)
            self._ranks.pop(key, None)
        self._unsure.clear()

    def _keys(self, key: int, smix: int, tl: int, qs: float | None, had: int | None, report: bool,
              fresh: bool) -> None:
        """Cache a row's key as naming `tl`: a dated row's in its scope, and without a scope (what reports look up)
        as a probe finds it, the latest send (`_rank_to`); an undated row's as before, or for a report only when it
        named nothing (`had`); the undated form too when the row created an undated timeline (`fresh`)."""
        link = self._link
        if smix:
            link[key] = tl
            bare = key ^ smix
            if bare not in link and not self._complete:  # stored sends of it may be later: a report probes them
                self._unsure.add(bare)
            self._rank_to(bare, tl, qs)
            return
        if report:  # the key names the latest send of it already (a report joined an older one, or waits)
            if had is None:
                self._rank_to(key, tl, None)
        else:  # an undated send: as the newest timeline of its key
            link[key] = tl
            self._ranks[key] = None
        if fresh:
            link[key ^ NO_DAY_MIX] = tl  # the no-day slice, where dated records look second

    def _merge(self, seg: Segment, winner: int, loser: int) -> None:
        self._alias[loser] = winner
        seg.merges.append((winner, loser))
        self._complete = False  # the winner now holds keys in slices the cache does not name
        self._mids.pop(winner, None)  # (read again after the merge is stored)
        self._mids.pop(loser, None)

    def _states(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, i: int,
                ids: set[int] | tuple[int, ...]) -> dict[int, State]:
        """The stored state of these timelines as the rows before row `i` leave them: the segment is flushed first
        when a row of it may have changed them (one of the row's recipient, a merge, a timeline it created)."""
        if seg.merges or any(tl in seg.new for tl in ids) or _pending_rows_of(p, seg, len(tls), None, p.rh[i]):
            self._flush(conn, p, tls, seg)
        marks = ",".join("?" * len(ids))
        return {row[0]: row[1:] for row in conn.execute(_STATE.format(marks), list(ids))}

    def _mid_of(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, tl: int) -> int | None:
        """The Message-Id hash timeline `tl` holds (None: none). Known for those linked since the cache was dropped
        (a row of the segment that gave it one is one of them), else read (after a pending merge is stored)."""
        mids = self._mids
        if tl in mids:
            return mids[tl]
        if seg.merges:
            self._flush(conn, p, tls, seg)
        row = conn.execute("SELECT mid_h FROM corr_timelines WHERE id = ?", (tl,)).fetchone()
        mids[tl] = mid = row[0] if row is not None else None
        return mid

    def _jh(self, p: Prepared, i: int) -> int | None:
        return p.frame.get_column("jh")[i]

    def _undated_join(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, i: int, column: str,
                      key: int, u: int) -> int | None:
        """Dated row `i`'s key (`key`, scoped) names no timeline of its timeQueued in the cache and its undated form
        names `u`: the timeline of its timeQueued if the store holds one (the cache is not complete: the probe of the
        key was skipped, its undated form being cached), else `u` if the row may join it (`_undated_fits`), else None
        (the row starts its own: a report waiting there takes it in with its delivery, `_waiting_for`)."""
        if not self._complete:
            h = p.mh[i] if column == "mid_h" else self._jh(p, i)
            if h is not None and p.rh[i] is not None:
                self._probe(conn, column, {key: (h, p.rh[i], p.qs[i])})
                own = self._link.get(key)
                if own is not None:
                    return self._find(own)
        st = self._states(conn, p, tls, seg, i, (u,)).get(u)
        if st is None or not _undated_fits(st, p.code[i], p.qs[i], p.t[i], p.mh[i]):
            return None
        return u

    def _waiting_for(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, i: int,
                     tl: int) -> int:
        """Dated row `i` joins `tl`, its send's timeline: reports waiting for that send in an undated timeline (read
        before any send delivered before them) are merged in once the send was queued and delivered before them (this
        row is its delivery, or one is stored), so a report read first ends where it would have joined read last.
        Those waiting under a key of the row (its undated forms), and for a delivery (d, b) those of its recipient
        (`_waiting`) waiting under any key the send holds: its deferral or reception may have brought the Message-Id
        (or jobId) the report names, which its delivery's record lacks (PMTA's acct fields have no Message-Id).
        Never one naming another Message-Id than the row or the send. Returns the row's timeline."""
        link, find, sent = self._link, self._find, self._sent
        rh, mh = p.rh[i], p.mh[i]
        found: dict[int, bool] = {}  # candidate -> named by a key of the row
        for undated in (p.mkn[i], p.jkn[i]):
            u = link.get(undated) if undated is not None else None
            if u is not None:
                found[find(u)] = True
        by_rcpt = self._waiting.get(rh) if rh is not None and p.code[i] in DELIVERED else None
        held = mh if mh is not None else self._mids.get(tl)  # (the send's Message-Id, when known without a read)
        for u, mid in list(by_rcpt.items()) if by_rcpt else ():
            if (w := find(u)) != u or w in sent:  # merged into another timeline, or joined by a send: not waiting
                del by_rcpt[u]
            elif held is None or mid is None or mid == held:  # (another Message-Id: another message, never)
                found.setdefault(u, False)
        for u, named in found.items():
            if u == tl or u in sent:
                continue
            st = self._states(conn, p, tls, seg, i, (u, tl))
            waiting = st.get(u)
            if waiting is None or waiting[2] & SENDS:
                sent.add(u)
                if by_rcpt:
                    by_rcpt.pop(u, None)
                continue
            first, mid = waiting[1], waiting[4]  # (the earliest report)
            if mid is not None and mh is not None and mid != mh:
                continue
            if not named and not _same_send(waiting, st.get(tl), mh, self._jh(p, i)):
                continue
            if not (p.code[i] in DELIVERED and p.qs[i] <= first and p.t[i] <= first
                    or _report_fits(st.get(tl), first, mid)):
                continue
            have = self._mid_of(conn, p, tls, seg, tl)
            if mid is not None and have is not None and mid != have:
                continue
            winner, loser = (u, tl) if u < tl else (tl, u)
            self._merge(seg, winner, loser)
            if rh is not None and (here := self._waiting.get(rh)):
                here.pop(u, None)  # (it holds the send now: no longer waiting)
            if winner == u:
                sent.add(u)
            tl = winner
        return tl

    def _for_report(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, i: int,
                    a: int | None, b: int | None) -> tuple[int | None, int | None]:
        """Report row `i`'s Message-Id key names `a` and its job key `b` (the latest send of each, or None): each kept
        only if the report may be about it (`_report_fits`), else the latest send of that key it may be about (one
        index probe), else None: the report is then matched as one that matched no key. Cut at the report's `cut`
        (its time; ARRIVAL_SLACK later when that is its arrivalDate, prepare.ARRIVAL_SLACK), as every search of a
        report's send is."""
        t, mh, rh = p.cut[i], p.mh[i], p.rh[i]  # (its time, or ARRIVAL_SLACK later when that is its arrivalDate)
        st = self._states(conn, p, tls, seg, i, {tl for tl in (a, b) if tl is not None})
        if a is not None and not _report_fits(st.get(a), t, None):
            a = self._latest_sent(conn, "mid_h", mh, rh, t, None)
        if b is not None and not _report_fits(st.get(b), t, mh):
            b = self._latest_sent(conn, "job_h", self._jh(p, i), rh, t, mh)
        return a, b

    def _latest_sent(self, conn: sqlite3.Connection, column: str, h: int | None, rh: int | None, t: float,
                     mh: int | None) -> int | None:
        """The timeline of this key a report of time `t` may be about (`_report_fits`, in SQL): the latest send
        queued and delivered before it, else reports of the key waiting for their send; None if none. One seek per
        slice of the key's index (as the rcpt + orig fallback), for a report whose key's latest send was not it."""
        if h is None or rh is None:
            return None
        self.probe_seeks += len(self._days)
        row = conn.execute(
            f"SELECT id FROM corr_timelines INDEXED BY {_KEY_INDEX[column]} WHERE {store.DAYS} AND {column} = ?1"
            " AND rcpt_h = ?2 AND (?3 IS NULL OR mid_h IS NULL OR mid_h = ?3)"
            f" AND (flags & {SENDS} = 0 OR (flags & {DONE} != 0 AND t_done <= ?4 AND coalesce(t_queued, t0) <= ?4))"
            f" ORDER BY flags & {SENDS} = 0, t_queued IS NULL, t_queued DESC, id DESC LIMIT 1",
            (h, rh, mh, t)).fetchone()
        return self._find(row[0]) if row else None

    def _two_sends(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, i: int, a: int,
                   b: int) -> int | None:
        """Record `i` has no timeQueued (a report) and its Message-Id and job keys name timelines `a` and `b`: None
        when they may be one send (one of them undated, or both of one timeQueued: merge them), else the one to
        join, `b` if it holds the Message-Id too, else `a` (a Message-Id names the send of it stored last; a job, and
        the two together, are more specific). Rare: the scopes are read from the store, this segment flushed."""
        self._flush(conn, p, tls, seg)
        rows = {tl: (scope, mid_h) for tl, scope, mid_h in
                conn.execute("SELECT id, scope, mid_h FROM corr_timelines WHERE id IN (?, ?)", (a, b))}
        (scope_a, _), (scope_b, mid_b) = rows.get(a, (None, None)), rows.get(b, (None, None))
        if scope_a is None or scope_b is None or scope_a == scope_b:
            return None
        return b if mid_b is not None and mid_b == p.mh[i] else a

    def _report_link(self, conn: sqlite3.Connection, p: Prepared, tls: list[int], seg: Segment, i: int) -> int | None:
        """f/rb/rs that matched no key: without a recipient, the only recipient of its Message-Id (`_only_sent`);
        with one, rcpt + orig in the window. A recipient the ISP redacted to one of its own (`redacted@hotmail.com`)
        is not taken for that only recipient: read before its own delivery (a backfill reads files in turn), a real
        recipient's report would join another recipient of the same domain (review 2026-12-06)."""
        mh, rh = p.mh[i], p.rh[i]
        if seg.merges or _pending_rows_of(p, seg, len(tls), mh, rh):  # (a pending merge deletes a timeline the
            self._flush(conn, p, tls, seg)  # probes would count): they must see this batch's rows of its keys
        if rh is not None:
            return self._fallback(conn, rh, p.orig_l[i], p.t[i], mh, p.frame.get_column("jh")[i], p.orig_s[i],
                                  p.cut[i])
        if mh is not None:
            return self._only_sent(conn, mh, p.cut[i])
        return None

    def _only_sent(self, conn: sqlite3.Connection, mh: int, t: float) -> int | None:
        """The timeline of the only recipient of Message-Id `mh` delivered or bounced at or before `t` (a report's
        time; ARRIVAL_SLACK after it when that is its arrivalDate: `Prepared.cut`), or None: none, or two or more. A
        report of its own (recipient hidden, read early) is no recipient, nor is one with deferrals only, nor one
        delivered after that: counted, the latter made a report read in a backfill (every delivery already stored) a
        timeline of its own where, read live, it joined the one recipient delivered by then. Two rows read at most: a
        mailing's Message-Id names every recipient's timeline."""
        done = store.FLAG[D] | store.FLAG[B]
        rows = conn.execute(
            f"SELECT id FROM corr_timelines WHERE {store.DAYS} AND mid_h=? AND rcpt_h IS NOT NULL"
            f" AND flags & {done} != 0 AND t_done <= ? LIMIT 2", (mh, t)).fetchall()
        if len(rows) != 1:
            return None
        return self._find(rows[0][0])

    def _fallback(self, conn: sqlite3.Connection, rh: int, orig_l: str, t: float, mh: int | None,
                  jh: int | None, orig_s: str, cut: float) -> int | None:
        """Latest timeline of this rcpt + orig (rcpt alone if the report has no orig) begun within the window: from
        `window` before the report's time `t` to its `cut` (`t`, or ARRIVAL_SLACK later when `t` is its arrivalDate).

        Not one that names another Message-Id or jobId than the report: that is another message (the fallback is
        for the keys the acct file does not log). The report's Message-Id is then stored on the timeline it joins
        (a jobId is not, where the timeline's job key is sender + timeQueued).

        Only a timeline delivered or bounced before the report (by its `cut`): a complaint or a remote bounce comes
        after its delivery. A deferred send of another message (its delivery not read yet) is no match: joined, it took
        the report's Message-Id and a complaint before its own delivery. `fallback_window: 0` never matches.
        The sender is compared as stored (`orig_s`: without addresses when recipients are hashed) or as logged (a
        timeline stored before hashing was turned on), or in angle brackets (stored so before 2026-12-08, when a
        sender kept them)."""
        if self._window <= 0:
            return None
        done = store.FLAG[D] | store.FLAG[B]
        row = conn.execute(
            f"SELECT id FROM corr_timelines WHERE {store.DAYS} AND rcpt_h=?1 AND t0 BETWEEN ?2 AND ?3"
            " AND (?4 = '' OR orig IN (?4, ?7, '<' || ?4 || '>', '<' || ?7 || '>'))"
            " AND (?5 IS NULL OR mid_h IS NULL OR mid_h = ?5)"
            " AND (?6 IS NULL OR job_id IS NULL OR job_h = ?6)"
            f" AND flags & {done} != 0 AND t_done <= ?3 ORDER BY t0 DESC LIMIT 1",
            (rh, t - self._window, cut, orig_l, mh, jh, orig_s),
        ).fetchone()
        return self._find(row[0]) if row else None

    def _isp(self, rcpt_l: str, dsn_mta: str) -> str:
        """The ISP of a recipient's domain (its dsnMta when the domain is unknown, or when it has none: a recipient
        without `@` is never asked about as if all of it were a domain)."""
        domain = rcpt_domain(rcpt_l)
        key = (domain, dsn_mta)
        isp = self._isp_cache.get(key)
        if isp is None:
            isp = self._isp_cache[key] = self._isp_of(rcpt_l if domain else "", dsn_mta) or ""
        return isp

    def _redact(self, diag: str, rcpt_l: str | None) -> str:
        """With hashed recipients the SMTP reply must not keep the address either, nor any other."""
        if not self._hasher.hashed or not diag:
            return diag
        return reply_without_addresses(diag, rcpt_l)


def _report_fits(st: State | None, t: float, mh: int | None) -> bool:
    """May a report of time `t` (of Message-Id hash `mh`, when its job key found the timeline) be about the timeline
    of state `st`? A send queued and delivered (or bounced) before it, as the rcpt + orig fallback asks, or reports
    of its key that wait for their send; never one holding another Message-Id."""
    if st is None:
        return False
    queued, t0, flags, done, mid, _job = st
    if mh is not None and mid is not None and mid != mh:
        return False
    if not flags & SENDS:
        return True
    return bool(flags & DONE) and done is not None and done <= t and (t0 if queued is None else queued) <= t


def _same_send(waiting: State, send: State | None, mh: int | None, jh: int | None) -> bool:
    """Do the reports of state `waiting` wait under a key of the send of state `send` (as stored before the row being
    linked) or of that row (Message-Id hash `mh`, job hash `jh`)? By Message-Id, else by jobId (+ the recipient both
    have: they were found by it)."""
    mid, job = waiting[4], waiting[5]
    if mid is not None and (mid == mh or send is not None and mid == send[4]):
        return True
    return job is not None and (job == jh or send is not None and job == send[5])


def _undated_fits(st: State, code: int, qs: float, t: float, mh: int | None) -> bool:
    """May a dated row (type `code`, timeQueued `qs`, time `t`, Message-Id hash `mh`) join the undated timeline of
    state `st`? One holding a send: if the row is of that send (its timeQueued), or if the send had none (a record
    logged without it started it, as before). One holding reports only (read before their send): if the row is the
    delivery of a send queued and delivered before them, what a report read after it joins; a deferral or a
    reception is not yet (their send starts its own timeline; its delivery takes the reports in, `_waiting_for`).
    Never one holding another Message-Id."""
    queued, t0, flags, _done, mid, _job = st
    if mh is not None and mid is not None and mid != mh:
        return False
    if flags & SENDS:
        return queued is None or queued == qs
    return code in DELIVERED and qs <= t0 and t <= t0


def reply_without_addresses(diag: str, rcpt_l: str | None) -> str:
    """A remote reply as stored and served with hashed recipients: the recipient's own address (`rcpt_l`, lower
    case, when the record names one) as `<rcpt>`, every other address (a `+tag` recipient's bare address, a
    forwarding target, one percent-encoded, any address of a reply without a recipient: `tq`, a remote bounce
    without rcpt) as `<addr>`, whole. Linear in the reply's length (exporter.redact.without_addresses)."""
    if not diag:
        return diag
    if rcpt_l:
        diag = without_recipient(diag, rcpt_l)
        local = rcpt_l.rpartition("@")[0]
        if len(local) >= LOCAL_PART_MIN:
            diag = without_address(diag, f"<{local}>", "<<rcpt>>")
    return without_addresses(diag)


LOCAL_PART_MIN = 3
"""The recipient's bare local part in angle brackets (sendmail's `550 5.1.1 <bob>... User unknown`) is replaced too
when at least this long. Only there: as a word of the text it rewrote replies whose local part is a word the
classifier reads (`mail`, `user`, `account`: "receiving mail too quickly" lost its class)."""


def _pending_rows_of(p: Prepared, seg: Segment, upto: int, mh: int | None, rh: int | None) -> bool:
    """Does a row of the segment not flushed yet carry this Message-Id or recipient key? Only such a row can make
    or change a timeline the report's probes find. Flushed before every unmatched report, a run of them (their
    deliveries pruned, or never read) stored one row at a time, ~3 ms each: the correlator stalled ~100 s and
    held the write lock for seconds (store-size review 2026-12-05). Keys are collected once per row."""
    if seg.keys_from != seg.start:
        seg.keys_from = seg.keys_upto = seg.start
        seg.mids.clear()
        seg.rcpts.clear()
    mids, rcpts, pmh, prh = seg.mids, seg.rcpts, p.mh, p.rh
    for j in range(seg.keys_upto, upto):
        if (m := pmh[j]) is not None:
            mids.add(m)
        if (r := prh[j]) is not None:
            rcpts.add(r)
    seg.keys_upto = upto
    return (mh is not None and mh in mids) or (rh is not None and rh in rcpts)
