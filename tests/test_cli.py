"""The `watchtower` command against a real `watchtower run`: version, healthcheck with auth, JSON logs, headers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter import __version__
from exporter.cli import main
from tests.conftest import REPO, write_config


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"watchtower {__version__}"


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("no listener: " + log.read_text()[-2000:])


def _healthcheck(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", "healthcheck", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, cwd=REPO, env={**os.environ, **env})


@pytest.mark.integration
def test_run_with_bcrypt_auth_json_logs_and_healthcheck(tmp_path: Path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = write_config(tmp_path, web={"basic_auth_users": {"prom": hashed}}, log_format="json")
    listen = config.read_text().split("listen: ")[1].split()[0].strip("'\"")
    url = f"http://{listen}"
    assert _healthcheck(config).returncode == 1  # nothing listening yet
    log = tmp_path / "run.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                                stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_http(url + "/healthz", proc, log)
        r = httpx.get(url + "/metrics", auth=("prom", "s3cret"), timeout=5)
        assert r.status_code == 200 and "server" not in r.headers and "pmta_" in r.text
        assert "process_open_fds" in r.text and "process_max_fds" in r.text  # ProcessCollector
        r = httpx.get(url + "/no/such/route", auth=("prom", "s3cret"), timeout=5)
        assert r.status_code == 404 and r.json()["status"] == 404 and "server" not in r.headers
        assert httpx.get(url + "/docs", auth=("prom", "s3cret"), timeout=5).status_code == 404
        assert httpx.get(url + "/healthz", timeout=5).status_code == 401

        alive = _healthcheck(config)
        assert alive.returncode == 0 and alive.stdout.startswith("alive:"), alive.stdout + alive.stderr
        full = _healthcheck(config, WATCHTOWER_HEALTHCHECK_USER="prom", WATCHTOWER_HEALTHCHECK_PASSWORD="s3cret")
        assert full.returncode == 0 and full.stdout.startswith("healthy:"), full.stdout + full.stderr
        bad = _healthcheck(config, WATCHTOWER_HEALTHCHECK_USER="prom", WATCHTOWER_HEALTHCHECK_PASSWORD="nope")
        assert bad.returncode == 1 and "HTTP 401" in bad.stderr

        host, port = listen.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:  # uvicorn logs a warning for this
            s.sendall(b"\x16\x03\x01 not http\r\n\r\n")
            s.recv(1024)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r["logger"].startswith("uvicorn") for r in records), lines
    assert proc.returncode == 0
