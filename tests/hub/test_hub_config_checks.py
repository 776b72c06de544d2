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
