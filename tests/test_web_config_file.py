"""`--web.config.file`: the listener's TLS and basic auth from node_exporter's web configuration file (exporter-toolkit
format), as node_exporter takes it: a host's existing web-config.yml serves watchtower too (review 2026-12-07: the
brief names node_exporter's flag, and the command line refused it)."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from exporter.cli import main
from tests.conftest import REPO, free_port, write_config
from tests.hub.test_hub_unit import self_signed

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _web_file(directory: Path, text: str) -> Path:
    path = directory / "web-config.yml"
    path.write_text(text)
    return path


@needs_openssl
@pytest.mark.integration
def test_run_serves_https_with_the_users_of_a_node_exporter_web_config(tmp_path: Path) -> None:
    """Paths relative to the web config file's directory, as exporter-toolkit reads them; the healthcheck takes the
    same flag (it asks the listener over HTTPS with the users' auth)."""
    webdir = tmp_path / "web"
    webdir.mkdir()
    self_signed(webdir, "server")
    web = _web_file(webdir, "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n"
                    f"basic_auth_users:\n  prom: {_hash('s3cret')}\n")
    config = write_config(tmp_path)
    listen = yaml.safe_load(config.read_text())["listen"]
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", "--config", str(config),
                                 "--web.config.file", str(web)], stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        client = httpx.Client(verify=ssl.create_default_context(cafile=webdir / "server.pem"), trust_env=False)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                answer = client.get(f"https://{listen}/metrics", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.05)
        assert answer.status_code == 401
        assert client.get(f"https://{listen}/metrics", auth=("prom", "nope"), timeout=5).status_code == 401
        served = client.get(f"https://{listen}/metrics", auth=("prom", "s3cret"), timeout=5)
        assert served.status_code == 200 and "watchtower_build_info" in served.text
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the port
            httpx.get(f"http://{listen}/metrics", timeout=2, trust_env=False)
        env = {**os.environ, "WATCHTOWER_HEALTHCHECK_USER": "prom", "WATCHTOWER_HEALTHCHECK_PASSWORD": "s3cret"}
        health = subprocess.run([sys.executable, "-m", "exporter", "healthcheck", "--config", str(config),
                                 "--web.config.file", str(web)], capture_output=True, text=True, timeout=30,
                                cwd=REPO, env=env)
        assert health.returncode == 0 and health.stdout.startswith("healthy:"), health.stdout + health.stderr
        # SIGHUP checks the web config file again with the config file: a problem names it; a change is said
        web.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  min_version: TLS13\n")
        proc.send_signal(signal.SIGHUP)
        _wait_said(log, f"SIGHUP: {web} is invalid now (line 4: tls_server_config.min_version: not supported")
        web.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n")
        proc.send_signal(signal.SIGHUP)
        _wait_said(log, f"SIGHUP: {config} (with {web}) changed web.basic_auth_users.prom since the start")
        assert client.get(f"https://{listen}/metrics", auth=("prom", "s3cret"), timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        stopped = proc.wait(timeout=30)
    assert stopped == 0, log.read_text()[-2000:]


def _wait_said(log: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def test_an_empty_web_config_file_is_exporter_toolkits_empty_config(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    web = _web_file(tmp_path, "# nothing yet\n")
    assert main(["check-config", str(config), "--web.config.file", str(web)]) == 0
    assert capsys.readouterr().out == f"{config}: ok\n"


@pytest.mark.parametrize(("text", "want"), [
    ("tls_server_config:\n  cert_file: a.pem\n  key_file: a-key.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
     "  client_ca_file: ca.pem\n",
     ["  line 4: tls_server_config.client_auth_type: 'RequireAndVerifyClientCert' is not supported: client "
      "certificates (mutual TLS) are not checked by watchtower's listener; remove it, or terminate TLS in a reverse "
      "proxy in front of watchtower (docs/security.md)",
      "  line 5: tls_server_config.client_ca_file: not supported: client certificates (mutual TLS) are not checked "
      "by watchtower's listener; remove it, or terminate TLS in a reverse proxy in front of watchtower "
      "(docs/security.md)"]),
    ("tls_server_config:\n  cert_file: a.pem\n",
     ["  line 1: tls_server_config: key_file must be set too (HTTPS needs both files; neither: plain HTTP)"]),
    ("basic_auth_users:\n  prom: ''\nhttp_server_config:\n  headers: {X-Frame-Options: deny}\n",
     ["  line 2: basic_auth_users.prom: an empty password: anyone could log in as it; give a bcrypt hash",
      "  line 4: http_server_config.headers: not supported: the listener sets no extra response headers; remove it, "
      "or terminate TLS in a reverse proxy in front of watchtower (docs/security.md)"]),
    # only bcrypt hashes, as exporter-toolkit compares every value with bcrypt (the value never shown)
    ("basic_auth_users:\n  ops: hunter2-in-clear\n",
     ["  line 2: basic_auth_users.ops: not a bcrypt hash (the value is not shown): a web config file takes bcrypt "
      "hashes only, as exporter-toolkit does; make one with `htpasswd -nbBC 10 '' PASSWORD | cut -c2-`"]),
    # a key pasted in place of its file's path is not repeated
    ("tls_server_config:\n  cert_file: missing.pem\n  key_file: '-----BEGIN PRIVATE KEY----- MIIEvQIBADAN'\n",
     ["  line 2: tls_server_config.cert_file: {dir}/missing.pem does not exist",
      "  line 3: tls_server_config.key_file: the key_file given does not exist"]),
    ("tls_server_config:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n",
     ["  line 2: tls_server_config.cert_file: {dir}/missing.pem does not exist",
      "  line 3: tls_server_config.key_file: the key_file given does not exist"]),
    ("basic_auth_user:\n  prom: x\n", ["  line 1: basic_auth_user: unknown key"]),
    # its second review: a plain password given `!!binary` (pydantic made it text: it logged in), a user YAML reads
    # as a number (named at the mapping's line), a key pasted under cert_file, `!!bool` on a password (a traceback
    # showing it), a client_auth_type without files (exporter-toolkit: missing cert_file)
    ("basic_auth_users:\n  prom: !!binary aHVudGVyMg==\n  123: x\n",
     ["  line 2: basic_auth_users.prom: not a bcrypt hash (the value is not shown): a web config file takes bcrypt "
      "hashes only, as exporter-toolkit does; make one with `htpasswd -nbBC 10 '' PASSWORD | cut -c2-`",
      "  line 3: basic_auth_users.123: a user name is text: quote it in the YAML"]),
    ("tls_server_config:\n  cert_file: |\n    -----BEGIN PRIVATE KEY-----\n    MIGHAgEA\n"
     "    -----END PRIVATE KEY-----\n  key_file: k.pem\n",
     ["  line 2: tls_server_config.cert_file: the cert_file given does not exist",
      "  line 6: tls_server_config.key_file: the key_file given does not exist"]),
    ("basic_auth_users:\n  prom: !!bool hunter2\n",
     ["  line 2: not valid YAML: a value it cannot read (...); quote it if it is text"]),
    # its third review: a hash with a trailing newline (`|`) let nobody in and passed; a user name holding `:`
    # showed what follows it (read as the password); exporter-toolkit's newer `rate_limit` called a typo; a key as
    # one base64 line (a Kubernetes Secret's form) under cert_file shown whole
    ("basic_auth_users:\n  prom: |\n    $2b$04$ISvlbvU.BCXJZ1reh31S4OG/7489TD.w18RnXrdAaER7RAlek0mr2\n",
     ["  line 2: basic_auth_users.prom: bcrypt cannot check this hash (not a whole bcrypt hash: 61 characters, where "
      "a hash is $2b$, a two-digit cost, $ and 53 characters of ./A-Za-z0-9 (60 in all); cut short or changed when "
      "pasted?): nobody could log in as it"]),
    ("basic_auth_users:\n  admin:hunter2:\n",
     ["  line 2: basic_auth_users.admin:...: a user name cannot hold ':' or be empty (HTTP basic auth splits user "
      "and password at the first ':')"]),
    ("rate_limit:\n  interval: 1s\n  burst: 10\n",
     ["  line 1: rate_limit: not supported: the listener limits no request rate (its own bounds: "
      "web.max_connections, web.api_max_concurrency); remove it, or terminate TLS in a reverse proxy in front of "
      "watchtower (docs/security.md)"]),
    # its fourth: a repeated user quoted whole, a merge key before a tagged value given that line, the key's path
    # hidden inside the certificate's (`tls.key` in `tls.key.crt`)
    ("basic_auth_users:\n  admin:hunter2: x\n  admin:hunter2: y\n",
     ["  line 3, column 3: not valid YAML: duplicate key 'admin:...' (first on line 2, again on line 3)"]),
    ("http_server_config:\n  <<: {}\nbasic_auth_users:\n  prom: !!bool hunter2\n",
     ["  line 4: not valid YAML: a value it cannot read (...); quote it if it is text"]),
    ("tls_server_config:\n  cert_file: tls.key.crt\n  key_file: tls.key\n",
     ["  line 2: tls_server_config.cert_file: {dir}/tls.key.crt does not exist",
      "  line 3: tls_server_config.key_file: the key_file given does not exist"]),
    ("tls_server_config:\n  cert_file: " + "TFMwdExTMUNSVWRKVGlCUVVrbFdRVlJGSUV0RlcwdExT" * 40 + "\n  key_file: k.pem\n",
     ["  line 2: tls_server_config.cert_file: cannot reach the cert_file given: file name too long",
      "  line 3: tls_server_config.key_file: the key_file given does not exist"]),
    ("tls_server_config:\n  client_auth_type: NoClientCert\n",
     ["  line 1: tls_server_config: cert_file and key_file must be set (client_auth_type is a TLS setting)"]),
])
def test_a_web_config_file_problem_names_that_file_its_line_and_key(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     text: str, want: list[str]) -> None:
    """Nothing the listener cannot do is dropped silently: a host that asks for client certificates must not be
    served without them."""
    config = write_config(tmp_path)
    web = _web_file(tmp_path, text)
    assert main(["check-config", str(config), "--web.config.file", str(web)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{web}: invalid configuration"
    assert [line.replace(str(tmp_path), "{dir}") for line in err[1:]] == want


def test_the_web_keys_set_in_both_files_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, web={"basic_auth_users": {"prom": _hash("a")}})
    web = _web_file(tmp_path, f"basic_auth_users:\n  prom: {_hash('b')}\n")
    assert main(["check-config", str(config), "--web.config.file", str(web)]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  web.basic_auth_users also set in the config file: keep one of the two (--web.config.file, or the config "
        "file's web section)"]


def test_a_web_config_file_that_cannot_be_read_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["check-config", str(config), "--web.config.file", str(tmp_path / "nope.yml")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"{tmp_path}/nope.yml: invalid configuration",
                                                    "  cannot read: No such file or directory"]


@needs_openssl
def test_the_hub_takes_the_flag_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    self_signed(tmp_path, "hub")
    web = _web_file(tmp_path, f"tls_server_config:\n  cert_file: {tmp_path}/hub.pem\n  key_file: hub-key.pem\n"
                    f"basic_auth_users:\n  ops: {_hash('pw')}\n")
    hub = tmp_path / "hub.yml"
    hub.write_text(f"listen: 127.0.0.1:{free_port()}\nhub:\n  targets: ['http://127.0.0.1:9469']\n")
    assert main(["check-config", "--hub", str(hub), "--web.config.file", str(web)]) == 0
    from hub.config import load_hub_config

    loaded = load_hub_config(hub, web)
    assert loaded.web.tls_cert_file == tmp_path / "hub.pem" and loaded.web.tls_key_file == tmp_path / "hub-key.pem"
    assert set(loaded.web.basic_auth_users) == {"ops"}


def test_a_tls_server_config_without_files_is_plain_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As exporter-toolkit: neither file given is no TLS (one without the other is refused, above)."""
    config = write_config(tmp_path)
    web = _web_file(tmp_path, "tls_server_config: {client_auth_type: ''}\nhttp_server_config: {http2: true}\n")
    assert main(["check-config", str(config), "--web.config.file", str(web)]) == 0
    from exporter.config import load_config

    assert load_config(config, web_config_file=web).web.tls_cert_file is None


def test_a_home_that_cannot_expand_a_path_is_a_problem_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Its review: `~/tls.crt` with HOME relative raised out of the command (a traceback, exit 1)."""
    config = write_config(tmp_path)
    web = _web_file(tmp_path, "tls_server_config: {cert_file: ~/tls.crt, key_file: tls.key}\n")
    monkeypatch.setenv("HOME", "relative")
    assert main(["check-config", str(config), "--web.config.file", str(web)]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  line 1: tls_server_config.cert_file: cannot be read as a path ('~/tls.crt': HOME is 'relative', not an "
        "absolute path, so ~ cannot be expanded; set HOME or give an absolute path)"]


def test_a_piped_web_config_file_is_not_read_again_at_sighup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its review: `--web.config.file <(cat web.yml)` logged an ERROR at every SIGHUP (the pipe read again, empty), as
    a piped `--config` does not."""
    import logging
    import threading

    from exporter.daemon import Daemon

    fifo = tmp_path / "web.fifo"
    os.mkfifo(fifo)
    daemon = object.__new__(Daemon)
    daemon.config_path, daemon.web_config_path = write_config(tmp_path), fifo
    daemon._config_check = threading.Lock()
    daemon._config_checking = daemon._config_check_again = False
    with caplog.at_level(logging.INFO, logger="watchtower.daemon"):
        daemon.check_config_file()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", f"SIGHUP: {fifo} is a pipe or FIFO, not a regular file (read once, at the start): not checked at "
                 "this signal (only the classification tables are reloaded)")]


@pytest.mark.parametrize("hub", [False, True], ids=["daemon", "hub"])
def test_a_user_name_holding_a_colon_is_shown_up_to_it_in_either_config(tmp_path: Path, hub: bool,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Its fourth review: in the daemon's and the hub's own `web.basic_auth_users`, a value of another type made
    pydantic's error name the user whole (`admin:hunter2`: basic auth reads what follows the `:` as the password)."""
    path = tmp_path / "c.yml"
    if hub:
        path.write_text("hub:\n  targets: ['http://127.0.0.1:9469']\nweb:\n  basic_auth_users:\n    admin:hunter2: 123\n")
    else:
        path.write_text(f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\nweb:\n"
                        "  basic_auth_users:\n    admin:hunter2: 123\n")
    assert main(["check-config", *(["--hub"] if hub else []), str(path)]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err
    assert f"  line {5 if hub else 6}: web.basic_auth_users.admin:...: a number, not a string: quote it in the YAML" in err


@pytest.mark.parametrize("where", ["daemon", "hub", "web"])
def test_a_user_and_password_indented_out_of_its_section_is_shown_up_to_its_colon(
        tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Its fifth review: `admin:hunter2:` indented one level too far left is an unknown key of the mapping above,
    and the key path showed it whole. No key is shown past its first `:`."""
    body = "  basic_auth_users:\n  admin:hunter2: x\n"
    config = tmp_path / "c.yml"
    if where == "hub":
        config.write_text("hub:\n  targets: ['http://127.0.0.1:9469']\nweb:\n" + body)
        args = ["check-config", "--hub", str(config)]
    elif where == "daemon":
        config.write_text(f"state_dir: {tmp_path}/s\nsources:\n  - paths: ['{tmp_path}/a-*.csv']\nweb:\n" + body)
        args = ["check-config", str(config)]
    else:
        args = ["check-config", str(write_config(tmp_path)), "--web.config.file",
                str(_web_file(tmp_path, "basic_auth_users:\nadmin:hunter2: x\n"))]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "admin:...: unknown key" in err, err
