"""A file_sd file costs what it holds: YAML aliases are refused (a 36 KB file of one anchored list aliased 1,000 times
expanded to 1,001,000 targets, each checked one by one: 17 s of a hub work thread, on every refresh), the target
entries of a file are capped, each distinct host:port is checked once, and a slow refresh is never run twice at once
(review C)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

import hub.targets
from hub.config import HubConfig
from hub.targets import MAX_FILE_SD_TARGETS, Target, TargetSet, read_file_sd

GOOD = [Target("pmta-1:9469", "http://pmta-1:9469")]
ALIASED = "- targets: &a\n  - pmta-1:9469\n  - pmta-2:9469\n- targets: *a\n"


def _targets(sd: Path) -> TargetSet:
    """A TargetSet that re-reads `sd` on every call (its clock jumps past refresh_interval each time)."""
    section = HubConfig.model_validate({"hub": {"file_sd": [str(sd)], "timeout": 2.0}}).hub
    ticks = itertools.count(0, 1000)
    return TargetSet(section, clock=lambda: float(next(ticks)))


def test_a_yaml_alias_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    sd = tmp_path / "sd.yml"
    sd.write_text(ALIASED)
    with pytest.raises(ValueError) as exc:
        read_file_sd(sd, "http")
    assert str(exc.value) == (f"{sd}: line 4: a YAML alias (*a): file_sd files are read without aliases (each is a "
                              "copy of what it names: a few KB became a million targets); write the targets out")


def test_a_million_targets_in_36_kb_of_aliases_is_refused_before_it_expands(tmp_path: Path) -> None:
    """The reviewer's file: 1,000 targets under an anchor, aliased 1,000 times."""
    sd = tmp_path / "sd.yml"
    sd.write_text("\n".join(["- targets: &a"] + [f"  - h{i}.example:9469" for i in range(1000)]
                            + ["- targets: *a"] * 1000) + "\n")
    with pytest.raises(ValueError, match=r": line 1002: a YAML alias \(\*a\)"):
        read_file_sd(sd, "http")


def test_an_anchor_nothing_aliases_is_read(tmp_path: Path) -> None:
    """Only an alias copies anything: an anchor alone is read as it is."""
    sd = tmp_path / "sd.yml"
    sd.write_text("- targets: &a\n  - pmta-1:9469\n  labels: {job: x}\n")
    assert read_file_sd(sd, "http") == GOOD


async def test_an_aliased_file_keeps_the_last_list_with_one_warning(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hub.targets")
    sd = tmp_path / "sd.yml"
    sd.write_text("- targets: [pmta-1:9469]\n")
    targets = _targets(sd)
    assert await targets.current() == GOOD
    sd.write_text(ALIASED)
    assert [await targets.current() for _ in range(2)] == [GOOD, GOOD]
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from {sd} (keeping the last list): {sd}: line 4: a YAML alias (*a): file_sd files are "
        "read without aliases (each is a copy of what it names: a few KB became a million targets); write the "
        "targets out"]


@pytest.mark.parametrize("suffix", [".json", ".yml"])
def test_a_file_of_more_target_entries_than_the_cap_is_refused(tmp_path: Path, suffix: str) -> None:
    """Counted as written (the same host:port twice is two entries), before any is checked."""
    sd = tmp_path / f"sd{suffix}"
    groups = [{"targets": ["pmta-1:9469"] * (MAX_FILE_SD_TARGETS // 2)},
              {"targets": ["pmta-2:9469"] * (MAX_FILE_SD_TARGETS // 2 + 1)}]
    sd.write_text(json.dumps(groups))
    with pytest.raises(ValueError) as exc:
        read_file_sd(sd, "http")
    assert str(exc.value) == (f"{sd}: group 1: more than {MAX_FILE_SD_TARGETS:,} target entries in one file_sd "
                              "file; split the targets over several files")


def test_a_file_at_the_cap_reads_and_each_distinct_target_is_checked_once(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    problem = hub.targets._hostport_problem

    def counting(hostport: str, scheme: str) -> Any:
        checked.append(hostport)
        return problem(hostport, scheme)

    monkeypatch.setattr(hub.targets, "_hostport_problem", counting)
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["pmta-1:9469", "pmta-2:9469"] * (MAX_FILE_SD_TARGETS // 2)}]))
    got = read_file_sd(sd, "http")
    assert len(got) == MAX_FILE_SD_TARGETS and set(got) == {
        Target("pmta-1:9469", "http://pmta-1:9469"), Target("pmta-2:9469", "http://pmta-2:9469")}
    assert checked == ["pmta-1:9469", "pmta-2:9469"]


async def test_a_slow_refresh_is_not_started_again_while_it_runs(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A request due for a refresh while the one before is still reading (a pipe waited for hub.timeout) answers
    from the last list: it started another read, each holding a work thread, and an older read finishing last
    overwrote a newer one's list."""
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["pmta-1:9469"]}]))
    reads = 0
    gate = threading.Event()
    gate.set()
    real = hub.targets.read_file_sd

    def slow(path: Path, scheme: str, pipe_timeout: float) -> list[Target]:
        nonlocal reads
        reads += 1
        gate.wait(30)
        return real(path, scheme, pipe_timeout)

    monkeypatch.setattr(hub.targets, "read_file_sd", slow)
    targets = _targets(sd)
    assert await targets.current() == GOOD
    gate.clear()
    sd.write_text(json.dumps([{"targets": ["pmta-2:9469"]}]))
    first = asyncio.create_task(targets.current())
    for _ in range(500):  # until the second read is under way (a hang guard only)
        if reads == 2:
            break
        await asyncio.sleep(0.01)
    assert reads == 2
    assert [await targets.current() for _ in range(3)] == [GOOD] * 3  # due, but a refresh is running
    assert reads == 2
    gate.set()
    assert await first == [Target("pmta-2:9469", "http://pmta-2:9469")]
    assert await targets.current() == [Target("pmta-2:9469", "http://pmta-2:9469")]
    assert reads == 3
