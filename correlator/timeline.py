"""Read-side queries: timelines with their events, search pages and flow aggregates (plain dicts).

Everything here takes an open read connection and returns JSON-ready dicts shaped like the models
in models.py, so the API, the text renderer, the tests and the benchmark share one code path.
The response class of each attempt is computed here, at read time, with the current classifier:
it costs nothing at ingestion and follows classifier rule changes.

tq records are queue events: a timeline shows those of its queue (`domain/vmta`) logged between
its first event and its final d/b (or now when still pending), at most `max_queue_events` of the
latest, with `queue_events_omitted` counting the rest.

A timeline's own events are bounded too: anyone who can mail the bounce or FBL address can attach
reports to one without end. An answer lists a timeline's latest MAX_TIMELINE_EVENTS, and a page of
many timelines shares PAGE_EVENTS among them (MIN_EVENTS each at least); `events_omitted` counts the
older ones left out, and attempt numbers stay those of the whole timeline.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from correlator import store
from correlator.store import DAYS
from exporter.classify.replies import is_success
from exporter.redact import without_addresses
from exporter.timeparse import LATEST

ClassOf = Callable[[str, str, str, str], str]

KINDS = {
    "r": "received", "t": "deferred", "d": "delivered", "b": "bounced", "rs": "remote_status",
    "rb": "remote_bounce", "f": "complaint", "tq": "queue_deferred",
}
_RANK = {"queued": 0, "r": 0, "t": 1, "tq": 1, "d": 2, "b": 2, "rs": 3, "rb": 4, "f": 5}
_CLASSIFIED = frozenset(("t", "tq", "d", "b", "rs", "rb"))
_RANK_SQL = "CASE type " + " ".join(f"WHEN {store.TYPE_CODES[k]} THEN {v}" for k, v in _RANK.items()
                                    if k in store.TYPE_CODES) + " ELSE 9 END"
"""_RANK of a stored event's type, in SQL: the events an answer leaves out are the first ones in the order shown."""
MAX_TIMELINES = 100
"""Most timelines of one recipient an answer by (job or Message-Id, rcpt) lists (the latest)."""
MAX_TIMELINE_EVENTS = 1000
"""Most events of one timeline an answer lists (its latest)."""
PAGE_EVENTS = 10_000
"""Events one answer lists over all its timelines (and as many queue events): a 1,000-recipient page stays a few MB."""
MIN_EVENTS = 10
"""Events each timeline of a page lists at least (its latest: the outcome and the reports after it)."""
FLOODED = 20_000
"""Events of one timeline sorted whole for an answer. Anyone who can mail the FBL or bounce address attaches reports
without end: a timeline of a million took ~5 s to sort, past the API's budget on every page that held it. Past this,
its latest FLOODED by id (the order read) are sorted, and its totals counted apart (an index scan)."""
TEXT_CAP = 4096
"""Characters of one text field an answer holds (a reply, a user agent, an envelope address...): anyone who can mail
the bounce or FBL address writes those of a report, up to a 16 MiB line; 100 reports with a 200,000-character reply
made every answer naming their timeline 20 MB. No SMTP reply or report field of a real server comes near it."""
CUT_MARK = f"… [cut: longer than {TEXT_CAP:,} characters]"
_MARGIN = 4096
"""Characters read past a cut: room for an address cut there to be found whole and redacted before the cut
(exporter/redact.py)."""
_READ_CAP = TEXT_CAP + _MARGIN
"""Characters of a text field read from the store (SQL substr, so no row read for an answer holds more)."""
EVENT_TEXT_BUDGET = 16 * 1024 * 1024
"""Characters of event text fields one answer holds at most, over its events: the cut per field shrinks (to
MIN_TEXT_CAP) on an answer of many events. Each field at TEXT_CAP, the 10,000 events and as many queue events of a
page could make ~200 MB of one answer (anyone who can mail the bounce address can flood one message with reports)."""
MIN_TEXT_CAP = 256
_EVENT_TEXTS = 4
"""Text fields of an event counted against EVENT_TEXT_BUDGET (a reply, a status and an MTA, or a report's fields)."""


def capped_column(column: str, cap: int = TEXT_CAP) -> str:
    return f"substr({column}, 1, {cap + _MARGIN}) AS {column}"


def cut(text: str | None, cap: int = TEXT_CAP) -> str | None:
    """`text` at most `cap` characters, a mark saying so after it when it was longer."""
    if text is None or len(text) <= cap:
        return text
    return f"{text[:cap]}… [cut: longer than {cap:,} characters]"


def event_text_cap(events: int) -> int:
    """The cut of each event text field of an answer listing up to `events` events (EVENT_TEXT_BUDGET)."""
    return max(MIN_TEXT_CAP, min(TEXT_CAP, EVENT_TEXT_BUDGET // max(1, events * _EVENT_TEXTS)))


_REPORT_FIELDS = ("feedback_type", "user_agent", "reporting_mta")
_EVENT_COLUMNS = "id, tl, type, t, action, status, diag, mta, bcat, vmta, pool, src_ip, extra"
_EVENT_TEXT_COLUMNS = ("action", "status", "diag", "mta", "bcat", "vmta", "pool", "src_ip")


@functools.lru_cache(maxsize=64)
def _event_read(cap: int) -> str:
    """_EVENT_COLUMNS as read from corr_events: every text cut to `cap` + _MARGIN; a report's fields (JSON) each cut
    in SQL when the whole is long (json.loads needs it whole)."""
    read = cap + _MARGIN
    extra = ("CASE WHEN extra IS NULL OR length(extra) <= 2 * {cap} THEN extra ELSE json_object("
             + ", ".join(f"'{k}', substr(json_extract(extra, '$.{k}'), 1, {{cap}})" for k in _REPORT_FIELDS)
             + ") END AS extra").format(cap=read)
    return ", ".join(extra if c == "extra" else capped_column(c, cap) if c in _EVENT_TEXT_COLUMNS else c
                     for c in _EVENT_COLUMNS.split(", "))


@functools.lru_cache(maxsize=64)
def _queue_event_read(cap: int) -> str:
    return ", ".join(capped_column(c, cap) for c in ("vmta", "pool", "action", "status", "diag", "mta", "bcat",
                                                     "src_ip"))
_EVENT_ORDER = f"t DESC, {_RANK_SQL} DESC, id DESC"
_ATTEMPT_CODES = tuple(store.TYPE_CODES[t] for t in ("t", "d", "b"))
_ATTEMPT_SQL = ",".join(map(str, _ATTEMPT_CODES))
TL_COLUMNS = (
    f"id, {', '.join(map(capped_column, ('message_id', 'job_id', 'rcpt', 'rcpt_domain', 'orig', 'sender')))},"
    " vmta, vmta_pool, queue, isp,"
    " t0, t_last, t_queued, t_done, flags, attempts, outcome"
)
"""A timeline's summary columns; those a report can write are cut to _READ_CAP (vmta, pool, queue and isp name
PMTA's own configuration or a classifier's answer, and the search filters compare vmta whole)."""

MESSAGE_ORDERED_MAX = 10_000
"""Timelines of a Message-Id listed in the order stored (sorted on every page); a larger one is paged along its index
(`Reader.message_page`): sorting 10M recipients took 1.5 s a page."""

MessagePosition = int | tuple[int, int, int | None, int]
"""Where a message page continues: after a timeline id, or (total, day slice, recipient key or None, id) along the
index."""
_MIN_KEY = -(1 << 63)
"""The least 64-bit key (day slices and recipient keys are signed 64-bit integers)."""


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def summary(row: tuple, hashed: bool) -> dict[str, Any]:
    (tl, mid, job, rcpt, rdom, orig, sender, vmta, pool, queue, isp, t0, t_last, t_queued, t_done, flags,
     attempts, outcome) = row
    return {
        "id": tl, "message_id": cut(mid), "job_id": cut(job), "rcpt": cut(rcpt),
        "rcpt_hashed": hashed and rcpt is not None, "rcpt_domain": cut(rdom), "orig": cut(orig),
        "sender_domain": cut(sender), "vmta": vmta, "vmta_pool": pool,
        "queue": queue, "isp": isp, "outcome": store.OUTCOMES[outcome], "attempts": attempts,
        "first_seen": iso(t0), "last_seen": iso(t_last), "queued_at": iso(t_queued), "done_at": iso(t_done),
        "complained": bool(flags & store.FLAG[store.TYPE_CODES["f"]]),
        "remote_bounced": bool(flags & store.FLAG[store.TYPE_CODES["rb"]]),
        "_t0": t0, "_t_done": t_done, "_t_queued": t_queued,
    }


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


class Reader:
    """Queries over one read connection; `class_of` is the reply classifier used for events."""

    def __init__(
        self, conn: sqlite3.Connection, class_of: ClassOf, hashed: bool, max_queue_events: int = 100,
        now: float | None = None, check: Callable[[], None] | None = None,
    ) -> None:
        self.conn = conn
        self.class_of = class_of
        self.hashed = hashed
        self.max_queue_events = max_queue_events
        self.text_cap = TEXT_CAP
        """The cut of each event text field of the answer being built (event_text_cap)."""
        self.now = now
        self.check = check or _no_check
        """Called between rows of Python work: the API's raises once the request's time budget is spent."""

    # --- timelines -----------------------------------------------------------------------------

    def by_message(self, mid_h: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        items, total, _ = self.message_page(mid_h, limit)
        return items, total

    def message_page(self, mid_h: int, limit: int, after: MessagePosition | None = None,
                     ) -> tuple[list[dict[str, Any]], int, MessagePosition | None]:
        """One page of a Message-Id's timelines after position `after`: (items, the message's total, the position to
        continue after or None on its last page).

        Up to MESSAGE_ORDERED_MAX timelines, in the order they were stored (id; an int position), counted on every
        page. Not by first_seen: that moves earlier when a delivery joins a report read before it, and a timeline
        not yet listed would fall behind the cursor. A larger message (decided on its first page) is paged along
        corr_tl_mid: (day, recipient key, id), its total counted once and carried (a tuple position). Either key
        never changes, so every timeline stored when the first page was read is listed once (one merged into
        another while paging is listed as the one it joined)."""
        if isinstance(after, tuple):
            return self._message_page_by_key(mid_h, limit, after)
        where, params = f"{DAYS} AND mid_h=?", [mid_h]
        if after is None:
            total = self.conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM corr_timelines WHERE {where} LIMIT ?)",
                                      (*params, MESSAGE_ORDERED_MAX + 1)).fetchone()[0]
            if total > MESSAGE_ORDERED_MAX:
                total = self.conn.execute(f"SELECT count(*) FROM corr_timelines WHERE {where}", params).fetchone()[0]
                return self._message_page_by_key(mid_h, limit, (total, _MIN_KEY, None, 0))
        else:
            total = self.conn.execute(f"SELECT count(*) FROM corr_timelines WHERE {where}", params).fetchone()[0]
            where += " AND id > ?"
            params.append(after)
        rows = self.conn.execute(
            f"SELECT {TL_COLUMNS} FROM corr_timelines WHERE {where} ORDER BY id LIMIT ?", (*params, limit + 1),
        ).fetchall()
        nxt = rows[limit - 1][0] if len(rows) > limit else None
        return self._with_events(rows[:limit]), total, nxt

    def _message_page_by_key(self, mid_h: int, limit: int, after: tuple[int, int, int | None, int],
                             ) -> tuple[list[dict[str, Any]], int, MessagePosition | None]:
        """A large message's page along its index, day slice after day slice: no sort of all its timelines. In each
        slice the timelines without a recipient key come first (by id), as the index holds them."""
        total, day, rcpt_h, tl = after
        rows: list[tuple] = []
        sql = (f"SELECT {TL_COLUMNS}, qday, rcpt_h FROM corr_timelines INDEXED BY corr_tl_mid WHERE qday = ?"
               " AND mid_h = ? AND ")
        for slice_ in [d for (d,) in self.conn.execute("SELECT day FROM corr_days WHERE day >= ? ORDER BY day",
                                                       (day,))]:
            here = slice_ == day
            if not here or rcpt_h is None:  # the slice's timelines without a recipient, after `tl` in this one
                rows += self.conn.execute(sql + "rcpt_h IS NULL AND id > ? ORDER BY id LIMIT ?",
                                          (slice_, mid_h, tl if here else 0, limit + 1 - len(rows))).fetchall()
            if len(rows) <= limit:
                key = (rcpt_h, tl) if here and rcpt_h is not None else (_MIN_KEY, 0)
                rows += self.conn.execute(sql + "(rcpt_h, id) > (?, ?) ORDER BY rcpt_h, id LIMIT ?",
                                          (slice_, mid_h, *key, limit + 1 - len(rows))).fetchall()
            if len(rows) > limit:
                break
            self.check()
        last = rows[limit - 1] if len(rows) > limit else None
        nxt = (total, last[-2], last[-1], last[0]) if last is not None else None
        return self._with_events([r[:-2] for r in rows[:limit]]), total, nxt

    def by_job_rcpt(self, job_h: int, rcpt_h: int) -> tuple[list[dict[str, Any]], int]:
        """The recipient's timelines of one job: (its latest MAX_TIMELINES, oldest first; how many older ones)."""
        return self._latest_of("corr_tl_job", f"{DAYS} AND job_h=? AND rcpt_h=?", (job_h, rcpt_h))

    def by_message_rcpt(self, mid_h: int, rcpt_h: int) -> tuple[list[dict[str, Any]], int]:
        """The recipient's timelines of one Message-Id, as `by_job_rcpt`."""
        return self._latest_of("corr_tl_mid", f"{DAYS} AND mid_h=? AND rcpt_h=?", (mid_h, rcpt_h))

    def _latest_of(self, index: str, where: str, params: tuple[int, int]) -> tuple[list[dict[str, Any]], int]:
        """A seed or monitoring address gets the same job (or template Message-Id) every day: its timelines are
        bounded like a message page's recipients, the latest kept. Read through `index`, the one that holds the
        (key, recipient) pair: without statistics the planner prefers corr_tl_job_t0 for its (t0) order and walks
        the whole job (4 s for one recipient of a 10M-recipient job)."""
        source = f"corr_timelines INDEXED BY {index}"
        total = self.conn.execute(f"SELECT count(*) FROM {source} WHERE {where}", params).fetchone()[0]
        rows = self.conn.execute(
            f"SELECT {TL_COLUMNS} FROM {source} WHERE {where} ORDER BY t0 DESC, id DESC LIMIT ?",
            (*params, MAX_TIMELINES),
        ).fetchall()
        return self._with_events(rows[::-1]), max(0, total - len(rows))  # one stored between the two reads

    def by_id(self, tl: int) -> dict[str, Any] | None:
        rows = self.conn.execute(f"SELECT {TL_COLUMNS} FROM corr_timelines WHERE id=?", (tl,)).fetchall()
        found = self._with_events(rows)
        return found[0] if found else None

    def _with_events(self, rows: list[tuple]) -> list[dict[str, Any]]:
        if not rows:
            return []
        items = [summary(r, self.hashed) for r in rows]
        ids = [it["id"] for it in items]
        marks = ",".join("?" * len(ids))
        cap = events_per_timeline(len(ids))
        events: dict[int, list[tuple]] = {i: [] for i in ids}
        stored: dict[int, tuple[int, bool]] = {}  # tl -> its attempts, whether it has a reception
        sizes = dict(self.conn.execute(f"SELECT tl, count(*) FROM corr_events WHERE tl IN ({marks}) GROUP BY tl", ids))
        listed = sum(min(sizes.get(i, 0), cap) for i in ids) + len(ids) * min(self.max_queue_events, cap)
        self.text_cap = text_cap = event_text_cap(listed)  # the events listed (queue events at most) share a budget
        event_read = _event_read(text_cap)
        flooded = [i for i in ids if sizes.get(i, 0) > FLOODED]
        whole = [i for i in ids if sizes.get(i, 0) <= FLOODED]
        # The latest `cap` events of each timeline in the order an answer shows them (time, then _RANK, then id),
        # with its attempt total and whether it has a reception (`sizes`: its events): SQLite reads them all (a flooded
        # timeline: its latest FLOODED, its totals apart), Python (and the answer) holds at most `cap` per timeline.
        if whole:
            rows = self.conn.execute(
                f"SELECT {_EVENT_COLUMNS}, na, hr FROM (SELECT {event_read},"
                f" row_number() OVER (PARTITION BY tl ORDER BY {_EVENT_ORDER}) AS rn,"
                f" sum(type IN ({_ATTEMPT_SQL})) OVER (PARTITION BY tl) AS na,"
                f" max(type = {store.TYPE_CODES['r']}) OVER (PARTITION BY tl) AS hr"
                f" FROM corr_events WHERE tl IN ({','.join('?' * len(whole))})) WHERE rn <= ?", [*whole, cap])
            for *ev, n_attempts, has_r in rows:
                events[ev[1]].append(tuple(ev))
                stored[ev[1]] = (n_attempts, bool(has_r))
        for tl in flooded:
            self.check()
            events[tl] = [tuple(ev) for ev in self.conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM (SELECT {event_read} FROM corr_events WHERE tl=? ORDER BY id DESC"
                " LIMIT ?)"
                f" ORDER BY {_EVENT_ORDER} LIMIT ?", (tl, FLOODED, cap))]
            n_attempts, has_r = self.conn.execute(
                f"SELECT sum(type IN ({_ATTEMPT_SQL})), max(type = {store.TYPE_CODES['r']})"
                " FROM corr_events WHERE tl=?", (tl,)).fetchone()
            stored[tl] = (n_attempts or 0, bool(has_r))
        files = self._file_names({e[0] >> store.LINE_BITS for evs in events.values() for e in evs})
        for item in items:
            self.check()
            n_attempts, has_r = stored.get(item["id"], (0, False))
            item["events"], item["events_omitted"], item["queue_events_omitted"] = self._events(
                item, events[item["id"]], files, sizes.get(item["id"], 0), n_attempts, has_r, cap)
        return [_public(it) for it in items]

    def _file_names(self, nums: set[int]) -> dict[int, str]:
        if not nums:
            return {}
        marks = ",".join("?" * len(nums))
        return dict(self.conn.execute(f"SELECT num, path FROM corr_files WHERE num IN ({marks})", list(nums)))

    def _events(self, item: dict[str, Any], rows: list[tuple], files: dict[int, str], stored: int,
                stored_attempts: int, has_r: bool, cap: int) -> tuple[list[dict], int, int]:
        """(events oldest first, own events left out, queue events left out) of one timeline: `rows` are its
        latest `cap` stored events of `stored` (`stored_attempts` of them t, d or b; `has_r`: one is a reception,
        and the timeline shows no `queued` mark)."""
        isp = item["isp"] or ""
        fit = functools.partial(cut, cap=self.text_cap)

        out: list[tuple[float, int, int, dict[str, Any]]] = []
        shown_attempts = 0
        hashed = self.hashed
        for eid, _tl, code, t, action, status, diag, mta, bcat, vmta, pool, src_ip, extra in rows:
            rtype = store.TYPE_NAMES[code]
            if hashed:  # a row stored raw (before hashing, or by an older version) shows no address
                action, status, diag, mta, bcat = (without_addresses(v) if v else v
                                                   for v in (action, status, diag, mta, bcat))
            shown_attempts += code in _ATTEMPT_CODES
            ev = _event(t, KINDS[rtype], rtype)
            ev.update(vmta=fit(vmta) or None, vmta_pool=fit(pool) or None, source_ip=fit(src_ip) or None,
                      dsn_action=fit(action) or None, dsn_status=fit(status) or None, dsn_diag=fit(diag) or None,
                      dsn_mta=fit(mta) or None, bounce_category=fit(bcat) or None)
            if extra:
                ev.update((k, fit(without_addresses(v) if hashed and isinstance(v, str) else v))
                          for k, v in json.loads(extra).items())
            if rtype in _CLASSIFIED and not is_success(status or "", diag or ""):  # a success has no failure class
                ev["response_class"] = self.class_of(isp, status or "", diag or "", bcat or "") or None
            num, line = store.split_event_id(eid)
            ev["source"] = f"{files.get(num, '?')}:{line}"
            out.append((t, _RANK[rtype], eid, ev))
        omitted = stored - len(rows)
        if item["_t_queued"] is not None and not has_r:
            if omitted:  # the queued mark is the oldest moment: left out with the older events
                omitted += 1
            else:
                out.append((item["_t_queued"], 0, -1, _event(item["_t_queued"], "queued", None)))
        queue_omitted = 0
        if item["queue"]:
            queue_omitted = self._queue_events(item, out, min(self.max_queue_events, cap))
        out.sort(key=lambda e: (e[0], e[1], e[2]))
        attempt = stored_attempts - shown_attempts  # the attempts left out came first
        for _, _, _, ev in out:
            if ev["record_type"] in ("t", "d", "b"):
                attempt += 1
                ev["attempt"] = attempt
        return [ev for *_, ev in out], omitted, queue_omitted

    def _queue_events(self, item: dict[str, Any], out: list, most: int) -> int:
        lo = item["_t0"]
        hi = item["_t_done"] if item["_t_done"] is not None else math.inf
        hi_param = hi if hi != math.inf else 1e18
        count = self.conn.execute(
            "SELECT count(*) FROM corr_queue_events WHERE queue=? AND t BETWEEN ? AND ?", (item["queue"], lo, hi_param)
        ).fetchone()[0]
        if not count:
            return 0
        rows = self.conn.execute(
            f"SELECT id, t, {_queue_event_read(self.text_cap)} FROM corr_queue_events"
            " WHERE queue=? AND t BETWEEN ? AND ? ORDER BY t DESC, id DESC LIMIT ?",
            (item["queue"], lo, hi_param, most),
        ).fetchall()
        files = self._file_names({r[0] >> store.LINE_BITS for r in rows})
        isp = item["isp"] or ""
        fit = functools.partial(cut, cap=self.text_cap)

        for eid, t, vmta, pool, action, status, diag, mta, bcat, src_ip in rows:
            if self.hashed:
                action, status, diag, mta, bcat = (without_addresses(v) if v else v
                                                   for v in (action, status, diag, mta, bcat))
            ev = _event(t, "queue_deferred", "tq")
            ev.update(queue=item["queue"], vmta=fit(vmta) or None, vmta_pool=fit(pool) or None,
                      source_ip=fit(src_ip) or None, dsn_action=fit(action) or None, dsn_status=fit(status) or None,
                      dsn_diag=fit(diag) or None, dsn_mta=fit(mta) or None, bounce_category=fit(bcat) or None,
                      response_class=self.class_of(isp, status or "", diag or "", bcat or "") or None)
            num, line = store.split_event_id(eid)
            ev["source"] = f"{files.get(num, '?')}:{line}"
            out.append((t, _RANK["tq"], eid, ev))
        return count - len(rows)

    # --- search --------------------------------------------------------------------------------

    def search(
        self, *, rcpt_h: int | None, job_h: int | None, vmta: str | None, outcome: int | None,
        since: float | None, until: float | None, limit: int, after: tuple[float, int] | None,
        budget: int = 100_000,
    ) -> tuple[list[dict[str, Any]], tuple[float, int] | None, bool]:
        """One page, newest first by first_seen. Returns (items, position to continue after, scan_limited).

        The rcpt or job_id filter picks the index; without them a vmta (else outcome) filter does,
        through corr_tl_vmta / corr_tl_outcome in (t0, id) order. The filters no index serves are
        checked on at most `budget` rows per page, so a rare combination over a long range returns a
        short page with a cursor instead of scanning the whole store in one request.
        """
        where: list[str] = []
        params: list[Any] = []
        source = "corr_timelines"
        if rcpt_h is not None:  # a recipient's timelines are few: seek them, then sort (not a job's (t0) walk)
            where.append(DAYS)  # the rcpt index leads with qday
            source = f"corr_timelines INDEXED BY {'corr_tl_job' if job_h is not None else 'corr_tl_rcpt'}"
        elif job_h is not None:  # a job's timelines in (t0, id) order: a page reads its rows, not the whole job
            source = "corr_timelines INDEXED BY corr_tl_job_t0"
        if rcpt_h is not None:
            where.append("rcpt_h=?")
            params.append(rcpt_h)
        if job_h is not None:
            where.append("job_h=?")
            params.append(job_h)
        filters, fparams = [], []
        if rcpt_h is None and job_h is None and vmta is not None:
            where.append("vmta=?")  # corr_tl_vmta: (vmta, t0) in keyset order
            params.append(vmta)
        elif vmta is not None:
            filters.append("vmta=?")
            fparams.append(vmta)
        if rcpt_h is None and job_h is None and vmta is None and outcome is not None:
            where.append("outcome=?")  # corr_tl_outcome: (outcome, t0) in keyset order
            params.append(outcome)
        elif outcome is not None:
            filters.append("outcome=?")
            fparams.append(outcome)
        if since is not None:
            where.append("t0>=?")
            params.append(since)
        if until is not None:
            where.append("t0<?")
            params.append(until)
        if after is not None:
            where.append("(t0, id) < (?, ?)")
            params += after
        base = f"FROM {source} WHERE {' AND '.join(where) or '1'} ORDER BY t0 DESC, id DESC"
        budgeted = vmta is not None or outcome is not None  # the budget bounds the rows one page reads
        if filters:
            sql = (f"SELECT * FROM (SELECT {TL_COLUMNS} {base} LIMIT ?) WHERE {' AND '.join(filters)}"
                   " ORDER BY t0 DESC, id DESC LIMIT ?")
            rows = self.conn.execute(sql, [*params, budget, *fparams, limit + 1]).fetchall()
        else:
            cap = min(budget, limit + 1) if budgeted else limit + 1
            rows = self.conn.execute(f"SELECT {TL_COLUMNS} {base} LIMIT ?", [*params, cap]).fetchall()
        self.check()
        items = [summary(r, self.hashed) for r in rows[:limit]]
        if len(rows) > limit:
            last = rows[limit - 1]
            return [_public(i) for i in items], (last[11], last[0]), False
        if budgeted:
            edge = self.conn.execute(f"SELECT t0, id {base} LIMIT 1 OFFSET ?", [*params, budget - 1]).fetchone()
            if edge is not None:
                return [_public(i) for i in items], (edge[0], edge[1]), True
        return [_public(i) for i in items], None, False

    # --- flows ---------------------------------------------------------------------------------

    def flows(self, since: float, until: float | None, max_senders: int) -> dict[str, Any]:
        lo, _ = flow_window(since, until)
        params: list[float] = [lo]
        cond = "bucket >= ?"
        if until is not None:
            cond += " AND bucket < ?"
            params.append(until)
        rows = self.conn.execute(
            "SELECT sender, vmta, isp, sum(delivered), sum(bounced), sum(deferred), sum(complained),"
            f" sum(remote_bounced) FROM corr_flows WHERE {cond} GROUP BY sender, vmta, isp", params,
        ).fetchall()
        self.check()
        return build_flows(rows, max_senders)


def _no_check() -> None:
    pass


def events_per_timeline(timelines: int) -> int:
    """Events an answer lists of each of its `timelines` (see the module's docstring)."""
    return min(MAX_TIMELINE_EVENTS, max(MIN_EVENTS, PAGE_EVENTS // max(timelines, 1)))


LAST_TIME = LATEST - 1
"""9999-12-31T23:59:59Z: the latest time the API accepts and `iso` can write."""


def flow_window(since: float, until: float | None) -> tuple[float, float | None]:
    """The span the 5-minute flow buckets cover: since rounded down to its bucket, until (exclusive)
    rounded up (`bucket < until` reads the same buckets as `bucket < that`), but not past LAST_TIME (no bucket
    starts between them); what /flows echoes."""
    size = store.FLOW_BUCKET
    lo = float(math.floor(since / size) * size)
    return lo, None if until is None else min(float(math.ceil(until / size) * size), LAST_TIME)


_STATS = ("delivered", "bounced", "deferred", "complained", "remote_bounced")


def build_flows(rows: list[tuple], max_senders: int) -> dict[str, Any]:
    """sender -> vmta -> isp nodes and edges in the field names Grafana's Node graph panel reads."""
    by_sender: dict[str, int] = {}
    for sender, _v, _i, d, b, t, *_ in rows:
        by_sender[sender] = by_sender.get(sender, 0) + d + b + t
    top = set(sorted(by_sender, key=lambda s: (-by_sender[s], s))[:max_senders])
    nodes: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str], list[int]] = {}

    def add(store_: dict, key: Any, stats: tuple[int, ...]) -> None:
        acc = store_.setdefault(key, [0] * len(_STATS))
        for i, v in enumerate(stats):
            acc[i] += v

    node_stats: dict[str, list[int]] = {}
    for sender, vmta, isp, *stats in rows:
        s = "sender:" + ((sender or "<>") if sender in top else "other")
        v, i = "vmta:" + (vmta or "none"), "isp:" + (isp or "unknown")
        st = tuple(int(x or 0) for x in stats)
        for n in (s, v, i):
            add(node_stats, n, st)
        add(edges, (s, v), st)
        add(edges, (v, i), st)
    for nid, st in node_stats.items():
        kind, _, title = nid.partition(":")
        nodes[nid] = {"id": nid, "title": title, "subtitle": kind, **flow_stat_fields(st), "detail__kind": kind}
    top_volume = max((st[0] + st[1] for st in edges.values()), default=0) or 1
    edge_list = []
    for (src, dst), st in sorted(edges.items()):
        vol = st[0] + st[1]
        fields = flow_stat_fields(st)
        del fields["arc__delivered"], fields["arc__bounced"], fields["arc__deferred"]
        edge_list.append({"id": f"{src}->{dst}", "source": src, "target": dst, **fields,
                          "thickness": round(1 + 9 * math.sqrt(vol / top_volume), 2)})
    order = {"sender": 0, "vmta": 1, "isp": 2}
    node_list = sorted(nodes.values(), key=lambda n: (order[n["subtitle"]], -n["mainstat"], n["id"]))
    return {"nodes": node_list, "edges": edge_list}


def flow_stat_fields(st: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """The derived fields of a flows node or edge from its counts (delivered, bounced, deferred, complained,
    remote-bounced); the hub sums hosts' counts and derives them again with this same function."""
    d, b, t, f, rb = st
    attempts = d + b + t
    return {
        "mainstat": d + b, "secondarystat": t,
        "arc__delivered": round(d / attempts, 4) if attempts else 0.0,
        "arc__bounced": round(b / attempts, 4) if attempts else 0.0,
        "arc__deferred": round(t / attempts, 4) if attempts else 0.0,
        "detail__delivered": d, "detail__bounced": b, "detail__deferred": t,
        "detail__complained": f, "detail__remote_bounced": rb,
    }


def _event(t: float, kind: str, record_type: str | None) -> dict[str, Any]:
    return {"time": iso(t), "ts": t, "kind": kind, "record_type": record_type, "attempt": None}
