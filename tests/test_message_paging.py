"""A Message-Id with more recipients than one answer holds is paged with a cursor: on the daemon
(in the order stored, by id), through the hub (hosts one after the other, each host's own
pages) and on the forensic page (`Next recipients`). Every recipient is listed exactly once."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from correlator.api import decode_token, encode_token
from hub import cursors
from hub.app import build_hub_app
from hub.config import HubConfig
from hub.fanout import Fanout
from hub.messages import message_page
from hub.targets import Target
from tests.test_correlator_support import Harness, batch

MID = "big@s.example"


def seed(h: Harness, prefix: str, n: int, other: int = 0) -> list[str]:
    """n recipients of MID (two per second, so first_seen ties are broken by id) and `other` of another message;
    returns MID's recipients oldest first."""
    rows = [f"d,2024-05-01 10:00:{i // 2:02d}+0000,a@s.example,{prefix}{i}@gmail.com,v1,<{MID}>" for i in range(n)]
    rows += [f"d,2024-05-01 09:00:00+0000,a@s.example,x{i}@gmail.com,v1,<other@s.example>" for i in range(other)]
    h.commit(batch(f"/l/{prefix}acct.csv", "type,timeLogged,orig,rcpt,vmta,header_Message-Id\n" + "\n".join(rows)))
    return [f"{prefix}{i}@gmail.com" for i in range(n)]


def app_of(h: Harness) -> FastAPI:
    app = FastAPI()
    app.include_router(h.sink.asgi_routes())
    return app


class Hosts(httpx.AsyncBaseTransport):
    """Routes each request to the daemon app of its host name; a host named `down` refuses."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.apps = {name: httpx.ASGITransport(app=app) for name, app in apps.items()}
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append((request.url.host, dict(request.url.params)))
        if request.url.host not in self.apps:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.apps[request.url.host].handle_async_request(request)


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    h = Harness(tmp_path)
    yield h, seed(h, "u", 7, other=2)
    h.close()


async def test_the_daemon_pages_a_message_oldest_first_each_recipient_once(daemon: Any) -> None:
    h, rcpts = daemon
    seen, pages, cursor = [], [], None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(h)), base_url="http://d") as c:
        whole = (await c.get(f"/api/v1/messages/<{MID}>", params={"limit": 100})).json()
        while True:
            r = await c.get(f"/api/v1/messages/{MID}", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            pages.append(len(body["recipients"]))
            assert (body["recipients_total"], body["truncated"]) == (7, True)
            seen += [t["rcpt"] for t in body["recipients"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert pages == [3, 3, 1]
    assert seen == rcpts == [t["rcpt"] for t in whole["recipients"]]
    assert (whole["truncated"], whole["next_cursor"]) == (False, None)


async def test_a_cursor_of_another_message_or_a_forged_one_is_a_400_naming_cursor(daemon: Any) -> None:
    h, _ = daemon
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(h)), base_url="http://d") as c:
        cursor = (await c.get(f"/api/v1/messages/{MID}", params={"limit": 2})).json()["next_cursor"]
        other = await c.get("/api/v1/messages/other@s.example", params={"cursor": cursor})
        forged = await c.get(f"/api/v1/messages/{MID}", params={"cursor": encode_token([1e300, 1, "x"])})
        garbage = await c.get(f"/api/v1/messages/{MID}", params={"cursor": "%%%"})
    assert (other.status_code, other.json()["parameter"], other.json()["error"]) == (
        400, "cursor", "cursor belongs to another Message-Id")
    for r in (forged, garbage):
        assert (r.status_code, r.json()["parameter"], r.json()["error"]) == (400, "cursor", "malformed cursor")


async def test_the_text_answer_names_the_next_page(daemon: Any) -> None:
    h, _ = daemon
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(h)), base_url="http://d") as c:
        r = await c.get(f"/api/v1/messages/{MID}", params={"limit": 5, "format": "text"})
        cursor = (await c.get(f"/api/v1/messages/{MID}", params={"limit": 5})).json()["next_cursor"]
        last = await c.get(f"/api/v1/messages/{MID}", params={"limit": 5, "format": "text", "cursor": cursor})
    assert f"(5 of 7 recipients); next page: ?cursor={cursor}" in r.text
    assert "(2 of 7 recipients)" in last.text and "next page" not in last.text


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Fanout, list[Target], Hosts, list[str]]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    want = seed(a, "a", 5) + seed(b, "b", 4, other=1)
    hosts = Hosts({"host-a": app_of(a), "host-b": app_of(b)})
    hosts.harness = {"a": a, "b": b}  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=hosts) as client:
        yield Fanout(client, 5.0), [Target("a", "http://host-a"), Target("b", "http://host-b")], hosts, want
    a.close()
    b.close()


async def pages_through(fanout: Fanout, targets: list[Target], limit: int) -> tuple[list[str], list[int], list[int]]:
    seen, sizes, totals, cursor = [], [], [], None
    while True:
        body, _answers = await message_page(fanout, targets, f"/api/v1/messages/{MID}", MID, limit, cursor)
        assert body is not None
        seen += [f"{t['host']}:{t['rcpt']}" for t in body["recipients"]]
        sizes.append(len(body["recipients"]))
        totals.append(body["recipients_total"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, sizes, totals


@pytest.mark.parametrize("limit,sizes", [(3, [3, 3, 3]), (4, [4, 4, 1]), (5, [5, 4]), (9, [9]), (100, [9])])
async def test_the_hub_pages_host_after_host_every_recipient_once(cluster: Any, limit: int, sizes: list[int]) -> None:
    fanout, targets, _, want = cluster
    seen, got_sizes, totals = await pages_through(fanout, targets, limit)
    assert seen == [("a:" if r.startswith("a") else "b:") + r for r in want]
    assert (got_sizes, set(totals)) == (sizes, {9})


async def test_an_exhausted_host_is_not_asked_again_and_still_counts(cluster: Any) -> None:
    fanout, targets, hosts, _ = cluster
    body, _ = await message_page(fanout, targets, f"/api/v1/messages/{MID}", MID, 6, None)
    assert body is not None
    hosts.asked.clear()
    state = decode_token(body["next_cursor"], max_chars=16_384, max_depth=3)["h"]
    assert state["http://host-a"] == 5  # host b was handed out in part: its place is its own cursor after b0
    assert isinstance(state["http://host-b"][0], str) and state["http://host-b"][1] == 0
    body, _ = await message_page(fanout, targets, f"/api/v1/messages/{MID}", MID, 6, body["next_cursor"])
    assert body is not None and body["recipients_total"] == 9 and len(body["recipients"]) == 3
    assert [h for h, _ in hosts.asked] == ["host-b"]


async def test_a_host_that_does_not_answer_keeps_its_place_and_is_asked_on_the_next_page(cluster: Any) -> None:
    fanout, targets, _, want = cluster
    down = [Target("down", "http://down"), *targets]
    body, answers = await message_page(fanout, down, f"/api/v1/messages/{MID}", MID, 100, None)
    assert body is not None and len(body["recipients"]) == 9 and body["next_cursor"] is not None
    assert [a.target.name for a in answers if not a.ok] == ["down"]
    # a current target at its top is said by the cursor's `t` (hub/cursors.py), not by a place in `h`
    assert decode_token(body["next_cursor"], max_chars=16_384, max_depth=3)["h"] == {
        "http://host-a": 5, "http://host-b": 4}
    got = cursors.decode(body["next_cursor"], down, lambda place: True)
    assert got.places == {"http://down": [None, 0], "http://host-a": 5, "http://host-b": 4}
    body, answers = await message_page(fanout, down, f"/api/v1/messages/{MID}", MID, 100, body["next_cursor"])
    assert [a.target.name for a in answers] == ["down"]  # asked again; the exhausted hosts are not


async def test_the_hub_route_pages_with_its_cursor_and_refuses_another_messages(cluster: Any) -> None:
    fanout, _, hosts, want = cluster
    app, hub = build_hub_app(HubConfig.model_validate({"hub": {"targets": ["http://host-a", "http://host-b"]}}))
    await hub.fanout.client.aclose()
    hub.fanout = fanout
    seen, cursor = [], None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as c:
        while True:
            r = await c.get(f"/api/v1/messages/<{MID}>", params={"limit": 4, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["recipients_total"], body["partial"]) == (9, False)
            seen += [t["rcpt"] for t in body["recipients"]]
            if (cursor := body["next_cursor"]) is None:
                break
        first = (await c.get(f"/api/v1/messages/{MID}", params={"limit": 4})).json()["next_cursor"]
        other = await c.get("/api/v1/messages/other@s.example", params={"cursor": first})
        text = await c.get(f"/api/v1/messages/{MID}", params={"limit": 4, "format": "text"})
    assert seen == want
    assert (other.status_code, other.json()["parameter"]) == (400, "cursor")
    assert f"(4 of 9 recipients); next page: ?cursor={first}" in text.text


async def test_the_forensic_page_links_the_next_recipients(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pages.views.MESSAGE_PAGE", 3)
    h, rcpts = daemon
    shown, metas, href = [], [], f"/ui/messages/{MID}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(h)), base_url="http://d") as c:
        while href:
            r = await c.get(href)
            assert r.status_code == 200, r.text
            shown += [x for x in rcpts if x in r.text]
            metas += re.findall(r"(\d+) of 7 recipients shown", r.text)
            links = set(re.findall(r'<a class="next" href="([^"]+)"', r.text))
            assert len(links) <= 1
            link = links.pop() if links else None
            href = html.unescape(link) if link else ""
    assert shown == rcpts and metas == ["3", "3", "1"]


async def _page(fanout: Fanout, targets: list[Target], limit: int, cursor: str | None) -> tuple[list[str], Any]:
    body, _answers = await message_page(fanout, targets, f"/api/v1/messages/{MID}", MID, limit, cursor)
    assert body is not None
    return [f"{t['host']}:{t['rcpt']}" for t in body["recipients"]], body["next_cursor"]


@pytest.mark.parametrize("change", ["an older recipient stored", "the first recipient pruned"])
async def test_a_host_whose_recipients_change_between_pages_has_none_repeated_or_skipped(cluster: Any,
                                                                                        change: str) -> None:
    """A host cut mid-page was resumed by an offset into its page (`[cursor, skip]`): a recipient stored or pruned
    before that point in the meantime shifted it, so one was shown twice or never. A host's place is its own
    keyset cursor, as a daemon's pages are."""
    fanout, targets, hosts, want = cluster
    seen, cursor = [], None
    for _ in range(2):
        got, cursor = await _page(fanout, targets, 3, cursor)
        seen += got
    assert seen == [f"a:a{i}@gmail.com" for i in range(5)] + ["b:b0@gmail.com"]  # host b cut after its first
    b = hosts.harness["b"]
    if change == "an older recipient stored":
        b.commit(batch("/l/late.csv", "type,timeLogged,orig,rcpt,vmta,header_Message-Id\n"
                       f"d,2024-05-01 09:59:00+0000,a@s.example,late@gmail.com,v1,<{MID}>"))
    else:
        b.conn.execute("DELETE FROM corr_timelines WHERE rcpt = 'b0@gmail.com'")
    while cursor is not None:
        got, cursor = await _page(fanout, targets, 3, cursor)
        seen += got
    stored_later = ["b:late@gmail.com"] if change == "an older recipient stored" else []  # stored after: listed last
    assert seen == [f"a:a{i}@gmail.com" for i in range(5)] + [f"b:b{i}@gmail.com" for i in range(4)] + stored_later


async def test_a_host_left_out_of_the_targets_for_a_page_keeps_its_place(cluster: Any) -> None:
    """Service discovery may drop a host for one page: its place was lost and its recipients shown again."""
    fanout, targets, _, want = cluster
    seen, cursor = [], None
    for page_targets in (targets, targets[1:], targets, targets, targets):
        got, cursor = await _page(fanout, page_targets, 3, cursor)
        seen += got
        if cursor is None:
            break
    assert sorted(seen) == sorted(("a:" if r.startswith("a") else "b:") + r for r in want)
    assert len(seen) == len(set(seen)) == 9


async def test_a_page_with_nothing_but_a_host_that_does_not_answer_ends_the_paging(cluster: Any) -> None:
    """It gave back its own cursor with no recipients: a client following next_cursor looped while the host was
    down (the page says partial; the same cursor may be asked again later)."""
    fanout, targets, _, _ = cluster
    down = [targets[0], Target("down", "http://down")]
    got, cursor = await _page(fanout, down, 100, None)
    assert len(got) == 5 and cursor is not None  # the down host may hold more
    again, after = await _page(fanout, down, 100, cursor)
    assert (again, after) == ([], None)


def test_the_text_note_of_a_page_that_shows_every_counted_recipient_names_only_the_next_page() -> None:
    from correlator import render

    assert render.message_note(3, 3, "abc") == "next page: ?cursor=abc"
    assert render.message_note(3, 7, "abc") == "(3 of 7 recipients); next page: ?cursor=abc"
    assert render.message_note(3, 7, None) == "(3 of 7 recipients)"


async def test_a_cursor_in_the_last_second_of_year_9999_is_taken_back(tmp_path: Path) -> None:
    """A record time the parser accepts (before 10000-01-01) gave a cursor the daemon refused as malformed."""
    h = Harness(tmp_path)
    h.commit(batch("/l/late.csv", "type,timeLogged,orig,rcpt,vmta,header_Message-Id\n" + "\n".join(
        f"d,9999-12-31 23:59:59.500+0000,a@s.example,z{i}@gmail.com,v1,<{MID}>" for i in range(2))))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(h)), base_url="http://d") as c:
            first = (await c.get(f"/api/v1/messages/{MID}", params={"limit": 1})).json()
            r = await c.get(f"/api/v1/messages/{MID}", params={"limit": 1, "cursor": first["next_cursor"]})
    finally:
        h.close()
    assert r.status_code == 200, r.text
    assert [t["rcpt"] for t in first["recipients"] + r.json()["recipients"]] == ["z0@gmail.com", "z1@gmail.com"]


async def test_a_recipient_whose_first_seen_moves_earlier_while_paging_is_still_listed(tmp_path: Path) -> None:
    """A report read before its delivery starts a timeline; the delivery joins it later and its first_seen moves
    earlier. Paged by first_seen, it fell behind the cursor and was never listed: pages follow the storage order
    (id), which never changes, so every recipient stored when the first page was read is listed once."""
    h = Harness(tmp_path)
    head = "type,timeLogged,timeQueued,orig,rcpt,dsnStatus,vmta,jobId,header_Message-Id\n"
    h.commit(batch("/l/acct-1.csv", head
                   + "d,2024-05-01 10:05:00+0000,2024-05-01 10:00:00+0000,s@x.example,a@gmail.com,2.0.0,v1,J9,<M@x>\n"
                   + "d,2024-05-01 11:05:00+0000,2024-05-01 11:00:00+0000,s@x.example,b@gmail.com,2.0.0,v1,J9,<M@x>\n"))
    h.commit(batch("/l/bounce-1.csv", "type,timeLogged,orig,rcpt,dsnStatus,header_Message-Id\n"
                   "rb,2024-05-01 14:00:00+0000,s@x.example,c@gmail.com,5.2.2,<M@x>\n"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(h)), base_url="http://d") as c:
            page = (await c.get("/api/v1/messages/M@x", params={"limit": 1})).json()
            seen = [t["rcpt"] for t in page["recipients"]]
            h.commit(batch("/l/acct-2.csv", head  # c's delivery, queued at 09:00, joins the report's timeline
                           + "d,2024-05-01 09:05:00+0000,2024-05-01 09:00:00+0000,s@x.example,c@gmail.com,2.0.0,v1,"
                             "J9,<M@x>\n"))
            while page["next_cursor"]:
                page = (await c.get("/api/v1/messages/M@x", params={"limit": 1, "cursor": page["next_cursor"]})).json()
                seen += [t["rcpt"] for t in page["recipients"]]
            joined = (await c.get("/api/v1/messages/M@x")).json()["recipients"]
    finally:
        h.close()
    assert seen == ["a@gmail.com", "b@gmail.com", "c@gmail.com"]
    assert [(t["rcpt"], t["first_seen"]) for t in joined][-1] == ("c@gmail.com", "2024-05-01T09:00:00Z")


async def test_a_large_message_is_paged_along_its_index_without_sorting_or_counting_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page of a Message-Id read and sorted every timeline of it (ORDER BY id; no index holds that order) and
    counted them all: 1.5 s a page at 10M recipients, quadratic to page through. Past MESSAGE_ORDERED_MAX a message
    is paged in its index's order (day, recipient key, id), counted on its first page only; every recipient still
    comes once, with new ones stored while paging."""
    from correlator import timeline
    from correlator.keys import message_hash

    monkeypatch.setattr(timeline, "MESSAGE_ORDERED_MAX", 5)
    h = Harness(tmp_path)
    rcpts = seed(h, "u", 12, other=3)
    h.commit(batch("/l/norcpt.csv", "type,timeLogged,orig,rcpt,vmta,header_Message-Id\n" + "".join(
        f"d,2024-05-01 10:00:0{i}+0000,a@s.example,,v1,<{MID}>\n" for i in range(3))))  # no recipient key
    late: list[str] = []
    seen, ids, totals, cursor = [], [], [], None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(h)), base_url="http://d") as c:
        while True:
            r = await c.get(f"/api/v1/messages/{MID}", params={"limit": 4, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [t["rcpt"] for t in body["recipients"] if t["rcpt"] is not None]
            ids += [t["id"] for t in body["recipients"]]
            totals.append(body["recipients_total"])
            if len(ids) == 4:
                late = seed(h, "late", 2)  # stored after the first page: listed once (or not) by the later pages
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert len(set(ids)) == len(ids) and len(set(seen)) == len(seen)  # once each
    assert set(rcpts) <= set(seen) <= set(rcpts) | set(late) and len(ids) - len(seen) == 3
    assert totals == [15] * len(totals)  # as of the first page
    statements: list[str] = []
    pages, after = [], None
    with h.reader() as r:
        r.conn.set_trace_callback(statements.append)
        while True:
            items, total, after = r.message_page(message_hash(MID), 4, after)
            pages.append((len(items), total))
            if after is None:
                break
        r.conn.set_trace_callback(None)
        plans = [" | ".join(row[3] for row in r.conn.execute("EXPLAIN QUERY PLAN " + sql))
                 for sql in statements if "FROM corr_timelines" in sql]
    assert pages == [(4, 17), (4, 17), (4, 17), (4, 17), (1, 17)]
    assert len([sql for sql in statements if "count(" in sql and "FROM corr_timelines" in sql]) <= 2
    assert plans
    for plan in plans:
        assert "TEMP B-TREE" not in plan, plan
    h.close()
