"""From a hostile review (2026-12-05): an answer that costs the hub more than its size, a live host's keyset re-check,
an oversized page, a discovered http target under `scheme: https`, a typo'd `host`. Fake hosts and the hub on loopback, in the test's own event loop."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary


def _missing(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["host"], m["error"]) for m in body["missing_hosts"]]


def _targets(fleet: FakeHosts, *names: str) -> list[dict[str, str]]:
    return [{"url": fleet.url(n), "name": n} for n in names]


BOMB = json.dumps({"items": [{}] * 150_000, "next_cursor": None, "limit": 10, "scan_limited": False}).encode()


async def test_an_answer_of_150000_empty_items_is_that_host_missing_fast():
    """A few hundred bytes of gzip froze the hub's event loop ~10 s and took GBs: pydantic collected ~20 errors per
    item and `exc.errors()` built them all."""
    def answer(req: Request) -> Reply:
        if req.host == "bomb":
            return Reply(raw=BOMB, gzip=True)
        return search_page([summary(id=7, first_seen="2026-01-01T00:00:07Z")])

    async with FakeHosts(answer) as fleet, running_hub({"targets": _targets(fleet, "ok", "bomb")}) as hub:
        # a liveness guard only (a hung hub fails here, not at the suite's end); the bounded cost is the answer's
        # error: the list refused by its length, before any of its items is validated
        r = await asyncio.wait_for(hub.get("/api/v1/search", params={"limit": 10}), 60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(i["host"], i["id"]) for i in body["items"]] == [("ok", 7)]
    [(host, error)] = _missing(body)
    assert (host, error) == ("bomb", "HTTP 200: not a watchtower /api/v1/search answer (150000 items where at most 10 "
                                     "were asked)")


async def test_a_list_of_empty_items_on_a_route_without_limit_is_refused_at_its_first_bad_item():
    """A list within its bound (no limit asked: flows' nodes, up to 11,013) is validated up to its first bad item."""
    from hub.fanout import _decode

    raw = json.dumps({"since": "2026-01-01T00:00:00Z", "until": None, "nodes": [{}] * 11_000,
                      "edges": []}).encode()
    loop = asyncio.get_running_loop()
    body, error = await asyncio.wait_for(loop.run_in_executor(None, _decode, raw, "/api/v1/flows", 200), 60)
    assert body is None and error == "HTTP 200: not a watchtower /api/v1/flows answer (nodes.0.id)"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class LiveHost:
    """A daemon's keyset search over timelines (id, first_seen epoch), newest first; `live` hosts store a newest
    timeline per request served (after answering it: the next request sees it)."""

    def __init__(self, count: int, offset: float, live: bool) -> None:
        self.rows = [(i, 1767225600.0 + offset + 10 * i) for i in range(1, count + 1)]
        self.live = live

    def answer(self, req: Request, extra: int = 0) -> Reply:
        until = float(req.params.get("until", "inf"))
        after = int(req.params["cursor"]) if "cursor" in req.params else None
        rows = sorted((r for r in self.rows if r[1] < until and (after is None or r[0] < after)), reverse=True)
        limit = int(req.params.get("limit", 50))
        page = rows[:limit + extra]
        nxt = str(page[-1][0]) if len(rows) > len(page) else None
        if self.live:
            self.rows.append((self.rows[-1][0] + 1, time.time() + 1))
        return search_page([summary(id=i, first_seen=_iso(ts)) for i, ts in page], nxt)


async def _page_through(hub: Any, limit: int, pages: int = 100) -> list[tuple[str, int]]:
    got: list[tuple[str, int]] = []
    cursor = None
    for _ in range(pages):
        r = await hub.get("/api/v1/search", params={"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        got += [(i["host"], i["id"]) for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    return got


async def test_paging_a_live_host_that_stores_new_timelines_hands_every_item_out_once():
    """The keyset re-check asked a live host from the top again: the newest timelines stored since sat on top, the
    last item handed out was never at `count`, the place stayed an offset and later pages repeated items."""
    hosts = {"live": LiveHost(20, 5, live=True), "calm": LiveHost(20, 0, live=False)}
    async with FakeHosts(lambda req: hosts[req.host].answer(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "calm", "live")}) as hub:
        got = await _page_through(hub, 3)
    assert len(got) == len(set(got)), sorted(x for x in got if got.count(x) > 1)
    assert set(got) == {(h, i) for h in ("calm", "live") for i in range(1, 21)}


async def test_a_host_listing_more_items_than_asked_never_makes_a_cursor_the_hub_refuses():
    """A host answering 600 items more than asked let a place's skip grow past 500: the next page was `400 malformed
    cursor`. Such a host is missing (no daemon lists more than asked); the other hosts page on."""
    hosts = {"big": LiveHost(700, 5, live=False), "calm": LiveHost(40, 0, live=False)}

    def answer(req: Request) -> Reply:
        return hosts[req.host].answer(req, extra=600 if req.host == "big" else 0)

    async with FakeHosts(answer) as fleet, running_hub({"targets": _targets(fleet, "calm", "big")}) as hub:
        cursor, got, missing = None, [], set()
        for _ in range(20):
            r = await hub.get("/api/v1/search", params={"limit": 17, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            got += [(i["host"], i["id"]) for i in r.json()["items"]]
            missing |= set(_missing(r.json()))
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
    assert sorted(got) == [("calm", i) for i in range(1, 41)]
    assert missing == {("big", "HTTP 200: not a watchtower /api/v1/search answer (617 items where at most 17 "
                               "were asked)")}


def test_a_search_place_past_what_the_cursor_decoder_takes_is_never_encoded():
    """Whatever a host's page holds, a place's skip stays within the decoder's 0..500."""
    from hub.search import _cut

    assert [i["id"] for i in _cut({"items": [summary(id=i) for i in range(900)]}, 500)] == list(range(500))
    assert _cut({"items": None}, 17) == []


def test_prometheus_targets_take_hub_scheme_not_the_scrape_urls():
    """With `scheme: https` and hub.auth set, a target Prometheus scraped over http got the Basic credential in
    clear text, without a warning: hub.scheme is put in front of every discovered host:port (docs/scaling.md)."""
    from hub.targets import Target, parse_prometheus_targets

    body = {"status": "success", "data": {"activeTargets": [
        {"labels": {"job": "wt", "instance": "p1"}, "scrapeUrl": "http://d1.example:9469/metrics"},
        {"labels": {"job": "wt", "instance": "p2"}, "scrapeUrl": "https://d2.example:9469/metrics"}]}}
    assert parse_prometheus_targets(body, "wt", "https") == [Target("p1", "https://d1.example:9469"),
                                                             Target("p2", "https://d2.example:9469")]
    assert parse_prometheus_targets(body, "wt", "http") == [Target("p1", "http://d1.example:9469"),
                                                            Target("p2", "http://d2.example:9469")]


async def test_replies_of_only_unknown_hosts_is_a_404_on_host():
    """`host=pmta-typo` answered 503 with cursor wording ("the hosts this cursor goes on with..."); /timelines
    answers an unknown host with a 404 naming `host`."""
    async with FakeHosts(lambda req: Reply(body={})) as fleet, \
            running_hub({"targets": _targets(fleet, "a")}) as hub:
        r = await hub.get("/api/v1/replies", params={"host": "pmta-typo"})
    assert r.status_code == 404, r.text
    assert (r.json()["parameter"], r.json()["error"]) == ("host", "unknown host 'pmta-typo'")
