"""One HTTP client for the requests the tests send to the processes they start.

`httpx.get()` builds a client for each call, and every new client loads the CA bundle: ~25 ms of CPU a request.
The suite sent ~3,700 such requests (polling a daemon until it answers, scraping until a count is reached): ~95 s
of its CPU, spent in the workers beside the daemons they wait for (pytest 688.9 s -> 562.2 s on three workers).
This client is built once per process and keeps `httpx.get()`'s behaviour otherwise: a 5 s timeout, no redirects followed, each request on a connection of its own
that is closed after the answer (no keep-alive: a test that counts a daemon's connections sees only its own), and no
cap on requests in flight from several threads."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

HTTP = httpx.Client(timeout=5.0, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Poll `url` (a Prometheus or Alertmanager `/-/ready`) until it answers 200; fail at once, with the end of its
    log, if the process exits first, and after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if HTTP.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready within {timeout:g} s"
        time.sleep(0.1)
