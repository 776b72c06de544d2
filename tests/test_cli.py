"""The `watchtower` command against a real `watchtower run`: version, healthcheck with auth, JSON logs, headers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
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


@pytest.mark.parametrize("fault", [RuntimeError("no free pages"), KeyboardInterrupt()])
def test_oneshot_that_fails_prints_one_line_and_no_exposition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        fault: BaseException) -> None:
    """Whatever ends a metrics-only pass early (the correlator's store failing has its own test in
    tests/fault) is one log line and exit 1, never a traceback or a partial exposition."""
    import exporter.oneshot

    def failing(_config: object) -> str:
        raise fault

    monkeypatch.setattr(exporter.oneshot, "run_oneshot", failing)
    assert main(["oneshot", "--config", str(write_config(tmp_path))]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "CRITICAL" in lines[0], lines
    want = "failed, nothing printed: RuntimeError: no free pages" if isinstance(fault, RuntimeError) else "interrupted"
    assert want in lines[0]


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


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_tls_listener_drops_stalled_handshakes_and_serves_https(tmp_path: Path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    config = write_config(tmp_path, web={"tls_cert_file": str(cert), "tls_key_file": str(key), "header_timeout": 1})
    listen = config.read_text().split("listen: ")[1].split()[0].strip("'\"")
    host, port = listen.rsplit(":", 1)
    log = tmp_path / "run.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                                stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                r = httpx.get(f"https://{listen}/healthz", verify=ssl.create_default_context(cafile=str(cert)), timeout=2)
                if r.status_code == 200:  # 503 while the daemon is still starting (listener up first)
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert r.status_code == 200
        with socket.create_connection((host, int(port)), timeout=15) as stalled:  # no ClientHello, ever
            assert stalled.recv(1024) == b""  # closed by the server after ~web.header_timeout, not 60 s
        assert _healthcheck(config).returncode == 0  # https, from the config
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()
