"""The hub asks its daemons with the address in a form body, not in the URL (review 2026-12-06, reproduced).

A lookup POSTed as a form keeps the address out of request lines, which reverse proxies log (docs/api.md,
"Addresses out of URLs"; docs/security.md recommends such a proxy in front of each daemon). The hub read the form,
then asked every daemon with a GET carrying `rcpt` (and a job id that may hold an address) in its query string: each
daemon-side proxy logged every recipient looked up through the hub. Real HTTP: fake daemons and the hub on loopback.
"""

from __future__ import annotations

import pytest

from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary, timeline

RCPT = "Victim.One@example.org"
JOB = "job-for-victim.one@example.org"


def daemon(req: Request) -> Reply:
    if req.path == "/api/v1/timeline":
        return Reply(body={"job_id": JOB, "message_id": None, "rcpt": RCPT, "timelines": [timeline()]})
    return search_page([summary()])


@pytest.mark.parametrize(("path", "form"), [
    ("/api/v1/search", {"rcpt": RCPT}),
    ("/api/v1/timeline", {"rcpt": RCPT, "job_id": JOB}),
    ("/ui/timeline", {"rcpt": RCPT, "job_id": JOB}),
])
async def test_the_hub_sends_addresses_to_its_daemons_in_a_form(path: str, form: dict[str, str]) -> None:
    async with FakeHosts(daemon) as fleet, running_hub(
            {"targets": [{"url": fleet.url("a"), "name": "a"}, {"url": fleet.url("b"), "name": "b"}]}) as hub:
        resp = await hub.post(path, data=form)
        assert resp.status_code == 200, resp.text
    asked = [r for r in fleet.requests if r.path.startswith("/api/v1/")]
    assert sorted(r.host for r in asked) == ["a", "b"]
    for r in asked:
        assert r.method == "POST" and r.headers["content-type"] == "application/x-www-form-urlencoded", r
        assert "victim" not in r.target.lower() and "%40" not in r.target, r.target  # the request line a proxy logs
        assert {k: r.params[k] for k in form} == form  # ...and the daemon got every field
