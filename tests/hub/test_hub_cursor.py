"""The hub's cursors: a host that leaves the targets between pages keeps its place and is named missing meanwhile;
a cursor stays small enough for the listener's 16 KiB request head with 1,000 hosts, and a page whose cursor would
not fit says so. Real HTTP: fake daemons and the hub on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from correlator.api import decode_token, encode_token
from hub import cursors
from hub.targets import Target
from tests.hub.fakes import EMPTY_SEARCH, FakeHosts, Reply, Request, running_hub, search_page, summary, timeline

NOT_TARGETS = "not among the current targets"


def _holds_nothing(req: Request) -> Reply:
    if req.path.startswith("/api/v1/messages/"):
        return Reply(404, {"error": "no timeline for Message-Id 'm@x'", "parameter": "message_id", "status": 404})
    return Reply(body=EMPTY_SEARCH)


def _paged(items: list[dict[str, Any]], req: Request, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """A daemon's page: integer offsets as its cursor."""
    start, limit = int(req.params.get("cursor", 0)), int(req.params["limit"])
    return items[start:start + limit], str(start + limit) if start + limit < len(items) else None


def _holds_some(req: Request) -> Reply:
    if req.path.startswith("/api/v1/messages/"):
        recipients, nxt = _paged([timeline(id=i) for i in range(1, 4)], req, "recipients")
        return Reply(body={"message_id": "m@x", "recipients_total": 3, "truncated": nxt is not None,
                           "next_cursor": nxt, "recipients": recipients})
    items, nxt = _paged([summary(id=i, first_seen=f"2026-01-01T00:00:{50 - i}Z") for i in range(1, 6)], req, "items")
    return search_page(items, nxt)


async def _switch(sd: Path, *hostports: str) -> None:
    sd.write_text(json.dumps([{"targets": list(hostports)}]))
    await asyncio.sleep(0.1)  # past refresh_interval


async def test_a_host_dropped_from_the_targets_between_pages_is_named_missing_and_resumes_later(tmp_path: Path):
    """Search answered `items: []`, `next_cursor: null`, `partial: false` (the end, although b held 3 more);
    a Message-Id's next page a 503 "no targets configured or discovered" although host a was there."""
    sd = tmp_path / "sd.json"
    async with FakeHosts(_holds_nothing) as a, FakeHosts(_holds_some) as b:
        ha, hb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        await _switch(sd, ha, hb)
        async with running_hub({"file_sd": [str(sd)], "refresh_interval": 0.05}) as hub:
            m1 = (await hub.get("/api/v1/messages/m@x", params={"limit": 1})).json()
            s1 = (await hub.get("/api/v1/search", params={"limit": 2})).json()
            await _switch(sd, ha)
            m2 = await hub.get("/api/v1/messages/m@x", params={"limit": 1, "cursor": m1["next_cursor"]})
            s2 = await hub.get("/api/v1/search", params={"limit": 2, "cursor": s1["next_cursor"]})
            await _switch(sd, ha, hb)
            m3 = await hub.get("/api/v1/messages/m@x", params={"limit": 5, "cursor": m1["next_cursor"]})
            s3 = await hub.get("/api/v1/search", params={"limit": 5, "cursor": s1["next_cursor"]})
    gone = [{"host": hb, "url": f"http://{hb}", "error": NOT_TARGETS}]
    assert ([r["id"] for r in m1["recipients"]], [i["id"] for i in s1["items"]]) == ([1], [1, 2])
    assert (m2.status_code, m2.json()) == (503, {
        "error": f"the hosts this cursor goes on with are not among the current targets ({hb}): ask again later",
        "parameter": None, "status": 503, "partial": True, "missing_hosts": gone, "hosts": [ha]})
    body = s2.json()
    assert (s2.status_code, body["items"], body["next_cursor"], body["partial"], body["missing_hosts"], body["hosts"]
            ) == (200, [], None, True, gone, [ha])
    assert (m3.status_code, [r["id"] for r in m3.json()["recipients"]], m3.json()["partial"]) == (200, [2, 3], False)
    assert (s3.status_code, [i["id"] for i in s3.json()["items"]], s3.json()["partial"]) == (200, [3, 4, 5], False)


BASE = 1767225600.0
FLEET = 1000


def _fleet_host(req: Request) -> Reply:
    """Host `hNNN` of FLEET: three timelines, interleaved with the other hosts' by time (the newest first on host 0);
    its cursor is a daemon's (keyset position, filters' fingerprint, its clock at the first page)."""
    h = int(req.host[1:])
    rows = [(BASE - (j * FLEET + h) * 10.0, 1000 * h + j) for j in range(3)]
    if "cursor" in req.params:
        t, i = decode_token(req.params["cursor"], max_chars=200, max_depth=1)[:2]
        rows = [r for r in rows if r < (t, i)]
    page, limit = rows[:int(req.params["limit"])], int(req.params["limit"])
    nxt = encode_token([page[-1][0], page[-1][1], "5f0e3a9c21d4", 1767229200.123456 + h]) if len(rows) > limit else None
    iso = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t, _ in page]
    return search_page([summary(id=i, first_seen=s) for (_, i), s in zip(page, iso, strict=True)], nxt)


async def test_a_thousand_hosts_page_on_with_a_cursor_well_under_the_request_head_limit():
    """About 146 characters per host: with 200 hosts page 1's next_cursor was 16,719 characters and the hub's own
    listener refused page 2 (its request head is at most 16 KiB)."""
    async with FakeHosts(_fleet_host) as fleet, running_hub(
            {"targets": [{"url": fleet.url(f"h{h:03d}"), "name": f"h{h:03d}"} for h in range(FLEET)],
             "timeout": 20}) as hub:
        pages, cursor = [], None
        for _ in range(3):
            r = await hub.get("/api/v1/search", params={"limit": 50, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text[:300]
            pages.append([(i["host"], i["id"]) for i in r.json()["items"]])
            cursor = r.json()["next_cursor"]
            assert len(cursor) < 4096, len(cursor)  # 50 more hosts handed out in part on each page
        ui = await hub.get("/ui/", params={"cursor": cursor})
    assert pages == [[(f"h{h:03d}", 1000 * h) for h in range(50 * p, 50 * p + 50)] for p in range(3)]
    assert ui.status_code == 200 and "h150" in ui.text


async def test_a_message_on_one_host_of_a_thousand_pages_on():
    """Every host that does not hold the Message-Id is exhausted: its place costs a few bytes, not its URL."""
    def answer(req: Request) -> Reply:
        if req.host != "h777":
            return _holds_nothing(req)
        return _holds_some(req)

    async with FakeHosts(answer) as fleet, running_hub(
            {"targets": [{"url": fleet.url(f"h{h:03d}"), "name": f"h{h:03d}"} for h in range(FLEET)],
             "timeout": 20}) as hub:
        first = await hub.get("/api/v1/messages/m@x", params={"limit": 2})
        cursor = first.json()["next_cursor"]
        second = await hub.get("/api/v1/messages/m@x", params={"limit": 2, "cursor": cursor})
    assert len(cursor) < 8192, len(cursor)
    assert [(r["host"], r["id"]) for r in first.json()["recipients"]] == [("h777", 1), ("h777", 2)]
    assert (second.status_code, [(r["host"], r["id"]) for r in second.json()["recipients"]]) == (200, [("h777", 3)])
    assert second.json()["next_cursor"] is None


def _noise(n: int, seed: int) -> str:
    """A host cursor nothing compresses."""
    return base64.urlsafe_b64encode(hashlib.shake_256(str(seed).encode()).digest(n)).decode()


async def test_a_page_whose_cursor_would_not_fit_says_so_instead_of_handing_it_out():
    """30 hosts handed out in part, each with a 1,000-character cursor of its own: no compression brings that under
    the listener's limit. The page keeps its items and says why it has no next_cursor."""
    def answer(req: Request) -> Reply:
        h = int(req.host[1:])
        limit = int(req.params["limit"])
        items = [summary(id=j, first_seen=f"2026-01-01T00:{59 - j:02d}:{59 - h:02d}Z") for j in range(3)][:limit]
        return search_page(items, _noise(750, h * 10 + limit))

    async with FakeHosts(answer) as fleet, running_hub(
            {"targets": [{"url": fleet.url(f"h{h:02d}"), "name": f"h{h:02d}"} for h in range(30)]}) as hub:
        r = await hub.get("/api/v1/search", params={"limit": 30})
        text = await hub.get("/api/v1/search", params={"limit": 30, "format": "text"})
    body = r.json()
    assert (r.status_code, len(body["items"]), body["next_cursor"], body["partial"]) == (200, 30, None, False)
    problem = body["next_cursor_problem"]
    assert TOO_LONG.fullmatch(problem), problem
    assert int(problem.split(" would be ")[1].split()[0].replace(",", "")) > 12_288
    assert text.status_code == 200 and TOO_LONG.fullmatch(text.text.splitlines()[-1]), text.text[-300:]


TOO_LONG = re.compile(r"no next page: its cursor would be [\d,]+ characters, more than the 12,288 a request to this "
                      r"hub may carry; narrow the search \(since, until, rcpt, job_id, vmta, outcome\), or split the "
                      r"hosts over several hubs")


def _zipped(text: bytes, cut: int = 0) -> str:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = b"\x01" + deflate.compress(text) + deflate.flush()
    return base64.urlsafe_b64encode(raw[:len(raw) - cut]).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    _zipped(b"[" * 200_000), _zipped(b" " * (1 << 20)), _zipped(b'{"f":"x","h":{"u":[[[1]],0]}}'),
    _zipped(b'{"f":"x","h":{},"z":"AAA="}'), _zipped(b'{"f":"x","h":{}}', cut=3), _zipped(b'{"f":"x","h":[]}'),
    _zipped(b'{"f":"x","h":{"u":[[1e999],0]}}'), _zipped(b'{"f":"x","h":{"u":2}}'),
    base64.urlsafe_b64encode(b"\x02" + b"x" * 40).decode(),
])
async def test_a_deflated_cursor_is_read_within_bounds_and_anything_odd_is_a_400(cursor: str):
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as fleet, \
            running_hub({"targets": [{"url": fleet.url("a"), "name": "a"}]}) as hub:
        r = await hub.get("/api/v1/search", params={"cursor": cursor})
    assert (r.status_code, r.json()["error"], r.json()["parameter"]) == (400, "malformed cursor", "cursor")


def test_host_cursors_come_back_exactly_as_the_hosts_gave_them():
    """Deflated, a host cursor that is a token of a flat JSON list is stored as that list: only when re-encoding it
    gives the very same token back (a daemon's cursor); anything else stays the string it was."""
    odd = ["WyAxXQ", "W10", "eyJhIjoxfQ", "not base64!", "", "W1tdXQ", _noise(40, 1)]
    targets = [Target(f"h{i}", f"http://h{i}") for i in range(len(odd) + 60)]
    places: dict[str, Any] = {t.url: [c, 1] for t, c in zip(targets, odd, strict=False)}
    places.update({t.url: 0 for t in targets[len(odd):]})
    token, problem = cursors.encode("fp", places, targets, now=1767225600.5)
    assert problem is None and token is not None and len(token) > cursors.PLAIN_MAX // 2
    got = cursors.decode(token, targets, lambda place: True)
    assert (got.fp, got.places, got.now, got.done_elsewhere) == ("fp", places, 1767225600.5, frozenset())
    gone = cursors.decode(token, targets[:3], lambda place: True)  # the hosts done with, out of the targets
    assert len(gone.done_elsewhere) == 60 and set(gone.places) == {t.url for t in targets[:len(odd)]}
    again, _ = cursors.encode("fp", gone.places, targets[:3], 1767225600.5, gone.done_elsewhere)
    assert again is not None and cursors.decode(again, targets, lambda place: True).places == places


@pytest.mark.parametrize("host", ["http://[", "http://", "ftp://a:1", "not a url", ""])
async def test_a_cursor_naming_a_host_url_that_is_no_url_is_a_400_not_a_500(host: str):
    """A host that left the targets is named by its URL in the cursor, and was then parsed for its name: a crafted
    `http://[` raised ValueError (a 500 and a traceback per request)."""
    from hub import messages, search

    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as fleet, \
            running_hub({"targets": [{"url": fleet.url("a"), "name": "a"}]}) as hub:
        answers = [await hub.get("/api/v1/search",
                                 params={"cursor": encode_token({"f": search.fingerprint({}), "h": {host: [None, 0]}})}),
                   await hub.get("/api/v1/messages/m@x", params={
                       "cursor": encode_token({"f": messages.fingerprint("m@x"), "h": {host: [None, 0]}})})]
    for r in answers:
        assert (r.status_code, r.json()["error"], r.json()["parameter"]) == (400, "malformed cursor", "cursor")
