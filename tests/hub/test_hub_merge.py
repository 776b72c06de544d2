"""The search merge and the pages without processes: fake hosts with their own paging quirks
(short scan-limited pages, pages capped at 500), and hostile values in every field of a page."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hub.fanout import HostAnswer
from hub.search import search
from hub.targets import Target
from pages import build_pages_router


class FakeHosts:
    """`Fanout.one` over in-memory hosts: items newest first, integer offsets as host cursors."""

    timeout = 1.0

    def __init__(self, data: dict[str, list[dict[str, Any]]], short_pages: set[str]) -> None:
        self.data, self.short, self.calls = data, short_pages, 0

    async def one(self, target: Target, path: str, params: dict[str, Any], deadline: float | None = None) -> HostAnswer:
        self.calls += 1
        items = self.data[target.name]
        start = int(params.get("cursor", 0))
        limit = min(int(params["limit"]), 500)
        if target.name in self.short:  # like a vmta/outcome filter that ran out of scan budget
            limit = min(limit, 2)
        page = items[start:start + limit]
        nxt = str(start + limit) if start + limit < len(items) else None
        return HostAnswer(target, 200, {"items": page, "next_cursor": nxt, "limit": limit,
                                        "scan_limited": target.name in self.short})


def make_data(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    data = {}
    for h in ("a", "b", "c"):
        n = rng.choice([0, 1, 5, 23, 61])
        times = sorted((rng.randrange(0, 40) for _ in range(n)), reverse=True)  # many ties across hosts
        data[h] = [{"id": i, "first_seen": f"2026-11-30T10:00:{t:02d}Z"} for i, t in enumerate(times)]
    return data


def reference(data: dict[str, list[dict[str, Any]]]) -> list[tuple[str, int]]:
    names = sorted(data)
    heads = {h: list(v) for h, v in data.items()}
    out = []
    while any(heads.values()):
        best = max((h for h in names if heads[h]), key=lambda h: (heads[h][0]["first_seen"], -names.index(h)))
        out.append((best, heads[best].pop(0)["id"]))
    return out


@pytest.mark.parametrize("seed", range(12))
async def test_pages_are_the_merge_whatever_the_page_size_and_host_quirks(seed):
    rng = random.Random(seed)
    data = make_data(rng)
    hosts = FakeHosts(data, {"b"} if seed % 2 else set())
    targets = [Target(h, f"http://{h}") for h in sorted(data)]
    limit = rng.choice([1, 3, 7, 50])
    got, cursor = [], None
    for _ in range(500):
        body, failed = await search(hosts, targets, {}, limit, cursor, {})  # type: ignore[arg-type]
        assert failed == []
        assert len(body["items"]) == limit or body["next_cursor"] is None or body["scan_limited"]
        got += [(i["host"], i["id"]) for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert got == reference(data)


class KeysetHosts(FakeHosts):
    """Hosts whose cursor is the id of the last item handed out, as a daemon's keyset cursor: an item stored on top
    in the meantime (live traffic) does not move a page that begins after it. Hosts named in `down` refuse."""

    def __init__(self, data: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(data, set())
        self.down: set[str] = set()

    async def one(self, target: Target, path: str, params: dict[str, Any], deadline: float | None = None) -> HostAnswer:
        if target.name in self.down:
            return HostAnswer(target, error="ConnectError: connection refused")
        self.calls += 1
        items = self.data[target.name]
        after = params.get("cursor")
        start = 0 if after is None else next(i for i, it in enumerate(items) if str(it["id"]) == after) + 1
        page = items[start:start + min(int(params["limit"]), 500)]
        nxt = str(page[-1]["id"]) if page and start + len(page) < len(items) else None
        return HostAnswer(target, 200, {"items": page, "next_cursor": nxt, "limit": params["limit"]})


@pytest.mark.parametrize("limit", [1, 3, 4, 5])
async def test_timelines_stored_between_pages_repeat_none_and_skip_none(limit: int):
    """A host handed out in part was resumed by an offset into the page it was on; on a live host the first page
    (no host cursor yet) moves down by every timeline stored since, so its items came again on the next hub page.
    Its place is now its own cursor after the last item handed out."""
    data = {h: [{"id": i, "first_seen": f"2026-11-30T10:00:{50 - 3 * i - (h == 'b'):02d}Z"} for i in range(6)]
            for h in ("a", "b")}
    hosts = KeysetHosts(data)
    targets = [Target(h, f"http://{h}") for h in ("a", "b")]
    got, cursor, page = [], None, 0
    while True:
        body, failed = await search(hosts, targets, {}, limit, cursor, {})  # type: ignore[arg-type]
        assert failed == []
        got += [(i["host"], i["id"]) for i in body["items"]]
        page += 1
        for h in ("a", "b"):  # live traffic: newer timelines on top of both hosts
            data[h].insert(0, {"id": 100 * page + (h == "b"), "first_seen": f"2026-11-30T10:01:{page:02d}Z"})
        if (cursor := body["next_cursor"]) is None:
            break
    old = [(h, i) for h, i in got if i < 100]
    assert len(got) == len(set(got))
    assert old == reference({h: [it for it in v if it["id"] < 100] for h, v in data.items()})


def _two_hosts(n: int = 3) -> dict[str, list[dict[str, Any]]]:
    return {h: [{"id": i, "first_seen": f"2026-11-30T10:00:{50 - 2 * i - (h == 'b'):02d}Z"} for i in range(n)]
            for h in ("a", "b")}


async def test_a_search_page_with_nothing_but_unanswering_hosts_left_ends_the_paging():
    """It handed back its own cursor with no items: a client (or the page's Next link) went round in a loop."""
    hosts = KeysetHosts(_two_hosts())
    targets = [Target(h, f"http://{h}") for h in ("a", "b")]
    body, _ = await search(hosts, targets, {}, 2, None, {})  # type: ignore[arg-type]
    assert [(i["host"], i["id"]) for i in body["items"]] == [("a", 0), ("b", 0)]
    hosts.down.add("b")
    body, failed = await search(hosts, targets, {}, 10, body["next_cursor"], {})  # type: ignore[arg-type]
    assert [(i["host"], i["id"]) for i in body["items"]] == [("a", 1), ("a", 2)]
    assert [f.target.name for f in failed] == ["b"] and body["next_cursor"] is not None  # b may hold more
    cursor = body["next_cursor"]
    body, failed = await search(hosts, targets, {}, 10, cursor, {})  # type: ignore[arg-type]
    assert (body["items"], body["next_cursor"], [f.target.name for f in failed]) == ([], None, ["b"])


async def test_a_host_left_out_of_the_targets_for_a_search_page_keeps_its_place():
    hosts = KeysetHosts(_two_hosts(4))
    both = [Target(h, f"http://{h}") for h in ("a", "b")]
    got, cursor = [], None
    for targets in (both, both[:1], both, both, both, both):
        body, _ = await search(hosts, targets, {}, 2, cursor, {})  # type: ignore[arg-type]
        got += [(i["host"], i["id"]) for i in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert len(got) == len(set(got)) and sorted(got) == [(h, i) for h in ("a", "b") for i in range(4)]


class FakeBackend:
    def __init__(self, answers: dict[str, tuple[int, Any]]) -> None:
        self.answers = answers

    async def get(self, path: str, params: dict[str, Any]) -> tuple[int, Any]:
        return self.answers[path]


EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


async def test_every_value_on_the_pages_is_escaped():
    event = {"time": "2026-11-30T10:00:00Z", "ts": 1.0, "kind": "bounced", "attempt": 1, "vmta": EVIL,
             "source_ip": EVIL, "dsn_status": EVIL, "dsn_diag": EVIL, "dsn_mta": EVIL, "response_class": EVIL,
             "source": EVIL}
    tl = {"rcpt": EVIL, "outcome": "bounced", "host": EVIL, "job_id": EVIL, "orig": EVIL, "vmta": EVIL,
          "vmta_pool": EVIL, "isp": EVIL, "attempts": 1, "events": [event], "message_id": EVIL}
    flows = {"since": "2026-11-30T09:00:00Z", "until": None, "missing_hosts": [{"host": EVIL, "error": EVIL}],
             "nodes": [{"id": "sender:" + EVIL, "title": EVIL, "subtitle": "sender"},
                       {"id": "vmta:v", "title": "v", "subtitle": "vmta"}],
             "edges": [{"id": "sender:" + EVIL + "->vmta:v", "source": "sender:" + EVIL, "target": "vmta:v",
                        "detail__delivered": 3, "detail__bounced": 1, "detail__deferred": 0,
                        "detail__complained": 0}]}
    backend = FakeBackend({
        "/api/v1/messages/x@y": (200, {"message_id": EVIL, "recipients_total": 1, "recipients": [tl],
                                       "missing_hosts": [{"host": EVIL, "error": EVIL}]}),
        "/api/v1/search": (200, {"items": [tl], "next_cursor": EVIL}),
        "/api/v1/flows": (200, flows),
        "/api/v1/timeline": (400, {"error": EVIL, "parameter": EVIL, "status": 400}),
    })
    app = FastAPI()
    app.include_router(build_pages_router(lambda _r: backend, grafana_url='http://g"><script>'))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for path, status in [("/ui/messages/x@y", 200), ("/ui/?rcpt=" + EVIL, 200), ("/ui/flows?since=" + EVIL, 200),
                             ("/ui/timeline?rcpt=a&job_id=" + EVIL, 400)]:
            r = await client.get(path)
            assert r.status_code == status, path
            assert "<script" not in r.text and "<img" not in r.text, path
            assert "&lt;script&gt;" in r.text, path
            assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none' covers it
            assert r.headers["content-security-policy"].startswith("default-src 'none'")
        # searched by Message-Id: the message's page itself, never a redirect putting the id in a URL (it may embed
        # the recipient's address); asked with the angle brackets stripped and the id as one path segment
        backend.answers["/api/v1/messages/ab%3Ccd@x"] = (200, {"message_id": "ab<cd@x", "recipients_total": 0,
                                                               "recipients": []})
        r = await client.get("/ui/?message_id=%3Cab%3Ccd%40x%3E")
        assert r.status_code == 200 and "location" not in r.headers
        assert 'id="message-id">&lt;ab&lt;cd@x&gt;</span>' in r.text

