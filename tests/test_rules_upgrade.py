"""The rules loaded into a Prometheus that already holds hours of PMTA's gauges: a page the rules they replace
would have kept up goes on (review 2026-12-07). The critical PmtaDeliveryStalled reads the host's queue through a
recording rule (one value per host, whatever pods served it), which has no history when the rules are first loaded;
a PMTA that died before the upgrade, its queue reported only before, must still page: the raw gauges stand in for
the recorded queue until it has a sample in its 6h window. A real Prometheus, its storage backfilled with
`promtool tsdb create-blocks-from openmetrics`, answers the alert's own expression."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.client import HTTP, wait_ready
from tests.conftest import REPO, free_port

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")


def critical_stall_expr() -> str:
    groups = yaml.safe_load((REPO / "rules" / "alerts" / "queue.yaml").read_text())["groups"]
    [rule] = [r for g in groups for r in g["rules"]
              if r.get("alert") == "PmtaDeliveryStalled" and r["labels"]["severity"] == "critical"]
    return rule["expr"]


def history(now: int) -> str:
    """pmta-60: 5k queued as PMTA reported from 2h ago until 90m ago, when it died (its API answers no more);
    nothing delivered since; its Watchtower scraped throughout. pmta-61: the same queue, still reported, and
    delivering (no page)."""
    out = []
    for family, kind in (("pmta_status_queue_recipients", "gauge"), ("pmta_delivered", "counter"), ("up", "gauge")):
        out.append(f"# TYPE {family} {kind}")
        for host in ("pmta-60:9469", "pmta-61:9469"):
            for t in range(now - 7200, now - 30, 60):
                if family == "pmta_status_queue_recipients":
                    if host == "pmta-60:9469" and t > now - 5400:
                        continue
                    out.append(f'{family}{{job="watchtower",instance="{host}",type="smtp"}} 5000 {t}')
                elif family == "pmta_delivered":
                    n = 900 if host == "pmta-60:9469" else 900 + (t - now + 7200)
                    out.append(f'pmta_delivered_total{{job="watchtower",instance="{host}",vmta="v1",vmta_pool="p1",'
                               f'isp="gmail"}} {n} {t}')
                else:
                    out.append(f'up{{job="watchtower",instance="{host}"}} 1 {t}')
    return "\n".join(out) + "\n# EOF\n"


@pytest.mark.integration
@pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                    reason="prometheus/promtool are not on PATH (Debian/Ubuntu: `apt-get install prometheus`)")
def test_a_page_under_way_goes_on_when_the_rules_are_first_loaded(tmp_path: Path):
    now = int(time.time())
    (tmp_path / "history.om").write_text(history(now))
    data = tmp_path / "data"
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "history.om"), str(data)],
                   check=True, capture_output=True, timeout=120)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"evaluation_interval": "10s"},
        "rule_files": [str(REPO / "rules" / "recording.yaml"), str(REPO / "rules" / "alerts" / "queue.yaml")]}))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/-/ready", proc, tmp_path / "prometheus.log")
        at = {"time": str(now)}
        recorded = HTTP.get(f"{url}/api/v1/query", params={
            "query": "last_over_time(instance:pmta_status_queue_recipients_at_queue_report:sum[6h])", **at}).json()
        assert recorded["data"]["result"] == []  # no history of the recording rule: what the stand-in is for
        answer = HTTP.get(f"{url}/api/v1/query", params={"query": critical_stall_expr(), **at}).json()
        assert answer["status"] == "success", answer
        assert [(r["metric"], r["value"][1]) for r in answer["data"]["result"]] == [
            ({"job": "watchtower", "instance": "pmta-60:9469"}, "5000")]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
