"""Config loading and `watchtower check-config`: every problem reported with its key path, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, config_from_dict, load_config, parse_duration, parse_size

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_example_is_valid(capsys):
    assert main(["check-config", str(ROOT / "examples" / "watchtower.yml")]) == 0
    cfg = load_config(ROOT / "examples" / "watchtower.yml")
    assert [s.label for s in cfg.sources] == ["acct", "diag", "bounce", "fbl"]
    assert cfg.sources[2].records == ["rb", "rs"]
    assert cfg.listen_port == 9469


def test_check_config_lists_every_problem_with_its_key_path(tmp_path: Path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "sources:\n  - paths: ['/x/*.csv']\n    records: [d, nonsense]\n    colour: red\n"
        "listen: 'nohost'\ntail:\n  poll_interval: soon\nbogus: 1\n"
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: invalid configuration" in err
    for expected in ("sources.0.records: unknown record type 'nonsense'",
                     "sources.0.colour: unknown key", "state_dir: required key missing",
                     "listen: expected host:port, got 'nohost'",
                     "tail.poll_interval: invalid duration 'soon'", "bogus: unknown key"):
        assert expected in err, expected


def test_duplicate_source_names_are_rejected(tmp_path: Path):
    f = tmp_path / "c.yml"
    f.write_text("sources:\n - {paths: ['/a/acct-*.csv']}\n - {paths: ['/b/acct-*.csv']}\nstate_dir: /s\n"
                 "listen: ':9469'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert "source names must be unique; repeated: acct" in exc.value.problems[0]


def test_record_aliases_and_units():
    assert parse_duration("250ms") == 0.25 and parse_duration("7d") == 604800 and parse_duration(3) == 3.0
    assert parse_size("1MiB") == 1048576 and parse_size("512KiB") == 524288 and parse_size(10) == 10
    with pytest.raises(ValueError):
        parse_duration(True)


def test_unreadable_file_exits_2(tmp_path: Path, capsys):
    assert main(["check-config", str(tmp_path / "missing.yml")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- issue 9: private by default, honest checks ----------------------------------------------------



def _minimal(tmp_path: Path, **extra) -> dict:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return {"sources": [{"paths": [str(tmp_path / "logs" / "acct-*.csv")]}], "state_dir": str(tmp_path / "state"),
            **extra}


def test_listener_is_loopback_unless_an_address_is_named(tmp_path: Path):
    assert config_from_dict(_minimal(tmp_path)).listen == "127.0.0.1:9469"
    assert config_from_dict(_minimal(tmp_path, listen=":9469")).listen_host == "127.0.0.1"
    assert config_from_dict(_minimal(tmp_path, listen="0.0.0.0:9469")).listen_host == "0.0.0.0"
    assert config_from_dict(_minimal(tmp_path, listen="[::]:9469")).listen_host == "::"
    example = load_config(ROOT / "examples" / "watchtower.yml")
    assert example.listen_host == "127.0.0.1" and example.correlator.hash_recipients
    assert not example.web.basic_auth_users  # loopback needs none; docs/security.md for exposing it
    with pytest.raises(ConfigError) as exc:
        config_from_dict(_minimal(tmp_path, listen="::1:9469"))
    assert "brackets" in exc.value.problems[0]


def _check(tmp_path: Path, cfg: dict | str | bytes, capsys, *, flag: bool = False) -> tuple[int, str]:
    f = tmp_path / "c.yml"
    if isinstance(cfg, dict):
        f.write_text(yaml.safe_dump(cfg))
    elif isinstance(cfg, bytes):
        f.write_bytes(cfg)
    else:
        f.write_text(cfg)
    capsys.readouterr()
    rc = main(["check-config", "--config", str(f)] if flag else ["check-config", str(f)])
    return rc, capsys.readouterr().err


FOREIGN = "192.0.2.1"
"""TEST-NET-1 (RFC 5737): an address no host of ours has."""


def _assignable(host: str) -> bool:
    import socket

    try:
        with socket.socket() as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(_assignable(FOREIGN), reason=f"{FOREIGN} is an address of this host")
def test_a_listen_address_not_on_this_host_is_a_config_error_and_waited_for_by_run(tmp_path: Path, capsys,
                                                                                     monkeypatch) -> None:
    """Review 2026-12: `listen: "10.254.254.254:47412"` resolved, so check-config said ok, and `run` exited 1 later.
    check-config names `listen` (exit 2). `run` waits a while for it first (at boot an IPv6 address is tentative
    for a second or two, a VIP comes when keepalived gives it: exit 2, which the shipped unit does not restart,
    left the daemon down for good), then exits 1, having written no state database."""
    import exporter.daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "LISTEN_ADDRESS_WAIT", 1.0)
    f = tmp_path / "c.yml"
    f.write_text(yaml.safe_dump(_minimal(tmp_path, listen=f"{FOREIGN}:47512")))
    rc, err = main(["check-config", str(f)]), capsys.readouterr().err
    assert (rc, err.splitlines()) == (2, [
        f"{f}: invalid configuration",
        f"  listen: {FOREIGN} is not an address of this host (cannot assign requested address): name one of its "
        "addresses, 0.0.0.0 or [::] for all, or 127.0.0.1"]), err
    rc, err = main(["run", "--config", str(f)]), capsys.readouterr().err
    said = [line.split(" ", 2)[2] for line in err.splitlines()]
    bind = f"listener could not bind {FOREIGN}:47512: cannot assign requested address (listen: {FOREIGN}:47512)"
    assert rc == 1, err
    assert f"WARNING watchtower.daemon: {bind}: waiting up to 1 s for it (an address still being assigned: IPv6 " \
        "duplicate address detection, a VIP)" in said, err
    assert f"ERROR watchtower.daemon: {bind} (waited 1 s for it)" in said, err
    assert not (tmp_path / "state" / "watchtower.db").exists()


@pytest.mark.skipif(_assignable(FOREIGN), reason=f"{FOREIGN} is an address of this host")
def test_a_stop_while_waiting_for_the_listen_address_ends_the_wait(tmp_path: Path) -> None:
    """SIGTERM during the wait for a listen address was ignored: the daemon exited 1 after the whole 30 s (systemd's
    TimeoutStopSec= races that with a SIGKILL). It stops at once, exit 0, having written no state database."""
    import signal
    import time

    f = tmp_path / "c.yml"
    f.write_text(yaml.safe_dump(_minimal(tmp_path, listen=f"{FOREIGN}:47514")))
    err = tmp_path / "err.log"
    with err.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(f)], stdout=subprocess.DEVNULL,
                                stderr=out, cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 60
        while "waiting up to 30 s" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)  # a hang guard far above the 0.5 s a stop takes; the wait itself is 30 s
    finally:
        proc.kill()
    assert rc == 0, err.read_text()
    assert "stopped while waiting for the listen address; nothing was read or written" in err.read_text()
    assert "Traceback" not in err.read_text()
    assert not (tmp_path / "state" / "watchtower.db").exists()


def test_a_listen_port_in_use_is_no_config_problem(tmp_path: Path, capsys):
    """check-config run beside the daemon it checks (its port taken by that daemon) says ok: only the address is
    checked (a bind to another port of it); `run` says a port in use itself (exit 1)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 47513))
        taken.listen(1)
        rc, err = _check(tmp_path, _minimal(tmp_path, listen="127.0.0.1:47513"), capsys)
    assert rc == 0 and "  listen:" not in err, err


def test_check_config_checks_the_machine_not_only_the_shape(tmp_path: Path, capsys):
    cert = tmp_path / "tls.crt"
    cert.write_text("not a certificate")
    base = _minimal(tmp_path)
    cases = {
        "classify.isp_file: ": {"classify": {"isp_file": str(tmp_path / "nope.yaml")}},
        "classify.replies_file: ": {"classify": {"replies_file": str(tmp_path)}},
        "web.tls_cert_file: " + str(tmp_path / "missing.crt") + " does not exist": {
            "web": {"tls_cert_file": str(tmp_path / "missing.crt"), "tls_key_file": str(cert)}},
        "web: tls_key_file is set but tls_cert_file is not": {"web": {"tls_key_file": str(cert)}},
        "web: tls_cert_file is set but tls_key_file is not": {"web": {"tls_cert_file": str(cert)}},
        "web.tls_cert_file: cannot load": {"web": {"tls_cert_file": str(cert), "tls_key_file": str(cert)}},
        "state_dir: cannot create " + str(tmp_path / "absent" / "state") + ": its parent": {
            "state_dir": str(tmp_path / "absent" / "state")},
        "state_dir: cannot create": {"state_dir": str(cert / "state")},
        "listen: host 'no-such-host.invalid' does not resolve": {"listen": "no-such-host.invalid:9469"},
        "pmta.password_file: ": {"pmta": {"url": "http://127.0.0.1:1", "username": "u",  # read with pmta.url only
                                           "password_file": str(tmp_path / "pw")}},
        "pmta: set password or password_file, not both": {
            "pmta": {"username": "u", "password": "x", "password_file": str(cert)}},
        "sources.0.paths.0: '': empty pattern": {"sources": [{"paths": [""]}]},
        "sources.0.paths.0: 'logs/acct-*.csv': must be an absolute path": {"sources": [{"paths": ["logs/acct-*.csv"]}]},
        "sources.0.paths.0: '/var/log/pmta/acct-[0-9.csv': unclosed '['": {"sources": [{"paths": ["/var/log/pmta/acct-[0-9.csv"]}]},
        "names a directory": {"sources": [{"paths": ["/var/log/pmta/"]}]},
    }
    for expected, patch in cases.items():
        rc, err = _check(tmp_path, {**base, **patch}, capsys)
        assert rc == 2 and expected in err, (expected, err)
        assert "Traceback" not in err
    rc, err = _check(tmp_path, base, capsys, flag=True)
    assert rc == 0 and "matches no file yet" in err  # a warning, not an error


def test_check_config_rejects_non_utf8_and_duplicate_keys(tmp_path: Path, capsys):
    rc, err = _check(tmp_path, b"sources: []\nstate_dir: /s\n# caf\xe9\n", capsys)
    assert rc == 2 and "line 3: not UTF-8 (byte 0xe9" in err
    rc, err = _check(tmp_path, f"sources:\n  - paths: ['{tmp_path}/a-*.csv']\nstate_dir: {tmp_path}/s\n"
                     f"listen: 127.0.0.1:1\nlisten: 0.0.0.0:9469\n", capsys)
    assert rc == 2 and "duplicate key 'listen' (first on line 4, again on line 5)" in err
    rc, err = _check(tmp_path, "web:\n  basic_auth_users:\n    a: x\n    a: y\n", capsys)
    assert rc == 2 and "duplicate key 'a'" in err


def test_run_reports_config_problems_in_one_line_without_traceback(tmp_path: Path):
    cfg = _minimal(tmp_path, classify={"isp_file": str(tmp_path / "missing-isps.yaml")})
    f = tmp_path / "c.yml"
    f.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "exporter", "run", "--config", str(f)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and f"classify.isp_file: {tmp_path / 'missing-isps.yaml'} does not exist" \
        in out.stderr
    assert out.stderr.count("\n") == 2  # the file, then one line per problem


def test_unwritable_state_dir_parent_is_reported(tmp_path: Path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: make the directory immutable instead
        if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i not supported here and running as root")
    else:
        parent.chmod(0o555)
    try:
        rc, err = _check(tmp_path, _minimal(tmp_path, state_dir=str(parent / "state")), capsys)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(parent)], check=True)
        parent.chmod(0o755)
    assert rc == 2 and f"state_dir: cannot create {parent / 'state'}: {parent} is not writable by this user" in err


def test_pmta_password_file(tmp_path: Path):
    pw = tmp_path / "pmta-password"
    pw.write_text("s3cret  \nignored\n")
    cfg = config_from_dict(_minimal(tmp_path, pmta={"username": "mon", "password_file": str(pw)}))
    assert cfg.pmta.resolved_password() == "s3cret  " and cfg.pmta.password is None
    assert config_from_dict(_minimal(tmp_path, pmta={"username": "mon", "password": "x"})).pmta.resolved_password() == "x"


def test_basic_auth_users_nobody_could_log_in_as_are_config_errors(tmp_path: Path, capsys):
    """A user name holding ':' (basic auth splits at the first one) or a hash bcrypt cannot check: `check-config`
    said ok, and `run` only warned while those users got 401 for ever."""
    import bcrypt

    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    bad = tmp_path / "auth.yml"
    bad.write_text(yaml.safe_dump({
        "sources": [{"name": "acct", "paths": [str(tmp_path / "*.csv")]}], "state_dir": str(tmp_path / "state"),
        "web": {"basic_auth_users": {"prom:etheus": good, "grafana": good.replace("$04$", "$99$", 1), "ops": good}},
    }))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "web.basic_auth_users: " in err and "user 'prom:...': a user name cannot hold ':'" in err, err
    assert "user 'grafana': bcrypt cannot check this hash (cost 99 is outside 04..31)" in err
    assert "'ops'" not in err and good not in err


@pytest.mark.parametrize("mangle", ["cut", "run-on", "bad-char", "2x", "one-digit-cost", "cut-after-cost"])
def test_a_value_that_starts_like_a_bcrypt_hash_is_never_taken_as_a_plain_password(tmp_path: Path, capsys,
                                                                                   mangle: str):
    """Review 2026-12: a hash cut by one character when pasted (`$2b$10$` + 52) did not match the bcrypt pattern and
    was taken as a plain-text password: the real password failed, the hash's text logged in. Anything that starts
    like a bcrypt hash (`$2a$`, `$2b$`, `$2y$`, `$2x$` and a cost) is a hash, and a malformed one a config error
    naming the user, without its value (check-config and `run` exit 2)."""
    import bcrypt

    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(10)).decode()
    bad = {"cut": good[:-1], "run-on": good + "Q", "bad-char": good[:-1] + "!", "2x": "$2x$" + good[4:],
           "one-digit-cost": "$2b$9$" + good[7:], "cut-after-cost": good[:7]}[mangle]
    cfg = {"sources": [{"name": "acct", "paths": [str(tmp_path / "*.csv")]}], "state_dir": str(tmp_path / "state"),
           "web": {"basic_auth_users": {"ops": good, "prom": bad}}}
    f = tmp_path / "c.yml"
    f.write_text(yaml.safe_dump(cfg))
    for command in (["check-config"], ["run", "--config"]):
        capsys.readouterr()
        rc, err = main([*command, str(f)]), capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith(f"{tmp_path / 'c.yml'}: invalid configuration\n  line 7: web.basic_auth_users: user "
                              "'prom': bcrypt cannot check this hash ("), err
        assert err.endswith("): nobody could log in as it\n") and err.count("\n") == 2, err
        assert bad not in err and good[7:] not in err and good[20:40] not in err and "'ops'" not in err


@pytest.mark.parametrize(("value", "ok"), [(20, False), ("1MiB", False), ("64MiB", True), ("20GiB", True)])
def test_a_db_size_cap_too_small_to_hold_a_store_is_refused(tmp_path: Path, capsys, value: object, ok: bool):
    """`max_db_size: 20` is 20 bytes: every timeline was pruned as soon as written, with no word about it."""
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"sources": [{"name": "acct", "paths": [str(tmp_path / "*.csv")]}],
                                   "state_dir": str(tmp_path / "state"), "correlator": {"max_db_size": value}}))
    assert main(["check-config", str(cfg)]) == (0 if ok else 2)
    if not ok:
        assert f"correlator.max_db_size: must be at least 64MiB, got {value!r}" in capsys.readouterr().err


@pytest.mark.parametrize("secret", ["", "   ", "\t\n"])
def test_an_empty_basic_auth_password_is_a_config_error_naming_the_user(tmp_path: Path, capsys, secret: str):
    """`prom: ""` was only a plain-text warning, and `curl -u prom:` got 200: no password at all."""
    rc, err = _check(tmp_path, {"sources": [{"name": "acct", "paths": [str(tmp_path / "*.csv")]}],
                                "state_dir": str(tmp_path / "state"),
                                "web": {"basic_auth_users": {"ops": "fine-pw", "prom": secret}}}, capsys)
    assert (rc, err) == (2, f"{tmp_path / 'c.yml'}: invalid configuration\n  line 7: web.basic_auth_users: user 'prom': "
                            "an empty password: anyone could log in as it; give a bcrypt hash\n")


@pytest.mark.parametrize(("text", "problem"), [
    ("", "the file is empty: a config is a YAML mapping of keys"),
    ("\n  \n", "the file is empty: a config is a YAML mapping of keys"),
    ("# only a comment\n---\n", "the file holds no keys (only comments or blank lines): a config is a YAML mapping "
                                "of keys"),
    ("- a list\n", "top level must be a mapping of keys"),
])
def test_an_empty_config_file_says_it_is_empty(tmp_path: Path, capsys, text: str, problem: str):
    """An empty file (or /dev/null) said only `top level must be a mapping of keys`."""
    rc, err = _check(tmp_path, text, capsys)
    assert (rc, err) == (2, f"{tmp_path / 'c.yml'}: invalid configuration\n  {problem}\n")


def test_dev_null_as_config_says_it_is_empty(capsys):
    assert main(["check-config", os.devnull]) == 2
    assert capsys.readouterr().err == (f"{os.devnull}: invalid configuration\n  the file is empty: a config is a YAML "
                                       "mapping of keys\n")


@pytest.mark.parametrize("listen", ["127.0.0.1:3\u00b2", "127.0.0.1:\uff19\uff14\uff16\uff19", "127.0.0.1:99999",
                                    "127.0.0.1:", "127.0.0.1:+80", "127.0.0.1: 80"])
def test_a_listen_port_is_ascii_digits_up_to_65535(tmp_path: Path, listen: str):
    """`3²` printed Python's `invalid literal for int() with base 10`, and full-width digits were accepted."""
    with pytest.raises(ConfigError) as exc:
        config_from_dict(_minimal(tmp_path, listen=listen))
    assert exc.value.problems == [f"listen: expected host:port, got {listen!r} (the port is a number from 0 to "
                                  "65535, in ASCII digits)"]


@pytest.mark.parametrize("home", ["", "relative/dir"])
def test_a_home_that_cannot_expand_a_tilde_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    home: str) -> None:
    """`HOME=` made `~/state` read as `/state`, silently; a relative HOME made the error blame the value."""
    from exporter.config import ConfigError

    monkeypatch.setenv("HOME", home)
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"sources": [{"name": "acct", "paths": ["~/logs/acct-*.csv"]}],
                                    "state_dir": "~/state"}))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    said = str(refused.value)
    assert f"'~/state': HOME is {home!r}, not an absolute path, so ~ cannot be expanded" in said, said
    assert f"'~/logs/acct-*.csv': HOME is {home!r}" in said, said


@pytest.mark.parametrize(("value", "hint"), [("*Hunter2Secret", "a value starting with `*` is an alias to YAML"),
                                             ("!Hunter2Secret", "a value starting with `!` is a tag to YAML"),
                                             ("!Hunt'er2Secret", "a value starting with `!` is a tag to YAML"),
                                             ("!Hunt!er2Secret", "a value starting with `!` is a tag to YAML"),
                                             ("!!int Hunter2Secret", "quote it if it is text"),
                                             ("!!timestamp Hunter2Secret", "quote it if it is text")])
def test_an_unquoted_secret_read_as_an_alias_or_tag_is_not_repeated(tmp_path: Path, capsys, value: str,
                                                                   hint: str) -> None:
    """PyYAML quotes the alias or tag it cannot use: an unquoted password starting with `*` or `!` came out whole in
    check-config's output and, on SIGHUP, in the daemon's log."""
    text = f"sources: [{{name: acct, paths: ['{tmp_path}/acct-*.csv']}}]\nstate_dir: {tmp_path}/state\n" \
           f"pmta:\n  url: https://127.0.0.1:8080\n  password: {value}\n"
    rc, err = _check(tmp_path, text, capsys)
    assert rc == 2, err
    assert "unter2" not in err and "Traceback" not in err, err
    assert hint in err and "quote it" in err, err


def test_a_value_yaml_cannot_construct_is_a_config_error_not_a_traceback(tmp_path: Path, capsys) -> None:
    """An impossible date (`2026-02-30`) or an integer of more than 4300 digits is a ValueError of PyYAML's
    constructors, not a YAMLError: check-config printed a traceback (exit 1), and a SIGHUP logged one."""
    for value in ("2026-02-30", "9" * 5000):
        text = f"sources: [{{name: acct, paths: ['{tmp_path}/acct-*.csv']}}]\nstate_dir: {tmp_path}/state\n" \
               f"log_level: {value}\n"
        rc, err = _check(tmp_path, text, capsys)
        assert rc == 2, err
        assert "Traceback" not in err and "not valid YAML: a value it cannot read (" in err, err


def test_yaml_merge_keys_are_read_as_yaml_reads_them_and_a_key_repeated_beside_one_is_refused(tmp_path: Path, capsys):
    """Operator review 2026-12-07: `<<: *anchor` (one source's settings for the next) was refused as a `!` tag."""
    logs = tmp_path / "logs"
    logs.mkdir()
    text = (f"sources:\n  - &acct\n    name: acct\n    paths: ['{logs}/acct-*.csv']\n"
            f"    moved_to: ['{logs}/old/acct-*.csv']\n"
            f"  - <<: *acct\n    name: diag\n    paths: ['{logs}/diag-*.csv']\nstate_dir: {tmp_path}/s\n")
    f = tmp_path / "merge.yml"
    f.write_text(text)
    cfg = load_config(f)
    assert [(s.name, s.paths, s.moved_to) for s in cfg.sources] == [
        ("acct", [f"{logs}/acct-*.csv"], [f"{logs}/old/acct-*.csv"]),
        ("diag", [f"{logs}/diag-*.csv"], [f"{logs}/old/acct-*.csv"])]
    rc, err = _check(tmp_path, text.replace("    name: diag\n", "    name: diag\n    name: fbl\n"), capsys)
    assert rc == 2 and "duplicate key 'name' (first on line 7, again on line 8)" in err, err


def test_merge_keys_neither_repeat_a_key_nor_expand_without_bound(tmp_path: Path, capsys):
    """Review of the merge keys (2026-12-07): a key repeated inside a merged mapping, or `<<` twice, was taken (the
    last value won) where a repeated key is refused; and merges of merges multiply (ten aliases a level, eight levels:
    10**8 keys on PyYAML 6.0.1, which pyproject allows): refused, naming the line, at once."""
    base = f"sources:\n  - paths: ['{tmp_path}/a-*.csv']\nstate_dir: {tmp_path}/s\n"
    rc, err = _check(tmp_path, base + "tail:\n  <<: {start_position: end, start_position: beginning}\n", capsys)
    assert rc == 2 and "line 5, column" in err and "duplicate key 'start_position' (first on line 5, again on line 5)" \
        in err, err
    rc, err = _check(tmp_path, base + "tail:\n  <<: {start_position: end}\n  <<: {rescan_interval: 5}\n", capsys)
    assert rc == 2 and "line 6, column 3" in err and "merge key `<<` repeated" in err, err
    bomb = "&a0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}"
    for n in range(1, 9):  # each level's anchor first met inside the next one's merge: nothing flattened yet
        bomb = f"&a{n} {{<<: [{bomb}, {', '.join([f'*a{n - 1}'] * 9)}]}}"
    rc, err = _check(tmp_path, base + f"x: {bomb}\n", capsys)
    assert rc == 2 and "merges copy more than 100,000 keys in all" in err, err
    # review 2026-12-07: mappings each merging one big anchor add up (1,600 of 9,999 keys: 25 s, 523 MB)
    big = "{" + ", ".join(f"k{i}: 1" for i in range(9999)) + "}"
    rc, err = _check(tmp_path, base + f"a: &a {big}\nx:\n" + "  - {<<: *a}\n" * 11, capsys)
    assert rc == 2 and "line 16, column 6" in err and "merges copy more than 100,000 keys in all" in err, err
    # a mapping holding one that merges it 5,000 times, as a value (12.6 s) or as a key (21.7 s at 10,000): PyYAML
    # walked its pairs once per alias before it refused the recursive node
    keys, aliases = ", ".join(f"k{i}: 1" for i in range(5000)), ",".join(["*a"] * 5000)
    for text in (f"x: &a {{{keys}, b: &b {{<<: [{aliases}]}}, <<: *b}}\n",
                 f"x: &a\n  ? &k {{{keys}, <<: [{aliases}]}}\n  : 1\n  <<: *k\n"):
        rc, err = _check(tmp_path, base + text, capsys)
        assert rc == 2 and "line 4, column 4: not valid YAML: an alias refers to a mapping or list that holds it" in \
            err, err


def test_aliases_that_expand_a_config_past_a_million_values_are_refused_at_once(tmp_path: Path, capsys):
    """Review 2026-12-07: 1 MiB of `- *b`, `b` a mapping of 3,000 keys, is 750 M values to the config's checks (one
    `unknown key` each): check-config ran out of memory at 24 GB. Aliases may add at most MAX_ALIASED_VALUES values
    to what the file writes; past that, refused before anything is built, naming the list where they add up."""
    big = "{" + ", ".join(f"k{i}: 1" for i in range(200)) + "}"
    text = f"state_dir: {tmp_path}/s\nb: &b {big}\nsources:\n" + "  - *b\n" * 2_500  # 2,500 x 401 values
    rc, err = _check(tmp_path, text, capsys)
    assert rc == 2 and err.splitlines()[1:] == [
        "  line 4, column 3: not valid YAML: aliases expand this to more than 1,000,000 values more than the file "
        "writes (each `*alias` stands for all its anchor holds; 10 characters of a text count as one value)"], err
    rc, err = _check(tmp_path, text.replace("  - *b\n" * 2_500, "  - *b\n" * 2_000), capsys)  # 802k: checked
    assert rc == 2 and "unknown key" in err and "aliases expand" not in err, err[:300]
    # its review: one long text aliased (a path of 500,000 characters 20 times: 10 MB of warnings, one a copy; a
    # replies table's 2 MiB example 690,000 times: searched in full each time, hours): 10 characters count as one
    long = "/tmp/" + "a" * 100_000
    rc, err = _check(tmp_path, f"state_dir: {tmp_path}/s\nsources:\n  - paths: [&p '{long}'" + ", *p" * 101
                     + "]\n", capsys)
    assert rc == 2 and "line 3, column 12: not valid YAML: aliases expand this" in err and len(err) < 500, err[:300]
    rc, err = _check(tmp_path, f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['{long}']\n", capsys)
    assert rc == 2 and err.splitlines()[1:] == [
        f"  line 3: sources.0.paths.0: '{long[:76]}...: 100,005 characters: longer than any path this system opens "
        "(4,096)"], err[:300]


def test_anchors_that_each_double_the_one_before_are_refused_in_bounded_memory(tmp_path: Path):
    """Review 2026-12-07: the expanded sizes were kept exact, 2**n for the n-th of anchors each holding the one before
    twice: 1.8 GB for a 4 MB classification table before the refusal (a MemoryError past it). Capped past the bound."""
    import tracemalloc

    from exporter.classify.isp import read_yaml

    table = tmp_path / "isps.yaml"
    table.write_text("- &0 x\n" + "".join(f"- &{i} [*{i - 1}, *{i - 1}]\n" for i in range(1, 40_000)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="aliases expand this to more than 1,000,000 values"):
            read_yaml(table, "isps.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20, peak  # exact sizes: 40,000**2 / 2 bits of integers alone, 100 MB


def test_a_glob_under_a_home_that_cannot_be_expanded_is_shown_cut(tmp_path: Path, capsys,
                                                                  monkeypatch: pytest.MonkeyPatch):
    """Review 2026-12-07: the HOME problem wrote the whole pattern out (20,000 characters on one line)."""
    monkeypatch.setenv("HOME", "relhome")
    rc, err = _check(tmp_path, f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['~/{'a' * 20_000}/acct-*.csv']\n",
                     capsys)
    assert rc == 2 and "HOME is 'relhome', not an absolute path" in err and max(map(len, err.splitlines())) < 300, \
        err[:400]


def test_a_mapping_that_merges_and_overrides_can_be_merged_again(tmp_path: Path):
    """Review 2026-12-07: once PyYAML had flattened a mapping with an inline merge, the merged key and the key
    overriding it were both taken for its own: merging that mapping again was refused as a repeated key."""
    logs = tmp_path / "logs"
    logs.mkdir()
    f = tmp_path / "merge.yml"
    f.write_text(f"sources:\n  - &acct\n    <<: &common {{moved_to: ['{logs}/old/*.csv'], records: [d, b]}}\n"
                 f"    name: acct\n    paths: ['{logs}/acct-*.csv']\n    records: [d]\n"
                 f"  - <<: *acct\n    name: diag\n    paths: ['{logs}/diag-*.csv']\nstate_dir: {tmp_path}/s\n")
    cfg = load_config(f)
    assert [(s.name, s.records, s.moved_to) for s in cfg.sources] == [
        ("acct", ["d"], [f"{logs}/old/*.csv"]), ("diag", ["d"], [f"{logs}/old/*.csv"])]
