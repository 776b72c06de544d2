"""deploy/watchtower.service: hardening options present, accepted by `systemd-analyze verify` when installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "watchtower.service"


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_runs_unprivileged_hardened_and_restarts():
    s = settings()
    assert s["User"] == ["watchtower"] and s["SupplementaryGroups"] == ["pmta"]
    assert s["Restart"] == ["always"] and s["RestartPreventExitStatus"] == ["2"]  # config errors do not loop
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"] and s["CapabilityBoundingSet"] == [""]
    example = yaml.safe_load((REPO / "examples" / "watchtower.yml").read_text(encoding="utf-8"))
    assert s["ReadWritePaths"] == [example["state_dir"]] and s["StateDirectoryMode"] == ["0700"]
    assert s["ExecStart"] == ["/usr/local/bin/watchtower run --config /etc/watchtower/watchtower.yml"]
    assert s["ExecStartPre"][0].split()[1:3] == ["check-config", "--config"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    # verify insists that ExecStart exists: point it at a stand-in executable, change nothing else.
    exe = tmp_path / "watchtower"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "watchtower.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/usr/local/bin/watchtower", str(exe)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    ours = [ln for ln in (out.stdout + out.stderr).splitlines() if "watchtower.service" in ln]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr
