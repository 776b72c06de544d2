"""A `*_file` key's problem says why its value is refused; the value is shown only when it is an absolute or `~`
path (the machine check shows it too: `... does not exist`), never what may be the secret pasted into the key.

Review 2026-12 (operator's view): `pmta.password_file: relative/S3cret` said only `not a usable value (not shown:
this key may hold a secret)`, no reason. The first fix showed every string given to a `*_file` key, and with it a
password, a token or a whole PEM private key pasted there (regression review the same day). The values of
pmta.password, pmta.api_key and web.basic_auth_users stay unshown.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError
from hub.config import load_hub_config
from tests.test_config_audit import _minimal, _problems

RELATIVE = ("is a relative path; give an absolute path (or ~/...): the daemon's working directory is not the config "
            "file's")
SECRET = 73194655


FILE_KEYS = {
    "pmta.password_file": lambda v: {"pmta": {"username": "mon", "password_file": v}},
    "pmta.api_key_file": lambda v: {"pmta": {"api_key_file": v}},
    "correlator.hmac_key_file": lambda v: {"correlator": {"hmac_key_file": v}},
    "web.tls_key_file": lambda v: {"web": {"tls_key_file": v, "tls_cert_file": "/c.pem"}},
}


@pytest.mark.parametrize("key", sorted(FILE_KEYS))
def test_a_relative_secret_file_path_is_refused_with_the_reason_not_the_value(tmp_path: Path, key: str) -> None:
    assert _problems(_minimal(tmp_path, **FILE_KEYS[key]("relative/S3cret"))) == [f"{key}: the value given {RELATIVE}"]


PASTED = {
    "a password": "S3cr3t-hunter2",
    "a token": "eyJhbGciOiJIUzI1NiJ9.tok3n",
    "a PEM key": "-----BEGIN PRIVATE KEY-----\nMIIEvQSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n",
}


@pytest.mark.parametrize("key", sorted(FILE_KEYS))
@pytest.mark.parametrize("what", sorted(PASTED))
def test_a_secret_pasted_into_a_file_key_is_not_shown(tmp_path: Path, key: str, what: str) -> None:
    (problem,) = _problems(_minimal(tmp_path, **FILE_KEYS[key](PASTED[what])))
    assert problem.startswith(f"{key}: ") and not any(
        piece in problem for piece in ("S3cr3t", "hunter2", "tok3n", "SECRETKEY", "BEGIN")), problem


def test_an_unknown_users_home_in_a_secret_file_path_is_named(tmp_path: Path) -> None:
    assert _problems(_minimal(tmp_path, **FILE_KEYS["pmta.password_file"](f"~{SECRET}/pw"))) == [
        f"pmta.password_file: '~{SECRET}/pw': cannot expand ~{SECRET} (no such user)"]


def test_what_is_no_path_in_a_file_key_is_still_not_shown(tmp_path: Path) -> None:
    """An unquoted number in password_file is no path but likely the password itself: what it is, not its value."""
    for value in (SECRET, [SECRET]):
        (problem,) = _problems(_minimal(tmp_path, **FILE_KEYS["pmta.password_file"](value)))
        assert problem.startswith("pmta.password_file: expected a path (a string), got a ") and str(SECRET)[:4] \
            not in problem, problem


@pytest.mark.parametrize(("extra", "key"), [
    ({"pmta": {"url": "http://127.0.0.1:1", "username": "mon", "password": ["relative/S3cret"]}}, "pmta.password"),
    ({"pmta": {"url": "http://127.0.0.1:1", "api_key": ["relative/S3cret"]}}, "pmta.api_key"),
    ({"web": {"basic_auth_users": {"prom": ["relative/S3cret"]}}}, "web.basic_auth_users.prom"),
    ({"web": {"basic_auth_users": {"x_file": ["relative/S3cret"]}}}, "web.basic_auth_users.x_file"),
])
def test_a_secrets_own_value_is_still_not_shown(tmp_path: Path, extra: dict, key: str) -> None:
    (problem,) = _problems(_minimal(tmp_path, **extra))
    assert problem.startswith(f"{key}: ") and "S3cret" not in problem, problem


def test_check_config_says_why_a_relative_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump(_minimal(tmp_path, pmta={"url": "http://127.0.0.1:1", "username": "mon",
                                                           "password_file": "relative/S3cret"})))
    capsys.readouterr()
    assert main(["check-config", str(cfg)]) == 2
    assert f"  line 2: pmta.password_file: the value given {RELATIVE}" in capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(("section", "key"), [
    ({"auth": {"username": "hub", "password_file": "relative/S3cret"}}, "hub.auth.password_file"),
    ({"auth": {"bearer_token_file": "relative/S3cret"}}, "hub.auth.bearer_token_file"),
    ({"cursor_key_file": "relative/S3cret"}, "hub.cursor_key_file"),
])
def test_the_hubs_secret_file_paths_are_named_alike(tmp_path: Path, section: dict, key: str) -> None:
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"hub": {"targets": ["http://127.0.0.1:27469"], **section}}))
    with pytest.raises(ConfigError) as refused:
        load_hub_config(cfg)
    assert refused.value.problems == [f"{key}: the value given {RELATIVE}"]
