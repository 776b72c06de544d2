"""A hub's file_sd lists as an operator may get them wrong: a target no request can reach (a port past 65535, an
unexpanded `${PORT}`) is refused when the list is read, naming the file, the group and the target, as `hub.targets`
names a static one; a file that is no file (a FIFO nobody writes to, /dev/zero) is refused in bounded time and
memory. At start each is an exit 2 naming `hub.file_sd.N`; later a warning logged once, the file's last good list
kept, every route answering from the others."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.config import HubConfig
from hub.targets import Target, TargetSet
from tests.conftest import REPO
from tests.hub.fakes import EMPTY_SEARCH, FakeHosts, Reply, running_hub, startup_problems

GIVE = "give a Prometheus file_sd file (JSON or YAML)"
MAX_FILE_SD_BYTES = 4 * 1024**2
TOO_BIG = "a file_sd target list is at most 4MiB (is this the right file?)"


def _config(tmp_path: Path, hub: dict[str, Any]) -> Path:
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": hub}))
    return cfg


@pytest.mark.parametrize(("target", "why"), [
    ("127.0.0.1:99999", "the port must be a number from 1 to 65535, got '99999'"),
    ("[::1]:99999", "the port must be a number from 1 to 65535, got '99999'"),
    ("127.0.0.1:0", "the port must be a number from 1 to 65535, got '0'"),
    ("pmta-2:${PORT}", "the port must be a number from 1 to 65535, got '${PORT}'"),
    ("h h:1", "'h h' is not a host name or IP address"),
    ("[::1x]:1", "its host part is not a host name or IP address"),
], ids=["port-99999", "ipv6-port-99999", "port-0", "template", "space", "bad-ipv6"])
def test_a_file_sd_target_no_request_can_reach_is_refused_at_start_naming_file_group_and_target(
        tmp_path: Path, target: str, why: str):
    """`127.0.0.1:99999` was accepted: then every route answered 500 (OverflowError in the socket layer)."""
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["pmta-1:9469"]}, {"targets": ["pmta-0:9469", target]}]))
    assert startup_problems(_config(tmp_path, {"file_sd": [str(sd)]})) == [
        f"hub.file_sd.0: {sd}: group 1: target {target!r}: {why}"]


@pytest.mark.parametrize("target", ["http://pmta-1:9469", "pmta-1:9469/metrics", "pmta-1:9469?x=1", ""])
def test_a_file_sd_target_that_is_no_host_port_is_refused_at_start(tmp_path: Path, target: str):
    sd = tmp_path / "sd.yml"
    sd.write_text(yaml.safe_dump([{"targets": [target]}]))
    assert startup_problems(_config(tmp_path, {"file_sd": [str(sd)]})) == [
        f"hub.file_sd.0: {sd}: group 0: target {target!r} is not a host:port (no scheme, path or query: hub.scheme "
        "gives the scheme)"]


@pytest.mark.parametrize("target", ["pmta-1.example.net:9469", "[::1]:9469", "10.0.0.1", "b\u00fccher.example:9469",
                                    "pmta_2:9469", "127.0.0.1:65535"])
def test_usable_file_sd_targets_are_accepted(tmp_path: Path, target: str):
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": [target]}]))
    assert startup_problems(_config(tmp_path, {"file_sd": [str(sd)]})) == []


async def test_a_target_no_request_can_reach_added_later_is_logged_once_and_the_last_list_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """The list is read on a request: the new bad entry is a warning, once, and the file's last good list stays (as
    for a target with a password): no 500, and the healthy daemon's data stays in every answer."""
    caplog.set_level(logging.INFO, logger="hub.targets")
    sd = tmp_path / "sd.json"
    async with FakeHosts(lambda req: Reply(body=EMPTY_SEARCH)) as daemon:
        good = f"127.0.0.1:{daemon.port}"
        sd.write_text(json.dumps([{"targets": [good]}]))
        async with running_hub({"file_sd": [str(sd)], "refresh_interval": 0.05}) as hub:
            first = await hub.get("/api/v1/search")
            sd.write_text(json.dumps([{"targets": ["127.0.0.1:99999", good, "[::1]:99999"]}]))
            later = []
            for _ in range(3):
                await asyncio.sleep(0.1)  # past refresh_interval
                later.append(await hub.get("/api/v1/search"))
            page = await hub.get("/ui/")
    assert (first.status_code, first.json()["hosts"]) == (200, [good])
    assert [(r.status_code, r.json()["hosts"], r.json()["partial"]) for r in later] == [(200, [good], False)] * 3
    assert page.status_code == 200
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from {sd} (keeping the last list): {sd}: group 0: target '127.0.0.1:99999': the port "
        "must be a number from 1 to 65535, got '99999'"]


# --- a file that is no file: bounded in time and memory --------------------------------------------------------------


def _address_space_1gib() -> None:
    """A hub that read /dev/zero whole ran out of memory under this (MemoryError), without it took all the machine's."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_file_sd_that_is_a_fifo_or_dev_zero_exits_2_naming_it(tmp_path: Path, kind: str):
    """A FIFO nobody writes to hung the hub at start, with no output; /dev/zero grew its memory without limit."""
    if kind == "fifo":
        sd = tmp_path / "sd.json"
        os.mkfifo(sd)
        why = f"{sd}: a pipe with nothing written to it; {GIVE}"
    else:
        sd, why = Path("/dev/zero"), f"/dev/zero: more than 4MiB; {TOO_BIG}"
    cfg = _config(tmp_path, {"file_sd": [str(sd)]})
    try:
        done = subprocess.run([sys.executable, "-m", "exporter", "hub", "--config", str(cfg)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False,
                              preexec_fn=_address_space_1gib)
    except subprocess.TimeoutExpired:  # a hang guard: refused at once, as the message says
        pytest.fail(f"the hub given {sd} hung at start: not ended in 60 s")
    assert (done.returncode, done.stdout) == (2, f"{cfg}: invalid configuration\n  hub.file_sd.0: {why}\n")


def test_a_file_sd_that_is_a_directory_or_too_big_is_named_at_start(tmp_path: Path):
    big = tmp_path / "big.json"
    big.write_text("[" + " " * MAX_FILE_SD_BYTES + "]")
    folder = tmp_path / "sd.d"
    folder.mkdir()
    assert startup_problems(_config(tmp_path, {"file_sd": [str(big), str(folder)]})) == [
        f"hub.file_sd.0: {big}: {MAX_FILE_SD_BYTES + 2} bytes; {TOO_BIG}",
        f"hub.file_sd.1: {folder}: not a regular file (a directory); {GIVE}"]


def test_a_file_sd_that_is_not_utf8_names_its_line(tmp_path: Path):
    sd = tmp_path / "sd.yml"
    sd.write_bytes(b"- targets:\n  - pmta-1:9469 # caf\xe9\n")
    assert startup_problems(_config(tmp_path, {"file_sd": [str(sd)]})) == [
        f"hub.file_sd.0: {sd}: line 2: not UTF-8 (byte 0xe9 at offset 32); save the file as UTF-8"]


def _targets(sd: Path, timeout: float = 2.0) -> TargetSet:
    """A TargetSet that re-reads `sd` on every call (its clock jumps past refresh_interval each time)."""
    section = HubConfig.model_validate({"hub": {"file_sd": [str(sd)], "timeout": timeout}}).hub
    ticks = itertools.count(0, 1000)
    return TargetSet(section, clock=lambda: float(next(ticks)))


GOOD = [Target("pmta-1:9469", "http://pmta-1:9469")]


async def test_a_file_sd_that_turns_into_a_fifo_or_dev_zero_keeps_its_last_list(tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture):
    """Re-read on a request: each problem is one warning (once while it lasts), the last good list stays."""
    caplog.set_level(logging.INFO, logger="hub.targets")
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["pmta-1:9469"]}]))
    targets = _targets(sd)
    assert await targets.current() == GOOD
    sd.unlink()
    os.mkfifo(sd)
    assert [await targets.current() for _ in range(2)] == [GOOD, GOOD]
    sd.unlink()
    sd.symlink_to("/dev/zero")
    assert [await targets.current() for _ in range(2)] == [GOOD, GOOD]
    sd.unlink()
    sd.write_text(json.dumps([{"targets": ["pmta-2:9469"]}]))
    assert await targets.current() == [Target("pmta-2:9469", "http://pmta-2:9469")]
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from {sd} (keeping the last list): {sd}: a pipe with nothing written to it; {GIVE}",
        f"cannot read targets from {sd} (keeping the last list): {sd}: more than 4MiB; {TOO_BIG}",
        f"targets from {sd} readable again"]


async def test_a_fifo_whose_writer_never_writes_holds_a_refresh_for_hub_timeout_and_never_the_event_loop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """The refresh runs on a request: it waits at most hub.timeout for the pipe, and other requests go on meanwhile."""
    caplog.set_level(logging.WARNING, logger="hub.targets")
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["pmta-1:9469"]}]))
    targets = _targets(sd, timeout=1.0)
    assert await targets.current() == GOOD
    sd.unlink()
    os.mkfifo(sd)
    writer = os.open(sd, os.O_RDWR | os.O_NONBLOCK)  # a writer that holds the pipe open and writes nothing
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        try:  # a hang guard only: the pipe is waited for hub.timeout (1 s), as the warning says
            assert await asyncio.wait_for(targets.current(), 60) == GOOD
        except TimeoutError:
            pytest.fail("the refresh hung on the FIFO: no targets after 60 s")
    finally:
        ticker.cancel()
        os.close(writer)
    assert ticks >= 5  # the event loop went on while the pipe was waited for
    # it waited for the pipe hub.timeout (1 s), not PIPE_TIMEOUT, and gave up
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read targets from {sd} (keeping the last list): {sd}: nothing more was written to the pipe within "
        f"1s; {GIVE}"]


async def test_requests_during_the_first_refresh_wait_for_its_targets(tmp_path: Path) -> None:
    """The first request set the list fresh, then read file_sd (on a thread) and asked Prometheus: requests arriving
    meanwhile found it fresh and answered from no discovered target at all (a dashboard's burst of panels: 503 "no
    targets", or answers leaving the file_sd hosts out without naming them missing). They wait for that refresh."""
    sd = tmp_path / "sd.json"
    sd.write_text(json.dumps([{"targets": ["pmta-1:9469", "pmta-2:9469"]}]))
    targets = TargetSet(HubConfig.model_validate({"hub": {"file_sd": [str(sd)]}}).hub)
    found = await asyncio.gather(*(targets.current() for _ in range(3)))
    assert [len(f) for f in found] == [2, 2, 2]
