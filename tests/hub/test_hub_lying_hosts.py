"""One host that lies (a 400 that is no daemon's error, a 400 beside the others' 200s, negative counts, a cursor
that never moves, control bytes in its error text) never turns into a 500 or into a 400 for the whole fleet, and
never hides: it is named in missing_hosts. Real HTTP: fake hosts and the hub on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hub.fanout import HostAnswer
from hub.merge import merge_flows
from hub.targets import Target
from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary, timeline

EDGE = {"id": "vmta:v->isp:g", "source": "vmta:v", "target": "isp:g", "mainstat": 3, "secondarystat": 0,
        "thickness": 10.0, "detail__delivered": 2, "detail__bounced": 1, "detail__deferred": 0,
        "detail__complained": 0, "detail__remote_bounced": 0}
NODE = {"title": "v", "mainstat": 3, "secondarystat": 0, "arc__delivered": 0.6667, "arc__bounced": 0.3333,
        "arc__deferred": 0.0, "detail__delivered": 2, "detail__bounced": 1, "detail__deferred": 0,
        "detail__complained": 0, "detail__remote_bounced": 0}
FLOWS = {"since": "2026-01-01T00:00:00Z", "until": None, "edges": [EDGE], "nodes": [  # a daemon lists both ends
    {**NODE, "id": "vmta:v", "subtitle": "vmta", "detail__kind": "vmta"},
    {**NODE, "id": "isp:g", "title": "g", "subtitle": "isp", "detail__kind": "isp"}]}
REPLY = {"reply": "421 later", "kind": "deferred", "vmta": "v", "isp": "g", "count": 2, "share": 1.0,
         "status": "4.7.0", "example": "421 later", "first_seen": None, "last_seen": None,
         "response_class": None}
REPLIES = {"since": "2026-01-01T00:00:00Z", "until": None, "vmta": None, "pool": None, "isp": None,
           "window_capped": False, "scan_limited": False, "total": 2, "replies": [REPLY]}
TL = timeline(id=5, rcpt="u@x.example")


def _good(req: Request) -> Reply:
    """A daemon holding one item on every route."""
    if req.path.startswith("/api/v1/messages/"):
        return Reply(body={"message_id": "m@x", "recipients_total": 1, "truncated": False, "next_cursor": None,
                           "recipients": [TL]})
    if req.path.startswith(("/api/v1/timeline", "/api/v1/lookup")):
        body = {"job_id": "j", "message_id": None, "rcpt": "u@x.example", "timelines": [TL], "timelines_omitted": 0}
        return Reply(body={**body, "hint": None} if req.path == "/api/v1/lookup" else body)
    if req.path in ("/api/v1/flows", "/api/v1/replies"):
        return Reply(body=FLOWS if req.path == "/api/v1/flows" else REPLIES)
    return search_page([summary(id=5)])


def _targets(fleet: FakeHosts, *names: str) -> list[dict[str, str]]:
    return [{"url": fleet.url(n), "name": n} for n in names]


def _missing(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["host"], m["error"]) for m in body["missing_hosts"]]


ROUTES = [("/api/v1/search", {"limit": 3}), ("/api/v1/messages/shared@x.example", {}),
          ("/api/v1/lookup", {"message_id": "shared@x.example"}), ("/api/v1/flows", {}), ("/api/v1/replies", {}),
          ("/api/v1/timeline", {"rcpt": "u@x.example", "job_id": "j"}), ("/ui/", {}), ("/ui/flows", {})]
NOT_A_DAEMONS = {"error": {"nested": [1, 2]}, "parameter": ["a", {"b": 1}], "status": 400}


@pytest.mark.parametrize(("path", "params"), ROUTES)
@pytest.mark.parametrize(("reply", "error"), [
    (Reply(400, NOT_A_DAEMONS), "HTTP 400: not a watchtower error"),
    (Reply(400, {"error": "bad from liar", "parameter": "rcpt"}), "HTTP 400: not a watchtower error"),
    (Reply(400, {"error": "bad from liar", "parameter": "rcpt", "status": 400}),
     "HTTP 400: bad from liar (parameter rcpt)"),
])
async def test_a_hosts_400_beside_the_others_answers_is_that_host_missing(path: str, params: dict[str, Any],
                                                                         reply: Reply, error: str):
    """A 400 whose `parameter` was no string was a 500 (search, messages) or passed on, breaking ApiError (the
    others); a daemon's well-formed 400 from one host failed every host's answer with a 400 naming no host."""
    async with FakeHosts(lambda req: reply if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get(path, params=params)
    assert r.status_code == 200, r.text
    if path.startswith("/ui/"):
        assert "liar" in r.text and "internal" not in r.text.lower()
        return
    assert (r.json()["partial"], _missing(r.json())) == (True, [("liar", error)])


async def test_a_timeline_by_id_whose_host_sends_no_daemons_400_is_a_503_naming_it():
    async with FakeHosts(lambda req: Reply(400, NOT_A_DAEMONS)) as fleet, \
            running_hub({"targets": _targets(fleet, "liar")}) as hub:
        r = await hub.get("/api/v1/timelines/3", params={"host": "liar"})
    assert (r.status_code, r.json()["error"], r.json()["parameter"], _missing(r.json())) == (
        503, "host liar did not answer: HTTP 400: not a watchtower error", None,
        [("liar", "HTTP 400: not a watchtower error")])


@pytest.mark.parametrize(("path", "params"), [p for p in ROUTES if not p[0].startswith("/ui/")])
async def test_a_400_every_host_agrees_on_is_passed_on(path: str, params: dict[str, Any]):
    bad = {"error": "rcpt is not an address", "parameter": "rcpt", "status": 400}
    async with FakeHosts(lambda req: Reply(400, bad)) as fleet, \
            running_hub({"targets": _targets(fleet, "a", "b")}) as hub:
        r = await hub.get(path, params=params)
    assert (r.status_code, r.json()["error"], r.json()["parameter"]) == (400, "rcpt is not an address", "rcpt")


async def test_a_400_beside_404s_on_a_timeline_or_a_message_is_a_missing_host():
    """The 404 hosts took the parameters: only the 400 host failed, and a "not found" must say it is partial."""
    def answer(req: Request) -> Reply:
        if req.host == "liar":
            return Reply(400, {"error": "bad from liar", "parameter": "rcpt", "status": 400})
        parameter = "message_id" if req.path.startswith("/api/v1/messages/") else "job_id"
        return Reply(404, {"error": "nothing", "parameter": parameter, "status": 404})

    async with FakeHosts(answer) as fleet, running_hub({"targets": _targets(fleet, "a", "liar")}) as hub:
        got = [await hub.get("/api/v1/timeline", params={"rcpt": "u@x.example", "job_id": "j"}),
               await hub.get("/api/v1/messages/m@x")]
    for r in got:
        assert (r.status_code, r.json()["partial"], _missing(r.json())) == (
            404, True, [("liar", "HTTP 400: bad from liar (parameter rcpt)")])


async def test_a_404_on_lookup_is_a_missing_host():
    """A daemon never answers 404 on /lookup (no match is a 200 with a hint); one with a parameter was counted as
    a complete answer."""
    def answer(req: Request) -> Reply:
        return Reply(404, {"error": "nope", "parameter": "message_id", "status": 404}) if req.host == "liar" \
            else _good(req)

    async with FakeHosts(answer) as fleet, running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get("/api/v1/lookup", params={"message_id": "m@x"})
    assert (r.status_code, r.json()["partial"], _missing(r.json()), len(r.json()["timelines"])) == (
        200, True, [("liar", "HTTP 404: nope (parameter message_id)")], 1)


async def test_a_host_rejecting_its_own_cursor_is_missing_and_the_others_page_on():
    """A host cursor a daemon no longer reads (an upgrade between pages) failed every later page with a 400."""
    def answer(req: Request) -> Reply:
        if req.host == "old" and "cursor" in req.params:
            return Reply(400, {"error": "malformed cursor", "parameter": "cursor", "status": 400})
        start = int(req.params.get("cursor", 0))
        items = [summary(id=i, first_seen=f"2026-01-01T00:00:{50 - i:02d}Z") for i in range(10)]
        page = items[start:start + int(req.params["limit"])]
        return search_page(page, str(start + len(page)) if start + len(page) < len(items) else None)

    async with FakeHosts(answer) as fleet, running_hub({"targets": _targets(fleet, "a", "old")}) as hub:
        first = (await hub.get("/api/v1/search", params={"limit": 4})).json()
        r = await hub.get("/api/v1/search", params={"limit": 4, "cursor": first["next_cursor"]})
    body = r.json()
    assert [(i["host"], i["id"]) for i in first["items"]] == [("a", 0), ("old", 0), ("a", 1), ("old", 1)]
    assert (r.status_code, [(i["host"], i["id"]) for i in body["items"]], _missing(body)) == (
        200, [("a", 2), ("a", 3), ("a", 4), ("a", 5)], [("old", "HTTP 400: malformed cursor (parameter cursor)")])


@pytest.mark.parametrize(("field", "value"), [("detail__delivered", -50), ("mainstat", -1), ("secondarystat", -3),
                                              ("detail__bounced", 10**400), ("detail__deferred", 2**70)])
async def test_flows_with_a_negative_or_absurd_count_are_a_missing_host_not_a_500(field: str, value: int):
    """detail__delivered=-50 made math.sqrt of a negative: a 500 on /api/v1/flows and /ui/flows."""
    liar = {**FLOWS, "edges": [{**EDGE, "detail__bounced": 0, field: value}]}
    async with FakeHosts(lambda req: Reply(body=liar) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get("/api/v1/flows")
        page = await hub.get("/ui/flows")
    assert (r.status_code, _missing(r.json()), [e["detail__delivered"] for e in r.json()["edges"]]) == (
        200, [("liar", f"HTTP 200: not a watchtower /api/v1/flows answer (edges.0.{field})")], [2])
    assert page.status_code == 200 and "liar" in page.text


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/replies", {**REPLIES, "total": -5}),
    ("/api/v1/replies", {**REPLIES, "total": -50.0}),  # pydantic takes -50.0 for an int; the body keeps the float
    ("/api/v1/replies", {**REPLIES, "replies": [{**REPLY, "count": -7}]}),
    ("/api/v1/replies", {**REPLIES, "replies": [{**REPLY, "count": 1e300}]}),
    ("/api/v1/lookup", {"message_id": "m@x", "job_id": None, "rcpt": None, "hint": None, "timelines": [],
                        "timelines_omitted": -9}),
    ("/api/v1/messages/m@x", {"message_id": "m@x", "recipients_total": -2, "truncated": False,
                              "next_cursor": None, "recipients": []}),
])
async def test_other_counts_a_host_sums_in_are_checked_too(path: str, body: dict[str, Any]):
    async with FakeHosts(lambda req: Reply(body=body) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get(path, params={"message_id": "m@x"} if "lookup" in path else {})
    assert r.status_code == 200, r.text
    [(host, error)] = _missing(r.json())
    assert host == "liar" and error.startswith(f"HTTP 200: not a watchtower {path} answer"), error


def test_merged_flow_thickness_never_takes_the_root_of_a_negative():
    ans = HostAnswer(Target("a", "http://a"), 200, {**FLOWS, "edges": [{**EDGE, "detail__delivered": -50,
                                                                        "detail__bounced": 0}]})
    assert merge_flows([ans])["edges"][0]["thickness"] == 1.0


async def test_control_bytes_in_a_hosts_error_text_are_not_echoed():
    async with FakeHosts(lambda req: Reply(502, raw=b"\x00\x1b[31mred\x7f\xc2\x9b2J end") if req.host == "liar"
                         else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get("/api/v1/search")
    assert _missing(r.json()) == [("liar", "HTTP 502: [31mred 2J end")]


async def test_a_host_whose_cursor_never_moves_stops_paging_and_is_named():
    """A host answering the same next_cursor as it was asked with kept the hub handing out cursors forever."""
    def answer(req: Request) -> Reply:
        n = int(req.params["limit"])
        return search_page([summary(id=i, first_seen=f"2026-01-01T00:00:{50 - i:02d}Z") for i in range(n)], "LOOP")

    async with FakeHosts(answer) as fleet, running_hub({"targets": _targets(fleet, "loop")}) as hub:
        pages, cursor = [], None
        for _ in range(6):
            r = await hub.get("/api/v1/search", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
            pages.append((r.status_code, len(r.json()["items"]), _missing(r.json())))
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
    stuck = [("loop", "HTTP 200: its next_cursor is the cursor it was asked with (paging it stops there)")]
    assert pages == [(200, 3, []), (200, 3, stuck)]


async def test_a_cursor_naming_too_many_hosts_out_of_the_targets_is_a_400():
    """4,385 forged non-target hosts in a 14.9 KB cursor gave a 332 KB answer listing each as missing."""
    from hub import cursors, messages, search

    places = {f"http://h{i}.example:9469": [None, 0] for i in range(cursors.MAX_AWAY + 1)}
    async with FakeHosts(_good) as fleet, running_hub({"targets": _targets(fleet, "a")}) as hub:
        got = [await hub.get("/api/v1/search", params={"cursor": cursors._zipped({"f": search.fingerprint({}),
                                                                                   "h": places})}),
               await hub.get("/api/v1/messages/m@x", params={"cursor": cursors._zipped(
                   {"f": messages.fingerprint("m@x"), "h": places})})]
        fine = await hub.get("/api/v1/search", params={"cursor": cursors._zipped(
            {"f": search.fingerprint({}), "h": dict(list(places.items())[:cursors.MAX_AWAY])})})
    for r in got:
        assert (r.status_code, r.json()["parameter"]) == (400, "cursor"), r.text[:200]
        assert r.json()["error"] == f"cursor names more than {cursors.MAX_AWAY} hosts that are not targets"
    assert fine.status_code == 200 and len(fine.json()["missing_hosts"]) == cursors.MAX_AWAY


async def test_a_cursor_naming_long_host_names_out_of_the_targets_is_a_400():
    """1,000 forged non-target hosts of 450 characters each, deflated into a 5 KB cursor, made a 1 MB answer."""
    from hub import cursors, search

    long = {f"http://{'h' * 420}{i}.example:9469": [None, 0] for i in range(100)}
    async with FakeHosts(_good) as fleet, running_hub({"targets": _targets(fleet, "a")}) as hub:
        r = await hub.get("/api/v1/search", params={"cursor": cursors._zipped({"f": search.fingerprint({}),
                                                                                "h": long})})
    assert (r.status_code, r.json()["parameter"]) == (400, "cursor"), r.text[:200]
    assert r.json()["error"] == "cursor names hosts that are not targets in more than 32,768 characters"


# --- a host that leaves the targets while the others run out ------------------------------------------------------


async def _switch(sd: Path, *hostports: str) -> None:
    sd.write_text(json.dumps([{"targets": list(hostports)}]))
    await asyncio.sleep(0.1)  # past refresh_interval


def _offsets(items: list[dict[str, Any]], req: Request) -> tuple[list[dict[str, Any]], str | None]:
    start, limit = int(req.params.get("cursor", 0)), int(req.params["limit"])
    return items[start:start + limit], str(start + limit) if start + limit < len(items) else None


def _five_each(host: int) -> Any:
    def answer(req: Request) -> Reply:
        if req.path.startswith("/api/v1/messages/"):
            recipients, nxt = _offsets([timeline(id=host * 10 + i) for i in range(5)], req)
            return Reply(body={"message_id": "m@x", "recipients_total": 5, "truncated": nxt is not None,
                               "next_cursor": nxt, "recipients": recipients})
        items = [summary(id=host * 10 + i, first_seen=f"2026-01-01T00:00:{50 - 2 * i - host:02d}Z") for i in range(5)]
        return search_page(*_offsets(items, req))
    return answer


@pytest.mark.parametrize(("path", "key", "limits"), [("/api/v1/search", "items", (2, 10)),
                                                     ("/api/v1/messages/m@x", "recipients", (1, 10))])
async def test_a_page_handing_out_items_while_a_host_is_away_keeps_a_cursor(tmp_path: Path, path: str, key: str,
                                                                            limits: tuple[int, int]):
    """The last page before the only unfinished host came back had no cursor, so the caller asked the previous one
    again once it was back: that page's items came twice."""
    sd = tmp_path / "sd.json"
    async with FakeHosts(_five_each(1)) as a, FakeHosts(_five_each(2)) as b:
        ha, hb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        await _switch(sd, ha, hb)
        async with running_hub({"file_sd": [str(sd)], "refresh_interval": 0.05}) as hub:
            first = (await hub.get(path, params={"limit": limits[0]})).json()
            await _switch(sd, ha)
            second = (await hub.get(path, params={"limit": limits[1], "cursor": first["next_cursor"]})).json()
            stalled = (await hub.get(path, params={"limit": limits[1], "cursor": second["next_cursor"]})).json()
            await _switch(sd, ha, hb)
            last = (await hub.get(path, params={"limit": limits[1], "cursor": stalled["next_cursor"]
                                                or second["next_cursor"]})).json()
    gone = [(hb, "not among the current targets")]
    assert (second["partial"], _missing(second), second["next_cursor"] is not None) == (True, gone, True)
    assert (stalled[key], stalled["next_cursor"], _missing(stalled)) == ([], None, gone)
    seen = [i["id"] for page in (first, second, last) for i in page[key]]
    assert sorted(seen) == [10, 11, 12, 13, 14, 20, 21, 22, 23, 24] and last["next_cursor"] is None


# --- /lookup and /timeline: totals, the newest sends, the recipient's shown form -----------------------------------


def _lookup(rcpt: str, times: list[int], omitted: int) -> dict[str, Any]:
    tls = [timeline(id=t, rcpt=rcpt, first_seen=f"2026-01-01T00:00:{t:02d}Z") for t in times]
    return {"message_id": "m@x", "job_id": None, "rcpt": rcpt, "hint": None, "timelines": tls,
            "timelines_omitted": omitted}


async def _ask_lookup(hosts: dict[str, dict[str, Any]], path: str, params: dict[str, Any]) -> dict[str, Any]:
    async with FakeHosts(lambda req: Reply(body=hosts[req.host])) as fleet, \
            running_hub({"targets": _targets(fleet, *hosts)}) as hub:
        r = await hub.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_lookup_sums_what_the_hosts_and_the_hub_left_out():
    """Hosts left out 5 and 1 and the hub cut one more: the hub said timelines_omitted 0."""
    body = await _ask_lookup({"a": _lookup("", [1, 2, 3], 5), "b": _lookup("", [4, 5], 1), "c": _lookup("", [], 0)},
                             "/api/v1/lookup", {"message_id": "m@x", "limit": 4})
    assert ([(t["host"], t["id"]) for t in body["timelines"]], body["timelines_omitted"]) == (
        [("a", 1), ("a", 2), ("a", 3), ("b", 4)], 7)


async def test_a_lookup_of_a_recipient_keeps_the_latest_sends_across_hosts():
    """The daemon's rule is the latest `limit` sends; the hub cut in target order, keeping host a's oldest."""
    rcpt = "user2@outlook.com"
    body = await _ask_lookup({"a": _lookup(rcpt, [1, 5], 2), "b": _lookup(rcpt, [3], 0), "c": _lookup(rcpt, [6], 0)},
                             "/api/v1/lookup", {"message_id": "m@x", "rcpt": rcpt, "limit": 2})
    assert ([(t["host"], t["id"]) for t in body["timelines"]], body["timelines_omitted"]) == (
        [("a", 5), ("c", 6)], 4)


HASHED = "hmac-sha256:" + "ab" * 32


@pytest.mark.parametrize("path", ["/api/v1/lookup", "/api/v1/timeline"])
async def test_the_recipient_is_shown_hashed_when_a_host_hashes_it(path: str):
    """The hub echoed the raw address of the first host that answered (one that does not hash, and matched
    nothing on /lookup), where a hashing host holds the timelines."""
    hosts = {"a-plain": _lookup("user5@gmail.com", [1] if "timeline" in path else [], 0),
             "b-hashing": _lookup(HASHED, [2], 0)}
    body = await _ask_lookup(hosts, path, {"message_id": "m@x", "rcpt": "user5@gmail.com"})
    assert body["rcpt"] == HASHED


async def test_the_recipient_comes_from_an_answer_that_has_timelines():
    hosts = {"empty": _lookup("user5@gmail.com ", [], 0), "found": _lookup("user5@gmail.com", [2], 0)}
    body = await _ask_lookup(hosts, "/api/v1/lookup", {"message_id": "m@x", "rcpt": "User5@gmail.com"})
    assert (body["rcpt"], [t["host"] for t in body["timelines"]]) == ("user5@gmail.com", ["found"])
