"""The hub's /api/v1/replies for the hosts a dashboard's Instance filter names: VMTA names repeat across hosts, and an
alert's status board showed another host's replies under the alert's VMTA (review 2026-12-04). Real HTTP: fake
hosts and the hub on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from tests.hub.fakes import FakeHosts, Reply, Request, running_hub


def _replies_of(host: str) -> dict[str, Any]:
    reply = {"reply": f"550 from {host}", "kind": "bounced", "vmta": "vmta-06", "isp": "microsoft", "count": 3,
             "share": 1.0, "status": "5.7.1", "example": f"550 from {host}", "first_seen": None, "last_seen": None,
             "response_class": None}
    return {"since": "2026-01-01T00:00:00Z", "until": None, "vmta": None, "pool": None, "isp": None,
            "window_capped": False, "scan_limited": False, "total": 3, "replies": [reply]}


@pytest.mark.parametrize(("host", "want", "asked"), [
    ("a", ["550 from a"], {"a"}),
    ("a,c", ["550 from a", "550 from c"], {"a", "c"}),
    ("$__all", ["550 from a", "550 from b", "550 from c"], {"a", "b", "c"}),
    (None, ["550 from a", "550 from b", "550 from c"], {"a", "b", "c"}),
])
async def test_replies_are_asked_of_the_named_hosts_only(host: str | None, want: list[str], asked: set[str]):
    seen: set[str] = set()

    def answer(req: Request) -> Reply:
        seen.add(req.host)
        return Reply(body=_replies_of(req.host))

    async with FakeHosts(answer) as fleet, \
            running_hub({"targets": [{"url": fleet.url(n), "name": n} for n in ("a", "b", "c")]}) as hub:
        r = await hub.get("/api/v1/replies", params={"host": host} if host is not None else {})
    assert r.status_code == 200, r.text
    assert sorted(x["reply"] for x in r.json()["replies"]) == want
    assert seen == asked and r.json()["missing_hosts"] == []


async def test_a_named_host_that_is_no_target_is_missing_not_an_error():
    async with FakeHosts(lambda req: Reply(body=_replies_of(req.host))) as fleet, \
            running_hub({"targets": [{"url": fleet.url("a"), "name": "a"}]}) as hub:
        r = await hub.get("/api/v1/replies", params={"host": "a,zz"})
    assert r.status_code == 200, r.text
    assert [x["reply"] for x in r.json()["replies"]] == ["550 from a"]
    assert [(m["host"], m["error"]) for m in r.json()["missing_hosts"]] == [("zz", "not among the current targets")]
