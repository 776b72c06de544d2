"""The clients that ask PMTA's API and the hub's Prometheus directly (`trust_env=False`: no HTTP_PROXY meant for other
programs) still trust what SSL_CERT_FILE / SSL_CERT_DIR name, as httpx does for every other client: a review found
them refusing a private CA named there (CERTIFICATE_VERIFY_FAILED)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporter.config import PmtaApiConfig
from exporter.pmta_api import PmtaApiConfigError, _verify
from hub.config import HubConfig
from hub.targets import TargetSet

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def private_ca_server_cert(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA: what a private CA's bundle names)."""
    cert, key = tmp / "private.pem", tmp / "private-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=private-ca-test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@contextmanager
def https_prometheus(cert: Path, key: Path) -> Iterator[str]:
    """A Prometheus /api/v1/targets over HTTPS on loopback naming one daemon; yields its base URL."""
    body = json.dumps({"status": "success", "data": {"activeTargets": [
        {"labels": {"job": "wt", "instance": "pmta-7"}, "scrapeUrl": "http://127.0.0.1:9/metrics"}]}}).encode()

    class Targets(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Targets)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
async def test_the_hubs_prometheus_behind_a_private_ca_named_by_the_environment_is_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    cert, key = private_ca_server_cert(tmp_path)
    if variable == "SSL_CERT_DIR":  # OpenSSL finds a directory's CAs by subject hash
        (tmp_path / "certs").mkdir()
        subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(cert)], check=True,
                                      capture_output=True, text=True).stdout.strip()
        shutil.copy(cert, tmp_path / "certs" / f"{subject_hash}.0")
        monkeypatch.setenv(variable, str(tmp_path / "certs"))
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv(variable, str(cert))
    with https_prometheus(cert, key) as url:
        targets = TargetSet(HubConfig.model_validate({"hub": {"prometheus": {"url": url, "job": "wt"}}}).hub)
        found = await targets.current()
    assert [t.name for t in found] == ["pmta-7"]


def test_the_pmta_api_client_trusts_the_ca_ssl_cert_file_names(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cert, _key = private_ca_server_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    ctx = _verify(PmtaApiConfig(url="https://127.0.0.1:8080"))
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert [dict(x[0] for x in c["subject"])["commonName"] for c in ctx.get_ca_certs()] == ["private-ca-test"]
    assert _verify(PmtaApiConfig(url="https://127.0.0.1:8080", verify_tls=False)) is False


def test_an_ssl_cert_file_that_is_no_ca_bundle_is_one_line_naming_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(junk))
    with pytest.raises(PmtaApiConfigError) as exc:
        _verify(PmtaApiConfig(url="https://127.0.0.1:8080"))
    assert str(exc.value).startswith("pmta.verify_tls: the CA certificates SSL_CERT_FILE or SSL_CERT_DIR names are "
                                     "not usable: ")


def test_a_stale_ssl_cert_file_does_not_stop_a_plain_http_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale SSL_CERT_FILE (a conda environment's, an image's) is common: it made every poll of an http:// API
    fail once the trust was built explicitly (review). Only an https URL builds it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))
    assert _verify(PmtaApiConfig(url="http://127.0.0.1:8080")) is True
    with pytest.raises(PmtaApiConfigError):
        _verify(PmtaApiConfig(url="https://127.0.0.1:8080"))


async def test_an_http_api_that_redirects_to_https_is_trusted_as_ssl_cert_file_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PMTA 5 redirects http:// to https:// by default (the API key is allowed to follow): for an http:// URL the
    client trusted certifi's bundle only, and a private CA named by SSL_CERT_FILE failed verification."""
    from exporter.pmta_api import PmtaApiClient

    cert, key = private_ca_server_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    status = b"<rsp><data><status><queue><smtp><rcp>5</rcp></smtp></queue></status></data><succ/></rsp>"

    async def tls_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(status), status))
        await writer.drain()
        writer.close()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls = await asyncio.start_server(tls_answer, "127.0.0.1", 0, ssl=ctx)
    tls_port = tls.sockets[0].getsockname()[1]

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ", 2)[1].decode()
        writer.write(f"HTTP/1.1 301 Moved\r\nLocation: https://127.0.0.1:{tls_port}{target}\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    plain = await asyncio.start_server(redirect, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{plain.sockets[0].getsockname()[1]}"
        async with PmtaApiClient(PmtaApiConfig(url=url)) as api:
            assert (await api.status()).smtp_rcp == 5
    finally:
        plain.close()
        tls.close()
