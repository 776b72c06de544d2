"""The hub's config problems as an operator reads them, one line each naming the key as written, all found before
it listens (as the daemon's check-config): a target's typo, a client key without its certificate, a file_sd file
that is missing or unreadable (that source would give no target, and every answer would be a 503)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hub.fakes import startup_problems


def _problems(tmp_path: Path, hub: dict[str, Any]) -> list[str]:
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": hub}))
    return startup_problems(cfg)


@pytest.mark.parametrize(("hub", "problems"), [
    ({"targets": [{"url": "http://a:1", "nam": "x"}]}, ["hub.targets.0.nam: unknown key"]),
    ({"targets": ["http://a:1", 5]}, ["hub.targets.1: expected a daemon URL or a mapping {url, name}, got a number"]),
    ({"targets": [{"name": "x"}]}, ["hub.targets.0.url: required key missing"]),
    ({"targets": [["http://a:1"]]},
     ["hub.targets.0: expected a daemon URL or a mapping {url, name}, got a list"]),
])
def test_a_targets_problem_names_its_key_not_pydantics_types(tmp_path: Path, hub: dict[str, Any],
                                                             problems: list[str]):
    """It read `hub.targets.0.str: expected a valid string, ...` plus `hub.targets.0.StaticTarget.nam: unknown key`."""
    assert _problems(tmp_path, hub) == problems


def test_a_client_key_without_its_certificate_is_refused(tmp_path: Path):
    key = tmp_path / "hub-key.pem"
    key.write_text("not checked: refused before\n")
    assert _problems(tmp_path, {"targets": ["http://a:1"], "tls": {"key_file": str(key)}}) == [
        "hub.tls: key_file is set but cert_file is not (the client certificate it is the key of)"]


def test_file_sd_files_are_checked_at_start(tmp_path: Path):
    good, bad, yml = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "broken.yml"
    good.write_text(json.dumps([{"targets": ["pmta-1:9469"]}]))
    bad.write_text(json.dumps({"targets": ["pmta-2:9469"]}))
    yml.write_text("- targets: [pmta-3:9469\n")
    missing, pattern = tmp_path / "gone.json", tmp_path / "sd" / "targets-*.json"
    assert _problems(tmp_path, {"file_sd": [str(p) for p in (good, missing, pattern, bad, yml)]}) == [
        f"hub.file_sd.1: {missing} does not exist",
        f"hub.file_sd.2: {pattern} does not exist (a file's path: hub.file_sd expands no pattern)",
        f"hub.file_sd.3: {bad}: expected a list of target groups",
        f"hub.file_sd.4: {yml}: not YAML (line 2, column 1: expected ',' or ']', but got '<stream end>')",
    ]


def test_a_descriptor_limit_too_low_for_the_targets_pools_is_named_with_what_to_do():
    """200 targets under `ulimit -n 128`: 80 hosts failed with httpx's `ConnectError` (EMFILE, hidden), and the log
    said nothing of the limit."""
    from hub.app import fd_limit_problem
    from hub.config import HubConfig

    config = HubConfig.model_validate({"hub": {"targets": [f"http://h{i}:9469" for i in range(200)]}})
    assert fd_limit_problem(128, config) == (
        "open file limit 128 is below the 3776 descriptors 200 targets x web.api_max_concurrency 16 + "
        "web.max_connections 512 may use: raise LimitNOFILE (systemd) or ulimit -n, or lower web.api_max_concurrency")
    assert fd_limit_problem(1 << 20, config) is None


@pytest.mark.parametrize(("target", "problem"), [
    ("http://h:0", "'http://h:0': the port must be a number from 1 to 65535, got '0'"),
    ("http://h:99999", "'http://h:99999': the port must be a number from 1 to 65535, got '99999'"),
    ("http://h:9x", "'http://h:9x': the port must be a number from 1 to 65535, got '9x'"),
    ("http://h:\uff19\uff14\uff16\uff19", "'http://h:\uff19\uff14\uff16\uff19': the port must be a number from 1 to "
                                          "65535, got '\uff19\uff14\uff16\uff19'"),
    ("http://h h:1", "'http://h h:1': 'h h' is not a host name or IP address"),
    ("http://h\u00a0h:1", "'http://h\\xa0h:1': 'h\\xa0h' is not a host name or IP address"),  # shown, repr
    ("http://[::1x]:1", "'http://[::1x]:1': its host part is not a host name or IP address"),
    ("ftp://h:1", "'ftp://h:1' is not an http:// or https:// URL"),
])
def test_a_target_port_or_host_that_cannot_be_asked_is_named_precisely(tmp_path: Path, target: str, problem: str):
    """`http://h:0` and `http://h h:1` were accepted (every request failing), `http://h:99999` was 'not an http URL'."""
    assert _problems(tmp_path, {"targets": [target]}) == [f"hub.targets.0: {problem}"]


@pytest.mark.parametrize("target", ["http://pmta-1.example.net:9469", "https://[::1]:9469", "http://10.0.0.1",
                                    "http://b\u00fccher.example:9469/", "http://pmta_2:9469"])
def test_usable_targets_are_accepted(tmp_path: Path, target: str):
    assert _problems(tmp_path, {"targets": [target]}) == []


def test_an_os_error_of_the_start_up_checks_does_not_blame_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """A check's OSError was printed as `hub.yml: cannot read: Permission denied`, the (readable) config blamed."""
    import os

    from exporter.cli import main
    from hub import preflight

    def failing(_config: object) -> list[str]:
        raise PermissionError(13, "Permission denied", "/srv/shut/pw")

    monkeypatch.setattr(preflight, "problems", failing)
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": {"targets": ["http://127.0.0.1:9469"]}}))
    assert main(["hub", "--config", str(cfg)]) == 2
    assert capsys.readouterr() == ("", f"{cfg}: cannot check: cannot reach /srv/shut/pw: permission denied "
                                       f"(uid {os.getuid()})\n")
