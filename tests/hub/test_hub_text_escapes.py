"""Review 2026-12 of the hub's answers: what text output and errors repeat of values others chose.

- The text answers' last line "partial answer (hosts not answering: ...)" printed host names raw: a Prometheus
  `instance` label or a URL in a forged cursor put terminal escapes into `curl | less` (docs promise escaping).
- A cursor naming a host URL with control characters is refused (400 `cursor`), as any other malformed cursor.
- A 404 for a Message-Id found nowhere repeated the whole Message-Id (8,000 characters: an 8,141-byte answer).

Real HTTP: fake daemons, a fake Prometheus and the hub on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from correlator.api import ECHO_CHARS, echoed, encode_token
from hub import messages, search
from tests.conftest import free_port
from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, summary, timeline

EVIL = "evil\x1b]0;owned\x07\x1b[2J\u202eeman"
"""An instance label holding terminal escapes (a title change, a screen clear) and a bidi override."""
EVIL_SHOWN = "evil\\x1b]0;owned\\x07\\x1b[2J\\u202eeman"
FLOWS = {"since": "2026-01-01T00:00:00Z", "until": None, "nodes": [], "edges": []}
TEXT_ROUTES = [("/api/v1/search", {}), ("/api/v1/flows", {}), ("/api/v1/timeline", {"rcpt": "u@x.example", "job_id": "j"}),
               ("/api/v1/messages/m@x.example", {})]


def daemon(req: Request) -> Reply:
    """A daemon holding one timeline (m@x.example, job j, u@x.example)."""
    if req.path == "/api/v1/flows":
        return Reply(body=FLOWS)
    if req.path == "/api/v1/timeline":
        return Reply(body={"job_id": "j", "message_id": "m@x.example", "rcpt": "u@x.example",
                           "timelines": [timeline()]})
    if req.path.startswith("/api/v1/messages/"):
        return Reply(body={"message_id": "m@x.example", "recipients_total": 1, "truncated": False,
                           "next_cursor": None, "recipients": [timeline()]})
    return search_page([summary()])


@asynccontextmanager
async def hub_with_an_evil_instance() -> AsyncIterator[httpx.AsyncClient]:
    """A hub over a static daemon that answers and a discovered one named EVIL that does not (nothing listens)."""
    down = f"127.0.0.1:{free_port()}"

    def prometheus(req: Request) -> Reply:
        return Reply(body={"status": "success", "data": {"activeTargets": [
            {"labels": {"job": "wt", "instance": EVIL}, "scrapeUrl": f"http://{down}/metrics"}]}})

    async with FakeHosts(daemon) as fleet, FakeHosts(prometheus) as prom, \
            running_hub({"targets": [{"url": fleet.url("ok"), "name": "ok"}], "timeout": 2.0,
                         "prometheus": {"url": prom.url("prom"), "job": "wt"}},
                        listen=f"127.0.0.1:{free_port()}") as hub:
        yield hub


@pytest.mark.parametrize(("path", "params"), TEXT_ROUTES, ids=[p for p, _ in TEXT_ROUTES])
async def test_a_host_name_in_a_text_answer_has_its_control_characters_escaped(path: str, params: dict[str, Any]):
    async with hub_with_an_evil_instance() as hub:
        r = await hub.get(path, params={**params, "format": "text"})
        as_json = await hub.get(path, params=params)
    assert r.status_code == 200, r.text
    assert as_json.json()["missing_hosts"][0]["host"] == EVIL  # JSON keeps the value (escaped by JSON itself)
    assert "\x1b" not in r.text and "\x07" not in r.text and "\u202e" not in r.text
    assert f"hosts not answering: {EVIL_SHOWN})" in r.text


async def test_a_cursor_naming_a_host_url_with_control_characters_is_a_400() -> None:
    """Such a host is out of the targets, so it was named in missing_hosts and in the text answer's last line."""
    bad = ["http://evil\x1bc.example:9469", "http://a.example:9469/\x1b[2J", "http://a\u202e.example:1",
           "http://a\x7f.example:1", "http://a\x9b2J.example:1", "http://a\tb.example:1"]
    async with FakeHosts(daemon) as fleet, \
            running_hub({"targets": [{"url": fleet.url("a"), "name": "a"}]},
                        listen=f"127.0.0.1:{free_port()}") as hub:
        answers = []
        for url in bad:
            answers.append(await hub.get("/api/v1/search", params={
                "format": "text", "cursor": encode_token({"f": search.fingerprint({}), "h": {url: [None, 0]}})}))
            answers.append(await hub.get("/api/v1/messages/m@x", params={
                "format": "text", "cursor": encode_token({"f": messages.fingerprint("m@x"), "h": {url: [None, 0]}})}))
    for r in answers:
        assert r.status_code == 400, r.text
        assert (r.json()["error"], r.json()["parameter"], r.json()["status"]) == ("malformed cursor", "cursor", 400)


async def test_a_message_id_found_nowhere_is_echoed_cut_short() -> None:
    mid = "m" * 8000 + "@x.example"

    def nowhere(req: Request) -> Reply:
        return Reply(404, {"error": "no timeline", "parameter": "message_id", "status": 404})

    async with FakeHosts(nowhere) as fleet, \
            running_hub({"targets": [{"url": fleet.url("a"), "name": "a"}]},
                        listen=f"127.0.0.1:{free_port()}") as hub:
        r = await hub.get(f"/api/v1/messages/<{mid}>")
    assert r.status_code == 404, r.text[:300]
    assert r.json()["error"] == f"no timeline for Message-Id {echoed(mid)} on any host"
    assert len(r.content) < 1000 and len(echoed(mid)) < ECHO_CHARS + 10
