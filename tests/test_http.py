"""The listener: /metrics exposition, /healthz, basic auth when configured."""

from __future__ import annotations

import bcrypt
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from exporter import webauth
from exporter.config import config_from_dict
from exporter.http import build_app, exposure_warning


def client(users: dict[str, str] | None = None, ok: bool = True) -> httpx.AsyncClient:
    reg = CollectorRegistry()
    Counter("watchtower_probe", "probe", registry=reg).inc(3)
    app = build_app(reg, lambda: {"ok": ok, "files_followed": 2}, basic_auth_users=users)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt")


async def test_metrics_and_health():
    async with client() as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and "watchtower_probe_total 3.0" in r.text
        assert r.headers["content-type"].startswith("text/plain")
        assert (await c.get("/healthz")).json() == {"ok": True, "files_followed": 2}
        r = await c.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        assert r.text.rstrip().endswith("# EOF")


async def test_the_index_lists_the_pages_only_where_they_are_served():
    from fastapi import APIRouter

    from pages import with_pages

    async with client() as c:
        bare = (await c.get("/")).text
    app = build_app(CollectorRegistry(), lambda: {"ok": True}, [with_pages(APIRouter())])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        with_ui = (await c.get("/")).text
    assert "/ui/" not in bare and "/metrics" in bare
    assert "\n/ui/           search, message forensics, flows (docs/scaling.md)\n" in with_ui


async def test_unhealthy_is_503():
    async with client(ok=False) as c:
        assert (await c.get("/healthz")).status_code == 503


async def test_basic_auth_guards_every_route():
    async with client({"prom": "s3cret"}) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/healthz", auth=("prom", "wrong"))).status_code == 401
        assert (await c.get("/metrics", auth=("prom", "s3cret"))).status_code == 200


# --- issue 9: errors, auth, exposure -------------------------------------------------------------



def _cfg(listen: str, **web: object):
    return config_from_dict({"sources": [{"paths": ["/l/acct-*.csv"]}], "state_dir": "/s", "listen": listen,
                             "web": web})


def test_exposure_warning_only_off_loopback_without_auth_or_tls(tmp_path):
    for listen in ("127.0.0.1:9469", ":9469", "[::1]:9469", "localhost:9469"):
        assert exposure_warning(_cfg(listen)) is None, listen
    warn = exposure_warning(_cfg("0.0.0.0:9469"))
    assert warn is not None and "without basic auth and TLS" in warn and "0.0.0.0:9469" in warn
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert "without TLS" in exposure_warning(_cfg("[::]:9469", basic_auth_users={"p": "x"}))
    assert "without basic auth:" in exposure_warning(_cfg("0.0.0.0:9469", tls_cert_file=str(cert),
                                                          tls_key_file=str(key)))
    assert exposure_warning(_cfg("0.0.0.0:9469", basic_auth_users={"p": "x"}, tls_cert_file=str(cert),
                                 tls_key_file=str(key))) is None


async def test_unknown_routes_and_methods_are_api_errors_and_no_swagger():
    async with client() as c:
        for path in ("/nope", "/docs", "/redoc", "/api/v1/nope"):
            r = await c.get(path)
            assert r.status_code == 404 and r.json() == {"error": f"no route {path}", "parameter": None,
                                                          "status": 404}, path
        r = await c.post("/metrics")
        assert r.status_code == 405 and r.json()["status"] == 405 and r.headers["allow"] == "GET, HEAD"
        assert "422" not in (await c.get("/openapi.json")).text


async def test_an_error_quotes_a_long_path_or_method_cut_short():
    """A 16,000-character path came back whole in its 404 (16,052 bytes), a 15,000-character method in its 405:
    an error quotes what it names cut to 64 characters, as every other echo of the API does."""
    async with client() as c:
        r = await c.get("/" + "a" * 16_000)
        assert r.status_code == 404 and r.json()["error"] == "no route /" + "a" * 63 + "..."
        r = await c.request("X" * 15_000, "/metrics")
        assert r.status_code == 405 and r.json()["error"] == "method " + "X" * 64 + "... not allowed"
        r = await c.get("/" + "b" * 63)
        assert r.json()["error"] == "no route /" + "b" * 63


async def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_the_host_header():
    """Starlette's slash redirect answered `/metrics/` with an absolute Location built from the Host header and the
    listener's own scheme: `http://evil.example/metrics` for any Host sent, the internal plain-HTTP address behind
    a TLS proxy."""
    async with client() as c:
        for path in ("/metrics/", "/healthz/"):
            r = await c.get(path, headers={"host": "evil.example"})
            assert (r.status_code, r.headers.get("location")) == (404, None), path
            assert r.json() == {"error": f"no route {path}", "parameter": None, "status": 404}


async def test_metrics_gzip_when_asked():
    reg = CollectorRegistry()
    for i in range(200):
        Counter(f"watchtower_probe_{i}", "probe", registry=reg).inc(i)
    app = build_app(reg, lambda: {"ok": True})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wt") as c:
        gz = await c.get("/metrics", headers={"accept-encoding": "gzip"})
        plain = await c.get("/metrics", headers={"accept-encoding": "identity"})
    assert gz.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert gz.text == plain.text and "watchtower_probe_199_total 199.0" in gz.text


HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


async def test_bcrypt_users_like_node_exporter():
    async with client({"prom": HASH}) as c:
        assert (await c.get("/metrics")).status_code == 401
        r = await c.get("/metrics", auth=("prom", "wrong"))
        assert r.status_code == 401 and r.json()["status"] == 401 and r.headers["www-authenticate"]
        assert (await c.get("/metrics", auth=("prom", "s3cret"))).status_code == 200
        assert (await c.get("/metrics", auth=("prom", "s3cret"))).status_code == 200  # cached path
        assert (await c.get("/healthz", auth=("nobody", "s3cret"))).status_code == 401
        assert (await c.get("/healthz", headers={"authorization": "Basic !!!"})).status_code == 401


def test_unknown_user_costs_one_bcrypt_check_of_the_same_cost(monkeypatch):
    calls: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(webauth.bcrypt, "checkpw", lambda pw, h: calls.append(h) or real(pw, h))
    auth = webauth.BasicAuth({"prom": HASH, "other": bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=5)).decode()})
    assert not auth.verify("prom", "wrong") and not auth.verify("nobody", "wrong")
    assert len(calls) == 2 and calls[0] == HASH.encode()
    assert calls[1] != HASH.encode() and calls[1].startswith(b"$2b$05$")  # the dummy, as slow as the slowest
    plain = webauth.BasicAuth({"prom": "s3cret"})
    assert plain.verify("prom", "s3cret") and not plain.verify("prom", "s3cre") and not plain.verify("x", "s3cret")
    assert len(calls) == 2  # plain-text users never pay for bcrypt


@pytest.mark.parametrize("header", ["", "Bearer x", "Basic", "Basic bm9jb2xvbg==", "Basic \u00e9\u00e9"])
def test_malformed_authorization_headers(header):
    assert webauth.parse_header(header) is None


def test_accept_errors_are_logged_rate_limited_without_traceback(caplog):
    from exporter.http import AcceptErrorLog

    passed: list[dict] = []
    handler = AcceptErrorLog(lambda loop, ctx: passed.append(ctx), interval=3600)
    exc = OSError(24, "Too many open files")
    with caplog.at_level("ERROR", logger="watchtower.http"):
        for _ in range(1000):
            handler(None, {"message": "socket.accept() out of system resource", "exception": exc})
        handler(None, {"message": "something else"})
        handler(None, {"message": "Exception in callback", "exception": ValueError("Invalid file descriptor: -1"),
                       "handle": "<TimerHandle BaseSelectorEventLoop._start_serving(...)>"})  # retry after close
    (record,) = caplog.records
    assert record.getMessage().startswith("accept() failed: [Errno 24] Too many open files (0 more")
    assert record.exc_info is None and handler.suppressed == 999
    assert passed == [{"message": "something else"}]  # other loop errors go to the previous handler


@pytest.mark.parametrize(("host", "every"), [("::", True), ("::0", True), ("0:0:0:0:0:0:0:0", True), ("::1", False),
                                             ("0.0.0.0", False), ("localhost", False), ("fe80::1", False)])
def test_every_spelling_of_the_unspecified_ipv6_address_binds_dual_stack(host: str, every: bool) -> None:
    """`[::]` listens on IPv4 too (one dual-stack socket); `[::0]` is the same address and was left IPv6-only."""
    from exporter.http import _every_ipv6_address

    assert _every_ipv6_address(host) is every
