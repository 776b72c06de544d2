"""With TLS, `web.max_connections` bounds the daemon's sockets as it does without.

A connection the guard evicts or times out was closed gracefully: on a TLS transport asyncio then waits for the
peer's close_notify up to `ssl_shutdown_timeout` (30 s by default) while the guard no longer counts it, so clients
that finish a handshake and never read held a descriptor each for 30 s, past the cap and the tailer's reserve
(150 such connections: 153 sockets for ~30 s, review 2026-12-06).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_config

REPO = Path(__file__).resolve().parents[1]
MAX_CONNECTIONS = 8
FLOOD = 40


def _sockets(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return count


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("openssl") or not Path("/proc/self/fd").exists(), reason="openssl, /proc")
def test_tls_clients_that_never_read_hold_no_socket_past_the_cap(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    config = write_config(tmp_path, web={"tls_cert_file": str(cert), "tls_key_file": str(key), "header_timeout": 1,
                                         "max_connections": MAX_CONNECTIONS})
    listen = config.read_text().split("listen: ")[1].split()[0].strip("'\"")
    host, port = listen.rsplit(":", 1)
    log = tmp_path / "run.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)],
                                stdout=logf, stderr=subprocess.STDOUT, cwd=REPO)
    verify = ssl.create_default_context(cafile=str(cert))
    held: list[ssl.SSLSocket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                if httpx.get(f"https://{listen}/healthz", verify=verify, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        time.sleep(0.5)
        before = _sockets(proc.pid)
        client = ssl.create_default_context(cafile=str(cert))
        for _ in range(FLOOD):  # a handshake each, then nothing: never a request, never a read
            raw = socket.create_connection((host, int(port)), timeout=10)
            held.append(client.wrap_socket(raw, server_hostname="localhost"))
        # Each is closed by the guard (evicted past the cap, or after header_timeout); none may stay in the
        # process waiting for a close_notify that never comes.
        deadline = time.monotonic() + 8
        counts = []
        while time.monotonic() < deadline:
            counts.append(_sockets(proc.pid))
            time.sleep(0.25)
        assert counts[-1] <= before + 1, (before, counts)
        assert max(counts[len(counts) // 2:]) <= before + MAX_CONNECTIONS + 1, (before, counts)
        assert httpx.get(f"https://{listen}/healthz", verify=verify, timeout=5).status_code == 200
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()
