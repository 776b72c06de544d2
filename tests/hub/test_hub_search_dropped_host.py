"""A host asked and still at its top (nothing of it handed out yet: its items are older than every one shown) keeps
its place in the hub cursor: when service discovery drops it for a page it is named missing and the paging goes on
until it is back. Leaned out of the cursor (its place said nothing a current target needs), it was forgotten: the
paging ended with next_cursor null, partial false and no missing host, its timelines never listed (review C).
Real HTTP: fake daemons and the hub on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from correlator.api import BadRequest
from hub import cursors
from hub.targets import Target
from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary, timeline

NOT_TARGETS = "not among the current targets"


def _host(newest: int, n: int, fails: bool = False):  # type: ignore[no-untyped-def]
    """A daemon of `n` timelines first seen `newest - 1` seconds past the minute and older; integer offsets as its
    cursor; answering 500 while `fails` (a one-element list, flipped by the test)."""
    def handler(req: Request) -> Reply:
        if req.path.startswith("/api/v1/messages/"):
            start, limit = int(req.params.get("cursor", 0)), int(req.params["limit"])
            rows = [timeline(id=i) for i in range(1, n + 1)]
            nxt = str(start + limit) if start + limit < n else None
            return Reply(body={"message_id": "m@x", "recipients_total": n, "truncated": nxt is not None,
                               "next_cursor": nxt, "recipients": rows[start:start + limit]})
        if req.path != "/api/v1/search":
            return Reply(404, {"error": "no", "parameter": None, "status": 404})
        if fails:
            return Reply(500, {"error": "boom", "parameter": None, "status": 500})
        rows = [summary(id=i, first_seen=f"2026-01-01T00:00:{newest - i:02d}Z") for i in range(1, n + 1)]
        start, limit = int(req.params.get("cursor", 0)), int(req.params["limit"])
        nxt = str(start + limit) if start + limit < len(rows) else None
        return search_page(rows[start:start + limit], nxt)
    return handler


async def _switch(sd: Path, *hostports: str) -> None:
    sd.write_text(json.dumps([{"targets": list(hostports)}]))
    await asyncio.sleep(0.1)  # past refresh_interval


def _listed(*pages: dict[str, Any]) -> list[tuple[str, int]]:
    return [(i["host"], i["id"]) for p in pages for i in p["items"]]


async def test_a_host_at_its_top_dropped_for_a_page_is_named_missing_and_listed_once_back(tmp_path: Path):
    """Host a: 3 timelines; host b: 2 older ones. Page 1 (limit 2) hands out a's two newest, b was asked and waits
    at its top. b leaves the targets for page 2: a's last is handed out, b is named missing and the cursor goes on;
    once b is back its two timelines come, and the paging ends."""
    sd = tmp_path / "sd.json"
    async with FakeHosts(_host(50, 3)) as a, FakeHosts(_host(20, 2)) as b:
        ha, hb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        await _switch(sd, ha, hb)
        async with running_hub({"file_sd": [str(sd)], "refresh_interval": 0.05}) as hub:
            p1 = (await hub.get("/api/v1/search", params={"limit": 2})).json()
            await _switch(sd, ha)
            p2 = (await hub.get("/api/v1/search", params={"limit": 2, "cursor": p1["next_cursor"]})).json()
            await _switch(sd, ha, hb)
            p3 = (await hub.get("/api/v1/search", params={"limit": 2, "cursor": p2["next_cursor"]})).json()
    gone = [{"host": hb, "url": f"http://{hb}", "error": NOT_TARGETS}]
    assert (_listed(p1), p1["partial"], p1["missing_hosts"]) == ([(ha, 1), (ha, 2)], False, [])
    assert (_listed(p2), p2["partial"], p2["missing_hosts"], p2["next_cursor"] is not None) == (
        [(ha, 3)], True, gone, True)
    assert (_listed(p3), p3["partial"], p3["missing_hosts"], p3["next_cursor"]) == (
        [(hb, 1), (hb, 2)], False, [], None)


async def test_a_host_that_failed_at_its_top_then_left_is_still_named_missing(tmp_path: Path):
    """b answers 500 on page 1 (named missing: that page is partial); it then leaves the targets for page 2: it is
    still missing (its place kept), not forgotten; back, its timelines come."""
    sd = tmp_path / "sd.json"
    fails = [True]

    def b_handler(req: Request) -> Reply:
        return _host(20, 2, fails=fails[0])(req)  # type: ignore[no-any-return]

    async with FakeHosts(_host(50, 3)) as a, FakeHosts(b_handler) as b:
        ha, hb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        await _switch(sd, ha, hb)
        async with running_hub({"file_sd": [str(sd)], "refresh_interval": 0.05}) as hub:
            p1 = (await hub.get("/api/v1/search", params={"limit": 2})).json()
            await _switch(sd, ha)
            p2 = (await hub.get("/api/v1/search", params={"limit": 2, "cursor": p1["next_cursor"]})).json()
            fails[0] = False
            await _switch(sd, ha, hb)
            p3 = (await hub.get("/api/v1/search", params={"limit": 5, "cursor": p2["next_cursor"]})).json()
    assert (_listed(p1), p1["partial"], [m["host"] for m in p1["missing_hosts"]]) == ([(ha, 1), (ha, 2)], True, [hb])
    assert (_listed(p2), p2["partial"], p2["missing_hosts"], p2["next_cursor"] is not None) == (
        [(ha, 3)], True, [{"host": hb, "url": f"http://{hb}", "error": NOT_TARGETS}], True)
    assert (_listed(p3), p3["partial"], p3["next_cursor"]) == ([(hb, 1), (hb, 2)], False, None)


async def test_a_message_host_waiting_its_turn_dropped_for_a_page_is_named_missing(tmp_path: Path):
    """The Message-Id route (hosts one after the other) keeps a waiting host's place too: b, asked and waiting its
    turn behind a, leaves for a page, is named missing, and its recipients come once it is back."""
    sd = tmp_path / "sd.json"
    async with FakeHosts(_host(50, 3)) as a, FakeHosts(_host(20, 2)) as b:
        ha, hb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        a_first = sorted([ha, hb])[0] == ha
        first, second = (ha, hb) if a_first else (hb, ha)
        n_first = 3 if a_first else 2
        await _switch(sd, ha, hb)
        async with running_hub({"file_sd": [str(sd)], "refresh_interval": 0.05}) as hub:
            m1 = (await hub.get("/api/v1/messages/m@x", params={"limit": n_first})).json()
            await _switch(sd, first)
            m2 = await hub.get("/api/v1/messages/m@x", params={"limit": 5, "cursor": m1["next_cursor"]})
            await _switch(sd, ha, hb)
            m3 = (await hub.get("/api/v1/messages/m@x", params={"limit": 5, "cursor": m1["next_cursor"]})).json()
    assert [r["host"] for r in m1["recipients"]] == [first] * n_first
    body = m2.json()  # nothing handed out, nothing moved: no next_cursor, the same one is asked again later
    assert (m2.status_code, body["recipients"], body["partial"], body["missing_hosts"], body["next_cursor"]) == (
        200, [], True, [{"host": second, "url": f"http://{second}", "error": NOT_TARGETS}], None)
    assert ([r["host"] for r in m3["recipients"]], m3["partial"], m3["next_cursor"]) == (
        [second] * (5 - n_first), False, None)


# --- the cursor's compact form of a host at its top -------------------------------------------------------------


def _content(cursor: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    if raw[:1] == b"{":
        return json.loads(raw)  # type: ignore[no-any-return]
    return json.loads(zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw[1:]))  # type: ignore[no-any-return]


def _ok(place: Any) -> bool:
    return place == 0 or (isinstance(place, list) and len(place) == 2)


@pytest.mark.parametrize("hosts", [3, 400])
def test_hosts_at_their_top_come_back_from_a_cursor_as_they_went_in(hosts: int) -> None:
    """Plain (3 hosts) and deflated (400): every place, a host at its top ([null, 0]) included, and a host that left
    the targets at its top too (named by its URL)."""
    targets = [Target(f"h{i}", f"http://h{i:03d}.example:9469") for i in range(hosts)]
    places: dict[str, Any] = {t.url: [None, 0] for t in targets}
    places[targets[0].url] = ["abc", 2]
    places[targets[1].url] = 0
    places["http://gone.example:9469"] = [None, 0]
    token, problem = cursors.encode("fp", places, targets)
    assert problem is None and token is not None
    got = cursors.decode(token, targets, _ok)
    assert got.places == places


def test_a_cursor_keeps_hosts_at_their_top_in_a_few_bytes_each() -> None:
    """1,000 hosts at their top: their URLs front-coded (each the part that differs from the one before)."""
    targets = [Target(f"h{i}", f"http://pmta-{i:04d}.mail.example.com:9469") for i in range(1000)]
    token, _ = cursors.encode("fp", {t.url: [None, 0] for t in targets}, targets)
    assert token is not None and len(token) < 2048, len(token)
    assert _content(token)["t"][:4] == [0, "http://pmta-0000.mail.example.com:9469", 15, "1.mail.example.com:9469"]


@pytest.mark.parametrize("t", [
    [0, "http://a.example"] + [16, "x"] * 600_000,  # expands past MAX_INFLATED
    [5, "http://a.example"],  # a prefix longer than the URL before it
    [0, "http://a.example", 16, ""],  # the same URL twice
    [0, "http://a.example", "x"],  # odd length
    [0, 1], ["0", "http://a.example"], [True, "http://a.example"], [-1, "x"], "http://a.example", [[0, "x"]],
])
def test_a_forged_list_of_hosts_at_their_top_is_a_400(t: Any) -> None:
    value = {"f": "fp", "h": {}, "t": t}
    raw = json.dumps(value, separators=(",", ":")).encode()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    token = base64.urlsafe_b64encode(b"\x01" + deflate.compress(raw) + deflate.flush()).decode().rstrip("=")
    with pytest.raises(BadRequest) as exc:
        cursors.decode(token, [Target("a", "http://a.example")], _ok)
    assert (exc.value.status, exc.value.parameter) == (400, "cursor")
