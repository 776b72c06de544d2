"""A host's place in a multi-page hub answer (search, a Message-Id's recipients): the rules both cursors share.

A host handed out in part keeps its place as its own keyset cursor (an offset into its page moves when the host
stores or prunes items meanwhile); a host out of the targets for a page keeps its place; and a page where only
hosts that did not answer are left ends the paging instead of handing its own cursor back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from hub.fanout import HostAnswer
from hub.targets import Target

NOT_AMONG_TARGETS = "not among the current targets"
STUCK = "HTTP 200: its next_cursor is the cursor it was asked with (paging it stops there)"
"""A daemon's keyset cursor always moves on: one that does not would hand the same page out on every hub page."""


def cursor_after(ans: HostAnswer, items_key: str, count: int, last_id: Any, start: str | None) -> str | None:
    """The host's own cursor after the `count` items its answer lists, if that page still ends at the item handed
    out last (`last_id`); None (the caller keeps the offset) when it did not answer, its page moved, or its cursor
    is the one it was asked with (`start`: the same items again on the next page)."""
    if not ans.ok or ans.status != 200 or not isinstance(ans.body, dict):
        return None
    items, nxt = ans.body.get(items_key) or [], ans.body.get("next_cursor")
    if len(items) != count or items[-1].get("id") != last_id or not isinstance(nxt, str) or nxt == start:
        return None
    return nxt


SHIFT_SLACK = 50
"""Items past a host's part handed out asked for when it is no longer at its place: a late file or pruning moved it."""


async def place_after(ask: Callable[[int], Awaitable[HostAnswer]], items_key: str, count: int, last_id: Any,
                      start: str | None, most: int) -> str | None:
    """The host's own cursor after the item handed out last (`last_id`, the `count`-th of its page then), asked
    `ask(limit)` from `start`. When items were stored or pruned above it meanwhile (a file copied in late holds
    timelines first seen in the window already paged), it is no longer the `count`-th: it is looked for in a page
    `SHIFT_SLACK` longer, then asked up to where it is now. None (the caller keeps the offset) when it is not found."""
    ans = await ask(count)
    nxt = cursor_after(ans, items_key, count, last_id, start)
    if nxt is not None or not ans.ok or ans.status != 200 or not isinstance(ans.body, dict):
        return nxt
    at = _position(ans.body.get(items_key), last_id)
    if at is None and count < most:
        wider = await ask(min(most, count + SHIFT_SLACK))
        at = _position(wider.body.get(items_key) if wider.ok and isinstance(wider.body, dict) else None, last_id)
    if at is None or at == count:
        return None
    return cursor_after(await ask(at), items_key, at, last_id, start)


def _position(items: Any, last_id: Any) -> int | None:
    """How many items up to and including the one of `last_id`, or None."""
    if not isinstance(items, list):
        return None
    for at, item in enumerate(items, start=1):
        if isinstance(item, dict) and item.get("id") == last_id:
            return at
    return None


def keyset_deadline(deadline: float, timeout: float) -> float:
    """The deadline of a host's keyset re-check: a whole `hub.timeout` of its own at least. Within what was left of
    the page's budget, a host answering in over half its timeout always timed out, its place stayed an offset from
    its top, and items it stored there meanwhile (a file copied in late) moved that offset: items came twice."""
    return max(deadline, time.monotonic() + timeout)


def moved_on(start: str | None, nxt: Any) -> bool:
    """False for a host whose next_cursor is the cursor it was asked with (STUCK)."""
    return start is None or nxt != start


def kept_out_of_targets(state: dict[str, Any], targets: list[Target]) -> dict[str, Any]:
    """The places of hosts not among this page's targets (service discovery may drop one for a page): kept, so that
    a host resumes where it was when it is back."""
    asked = {t.url for t in targets}
    return {url: place for url, place in state.items() if url not in asked}


def unfinished(new_state: dict[str, Any], targets: list[Target], finished: Callable[[Any], bool]) -> bool:
    """Does any host have more to give: a target without a place (not asked yet) or with an unfinished one, or a host
    out of the targets whose place the cursor keeps. Counting only the targets ended the paging on a page handed out
    while the host with more was away: asking that page's cursor again once it was back gave its items twice."""
    return any(t.url not in new_state for t in targets) or not all(finished(p) for p in new_state.values())


def stalled(handed_out: int, new_state: dict[str, Any], state: dict[str, Any]) -> bool:
    """Nothing handed out and no host moved: only hosts that did not answer are left, and handing the same cursor
    back would loop (the answer is partial; that cursor may be asked again later)."""
    return not handed_out and new_state == state


def away_answers(state: dict[str, Any], targets: list[Target], named: Callable[[str], Target],
                 finished: Callable[[Any], bool]) -> list[HostAnswer]:
    """A missing host per place a cursor keeps for a host out of the targets, unless that host was finished: the
    page may lack its items (partial), and the caller may ask the same cursor again once it is back."""
    asked = {t.url for t in targets}
    return [HostAnswer(named(url), error=NOT_AMONG_TARGETS, away=True)
            for url, place in state.items() if url not in asked and not finished(place)]
