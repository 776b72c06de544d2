"""Stage 3 of a write: the accumulated rows of one batch as a few executemany calls.

New timelines are INSERTed whole, touched ones get one summary UPDATE each, events and queue
events are appended (`INSERT OR IGNORE` on the `file << 32 | line` id: a replayed line is a no-op),
merges move events to the winner, flow counters are upserted.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field

from correlator import store

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


class Writer:
    """Mixin of Ingestor: stage 3."""

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
