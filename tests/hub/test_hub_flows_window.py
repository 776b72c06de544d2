"""The hub's /flows with `until` not after `since`: a 400 on `since`, as a daemon answers (docs/api.md), checked by
the hub on the window it resolved, so a host that would answer 200 (an older daemon, which checked the bounds rounded
to 5-minute buckets) is not asked, and no host at all is still a 400, not a 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.fakes import FakeHosts, Reply, Request, running_hub
from tests.hub.test_hub_over_daemon import clients, corpus_daemon
from tests.test_correlator_support import Harness

CLOCK = 1714645267.0  # 2024-05-02T10:21:07Z, after the corpus
FLOWS = {"since": "2024-05-01T10:20:00Z", "until": "2024-05-01T10:25:00Z",
         "nodes": [{"id": "vmta:v", "title": "v", "subtitle": "vmta", "mainstat": 1, "secondarystat": 0,
                    "detail__delivered": 1, "detail__bounced": 0, "detail__deferred": 0, "detail__complained": 0,
                    "detail__remote_bounced": 0, "detail__kind": "vmta", "arc__delivered": 1.0, "arc__bounced": 0.0,
                    "arc__deferred": 0.0}],
         "edges": []}
BACKWARDS = [("2024-05-01T10:21:07Z", "2024-05-01T10:20:08Z"), ("2024-05-01T10:21:07Z", "2024-05-01T10:21:07Z"),
             ("30m", "1h")]
REFUSED = {"error": "since must be before until", "parameter": "since", "status": 400}


@pytest.mark.parametrize(("since", "until"), BACKWARDS)
async def test_the_hub_refuses_a_backwards_window_without_asking_the_hosts(since: str, until: str) -> None:
    def older_daemon(req: Request) -> Reply:  # answers a backwards window with its bucket's data
        return Reply(body=FLOWS)

    async with FakeHosts(older_daemon) as fleet, running_hub(
            {"targets": [{"url": fleet.url(n), "name": n} for n in ("a", "b")]}) as hub:
        r = await hub.get("/api/v1/flows", params={"since": since, "until": until})
        ok = await hub.get("/api/v1/flows", params={"since": "2024-05-01T10:20:08Z", "until": "2024-05-01T10:21:07Z"})
    assert (r.status_code, {k: r.json()[k] for k in REFUSED}) == (400, REFUSED), r.text
    assert [q.path for q in fleet.requests] == ["/api/v1/flows"] * 2  # only the good window was asked
    assert ok.status_code == 200 and ok.json()["nodes"], ok.text


async def test_the_hub_without_targets_still_names_since(tmp_path: Path) -> None:
    (tmp_path / "sd.json").write_text("[]")
    async with running_hub({"file_sd": [str(tmp_path / "sd.json")]}) as hub:
        r = await hub.get("/api/v1/flows", params={"since": "2024-05-01T10:21:07Z", "until": "2024-05-01T10:20:08Z"})
    assert (r.status_code, r.json()["parameter"]) == (400, "since"), r.text


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with corpus_daemon(tmp_path, lambda: CLOCK) as harness:
        yield harness


@pytest.mark.parametrize(("since", "until"), BACKWARDS)
async def test_the_hub_over_a_daemon_answers_as_the_daemon(h: Harness, since: str, until: str) -> None:
    async with clients(h, lambda: CLOCK) as (via_hub, direct):
        hub = await via_hub.get("/api/v1/flows", params={"since": since, "until": until})
        own = await direct.get("/api/v1/flows", params={"since": since, "until": until})
    assert (hub.status_code, hub.json()["parameter"]) == (own.status_code, own.json()["parameter"]) == (400, "since")


async def test_the_hubs_replies_refuse_a_backwards_window_as_its_flows_do(tmp_path: Path) -> None:
    (tmp_path / "sd.json").write_text("[]")
    async with running_hub({"file_sd": [str(tmp_path / "sd.json")]}) as hub:
        r = await hub.get("/api/v1/replies", params={"since": "2024-05-01T10:21:07Z", "until": "2024-05-01T10:20:08Z"})
    assert (r.status_code, {k: r.json()[k] for k in REFUSED}) == (400, REFUSED), r.text
