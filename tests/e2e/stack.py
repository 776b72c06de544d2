"""The real monitoring stack on loopback: Debian's prometheus and alertmanager, plus a webhook sink.

The shipped rules run unchanged except for time: every duration (range windows, offsets, `for`)
is divided by the simulator's clock factor, so ten simulated minutes of throttling are ten
minutes to the rules too. The shipped Alertmanager config keeps its routes, grouping and
inhibitions; only its receivers are pointed at the test's webhook and its waits shortened.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.client import HTTP, wait_ready
from tests.conftest import REPO, free_port

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def _seconds(text: str) -> float:
    return sum(float(n) * UNITS[u] for n, u in _DURATION.findall(text))


def _fmt(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def scale_expr(expr: str, factor: float, min_window: float) -> str:
    """Divide range windows, subquery steps and offsets in a PromQL expression by `factor`."""

    def window(m: re.Match[str]) -> str:
        parts = m.group(1).split(":")
        out = [_fmt(max(min_window, _seconds(parts[0]) / factor))]
        if len(parts) == 2:
            out.append(_fmt(max(1.0, _seconds(parts[1]) / factor)) if parts[1] else "")
        return "[" + ":".join(out) + "]"

    expr = re.sub(r"\[((?:\d+(?:ms|s|m|h|d|w|y))+(?::(?:(?:\d+(?:ms|s|m|h|d|w|y))+)?)?)\]", window, expr)
    return re.sub(r"offset\s+((?:\d+(?:ms|s|m|h|d|w|y))+)",
                  lambda m: "offset " + _fmt(_seconds(m.group(1)) / factor), expr)


def scaled_rules(dest: Path, factor: float, min_window: float = 4.0) -> list[Path]:
    """Copies of rules/recording.yaml and rules/alerts/*.yaml with time divided by `factor`."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in [REPO / "rules" / "recording.yaml", *sorted((REPO / "rules" / "alerts").glob("*.yaml"))]:
        doc = yaml.safe_load(src.read_text())
        for group in doc.get("groups", []):
            if "interval" in group:
                group["interval"] = _fmt(_seconds(group["interval"]) / factor)
            for rule in group.get("rules", []):
                rule["expr"] = scale_expr(str(rule["expr"]), factor, min_window)
                if "for" in rule:
                    rule["for"] = _fmt(_seconds(rule["for"]) / factor)
                for key, text in list(rule.get("annotations", {}).items()):  # template queries too
                    rule["annotations"][key] = scale_expr(text, factor, min_window)
        path = dest / (src.parent.name + "-" + src.name)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(path)
    return out


class Webhook:
    """Collects Alertmanager webhook payloads (JSON) in a background HTTP server."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hook.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        # a short poll: close() (server.shutdown()) waits for the serving loop's next look, 0.5 s by default
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        return [a for p in self.payloads for a in p.get("alerts", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Process:
    def __init__(self, argv: list[str], log: Path, ready_url: str) -> None:
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        wait_ready(ready_url, self.proc, log)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def alertmanager_config(webhook_url: str, factor: float) -> dict[str, Any]:
    """The shipped alertmanager.yml with every receiver delivering to the webhook, waits shortened."""
    cfg = yaml.safe_load((REPO / "alertmanager" / "alertmanager.yml").read_text())
    cfg.pop("templates", None)
    cfg["global"] = {k: v for k, v in (cfg.get("global") or {}).items() if k == "resolve_timeout"}
    for recv in cfg.get("receivers", []):
        name = recv["name"]
        recv.clear()
        recv.update({"name": name, "webhook_configs": [{"url": webhook_url, "send_resolved": False}]})

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = _fmt(_seconds(route[key]) / factor)
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    cfg["route"].update({"group_wait": "1s", "group_interval": "2s"})
    return cfg


class Stack:
    """prometheus + alertmanager scraping one Watchtower listener (and itself with `self_scrape`), rules
    scaled by `factor`."""

    def __init__(self, workdir: Path, target: str, factor: float, self_scrape: bool = False) -> None:
        if not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")):
            raise RuntimeError("Debian packages prometheus and prometheus-alertmanager are required (make setup)")
        self.dir = workdir
        self.webhook = Webhook()
        am_port, am_cluster, prom_port = free_port(), free_port(), free_port()
        am_cfg = workdir / "alertmanager.yml"
        am_cfg.write_text(yaml.safe_dump(alertmanager_config(self.webhook.url, factor)))
        self.am_url = f"http://127.0.0.1:{am_port}"
        self.alertmanager = Process(
            ["prometheus-alertmanager", f"--config.file={am_cfg}", f"--storage.path={workdir / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{am_port}", f"--cluster.listen-address=127.0.0.1:{am_cluster}"],
            workdir / "alertmanager.log", self.am_url + "/-/ready")
        rules = scaled_rules(workdir / "rules", factor)
        prom_cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rules],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "watchtower", "static_configs": [{"targets": [target]}]}],
        }
        if self_scrape:  # a foreign target, as in a shared Prometheus
            prom_cfg["scrape_configs"].append(
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]})
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
        self.prom_url = f"http://127.0.0.1:{prom_port}"
        self.prometheus = Process(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s"],
            workdir / "prometheus.log", self.prom_url + "/-/ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = HTTP.get(self.prom_url + "/api/v1/query", params={"query": expr}, timeout=10).json()
        return r["data"]["result"]  # type: ignore[no-any-return]

    def firing(self) -> list[dict[str, Any]]:
        r = HTTP.get(self.prom_url + "/api/v1/alerts", timeout=10).json()
        return [a for a in r["data"]["alerts"] if a["state"] == "firing"]

    def close(self) -> None:
        self.prometheus.stop()
        self.alertmanager.stop()
        self.webhook.close()
