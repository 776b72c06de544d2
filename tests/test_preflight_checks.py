"""`watchtower check-config` (and the start-up preflight it shares with `run`) names what is wrong in words an
operator can act on: a TLS pair given the wrong way round or not in PEM, a glob whose directory is a typo or that
uses brace alternatives glob() does not know, two sources matching the same files, a state database that is not
SQLite. Review findings: each said something vaguer (`[SSL] PEM lib (_ssl.c:3905)`, `matches no file yet`),
nothing at all, or `ok` before a `run` that failed at every systemd restart."""

from __future__ import annotations

import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import preflight
from exporter.config import config_from_dict
from tests.conftest import REPO, Watchtower, free_port

LISTEN = "127.0.0.1:29471"
"""check-config binds no port (its probe binds port 0); `run` stops at the preflight before binding."""

needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")


def _config(tmp_path: Path, **overrides: Any) -> Path:
    (tmp_path / "logs").mkdir(exist_ok=True)
    cfg: dict[str, Any] = {"sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
                           "state_dir": str(tmp_path / "state"), "listen": LISTEN,
                           "correlator": {"enabled": False}, **overrides}
    path = tmp_path / "w.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _watchtower(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    proc = _watchtower("check-config", "--config", str(config))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _pair(directory: Path, name: str, kind: str = "rsa:2048") -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    new_key = ["-newkey", kind] if kind.startswith("rsa") else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(["openssl", "req", "-x509", *new_key, "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


# --- 1. TLS files: which file is wrong, and why ----------------------------------------------------------
@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pems")
    c1, k1 = _pair(d, "one")
    c2, k2 = _pair(d, "two")
    _, ek = _pair(d, "ec", kind="ec")
    der = d / "one.der"
    subprocess.run(["openssl", "x509", "-in", str(c1), "-outform", "DER", "-out", str(der)], check=True,
                   capture_output=True, timeout=60)
    csr = d / "one.csr"
    subprocess.run(["openssl", "req", "-new", "-key", str(k1), "-subj", "/CN=localhost", "-out", str(csr)],
                   check=True, capture_output=True, timeout=60)
    both = d / "both.pem"
    both.write_bytes(c1.read_bytes() + k1.read_bytes())
    return {"c1": c1, "k1": k1, "c2": c2, "k2": k2, "ek": ek, "der": der, "csr": csr, "both": both}


def _tls_lines(tmp_path: Path, cert: Path, key: Path) -> list[str]:
    proc = _check(_config(tmp_path, web={"tls_cert_file": str(cert), "tls_key_file": str(key)}))
    assert proc.returncode == 2, proc.stderr
    assert "PEM lib" not in proc.stderr and "_ssl.c" not in proc.stderr, proc.stderr
    return [line.strip() for line in proc.stderr.splitlines()[1:]]


def test_swapped_tls_files_are_called_swapped(tmp_path: Path, pems: dict[str, Path]) -> None:
    assert _tls_lines(tmp_path, pems["k1"], pems["c1"]) == [
        f"web.tls_cert_file: cannot load {pems['k1']}: it holds a private key, not a certificate: "
        "web.tls_cert_file and web.tls_key_file swapped?"]


def test_a_tls_certificate_that_is_not_pem_is_named(tmp_path: Path, pems: dict[str, Path]) -> None:
    assert _tls_lines(tmp_path, pems["der"], pems["k1"]) == [
        f"web.tls_cert_file: cannot load {pems['der']}: not PEM (no -----BEGIN line; DER?): give the certificate "
        "in PEM form (openssl x509 -inform DER -in FILE -out FILE.pem)"]


def test_a_tls_key_that_is_not_pem_is_named(tmp_path: Path, pems: dict[str, Path]) -> None:
    text = tmp_path / "key.txt"
    text.write_text("not a key\n")
    assert _tls_lines(tmp_path, pems["c1"], text) == [
        f"web.tls_key_file: cannot load {text}: not PEM (no -----BEGIN line): give the private key in PEM form"]


def test_a_certificate_given_as_the_key_is_named(tmp_path: Path, pems: dict[str, Path]) -> None:
    assert _tls_lines(tmp_path, pems["c1"], pems["c2"]) == [
        f"web.tls_key_file: cannot load {pems['c2']}: it holds a certificate, not a private key"]


def test_another_pem_object_than_a_certificate_is_named(tmp_path: Path, pems: dict[str, Path]) -> None:
    assert _tls_lines(tmp_path, pems["csr"], pems["k1"]) == [
        f"web.tls_cert_file: cannot load {pems['csr']}: it holds CERTIFICATE REQUEST, not a certificate"]


@pytest.mark.parametrize("key", ["k2", "ek"])
def test_a_key_of_another_certificate_is_named(tmp_path: Path, pems: dict[str, Path], key: str) -> None:
    """The RSA key of another certificate (`key values mismatch`) or an EC key for an RSA certificate (`no
    certificate assigned`): the same mistake."""
    assert _tls_lines(tmp_path, pems["c1"], pems[key]) == [
        f"web.tls_key_file: {pems[key]} does not match the certificate in {pems['c1']}: give the key the "
        "certificate was made for (or the certificate of this key)"]


def test_a_good_tls_pair_is_still_ok(tmp_path: Path, pems: dict[str, Path]) -> None:
    proc = _check(_config(tmp_path, web={"tls_cert_file": str(pems["c1"]), "tls_key_file": str(pems["k1"])}))
    assert proc.returncode == 0, proc.stderr


def test_a_certificate_file_without_its_key_and_no_key_file(pems: dict[str, Path]) -> None:
    """The hub's client certificate may hold its key (key_file unset): a file with only the certificate says so."""
    assert preflight.tls_pair_problems("hub.tls.cert_file", "hub.tls.key_file", pems["c1"], None,
                                       ssl.Purpose.SERVER_AUTH) == [
        f"hub.tls.cert_file: cannot load {pems['c1']}: it holds no private key and hub.tls.key_file is not set: "
        "set hub.tls.key_file to the key's file"]
    assert preflight.tls_pair_problems("hub.tls.cert_file", "hub.tls.key_file", pems["both"], None,
                                       ssl.Purpose.SERVER_AUTH) == []


# --- 2. globs: a missing directory, brace alternatives ----------------------------------------------------
def test_a_glob_in_a_missing_directory_names_that_directory(tmp_path: Path) -> None:
    typo = tmp_path / "lgos" / "pmta" / "acct-*.csv"
    proc = _check(_config(tmp_path, sources=[{"name": "acct", "paths": [str(typo)]}]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (f"{tmp_path / 'w.yml'}: warning: sources.0.paths.0: {str(typo)!r} matches no file yet: "
                           f"the directory {tmp_path / 'lgos'} does not exist (a typo? files there are followed once "
                           "it is created)\n")


def test_a_glob_under_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("x")
    pattern = tmp_path / "notes" / "acct-*.csv"
    proc = _check(_config(tmp_path, sources=[{"name": "acct", "paths": [str(pattern)]}]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (f"{tmp_path / 'w.yml'}: warning: sources.0.paths.0: {str(pattern)!r} matches no file "
                           f"yet: {tmp_path / 'notes'} is not a directory\n")


def test_a_glob_in_an_existing_directory_keeps_the_plain_warning(tmp_path: Path) -> None:
    proc = _check(_config(tmp_path))
    assert proc.returncode == 0
    assert proc.stderr == (f"{tmp_path / 'w.yml'}: warning: sources.0.paths.0: "
                           f"{str(tmp_path / 'logs' / 'acct-*.csv')!r} matches no file yet\n")


@pytest.mark.parametrize("key", ["paths", "moved_to"])
def test_brace_alternatives_are_refused_as_double_star_is(tmp_path: Path, key: str) -> None:
    logs = tmp_path / "logs"
    (logs / "acct-1.csv").parent.mkdir(exist_ok=True)
    (logs / "acct-1.csv").write_text("type,timeLogged\n")
    braces = str(logs / "{acct,diag}-*.csv")
    source: dict[str, Any] = {"name": "acct", "paths": [str(logs / "acct-*.csv")]}
    source[key] = [braces]
    proc = _check(_config(tmp_path, sources=[source]))
    assert proc.returncode == 2, proc.stderr
    assert (f"  sources.0.{key}.0: {braces!r}: brace alternatives {{acct,diag}} are not supported (glob matches "
            f"them literally): give one pattern per alternative: {str(logs / 'acct-*.csv')!r}, "
            f"{str(logs / 'diag-*.csv')!r}\n") in proc.stderr, proc.stderr


def test_a_literal_brace_without_alternatives_is_no_problem(tmp_path: Path) -> None:
    literal = str(tmp_path / "logs" / "acct-{x}-*.csv")
    assert preflight.problems(config_from_dict({"sources": [{"name": "acct", "paths": [literal]}],
                                                "state_dir": str(tmp_path / "state"), "listen": LISTEN})) == []


# --- 3. two sources matching the same files ----------------------------------------------------------------
def test_two_sources_with_one_pattern_are_named(tmp_path: Path) -> None:
    pattern = str(tmp_path / "logs" / "acct-*.csv")
    proc = _check(_config(tmp_path, sources=[{"name": "acct", "paths": [pattern]},
                                             {"name": "diag", "paths": [str(tmp_path / "d-*.csv"), pattern]}]))
    assert proc.returncode == 0, proc.stderr
    want = (f"sources.1.paths.1: {pattern!r} is also sources.0.paths.0 (source acct): a file both match is read "
            "for acct only, never for diag; remove it from one of them")
    assert f"warning: {want}\n" in proc.stderr, proc.stderr


def test_a_file_two_sources_match_is_named(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "acct-1.csv").write_text("type,timeLogged\n")
    (logs / "other.csv").write_text("type,timeLogged\n")
    proc = _check(_config(tmp_path, sources=[{"name": "acct", "paths": [str(logs / "acct-*.csv")]},
                                             {"name": "all", "paths": [str(logs / "*.csv")]}]))
    assert proc.returncode == 0, proc.stderr
    want = (f"sources.1.paths.0: {str(logs / '*.csv')!r} also matches {logs / 'acct-1.csv'}, a file of "
            f"sources.0.paths.0 {str(logs / 'acct-*.csv')!r} (source acct): such a file is read for acct only, "
            "never for all; narrow one of the patterns")
    assert proc.stderr == f"{tmp_path / 'w.yml'}: warning: {want}\n", proc.stderr


@pytest.mark.integration
def test_run_logs_the_overlap_at_each_start(tmp_path: Path) -> None:
    """`run` logs only some of check-config's warnings (the tailer says its own of globs matching nothing): a source
    reading none of its files must still be said where a daemon's operator looks, its log."""
    import time

    from tests.conftest import free_port

    pattern = str(tmp_path / "logs" / "acct-*.csv")
    config = _config(tmp_path, listen=f"127.0.0.1:{free_port()}",
                     sources=[{"name": "acct", "paths": [pattern]}, {"name": "copy", "paths": [pattern]}])
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    said = [line.split(": ", 1)[1] for line in log.read_text().splitlines() if " WARNING " in line]
    assert (f"sources.1.paths.0: {pattern!r} is also sources.0.paths.0 (source acct): a file both match is read for "
            "acct only, never for copy; remove it from one of them") in said, said


def test_sources_of_their_own_files_draw_no_overlap_warning(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "acct-1.csv").write_text("type,timeLogged\n")
    (logs / "diag-1.csv").write_text("type,timeLogged\n")
    proc = _check(_config(tmp_path, sources=[{"name": "acct", "paths": [str(logs / "acct-*.csv")]},
                                             {"name": "diag", "paths": [str(logs / "diag-*.csv")]}]))
    assert (proc.returncode, proc.stderr) == (0, "")


# --- 4. a state database that is not SQLite ---------------------------------------------------------------
def _db(tmp_path: Path, content: bytes) -> Path:
    db = tmp_path / "state" / "watchtower.db"
    db.parent.mkdir(mode=0o700)
    db.write_bytes(content)
    db.chmod(0o600)
    return db


@pytest.mark.parametrize(("content", "why"), [
    (os.urandom(4096).replace(b"SQLite", b"sqlite"), "is not a SQLite database (its first 16 bytes are not the "
                                                      "SQLite header)"),
    (b"SQLite f", "is not a SQLite database (8 bytes, shorter than the SQLite header)"),
    (b"", "is an empty file (emptied or truncated outside the daemon), which the daemon refuses to start with"),
])
def test_a_state_database_that_is_not_sqlite_is_a_config_error(tmp_path: Path, content: bytes, why: str) -> None:
    db = _db(tmp_path, content)
    proc = _check(_config(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[1:] == [
        f"  state_dir: {db} {why}: stop the daemon, move the file aside (keep it for inspection) and start "
        "again: counters restart at 0 and existing files are read according to tail.start_position"]


def test_run_refuses_a_corrupt_state_database_with_exit_2(tmp_path: Path) -> None:
    """deploy/watchtower.service restarts every exit but 2: the exit 1 `run` gave (`not a usable SQLite database`)
    restarted it every 5 s for ever."""
    db = _db(tmp_path, b"\x00garbage" * 512)
    proc = _watchtower("run", "--config", str(_config(tmp_path)))
    assert proc.returncode == 2, proc.stderr
    assert f"  state_dir: {db} is not a SQLite database (its first 16 bytes" in proc.stderr
    assert db.read_bytes() == b"\x00garbage" * 512  # kept as it was, for inspection


def test_oneshot_does_not_judge_state_dir(tmp_path: Path) -> None:
    _db(tmp_path, b"junk")
    config = config_from_dict({"sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
                               "state_dir": str(tmp_path / "state"), "listen": LISTEN})
    assert preflight.problems(config, uses_state_dir=False) == []


# --- 5. a state database `run` refuses by its content -------------------------------------------------------
def _started_state(tmp_path: Path, **correlator: Any) -> tuple[Path, Path]:
    """A state directory as a real start leaves it (correlator on, in the daemon's thread)."""
    cfg = _config(tmp_path, correlator={"enabled": True, "worker": "thread", **correlator})
    text = yaml.safe_load(cfg.read_text())
    text["listen"] = f"127.0.0.1:{free_port()}"
    cfg.write_text(yaml.safe_dump(text))
    Watchtower(cfg).start().stop()
    return cfg, tmp_path / "state" / "watchtower.db"


def _sql(db: Path, statement: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(statement)
    conn.close()


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(("change", "said"), [
    ("UPDATE wt_meta SET value='99' WHERE key='schema_version'", "state schema '99' is not this build's (1)"),
    ("UPDATE corr_meta SET value='999' WHERE key='schema_version'", "correlator schema 999 is newer than this "
                                                                     "build's"),
    ("UPDATE corr_meta SET value='abc' WHERE key='schema_version'", "correlator schema_version 'abc' is not a "
                                                                     "version"),
])
def test_check_config_refuses_a_newer_schema_as_run_does(tmp_path: Path, command: str, change: str,
                                                         said: str) -> None:
    """Review 2026-12-05: check-config said `ok` on a state database of a newer version (a downgrade, a restore);
    `run` then exited 2 and the unit stayed down."""
    cfg, db = _started_state(tmp_path)
    _sql(db, change)
    proc = _watchtower(command, "--config", str(cfg))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{db}: {said}" in proc.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_check_config_refuses_another_programs_database_as_run_does(tmp_path: Path, command: str) -> None:
    db = _db(tmp_path, b"")
    db.unlink()
    _sql(db, "CREATE TABLE foo (x)")
    db.chmod(0o644)
    proc = _watchtower(command, "--config", str(_config(tmp_path)))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{db}: has tables (foo) but no watchtower marker" in proc.stderr
    assert db.stat().st_mode & 0o777 == 0o644  # another program's file: refused as it was, mode included


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_check_config_refuses_another_hmac_key_as_run_does(tmp_path: Path, command: str) -> None:
    cfg, db = _started_state(tmp_path, hash_recipients=True)
    key = tmp_path / "state" / "correlator-hmac.key"
    key.write_text("another key " * 4 + "\n")
    proc = _watchtower(command, "--config", str(cfg))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{key}: the HMAC key file holds another key, and the recipients of the correlator store {db}" \
        in proc.stderr
    assert key.read_text() == "another key " * 4 + "\n"


def test_a_state_database_of_this_build_passes_and_is_left_as_it_was(tmp_path: Path) -> None:
    """A read-only open of a WAL database without its -wal and -shm creates them, owned by whoever runs it: a
    `sudo watchtower check-config` would leave root's files that the daemon's user cannot open."""
    cfg, db = _started_state(tmp_path, hash_recipients=True)
    before = sorted(p.name for p in db.parent.iterdir())
    assert "watchtower.db-wal" not in before  # a clean stop leaves none
    proc = _check(cfg)
    assert proc.returncode == 0 and "state_dir" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == before


def test_a_database_whose_marker_is_only_in_its_wal_is_not_judged_from_the_file_alone(tmp_path: Path) -> None:
    """Review 2026-12-05: with a -wal and no -shm (a stop that left the -wal, the -shm removed), the read-only look
    (immutable: nothing created) ignored the -wal and said `no watchtower marker`: `run` refused a good database.
    Neither that nor a hot rollback journal is judged from the file alone (the writer's own checks do)."""
    from exporter.state import content_refusal

    live = tmp_path / "live.db"
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE wt_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO wt_meta VALUES ('schema_version', '1')")
    copy = tmp_path / "copy.db"
    shutil.copyfile(live, copy)
    shutil.copyfile(f"{live}-wal", f"{copy}-wal")  # the -shm not
    conn.close()
    assert content_refusal(copy) is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == ["copy.db", "copy.db-wal"]
    Path(f"{copy}-wal").unlink()  # now the file is all there is: judged (the marker lived in the -wal)
    assert "has no tables but no watchtower marker" in (content_refusal(copy) or "")
    Path(f"{copy}-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + bytes(504))
    assert content_refusal(copy) is None


# --- operability (review 2026-12-05): a read-only mount, world-readable secrets, a store bigger than its disk -----


def test_a_read_only_file_system_is_named_not_a_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state_dir under systemd's ProtectSystem=strict (not in ReadWritePaths=) or a read-only mount was `not
    writable by this user (uid 0)`: chown and chmod cannot fix it. It says read-only, and where to look."""
    state = tmp_path / "state"
    state.mkdir()
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path: str) -> None:
            self._real = real(path)

        def __getattr__(self, name: str) -> int:
            return getattr(self._real, name)

        @property
        def f_flag(self) -> int:
            return self._real.f_flag | os.ST_RDONLY

    monkeypatch.setattr(preflight, "_can_create_in", lambda directory: False)
    monkeypatch.setattr(preflight.os, "statvfs", ReadOnly)
    for where in (state, state / "sub"):  # an existing directory, and one to create in a read-only parent
        problem = preflight._writable_dir("state_dir", where)
        assert problem is not None and "read-only file system" in problem and "ReadWritePaths=" in problem, problem
        assert "uid" not in problem, problem


@pytest.mark.parametrize("key", ["api_key_file", "password_file"])
def test_a_secret_file_every_user_can_read_is_warned(tmp_path: Path, key: str) -> None:
    """`pmta.api_key_file` grants PMTA admin access (pmta-http-api.md §2): a 0644 file passed without a word."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    pmta = {"url": "http://127.0.0.1:1", key: str(secret), **({"username": "admin"} if key == "password_file" else {})}
    config = config_from_dict({"sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]}],
                               "state_dir": str(tmp_path / "state"), "pmta": pmta})
    secret.chmod(0o644)
    (warning,) = [w for w in preflight.run_warnings(config) if w.startswith(f"pmta.{key}")]
    assert "readable by every user" in warning and "chmod 600" in warning, warning
    secret.chmod(0o640)
    assert [w for w in preflight.run_warnings(config) if w.startswith("pmta.")] == []


def test_a_store_cap_above_the_free_space_is_warned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """correlator.max_db_size (20 GiB by default) was never compared with the state disk: on a PMTA host /var/lib
    often shares a file system with PMTA's spool, which the store could fill."""
    config = config_from_dict({"sources": [{"name": "acct", "paths": [str(tmp_path / "acct-*.csv")]}],
                               "state_dir": str(tmp_path / "state"), "correlator": {"max_db_size": "1GiB"}})
    monkeypatch.setattr(preflight, "_free_bytes", lambda directory: 300 * 2**20)
    (warning,) = [w for w in preflight.run_warnings(config) if w.startswith("correlator.max_db_size")]
    assert "1GiB" in warning and "300MiB free" in warning, warning
    monkeypatch.setattr(preflight, "_free_bytes", lambda directory: 2 * 2**30)
    assert [w for w in preflight.run_warnings(config) if w.startswith("correlator.max_db_size")] == []
    off = config.model_copy(update={"correlator": config.correlator.model_copy(update={"enabled": False})})
    monkeypatch.setattr(preflight, "_free_bytes", lambda directory: 0)
    assert [w for w in preflight.run_warnings(off) if w.startswith("correlator.max_db_size")] == []
