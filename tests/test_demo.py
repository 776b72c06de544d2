"""`watchtower demo`: simulator + management API + generated config + the exporter daemon, on loopback."""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import config_from_dict
from simulator import demo
from tests.client import HTTP
from tests.conftest import free_port
from tests.test_simulator_scenarios import BAD_SCENARIOS, bad_scenario, run_limited


def args(tmp_path: Path | None, **kw: object) -> argparse.Namespace:
    base = {"scenario": "gmail-throttle", "listen": f"127.0.0.1:{free_port()}", "speed": 60.0, "dir": tmp_path,
            "duration": 1.0}
    return argparse.Namespace(**(base | kw))


def _run_demo(namespace: argparse.Namespace) -> int:
    """demo.run_demo(namespace), failing the test if it has not returned in 60 s (a hang guard: the runs here last a
    few seconds at most)."""
    result: list[int | BaseException] = []

    def run() -> None:
        try:
            result.append(demo.run_demo(namespace))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            result.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=60)
    if runner.is_alive():
        pytest.fail("watchtower demo hung: not returned in 60 s")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def test_generated_config_is_valid(tmp_path: Path) -> None:
    data = demo.demo_config(tmp_path, "127.0.0.1:9469", "http://127.0.0.1:5555")
    config = config_from_dict(data)
    assert [s.label for s in config.sources] == ["acct", "diag", "fbl", "bounce"]
    assert config.sources[0].paths == [str(tmp_path / "logs" / "acct-*.csv")]
    assert config.state_dir == tmp_path / "state" and config.tail.start_position == "beginning"
    assert config.pmta.url == "http://127.0.0.1:5555" and config.listen == "127.0.0.1:9469"


def test_demo_runs_for_its_duration_with_a_stand_in_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    started: list[Path] = []
    happened: list[str] = []

    class FakeDaemon:
        def __init__(self) -> None:
            self.should_exit = asyncio.Event()

    async def stopped(d: FakeDaemon) -> None:
        await d.should_exit.wait()
        happened.append("exporter told to exit")

    async def fake_exporter(config_path: Path) -> tuple[FakeDaemon, asyncio.Task[None]]:
        started.append(config_path)
        d = FakeDaemon()
        return d, asyncio.create_task(stopped(d))

    real_run = demo.Simulator.run

    async def run(self: demo.Simulator, speed: float, **kw: Any) -> None:
        happened.append(f"simulator runs for {kw['duration']} s")
        await real_run(self, speed, **kw)
        happened.append("simulator stopped" if kw["stop"].is_set() else "simulator ran its duration out")

    monkeypatch.setattr(demo, "serve_exporter", fake_exporter)
    monkeypatch.setattr(demo.Simulator, "run", run)
    assert _run_demo(args(tmp_path, duration=1.0)) == 0
    # it ran until the simulation's duration was out, then stopped the exporter (not the other way round)
    assert happened == ["simulator runs for 1.0 s", "simulator ran its duration out", "exporter told to exit"]
    assert started == [tmp_path / "watchtower.yaml"]
    config = yaml.safe_load(started[0].read_text())
    assert config["pmta"]["url"].startswith("http://127.0.0.1:")
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "logs").glob("*.csv")) == ["acct", "diag"]
    out = capsys.readouterr().out
    assert "/metrics" in out and "curl -s" in out and "/queues?format=json" in out and "gmail-throttle" in out
    # what a first-time user needs next (review 2026-12-04): the pages, the health check, the commands' path,
    # and how `make demo` takes --speed
    port = config["listen"].rpartition(":")[2]
    assert f"http://127.0.0.1:{port}/ui/" in out and f"http://127.0.0.1:{port}/healthz" in out
    assert f"{Path(sys.executable).parent / 'watchtower'} oneshot --config {tmp_path / 'watchtower.yaml'}" in out
    assert "make demo DEMO_ARGS='--speed 60'" in out
    # at --speed 60 the records run ahead of the clock: the replies line reads the simulated day, not the hour
    # before now (newcomer review: /api/v1/replies' default window, ending now, answered nothing); /flows has no end
    replies = next(line for line in out.splitlines() if "/api/v1/replies" in line)
    since, until = re.search(r"vmta=vmta-03&since=(\S+)&until=(\S+)'", replies).groups()
    start, end = (datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() for v in (since, until))
    assert end - start == 86_400 and abs(start - time.time()) < 60
    assert "At --speed 60 the records' times run ahead of the clock: /api/v1/replies" in out
    assert f"curl -s 'http://127.0.0.1:{port}/api/v1/flows'   #" in out


def test_the_exporter_starts_on_files_the_simulator_already_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """One simulated second wrote no record, so the daemon's first scan warned that every glob matched nothing."""
    at_start: list[list[str]] = []

    async def fake_exporter(config_path: Path) -> tuple[object, asyncio.Task[None]]:
        at_start.append(sorted(p.name.split("-")[0] for p in (tmp_path / "logs").glob("*.csv")))
        return object(), asyncio.create_task(asyncio.sleep(3600))

    monkeypatch.setattr(demo, "serve_exporter", fake_exporter)
    assert demo.run_demo(args(tmp_path, duration=0.2)) == 0
    assert at_start == [["acct", "diag"]]
    out = capsys.readouterr().out
    assert "No fbl or bounce file yet: the simulator creates one with its first such record" in out


def test_at_real_speed_no_record_is_stamped_in_the_future(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"simulated time = real time": the demo steps the simulator until the first files exist before the exporter
    starts (up to FIRST_RECORDS_WITHIN simulated seconds), and every record it wrote was that far ahead of the
    wall clock (timeLogged a minute in the future), which PMTA never writes."""
    async def fake_exporter(config_path: Path) -> tuple[object, asyncio.Task[None]]:
        return object(), asyncio.create_task(asyncio.sleep(3600))

    monkeypatch.setattr(demo, "serve_exporter", fake_exporter)
    assert demo.run_demo(args(tmp_path, speed=1.0, duration=2.5)) == 0
    now = time.time()
    logged = []
    for path in (tmp_path / "logs").glob("*.csv"):
        rows = path.read_text().splitlines()
        at = rows[0].split(",").index("timeLogged")
        logged += [datetime.strptime(r.split(",")[at], "%Y-%m-%d %H:%M:%S%z").timestamp() for r in rows[1:]]
    assert len(logged) > 20
    assert max(logged) <= now
    assert max(logged) >= now - 30  # and the simulation is current (it steps as the wall clock goes)


def test_an_internal_error_is_one_line_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    async def broken(config_path: Path) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(demo, "serve_exporter", broken)
    assert demo.run_demo(args(tmp_path)) == 1
    assert capsys.readouterr().err == "watchtower demo: RuntimeError: boom\n"


def test_unknown_scenario_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.run_demo(args(tmp_path, scenario="no-such-thing")) == 2
    assert "unknown scenario" in capsys.readouterr().err


@pytest.mark.parametrize("kind", BAD_SCENARIOS)
def test_a_bad_scenario_file_is_one_line_not_a_traceback(tmp_path: Path, kind: str) -> None:
    """Review 2026-12-05: a non-UTF-8 file ended in a UnicodeDecodeError traceback, /dev/zero filled the memory, a
    FIFO hung, an empty file or a list said `FILE: : Input should be a valid dictionary`. One line, exit 2."""
    arg, message = bad_scenario(kind, tmp_path)
    proc = run_limited("exporter", "demo", "--scenario", arg, "--duration", "1", "--dir", str(tmp_path / "d"),
                       "--listen", f"127.0.0.1:{free_port()}")
    # a FIFO nobody writes to is refused at once ("a pipe with nothing written to it"), not waited for
    assert (proc.returncode, proc.stderr) == (2, f"watchtower demo: {message}\n")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def missing(text: str) -> list[str]:
    """What a newcomer should see that is not in this exposition yet."""
    seen: dict[str, list[tuple[dict[str, str], float]]] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                seen.setdefault(s.name, []).append((s.labels, s.value))
    except ValueError:
        return ["a parsable exposition"]
    wants = {
        "gmail deliveries on vmta-01/pool-a": any(
            lb == {"vmta": "vmta-01", "vmta_pool": "pool-a", "isp": "gmail"} and v > 0
            for lb, v in seen.get("pmta_delivered_total", [])),
        "queue gauges": bool(seen.get("pmta_queue_recipients")),
        "API up": seen.get("watchtower_pmta_api_up") == [({}, 1.0)],
    }
    return [name for name, ok in wants.items() if not ok]


def test_newcomer_sees_live_metrics(tmp_path: Path) -> None:
    """End to end with the real daemon: metrics from files and from the API within seconds."""
    a = args(tmp_path, duration=15.0, speed=30.0)  # ~2 s idle here; a loaded CI machine needs more than 8
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(demo.run_demo(a)))
    thread.start()
    url = f"http://{a.listen}/metrics"
    text = ""
    deadline = time.monotonic() + 14.5
    try:
        while time.monotonic() < deadline:
            try:
                text = HTTP.get(url, timeout=1).text
            except httpx.HTTPError:
                text = ""
            if not missing(text):
                break
            time.sleep(0.25)
    finally:
        thread.join(timeout=40)
    assert missing(text) == []
    assert result == [0]
    promtool = shutil.which("promtool")
    if promtool is not None:  # Prometheus's own lint of the exposition: names, units, HELP/TYPE, label names
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert (lint.returncode, lint.stdout + lint.stderr) == (0, ""), lint.stdout + lint.stderr


def test_a_demo_whose_exporter_cannot_listen_fails_without_pointing_at_the_port(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A taken port: the exporter logs that it could not bind; the demo printed its URLs anyway (someone else's
    port) and exited 0. It exits 1, without the banner."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        assert demo.run_demo(args(tmp_path, listen=listen, duration=5.0)) == 1
    out, err = capsys.readouterr()
    assert f"http://{listen}/metrics" not in out
    assert "watchtower demo: the exporter did not start" in err


def test_a_dir_that_is_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "hostname"
    afile.write_text("pmta-01\n")
    assert demo.run_demo(args(afile)) == 2
    assert capsys.readouterr().err == f"watchtower demo: --dir {afile} is not a directory\n"


def test_a_dir_it_cannot_write_in_is_a_usage_error_in_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    """`--dir /proc/1` printed `watchtower demo: FileNotFoundError: [Errno 2] ...` and exited 1."""
    assert demo.run_demo(args(Path("/proc/1"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("watchtower demo: --dir /proc/1: cannot create directories there (") and "Error:" not in err


def test_a_demo_left_running_keeps_its_disk_use_bounded(tmp_path: Path) -> None:
    """The compose demo writes to a tmpfs (RAM) for as long as it runs: its store is capped and kept for a day,
    and the simulator deletes closed files an hour old, as PMTA's delete-after does."""
    config = config_from_dict(demo.demo_config(tmp_path, "127.0.0.1:9469", "http://127.0.0.1:5555"))
    assert config.correlator.max_db_size == 256 * 1024**2 and config.correlator.retention == 86400
    files = demo.demo_sim_config().files
    assert {f.name for f in files} == set(demo.FAMILIES)
    assert all(f.delete_after == 3600 and f.max_size == 32 * 1024**2 for f in files)


def _free_in_range() -> str:
    """A loopback port of this session's range (47500-47599) free now."""
    for port in range(47540, 47600):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"127.0.0.1:{port}"
    raise RuntimeError("no free port in 47540-47599")


def test_a_relative_dir_is_taken_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Review 2026-12: `watchtower demo --dir demo` wrote a config with relative paths, which the exporter refused
    (`state_dir: 'demo/state' is a relative path`, a file the operator never wrote), exit 1. The real exporter, a
    short run."""
    monkeypatch.chdir(tmp_path)
    listen = _free_in_range()
    assert demo.run_demo(args(Path("demo"), listen=listen, duration=0.5)) == 0, capsys.readouterr().err
    config = yaml.safe_load((tmp_path / "demo" / "watchtower.yaml").read_text())
    assert config["state_dir"] == str(tmp_path / "demo" / "state")
    assert (tmp_path / "demo" / "state" / "watchtower.db").is_file()
    out, err = capsys.readouterr()
    assert f"exporter config   {tmp_path / 'demo' / 'watchtower.yaml'}" in out and "relative path" not in err


def test_a_dir_under_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--dir '~/demo'` (quoted, or from a script): the same, from HOME."""
    seen: list[Path] = []

    async def validating(config_path: Path) -> tuple[object, asyncio.Task[None]]:
        from exporter.config import load_config

        seen.append(load_config(config_path).state_dir)  # what the exporter refused
        return object(), asyncio.create_task(asyncio.sleep(3600))

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(demo, "serve_exporter", validating)
    assert demo.run_demo(args(Path("~/demo"), duration=0.2)) == 0
    assert seen == [home / "demo" / "state"]
    assert list((home / "demo" / "logs").glob("acct-*.csv")) and not (cwd / "~").exists()  # the logs where read
