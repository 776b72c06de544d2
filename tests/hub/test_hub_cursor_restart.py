"""A hub cursor whose fingerprint does not match is a 400 on `cursor` that names both causes the hub cannot tell
apart: other filters (another Message-Id), or a hub restarted without `hub.cursor_key_file` (its key drawn anew).
It said "cursor belongs to a search with other filters" for a cursor minted before a restart with the very same
filters (review 2026-12-06)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from hub import cursors
from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary, timeline

SEARCH = ("cursor not issued by this hub for these filters: the filters differ, or the hub restarted without "
          "hub.cursor_key_file; start the search again")
MESSAGE = ("cursor not issued by this hub for this Message-Id: the Message-Id differs, or the hub restarted without "
           "hub.cursor_key_file; start again from the first page")


def _paged(items: list[dict[str, Any]], req: Request) -> tuple[list[dict[str, Any]], str | None]:
    start, limit = int(req.params.get("cursor", 0)), int(req.params["limit"])
    return items[start:start + limit], str(start + limit) if start + limit < len(items) else None


def _holds_some(req: Request) -> Reply:
    if req.path.startswith("/api/v1/messages/"):
        recipients, nxt = _paged([timeline(id=i) for i in range(1, 4)], req)
        return Reply(body={"message_id": "m@x", "recipients_total": 3, "truncated": nxt is not None,
                           "next_cursor": nxt, "recipients": recipients})
    items, nxt = _paged([summary(id=i, first_seen=f"2026-01-01T00:00:{50 - i}Z") for i in range(1, 6)], req)
    return search_page(items, nxt)


async def test_a_cursor_from_before_a_restart_or_of_other_filters_says_both(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeHosts(_holds_some) as fleet, running_hub({"targets": [fleet.url("a")]}) as hub:
        s1 = (await hub.get("/api/v1/search", params={"limit": 2, "vmta": "v"})).json()
        m1 = (await hub.get("/api/v1/messages/m@x", params={"limit": 1})).json()
        other = await hub.get("/api/v1/search", params={"limit": 2, "vmta": "w", "cursor": s1["next_cursor"]})
        other_mid = await hub.get("/api/v1/messages/n@x", params={"limit": 1, "cursor": m1["next_cursor"]})
        monkeypatch.setattr(cursors, "CURSOR_KEY", secrets.token_bytes(32))  # what a restart without the file does
        same = await hub.get("/api/v1/search", params={"limit": 2, "vmta": "v", "cursor": s1["next_cursor"]})
        same_mid = await hub.get("/api/v1/messages/m@x", params={"limit": 1, "cursor": m1["next_cursor"]})
    for r, error in ((other, SEARCH), (same, SEARCH), (other_mid, MESSAGE), (same_mid, MESSAGE)):
        assert (r.status_code, r.json()["parameter"], r.json()["error"]) == (400, "cursor", error), r.text
