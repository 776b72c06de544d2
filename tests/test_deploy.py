"""deploy/watchtower.service: hardening options present, accepted by `systemd-analyze verify` when installed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.client import HTTP

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
    assert "ExecStartPre" not in s  # RestartPreventExitStatus= would not cover its exit 2


def unit_with_stand_in(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a stand-in executable (systemd-analyze insists that it exists)."""
    exe = tmp_path / "watchtower"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "watchtower.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/usr/local/bin/watchtower", str(exe)))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    unit = unit_with_stand_in(tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    ours = [ln for ln in (out.stdout + out.stderr).splitlines() if "watchtower.service" in ln]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr


WATCHTOWER = Path(sys.executable).with_name("watchtower")
"""The venv's console script stands in for /usr/local/bin/watchtower."""


def command(line: str, config: Path) -> tuple[list[str], bool]:
    """An Exec*= line as argv (the unit's paths mapped to the test's), and whether its failure is ignored ('-')."""
    prefix = re.match(r"[-@:+!|]*", line).group(0)
    argv = shlex.split(line[len(prefix):])
    mapped = {"/usr/local/bin/watchtower": str(WATCHTOWER), "/etc/watchtower/watchtower.yml": str(config)}
    return [mapped.get(a, a) for a in argv], "-" in prefix


def start_like_systemd(config: Path, timeout: float = 60) -> tuple[str, int, str]:
    """Run ExecStartPre= lines, then ExecStart=, as systemd does until one fails: (which, exit status, stderr).

    ExecStart= is the main process; a daemon that keeps running past `timeout` counts as started (0)."""
    s = settings()
    for line in s.get("ExecStartPre", []):
        argv, ignore = command(line, config)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if out.returncode and not ignore:
            return "ExecStartPre", out.returncode, out.stderr
    (line,) = s["ExecStart"]
    argv, _ = command(line, config)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "ExecStart", 0, ""
    return "ExecStart", out.returncode, out.stderr


def systemd_restarts(which: str, status: int) -> bool:
    """systemd.service(5): RestartPreventExitStatus= applies to the main process only ("has no effect on
    processes configured via ExecStartPre="; systemd issue #11868); a failed ExecStartPre= is a failure
    that Restart=always (and on-failure) restarts."""
    s = settings()
    prevent = {int(v) for value in s.get("RestartPreventExitStatus", []) for v in value.split() if v.isdigit()}
    if which == "ExecStart" and status in prevent:
        return False
    policy = s.get("Restart", ["no"])[-1]
    return policy == "always" or (policy in ("on-failure", "on-abnormal") and status != 0)


def test_a_config_error_stops_the_unit_without_restart_loop(tmp_path: Path):
    """Exit 2 (invalid configuration) must not be restarted every RestartSec= forever: the start limit
    (5 starts in 10 s by default) is never reached with RestartSec=5s."""
    config = tmp_path / "watchtower.yml"
    config.write_text(yaml.safe_dump({"sources": [{"paths": ["/var/log/pmta/acct-*.csv"]}],
                                      "state_dir": str(tmp_path / "state"), "listen": "127.0.0.1:notaport"}))
    which, status, stderr = start_like_systemd(config)
    assert status == 2, stderr
    assert "listen" in stderr  # the journal names the key
    assert not systemd_restarts(which, status), f"{which} exits 2 and Restart= restarts it in a loop"


def test_a_runtime_failure_is_restarted(tmp_path: Path):
    """Exit 1 (here: the listener's port is taken) is what Restart= is for."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "watchtower.yml"
        config.write_text(yaml.safe_dump({
            "sources": [{"paths": [str(tmp_path / "logs" / "acct-*.csv")]}], "state_dir": str(tmp_path / "state"),
            "listen": f"127.0.0.1:{taken.getsockname()[1]}", "correlator": {"enabled": False}}))
        which, status, stderr = start_like_systemd(config)
    assert (which, status) == ("ExecStart", 1), stderr
    assert systemd_restarts(which, status)


def test_the_units_daemon_keeps_its_store_private_and_hashed(tmp_path: Path):
    """docs/security.md, run as the unit runs it (ExecStart=, UMask=) with examples/watchtower.yml: the state
    directory 0700 and its files 0600, the HMAC key created 0600, recipients found by `rcpt=` but shown
    nowhere: not in API answers, not in the state database (the address in an SMTP reply or ORCPT included)."""
    import httpx

    from tests.conftest import ACCT_HEADER, RECORD_DAY, free_port

    text = (REPO / "examples" / "watchtower.yml").read_text(encoding="utf-8")
    text = text.replace("/var/log/pmta", str(tmp_path / "logs")).replace("/var/lib/watchtower", str(tmp_path / "state"))
    config = yaml.safe_load(text)
    port = free_port()
    config["listen"] = f"127.0.0.1:{port}"
    config["pmta"] = {}
    config["tail"] = {**config["tail"], "poll_interval": 0.05, "rescan_interval": 0.05, "checkpoint_interval": 0.1}
    path = tmp_path / "watchtower.yml"
    path.write_text(yaml.safe_dump(config))
    (tmp_path / "logs").mkdir()
    (line,) = settings()["ExecStart"]
    argv, _ = command(line, path)
    umask = int(settings()["UMask"][-1], 8)
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                                preexec_fn=lambda: os.umask(umask))  # noqa: PLW1509 - single-threaded test process
    base = f"http://127.0.0.1:{port}"
    rcpt = "alice.secret@gmail.com"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if HTTP.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        b = (f"b,{RECORD_DAY} 12:00:00+0000,{RECORD_DAY} 11:59:00+0000,news@sender.example,{rcpt},rfc822;{rcpt},"
             f"failed,5.1.1 (bad destination mailbox address),\"smtp;550 5.1.1 <{rcpt}>: Recipient address "
             f"rejected: User unknown\",gmail-smtp-in.l.google.com (142.250.1.27),bad-mailbox,smtp,app (10.0.0.1),"
             f"smtp,10.1.1.1,142.250.1.27,\"PIPELINING,8BITMIME\",1234,vmta-1,job-42,,gmail.com/vmta-1,pool-a")
        (tmp_path / "logs" / "acct-2026-12-03-0000.csv").write_text(ACCT_HEADER + "\n" + b + "\n")
        deadline = time.monotonic() + 60
        while True:
            found = HTTP.get(base + "/api/v1/timeline", params={"job_id": "job-42", "rcpt": rcpt}, timeout=5)
            if found.status_code == 200:
                break
            assert time.monotonic() < deadline, (found.status_code, found.text, log.read_text()[-3000:])
            time.sleep(0.2)
        echoed = found.json()
        assert echoed["rcpt"] == echoed["timelines"][0]["rcpt"]  # shown hashed, not as the query sent it
        assert echoed["timelines"][0]["rcpt_hashed"] is True
        answers = [json.dumps(echoed), HTTP.get(base + "/api/v1/search", params={"job_id": "job-42"}, timeout=5).text]
        assert "job-42" in answers[1]
        for answer in answers:
            assert "alice.secret" not in answer, answer
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    state = tmp_path / "state"
    assert state.stat().st_mode & 0o777 == 0o700
    modes = {f.name: f.stat().st_mode & 0o777 for f in state.iterdir()}
    assert "correlator-hmac.key" in modes and set(modes.values()) == {0o600}, modes
    for f in state.iterdir():
        assert b"alice.secret" not in f.read_bytes(), f"{f.name} holds the recipient"
    assert "alice.secret" not in log.read_text()


def test_unit_paths_match_the_example_config():
    """Read-only where the example's globs point (PMTA's directory), writable only its state_dir, private files."""
    s = settings()
    example = yaml.safe_load((REPO / "examples" / "watchtower.yml").read_text(encoding="utf-8"))
    dirs = {str(Path(p).parent) for source in example["sources"] for p in source["paths"]}
    # `-`: a path missing at start is skipped; without it the unit failed with 226/NAMESPACE, retried every 5 s
    # (ProtectSystem=strict makes it read-only anyway: the line says what the daemon reads)
    assert {d.removeprefix("-") for d in s["ReadOnlyPaths"][-1].split()} == dirs
    assert all(d.startswith("-") for d in s["ReadOnlyPaths"][-1].split())
    assert s["ReadWritePaths"] == [example["state_dir"]]
    assert "/var/lib/" + s["StateDirectory"][-1] == example["state_dir"]
    assert s["UMask"] == ["0077"] and s["StateDirectoryMode"] == ["0700"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path):
    """`systemd-analyze security --offline=yes`: exposure at most 2.0 ("OK"); a dropped hardening line shows."""
    unit = unit_with_stand_in(tmp_path)
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    level = re.search(r"Overall exposure level for watchtower\.service: (\d+\.\d+)", out.stdout + out.stderr)
    assert level, out.stdout + out.stderr
    assert float(level.group(1)) <= 2.0, out.stdout
