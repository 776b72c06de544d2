"""Bad input gets one line naming the file or key, never a traceback, a hang or all the memory (reviewer items:
hub.cursor_key_file /dev/zero or a FIFO, a duration of hundreds of digits, a key holding a newline, demo --dir "",
running out of descriptors)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

WATCHTOWER = [sys.executable, "-m", "exporter"]
ROOT = Path(__file__).resolve().parents[1]
"""The checkout these tests are in: its exporter is the one run."""


def _limit_memory() -> None:  # a read of /dev/zero dies of MemoryError, not the machine
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))


def _run(args: list[str], cwd: Path, nofile: int | None = None) -> subprocess.CompletedProcess[str]:
    def limits() -> None:
        _limit_memory()
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))  # as `ulimit -n`

    env = {**os.environ, "RUST_BACKTRACE": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run(WATCHTOWER + args, cwd=cwd, capture_output=True, text=True, timeout=60, preexec_fn=limits,
                          env=env)


def _hub_yml(tmp_path: Path, key_file: str) -> Path:
    path = tmp_path / "hub.yml"
    path.write_text(f"hub: {{targets: ['http://127.0.0.1:1'], cursor_key_file: '{key_file}'}}\n")
    return path


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "too-large"])
def test_cursor_key_file_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    if kind == "dev-zero":
        key = "/dev/zero"
    elif kind == "fifo":
        key = str(tmp_path / "fifo")
        os.mkfifo(key)
    else:
        key = str(tmp_path / "big")
        Path(key).write_bytes(b"k" * (1 << 20))
    done = _run(["check-config", "--hub", str(_hub_yml(tmp_path, key))], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    line = next(x for x in done.stderr.splitlines() if "hub.cursor_key_file" in x).strip()
    if kind == "too-large":
        assert line == f"hub.cursor_key_file: {key} holds 1048576 bytes; a secret file is at most 16KiB"
    else:
        assert line == f"hub.cursor_key_file: {key} is not a regular file"


def test_secret_file_read_bounded(tmp_path: Path) -> None:
    from exporter.boundedfile import FileProblem, read_regular

    with pytest.raises(FileProblem, match="is not a regular file"):
        read_regular("/dev/zero")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 20000)
    with pytest.raises(FileProblem, match="holds 20000 bytes"):
        read_regular(big)
    small = tmp_path / "small"
    small.write_bytes(b"secret\n")
    assert read_regular(small) == b"secret\n"


def _daemon_yml(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "c.yml"
    path.write_text(f"sources: [{{paths: ['{tmp_path}/logs/acct-*.csv']}}]\nstate_dir: {tmp_path}/state\n{extra}")
    return path


@pytest.mark.parametrize("value", ["9" * 400, "9" * 400 + "w", "9" * 4000])
@pytest.mark.parametrize("command", ["check-config", "oneshot"])
def test_huge_duration_names_its_key(tmp_path: Path, value: str, command: str) -> None:
    config = _daemon_yml(tmp_path, f"tail: {{poll_interval: {value}}}\n")
    done = _run([command, "--config", str(config)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "  line 3: tail.poll_interval: must be at most 3650d, got " in done.stderr


@pytest.mark.parametrize("key", ["hub.refresh_interval", "hub.timeout", "web.header_timeout"])
def test_huge_duration_in_hub_config(tmp_path: Path, key: str) -> None:
    section, name = key.split(".")
    extra = {"hub": "", "web": ""}
    extra[section] = f", {name}: {'9' * 400}"
    path = tmp_path / "hub.yml"
    path.write_text(f"hub: {{targets: ['http://127.0.0.1:1']{extra['hub']}}}\nweb: {{x_unused: 1{extra['web']}}}\n"
                    .replace("x_unused: 1, ", "").replace("{x_unused: 1}", "{}"))
    done = _run(["check-config", "--hub", str(path)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"  line {1 if section == 'hub' else 2}: {key}: must be at most 3650d" in done.stderr


def test_duration_parser_never_overflows() -> None:
    from exporter.config import parse_duration

    with pytest.raises(ValueError, match="must be at most 3650d"):
        parse_duration(10**400)


def test_key_with_newline_is_one_line(tmp_path: Path) -> None:
    config = _daemon_yml(tmp_path, '"a\\nb": x\n')
    done = _run(["check-config", "--config", str(config)], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert any(line.startswith("  line 3: a\\nb: ") for line in lines), done.stderr
    assert not any(line.startswith("b:") for line in lines)


def test_config_path_with_newline_in_header(tmp_path: Path) -> None:
    config = _daemon_yml(tmp_path, "bogus: 1\n")
    odd = tmp_path / "c\nd.yml"
    config.rename(odd)
    done = _run(["check-config", "--config", str(odd)], tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"{tmp_path}/c\\nd.yml: invalid configuration"


def test_demo_refuses_empty_dir(tmp_path: Path) -> None:
    done = _run(["demo", "--dir", ""], tmp_path)
    assert done.returncode == 2
    assert "an empty path" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["oneshot", "run"])
def test_out_of_descriptors_is_one_line(tmp_path: Path, command: str) -> None:
    config = _daemon_yml(tmp_path, "listen: 127.0.0.1:0\n")
    done = _run([command, "--config", str(config)], tmp_path, nofile=8)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr and "never awaited" not in done.stderr
    assert "CRITICAL" in done.stderr


def test_a_secret_file_whose_size_reads_zero_is_read_whole() -> None:
    """procfs, and FUSE secret mounts with direct_io, report st_size 0 for a file that holds bytes: it was read as
    empty (a password of "", a key refused as empty)."""
    from exporter.boundedfile import read_regular

    proc_file = Path("/proc/sys/kernel/random/boot_id")
    if not proc_file.exists():
        pytest.skip("no procfs")
    assert os.stat(proc_file).st_size == 0
    assert read_regular(proc_file).strip() == proc_file.read_bytes().strip() != b""


def test_an_hmac_key_file_larger_than_a_password_is_accepted(tmp_path: Path) -> None:
    """A store keyed with a large key refuses any other: the 16 KiB bound of passwords refused such a key file at the
    upgrade, locking the operator out of the store's timelines."""
    from exporter.preflight import _hmac_key_file

    key = tmp_path / "big.key"
    key.write_bytes(os.urandom(20_000).hex().encode())
    key.chmod(0o600)
    assert _hmac_key_file("correlator.hmac_key_file", key, explicit=True) is None


def test_a_panic_that_is_no_descriptor_limit_is_called_an_internal_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A Rust panic was always said as "too many open files?", hiding a library's bug behind a limit."""
    from exporter import cli, daemon, oneshot

    class Panic(BaseException):  # as pyo3_runtime.PanicException: not an Exception
        pass

    def panics(_config: object) -> str:
        raise Panic("called `Option::unwrap()` on a `None` value at read.rs:123")

    monkeypatch.setattr(oneshot, "run_oneshot", panics)
    monkeypatch.setattr(daemon, "run_oneshot", panics)  # with the correlator on
    config = _daemon_yml(tmp_path, "listen: 127.0.0.1:0\n")
    assert cli.main(["oneshot", "--config", str(config)]) == 1
    said = [line for line in capfd.readouterr().err.splitlines() if "CRITICAL" in line]
    assert len(said) == 1 and "internal error" in said[0] and "open files" not in said[0], said


def test_secrets_read_after_start_are_bounded_too(tmp_path: Path) -> None:
    """Checked at start, but read again later (PMTA's API key at each poll, the hub's secrets at a SIGHUP): a file
    swapped for /dev/zero or a FIFO meanwhile ate memory or hung there (a large file stands in for them here)."""
    from exporter.config import PmtaApiConfig
    from exporter.pmta_api import PmtaApiConfigError, read_api_key
    from hub.fanout import _read_secret

    big = tmp_path / "big"
    big.write_bytes(b"k" * 100_000)
    with pytest.raises(PmtaApiConfigError, match="api_key_file"):
        read_api_key(PmtaApiConfig(url="http://127.0.0.1:1", api_key_file=big))
    with pytest.raises(OSError, match="at most 16KiB"):
        _read_secret(big)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        _read_secret(fifo)
    small = tmp_path / "small"
    small.write_text("s3cret\n")
    assert _read_secret(small) == "s3cret"
    assert read_api_key(PmtaApiConfig(url="http://127.0.0.1:1", api_key_file=small)) == "s3cret"
