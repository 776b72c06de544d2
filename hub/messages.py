"""One Message-Id across hosts, paged: every host's recipients in target order, each host's oldest first.

A Message-Id normally lives on one host, so the pages are the hosts' own pages one after the other
(the order the unpaged answer always had), not a merge by time. The hub cursor holds, per host URL,
`[host cursor, items after it already handed out]` while the host is in progress, or the host's
recipients_total once it is exhausted (so later pages still sum it without asking again). A host
handed out in part is asked once more for its own cursor after the last one shown, so the count is
0 unless that failed. A host that does not answer keeps its position: it is asked again on the next
page and the answer is partial meanwhile; so does a host missing from the targets for a page.
"""

from __future__ import annotations

import asyncio
import json
import time
from hashlib import blake2b
from typing import Any

from correlator.api import BadRequest, decode_token, encode_token
from correlator.keys import norm_message_id
from hub.fanout import Fanout, HostAnswer
from hub.places import cursor_after, kept_out_of_targets, stalled
from hub.search import MAX_HUB_CURSOR
from hub.targets import Target


def fingerprint(message_id: str) -> str:
    return blake2b(json.dumps(["hub-message", norm_message_id(message_id)]).encode(), digest_size=6).hexdigest()


def _decode(cursor: str, fp: str) -> dict[str, Any]:
    data = decode_token(cursor, max_chars=MAX_HUB_CURSOR, max_depth=3)
    try:
        if not isinstance(data, dict) or not isinstance(data.get("h"), dict):
            raise ValueError("shape")
        for value in data["h"].values():
            if isinstance(value, bool):
                raise ValueError("state")
            if isinstance(value, int):
                if value < 0:
                    raise ValueError("total")
                continue
            if not (isinstance(value, list) and len(value) == 2 and (value[0] is None or isinstance(value[0], str))
                    and isinstance(value[1], int) and not isinstance(value[1], bool) and 0 <= value[1] <= 1000):
                raise ValueError("state")
    except ValueError:
        raise BadRequest(400, "malformed cursor", "cursor") from None
    if data.get("f") != fp:
        raise BadRequest(400, "cursor belongs to another Message-Id", "cursor")
    return data["h"]


async def message_page(fanout: Fanout, targets: list[Target], path: str, message_id: str, limit: int,
                       cursor: str | None) -> tuple[dict[str, Any] | None, list[HostAnswer]]:
    """(body without the partial fields, or None when no host that answered has the message; every answer)."""
    fp = fingerprint(message_id)
    state = _decode(cursor, fp) if cursor else {}
    pending = [t for t in targets if not isinstance(state.get(t.url), int)]
    deadline = time.monotonic() + fanout.timeout

    async def ask(t: Target, start: str | None, count: int) -> HostAnswer:
        params: dict[str, Any] = {"limit": min(1000, count)}
        if start:
            params["cursor"] = start
        return await fanout.one(t, path, params, deadline)

    positions = {t.url: state.get(t.url) or [None, 0] for t in pending}
    answers = dict(zip((t.url for t in pending), await asyncio.gather(
        *(ask(t, positions[t.url][0], positions[t.url][1] + limit) for t in pending)), strict=True))
    for ans in answers.values():
        if ans.ok and ans.status == 400 and isinstance(ans.body, dict):  # the caller's parameters
            raise BadRequest(400, str(ans.body.get("error")), ans.body.get("parameter"))
    out: list[dict[str, Any]] = []
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
        found, mid = True, mid or ans.body.get("message_id")
        total += int(ans.body.get("recipients_total") or 0)
        items = (ans.body.get("recipients") or [])[skip:]
        taken = 0 if full else min(len(items), limit - len(out))
        out += [{**item, "host": t.name} for item in items[:taken]]
        if taken < len(items) or full:  # this page is full before the host's buffered items are
            new_state[t.url] = [start, skip + taken]
            if taken:
                cut = (t, start, skip + taken, items[taken - 1].get("id"))
            full = True
        elif ans.body.get("next_cursor"):  # the host has more: later hosts wait for it
            new_state[t.url] = [ans.body["next_cursor"], 0]
            full = True
        else:
            new_state[t.url] = int(ans.body.get("recipients_total") or 0)
    if not found:
        return None, list(answers.values())
    if cut is not None:  # at most one host per page is handed out in part: its place as its own keyset cursor
        t, start, count, last_id = cut
        nxt = cursor_after(await ask(t, start, count), "recipients", count, last_id)
        if nxt is not None:
            new_state[t.url] = [nxt, 0]
    more = any(not isinstance(new_state[t.url], int) for t in targets) and not stalled(len(out), new_state, state)
    body = {"message_id": mid or norm_message_id(message_id), "recipients_total": total,
            "truncated": total > len(out), "next_cursor": encode_token({"f": fp, "h": new_state}) if more else None,
            "recipients": out}
    return body, list(answers.values())
