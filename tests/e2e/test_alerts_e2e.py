"""End to end with the real binaries: simulator -> watchtower run -> Prometheus -> Alertmanager -> webhook.

The simulator runs SPEED times faster than real time and the shipped rules are scaled by the same
factor, so the rules see the scenario as it would unfold. The Gmail-throttle scenario must page
with the expected labels and headline; the noise scenario must page nobody.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, Watchtower, free_port
from tests.e2e.stack import Stack

pytestmark = pytest.mark.integration

SPEED = 60.0
HEADLINE = re.compile(r"^Gmail is throttling vmta-03: (?P<queued>[\d.]+)(?P<unit>k?) recipients queued, "
                      r"success rate (?P<rate>[\d.]+)%\.")


def _run_sim(scenario: str, out: Path, api_port: int) -> subprocess.Popen[bytes]:
    log = open(out.parent / "sim.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "run", "--scenario", scenario, "--out", str(out),
         "--speed", str(SPEED), "--api", f"127.0.0.1:{api_port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def _exporter_config(tmp: Path, logs: Path, api_port: int) -> Path:
    cfg = {
        "sources": [
            {"name": "acct", "paths": [str(logs / "acct-*.csv")], "records": ["d", "b"]},
            {"name": "diag", "paths": [str(logs / "diag-*.csv")], "records": ["t", "tq"]},
            {"name": "fbl", "paths": [str(logs / "fbl-*.csv")], "records": ["f"]},
            {"name": "bounce", "paths": [str(logs / "bounce-*.csv")], "records": ["rb", "rs"]},
        ],
        "state_dir": str(tmp / "state"),
        "listen": f"127.0.0.1:{free_port()}",
        "tail": {"start_position": "beginning", "poll_interval": 0.2, "rescan_interval": 0.5},
        "pmta": {"url": f"http://127.0.0.1:{api_port}", "poll_interval": 1, "timeout": 2},
        "correlator": {"enabled": False},
    }
    path = tmp / "watchtower.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def pipeline(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Watchtower]]:
    scenario = request.param
    logs = tmp_path / "logs"
    logs.mkdir()
    api_port = free_port()
    sim = _run_sim(scenario, logs, api_port)
    wt = stack = None
    try:
        wt = Watchtower(_exporter_config(tmp_path, logs, api_port)).start()
        stack = Stack(tmp_path, wt.listen, SPEED)
        yield stack, wt
    finally:
        if stack is not None:
            stack.close()
        if wt is not None and wt.proc is not None:
            wt.stop()
        sim.terminate()
        sim.wait(timeout=20)


def _wait(stack: Stack, predicate, timeout: float) -> list[dict]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [a for a in stack.webhook.alerts() if predicate(a)]
        if hits:
            return hits
        time.sleep(0.5)
    firing = [(a["labels"].get("alertname"), a["labels"].get("vmta"), a["labels"].get("isp")) for a in stack.firing()]
    raise AssertionError(f"no matching alert in {timeout}s; firing in Prometheus: {firing}; "
                         f"webhook got {len(stack.webhook.alerts())} alerts")


@pytest.mark.parametrize("pipeline", ["gmail-throttle"], indirect=True)
def test_gmail_throttle_pages_with_the_headline(pipeline: tuple[Stack, Watchtower], tmp_path: Path):
    stack, _ = pipeline

    def critical_throttle(a: dict) -> bool:
        lab = a["labels"]
        return (lab.get("alertname") == "PmtaIspThrottling" and lab.get("severity") == "critical"
                and lab.get("vmta") == "vmta-03" and lab.get("isp") == "gmail")

    alert = _wait(stack, critical_throttle, timeout=240)[0]
    (tmp_path / "webhook-payload.json").write_text(json.dumps(stack.webhook.payloads, indent=2))
    print(json.dumps(next(p for p in stack.webhook.payloads if alert in p["alerts"]), indent=2))
    labels = alert["labels"]
    assert labels["vmta_pool"] and labels["instance"] and labels["job"] == "watchtower"
    m = HEADLINE.match(alert["annotations"]["description"])
    assert m, alert["annotations"]["description"]
    queued = float(m["queued"]) * (1000 if m["unit"] else 1)
    assert queued > 10_000  # the critical variant: the queue gauge joined in
    assert 0 < float(m["rate"]) < 70  # 80 % of attempts are throttled at the provider
    assert alert["annotations"]["runbook_url"].endswith("#pmtaispthrottling")
    assert "var-vmta=vmta-03" in alert["annotations"]["dashboard_url"]
    others = [a["labels"] for a in stack.webhook.alerts()
              if a["labels"].get("alertname") == "PmtaIspThrottling" and a["labels"].get("vmta") != "vmta-03"]
    assert others == []  # only the throttled VMTA pages


@pytest.mark.parametrize("pipeline", ["noise"], indirect=True)
def test_noise_pages_nobody(pipeline: tuple[Stack, Watchtower]):
    stack, wt = pipeline
    # 75 simulated minutes: past every `for` and window, through one of Apple's top-of-hour bursts.
    deadline = time.monotonic() + 75 * 60 / SPEED
    while time.monotonic() < deadline:
        time.sleep(1)
    evaluated = stack.query("count(vmta_isp:pmta_deferred_by_class:ratio_rate10m)")
    assert evaluated and float(evaluated[0]["value"][1]) > 0  # the rules did see the traffic
    noise = stack.query('sum(rate(pmta_deferred_total{class=~"mailbox_full|recipient_rate"}[1m]))')
    assert noise and float(noise[0]["value"][1]) > 0  # and the noise classes were present
    pending = [a["labels"] for a in httpx_alerts(stack) if a["labels"].get("severity") in ("warning", "critical")]
    assert pending == []
    assert [a["labels"] for a in stack.webhook.alerts()] == []


def httpx_alerts(stack: Stack) -> list[dict]:
    import httpx

    return httpx.get(stack.prom_url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
