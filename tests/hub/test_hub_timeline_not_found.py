"""The hub's /timeline 404 names the parameter the daemons name: `rcpt` when some host stores the job (or Message-Id)
but not for that recipient, the key parameter when no host stores the key at all (docs/api.md, docs/scaling.md).

The hub named `job_id` (or `message_id`) whatever the hosts said (review 2026-12-06): a daemon answered
`parameter: rcpt` for a stored job and an unknown recipient, the hub `parameter: job_id`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub.fakes import FakeHosts, Reply, Request, running_hub
from tests.hub.test_hub_over_daemon import clients, corpus_daemon
from tests.test_correlator_support import NOW, Harness


def _not_found(parameter: str) -> Reply:
    error = {"rcpt": "no timeline for recipient 'nobody@gmail.com' in job 'J5'", "job_id": "no timeline for job 'J5'",
             "message_id": "no timeline for Message-Id 'm@x'"}[parameter]
    return Reply(404, {"error": error, "parameter": parameter, "status": 404})


def _fleet(said: dict[str, str | None]) -> Any:
    """Each host's 404 `parameter` (None: it is down: a 503 without the daemon's shape)."""
    def answer(req: Request) -> Reply:
        parameter = said[req.host]
        return Reply(503, raw=b"down") if parameter is None else _not_found(parameter)
    return answer


@pytest.mark.parametrize(("said", "key", "parameter"), [
    ({"a": "rcpt", "b": "rcpt"}, "job_id", "rcpt"),
    ({"a": "job_id", "b": "rcpt"}, "job_id", "rcpt"),  # the job is stored on b: the recipient is what is not there
    ({"a": "rcpt", "b": "job_id"}, "job_id", "rcpt"),
    ({"a": "job_id", "b": "job_id"}, "job_id", "job_id"),
    ({"a": "message_id", "b": "rcpt"}, "message_id", "rcpt"),
    ({"a": "message_id", "b": "message_id"}, "message_id", "message_id"),
    ({"a": "job_id", "b": None}, "job_id", "job_id"),  # b not answering: partial, the key as far as known
    ({"a": "rcpt", "b": None}, "job_id", "rcpt"),
])
async def test_the_404_names_rcpt_when_any_host_stores_the_key(said: dict[str, str | None], key: str,
                                                                parameter: str) -> None:
    async with FakeHosts(_fleet(said)) as fleet, running_hub(
            {"targets": [{"url": fleet.url(n), "name": n} for n in said]}) as hub:
        r = await hub.get("/api/v1/timeline", params={"rcpt": "nobody@gmail.com", key: "J5"})
    body = r.json()
    assert (r.status_code, body["parameter"], body["status"]) == (404, parameter, 404), body
    assert body["partial"] == (None in said.values())
    assert body["error"].startswith("no timeline for this recipient" if parameter == "rcpt" else "no timeline for ")
    if parameter == "rcpt":
        stored = [n for n, p in said.items() if p == "rcpt"]
        assert f"stored on {', '.join(stored)}" in body["error"], body["error"]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with corpus_daemon(tmp_path, lambda: NOW) as harness:
        yield harness


async def test_the_hub_over_a_daemon_names_the_parameter_the_daemon_names(h: Harness) -> None:
    """The reviewer's case: job stored, not for this recipient (`rcpt`); a job stored nowhere (`job_id`); the same by
    Message-Id."""
    cases = [({"job_id": "J2", "rcpt": "nobody@gmail.com"}, "rcpt"),
             ({"job_id": "J99", "rcpt": "nobody@gmail.com"}, "job_id"),
             ({"message_id": "m1@shop.example", "rcpt": "nobody@gmail.com"}, "rcpt"),
             ({"message_id": "none@shop.example", "rcpt": "nobody@gmail.com"}, "message_id")]
    async with clients(h, lambda: NOW) as (via_hub, direct):
        for params, parameter in cases:
            hub, own = await via_hub.get("/api/v1/timeline", params=params), await direct.get("/api/v1/timeline",
                                                                                              params=params)
            assert (hub.status_code, hub.json()["parameter"]) == (own.status_code, own.json()["parameter"]) == (
                404, parameter), (params, hub.text, own.text)
