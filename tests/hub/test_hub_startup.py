"""`watchtower hub` starting as the daemon starts, for the same `listen` and `web` settings: the same warnings of an
exposed listener and a plain-text password, a `listen` it cannot use named by its key (exit 2 when the host does not
resolve, exit 1 when the address is taken, one line, no uvicorn error), an empty section taking the defaults; and
no empty `/metrics` for a Prometheus pointed at the hub by mistake."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hub.config import HubConfig, load_hub_config
from tests.conftest import REPO, free_port
from tests.hub.fakes import startup_problems

TARGETS = {"targets": ["http://127.0.0.1:1"]}


def _config(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "hub.yml"
    cfg.write_text(text)
    return cfg


def _hub(cfg: Path) -> subprocess.CompletedProcess[str]:
    """`watchtower hub` on a config it cannot serve with: its exit code and everything it wrote."""
    return subprocess.run([sys.executable, "-m", "exporter", "hub", "--config", str(cfg)], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False)


def _lines(text: str) -> list[str]:
    """Log lines without their timestamp (`2026-01-01 00:00:00,000 LEVEL logger: message`)."""
    return [line.split(" ", 2)[2] if line[:2] == "20" else line for line in text.splitlines()]


def test_an_exposed_hub_warns_of_its_listener_and_a_plain_text_password_as_the_daemon_does(tmp_path: Path):
    """The hub holds the daemons' credentials and serves every host's recipients, yet bound 0.0.0.0 without TLS,
    with a plain-text password, it logged INFO lines only."""
    port = free_port()
    cfg = _config(tmp_path, yaml.safe_dump({"listen": f"0.0.0.0:{port}", "hub": TARGETS,
                                            "web": {"basic_auth_users": {"u": "plainpw"}}}))
    cfg.chmod(0o600)  # (a world-readable one holding the password is warned of too: tests/test_secret_file_modes.py)
    log = tmp_path / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "hub", "--config", str(cfg)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "hub listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
    assert rc == 0, log.read_text()
    warnings = [line for line in _lines(log.read_text()) if line.startswith("WARNING")]
    assert warnings == [
        "WARNING hub.app: web.basic_auth_users.u: plain-text password; store a bcrypt hash instead",
        f"WARNING hub.app: listening on 0.0.0.0:{port} (not loopback) without TLS: passwords, and every host's stored "
        "recipients through /api/v1, cross the network in clear text. Set web.tls_cert_file/tls_key_file, or bind "
        "127.0.0.1 behind a reverse proxy with TLS (docs/security.md).",
    ], log.read_text()


def test_a_loopback_hub_without_users_warns_of_nothing():
    from hub.app import startup_warnings

    assert startup_warnings(HubConfig.model_validate({"hub": TARGETS})) == []


def test_a_listen_host_that_does_not_resolve_exits_2_naming_the_key(tmp_path: Path):
    """It logged uvicorn's `[Errno -2] Name or service not known`, then `could not listen ... (exit 3)`, and exited 1."""
    cfg = _config(tmp_path, yaml.safe_dump({"listen": "nohost.invalid:19478", "hub": TARGETS}))
    done = _hub(cfg)
    assert done.returncode == 2, done.stdout
    first, problem, *rest = done.stdout.splitlines()
    assert first == f"{cfg}: invalid configuration" and rest == [], done.stdout
    assert problem.startswith("  listen: host 'nohost.invalid' does not resolve ("), done.stdout
    assert [p.split(" (")[0] for p in startup_problems(cfg)] == ["listen: host 'nohost.invalid' does not resolve"]


def test_a_listen_address_in_use_is_one_line_naming_it_and_exit_1(tmp_path: Path):
    """As the daemon: `listener could not bind HOST:PORT: address already in use`, not uvicorn's error and a line
    saying `exit 3` from a process that exits 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        done = _hub(_config(tmp_path, yaml.safe_dump({"listen": listen, "hub": TARGETS})))
    assert done.returncode == 1, done.stdout
    assert [line for line in _lines(done.stdout) if not line.startswith("INFO")] == [
        f"ERROR hub.app: listener could not bind {listen}: address already in use (listen: {listen})"], done.stdout


async def test_an_address_taken_after_the_probe_logs_the_exit_code_the_hub_exits_with(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """uvicorn ends with its own code (3) when it cannot bind; the hub exits 1, and its line says so."""
    from hub import app

    monkeypatch.setattr(app, "bind_problem", lambda config: None)  # taken between the probe and uvicorn's bind
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with caplog.at_level(logging.INFO):
            assert await app.serve(HubConfig.model_validate({"listen": listen, "hub": TARGETS})) == 1
    assert [r.getMessage() for r in caplog.records if r.name == "hub.app"] == [
        f"watchtower hub could not listen on {listen} (see the error above; exit 1)"]


@pytest.mark.parametrize("empty", ["web:\n", "pages:\n", "web:\npages:\n"])
def test_an_empty_section_takes_the_defaults_as_on_the_daemon(tmp_path: Path, empty: str):
    """A bare `web:` (its keys commented out) was `web: expected a section (a mapping of keys), got None`."""
    config = load_hub_config(_config(tmp_path, yaml.safe_dump({"hub": TARGETS}) + empty))
    assert config == HubConfig.model_validate({"hub": TARGETS})
    assert config.web.api_max_concurrency == 16  # the hub's default, not the daemon's 2


def test_an_empty_hub_section_names_what_it_needs(tmp_path: Path):
    assert startup_problems(_config(tmp_path, "hub:\n")) == ["hub: give at least one of targets, file_sd, prometheus"]


NO_METRICS = {"error": "the hub has no metrics: let Prometheus scrape each daemon's /metrics (docs/scaling.md)",
              "parameter": None, "status": 404}


@pytest.mark.parametrize("top", [{}, {"web": {"basic_auth_users": {"op": "pw"}}}])
async def test_the_hubs_metrics_is_a_404_saying_to_scrape_the_daemons(top: dict[str, Any]):
    """It answered 200 with an empty body: a Prometheus pointed at the hub by mistake scraped nothing, without error."""
    from hub.app import build_hub_app

    app, hub = build_hub_app(HubConfig.model_validate({"hub": TARGETS, **top}))
    auth = ("op", "pw") if top else None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            if top:
                assert (await client.get("/metrics")).status_code == 401
            got = await client.get("/metrics", auth=auth)
            assert (got.status_code, got.json()) == (404, NO_METRICS)
            head = await client.head("/metrics", auth=auth)
            assert (head.status_code, head.content) == (404, b"")
            index = await client.get("/", auth=auth)
            assert index.status_code == 200 and "/metrics" not in index.text.replace("no /metrics", "")
            assert "/api/v1/" in index.text and "/ui/" in index.text
            assert (await client.get("/healthz", auth=auth)).json()["role"] == "hub"
    finally:
        await hub.fanout.client.aclose()


def test_a_credential_sent_over_plain_http_to_another_host_is_warned_of(tmp_path: Path):
    """hub.auth goes to every target, the same for all daemons: over http to another host (or to whatever file_sd or
    Prometheus discovers, with hub.scheme http) it crossed the network in clear text without a word (review
    2026-12-04), where pmta.url's secret is warned of."""
    from hub.app import startup_warnings

    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    sd = tmp_path / "sd.json"
    sd.write_text("[]")
    auth = {"bearer_token_file": str(token)}
    config = HubConfig.model_validate({"hub": {"targets": ["http://127.0.0.1:9469", "http://10.0.0.5:9469",
                                                           "https://10.0.0.6:9469"],
                                               "file_sd": [str(sd)], "auth": auth}})
    assert startup_warnings(config) == [
        "hub.targets: http://10.0.0.5:9469 is plain http: hub.auth's credential, the same for every daemon, crosses "
        "the network in clear text on every request; use https (hub.tls)",
        "hub.scheme is http: hub.auth's credential, the same for every daemon, goes in clear text to every "
        "discovered target (file_sd, prometheus) that is not this host; set hub.scheme: https"]
    safe = HubConfig.model_validate({"hub": {"targets": ["https://10.0.0.6:9469"], "file_sd": [str(sd)],
                                             "scheme": "https", "auth": auth}})
    assert startup_warnings(safe) == []
    assert startup_warnings(HubConfig.model_validate({"hub": {"targets": ["http://10.0.0.5:9469"]}})) == []
