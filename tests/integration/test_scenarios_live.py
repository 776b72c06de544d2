"""`watchtower run` follows the simulator's scenarios live, faster than real time.

Under gmail-throttle the throttled VMTA's Gmail queue (from PMTA's management API) climbs past 40k
while the throttle lasts and drains back to its baseline afterwards, and only that VMTA collects
`throttled` deferrals. Under noise, deferrals move only the noise classes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, Watchtower, free_port, total

pytestmark = pytest.mark.integration

SPEED = 240.0


def start(tmp: Path, scenario: str, at: str | None = None) -> tuple[subprocess.Popen[bytes], Watchtower]:
    """The simulator (from simulated time `at`, else the scenario's start) and a daemon following it."""
    logs = tmp / "logs"
    logs.mkdir()
    api = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "run", "--scenario", scenario, "--out", str(logs),
         "--speed", str(SPEED), "--api", f"127.0.0.1:{api}", *(["--start", at] if at else [])],
        stdout=open(tmp / "sim.log", "ab"), stderr=subprocess.STDOUT, cwd=REPO)  # noqa: SIM115
    cfg = {
        "sources": [{"name": "acct", "paths": [str(logs / "acct-*.csv")], "records": ["d", "b"]},
                    {"name": "diag", "paths": [str(logs / "diag-*.csv")], "records": ["t", "tq"]}],
        "state_dir": str(tmp / "state"), "listen": f"127.0.0.1:{free_port()}",
        "tail": {"start_position": "beginning", "poll_interval": 0.2, "rescan_interval": 0.5},
        "pmta": {"url": f"http://127.0.0.1:{api}", "poll_interval": 0.5, "timeout": 2},
        "correlator": {"enabled": False},
    }
    (tmp / "w.yml").write_text(yaml.safe_dump(cfg))
    return sim, Watchtower(tmp / "w.yml").start()


def stop(sim: subprocess.Popen[bytes], wt: Watchtower) -> None:
    if wt.proc is not None:
        wt.stop()
    sim.terminate()
    sim.wait(timeout=20)


def queue(samples: dict, vmta: str) -> float:
    return total(samples, "pmta_queue_recipients", vmta=vmta, isp="gmail")


def test_throttled_queue_climbs_past_40k_then_drains(tmp_path: Path):
    sim, wt = start(tmp_path, "gmail-throttle")
    try:
        samples = wt.wait_for(lambda s: queue(s, "vmta-03") > 40_000, timeout=120)
        assert total(samples, "pmta_queue_backoff", vmta="vmta-03", isp="gmail") >= 1  # gmail.com, googlemail.com
        assert total(samples, "watchtower_pmta_api_up") == 1
        throttled = {dict(k)["vmta"]: v for (n, k), v in samples.items()
                     if n == "pmta_deferred_total" and dict(k).get("class") == "throttled"
                     and dict(k).get("isp") == "gmail" and v}
        assert set(throttled) == {"vmta-03"}  # only the throttled VMTA, at Gmail
        peak = queue(samples, "vmta-03")
        baseline = max(queue(samples, v) for v in ("vmta-01", "vmta-02", "vmta-04"))
        after = wt.wait_for(lambda s: queue(s, "vmta-03") < max(1000.0, 3 * baseline), timeout=180)
        assert queue(after, "vmta-03") < peak / 10
        assert total(after, "pmta_queue_backoff", vmta="vmta-03", isp="gmail") == 0
        assert total(after, "pmta_delivered_total", vmta="vmta-03", isp="gmail") > 40_000  # it drained by delivering
    finally:
        stop(sim, wt)


def test_noise_moves_only_the_noise_classes(tmp_path: Path):
    sim, wt = start(tmp_path, "noise", at="2024-06-12 07:55:00+00:00")
    try:
        # 25 simulated minutes: 5 of ordinary traffic, Apple's top-of-hour burst, 15 more
        time.sleep(25 * 60 / SPEED)
        samples = wt.settle()

        def classes(isp: str) -> set[str]:
            return {dict(k)["class"] for (n, k), v in samples.items()
                    if n == "pmta_deferred_total" and dict(k)["isp"] == isp and v}

        # The noise scenario adds only these on top of baseline traffic: Gmail storage and per-recipient
        # rate replies, Apple's top-of-hour busy replies. Nothing sender-level at those providers.
        assert {"mailbox_full", "recipient_rate"} <= classes("gmail") <= {"mailbox_full", "recipient_rate",
                                                                          "transient_remote"}
        assert "transient_remote" in classes("apple") <= {"transient_remote", "recipient_rate"}
        for (name, labels), deferred in samples.items():
            if name != "pmta_deferred_total" or dict(labels)["class"] not in ("throttled", "reputation"):
                continue
            lab = dict(labels)
            attempts = sum(total(samples, m, vmta=lab["vmta"], isp=lab["isp"])
                           for m in ("pmta_delivered_total", "pmta_bounced_total", "pmta_deferred_total"))
            assert deferred / attempts < 0.30, lab  # far from the throttling alert's threshold
    finally:
        stop(sim, wt)


def test_files_pmta_moves_away_under_a_running_daemon_are_counted_once(tmp_path: Path):
    """PMTA's `move-to` (the simulator's `move_to`): every 2 simulated minutes the current file is closed and moved to
    archive/ while the daemon follows it. What the daemon counts equals a oneshot over both directories: no record
    of a moved file lost (read to its end where it went) or counted twice."""
    logs = tmp_path / "logs"
    logs.mkdir()
    sim_cfg = tmp_path / "sim.yml"
    sim_cfg.write_text(yaml.safe_dump({"files": [
        {"name": "acct", "records": ["d", "b"], "move_to": "archive", "move_interval": "2m"},
        {"name": "diag", "records": ["t", "tq"], "move_to": "archive", "move_interval": "2m"}]}))
    cfg = {
        "sources": [{"name": n, "paths": [str(logs / f"{n}-*.csv")], "moved_to": [str(logs / "archive" / f"{n}-*.csv")]}
                    for n in ("acct", "diag")],
        "state_dir": str(tmp_path / "state"), "listen": f"127.0.0.1:{free_port()}",
        "tail": {"start_position": "beginning", "poll_interval": 0.2, "rescan_interval": 0.5},
        "correlator": {"enabled": False},
    }
    (tmp_path / "w.yml").write_text(yaml.safe_dump(cfg))
    wt = Watchtower(tmp_path / "w.yml").start()
    try:
        subprocess.run([sys.executable, "-m", "simulator.cli", "run", "--out", str(logs), "--config", str(sim_cfg),
                        "--speed", "240", "--duration", "8", "--api", f"127.0.0.1:{free_port()}"],
                       stdout=open(tmp_path / "sim.log", "ab"), stderr=subprocess.STDOUT, cwd=REPO,  # noqa: SIM115
                       timeout=120, check=True)
        moved = sorted((logs / "archive").glob("acct-*.csv"))
        assert len(moved) >= 5, moved  # 32 simulated minutes: about 16 moves
        oneshot = subprocess.run([sys.executable, "-m", "exporter", "oneshot", "--config", str(tmp_path / "w.yml")],
                                 capture_output=True, text=True, cwd=REPO, timeout=120)
        assert oneshot.returncode == 0, oneshot.stderr
        from prometheus_client.parser import text_string_to_metric_families

        want = {family: sum(s.value for fam in text_string_to_metric_families(oneshot.stdout) for s in fam.samples
                            if s.name == family)
                for family in ("pmta_delivered_total", "pmta_bounced_total", "pmta_deferred_total")}
        assert want["pmta_delivered_total"] > 1000
        deadline = time.monotonic() + 60
        while {f: total(wt.scrape(), f) for f in want} != want:
            assert time.monotonic() < deadline, ({f: total(wt.scrape(), f) for f in want}, want)
            time.sleep(0.5)
    finally:
        if wt.proc is not None:
            wt.stop()
    assert "Traceback" not in wt.log.read_text()
