"""Secrets every local user can read are warned of, wherever they are kept (review 2026-12, operator's view).

`check-config` and `run` warned of a world-readable pmta.password_file, pmta.api_key_file and web.tls_key_file, but
not of correlator.hmac_key_file (the key behind hash_recipients: whoever holds it can confirm who was mailed), nor
of a config file holding a secret inline (pmta.api_key, pmta.password, a plain-text web.basic_auth_users value);
and `watchtower hub` checked the mode of none of its secret files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter import preflight
from exporter.cli import main
from exporter.config import config_from_dict, load_config
from hub import preflight as hub_preflight
from hub.config import HubConfig, load_hub_config

BCRYPT = "$2b$04$iBS/Rhijqwrsqfbo1fvegOUMpuFQQHwhbA0477inzJ1V4F/F778mO"
"""bcrypt of `x`: a hash is no secret to protect by the file's mode (a plain-text password is)."""


def _secret(path: Path, mode: int, text: str = "0123456789abcdef0123456789abcdef\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _daemon(tmp_path: Path, **extra: object) -> dict:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return {"sources": [{"name": "acct", "paths": [str(tmp_path / "logs" / "acct-*.csv")]}],
            "state_dir": str(tmp_path / "state"), "listen": "127.0.0.1:27469", **extra}


def _exposed(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "readable by every user" in w]


def _expected(keys: str, path: Path, mode: int = 0o644, inline: str = "") -> str:
    return (f"{keys}: {path} is readable by every user (mode {mode:04o}){inline}: chmod 600 {path} (or 640 with the "
            "daemon's group)")


# --- the daemon: correlator.hmac_key_file --------------------------------------------------------------------------

def test_a_world_readable_hmac_key_file_is_warned(tmp_path: Path) -> None:
    key = _secret(tmp_path / "hmac.key", 0o644)
    config = config_from_dict(_daemon(tmp_path, correlator={"hash_recipients": True, "hmac_key_file": str(key)}))
    assert _exposed(preflight.run_warnings(config)) == [_expected("correlator.hmac_key_file", key)]
    key.chmod(0o640)
    assert _exposed(preflight.run_warnings(config)) == []


def test_the_default_hmac_key_in_state_dir_is_checked_too(tmp_path: Path) -> None:
    """No hmac_key_file: `run` keys with <state_dir>/correlator-hmac.key, made 0600; one copied in 0644 is warned."""
    (tmp_path / "state").mkdir()
    key = _secret(tmp_path / "state" / "correlator-hmac.key", 0o604)
    config = config_from_dict(_daemon(tmp_path, correlator={"hash_recipients": True}))
    assert _exposed(preflight.run_warnings(config)) == [_expected("correlator.hmac_key_file", key, 0o604)]


def test_an_hmac_key_not_used_is_not_warned(tmp_path: Path) -> None:
    key = _secret(tmp_path / "hmac.key", 0o644)
    for correlator in ({"hash_recipients": False, "hmac_key_file": str(key)},
                       {"enabled": False, "hash_recipients": True, "hmac_key_file": str(key)}):
        assert _exposed(preflight.run_warnings(config_from_dict(_daemon(tmp_path, correlator=correlator)))) == []


def test_check_config_names_a_world_readable_hmac_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole path an operator takes: the warning on check-config's stderr, exit 0."""
    key = _secret(tmp_path / "hmac.key", 0o644)
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump(_daemon(tmp_path, correlator={"hash_recipients": True, "hmac_key_file": str(key)})))
    cfg.chmod(0o600)
    capsys.readouterr()
    assert main(["check-config", str(cfg)]) == 0
    assert f"{cfg}: warning: {_expected('correlator.hmac_key_file', key)}" in capsys.readouterr().err.splitlines()


def test_the_existing_warning_names_the_file_to_chmod(tmp_path: Path) -> None:
    """`chmod 600 (or 640 ...)` named no file: the line now gives the command whole, as for the other keys."""
    pw = _secret(tmp_path / "pw", 0o644)
    config = config_from_dict(_daemon(tmp_path, pmta={"url": "http://127.0.0.1:1", "username": "mon",
                                                      "password_file": str(pw)}))
    assert _exposed(preflight.run_warnings(config)) == [_expected("pmta.password_file", pw)]


# --- the daemon: a config file holding a secret inline ------------------------------------------------------------

INLINE = [
    ({"pmta": {"url": "http://127.0.0.1:1", "api_key": "k3y"}}, "pmta.api_key"),
    ({"pmta": {"url": "http://127.0.0.1:1", "username": "mon", "password": "pw"}}, "pmta.password"),
    ({"web": {"basic_auth_users": {"prom": "plain", "ops": BCRYPT}}}, "web.basic_auth_users.prom"),
    ({"pmta": {"url": "http://127.0.0.1:1", "api_key": "k3y"}, "web": {"basic_auth_users": {"a": "x", "b": "y"}}},
     "pmta.api_key, web.basic_auth_users.a, web.basic_auth_users.b"),
]


@pytest.mark.parametrize(("extra", "keys"), INLINE)
def test_a_world_readable_config_holding_a_secret_inline_is_warned(tmp_path: Path, extra: dict, keys: str) -> None:
    cfg = _secret(tmp_path / "c.yml", 0o644, yaml.safe_dump(_daemon(tmp_path, **extra)))
    config = load_config(cfg)
    several = "," in keys
    inline = f" and holds {'these secrets' if several else 'this secret'} inline"
    assert _exposed(preflight.run_warnings(config, config_path=cfg)) == [_expected(keys, cfg, inline=inline)]
    assert _exposed(preflight.warnings(config, config_path=cfg)) == [_expected(keys, cfg, inline=inline)]
    cfg.chmod(0o640)
    assert _exposed(preflight.run_warnings(config, config_path=cfg)) == []


def test_a_world_readable_config_without_a_secret_in_it_is_not_warned(tmp_path: Path) -> None:
    """0644 is the usual mode of /etc files: only a secret in it makes it one to protect (a bcrypt hash is not)."""
    pw = _secret(tmp_path / "pw", 0o600)
    cfg = _secret(tmp_path / "c.yml", 0o644, yaml.safe_dump(_daemon(
        tmp_path, pmta={"url": "http://127.0.0.1:1", "username": "mon", "password_file": str(pw)},
        web={"basic_auth_users": {"ops": BCRYPT}})))
    assert _exposed(preflight.run_warnings(load_config(cfg), config_path=cfg)) == []


def test_a_piped_config_is_not_judged_by_its_mode(tmp_path: Path) -> None:
    """`--config <(envsubst < tmpl)`: a pipe's mode says nothing of who can read the template."""
    config = config_from_dict(_daemon(tmp_path, pmta={"url": "http://127.0.0.1:1", "api_key": "k3y"}))
    assert _exposed(preflight.run_warnings(config, config_path=Path("/dev/null"))) == []


def test_check_config_names_a_world_readable_config_holding_a_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _secret(tmp_path / "c.yml", 0o644, yaml.safe_dump(_daemon(
        tmp_path, pmta={"url": "http://127.0.0.1:1", "api_key": "k3y"})))
    capsys.readouterr()
    assert main(["check-config", str(cfg)]) == 0
    assert any("pmta.api_key: " in line and "readable by every user" in line
               for line in capsys.readouterr().err.splitlines())


# --- the hub ----------------------------------------------------------------------------------------------------

def _hub(tmp_path: Path, **section: object) -> dict:
    return {"listen": "127.0.0.1:27470", "hub": {"targets": ["http://127.0.0.1:27469"], **section}}


@pytest.mark.parametrize(("section", "key"), [
    ({"auth": {"username": "hub", "password_file": "FILE"}}, "hub.auth.password_file"),
    ({"auth": {"bearer_token_file": "FILE"}}, "hub.auth.bearer_token_file"),
    ({"cursor_key_file": "FILE"}, "hub.cursor_key_file"),
])
def test_the_hubs_world_readable_secret_files_are_warned(tmp_path: Path, section: dict, key: str) -> None:
    secret = _secret(tmp_path / "secret", 0o644)
    text = yaml.safe_dump(section).replace("FILE", str(secret))
    config = HubConfig.model_validate(_hub(tmp_path, **yaml.safe_load(text)))
    assert _exposed(hub_preflight.warnings(config)) == [_expected(key, secret)]
    secret.chmod(0o600)
    assert _exposed(hub_preflight.warnings(config)) == []


def test_the_hubs_tls_keys_are_checked_too(tmp_path: Path) -> None:
    """web.tls_key_file (its listener's) and hub.tls.key_file (its client certificate's, which every daemon
    trusts)."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not read by this check\n")
    server, client = _secret(tmp_path / "server.key", 0o644), _secret(tmp_path / "client.key", 0o644)
    config = HubConfig.model_validate({**_hub(tmp_path, tls={"cert_file": str(cert), "key_file": str(client)}),
                                       "web": {"tls_cert_file": str(cert), "tls_key_file": str(server)}})
    assert sorted(_exposed(hub_preflight.warnings(config))) == [_expected("hub.tls.key_file", client),
                                                                _expected("web.tls_key_file", server)]


def test_a_world_readable_hub_config_holding_a_secret_inline_is_warned(tmp_path: Path) -> None:
    """A plain-text web.basic_auth_users value, or a Prometheus URL carrying a password (sent as basic auth)."""
    cfg = _secret(tmp_path / "hub.yml", 0o644, yaml.safe_dump({
        **_hub(tmp_path, prometheus={"url": "http://mon:s3cret@127.0.0.1:27090", "job": "watchtower"}),
        "web": {"basic_auth_users": {"prom": "plain", "ops": BCRYPT}}}))
    config = load_hub_config(cfg)
    inline = " and holds these secrets inline"
    assert _exposed(hub_preflight.warnings(config, cfg)) == [
        _expected("hub.prometheus.url, web.basic_auth_users.prom", cfg, inline=inline)]
    cfg.write_text(yaml.safe_dump({**_hub(tmp_path), "web": {"basic_auth_users": {"ops": BCRYPT}}}))
    assert _exposed(hub_preflight.warnings(load_hub_config(cfg), cfg)) == []


def test_the_hub_warns_of_them_at_start(tmp_path: Path) -> None:
    from hub.app import startup_warnings

    secret = _secret(tmp_path / "cursor.key", 0o644)
    config = HubConfig.model_validate(_hub(tmp_path, cursor_key_file=str(secret)))
    assert _exposed(startup_warnings(config)) == [_expected("hub.cursor_key_file", secret)]
