"""A target's answer costs the hub work and memory in proportion to its size, whatever its shape (hub review
2026-12-06): a few KiB of gzip unzipping to lists nested hundreds deep, beside one lone surrogate, made the hub write a
path string per list item as long as the nesting is deep (GBs, the event loop frozen). The cheap checks (its lists'
lengths) come first, and the walk for a lone surrogate is bounded by the nesting of the daemon's answer."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any, get_args

import pytest

from hub.fanout import _decode
from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary
from tests.test_textrepair_bounds import _peak

SEARCH_TAIL = ', "x": "\\ud800", "next_cursor": null, "limit": 50, "scan_limited": false}'


def nested_bomb(size: int, depth: int) -> bytes:
    """A search answer of about `size` bytes: one item that is a list `depth` deep of zeros, and a lone surrogate."""
    n = (size - 2 * depth - 200) // 2
    return ('{"items": ' + "[" * depth + ",".join(["0"] * n) + "]" * depth + SEARCH_TAIL).encode()


def test_an_answer_nested_deeper_than_a_daemons_is_refused_in_memory_of_its_size():
    raw = nested_bomb(512 * 1024, 300)
    parsed = _peak(lambda: json.loads(raw))[1]
    (body, error), peak = _peak(lambda: _decode(raw, "/api/v1/search", 200, 50))
    assert (body, error) == (
        None, "HTTP 200: not a watchtower /api/v1/search answer (items.0.0 is nested deeper than a daemon's answer)")
    assert peak < 1.25 * parsed + 1024**2, f"{peak:,} bytes where parsing it takes {parsed:,}"


def test_a_wide_list_beside_a_lone_surrogate_is_walked_without_a_string_per_item():
    raw = ('{"y": [' + ",".join(["[0]"] * 100_000) + ']' + SEARCH_TAIL.replace('"x"', '"items": [], "x"')).encode()
    parsed = _peak(lambda: json.loads(raw))[1]
    (body, error), peak = _peak(lambda: _decode(raw, "/api/v1/search", 200, 50))
    assert (body, error) == (None, "HTTP 200: not a watchtower /api/v1/search answer (x holds a lone surrogate)")
    assert peak < 1.25 * parsed + 1024**2, f"{peak:,} bytes where parsing it takes {parsed:,}"


@pytest.mark.parametrize(("raw", "error"), [
    (('{"items": [' + ",".join(["0"] * 1000) + "]" + SEARCH_TAIL).encode(), "1000 items where at most 50 were asked"),
    (b'["\\ud800"]', "body"),
])
def test_the_cheap_checks_come_before_the_walk_for_a_lone_surrogate(raw: bytes, error: str):
    """An answer whose list is longer than asked, or that is no mapping, is refused for that, never walked."""
    assert _decode(raw, "/api/v1/search", 200, 50) == (None, f"HTTP 200: not a watchtower /api/v1/search answer "
                                                           f"({error})")


async def test_a_few_kib_of_gzip_nested_deep_is_that_host_missing_and_costs_memory_of_its_size():
    raw = nested_bomb(1024**2, 300)

    def answer(req: Request) -> Reply:
        if req.host == "bomb":
            return Reply(raw=raw, gzip=True)
        return search_page([summary(id=7, first_seen="2026-01-01T00:00:07Z")])

    async with FakeHosts(answer) as fleet, running_hub(
            {"targets": [{"url": fleet.url(n), "name": n} for n in ("ok", "bomb")]}) as hub:
        tracemalloc.start()
        try:
            r = await hub.get("/api/v1/search", params={"limit": 10})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(i["host"], i["id"]) for i in body["items"]] == [("ok", 7)]
    assert [(m["host"], m["error"]) for m in body["missing_hosts"]] == [
        ("bomb", "HTTP 200: not a watchtower /api/v1/search answer (items.0.0 is nested deeper than a daemon's "
                 "answer)")]
    assert peak < 32 * 1024**2, f"{peak:,} bytes for a {len(raw):,}-byte answer"


def test_every_answer_model_nests_as_deep_as_the_walk_allows():
    """The bound is each model's own nesting: a daemon's real answer is never refused for its depth."""
    from hub.fanout import ANSWER_MODELS, ANSWER_PREFIXES, nesting
    from tests.hub.test_hub_lying_hosts import FLOWS, REPLIES, TL

    assert {m.__name__: nesting(m) for m in [*ANSWER_MODELS.values(), *(m for _, m in ANSWER_PREFIXES)]} == {
        "SearchResponse": 3, "FlowsResponse": 3, "RepliesResponse": 3, "LookupResponse": 5, "TimelineResponse": 5,
        "MessageResponse": 5}
    answers = {"/api/v1/flows": FLOWS, "/api/v1/replies": REPLIES,
               "/api/v1/timeline": {"job_id": "j", "message_id": None, "rcpt": "u@x.example", "timelines": [TL],
                                    "timelines_omitted": 0, "x": "\ud800"}}
    for path, answer in answers.items():
        raw = json.dumps({**answer, "x": "\ud800"}).encode()
        assert _decode(raw, path, 200)[1] == f"HTTP 200: not a watchtower {path} answer (x holds a lone surrogate)"


def test_a_file_sd_file_of_lone_surrogates_nested_deep_is_named_by_its_first_in_memory_of_its_size(tmp_path: Path):
    """file_sd's check wrote a path per lone surrogate (each as long as the nesting is deep) to name the first."""
    from exporter.textrepair import SURROGATE_PROBLEM
    from hub.targets import read_file_sd

    depth, hits = 300, 150_000
    text = '[{"targets": ' + "[" * depth + ",".join(['"\\ud800"'] * hits) + "]" * depth + "}]"
    sd = tmp_path / "sd.json"
    sd.write_text(text)
    parsed = _peak(lambda: json.loads(text))[1]

    def read() -> str:
        with pytest.raises(ValueError) as caught:
            read_file_sd(sd, "http")
        return str(caught.value)

    error, peak = _peak(read)
    assert error == f"{sd}: 0.targets{'.0' * depth}: {SURROGATE_PROBLEM}"
    assert peak < 1.25 * parsed + len(text) + 1024**2, f"{peak:,} bytes where parsing it takes {parsed:,}"


def _tersest(model: Any, **given: Any) -> dict[str, Any]:
    """An instance of `model` as a daemon sends it with every optional field null and its values as short as they
    come: the densest JSON a daemon writes."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name in given:
            out[name] = given[name]
        elif type(None) in get_args(field.annotation):
            out[name] = None
        elif not field.is_required():
            out[name] = field.default
        else:
            kind = str(field.annotation)
            out[name] = 0 if "int" in kind else 0.0 if "float" in kind else False if "bool" in kind else "a"
    return out


def test_a_daemons_biggest_answers_of_its_tersest_values_are_taken():
    """Each route's answer at the most a daemon lists, with every optional field null and its values as short as
    they come (the densest JSON a daemon writes), is taken whole: a bound on an answer's parse (its memory, hub review
    2026-12-07, tried and not kept: CHANGELOG) must never refuse one."""
    from correlator.models import Event, FlowEdge, FlowNode, TimelineSummary
    from correlator.timeline import events_per_timeline

    event = _tersest(Event, time="2026-01-01T00:00:00Z", kind="queued")
    item = _tersest(TimelineSummary, outcome="pending")

    def timeline(events: int) -> dict[str, Any]:
        return {**item, "events": [event] * events, "events_omitted": 0, "queue_events_omitted": 0}

    nodes = [_tersest(FlowNode, id=f"vmta:{i}", title=str(i), subtitle="vmta", detail__kind="vmta")
             for i in range(10_000)] + [_tersest(FlowNode, id="isp:g", title="g", subtitle="isp", detail__kind="isp")]
    edges = [_tersest(FlowEdge, id=f"vmta:{i}->isp:g", source=f"vmta:{i}", target="isp:g") for i in range(10_000)]
    reply = {"reply": "a", "kind": "deferred", "vmta": "v", "isp": "g", "count": 1, "share": 1.0, "status": "a",
             "example": "a", "first_seen": None, "last_seen": None, "response_class": None}
    answers = {
        ("/api/v1/search", 500): {"items": [item] * 500, "next_cursor": None, "limit": 500, "scan_limited": False},
        ("/api/v1/timeline", None): {"job_id": None, "message_id": None, "rcpt": "a", "timelines_omitted": 0,
                                     "timelines": [timeline(events_per_timeline(100))] * 100},
        ("/api/v1/messages/m@x", 1000): {"message_id": "m@x", "recipients_total": 1000, "truncated": False,
                                         "next_cursor": None, "recipients": [timeline(events_per_timeline(1000))] * 1000},
        ("/api/v1/flows", None): {"since": "2026-01-01T00:00:00Z", "until": None, "nodes": nodes, "edges": edges},
        ("/api/v1/replies", 1000): {"since": "2026-01-01T00:00:00Z", "until": None, "vmta": None, "pool": None,
                                    "isp": None, "window_capped": False, "scan_limited": False, "total": 1000,
                                    "replies": [reply] * 1000},
    }
    for (path, limit), answer in answers.items():
        raw = json.dumps(answer, separators=(",", ":")).encode()
        body, error = _decode(raw, path, 200, limit)
        assert error is None and body == answer, (path, error)
