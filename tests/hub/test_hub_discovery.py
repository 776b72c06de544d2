"""Targets from a Prometheus: an answer of another shape, or one that never ends, is the usual "cannot read targets"
warning with the last good list kept, never a 500 and never a request held past its budget. Real HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from tests.conftest import free_port
from tests.hub.fakes import EMPTY_SEARCH, FakeHosts, Reply, Request, running_hub
from tests.hub.test_hub_host_answers import PAGES, ROUTES, _empty

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


async def test_a_job_with_no_active_target_keeps_the_last_targets_and_says_why(caplog: pytest.LogCaptureFixture):
    """A misspelled `job`, or a Prometheus just restarted that has not loaded its targets yet, answers an empty
    `activeTargets`: the hub emptied (503 "no targets") without a log line."""
    caplog.set_level(logging.WARNING, logger="hub.targets")
    empty = Reply(body={"status": "success", "data": {"activeTargets": []}})
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon:
        async with FakeHosts(prometheus(f"http://127.0.0.1:{daemon.port}", [Reply(body="good"), empty])) as prom, \
                running_hub({"refresh_interval": 0.05, "prometheus": {"url": prom.url("prom"), "job": "wt"}}) as hub:
            first = await hub.get("/api/v1/search")
            time.sleep(0.1)
            second = await hub.get("/api/v1/search")
    assert (first.status_code, first.json()["hosts"]) == (200, ["p1"])
    assert (second.status_code, second.json()["hosts"]) == (200, ["p1"])
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from prometheus {prom.url('prom')} job wt (keeping the last list): no active target "
        "of job 'wt' (a misspelled job, or a Prometheus that has not loaded its targets yet?)"]


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
            try:  # a hang guard only
                r = await asyncio.wait_for(hub.get("/api/v1/search"), 60)
            except TimeoutError:
                pytest.fail("GET /api/v1/search hung: no answer after 60 s")
    assert (r.status_code, r.json()["hosts"], r.json()["partial"]) == (200, ["static"], False)
    # the hub's bound on the whole refresh cut the drip (held for the whole drip, ~10 s, the refresh would have
    # ended on its empty target list: "no active target")
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from prometheus {prom.url('prom')} job wt (keeping the last list): timed out after 2s"]


async def test_discovery_ignores_proxy_variables_as_the_fan_out_does(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture):
    """The Prometheus client honoured HTTP_PROXY/ALL_PROXY (httpx's trust_env) where the fan-out does not: with a
    proxy set for other programs, discovery went through it (here a dead one) and the hub found no target."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.WARNING, logger="hub.targets")
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon:
        async with FakeHosts(prometheus(f"http://127.0.0.1:{daemon.port}", [Reply(body="good")])) as prom, \
                running_hub({"prometheus": {"url": prom.url("prom"), "job": "wt"}}) as hub:
            r = await hub.get("/api/v1/search")
    assert (r.status_code, r.json()["hosts"], r.json()["partial"]) == (200, ["p1"], False)
    assert ([req.host for req in prom.requests], [req.path for req in daemon.requests]) == (["prom"], ["/api/v1/search"])
    assert caplog.records == []


BAD_PORT = "OverflowError: connect(): port must be 0-65535."


async def test_a_discovered_target_no_socket_can_reach_is_a_missing_host_on_every_route():
    """Prometheus named `127.0.0.1:99999` (a relabelling mistake): connect() raised OverflowError inside an
    ExceptionGroup, which escaped the fan-out; every route answered 500 and hid the healthy daemon's data."""
    active = [{"labels": {"job": "wt", "instance": name}, "scrapeUrl": f"http://{hostport}/metrics"}
              for name, hostport in (("bad4", "127.0.0.1:99999"), ("bad6", "[::1]:99999"))]

    def answer(req: Request) -> Reply:
        if req.host == "prom":
            return Reply(body={"status": "success", "data": {"activeTargets": [
                *active, {"labels": {"job": "wt", "instance": "a"}, "scrapeUrl": f"{daemon.url('a')}/metrics"}]}})
        return _empty(req)

    async with FakeHosts(answer) as daemon, \
            running_hub({"prometheus": {"url": daemon.url("prom"), "job": "wt"}}) as hub:
        for path, params, status in ROUTES:
            r = await hub.get(path, params=params)
            missing = [] if "timelines/" in path else [("bad4", BAD_PORT), ("bad6", BAD_PORT)]
            assert (r.status_code, [(m["host"], m["error"]) for m in r.json().get("missing_hosts", [])]) == (
                status, missing), (path, r.text)
        for path, params in PAGES:
            r = await hub.get(path, params=params)
            assert r.status_code in (200, 404) and "internal error" not in r.text, (path, r.text)


def _pools(daemon: str, job_label: str = "wt", refuses_pool: bool = False) -> Any:
    """A Prometheus with the hub's daemon in scrape pool `wt` (its job label `job_label`) and 200 node targets in
    pool `node`; it filters by `scrapePool` (2.42+), or answers 400 to it (`refuses_pool`)."""
    others = [{"labels": {"job": "node", "instance": f"n{i}"}, "scrapePool": "node",
               "scrapeUrl": f"http://10.0.0.{i % 250}:9100/metrics"} for i in range(200)]
    ours = [{"labels": {"job": job_label, "instance": "p1"}, "scrapePool": "wt", "scrapeUrl": f"{daemon}/metrics"}]

    def answer(req: Request) -> Reply:
        if req.host != "prom":
            return Reply(body=EMPTY_SEARCH)
        pool = req.params.get("scrapePool")
        if pool is not None and refuses_pool:
            return Reply(400, {"status": "error", "errorType": "bad_data", "error": "unknown parameter scrapePool"})
        active = [t for t in [*others, *ours] if pool is None or t["scrapePool"] == pool]
        return Reply(body={"status": "success", "data": {"activeTargets": active, "droppedTargets": []}})

    return answer


async def test_discovery_asks_prometheus_for_the_scrape_pool_given_only(caplog: pytest.LogCaptureFixture):
    """All active targets of every job were read (under hub.max_answer_size: a big Prometheus's answer made the hub
    find none) to keep one job's: with `prometheus.scrape_pool`, Prometheus 2.42+ answers that pool's only."""
    caplog.set_level(logging.WARNING, logger="hub.targets")
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon, \
            FakeHosts(_pools(f"http://127.0.0.1:{daemon.port}")) as prom, \
            running_hub({"prometheus": {"url": prom.url("prom"), "job": "wt", "scrape_pool": "wt"}}) as hub:
        r = await hub.get("/api/v1/search")
    assert (r.status_code, r.json()["hosts"], r.json()["partial"]) == (200, ["p1"], False)
    assert [req.params for req in prom.requests] == [{"state": "active", "scrapePool": "wt"}]
    assert caplog.records == []


async def test_without_a_scrape_pool_every_pool_holding_the_job_is_read():
    """Review 2026-12-06: asking by the pool named as the job (the first version of the above) left out daemons of
    other pools relabelled to the same `job` (`job_name: watchtower-dc2`): a whole datacenter missing from every
    answer, not even a missing host. Without `scrape_pool` every active target is read, kept by job label."""
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as one, \
            FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as two:
        ours = [{"labels": {"job": "watchtower", "instance": name}, "scrapePool": pool,
                 "scrapeUrl": f"http://127.0.0.1:{daemon.port}/metrics"}
                for name, pool, daemon in (("p1", "watchtower", one), ("p2", "watchtower-dc2", two))]

        def answer(req: Request) -> Reply:
            if req.host != "prom":
                return Reply(body=EMPTY_SEARCH)
            pool = req.params.get("scrapePool")
            active = [t for t in ours if pool is None or t["scrapePool"] == pool]
            return Reply(body={"status": "success", "data": {"activeTargets": active, "droppedTargets": []}})

        async with FakeHosts(answer) as prom, \
                running_hub({"prometheus": {"url": prom.url("prom"), "job": "watchtower"}}) as hub:
            r = await hub.get("/api/v1/search")
    assert (r.status_code, sorted(r.json()["hosts"])) == (200, ["p1", "p2"])
    assert [req.params for req in prom.requests] == [{"state": "active"}]


async def test_a_prometheus_that_refuses_scrape_pool_is_asked_for_every_target(caplog: pytest.LogCaptureFixture):
    """An older or another Prometheus API may answer 400 to `scrapePool`: it is asked for every active target, kept
    by job label, and not asked by pool again."""
    caplog.set_level(logging.WARNING, logger="hub.targets")
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon, \
            FakeHosts(_pools(f"http://127.0.0.1:{daemon.port}", "wt", refuses_pool=True)) as prom, \
            running_hub({"prometheus": {"url": prom.url("prom"), "job": "wt", "scrape_pool": "wt"},
                         "refresh_interval": 0.05}) as hub:
        first = await hub.get("/api/v1/search")
        time.sleep(0.1)
        second = await hub.get("/api/v1/search")
    for r in (first, second):
        assert (r.status_code, r.json()["hosts"], r.json()["partial"]) == (200, ["p1"], False)
    pooled, every = {"state": "active", "scrapePool": "wt"}, {"state": "active"}
    assert [req.params for req in prom.requests] == [pooled, every, every]
    assert caplog.records == []


async def test_the_prometheus_answer_is_parsed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch):
    """Up to hub.max_answer_size of JSON (32 MiB: ~0.5 s) was parsed on the event loop, every request waiting."""
    import json
    import threading

    parsed_on: list[str] = []
    loads = json.loads

    def watched(text: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(text, bytes | bytearray) and b"activeTargets" in text:
            parsed_on.append(threading.current_thread().name)
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", watched)
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon, \
            FakeHosts(_pools(f"http://127.0.0.1:{daemon.port}")) as prom, \
            running_hub({"prometheus": {"url": prom.url("prom"), "job": "wt"}}) as hub:
        r = await hub.get("/api/v1/search")
    assert (r.status_code, r.json()["hosts"]) == (200, ["p1"])
    assert len(parsed_on) == 1 and parsed_on[0].startswith("hub-work"), parsed_on


async def test_a_discovery_source_never_read_is_named_in_the_503(tmp_path: Any):
    """`no targets configured or discovered` read as if nothing were configured when Prometheus could not be asked
    (or a file_sd file read) since the start: the 503 now says discovery failed and names the source, no secret."""
    dead = f"http://watcher:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    missing = tmp_path / "absent.json"
    async with running_hub({"prometheus": {"url": dead, "job": "wt"}, "file_sd": [str(missing)]}) as hub:
        answers = [await hub.get(path) for path in ("/api/v1/search", "/api/v1/flows", "/api/v1/messages/m@x")]
    for r in answers:
        error = r.json()["error"]
        assert r.status_code == 503 and error.startswith("no targets configured or discovered: discovery failed: "), \
            error
        assert f"prometheus http://***@127.0.0.1:{dead.rsplit(':', 1)[1]} job wt: ConnectError" in error, error
        assert f"{missing}: " in error and "s3cret" not in error and "watcher" not in error, error
