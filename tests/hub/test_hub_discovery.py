"""Targets from a Prometheus: an answer of another shape, or one that never ends, is the usual "cannot read targets"
warning with the last good list kept, never a 500 and never a request held past its budget. Real HTTP."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from tests.hub.fakes import EMPTY_SEARCH, FakeHosts, Reply, Request, running_hub

ACTIVE = {"labels": {"job": "wt", "instance": "p1"}, "scrapeUrl": "{daemon}/metrics"}


def prometheus(daemon: str, answers: list[Reply]) -> Any:
    """The first answer, then the next one on each refresh (the last one for ever)."""
    calls = []

    def answer(req: Request) -> Reply:
        if req.host != "prom":  # the discovered daemon (its URL has no path: host "api")
            return Reply(body=EMPTY_SEARCH)
        calls.append(req)
        reply = answers[min(len(calls), len(answers)) - 1]
        if reply.body == "good":
            return Reply(body={"status": "success", "data": {"activeTargets": [
                {**ACTIVE, "scrapeUrl": f"{daemon}/metrics"}]}})
        return reply

    return answer


@pytest.mark.parametrize(("body", "why"), [
    ([], "the answer is not a mapping"),
    ({"data": []}, "data is not a mapping"),
    ({"data": {"activeTargets": {}}}, "data.activeTargets is not a list"),
    ({"data": {"activeTargets": [1]}}, "data.activeTargets.0 is not a mapping"),
    ({"data": {"activeTargets": [{**ACTIVE, "labels": "x"}]}}, "data.activeTargets.0.labels is not a mapping"),
    ({"data": {"activeTargets": [{**ACTIVE, "scrapeUrl": 5}]}}, "data.activeTargets.0.scrapeUrl is not a string"),
    ({"data": {"activeTargets": [{**ACTIVE, "labels": {"job": "wt", "instance": 7}}]}},
     "data.activeTargets.0.labels.instance is not a string"),
])
async def test_a_prometheus_answer_of_another_shape_keeps_the_last_targets(body: Any, why: str,
                                                                           caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="hub.targets")
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon:
        async with FakeHosts(prometheus(f"http://127.0.0.1:{daemon.port}", [Reply(body="good"), Reply(body=body)])) \
                as prom, running_hub({"targets": [{"url": daemon.url("s"), "name": "static"}], "refresh_interval": 0.05,
                                      "prometheus": {"url": prom.url("prom"), "job": "wt"}}) as hub:
            first = await hub.get("/api/v1/search")
            time.sleep(0.1)
            second = await hub.get("/api/v1/search")
            page = await hub.get("/ui/")
    assert (first.status_code, first.json()["hosts"]) == (200, ["p1", "static"])
    assert (second.status_code, second.json()["hosts"], second.json()["partial"]) == (200, ["p1", "static"], False)
    assert page.status_code == 200
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from prometheus {prom.url('prom')} job wt (keeping the last list): "
        f"not a Prometheus /api/v1/targets answer: {why}"]


async def test_a_prometheus_that_drips_its_answer_holds_no_request_past_the_timeout(
        caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="hub.targets")
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon:
        # 52 bytes 0.2 s apart: ~10 s in all, each gap well under httpx's per-read timeout, so only the hub's own
        # bound on the whole request cuts it
        drip = Reply(raw=b'{"status": "success", "data": {"activeTargets": []}}', drip=0.2)
        # the static fake must answer each fan-out within it too: room for a loaded machine
        timeout = 2.0
        async with FakeHosts(prometheus("", [drip])) as prom, \
                running_hub({"targets": [{"url": daemon.url("s"), "name": "static"}], "timeout": timeout,
                             "prometheus": {"url": prom.url("prom"), "job": "wt"}}) as hub:
            start = time.monotonic()
            r = await hub.get("/api/v1/search")
            took = time.monotonic() - start
    assert (r.status_code, r.json()["hosts"], r.json()["partial"]) == (200, ["static"], False)
    # the refresh (2 s at most) then a loopback fan-out; a request held for the whole drip takes ~10 s
    assert took < 5.0, took
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from prometheus {prom.url('prom')} job wt (keeping the last list): timed out after 2s"]
