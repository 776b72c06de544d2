"""The hub against hosts that answer oddly (in-process, mocked transport): a target URL httpx refuses, no target
at all, a route a daemon does not have, replies whose detail must come from the busiest host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.app import build_hub_app
from hub.config import HubConfig, StaticTarget
from hub.fanout import HostAnswer
from hub.merge import merge_replies
from hub.targets import Target

EMPTY_SEARCH = {"items": [], "next_cursor": None, "limit": 50, "scan_limited": False}


async def ask(hub_cfg: dict[str, Any], handler: Any, *paths: str, unchecked: tuple[str, ...] = ()) -> list[httpx.Response]:
    """`paths` asked of a hub of `hub_cfg` whose hosts answer by `handler`; `unchecked` target URLs are added past the
    config's checks (as a discovered target is)."""
    config = HubConfig.model_validate({"hub": {"timeout": 1.0, **hub_cfg}})
    targets = [*config.hub.targets, *(StaticTarget.model_construct(url=url, name=None) for url in unchecked)]
    config = config.model_copy(update={"hub": config.hub.model_copy(update={"targets": targets})})
    app, hub = build_hub_app(config)
    await hub.fanout.client.aclose()
    hub.fanout.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://hub") as c:
        return [await c.get(path) for path in paths]


async def test_a_target_url_httpx_refuses_is_one_missing_host_not_a_500_everywhere():
    """`pmta-2:${PORT}` (a template left unexpanded): httpx.InvalidURL is no httpx.HTTPError and escaped the fan-out, so
    every hub route answered 500. Start-up refuses such a target (hub.targets, hub.file_sd); the fan-out does not
    count on it (a Prometheus-discovered one is not checked)."""
    got = await ask({"targets": ["http://pmta-1:9469"]}, lambda req: httpx.Response(200, json=EMPTY_SEARCH),
                    "/api/v1/search", "/ui/", unchecked=("http://pmta-2:${PORT}",))
    search, page = got
    assert search.status_code == 200, search.text
    body = search.json()
    assert body["partial"] is True and [(m["url"], m["error"]) for m in body["missing_hosts"]] == [
        ("http://pmta-2:${PORT}", "InvalidURL: Invalid port: '${PORT}'")]
    assert page.status_code == 200 and "internal" not in page.text.lower()


@pytest.mark.parametrize(("exc", "error"), [
    (OverflowError("connect(): port must be 0-65535."), "OverflowError: connect(): port must be 0-65535."),
    (ExceptionGroup("unhandled errors in a TaskGroup", [OverflowError("connect(): port must be 0-65535.")]),
     "OverflowError: connect(): port must be 0-65535."),  # as anyio's connect raises it: the cause, not the group
    (ExceptionGroup("outer", [ExceptionGroup("inner", [OSError(22, "Invalid argument")]), KeyError("k")]),
     "OSError: [Errno 22] Invalid argument"),
    (RuntimeError(), "RuntimeError"),
    (KeyError("k"), "KeyError: 'k'"),
    (ValueError("two\nlines\x1b[31m " + "x" * 300), "ValueError: two lines [31m " + "x" * 173 + "..."),
], ids=["overflow", "group", "nested-groups", "no-text", "key-error", "long-text"])
async def test_whatever_one_hosts_request_raises_is_that_host_missing_with_a_short_error(exc: Exception, error: str):
    """Only httpx.HTTPError and InvalidURL were caught: anything else from one host's request (OverflowError in an
    ExceptionGroup for a port past 65535) escaped the fan-out, and every route answered 500 with a ~160-line
    traceback logged, the healthy hosts' data hidden too."""
    def b_raises(req: httpx.Request) -> httpx.Response:
        if req.url.host == "b":
            raise exc
        return httpx.Response(200, json=EMPTY_SEARCH)

    search, page = await ask({"targets": ["http://a", "http://b"]}, b_raises, "/api/v1/search", "/ui/")
    assert (search.status_code, search.json()["hosts"], search.json()["missing_hosts"]) == (
        200, ["a", "b"], [{"host": "b", "url": "http://b", "error": error}])
    assert page.status_code == 200 and "internal" not in page.text.lower()


async def test_a_search_with_no_target_is_a_503_as_the_other_routes_are(tmp_path: Path):
    sd = tmp_path / "sd.json"
    sd.write_text("[]")
    [search] = await ask({"file_sd": [str(sd)]}, lambda req: httpx.Response(200, json=EMPTY_SEARCH), "/api/v1/search")
    assert (search.status_code, search.json()["error"]) == (503, "no targets configured or discovered")


@pytest.mark.parametrize("path", ["/api/v1/flows", "/api/v1/replies"])
async def test_a_host_without_the_route_is_a_missing_host(path: str):
    """A daemon never answers 404 on these routes: a 404 is a daemon without them (correlator off, older version).
    It was summed as an empty answer (partial false), and every host so gave an empty 200 (flows) or a 500."""
    def one_without(req: httpx.Request) -> httpx.Response:
        if req.url.host == "b":
            return httpx.Response(404, json={"error": "not found", "parameter": None, "status": 404})
        if req.url.path.endswith("/flows"):
            return httpx.Response(200, json={"since": "2026-11-30T10:00:00Z", "until": None, "nodes": [], "edges": []})
        return httpx.Response(200, json={"since": "2026-11-30T10:00:00Z", "until": None, "vmta": None, "pool": None,
                                         "isp": None, "window_capped": False, "scan_limited": False, "total": 0,
                                         "replies": []})

    [some] = await ask({"targets": ["http://a", "http://b"]}, one_without, path)
    assert some.status_code == 200, some.text
    assert some.json()["partial"] is True and [m["host"] for m in some.json()["missing_hosts"]] == ["b"]
    [none] = await ask({"targets": ["http://a", "http://b"]},
                       lambda req: httpx.Response(404, json={"error": "not found", "parameter": None, "status": 404}),
                       path)
    assert none.status_code == 503, none.text


def test_a_merged_reply_takes_its_status_and_example_from_the_host_that_counted_it_most():
    def answer(host: str, count: int) -> HostAnswer:
        return HostAnswer(Target(host, "http://" + host), 200, {"total": count, "replies": [
            {"reply": "421 try later", "kind": "deferred", "vmta": "v", "isp": "g", "count": count,
             "status": "4.7.0-" + host, "example": "from " + host}]})

    [merged] = merge_replies([answer("a", 5), answer("b", 4), answer("c", 6)], 10)["replies"]
    assert (merged["count"], merged["example"], merged["status"]) == (15, "from c", "4.7.0-c")


async def test_two_targets_named_alike_are_told_apart_by_their_address():
    """A host name picks the host a timeline is asked of (`?host=`): two targets of one name (relabelled Prometheus
    instances, two static entries) made every such link ask the first one."""
    from hub.targets import TargetSet

    section = HubConfig.model_validate({"hub": {"targets": [
        {"url": "http://10.0.0.1:9469", "name": "pmta"}, {"url": "http://10.0.0.2:9469", "name": "pmta"},
        {"url": "http://10.0.0.3:9469", "name": "other"}]}}).hub
    names = {t.url: t.name for t in await TargetSet(section).current()}
    assert names == {"http://10.0.0.1:9469": "10.0.0.1:9469", "http://10.0.0.2:9469": "10.0.0.2:9469",
                     "http://10.0.0.3:9469": "other"}


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/search", {"items": [{"id": 1, "first_seen": "yesterday"}], "next_cursor": None, "limit": 50}),
    ("/api/v1/flows", {"since": "2026-11-30T10:00:00Z", "until": None, "nodes": [],
                       "edges": [{"source": "a", "target": "b"}]}),
    ("/api/v1/replies", {"total": None, "replies": []}),
    ("/api/v1/messages/x@y", {"message_id": "x@y", "recipients_total": 1, "recipients": [{"rcpt": "r"}]}),
])
async def test_a_host_answering_another_shape_is_a_missing_host_not_a_500(path: str, body: dict[str, Any]):
    """An older or newer daemon, or a proxy's page with status 200: its answer reached the merge and the response
    model, and the hub answered 500 ("nothing a daemon does turns into a 500 on the hub", docs/scaling.md)."""
    [r] = await ask({"targets": ["http://b"]}, lambda req: httpx.Response(200, json=body), path)
    assert r.status_code in (404, 503), r.text
    missing = r.json()["missing_hosts"]
    assert [m["host"] for m in missing] == ["b"] and missing[0]["error"].startswith("HTTP 200: not a watchtower")


async def test_a_text_search_names_each_items_host_and_the_hosts_that_did_not_answer():
    """The JSON says partial and missing_hosts; the text said neither, and its `id=` lines did not say which host's
    id (ids are per host)."""
    from correlator.models import SearchResponse

    item = {name: None for name in SearchResponse.model_fields["items"].annotation.__args__[0].model_fields}
    item.update(id=7, first_seen="2026-11-30T10:00:00Z", outcome="delivered", rcpt="u@x.example", attempts=1,
                rcpt_hashed=False, complained=False, remote_bounced=False)

    def a_up_b_down(req: httpx.Request) -> httpx.Response:
        if req.url.host == "b":
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, json={"items": [item], "next_cursor": None, "limit": 50, "scan_limited": False})

    [r] = await ask({"targets": ["http://a", "http://b"]}, a_up_b_down, "/api/v1/search?format=text")
    assert r.status_code == 200, r.text
    lines = r.text.splitlines()
    assert lines[0].endswith("id=7  host=a") and lines[-1] == "partial answer (hosts not answering: b)"
