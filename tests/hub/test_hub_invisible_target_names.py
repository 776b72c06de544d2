"""From the cursor review (2026-12-07): a target host name holding an invisible format character (soft hyphen, zero-width
space, a joiner, word joiner, BOM: pasted from a web page) passed the target checks (IDNA maps most of them to
nothing), but a hub cursor refuses a host URL that text answers would show escaped: the hub handed out a cursor it then
refused, and page 2 was `400 malformed cursor` for the whole fleet. Such a name is refused where targets are read,
naming the entry and the character's position, and the hub never hands out a cursor it would refuse."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from correlator.api import encode_token
from hub import cursors
from hub.config import HubConfig
from hub.targets import Target, TargetSet, canonical_url, parse_prometheus_targets, read_file_sd
from tests.hub.fakes import startup_problems

INVISIBLE = [("\u00ad", "SOFT HYPHEN"), ("\u200b", "ZERO WIDTH SPACE"), ("\u200c", "ZERO WIDTH NON-JOINER"),
             ("\u200d", "ZERO WIDTH JOINER"), ("\u2060", "WORD JOINER"), ("\ufeff", "ZERO WIDTH NO-BREAK SPACE")]
IDS = [f"U+{ord(c):04X}" for c, _ in INVISIBLE]


def _why(position: int, char: str, name: str) -> str:
    return (f"character {position} is U+{ord(char):04X} ({name}), an invisible character (pasted from a web page?): "
            "remove it")


def _config(tmp_path: Path, hub: dict[str, Any]) -> Path:
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": hub}))
    return cfg


@pytest.mark.parametrize(("char", "name"), INVISIBLE, ids=IDS)
def test_a_static_target_with_an_invisible_character_is_refused_at_start_naming_key_and_position(
        tmp_path: Path, char: str, name: str):
    url = f"http://mta{char}2.example:9100"
    assert startup_problems(_config(tmp_path, {"targets": ["http://mta1.example:9100", {"url": url}]})) == [
        f"hub.targets.1.url: {url!r}: {_why(11, char, name)}"]


def test_a_static_target_with_an_invisible_character_in_its_path_is_refused_too(tmp_path: Path):
    """The URL is what a cursor carries, path included."""
    url = "http://mta1.example:9100/pm\u200bta"
    assert startup_problems(_config(tmp_path, {"targets": [url]})) == [
        f"hub.targets.0: {url!r}: {_why(28, chr(0x200B), 'ZERO WIDTH SPACE')}"]


@pytest.mark.parametrize(("char", "name"), INVISIBLE, ids=IDS)
def test_a_file_sd_target_with_an_invisible_character_is_refused_at_start_naming_file_group_target_and_position(
        tmp_path: Path, char: str, name: str):
    sd = tmp_path / "sd.json"
    target = f"mta{char}2.example:9100"
    sd.write_text(json.dumps([{"targets": ["mta1.example:9100"]}, {"targets": ["mta3.example:9100", target]}]))
    assert startup_problems(_config(tmp_path, {"file_sd": [str(sd)]})) == [
        f"hub.file_sd.0: {sd}: group 1: target {target!r}: {_why(4, char, name)}"]


async def test_a_file_sd_target_with_an_invisible_character_added_later_keeps_the_last_good_list(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="hub.targets")
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["mta1.example:9100"]}]))
    now = [0.0]
    targets = TargetSet(HubConfig.model_validate({"hub": {"file_sd": [str(sd)], "refresh_interval": 10}}).hub,
                        clock=lambda: now[0])
    first = await targets.current()
    sd.write_text(json.dumps([{"targets": ["mta1.example:9100", "mta\u00ad2.example:9100"]}]))
    later = []
    for _ in range(2):
        now[0] += 11
        later.append(await targets.current())
    assert first == later[0] == later[1] == [Target("mta1.example:9100", "http://mta1.example:9100")]
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from {sd} (keeping the last list): {sd}: group 0: target 'mta\\xad2.example:9100': "
        f"{_why(4, chr(0xAD), 'SOFT HYPHEN')}"]


@pytest.mark.parametrize(("char", "name"), INVISIBLE, ids=IDS)
def test_a_prometheus_target_with_an_invisible_character_is_skipped_with_why(char: str, name: str):
    body = {"status": "success", "data": {"activeTargets": [
        {"labels": {"job": "wt", "instance": "bad"}, "scrapeUrl": f"http://mta{char}2.example:9100/metrics"},
        {"labels": {"job": "wt", "instance": "good"}, "scrapeUrl": "http://mta1.example:9100/metrics"}]}}
    skipped: list[str] = []
    assert parse_prometheus_targets(body, "wt", "http", skipped) == [Target("good", "http://mta1.example:9100")]
    shown = repr(f"http://mta{char}2.example:9100/metrics")
    assert skipped == [f"data.activeTargets.0 skipped: scrapeUrl {shown}: {_why(11, char, name)}"]


def test_no_usable_target_name_is_refused():
    """Letters of other scripts, `_`, IPv6: no invisible character in them."""
    from hub.config import invisible_problem

    for text in ["http://b\u00fccher.example:9469", "http://pmta_2:9469", "http://[::1]:9469", "\u043f\u0440.example:1"]:
        assert invisible_problem(text) is None


# --- the hub never hands out a cursor it would refuse -----------------------------------------------------------------


def _place(i: int) -> list[Any]:
    return [encode_token([1767225600.5 + i, i, "abc", 1767225700.0]), 0]


def test_a_cursor_round_trips_for_every_place_of_every_current_target():
    urls = [f"http://mta{i}.example:9100" for i in range(12)]
    targets = [Target(u.removeprefix("http://"), u) for u in urls]
    places: dict[str, Any] = {}
    for i, u in enumerate(urls):  # in part, at the top, exhausted; (the last three: not asked)
        places[u] = [_place(i), [None, 0], 0, None][i % 4]
    places = {u: p for u, p in places.items() if p is not None}
    fp = cursors.fingerprint({})
    token, problem = cursors.encode(fp, places, targets, now=1767225700.0)
    assert problem is None and token is not None
    got = cursors.decode(token, targets, lambda p: True)
    asked_not = {u: [None, 0] for u in urls if u not in places}  # a current target not asked: at its top, as asked
    assert (got.fp, got.places, got.now) == (fp, {**places, **asked_not}, 1767225700.0)


def test_a_host_url_a_cursor_would_refuse_is_no_cursor_handed_out_but_a_problem():
    """The targets are checked as they are read; should one such URL still get here, the page says why there is no
    next page (as for one too long) instead of handing out a cursor every later page refuses (400)."""
    bad = "http://mta\u200b2.example:9100"
    targets = [Target("mta1", "http://mta1.example:9100"), Target("mta2", bad)]
    token, problem = cursors.encode(cursors.fingerprint({}), {bad: _place(1), targets[0].url: [None, 0]}, targets)
    assert token is None
    assert problem == ("no next page: host 'http://mta\\u200b2.example:9100' cannot be named in a cursor (it holds "
                       "a control or invisible character)")


def test_a_host_at_its_top_with_an_invisible_character_is_no_longer_spelt_out():
    """Hosts at their top are no longer named by URL: the reviewer's three hosts (two with invisible characters in
    their names, from before the check) page on."""
    hosts = ["localhost\u00ad:9101", "mta\u200b2.example:9100", "mta3.example:9100"]
    targets = [Target(h, canonical_url("http://" + h)) for h in hosts]
    places = {t.url: [None, 0] for t in targets} | {targets[2].url: _place(3)}
    fp = cursors.fingerprint({})
    token, problem = cursors.encode(fp, places, targets, now=1767225700.0)
    assert problem is None and token is not None
    assert cursors.decode(token, targets, lambda p: True).places == places


def test_the_file_sd_reader_names_the_invisible_character(tmp_path: Path):
    sd = tmp_path / "sd.yml"
    sd.write_text("- targets: ['mta1.example:9100', \"mta2\\u2060.example:9100\"]\n")
    with pytest.raises(ValueError) as err:
        read_file_sd(sd, "http")
    assert str(err.value) == f"{sd}: group 0: target 'mta2\\u2060.example:9100': {_why(5, chr(0x2060), 'WORD JOINER')}"
