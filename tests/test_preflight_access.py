"""Paths a config names inside a directory this user cannot enter: Python 3.11's Path.exists()/is_file() raise
PermissionError there (EACCES), and check-config, run, oneshot and the hub printed a traceback (or blamed the config
file). Each is one problem line naming the key and the path, exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")


@pytest.fixture
def shut(tmp_path: Path) -> Iterator[Path]:
    """A directory this user (without root's capabilities) cannot enter, holding every file the config names."""
    priv = tmp_path / "priv"
    (priv / "state").mkdir(parents=True)
    for name in ("isp.yml", "hmac.key", "api.key", "pw", "ca.pem", "cert.pem", "key.pem"):
        (priv / name).write_text("x\n")
    priv.chmod(0o000)
    yield priv
    priv.chmod(0o755)


def _config(tmp_path: Path, priv: Path, **overrides: Any) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    cfg: dict[str, Any] = {
        "sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
        "state_dir": str(priv / "state"), "listen": f"127.0.0.1:{free_port()}",
        "classify": {"isp_file": str(priv / "isp.yml")},
        "correlator": {"enabled": True, "hash_recipients": True, "hmac_key_file": str(priv / "hmac.key")},
        "pmta": {"url": "http://127.0.0.1:1/", "api_key_file": str(priv / "api.key"), "username": "mon",
                 "password_file": str(priv / "pw"), "ca_file": str(priv / "ca.pem")},
        "web": {"tls_cert_file": str(priv / "cert.pem"), "tls_key_file": str(priv / "key.pem")},
        **overrides,
    }
    path = tmp_path / "w.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _watchtower(*args: str) -> subprocess.CompletedProcess[str]:
    from tests.test_oneshot import SETPRIV

    return subprocess.run([*SETPRIV, sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def _unreachable(key: str, path: Path) -> str:
    return f"  {key}: cannot reach {path}: permission denied (uid {os.getuid()})"


@pytest.mark.parametrize("command", ["check-config", "run", "oneshot"])
def test_every_path_under_a_directory_this_user_cannot_enter_is_a_problem_line(tmp_path: Path, shut: Path,
                                                                                command: str) -> None:
    config = _config(tmp_path, shut)
    proc = _watchtower(*(["check-config", str(config)] if command == "check-config" else [command, "--config",
                                                                                         str(config)]))
    want = [f"{config}: invalid configuration",
            _unreachable("classify.isp_file", shut / "isp.yml"),
            *([] if command == "oneshot" else [_unreachable("state_dir", shut / "state")]),  # a temporary store
            _unreachable("correlator.hmac_key_file", shut / "hmac.key"),
            _unreachable("pmta.api_key_file", shut / "api.key"),
            _unreachable("pmta.password_file", shut / "pw"),
            _unreachable("pmta.ca_file", shut / "ca.pem"),
            _unreachable("web.tls_cert_file", shut / "cert.pem"),
            _unreachable("web.tls_key_file", shut / "key.pem")]
    assert (proc.returncode, proc.stdout, proc.stderr.splitlines()) == (2, "", want)


def test_the_default_hmac_key_in_an_unreachable_state_dir(tmp_path: Path, shut: Path) -> None:
    """Hashing recipients with the key in state_dir (the default): check-config names state_dir once; oneshot,
    whose store (and key) is a temporary one, does not need state_dir at all and runs."""
    config = _config(tmp_path, shut, classify={}, pmta={}, web={},
                     correlator={"enabled": True, "hash_recipients": True})
    check = _watchtower("check-config", str(config))
    assert (check.returncode, check.stderr.splitlines()) == (
        2, [f"{config}: invalid configuration", _unreachable("state_dir", shut / "state")])
    one = _watchtower("oneshot", "--config", str(config))
    assert one.returncode == 0 and "Traceback" not in one.stderr, one.stderr
    assert "# TYPE pmta_delivered_total counter" in one.stdout


def test_a_hub_secret_under_a_directory_it_cannot_enter_is_named_not_the_config(tmp_path: Path, shut: Path) -> None:
    """It said `hub.yml: cannot read: Permission denied`, blaming the (readable) config file."""
    config = tmp_path / "hub.yml"
    config.write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{free_port()}",
        "hub": {"targets": ["http://127.0.0.1:9469"], "file_sd": [str(shut / "sd.json")],
                "auth": {"username": "hub", "password_file": str(shut / "pw")}}}))
    proc = _watchtower("hub", "--config", str(config))
    assert (proc.returncode, proc.stderr.splitlines()) == (2, [
        f"{config}: invalid configuration",
        _unreachable("hub.file_sd.0", shut / "sd.json"),
        _unreachable("hub.auth.password_file", shut / "pw")])


def test_an_os_error_the_checks_did_not_foresee_is_one_line_and_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The fallback: whatever stat a future check forgets to guard is still no traceback."""
    from exporter import preflight
    from exporter.cli import main
    from tests.conftest import write_config

    config = write_config(tmp_path)

    def failing(*_args: object, **_kwargs: object) -> list[str]:
        raise PermissionError(13, "Permission denied", "/srv/shut/thing")

    monkeypatch.setattr(preflight, "problems", failing)
    for argv in (["check-config", str(config)], ["run", "--config", str(config)], ["oneshot", "--config", str(config)]):
        assert main(argv) == 2
        assert capsys.readouterr() == ("", f"{config}: cannot check: cannot reach /srv/shut/thing: permission denied "
                                           f"(uid {os.getuid()})\n")


@pytest.mark.parametrize("owned", [False, True])
def test_a_state_file_this_user_cannot_write_is_a_problem_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               owned: bool) -> None:
    """state_dir owned by the service user, watchtower.db left by a start as root: check-config said ok, `run` then
    stopped (review 2026-12-04). This user's own file without its bits is told chmod, another user's chown."""
    from exporter import preflight

    state = tmp_path / "state"
    state.mkdir()
    (state / "watchtower.db").write_bytes(b"")
    real = os.access
    monkeypatch.setattr(preflight.os, "access", lambda p, mode: False if str(p).endswith("watchtower.db")
                        else real(p, mode))
    if not owned:
        monkeypatch.setattr(preflight.os, "geteuid", lambda: os.getuid() + 1)  # a file of another user (root's)
    said = preflight._state_dir("state_dir", state)  # noqa: SLF001 - the one check of the state files
    way_out = f"chmod u+rw {state / 'watchtower.db'}" if owned else "chown it to the user running watchtower"
    assert said == [f"state_dir: {state / 'watchtower.db'} is not readable and writable by this user "
                    f"(uid {os.getuid()}): {way_out}"]


def test_check_config_says_what_run_refuses_a_keyed_store_without_its_key_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` refuses a correlator store keyed with an HMAC key whose key file is missing; check-config said ok."""
    import sqlite3

    from exporter.cli import main

    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / "watchtower.db")
    conn.execute("CREATE TABLE corr_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO corr_meta VALUES ('rcpt_mode', 'hmac:0123456789abcdef')")
    conn.execute("CREATE TABLE wt_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")  # the daemon's marker
    conn.execute("INSERT INTO wt_meta VALUES ('schema_version', '1')")
    conn.commit()
    conn.close()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "acct-1.csv").write_text("type,timeLogged\n")
    config = tmp_path / "watchtower.yml"
    config.write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
        "state_dir": str(state), "listen": f"127.0.0.1:{free_port()}",
        "correlator": {"enabled": True, "hash_recipients": True}}))
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert (f"  correlator.hmac_key_file: {state / 'correlator-hmac.key'} does not exist, and the recipients of the "
            f"correlator store {state / 'watchtower.db'} were keyed with the key hmac:0123456789abcdef") in err, err


def test_one_check_config_pass_names_every_state_file_this_user_cannot_use(tmp_path: Path) -> None:
    """Review 2026-12: the check stopped at the first bad state file (an operator fixed one per run, though each pass
    lists every problem) and knew nothing of correlator.lock, which the correlator process opens: check-config said
    ok and that process then died at every restart. Files left by a start as root (another user's: chown), and this
    user's own without their bits (chmod); a directory in a file's place is named too."""
    state = tmp_path / "state"
    state.mkdir()
    other = os.getuid() == 0  # root can hand a file to another user: the chown case for real
    for name in ("watchtower.db", "watchtower.db-shm", "watchtower.lock", "correlator.lock"):
        (state / name).write_bytes(b"")
        (state / name).chmod(0o600 if other and name.endswith(".lock") else 0o400)
        if other and name.endswith(".lock"):
            os.chown(state / name, 4242, 4242)
    (state / "watchtower.db-wal").mkdir()
    (tmp_path / "logs").mkdir()
    config = tmp_path / "w.yml"
    config.write_text(yaml.safe_dump({"sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
                                      "state_dir": str(state), "listen": "127.0.0.1:47509"}))
    proc = _watchtower("check-config", str(config))

    def cannot(name: str) -> str:
        way_out = ("chown it to the user running watchtower" if other and name.endswith(".lock")
                   else f"chmod u+rw {state / name}")
        return f"  state_dir: {state / name} is not readable and writable by this user (uid {os.getuid()}): {way_out}"

    assert (proc.returncode, proc.stderr.splitlines()) == (2, [
        f"{config}: invalid configuration",
        cannot("watchtower.db"),
        f"  state_dir: {state / 'watchtower.db-wal'} is not a regular file; move it aside",
        cannot("watchtower.db-shm"),
        cannot("watchtower.lock"),
        cannot("correlator.lock")]), proc.stderr


def test_a_correlator_lock_the_process_cannot_open_is_named_with_the_way_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The correlator process logged `stopped by an internal error: PermissionError: [Errno 13] Permission denied:
    '.../correlator.lock'` at every restart: the lock is a state file like the others, said as they are."""
    import logging

    from exporter import follower
    from exporter.config import config_from_dict

    state = tmp_path / "state"
    state.mkdir()
    lock = state / "correlator.lock"
    lock.write_bytes(b"")

    def refused(path: object, *_args: object, **_kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(follower, "open", refused, raising=False)  # a root-owned 0600 file, for this user
    monkeypatch.setattr("exporter.instancelock.os.geteuid", lambda: 4242)  # ... which is not root
    config = config_from_dict({"sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]}],
                               "state_dir": str(state)})
    process = follower.Follower(config, os.getppid(), [])
    monkeypatch.setattr(follower.Follower, "run", follower.Follower._lock)  # noqa: SLF001 - the step that fails
    monkeypatch.setattr(follower, "Follower", lambda *_a, **_k: process)
    monkeypatch.setattr("exporter.logsetup.setup", lambda *_a, **_k: None)
    monkeypatch.setattr(follower.signal, "signal", lambda *_a: None)  # the test process keeps its handlers
    monkeypatch.setattr(follower.signal, "pthread_sigmask", lambda *_a: set())
    with caplog.at_level(logging.CRITICAL, logger="watchtower.follower"), pytest.raises(SystemExit) as ended:
        follower.main(config.model_dump(mode="json"), os.getppid())
    assert ended.value.code == 1  # as before: the daemon restarts it
    assert [r.getMessage() for r in caplog.records] == [
        f"correlator process: {lock}: cannot open the correlator's lock file: permission denied: chown it to the "
        "user running watchtower (uid 4242), as every file in the state directory"]
