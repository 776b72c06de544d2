"""The correlator's HMAC key file is read as every other secret is (exporter/boundedfile.py): bounded, never blocking.

`load_or_create_key` read it with `path.read_bytes()`: a key file swapped for a link to /dev/zero (after check-config
passed it) filled the memory, a FIFO nobody writes to hung the start (and the correlator process at each restart),
and any other bad file ended as `watchtower could not run: ValueError/IsADirectoryError` (exit 1, restarted for
ever) rather than one line naming correlator.hmac_key_file (exit 2, a setup error).
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.boundedfile import HMAC_KEY_MAX_BYTES
from tests.conftest import write_config

REPO = Path(__file__).resolve().parent.parent
MEMORY_CAP = 1 << 30
"""Address space of the child that reads the key: the unbounded read of /dev/zero must end in a MemoryError there,
not in this machine's memory."""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _load_in_child(key: Path) -> subprocess.CompletedProcess[str]:
    """load_or_create_key(key) in a child capped in memory and time; what it says of the key on stdout."""
    script = ("import sys\nfrom pathlib import Path\nfrom correlator.keys import KeyFileError, load_or_create_key\n"
              "try:\n    load_or_create_key(Path(sys.argv[1]))\nexcept KeyFileError as exc:\n    print(exc)\n"
              "    sys.exit(2)\n")
    return subprocess.run([sys.executable, "-c", script, str(key)], cwd=REPO, capture_output=True, text=True,
                          timeout=30, preexec_fn=_cap_memory)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_key_file_swapped_for_a_device_or_fifo_is_one_line_not_a_hang(tmp_path: Path, kind: str) -> None:
    key = tmp_path / "hmac.key"
    if kind == "fifo":
        os.mkfifo(key)
    else:
        key.symlink_to("/dev/zero")
    done = _load_in_child(key)
    assert (done.returncode, done.stdout.splitlines(), done.stderr) == (
        2, [f"correlator.hmac_key_file: {key} is not a regular file"], "")


def test_a_key_file_over_the_bound_is_refused_in_one_line(tmp_path: Path) -> None:
    from correlator.keys import KeyFileError, load_or_create_key

    key = tmp_path / "hmac.key"
    key.write_bytes(b"k" * (HMAC_KEY_MAX_BYTES + 1))
    key.chmod(0o600)
    with pytest.raises(KeyFileError) as refused:
        load_or_create_key(key)
    assert str(refused.value) == (f"correlator.hmac_key_file: {key} holds {HMAC_KEY_MAX_BYTES + 1} bytes; a secret "
                                  "file is at most 1MiB")
    key.write_bytes(b"k" * HMAC_KEY_MAX_BYTES)  # the bound itself is a key (a store keyed with it needs it)
    assert load_or_create_key(key) == b"k" * HMAC_KEY_MAX_BYTES


def test_an_empty_or_created_key_file(tmp_path: Path) -> None:
    from correlator.keys import KeyFileError, load_or_create_key

    empty = tmp_path / "empty.key"
    empty.write_bytes(b" \n")
    with pytest.raises(KeyFileError, match=f"^correlator.hmac_key_file: {empty} is empty; write a key into it, or "
                                           "delete it to have one created$"):
        load_or_create_key(empty)
    made = tmp_path / "new" / "hmac.key"
    key = load_or_create_key(made)
    assert len(key) == 64 and made.read_bytes().strip() == key and made.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(made) == key


@pytest.mark.parametrize("command", ["run", "oneshot"])
def test_a_key_file_gone_bad_after_the_checks_is_said_as_a_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """Between check-config (or the command's own checks) and the correlator's start the file became a directory:
    exit 2 and the key named, as check-config says it; not `could not run: IsADirectoryError`, exit 1."""
    from exporter import cli, preflight

    key = tmp_path / "hmac.key"
    key.mkdir()
    config = write_config(tmp_path, correlator={"enabled": True, "hash_recipients": True, "hmac_key_file": str(key)})
    monkeypatch.setattr(preflight, "problems", lambda *_a, **_k: [])  # the checks ran before the file changed
    monkeypatch.setattr("exporter.logsetup.setup", lambda *_a, **_k: None)
    assert cli.main([command, "--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{config}: invalid configuration", f"  correlator.hmac_key_file: {key} is not a regular file"]


def test_the_correlator_process_names_the_key_file_not_an_internal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from exporter import follower
    from exporter.config import load_config

    key = tmp_path / "hmac.key"
    key.write_bytes(b"")
    config = load_config(write_config(tmp_path, correlator={"enabled": True, "hash_recipients": True,
                                                             "hmac_key_file": str(key), "worker": "process"}))
    (tmp_path / "state").mkdir(mode=0o700)
    monkeypatch.setattr("exporter.logsetup.setup", lambda *_a, **_k: None)
    monkeypatch.setattr(follower.signal, "signal", lambda *_a: None)  # the test process keeps its handlers
    monkeypatch.setattr(follower.signal, "pthread_sigmask", lambda *_a: set())
    with caplog.at_level(logging.CRITICAL, logger="watchtower.follower"), pytest.raises(SystemExit) as ended:
        follower.main(config.model_dump(mode="json"), os.getppid())
    assert ended.value.code == 1  # the daemon starts it again: a key file put right is read then
    assert [r.getMessage() for r in caplog.records] == [
        f"correlator process: correlator.hmac_key_file: {key} is empty; write a key into it, or delete it to have "
        "one created"]
