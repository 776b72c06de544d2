"""From a hostile review (2026-12-06): what one host's answer holds, value by value, never makes a hub route or page a
500, nor a merged answer past its documented bounds: a lone surrogate in a string, a number sent as a string (or past
2^53, or negative), a time that is no time (1e308, NaN, Infinity), a Prometheus instance label that is no text, and
lists longer than a daemon ever sends. Each such host is a missing host saying why. Real HTTP: fake hosts and the hub
on loopback, in the test's own event loop."""

from __future__ import annotations

import base64
import json
import logging
import math
from typing import Any

import pytest

from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary, timeline
from tests.hub.test_hub_lying_hosts import EDGE, FLOWS, REPLIES, REPLY, TL, _good

MARK = "@@SURROGATE@@"
"""Put where the lone surrogate goes: the JSON text then gets the escape `\\ud800` in its place."""


def _targets(fleet: FakeHosts, *names: str) -> list[dict[str, str]]:
    return [{"url": fleet.url(n), "name": n} for n in names]


def _missing(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["host"], m["error"]) for m in body["missing_hosts"]]


def _raw(body: Any, escape: bytes = b"\\ud800") -> bytes:
    """`body` as JSON, every MARK string replaced by `escape` (an escaped lone surrogate by default)."""
    return json.dumps(body).encode().replace(MARK.encode(), escape)


def _lookup(timelines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"message_id": "m@x", "job_id": None, "rcpt": None, "hint": None, "timelines": timelines,
            "timelines_omitted": 0}


def _timeline_answer(timelines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job_id": "j", "message_id": None, "rcpt": "u@x.example", "timelines": timelines, "timelines_omitted": 0}


def _message(recipients: list[dict[str, Any]]) -> dict[str, Any]:
    return {"message_id": "m@x", "recipients_total": len(recipients), "truncated": False, "next_cursor": None,
            "recipients": recipients}


SURROGATE_ANSWERS = [
    ("/api/v1/flows", {}, {**FLOWS, "nodes": [], "edges": [{**EDGE, "source": MARK}]}, "edges.0.source"),
    ("/api/v1/replies", {}, {**REPLIES, "replies": [{**REPLY, "reply": MARK}]}, "replies.0.reply"),
    ("/api/v1/lookup", {"message_id": "m@x"}, _lookup([{**TL, "job_id": MARK}]), "timelines.0.job_id"),
    ("/api/v1/timeline", {"rcpt": "u@x.example", "job_id": "j"},
     _timeline_answer([{**TL, "events": [{**TL["events"][0], "dsn_diag": "421 " + MARK}]}]),
     "timelines.0.events.0.dsn_diag"),
    ("/api/v1/messages/m@x", {}, _message([{**TL, "vmta": MARK}]), "recipients.0.vmta"),
    ("/api/v1/search", {"limit": 3}, {"items": [summary(id=9, rcpt=MARK)], "next_cursor": None, "limit": 3,
                                      "scan_limited": False}, "items.0.rcpt"),
]


TEXT_ROUTES = ("/api/v1/flows", "/api/v1/timeline", "/api/v1/messages/m@x", "/api/v1/search")
"""The routes with a text format (`format=text`)."""


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\uDFFF", b"\xed\xa0\x80"], ids=["escape", "low", "utf8-bytes"])
@pytest.mark.parametrize(("path", "params", "body", "where"), SURROGATE_ANSWERS,
                         ids=[a[0].rsplit("/", 2)[-1] if "messages" not in a[0] else "messages" for a in SURROGATE_ANSWERS])
async def test_a_lone_surrogate_in_a_hosts_answer_is_that_host_missing_in_every_format(
        path: str, params: dict[str, Any], body: dict[str, Any], where: str, escape: bytes):
    """json.loads keeps a lone surrogate (escaped, or UTF-8-encoded: it decodes bytes with `surrogatepass`): the
    merged answer could not be encoded, and every route answered 500 with a PydanticSerializationError or a
    UnicodeEncodeError."""
    liar = _raw(body, escape)
    async with FakeHosts(lambda req: Reply(raw=liar) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        for fmt in ({}, {"format": "text"}) if path in TEXT_ROUTES else ({},):
            r = await hub.get(path, params={**params, **fmt})
            assert r.status_code == 200, (fmt, r.text)
            if fmt:
                assert "(hosts not answering: liar)" in r.text and "\\ud800" not in r.text, r.text
            else:
                assert _missing(r.json()) == [
                    ("liar", f"HTTP 200: not a watchtower {path} answer ({where} holds a lone surrogate)")]


UI_PAGES = [("/ui/", {}), ("/ui/messages/m@x", {}), ("/ui/timeline", {"rcpt": "u@x.example", "job_id": "j"}),
            ("/ui/flows", {})]


async def test_a_lone_surrogate_in_a_hosts_answer_leaves_every_page_whole():
    def liar(req: Request) -> Reply:
        for path, _, body, _ in SURROGATE_ANSWERS:
            if req.path.startswith(path):
                return Reply(raw=_raw(body))
        raise AssertionError(req.path)

    async with FakeHosts(lambda req: liar(req) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        for path, params in UI_PAGES:
            r = await hub.get(path, params=params)
            assert r.status_code == 200, (path, r.text)
            assert "Partial answer: hosts not answering: liar (HTTP 200: not a watchtower" in r.text, (path, r.text)


async def test_a_daemons_error_naming_a_parameter_that_is_no_text_is_never_passed_on():
    """Two hosts' 400 naming `parameter: "\\ud800"` was passed on as the hub's own 400: a 500."""
    raw = _raw({"error": "bad", "parameter": MARK, "status": 400})
    async with FakeHosts(lambda req: Reply(400, raw=raw)) as fleet, \
            running_hub({"targets": _targets(fleet, "a", "b")}) as hub:
        r = await hub.get("/api/v1/flows")
    assert (r.status_code, _missing(r.json())) == (503, [
        (h, "HTTP 400: not a watchtower error (parameter holds a lone surrogate)") for h in ("a", "b")])


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/api/v1/replies", {**REPLIES, "replies": [{**REPLY, "count": "3"}]}, "replies.0.count"),
    ("/api/v1/replies", {**REPLIES, "total": "2"}, "total"),
    ("/api/v1/replies", {**REPLIES, "replies": [{**REPLY, "count": 2.0}]}, "replies.0.count"),
    ("/api/v1/replies", {**REPLIES, "window_capped": "yes"}, "window_capped"),
    ("/api/v1/flows", {**FLOWS, "edges": [{**EDGE, "detail__delivered": "1" + "0" * 400}]},
     "edges.0.detail__delivered"),
    ("/api/v1/flows", {**FLOWS, "edges": [{**EDGE, "mainstat": True}]}, "edges.0.mainstat"),
    ("/api/v1/lookup", {**_lookup([TL]), "timelines_omitted": "9"}, "timelines_omitted"),
    ("/api/v1/lookup", _lookup([{**TL, "events_omitted": -1}]), "timelines.0.events_omitted"),
    ("/api/v1/lookup", _lookup([{**TL, "attempts": 2**53 + 1}]), "timelines.0.attempts"),
    ("/api/v1/lookup", _lookup([{**TL, "id": -5}]), "timelines.0.id"),
    ("/api/v1/lookup", _lookup([{**TL, "id": 2**63}]), "timelines.0.id"),
    ("/api/v1/messages/m@x", {**_message([TL]), "recipients_total": "1"}, "recipients_total"),
])
async def test_a_number_of_the_wrong_type_or_range_is_that_host_missing(path: str, body: dict[str, Any], where: str):
    """pydantic's lax check took "3" for 3 but the hub merged the raw body: `-` on a str was a 500 on /replies, and
    `"1" + "0" * 400` was summed into the merged flows as 10**400, past the documented 2^53."""
    async with FakeHosts(lambda req: Reply(body=body) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get(path, params={"message_id": "m@x"} if "lookup" in path else {})
    assert (r.status_code, _missing(r.json())) == (200, [("liar", f"HTTP 200: not a watchtower {path} answer ({where})")])


@pytest.mark.parametrize(("ts", "error"), [
    (b"1e308", "HTTP 200: not a watchtower /api/v1/timeline answer (timelines.0.events.0.ts)"),
    (b"-1.0", "HTTP 200: not a watchtower /api/v1/timeline answer (timelines.0.events.0.ts)"),
    (b"1e400", "HTTP 200: not a watchtower /api/v1/timeline answer (timelines.0.events.0.ts)"),  # inf, once parsed
    (b"NaN", "HTTP 200: not JSON"),
    (b"Infinity", "HTTP 200: not JSON"),
    (b"-Infinity", "HTTP 200: not JSON"),
])
async def test_an_event_time_that_is_no_time_is_that_host_missing_on_the_api_and_the_pages(ts: bytes, error: str):
    """`ts` 1e308, NaN or Infinity passed the model (a float): the JSON route answered 200, the pages 500
    (OverflowError / ValueError making the Grafana link)."""
    raw = _raw(_timeline_answer([TL]), b"").replace(b'"ts": 1767225600.0', b'"ts": ' + ts)
    assert ts in raw
    async with FakeHosts(lambda req: Reply(raw=raw) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get("/api/v1/timeline", params={"rcpt": "u@x.example", "job_id": "j"})
        page = await hub.get("/ui/timeline", params={"rcpt": "u@x.example", "job_id": "j"})
    assert (r.status_code, _missing(r.json())) == (200, [("liar", error)])
    assert page.status_code == 200 and f"liar ({error})" in page.text, page.text


@pytest.mark.parametrize("ts", [math.inf, -math.inf, math.nan, 1e308, -1e308, 3e11, -1.0, True, "1767225600"])
def test_the_pages_grafana_link_leaves_out_a_time_that_is_no_time(ts: Any):
    """The pages read their own API, but do not trust its times either: a link without a window, never a 500."""
    from pages.views import grafana_link

    link = grafana_link("http://grafana.example", "v", ts, "h")
    assert link == "http://grafana.example/d/watchtower-vmta/?var-vmta=v&amp;var-instance=h"
    assert grafana_link("http://grafana.example", "v", 1767225600.0, "h", ts) == (
        "http://grafana.example/d/watchtower-vmta/?var-vmta=v&amp;var-instance=h&amp;from=1767222000000"
        "&amp;to=1767229200000")


def test_a_timeline_section_with_times_that_are_no_times_renders():
    from pages.views import Views

    tl = {**timeline(id=3), "events": [{**timeline()["events"][0], "vmta": "v", "ts": ts}
                                       for ts in (math.inf, math.nan, 1e308)]}
    html = Views(lambda _r: None, "http://grafana.example", "t").timeline_section(1, tl)  # type: ignore[arg-type,return-value]
    assert html.count('href="http://grafana.example/d/watchtower-vmta/?var-vmta=v"') == 3 + 1  # each event, the head


# --- Prometheus discovery ---------------------------------------------------------------------------------------


async def test_a_prometheus_target_whose_labels_are_no_text_is_skipped_and_named_once(
        caplog: pytest.LogCaptureFixture):
    """An `instance` label holding `\\ud800` became a target name: every route answered 500 while that target list
    was current."""
    caplog.set_level(logging.INFO, logger="hub.targets")

    def answer(req: Request) -> Reply:
        if req.host == "prom":
            daemon = f"http://127.0.0.1:{fleet.port}"
            return Reply(raw=_raw({"status": "success", "data": {"activeTargets": [
                {"labels": {"job": "wt", "instance": "bad" + MARK}, "scrapeUrl": f"{daemon}/metrics"},
                {"labels": {"job": "wt", "instance": "bad-url"}, "scrapeUrl": f"http://h{MARK}:9469/metrics"},
                {"labels": {"job": "wt", "instance": "good"}, "scrapeUrl": f"{daemon}/metrics"}]}}))
        return search_page([summary(id=4)])

    async with FakeHosts(answer) as fleet, \
            running_hub({"prometheus": {"url": fleet.url("prom"), "job": "wt"}, "refresh_interval": 0.05}) as hub:
        r = await hub.get("/api/v1/search")
        again = await hub.get("/api/v1/flows")
        page = await hub.get("/ui/")
    assert (r.status_code, r.json()["hosts"], [i["host"] for i in r.json()["items"]]) == (200, ["good"], ["good"])
    assert (again.status_code, again.json()["hosts"]) == (503, ["good"])  # (a search page's host has no /flows)
    assert page.status_code == 200
    key = f"prometheus {fleet.url('prom')} job wt"
    assert [rec.getMessage() for rec in caplog.records] == [
        f"targets from {key}: data.activeTargets.0 skipped: labels.instance 'bad\\ud800' holds a lone surrogate "
        "(\\ud800-\\udfff), which is not text",
        f"targets from {key}: data.activeTargets.1 skipped: scrapeUrl 'http://h\\ud800:9469/metrics' holds a lone "
        "surrogate (\\ud800-\\udfff), which is not text"]


# --- lists longer than a daemon sends ---------------------------------------------------------------------------


def _events(n: int) -> list[dict[str, Any]]:
    return [{**TL["events"][0], "ts": 1767225600.0 + i} for i in range(n)]


@pytest.mark.parametrize(("path", "params", "body", "why"), [
    ("/api/v1/timeline", {"rcpt": "u@x.example", "job_id": "j"}, _timeline_answer([TL] * 101),
     "101 timelines where a daemon lists at most 100"),
    ("/api/v1/lookup", {"message_id": "m@x", "limit": 5}, _lookup([TL] * 6), "6 timelines where at most 5 were asked"),
    ("/api/v1/lookup", {"message_id": "m@x"}, _lookup([TL] * 101), "101 timelines where at most 100 were asked"),
    ("/api/v1/replies", {}, {**REPLIES, "replies": [REPLY] * 101}, "101 replies where at most 100 were asked"),
    ("/api/v1/messages/m@x", {"limit": 2}, _message([TL] * 3), "3 recipients where at most 2 were asked"),
    ("/api/v1/timeline", {"rcpt": "u@x.example", "job_id": "j"}, _timeline_answer([{**TL, "events": _events(2002)}]),
     "2002 events in timelines.0 where a daemon lists at most 2001"),
    ("/api/v1/lookup", {"message_id": "m@x"}, _lookup([TL] * 19 + [{**TL, "events": _events(1002)}]),
     "1002 events in timelines.19 where a daemon lists at most 1001"),  # 20 timelines: 500 each, as many queue events
    ("/api/v1/messages/m@x", {"limit": 1000}, _message([TL] * 999 + [{**TL, "events": _events(22)}]),
     "22 events in recipients.999 where a daemon lists at most 21"),
    ("/api/v1/flows", {}, {**FLOWS, "nodes": [{"id": f"vmta:v{i}", "subtitle": "vmta"} for i in range(10_001)]},
     "10001 vmta nodes where the hub takes at most 10000"),
])
async def test_a_list_longer_than_a_daemon_sends_is_that_host_missing(path: str, params: dict[str, Any],
                                                                      body: dict[str, Any], why: str):
    """Only /search and /messages bounded their lists: 30,000 timelines on /timeline, 150,000 replies when 100 were
    asked, made answers of tens of MB and stalled the event loop for seconds."""
    async with FakeHosts(lambda req: Reply(body=body) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get(path, params=params)
    assert (r.status_code, _missing(r.json())) == (200, [("liar", f"HTTP 200: not a watchtower {path} answer ({why})")])


async def test_a_timeline_by_id_answered_with_two_timelines_is_that_host_missing():
    async with FakeHosts(lambda req: Reply(body=_timeline_answer([TL, TL]))) as fleet, \
            running_hub({"targets": _targets(fleet, "a")}) as hub:
        r = await hub.get("/api/v1/timelines/5", params={"host": "a"})
    assert (r.status_code, r.json()["error"]) == (503, "host a did not answer: HTTP 200: not a watchtower "
                                                       "/api/v1/timelines/5 answer (2 timelines where a daemon lists at most 1)")


def _node(kind: str, name: str) -> dict[str, Any]:
    return {"id": f"{kind}:{name}", "title": name, "subtitle": kind, "mainstat": 1, "secondarystat": 0,
            "arc__delivered": 1.0, "arc__bounced": 0.0, "arc__deferred": 0.0, "detail__delivered": 1,
            "detail__bounced": 0, "detail__deferred": 0, "detail__complained": 0, "detail__remote_bounced": 0,
            "detail__kind": kind}


def _edge(source: str, target: str) -> dict[str, Any]:
    return {**EDGE, "id": f"{source}->{target}", "source": source, "target": target}


NODES = [_node("sender", "s"), _node("vmta", "v"), _node("isp", "gmail")]


@pytest.mark.parametrize(("body", "why"), [
    ({**FLOWS, "nodes": NODES, "edges": [_edge("sender:s", "vmta:v"), _edge("vmta:v", "isp:nowhere")]},
     "edges.1.target is no node of the answer"),
    ({**FLOWS, "nodes": NODES, "edges": [_edge("sender:s", "vmta:v"), _edge("sender:s", "vmta:v")]},
     "edges.1 repeats the id of edges.0"),
    ({**FLOWS, "nodes": [*NODES, _node("vmta", "v")], "edges": []}, "nodes.3 repeats the id of nodes.1"),
    ({**FLOWS, "nodes": NODES + [_node("isp", f"i{i}") for i in range(13)], "edges": []},
     "14 isp nodes where a daemon lists at most 13"),
    ({**FLOWS, "nodes": NODES, "edges": [_edge("vmta:v", "sender:s")]}, "edges.0 goes from vmta to sender"),
])
async def test_flows_no_daemon_could_send_are_that_host_missing(body: dict[str, Any], why: str):
    """A daemon's flows are sender -> vmta -> isp, each node and edge once, every edge between two of its nodes: a
    host sending 45,000 edges between nodes it never listed made a 35 MB merged answer."""
    async with FakeHosts(lambda req: Reply(body=body) if req.host == "liar" else _good(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "ok", "liar")}) as hub:
        r = await hub.get("/api/v1/flows")
    assert (r.status_code, _missing(r.json())) == (
        200, [("liar", f"HTTP 200: not a watchtower /api/v1/flows answer ({why})")])


async def test_a_daemons_largest_answers_are_taken():
    """The bounds are a daemon's own: its largest answers are merged, not refused."""
    flows = {**FLOWS, "nodes": NODES, "edges": [_edge("sender:s", "vmta:v"), _edge("vmta:v", "isp:gmail")]}

    def answer(req: Request) -> Reply:
        if req.path == "/api/v1/flows":
            return Reply(body=flows)
        if req.path == "/api/v1/timeline":
            return Reply(body=_timeline_answer([TL] * 99 + [{**TL, "events": _events(201)}]))
        if req.path == "/api/v1/lookup":
            return Reply(body=_lookup([{**TL, "events": _events(2001)}]))
        return _good(req)

    async with FakeHosts(answer) as fleet, running_hub({"targets": _targets(fleet, "a", "b")}) as hub:
        timelines = await hub.get("/api/v1/timeline", params={"rcpt": "u@x.example", "job_id": "j"})
        lookup = await hub.get("/api/v1/lookup", params={"message_id": "m@x"})
        merged = await hub.get("/api/v1/flows")
    assert (timelines.status_code, timelines.json()["partial"], len(timelines.json()["timelines"])) == (200, False, 200)
    assert (lookup.status_code, lookup.json()["partial"], len(lookup.json()["timelines"])) == (200, False, 2)
    assert (merged.status_code, merged.json()["partial"], [e["hosts"] for e in merged.json()["edges"]]) == (
        200, False, [["a", "b"], ["a", "b"]])


# --- a caller's cursor ------------------------------------------------------------------------------------------


def _cursor(fp: str, places: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"f": fp, "h": places}).encode()).decode().rstrip("=")


async def test_a_cursor_holding_a_lone_surrogate_is_a_400():
    """A forged cursor naming a host URL (or holding a host cursor) with `\\ud800`: the host was named in
    missing_hosts and the answer could not be encoded (a 500), or the host's own cursor could not be sent."""
    from hub.messages import fingerprint as message_fp
    from hub.search import fingerprint as search_fp

    async with FakeHosts(_good) as fleet, running_hub({"targets": _targets(fleet, "a")}) as hub:
        asked = [
            ("/api/v1/search", _cursor(search_fp({}), {"http://gone\ud800.example:9469": [None, 0]})),
            ("/api/v1/search", _cursor(search_fp({}), {fleet.url("a"): ["c\ud800", 0]})),
            ("/api/v1/messages/m@x", _cursor(message_fp("m@x"), {"http://gone\ud800.example:9469": [None, 0]})),
            ("/api/v1/messages/m@x", _cursor(message_fp("m@x"), {fleet.url("a"): ["c\ud800", 0]})),
        ]
        got = [(r.status_code, r.json()["error"], r.json()["parameter"])
               for r in [await hub.get(path, params={"cursor": cursor}) for path, cursor in asked]]
    assert got == [(400, "malformed cursor", "cursor")] * len(asked), got


# --- merged answers encoded off the event loop ------------------------------------------------------------------


def test_an_answer_encoded_item_by_item_is_the_response_models_own():
    """hub/encode.py checks and encodes each item by itself (the event loop runs between them): the bytes are those of
    the response model, extra keys of a host's items dropped, a text that looks like a list's key left alone."""
    from hub.encode import encoded
    from hub.models import HubFlowsResponse, HubLookupResponse, HubTimelineResponse

    part = {"partial": True, "hosts": ["a", "b"],
            "missing_hosts": [{"host": "b", "url": "http://b", "error": 'HTTP 200: "nodes":[] "edges":[]'}]}
    flows = {**FLOWS, **part, "nodes": [{**n, "hosts": ["a"], "junk": "x" * 50} for n in NODES],
             "edges": [{**_edge("sender:s", "vmta:v"), "hosts": ["a"]}, {**_edge("vmta:v", "isp:gmail"), "hosts": []}]}
    timelines = {**_timeline_answer([{**TL, "host": "a", "extra": [1]}] * 3), **part}
    lookup = {**_lookup([]), **part, "timelines": []}
    for model, content in ((HubFlowsResponse, flows), (HubTimelineResponse, timelines), (HubLookupResponse, lookup),
                           (HubFlowsResponse, {**flows, "missing_hosts": [], "edges": []})):
        assert encoded(model, content) == model.model_validate(content).model_dump_json().encode()
    assert b"junk" not in encoded(HubFlowsResponse, flows)
