"""One Message-Id across hosts, paged: every host's recipients in target order, each host's in its own page order.

A Message-Id normally lives on one host, so the pages are the hosts' own pages one after the other
(the order the unpaged answer always had), not a merge by time. The hub cursor holds, per host URL,
`[host cursor, items after it already handed out]` while the host is in progress, or the host's
recipients_total once it is exhausted (so later pages still sum it without asking again). A host
handed out in part is asked once more for its own cursor after the last one shown, so the count is
0 unless that failed. A host that does not answer keeps its position: it is asked again on the next
page and the answer is partial meanwhile; so does a host missing from the targets for a page (named
missing, "not among the current targets"). hub/cursors.py encodes the places compactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from correlator.api import BadRequest
from correlator.keys import norm_message_id
from hub import cursors, merge
from hub.cursors import Decoded
from hub.fanout import MAX_COUNT, Fanout, HostAnswer
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


def fingerprint(message_id: str) -> str:
    return cursors.fingerprint(["hub-message", norm_message_id(message_id)])


def _message_place(value: Any) -> bool:
    """Recipients_total of a host done with (0: it has none; at most a count a daemon answers: a forged 10**300 was
    summed into recipients_total), or [its own cursor or null, recipients handed out]."""
    if type(value) is int:
        return 0 <= value <= MAX_COUNT
    return (isinstance(value, list) and len(value) == 2 and (value[0] is None or isinstance(value[0], str))
            and type(value[1]) is int and 0 <= value[1] <= 1000)


def _finished(place: Any) -> bool:
    """A host done with: its place is its recipients_total."""
    return isinstance(place, int)


def _decode(cursor: str, fp: str, targets: list[Target]) -> Decoded:
    got = cursors.decode(cursor, targets, _message_place)
    if got.fp != fp:
        raise BadRequest(400, cursors.OTHER_MESSAGE, "cursor")
    return got


async def message_page(fanout: Fanout, targets: list[Target], path: str, message_id: str, limit: int,
                       cursor: str | None, named: Callable[[str], Target] = default_target,
                       ) -> tuple[dict[str, Any] | None, list[HostAnswer]]:
    """(body without the partial fields, or None when no host that answered has the message; every answer, and
    one per host the cursor holds a place for that is not among `targets`, named by `named`)."""
    fp = fingerprint(message_id)
    got = _decode(cursor, fp, targets) if cursor else Decoded(fp, {})
    state = got.places
    pending = [t for t in targets if not isinstance(state.get(t.url), int)]
    deadline = time.monotonic() + fanout.timeout

    async def ask(t: Target, start: str | None, count: int, by: float = deadline) -> HostAnswer:
        params: dict[str, Any] = {"limit": min(1000, count)}
        if start:
            params["cursor"] = start
        return await fanout.one(t, path, params, by)

    positions = {t.url: state.get(t.url) or [None, 0] for t in pending}
    answers = dict(zip((t.url for t in pending), await asyncio.gather(
        *(ask(t, positions[t.url][0], positions[t.url][1] + limit) for t in pending)), strict=True))
    rejected = merge.settle(list(answers.values()), (200, 404), own=("cursor",))
    if rejected is not None:  # every host that answered refused the parameters: the caller's
        raise BadRequest(400, rejected["error"], rejected["parameter"])
    out: list[dict[str, Any]] = []
    stuck: list[HostAnswer] = []
    new_state = kept_out_of_targets(state, targets)
    total, found, full = 0, False, False
    cut: tuple[Target, str | None, int, Any] | None = None
    mid = None
    for t in targets:
        s = state.get(t.url)
        if isinstance(s, int):  # exhausted on an earlier page
            new_state[t.url], total = s, total + s
            found = found or s > 0
            continue
        start, skip = positions[t.url]
        ans = answers[t.url]
        if not ans.ok or ans.status == 404 or not isinstance(ans.body, dict):
            new_state[t.url] = 0 if ans.ok and ans.status == 404 else [start, skip]
            continue
        found, shown = True, ans.body.get("message_id")
        if mid is None or (isinstance(shown, str) and "<rcpt>" in shown and "<rcpt>" not in mid):
            mid = shown  # a daemon echoing it without a recipient's address (hash_recipients) is the one shown
        total += int(ans.body.get("recipients_total") or 0)
        items = (ans.body.get("recipients") or [])[skip:]
        taken = 0 if full else min(len(items), limit - len(out))
        out += [{**item, "host": t.name} for item in items[:taken]]
        if taken < len(items) or full:  # this page is full before the host's buffered items are
            new_state[t.url] = [start, skip + taken]
            if taken:
                cut = (t, start, skip + taken, items[taken - 1].get("id"))
            full = True
        elif ans.body.get("next_cursor") and moved_on(start, ans.body["next_cursor"]):  # more: later hosts wait
            new_state[t.url] = [ans.body["next_cursor"], 0]
            full = True
        else:
            if ans.body.get("next_cursor"):
                stuck.append(HostAnswer(t, 200, error=STUCK, stuck=True))
            new_state[t.url] = int(ans.body.get("recipients_total") or 0)
    every = [*answers.values(), *stuck, *away_answers(state, targets, named, _finished)]
    if not found:
        return None, every
    if cut is not None:  # at most one host per page is handed out in part: its place as its own keyset cursor
        t, start, count, last_id = cut
        by = keyset_deadline(deadline, fanout.timeout)
        nxt = await place_after(lambda n: ask(t, start, n, by), "recipients", count, last_id, start, most=1000)
        if nxt is not None:
            new_state[t.url] = [nxt, 0]
    more = unfinished(new_state, targets, _finished) and not stalled(len(out), new_state, state)
    token, problem = cursors.encode(fp, new_state, targets, done_elsewhere=got.done_elsewhere) if more else (None, None)
    body = {"message_id": mid or norm_message_id(message_id), "recipients_total": total,
            "truncated": total > len(out), "next_cursor": token, "next_cursor_problem": problem, "recipients": out}
    return body, every
