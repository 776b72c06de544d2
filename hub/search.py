"""Search across hosts: a k-way merge, newest first, with one cursor holding every host's position.

Each host pages on its own (its own opaque cursor). The hub cursor stores, per host, the host cursor to go on from and
how many items after it were already handed out (`[cursor, skip]`; skip is 0 unless the host could not be asked for its
cursor after the last item handed out), or `0` once the host is exhausted; a host never asked yet is left out
(hub/cursors.py encodes the rest compactly). A host asked and still at its top (`[null, 0]`: none of its items handed
out yet, each older than every one shown) keeps that place: it says the host has items to come. A host the cursor holds
a place for that is not among this page's targets keeps it, and is named missing ("not among the current targets") until
it is back. An item is emitted only while every unexhausted host still has a buffered item to compare it with, so pages
are exactly the newest-first merge of the hosts' own orders, whatever the page size. Ties on first_seen go to the host
whose name sorts first.

Relative times (`since=2h`) are resolved once, on the hub's clock at the first page, and sent to every host as epoch
seconds; the cursor carries that instant (`n`), so later pages ask the hosts for the very same window even when a host's
first page is fetched again. A search without `until` is sent with `until` = that instant: timelines a live host stores
while the caller pages (first seen after it) stay out of the paging, so a host's page asked again from its top still
ends at the item handed out last (`_keyset`); a new search (no cursor) shows them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from correlator.api import MAX_TIME, MIN_TIME, BadRequest, parse_time
from hub import cursors, merge
from hub.cursors import Decoded
from hub.fanout import Fanout, HostAnswer
from hub.places import (
    STUCK,
    away_answers,
    kept_out_of_targets,
    keyset_deadline,
    moved_on,
    place_after,
    stalled,
    unfinished,
)
from hub.targets import Target, default_target

MAX_ROUNDS = 4
"""Host pages fetched per host per hub page at most (scan-limited or empty host pages refill)."""
TIME_PARAMS = ("since", "until")


def resolve_times(params: dict[str, Any], now: float) -> dict[str, Any]:
    """`params` with since/until as epoch seconds resolved against `now` (400 naming a bad one): every
    host then reads one window, whatever its own clock and whenever it is asked."""
    out = dict(params)
    for name in TIME_PARAMS:
        value = parse_time(name, out.get(name), now)
        if value is not None:
            out[name] = repr(value)
    return out


def fingerprint(filters: dict[str, Any]) -> str:
    return cursors.fingerprint(filters)


def _search_place(v: Any) -> bool:
    """0 (exhausted) or [its own cursor or null, items of that page already handed out]."""
    if type(v) is int:
        return v == 0
    return (isinstance(v, list) and len(v) == 2 and type(v[1]) is int and 0 <= v[1] <= 500
            and (v[0] is None or isinstance(v[0], str)))


def decode_cursor(cursor: str, fp: str, targets: list[Target] | None = None) -> Decoded:
    """Every host's place and the first page's clock from a hub cursor; a 400 naming `cursor` on anything else."""
    got = cursors.decode(cursor, targets or [], _search_place)
    now = got.now
    if now is not None and (isinstance(now, bool) or not isinstance(now, int | float)
                            or not MIN_TIME <= now <= MAX_TIME):
        raise BadRequest(400, "malformed cursor", "cursor")
    if got.fp != fp:
        raise BadRequest(400, cursors.OTHER_FILTERS, "cursor")
    got.now = None if now is None else float(now)
    return got


def _lean(new_state: dict[str, Any], state: dict[str, Any], pagers: list[HostPager]) -> dict[str, Any]:
    """`new_state` without the places of hosts never asked: a host neither in the cursor it came with nor asked on
    this page (its answer cut by the page's budget) starts at its top anyway. A host asked keeps even `[null, 0]`:
    none of its items handed out yet, but it has some (or did not answer). Leaned out too, it was forgotten when
    service discovery dropped it for a page: not named missing, the paging ended, its timelines never listed."""
    asked = state.keys() | {p.target.url for p in pagers if p.fetched or p.failed is not None}
    return {url: place for url, place in new_state.items() if place != [None, 0] or url in asked}


def _positions(state: dict[str, Any], targets: list[Target]) -> dict[str, Any]:
    """`state` as where each current target goes on from: one at its top (`[null, 0]`) as one not asked yet."""
    current = {t.url for t in targets}
    return {url: place for url, place in state.items() if not (url in current and place == [None, 0])}


@dataclass
class HostPager:
    target: Target
    start: str | None  # host cursor the buffered page began at
    skip: int  # items of that page already emitted (by earlier hub pages or this one)
    buffer: list[dict[str, Any]] = field(default_factory=list)
    next: str | None = None
    fetched: bool = False
    done: bool = False
    failed: HostAnswer | None = None
    rounds: int = 0
    scan_limited: bool = False
    stuck: bool = False
    """Its next_cursor was the cursor it was asked with: its page is its last (places.STUCK)."""
    last_id: Any = None
    """Id of the last item of this host handed out on this hub page."""

    @property
    def waiting(self) -> bool:
        """True when the merge cannot go on without another page of this host."""
        return not self.done and self.failed is None and not self.buffer

    def state(self) -> Any:
        if self.failed is not None:  # retried from the same position next page
            return [self.start, self.skip]
        if self.done and not self.buffer:
            return 0
        if self.fetched and not self.buffer:  # its page used up: the host's next page from its own cursor
            return [self.next, 0] if self.next else 0
        return [self.start, self.skip]


async def search(
    fanout: Fanout, targets: list[Target], params: dict[str, Any], limit: int, cursor: str | None,
    filters: dict[str, Any], now: float | None = None, named: Callable[[str], Target] = default_target,
) -> tuple[dict[str, Any], list[HostAnswer]]:
    """One merged page; returns (body without partial fields, the failed answers: hosts that did not answer, and
    hosts the cursor holds a place for that are not among `targets`, named by `named`).

    `params` go to the hosts, `filters` tie the cursor to the caller's filters; `now` (the hub's clock,
    default time.time()) is used only on a first page: later pages resolve relative times against the
    instant their cursor carries."""
    fp = fingerprint(filters)
    got = decode_cursor(cursor, fp, targets) if cursor else Decoded(fp, {})
    state, first_now = got.places, got.now
    if first_now is not None:
        now = first_now
    elif now is None:
        now = time.time()
    params = resolve_times(params, now)
    params.setdefault("until", repr(now))  # pinned: timelines a live host stores while the caller pages never enter
    pagers = []
    for t in targets:
        s = state.get(t.url, [None, 0])
        pagers.append(HostPager(t, None, 0, done=True) if s == 0 else HostPager(t, s[0], s[1]))
    deadline = time.monotonic() + 1.5 * fanout.timeout
    out: list[dict[str, Any]] = []
    limited = False
    while len(out) < limit:
        need = [p for p in pagers if p.waiting]
        if need:
            if any(p.rounds >= MAX_ROUNDS for p in need) or time.monotonic() >= deadline:
                limited = True
                break
            await _refill(fanout, need, params, limit, deadline)
            continue
        live = [(rank, p) for rank, p in enumerate(pagers) if p.buffer]
        if not live:
            break
        # (rank from enumerate: pagers.index() was a scan per host)
        best = max(live, key=lambda rp: (merge.first_seen_key(rp[1].buffer[0]), -rp[0]))[1]
        item = best.buffer.pop(0)
        out.append({**item, "host": best.target.name})
        best.skip += 1
        best.last_id = item.get("id")
    keyset_by = keyset_deadline(deadline, fanout.timeout)
    await asyncio.gather(*(_keyset(fanout, p, params, keyset_by) for p in pagers
                           if p.failed is None and p.buffer and p.skip and p.last_id is not None))
    new_state = kept_out_of_targets(state, targets)
    new_state.update((p.target.url, p.state()) for p in pagers)
    new_state = _lean(new_state, state, pagers)
    _refused_by_all(pagers)
    more = unfinished(new_state, targets, _done) and not stalled(
        len(out), _positions(new_state, targets), _positions(state, targets))
    token, problem = cursors.encode(fp, new_state, targets, now, got.done_elsewhere) if more else (None, None)
    body = {"items": out, "next_cursor": token, "next_cursor_problem": problem, "limit": limit,
            "scan_limited": limited or any(p.scan_limited for p in pagers)}
    failed = [p.failed for p in pagers if p.failed is not None]
    failed += [HostAnswer(p.target, 200, error=STUCK, stuck=True) for p in pagers if p.stuck]
    return body, failed + away_answers(state, targets, named, _done)


def _done(place: Any) -> bool:
    return type(place) is int and place == 0


def _refused_by_all(pagers: list[HostPager]) -> None:
    """Raise the 400 of the hosts asked when none took the parameters: the caller's mistake, as on a daemon. A 400
    beside a host that answered is that host's own (a missing host), as is one naming `cursor` (its own cursor,
    which the hub made: a daemon upgraded between pages)."""
    if any(p.fetched for p in pagers):
        return
    for p in pagers:
        ans = p.failed
        if ans is not None and ans.status == 400 and isinstance(ans.body, dict) and ans.body.get("parameter") \
                != "cursor":
            passed = merge.passed_on(ans.body)
            raise BadRequest(400, passed["error"], passed["parameter"])


async def _keyset(fanout: Fanout, p: HostPager, params: dict[str, Any], deadline: float) -> None:
    """A host handed out in part on this hub page: its place as its own cursor after the last item handed out
    (places.place_after). An offset into its page would move on a live host (its first page takes every timeline
    stored since on top: those items came again on the next hub page). The offset stays when it does not answer,
    or the item is no longer found near where it was (a scan-limited short page)."""

    async def ask(limit: int) -> HostAnswer:
        q = {**params, "limit": limit}
        if p.start:
            q["cursor"] = p.start
        return await fanout.one(p.target, "/api/v1/search", q, deadline)

    nxt = await place_after(ask, "items", p.skip, p.last_id, p.start, most=500)
    if nxt is not None:
        p.start, p.skip = nxt, 0


def _cut(body: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """A host's items, at most the `limit` it was asked for (fanout refuses a longer list already): a place's skip
    then never grows past the 500 its cursor decoder takes."""
    items = body.get("items") or []
    return items[:limit]


async def _refill(fanout: Fanout, pagers: list[HostPager], params: dict[str, Any], limit: int,
                  deadline: float) -> None:
    """Fetch the next page of every waiting host concurrently."""

    async def fetch(p: HostPager) -> None:
        if p.fetched:  # the buffered page is used up: move on to the host's next page
            if p.next is None:
                p.done = True
                return
            p.start, p.skip = p.next, 0
        q = {**params, "limit": min(500, limit + p.skip)}
        if p.start:
            q["cursor"] = p.start
        p.rounds += 1
        ans = await fanout.one(p.target, "/api/v1/search", q, deadline)
        if ans.cut:  # the page's budget ran out, not the host's: it waits, and the page ends (scan_limited)
            return
        if not ans.ok or ans.status != 200 or not isinstance(ans.body, dict):
            if ans.ok:  # a 400 (the caller's mistake only if every host says so: _refused_by_all) or a 404
                ans.refused()
            p.failed = ans
            return
        p.fetched = True
        items = _cut(ans.body, q["limit"])
        p.buffer = items[p.skip:]
        p.next = ans.body.get("next_cursor")
        if not moved_on(p.start, p.next):
            p.next, p.stuck = None, True
        p.scan_limited = p.scan_limited or bool(ans.body.get("scan_limited"))
        if not p.buffer and p.next is None:
            p.done = True

    await asyncio.gather(*(fetch(p) for p in pagers))
