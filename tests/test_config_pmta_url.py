"""`pmta.url` and `pmta.username` a start accepted though no request could use them, and `listen` port 0 (review 4).

A query or fragment in `pmta.url` came out in the middle of every request URL (`/pmta?site=a/status?format=xml`):
the API's paths are appended to the base URL. A `pmta.username` holding `:` was sent as another user name (HTTP
basic auth splits user and password at the first `:`), as `web.basic_auth_users` already refuses. Both are config
errors now, said by `check-config` and `run` (exit 2) without the URL's query (it may hold a token).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import Config, ConfigError, load_config
from tests.conftest import REPO

LISTEN = "127.0.0.1:38917"
"""Never bound: `check-config` binds the host with port 0, and every `run` here is refused before it listens."""


def _config(tmp_path: Path, **pmta: Any) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    path = tmp_path / "w.yml"
    path.write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
        "state_dir": str(tmp_path / "state"), "listen": LISTEN, "correlator": {"enabled": False},
        "pmta": {"poll_interval": 60, **pmta}}))
    return path


def _watchtower(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:38912/pmta?token=s3cr3t",
    "http://127.0.0.1:38912/pmta?",  # an empty query: still a `?` before every path
    "https://127.0.0.1:38912/#s3cr3t",
    "http://127.0.0.1:38912?token=s3cr3t",
])
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_pmta_url_with_a_query_or_fragment_is_a_config_error(tmp_path: Path, url: str, command: str) -> None:
    proc = _watchtower(command, "--config", str(_config(tmp_path, url=url)))
    assert proc.returncode == 2, proc.stderr
    problems = [ln for ln in proc.stderr.splitlines() if ln.startswith("  ")]
    assert len(problems) == 1 and problems[0].startswith("  line 6: pmta.url: "), proc.stderr
    assert "query or fragment" in problems[0] and "/status" in problems[0], problems
    assert "s3cr3t" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was written


@pytest.mark.parametrize("url", ["http://127.0.0.1:38912/pmta", "http://127.0.0.1:38912/pmta/", "https://pmta.example"])
def test_a_pmta_url_with_a_path_alone_is_accepted(tmp_path: Path, url: str) -> None:
    assert load_config(_config(tmp_path, url=url)).pmta.url == url


@pytest.mark.parametrize("user", ["ad:min", ":", "admin:"])
def test_a_pmta_username_holding_a_colon_is_a_config_error(tmp_path: Path, user: str) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    cfg = _config(tmp_path, url="http://127.0.0.1:38912", username=user, password_file=str(pw))
    proc = _watchtower("check-config", "--config", str(cfg))
    assert proc.returncode == 2, proc.stderr
    problems = [ln for ln in proc.stderr.splitlines() if ln.startswith("  ")]
    assert len(problems) == 1 and problems[0].startswith("  line 8: pmta.username: "), proc.stderr
    assert "':'" in problems[0] and "first ':'" in problems[0], problems
    with pytest.raises(ConfigError):
        load_config(cfg)


def test_a_pmta_username_without_a_colon_is_accepted(tmp_path: Path) -> None:
    cfg = _config(tmp_path, url="http://127.0.0.1:38912", username="admin@pmta", password="x y")
    assert load_config(cfg).pmta.username == "admin@pmta"


def test_listen_port_0_is_documented_with_what_healthcheck_cannot_do() -> None:
    """`listen: 127.0.0.1:0` binds a port the kernel picks (tests and benchmarks use it): said in the key's
    description, and so in docs/config.md, with where the port is told and that `healthcheck` cannot find it."""
    said = Config.model_fields["listen"].description or ""
    assert "port 0" in said and "listening on" in said and "`healthcheck`" in said, said
    row = next(ln for ln in (REPO / "docs" / "config.md").read_text().splitlines() if ln.startswith("| `listen` |"))
    assert said in row
