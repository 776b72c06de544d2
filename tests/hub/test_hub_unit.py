"""The hub without daemons processes: target discovery, per-host timeouts against a host that never
answers, credentials from files, config errors. Fake daemons are tiny loopback HTTP servers."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError
from hub.app import build_hub_app
from hub.config import HubConfig, load_hub_config
from hub.targets import Target, TargetSet

SUMMARY = {"id": 1, "message_id": "a@b", "job_id": "j", "rcpt": "x@gmail.com", "rcpt_hashed": False,
           "rcpt_domain": "gmail.com", "orig": "s@news.example", "sender_domain": "news.example", "vmta": "v1",
           "vmta_pool": "p", "queue": "gmail.com/v1", "isp": "gmail", "outcome": "delivered", "attempts": 1,
           "first_seen": "2026-11-30T10:00:00Z", "last_seen": "2026-11-30T10:00:05Z",
           "queued_at": "2026-11-30T10:00:00Z", "done_at": "2026-11-30T10:00:05Z", "complained": False,
           "remote_bounced": False}


class FakeDaemon:
    """Answers /api/v1 like a daemon holding one timeline; records the headers it got."""

    def __init__(self, prometheus_body: dict[str, Any] | None = None, tls: ssl.SSLContext | None = None,
                 refuse: int | None = None) -> None:
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - a form, as the hub sends a lookup by address: its GET
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                fake.paths.append(self.path)
                path = self.path.split("?")[0]
                if refuse is not None:  # e.g. 429: its auth check is busy
                    body = {"error": f"refused with {refuse}", "parameter": None, "status": refuse}
                    raw = json.dumps(body).encode()
                    self.send_response(refuse)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                if prometheus_body is not None and path == "/api/v1/targets":
                    body: Any = prometheus_body
                elif path.startswith("/api/v1/messages/"):
                    body = {"message_id": "a@b", "recipients_total": 1, "truncated": False,
                            "recipients": [{**SUMMARY, "events": [], "queue_events_omitted": 0}]}
                elif path == "/api/v1/search":
                    body = {"items": [SUMMARY], "next_cursor": None, "limit": 50, "scan_limited": False}
                elif path == "/api/v1/flows":
                    body = {"since": "2026-11-30T09:00:00Z", "until": None, "nodes": [], "edges": []}
                elif path == "/api/v1/timeline":  # a daemon's own 404 names its parameter
                    body = {"error": "no timeline for this recipient", "parameter": "job_id", "status": 404}
                else:
                    body = {"error": "no route", "parameter": None, "status": 404}
                raw = json.dumps(body).encode()
                self.send_response(200 if "error" not in body else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: close() (server.shutdown()) waits for the serving loop's next look, 0.5 s by default.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    d = FakeDaemon()
    yield d
    d.close()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """Accepts connections (the kernel does) and never answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


async def hub_get(config: HubConfig, path: str, **params: Any) -> tuple[httpx.Response, float]:
    app, hub = build_hub_app(config)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            start = time.monotonic()
            r = await client.get(path, params=params)
            return r, time.monotonic() - start
    finally:
        await hub.fanout.client.aclose()


@pytest.mark.parametrize("path,params", [("/api/v1/messages/a@b", {}), ("/api/v1/search", {"limit": 5}),
                                         ("/api/v1/flows", {}), ("/api/v1/timeline", {"rcpt": "x@gmail.com",
                                                                                       "job_id": "j"})])
async def test_a_host_that_never_answers_is_named_missing_within_the_timeout(fake, black_hole, path, params):
    timeout = 2.0  # the threaded fake must answer within it too, on a loaded machine
    config = HubConfig.model_validate({"hub": {"targets": [fake.url, {"url": black_hole, "name": "slow-host"}],
                                               "timeout": timeout}})
    # The black hole holds the request for ever: an answer at all proves it was cut off, the error says by the
    # host's timeout. wait_for is a hang guard only (60 s: the hub's bound is 2 x timeout).
    try:
        r, _ = await asyncio.wait_for(hub_get(config, path, **params), 60)
    except TimeoutError:
        pytest.fail(f"GET {path} hung: the hub had not answered after 60 s")
    if path == "/api/v1/timeline":  # the fake holds no such timeline: found nowhere, and says who was not asked
        assert r.status_code == 404
    else:
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["partial"] is True
    assert [(m["host"], m["url"]) for m in body["missing_hosts"]] == [("slow-host", black_hole)]
    cut = re.fullmatch(r"timed out after ([0-9.]+)s", body["missing_hosts"][0]["error"])  # its budget: hub.timeout,
    assert cut is not None and 0 < float(cut[1]) <= timeout, body  # or what a page's deadline left of it


async def test_no_host_answering_is_a_503_naming_them(black_hole):
    config = HubConfig.model_validate({"hub": {"targets": [black_hole], "timeout": 0.2}})
    r, _ = await hub_get(config, "/api/v1/search")
    assert r.status_code == 503
    assert [m["url"] for m in r.json()["missing_hosts"]] == [black_hole]


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_credentials_towards_the_daemons_come_from_files(fake, tmp_path, scheme):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    auth = {"username": "hub", "password_file": str(secret)} if scheme == "basic" else {
        "bearer_token_file": str(secret)}
    config = HubConfig.model_validate({"hub": {"targets": [fake.url], "auth": auth}})
    r, _ = await hub_get(config, "/api/v1/search")
    assert r.status_code == 200 and r.json()["items"][0]["host"] == fake.url.split("//")[1]
    want = ("Basic " + base64.b64encode(b"hub:s3cret").decode()) if scheme == "basic" else "Bearer s3cret"
    assert fake.headers[-1]["authorization"] == want


async def test_targets_from_file_sd_and_prometheus(tmp_path):
    prom = FakeDaemon(prometheus_body={"status": "success", "data": {"activeTargets": [
        {"labels": {"job": "watchtower", "instance": "pmta-7:9469"}, "scrapeUrl": "http://10.0.0.7:9469/metrics"},
        {"labels": {"job": "node", "instance": "pmta-7:9100"}, "scrapeUrl": "http://10.0.0.7:9100/metrics"},
    ]}})
    try:
        (tmp_path / "a.json").write_text(json.dumps([{"targets": ["pmta-1:9469", "pmta-2:9469"], "labels": {}}]))
        (tmp_path / "b.yml").write_text(yaml.safe_dump([{"targets": ["pmta-2:9469", "pmta-3:9469"]}]))
        section = HubConfig.model_validate({"hub": {
            "targets": ["http://static:9469/"], "file_sd": [str(tmp_path / "a.json"), str(tmp_path / "b.yml")],
            "prometheus": {"url": prom.url, "job": "watchtower"}}}).hub
        ts = TargetSet(section)
        got = await ts.current()
        assert got == sorted([Target("static:9469", "http://static:9469"), Target("pmta-1:9469", "http://pmta-1:9469"),
                              Target("pmta-2:9469", "http://pmta-2:9469"), Target("pmta-3:9469", "http://pmta-3:9469"),
                              Target("pmta-7:9469", "http://10.0.0.7:9469")])
        (tmp_path / "a.json").write_text("{not json")  # a broken rewrite keeps the last good list
        ts._fresh_at = None
        assert await ts.current() == got
    finally:
        prom.close()


def test_bad_hub_config_exits_2_naming_each_key(tmp_path, capsys):
    bad = tmp_path / "hub.yml"
    bad.write_text(yaml.safe_dump({"listen": "nowhere", "hub": {"targets": [], "timeout": "soon"}, "extra": 1}))
    assert main(["hub", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("listen:", "hub.timeout:", "extra: unknown key"):
        assert key in err, err
    assert "Traceback" not in err
    assert main(["hub", "--config", str(tmp_path / "missing.yml")]) == 2


def test_the_hubs_grafana_url_is_checked_as_the_daemons_is(tmp_path):
    bad = tmp_path / "hub.yml"
    bad.write_text(yaml.safe_dump({"hub": {"targets": ["http://127.0.0.1:9469"]},
                                   "pages": {"grafana_url": "javascript:alert(1)"}}))
    with pytest.raises(ConfigError) as exc:  # (not main(): on a config it accepts, it would serve)
        load_hub_config(bad)
    assert [p.split(": expected")[0] for p in exc.value.problems] == ["pages.grafana_url: 'javascript:alert(1)'"]


async def test_the_hub_listener_has_the_daemons_auth_and_the_pages_pass_it_on(fake):
    config = HubConfig.model_validate({"hub": {"targets": [fake.url]}, "web": {"basic_auth_users": {"op": "pw"}}})
    app, hub = build_hub_app(config)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
            assert (await client.get("/ui/")).status_code == 401
            assert (await client.get("/api/v1/search")).status_code == 401
            page = await client.get("/ui/", auth=("op", "pw"))
            assert page.status_code == 200 and "x@gmail.com" in page.text  # the inner /api/v1 call got through
    finally:
        await hub.fanout.client.aclose()


def self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make test certificates")
async def test_tls_towards_the_daemons_verifies_them_and_presents_a_client_certificate(tmp_path):
    server_cert, server_key = self_signed(tmp_path, "daemon")
    client_cert, client_key = self_signed(tmp_path, "hub")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_cert, server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the daemon side only trusts the hub's certificate
    ctx.load_verify_locations(client_cert)
    daemon = FakeDaemon(tls=ctx)
    try:
        tls = {"ca_file": str(server_cert), "cert_file": str(client_cert), "key_file": str(client_key)}
        ok = HubConfig.model_validate({"hub": {"targets": [daemon.url], "tls": tls}})
        r, _ = await hub_get(ok, "/api/v1/search")
        assert r.status_code == 200 and r.json()["partial"] is False
        unverified = HubConfig.model_validate({"hub": {"targets": [daemon.url], "timeout": 1}})  # system CAs only
        r, _ = await hub_get(unverified, "/api/v1/search")
        assert r.status_code == 503 and "CERTIFICATE_VERIFY_FAILED" in r.json()["missing_hosts"][0]["error"]
    finally:
        daemon.close()


def test_a_taken_port_exits_1_without_a_traceback(tmp_path, capfd, caplog, monkeypatch):
    monkeypatch.setattr("exporter.logsetup.setup", lambda *a, **k: None)  # keep pytest's own log handlers
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        cfg = tmp_path / "hub.yml"
        cfg.write_text(yaml.safe_dump({"listen": listen, "hub": {"targets": ["http://127.0.0.1:1"]}}))
        assert main(["hub", "--config", str(cfg)]) == 1
    assert f"listener could not bind {listen}: address already in use (listen: {listen})" in caplog.text
    assert "Traceback" not in caplog.text and "never retrieved" not in caplog.text
    assert "Traceback" not in capfd.readouterr().err


def test_the_hub_logs_no_local_part_of_an_address(tmp_path, capfd, monkeypatch):
    """The hub holds no store, so its logs never need a recipient's local part: it redacts whatever its daemons do."""
    import logging

    async def serve(_config: object, _interrupted: object = None) -> int:
        logging.getLogger("watchtower.hub").warning("target said: no timeline for alice.smith@gmail.com")
        return 0

    monkeypatch.setattr("hub.app.serve", serve)
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "hub": {"targets": ["http://127.0.0.1:1"]}}))
    assert main(["hub", "--config", str(cfg)]) == 0  # its handler is removed after the test (tests/conftest.py)
    err = capfd.readouterr().err
    assert "no timeline for [redacted]@gmail.com" in err and "alice" not in err


def test_the_hub_config_is_read_and_checked_as_the_daemons_is(tmp_path, capfd):
    """A FIFO nobody writes to is an error, not a hang; path keys are absolute; messages name key and value."""
    import os

    fifo = tmp_path / "hub.yml"
    os.mkfifo(fifo)
    assert main(["hub", "--config", str(fifo)]) == 2
    assert f"{fifo}: a pipe with nothing written to it" in capfd.readouterr().err
    cfg = tmp_path / "relative.yml"
    cfg.write_text(yaml.safe_dump({"hub": {"targets": ["http://127.0.0.1:1"], "tls": {"ca_file": "certs/ca.pem"},
                                           "timeout": ".inf"}}))
    assert main(["hub", "--config", str(cfg)]) == 2
    err = capfd.readouterr().err
    assert "hub.tls.ca_file: " in err and "certs/ca.pem" in err and "hub.timeout: " in err and "Value error" not in err


@pytest.mark.parametrize("since", ["1d", "90m"])
async def test_replies_ask_every_host_for_a_window_of_whole_seconds_as_a_daemon_resolves_it(fake, since):
    """A daemon resolves `since=1d` against its clock in whole seconds and echoes `...T16:22:26Z`; the hub sent
    its own clock's fraction, and its answer read `...T16:22:26.248862Z` for the same query (review 2026-12-07)."""
    config = HubConfig.model_validate({"hub": {"targets": [fake.url]}})
    await hub_get(config, "/api/v1/replies", since=since)
    (asked,) = [p for p in fake.paths if p.startswith("/api/v1/replies?")]
    params = dict(urllib.parse.parse_qsl(asked.split("?", 1)[1]))
    assert float(params["since"]).is_integer() and float(params.get("until", 0)).is_integer(), params


@pytest.mark.parametrize("refused", [429, 402, 418])
@pytest.mark.parametrize("path,params", [("/api/v1/lookup", {"message_id": "a@b"}), ("/api/v1/search", {}),
                                         ("/api/v1/messages/a@b", {}), ("/api/v1/flows", {}),
                                         ("/api/v1/replies", {}), ("/api/v1/timeline", {"rcpt": "x@gmail.com"})])
async def test_a_host_answering_an_unexpected_status_is_missing_not_empty(refused, path, params):
    """Only 200, 400 and 404 are a daemon's answers; anything else (429 from its busy auth check) is a host that
    could not be asked, never a complete answer that found nothing."""
    daemon = FakeDaemon(refuse=refused)
    try:
        config = HubConfig.model_validate({"hub": {"targets": [daemon.url], "timeout": 2}})
        r, _ = await hub_get(config, path, **params)
    finally:
        daemon.close()
    body = r.json()
    assert r.status_code == 503 or (body.get("partial") is True and body.get("missing_hosts")), (r.status_code, body)
    assert f"HTTP {refused}" in json.dumps(body)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make test certificates")
def test_hub_tls_files_and_targets_are_checked_at_start_naming_key_and_file(tmp_path, capfd):
    """As the daemon's `check-config`: every problem on its own line naming the key, exit 2, no prompt, no hang."""
    cert, key = self_signed(tmp_path, "hub")
    encrypted = tmp_path / "enc-key.pem"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)
    hostname = tmp_path / "not-a-cert.pem"
    hostname.write_text("pmta-01\n")
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({
        "listen": "127.0.0.1:0",
        "web": {"tls_cert_file": str(cert), "tls_key_file": str(encrypted)},
        "hub": {"targets": ["127.0.0.1:9469", "ftp://pmta-02:9469", {"url": "not a url"}, "http://pmta-03:9469"],
                "tls": {"ca_file": str(hostname), "cert_file": str(tmp_path / "gone.pem"), "key_file": str(key)}},
    }))
    assert main(["hub", "--config", str(cfg)]) == 2
    err = capfd.readouterr().err  # the file first, each target's problem (as the daemon's check-config: two passes)
    for expected in ("hub.targets.0: '127.0.0.1:9469' is not an http:// or https:// URL",
                     "hub.targets.1: 'ftp://pmta-02:9469' is not an http:// or https:// URL",
                     "hub.targets.2.url: 'not a url' is not an http:// or https:// URL"):
        assert expected in err, err
    assert "pmta-03" not in err and "Traceback" not in err
    data = yaml.safe_load(cfg.read_text())
    data["hub"]["targets"] = ["http://pmta-03:9469"]
    cfg.write_text(yaml.safe_dump(data))
    assert main(["hub", "--config", str(cfg)]) == 2
    err = capfd.readouterr().err  # then, the file valid, the machine: every file named
    for expected in (f"web.tls_key_file: {encrypted} is protected by a passphrase",
                     f"hub.tls.ca_file: cannot load {hostname} as a PEM CA bundle",
                     f"hub.tls.cert_file: {tmp_path / 'gone.pem'} does not exist"):
        assert expected in err, err
    assert "hub.targets" not in err and "Traceback" not in err and "PEM pass phrase" not in err


def test_every_target_problem_is_listed_with_one_carrying_credentials(tmp_path, capfd):
    """scaling.md: `watchtower hub` exits 2 listing every problem. A target carrying credentials was refused as the
    file was read and the other targets were checked only after it (review 2026-12-06): one fix, then the next."""
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "hub": {
        "targets": ["http://u:p@127.0.0.1:26469", "http://h:0", "ftp://x:1", {"url": "http://h h:1"}]}}))
    assert main(["hub", "--config", str(cfg)]) == 2
    err = capfd.readouterr().err
    assert err.splitlines()[1:] == [
        "  line 3: hub.targets.0: http://***@127.0.0.1:26469 carries a user name or password: give them in hub.auth (username "
        "and password_file, or bearer_token_file), not in the URL",
        "  line 4: hub.targets.1: 'http://h:0': the port must be a number from 1 to 65535, got '0'",
        "  line 5: hub.targets.2: 'ftp://x:1' is not an http:// or https:// URL",
        "  line 6: hub.targets.3.url: 'http://h h:1': 'h h' is not a host name or IP address"], err


def test_check_config_hub_checks_a_hub_file_without_starting_it(tmp_path, capfd):
    """`watchtower check-config hub.yml` read the hub's file as a daemon's (`sources: required key missing; hub:
    unknown key`) and there was no way to check one before a restart (review 2026-12-06)."""
    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "hub": {"targets": ["http://h:0"]}}))
    assert main(["check-config", "--hub", str(cfg)]) == 2
    assert capfd.readouterr().err == (f"{cfg}: invalid configuration\n"
                                      "  line 3: hub.targets.0: 'http://h:0': the port must be a number from 1 to 65535, "
                                      "got '0'\n")
    cfg.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "hub": {"targets": ["http://127.0.0.1:9469"]},
                                   "web": {"basic_auth_users": {"u": "plainpw"}}}))
    cfg.chmod(0o600)
    assert main(["check-config", "--hub", "--config", str(cfg)]) == 0
    out, err = capfd.readouterr()
    assert (out, err) == (f"{cfg}: ok\n", f"{cfg}: warning: web.basic_auth_users.u: plain-text password; store a "
                                          "bcrypt hash instead\n")


def test_check_config_hub_from_stdin_names_the_file_to_chmod_and_a_full_disk_is_one_line(tmp_path):
    """Regression review 2026-12-06: `check-config --hub /dev/stdin < hub.yml` advised `chmod 600 /dev/stdin` (the
    terminal), and its `ok` line was printed bare: a traceback on a closed pipe or a full disk."""
    import sys

    from tests.conftest import REPO

    cfg = tmp_path / "hub.yml"
    cfg.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", "hub": {"targets": ["http://127.0.0.1:9469"]},
                                   "web": {"basic_auth_users": {"u": "plainpw"}}}))
    cfg.chmod(0o644)
    command = [sys.executable, "-m", "exporter", "check-config", "--hub", "/dev/stdin"]
    with open(cfg, "rb") as stdin:
        proc = subprocess.run(command, stdin=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "/dev/stdin: ok\n"), proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"/dev/stdin: warning: web.basic_auth_users.u: /dev/stdin ({cfg}) is readable by every user (mode 0644) and "
        f"holds this secret inline: chmod 600 {cfg} (or 640 with the daemon's group)")
    with open(cfg, "rb") as stdin, open("/dev/full", "wb") as full:
        proc = subprocess.run(command, stdin=stdin, stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == "watchtower: cannot write to standard output: No space left on device"
