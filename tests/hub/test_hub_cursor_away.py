"""From the review of the away limits (MAX_AWAY, MAX_AWAY_CHARS) against the spelt-out `t`: the hosts at their top
that `t` spells out (a cursor within TOP_SPELT_MAX: 1,500 hosts of similar names fit in ~600 characters) were put
among the hosts `h` names before the limits were checked, so when service discovery dropped 1,300 of 1,500 hosts
between pages (or 900 whose URLs passed 32,768 characters), page 2 of a cursor the hub itself handed out was a 400
(`cursor names more than 1000 hosts that are not targets`). Said by a digest, the same hosts come from the hub's own
remembered list, are not counted, and page 2 is answered (the dropped hosts named missing, `next_cursor: null` and
`next_cursor_problem` saying why). The two forms of `t` now read alike: a host `t` spells out that is no longer a
target is at its top only when the hub knows it (a target of a list it remembers, as a digest names), not counted
against the limits; one it does not know is read as a digest it does not know (not named), so a forged `t` names no
host the hub never had as a target, and a forged `h` is refused as before. Search and Message-Id pages as the hub
serves them (hub.search, hub.messages over a fake fleet), and the cursors on their own."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from correlator.api import BadRequest, encode_token
from hub import cursors, messages
from hub import search as S
from hub.fanout import HostAnswer
from hub.targets import Target
from tests.hub.fakes import ThreeItemFleet

NOW = 1767225700.0


def _fleet(n: int) -> list[Target]:
    """`n` hosts named as a fleet is: http://pmta-0000.mail.example.com:9469 and on (38 characters each)."""
    return [Target(f"pmta-{i:04d}.mail.example.com:9469", f"http://pmta-{i:04d}.mail.example.com:9469")
            for i in range(n)]




def _spelt(token: str) -> bool:
    return isinstance(cursors._value(token)["t"], list)


def _search_pages(targets: list[Target], kept: list[Target]) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """Page 1 over `targets`, page 2 with its cursor once discovery lists only `kept`."""
    fleet = ThreeItemFleet(targets)

    async def pages() -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        p1, _ = await S.search(fleet, targets, {}, 50, None, {}, now=NOW)
        p2, failed = await S.search(fleet, kept, {}, 50, p1["next_cursor"], {})
        return p1, p2, failed

    return asyncio.run(pages())


COUNT = ("no next page: its cursor would hold a place for 1,299 hosts that are not targets, more than the 1,000 a "
         "cursor may hold; ask for this page again once they are among the targets again")
CHARS = ("no next page: its cursor would hold a place for hosts that are not targets in 34,200 characters of their "
         "URLs, more than the 32,768 a cursor may hold; ask for this page again once they are among the targets again")


@pytest.mark.parametrize("form", ["spelt", "digest"])
@pytest.mark.parametrize(("n", "dropped", "problem"), [(1500, 1299, COUNT), (1100, 900, CHARS)], ids=["count", "chars"])
def test_a_search_page_2_after_discovery_dropped_hosts_at_their_top_is_answered(
        n: int, dropped: int, problem: str, form: str, monkeypatch: pytest.MonkeyPatch):
    """The newest 201 (200) hosts stay; the rest, at their top, are dropped: page 2 names them missing and has no
    next cursor but says why, whichever form page 1's `t` took (the reviewer's t_away2.py and its HTTP repro)."""
    if form == "digest":
        monkeypatch.setattr(cursors, "TOP_SPELT_MAX", 0)
    targets = _fleet(n)
    p1, p2, failed = _search_pages(targets, targets[dropped:])
    assert _spelt(p1["next_cursor"]) == (form == "spelt") and len(p1["next_cursor"]) < 2048
    away = sorted(f.target.url for f in failed if f.away)
    assert away == sorted(t.url for t in targets[:dropped])
    assert (len(p2["items"]), p2["next_cursor"], p2["next_cursor_problem"]) == (50, None, problem)


def test_a_message_page_2_after_discovery_dropped_hosts_waiting_their_turn_is_answered():
    """Message-Id pages: every host but the first waits its turn at its top after page 1; 1,299 of 1,500 leave."""
    targets = _fleet(1500)
    fleet = ThreeItemFleet(targets)

    async def pages() -> tuple[Any, Any, list[HostAnswer]]:
        m1, _ = await messages.message_page(fleet, targets, "/api/v1/messages/m@x", "m@x", 2, None)
        m2, every = await messages.message_page(fleet, targets[1299:], "/api/v1/messages/m@x", "m@x", 2,
                                                m1["next_cursor"])
        return m1, m2, every

    m1, m2, every = asyncio.run(pages())
    assert _spelt(m1["next_cursor"])
    assert sorted(a.target.url for a in every if a.away) == sorted(t.url for t in targets[:1299])
    assert (len(m2["recipients"]), m2["next_cursor"], m2["next_cursor_problem"]) == (2, None, COUNT)


# --- the cursors on their own: both forms of `t` read alike -------------------------------------------------------


def _place(i: int) -> list[Any]:
    return [encode_token([1767225600.5 + i, i, "abc", NOW]), 0]


def _encoded(targets: list[Target], form: str, monkeypatch: pytest.MonkeyPatch) -> str:
    places: dict[str, Any] = {t.url: [None, 0] for t in targets} | {targets[-1].url: _place(1), targets[-2].url: 0}
    with monkeypatch.context() as m:
        if form == "digest":
            m.setattr(cursors, "TOP_SPELT_MAX", 0)
        token, problem = cursors.encode("fp", places, targets, now=NOW)
    assert problem is None and token is not None and _spelt(token) == (form == "spelt")
    return token


@pytest.mark.parametrize("dropped", [0, 5, 1000, 1001, 1299])
def test_both_forms_of_t_read_alike_after_discovery_drops_hosts(dropped: int, monkeypatch: pytest.MonkeyPatch):
    targets = _fleet(1500)
    got = {form: cursors.decode(_encoded(targets, form, monkeypatch), targets[dropped:], lambda p: True)
           for form in ("spelt", "digest")}
    assert got["spelt"] == got["digest"]
    assert sorted(u for u in got["spelt"].places if u not in {t.url for t in targets[dropped:]}) == sorted(
        t.url for t in targets[:dropped])
    nexts = {form: cursors.encode("fp", d.places, targets[dropped:], now=NOW)[1] for form, d in got.items()}
    assert nexts["spelt"] == nexts["digest"]
    assert (nexts["spelt"] is None) == (dropped <= 862)  # 862 URLs of 38 characters: 32,756


def test_a_spelt_out_list_the_hub_does_not_know_is_read_as_an_unknown_digest(monkeypatch: pytest.MonkeyPatch):
    """A restart with hub.cursor_key_file, another hub behind the same address: a host that left while at its top
    is then not named missing, whichever form `t` took (docs/scaling.md)."""
    targets = _fleet(400)
    tokens = {form: _encoded(targets, form, monkeypatch) for form in ("spelt", "digest")}
    monkeypatch.setattr(cursors, "_LISTS", type(cursors._LISTS)())
    monkeypatch.setattr(cursors, "_KNOWN", {})
    got = {form: cursors.decode(token, targets[5:], lambda p: True) for form, token in tokens.items()}
    assert got["spelt"] == got["digest"]
    assert len(got["spelt"].places) == 395


def _forged(h: dict[str, Any], top: list[str]) -> str:
    return cursors._zipped({"f": "fp", "h": h, "t": cursors._front_coded(sorted(top))})


def test_a_forged_t_names_no_host_that_was_never_a_target_and_costs_no_check_per_name(
        monkeypatch: pytest.MonkeyPatch):
    """20,000 made-up hosts spelt out (460,000 characters of URLs) in a 2,900-character cursor: none is named missing
    (none was ever a target the hub remembers), none counted, none checked one by one."""
    targets = _fleet(3)
    made_up = [f"http://x{i:05d}.example:1" for i in range(20_000)]
    token = _forged({}, made_up + [targets[0].url])
    assert len(token) <= cursors.MAX_HUB_CURSOR
    checked = Counter[str]()
    host_url = cursors._host_url

    def counted(url: Any) -> bool:
        checked[url] += 1
        return host_url(url)

    monkeypatch.setattr(cursors, "_host_url", counted)
    start = time.perf_counter()
    got = cursors.decode(token, targets, lambda p: True)
    took = time.perf_counter() - start
    assert got.places == {targets[0].url: [None, 0]}
    assert sum(checked.values()) == 0
    assert took < 1.0, took


def test_a_forged_h_naming_too_many_hosts_out_of_the_targets_is_still_a_400():
    """Beside a `t` of the hub's own, too: the limits hold for the hosts `h` names."""
    targets = _fleet(1500)
    cursors.encode("fp", {t.url: [None, 0] for t in targets}, targets)  # the hub knows this list
    h = {f"http://h{i}.example:1": 0 for i in range(cursors.MAX_AWAY + 1)}
    for top in ([], [t.url for t in targets[:1000]]):
        with pytest.raises(BadRequest) as exc:
            cursors.decode(_forged(h, top), targets[1000:], lambda p: True)
        assert (exc.value.status, exc.value.error) == (400, cursors.AWAY_REFUSED["hosts"])
    long = {f"http://{'h' * 420}{i}.example:1": 0 for i in range(100)}
    with pytest.raises(BadRequest) as exc:
        cursors.decode(_forged(long, [targets[0].url]), targets, lambda p: True)
    assert (exc.value.status, exc.value.error) == (400, cursors.AWAY_REFUSED["chars"])


def test_a_host_both_named_and_spelt_out_is_still_a_400():
    targets = _fleet(3)
    with pytest.raises(BadRequest) as exc:
        cursors.decode(_forged({targets[0].url: _place(0)}, [targets[0].url]), targets, lambda p: True)
    assert (exc.value.status, exc.value.error) == (400, "malformed cursor")
