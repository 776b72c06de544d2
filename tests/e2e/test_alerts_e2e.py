"""End to end with the real binaries: simulator -> watchtower run -> Prometheus -> Alertmanager -> webhook.

The simulator runs SPEED times faster than real time and the shipped rules are scaled by the same
factor, so the rules see the scenario as it would unfold. The Gmail-throttle scenario must page
with the expected labels and headline; the noise scenario must page nobody.
"""

from __future__ import annotations

import glob
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.client import HTTP
from tests.conftest import Watchtower, free_port
from tests.e2e.conftest import SPEED, Pipeline, exporter_config, release_shared_stacks, run_sim
from tests.e2e.stack import Stack

pytestmark = pytest.mark.integration

NOISE_START = "2024-06-12 07:40:00+00:00"
"""Apple's top-of-hour burst 20 simulated minutes in: the rules have seen 20 minutes of ordinary traffic when it
starts (a burst at the first minute lands before any rate window is full)."""
NOISE_MINUTES = 45
"""Through the burst (run minutes 20-25) and its 10-minute windows, then past the 15-minute `for` of every alert
on deferrals, bounces and success; the constant noise (Gmail's 452/450) holds for longer than the 30-minute `for`."""

HEADLINE = re.compile(r"^Gmail is throttling vmta-03: (?P<queued>[\d.]+)(?P<unit>k?) recipients queued, "
                      r"success rate (?P<rate>[\d.]+)%\.")


@pytest.fixture
def pipeline(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Watchtower, float]]:
    """(the stack, the daemon, the wall time the simulator's clock started)"""
    scenario, start = request.param
    release_shared_stacks()  # the shared Gmail-throttle stack's tests have run (they are ordered first)
    logs = tmp_path / "logs"
    logs.mkdir()
    api_port = free_port()
    sim_started = time.time()
    sim = run_sim(scenario, logs, api_port, start=start)
    wt = stack = None
    try:
        wt = Watchtower(exporter_config(tmp_path, logs, api_port)).start()
        stack = Stack(tmp_path, wt.listen, SPEED)
        yield stack, wt, sim_started
    finally:
        if stack is not None:
            stack.close()
        if wt is not None and wt.proc is not None:
            wt.stop()
        sim.terminate()
        sim.wait(timeout=20)


def test_gmail_throttle_pages_with_the_headline(gmail_throttle: Pipeline, tmp_path: Path):
    stack = gmail_throttle.stack
    alert = gmail_throttle.critical
    assert alert is not None
    (tmp_path / "webhook-payload.json").write_text(json.dumps(stack.webhook.payloads, indent=2))
    print(json.dumps(next(p for p in stack.webhook.payloads if alert in p["alerts"]), indent=2))
    labels = alert["labels"]
    # one alert per VMTA x ISP (over all its pools, or any one pool on its own): no vmta_pool label
    assert {k: labels.get(k) for k in ("alertname", "severity", "job", "vmta", "isp")} == {
        "alertname": "PmtaIspThrottling", "severity": "critical", "job": "watchtower", "vmta": "vmta-03", "isp": "gmail"}
    assert labels["instance"] and "vmta_pool" not in labels
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


@pytest.mark.parametrize("pipeline", [("noise", NOISE_START)], ids=["noise"], indirect=True)
def test_noise_pages_nobody(pipeline: tuple[Stack, Watchtower, float]):
    stack, wt, sim_started = pipeline
    deadline = sim_started + NOISE_MINUTES * 60 / SPEED  # the simulator's clock: the stack may take long to start
    while time.time() < deadline:
        time.sleep(1)
    evaluated = stack.query("count(vmta_isp:pmta_deferred_by_class:ratio_rate10m)")
    assert evaluated and float(evaluated[0]["value"][1]) > 0  # the rules did see the traffic
    noise = stack.query('sum(rate(pmta_deferred_total{class=~"mailbox_full|recipient_rate"}[1m]))')
    assert noise and float(noise[0]["value"][1]) > 0  # and the noise classes were present
    since = int(time.time() - sim_started) - 15  # from 15 run minutes on, whenever the stack came up: the burst
    burst = stack.query(f'sum(increase(pmta_deferred_total{{isp="apple", class="transient_remote"}}[{since}s]))')
    assert burst and float(burst[0]["value"][1]) > 10  # Apple's burst (~50 in its 5 minutes; a handful otherwise)
    # a source the scenario writes no file for (no complaint, no remote bounce: the simulator starts a file with its
    # first record) is what WatchtowerNoFilesMatched waits an hour on, pending; nothing else may even be pending
    unmatched = {source["name"] for source in yaml.safe_load(wt.config.read_text())["sources"]
                 if not any(glob.glob(pattern) for pattern in source["paths"])}
    pending = [a["labels"] for a in httpx_alerts(stack) if a["labels"].get("severity") in ("warning", "critical")
               and not (a["labels"]["alertname"] == "WatchtowerNoFilesMatched" and a["state"] == "pending"
                        and a["labels"].get("source") in unmatched)]
    assert pending == []
    assert [a["labels"] for a in stack.webhook.alerts()] == []


def httpx_alerts(stack: Stack) -> list[dict]:

    return HTTP.get(stack.prom_url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
