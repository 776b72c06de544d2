"""From a hostile review of the hub (2026-12-05, second one): a slow host's keyset re-check cut by the page's
budget (its place stayed an offset, and a host storing late items repeated them), one daemon asked three times
under three spellings of its URL, a bearer token that is no HTTP header value shown in every answer, a forged
Message-Id place of 10**300 taken as a count. Fake hosts and the hub on loopback, in the test's own event loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.fanout import HostAnswer
from hub.targets import Target
from tests.hub.fakes import FakeHosts, Reply, Request, running_hub, search_page, startup_problems, summary
from tests.hub.test_hub_hostile_answers import LiveHost, _targets


class LateHost(LiveHost):
    """A slow daemon (`delay` per answer) whose `store_late()` stores a timeline first seen long ago (a file copied
    in late) on top of its keyset order (the newest id): a place kept as an offset from its top moves down by one."""

    delay = 0.0

    def answer(self, req: Request, extra: int = 0) -> Reply:
        return Reply(body=super().answer(req, extra).body, delay=self.delay)

    def store_late(self) -> None:
        self.rows.append((self.rows[-1][0] + 1, 1767225600.0 - 3600))


async def test_a_slow_host_storing_late_items_hands_each_item_out_once_and_is_never_called_missing():
    """With hub.timeout 1 s, a host answering in 0.8 s: its keyset re-check had what was left of the page's 1.5 s
    (0.7 s) and timed out, its place stayed an offset, and the late items stored on its top between two pages made
    the next page repeat as many; a refill with less than its timeout left named the host missing."""
    slow, calm = LateHost(12, 5, live=False), LiveHost(12, 0, live=False)
    slow.delay = 0.8
    hosts: dict[str, Any] = {"slow": slow, "calm": calm}
    async with FakeHosts(lambda req: hosts[req.host].answer(req)) as fleet, \
            running_hub({"targets": _targets(fleet, "calm", "slow"), "timeout": "1s"}) as hub:
        got, missing, cursor = [], [], None
        for _ in range(20):
            r = await hub.get("/api/v1/search", params={"limit": 7, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            got += [(i["host"], i["id"]) for i in r.json()["items"]]
            missing += r.json()["missing_hosts"]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
            slow.store_late()
    assert missing == []
    assert len(got) == len(set(got)), sorted(x for x in got if got.count(x) > 1)
    assert {x for x in got if x[1] <= 12} == {(h, i) for h in ("calm", "slow") for i in range(1, 13)}


@pytest.mark.parametrize("spelling", ["HTTP://127.0.0.1:{port}", "http://127.0.0.1:0{port}",
                                      "http://127.0.0.1:{port}/", "http://127.0.0.1:{port}?"])
async def test_one_daemon_under_two_spellings_of_its_url_is_asked_once(spelling: str):
    """Each spelling was a host of its own: paging listed every timeline once per spelling."""
    async with FakeHosts(lambda req: search_page([summary(id=1, first_seen="2026-01-01T00:00:01Z")])) as fleet:
        plain = f"http://127.0.0.1:{fleet.port}"
        async with running_hub({"targets": [plain, spelling.format(port=fleet.port)]}) as hub:
            r = await hub.get("/api/v1/search")
    assert r.status_code == 200, r.text
    assert [(i["host"], i["id"]) for i in r.json()["items"]] == [(f"127.0.0.1:{fleet.port}", 1)]
    assert len(fleet.requests) == 1


@pytest.mark.parametrize("target", ["http://h:9469?x=1", "http://h:9469#top"])
def test_a_target_url_with_a_query_or_fragment_is_refused(tmp_path: Path, target: str):
    """`http://h:9469?x=1` was accepted, then every request went to `http://h:9469?x=1/api/v1/search`."""
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": {"targets": [target]}}))
    assert startup_problems(cfg) == [f"hub.targets.0: {target!r}: a daemon's base URL has no query or fragment"]


@pytest.mark.parametrize(("token", "where"), [("tok-SECRET-1\nsecond-line\n", "position 13"),
                                               ("tok-SECRET-\u00e9\n", "position 12"), ("\n \n", None)])
def test_a_bearer_token_no_http_header_can_carry_is_refused_without_showing_it(tmp_path: Path, token: str,
                                                                              where: str | None):
    """A token of two lines was accepted and every answer's missing_hosts said `Illegal header value b'Bearer
    tok-SECRET-1\\nsecond-line'`; a non-ASCII one stopped the start with a UnicodeEncodeError traceback."""
    secret = tmp_path / "token"
    secret.write_text(token, encoding="utf-8")
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": {"targets": ["http://h:9469"], "auth": {"bearer_token_file": str(secret)}}}))
    said = startup_problems(cfg)
    expected = (f"hub.auth.bearer_token_file: {secret} holds a character an HTTP header cannot carry at {where} "
                "(a bearer token is visible ASCII on one line)") if where else \
        f"hub.auth.bearer_token_file: {secret} is empty: it holds no secret"
    assert said == [expected]
    assert "SECRET" not in " ".join(said)


def test_an_illegal_header_value_is_never_shown():
    import httpx

    from hub.fanout import _why

    said = _why(httpx.LocalProtocolError("Illegal header value b'Bearer tok-SECRET-1\\nsecond'"))
    assert "SECRET" not in said and said.startswith("LocalProtocolError: Illegal header value")


async def test_a_place_is_found_where_items_stored_or_pruned_above_moved_it():
    """Between a host's page and its keyset re-check, items stored above the last one handed out (or pruned) moved
    it off the `count`-th place: the offset stayed, and moved again later. It is looked for and asked up to."""
    from hub.places import place_after

    ids = [50, 49, 48, 47, 46, 45, 44, 43]  # 41 and 42 handed out on this page, after 47..43: now further down
    asked: list[int] = []

    async def ask(limit: int) -> HostAnswer:
        asked.append(limit)
        page = [{"id": i} for i in [*ids, 42, 41, 40][:limit]]
        return HostAnswer(Target("h", "http://h"), 200, {"items": page, "next_cursor": f"after-{page[-1]['id']}"})

    assert await place_after(ask, "items", 3, 48, None, most=500) == "after-48"
    assert asked == [3]  # in place: one request
    asked.clear()
    assert await place_after(ask, "items", 3, 42, None, most=500) == "after-42"
    assert asked == [3, 53, 9]
    asked.clear()
    assert await place_after(ask, "items", 3, 7, None, most=500) is None  # gone: the offset stays
    assert asked == [3, 53]


def test_a_forged_message_place_past_any_count_is_a_400():
    """A cursor giving a host the place 10**300 answered 200 with recipients_total 10**300."""
    from correlator.api import BadRequest
    from hub import cursors
    from hub.messages import _decode, fingerprint

    targets = [Target("h", "http://h")]
    fp = fingerprint("m1@shop.example")
    good, _ = cursors.encode(fp, {"http://h": 2**53}, targets)
    assert _decode(good, fp, targets).places == {"http://h": 2**53}
    forged, _ = cursors.encode(fp, {"http://h": 10**300}, targets)
    with pytest.raises(BadRequest) as exc:
        _decode(forged, fp, targets)
    assert (exc.value.status, exc.value.parameter) == (400, "cursor")


async def test_a_refill_the_page_budget_cuts_short_ends_the_page_without_calling_the_host_missing():
    """A host that gives one item per page (scan-limited) in 0.6 s, hub.timeout 1 s: its third page of one hub page
    had 0.3 s of the 1.5 s budget left and timed out, and the host was named missing ("timed out after 0.3s") on a
    page it answered every request of in time. The page ends there, scan_limited; the next page goes on."""
    def answer(req: Request) -> Reply:
        at = int(req.params.get("cursor", "100"))
        nxt = str(at - 1) if at > 91 else None
        return Reply(body=search_page([summary(id=at, first_seen=f"2026-01-01T00:00:{at - 40:02d}Z")], nxt).body,
                     delay=0.6)

    async with FakeHosts(answer) as fleet, \
            running_hub({"targets": _targets(fleet, "sparse"), "timeout": "1s"}) as hub:
        r = await hub.get("/api/v1/search", params={"limit": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["missing_hosts"] == [] and body["partial"] is False
        assert body["scan_limited"] is True and body["next_cursor"]
        first = [i["id"] for i in body["items"]]
        assert first == list(range(100, 100 - len(first), -1)) and 1 <= len(first) < 10
        r = await hub.get("/api/v1/search", params={"limit": 10, "cursor": body["next_cursor"]})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["id"] == first[-1] - 1


async def test_only_a_budget_the_callers_deadline_shortened_is_a_cut():
    """A Message-Id page's deadline is now + hub.timeout: its timeouts were all flagged `cut` (by a hair)."""
    import time

    from hub.config import HubConfig
    from hub.fanout import Fanout, make_client

    async with FakeHosts(lambda req: Reply(hang=True)) as fleet:
        config = HubConfig.model_validate({"hub": {"targets": [fleet.url("h")], "timeout": "0.3s"}})
        fanout = Fanout(make_client(config.hub), config.hub.timeout)
        try:
            target = Target("h", fleet.url("h"))
            whole = await fanout.one(target, "/api/v1/search", {}, time.monotonic() + 0.3)
            short = await fanout.one(target, "/api/v1/search", {}, time.monotonic() + 0.1)
        finally:
            await fanout.aclose()
    assert (whole.cut, short.cut) == (False, True)
    assert whole.error == "timed out after 0.3s"


def test_a_target_given_twice_is_asked_once_and_said(caplog: pytest.LogCaptureFixture):
    from hub.config import HubConfig
    from hub.targets import static_targets

    config = HubConfig.model_validate({"hub": {"targets": [{"url": "http://pmta-1:9469", "name": "one"},
                                                           {"url": "HTTP://PMTA-1:09469/", "name": "two"}]}})
    with caplog.at_level("WARNING", logger="hub.targets"):
        assert static_targets(config.hub) == [Target("one", "http://pmta-1:9469")]
    assert [r.getMessage() for r in caplog.records] == [
        "hub.targets: HTTP://PMTA-1:09469/ is http://pmta-1:9469 again (the daemon is asked once, as 'one')"]
